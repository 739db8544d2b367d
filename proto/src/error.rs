//! The JSON error body: `{"error", "code", "details"}`.
//!
//! `error` is a human sentence, `code` a stable machine string (documented in the OpenAPI
//! document), `details` structured context (field errors, leader hints, retry delays) or `null`; every
//! body carries all three keys.

use serde::{Deserialize, Serialize};

/// Body of every non-2xx response of the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable message.
    pub error: String,
    /// Stable machine-readable code, e.g. `revision_mismatch`.
    pub code: String,
    /// Structured context, `null` when there is none.
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}
