//! The series layout of one agent over a key-value store: series ids, the head window, raw
//! blocks, rollups at 1m/5m/1h, late samples, and reads that pick blocks by key range.
//!
//! Keys, under the agent's prefix `P` (chosen by the caller, e.g. `f/ts/<tenant>/<agent>/`):
//!
//! | key | value |
//! |---|---|
//! | `P d` | series dictionary: the series keys, id = position |
//! | `P h` | head: start of the newest window, samples refused so far |
//! | `P r <window be64> <shard be32>` | raw block (head form for the head window, else sealed) |
//! | `P a\|b\|c <span be64> <shard be32>` | rollup block at 1m / 5m / 1h |
//!
//! Samples go to the raw block of their [`WINDOW_MS`] window. A sample in a window after the
//! head's seals the head first: its raw blocks are rewritten without encoder state and their
//! 1m/5m/1h aggregates are merged into the rollup blocks. A sample in an older window (a late
//! one) is inserted into that window's sealed block and merged into the rollups directly, so
//! every sample is stored in time order whatever order it arrives in; samples older than the
//! store's retention disappear with the next expiry like any other.
//!
//! Everything is a function of the store's content and the input, so replicas applying the
//! same batches in the same order write the same bytes. Refusals (too many series for one
//! agent, a block at its size budget) are counted, never errors.

use std::collections::BTreeMap;

use crate::ChunkError;
use crate::bits::{get_bytes, get_varint, put_varint};
use crate::block::{self, RawBlock, RollupBlock, SHARD_WIDTH, shard_of};
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

/// Key of the series dictionary.
pub fn dict_key(prefix: &[u8]) -> Vec<u8> {
    [prefix, b"d"].concat()
}

/// Key of the head record.
pub fn head_key(prefix: &[u8]) -> Vec<u8> {
    [prefix, b"h"].concat()
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
    /// Reads a value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
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

impl Head {
    fn decode(bytes: &[u8]) -> Result<Head, ChunkError> {
        let mut pos = 0;
        let flag = get_bytes(bytes, &mut pos, 1)?[0];
        let window = get_varint(bytes, &mut pos)?;
        let refused = get_varint(bytes, &mut pos)?;
        Ok(Head { window: (flag == 1).then_some(window), refused })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.window.is_some())];
        put_varint(&mut out, self.window.unwrap_or(0));
        put_varint(&mut out, self.refused);
        out
    }
}

/// Decodes a series dictionary.
pub fn decode_dict(bytes: &[u8]) -> Result<Vec<String>, ChunkError> {
    let mut pos = 0;
    let n = get_varint(bytes, &mut pos)? as usize;
    let mut out = Vec::with_capacity(n.min(MAX_SERIES));
    for _ in 0..n {
        let len = get_varint(bytes, &mut pos)? as usize;
        let s = get_bytes(bytes, &mut pos, len)?;
        out.push(String::from_utf8(s.to_vec()).map_err(|_| ChunkError::Corrupt("series key is not UTF-8"))?);
    }
    Ok(out)
}

fn encode_dict(keys: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, keys.len() as u64);
    for k in keys {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
    }
    out
}

/// One agent's series over a store: the write path.
pub struct Writer<'a, S: Store> {
    store: &'a mut S,
    prefix: &'a [u8],
    out: Appended,
}

impl<'a, S: Store> Writer<'a, S> {
    /// A writer for the agent whose keys start with `prefix`.
    pub fn new(store: &'a mut S, prefix: &'a [u8]) -> Self {
        Writer { store, prefix, out: Appended::default() }
    }

    fn get(&self, key: &[u8]) -> R<Option<Vec<u8>>, S::Error> {
        self.store.get(key).map_err(Error::Store)
    }

    fn put(&mut self, res: Option<Res>, key: Vec<u8>, value: Vec<u8>) -> R<(), S::Error> {
        let new = (key.len() + value.len()) as i64;
        let klen = key.len() as i64;
        let old = self.store.put(key, value).map_err(Error::Store)? as i64;
        if let Some(r) = res {
            self.out.bytes[r.index()] += new - if old > 0 { old + klen } else { 0 };
        }
        Ok(())
    }

