//! The client's address as this node may trust it: the socket peer, or, on a request a peer
//! node forwarded, the address that node relays in `x-monsys-client-ip` together with its
//! proof of membership (`x-monsys-forwarder-secret`). A client cannot spoof it: without a valid
//! forwarder secret the header is ignored. Rate limits and audit events key on it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::CLIENT_IP_HEADER;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::secrets::FORWARDER_SECRET_HEADER;

/// The client's address: the socket peer, or the address a peer node forwarded with its secret.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Hub> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        Ok(ClientIp(client_ip(parts, hub).unwrap_or(IpAddr::from([0, 0, 0, 0]))))
    }
}

/// Whether a peer node forwarded this request (it carries a valid forwarder secret).
pub fn from_peer(parts: &Parts, hub: &Hub) -> bool {
    parts
        .headers
        .get(FORWARDER_SECRET_HEADER)
        .and_then(|s| s.to_str().ok())
        .is_some_and(|s| hub.secret.verify(s))
}

/// See [`ClientIp`].
pub fn client_ip(parts: &Parts, hub: &Hub) -> Option<IpAddr> {
    if from_peer(parts, hub)
        && let Some(ip) =
            parts.headers.get(CLIENT_IP_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    {
        return Some(ip);
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}
