//! The write set of one apply run, shared by the domains' `apply`: reads see the run's own
//! writes first, then the data tree; the writes reach the tree as one atomic `sled::Batch`
//! (`state_machine::apply`, `apply_run`).
//!
//! Why not a sled transaction: a transaction's `insert` reads the old value of every key it
//! writes, and its commit copies the write set once more; the state machine has one writer, so
//! it needs none of a transaction's conflict handling, only the all-or-nothing commit that
//! `Tree::apply_batch` gives. Blind writes ([`Tx::insert`], [`Tx::remove`]) read nothing;
//! [`Tx::replace`] and [`Tx::take`] read the old value for callers that count bytes.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::IVec;

use crate::{Error, codec};

/// The result type of apply code (errors are storage or format failures, never refusals).
pub(crate) type R<T> = Result<T, Error>;

/// Pending writes over a tree (`None`: removed).
pub(crate) struct Tx<'a> {
    tree: &'a sled::Tree,
    writes: RefCell<HashMap<Vec<u8>, Option<IVec>>>,
}

impl<'a> Tx<'a> {
    /// An empty write set over `tree`.
    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        Tx { tree, writes: RefCell::new(HashMap::new()) }
    }

    /// The value of `key` as this write set leaves it.
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> R<Option<IVec>> {
        let key = key.as_ref();
        if let Some(pending) = self.writes.borrow().get(key) {
            return Ok(pending.clone());
        }
        Ok(self.tree.get(key)?)
    }

    /// Writes `value` under `key` (reads nothing).
    pub(crate) fn insert(&self, key: impl Into<Vec<u8>>, value: impl Into<IVec>) -> R<()> {
        self.writes.borrow_mut().insert(key.into(), Some(value.into()));
        Ok(())
    }

    /// Removes `key` (reads nothing).
    pub(crate) fn remove(&self, key: impl Into<Vec<u8>>) -> R<()> {
        self.writes.borrow_mut().insert(key.into(), None);
        Ok(())
    }

    /// Writes `value` under `key` and returns the value it replaces.
    pub(crate) fn replace(&self, key: Vec<u8>, value: impl Into<IVec>) -> R<Option<IVec>> {
        let old = self.get(&key)?;
        self.insert(key, value)?;
        Ok(old)
    }

    /// Removes `key` and returns the value it had.
    pub(crate) fn take(&self, key: Vec<u8>) -> R<Option<IVec>> {
        let old = self.get(&key)?;
        self.remove(key)?;
        Ok(old)
    }

    /// Keys written (or removed) so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.writes.borrow().len()
    }

    /// The writes as one batch for `Tree::apply_batch`.
    pub(crate) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes.into_inner() {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

/// Reads and decodes a value.
pub(crate) fn get<T: DeserializeOwned>(tx: &Tx<'_>, what: &'static str, key: &[u8]) -> R<Option<T>> {
    match tx.get(key)? {
        None => Ok(None),
        Some(v) => codec::decode_value(what, &v).map(Some),
    }
}

/// Encodes and writes a value.
pub(crate) fn put<T: Serialize>(tx: &Tx<'_>, what: &'static str, key: Vec<u8>, value: &T) -> R<()> {
    tx.insert(key, codec::encode_value(what, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_pending_writes_and_the_tree_changes_only_with_the_batch() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"a", b"1").unwrap();
        tree.insert(b"b", b"2").unwrap();
        let tx = Tx::new(&tree);
        assert_eq!(tx.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        tx.insert(b"a".to_vec(), b"10".to_vec()).unwrap();
        assert_eq!(tx.take(b"b".to_vec()).unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(tx.replace(b"c".to_vec(), b"3".to_vec()).unwrap(), None);
        assert_eq!(tx.get(b"a").unwrap().as_deref(), Some(&b"10"[..]));
        assert_eq!(tx.get(b"b").unwrap(), None);
        assert_eq!(tx.len(), 3);
        // nothing reached the tree yet
        assert_eq!(tree.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(tree.get(b"c").unwrap().is_none());
        tree.apply_batch(tx.into_batch()).unwrap();
        assert_eq!(tree.get(b"a").unwrap().as_deref(), Some(&b"10"[..]));
        assert!(tree.get(b"b").unwrap().is_none());
        assert_eq!(tree.get(b"c").unwrap().as_deref(), Some(&b"3"[..]));
    }
}
