//! Liveness, readiness and Prometheus metrics. No authentication (probes and scrapers).
//!
//! - `GET /api/v1/health`: the process answers (liveness); says nothing about the cluster.
//! - `GET /api/v1/ready`: 200 when the node knows a leader, is a member and has applied its log
//!   to within `ready_max_lag_entries`; else 503 with the reason.
//! - `GET /metrics`: Prometheus text exposition of this node.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub::Hub;

/// `GET /api/v1/health`.
pub async fn health(State(hub): State<Hub>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": monsys_proto::VERSION,
        "node_id": hub.replica.id(),
        "uptime": hub.uptime_secs(),
    }))
}

/// `GET /api/v1/ready`.
pub async fn ready(State(hub): State<Hub>) -> Response {
    let m = hub.replica.raft_metrics();
    match hub.not_ready_reason() {
        None => Json(json!({ "status": "ready", "leader": m.current_leader, "node_id": hub.replica.id() }))
            .into_response(),
        Some(reason) => {
            let body = json!({
                "error": format!("not ready: {reason}"),
                "code": crate::error::NOT_READY,
                "details": { "leader": m.current_leader, "node_id": hub.replica.id() },
            });
            let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(State(hub): State<Hub>) -> Response {
    let actors = hub.plane.registry.agents().await.len();
    let fleet = hub.replica.reader().fleet();
    match (fleet.telemetry_bytes(), fleet.head_stats()) {
        (Ok(bytes), Ok(heads)) => hub.metrics.fleet_gauges(actors, &bytes, heads),
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "cannot read telemetry counters"),
    }
    let live_members = hub.replica.live().borrow().len(); // not held while rendering
    let text = hub.metrics.render(&hub.replica.raft_metrics(), live_members);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
