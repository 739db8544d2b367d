//! Cluster wiring of a node: gossip membership, the Raft transport over HTTP, the task that
//! keeps gossip connected to every Raft member, and the derived cluster view requests read.

pub mod gossip;
pub mod raft_transport;
pub mod seeds;
pub mod view;
