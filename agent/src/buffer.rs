//! The on-disk delivery buffer: every signed batch is appended here (and fsynced) before it is
//! sent, and removed only once a hub took it, so batches survive hub outages and agent restarts
//! and are replayed in `seq` order.
//!
//! Format: `buffer.log` is a sequence of frames `len: u32 LE | crc32: u32 LE | payload`, payload
//! = `seq: u64 LE | sig_len: u16 LE | signature | body`. `buffer.head` holds the offset of the
//! first undelivered frame. A torn tail (crash mid-append) fails its length or checksum and is
//! cut off at open. When the undelivered bytes exceed the cap, the oldest frames are dropped
//! and counted in `buffer.dropped`. The log is compacted when the delivered prefix is over half
//! of it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One buffered batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The batch's seq.
    pub seq: u64,
    /// The `X-Monsys-Signature` value.
    pub signature: String,
    /// The exact body.
    pub body: Vec<u8>,
}

/// The buffer.
pub struct Buffer {
    dir: PathBuf,
    log: File,
    entries: std::collections::VecDeque<(u64, Entry)>,
    head: u64,
    end: u64,
    max_bytes: u64,
    dropped: u64,
}

fn encode(e: &Entry) -> Vec<u8> {
    let mut payload = Vec::with_capacity(10 + e.signature.len() + e.body.len());
    payload.extend(e.seq.to_le_bytes());
    payload.extend((e.signature.len() as u16).to_le_bytes());
    payload.extend(e.signature.as_bytes());
    payload.extend(&e.body);
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend((payload.len() as u32).to_le_bytes());
    frame.extend(crc32fast::hash(&payload).to_le_bytes());
    frame.extend(payload);
    frame
}

fn decode(payload: &[u8]) -> Option<Entry> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sig_len = u16::from_le_bytes(payload.get(8..10)?.try_into().ok()?) as usize;
    let signature = String::from_utf8(payload.get(10..10 + sig_len)?.to_vec()).ok()?;
    Some(Entry { seq, signature, body: payload.get(10 + sig_len..)?.to_vec() })
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn write_u64(path: &Path, v: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(v.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, cutting a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Buffer> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("buffer.log");
        let mut log = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let head = read_u64(&dir.join("buffer.head"));
        let mut data = Vec::new();
        log.seek(SeekFrom::Start(0))?;
        log.read_to_end(&mut data)?;
        let mut entries = std::collections::VecDeque::new();
        let mut pos = 0usize;
        while pos + 8 <= data.len() {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
            let Some(payload) = data.get(pos + 8..pos + 8 + len) else { break };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let Some(e) = decode(payload) else { break };
            if pos as u64 >= head {
                entries.push_back((pos as u64, e));
            }
            pos += 8 + len;
        }
        if pos < data.len() {
            tracing::warn!(cut = data.len() - pos, "buffer: torn tail cut after a crash");
            log.set_len(pos as u64)?;
            log.sync_all()?;
        }
        let dropped = read_u64(&dir.join("buffer.dropped"));
        Ok(Buffer { dir: dir.to_path_buf(), log, entries, head, end: pos as u64, max_bytes, dropped })
    }

    /// Appends a batch durably; drops the oldest batches beyond the cap.
    pub fn push(&mut self, e: Entry) -> std::io::Result<()> {
        let frame = encode(&e);
        self.log.write_all(&frame)?;
        self.log.sync_data()?;
        self.entries.push_back((self.end, e));
        self.end += frame.len() as u64;
        let mut dropped = 0;
        while self.end - self.front_offset() > self.max_bytes && self.entries.len() > 1 {
            self.entries.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            self.dropped += dropped;
            tracing::warn!(dropped, total = self.dropped, "buffer full: oldest batches dropped");
            write_u64(&self.dir.join("buffer.dropped"), self.dropped)?;
            self.set_head(self.front_offset())?;
        }
        Ok(())
    }

    fn front_offset(&self) -> u64 {
        self.entries.front().map_or(self.end, |(o, _)| *o)
    }

    /// The oldest undelivered batch.
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front().map(|(_, e)| e)
    }

    /// Marks the oldest batch delivered (or dropped as undeliverable).
    pub fn pop(&mut self) -> std::io::Result<()> {
        self.entries.pop_front();
        self.set_head(self.front_offset())?;
        if self.head > 0 && self.head * 2 > self.end {
            self.compact()?;
        }
        Ok(())
    }

    fn set_head(&mut self, head: u64) -> std::io::Result<()> {
        self.head = head;
        write_u64(&self.dir.join("buffer.head"), head)
    }

    /// Rewrites the log without its delivered prefix.
    fn compact(&mut self) -> std::io::Result<()> {
        let path = self.dir.join("buffer.log");
        let tmp = self.dir.join("buffer.log.tmp");
        let mut out = File::create(&tmp)?;
        let mut offset = 0;
        let mut moved = std::collections::VecDeque::new();
        for (_, e) in self.entries.drain(..) {
            let frame = encode(&e);
            out.write_all(&frame)?;
            moved.push_back((offset, e));
            offset += frame.len() as u64;
        }
        out.sync_all()?;
        // head first: a crash between the two renames leaves head=0 over the old log, which
        // only re-sends delivered batches (the hub answers them as duplicates)
        write_u64(&self.dir.join("buffer.head"), 0)?;
        std::fs::rename(&tmp, &path)?;
        self.log = OpenOptions::new().read(true).append(true).open(&path)?;
        self.entries = moved;
        self.head = 0;
        self.end = offset;
        Ok(())
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Batches dropped because the buffer was full, over the agent's life.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, size: usize) -> Entry {
        Entry { seq, signature: format!("sig{seq}"), body: vec![b'x'; size] }
    }

    #[test]
    fn survives_reopen_in_order_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(dir.path(), 1 << 20).unwrap();
            for s in 1..=5 {
                b.push(e(s, 100)).unwrap();
            }
            b.pop().unwrap();
        }
        // a crash mid-append leaves half a frame
        let mut f = OpenOptions::new().append(true).open(dir.path().join("buffer.log")).unwrap();
        f.write_all(&encode(&e(6, 100))[..50]).unwrap();
        let mut b = Buffer::open(dir.path(), 1 << 20).unwrap();
        let seqs: Vec<u64> = std::iter::from_fn(|| {
            let s = b.front()?.seq;
            b.pop().unwrap();
            Some(s)
        })
        .collect();
        assert_eq!(seqs, vec![2, 3, 4, 5]);
        b.push(e(7, 10)).unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.front().unwrap(), &e(7, 10));
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Buffer::open(dir.path(), 1000).unwrap();
        for s in 1..=20 {
            b.push(e(s, 200)).unwrap();
        }
        assert!(b.len() <= 5, "{}", b.len());
        assert_eq!(b.dropped() + b.len() as u64, 20);
        assert_eq!(b.front().unwrap().seq, 21 - b.len() as u64, "the newest are kept");
        let dropped = b.dropped();
        drop(b);
        assert_eq!(Buffer::open(dir.path(), 1000).unwrap().dropped(), dropped);
    }
}
