//! The integrity checker: a leader-only job looking for signs that an agent's data cannot be
//! trusted, recorded as append-only anomalies (`/api/v1/integrity-anomalies`).
//!
//! Checks over the last interval (`settings.integrity_check_interval_secs`, default 10 min):
//! - `clock_drift`: the agent's clock is more than [`MAX_DRIFT_MS`] off the hub's (heartbeat
//!   offset, or a batch collected in the future);
//! - `cadence_anomaly`: batches arrive much faster than the collection interval (a duplicated
//!   or replaying agent), or an online agent sends far fewer than expected;
//! - `flat_metrics`: at least [`FLAT_MIN_BATCHES`] batches with a bit-identical CPU value
//!   (real hosts never report that; fabricated or frozen data does);
//! - `version_downgrade`: the agent reported an older version than before.
//!
//! The detection is a pure function of the replicated state and `now`; the job proposes what it
//! finds, and the state machine skips an anomaly of a kind already open for that agent, so a
//! second leader running the same check (a term change) records nothing twice.

use std::cmp::Ordering;
use std::time::Duration;

use monsys_raft::Command;
use monsys_raft::fleet::{AgentRecord, FleetCommand, FleetReader, NewAnomaly};
use serde_json::json;

use crate::clock::now_ms;
use crate::hub::Hub;

/// Largest tolerated clock offset.
pub const MAX_DRIFT_MS: i64 = 120_000;
/// Batches with an identical CPU value that count as flat.
pub const FLAT_MIN_BATCHES: usize = 20;
/// The collection interval agents are asked for.
const EXPECTED_INTERVAL_MS: u64 = 15_000;

/// Anomalies of one agent over `[now - window, now)`.
pub fn check_agent(
    fleet: &FleetReader,
    a: &AgentRecord,
    now: u64,
    window_ms: u64,
    online: bool,
) -> Vec<NewAnomaly> {
    let mut out = Vec::new();
    let mut found = |kind: &str, details: serde_json::Value| {
        out.push(NewAnomaly { agent_id: a.id.clone(), kind: kind.into(), details: details.to_string() });
    };
    let future_ms = a.last_collected_at_ms as i64 - a.last_seen_ms as i64;
    if a.clock_offset_ms.abs() > MAX_DRIFT_MS || future_ms > MAX_DRIFT_MS {
        found(
            "clock_drift",
            json!({ "heartbeat_offset_ms": a.clock_offset_ms, "batch_ahead_ms": future_ms.max(0) }),
        );
    }
    let from = now.saturating_sub(window_ms);
    // every batch carries cpu_percent, so its samples are the batch times (else the first series)
    let names = fleet.series(&a.tenant, &a.id).unwrap_or_default();
    let cpu_id = names.iter().position(|n| n == monsys_proto::agent::metric::CPU_PERCENT);
    let series_id = cpu_id.or(if names.is_empty() { None } else { Some(0) });
    let samples = series_id
        .map(|id| fleet.raw_series(&a.tenant, &a.id, id as u32, from, now).unwrap_or_default())
        .unwrap_or_default();
    let times: Vec<u64> = samples.iter().map(|s| s.0).collect();
    if times.len() >= 3 {
        let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        if median < EXPECTED_INTERVAL_MS / 3 {
            found(
                "cadence_anomaly",
                json!({ "median_gap_ms": median, "batches": times.len(), "expected_gap_ms": EXPECTED_INTERVAL_MS }),
            );
        }
    }
    let expected = window_ms / EXPECTED_INTERVAL_MS;
    if online && expected >= 8 && a.registered_at_ms <= from && (times.len() as u64) < expected / 4 {
        found("cadence_anomaly", json!({ "batches": times.len(), "expected_at_least": expected / 4 }));
    }
    let cpu: Vec<u64> =
        if cpu_id.is_some() { samples.iter().map(|s| s.1.to_bits()).collect() } else { Vec::new() };
    if cpu.len() >= FLAT_MIN_BATCHES && cpu.iter().all(|v| *v == cpu[0]) {
        found(
            "flat_metrics",
            json!({ "metric": "cpu_percent", "batches": cpu.len(), "value": f64::from_bits(cpu[0]) }),
        );
    }
    out
}

/// Version downgrades among the tenant's `agent_version_seen` audit events after `after_seq`.
fn downgrades(fleet: &FleetReader, tenant: &str, since_ms: u64) -> Vec<NewAnomaly> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = fleet.audit(tenant, after, 1000).unwrap_or_default();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.event_type == "agent_version_seen" && e.at_ms >= since_ms) {
            let details: serde_json::Value = serde_json::from_str(&e.details).unwrap_or_default();
            let (Some(from), Some(to)) = (details["from"].as_str(), details["to"].as_str()) else { continue };
            if compare_versions(to, from) == Ordering::Less {
                out.push(NewAnomaly {
                    agent_id: e.agent_id.clone().unwrap_or_default(),
                    kind: "version_downgrade".into(),
                    details: json!({ "from": from, "to": to, "audit_seq": e.seq }).to_string(),
                });
            }
        }
    }
    out
}

/// Compares dotted versions numerically (`1.10.0` > `1.9.2`); non-numeric parts compare as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| s.split(['.', '-', '+']).map(str::to_string).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Runs every check once for every tenant with agents and records what it finds (leader only).
/// Returns the number of anomalies proposed.
pub async fn run_once(hub: &Hub) -> usize {
    if !hub.replica.is_leader() {
        return 0;
    }
    let fleet = hub.replica.reader().fleet();
    let Ok(agents) = fleet.all_agents() else { return 0 };
    let now = now_ms();
    let mut by_tenant: std::collections::BTreeMap<String, Vec<NewAnomaly>> = Default::default();
    for a in &agents {
        let Ok(settings) = hub.replica.reader().settings(&a.tenant) else { continue };
        let window = u64::from(settings.settings.integrity_check_interval_secs) * 1000;
        let online = now.saturating_sub(a.last_seen_ms)
            <= u64::from(settings.settings.agent_offline_after_secs) * 1000;
        by_tenant.entry(a.tenant.clone()).or_default().extend(check_agent(&fleet, a, now, window, online));
    }
    let tenants: std::collections::BTreeSet<String> = agents.iter().map(|a| a.tenant.clone()).collect();
    for t in tenants {
        let window = hub
            .replica
            .reader()
            .settings(&t)
            .map(|s| u64::from(s.settings.integrity_check_interval_secs) * 1000)
            .unwrap_or(600_000);
        by_tenant.entry(t.clone()).or_default().extend(downgrades(&fleet, &t, now.saturating_sub(window)));
    }
    let mut proposed = 0;
    for (tenant, anomalies) in by_tenant.into_iter().filter(|(_, a)| !a.is_empty()) {
        proposed += anomalies.len();
        let cmd = Command::Fleet(FleetCommand::RecordAnomalies { tenant, anomalies, at_ms: now });
        if let Err(e) = hub.replica.write(cmd).await {
            tracing::warn!(error = %e, "integrity anomalies not recorded; next run retries");
        }
    }
    proposed
}

/// How often the job wakes up to see whether a tenant's interval has passed.
pub const WAKE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0", "2.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("0.9.0", "1.0.0"), Ordering::Less);
    }
}
