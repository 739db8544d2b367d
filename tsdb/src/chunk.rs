//! Gorilla chunks (Pelkonen et al., VLDB 2015), as Prometheus' TSDB uses them: the first
//! timestamp and value in full, then per sample the delta-of-delta of the timestamp in a
//! variable-length bucket and the XOR of the value with the previous one, written as the
//! meaningful bits within a leading/trailing-zero window.
//!
//! Timestamps are milliseconds and must not decrease within a chunk (equal ones are allowed);
//! a decreasing timestamp is refused with [`ChunkError::OutOfOrder`] so the caller can route
//! it (a head buffer sorts late samples before they reach a chunk). Values are stored
//! bit-exact, so NaN payloads, ±∞ and −0.0 round-trip.
//!
//! Layout: `count: u16 BE | bits…` (the bit stream is MSB-first, padded to a byte). Head chunks
//! also carry their encoder state ([`Chunk::write_state`]) so an append never re-decodes them.

use crate::bits::{BitReader, BitWriter, Xor, get_bytes, get_varint, push_dod, put_varint, read_dod};

/// Most samples in one chunk.
pub const MAX_SAMPLES: usize = u16::MAX as usize;

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The timestamp is before the chunk's last one.
    #[error("timestamp {ts} is before the chunk's last timestamp {last}")]
    OutOfOrder {
        /// The refused timestamp.
        ts: u64,
        /// The chunk's last timestamp.
        last: u64,
    },
    /// The chunk holds [`MAX_SAMPLES`] already.
    #[error("chunk is full")]
    Full,
    /// The bytes are not a chunk.
    #[error("corrupt chunk: {0}")]
    Corrupt(&'static str),
}

/// A chunk being appended to (and its encoded form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    bits: BitWriter,
    count: u16,
    first_ts: u64,
    last_ts: u64,
    last_delta: i64,
    xor: Xor,
}

impl Default for Chunk {
    fn default() -> Chunk {
        Chunk::new()
    }
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Chunk {
        Chunk {
            bits: BitWriter::default(),
            count: 0,
            first_ts: 0,
            last_ts: 0,
            last_delta: 0,
            xor: Xor::starting_at(0),
        }
    }

    /// A chunk holding `samples` (in time order).
    pub fn from_samples(samples: &[(u64, f64)]) -> Result<Chunk, ChunkError> {
        let mut c = Chunk::new();
        for (ts, v) in samples {
            c.push(*ts, *v)?;
        }
        Ok(c)
    }

    /// Samples in the chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the first sample (0 when empty).
    pub fn first_ts(&self) -> u64 {
        self.first_ts
    }

    /// Timestamp of the last sample (0 when empty).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Appends a sample.
    pub fn push(&mut self, ts: u64, value: f64) -> Result<(), ChunkError> {
        if self.count as usize >= MAX_SAMPLES {
            return Err(ChunkError::Full);
        }
        let v = value.to_bits();
        match self.count {
            0 => {
                self.bits.push(ts, 64);
                self.bits.push(v, 64);
                self.xor = Xor::starting_at(v);
                self.first_ts = ts;
            }
            _ if ts < self.last_ts => return Err(ChunkError::OutOfOrder { ts, last: self.last_ts }),
            n => {
                let delta = (ts - self.last_ts) as i64;
                let dod = if n == 1 { delta } else { delta.wrapping_sub(self.last_delta) };
                push_dod(&mut self.bits, dod);
                self.last_delta = delta;
                self.xor.push(&mut self.bits, v);
            }
        }
        self.last_ts = ts;
        self.count += 1;
        Ok(())
    }

