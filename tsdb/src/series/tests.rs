//! Property tests of the series layout against a naive model: every sample read back
//! bit-exact in time order whatever order it arrived in, and rollups equal to a recomputation
//! from the raw samples.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// An in-memory store.
#[derive(Default, Clone, PartialEq, Eq, Debug)]
pub(crate) struct Mem(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Store for Mem {
    type Error = std::convert::Infallible;
    type Value = Vec<u8>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0.get(key).cloned())
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<usize, Self::Error> {
        Ok(self.0.insert(key, value).map_or(0, |v| v.len()))
    }
}

impl Source for Mem {
    type Error = std::convert::Infallible;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0.get(key).cloned())
    }
    fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Self::Error> {
        Ok(self.0.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

const P: &[u8] = b"t/agent/";
const T0: u64 = 1_764_000_000_000;

/// A batch: collection offset from T0, and values for some of a fixed set of series.
type Batch = (u64, Vec<(usize, f64)>);

fn series_name(i: usize) -> String {
    format!("m{}{{core=\"{i}\"}}", i % 3)
}

/// One agent: its store and its in-memory head.
#[derive(Default, Clone, PartialEq, Eq, Debug)]
struct Agent {
    store: Mem,
    head: Option<AgentHead>,
}

impl Agent {
    fn write(&mut self, mode: Mode, ts: u64, samples: &[(String, f64)]) -> Appended {
        let (out, head) =
            Writer::new(&mut self.store, P, self.head.take(), mode).append(ts, samples).unwrap();
        self.head = head;
        out
    }

    fn reader(&self) -> Reader<'_, Mem> {
        Reader::new(&self.store, P, self.head.as_ref())
    }
}

fn samples_of(vals: &[(usize, f64)]) -> Vec<(String, f64)> {
    vals.iter().map(|(i, v)| (series_name(*i), *v)).collect()
}

fn apply(agent: &mut Agent, batches: &[Batch]) -> Vec<Appended> {
    batches.iter().map(|(off, vals)| agent.write(Mode::Apply, T0 + off, &samples_of(vals))).collect()
}

/// The model: each series' samples sorted by time, ties in arrival order.
fn model(batches: &[Batch]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut m: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for (off, vals) in batches {
        for (i, v) in vals {
            m.entry(series_name(*i)).or_default().push((T0 + off, *v));
        }
    }
    for s in m.values_mut() {
        s.sort_by_key(|(t, _)| *t); // stable
    }
    m
}

fn bits(s: &[(u64, f64)]) -> Vec<(u64, u64)> {
    s.iter().map(|(t, v)| (*t, v.to_bits())).collect()
}

/// Batches mostly every 15 s with jitter, some late (up to two hours back), some repeated times.
fn batches(values: impl Strategy<Value = f64> + Clone) -> impl Strategy<Value = Vec<Batch>> {
    let batch =
        (0u64..100, 0u64..7_200_000, any::<bool>(), proptest::collection::vec((0usize..40, values), 1..12));
    proptest::collection::vec(batch, 1..120).prop_map(|raw| {
        let mut now = 0u64;
        raw.into_iter()
            .map(|(kind, back, step, vals)| {
                let off = match kind {
                    0..=79 => {
                        now += if step { 15_000 } else { 14_990 };
                        now
                    }
                    80..=89 => now.saturating_sub(back), // late
                    90..=94 => now,                      // same timestamp again
                    _ => {
                        now += 3 * WINDOW_MS; // a gap of several windows
                        now
                    }
                };
                (off, vals)
            })
            .collect()
    })
}

fn all_raw(agent: &Agent) -> BTreeMap<String, Vec<(u64, f64)>> {
    let r = agent.reader();
    r.series()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(id, name)| (name, r.raw(id as u32, 0, u64::MAX).unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_sample_reads_back_bit_exact_in_time_order(b in batches(any::<f64>())) {
        let mut agent = Agent::default();
        let appended = apply(&mut agent, &b);
        prop_assert!(appended.iter().all(|a| a.refused == 0));
        let got = all_raw(&agent);
        let want = model(&b);
        prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (k, s) in &want {
            prop_assert_eq!(bits(&got[k]), bits(s), "series {}", k);
        }
    }

    #[test]
    fn rollups_equal_a_naive_recomputation(b in batches(-1e6f64..1e6)) {
        let mut agent = Agent::default();
        apply(&mut agent, &b);
        let r = agent.reader();
        let ids: BTreeMap<String, u32> =
            r.series().unwrap().into_iter().enumerate().map(|(i, n)| (n, i as u32)).collect();
        for (name, samples) in model(&b) {
            for res in Res::ROLLUPS {
                let got = r.rollup(res, ids[&name], 0, u64::MAX).unwrap();
                let want = rollup::downsample(&samples, res.width_ms());
                prop_assert_eq!(got.len(), want.len(), "{} {:?}", name, res);
                for ((gt, g), (wt, w)) in got.iter().zip(&want) {
                    prop_assert_eq!(gt, wt);
                    prop_assert_eq!((g.min, g.max, g.count, g.last, g.last_ts), (w.min, w.max, w.count, w.last, w.last_ts));
                    prop_assert!((g.sum - w.sum).abs() <= 1e-6 * w.sum.abs().max(1.0), "sum {} vs {}", g.sum, w.sum);
                }
            }
        }
    }

    #[test]
    fn replicas_write_identical_bytes_and_sealing_idle_heads_keeps_data(b in batches(-1e3f64..1e3)) {
        let (mut x, mut y) = (Agent::default(), Agent::default());
        apply(&mut x, &b);
        apply(&mut y, &b);
        prop_assert_eq!(&x, &y);
        let before = all_raw(&x);
        let had_copy = x.head.as_ref().is_some_and(|h| h.meta.0.is_some());
        let (_, head) = Writer::new(&mut x.store, P, x.head.take(), Mode::Apply).seal_idle(u64::MAX).unwrap();
        x.head = head;
        prop_assert_eq!(all_raw(&x), before);
        prop_assert_eq!(x.head.as_ref().is_some_and(|h| h.meta.0.is_some()), had_copy, "sealing keeps the meta copy");
        prop_assert!(x.head.as_ref().is_some_and(|h| h.blocks.is_empty()), "the head only marks the next window");
    }

    #[test]
    fn the_heads_copy_of_the_meta_record_changes_nothing_stored(b in batches(-1e3f64..1e3)) {
        let (mut warm, mut cold) = (Agent::default(), Agent::default());
        for (off, vals) in &b {
            warm.write(Mode::Apply, T0 + off, &samples_of(vals));
            // a head loaded from snapshot records has no copy: the writer reads the record
            cold.head = cold.head.take().map(|h| {
                let mut loaded = None;
                for r in h.to_records() {
                    AgentHead::add_record(&mut loaded, &r).unwrap();
                }
                let loaded = loaded.unwrap();
                assert!(loaded.meta.0.is_none());
                loaded
            });
            cold.write(Mode::Apply, T0 + off, &samples_of(vals));
            prop_assert_eq!(&warm.store, &cold.store);
        }
        prop_assert_eq!(&warm, &cold);
        prop_assert_eq!(all_raw(&warm), all_raw(&cold));
        if let Some(h) = &warm.head {
            let cached = h.meta.0.as_ref().expect("an applied head keeps its copy");
            let stored = warm.store.0.get(&meta_key(P)).expect("a meta record");
            prop_assert_eq!(&encode_meta(cached), stored);
        }
    }

    #[test]
    fn replaying_from_a_snapshot_rebuilds_the_head_and_writes_nothing(b in batches(-1e3f64..1e3), cut in 0usize..120) {
        let cut = cut.min(b.len());
        let mut live = Agent::default();
        apply(&mut live, &b[..cut]);
        let snapshot_head = live.head.clone();
        apply(&mut live, &b[cut..]);
        // restart: the store is the applied state, the head comes from the snapshot
        let mut restarted = Agent { store: live.store.clone(), head: snapshot_head };
        for (off, vals) in &b[cut..] {
            restarted.write(Mode::Replay, T0 + off, &samples_of(vals));
        }
        prop_assert_eq!(&restarted, &live);
    }
}

#[test]
fn regular_host_metrics_stay_under_two_bytes_per_sample() {
    let mut agent = Agent::default();
    let mut n = 0u64;
    for i in 0..(24 * 240u64) {
        let ts = T0 + i * 15_000 + (i * 7919) % 7;
        let samples: Vec<(String, f64)> = (0..50)
            .map(|s| (format!("s{s}"), if s < 25 { 1.0e9 + ((i / 40) * 4096) as f64 } else { 12.5 }))
            .collect();
        n += samples.len() as u64;
        agent.write(Mode::Apply, ts, &samples);
    }
    let raw: usize = agent
        .store
        .0
        .iter()
        .filter(|(k, _)| parse_block_key(P, k).is_some_and(|(r, ..)| r == Res::Raw))
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let per_sample = raw as f64 / n as f64;
    assert!(per_sample < 2.0, "{per_sample:.2} bytes per sample");
}

#[test]
fn series_past_the_limit_are_refused_and_counted() {
    let mut agent = Agent::default();
    let samples: Vec<(String, f64)> = (0..MAX_SERIES + 5).map(|i| (format!("s{i}"), 1.0)).collect();
    let a = agent.write(Mode::Apply, T0, &samples);
    assert_eq!((a.stored, a.refused), (MAX_SERIES as u32, 5));
    assert_eq!(agent.reader().head().unwrap().refused, 5);
    assert_eq!(agent.reader().series().unwrap().len(), MAX_SERIES);
}

#[test]
fn byte_accounting_matches_the_store() {
    let mut agent = Agent::default();
    let mut total = [0i64; 4];
    for i in 0..500u64 {
        let samples = vec![("a".to_string(), i as f64), ("b".to_string(), 2.0)];
        let at = T0 + 3_600_000 + i * 15_000;
        let at = if i % 50 == 7 { at - 3_600_000 } else { at }; // late, into sealed windows
        let a = agent.write(Mode::Apply, at, &samples);
        for (t, d) in total.iter_mut().zip(a.bytes) {
            *t += d;
        }
    }
    let mut actual = [0i64; 4];
    for (k, v) in &agent.store.0 {
        if let Some((res, ..)) = parse_block_key(P, k) {
            actual[res.index()] += (k.len() + v.len()) as i64;
        }
    }
    assert_eq!(total, actual);
}

#[test]
fn a_full_chunk_refuses_samples_instead_of_failing() {
    let mut agent = Agent::default();
    let same: Vec<(String, f64)> = (0..2000).map(|_| ("x".to_string(), 1.0)).collect();
    let mut refused = 0;
    for _ in 0..34 {
        let a = agent.write(Mode::Apply, T0, &same);
        refused += a.refused;
    }
    assert_eq!(agent.reader().raw(0, 0, u64::MAX).unwrap().len(), crate::chunk::MAX_SAMPLES);
    assert_eq!(refused as usize, 34 * 2000 - crate::chunk::MAX_SAMPLES);
}

#[test]
fn blocks_stop_growing_at_their_budget() {
    let mut agent = Agent::default();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut refused = 0;
    // random values (~10 bytes each) for 32 series, far more than one window holds
    for i in 0..600u64 {
        let samples: Vec<(String, f64)> = (0..32)
            .map(|s| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (format!("r{s}"), f64::from_bits(x))
            })
            .collect();
        refused += agent.write(Mode::Apply, T0 + i * 100, &samples).refused;
    }
    assert!(refused > 0);
    let head = agent.head.as_ref().unwrap();
    assert!(head.blocks.values().all(|b| b.len() <= BLOCK_BUDGET_BYTES));
    // sealing fits too, and so does a late batch into the sealed window
    let (_, head) =
        Writer::new(&mut agent.store, P, agent.head.take(), Mode::Apply).seal_idle(u64::MAX).unwrap();
    agent.head = head;
    assert!(agent.store.0.values().all(|v| v.len() <= BLOCK_BUDGET_BYTES));
    let late: Vec<(String, f64)> = (0..32).map(|s| (format!("r{s}"), 0.123456789 * s as f64)).collect();
    agent.write(Mode::Apply, T0 + 5, &late);
    assert!(agent.store.0.values().all(|v| v.len() <= BLOCK_BUDGET_BYTES));
}
