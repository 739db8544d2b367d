//! Per-agent actors: [`actor`] (the actor and its contract with the committer), [`registry`]
//! (spawn/find/stop on this node), [`rules`] (threshold evaluation), [`limiter`] (GCRA).

pub mod actor;
pub mod limiter;
pub mod registry;
pub mod rules;

pub use actor::{Accepted, AgentActor, CommitOutcome, Committer, IngestRefusal, IngestRequest};
pub use registry::AgentRegistry;
pub use rules::{Decisions, Fire, RuleSpec, RuleState};

#[cfg(test)]
mod tests;
