//! The series layout of one agent over a key-value store: series ids, the head window, raw
//! blocks, rollups at 1m/5m/1h, late samples, and reads that pick blocks by key range.
//!
//! Keys, under the agent's prefix `P` (chosen by the caller, e.g. `f/ts/<tenant>/<agent>/`):
//!
//! | key | value |
//! |---|---|
//! | `P m` | meta: samples refused so far and the series dictionary (id = position) |
//! | `P r <window be64> <shard be32>` | sealed raw block of a window |
//! | `P a\|b\|c <span be64> <shard be32>` | rollup block at 1m / 5m / 1h |
//!
//! Samples go to the raw block of their [`WINDOW_MS`] window. The newest window's blocks (the
//! head, [`AgentHead`]) live in memory with their encoder state, so an append writes nothing to
//! the store; the caller keeps heads durable (the Raft log and snapshots). A sample in a window
//! after the head's seals the head first: its blocks are stored without encoder state and their
//! 1m/5m/1h aggregates are merged into the rollup blocks. A sample in an older window (a late
//! one) is inserted into that window's sealed block and merged into the rollups directly, so
//! every sample is stored in time order whatever order it arrives in; samples older than the
//! store's retention disappear with the next expiry like any other.
//!
//! Everything is a function of the store's content and the input, so replicas applying the
//! same batches in the same order write the same bytes. Refusals (too many series for one
//! agent, a block at its size budget) are counted, never errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ChunkError;
use crate::bits::{get_bytes, get_varint, put_varint};
use crate::block::{self, RawBlock, RollupBlock, shard_of};
use crate::rollup::{self, Agg};

/// Width of a raw window (one raw block per shard), ms.
pub const WINDOW_MS: u64 = 10 * 60_000;
/// Most series per agent.
pub const MAX_SERIES: usize = 4096;
/// Size budget of one block; samples that would grow a block past it are refused.
pub const BLOCK_BUDGET_BYTES: usize = 100 * 1024;

/// Resolutions stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    /// Raw samples.
    Raw,
    /// 1-minute buckets.
    M1,
    /// 5-minute buckets.
    M5,
    /// 1-hour buckets.
    H1,
}

impl Res {
    /// All resolutions, finest first.
    pub const ALL: [Res; 4] = [Res::Raw, Res::M1, Res::M5, Res::H1];
    /// The rollup resolutions, finest first.
    pub const ROLLUPS: [Res; 3] = [Res::M1, Res::M5, Res::H1];

    /// Bucket width, ms (0 for raw).
    pub fn width_ms(self) -> u64 {
        match self {
            Res::Raw => 0,
            Res::M1 => 60_000,
            Res::M5 => 300_000,
            Res::H1 => 3_600_000,
        }
    }

    /// Time covered by one block, ms.
    pub fn span_ms(self) -> u64 {
        match self {
            Res::Raw | Res::M1 => WINDOW_MS,
            Res::M5 => 3_600_000,
            Res::H1 => 86_400_000,
        }
    }

    /// Position in [`Res::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn tag(self) -> u8 {
        match self {
            Res::Raw => b'r',
            Res::M1 => b'a',
            Res::M5 => b'b',
            Res::H1 => b'c',
        }
    }
}

/// Key of the agent's meta record: head window, refused samples, series dictionary.
pub fn meta_key(prefix: &[u8]) -> Vec<u8> {
    [prefix, b"m"].concat()
}

/// Key of a block of `res` starting at `start` for `shard`.
pub fn block_key(prefix: &[u8], res: Res, start: u64, shard: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 13);
    k.extend_from_slice(prefix);
    k.push(res.tag());
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// Key range `[start, end)` of the blocks of `res` whose span starts in `[from, to)`.
pub fn block_range(prefix: &[u8], res: Res, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
    (block_key(prefix, res, from, 0), block_key(prefix, res, to, 0))
}

/// Parses a block key under `prefix`: resolution, span start, shard.
pub fn parse_block_key(prefix: &[u8], key: &[u8]) -> Option<(Res, u64, u32)> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() != 13 {
        return None;
    }
    let res = Res::ALL.into_iter().find(|r| r.tag() == rest[0])?;
    let start = u64::from_be_bytes(rest[1..9].try_into().ok()?);
    let shard = u32::from_be_bytes(rest[9..13].try_into().ok()?);
    Some((res, start, shard))
}

