//! monsys actors and where they live.
//!
//! Every per-agent and per-console-session actor has exactly one owner node at a time, chosen by
//! [`placement`]: rendezvous hashing of the actor key over the live members. Every node computes
//! the same owner from the same member set without talking to the others, and a membership change
//! moves only the keys of the node that joined or left.
//!
//! - [`placement`]: who owns a key; [`agent`]: the per-agent actor and its registry.
//!
//! This crate never touches sled or HTTP: the binary wires actors to the replicated store and
//! forwards requests between nodes.

pub mod agent;
pub mod limits;
pub mod placement;

pub use placement::{ActorKey, PlacementView};
