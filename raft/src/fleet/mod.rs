//! The fleet domain of the replicated state: enrollment, agents, telemetry, alerts, audit log,
//! integrity anomalies.
//!
//! - [`types`]: persisted records and the [`FleetCommand`] payloads (log format rules apply).
//! - `keys`: the key layout in `sm_data` (crate-visible: the crate's `audit` module appends
//!   under the audit keys).
//! - `apply`: deterministic application to a run's write set (`txn::Tx`), a file per domain.
//! - [`read`]: local reads ([`FleetReader`]).
//!
//! - `telemetry`: samples of stored batches in the `monsys-tsdb` series layout (compressed
//!   raw blocks per 10-minute window, 1m/5m/1h rollup blocks), its byte counters, retention.
//!
//! Retention deletes whole blocks (`FleetCommand::Expire`, bounded per run, so ingest never
//! waits behind a long deletion) and seals idle agents' head windows.

mod apply;
pub(crate) mod keys;
pub mod read;
pub mod telemetry;
pub mod types;

pub use apply::{DUPLICATE_WINDOW_MS, EXPIRE_BATCH, SEQ_WINDOW, default_rules, validate_rules};
pub(crate) use apply::{Prescan, apply, needs_prescan, prescan, replay, stored_bitmap};
pub use read::{FleetReader, Stat};
pub use types::*;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
