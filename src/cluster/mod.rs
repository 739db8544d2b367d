//! Cluster wiring of a node: gossip membership, the Raft transport over HTTP, the task that
//! keeps gossip connected to every Raft member, the derived cluster view requests read, and
//! what a node does once it is removed, draining a node before it stops, and finalizing
//! rolling upgrades.

pub mod drain;
pub mod gossip;
pub mod links;
pub mod membership;
pub mod raft_transport;
pub mod removed;
pub mod seeds;
pub mod status;
pub mod upgrade;
pub mod view;
