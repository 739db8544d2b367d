//! Bit streams and the two Gorilla encoders built on them: delta-of-delta timestamps and XOR
//! floats. `chunk` (raw samples) and `aggs` (rollup buckets) both write through these, so the
//! encodings cannot drift apart.
//!
//! Streams are MSB-first and padded to a byte. Writers and readers move whole bytes where they
//! can, not bit by bit (the apply path of every replica runs through here).

use crate::ChunkError;

/// An append-only bit stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BitWriter {
    pub(crate) bytes: Vec<u8>,
    /// Bits used in the last byte (0 = byte boundary).
    pub(crate) used: u8,
}

impl BitWriter {
    /// Appends the low `nbits` bits of `value` (0..=64): the rest of the open byte, then whole
    /// bytes, then the start of a new one.
    pub(crate) fn push(&mut self, value: u64, nbits: u8) {
        let mut left = u32::from(nbits);
        if left == 0 {
            return;
        }
        if self.used != 0 {
            let free = 8 - u32::from(self.used);
            let take = free.min(left);
            let part = ((value >> (left - take)) as u8) & low_bits(take);
            *self.bytes.last_mut().expect("a partial byte exists") |= part << (free - take);
            self.used = ((u32::from(self.used) + take) % 8) as u8;
            left -= take;
        }
        while left >= 8 {
            left -= 8;
            self.bytes.push((value >> left) as u8);
        }
        if left > 0 {
            self.bytes.push((value << (8 - left)) as u8);
            self.used = left as u8;
        }
    }
}

/// The byte with the low `n` bits set (`n` in 1..=8).
fn low_bits(n: u32) -> u8 {
    (0xffu16 >> (8 - n)) as u8
}

/// Reads a stream written by [`BitWriter`].
pub(crate) struct BitReader<'a> {
    pub(crate) bytes: &'a [u8],
    /// Position in bits.
    pub(crate) pos: usize,
}

impl BitReader<'_> {
    /// Reads `nbits` bits (0..=64): the rest of the current byte, whole bytes, then the start
    /// of the next one.
    pub(crate) fn read(&mut self, nbits: u8) -> Result<u64, ChunkError> {
        if self.pos + nbits as usize > self.bytes.len() * 8 {
            return Err(ChunkError::Corrupt("bit stream ends early"));
        }
        let mut left = u32::from(nbits);
        let mut v = 0u64;
        let offset = (self.pos % 8) as u32;
        if offset != 0 && left > 0 {
            let avail = 8 - offset;
            let take = avail.min(left);
            v = u64::from((self.bytes[self.pos / 8] >> (avail - take)) & low_bits(take));
            self.pos += take as usize;
            left -= take;
        }
        while left >= 8 {
            v = (v << 8) | u64::from(self.bytes[self.pos / 8]);
            self.pos += 8;
            left -= 8;
        }
        if left > 0 {
            v = (v << left) | u64::from(self.bytes[self.pos / 8] >> (8 - left));
            self.pos += left as usize;
        }
        Ok(v)
    }

    pub(crate) fn bit(&mut self) -> Result<bool, ChunkError> {
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

/// Writes a delta-of-delta in its bucket: `0` for none, else a prefix and the zigzag value.
pub(crate) fn push_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.push(0, 1);
        return;
    }
    let z = zigzag(dod);
    for (prefix, plen, vbits) in BUCKETS {
        if z < 1 << vbits {
            w.push(prefix, plen);
            w.push(z, vbits);
            return;
        }
    }
    w.push(0b1111, 4);
    w.push(z, 64);
}

/// Reads a delta-of-delta written by [`push_dod`].
pub(crate) fn read_dod(r: &mut BitReader<'_>) -> Result<i64, ChunkError> {
    if !r.bit()? {
        return Ok(0);
    }
    // bucket prefixes are 10, 110, 1110 and 1111: count the ones before the first zero
    for (_, _, vbits) in BUCKETS {
        if !r.bit()? {
            return Ok(unzigzag(r.read(vbits)?));
        }
    }
    Ok(unzigzag(r.read(64)?))
}

/// State of an XOR float stream: the previous value and the meaningful-bit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Xor {
    pub(crate) value: u64,
    pub(crate) leading: u8,
    pub(crate) trailing: u8,
}

