//! Telemetry of the fleet domain: the `monsys-tsdb` series layout over the state machine's
//! write set (`txn::Tx`, writes) and tree (reads), plus the stored-bytes counters per tenant.
//!
//! Each agent's series live under `f/ts/<tenant>/<agent>/` (see `monsys_tsdb::series` for what
//! is below); its open window (the head) lives in memory ([`HeadMap`]), staged per entry
//! ([`HeadsTx`]) and published after the run's batch is written. `f/tsz/<tenant>` holds the bytes stored per resolution, kept exact by every write
//! and removal (so `/metrics` never scans the data).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use monsys_tsdb::series::{self, AgentHead, Mode, Res, Source, Store, Writer};

use super::keys;
use super::types::{IngestItem, Resolution};
use crate::txn::{R, Tx, get, put};
use crate::{Error, codec};

/// Samples collected further than this ahead of their reception are refused.
pub const MAX_FUTURE_MS: u64 = 10 * 60_000;

/// Key prefix of an agent's series.
pub(crate) fn prefix(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/ts/{tenant}/{agent}/").into_bytes()
}

/// `f/tsz/<tenant>` → bytes per resolution.
fn bytes_key(tenant: &str) -> Vec<u8> {
    format!("f/tsz/{tenant}").into_bytes()
}

/// Prefix of every tenant's byte counters.
const ALL_BYTES: &[u8] = b"f/tsz/";

/// The layout's resolution for an API resolution.
pub fn res(r: Resolution) -> Res {
    match r {
        Resolution::Raw => Res::Raw,
        Resolution::M1 => Res::M1,
        Resolution::M5 => Res::M5,
        Resolution::H1 => Res::H1,
    }
}

/// Byte changes per tenant and resolution, summed over one entry and written once.
#[derive(Debug, Default)]
pub(crate) struct ByteDeltas(BTreeMap<String, [i64; 4]>);

impl ByteDeltas {
    pub(crate) fn add(&mut self, tenant: &str, delta: [i64; 4]) {
        if delta.iter().all(|d| *d == 0) {
            return;
        }
        let e = self.0.entry(tenant.to_string()).or_default();
        for (t, d) in e.iter_mut().zip(delta) {
            *t += d;
        }
    }

    /// Adds the counters' changes to the stored counters.
    pub(crate) fn write(self, tx: &Tx<'_>) -> R<()> {
        for (tenant, delta) in self.0 {
            let key = bytes_key(&tenant);
            let mut total: [i64; 4] = get(tx, "telemetry bytes", &key)?.unwrap_or_default();
            for (t, d) in total.iter_mut().zip(delta) {
                *t = (*t + d).max(0);
            }
            put(tx, "telemetry bytes", key, &total)?;
        }
        Ok(())
    }
}

/// The layout's store over the run's write set.
struct TxStore<'a, 'b>(&'a Tx<'b>);

impl Store for TxStore<'_, '_> {
    type Error = Error;
    type Value = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, Self::Error> {
        self.0.get(key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<usize, Self::Error> {
        if value.len() as u64 > codec::MAX_VALUE_BYTES {
            return Err(Error::TooLarge { what: "telemetry block", max: codec::MAX_VALUE_BYTES });
        }
        Ok(self.0.replace(key, value)?.map_or(0, |v| v.len()))
    }
}

/// Every agent's head (open window), by key prefix: memory only, carried by snapshots and
/// rebuilt from the log after a restart (`StateMachineStore::recover`).
pub type HeadMap = BTreeMap<Vec<u8>, AgentHead>;

/// The heads shared by the state machine (writer) and its readers.
pub type SharedHeads = Arc<RwLock<HeadMap>>;

/// Head changes staged while a run of entries applies, published once its batch is written (a
/// failed apply changes no head).
pub(crate) struct HeadsTx<'a> {
    base: &'a HeadMap,
    staged: RefCell<BTreeMap<Vec<u8>, Option<AgentHead>>>,
}

impl<'a> HeadsTx<'a> {
    pub(crate) fn new(base: &'a HeadMap) -> Self {
        HeadsTx { base, staged: RefCell::new(BTreeMap::new()) }
    }