/// Start of the window or span of width `w` holding `ts`.
fn align(ts: u64, w: u64) -> u64 {
    ts - ts % w
}

/// The key-value store the layout is written to (a transaction of the state machine).
pub trait Store {
    /// The store's error.
    type Error;
    /// A value read (owned, so a read never copies more than the store does).
    type Value: AsRef<[u8]>;
    /// Reads a value.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, Self::Error>;
    /// Writes a value; returns the length of the value it replaced (0 if none).
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<usize, Self::Error>;
}

/// Errors of the layout: the store's, or a damaged value.
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The store failed.
    #[error("store: {0}")]
    Store(E),
    /// A stored value does not decode.
    #[error(transparent)]
    Corrupt(#[from] ChunkError),
}

type R<T, E> = Result<T, Error<E>>;

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Samples stored.
    pub stored: u32,
    /// Samples refused (series limit, block budget).
    pub refused: u32,
    /// Change of stored bytes per resolution ([`Res::index`]).
    pub bytes: [i64; 4],
}

/// The head record: start of the newest window and the count of refused samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// Start of the head window (`None` before the first sample).
    pub window: Option<u64>,
    /// Samples refused over the agent's life.
    pub refused: u64,
}

/// The open (head) window of one agent, kept in memory by the caller: its start and the head
/// block of each shard that has samples in it. Rebuilt after a restart from the latest
/// snapshot (which carries heads) and the log entries after it ([`Mode::Replay`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentHead {
    /// Start of the head window.
    pub window: u64,
    /// Head blocks by shard ([`block::append_to_head`] form), shared so that cloning a head
    /// copies no block (an append replaces a block, it never edits one).
    pub blocks: BTreeMap<u32, Arc<[u8]>>,
    /// The agent's meta record as last read or written by a [`Writer`] in [`Mode::Apply`].
    pub meta: MetaCache,
}

impl AgentHead {
    /// An empty head of the window starting at `window`.
    pub fn new(window: u64) -> Self {
        AgentHead { window, blocks: BTreeMap::new(), meta: MetaCache::default() }
    }
}

/// A copy of the agent's meta record (refused count and series dictionary) kept with its head,
/// so that an append reads and parses nothing from the store. It is a cache: not in snapshot
/// records, ignored by head equality, empty after a load or a replay (the next append reads
/// the record), and replaced by every write of the record, which only a [`Writer`] makes.
#[derive(Debug, Clone, Default)]
pub struct MetaCache(Option<Arc<Meta>>);

impl PartialEq for MetaCache {
    fn eq(&self, _: &MetaCache) -> bool {
        true
    }
}

impl Eq for MetaCache {}

/// The decoded meta record.
#[derive(Debug, Default)]
pub struct Meta {
    /// Samples refused over the agent's life.
    pub refused: u64,
    /// Series keys; a series' id is its position.
    pub names: Vec<String>,
}

impl AgentHead {
    /// The head as snapshot records of bounded size: one per shard block (or one that only
    /// marks the window), each `varint window | varint shard + 1 (0: none) | block`.
    pub fn to_records(&self) -> Vec<Vec<u8>> {
        let record = |shard: Option<u32>, block: &[u8]| {
            let mut out = Vec::with_capacity(block.len() + 16);
            put_varint(&mut out, self.window);
            put_varint(&mut out, shard.map_or(0, |s| u64::from(s) + 1));
            out.extend_from_slice(block);
            out
        };
        if self.blocks.is_empty() {
            return vec![record(None, &[])];
        }
        self.blocks.iter().map(|(shard, b)| record(Some(*shard), b)).collect()
    }

    /// Adds a record written by [`AgentHead::to_records`] to `head`.
    pub fn add_record(head: &mut Option<AgentHead>, bytes: &[u8]) -> Result<(), ChunkError> {
        let mut pos = 0;
        let window = get_varint(bytes, &mut pos)?;
        let tag = get_varint(bytes, &mut pos)?;
        let h = head.get_or_insert_with(|| AgentHead::new(window));
        if h.window != window {
            return Err(ChunkError::Corrupt("head records disagree on the window"));
        }
        if tag == 0 {
            return Ok(());
        }
        let shard = u32::try_from(tag - 1).map_err(|_| ChunkError::Corrupt("shard"))?;
        let block = &bytes[pos..];
        if block.first() != Some(&0) {
            return Err(ChunkError::Corrupt("head holds a block that is not a head block"));
        }
        RawBlock::decode(block)?; // validate
        if h.blocks.insert(shard, Arc::from(block)).is_some() {
            return Err(ChunkError::Corrupt("head shard recorded twice"));
        }
        Ok(())
    }

