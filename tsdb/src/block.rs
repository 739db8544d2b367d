//! Blocks: the stored values of the series layout. A block holds the series of one shard of an
//! agent (series ids `shard * SHARD_WIDTH ..`) over one time span:
//!
//! - a raw block holds one Gorilla [`Chunk`] per series for one window; while its window is the
//!   agent's newest (the head) the chunks carry their encoder state; once sealed each series is
//!   a tag byte and either the Gorilla chunk or, when smaller, its [`crate::decimal`] form;
//! - a rollup block holds one series of `(bucket, Agg)` per series for one span ([`aggs`]).
//!
//! Layout: `kind: u8 | [varint base ts, sealed only] | varint n | n × (varint series id |
//! varint len | bytes)`, series in id order, so a reader finds one series by skipping lengths without decoding the others.

use crate::bits::{get_bytes, get_varint, put_varint};
use crate::rollup::Agg;
use crate::{Chunk, ChunkError, aggs};

const KIND_HEAD: u8 = 0;
const KIND_SEALED: u8 = 1;
const KIND_ROLLUP: u8 = 2;

/// Series ids per shard (one block per shard and span).
pub const SHARD_WIDTH: u32 = 32;

/// The shard holding a series id.
pub fn shard_of(series: u32) -> u32 {
    series / SHARD_WIDTH
}

/// A raw block: one chunk per series of a shard, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBlock {
    /// `(series id, chunk)`, by id.
    pub series: Vec<(u32, Chunk)>,
}

impl RawBlock {
    /// Decodes a head or sealed block.
    pub fn decode(bytes: &[u8]) -> Result<RawBlock, ChunkError> {
        let (kind, base, entries) = entries(bytes)?;
        let mut series = Vec::with_capacity(entries.len());
        for (id, body) in entries {
            let chunk = match kind {
                KIND_HEAD => Chunk::read_state(body, &mut 0)?,
                KIND_SEALED => Chunk::from_samples(&sealed_samples(body, base)?)?,
                _ => return Err(ChunkError::Corrupt("not a raw block")),
            };
            series.push((id, chunk));
        }
        Ok(RawBlock { series })
    }

    /// Encodes the block as a head (chunks resumable) or sealed.
    pub fn encode(&self, sealed: bool) -> Vec<u8> {
        let mut out = vec![if sealed { KIND_SEALED } else { KIND_HEAD }];
        // sealed series store their first timestamp relative to the block's earliest one
        let base =
            self.series.iter().filter(|(_, c)| !c.is_empty()).map(|(_, c)| c.first_ts()).min().unwrap_or(0);
        if sealed {
            put_varint(&mut out, base);
        }
        put_varint(&mut out, self.series.len() as u64);
        let mut body = Vec::new();
        for (id, chunk) in &self.series {
            body.clear();
            if sealed {
                write_sealed(chunk, base, &mut body);
            } else {
                chunk.write_state(&mut body);
            }
            put_varint(&mut out, u64::from(*id));
            put_varint(&mut out, body.len() as u64);
            out.extend_from_slice(&body);
        }
        out
    }

    /// The chunk of `id`, created empty (keeping id order) if absent.
    pub fn chunk_mut(&mut self, id: u32) -> &mut Chunk {
        let i = match self.series.binary_search_by_key(&id, |(s, _)| *s) {
            Ok(i) => i,
            Err(i) => {
                self.series.insert(i, (id, Chunk::new()));
                i
            }
        };
        &mut self.series[i].1
    }

    /// Inserts a sample in time order (after samples with the same timestamp), re-encoding the
    /// series' chunk when the sample is older than its last one. Returns `false` (and changes
    /// nothing) when the series' chunk is full.
    pub fn insert(&mut self, id: u32, ts: u64, v: f64) -> Result<bool, ChunkError> {
        let chunk = self.chunk_mut(id);
        if chunk.len() >= crate::chunk::MAX_SAMPLES {
            return Ok(false);
        }
        if chunk.is_empty() || ts >= chunk.last_ts() {
            chunk.push(ts, v)?;
            return Ok(true);
        }
        let mut samples = chunk.samples();
        let at = samples.partition_point(|(t, _)| *t <= ts);
        samples.insert(at, (ts, v));
        *chunk = Chunk::from_samples(&samples)?;
        Ok(true)
    }
}

