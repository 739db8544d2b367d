//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) and the rules a
//! new password must meet.
//!
//! Verification always runs one argon2 computation, also for unknown accounts (against a fixed
//! dummy hash), so response times do not reveal which emails exist.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password` with a fresh salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2().hash_password(password.as_bytes(), &salt).expect("argon2 with valid parameters").to_string()
}

/// Whether `password` matches the PHC string `stored` (`None`: no such account; a dummy hash is
/// checked instead and the answer is false).
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("monsys-dummy-password"));
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    argon2().verify_password(password.as_bytes(), &parsed).is_ok() && real
}

/// Why a new password is refused, if it is.
pub fn weakness(password: &str, email: &str) -> Option<&'static str> {
    if password.chars().count() < 12 {
        return Some("at least 12 characters");
    }
    if password.chars().count() > 1024 {
        return Some("at most 1024 characters");
    }
    if password.eq_ignore_ascii_case(email) {
        return Some("must differ from the email");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery");
        let b = hash("correct horse battery");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&a)));
        assert!(!verify("wrong", Some(&a)));
        assert!(!verify("monsys-dummy-password", None), "unknown accounts never verify");
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(weakness("short", "a@b.c").is_some());
        assert!(weakness("a@example.com", "A@EXAMPLE.COM").is_some());
        assert!(weakness("long enough passphrase", "a@b.c").is_none());
    }
}
