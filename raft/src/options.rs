//! Tunables of the replicated store and their translation into `openraft::Config`.
//!
//! Note on timeouts: openraft 0.9 bounds each append-entries RPC (heartbeats included) by
//! `heartbeat_ms`, each vote by `election_timeout_min_ms` and each snapshot chunk by
//! `install_snapshot_timeout_ms`; `rpc_timeout_ms` only caps append/vote further. A follower
//! whose fsync takes longer than `heartbeat_ms` therefore times out appends: raise
//! `heartbeat_ms` (and the election timeouts with it) for slow disks or links.
//!
//! Elections: openraft's own election timer is off (`enable_elect = false`); the `election`
//! module campaigns instead, after a pre-vote. openraft still enforces its leader lease: a voter
//! refuses votes for `election_timeout_max_ms` after it last heard from its leader.
//!
//! Failover time: a voter that hears nothing from its leader for a timeout drawn each round from
//! `[max, 2 × max − min)` asks for pre-votes, which the others grant once they too have heard
//! nothing for `max` (the lease), and then campaigns. With the defaults (100 / 200–300 ms) a
//! killed leader is replaced 300–400 ms after its last heartbeat (one round trip more for the
//! pre-vote), while a follower still tolerates two lost heartbeats in a row; a node cut off from
//! the others never campaigns, so it cannot depose the leader when it comes back.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::codec::MAX_RPC_BYTES;

/// Most entries in one append-entries RPC (an entry is at most `MAX_VALUE_BYTES`, ~120 KiB).
pub const MAX_ENTRIES_PER_APPEND: u64 = 16;

/// Largest snapshot chunk accepted by [`Options::to_config`]: a chunk must fit in one RPC.
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
const _: () = assert!(MAX_SNAPSHOT_CHUNK_BYTES < MAX_RPC_BYTES);

/// Options of the Raft group and its sled store. Defaults suit a LAN cluster with fsync'ing disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Leader heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Minimum election timeout, ms (must exceed heartbeat).
    pub election_timeout_min_ms: u64,
    /// Maximum election timeout, ms.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot (so slightly lagging followers need no snapshot).
    pub keep_logs_behind_snapshot: u64,
    /// Timeout of one snapshot chunk RPC, ms.
    pub install_snapshot_timeout_ms: u64,
    /// Snapshot chunk size, bytes.
    pub snapshot_chunk_bytes: u64,
    /// Timeout of an append-entries / vote RPC, ms.
    pub rpc_timeout_ms: u64,
    /// sled page cache, bytes.
    pub cache_capacity_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_ms: 100,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 300,
            snapshot_every_entries: 5000,
            keep_logs_behind_snapshot: 1000,
            install_snapshot_timeout_ms: 10_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            rpc_timeout_ms: 1000,
            cache_capacity_bytes: 128 * 1024 * 1024,
        }
    }
}

impl Options {
    /// Checks the options and builds the openraft configuration of the group `cluster_name`.
    pub fn to_config(&self, cluster_name: &str) -> Result<openraft::Config, Error> {
        self.check()?;
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: self.keep_logs_behind_snapshot,
            // openraft's default (300) lets one append-entries RPC carry ~35 MB of ingest groups;
            // under load such an RPC outlives its heartbeat-long deadline, is retried, and the
            // follower hears nothing long enough to start an election
            max_payload_entries: MAX_ENTRIES_PER_APPEND,
            // elections are ours: see `election` (pre-vote, leadership transfer)
            enable_elect: false,
            ..Default::default()
        };
        config.validate().map_err(|e| Error::Config(e.to_string()))
    }

    /// Checks what openraft's `Config::validate` does not.
    fn check(&self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.heartbeat_ms == 0 || self.rpc_timeout_ms == 0 || self.install_snapshot_timeout_ms == 0 {
            return fail("heartbeat_ms, rpc_timeout_ms and install_snapshot_timeout_ms must be > 0".into());
        }
        if self.snapshot_every_entries == 0 {
            return fail("snapshot_every_entries must be > 0".into());
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return fail(format!("snapshot_chunk_bytes must be in 1..={MAX_SNAPSHOT_CHUNK_BYTES}"));
        }
        if self.cache_capacity_bytes == 0 {
            return fail("cache_capacity_bytes must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_valid_config() {
        let c = Options::default().to_config("monsys").unwrap();
        assert_eq!(c.cluster_name, "monsys");
        assert_eq!(c.heartbeat_interval, 100);
        assert_eq!((c.election_timeout_min, c.election_timeout_max), (200, 300));
        assert_eq!(c.install_snapshot_timeout, 10_000);
        assert_eq!(c.snapshot_policy, openraft::SnapshotPolicy::LogsSinceLast(5000));
        assert_eq!(c.snapshot_max_chunk_size, 4 * 1024 * 1024);
        assert_eq!(c.max_in_snapshot_log_to_keep, 1000);
        assert!(!c.enable_elect, "the election driver campaigns, not openraft's timer");
    }

    #[test]
    fn invalid_options_are_refused() {
        let bad = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.to_config("c").unwrap_err()
        };
        assert!(matches!(bad(|o| o.election_timeout_min_ms = o.heartbeat_ms), Error::Config(_)));
        assert!(matches!(bad(|o| o.election_timeout_max_ms = o.election_timeout_min_ms), Error::Config(_)));
        assert!(matches!(bad(|o| o.snapshot_chunk_bytes = 0), Error::Config(_)));
        assert!(matches!(bad(|o| o.snapshot_every_entries = 0), Error::Config(_)));
        assert!(matches!(bad(|o| o.rpc_timeout_ms = 0), Error::Config(_)));
    }
}