    /// Bytes held by the head blocks.
    pub fn bytes(&self) -> usize {
        self.blocks.values().map(|b| b.len()).sum()
    }
}

/// Whether a writer applies a batch for the first time or replays it after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// First application: heads change and the store is written.
    Apply,
    /// Rebuilding heads from the log after a restart: the store already holds every write of
    /// the replayed entries, so only the head changes (nothing is written).
    Replay,
}

/// Parses a meta record: the refused count and the series keys (borrowed from `bytes`).
pub fn parse_meta(bytes: &[u8]) -> Result<(u64, Vec<&str>), ChunkError> {
    let mut pos = 0;
    let refused = get_varint(bytes, &mut pos)?;
    let n = get_varint(bytes, &mut pos)? as usize;
    let mut names = Vec::with_capacity(n.min(MAX_SERIES));
    for _ in 0..n {
        let len = get_varint(bytes, &mut pos)? as usize;
        let s = get_bytes(bytes, &mut pos, len)?;
        names.push(std::str::from_utf8(s).map_err(|_| ChunkError::Corrupt("series key is not UTF-8"))?);
    }
    Ok((refused, names))
}

fn encode_meta(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, meta.refused);
    put_varint(&mut out, meta.names.len() as u64);
    for k in &meta.names {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
    }
    out
}

/// Ids of the samples' series: the position in `names`, else in `added` (registered here,
/// `None` past [`MAX_SERIES`]). Agents send their series in the same order every time, so the
/// next name is tried first and the index is built only on a miss.
fn assign_ids(names: &[String], added: &mut Vec<String>, samples: &[(String, f64)]) -> Vec<Option<u32>> {
    let mut index: Option<BTreeMap<&str, usize>> = None;
    let mut guess = 0usize;
    let mut ids = Vec::with_capacity(samples.len());
    for (name, _) in samples {
        let id = if names.get(guess) == Some(name) {
            Some(guess)
        } else {
            let idx =
                index.get_or_insert_with(|| names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect());
            idx.get(name.as_str()).copied().or_else(|| match added.iter().position(|a| a == name) {
                Some(p) => Some(names.len() + p),
                None if names.len() + added.len() < MAX_SERIES => {
                    added.push(name.clone());
                    Some(names.len() + added.len() - 1)
                }
                None => None,
            })
        };
        if let Some(i) = id {
            guess = i + 1;
        }
        ids.push(id.map(|i| i as u32));
    }
    ids
}

/// One agent's series: the write path, over the store (sealed and rollup blocks, meta) and the
/// agent's in-memory head.
pub struct Writer<'a, S: Store> {
    store: &'a mut S,
    prefix: &'a [u8],
    head: Option<AgentHead>,
    mode: Mode,
    out: Appended,
}

impl<'a, S: Store> Writer<'a, S> {
    /// A writer for the agent whose keys start with `prefix` and whose head is `head`.
    pub fn new(store: &'a mut S, prefix: &'a [u8], head: Option<AgentHead>, mode: Mode) -> Self {
        Writer { store, prefix, head, mode, out: Appended::default() }
    }

    fn get(&self, key: &[u8]) -> R<Option<S::Value>, S::Error> {
        self.store.get(key).map_err(Error::Store)
    }

    fn put(&mut self, res: Option<Res>, key: Vec<u8>, value: Vec<u8>) -> R<(), S::Error> {
        if self.mode == Mode::Replay {
            return Ok(());
        }
        let new = (key.len() + value.len()) as i64;
        let klen = key.len() as i64;
        let old = self.store.put(key, value).map_err(Error::Store)? as i64;
        if let Some(r) = res {
            self.out.bytes[r.index()] += new - if old > 0 { old + klen } else { 0 };
        }
        Ok(())
    }

