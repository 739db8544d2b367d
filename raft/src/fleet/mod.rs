//! The fleet domain of the replicated state: enrollment, agents, telemetry, alerts, audit log,
//! integrity anomalies.
//!
//! - [`types`]: persisted records and the [`FleetCommand`] payloads (log format rules apply).
//! - `keys`: the key layout in `sm_data`.
//! - `apply`: deterministic application inside the per-entry transaction.
//! - [`read`]: local reads ([`FleetReader`]).
//!
//! Telemetry layout (the simple one; compressed series chunks replace it): one value per stored
//! batch (`raw`), and per resolution (1m, 5m, 1h) one value per agent and bucket holding every
//! series' min/max/sum/count/last. Retention deletes whole keys (`FleetCommand::Expire`).

mod apply;
mod keys;
pub mod read;
pub mod types;

pub use apply::{DUPLICATE_WINDOW_MS, EXPIRE_BATCH, SEQ_WINDOW, default_rules, validate_rules};
pub(crate) use apply::{Prescan, apply, audit, prescan};
pub use read::FleetReader;
pub use types::*;

#[cfg(test)]
mod tests;
