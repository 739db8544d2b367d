//! The apply engine: entries are applied in runs, each run's effects, `last_applied`, membership
//! and stored-item records written as one `sled::Batch`; commands are dispatched to the domains
//! (fleet, identity, settings) against the run's write set (`txn::Tx`).
//!
//! A command whose domain must scan the state first (a prescan) starts a new run, so the scan
//! sees every earlier entry's writes.

use openraft::{Entry, EntryPayload, LogId};

use super::settings::put_settings;
use super::{KEY_ADMIN_TOKEN, KEY_LAST_APPLIED, KEY_MEMBERSHIP, Membership, stored_key};
use crate::fleet::telemetry::{HeadsTx, SharedHeads};
use crate::txn::Tx;
use crate::{Command, CommandResult, Error, NodeId, Rejection, TypeConfig, codec};
use crate::{cluster_version, fleet};

/// Most entries applied in one batch. A sled batch costs a few KiB of log writes whatever its
/// size, so one per entry made the state machine the write bottleneck; the bound keeps a
/// run's write set (held in memory) small.
const MAX_RUN: usize = 64;

/// Whether applying `entry` needs a prescan of the state before it (so it starts a run).
fn needs_prescan(entry: &Entry<TypeConfig>) -> bool {
    match &entry.payload {
        EntryPayload::Normal(Command::Fleet(f)) => fleet::needs_prescan(f),
        EntryPayload::Normal(Command::Identity(i)) => crate::identity::needs_prescan(i),
        _ => false,
    }
}

/// What the domains found by scanning before an entry's run.
#[derive(Default)]
struct Prescans {
    fleet: fleet::Prescan,
    identity: crate::identity::Prescan,
}

/// Applies one command to the run's write set.
fn apply_command(
    data: &Tx<'_>,
    cmd: &Command,
    pre: &Prescans,
    heads: &HeadsTx<'_>,
) -> Result<CommandResult, Error> {
    match cmd {
        Command::Batch(cmds) => {
            let none = Prescans::default();
            let mut results = Vec::with_capacity(cmds.len());
            for c in cmds {
                results.push(if c.batchable() {
                    apply_command(data, c, &none, heads)?
                } else {
                    CommandResult::Rejected(Rejection::Invalid("this command cannot be batched".into()))
                });
            }
            Ok(CommandResult::Batch(results))
        }
        Command::Fleet(f) => fleet::apply(data, f, &pre.fleet, heads),
        Command::Identity(i) => crate::identity::apply(data, i, &pre.identity),
        Command::Noop => Ok(CommandResult::Ok),
        Command::PutSettings { tenant, expected_revision, settings, at_ms } => {
            put_settings(data, tenant, *expected_revision, settings, *at_ms, None)
        }
        Command::PutSettingsAudited { tenant, expected_revision, settings, at_ms, actor } => {
            put_settings(data, tenant, *expected_revision, settings, *at_ms, Some(actor))
        }
        Command::SetClusterVersion { version } => set_cluster_version(data, *version),
        Command::InitAdminToken { sha256 } => {
            if data.get(KEY_ADMIN_TOKEN)?.is_some() {
                return Ok(CommandResult::Rejected(Rejection::AlreadyInitialized));
            }
            let value = codec::encode_value("admin token", sha256)?;
            data.insert(KEY_ADMIN_TOKEN, value)?;
            Ok(CommandResult::Ok)
        }
    }
}

/// Raises the active cluster version to `version` (never lowers it). A version this build
/// cannot run stops the node: applying it would mean writing formats it does not know.
fn set_cluster_version(data: &Tx<'_>, version: u32) -> Result<CommandResult, Error> {
    let previous = crate::txn::get(data, "cluster version", cluster_version::KEY)?
        .unwrap_or(cluster_version::UNVERSIONED);
    if version <= previous {
        return Ok(CommandResult::ClusterVersion { active: previous, previous });
    }
    if !cluster_version::supports(version) {
        return Err(Error::ClusterVersion {
            active: version,
            min: cluster_version::MIN_CLUSTER_VERSION,
            max: cluster_version::CLUSTER_VERSION,
        });
    }
    crate::txn::put(data, "cluster version", cluster_version::KEY.to_vec(), &version)?;
    tracing::info!(version, previous, "cluster version raised");
    Ok(CommandResult::ClusterVersion { active: version, previous })
}

