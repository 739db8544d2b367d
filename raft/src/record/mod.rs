//! Versioned persisted records: the types this crate stores (in sled and therefore in
//! snapshots), owned here and kept apart from the API types of `monsys-proto`, with one
//! migration per version.
//!
//! A record type implements [`Record`]: its version number, the type of its previous version
//! and how to upgrade a value of that version. Stored bytes are the codec's envelope
//! (`codec::encode_value`): `[version] ++ bincode(record)`, where the leading byte, which was
//! always 1, now names the record's version. Every record's first version is 1, so everything
//! stored before records had versions is read unchanged as their version 1.
//!
//! Decoding ([`decode`]) tries the newest version first and falls back through the older ones:
//! the bytes are decoded as the version their byte names and upgraded step by step to the
//! current type. A version newer than the current one is refused with
//! `Error::UnsupportedFormat` (what an older build does when it meets a newer record).
//!
//! Rules for a new version (see docs/decisions/0015-versioned-records.md):
//! - a new struct `FooV<n+1>` with `VERSION = n + 1`, `Previous = FooV<n>` and an `upgrade`
//!   that fills every new field deterministically; the old struct never changes (golden bytes
//!   pin it);
//! - a version is written only once every member reads it: its write is gated on the active
//!   cluster version (a replicated value, so every replica writes the same bytes); until then
//!   the state machine keeps writing the previous version;
//! - a log command never carries a record alias: a variant names one version forever
//!   (`Command::PutSettings` carries `SettingsV1`), a new version travels in a new variant.
//!
//! Modules: `settings` (tenant settings documents).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::codec::{self, MAX_VALUE_BYTES};

pub mod settings;

/// A persisted record type at one version.
pub trait Record: Serialize + DeserializeOwned {
    /// What the record is, for errors (`settings`).
    const WHAT: &'static str;
    /// This version's number: 1 for a record's first version, then each one adds 1.
    const VERSION: u8;
    /// The version before this one ([`NoPrevious`] for version 1).
    type Previous: Record;
    /// Upgrades a value of the previous version (deterministic: every replica upgrades alike).
    fn upgrade(previous: Self::Previous) -> Self;
}

/// The previous version of every record's version 1: there is none, so it has no values.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum NoPrevious {}

impl Record for NoPrevious {
    const WHAT: &'static str = "no previous version";
    const VERSION: u8 = 0;
    type Previous = NoPrevious;
    fn upgrade(previous: NoPrevious) -> Self {
        previous
    }
}

/// Encodes `record` for sled at its own version: `[R::VERSION] ++ bincode(record)`.
pub fn encode<R: Record>(record: &R) -> Result<Vec<u8>, Error> {
    codec::encode_versioned(R::WHAT, R::VERSION, record)
}

/// Decodes stored bytes of any version up to `R::VERSION` and upgrades them to `R`.
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, Error> {
    match bytes.split_first() {
        None => Err(Error::Corrupt(format!("empty {} value", R::WHAT))),
        Some((&version, rest)) => decode_at(version, rest),
    }
}

/// Decodes `bytes` written at `version` as `R`, falling back through `R`'s older versions.
fn decode_at<R: Record>(version: u8, bytes: &[u8]) -> Result<R, Error> {
    if version == R::VERSION && R::VERSION > 0 {
        return codec::decode(R::WHAT, bytes, MAX_VALUE_BYTES);
    }
    if version > R::VERSION || R::Previous::VERSION == 0 {
        return Err(Error::UnsupportedFormat { what: R::WHAT, found: version, supported: R::VERSION });
    }
    decode_at::<R::Previous>(version, bytes).map(R::upgrade).map_err(|e| match e {
        // name the version this build reads, not the one the chain stopped at
        Error::UnsupportedFormat { found, .. } => {
            Error::UnsupportedFormat { what: R::WHAT, found, supported: R::VERSION }
        }
        other => other,
    })
}

/// Asserts that a record's chain is numbered 1, 2, … without gaps (call it in each record's
/// tests for its current version).
#[cfg(test)]
pub(crate) fn assert_chain<R: Record>() {
    assert!(R::VERSION >= 1, "{}: versions start at 1", R::WHAT);
    if R::VERSION > 1 {
        assert_eq!(R::Previous::VERSION + 1, R::VERSION, "{}: versions have no gaps", R::WHAT);
        assert_chain::<R::Previous>();
    } else {
        assert_eq!(R::Previous::VERSION, 0, "{}: version 1 has no previous", R::WHAT);
    }
}
