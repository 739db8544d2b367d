//! Wire and API types shared by every part of monsys.
//!
//! The hub (`src/`), the Raft state machine (`raft/`), the agent, the integration tests and the
//! jepsen harness all speak these types, so a change here is a change of the public API or of a
//! persisted format. Nothing in this crate knows about HTTP, tokio or storage.
//!
//! Layout:
//! - [`error`]: the one JSON error body every endpoint returns.
//! - [`settings`]: per-tenant settings, their validation and the versioned envelope.
//! - [`agent`]: the agent protocol: registration, signed ingest batches, heartbeats.
//! - [`cluster`]: cluster status as shown by `GET /api/v1/cluster` and `monsys ctl cluster status`.

pub mod agent;
pub mod cluster;
pub mod error;
pub mod settings;

pub use error::ErrorBody;
pub use settings::{Settings, SettingsDoc};

/// The tenant every request belongs to until multi-tenant identity exists.
pub const DEFAULT_TENANT: &str = "default";

/// Version of this binary, announced over gossip and shown in cluster status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
