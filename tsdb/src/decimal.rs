//! Decimal encoding of sealed chunks: when every value of a chunk is exactly `m / 10^e` for one
//! exponent `e` (0..=[`MAX_EXPONENT`]) and integers `m` — what host metrics are once the agent
//! rounds percentages to hundredths and rates to whole bytes — the chunk stores the integers'
//! deltas (or delta-of-deltas, whichever is smaller) instead of XORed floats, the way
//! VictoriaMetrics stores decimals. Timestamps are delta-of-deltas as in Gorilla chunks.
//!
//! Exactness is checked value by value (`(m as f64) / 10^e` must give back the same bits), so
//! −0.0, NaN, ±∞ and values with more digits simply keep the Gorilla encoding.
//!
//! Layout (one bit stream): `count: 16 | e: 4 | mode: 1 (0 delta, 1 delta-of-delta) |
//! first ts − base | first m | per further sample: ts dod, m delta or dod`, every number in the
//! delta-of-delta buckets of `bits`.

use crate::ChunkError;
use crate::bits::{BitReader, BitWriter, push_dod, read_dod};

/// Largest decimal exponent tried.
pub const MAX_EXPONENT: u8 = 6;
/// Integers up to this magnitude convert to `f64` exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// `v` as an integer at exponent `e`, if `v` is exactly that decimal.
fn mantissa(v: f64, e: u8) -> Option<i64> {
    let scaled = (v * POW10[e as usize]).round();
    if !scaled.is_finite() || scaled.abs() >= MAX_EXACT {
        return None;
    }
    let m = scaled as i64;
    ((m as f64 / POW10[e as usize]).to_bits() == v.to_bits()).then_some(m)
}

/// The smallest exponent at which every value is an exact decimal, and the integers.
fn mantissas(samples: &[(u64, f64)]) -> Option<(u8, Vec<i64>)> {
    'exponents: for e in 0..=MAX_EXPONENT {
        let mut ms = Vec::with_capacity(samples.len());
        for (_, v) in samples {
            match mantissa(*v, e) {
                Some(m) => ms.push(m),
                None => continue 'exponents,
            }
        }
        return Some((e, ms));
    }
    None
}

fn write(samples: &[(u64, f64)], base: u64, e: u8, ms: &[i64], dod: bool) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.push(samples.len() as u64, 16);
    w.push(u64::from(e), 4);
    w.push(u64::from(dod), 1);
    let (mut last_ts, mut last_delta, mut last_m, mut last_md) = (0u64, 0i64, 0i64, 0i64);
    for (i, ((ts, _), m)) in samples.iter().zip(ms).enumerate() {
        if i == 0 {
            push_dod(&mut w, ts.wrapping_sub(base) as i64);
            push_dod(&mut w, *m);
        } else {
            let delta = ts.wrapping_sub(last_ts) as i64;
            push_dod(&mut w, delta.wrapping_sub(last_delta));
            last_delta = delta;
            let md = m.wrapping_sub(last_m);
            push_dod(&mut w, if dod { md.wrapping_sub(last_md) } else { md });
            last_md = md;
        }
        last_ts = *ts;
        last_m = *m;
    }
    w.bytes
}

/// The decimal encoding of `samples` (time order, at most `u16::MAX`), if every value is an
/// exact decimal; the smaller of the delta and delta-of-delta forms. The first timestamp is
/// stored relative to `base` (the block's earliest), the first integer in a small bucket.
pub fn encode(samples: &[(u64, f64)], base: u64) -> Option<Vec<u8>> {
    if samples.is_empty() || samples.len() > u16::MAX as usize {
        return None;
    }
    let (e, ms) = mantissas(samples)?;
    let delta = write(samples, base, e, &ms, false);
    let dod = write(samples, base, e, &ms, true);
    Some(if dod.len() < delta.len() { dod } else { delta })
}

/// Decodes a chunk written by [`encode`] with the same `base`.
pub fn decode(bytes: &[u8], base: u64) -> Result<Vec<(u64, f64)>, ChunkError> {
    let mut r = BitReader { bytes, pos: 0 };
    let n = r.read(16)? as usize;
    let e = r.read(4)? as u8;
    if e > MAX_EXPONENT {
        return Err(ChunkError::Corrupt("decimal exponent out of range"));
    }
    let dod = r.bit()?;
    let mut out = Vec::with_capacity(n);
    let (mut ts, mut delta, mut m, mut md) = (0u64, 0i64, 0i64, 0i64);
    for i in 0..n {
        if i == 0 {
            ts = base.wrapping_add(read_dod(&mut r)? as u64);
            m = read_dod(&mut r)?;
        } else {
            delta = delta.wrapping_add(read_dod(&mut r)?);
            ts = ts.wrapping_add(delta as u64);
            let x = read_dod(&mut r)?;
            md = if dod { md.wrapping_add(x) } else { x };
            m = m.wrapping_add(md);
        }
        out.push((ts, m as f64 / POW10[e as usize]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bits(s: &[(u64, f64)]) -> Vec<(u64, u64)> {
        s.iter().map(|(t, v)| (*t, v.to_bits())).collect()
    }

    #[test]
    fn only_exact_decimals_take_this_encoding() {
        assert!(encode(&[(1, 12.34), (2, 0.5), (3, 100.0)], 0).is_some());
        for odd in [-0.0, f64::NAN, f64::INFINITY, 1.0 / 3.0, 1e300, 0.1234567] {
            assert!(encode(&[(1, 1.0), (2, odd)], 0).is_none(), "{odd}");
        }
    }

    #[test]
    fn hundredths_cost_far_less_than_xor() {
        let samples: Vec<(u64, f64)> =
            (0..40u64).map(|i| (i * 15_000, ((i * 7919) % 10_000) as f64 / 100.0)).collect();
        let dec = encode(&samples, 0).unwrap();
        let gorilla = crate::Chunk::from_samples(&samples).unwrap().to_bytes();
        assert!(dec.len() * 2 < gorilla.len(), "{} vs {}", dec.len(), gorilla.len());
    }

    proptest! {
        #[test]
        fn decimals_round_trip_bit_exact(
            raw in proptest::collection::vec((0u64..100_000, -10_000_000i64..10_000_000, 0u8..=4), 1..200),
            start in 0u64..u64::MAX / 2,
        ) {
            let mut t = start;
            let samples: Vec<(u64, f64)> = raw
                .iter()
                .map(|(d, m, e)| {
                    t += d;
                    (t, *m as f64 / POW10[*e as usize])
                })
                .collect();
            let base = start.saturating_sub(5000);
            if let Some(bytes) = encode(&samples, base) {
                prop_assert_eq!(bits(&decode(&bytes, base).unwrap()), bits(&samples));
            }
        }

        #[test]
        fn any_values_either_round_trip_or_are_refused(vals in proptest::collection::vec(any::<f64>(), 1..50)) {
            let samples: Vec<(u64, f64)> = vals.iter().enumerate().map(|(i, v)| (i as u64 * 1000, *v)).collect();
            if let Some(bytes) = encode(&samples, 0) {
                prop_assert_eq!(bits(&decode(&bytes, 0).unwrap()), bits(&samples));
            }
        }
    }
}
