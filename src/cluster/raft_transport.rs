//! Raft RPC over HTTP: `POST http://<peer>/internal/v1/raft/<kind>`, to the peer's Raft port
//! (`cluster::raft_port`) when gossip announces one, else, or when that port cannot be
//! reached, to its HTTP port (peers of versions without a Raft port, a port not bound yet).
//!
//! Bodies are opaque bytes encoded by `monsys-raft`. Every request carries the cluster secret.
//! Errors are classified for openraft: a refused connection is `Unreachable` (openraft backs off
//! quietly), a timeout is `Timeout`, anything else `Remote`. This client has its own connection
//! pool, separate from request forwarding, and runs on the Raft runtime with the replication
//! tasks that call it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use monsys_raft::network::{RaftTransport, RpcKind, TransportError};
use monsys_raft::{Node, NodeId};
use tokio::sync::watch;

use super::gossip::LiveView;
use crate::secrets::{CLUSTER_SECRET_HEADER, ClusterSecret};

/// HTTP implementation of [`RaftTransport`].
pub struct HttpRaftTransport {
    client: reqwest::Client,
    secret: ClusterSecret,
    /// Gossip's live view, once gossip runs: where each peer's Raft port is.
    live: OnceLock<watch::Receiver<LiveView>>,
}

impl HttpRaftTransport {
    /// A transport authenticating with `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client with static settings");
        HttpRaftTransport { client, secret, live: OnceLock::new() }
    }

    /// Gives the transport gossip's live view (gossip starts after Raft; until then, and for
    /// peers gossip does not see, RPCs go to the HTTP port named in the Raft membership).
    pub fn set_live(&self, live: watch::Receiver<LiveView>) {
        let _ = self.live.set(live);
    }

    /// The Raft port `target` announces, if gossip sees it alive with one.
    fn raft_port_of(&self, target: NodeId) -> Option<String> {
        let view = self.live.get()?.borrow();
        view.get(&target).map(|m| m.raft_addr.clone()).filter(|a| !a.is_empty())
    }

    async fn post(
        &self,
        addr: &str,
        kind: RpcKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let url = format!("http://{addr}/internal/v1/raft/{}", kind.path_segment());
        let resp = self
            .client
            .post(url)
            .timeout(timeout)
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(TransportError::Remote(format!("{status}: {text}")));
        }
        resp.bytes().await.map(|b| b.to_vec()).map_err(classify)
    }
}

impl RaftTransport for HttpRaftTransport {
    async fn send(
        &self,
        target: NodeId,
        node: &Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let deadline = Instant::now() + timeout;
        let body = Bytes::from(body);
        if let Some(addr) = self.raft_port_of(target) {
            match self.post(&addr, kind, body.clone(), timeout).await {
                Err(TransportError::Unreachable(e)) => {
                    tracing::debug!(target, %addr, error = %e, "raft port unreachable; using the HTTP port");
                }
                other => return other,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout);
        }
        self.post(&node.api_addr, kind, body, left).await
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Unreachable(e.to_string())
    } else {
        TransportError::Remote(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::routing::post;

    use super::*;
    use crate::cluster::gossip::LiveMember;

    /// A peer's HTTP port that answers every Raft RPC with `reply`, checking the secret.
    async fn http_port(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route(
            "/internal/v1/raft/{kind}",
            post(move |headers: axum::http::HeaderMap| async move {
                assert_eq!(headers[CLUSTER_SECRET_HEADER], "s3cret-s3cret-s3cret");
                reply
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn live(raft_addr: &str) -> watch::Receiver<LiveView> {
        let m = LiveMember {
            raft_id: 2,
            api_addr: String::new(),
            raft_addr: raft_addr.into(),
            version: String::new(),
            log_features: String::new(),
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
        };
        watch::channel(Arc::new(BTreeMap::from([(2, m)]))).1
    }

    /// A closed local port.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn transport(live: Option<watch::Receiver<LiveView>>) -> HttpRaftTransport {
        let t = HttpRaftTransport::new(ClusterSecret::for_tests("s3cret-s3cret-s3cret"));
        if let Some(l) = live {
            t.set_live(l);
        }
        t
    }

    #[tokio::test]
    async fn rpcs_go_to_the_announced_raft_port_else_to_the_http_port() {
        let t = transport(None);
        let (raft_port, api_port) = (http_port(b"raft port").await, http_port(b"http port").await);
        let node = Node { api_addr: api_port, gossip_addr: "127.0.0.1:1".into() };
        assert_eq!(
            t.send(2, &node, RpcKind::Vote, vec![1], SECOND).await.unwrap(),
            b"http port",
            "no gossip yet: the membership's HTTP port"
        );
        let t = transport(Some(live(&raft_port)));
        assert_eq!(t.send(2, &node, RpcKind::Vote, vec![1], SECOND).await.unwrap(), b"raft port");
        let t = transport(Some(live(&closed_port())));
        assert_eq!(
            t.send(2, &node, RpcKind::Vote, vec![1], SECOND).await.unwrap(),
            b"http port",
            "an unreachable raft port falls back"
        );
        let t = transport(Some(live("")));
        assert_eq!(
            t.send(2, &node, RpcKind::Vote, vec![1], SECOND).await.unwrap(),
            b"http port",
            "a peer announcing no raft port"
        );
    }
}
