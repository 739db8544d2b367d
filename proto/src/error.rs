//! The JSON error body: `{"error", "code", "details"}`.
//!
//! `error` is a human sentence, `code` a stable machine string (documented in the OpenAPI
//! document), `details` optional structured context (field errors, leader hints, retry delays).

use serde::{Deserialize, Serialize};

/// Body of every non-2xx response of the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable message.
    pub error: String,
    /// Stable machine-readable code, e.g. `revision_mismatch`.
    pub code: String,
    /// Optional structured context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
