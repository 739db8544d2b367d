//! Deterministic placement: rendezvous (highest-random-weight) hashing.
//!
//! `owner(key) = argmax over members m of h(m, key)`, ties broken by the higher node id.
//! Properties the tests below check:
//! - every node with the same member set computes the same owner (input order does not matter);
//! - keys spread evenly (no virtual nodes needed);
//! - when a member leaves, only its keys move; when one joins, only keys it now wins move to it.
//!
//! The view carries an `epoch` so that callers can tell which member set an ownership decision
//! was made with. Deliberately missing: weights per node (every hub is assumed equal).

use std::collections::BTreeSet;
use std::fmt;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Raft/cluster node id.
pub type NodeId = u64;

/// The key an actor is placed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorKey {
    /// The actor of one agent.
    Agent(String),
    /// The actor of one console session.
    Console(String),
    /// The rate limiter of one key (e.g. `login:ip:10.0.0.7`).
    Limit(String),
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorKey::Agent(id) => write!(f, "agent:{id}"),
            ActorKey::Console(id) => write!(f, "console:{id}"),
            ActorKey::Limit(key) => write!(f, "limit:{key}"),
        }
    }
}

/// A member set to place actors on, with the epoch it was observed at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementView {
    epoch: u64,
    members: BTreeSet<NodeId>,
}

impl PlacementView {
    /// A view of `members` at `epoch`.
    pub fn new(epoch: u64, members: impl IntoIterator<Item = NodeId>) -> Self {
        PlacementView { epoch, members: members.into_iter().collect() }
    }

    /// The epoch this view was observed at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, ascending.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied()
    }

    /// Whether `node` is in this view.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }

    /// The owner of `key`, or `None` when the view is empty.
    pub fn owner(&self, key: &ActorKey) -> Option<NodeId> {
        let key = key.to_string();
        self.members.iter().copied().max_by_key(|&m| (score(m, &key), m))
    }

    /// All members ranked by preference for `key` (owner first): the natural successor list.
    pub fn ranked(&self, key: &ActorKey) -> Vec<NodeId> {
        let key = key.to_string();
        let mut ranked: Vec<NodeId> = self.members.iter().copied().collect();
        ranked.sort_by_key(|&m| std::cmp::Reverse((score(m, &key), m)));
        ranked
    }
}

fn score(member: NodeId, key: &str) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<ActorKey> {
        (0..n).map(|i| ActorKey::Agent(format!("agent-{i}"))).collect()
    }

    #[test]
    fn empty_view_has_no_owner() {
        assert_eq!(PlacementView::default().owner(&ActorKey::Agent("a".into())), None);
    }

    #[test]
    fn agent_and_console_keys_differ() {
        assert_eq!(ActorKey::Agent("x".into()).to_string(), "agent:x");
        assert_eq!(ActorKey::Console("x".into()).to_string(), "console:x");
    }

    #[test]
    fn load_spreads_evenly_over_five_nodes() {
        let view = PlacementView::new(1, [11, 22, 33, 44, 55]);
        let mut counts = std::collections::BTreeMap::new();
        for k in keys(50_000) {
            *counts.entry(view.owner(&k).unwrap()).or_insert(0u32) += 1;
        }
        for (node, n) in counts {
            assert!((9_000..=11_000).contains(&n), "node {node} owns {n} of 50000 keys");
        }
    }

    #[test]
    fn ranked_starts_with_owner() {
        let view = PlacementView::new(1, [1, 2, 3]);
        for k in keys(100) {
            assert_eq!(view.ranked(&k)[0], view.owner(&k).unwrap());
        }
    }

    proptest! {
        #[test]
        fn owner_ignores_member_order(mut members in proptest::collection::vec(any::<u64>(), 1..8), key in ".{0,20}") {
            let key = ActorKey::Agent(key);
            let a = PlacementView::new(1, members.clone()).owner(&key);
            members.reverse();
            let b = PlacementView::new(2, members).owner(&key);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn leaving_moves_only_the_leavers_keys(
            members in proptest::collection::btree_set(any::<u64>(), 2..8),
            pick in any::<prop::sample::Index>(),
        ) {
            let before = PlacementView::new(1, members.clone());
            let leaver = *pick.get(&members.iter().copied().collect::<Vec<_>>());
            let after = PlacementView::new(2, members.into_iter().filter(|&m| m != leaver));
            for k in keys(300) {
                let (o1, o2) = (before.owner(&k).unwrap(), after.owner(&k).unwrap());
                if o1 != leaver {
                    prop_assert_eq!(o1, o2, "key {} moved off a node that stayed", k);
                }
            }
        }

        #[test]
        fn joining_takes_keys_only_for_itself(
            members in proptest::collection::btree_set(any::<u64>(), 1..8),
            joiner in any::<u64>(),
        ) {
            prop_assume!(!members.contains(&joiner));
            let before = PlacementView::new(1, members.clone());
            let after = PlacementView::new(2, members.into_iter().chain([joiner]));
            for k in keys(300) {
                let (o1, o2) = (before.owner(&k).unwrap(), after.owner(&k).unwrap());
                prop_assert!(o1 == o2 || o2 == joiner, "key {} moved from {} to {}", k, o1, o2);
            }
        }
    }
}
