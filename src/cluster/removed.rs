//! A node removed from its cluster knows it: the leader tells it after the membership change
//! (`POST /internal/v1/removed`), and the node writes a marker file into its data directory,
//! stops its Raft (a removed node does not learn the new configuration, so it would campaign
//! for ever with a rising term), reports "removed" from `/ready`, and refuses to start again
//! on that data directory. To serve again it needs an empty data directory and `--join`,
//! because its old log would be refused by the join check anyway.

use std::path::Path;

/// The marker's file name in the data directory.
const MARKER: &str = "removed";

/// Writes the marker: when and by whom the node was removed.
pub fn mark(dir: &Path, by: u64, at_ms: u64) -> std::io::Result<()> {
    let text = format!("removed from the cluster by node {by} at unix ms {at_ms}\n");
    let tmp = dir.join(format!(".{MARKER}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(MARKER))
}

/// The marker's text, if the node was removed.
pub fn marker(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(MARKER)).ok().map(|t| t.trim().to_string())
}

/// Refuses to start on the data directory of a removed node.
pub fn refuse_start(dir: &Path) -> anyhow::Result<()> {
    match marker(dir) {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "this node was {why}; its data directory {} no longer belongs to a cluster: \
             empty it and start with --join to add the node again",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_directory_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        refuse_start(dir.path()).unwrap();
        mark(dir.path(), 7, 1_000).unwrap();
        let err = refuse_start(dir.path()).unwrap_err().to_string();
        assert!(err.contains("removed from the cluster by node 7"), "{err}");
        assert!(err.contains("--join"), "{err}");
    }
}
