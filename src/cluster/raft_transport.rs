//! Raft RPC over the nodes' HTTP ports: `POST http://<peer>/internal/v1/raft/<kind>`.
//!
//! Bodies are opaque bytes encoded by `monsys-raft`. Every request carries the cluster secret.
//! Errors are classified for openraft: a refused connection is `Unreachable` (openraft backs off
//! quietly), a timeout is `Timeout`, a 404 `Unsupported` (the peer's build does not know that
//! kind of RPC: the election layer treats an older peer by it), anything else `Remote`. This client has its own connection
//! pool, separate from request forwarding.

use std::time::Duration;

use monsys_raft::network::{RaftTransport, RpcKind, TransportError};
use monsys_raft::{Node, NodeId};

use super::links::LinkPolicy;
use crate::secrets::{CLUSTER_SECRET_HEADER, ClusterSecret};

/// HTTP implementation of [`RaftTransport`].
pub struct HttpRaftTransport {
    client: reqwest::Client,
    secret: ClusterSecret,
    links: LinkPolicy,
}

impl HttpRaftTransport {
    /// A transport authenticating with `secret`, sending where `links` let it.
    pub fn new(secret: ClusterSecret, links: LinkPolicy) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            // below the peers' idle keep-alive deadline (see `routing::forward`)
            .pool_idle_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client with static settings");
        HttpRaftTransport { client, secret, links }
    }
}

impl RaftTransport for HttpRaftTransport {
    async fn send(
        &self,
        _target: NodeId,
        node: &Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        if !self.links.pass(&node.api_addr).await {
            return Err(TransportError::Unreachable(format!("link to {} is down", node.api_addr)));
        }
        let url = format!("http://{}/internal/v1/raft/{}", node.api_addr, kind.path_segment());
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
            let what = format!("{status}: {text}");
            return Err(if status == reqwest::StatusCode::NOT_FOUND {
                TransportError::Unsupported(what)
            } else {
                TransportError::Remote(what)
            });
        }
        resp.bytes().await.map(|b| b.to_vec()).map_err(classify)
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
