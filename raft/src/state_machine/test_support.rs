//! Test helpers of the state machine, shared with the domains' tests: applying commands as
//! log entries, reopening a store, a fleet with one agent and its telemetry.

use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};

use super::StateMachineStore;
use crate::record::settings::SettingsV1 as Settings;
use crate::{Command, CommandResult, Options, TypeConfig, storage};

/// Applies `cmds` as entries with consecutive indexes after the last applied one.
pub(crate) async fn apply_commands(sm: &mut StateMachineStore, cmds: Vec<Command>) -> Vec<CommandResult> {
    let next = sm.reader().last_applied().unwrap().map_or(1, |l| l.index + 1);
    let entries = cmds
        .into_iter()
        .zip(next..)
        .map(|(cmd, i)| Entry::<TypeConfig> { log_id: log_id(1, 1, i), payload: EntryPayload::Normal(cmd) });
    sm.apply(entries.collect::<Vec<_>>()).await.unwrap()
}

/// A `PutSettings` command.
pub(crate) fn put(tenant: &str, expected_revision: Option<u64>, settings: Settings, at_ms: u64) -> Command {
    Command::PutSettings { tenant: tenant.into(), expected_revision, settings, at_ms }
}

/// Opens the store in `dir` again (the dropped store released it).
pub(crate) async fn reopen(dir: &std::path::Path) -> StateMachineStore {
    storage::open(dir, &Options::default()).await.unwrap_or_else(|e| panic!("reopen: {e}")).sm
}

/// Default settings with the given refresh interval.
pub(crate) fn refresh(secs: u32) -> Settings {
    Settings { refresh_interval_secs: secs, ..Settings::default() }
}

/// Appends `cmds` to the log tree (as Raft would) and applies them.
pub(crate) async fn log_and_apply(sm: &mut StateMachineStore, cmds: Vec<Command>) -> Vec<CommandResult> {
    let next = sm.reader().last_applied().unwrap().map_or(1, |l| l.index + 1);
    let entries: Vec<Entry<TypeConfig>> = cmds
        .into_iter()
        .zip(next..)
        .map(|(cmd, i)| Entry { log_id: log_id(1, 1, i), payload: EntryPayload::Normal(cmd) })
        .collect();
    sm.log.append_durably(entries.clone()).await.unwrap();
    sm.apply(entries).await.unwrap()
}

/// Enrollment token `et` of tenant `t` (hash `[1; 32]`, no limits).
pub(crate) fn enrollment_token() -> crate::fleet::EnrollmentToken {
    crate::fleet::EnrollmentToken {
        id: "et".into(),
        tenant: "t".into(),
        name: "x".into(),
        sha256: [1; 32],
        created_at_ms: 1,
        expires_at_ms: None,
        max_uses: None,
        uses: 0,
        revoked: false,
    }
}

/// An enrollment token and the registration of agent `a1` of tenant `t` with it.
pub(crate) fn fleet_setup() -> Vec<Command> {
    use crate::fleet::{FleetCommand, Registration};
    let token = enrollment_token();
    let reg = Registration {
        enrollment_sha256: [1; 32],
        new_agent_id: "a1".into(),
        machine_id: "m1".into(),
        hostname: "h".into(),
        pubkey: None,
        token_sha256: [2; 32],
        agent_version: "1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        at_ms: 1,
    };
    vec![
        Command::Fleet(FleetCommand::CreateEnrollmentToken(token)),
        Command::Fleet(FleetCommand::Register(reg)),
    ]
}

/// A group of one batch of agent `a1`: `seq`, collected at `at_ms`, a few series.
pub(crate) fn telemetry(seq: u64, at_ms: u64) -> Command {
    telemetry_with(seq, at_ms, (0..40).map(|s| (format!("s{s}"), (seq * 31 + s) as f64 / 8.0)).collect())
}

/// Like [`telemetry`], with the given samples.
pub(crate) fn telemetry_with(seq: u64, at_ms: u64, samples: Vec<(String, f64)>) -> Command {
    use crate::fleet::{FleetCommand, GroupItem, IngestItem};
    Command::Fleet(FleetCommand::Group(
        vec![GroupItem::Batch(Box::new(IngestItem {
            tenant: "t".into(),
            agent_id: "a1".into(),
            seq,
            body_sha256: [seq as u8; 32],
            collected_at_ms: at_ms,
            received_at_ms: at_ms,
            verified_with: None,
            agent_version: "1".into(),
            samples,
            inventory_json: None,
            processes_json: None,
            agent_alerts: vec![],
            fire: vec![],
            clear: vec![],
        }))]
        .into(),
    ))
}
