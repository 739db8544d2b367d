//! Typed reads and writes inside a state-machine transaction (shared by the domains' `apply`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree};

use crate::{Error, codec};

/// The result type of transactional apply code.
pub(crate) type R<T> = ConflictableTransactionResult<T, Error>;

/// Aborts the transaction with `e` (a storage or format failure, never a refusal).
pub(crate) fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

/// Reads and decodes a value.
pub(crate) fn get<T: DeserializeOwned>(
    tx: &TransactionalTree,
    what: &'static str,
    key: &[u8],
) -> R<Option<T>> {
    match tx.get(key)? {
        None => Ok(None),
        Some(v) => codec::decode_value(what, &v).map(Some).map_err(abort),
    }
}

/// Encodes and writes a value.
pub(crate) fn put<T: Serialize>(
    tx: &TransactionalTree,
    what: &'static str,
    key: Vec<u8>,
    value: &T,
) -> R<()> {
    tx.insert(key, codec::encode_value(what, value).map_err(abort)?)?;
    Ok(())
}
