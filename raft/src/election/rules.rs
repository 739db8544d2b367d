//! The decisions of the election layer, as plain functions of what a node knows (no IO, no
//! clock): whether to grant a pre-vote, whether the grants make a quorum, how long to wait
//! before a round, and which voter should take over the leadership.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::LogId;

use super::wire::Refusal;
use crate::NodeId;

/// What a voter knows when it is asked for a pre-vote.
#[derive(Debug, Clone, Copy)]
pub struct Voter<'a> {
    /// Whether it is the leader.
    pub is_leader: bool,
    /// How long since it last heard from a leader (or granted a vote); `None`: never.
    pub silence: Option<Duration>,
    /// Its last log id.
    pub last_log_id: Option<&'a LogId<NodeId>>,
}

/// Whether a voter grants a pre-vote to a candidate whose last log id is `candidate_log`:
/// never as the leader, never while it heard from a leader within `lease` (then the real vote
/// would be refused too: openraft refuses votes within the same lease), and only to a
/// candidate whose log is at least as up to date as its own (the real vote's rule).
pub fn grant_pre_vote(
    voter: &Voter<'_>,
    candidate_log: Option<&LogId<NodeId>>,
    lease: Duration,
) -> Result<(), Refusal> {
    if voter.is_leader {
        return Err(Refusal::IAmLeader);
    }
    if voter.silence.is_some_and(|s| s < lease) {
        return Err(Refusal::LeaderAlive);
    }
    if candidate_log < voter.last_log_id {
        return Err(Refusal::LogBehind);
    }
    Ok(())
}

/// Whether `granted` holds a majority of every configuration in `configs` (one in a uniform
/// configuration, two during a joint change). An empty configuration list is no quorum.
pub fn is_quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty() && configs.iter().all(|c| c.intersection(granted).count() * 2 > c.len())
}

/// The silence after which a follower asks for pre-votes, for a random `draw` in `[0, 1)`:
/// the leader lease (`max`, so that the voters' leases have run out too) plus a random part of
/// `max - min`, drawn again each round so that two followers rarely campaign together.
pub fn election_timeout(min: Duration, max: Duration, draw: f64) -> Duration {
    max + (max.saturating_sub(min)).mul_f64(draw.clamp(0.0, 1.0))
}

/// The voter that should take over the leadership: among `candidates` (voters other than
/// `me`), the one whose replicated log is furthest (ties to the lowest id); `None` if no
/// candidate has a known match.
pub fn best_target(
    me: NodeId,
    replication: &BTreeMap<NodeId, Option<LogId<NodeId>>>,
    candidates: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    candidates
        .iter()
        .filter(|id| **id != me)
        .filter_map(|id| replication.get(id).copied().flatten().map(|m| (m.index, *id)))
        .max_by(|(a, ida), (b, idb)| a.cmp(b).then(idb.cmp(ida)))
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    const LEASE: Duration = Duration::from_millis(300);

    fn voter(silence_ms: Option<u64>, last: Option<&LogId<NodeId>>) -> Voter<'_> {
        Voter { is_leader: false, silence: silence_ms.map(Duration::from_millis), last_log_id: last }
    }

    #[test]
    fn a_voter_that_hears_its_leader_refuses() {
        let mine = log(2, 10);
        assert_eq!(
            grant_pre_vote(&voter(Some(299), Some(&mine)), Some(&mine), LEASE),
            Err(Refusal::LeaderAlive)
        );
        assert_eq!(grant_pre_vote(&voter(Some(300), Some(&mine)), Some(&mine), LEASE), Ok(()));
        assert_eq!(
            grant_pre_vote(&voter(None, Some(&mine)), Some(&mine), LEASE),
            Ok(()),
            "never heard of one"
        );
    }

    #[test]
    fn the_leader_never_grants() {
        let v = Voter { is_leader: true, silence: None, last_log_id: None };
        assert_eq!(grant_pre_vote(&v, Some(&log(9, 9)), LEASE), Err(Refusal::IAmLeader));
    }

    #[test]
    fn a_candidate_with_a_shorter_or_older_log_is_refused() {
        let mine = log(2, 10);
        let v = voter(Some(1000), Some(&mine));
        assert_eq!(grant_pre_vote(&v, Some(&log(2, 9)), LEASE), Err(Refusal::LogBehind), "shorter");
        assert_eq!(grant_pre_vote(&v, Some(&log(1, 50)), LEASE), Err(Refusal::LogBehind), "older term");
        assert_eq!(grant_pre_vote(&v, None, LEASE), Err(Refusal::LogBehind), "empty");
        assert_eq!(grant_pre_vote(&v, Some(&log(2, 10)), LEASE), Ok(()), "same");
        assert_eq!(grant_pre_vote(&v, Some(&log(3, 1)), LEASE), Ok(()), "newer term");
        assert_eq!(grant_pre_vote(&voter(Some(1000), None), None, LEASE), Ok(()), "both empty");
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_quorum_is_a_majority_of_each_configuration() {
        let three = vec![set(&[1, 2, 3])];
        assert!(!is_quorum(&three, &set(&[1])));
        assert!(is_quorum(&three, &set(&[1, 3])));
        assert!(is_quorum(&[set(&[1])], &set(&[1])), "a single voter");
        assert!(!is_quorum(&[set(&[1, 2, 3, 4])], &set(&[1, 2])), "half is not a majority");
        assert!(!is_quorum(&[], &set(&[1])));
        assert!(is_quorum(&three, &set(&[1, 2, 9])), "grants from outside count for nothing, nor against");

        // joint configuration {1,2,3} → {3,4,5}: a majority of both
        let joint = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!is_quorum(&joint, &set(&[1, 2])), "old majority only");
        assert!(!is_quorum(&joint, &set(&[4, 5])), "new majority only");
        assert!(is_quorum(&joint, &set(&[1, 2, 4, 5])));
        assert!(is_quorum(&joint, &set(&[2, 3, 4])));
    }

    #[test]
    fn the_timeout_starts_at_the_lease_and_is_spread_over_max_minus_min() {
        let (min, max) = (Duration::from_millis(200), Duration::from_millis(300));
        assert_eq!(election_timeout(min, max, 0.0), max);
        assert_eq!(election_timeout(min, max, 0.5), Duration::from_millis(350));
        assert!(election_timeout(min, max, 0.999) < Duration::from_millis(400));
        assert_eq!(election_timeout(min, max, 7.0), Duration::from_millis(400), "draws are clamped");
    }

    #[test]
    fn the_best_target_is_the_most_caught_up_other_voter() {
        let replication =
            BTreeMap::from([(2, Some(log(1, 7))), (3, Some(log(1, 9))), (4, None), (5, Some(log(1, 9)))]);
        assert_eq!(best_target(1, &replication, &set(&[2, 3, 4, 5])), Some(3), "ties to the lowest id");
        assert_eq!(best_target(1, &replication, &set(&[2, 4])), Some(2), "only the candidates count");
        assert_eq!(best_target(1, &replication, &set(&[4])), None, "no known match");
        assert_eq!(best_target(1, &replication, &set(&[1, 6])), None, "not myself, not unknown nodes");
    }
}