    /// Appends the samples of one batch collected at `ts`. Returns what it did and the head.
    pub fn append(
        mut self,
        ts: u64,
        samples: &[(String, f64)],
    ) -> R<(Appended, Option<AgentHead>), S::Error> {
        if samples.is_empty() {
            return Ok((self.out, self.head));
        }
        let meta = self.meta()?;
        let mut added = Vec::new();
        let ids = assign_ids(&meta.names, &mut added, samples);
        let mut by_shard: BTreeMap<u32, Vec<(u32, f64)>> = BTreeMap::new();
        for (id, (_, v)) in ids.iter().zip(samples) {
            match id {
                Some(id) => by_shard.entry(shard_of(*id)).or_default().push((*id, *v)),
                None => self.out.refused += 1,
            }
        }
        let window = align(ts, WINDOW_MS);
        match self.head.as_ref().map(|h| h.window) {
            Some(h) if window < h => {
                for (shard, points) in by_shard {
                    self.insert_late(window, shard, ts, &points)?;
                }
            }
            current => {
                if current.is_some_and(|h| h < window) {
                    self.seal()?;
                }
                let head = self.head.get_or_insert_with(|| AgentHead::new(window));
                head.window = window;
                for (shard, points) in by_shard {
                    self.append_head(shard, ts, &points)?;
                }
            }
        }
        let meta = if self.out.refused > 0 || !added.is_empty() {
            let names = meta.names.iter().cloned().chain(added).collect();
            self.write_meta(Meta { refused: meta.refused + u64::from(self.out.refused), names })?
        } else {
            meta
        };
        self.keep_meta(meta);
        Ok((self.out, self.head))
    }

    /// The agent's meta record: the head's copy, else read from the store.
    fn meta(&self) -> R<Arc<Meta>, S::Error> {
        if self.mode == Mode::Apply
            && let Some(m) = self.head.as_ref().and_then(|h| h.meta.0.clone())
        {
            return Ok(m);
        }
        let raw = self.get(&meta_key(self.prefix))?;
        let (refused, names) = match &raw {
            Some(b) => parse_meta(b.as_ref())?,
            None => (0, Vec::new()),
        };
        Ok(Arc::new(Meta { refused, names: names.into_iter().map(str::to_string).collect() }))
    }

    /// Writes the agent's meta record.
    fn write_meta(&mut self, meta: Meta) -> R<Arc<Meta>, S::Error> {
        self.put(None, meta_key(self.prefix), encode_meta(&meta))?;
        Ok(Arc::new(meta))
    }

    /// Keeps `meta` (the record as the store now has it) with the head. A replay keeps
    /// nothing: its store holds the record as of the end of the log, not as of the entry.
    fn keep_meta(&mut self, meta: Arc<Meta>) {
        if let Some(h) = self.head.as_mut() {
            h.meta = MetaCache((self.mode == Mode::Apply).then_some(meta));
        }
    }

    /// Seals the head window if it ended by `before` (an idle agent's last window); the head
    /// then only marks the next window, so a late sample for the sealed one goes to its block.
    pub fn seal_idle(mut self, before: u64) -> R<(Appended, Option<AgentHead>), S::Error> {
        if let Some(h) =
            self.head.as_ref().map(|h| h.window).filter(|h| h.saturating_add(WINDOW_MS) <= before)
        {
            let meta = self.head.as_ref().map(|h| h.meta.clone()).unwrap_or_default();
            self.seal()?; // takes the head
            self.head = Some(AgentHead { meta, ..AgentHead::new(h.saturating_add(WINDOW_MS)) });
        }
        Ok((self.out, self.head))
    }

    /// Counts `n` samples refused by the caller (e.g. collected too far in the future).
    pub fn refuse(mut self, n: u32) -> R<(Appended, Option<AgentHead>), S::Error> {
        let meta = self.meta()?;
        let meta =
            self.write_meta(Meta { refused: meta.refused + u64::from(n), names: meta.names.clone() })?;
        self.keep_meta(meta);
        self.out.refused = n;
        Ok((self.out, self.head))
    }

    /// A sealed raw block and the length of its stored value.
    fn raw_block(&self, key: &[u8]) -> R<(RawBlock, usize), S::Error> {
        match self.get(key)? {
            Some(b) => Ok((RawBlock::decode(b.as_ref())?, b.as_ref().len())),
            None => Ok((RawBlock::default(), 0)),
        }
    }

