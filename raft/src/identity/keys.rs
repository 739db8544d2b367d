//! Key layout of the identity domain in `sm_data` (`i/…`; components never contain `/`).

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `i/t/<tenant>` → `Tenant`.
pub(crate) fn tenant(t: &str) -> Vec<u8> {
    format!("i/t/{t}").into_bytes()
}
/// `i/u/<tenant>/<user>` → `User`.
pub(crate) fn user(t: &str, id: &str) -> Vec<u8> {
    format!("i/u/{t}/{id}").into_bytes()
}
/// Prefix of a tenant's users.
pub(crate) fn user_prefix(t: &str) -> Vec<u8> {
    format!("i/u/{t}/").into_bytes()
}
/// `i/ue/<email>` → `(tenant, user id)`.
pub(crate) fn email(e: &str) -> Vec<u8> {
    format!("i/ue/{e}").into_bytes()
}
/// `i/owners` → number of enabled owners in the cluster (bootstrap gate).
pub(crate) const OWNERS: &[u8] = b"i/owners";
/// `i/s/<sha>` → `Session`.
pub(crate) fn session(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/s/{}", hex(sha)).into_bytes()
}
/// `i/us/<tenant>/<user>` → the user's session hashes.
pub(crate) fn user_sessions(t: &str, id: &str) -> Vec<u8> {
    format!("i/us/{t}/{id}").into_bytes()
}
/// `i/k/<sha>` → `ApiKey`.
pub(crate) fn api_key(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/k/{}", hex(sha)).into_bytes()
}
/// `i/kid/<tenant>/<id>` → key hash.
pub(crate) fn api_key_id(t: &str, id: &str) -> Vec<u8> {
    format!("i/kid/{t}/{id}").into_bytes()
}
/// Prefix of a tenant's key ids.
pub(crate) fn api_key_id_prefix(t: &str) -> Vec<u8> {
    format!("i/kid/{t}/").into_bytes()
}
/// `i/r/<tenant>/<role>` → `CustomRole`.
pub(crate) fn role(t: &str, id: &str) -> Vec<u8> {
    format!("i/r/{t}/{id}").into_bytes()
}
/// Prefix of a tenant's custom roles.
pub(crate) fn role_prefix(t: &str) -> Vec<u8> {
    format!("i/r/{t}/").into_bytes()
}
/// `i/c/<sha>` → `LoginChallenge`.
pub(crate) fn challenge(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/c/{}", hex(sha)).into_bytes()
}
/// `i/inv/<sha>` → `Invitation`.
pub(crate) fn invitation(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/inv/{}", hex(sha)).into_bytes()
}
/// `i/rst/<sha>` → `ResetToken`.
pub(crate) fn reset(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/rst/{}", hex(sha)).into_bytes()
}
/// `i/rcur/<tenant>/<user>` → SHA-256 of the user's one live reset token (all zeros once it
/// was used): written by the `…Exclusive` reset commands.
pub(crate) fn reset_current(t: &str, id: &str) -> Vec<u8> {
    format!("i/rcur/{t}/{id}").into_bytes()
}
/// `i/tk/<sha>` → `Ticket`.
pub(crate) fn ticket(sha: &[u8; 32]) -> Vec<u8> {
    format!("i/tk/{}", hex(sha)).into_bytes()
}