    /// The encoded chunk (what [`Chunk::iter`] reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.bits.bytes.len());
        self.write_bytes(&mut out);
        out
    }

    /// Appends the encoded chunk to `out`.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.bits.bytes);
    }

    /// Appends the chunk with its encoder state, so [`Chunk::read_state`] can resume appending
    /// (the form of head chunks).
    pub fn write_state(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_be_bytes());
        for v in [self.first_ts, self.last_ts, self.last_delta as u64, self.xor.value] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&[self.xor.leading, self.xor.trailing, self.bits.used]);
        put_varint(out, self.bits.bytes.len() as u64);
        out.extend_from_slice(&self.bits.bytes);
    }

    /// Empties the chunk, keeping its buffer.
    pub fn clear(&mut self) {
        let mut bytes = std::mem::take(&mut self.bits.bytes);
        bytes.clear();
        *self = Chunk::new();
        self.bits.bytes = bytes;
    }

    /// Like [`Chunk::read_state`], reusing this chunk's buffer.
    pub fn read_state_into(&mut self, bytes: &[u8], pos: &mut usize) -> Result<(), ChunkError> {
        let (head, stream) = Self::parse_state(bytes, pos)?;
        let mut buf = std::mem::take(&mut self.bits.bytes);
        buf.clear();
        buf.extend_from_slice(stream);
        *self = Chunk { bits: BitWriter { bytes: buf, used: head.bits.used }, ..head };
        Ok(())
    }

    /// Reads a chunk written by [`Chunk::write_state`] at `*pos`.
    pub fn read_state(bytes: &[u8], pos: &mut usize) -> Result<Chunk, ChunkError> {
        let (head, stream) = Self::parse_state(bytes, pos)?;
        Ok(Chunk { bits: BitWriter { bytes: stream.to_vec(), used: head.bits.used }, ..head })
    }

    /// The fixed part of a head chunk (with an empty stream) and its stream bytes.
    fn parse_state<'b>(bytes: &'b [u8], pos: &mut usize) -> Result<(Chunk, &'b [u8]), ChunkError> {
        let fixed = get_bytes(bytes, pos, 2 + 32 + 3)?;
        let u64_at = |i: usize| u64::from_be_bytes(fixed[2 + 8 * i..10 + 8 * i].try_into().expect("8 bytes"));
        let (leading, trailing, used) = (fixed[34], fixed[35], fixed[36]);
        if used > 7 || (leading != u8::MAX && (leading > 31 || trailing > 63)) {
            return Err(ChunkError::Corrupt("bad head chunk state"));
        }
        let n = get_varint(bytes, pos)? as usize;
        let stream = get_bytes(bytes, pos, n)?;
        if used != 0 && stream.is_empty() {
            return Err(ChunkError::Corrupt("bad head chunk bit count"));
        }
        let head = Chunk {
            count: u16::from_be_bytes([fixed[0], fixed[1]]),
            first_ts: u64_at(0),
            last_ts: u64_at(1),
            last_delta: u64_at(2) as i64,
            xor: Xor { value: u64_at(3), leading, trailing },
            bits: BitWriter { bytes: Vec::new(), used },
        };
        Ok((head, stream))
    }

    /// Decodes a chunk's samples.
    pub fn iter(bytes: &[u8]) -> Result<ChunkIter<'_>, ChunkError> {
        let count = u16::from_be_bytes(
            bytes.get(..2).ok_or(ChunkError::Corrupt("no header"))?.try_into().expect("2 bytes"),
        );
        Ok(ChunkIter {
            r: BitReader { bytes: &bytes[2..], pos: 0 },
            left: count,
            n: 0,
            ts: 0,
            delta: 0,
            xor: Xor::starting_at(0),
        })
    }

    /// The chunk's samples, decoded.
    pub fn samples(&self) -> Vec<(u64, f64)> {
        let bytes = self.to_bytes();
        // the chunk was built by `push`, so its own bytes always decode
        Chunk::iter(&bytes).map(|it| it.filter_map(Result::ok).collect()).unwrap_or_default()
    }
}

/// Iterator over a chunk's samples.
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    left: u16,
    n: u32,
    ts: u64,
    delta: i64,
    xor: Xor,
}

impl ChunkIter<'_> {
    fn next_sample(&mut self) -> Result<(u64, f64), ChunkError> {
        if self.n == 0 {
            self.ts = self.r.read(64)?;
            self.xor = Xor::starting_at(self.r.read(64)?);
        } else {
            let dod = read_dod(&mut self.r)?;
            self.delta = if self.n == 1 { dod } else { self.delta.wrapping_add(dod) };
            self.ts = self.ts.wrapping_add(self.delta as u64);
            self.xor.read(&mut self.r)?;
        }
        self.n += 1;
        Ok((self.ts, f64::from_bits(self.xor.value)))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<(u64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.next_sample())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(samples: &[(u64, f64)]) -> Vec<(u64, u64)> {
        let mut c = Chunk::new();
        for (t, v) in samples {
            c.push(*t, *v).unwrap();
        }
        Chunk::iter(&c.to_bytes())
            .unwrap()
            .map(|s| s.map(|(t, v)| (t, v.to_bits())))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn special_values_and_equal_timestamps_round_trip_bit_exact() {
        let nan_payload = f64::from_bits(0x7ff8_0000_dead_beef);
        let s = [
            (1000, 1.5),
            (1000, -0.0),
            (1015, f64::INFINITY),
            (1030, f64::NEG_INFINITY),
            (1030, nan_payload),
            (99_999_999, 0.0),
            (99_999_999, f64::MIN_POSITIVE),
        ];
        let expected: Vec<(u64, u64)> = s.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(round_trip(&s), expected);
    }

    #[test]
    fn decreasing_timestamps_are_refused_and_change_nothing() {
        let mut c = Chunk::new();
        c.push(100, 1.0).unwrap();
        c.push(200, 2.0).unwrap();
        let before = c.to_bytes();
        assert_eq!(c.push(150, 3.0), Err(ChunkError::OutOfOrder { ts: 150, last: 200 }));
        assert_eq!(c.to_bytes(), before);
        assert!(Chunk::iter(&[0, 5, 1]).unwrap().any(|s| s.is_err()), "truncated chunk is an error");
    }

    #[test]
    fn regular_host_metrics_take_about_a_byte_per_sample() {
        // 15 s interval with a few ms of jitter, a slowly moving gauge: 240 samples (1 h)
        let mut c = Chunk::new();
        for i in 0..240u64 {
            let jitter = (i * 7919) % 5;
            c.push(1_760_000_000_000 + i * 15_000 + jitter, 41.0 + ((i / 20) as f64) * 0.5).unwrap();
        }
        let per_sample = c.to_bytes().len() as f64 / 240.0;
        assert!(per_sample < 2.0, "{per_sample} bytes per sample");
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(deltas in proptest::collection::vec((0u64..100_000, any::<u64>()), 1..300), start in 0u64..u64::MAX / 2) {
            let mut t = start;
            let samples: Vec<(u64, f64)> = deltas.iter().map(|(d, bits)| { t += d; (t, f64::from_bits(*bits)) }).collect();
            let expected: Vec<(u64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(round_trip(&samples), expected);
        }

        #[test]
        fn huge_time_jumps_round_trip(a in 0u64..u64::MAX / 4, b in 0u64..u64::MAX / 4, v in any::<f64>()) {
            let samples = [(a, v), (a + b, v), (a + b + 1, -v)];
            let expected: Vec<(u64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(round_trip(&samples), expected);
        }
    }
}