    fn get(&self, prefix: &[u8]) -> Option<AgentHead> {
        match self.staged.borrow().get(prefix) {
            Some(staged) => staged.clone(),
            None => self.base.get(prefix).cloned(),
        }
    }

    fn set(&self, prefix: Vec<u8>, head: Option<AgentHead>) {
        self.staged.borrow_mut().insert(prefix, head);
    }

    /// Prefixes of heads whose window ended by `before_ms`, in key order.
    fn idle(&self, before_ms: u64) -> Vec<Vec<u8>> {
        let staged = self.staged.borrow();
        let mut all: BTreeMap<&Vec<u8>, Option<&AgentHead>> =
            self.base.iter().map(|(k, h)| (k, Some(h))).collect();
        for (k, h) in staged.iter() {
            all.insert(k, h.as_ref());
        }
        all.into_iter()
            .filter(|(_, h)| {
                h.is_some_and(|h| {
                    !h.blocks.is_empty() && h.window.saturating_add(series::WINDOW_MS) <= before_ms
                })
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The staged changes, to publish with [`Staged::publish`] once the base is free.
    pub(crate) fn finish(self) -> Staged {
        Staged(self.staged.into_inner())
    }
}

/// Head changes of one applied entry.
pub(crate) struct Staged(BTreeMap<Vec<u8>, Option<AgentHead>>);

impl Staged {
    /// Applies the changes to `heads`.
    pub(crate) fn publish(self, heads: &mut HeadMap) {
        for (prefix, head) in self.0 {
            match head {
                Some(h) => heads.insert(prefix, h),
                None => heads.remove(&prefix),
            };
        }
    }
}

/// Appends the samples of a stored batch to its agent's head. Returns the samples refused.
pub(crate) fn write<S: Store>(
    store: &mut S,
    heads: &HeadsTx<'_>,
    mode: Mode,
    b: &IngestItem,
    deltas: &mut ByteDeltas,
) -> Result<u32, series::Error<S::Error>> {
    let p = prefix(&b.tenant, &b.agent_id);
    let w = Writer::new(store, &p, heads.get(&p), mode);
    let (out, head) = if b.collected_at_ms > b.received_at_ms.saturating_add(MAX_FUTURE_MS) {
        w.refuse(b.samples.len() as u32)?
    } else {
        w.append(b.collected_at_ms, &b.samples)?
    };
    heads.set(p, head);
    deltas.add(&b.tenant, out.bytes);
    Ok(out.refused)
}

/// [`write`] into the run's write set.
pub(crate) fn append(tx: &Tx<'_>, heads: &HeadsTx<'_>, b: &IngestItem, deltas: &mut ByteDeltas) -> R<u32> {
    write(&mut TxStore(tx), heads, Mode::Apply, b, deltas).map_err(layout_err)
}

/// Seals the heads whose window ended by `before_ms` (idle agents): their rollups become
/// stored instead of computed on read.
pub(crate) fn seal_idle<S: Store>(
    store: &mut S,
    heads: &HeadsTx<'_>,
    mode: Mode,
    before_ms: u64,
    deltas: &mut ByteDeltas,
) -> Result<(), series::Error<S::Error>> {
    for p in heads.idle(before_ms) {
        let (out, head) = Writer::new(store, &p, heads.get(&p), mode).seal_idle(before_ms)?;
        heads.set(p.clone(), head);
        if let Some(tenant) = tenant_of(&p) {
            deltas.add(tenant, out.bytes);
        }
    }
    Ok(())
}

/// [`seal_idle`] into the run's write set.
pub(crate) fn seal_idle_tx(
    tx: &Tx<'_>,
    heads: &HeadsTx<'_>,
    before_ms: u64,
    deltas: &mut ByteDeltas,
) -> R<()> {
    seal_idle(&mut TxStore(tx), heads, Mode::Apply, before_ms, deltas).map_err(layout_err)
}

/// Drops an agent's head (agent deletion).
pub(crate) fn drop_head(heads: &HeadsTx<'_>, tenant: &str, agent: &str) {
    heads.set(prefix(tenant, agent), None);
}

/// The tenant of a series prefix `f/ts/<tenant>/<agent>/`.
fn tenant_of(prefix: &[u8]) -> Option<&str> {
    std::str::from_utf8(prefix.strip_prefix(b"f/ts/")?).ok()?.split('/').next()
}

/// The store of a replay: reads the tree, never writes (a replay writes nothing).
pub(crate) struct ReplayStore<'a>(pub(crate) &'a sled::Tree);

impl Store for ReplayStore<'_> {
    type Error = Error;
    type Value = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        Ok(self.0.get(key)?)
    }

    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) -> Result<usize, Error> {
        Err(Error::Corrupt("a telemetry replay tried to write".into()))
    }
}