    /// Appends the samples of one batch collected at `ts`.
    pub fn append(mut self, ts: u64, samples: &[(String, f64)]) -> R<Appended, S::Error> {
        if samples.is_empty() {
            return Ok(self.out);
        }
        let ids = self.series_ids(samples)?;
        let mut head = self.head()?;
        let window = align(ts, WINDOW_MS);
        let mut by_shard: BTreeMap<u32, Vec<(u32, f64)>> = BTreeMap::new();
        for (id, (_, v)) in ids.iter().zip(samples) {
            match id {
                Some(id) => by_shard.entry(shard_of(*id)).or_default().push((*id, *v)),
                None => self.out.refused += 1,
            }
        }
        match head.window {
            Some(h) if window < h => {
                for (shard, points) in by_shard {
                    self.insert_late(window, shard, ts, &points)?;
                }
            }
            current => {
                if let Some(h) = current.filter(|h| *h < window) {
                    self.seal(h)?;
                }
                head.window = Some(window);
                for (shard, points) in by_shard {
                    self.append_head(window, shard, ts, &points)?;
                }
            }
        }
        head.refused += u64::from(self.out.refused);
        self.put(None, head_key(self.prefix), head.encode())?;
        Ok(self.out)
    }

    /// Seals the head window if it started before `before` (an idle agent's last window).
    pub fn seal_idle(mut self, before: u64) -> R<Appended, S::Error> {
        let mut head = self.head()?;
        if let Some(h) = head.window.filter(|h| h + WINDOW_MS <= before) {
            self.seal(h)?;
            // the next sample opens a new head; a late one for `h` goes to the sealed block
            head.window = Some(h + WINDOW_MS);
            self.put(None, head_key(self.prefix), head.encode())?;
        }
        Ok(self.out)
    }

    /// Counts `n` samples refused by the caller (e.g. collected too far in the future).
    pub fn refuse(mut self, n: u32) -> R<Appended, S::Error> {
        let mut head = self.head()?;
        head.refused += u64::from(n);
        self.out.refused = n;
        self.put(None, head_key(self.prefix), head.encode())?;
        Ok(self.out)
    }

    fn head(&self) -> R<Head, S::Error> {
        Ok(self.get(&head_key(self.prefix))?.map(|b| Head::decode(&b)).transpose()?.unwrap_or_default())
    }

    /// Ids of the samples' series, registering new ones (`None` past [`MAX_SERIES`]).
    fn series_ids(&mut self, samples: &[(String, f64)]) -> R<Vec<Option<u32>>, S::Error> {
        let key = dict_key(self.prefix);
        let mut dict = self.get(&key)?.map(|b| decode_dict(&b)).transpose()?.unwrap_or_default();
        let mut index: BTreeMap<&str, u32> = BTreeMap::new();
        for (i, k) in dict.iter().enumerate() {
            index.insert(k, i as u32);
        }
        let mut added: Vec<String> = Vec::new();
        let mut ids = Vec::with_capacity(samples.len());
        for (name, _) in samples {
            let id = match index.get(name.as_str()) {
                Some(id) => Some(*id),
                None => match added.iter().position(|a| a == name) {
                    Some(p) => Some((dict.len() + p) as u32),
                    None if dict.len() + added.len() < MAX_SERIES => {
                        added.push(name.clone());
                        Some((dict.len() + added.len() - 1) as u32)
                    }
                    None => None,
                },
            };
            ids.push(id);
        }
        if !added.is_empty() {
            drop(index);
            dict.extend(added);
            self.put(None, key, encode_dict(&dict))?;
        }
        Ok(ids)
    }

    /// A raw block and the length of its stored value.
    fn raw_block(&self, key: &[u8]) -> R<(RawBlock, usize), S::Error> {
        match self.get(key)? {
            Some(b) => Ok((RawBlock::decode(&b)?, b.len())),
            None => Ok((RawBlock::default(), 0)),
        }
    }

    fn append_head(&mut self, window: u64, shard: u32, ts: u64, points: &[(u32, f64)]) -> R<(), S::Error> {
        let key = block_key(self.prefix, Res::Raw, window, shard);
        let (mut blk, len) = self.raw_block(&key)?;
        let budget_ok = len < BLOCK_BUDGET_BYTES;
        for (id, v) in points {
            if !budget_ok {
                self.out.refused += 1;
                continue;
            }
            blk.insert(*id, ts, *v)?;
            self.out.stored += 1;
        }
        self.put(Some(Res::Raw), key, blk.encode(false))
    }

