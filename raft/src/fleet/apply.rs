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
//! Exactly-once ingest: an agent's batch is stored only if its `seq` is above the highest stored
//! one. A lower `seq` is looked up in the agent's seq window (the last [`SEQ_WINDOW`] seqs with
//! their body hash): same body within [`DUPLICATE_WINDOW_MS`] → `Duplicate` (a retry after a lost
//! ack), other body → `SeqConflict`, otherwise → `Replay`. Both refusals write an audit event.

use std::collections::BTreeMap;

use monsys_proto::agent::Severity;

use monsys_tsdb::series::{Mode, WINDOW_MS};

use super::keys;
use super::telemetry::{self, ByteDeltas, HeadsTx, Removal};
use super::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, Error, codec};

/// Seqs remembered per agent for duplicate detection.
pub const SEQ_WINDOW: u64 = 1024;
/// How long after its commit a batch's retry is still answered as a duplicate.
pub const DUPLICATE_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// At most one `unsigned_payload` audit event per agent per this interval.
const UNSIGNED_AUDIT_INTERVAL_MS: u64 = 3600 * 1000;
/// Most open alerts per agent (further firings are dropped and counted on the newest).
const MAX_OPEN_ALERTS: usize = 256;
/// Most keys deleted by one `Expire` (the next run continues).
pub const EXPIRE_BATCH: usize = 20_000;

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
        FleetCommand::DeleteAgent(a) => {
            let (t, id) = (&a.tenant, &a.agent_id);
            let mut prefixes = telemetry::legacy_prefixes(t, id);
            prefixes.push(keys::seq_prefix(t, id));
            for p in prefixes {
                for kv in data.scan_prefix(p) {
                    found.push(uncounted(kv?.0));
                }
            }
            telemetry::scan_agent(data, t, id, found)?;
        }
        FleetCommand::Expire { at_ms } => {
            for kv in data.scan_prefix(keys::ALL_AGENTS) {
                let rec: AgentRecord = codec::decode_value("agent", &kv?.1)?;
                if found.len() >= EXPIRE_BATCH {
                    break;
                }
                let retention = crate::state_machine::settings_in(data, &rec.tenant)?.settings.retention;
                let hours = |h: u64| at_ms.saturating_sub(h * 3_600_000);
                let cutoffs = [
                    hours(retention.raw_hours as u64),
                    hours(24 * retention.rollup_1m_days as u64),
                    hours(24 * retention.rollup_5m_days as u64),
                    hours(24 * retention.rollup_1h_days as u64),
                ];
                telemetry::scan_expired(data, &rec.tenant, &rec.id, cutoffs, EXPIRE_BATCH, found)?;
                // the replaced layout ages out under the same retention
                let (t, id) = (&rec.tenant, &rec.id);
                let mut legacy = vec![(keys::raw(t, id, 0, 0), keys::raw(t, id, cutoffs[0], 0))];
                for (r, cutoff) in Resolution::ROLLUPS.iter().zip(&cutoffs[1..]) {
                    let end = cutoff.saturating_sub(r.width_ms());
                    legacy.push((keys::rollup(r.tag(), t, id, 0), keys::rollup(r.tag(), t, id, end)));
                }
                for (start, end) in legacy {
                    for kv in data.range(start..end).take(EXPIRE_BATCH.saturating_sub(found.len())) {
                        found.push(uncounted(kv?.0));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(pre)
}

/// Applies one fleet command.
pub(crate) fn apply(tx: &Tx<'_>, cmd: &FleetCommand, pre: &Prescan, heads: &HeadsTx<'_>) -> R<CommandResult> {
    match cmd {
        FleetCommand::CreateEnrollmentToken(t) => {
            put(tx, "enrollment token", keys::enrollment(&t.tenant, &t.id), t)?;
            put(tx, "enrollment index", keys::enrollment_hash(&t.sha256), &(t.tenant.clone(), t.id.clone()))?;
            audit(tx, &t.tenant, t.created_at_ms, "enrollment_token_created", "admin", None, &t.id)?;
            Ok(CommandResult::Ok)
        }
        FleetCommand::RevokeEnrollmentToken { tenant, id } => {
            let key = keys::enrollment(tenant, id);
            let Some(mut t) = get::<EnrollmentToken>(tx, "enrollment token", &key)? else {
                return Ok(rejected(FleetRejection::NotFound));
            };
            t.revoked = true;
            put(tx, "enrollment token", key, &t)?;
            Ok(CommandResult::Ok)
        }
        FleetCommand::Register(r) => register(tx, r),
        FleetCommand::Group(items) => {
            let mut outcomes = Vec::with_capacity(items.len());
            let mut deltas = ByteDeltas::default();
            for item in items.iter() {
                outcomes.push(match item {
                    GroupItem::Batch(b) => ingest(tx, heads, b, &mut deltas)?,
                    GroupItem::Heartbeat(h) => heartbeat(tx, h)?,
                });
            }
            deltas.write(tx)?;
            Ok(ok(FleetResult::Group(outcomes)))
        }
        FleetCommand::DeleteAgent(a) => {
            let Some(rec) = agent(tx, &a.tenant, &a.agent_id)? else {
                return Ok(rejected(FleetRejection::UnknownAgent));
            };
            let mut deltas = ByteDeltas::default();
            telemetry::remove(tx, &pre.removals, &mut deltas)?;
            telemetry::drop_head(heads, &a.tenant, &a.agent_id);
            deltas.write(tx)?;
            let mut open = open_alerts(tx, &a.tenant, &a.agent_id)?;
            for key in open.keys().cloned().collect::<Vec<_>>() {
                resolve(tx, &a.tenant, &mut open, &key, &a.actor, a.at_ms)?;
            }
            for k in [
                keys::agent(&a.tenant, &a.agent_id),
                keys::agent_token(&rec.token_sha256),
                keys::machine(&a.tenant, &rec.machine_id),
                keys::inventory(&a.tenant, &a.agent_id),
                keys::processes(&a.tenant, &a.agent_id),
                keys::open_alerts(&a.tenant, &a.agent_id),
            ] {
                tx.remove(k)?;
            }
            let details = serde_json::json!({ "hostname": rec.hostname, "machine_id": rec.machine_id });
            audit(
                tx,
                &a.tenant,
                a.at_ms,
                "agent_deleted",
                &a.actor,
                Some(&a.agent_id),
                &details.to_string(),
            )?;
            Ok(CommandResult::Ok)
        }
        FleetCommand::RotateToken { action: a, token_sha256 } => {
            let Some(mut rec) = agent(tx, &a.tenant, &a.agent_id)? else {
                return Ok(rejected(FleetRejection::UnknownAgent));
            };
            tx.remove(keys::agent_token(&rec.token_sha256))?;
            rec.token_sha256 = *token_sha256;
            put(
                tx,
                "agent token index",
                keys::agent_token(token_sha256),
                &(a.tenant.clone(), a.agent_id.clone()),
            )?;
            put(tx, "agent", keys::agent(&a.tenant, &a.agent_id), &rec)?;
            audit(tx, &a.tenant, a.at_ms, "agent_token_rotated", &a.actor, Some(&a.agent_id), "{}")?;
            Ok(CommandResult::Ok)
        }
        FleetCommand::ClearSigningKey(a) => {
            let Some(mut rec) = agent(tx, &a.tenant, &a.agent_id)? else {
                return Ok(rejected(FleetRejection::UnknownAgent));
            };
            let had = rec.pubkey.take().is_some();
            put(tx, "agent", keys::agent(&a.tenant, &a.agent_id), &rec)?;
            let details = serde_json::json!({ "had_pinned_key": had });
            audit(
                tx,
                &a.tenant,
                a.at_ms,
                "agent_signing_key_cleared",
                &a.actor,
                Some(&a.agent_id),
                &details.to_string(),
            )?;
            Ok(CommandResult::Ok)
        }
        FleetCommand::FireOffline(firings) => {
            let mut fired = 0;
            for f in firings {
                let Some(rec) = agent(tx, &f.tenant, &f.agent_id)? else { continue };
                if rec.last_seen_ms != f.last_seen_ms {
                    continue; // the agent spoke since the sweeper looked
                }
                let mut open = open_alerts(tx, &f.tenant, &f.agent_id)?;
                let silent_secs = f.at_ms.saturating_sub(rec.last_seen_ms) / 1000;
                let message = format!("agent {} silent for {silent_secs} s", rec.hostname);
                let firing = Firing {
                    key: "offline",
                    source: AlertSource::Offline,
                    severity: Severity::Critical,
                    message: &message,
                    value: None,
                };
                if fire(tx, &f.tenant, &f.agent_id, &mut open, firing, f.at_ms)? {
                    fired += 1;
                }
                put(tx, "open alerts", keys::open_alerts(&f.tenant, &f.agent_id), &open)?;
            }
            Ok(ok(FleetResult::Count(fired)))
        }
        FleetCommand::SetAlertState { tenant, id, state, actor, at_ms } => {
            let key = keys::alert(tenant, *id);
            let Some(mut a) = get::<AlertRecord>(tx, "alert", &key)? else {
                return Ok(rejected(FleetRejection::NotFound));
            };
            if a.state == AlertState::Resolved {
                return Ok(rejected(FleetRejection::AlreadyResolved));
            }
            if *state == AlertState::Resolved {
                let mut open = open_alerts(tx, tenant, &a.agent_id)?;
                resolve(tx, tenant, &mut open, &a.key.clone(), actor, *at_ms)?;
                put(tx, "open alerts", keys::open_alerts(tenant, &a.agent_id), &open)?;
                a = get::<AlertRecord>(tx, "alert", &key)?.unwrap_or(a);
                if a.state != AlertState::Resolved {
                    // not in the open index (should not happen): close the record itself
                    a.state = AlertState::Resolved;
                    a.resolved_at_ms = Some(*at_ms);
                    a.resolved_by = Some(actor.clone());
                    put(tx, "alert", key, &a)?;
                }
            } else {
                a.state = *state;
                a.updated_at_ms = *at_ms;
                put(tx, "alert", key, &a)?;
            }
            Ok(ok(FleetResult::Alert(a)))
        }
        FleetCommand::PutRules { tenant, expected_revision, rules, at_ms } => {
            let key = keys::rules(tenant);
            let current = get::<RulesDoc>(tx, "rules", &key)?.unwrap_or_else(default_rules);
            if expected_revision.is_some_and(|r| r != current.revision) {
                return Ok(CommandResult::Rejected(crate::Rejection::RevisionMismatch {
                    current: current.revision,
                }));
            }
            if let Err(msg) = validate_rules(rules) {
                return Ok(CommandResult::Rejected(crate::Rejection::Invalid(msg)));
            }
            let doc = RulesDoc { revision: current.revision + 1, rules: rules.clone() };
            put(tx, "rules", key, &doc)?;
            let details = serde_json::json!({ "revision": doc.revision, "rules": rules.len() });
            audit(tx, tenant, *at_ms, "alert_rules_changed", "admin", None, &details.to_string())?;
            Ok(ok(FleetResult::Rules(doc)))
        }
        FleetCommand::Expire { at_ms } => {
            let mut deltas = ByteDeltas::default();
            telemetry::seal_idle_tx(tx, heads, at_ms.saturating_sub(WINDOW_MS), &mut deltas)?;
            telemetry::remove(tx, &pre.removals, &mut deltas)?;
            deltas.write(tx)?;
            Ok(ok(FleetResult::Count(pre.removals.len() as u64)))
        }
        FleetCommand::RecordAnomalies { tenant, anomalies, at_ms } => {
            let mut recorded = 0;
            for n in anomalies {
                let open_key = keys::open_anomaly(tenant, &n.agent_id, &n.kind);
                if tx.get(&open_key)?.is_some() {
                    continue;
                }
                let id = next_id(tx, "anomaly", tenant)?;
                let a = Anomaly {
                    id,
                    tenant: tenant.clone(),
                    agent_id: n.agent_id.clone(),
                    kind: n.kind.clone(),
                    details: n.details.clone(),
                    detected_at_ms: *at_ms,
                    resolved_at_ms: None,
                    resolved_by: None,
                };
                put(tx, "anomaly", keys::anomaly(tenant, id), &a)?;
                put(tx, "open anomaly", open_key, &id)?;
                recorded += 1;
            }
            Ok(ok(FleetResult::Count(recorded)))
        }
        FleetCommand::ResolveAnomaly { tenant, id, actor, at_ms } => {
            let key = keys::anomaly(tenant, *id);
            let Some(mut a) = get::<Anomaly>(tx, "anomaly", &key)? else {
                return Ok(rejected(FleetRejection::NotFound));
            };
            if a.resolved_at_ms.is_some() {
                return Ok(rejected(FleetRejection::AlreadyResolved));
            }
            a.resolved_at_ms = Some(*at_ms);
            a.resolved_by = Some(actor.clone());
            tx.remove(keys::open_anomaly(tenant, &a.agent_id, &a.kind))?;
            put(tx, "anomaly", key, &a)?;
            Ok(ok(FleetResult::Anomaly(a)))
        }
        FleetCommand::RecordAudit { tenant, at_ms, event_type, actor, details } => {
            audit(tx, tenant, *at_ms, event_type, actor, None, details)?;
            Ok(CommandResult::Ok)
        }
    }
}

/// Which items of a group were stored (bit `i` of byte `i / 8`), as `apply` decided.
pub(crate) fn stored_bitmap(outcomes: &[ItemOutcome]) -> Vec<u8> {
    let mut bits = vec![0u8; outcomes.len().div_ceil(8)];
    for (i, o) in outcomes.iter().enumerate() {
        if matches!(o, ItemOutcome::Stored { .. }) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

/// Replays the telemetry-head effects of an applied command (after a restart): the same head
/// changes `apply` made, writing nothing. `stored` is the entry's [`stored_bitmap`].
pub(crate) fn replay(
    data: &sled::Tree,
    cmd: &FleetCommand,
    stored: Option<&[u8]>,
    heads: &HeadsTx<'_>,
) -> Result<(), Error> {
    let mut store = telemetry::ReplayStore(data);
    let mut deltas = ByteDeltas::default(); // already counted when the entry was applied
    match cmd {
        FleetCommand::Group(items) => {
            let Some(bits) = stored else {
                tracing::warn!(
                    "applied group without a stored-items record; its samples are not in the head"
                );
                return Ok(());
            };
            for (i, item) in items.iter().enumerate() {
                let was_stored = bits.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1);
                if let (true, GroupItem::Batch(b)) = (was_stored, item)
                    && !b.samples.is_empty()
                {
                    telemetry::write(&mut store, heads, Mode::Replay, b, &mut deltas)
                        .map_err(telemetry::layout_err)?;
                }
            }
        }
        FleetCommand::DeleteAgent(a) => telemetry::drop_head(heads, &a.tenant, &a.agent_id),
        FleetCommand::Expire { at_ms } => {
            let before = at_ms.saturating_sub(WINDOW_MS);
            telemetry::seal_idle(&mut store, heads, Mode::Replay, before, &mut deltas)
                .map_err(telemetry::layout_err)?;
        }
        _ => {}
    }
    Ok(())
}

/// The built-in rules of a tenant that never wrote its own.
pub fn default_rules() -> RulesDoc {
    let rule = |id: &str, metric: &str, threshold: f64, for_samples: u32, severity: Severity| AlertRule {
        id: id.into(),
        metric: metric.into(),
        threshold,
        for_samples,
        severity,
        enabled: true,
    };
    RulesDoc {
        revision: 0,
        rules: vec![
            rule("cpu_high", monsys_proto::agent::metric::CPU_PERCENT, 90.0, 4, Severity::Warning),
            rule("memory_high", monsys_proto::agent::metric::MEM_PERCENT, 90.0, 4, Severity::Warning),
            rule("disk_full", monsys_proto::agent::metric::DISK_PERCENT, 90.0, 1, Severity::Critical),
            rule("load_high", monsys_proto::agent::metric::LOAD1, 16.0, 4, Severity::Warning),
        ],
    }
}

/// Checks a rule set: unique ids, sane names, finite thresholds, at least one sample.
pub fn validate_rules(rules: &[AlertRule]) -> Result<(), String> {
    if rules.len() > 100 {
        return Err("at most 100 rules".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for r in rules {
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ok_name(&r.id) {
            return Err(format!("rule id {:?}: 1-64 characters of [a-z0-9_]", r.id));
        }
        if r.id == "offline" {
            return Err(
                "rule id \"offline\" is reserved (silence uses settings.agent_offline_after_secs)".into()
            );
        }
        if !ids.insert(r.id.as_str()) {
            return Err(format!("rule id {:?} is used twice", r.id));
        }
        if !ok_name(&r.metric) {
            return Err(format!("rule {}: metric {:?}: 1-64 characters of [a-z0-9_]", r.id, r.metric));
        }
        if !r.threshold.is_finite() {
            return Err(format!("rule {}: threshold must be a finite number", r.id));
        }
        if !(1..=1000).contains(&r.for_samples) {
            return Err(format!("rule {}: for_samples must be 1..=1000", r.id));
        }
    }
    Ok(())
}

fn agent(tx: &Tx<'_>, tenant: &str, id: &str) -> R<Option<AgentRecord>> {
    get(tx, "agent", &keys::agent(tenant, id))
}

fn open_alerts(tx: &Tx<'_>, tenant: &str, agent: &str) -> R<BTreeMap<String, u64>> {
    Ok(get(tx, "open alerts", &keys::open_alerts(tenant, agent))?.unwrap_or_default())
}

fn register(tx: &Tx<'_>, r: &Registration) -> R<CommandResult> {
    let Some((tenant, token_id)) =
        get::<(String, String)>(tx, "enrollment index", &keys::enrollment_hash(&r.enrollment_sha256))?
    else {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    };
    let token_key = keys::enrollment(&tenant, &token_id);
    let Some(mut token) = get::<EnrollmentToken>(tx, "enrollment token", &token_key)? else {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    };
    if token.revoked || token.expires_at_ms.is_some_and(|e| r.at_ms >= e) {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    }
    let machine_key = keys::machine(&tenant, &r.machine_id);
    if let Some(id) = get::<String>(tx, "machine index", &machine_key)? {
        let Some(mut rec) = agent(tx, &tenant, &id)? else {
            return Err(Error::Corrupt(format!("machine index points at missing agent {id}")));
        };
        if let Some(pinned) = rec.pubkey
            && r.pubkey != Some(pinned)
        {
            let details = serde_json::json!({ "machine_id": r.machine_id, "hostname": r.hostname });
            audit(tx, &tenant, r.at_ms, "agent_register_key_mismatch", &id, Some(&id), &details.to_string())?;
            return Ok(rejected(FleetRejection::SigningKeyMismatch));
        }
        tx.remove(keys::agent_token(&rec.token_sha256))?;
        let newly_pinned = rec.pubkey.is_none() && r.pubkey.is_some();
        rec.pubkey = rec.pubkey.or(r.pubkey);
        rec.token_sha256 = r.token_sha256;
        rec.hostname = r.hostname.clone();
        rec.os = r.os.clone();
        rec.arch = r.arch.clone();
        note_version(tx, &mut rec, &r.agent_version, r.at_ms)?;
        put(tx, "agent token index", keys::agent_token(&r.token_sha256), &(tenant.clone(), id.clone()))?;
        let pinned = rec.pubkey.is_some();
        put(tx, "agent", keys::agent(&tenant, &id), &rec)?;
        let details = serde_json::json!({ "hostname": r.hostname, "newly_pinned": newly_pinned });
        audit(tx, &tenant, r.at_ms, "agent_reregistered", &id, Some(&id), &details.to_string())?;
        return Ok(ok(FleetResult::Registered { agent_id: id, pinned, created: false }));
    }
    if token.max_uses.is_some_and(|m| token.uses >= m) {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    }
    token.uses += 1;
    put(tx, "enrollment token", token_key, &token)?;
    let id = r.new_agent_id.clone();
    let rec = AgentRecord {
        id: id.clone(),
        tenant: tenant.clone(),
        hostname: r.hostname.clone(),
        machine_id: r.machine_id.clone(),
        os: r.os.clone(),
        arch: r.arch.clone(),
        agent_version: r.agent_version.clone(),
        pubkey: r.pubkey,
        token_sha256: r.token_sha256,
        registered_at_ms: r.at_ms,
        last_seen_ms: r.at_ms,
        last_seq: 0,
        last_collected_at_ms: 0,
        batches: 0,
        samples: 0,
        last_unsigned_audit_ms: 0,
        clock_offset_ms: 0,
    };
    put(tx, "agent", keys::agent(&tenant, &id), &rec)?;
    put(tx, "machine index", machine_key, &id)?;
    put(tx, "agent token index", keys::agent_token(&r.token_sha256), &(tenant.clone(), id.clone()))?;
    let details = serde_json::json!({
        "hostname": r.hostname, "machine_id": r.machine_id, "enrollment_token": token_id,
        "pinned": r.pubkey.is_some(),
    });
    audit(tx, &tenant, r.at_ms, "agent_registered", &id, Some(&id), &details.to_string())?;
    Ok(ok(FleetResult::Registered { agent_id: id, pinned: r.pubkey.is_some(), created: true }))
}

fn note_version(tx: &Tx<'_>, rec: &mut AgentRecord, version: &str, at_ms: u64) -> R<()> {
    if rec.agent_version != version {
        let details = serde_json::json!({ "from": rec.agent_version, "to": version });
        audit(tx, &rec.tenant, at_ms, "agent_version_seen", &rec.id, Some(&rec.id), &details.to_string())?;
        rec.agent_version = version.to_string();
    }
    Ok(())
}

fn ingest(tx: &Tx<'_>, heads: &HeadsTx<'_>, b: &IngestItem, deltas: &mut ByteDeltas) -> R<ItemOutcome> {
    let Some(mut rec) = agent(tx, &b.tenant, &b.agent_id)? else {
        return Ok(ItemOutcome::UnknownAgent);
    };
    if let Some(pinned) = rec.pubkey
        && b.verified_with != Some(pinned)
    {
        return Ok(ItemOutcome::KeyChanged);
    }
    let last_seq = rec.last_seq;
    if b.seq <= last_seq {
        let seen = get::<([u8; 32], u64)>(tx, "seq window", &keys::seq(&b.tenant, &b.agent_id, b.seq))?;
        let (outcome, event) = match seen {
            Some((hash, at))
                if hash == b.body_sha256 && b.received_at_ms.saturating_sub(at) <= DUPLICATE_WINDOW_MS =>
            {
                return Ok(ItemOutcome::Duplicate { last_seq });
            }
            Some((hash, _)) if hash != b.body_sha256 => {
                (ItemOutcome::SeqConflict { last_seq }, "ingest_seq_conflict")
            }
            _ => (ItemOutcome::Replay { last_seq }, "ingest_replay_rejected"),
        };
        let details =
            serde_json::json!({ "seq": b.seq, "last_seq": last_seq, "collected_at_ms": b.collected_at_ms });
        audit(tx, &b.tenant, b.received_at_ms, event, &b.agent_id, Some(&b.agent_id), &details.to_string())?;
        return Ok(outcome);
    }

    // store
    if !b.samples.is_empty() {
        telemetry::append(tx, heads, b, deltas)?;
    }
    put(tx, "seq window", keys::seq(&b.tenant, &b.agent_id, b.seq), &(b.body_sha256, b.received_at_ms))?;
    if b.seq > SEQ_WINDOW {
        tx.remove(keys::seq(&b.tenant, &b.agent_id, b.seq - SEQ_WINDOW))?;
    }
    if let Some(json) = &b.inventory_json {
        put(tx, "inventory", keys::inventory(&b.tenant, &b.agent_id), &(b.collected_at_ms, json))?;
    }
    if let Some(json) = &b.processes_json {
        put(tx, "processes", keys::processes(&b.tenant, &b.agent_id), &(b.collected_at_ms, json))?;
    }
    let audit_due = rec.last_unsigned_audit_ms == 0
        || b.received_at_ms.saturating_sub(rec.last_unsigned_audit_ms) >= UNSIGNED_AUDIT_INTERVAL_MS;
    if b.verified_with.is_none() && audit_due {
        let details = serde_json::json!({ "seq": b.seq, "note": "agent has no pinned signing key" });
        audit(
            tx,
            &b.tenant,
            b.received_at_ms,
            "unsigned_payload",
            &b.agent_id,
            Some(&b.agent_id),
            &details.to_string(),
        )?;
        rec.last_unsigned_audit_ms = b.received_at_ms;
    }

    // alerts: agent-side (present = firing, absent = resolved), rules, offline
    let mut open = open_alerts(tx, &b.tenant, &b.agent_id)?;
    let before = open.clone();
    for a in &b.agent_alerts {
        let key = format!("agent:{}", a.key);
        let firing = Firing {
            key: &key,
            source: AlertSource::Agent,
            severity: a.severity,
            message: &a.message,
            value: None,
        };
        fire(tx, &b.tenant, &b.agent_id, &mut open, firing, b.received_at_ms)?;
    }
    let firing_now: std::collections::BTreeSet<String> =
        b.agent_alerts.iter().map(|a| format!("agent:{}", a.key)).collect();
    let stale: Vec<String> =
        open.keys().filter(|k| k.starts_with("agent:") && !firing_now.contains(*k)).cloned().collect();
    for key in stale {
        resolve(tx, &b.tenant, &mut open, &key, "auto", b.received_at_ms)?;
    }
    for f in &b.fire {
        let firing = Firing {
            key: &f.rule_id,
            source: AlertSource::Rule,
            severity: f.severity,
            message: &f.message,
            value: Some(f.value),
        };
        fire(tx, &b.tenant, &b.agent_id, &mut open, firing, b.received_at_ms)?;
    }
    for rule in &b.clear {
        resolve(tx, &b.tenant, &mut open, rule, "auto", b.received_at_ms)?;
    }
    resolve(tx, &b.tenant, &mut open, "offline", "auto", b.received_at_ms)?;
    if open != before {
        put(tx, "open alerts", keys::open_alerts(&b.tenant, &b.agent_id), &open)?;
    }

    note_version(tx, &mut rec, &b.agent_version, b.received_at_ms)?;
    rec.last_seq = b.seq;
    rec.last_collected_at_ms = b.collected_at_ms;
    rec.last_seen_ms = rec.last_seen_ms.max(b.received_at_ms);
    rec.batches += 1;
    rec.samples += b.samples.len() as u64;
    put(tx, "agent", keys::agent(&b.tenant, &b.agent_id), &rec)?;
    Ok(ItemOutcome::Stored { last_seq: b.seq })
}

fn heartbeat(tx: &Tx<'_>, h: &HeartbeatItem) -> R<ItemOutcome> {
    let Some(mut rec) = agent(tx, &h.tenant, &h.agent_id)? else {
        return Ok(ItemOutcome::UnknownAgent);
    };
    rec.last_seen_ms = rec.last_seen_ms.max(h.received_at_ms);
    let offset = i128::from(h.sent_at_ms) - i128::from(h.received_at_ms);
    rec.clock_offset_ms = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    note_version(tx, &mut rec, &h.agent_version, h.received_at_ms)?;
    let mut open = open_alerts(tx, &h.tenant, &h.agent_id)?;
    if resolve(tx, &h.tenant, &mut open, "offline", "auto", h.received_at_ms)? {
        put(tx, "open alerts", keys::open_alerts(&h.tenant, &h.agent_id), &open)?;
    }
    put(tx, "agent", keys::agent(&h.tenant, &h.agent_id), &rec)?;
    Ok(ItemOutcome::Seen)
}

/// An alert condition to fire.
struct Firing<'a> {
    key: &'a str,
    source: AlertSource,
    severity: Severity,
    message: &'a str,
    value: Option<f64>,
}

/// Fires an alert unless one with the same key is open (then counts an occurrence).
/// Returns whether a new alert was created.
fn fire(
    tx: &Tx<'_>,
    tenant: &str,
    agent_id: &str,
    open: &mut BTreeMap<String, u64>,
    f: Firing<'_>,
    at_ms: u64,
) -> R<bool> {
    if let Some(id) = open.get(f.key) {
        let key = keys::alert(tenant, *id);
        if let Some(mut a) = get::<AlertRecord>(tx, "alert", &key)? {
            a.occurrences = a.occurrences.saturating_add(1);
            a.updated_at_ms = at_ms;
            if f.value.is_some() {
                a.value = f.value;
            }
            put(tx, "alert", key, &a)?;
        }
        return Ok(false);
    }
    if open.len() >= MAX_OPEN_ALERTS {
        return Ok(false);
    }
    let id = next_id(tx, "alert", tenant)?;
    let a = AlertRecord {
        id,
        tenant: tenant.to_string(),
        agent_id: agent_id.to_string(),
        key: f.key.to_string(),
        source: f.source,
        severity: f.severity,
        message: f.message.to_string(),
        value: f.value,
        state: AlertState::Active,
        fired_at_ms: at_ms,
        updated_at_ms: at_ms,
        resolved_at_ms: None,
        resolved_by: None,
        occurrences: 1,
    };
    put(tx, "alert", keys::alert(tenant, id), &a)?;
    open.insert(f.key.to_string(), id);
    Ok(true)
}

/// Resolves the open alert with `key`, if any. Returns whether one was resolved.
fn resolve(
    tx: &Tx<'_>,
    tenant: &str,
    open: &mut BTreeMap<String, u64>,
    key: &str,
    by: &str,
    at_ms: u64,
) -> R<bool> {
    let Some(id) = open.remove(key) else { return Ok(false) };
    let akey = keys::alert(tenant, id);
    if let Some(mut a) = get::<AlertRecord>(tx, "alert", &akey)? {
        a.state = AlertState::Resolved;
        a.resolved_at_ms = Some(at_ms);
        a.resolved_by = Some(by.to_string());
        a.updated_at_ms = at_ms;
        put(tx, "alert", akey, &a)?;
    }
    Ok(true)
}

/// Appends an event to the tenant's hash-chained audit log.
pub(crate) fn audit(
    tx: &Tx<'_>,
    tenant: &str,
    at_ms: u64,
    event_type: &str,
    actor: &str,
    agent_id: Option<&str>,
    details: &str,
) -> R<()> {
    let head_key = keys::audit_head(tenant);
    let (prev_seq, prev_hash) = get::<(u64, [u8; 32])>(tx, "audit head", &head_key)?.unwrap_or((0, [0; 32]));
    let mut event = AuditEvent {
        seq: prev_seq + 1,
        at_ms,
        event_type: event_type.to_string(),
        actor: actor.to_string(),
        agent_id: agent_id.map(str::to_string),
        details: details.to_string(),
        prev_hash,
        hash: [0; 32],
    };
    event.hash = event.compute_hash();
    put(tx, "audit event", keys::audit(tenant, event.seq), &event)?;
    put(tx, "audit head", head_key, &(event.seq, event.hash))?;
    Ok(())
}
