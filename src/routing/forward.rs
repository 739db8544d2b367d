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
use crate::cluster::links::LinkPolicy;
use crate::error::ApiError;
use crate::replica::error::WriteError;
use crate::secrets::{CLUSTER_SECRET_HEADER, ClusterSecret, FORWARDER_SECRET_HEADER};

/// Forwards requests to peer nodes.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    secret: ClusterSecret,
    links: LinkPolicy,
}

impl Forwarder {
    /// A forwarder whose requests time out after `timeout`.
    pub fn new(timeout: Duration, secret: ClusterSecret, links: LinkPolicy) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_millis(500))
            // below the peers' idle keep-alive deadline (http_header_timeout_ms, 20 s by default), so a
            // pooled connection is not reused just as the peer closes it
            .pool_idle_timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client with static settings");
        Forwarder { client, secret, links }
    }

    /// Sends the request to `addr` (`host:port`) and relays the answer.
    pub async fn forward(
        &self,
        addr: &str,
        parts: &Parts,
        body: Bytes,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Response, ApiError> {
        self.forward_to(addr, parts, body, client_ip).await.map_err(ForwardFailure::into_error)
    }

    /// [`Forwarder::forward`], telling a refused connection (nothing listens at `addr`: the
    /// request was certainly not delivered and the node is down) from other failures.
    pub async fn forward_to(
        &self,
        addr: &str,
        parts: &Parts,
        body: Bytes,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Response, ForwardFailure> {
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if !self.links.pass(addr).await {
            return Err(ForwardFailure::Failed(ApiError::unavailable(format!(
                "could not reach node at {addr}"
            ))));
        }
        let url = format!("http://{addr}{path}");
        let mut req = self.client.request(parts.method.clone(), &url).body(body);
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                req = req.header(name, value);
            }
        }
        req = req.header(HOP_HEADER, "1").header(FORWARDER_SECRET_HEADER, self.secret.expose());
        if let Some(ip) = client_ip {
            req = req.header(super::CLIENT_IP_HEADER, ip.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            let error = delivery_error(&parts.method, addr, &e);
            if is_refused(&e) { ForwardFailure::Refused(error) } else { ForwardFailure::Failed(error) }
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ForwardFailure::Failed(delivery_error(&parts.method, addr, &e)))?;
        let mut out = Response::builder().status(status);
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                out = out.header(name, value);
            }
        }
        out.body(Body::from(bytes)).map_err(|e| ForwardFailure::Failed(ApiError::Internal(e.to_string())))
    }
}

/// Why a forward failed.
#[derive(Debug)]
pub enum ForwardFailure {
    /// The target refused the connection: not delivered, and nothing listens there.
    Refused(ApiError),
    /// Any other failure, with what it means for the request.
    Failed(ApiError),
}

impl ForwardFailure {
    /// The answer to give the client.
    pub fn into_error(self) -> ApiError {
        match self {
            ForwardFailure::Refused(e) | ForwardFailure::Failed(e) => e,
        }
    }
}

/// Whether `e` is a refused TCP connection (somewhere in its chain of causes).
fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl Forwarder {
    /// Sends a bincode-encoded command to the leader's `/internal/v1/propose` and decodes the
    /// result. Error answers keep their meaning (503 not applied, 504 unknown, …).
    pub async fn propose(&self, addr: &str, body: Vec<u8>) -> Result<monsys_raft::CommandResult, WriteError> {
        if !self.links.pass(addr).await {
            return Err(WriteError::not_applied(format!("could not reach node at {addr}")));
        }
        let url = format!("http://{addr}/internal/v1/propose");
        let resp = self
            .client
            .post(&url)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| proposal_delivery_error(addr, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| proposal_delivery_error(addr, e))?;
        if status.is_success() {
            // committed on the leader: a result this build cannot read is still an unknown
            // outcome for the caller, never a refusal
            return monsys_raft::decode_result(&bytes)
                .map_err(|e| WriteError::unknown(format!("the leader's result could not be read: {e}")));
        }
        let reason = serde_json::from_slice::<monsys_proto::ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("leader answered {status}"));
        Err(proposal_error(status.as_u16(), addr, reason))
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
        if !self.links.pass(addr).await {
            return None;
        }
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
    pub async fn node_state(&self, addr: &str) -> Result<monsys_proto::cluster::NodeState, WriteError> {
        if !self.links.pass(addr).await {
            return Err(WriteError::not_applied(format!("could not reach the node at {addr}")));
        }
        let resp = self
            .client
            .get(format!("http://{addr}/internal/v1/node"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| WriteError::not_applied(format!("could not reach the node at {addr}: {e}")))?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map_err(|e| WriteError::not_applied(format!("the node at {addr} answered garbage: {e}"))),
            401 => Err(WriteError::conflict(format!(
                "the node at {addr} refused this cluster's secret: start it with the cluster's secret"
            ))),
            404 | 405 => Err(WriteError::conflict(format!(
                "the node at {addr} does not answer GET /internal/v1/node: is it a monsys hub of this version?"
            ))),
            status => Err(WriteError::not_applied(format!("the node at {addr} answered {status}"))),
        }
    }

    /// Tells node `id` at `addr` that it was removed from the cluster (best effort: a node
    /// that is down is not told, see `cluster::removed`).
    pub async fn notify_removed(&self, addr: &str, id: u64, by: u64) {
        if !self.links.pass(addr).await {
            tracing::warn!(id, %addr, "removed node could not be told (link down)");
            return;
        }
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

    /// Asks node `id` at `addr` to drain and stop; its answer's status.
    pub async fn drain(&self, addr: &str, id: u64) -> Result<(), ApiError> {
        if !self.links.pass(addr).await {
            return Err(ApiError::unavailable(format!("node {id} at {addr} is not reachable")));
        }
        let sent = self
            .client
            .post(format!("http://{addr}/internal/v1/drain"))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .timeout(Duration::from_secs(5))
            .json(&serde_json::json!({ "node_id": id }))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                Err(ApiError::unavailable(format!("node {id} refused the drain request: {}", r.status())))
            }
            Err(e) => Err(ApiError::unavailable(format!("node {id} at {addr} is not reachable: {e}"))),
        }
    }

    /// Asks the node at `addr` to wait until it has applied `index`; true if it confirmed.
    pub async fn wait_applied(&self, addr: &str, index: u64, wait: Duration) -> bool {
        if !self.links.pass(addr).await {
            return false;
        }
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

/// What the leader's error answer to a proposal means for its outcome.
fn proposal_error(status: u16, addr: &str, reason: String) -> WriteError {
    match status {
        503 | 401 => WriteError::not_applied(reason),
        400 => WriteError::invalid(reason),
        409 => WriteError::conflict(reason),
        413 => WriteError::invalid(reason),
        // 504, a 500 or anything unexpected: the command may have been applied
        _ => WriteError::unknown(format!("propose to {addr}: {status}: {reason}")),
    }
}

fn proposal_delivery_error(addr: &str, e: reqwest::Error) -> WriteError {
    if e.is_connect() {
        WriteError::not_applied(format!("could not reach node at {addr}"))
    } else {
        WriteError::unknown(format!("lost contact with node at {addr} after proposing; outcome unknown"))
    }
}

fn delivery_error(method: &Method, addr: &str, e: &reqwest::Error) -> ApiError {
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
        || name.as_str() == super::CLIENT_IP_HEADER
}