    fn insert_late(&mut self, window: u64, shard: u32, ts: u64, points: &[(u32, f64)]) -> R<(), S::Error> {
        let key = block_key(self.prefix, Res::Raw, window, shard);
        let (mut blk, len) = self.raw_block(&key)?;
        if len >= BLOCK_BUDGET_BYTES {
            self.out.refused += points.len() as u32;
            return Ok(());
        }
        for (id, v) in points {
            blk.insert(*id, ts, *v)?;
            self.out.stored += 1;
        }
        self.put(Some(Res::Raw), key, blk.encode(true))?;
        for res in Res::ROLLUPS {
            let bucket = align(ts, res.width_ms());
            let add: Vec<(u32, Vec<(u64, Agg)>)> =
                points.iter().map(|(id, v)| (*id, vec![(bucket, Agg::of(ts, *v))])).collect();
            self.merge_rollups(res, align(ts, res.span_ms()), shard, &add)?;
        }
        Ok(())
    }

    /// Seals the head window `window`: raw blocks lose their encoder state, rollups get its
    /// aggregates.
    fn seal(&mut self, window: u64) -> R<(), S::Error> {
        let series =
            self.get(&dict_key(self.prefix))?.map(|b| decode_dict(&b)).transpose()?.unwrap_or_default();
        let shards = (series.len() as u32).div_ceil(SHARD_WIDTH);
        for shard in 0..shards {
            let key = block_key(self.prefix, Res::Raw, window, shard);
            let Some(bytes) = self.get(&key)? else { continue };
            let blk = RawBlock::decode(&bytes)?;
            let samples: Vec<(u32, Vec<(u64, f64)>)> =
                blk.series.iter().map(|(id, c)| (*id, c.samples())).collect();
            self.put(Some(Res::Raw), key, blk.encode(true))?;
            for res in Res::ROLLUPS {
                let add: Vec<(u32, Vec<(u64, Agg)>)> =
                    samples.iter().map(|(id, s)| (*id, rollup::downsample(s, res.width_ms()))).collect();
                self.merge_rollups(res, align(window, res.span_ms()), shard, &add)?;
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
            self.get(&key)?.map(|b| block::decode_rollup(&b)).transpose()?.unwrap_or_default();
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

/// One agent's series over a store: the read path.
pub struct Reader<'a, S: Source> {
    src: &'a S,
    prefix: &'a [u8],
}

impl<'a, S: Source> Reader<'a, S> {
    /// A reader for the agent whose keys start with `prefix`.
    pub fn new(src: &'a S, prefix: &'a [u8]) -> Self {
        Reader { src, prefix }
    }

    /// The agent's series keys; a series' id is its position.
    pub fn series(&self) -> R<Vec<String>, S::Error> {
        let raw = self.src.get(&dict_key(self.prefix)).map_err(Error::Store)?;
        Ok(raw.map(|b| decode_dict(&b)).transpose()?.unwrap_or_default())
    }

    /// The head record.
    pub fn head(&self) -> R<Head, S::Error> {
        let raw = self.src.get(&head_key(self.prefix)).map_err(Error::Store)?;
        Ok(raw.map(|b| Head::decode(&b)).transpose()?.unwrap_or_default())
    }

    /// Raw samples of series `id` with `from <= ts < to`, in time order.
    pub fn raw(&self, id: u32, from: u64, to: u64) -> R<Vec<(u64, f64)>, S::Error> {
        let mut out = Vec::new();
        for (_, bytes) in self.blocks(Res::Raw, id, from, to)? {
            if let Some(s) = block::raw_series(&bytes, id)? {
                out.extend(s.into_iter().filter(|(t, _)| (from..to).contains(t)));
            }
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
        if let Some(h) = self.head()?.window.filter(|h| *h + WINDOW_MS > from && *h < to) {
            let key = block_key(self.prefix, Res::Raw, h, shard_of(id));
            if let Some(bytes) = self.src.get(&key).map_err(Error::Store)?
                && let Some(s) = block::raw_series(&bytes, id)?
            {
                let head: Vec<(u64, Agg)> = rollup::downsample(&s, res.width_ms())
                    .into_iter()
                    .filter(|(t, _)| (from..to).contains(t))
                    .collect();
                crate::aggs::merge_into(&mut out, &head);
            }
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
