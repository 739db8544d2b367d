//! Per-request observability: a tracing span with node id and request id, the `x-request-id`
//! response header, and the HTTP metrics (by matched route, method and status).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::hub::Hub;

/// Header carrying the request id (taken from the client when present, else generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps each request in a span, times it and counts it.
pub async fn observe(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span =
        tracing::debug_span!("request", node = hub.id, request_id = %request_id, %method, route = %route);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(status = resp.status().as_u16(), ms = elapsed.as_millis() as u64, "answered")
    });
    hub.metrics.http_request(&route, method.as_str(), resp.status().as_u16(), elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