    fn append_head(&mut self, shard: u32, ts: u64, points: &[(u32, f64)]) -> R<(), S::Error> {
        let head = self.head.as_mut().expect("append_head runs with a head");
        let old = head.blocks.get(&shard);
        let (bytes, full) = match block::append_to_head(old.map(|b| &b[..]), ts, points)? {
            Some(appended) => appended,
            None => {
                // a sample older than its series' last one: re-encode in time order
                let mut blk = old.map(|b| RawBlock::decode(b)).transpose()?.unwrap_or_default();
                let mut full = 0;
                for (id, v) in points {
                    if !blk.insert(*id, ts, *v)? {
                        full += 1;
                    }
                }
                (blk.encode(false), full)
            }
        };
        if bytes.len() > BLOCK_BUDGET_BYTES {
            // the block keeps its size; its sealed form (never larger) then fits a stored value
            self.out.refused += points.len() as u32;
            return Ok(());
        }
        head.blocks.insert(shard, bytes.into());
        self.out.stored += points.len() as u32 - full;
        self.out.refused += full;
        Ok(())
    }

    fn insert_late(&mut self, window: u64, shard: u32, ts: u64, points: &[(u32, f64)]) -> R<(), S::Error> {
        if self.mode == Mode::Replay {
            return Ok(()); // the sealed and rollup blocks already hold it
        }
        let key = block_key(self.prefix, Res::Raw, window, shard);
        let (mut blk, _) = self.raw_block(&key)?;
        let mut accepted = Vec::with_capacity(points.len());
        for (id, v) in points {
            if blk.insert(*id, ts, *v)? {
                accepted.push((*id, *v));
            }
        }
        let bytes = blk.encode(true);
        if bytes.len() > BLOCK_BUDGET_BYTES {
            self.out.refused += points.len() as u32;
            return Ok(());
        }
        self.out.stored += accepted.len() as u32;
        self.out.refused += (points.len() - accepted.len()) as u32;
        self.put(Some(Res::Raw), key, bytes)?;
        for res in Res::ROLLUPS {
            let bucket = align(ts, res.width_ms());
            let add: Vec<(u32, Vec<(u64, Agg)>)> =
                accepted.iter().map(|(id, v)| (*id, vec![(bucket, Agg::of(ts, *v))])).collect();
            self.merge_rollups(res, align(ts, res.span_ms()), shard, &add)?;
        }
        Ok(())
    }

    /// Seals the head: its blocks are stored without encoder state and its aggregates merged
    /// into the rollup blocks; the head is left empty.
    fn seal(&mut self) -> R<(), S::Error> {
        let Some(head) = self.head.take() else { return Ok(()) };
        if self.mode == Mode::Replay {
            return Ok(());
        }
        for (shard, bytes) in &head.blocks {
            let blk = RawBlock::decode(bytes)?;
            let samples: Vec<(u32, Vec<(u64, f64)>)> =
                blk.series.iter().map(|(id, c)| (*id, c.samples())).collect();
            self.put(
                Some(Res::Raw),
                block_key(self.prefix, Res::Raw, head.window, *shard),
                blk.encode(true),
            )?;
            for res in Res::ROLLUPS {
                let add: Vec<(u32, Vec<(u64, Agg)>)> =
                    samples.iter().map(|(id, s)| (*id, rollup::downsample(s, res.width_ms()))).collect();
                self.merge_rollups(res, align(head.window, res.span_ms()), *shard, &add)?;
            }
        }
        Ok(())
    }

    fn merge_rollups(
        &mut self,
        res: Res,
        span: u64,
        shard: u32,
        add: &[(u32, Vec<(u64, Agg)>)],
    ) -> R<(), S::Error> {
        let key = block_key(self.prefix, res, span, shard);
        let mut blk: RollupBlock =
            self.get(&key)?.map(|b| block::decode_rollup(b.as_ref())).transpose()?.unwrap_or_default();
        for (id, buckets) in add {
            block::merge_rollup(&mut blk, *id, buckets);
        }
        let bytes = block::encode_rollup(&blk)?;
        if bytes.len() > BLOCK_BUDGET_BYTES {
            // cannot happen with the spans chosen (a bucket per width and series); refuse, not store
            self.out.refused += add.len() as u32;
            return Ok(());
        }
        self.put(Some(res), key, bytes)
    }
}

/// Samples in time order.
pub type Samples = Vec<(u64, f64)>;