/// Appends `points` (series id, value), all collected at `ts`, to an encoded head block without
/// decoding the series they do not touch (`old` is `None` for a new block). Returns the block
/// and how many points a full chunk refused, or `None` when a point is older than its series'
/// last sample: the caller then takes the re-encoding path ([`RawBlock::insert`]).
pub fn append_to_head(
    old: Option<&[u8]>,
    ts: u64,
    points: &[(u32, f64)],
) -> Result<Option<(Vec<u8>, u32)>, ChunkError> {
    let entries = match old {
        Some(bytes) => match entries(bytes)? {
            (KIND_HEAD, _, e) => e,
            _ => return Err(ChunkError::Corrupt("head window block is not a head block")),
        },
        None => Vec::new(),
    };
    let mut points = points.to_vec();
    points.sort_by_key(|(id, _)| *id); // stable: a series twice in a batch keeps its order
    let mut ids: Vec<u32> =
        entries.iter().map(|(id, _)| *id).chain(points.iter().map(|(id, _)| *id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(old.map_or(64, |b| b.len() + points.len() * 4 + 16));
    out.push(KIND_HEAD);
    put_varint(&mut out, ids.len() as u64);
    let (mut e, mut p) = (entries.iter().peekable(), points.iter().peekable());
    let mut chunk = Chunk::new();
    let mut body = Vec::new();
    let mut refused = 0;
    for id in ids {
        let existing = e.next_if(|(eid, _)| *eid == id).map(|(_, b)| *b);
        if p.peek().is_none_or(|(pid, _)| *pid != id) {
            let b = existing.expect("an id comes from an entry or a point");
            put_varint(&mut out, u64::from(id));
            put_varint(&mut out, b.len() as u64);
            out.extend_from_slice(b);
            continue;
        }
        match existing {
            Some(b) => chunk.read_state_into(b, &mut 0)?,
            None => chunk.clear(),
        }
        while let Some((_, v)) = p.next_if(|(pid, _)| *pid == id) {
            if !chunk.is_empty() && ts < chunk.last_ts() {
                return Ok(None);
            }
            match chunk.push(ts, *v) {
                Err(ChunkError::Full) => refused += 1,
                other => other?,
            }
        }
        body.clear();
        chunk.write_state(&mut body);
        put_varint(&mut out, u64::from(id));
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    Ok(Some((out, refused)))
}

/// The samples of one series in a raw block (head or sealed) without decoding the others.
pub fn raw_series(bytes: &[u8], id: u32) -> Result<Option<Vec<(u64, f64)>>, ChunkError> {
    let (kind, base, entries) = entries(bytes)?;
    let Some((_, body)) = entries.into_iter().find(|(s, _)| *s == id) else { return Ok(None) };
    match kind {
        KIND_HEAD => Ok(Some(Chunk::read_state(body, &mut 0)?.samples())),
        KIND_SEALED => Ok(Some(sealed_samples(body, base)?)),
        _ => Err(ChunkError::Corrupt("not a raw block")),
    }
}

/// A rollup block: per series of a shard, its buckets in the block's span.
pub type RollupBlock = Vec<(u32, Vec<(u64, Agg)>)>;

/// Decodes a rollup block.
pub fn decode_rollup(bytes: &[u8]) -> Result<RollupBlock, ChunkError> {
    let (kind, _, entries) = entries(bytes)?;
    if kind != KIND_ROLLUP {
        return Err(ChunkError::Corrupt("not a rollup block"));
    }
    entries.into_iter().map(|(id, body)| Ok((id, aggs::read(body)?))).collect()
}

/// Encodes a rollup block (series in id order).
pub fn encode_rollup(block: &RollupBlock) -> Result<Vec<u8>, ChunkError> {
    let mut out = vec![KIND_ROLLUP];
    put_varint(&mut out, block.len() as u64);
    let mut body = Vec::new();
    for (id, buckets) in block {
        body.clear();
        aggs::write(buckets, &mut body)?;
        put_varint(&mut out, u64::from(*id));
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// The buckets of one series in a rollup block without decoding the others.
pub fn rollup_series(bytes: &[u8], id: u32) -> Result<Option<Vec<(u64, Agg)>>, ChunkError> {
    let (kind, _, entries) = entries(bytes)?;
    if kind != KIND_ROLLUP {
        return Err(ChunkError::Corrupt("not a rollup block"));
    }
    entries.into_iter().find(|(s, _)| *s == id).map(|(_, body)| aggs::read(body)).transpose()
}

/// Merges buckets of series `id` into a rollup block, keeping id order.
pub fn merge_rollup(block: &mut RollupBlock, id: u32, add: &[(u64, Agg)]) {
    match block.binary_search_by_key(&id, |(s, _)| *s) {
        Ok(i) => aggs::merge_into(&mut block[i].1, add),
        Err(i) => block.insert(i, (id, add.to_vec())),
    }
}

/// A block's series entries: `(series id, encoded body)`.
type Entries<'a> = Vec<(u32, &'a [u8])>;

/// A block's kind, its base timestamp (sealed blocks; 0 otherwise) and its series entries.
fn entries(bytes: &[u8]) -> Result<(u8, u64, Entries<'_>), ChunkError> {
    let (&kind, _) = bytes.split_first().ok_or(ChunkError::Corrupt("empty block"))?;
    let mut pos = 1;
    let base = if kind == KIND_SEALED { get_varint(bytes, &mut pos)? } else { 0 };
    let n = get_varint(bytes, &mut pos)? as usize;
    let mut out = Vec::with_capacity(n.min(SHARD_WIDTH as usize));
    for _ in 0..n {
        let id = u32::try_from(get_varint(bytes, &mut pos)?).map_err(|_| ChunkError::Corrupt("series id"))?;
        if out.last().is_some_and(|(prev, _)| *prev >= id) {
            return Err(ChunkError::Corrupt("series ids out of order"));
        }
        let len = get_varint(bytes, &mut pos)? as usize;
        out.push((id, get_bytes(bytes, &mut pos, len)?));
    }
    Ok((kind, base, out))
}

/// Sealed series encodings (the first byte of a sealed series).
const SEALED_GORILLA: u8 = 0;
const SEALED_DECIMAL: u8 = 1;

/// Writes a sealed series: the decimal encoding when it applies and is smaller, else Gorilla.
fn write_sealed(chunk: &Chunk, base: u64, out: &mut Vec<u8>) {
    let gorilla = chunk.to_bytes();
    match crate::decimal::encode(&chunk.samples(), base) {
        Some(dec) if dec.len() < gorilla.len() => {
            out.push(SEALED_DECIMAL);
            out.extend_from_slice(&dec);
        }
        _ => {
            out.push(SEALED_GORILLA);
            out.extend_from_slice(&gorilla);
        }
    }
}

/// The samples of a sealed series.
fn sealed_samples(body: &[u8], base: u64) -> Result<Vec<(u64, f64)>, ChunkError> {
    match body.split_first() {
        Some((&SEALED_GORILLA, rest)) => Chunk::iter(rest)?.collect(),
        Some((&SEALED_DECIMAL, rest)) => crate::decimal::decode(rest, base),
        _ => Err(ChunkError::Corrupt("unknown sealed series encoding")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_sealed_blocks_hold_the_same_samples() {
        let mut b = RawBlock::default();
        for i in 0..40u64 {
            b.insert(3, 1000 + i * 15_000, i as f64).unwrap();
            b.insert(1, 1000 + i * 15_000, -(i as f64)).unwrap();
        }
        b.insert(3, 1000 + 7_000, 0.5).unwrap(); // late, within the window
        let head = b.encode(false);
        let sealed = b.encode(true);
        assert!(sealed.len() < head.len());
        assert_eq!(RawBlock::decode(&head).unwrap(), b);
        assert_eq!(RawBlock::decode(&sealed).unwrap().series, b.series);
        let s3 = raw_series(&sealed, 3).unwrap().unwrap();
        assert_eq!(s3.len(), 41);
        assert_eq!(s3[1], (8000, 0.5));
        assert!(s3.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(raw_series(&head, 1).unwrap().unwrap().len(), 40);
        assert_eq!(raw_series(&head, 2).unwrap(), None);
    }

    #[test]
    fn resumed_head_chunks_append_like_the_original() {
        let mut b = RawBlock::default();
        b.insert(0, 10, 1.25).unwrap();
        b.insert(0, 25, 1.5).unwrap();
        let mut resumed = RawBlock::decode(&b.encode(false)).unwrap();
        for blk in [&mut b, &mut resumed] {
            blk.insert(0, 40, 1.75).unwrap();
            blk.insert(0, 55, f64::NAN).unwrap();
        }
        assert_eq!(b.encode(true), resumed.encode(true));
    }

    proptest::proptest! {
        #[test]
        fn appending_in_place_equals_decoding_and_inserting(
            batches in proptest::collection::vec(proptest::collection::vec((0u32..8, proptest::num::f64::ANY), 0..6), 1..30),
        ) {
            let (mut bytes, mut model) = (None::<Vec<u8>>, RawBlock::default());
            for (i, points) in batches.iter().enumerate() {
                let ts = 1000 + i as u64 * 15_000;
                bytes = Some(append_to_head(bytes.as_deref(), ts, points).unwrap().unwrap().0);
                let mut sorted = points.clone();
                sorted.sort_by_key(|p| p.0);
                for (id, v) in sorted {
                    model.insert(id, ts, v).unwrap();
                }
            }
            let got = bytes.unwrap();
            proptest::prop_assert_eq!(RawBlock::decode(&got).unwrap().encode(true), model.encode(true));
            // an older sample is left to the re-encoding path
            if let Some((id, _)) = model.series.iter().find(|(_, c)| !c.is_empty()) {
                proptest::prop_assert_eq!(append_to_head(Some(&got), 0, &[(*id, 1.0)]).unwrap(), None);
            }
        }
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let good = {
            let mut b = RawBlock::default();
            b.insert(0, 10, 1.0).unwrap();
            b.encode(false)
        };
        for cut in 0..good.len() {
            assert!(RawBlock::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_rollup(&good).is_err());
    }
}