/// Applies `entries` in runs (see [`MAX_RUN`]); a run that fails stops the rest and is
/// reported with its last entry's id.
pub(super) fn apply_entries(
    data: &sled::Tree,
    heads: &SharedHeads,
    entries: &[Entry<TypeConfig>],
) -> Result<Vec<CommandResult>, (LogId<NodeId>, Error)> {
    let mut results = Vec::with_capacity(entries.len());
    let mut rest = entries;
    while !rest.is_empty() {
        let len = 1 + rest[1..].iter().take(MAX_RUN - 1).take_while(|e| !needs_prescan(e)).count();
        let (run, tail) = rest.split_at(len);
        let last = run[len - 1].log_id;
        results.extend(apply_run(data, heads, run).map_err(|e| (last, e))?);
        rest = tail;
    }
    Ok(results)
}

/// Applies a run of entries as one batch (see [`MAX_RUN`]); only the first may need a
/// prescan, which reads the state every earlier run left. On an error nothing of the run
/// is written and no head changes.
fn apply_run(
    data: &sled::Tree,
    heads: &SharedHeads,
    run: &[Entry<TypeConfig>],
) -> Result<Vec<CommandResult>, Error> {
    let Some(last) = run.last() else { return Ok(Vec::new()) };
    // readers take the read lock for a whole query, so they never see a sealed block and
    // the head it came from (or neither)
    let mut heads = heads.write().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
    let staged = HeadsTx::new(&heads);
    let applied = codec::encode_value("last applied", &Some(last.log_id))?;
    // the run's last membership entry is the one in effect after it
    let membership = run
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(Membership::new(Some(e.log_id), m.clone())),
            _ => None,
        })
        .map(|m| codec::encode_value("membership", &m))
        .transpose()?;
    let mut first_pre = Prescans::default();
    match &run[0].payload {
        EntryPayload::Normal(Command::Fleet(f)) => first_pre.fleet = fleet::prescan(data, f)?,
        EntryPayload::Normal(Command::Identity(i)) => first_pre.identity = crate::identity::prescan(data, i)?,
        _ => {}
    }
    let no_pre = Prescans::default();
    let tx = Tx::new(data);
    tx.insert(KEY_LAST_APPLIED, applied)?;
    if let Some(m) = membership {
        tx.insert(KEY_MEMBERSHIP, m)?;
    }
    let mut results = Vec::with_capacity(run.len());
    for (i, entry) in run.iter().enumerate() {
        let pre = if i == 0 { &first_pre } else { &no_pre };
        let result = match &entry.payload {
            EntryPayload::Normal(cmd) => apply_command(&tx, cmd, pre, &staged)?,
            EntryPayload::Blank | EntryPayload::Membership(_) => CommandResult::Ok,
        };
        if let CommandResult::Fleet(fleet::FleetResult::Group(outcomes)) = &result {
            tx.insert(stored_key(entry.log_id.index), fleet::stored_bitmap(outcomes))?;
        }
        results.push(result);
    }
    data.apply_batch(tx.into_batch())?;
    staged.finish().publish(&mut heads);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use crate::state_machine::test_support::*;
    use crate::{Command, CommandResult, Options, Rejection, storage};

    #[tokio::test]
    async fn a_batch_applies_in_order_with_one_result_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let batch = Command::Batch(vec![
            put("t1", Some(0), refresh(30), 1),
            put("t1", Some(0), refresh(40), 2),
            put("t1", Some(1), refresh(50), 3),
            Command::Noop,
            Command::Batch(vec![]),
        ]);
        let results = apply_commands(&mut sm, vec![batch]).await;
        let CommandResult::Batch(r) = &results[0] else { panic!("{results:?}") };
        assert_eq!(r.len(), 5);
        assert!(matches!(&r[0], CommandResult::Settings(d) if d.revision == 1));
        assert_eq!(r[1], CommandResult::Rejected(Rejection::RevisionMismatch { current: 1 }));
        assert!(matches!(&r[2], CommandResult::Settings(d) if d.revision == 2 && d.settings == refresh(50)));
        assert!(matches!(&r[3], CommandResult::Rejected(Rejection::Invalid(_))), "not batchable");
        assert!(matches!(&r[4], CommandResult::Rejected(Rejection::Invalid(_))), "no nesting");
        assert_eq!(sm.reader().settings("t1").unwrap().revision, 2);
    }

    #[tokio::test]
    async fn admin_token_initialises_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let results = apply_commands(
            &mut sm,
            vec![
                Command::Noop,
                Command::InitAdminToken { sha256: [1; 32] },
                Command::InitAdminToken { sha256: [2; 32] },
            ],
        )
        .await;
        assert_eq!(
            results,
            vec![
                CommandResult::Ok,
                CommandResult::Ok,
                CommandResult::Rejected(Rejection::AlreadyInitialized)
            ]
        );
        assert_eq!(sm.reader().admin_token_sha256().unwrap(), Some([1; 32]));
    }
}
