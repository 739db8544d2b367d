//! Downsampling aggregates: min, max, sum, count and the latest value of a bucket. Merging is
//! exact for min, max, count and last, and sums agree up to floating-point rounding, so a
//! 5-minute bucket built from five 1-minute buckets equals one built from the raw samples (what
//! the property test checks). The code is deterministic, so replicas that merge the same buckets
//! in the same order compute the same bytes.

/// Aggregate of the samples of one series in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of values (avg = sum / count).
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
    /// Value of the latest sample.
    pub last: f64,
    /// Time of the latest sample, ms.
    pub last_ts: u64,
}

impl Agg {
    /// The aggregate of one sample.
    pub fn of(ts: u64, v: f64) -> Agg {
        Agg { min: v, max: v, sum: v, count: 1, last: v, last_ts: ts }
    }

    /// Adds a sample (a NaN does not replace a number as min or max).
    pub fn add(&mut self, ts: u64, v: f64) {
        self.merge(&Agg::of(ts, v));
    }

    /// Merges another bucket's aggregate into this one.
    pub fn merge(&mut self, o: &Agg) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
        if o.last_ts >= self.last_ts {
            self.last = o.last;
            self.last_ts = o.last_ts;
        }
    }

    /// Average: the sum over the count. The sum is an `f64`, so a bucket of values near
    /// `f64::MAX` can overflow it; the average is then not finite (the API shows `null`) while
    /// min, max, count and last stay exact. Keeping a scaled sum instead would change the stored
    /// format, which is not worth it for values no host metric reaches.
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Start of the bucket of width `width_ms` holding `ts`.
pub fn bucket(ts: u64, width_ms: u64) -> u64 {
    ts - ts % width_ms
}

/// Aggregates `samples` (in time order) into buckets of `width_ms`, in bucket order.
pub fn downsample(samples: &[(u64, f64)], width_ms: u64) -> Vec<(u64, Agg)> {
    let mut out: Vec<(u64, Agg)> = Vec::new();
    for (ts, v) in samples {
        let b = bucket(*ts, width_ms);
        match out.last_mut() {
            Some((last, agg)) if *last == b => agg.add(*ts, *v),
            _ => out.push((b, Agg::of(*ts, *v))),
        }
    }
    out
}

/// Merges finer buckets (in order) into buckets of `width_ms`.
pub fn merge_buckets(fine: &[(u64, Agg)], width_ms: u64) -> Vec<(u64, Agg)> {
    let mut out: Vec<(u64, Agg)> = Vec::new();
    for (start, agg) in fine {
        let b = bucket(*start, width_ms);
        match out.last_mut() {
            Some((last, acc)) if *last == b => acc.merge(agg),
            _ => out.push((b, *agg)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// 1m buckets merged into 5m and 1h equal 5m and 1h computed from the raw samples, and
        /// match a naive recomputation.
        #[test]
        fn rollups_of_rollups_equal_rollups_of_raw(steps in proptest::collection::vec((1u64..40_000, -1e6f64..1e6), 1..400)) {
            let mut t = 1_760_000_000_000u64;
            let samples: Vec<(u64, f64)> = steps.iter().map(|(d, v)| { t += d; (t, (*v * 100.0).round() / 100.0) }).collect();
            let m1 = downsample(&samples, 60_000);
            for width in [300_000u64, 3_600_000] {
                let direct = downsample(&samples, width);
                let merged = merge_buckets(&m1, width);
                prop_assert_eq!(direct.len(), merged.len());
                for ((b1, a1), (b2, a2)) in direct.iter().zip(&merged) {
                    prop_assert_eq!(b1, b2);
                    prop_assert_eq!((a1.min, a1.max, a1.count, a1.last, a1.last_ts), (a2.min, a2.max, a2.count, a2.last, a2.last_ts));
                    prop_assert!((a1.sum - a2.sum).abs() <= 1e-6 * a1.sum.abs().max(1.0));
                    // naive recomputation
                    let inside: Vec<f64> = samples.iter().filter(|(ts, _)| bucket(*ts, width) == *b1).map(|(_, v)| *v).collect();
                    prop_assert_eq!(a1.count as usize, inside.len());
                    prop_assert_eq!(a1.min, inside.iter().cloned().fold(f64::INFINITY, f64::min));
                    prop_assert_eq!(a1.max, inside.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
                    prop_assert_eq!(a1.last, *inside.last().unwrap());
                }
            }
        }
    }
}
