//! Time-series storage for monsys: compressed chunks of `(timestamp ms, f64)` samples laid out
//! per agent and series over a key-value store.
//!
//! - [`chunk`]: the Gorilla encoding (delta-of-delta timestamps, XOR floats), bit-exact for
//!   every `f64` including NaN payloads, ±∞ and −0.0; head chunks keep their encoder state.
//! - [`decimal`]: sealed chunks of exact decimals as integer deltas (host metrics rounded to
//!   hundredths cost a fraction of their XOR encoding);
//! - [`rollup`]: min/max/sum/count/last aggregates, downsampling and merging of buckets;
//!   [`aggs`] encodes a series of buckets compactly.
//! - [`block`]: the stored values (raw and rollup blocks of a shard of series).
//! - [`series`]: the layout of one agent's series over a [`series::Store`]: series ids, the
//!   head window, sealing into 1m/5m/1h rollups, late samples, range reads.
//!
//! Deterministic by construction (no clocks, no hash maps), so every Raft replica that appends
//! the same samples builds byte-identical blocks. The crate knows no storage engine: the state
//! machine implements [`series::Store`] over its sled transaction.

mod bits;

pub mod aggs;
pub mod block;
pub mod chunk;
pub mod decimal;
pub mod rollup;
pub mod series;

pub use chunk::{Chunk, ChunkError, ChunkIter};
pub use rollup::Agg;
pub use series::{Appended, Res};
