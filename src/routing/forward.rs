//! One-hop HTTP forwarding of a buffered request to another node.
//!
//! The forwarded request keeps method, path, query, body and the client's headers, its
//! credentials included (so the receiving node authenticates the original caller, never the
//! forwarding node), gains `x-monsys-hop: 1` and the forwarder's proof of membership
//! (`x-monsys-forwarder-secret`, which vouches only for the relayed client IP), and its
//! response is relayed as is. A forwarder has its own connection pool,
//! separate from Raft RPC traffic.
//!
//! Failure semantics: a connection that could not be opened means the request was never
//! delivered (503, retry-safe). A timeout or broken connection after sending means a write may
//! or may not have been applied (504 `outcome_unknown`); for GET it is a plain 503.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderName, Method, header};
use axum::response::Response;

use super::HOP_HEADER;
use crate::error::ApiError;
use crate::secrets::{CLUSTER_SECRET_HEADER, ClusterSecret, FORWARDER_SECRET_HEADER};

/// Forwards requests to peer nodes.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    secret: ClusterSecret,
}

impl Forwarder {
    /// A forwarder whose requests time out after `timeout`.
    pub fn new(timeout: Duration, secret: ClusterSecret) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client with static settings");
        Forwarder { client, secret }
    }

    /// Sends the request to `addr` (`host:port`) and relays the answer.
    pub async fn forward(
        &self,
        addr: &str,
        parts: &Parts,
        body: Bytes,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Response, ApiError> {
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("http://{addr}{path}");
        let mut req = self.client.request(parts.method.clone(), &url).body(body);
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                req = req.header(name, value);
            }
        }
        req = req.header(HOP_HEADER, "1").header(FORWARDER_SECRET_HEADER, self.secret.expose());
        if let Some(ip) = client_ip {
            req = req.header(crate::ratelimit::CLIENT_IP_HEADER, ip.to_string());
        }
        let resp = req.send().await.map_err(|e| delivery_error(&parts.method, addr, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| delivery_error(&parts.method, addr, e))?;
        let mut out = Response::builder().status(status);
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                out = out.header(name, value);
            }
        }
        out.body(Body::from(bytes)).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

impl Forwarder {
    /// Sends a bincode-encoded command to the leader's `/internal/v1/propose` and decodes the
    /// result. Error answers keep their meaning (503 not applied, 504 unknown, …).
    pub async fn propose(&self, addr: &str, body: Vec<u8>) -> Result<monsys_raft::CommandResult, ApiError> {
        let url = format!("http://{addr}/internal/v1/propose");
        let resp = self
            .client
            .post(&url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| delivery_error(&Method::POST, addr, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| delivery_error(&Method::POST, addr, e))?;
        if status.is_success() {
            return Ok(monsys_raft::decode_result(&bytes)?);
        }
        let reason = serde_json::from_slice::<monsys_proto::ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("leader answered {status}"));
        Err(match status.as_u16() {
            503 => ApiError::unavailable(reason),
            504 => ApiError::Indeterminate(reason),
            400 => ApiError::BadRequest(reason),
            409 => ApiError::Conflict(reason),
            _ => ApiError::Internal(format!("propose to {addr}: {status}: {reason}")),
        })
    }
}

impl Forwarder {
    /// Asks the owner at `addr` to admit one request for `key`; `None` if it could not answer.
    pub async fn rate_check(
        &self,
        addr: &str,
        key: &str,
        policy: monsys_actors::limits::Policy,
    ) -> Option<Result<(), Duration>> {
        let body = serde_json::json!({
            "key": key, "rate": policy.rate, "period_ms": policy.period.as_millis() as u64, "burst": policy.burst,
        });
        let resp = self
            .client
            .post(format!("http://{addr}/internal/v1/ratelimit"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(2))
            .json(&body)
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = resp.json().await.ok()?;
        match v["retry_after_ms"].as_u64() {
            Some(0) => Some(Ok(())),
            Some(ms) => Some(Err(Duration::from_millis(ms))),
            None => None,
        }
    }

    /// The Raft state of the node at `addr` (`GET /internal/v1/node`). Errors say why it could
    /// not be asked: unreachable (503), or it refused this cluster's secret (409).
    pub async fn node_state(&self, addr: &str) -> Result<monsys_proto::cluster::NodeState, ApiError> {
        let resp = self
            .client
            .get(format!("http://{addr}/internal/v1/node"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ApiError::unavailable(format!("could not reach the node at {addr}: {e}")))?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map_err(|e| ApiError::unavailable(format!("the node at {addr} answered garbage: {e}"))),
            401 => Err(ApiError::Conflict(format!(
                "the node at {addr} refused this cluster's secret: start it with the cluster's secret"
            ))),
            404 | 405 => Err(ApiError::Conflict(format!(
                "the node at {addr} does not answer GET /internal/v1/node: is it a monsys hub of this version?"
            ))),
            status => Err(ApiError::unavailable(format!("the node at {addr} answered {status}"))),
        }
    }

    /// Tells node `id` at `addr` that it was removed from the cluster (best effort: a node
    /// that is down is not told, see `cluster::removed`).
    pub async fn notify_removed(&self, addr: &str, id: u64, by: u64) {
        let sent = self
            .client
            .post(format!("http://{addr}/internal/v1/removed"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(2))
            .json(&serde_json::json!({ "node_id": id, "by": by }))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => tracing::info!(id, %addr, "removed node told"),
            Ok(r) => tracing::warn!(id, %addr, status = %r.status(), "removed node refused the notice"),
            Err(e) => tracing::warn!(id, %addr, error = %e, "removed node could not be told (down?)"),
        }
    }

    /// Asks the node at `addr` to wait until it has applied `index`; true if it confirmed.
    pub async fn wait_applied(&self, addr: &str, index: u64, wait: Duration) -> bool {
        let url =
            format!("http://{addr}/internal/v1/wait-applied?index={index}&wait_ms={}", wait.as_millis());
        let req = self
            .client
            .post(&url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(wait + Duration::from_millis(500));
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }
}

fn delivery_error(method: &Method, addr: &str, e: reqwest::Error) -> ApiError {
    if e.is_connect() || *method == Method::GET || *method == Method::HEAD {
        ApiError::unavailable(format!("could not reach node at {addr}"))
    } else {
        ApiError::Indeterminate(format!("lost contact with node at {addr} after forwarding; outcome unknown"))
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == HOP_HEADER
        || name.as_str() == FORWARDER_SECRET_HEADER
        || name.as_str() == crate::ratelimit::CLIENT_IP_HEADER
}
