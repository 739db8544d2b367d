//! The HTTP server of a node: hyper connections with read timeouts and a cap on connections
//! per client address, so that stalled clients cannot hold a node's sockets or requests.
//!
//! - **Headers** must arrive within [`ServerLimits::header_timeout`] of the connection becoming
//!   ready for a request; the same deadline closes an idle keep-alive connection and one that
//!   never sends a byte. A client that trickles a header byte by byte (slowloris) is cut at the
//!   deadline.
//! - **Bodies** must not stall: a body that sends no data for `http_body_stall_ms` ends the
//!   request (`api::router` adds that layer, it is not the server's).
//! - **Connections per client address** are capped at [`ServerLimits::per_ip`]; one over the
//!   cap gets a 503 with the JSON error body and is closed. Count it against your agents behind
//!   one NAT address when you size it.
//!
//! Stopping: the accept loop ends on the node's stop signal, open connections finish their
//! request in flight and close (HTTP/1 graceful shutdown), for at most the drain time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

/// Bounds of the server (from the node's configuration).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Deadline of a request's headers, and of an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Most open connections from one client address.
    pub per_ip: usize,
    /// How long a stopping server lets open connections finish.
    pub drain: Duration,
}

/// Open connections per client address.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection, counted against its address until dropped.
struct Slot {
    table: PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// Counts one more connection from `ip`, unless it already has `max`.
    fn acquire(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { table: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then drains open connections.
pub async fn serve(listener: TcpListener, app: Router, limits: ServerLimits, stop: CancellationToken) {
    let per_ip = PerIp::default();
    let conns = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors and the like: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some(slot) = per_ip.acquire(peer.ip(), limits.per_ip) else {
            conns.spawn(refuse(stream, peer));
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns
            .spawn(serve_connection(stream, peer, app.clone(), limits, stop.clone(), slot).in_current_span());
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(limits.drain, conns.wait()).await.is_err() {
        tracing::info!(open = conns.len(), "connections still open after the drain; closing them");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
    _slot: Slot,
) {
    // hyper's timer starts with the first byte (it reads the version first): a connection that
    // sends nothing at all is given the same deadline here
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let service = app.map_request(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Answers a connection over the per-address cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "connection refused: too many open connections from this address");
    let body = r#"{"error":"too many open connections from this address","code":"unavailable","details":{"retry_after_secs":1}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let t = PerIp::default();
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = t.acquire(a, 2).unwrap();
        let _second = t.acquire(a, 2).unwrap();
        assert!(t.acquire(a, 2).is_none(), "over the cap");
        assert!(t.acquire(b, 2).is_some(), "another address has its own count");
        drop(first);
        assert!(t.acquire(a, 2).is_some(), "a closed connection frees its place");
    }
}
