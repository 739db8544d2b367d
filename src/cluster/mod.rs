//! Cluster wiring of a node: gossip membership, the Raft transport over HTTP, and the task that
//! keeps gossip connected to every Raft member.

pub mod gossip;
pub mod raft_transport;
pub mod seeds;
