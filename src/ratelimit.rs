//! Cluster-wide rate limits (seed 001's table). The limiter of a key (`login:ip:<addr>`,
//! `rotate:user:<id>`, …) lives on the owner of `limit:<key>` (rendezvous placement, like an
//! agent's actor), so N requests spread over every node count once. A node asks the owner over
//! `/internal/v1/ratelimit`; when the owner cannot be reached it counts locally (still limited,
//! at worst per node) rather than refusing logins during churn.
//!
//! The generic "1000 / minute / IP" of every other user endpoint costs one peer round trip per
//! request when this node does not own the address's limiter.
//!
//! Deliberately missing: limiter state is memory only, so a crash of a key's owner gives that
//! key a fresh burst.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::request::Parts;
use monsys_actors::ActorKey;
use monsys_actors::limits::Policy;

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::routing::owner::{Placement, place};

pub use crate::routing::CLIENT_IP_HEADER;

const fn per(rate: u32, secs: u64) -> Policy {
    Policy { rate, period: Duration::from_secs(secs), burst: rate }
}

/// `/auth/login`: 10 per minute per IP.
pub const LOGIN: Policy = per(10, 60);
/// `/auth/totp/challenge`: 10 per minute per IP.
pub const TOTP_CHALLENGE: Policy = per(10, 60);
/// `/auth/forgot-password`: 5 per hour per IP.
pub const FORGOT_PASSWORD: Policy = per(5, 3600);
/// `POST /auth/invitations`: 20 per hour per tenant.
pub const INVITATIONS: Policy = per(20, 3600);
/// `/agents/{id}/rotate-token` and `rotate-signing-key`: 10 per hour per user.
pub const ROTATE: Policy = per(10, 3600);

/// Every other user endpoint: 1000 per minute per IP (sessions and API keys; the break-glass
/// admin token is exempt).
pub const USER_ENDPOINTS: Policy = per(1000, 60);

/// Middleware applying [`USER_ENDPOINTS`] where a request is served (inside the leader
/// routing, so a forwarded request counts once).
pub async fn user_endpoints(
    axum::extract::State(hub): axum::extract::State<Hub>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    if !is_break_glass(&parts, &hub) {
        let ip = client_ip(&parts, &hub).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(e) = check(&hub, &format!("user:ip:{ip}"), USER_ENDPOINTS).await {
            return e.into_response();
        }
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// The cluster operator's break-glass token is not a user credential: the operator's own
/// automation (and the chaos harness and benchmarks) is not held to the per-IP user limit.
fn is_break_glass(parts: &Parts, hub: &Hub) -> bool {
    crate::auth::principal::presented_token(parts).is_some_and(|t| {
        t.starts_with(crate::secrets::ADMIN_PREFIX)
            && hub
                .replica
                .reader()
                .admin_token_sha256()
                .ok()
                .flatten()
                .is_some_and(|s| crate::secrets::token_matches(&t, &s))
    })
}

pub use crate::routing::client_ip::{ClientIp, client_ip};

/// Admits one request for `key` under `policy`, cluster-wide; 429 with `Retry-After` when over.
pub async fn check(hub: &Hub, key: &str, policy: Policy) -> Result<(), ApiError> {
    let verdict = match place(hub, &ActorKey::Limit(key.to_string())) {
        Ok(Placement::Remote(_, owner)) => match hub.forwarder.rate_check(&owner.api_addr, key, policy).await
        {
            Some(v) => v,
            None => hub.limits.check(key, policy, now_ms()),
        },
        _ => hub.limits.check(key, policy, now_ms()),
    };
    verdict.map_err(|wait| ApiError::RateLimited {
        retry_after: wait.max(Duration::from_secs(1)),
        limit: policy.rate,
    })
}
