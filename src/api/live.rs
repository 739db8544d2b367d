//! Browser WebSockets: `POST /api/v1/ws/ticket` hands out a single-use ticket valid 30 s, and
//! `GET /ws/alerts?ticket=…` streams the tenant's alert changes (the dashboard's live feed).
//!
//! A ticket is consumed through Raft, so it opens at most one socket cluster-wide whichever node
//! the browser reaches. The feed polls the node's applied state every [`POLL`] and sends every
//! alert changed since the last poll: `{"type":"alert","alert":{…}}`. At each poll it also
//! re-checks the principal: a user disabled or deleted, or a role that lost `alerts:read`,
//! closes the feed with code 1008 and the reason. A node that stops closes it with 1001.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use monsys_raft::identity::{IdentityCommand, IdentityResult, Ticket};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::json;

use super::agent_ws::close_frame;
use super::alerts::alert_json;
use super::auth::identity_error;
use super::extract::{CLOSE_GOING_AWAY, CLOSE_REVOKED};
use crate::auth::principal::role_permissions;
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;
use crate::secrets;

/// Prefix of tickets.
pub const TICKET_PREFIX: &str = "mst_";
/// Lifetime of a ticket.
const TICKET_LIFETIME_MS: u64 = 30_000;
/// Interval of the alert feed.
pub const POLL: Duration = Duration::from_secs(1);

/// `POST /api/v1/ws/ticket`.
pub async fn ticket(State(replica): State<Replica>, auth: Auth) -> Result<Response, ApiError> {
    let token = secrets::random_token(TICKET_PREFIX);
    let t = Ticket {
        sha256: secrets::sha256(&token),
        tenant: auth.tenant.clone(),
        user_id: auth.user_id.clone(),
        role: auth.role.clone(),
        expires_at_ms: now_ms() + TICKET_LIFETIME_MS,
    };
    replica
        .write_everywhere(Command::Identity(IdentityCommand::CreateTicket(t)), super::auth::REVOKE_SPREAD)
        .await?;
    Ok(Json(json!({ "ticket": token, "expires_in": TICKET_LIFETIME_MS / 1000 })).into_response())
}

/// Query of `GET /ws/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketQuery {
    /// A ticket from `POST /api/v1/ws/ticket`.
    pub ticket: String,
}

/// Consumes a ticket cluster-wide and checks the permission it must carry.
async fn consume(hub: &Hub, ticket: &str, needed: Permission) -> Result<Ticket, ApiError> {
    let cmd = IdentityCommand::ConsumeTicket { sha256: secrets::sha256(ticket), at_ms: now_ms() };
    let t = match hub.replica.propose(Command::Identity(cmd)).await? {
        CommandResult::Identity(IdentityResult::Ticket(t)) => *t,
        CommandResult::IdentityRejected(r) => return Err(identity_error(&r)),
        other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    };
    if !role_permissions(hub, &t.tenant, &t.role)?.contains(&needed) {
        return Err(ApiError::Forbidden(format!("role {} lacks permission {}", t.role, needed.name())));
    }
    Ok(t)
}

/// `GET /ws/alerts?ticket=…`.
pub async fn alerts(
    State(hub): State<Hub>,
    q: Result<Query<TicketQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|_| ApiError::Unauthorized("a ticket from POST /api/v1/ws/ticket is required".into()))?;
    let t = consume(&hub, &q.ticket, Permission::AlertsRead).await?;
    Ok(ws
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(4096)
        .on_upgrade(move |socket| feed(hub, t, socket)))
}

/// Why the principal behind a feed's ticket may no longer read alerts, from this node's
/// applied state: its user was deleted or disabled, or its role (the user's current one, or the
/// ticket's for a key or the admin token) lost `alerts:read`. `None` while it may.
fn feed_revoked(hub: &Hub, t: &Ticket) -> Option<&'static str> {
    let role = match &t.user_id {
        Some(uid) => match hub.replica.reader().identity().user(&t.tenant, uid) {
            Ok(Some(u)) if u.disabled => return Some("user disabled"),
            Ok(Some(u)) => u.role,
            Ok(None) => return Some("user deleted"),
            Err(_) => return None, // a storage error is not a revocation
        },
        None => t.role.clone(),
    };
    match role_permissions(hub, &t.tenant, &role) {
        Ok(p) if !p.contains(&Permission::AlertsRead) => Some("permission alerts:read revoked"),
        _ => None,
    }
}

async fn feed(hub: Hub, t: Ticket, mut socket: WebSocket) {
    let mut since = now_ms();
    let mut tick = tokio::time::interval(POLL);
    let stop = hub.life.stop.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = socket.send(close_frame(CLOSE_GOING_AWAY, "node shutting down; reconnect to another node")).await;
                return;
            }
            _ = tick.tick() => {
                if let Some(why) = feed_revoked(&hub, &t) {
                    tracing::info!(tenant = %t.tenant, user = ?t.user_id, why, "closing the alert feed: credentials revoked");
                    let _ = socket.send(close_frame(CLOSE_REVOKED, why)).await;
                    return;
                }
                let Ok(alerts) = hub.replica.reader().fleet().alerts(&t.tenant) else { return };
                let mut newest = since;
                for a in alerts.iter().filter(|a| a.updated_at_ms > since) {
                    newest = newest.max(a.updated_at_ms);
                    let frame = json!({ "type": "alert", "alert": alert_json(a) }).to_string();
                    if socket.send(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                since = newest;
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