impl Xor {
    /// A stream whose first value is `first` (written in full by the caller).
    pub(crate) fn starting_at(first: u64) -> Xor {
        Xor { value: first, leading: u8::MAX, trailing: 0 }
    }

    /// Writes `v` as the XOR with the previous value.
    pub(crate) fn push(&mut self, w: &mut BitWriter, v: u64) {
        let xor = v ^ self.value;
        self.value = v;
        if xor == 0 {
            w.push(0, 1);
            return;
        }
        w.push(1, 1);
        let (lead, trail) = ((xor.leading_zeros() as u8).min(31), xor.trailing_zeros() as u8);
        if self.leading != u8::MAX && lead >= self.leading && trail >= self.trailing {
            // fits the previous window
            w.push(0, 1);
            let len = 64 - self.leading - self.trailing;
            w.push(xor >> self.trailing, len);
        } else {
            let len = 64 - lead - trail;
            w.push(1, 1);
            w.push(u64::from(lead), 5);
            w.push(u64::from(len - 1), 6);
            w.push(xor >> trail, len);
            self.leading = lead;
            self.trailing = trail;
        }
    }

    /// Reads the next value written by [`Xor::push`].
    pub(crate) fn read(&mut self, r: &mut BitReader<'_>) -> Result<u64, ChunkError> {
        if r.bit()? {
            let xor = if !r.bit()? {
                if self.leading == u8::MAX {
                    return Err(ChunkError::Corrupt("xor window used before it was set"));
                }
                let len = 64 - self.leading - self.trailing;
                r.read(len)? << self.trailing
            } else {
                let lead = r.read(5)? as u8;
                let len = r.read(6)? as u8 + 1;
                let trail = 64u8.checked_sub(lead + len).ok_or(ChunkError::Corrupt("bad xor window"))?;
                self.leading = lead;
                self.trailing = trail;
                r.read(len)? << trail
            };
            self.value ^= xor;
        }
        Ok(self.value)
    }
}

/// Appends a LEB128 varint to `out`.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`.
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or(ChunkError::Corrupt("varint ends early"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ChunkError::Corrupt("varint too long"))
}

/// Reads `n` bytes at `*pos`.
pub(crate) fn get_bytes<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ChunkError> {
    let end = pos.checked_add(n).filter(|e| *e <= bytes.len()).ok_or(ChunkError::Corrupt("truncated"))?;
    let out = &bytes[*pos..end];
    *pos = end;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn bit_runs_round_trip(runs in proptest::collection::vec((any::<u64>(), 0u8..=64), 0..200)) {
            let mut w = BitWriter::default();
            for (v, n) in &runs {
                w.push(*v, *n);
            }
            let mut r = BitReader { bytes: &w.bytes, pos: 0 };
            for (v, n) in &runs {
                let mask = if *n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read(*n).unwrap(), v & mask);
            }
            prop_assert!(w.bytes.len() * 8 - r.pos < 8);
        }

        /// The byte-wise writer lays out exactly the bits a one-bit-at-a-time writer would (the
        /// stored format, which replicas of different versions must write alike).
        #[test]
        fn bit_runs_are_laid_out_msb_first_like_single_bits(
            runs in proptest::collection::vec((any::<u64>(), 0u8..=64), 0..200)
        ) {
            let mut w = BitWriter::default();
            let mut bits: Vec<bool> = Vec::new();
            for (v, n) in &runs {
                w.push(*v, *n);
                bits.extend((0..*n).rev().map(|i| (v >> i) & 1 == 1));
                prop_assert_eq!(w.used as usize, bits.len() % 8);
            }
            let mut expected = vec![0u8; bits.len().div_ceil(8)];
            for (i, bit) in bits.iter().enumerate() {
                expected[i / 8] |= u8::from(*bit) << (7 - i % 8);
            }
            prop_assert_eq!(&w.bytes, &expected);
            let mut r = BitReader { bytes: &w.bytes, pos: 0 };
            for bit in &bits {
                prop_assert_eq!(r.bit().unwrap(), *bit);
            }
        }

        #[test]
        fn varints_round_trip(vs in proptest::collection::vec(any::<u64>(), 0..50)) {
            let mut out = Vec::new();
            for v in &vs {
                put_varint(&mut out, *v);
            }
            let mut pos = 0;
            for v in &vs {
                prop_assert_eq!(get_varint(&out, &mut pos).unwrap(), *v);
            }
            prop_assert_eq!(pos, out.len());
        }
    }
}
