//! The agent wire protocol: registration, signed ingest batches, heartbeats.
//!
//! Both sides of the protocol use these types: the hub decodes and verifies them, `monsys agent`
//! builds and signs them, tests and the chaos harness forge them. JSON field names are the API.
//!
//! Signing: `X-Monsys-Signature: base64(Ed25519(SHA-256(body)))` over the exact body bytes sent.
//! The batch's `seq` and `collected_at_ms` live *inside* the signed body, so a signature also
//! authenticates the sequence number: a replayed batch is recognised by its `seq`, and a forged
//! `seq` breaks the signature. An agent retries a batch with the byte-identical body, so the hub
//! can tell a retry (same `seq`, same body hash → answered as a duplicate) from a conflict (same
//! `seq`, different body → `409 seq_conflict`).
//!
//! Metric names (the series an alert rule or dashboard can rely on) are the `metric::*` constants;
//! agents may send others.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of this wire protocol (the JSON shapes and the signing rule above). A change that
/// an older hub or agent cannot read gets a new version, announced by hubs with their formats.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header carrying the batch signature.
pub const SIGNATURE_HEADER: &str = "x-monsys-signature";
/// Header of ingest and heartbeat answers naming the base URL of the node that owns the agent
/// (its actor runs there). An agent may send to that URL directly, saving the forwarding hop;
/// it is a hint, never required: any node still takes any agent's batches.
pub const OWNER_HEADER: &str = "x-monsys-owner";
/// The scheme of `url` if it is an `http`/`https` base URL (`scheme://host[:port]`, no path,
/// query, fragment or user info), lowercased; the form of an owner hint.
pub fn base_url_scheme(url: &str) -> Option<&'static str> {
    let (scheme, rest) = url.split_once("://")?;
    let host_ok = !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@']);
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        return None;
    };
    host_ok.then_some(scheme)
}

/// Prefix of agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "ms_";
/// Prefix of enrollment tokens.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "mse_";
/// Largest number of samples in one batch.
pub const MAX_SAMPLES_PER_BATCH: usize = 2_000;
/// Largest number of processes in one batch.
pub const MAX_PROCESSES: usize = 100;
/// Largest number of agent-side alerts in one batch.
pub const MAX_AGENT_ALERTS: usize = 50;
/// Largest accepted ingest body, bytes (the hub refuses bigger ones with 413).
pub const MAX_INGEST_BODY_BYTES: usize = 96 * 1024;

/// Well-known metric names sent by `monsys agent`.
pub mod metric {
    /// Whole-host CPU busy percentage (0..100).
    pub const CPU_PERCENT: &str = "cpu_percent";
    /// Per-core CPU busy percentage; label `core`.
    pub const CPU_CORE_PERCENT: &str = "cpu_core_percent";
    /// 1-minute load average.
    pub const LOAD1: &str = "load1";
    /// 5-minute load average.
    pub const LOAD5: &str = "load5";
    /// 15-minute load average.
    pub const LOAD15: &str = "load15";
    /// Used memory percentage (0..100).
    pub const MEM_PERCENT: &str = "mem_percent";
    /// Used memory, bytes.
    pub const MEM_USED_BYTES: &str = "mem_used_bytes";
    /// Total memory, bytes.
    pub const MEM_TOTAL_BYTES: &str = "mem_total_bytes";
    /// Used swap, bytes.
    pub const SWAP_USED_BYTES: &str = "swap_used_bytes";
    /// Total swap, bytes.
    pub const SWAP_TOTAL_BYTES: &str = "swap_total_bytes";
    /// Used space percentage of a filesystem; label `mount`.
    pub const DISK_PERCENT: &str = "disk_percent";
    /// Used space of a filesystem, bytes; label `mount`.
    pub const DISK_USED_BYTES: &str = "disk_used_bytes";
    /// Size of a filesystem, bytes; label `mount`.
    pub const DISK_TOTAL_BYTES: &str = "disk_total_bytes";
    /// Bytes read per second from a block device; label `device`.
    pub const DISK_READ_BPS: &str = "disk_read_bytes_per_sec";
    /// Bytes written per second to a block device; label `device`.
    pub const DISK_WRITE_BPS: &str = "disk_write_bytes_per_sec";
    /// Bytes received per second; label `iface`.
    pub const NET_RX_BPS: &str = "net_rx_bytes_per_sec";
    /// Bytes sent per second; label `iface`.
    pub const NET_TX_BPS: &str = "net_tx_bytes_per_sec";
    /// Seconds since boot.
    pub const UPTIME_SECS: &str = "uptime_secs";
}

/// `POST /api/v1/agents/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Tenant enrollment token (`mse_…`), created by an admin.
    pub enrollment_token: String,
    /// Host name (display).
    pub hostname: String,
    /// Stable host identity (e.g. `/etc/machine-id`); with the tenant it identifies the agent.
    pub machine_id: String,
    /// The agent's Ed25519 public key, base64 of the 32 raw bytes. Pinned on first use.
    #[serde(default)]
    pub signing_pubkey: Option<String>,
    /// Agent version.
    pub agent_version: String,
    /// Operating system (e.g. `linux`).
    pub os: String,
    /// CPU architecture (e.g. `x86_64`).
    pub arch: String,
}

