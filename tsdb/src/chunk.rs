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
//! Layout: `count: u16 BE | bits…` (the bit stream is MSB-first, padded to a byte).

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

#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u8, // bits used in the last byte (0 = none / byte boundary)
}

impl BitWriter {
    fn push(&mut self, value: u64, nbits: u8) {
        for i in (0..nbits).rev() {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            let last = self.bytes.last_mut().expect("a byte was pushed");
            *last |= bit << (7 - self.used);
            self.used = (self.used + 1) % 8;
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize, // bit position
}

impl BitReader<'_> {
    fn read(&mut self, nbits: u8) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for _ in 0..nbits {
            let byte = *self.bytes.get(self.pos / 8).ok_or(ChunkError::Corrupt("bit stream ends early"))?;
            v = (v << 1) | u64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn bit(&mut self) -> Result<bool, ChunkError> {
        Ok(self.read(1)? == 1)
    }
}

/// Delta-of-delta buckets: (prefix, prefix bits, value bits).
const BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 7), (0b110, 3, 12), (0b1110, 4, 20)];

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A chunk being appended to (and its encoded form).
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    bits: BitWriter,
    count: u16,
    last_ts: u64,
    last_delta: i64,
    last_value: u64,
    leading: u8,
    trailing: u8,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Chunk {
        Chunk { leading: u8::MAX, ..Chunk::default() }
    }

    /// Samples in the chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
            }
            _ if ts < self.last_ts => return Err(ChunkError::OutOfOrder { ts, last: self.last_ts }),
            1 => {
                let delta = (ts - self.last_ts) as i64;
                self.push_dod(delta);
                self.last_delta = delta;
                self.push_value(v);
            }
            _ => {
                let delta = (ts - self.last_ts) as i64;
                self.push_dod(delta.wrapping_sub(self.last_delta));
                self.last_delta = delta;
                self.push_value(v);
            }
        }
        self.last_ts = ts;
        self.last_value = v;
        self.count += 1;
        Ok(())
    }

    fn push_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.bits.push(0, 1);
            return;
        }
        let z = zigzag(dod);
        for (prefix, plen, vbits) in BUCKETS {
            if z < 1 << vbits {
                self.bits.push(prefix, plen);
                self.bits.push(z, vbits);
                return;
            }
        }
        self.bits.push(0b1111, 4);
        self.bits.push(z, 64);
    }

    fn push_value(&mut self, v: u64) {
        let xor = v ^ self.last_value;
        if xor == 0 {
            self.bits.push(0, 1);
            return;
        }
        self.bits.push(1, 1);
        let (lead, trail) = ((xor.leading_zeros() as u8).min(31), xor.trailing_zeros() as u8);
        if self.leading != u8::MAX && lead >= self.leading && trail >= self.trailing {
            // fits the previous window
            self.bits.push(0, 1);
            let len = 64 - self.leading - self.trailing;
            self.bits.push(xor >> self.trailing, len);
        } else {
            let len = 64 - lead - trail;
            self.bits.push(1, 1);
            self.bits.push(u64::from(lead), 5);
            self.bits.push(u64::from(len - 1), 6);
            self.bits.push(xor >> trail, len);
            self.leading = lead;
            self.trailing = trail;
        }
    }

    /// The encoded chunk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.count.to_be_bytes().to_vec();
        out.extend(&self.bits.bytes);
        out
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
            value: 0,
            leading: 0,
            trailing: 0,
        })
    }
}

/// Iterator over a chunk's samples.
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    left: u16,
    n: u32,
    ts: u64,
    delta: i64,
    value: u64,
    leading: u8,
    trailing: u8,
}

impl ChunkIter<'_> {
    fn next_sample(&mut self) -> Result<(u64, f64), ChunkError> {
        if self.n == 0 {
            self.ts = self.r.read(64)?;
            self.value = self.r.read(64)?;
        } else {
            let dod = self.read_dod()?;
            self.delta = if self.n == 1 { dod } else { self.delta.wrapping_add(dod) };
            self.ts = self.ts.wrapping_add(self.delta as u64);
            if self.r.bit()? {
                let xor = if !self.r.bit()? {
                    let len = 64 - self.leading - self.trailing;
                    self.r.read(len)? << self.trailing
                } else {
                    let lead = self.r.read(5)? as u8;
                    let len = self.r.read(6)? as u8 + 1;
                    let trail = 64u8.checked_sub(lead + len).ok_or(ChunkError::Corrupt("bad xor window"))?;
                    self.leading = lead;
                    self.trailing = trail;
                    self.r.read(len)? << trail
                };
                self.value ^= xor;
            }
        }
        self.n += 1;
        Ok((self.ts, f64::from_bits(self.value)))
    }

    fn read_dod(&mut self) -> Result<i64, ChunkError> {
        if !self.r.bit()? {
            return Ok(0);
        }
        // bucket prefixes are 10, 110, 1110 and 1111: count the ones before the first zero
        for (_, _, vbits) in BUCKETS {
            if !self.r.bit()? {
                return Ok(unzigzag(self.r.read(vbits)?));
            }
        }
        Ok(unzigzag(self.r.read(64)?))
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
