//! Alerts: firing (one open alert per key and agent, further firings counted on it) and
//! resolution, the offline sweep, alert state changes by users, and the tenant's rule set.

use std::collections::BTreeMap;

use monsys_proto::agent::Severity;

use super::agents::agent;
use super::{next_id, ok, rejected};
use crate::fleet::keys;
use crate::fleet::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, audit};

/// Most open alerts per agent (further firings are dropped and counted on the newest).
const MAX_OPEN_ALERTS: usize = 256;

/// `FireOffline`: fires the offline alert of each agent still silent since the sweeper looked.
pub(super) fn fire_offline(tx: &Tx<'_>, firings: &[OfflineFiring]) -> R<CommandResult> {
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

/// `SetAlertState`: acknowledges, silences or resolves an alert (a resolved one stays so).
pub(super) fn set_state(
    tx: &Tx<'_>,
    tenant: &str,
    id: u64,
    state: AlertState,
    actor: &str,
    at_ms: u64,
) -> R<CommandResult> {
    let key = keys::alert(tenant, id);
    let Some(mut a) = get::<AlertRecord>(tx, "alert", &key)? else {
        return Ok(rejected(FleetRejection::NotFound));
    };
    if a.state == AlertState::Resolved {
        return Ok(rejected(FleetRejection::AlreadyResolved));
    }
    if state == AlertState::Resolved {
        let mut open = open_alerts(tx, tenant, &a.agent_id)?;
        resolve(tx, tenant, &mut open, &a.key.clone(), actor, at_ms)?;
        put(tx, "open alerts", keys::open_alerts(tenant, &a.agent_id), &open)?;
        a = get::<AlertRecord>(tx, "alert", &key)?.unwrap_or(a);
        if a.state != AlertState::Resolved {
            // not in the open index (should not happen): close the record itself
            a.state = AlertState::Resolved;
            a.resolved_at_ms = Some(at_ms);
            a.resolved_by = Some(actor.to_string());
            put(tx, "alert", key, &a)?;
        }
    } else {
        a.state = state;
        a.updated_at_ms = at_ms;
        put(tx, "alert", key, &a)?;
    }
    Ok(ok(FleetResult::Alert(a)))
}

/// `PutRules(By)`: replaces the rule set (compare-and-set on its revision, validated again);
/// `actor` changed it.
pub(super) fn put_rules(
    tx: &Tx<'_>,
    tenant: &str,
    expected_revision: Option<u64>,
    rules: &[AlertRule],
    at_ms: u64,
    actor: &str,
) -> R<CommandResult> {
    let key = keys::rules(tenant);
    let current = get::<RulesDoc>(tx, "rules", &key)?.unwrap_or_else(default_rules);
    if expected_revision.is_some_and(|r| r != current.revision) {
        return Ok(CommandResult::Rejected(crate::Rejection::RevisionMismatch { current: current.revision }));
    }
    if let Err(msg) = validate_rules(rules) {
        return Ok(CommandResult::Rejected(crate::Rejection::Invalid(msg)));
    }
    let doc = RulesDoc { revision: current.revision + 1, rules: rules.to_vec() };
    put(tx, "rules", key, &doc)?;
    let details = serde_json::json!({ "revision": doc.revision, "rules": rules.len() });
    audit::append(tx, tenant, at_ms, "alert_rules_changed", actor, None, &details.to_string())?;
    Ok(ok(FleetResult::Rules(doc)))
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

pub(super) fn open_alerts(tx: &Tx<'_>, tenant: &str, agent: &str) -> R<BTreeMap<String, u64>> {
    Ok(get(tx, "open alerts", &keys::open_alerts(tenant, agent))?.unwrap_or_default())
}

/// An alert condition to fire.
pub(super) struct Firing<'a> {
    pub(super) key: &'a str,
    pub(super) source: AlertSource,
    pub(super) severity: Severity,
    pub(super) message: &'a str,
    pub(super) value: Option<f64>,
}

/// Fires an alert unless one with the same key is open (then counts an occurrence).
/// Returns whether a new alert was created.
pub(super) fn fire(
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
pub(super) fn resolve(
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