/// `POST /api/v1/agents/register` answer.
///
/// Registering again with the same host identity and key returns the same `agent_id` and a
/// fresh `agent_token` (tokens are stored hashed, so the old one cannot be returned; it stops
/// working).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The agent's id.
    pub agent_id: String,
    /// Bearer token for ingest and heartbeats (`ms_…`), shown once.
    pub agent_token: String,
    /// Whether the hub holds a pinned signing key for this agent (then every batch must be signed).
    pub signing_key_pinned: bool,
    /// Collection interval the hub asks for, seconds.
    pub interval_secs: u32,
}

/// One metric sample; its time is the batch's `collected_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Metric name (`[a-z0-9_]`, ≤ 64 bytes).
    pub name: String,
    /// Labels (≤ 8; keys `[a-z0-9_]` ≤ 32 bytes, values ≤ 128 bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Value; must be finite (JSON has no NaN).
    pub value: f64,
}

impl Sample {
    /// A sample without labels.
    pub fn new(name: &str, value: f64) -> Sample {
        Sample { name: name.to_string(), labels: BTreeMap::new(), value }
    }

    /// The canonical series key: `name` or `name{k="v",…}` with labels sorted by key and
    /// values quoted as Rust's `{:?}` quotes a string. Built in one allocation: it runs for
    /// every sample of every batch.
    pub fn series_key(&self) -> String {
        use std::fmt::Write;
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let len = self.labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
        let mut key = String::with_capacity(self.name.len() + 2 + len);
        key.push_str(&self.name);
        key.push('{');
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push('=');
            if v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
                key.push('"');
                key.push_str(v);
                key.push('"');
            } else {
                let _ = write!(key, "{v:?}"); // writing to a String cannot fail
            }
        }
        key.push('}');
        key
    }

    /// A sample with one label.
    pub fn labelled(name: &str, key: &str, label: &str, value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: BTreeMap::from([(key.to_string(), label.to_string())]),
            value,
        }
    }
}

/// A running process (top processes by CPU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Executable name.
    pub name: String,
    /// Owning user name, when known.
    #[serde(default)]
    pub user: Option<String>,
    /// CPU percentage of one core since the previous collection.
    pub cpu_percent: f32,
    /// Resident memory, bytes.
    pub mem_bytes: u64,
}

/// A systemd unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdUnit {
    /// Unit name.
    pub name: String,
    /// `active`, `inactive`, `failed`, …
    pub active_state: String,
    /// `running`, `exited`, `dead`, …
    pub sub_state: String,
}

/// A local user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAccount {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Login shell.
    pub shell: String,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// `tcp`, `tcp6`, `udp`, `udp6`.
    pub proto: String,
    /// Bound address.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// Owning process name, when known.
    #[serde(default)]
    pub process: Option<String>,
}

/// A container seen through the local Docker socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Container id (short).
    pub id: String,
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// `running`, `exited`, …
    pub state: String,
}

/// Host inventory, sent every few hours (and on start).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    /// OS name (e.g. `Debian GNU/Linux`).
    pub os_name: String,
    /// OS version (e.g. `12`).
    pub os_version: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU architecture.
    pub arch: String,
    /// Number of CPU cores.
    pub cpu_cores: u32,
    /// Total memory, bytes.
    pub mem_total_bytes: u64,
    /// Installed packages, when a package database was found.
    #[serde(default)]
    pub packages_count: Option<u64>,
    /// systemd units (bounded).
    #[serde(default)]
    pub systemd_units: Vec<SystemdUnit>,
    /// Local users (bounded).
    #[serde(default)]
    pub users: Vec<UserAccount>,
    /// Listening sockets (bounded).
    #[serde(default)]
    pub listening_ports: Vec<ListeningPort>,
    /// Containers, when a Docker socket exists.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// An alert raised by the agent itself (e.g. a failed systemd unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAlert {
    /// Stable key: the same condition always has the same key (de-duplication).
    pub key: String,
    /// Severity.
    pub severity: Severity,
    /// Human message.
    pub message: String,
}

/// `POST /api/v1/ingest` body: everything an agent reports in one collection cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    /// The agent's id.
    pub agent_id: String,
    /// Per-agent sequence number, strictly increasing from 1; a retry reuses the same `seq`
    /// with the byte-identical body.
    pub seq: u64,
    /// Collection time, unix milliseconds (batches from a replayed buffer carry old times).
    pub collected_at_ms: u64,
    /// Agent version.
    pub agent_version: String,
    /// Metric samples.
    #[serde(default)]
    pub metrics: Vec<Sample>,
    /// Inventory, when collected this cycle.
    #[serde(default)]
    pub inventory: Option<Inventory>,
    /// Top processes, when collected this cycle.
    #[serde(default)]
    pub processes: Option<Vec<ProcessInfo>>,
    /// Agent-side alerts currently firing.
    #[serde(default)]
    pub alerts: Vec<AgentAlert>,
}

