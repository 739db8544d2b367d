//! Local reads of the identity domain. Authentication reads these on every request: a token
//! check is a sled lookup on the receiving node, never a Raft round trip.

use serde::de::DeserializeOwned;

use super::keys;
use super::types::*;
use crate::{Error, codec};

/// Reader of the identity domain over the `sm_data` tree.
#[derive(Clone)]
pub struct IdentityReader {
    pub(crate) data: sled::Tree,
}

impl IdentityReader {
    fn get<T: DeserializeOwned>(&self, what: &'static str, key: &[u8]) -> Result<Option<T>, Error> {
        self.data.get(key)?.map(|v| codec::decode_value(what, &v)).transpose()
    }

    fn scan<T: DeserializeOwned>(&self, what: &'static str, prefix: Vec<u8>) -> Result<Vec<T>, Error> {
        self.data.scan_prefix(prefix).map(|kv| codec::decode_value(what, &kv?.1)).collect()
    }

    /// Whether any enabled owner exists (bootstrap done).
    pub fn has_owner(&self) -> Result<bool, Error> {
        Ok(self.get::<u64>("owners", keys::OWNERS)?.unwrap_or(0) > 0)
    }

    /// A tenant.
    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>, Error> {
        self.get("tenant", &keys::tenant(id))
    }

    /// A user.
    pub fn user(&self, tenant: &str, id: &str) -> Result<Option<User>, Error> {
        self.get("user", &keys::user(tenant, id))
    }

    /// The user with this (lower-case) email.
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        match self.get::<(String, String)>("email index", &keys::email(email))? {
            Some((t, id)) => self.user(&t, &id),
            None => Ok(None),
        }
    }

    /// A tenant's users.
    pub fn users(&self, tenant: &str) -> Result<Vec<User>, Error> {
        self.scan("user", keys::user_prefix(tenant))
    }

    /// The session with this token hash.
    pub fn session(&self, sha: &[u8; 32]) -> Result<Option<Session>, Error> {
        self.get("session", &keys::session(sha))
    }

    /// The API key with this hash.
    pub fn api_key(&self, sha: &[u8; 32]) -> Result<Option<ApiKey>, Error> {
        self.get("api key", &keys::api_key(sha))
    }

    /// A tenant's API keys.
    pub fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, Error> {
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(keys::api_key_id_prefix(tenant)) {
            let sha: [u8; 32] = codec::decode_value("key id", &kv?.1)?;
            if let Some(k) = self.api_key(&sha)? {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// A pending login challenge.
    pub fn challenge(&self, sha: &[u8; 32]) -> Result<Option<LoginChallenge>, Error> {
        self.get("challenge", &keys::challenge(sha))
    }

    /// A pending invitation.
    pub fn invitation(&self, sha: &[u8; 32]) -> Result<Option<Invitation>, Error> {
        self.get("invitation", &keys::invitation(sha))
    }

    /// A pending password reset.
    pub fn reset_token(&self, sha: &[u8; 32]) -> Result<Option<ResetToken>, Error> {
        self.get("reset token", &keys::reset(sha))
    }

    /// A custom role.
    pub fn role(&self, tenant: &str, id: &str) -> Result<Option<CustomRole>, Error> {
        self.get("role", &keys::role(tenant, id))
    }

    /// A tenant's custom roles.
    pub fn roles(&self, tenant: &str) -> Result<Vec<CustomRole>, Error> {
        self.scan("role", keys::role_prefix(tenant))
    }
}
