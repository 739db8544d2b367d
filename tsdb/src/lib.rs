//! Time-series storage for monsys: compressed chunks of `(timestamp ms, f64)` samples.
//!
//! - [`chunk`]: the Gorilla encoding (delta-of-delta timestamps, XOR floats), bit-exact for
//!   every `f64` including NaN payloads, ±∞ and −0.0.
//! - [`rollup`]: min/max/sum/count/last aggregates, downsampling and merging of buckets.
//!
//! Deterministic by construction (no clocks, no hash maps), so every Raft replica that appends
//! the same samples builds byte-identical chunks. The series layout, head chunks, downsampling
//! and the state-machine integration build on this.

pub mod chunk;
pub mod rollup;

pub use chunk::{Chunk, ChunkError, ChunkIter};
pub use rollup::Agg;