/// Outcome of a batch, in the 200 answer of `POST /api/v1/ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestStatus {
    /// Stored now.
    Stored,
    /// This `seq` was already stored with the same body; nothing stored again.
    Duplicate,
}

/// `POST /api/v1/ingest` answer (2xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Stored or duplicate.
    pub status: IngestStatus,
    /// The batch's `seq`.
    pub seq: u64,
    /// Highest `seq` stored for this agent.
    pub last_seq: u64,
}

/// `POST /api/v1/agents/{id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Agent version.
    pub agent_version: String,
    /// Agent's clock, unix milliseconds (for drift detection).
    pub sent_at_ms: u64,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is not base64 of 64 bytes.
    Malformed,
    /// The signature does not match the body and key.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Malformed => f.write_str("signature header is not base64 of 64 bytes"),
            SignatureError::Mismatch => f.write_str("signature does not match the body and the pinned key"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// SHA-256 of a body.
pub fn body_sha256(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// The `X-Monsys-Signature` value for `body`.
pub fn sign_body(key: &SigningKey, body: &[u8]) -> String {
    B64.encode(key.sign(&body_sha256(body)).to_bytes())
}

/// Verifies an `X-Monsys-Signature` value over the SHA-256 `digest` of a body.
pub fn verify_digest(key: &VerifyingKey, digest: &[u8; 32], header: &str) -> Result<(), SignatureError> {
    let raw = B64.decode(header.trim()).map_err(|_| SignatureError::Malformed)?;
    let bytes: [u8; 64] = raw.try_into().map_err(|_| SignatureError::Malformed)?;
    key.verify(digest, &Signature::from_bytes(&bytes)).map_err(|_| SignatureError::Mismatch)
}

/// Encodes a public key the way `RegisterRequest::signing_pubkey` carries it.
pub fn encode_pubkey(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Decodes a `signing_pubkey`; `None` if it is not base64 of a valid Ed25519 point.
pub fn decode_pubkey(s: &str) -> Option<VerifyingKey> {
    let raw = B64.decode(s.trim()).ok()?;
    let bytes: [u8; 32] = raw.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signature_verifies_only_for_its_body_and_key() {
        let body = br#"{"agent_id":"a","seq":1}"#;
        let sig = sign_body(&key(1), body);
        let digest = body_sha256(body);
        assert_eq!(verify_digest(&key(1).verifying_key(), &digest, &sig), Ok(()));
        assert_eq!(verify_digest(&key(2).verifying_key(), &digest, &sig), Err(SignatureError::Mismatch));
        let other = body_sha256(br#"{"agent_id":"a","seq":2}"#);
        assert_eq!(verify_digest(&key(1).verifying_key(), &other, &sig), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_digest(&key(1).verifying_key(), &digest, "not base64!"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(verify_digest(&key(1).verifying_key(), &digest, "AAAA"), Err(SignatureError::Malformed));
    }

    #[test]
    fn series_keys_are_canonical() {
        assert_eq!(Sample::new("load1", 1.0).series_key(), "load1");
        let mut s = Sample::labelled("disk_percent", "mount", "/var", 1.0);
        s.labels.insert("dev".into(), "sda\"1".into());
        assert_eq!(s.series_key(), r#"disk_percent{dev="sda\"1",mount="/var"}"#);
    }

    #[test]
    fn series_keys_quote_like_debug_formatting() {
        // the stored layout keys series by this string: it must never change for a sample
        for v in ["", "eth0", "a b", "C:\\x", "tab\there", "quote\"d", "ünï", "nul\0", "'single'", "\u{7f}"]
        {
            let s = Sample::labelled("m", "k", v, 1.0);
            assert_eq!(s.series_key(), format!("m{{k={v:?}}}"), "{v:?}");
        }
    }

    #[test]
    fn pubkeys_round_trip_and_garbage_is_refused() {
        let pk = key(7).verifying_key();
        assert_eq!(decode_pubkey(&encode_pubkey(&pk)), Some(pk));
        assert_eq!(decode_pubkey("AAAA"), None);
        assert_eq!(decode_pubkey("%%%"), None);
    }

    #[test]
    fn batches_refuse_unknown_fields_and_default_optional_parts() {
        let b: IngestBatch =
            serde_json::from_str(r#"{"agent_id":"a","seq":1,"collected_at_ms":5,"agent_version":"1"}"#)
                .unwrap();
        assert!(b.metrics.is_empty() && b.inventory.is_none() && b.processes.is_none());
        let err = serde_json::from_str::<IngestBatch>(
            r#"{"agent_id":"a","seq":1,"collected_at_ms":5,"agent_version":"1","sneaky":1}"#,
        );
        assert!(err.is_err());
    }
}
