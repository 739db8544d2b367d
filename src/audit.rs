//! Audit events recorded after the fact, for changes that are not themselves log commands of
//! a tenant (a membership change, an enrollment-token revocation).
//!
//! [`Auditor::record`] appends the event in the background: every member must announce the
//! `record-audit` log feature first (a node that just joined is live in gossip a moment after
//! its answer), so it waits for that up to [`AUDIT_WAIT`]. Best effort after the fact: if it
//! cannot be written the change stands and a warning says what went unaudited. Changes that
//! are log commands (settings, identity, fleet) write their event in the same entry instead.

use std::time::Duration;

use monsys_raft::Command;
use monsys_raft::fleet::FleetCommand;

use crate::lifecycle::Lifecycle;
use crate::replica::{Replica, WriteError};

/// How long an event waits for every member to support it, and for a leader to take it.
pub const AUDIT_WAIT: Duration = Duration::from_secs(10);

/// Records audit events after the fact (cheap to clone).
#[derive(Clone)]
pub struct Auditor {
    replica: Replica,
    life: Lifecycle,
}

impl Auditor {
    /// An auditor writing through `replica`, its retries tracked by `life`.
    pub fn new(replica: Replica, life: Lifecycle) -> Auditor {
        Auditor { replica, life }
    }

    /// Appends an event to `tenant`'s audit log in the background (see the module doc).
    pub fn record(&self, tenant: &str, event_type: &str, actor: &str, details: serde_json::Value) {
        let replica = self.replica.clone();
        let (event_type, details) = (event_type.to_string(), details.to_string());
        let cmd = Command::Fleet(FleetCommand::RecordAudit {
            tenant: tenant.to_string(),
            at_ms: crate::clock::now_ms(),
            event_type: event_type.clone(),
            actor: actor.to_string(),
            details: details.clone(),
        });
        self.life.spawn_until_stop(async move {
            let deadline = tokio::time::Instant::now() + AUDIT_WAIT;
            while !replica.members_support(monsys_raft::LOG_FEATURE_RECORD_AUDIT) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        event_type,
                        details,
                        "not audited: not every member announces record-audit"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            loop {
                // to whichever node leads by then (this one may have stepped down meanwhile)
                let Err(e) = replica.propose(cmd.clone()).await else { return };
                if !matches!(e, WriteError::NotApplied { .. }) {
                    // it may have been written: trying again could record it twice
                    tracing::warn!(event_type, details, error = %e, "audit event perhaps not written");
                    return;
                }
                // a leader that removed itself never learns its successor: ask the members
                if replica.propose_to_members(&cmd).await {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(event_type, details, error = %e, "audit event not written");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}
