//! Finalizing a rolling upgrade: raising the cluster's active version once every member runs a
//! build that supports the new one (see `monsys_raft::cluster_version`).
//!
//! The target is the newest version *every* member of the Raft configuration announces over
//! gossip, so every member must be live: a member that is down might come back on an older
//! build. Finalizing is one replicated command; once it is applied, every log feature of the
//! version stays on whoever is down, and each node raises its data directory's format so that
//! an older build refuses it instead of misreading it. Before it, any node can still be rolled
//! back to the older build.
//!
//! Automatic finalizing (on by default; `auto_finalize_upgrade = false` turns it off for
//! operators who want to keep the way back open): the leader checks every
//! [`AUTO_CHECK_EVERY`] and finalizes once the upgrade has been complete for two checks in a
//! row, so a member restarting between two binaries is not caught half-way.

use std::time::Duration;

use monsys_raft::{Command, CommandResult, NodeId};

use crate::cluster::gossip::LiveView;
use crate::lifecycle::Lifecycle;
use crate::replica::{Replica, WriteError};

/// How often the leader checks whether an upgrade can be finalized automatically.
pub const AUTO_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why an upgrade cannot be finalized.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    /// Members gossip does not see alive: their binary is unknown.
    #[error("members {0:?} are not live, so their binaries are unknown; start them (or remove them) first")]
    MembersDown(Vec<NodeId>),
    /// A member's binary does not support a version above the active one.
    #[error(
        "member {node} runs a build whose newest cluster version is {max}, not above the active version \
         {active}; upgrade its binary first"
    )]
    NotSupported {
        /// The member holding the upgrade back.
        node: NodeId,
        /// The newest version it runs.
        max: u32,
        /// The active version.
        active: u32,
    },
    /// The write failed (with what is known of its outcome).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The versions before and after a finalize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    /// The active version now.
    pub active: u32,
    /// The active version before.
    pub previous: u32,
}

/// The version the cluster could be finalized to now: the newest version every member runs,
/// or why there is none above the active one. `Ok(None)`: already at it.
pub fn target(replica: &Replica) -> Result<Option<u32>, FinalizeError> {
    let live = replica.live().borrow().clone();
    let members = replica.refresh_view().members.clone();
    target_of(replica.active_cluster_version(), members.iter().copied(), &live)
}

/// [`target`] for the cluster at `active` whose members are `members` and whose live view is
/// `live`.
fn target_of(
    active: u32,
    members: impl Iterator<Item = NodeId>,
    live: &LiveView,
) -> Result<Option<u32>, FinalizeError> {
    let members: Vec<NodeId> = members.collect();
    let down: Vec<NodeId> = members.iter().copied().filter(|id| !live.contains_key(id)).collect();
    if !down.is_empty() {
        return Err(FinalizeError::MembersDown(down));
    }
    let oldest = members.iter().filter_map(|id| live.get(id)).min_by_key(|m| m.max_cluster_version());
    let Some(oldest) = oldest else { return Ok(None) };
    match oldest.max_cluster_version() {
        max if max > active => Ok(Some(max)),
        max if max == active => Ok(None),
        max => Err(FinalizeError::NotSupported { node: oldest.raft_id, max, active }),
    }
}

/// Raises the active version to [`target`]'s (through the leader); answers the versions before
/// and after (equal when there was nothing to do).
pub async fn finalize(replica: &Replica) -> Result<Finalized, FinalizeError> {
    let Some(version) = target(replica)? else {
        let active = replica.active_cluster_version();
        return Ok(Finalized { active, previous: active });
    };
    match replica.propose(Command::SetClusterVersion { version }).await? {
        CommandResult::ClusterVersion { active, previous } => {
            tracing::info!(active, previous, "cluster version finalized");
            Ok(Finalized { active, previous })
        }
        other => {
            Err(WriteError::unknown(format!("unexpected result of a cluster version change: {other:?}"))
                .into())
        }
    }
}

/// Starts the leader's automatic finalizing (see the module doc).
pub fn spawn_auto(replica: Replica, life: &Lifecycle) {
    life.spawn_until_stop(async move {
        let mut ready_before = false;
        loop {
            tokio::time::sleep(AUTO_CHECK_EVERY).await;
            let ready = replica.is_leader() && matches!(target(&replica), Ok(Some(_)));
            if ready && ready_before {
                match finalize(&replica).await {
                    Ok(f) => tracing::info!(
                        active = f.active,
                        previous = f.previous,
                        "upgrade finalized automatically"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "automatic finalize of the upgrade failed; will retry")
                    }
                }
            }
            ready_before = ready;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use monsys_proto::cluster::{FormatRange, Formats};

    use super::*;
    use crate::cluster::gossip::LiveMember;

    /// A live member running cluster versions up to `max` (`None`: a build from before them).
    fn member(id: NodeId, max: Option<u32>) -> (NodeId, LiveMember) {
        let formats = max.map(|max| Formats {
            cluster: FormatRange { min: 0, max },
            ..monsys_raft::cluster_version::formats()
        });
        let m = LiveMember {
            raft_id: id,
            api_addr: String::new(),
            version: String::new(),
            log_features: String::new(),
            formats,
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
        };
        (id, m)
    }

    fn live(members: Vec<(NodeId, LiveMember)>) -> LiveView {
        Arc::new(BTreeMap::from_iter(members))
    }

    #[test]
    fn the_target_is_the_newest_version_every_member_runs() {
        let all_new = live(vec![member(1, Some(1)), member(2, Some(1)), member(3, Some(2))]);
        assert_eq!(target_of(0, [1, 2, 3].into_iter(), &all_new).unwrap(), Some(1));
        assert_eq!(target_of(1, [1, 2, 3].into_iter(), &all_new).unwrap(), None, "nothing to do");
        assert_eq!(target_of(1, [3].into_iter(), &all_new).unwrap(), Some(2));
    }

    #[test]
    fn an_older_or_missing_member_blocks_the_finalize() {
        let one_old = live(vec![member(1, Some(1)), member(2, None), member(3, Some(1))]);
        assert_eq!(target_of(0, [1, 2, 3].into_iter(), &one_old).unwrap(), None, "the old build runs 0");
        let e = target_of(1, [1, 2, 3].into_iter(), &one_old).unwrap_err();
        assert!(matches!(e, FinalizeError::NotSupported { node: 2, max: 0, active: 1 }), "{e}");

        let two_live = live(vec![member(1, Some(1)), member(3, Some(1))]);
        let e = target_of(0, [1, 2, 3].into_iter(), &two_live).unwrap_err();
        assert!(matches!(&e, FinalizeError::MembersDown(down) if down == &vec![2]), "{e}");
        assert!(e.to_string().contains("not live"), "{e}");
    }
}
