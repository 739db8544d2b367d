//! The cluster version: one number that says which formats and log features the whole cluster
//! may use, replicated in the state machine and raised only when every member can run it.
//!
//! Each build supports a range of cluster versions ([`MIN_CLUSTER_VERSION`]..=[`CLUSTER_VERSION`])
//! and announces it over gossip with the formats it reads and writes ([`Formats`]). The
//! cluster's *active* version is stored under [`KEY`] in the state machine (so it is in
//! snapshots too) and changed only by `Command::SetClusterVersion`, which a leader proposes when
//! every member announces support for the new version (automatically, or on an operator's
//! `finalize-upgrade`). Until then the cluster keeps writing what its oldest member reads, so a
//! member can still be rolled back to the older build.
//!
//! Version history:
//! - **0**: a cluster created before cluster versions existed (nothing recorded). Log features
//!   are used only while every member announces them (the rule of those builds).
//! - **1**: every log feature of [`crate::LOG_FEATURES`] is on whoever is down, and the data
//!   directory's format is 2 (a build that knows no cluster version refuses it).
//!
//! A new format or log feature that older builds cannot read gets a new cluster version here,
//! is written only once that version is active, and stays in the table above.

pub use monsys_proto::cluster::{FormatRange, Formats};

/// The highest cluster version this build runs.
pub const CLUSTER_VERSION: u32 = 1;
/// The lowest active cluster version this build runs in (it reads everything written at it).
pub const MIN_CLUSTER_VERSION: u32 = 0;
/// The version of a cluster that never recorded one.
pub const UNVERSIONED: u32 = 0;
/// Key of the active version in the state machine's data tree.
pub(crate) const KEY: &[u8] = b"cluster/active_version";

/// Whether this build can run in a cluster whose active version is `active`.
pub fn supports(active: u32) -> bool {
    (MIN_CLUSTER_VERSION..=CLUSTER_VERSION).contains(&active)
}

/// Whether log feature `feature` is on in a cluster at `active`, whoever is down: from
/// version 1, every feature this build announces.
pub fn feature_finalized(active: u32, feature: &str) -> bool {
    active >= 1 && crate::LOG_FEATURES.contains(&feature)
}

/// The data-directory format a node writes once its cluster is at `active` (see
/// `data_format`): raising it keeps builds that cannot run the version off the directory.
pub fn data_format_for(active: u32) -> u32 {
    if active >= 1 { 2 } else { 1 }
}

/// The snapshot format a leader writes while its cluster is at `active`: one every member of
/// such a cluster reads (feed it to `StateMachineStore::snapshot_format`). Format 1 at every
/// version so far; a new format gets a new cluster version and a row here.
pub fn snapshot_format_for(_active: u32) -> crate::snapshot::SnapshotFormat {
    crate::snapshot::SnapshotFormat::V1
}

/// What this build reads and writes.
pub fn formats() -> Formats {
    let one = FormatRange { min: 1, max: 1 };
    Formats {
        cluster: FormatRange { min: MIN_CLUSTER_VERSION, max: CLUSTER_VERSION },
        data_dir: FormatRange { min: 1, max: crate::data_format::DATA_FORMAT },
        log_entry: FormatRange { min: 1, max: u32::from(crate::codec::FORMAT_VERSION) },
        snapshot: FormatRange { min: 1, max: u32::from(crate::snapshot::SnapshotFormat::NEWEST.version()) },
        internal_rpc: one,
        agent_protocol: FormatRange { min: 1, max: monsys_proto::agent::PROTOCOL_VERSION },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_runs_its_own_range_only() {
        assert!(supports(UNVERSIONED));
        assert!(supports(CLUSTER_VERSION));
        assert!(!supports(CLUSTER_VERSION + 1));
    }

    #[test]
    fn features_stay_on_from_version_one_only() {
        assert!(!feature_finalized(0, crate::LOG_FEATURE_SETTINGS_AUDIT));
        for f in crate::LOG_FEATURES {
            assert!(feature_finalized(1, f), "{f}");
        }
        assert!(!feature_finalized(1, "a-feature-of-a-newer-build"));
    }

    #[test]
    fn the_data_format_follows_the_version() {
        assert_eq!(data_format_for(0), 1);
        assert_eq!(data_format_for(1), 2);
        assert_eq!(data_format_for(CLUSTER_VERSION), crate::data_format::DATA_FORMAT);
    }

    #[test]
    fn announced_formats_parse_back() {
        let f = formats();
        assert_eq!(f.announce(), "cluster=0-1,data=1-2,log=1-1,snapshot=1-1,rpc=1-1,agent=1-1");
        for active in MIN_CLUSTER_VERSION..=CLUSTER_VERSION {
            let written = snapshot_format_for(active).version();
            assert!(u32::from(written) <= f.snapshot.max, "a build at {active} reads what it writes");
        }
        assert_eq!(Formats::parse(&f.announce()), Some(f));
        assert_eq!(Formats::parse("cluster=0-1"), None);
        assert_eq!(Formats::parse("cluster=2-1,data=1-2,log=1-1,snapshot=1-1,rpc=1-1,agent=1-1"), None);
        assert_eq!(Formats::parse(""), None);
    }

    #[tokio::test]
    async fn the_version_only_rises_and_raises_the_data_format() {
        use crate::state_machine::test_support::{apply_commands, reopen};
        use crate::{Command, CommandResult};
        let dir = tempfile::tempdir().unwrap();
        let marker = || std::fs::read_to_string(dir.path().join("FORMAT")).unwrap();
        let mut sm = reopen(dir.path()).await;
        assert_eq!(sm.reader().cluster_version().unwrap(), UNVERSIONED);
        assert_eq!(marker(), "monsys data format 1\n");

        let results = apply_commands(
            &mut sm,
            vec![Command::SetClusterVersion { version: 1 }, Command::SetClusterVersion { version: 0 }],
        )
        .await;
        assert_eq!(results[0], CommandResult::ClusterVersion { active: 1, previous: 0 });
        assert_eq!(results[1], CommandResult::ClusterVersion { active: 1, previous: 1 }, "never lowered");
        assert_eq!(sm.reader().cluster_version().unwrap(), 1);
        assert_eq!(marker(), "monsys data format 2\n", "builds without cluster versions now refuse it");
        drop(sm);
        assert_eq!(reopen(dir.path()).await.reader().cluster_version().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_version_this_build_cannot_run_stops_apply_and_open() {
        use openraft::storage::RaftStateMachine;
        use openraft::testing::log_id;
        use openraft::{Entry, EntryPayload};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = crate::state_machine::test_support::reopen(dir.path()).await;
        let too_new = CLUSTER_VERSION + 1;
        let entry = Entry::<crate::TypeConfig> {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(crate::Command::SetClusterVersion { version: too_new }),
        };
        let e = sm.apply(vec![entry]).await.unwrap_err();
        assert!(e.to_string().contains(&format!("cluster version {too_new}")), "{e}");
        assert_eq!(sm.reader().cluster_version().unwrap(), UNVERSIONED, "nothing applied");

        // a directory whose state names a version this build cannot run is refused on open
        drop(sm);
        {
            let db = sled::open(dir.path().join("sled")).unwrap();
            let data = db.open_tree("sm_data").unwrap();
            data.insert(KEY, crate::codec::encode_value("v", &too_new).unwrap()).unwrap();
            db.flush().unwrap();
        }
        let Err(e) = crate::open(dir.path(), &crate::Options::default()).await else {
            panic!("opened a store of a newer cluster version")
        };
        assert!(matches!(e, crate::Error::ClusterVersion { active, .. } if active == too_new), "{e}");
    }
}