/// A stored key and its value.
pub type Kv = (Vec<u8>, Vec<u8>);

/// Read access to the store: point reads and ordered key ranges.
pub trait Source {
    /// The store's error.
    type Error;
    /// Reads a value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Keys and values in `[start, end)`, in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<Kv>, Self::Error>;
}

/// One agent's series: the read path, over the store and the agent's head.
pub struct Reader<'a, S: Source> {
    src: &'a S,
    prefix: &'a [u8],
    head: Option<&'a AgentHead>,
}

impl<'a, S: Source> Reader<'a, S> {
    /// A reader for the agent whose keys start with `prefix` and whose head is `head`.
    pub fn new(src: &'a S, prefix: &'a [u8], head: Option<&'a AgentHead>) -> Self {
        Reader { src, prefix, head }
    }

    /// The agent's series keys; a series' id is its position.
    pub fn series(&self) -> R<Vec<String>, S::Error> {
        let raw = self.src.get(&meta_key(self.prefix)).map_err(Error::Store)?;
        let Some(bytes) = raw else { return Ok(Vec::new()) };
        Ok(parse_meta(&bytes)?.1.into_iter().map(str::to_string).collect())
    }

    /// The head record.
    pub fn head(&self) -> R<Head, S::Error> {
        let raw = self.src.get(&meta_key(self.prefix)).map_err(Error::Store)?;
        let refused = raw.map(|b| parse_meta(&b).map(|m| m.0)).transpose()?.unwrap_or(0);
        Ok(Head { window: self.head.map(|h| h.window), refused })
    }

    /// The head window's samples of series `id`, if the head has any.
    fn head_series(&self, id: u32) -> R<Option<(u64, Samples)>, S::Error> {
        let Some(h) = self.head else { return Ok(None) };
        let Some(bytes) = h.blocks.get(&shard_of(id)) else { return Ok(None) };
        Ok(block::raw_series(bytes, id)?.map(|s| (h.window, s)))
    }

    /// Raw samples of series `id` with `from <= ts < to`, in time order.
    pub fn raw(&self, id: u32, from: u64, to: u64) -> R<Vec<(u64, f64)>, S::Error> {
        let mut out = Vec::new();
        for (_, bytes) in self.blocks(Res::Raw, id, from, to)? {
            if let Some(s) = block::raw_series(&bytes, id)? {
                out.extend(s.into_iter().filter(|(t, _)| (from..to).contains(t)));
            }
        }
        if let Some((_, s)) = self.head_series(id)? {
            // the head window is after every sealed block
            out.extend(s.into_iter().filter(|(t, _)| (from..to).contains(t)));
        }
        Ok(out)
    }

    /// Buckets of `res` of series `id` starting in `[from, to)`, including the aggregates of
    /// the head window (not in the rollup blocks until it is sealed).
    pub fn rollup(&self, res: Res, id: u32, from: u64, to: u64) -> R<Vec<(u64, Agg)>, S::Error> {
        assert!(res != Res::Raw, "raw has no buckets");
        let mut out = Vec::new();
        for (_, bytes) in self.blocks(res, id, from, to)? {
            if let Some(b) = block::rollup_series(&bytes, id)? {
                out.extend(b.into_iter().filter(|(t, _)| (from..to).contains(t)));
            }
        }
        if let Some((w, s)) = self.head_series(id)?
            && w.saturating_add(WINDOW_MS) > from
            && w < to
        {
            let head: Vec<(u64, Agg)> = rollup::downsample(&s, res.width_ms())
                .into_iter()
                .filter(|(t, _)| (from..to).contains(t))
                .collect();
            crate::aggs::merge_into(&mut out, &head);
        }
        Ok(out)
    }

    /// Blocks of `res` holding series `id` that may have data in `[from, to)`.
    fn blocks(&self, res: Res, id: u32, from: u64, to: u64) -> R<Vec<Kv>, S::Error> {
        let span = res.span_ms();
        let (start, end) = block_range(self.prefix, res, align(from, span), to);
        let shard = shard_of(id);
        let found = self.src.range(&start, &end).map_err(Error::Store)?;
        Ok(found
            .into_iter()
            .filter(|(k, _)| parse_block_key(self.prefix, k).is_some_and(|(r, _, s)| r == res && s == shard))
            .collect())
    }
}

#[cfg(test)]
mod tests;
