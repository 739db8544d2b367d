//! Operation histories: every client operation recorded with its invocation and completion
//! time and outcome (`ok`, `fail` = certainly not applied, `info` = unknown), as JSON lines.

use serde::{Deserialize, Serialize};

/// The register operations of the settings workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Op {
    /// Linearizable read; the result is `(revision, value)`.
    Read,
    /// Unconditional write of `value`; the result is the new revision.
    Write {
        /// Value written.
        value: u32,
    },
    /// Compare-and-set: write `value` if the revision is `expected`; the result is the new
    /// revision (ok) or a refusal (fail).
    Cas {
        /// Expected revision.
        expected: u64,
        /// Value written.
        value: u32,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Took effect; `result` holds what it returned.
    Ok,
    /// Certainly did not take effect.
    Fail,
    /// May or may not have taken effect.
    Info,
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Client id.
    pub process: usize,
    /// Node that gave the final answer.
    pub node: usize,
    /// Tries, each on the next node (a try is repeated only when it certainly did not apply).
    #[serde(default = "one")]
    pub attempts: u32,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Invocation, µs since the start of the run.
    pub invoke_us: u64,
    /// Completion, µs since the start of the run.
    pub complete_us: u64,
    /// Outcome.
    pub outcome: Outcome,
    /// Read: `[revision, value]`; write/cas ok: `[new revision, value]`.
    pub result: Option<(u64, u32)>,
    /// Error text of fail/info outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn one() -> u32 {
    1
}

/// Writes a history as JSON lines.
pub fn write(path: &std::path::Path, records: &[Record]) -> anyhow::Result<()> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Reads a history written by [`write`].
pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<Record>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(anyhow::Error::from))
        .collect()
}
