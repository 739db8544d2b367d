//! Routing: every node accepts every request and sends it where it can be served.
//!
//! - [`leader`]: writes to replicated state and linearizable reads run on the Raft leader; a
//!   follower forwards them (one hop) to the leader it knows.
//! - [`owner`]: requests for an actor key (an agent, a console session) run on the key's owner
//!   node, chosen by rendezvous placement over the live voters; other nodes forward them.
//! - [`forward`]: the one-hop HTTP forwarder both use.
//! - [`suspects`]: owners this node found dead (a refused connection) before gossip says so.
//!
//! A forwarded request carries `x-monsys-hop: 1`; a node that receives a forwarded request it
//! cannot serve itself answers 503 with `Retry-After` instead of forwarding again, so churn can
//! never produce a loop or a hang.

pub mod client_ip;
pub mod forward;
pub mod leader;
pub mod owner;
pub mod suspects;

/// Header marking a request already forwarded once.
pub const HOP_HEADER: &str = "x-monsys-hop";
/// Header carrying the original client address on forwarded requests (trusted only together
/// with a valid forwarder secret, `x-monsys-forwarder-secret`).
pub const CLIENT_IP_HEADER: &str = "x-monsys-client-ip";
