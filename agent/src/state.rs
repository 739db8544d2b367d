//! The agent's identity and progress on disk: the Ed25519 seed (`agent.key`, 0600, refused if
//! readable by others), the registration (`agent.json`, 0600: agent id and token), the next
//! `seq` (`seq`), and a generated machine id when the host has none.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The registration the hub gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Agent id.
    pub agent_id: String,
    /// Agent token (`ms_…`).
    pub agent_token: String,
}

/// Files of the state directory.
pub struct State {
    dir: PathBuf,
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

impl State {
    /// Opens (creating) the state directory (mode 0700).
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create state dir {}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        Ok(State { dir: dir.to_path_buf() })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The signing key, created on first use. Refuses a key file others can read.
    pub fn signing_key(&self) -> anyhow::Result<SigningKey> {
        let path = self.dir.join("agent.key");
        match fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    bail!(
                        "{} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
                        path.display()
                    );
                }
                let seed: [u8; 32] = fs::read(&path)?
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("{} is not a 32-byte seed", path.display()))?;
                Ok(SigningKey::from_bytes(&seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                write_private(&path, &seed)?;
                Ok(SigningKey::from_bytes(&seed))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The stored registration.
    pub fn registration(&self) -> Option<Registration> {
        serde_json::from_slice(&fs::read(self.dir.join("agent.json")).ok()?).ok()
    }

    /// Stores a registration.
    pub fn save_registration(&self, r: &Registration) -> anyhow::Result<()> {
        write_private(&self.dir.join("agent.json"), &serde_json::to_vec_pretty(r)?)
    }

    /// The next seq to use (from 1).
    pub fn next_seq(&self) -> u64 {
        fs::read_to_string(self.dir.join("seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1)
    }

    /// Stores the next seq (durably: a seq is never reused for another body).
    pub fn save_next_seq(&self, seq: u64) -> anyhow::Result<()> {
        write_private(&self.dir.join("seq"), seq.to_string().as_bytes())
    }

    /// The host identity: /etc/machine-id, else one generated and kept here.
    pub fn machine_id(&self) -> anyhow::Result<String> {
        for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
            if let Ok(s) = fs::read_to_string(p) {
                let s = s.trim();
                if !s.is_empty() {
                    return Ok(s.to_string());
                }
            }
        }
        let path = self.dir.join("machine-id");
        if let Ok(s) = fs::read_to_string(&path) {
            return Ok(s.trim().to_string());
        }
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        write_private(&path, id.as_bytes())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_private_and_stable_and_loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let k1 = s.signing_key().unwrap();
        let mode = fs::metadata(dir.path().join("agent.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(s.signing_key().unwrap().to_bytes(), k1.to_bytes());
        fs::set_permissions(dir.path().join("agent.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = s.signing_key().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(s.next_seq(), 1);
        s.save_next_seq(42).unwrap();
        assert_eq!(s.next_seq(), 42);
    }
}
