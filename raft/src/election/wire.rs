//! The two RPCs of our own election layer, as they travel (bincode, `network::RpcKind`
//! `prevote` and `elect-now`).
//!
//! Each type is an enum whose one variant is its first version: a later shape is a new variant,
//! so a peer decoding a version it does not know fails to decode instead of misreading it. The
//! golden bytes below pin the encoding; a change to them is a wire-format change that older
//! peers cannot read.

use openraft::LogId;
use serde::{Deserialize, Serialize};

use crate::NodeId;

/// "Would you vote for me if I campaigned now?", asked before a node campaigns (pre-vote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreVoteRequest {
    /// First version.
    V1 {
        /// The term the candidate would campaign in (its current term + 1); for the voter's log.
        term: u64,
        /// Who asks.
        candidate: NodeId,
        /// The candidate's last log id.
        last_log_id: Option<LogId<NodeId>>,
    },
}

/// A voter's answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreVoteResponse {
    /// First version.
    V1 {
        /// Whether the voter would vote for the candidate.
        granted: bool,
        /// The voter's current term.
        term: u64,
        /// Why not, when not granted.
        refusal: Option<Refusal>,
    },
}

/// Why a voter refuses a pre-vote or a node refuses to campaign on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The voter is the leader.
    IAmLeader,
    /// The voter heard from a leader within the leader lease.
    LeaderAlive,
    /// The candidate's log is behind the voter's.
    LogBehind,
    /// The node asked to campaign does not see the asker as its leader in that term.
    NotMyLeader,
    /// The node asked to campaign is not a voter.
    NotAVoter,
}

/// "Campaign now, without a pre-vote": the leader hands its leadership to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectNowRequest {
    /// First version.
    V1 {
        /// The leader's term.
        term: u64,
        /// The leader's id.
        leader: NodeId,
    },
}

/// The answer to an [`ElectNowRequest`]: whether the node started its campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectNowResponse {
    /// First version.
    V1 {
        /// Why the node did not campaign; `None` when it did.
        refusal: Option<Refusal>,
    },
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::codec::assert_golden;

    #[test]
    fn pre_vote_golden_bytes() {
        let log = LogId::new(CommittedLeaderId::new(3, 2), 17);
        assert_golden(&[
            (
                PreVoteRequest::V1 { term: 4, candidate: 2, last_log_id: Some(log) },
                "00000000040000000000000002000000000000000103000000000000000200000000000000110000\
                 0000000000",
            ),
            (
                PreVoteRequest::V1 { term: 1, candidate: 9, last_log_id: None },
                "000000000100000000000000090000000000000000",
            ),
        ]);
        assert_golden(&[
            (PreVoteResponse::V1 { granted: true, term: 3, refusal: None }, "0000000001030000000000000000"),
            (
                PreVoteResponse::V1 { granted: false, term: 3, refusal: Some(Refusal::LeaderAlive) },
                "000000000003000000000000000101000000",
            ),
        ]);
    }

    #[test]
    fn elect_now_golden_bytes() {
        assert_golden(&[(
            ElectNowRequest::V1 { term: 5, leader: 1 },
            "0000000005000000000000000100000000000000",
        )]);
        assert_golden(&[
            (ElectNowResponse::V1 { refusal: None }, "0000000000"),
            (ElectNowResponse::V1 { refusal: Some(Refusal::NotMyLeader) }, "000000000103000000"),
        ]);
    }

    #[test]
    fn every_refusal_has_fixed_bytes() {
        let all = [
            (Refusal::IAmLeader, "00000000"),
            (Refusal::LeaderAlive, "01000000"),
            (Refusal::LogBehind, "02000000"),
            (Refusal::NotMyLeader, "03000000"),
            (Refusal::NotAVoter, "04000000"),
        ];
        assert_golden(&all);
    }
}
