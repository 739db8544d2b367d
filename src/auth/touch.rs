//! Idle-timeout and key `last_used` bookkeeping without a Raft write per request: each node remembers when it last
//! saw each session and a job proposes the batch (`TouchSessions`) every [`FLUSH_EVERY`]. A
//! session's idle time is measured from the newest of the replicated and the local time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Interval of the flush job.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Session and API-key uses seen by this node and not yet replicated.
#[derive(Default)]
pub struct Touches {
    seen: Mutex<HashMap<[u8; 32], u64>>,
    flushed: Mutex<HashMap<[u8; 32], u64>>,
    keys: Mutex<HashMap<[u8; 32], u64>>,
}

impl Touches {
    /// Records a use.
    pub fn record(&self, sha: [u8; 32], at_ms: u64) {
        self.seen.lock().expect("touch lock").insert(sha, at_ms);
    }

    /// Newest use of a session seen here (0 if none).
    pub fn last_seen(&self, sha: &[u8; 32]) -> u64 {
        let seen = self.seen.lock().expect("touch lock").get(sha).copied().unwrap_or(0);
        seen.max(self.flushed.lock().expect("touch lock").get(sha).copied().unwrap_or(0))
    }

    /// Records an API key use (`last_used_ms`).
    pub fn record_key(&self, sha: [u8; 32], at_ms: u64) {
        self.keys.lock().expect("touch lock").insert(sha, at_ms);
    }

    /// Takes the API key uses to replicate.
    pub fn drain_keys(&self) -> Vec<([u8; 32], u64)> {
        self.keys.lock().expect("touch lock").drain().collect()
    }

    /// Takes the uses to replicate.
    pub fn drain(&self) -> Vec<([u8; 32], u64)> {
        let taken: Vec<_> = self.seen.lock().expect("touch lock").drain().collect();
        let mut flushed = self.flushed.lock().expect("touch lock");
        flushed.clear();
        flushed.extend(taken.iter().copied());
        taken
    }
}

/// Proposes the uses seen since the last flush.
pub async fn flush(touches: &Touches, replica: &crate::replica::Replica) {
    use monsys_raft::Command;
    use monsys_raft::identity::IdentityCommand;
    let sessions = touches.drain();
    let keys = touches.drain_keys();
    let cmds = sessions
        .chunks(1000)
        .map(|c| IdentityCommand::TouchSessions { seen: c.to_vec() })
        .chain(keys.chunks(1000).map(|c| IdentityCommand::TouchApiKeys { seen: c.to_vec() }));
    for cmd in cmds {
        if let Err(e) = replica.propose(Command::Identity(cmd)).await {
            tracing::debug!(error = %e, "credential activity not replicated; local view still counts");
        }
    }
}

/// Starts the flush job (every [`FLUSH_EVERY`] until the node stops).
pub fn spawn_flush(
    touches: std::sync::Arc<Touches>,
    replica: crate::replica::Replica,
    life: &crate::lifecycle::Lifecycle,
) {
    life.spawn_until_stop(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            flush(&touches, &replica).await;
        }
    });
}
