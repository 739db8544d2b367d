//! Applying fleet commands to the state machine's write set of a run of entries (`txn::Tx`).
//!
//! Everything here is deterministic: it reads only the command and the trees, and time comes
//! from the proposer (`at_ms`, `received_at_ms`). Refusals are results, never errors: an error
//! here stops the node, so every value written is bounded below `MAX_VALUE_BYTES` by
//! construction (the hub bounds the inputs; telemetry blocks refuse samples past their budget).
//!
//! The write set does not scan, so commands that delete ranges (`DeleteAgent`, `Expire`) get
//! their key lists from [`prescan`], run on the tree just before their run (such a command
//! starts one). That is safe because `apply` is the only writer and runs serially.
//!
//! [`apply`] dispatches each command to its domain, one file each:
//! - `tokens`: enrollment tokens (create, revoke).
//! - `agents`: registration, deletion, token rotation, the pinned signing key.
//! - `ingest`: groups of telemetry batches and heartbeats (exactly-once by seq).
//! - `alerts`: alert firing and resolution, alert state, the rule set.
//! - `anomalies`: integrity anomalies (record, resolve).
//! - `retention`: expiry of old telemetry and sealing of idle heads.
//! - `replay`: the stored-items record of a group and the replay of head effects on restart.
//!
//! The audit log every domain appends to is the crate's `audit` module.

use super::keys;
use super::telemetry::{HeadsTx, Removal};
use super::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, Error, audit};

mod agents;
mod alerts;
mod anomalies;
mod ingest;
mod replay;
mod retention;
mod tokens;

pub use alerts::{default_rules, validate_rules};
pub use ingest::{DUPLICATE_WINDOW_MS, SEQ_WINDOW};
pub(crate) use replay::{replay, stored_bitmap};
pub use retention::EXPIRE_BATCH;

fn next_id(tx: &Tx<'_>, name: &str, tenant: &str) -> R<u64> {
    let key = keys::counter(name, tenant);
    let id = get::<u64>(tx, "counter", &key)?.unwrap_or(0) + 1;
    put(tx, "counter", key, &id)?;
    Ok(id)
}

fn rejected(r: FleetRejection) -> CommandResult {
    CommandResult::FleetRejected(r)
}

fn ok(r: FleetResult) -> CommandResult {
    CommandResult::Fleet(r)
}

/// What a range-deleting command will remove, found before its run.
#[derive(Debug, Default)]
pub(crate) struct Prescan {
    removals: Vec<Removal>,
}

fn uncounted(key: sled::IVec) -> Removal {
    Removal { key, counted: None }
}

/// Whether [`prescan`] reads anything for `cmd`. Such a command must be prescanned against
/// the state every earlier entry left, so it starts a new apply run.
pub(crate) fn needs_prescan(cmd: &FleetCommand) -> bool {
    matches!(cmd, FleetCommand::DeleteAgent(_) | FleetCommand::Expire { .. })
}

/// Collects what `cmd` deletes by range (nothing for other commands).
pub(crate) fn prescan(data: &sled::Tree, cmd: &FleetCommand) -> Result<Prescan, Error> {
    let mut pre = Prescan::default();
    if !needs_prescan(cmd) {
        return Ok(pre);
    }
    let found = &mut pre.removals;
    match cmd {
        FleetCommand::DeleteAgent(a) => agents::prescan_delete(data, a, found)?,
        FleetCommand::Expire { at_ms } => retention::prescan_expire(data, *at_ms, found)?,
        _ => {}
    }
    Ok(pre)
}

/// Applies one fleet command.
pub(crate) fn apply(tx: &Tx<'_>, cmd: &FleetCommand, pre: &Prescan, heads: &HeadsTx<'_>) -> R<CommandResult> {
    match cmd {
        FleetCommand::CreateEnrollmentToken(t) => tokens::create(tx, t),
        FleetCommand::CreateEnrollmentTokenBy { token, actor } => tokens::create_by(tx, token, actor),
        FleetCommand::RevokeEnrollmentToken { tenant, id } => tokens::revoke(tx, tenant, id),
        FleetCommand::Register(r) => agents::register(tx, r),
        FleetCommand::Group(items) => ingest::group(tx, heads, items),
        FleetCommand::DeleteAgent(a) => agents::delete(tx, a, pre, heads),
        FleetCommand::RotateToken { action, token_sha256 } => agents::rotate_token(tx, action, token_sha256),
        FleetCommand::ClearSigningKey(a) => agents::clear_signing_key(tx, a),
        FleetCommand::FireOffline(firings) => alerts::fire_offline(tx, firings),
        FleetCommand::SetAlertState { tenant, id, state, actor, at_ms } => {
            alerts::set_state(tx, tenant, *id, *state, actor, *at_ms)
        }
        FleetCommand::PutRules { tenant, expected_revision, rules, at_ms } => {
            alerts::put_rules(tx, tenant, *expected_revision, rules, *at_ms, "admin")
        }
        FleetCommand::PutRulesBy { tenant, expected_revision, rules, at_ms, actor } => {
            alerts::put_rules(tx, tenant, *expected_revision, rules, *at_ms, actor)
        }
        FleetCommand::Expire { at_ms } => retention::expire(tx, heads, pre, *at_ms),
        FleetCommand::RecordAnomalies { tenant, anomalies, at_ms } => {
            anomalies::record(tx, tenant, anomalies, *at_ms)
        }
        FleetCommand::ResolveAnomaly { tenant, id, actor, at_ms } => {
            anomalies::resolve(tx, tenant, *id, actor, *at_ms)
        }
        FleetCommand::RecordAudit { tenant, at_ms, event_type, actor, details } => {
            audit::append(tx, tenant, *at_ms, event_type, actor, None, details)?;
            Ok(CommandResult::Ok)
        }
    }
}
