//! Encoding of one series' rollup buckets: `(bucket start, Agg)` in bucket order, written as one
//! bit stream: bucket starts and the offset of each bucket's latest sample as delta-of-deltas,
//! counts as deltas, and min/max/sum/last as four XOR float streams. Regular buckets of a
//! steady series cost a few bits plus the XOR of each changing aggregate.

use crate::ChunkError;
use crate::bits::{BitReader, BitWriter, Xor, push_dod, read_dod};
use crate::rollup::Agg;

/// Most buckets in one encoded series (a rollup block holds far fewer).
pub const MAX_BUCKETS: usize = u16::MAX as usize;

/// Encodes buckets (in increasing bucket order) and appends them to `out`.
pub fn write(buckets: &[(u64, Agg)], out: &mut Vec<u8>) -> Result<(), ChunkError> {
    if buckets.len() > MAX_BUCKETS {
        return Err(ChunkError::Full);
    }
    let mut w = BitWriter::default();
    w.push(buckets.len() as u64, 16);
    let mut prev: Option<(u64, i64, u64, i64)> = None; // bucket, bucket delta, count, last offset
    let mut xors = [Xor::starting_at(0); 4];
    for (start, a) in buckets {
        let fields = [a.min.to_bits(), a.max.to_bits(), a.sum.to_bits(), a.last.to_bits()];
        let offset = a.last_ts.wrapping_sub(*start) as i64;
        match prev {
            None => {
                w.push(*start, 64);
                w.push(a.count, 64);
                w.push(offset as u64, 64);
                for (x, f) in xors.iter_mut().zip(fields) {
                    w.push(f, 64);
                    *x = Xor::starting_at(f);
                }
            }
            Some((pstart, pdelta, pcount, poffset)) => {
                if *start <= pstart {
                    return Err(ChunkError::OutOfOrder { ts: *start, last: pstart });
                }
                let delta = (start - pstart) as i64;
                push_dod(&mut w, delta.wrapping_sub(pdelta));
                push_dod(&mut w, a.count.wrapping_sub(pcount) as i64);
                push_dod(&mut w, offset.wrapping_sub(poffset));
                for (x, f) in xors.iter_mut().zip(fields) {
                    x.push(&mut w, f);
                }
            }
        }
        let delta = prev.map_or(0, |(pstart, ..)| (start - pstart) as i64);
        prev = Some((*start, delta, a.count, offset));
    }
    out.extend_from_slice(&w.bytes);
    Ok(())
}

/// Decodes buckets written by [`write`].
pub fn read(bytes: &[u8]) -> Result<Vec<(u64, Agg)>, ChunkError> {
    let mut r = BitReader { bytes, pos: 0 };
    let n = r.read(16)? as usize;
    let mut out = Vec::with_capacity(n);
    let (mut start, mut delta, mut count, mut offset) = (0u64, 0i64, 0u64, 0i64);
    let mut xors = [Xor::starting_at(0); 4];
    for i in 0..n {
        if i == 0 {
            start = r.read(64)?;
            count = r.read(64)?;
            offset = r.read(64)? as i64;
            for x in xors.iter_mut() {
                *x = Xor::starting_at(r.read(64)?);
            }
        } else {
            delta = delta.wrapping_add(read_dod(&mut r)?);
            start = start.wrapping_add(delta as u64);
            count = count.wrapping_add(read_dod(&mut r)? as u64);
            offset = offset.wrapping_add(read_dod(&mut r)?);
            for x in xors.iter_mut() {
                x.read(&mut r)?;
            }
        }
        let [min, max, sum, last] = xors.map(|x| f64::from_bits(x.value));
        out.push((start, Agg { min, max, sum, count, last, last_ts: start.wrapping_add(offset as u64) }));
    }
    Ok(out)
}

/// Merges `add` into `into` bucket by bucket (both in bucket order).
pub fn merge_into(into: &mut Vec<(u64, Agg)>, add: &[(u64, Agg)]) {
    if add.is_empty() {
        return;
    }
    let mut merged = Vec::with_capacity(into.len() + add.len());
    let (mut a, mut b) = (into.iter().peekable(), add.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                let mut agg = x.1;
                agg.merge(&y.1);
                merged.push((x.0, agg));
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x.0 < y.0 => merged.push(*a.next().expect("peeked")),
            (Some(_), Some(_)) | (None, Some(_)) => merged.push(*b.next().expect("peeked")),
            (Some(_), None) => merged.push(*a.next().expect("peeked")),
            (None, None) => break,
        }
    }
    *into = merged;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bits(buckets: &[(u64, Agg)]) -> Vec<(u64, [u64; 6])> {
        buckets
            .iter()
            .map(|(s, a)| {
                (
                    *s,
                    [a.min.to_bits(), a.max.to_bits(), a.sum.to_bits(), a.count, a.last.to_bits(), a.last_ts],
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn buckets_round_trip_bit_exact(
            raw in proptest::collection::vec((1u64..10_000_000, any::<[u64; 4]>(), 1u64..1000, 0u64..60_000), 0..100),
            first in 0u64..u64::MAX / 4,
        ) {
            let mut start = first;
            let buckets: Vec<(u64, Agg)> = raw
                .iter()
                .map(|(gap, f, count, off)| {
                    start += gap;
                    let [min, max, sum, last] = f.map(f64::from_bits);
                    (start, Agg { min, max, sum, count: *count, last, last_ts: start + off })
                })
                .collect();
            let mut out = Vec::new();
            write(&buckets, &mut out).unwrap();
            prop_assert_eq!(bits(&read(&out).unwrap()), bits(&buckets));
        }
    }

    #[test]
    fn regular_buckets_are_small() {
        let buckets: Vec<(u64, Agg)> = (0..60u64)
            .map(|i| {
                let v = 40.0 + (i % 3) as f64;
                (
                    i * 60_000,
                    Agg {
                        min: v,
                        max: v + 1.0,
                        sum: 4.0 * v,
                        count: 4,
                        last: v,
                        last_ts: i * 60_000 + 45_000,
                    },
                )
            })
            .collect();
        let mut out = Vec::new();
        write(&buckets, &mut out).unwrap();
        assert!(out.len() < 60 * 12, "{} bytes for 60 buckets", out.len());
    }

    #[test]
    fn merge_combines_equal_buckets_and_keeps_order() {
        let mut into = vec![(0, Agg::of(1, 1.0)), (120, Agg::of(121, 3.0))];
        merge_into(&mut into, &[(60, Agg::of(61, 2.0)), (120, Agg::of(125, 5.0))]);
        assert_eq!(into.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0, 60, 120]);
        assert_eq!(into[2].1.count, 2);
        assert_eq!(into[2].1.last, 5.0);
        assert_eq!(into[2].1.max, 5.0);
    }
}
