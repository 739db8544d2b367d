//! The one bincode configuration of this crate, and the versioned envelope of persisted values.
//!
//! Invariants:
//! - Every encode and decode goes through [`encode`]/[`decode`] with the same options
//!   (fixed-width little-endian integers, trailing bytes allowed, a size limit), so what one
//!   side writes the other reads; the limit bounds allocations driven by untrusted length
//!   prefixes (RPC bodies, damaged files).
//! - Every value persisted in sled is `[version] ++ bincode(value)`. The leading byte is the
//!   version of the value's record type: [`FORMAT_VERSION`] (1) for every type's first version,
//!   which is all most types have ([`encode_value`]/[`decode_value`] read and write only that).
//!   Types with more than one version implement `record::Record` and go through
//!   `record::encode`/`record::decode`, which upgrade older versions on read. A reader refuses a
//!   version it does not know with `Error::UnsupportedFormat` instead of guessing. New command
//!   shapes are new enum variants (see `command`), not new versions.
//! - Persisted values stay under [`MAX_VALUE_BYTES`]: sled writes larger values to blob files it
//!   never fsyncs.
//!
//! Deliberately missing: compression and checksums per value (sled checksums its log pages;
//! snapshot files carry their own checksum).

use bincode::Options as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Version byte in front of a persisted value of a type's first (so far only) version.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Largest bincode payload of one sled value. sled moves values above ~131 052 bytes to blob
/// files written without fsync; this leaves room for the key and the version byte.
pub const MAX_VALUE_BYTES: u64 = 120 * 1024;

/// Largest encoded Raft RPC (request or reply). Bounds a batch of `max_payload_entries` entries
/// of up to [`MAX_VALUE_BYTES`] each, and one snapshot chunk (see `Options::to_config`).
pub const MAX_RPC_BYTES: u64 = 256 * 1024 * 1024;

/// Largest single frame of a snapshot file (its header or one record).
pub(crate) const MAX_FRAME_BYTES: u64 = 1024 * 1024;

/// The bincode options used everywhere, with a size limit.
pub(crate) fn options(limit: u64) -> impl bincode::Options + Copy {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(limit)
}

/// Encodes `value`, failing with `TooLarge` above `limit` bytes.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T, limit: u64) -> Result<Vec<u8>, Error> {
    options(limit).serialize(value).map_err(|e| map_err(what, limit, *e))
}

/// Decodes a `T` from `bytes`, refusing inputs over `limit` bytes.
///
/// The length check is explicit because bincode 1.3 replaces the limit with `Infinite` when
/// deserializing from a slice (`internal::deserialize_seed`); allocations are still bounded by
/// the slice, since every length prefix is checked against the remaining bytes.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8], limit: u64) -> Result<T, Error> {
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge { what, max: limit });
    }
    options(limit).deserialize(bytes).map_err(|e| map_err(what, limit, *e))
}

/// Encoded size of `value` in bytes (what it adds to a command or a stored value).
pub fn encoded_size<T: Serialize>(value: &T) -> u64 {
    options(u64::MAX).serialized_size(value).unwrap_or(u64::MAX)
}

/// Encodes a value for sled: `[FORMAT_VERSION] ++ bincode(value)`.
pub(crate) fn encode_value<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    encode_versioned(what, FORMAT_VERSION, value)
}

/// Encodes a value for sled at a record version: `[version] ++ bincode(value)`.
pub(crate) fn encode_versioned<T: Serialize>(
    what: &'static str,
    version: u8,
    value: &T,
) -> Result<Vec<u8>, Error> {
    let mut out = vec![version];
    options(MAX_VALUE_BYTES)
        .serialize_into(&mut out, value)
        .map_err(|e| map_err(what, MAX_VALUE_BYTES, *e))?;
    Ok(out)
}

/// Decodes a value written by [`encode_value`], checking its version byte.
pub(crate) fn decode_value<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        None => Err(Error::Corrupt(format!("empty {what} value"))),
        Some((&FORMAT_VERSION, rest)) => decode(what, rest, MAX_VALUE_BYTES),
        Some((&found, _)) => Err(Error::UnsupportedFormat { what, found, supported: FORMAT_VERSION }),
    }
}

fn map_err(what: &'static str, limit: u64, e: bincode::ErrorKind) -> Error {
    match e {
        bincode::ErrorKind::SizeLimit => Error::TooLarge { what, max: limit },
        other => Error::Codec(format!("{what}: {other}")),
    }
}

/// Asserts that each value encodes (as the log does) to its hex string and that the hex decodes
/// back to it: the golden-bytes tests of the persisted formats.
#[cfg(test)]
pub(crate) fn assert_golden<T>(cases: &[(T, &str)])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    for (value, hex) in cases {
        let bytes = encode("golden", value, MAX_VALUE_BYTES).unwrap();
        assert_eq!(hex::encode(&bytes), *hex, "{value:?}");
        let back: T = decode("golden", &hex::decode(hex).unwrap(), MAX_VALUE_BYTES).unwrap();
        assert_eq!(back, *value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trip() {
        let v = (7u64, "x".to_string());
        let bytes = encode_value("test", &v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_value::<(u64, String)>("test", &bytes).unwrap(), v);
    }

    #[test]
    fn unknown_version_is_a_clear_error() {
        let mut bytes = encode_value("test", &7u64).unwrap();
        bytes[0] = 2;
        let err = decode_value::<u64>("log entry", &bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFormat { what: "log entry", found: 2, supported: 1 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn empty_value_is_corrupt() {
        assert!(matches!(decode_value::<u64>("x", &[]), Err(Error::Corrupt(_))));
    }

    #[test]
    fn limits_apply_both_ways() {
        let big = vec![0u8; 1000];
        assert!(matches!(encode("blob", &big, 100), Err(Error::TooLarge { max: 100, .. })));
        let bytes = encode("blob", &big, 2000).unwrap();
        let err = decode::<Vec<u8>>("blob", &bytes, 100);
        assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // A Vec<u8> claiming u64::MAX elements: refused by the limit, not by an allocation failure.
        let bytes = u64::MAX.to_le_bytes();
        assert!(decode::<Vec<u8>>("blob", &bytes, 1024).is_err());
    }
}
