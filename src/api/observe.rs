//! Per-request observability: a tracing span with node id and request id, the `x-request-id`
//! response header, and the HTTP metrics (by matched route, method and status). It is the
//! outermost layer, so it also gives error answers that are not JSON yet (extractor
//! rejections) the API's error body ([`crate::error::json_error_body`]).
//!
//! The span is at `info`, so every event of a request at the default filter — a warning, a
//! failed request — carries the node id and request id; the `answered` line per request is at
//! `debug`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Header carrying the request id (taken from the client when present, else generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A random (v4) UUID from the thread's generator: `Uuid::new_v4` asks the kernel for every
/// id, a system call per request.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// The metrics label of a method: the standard methods by name, anything else as `other`, so
/// that a client inventing methods cannot grow the label set (routes are bounded already: an
/// unmatched path is `unmatched`).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// What the observing middleware needs of the node (not the whole hub: it runs on every
/// request).
#[derive(Clone)]
pub struct Observer {
    /// This node's id, in every request span.
    pub node: u64,
    /// The node's metrics registry.
    pub metrics: std::sync::Arc<crate::metrics::NodeMetrics>,
}

/// Wraps each request in a span, times it and counts it.
pub async fn observe(State(obs): State<Observer>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span =
        tracing::info_span!("request", node = obs.node, request_id = %request_id, %method, route = %route);
    let started = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let mut resp = crate::error::json_error_body(resp).await;
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(status = resp.status().as_u16(), ms = elapsed.as_millis() as u64, "answered")
    });
    obs.metrics.http_request(&route, method_label(&method), resp.status().as_u16(), elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        let invented = |m: &str| method_label(&axum::http::Method::from_bytes(m.as_bytes()).unwrap());
        assert_eq!(invented("GET"), "GET");
        assert_eq!(invented("FOO1"), "other");
        assert_eq!(invented("FOO2"), "other");
    }

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version(), Some(uuid::Version::Random), "{id}");
        }
    }
}
