//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps — what common authenticator apps and `oathtool`
//! use) with `totp-rs`, the secret kept encrypted at rest (AES-256-GCM under a key derived from
//! the cluster secret, so every node can check a code), and single-use recovery codes.
//!
//! Replay protection is not here: the proposer finds which time step a code belongs to and the
//! state machine accepts it only if that step is above the user's last accepted one, so a code
//! is never accepted twice anywhere in the cluster.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::error::ApiError;
use crate::secrets::ClusterSecret;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Steps of clock skew accepted on either side.
const SKEW: u64 = 1;
/// Recovery codes issued when TOTP is enabled.
pub const RECOVERY_CODES: usize = 10;

fn cipher(secret: &ClusterSecret) -> Aes256Gcm {
    let key =
        Sha256::new().chain_update(b"monsys totp secret key v1").chain_update(secret.expose()).finalize();
    Aes256Gcm::new_from_slice(&key).expect("32-byte key")
}

/// A fresh 20-byte secret.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

/// Base32 form of a secret (what apps take).
pub fn base32(secret: &[u8]) -> String {
    Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// Encrypts a secret for storage: nonce ‖ ciphertext.
pub fn seal(cluster: &ClusterSecret, secret: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    out.extend(cipher(cluster).encrypt(Nonce::from_slice(&nonce), secret).expect("aes-gcm encrypt"));
    out
}

/// Decrypts a stored secret.
pub fn open(cluster: &ClusterSecret, sealed: &[u8]) -> Result<Vec<u8>, ApiError> {
    if sealed.len() < 12 {
        return Err(ApiError::Internal("stored TOTP secret is truncated".into()));
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher(cluster).decrypt(Nonce::from_slice(nonce), ct).map_err(|_| {
        ApiError::Internal("stored TOTP secret does not decrypt under this cluster secret".into())
    })
}

fn totp(secret: Vec<u8>, account: &str) -> Result<TOTP, ApiError> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, secret, Some("monsys".into()), account.into())
        .map_err(|e| ApiError::Internal(format!("totp: {e}")))
}

/// The `otpauth://` URI for authenticator apps.
pub fn uri(secret: &[u8], account: &str) -> Result<String, ApiError> {
    Ok(totp(secret.to_vec(), account)?.get_url())
}

/// The time step `code` is valid for at `now_secs` (± one step), if any. Comparison in
/// constant time per candidate.
pub fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret.to_vec(), "x").ok()?;
    let step = now_secs / STEP_SECS;
    (step.saturating_sub(SKEW)..=step + SKEW).rev().find(|s| {
        let expected = t.generate(s * STEP_SECS);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into()
    })
}

/// Fresh recovery codes (shown once) and their SHA-256.
pub fn recovery_codes() -> (Vec<String>, Vec<[u8; 32]>) {
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let mut b = [0u8; 5];
            rand::thread_rng().fill_bytes(&mut b);
            let h = hex::encode(b);
            format!("{}-{}", &h[..5], &h[5..])
        })
        .collect();
    let hashes = codes.iter().map(|c| recovery_hash(c)).collect();
    (codes, hashes)
}

/// SHA-256 of a recovery code as typed (case and dashes ignored).
pub fn recovery_hash(code: &str) -> [u8; 32] {
    let norm: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    Sha256::digest(norm.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 s → 94287082 (8 digits); its last 6 digits.
        let secret = b"12345678901234567890".to_vec();
        assert_eq!(matching_step(&secret, "287082", 59), Some(1));
        assert_eq!(matching_step(&secret, "287082", 59 + 90), None, "outside the skew window");
        assert_eq!(matching_step(&secret, "28708", 59), None);
    }

    #[test]
    fn secrets_seal_and_open_only_under_the_same_cluster_secret() {
        let a = ClusterSecret::for_tests("secret-a-0123456789abcdef");
        let b = ClusterSecret::for_tests("secret-b-0123456789abcdef");
        let s = new_secret();
        let sealed = seal(&a, &s);
        assert_eq!(open(&a, &sealed).unwrap(), s);
        assert!(open(&b, &sealed).is_err());
    }

    #[test]
    fn recovery_codes_hash_as_typed() {
        let (codes, hashes) = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(recovery_hash(&codes[0].to_uppercase().replace('-', "")), hashes[0]);
    }
}
