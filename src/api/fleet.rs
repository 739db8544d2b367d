//! Fleet-wide telemetry reads: the top agents by a metric over a time range, and the telemetry
//! storage of the caller's tenant.
//!
//! The top-N read never touches raw blocks of sealed windows: it merges each agent's rollup
//! buckets (1m, 5m or 1h, the coarsest that still resolves the range), plus the aggregates of
//! the newest, still open window, which are computed from its head block. Consistency as the
//! other operator reads: linearizable by default, `?consistency=local` from this node.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use monsys_raft::fleet::{Resolution, Stat};
use serde::Deserialize;
use serde_json::json;

use super::agents::{Q, ReadQuery, barrier, query};
use super::settings::Consistency;
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;

/// Most agents one top-N answer lists.
const MAX_TOP: usize = 100;

/// Query of `GET /api/v1/fleet/top`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// Metric name (for labelled metrics the highest label wins, as in alert rules).
    pub metric: String,
    /// Start, unix ms (default: 24 h before `to`).
    pub from: Option<u64>,
    /// End, unix ms, exclusive (default: now).
    pub to: Option<u64>,
    /// How many agents (default 10, at most 100).
    pub n: Option<usize>,
    /// `avg` (default), `max`, `min` or `last`.
    pub stat: Option<String>,
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

/// The rollup that answers a top-N over `span_ms`: 1h from a day up, 5m from two hours up.
pub fn top_resolution(span_ms: u64) -> Resolution {
    match span_ms {
        s if s >= 86_400_000 => Resolution::H1,
        s if s >= 2 * 3_600_000 => Resolution::M5,
        _ => Resolution::M1,
    }
}

/// `GET /api/v1/fleet/top?metric&from&to&n&stat`.
pub async fn top(State(hub): State<Hub>, auth: Auth, q: Q<TopQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    let q = query(q)?;
    let to = q.to.unwrap_or_else(now_ms);
    let from = q.from.unwrap_or(to.saturating_sub(86_400_000));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let n = q.n.unwrap_or(10);
    if !(1..=MAX_TOP).contains(&n) {
        return Err(ApiError::BadRequest(format!("n must be 1..={MAX_TOP}")));
    }
    let stat = match q.stat.as_deref() {
        None | Some("avg") => Stat::Avg,
        Some("max") => Stat::Max,
        Some("min") => Stat::Min,
        Some("last") => Stat::Last,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("stat must be avg, max, min or last, not {other:?}")));
        }
    };
    barrier(&hub, q.consistency).await?;
    let res = top_resolution(to - from);
    let start = from - from % res.width_ms();
    let mut ranked: Vec<_> = hub
        .replica
        .reader()
        .fleet()
        .metric_by_agent(&auth.tenant, &q.metric, res, start, to, stat)?
        .into_iter()
        .map(|(agent, series, agg)| (stat.of(&agg), agent, series, agg))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let agents: Vec<_> = ranked
        .into_iter()
        .take(n)
        .map(|(value, agent, series, a)| {
            json!({
                "agent_id": agent.id, "hostname": agent.hostname, "series": series, "value": value,
                "min": a.min, "max": a.max, "avg": a.avg(), "last": a.last, "count": a.count,
            })
        })
        .collect();
    Ok(Json(json!({
        "metric": q.metric, "from": from, "to": to, "interval": res.name(),
        "stat": q.stat.as_deref().unwrap_or("avg"), "agents": agents,
    }))
    .into_response())
}

/// `GET /api/v1/fleet/storage`: stored telemetry bytes of the caller's tenant per resolution,
/// as this node's replica holds them (every replica holds the same blocks), plus the open
/// windows this node holds in memory (all tenants).
pub async fn storage(State(hub): State<Hub>, auth: Auth, q: Q<ReadQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    barrier(&hub, query(q)?.consistency).await?;
    let fleet = hub.replica.reader().fleet();
    let bytes = fleet.telemetry_bytes()?.remove(&auth.tenant).unwrap_or_default();
    let by_res: serde_json::Map<String, serde_json::Value> =
        ["raw", "1m", "5m", "1h"].into_iter().zip(bytes).map(|(r, b)| (r.to_string(), json!(b))).collect();
    let (open_windows, head_bytes) = fleet.head_stats()?;
    Ok(Json(json!({
        "tenant": auth.tenant, "bytes": by_res, "total_bytes": bytes.iter().sum::<i64>(),
        "node_open_windows": open_windows, "node_open_window_bytes": head_bytes,
    }))
    .into_response())
}