/// A key a range-deleting command removes, and the counter it counts against.
#[derive(Debug)]
pub(crate) struct Removal {
    pub(crate) key: sled::IVec,
    pub(crate) counted: Option<(String, Res)>,
}

/// Removes prescanned keys, keeping the byte counters exact.
pub(crate) fn remove(tx: &Tx<'_>, removals: &[Removal], deltas: &mut ByteDeltas) -> R<()> {
    for r in removals {
        let old = tx.take(r.key.to_vec())?;
        if let (Some(old), Some((tenant, res))) = (old, &r.counted) {
            let mut d = [0i64; 4];
            d[res.index()] = -((r.key.len() + old.len()) as i64);
            deltas.add(tenant, d);
        }
    }
    Ok(())
}

/// Every key of an agent's series (for deletion).
pub(crate) fn scan_agent(
    data: &sled::Tree,
    tenant: &str,
    agent: &str,
    out: &mut Vec<Removal>,
) -> Result<(), Error> {
    let p = prefix(tenant, agent);
    for kv in data.scan_prefix(&p) {
        let key = kv?.0;
        let counted = series::parse_block_key(&p, &key).map(|(r, ..)| (tenant.to_string(), r));
        out.push(Removal { key, counted });
    }
    Ok(())
}

/// Blocks of an agent entirely older than each resolution's cutoff (`cutoffs[res.index()]`),
/// at most `limit` in all.
pub(crate) fn scan_expired(
    data: &sled::Tree,
    tenant: &str,
    agent: &str,
    cutoffs: [u64; 4],
    limit: usize,
    out: &mut Vec<Removal>,
) -> Result<(), Error> {
    let p = prefix(tenant, agent);
    for r in Res::ALL {
        let end = (cutoffs[r.index()] + 1).saturating_sub(r.span_ms());
        let (start, end) = series::block_range(&p, r, 0, end);
        for kv in data.range(start..end) {
            if out.len() >= limit {
                return Ok(());
            }
            out.push(Removal { key: kv?.0, counted: Some((tenant.to_string(), r)) });
        }
    }
    Ok(())
}

/// The layout's read source over the data tree.
pub(crate) struct TreeSource<'a>(pub(crate) &'a sled::Tree);

impl Source for TreeSource<'_> {
    type Error = Error;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        self.0
            .range(start..end)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from))
            .collect()
    }
}

/// A layout error as the state machine's (a read or a write of the series layout).
pub(crate) fn layout_err(e: series::Error<Error>) -> Error {
    match e {
        series::Error::Store(e) => e,
        series::Error::Corrupt(c) => Error::Corrupt(format!("telemetry block: {c}")),
    }
}

/// Stored telemetry bytes per tenant and resolution (`[raw, 1m, 5m, 1h]`).
pub(crate) fn bytes_by_tenant(data: &sled::Tree) -> Result<BTreeMap<String, [i64; 4]>, Error> {
    let mut out = BTreeMap::new();
    for kv in data.scan_prefix(ALL_BYTES) {
        let (k, v) = kv?;
        let tenant = String::from_utf8_lossy(&k[ALL_BYTES.len()..]).into_owned();
        out.insert(tenant, codec::decode_value("telemetry bytes", &v)?);
    }
    Ok(out)
}

/// Keys of the layout this replaces (one value per batch and per rollup bucket), still removed
/// by agent deletion and by retention until they age out.
pub(crate) fn legacy_prefixes(tenant: &str, agent: &str) -> Vec<Vec<u8>> {
    let mut p = vec![keys::raw_prefix(tenant, agent)];
    p.extend(Resolution::ROLLUPS.iter().map(|r| keys::rollup_prefix(r.tag(), tenant, agent)));
    p
}
