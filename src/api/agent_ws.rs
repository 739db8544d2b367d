//! `GET /ws/agents/{id}`: the agent's WebSocket, accepted on any node.
//!
//! The agent authenticates with its bearer token at the upgrade. The socket carries JSON text
//! frames: from the agent `{"type":"heartbeat","agent_version","sent_at_ms"}` (committed like
//! `POST …/heartbeat`, answered `{"type":"ack","last_seen_ms"}`); from the hub, later, pushed
//! commands (emergency-console tokens). The node keeps a sender per connected agent in
//! `ingest::sockets::Sockets` for those pushes.
//!
//! Every second the socket re-checks the agent's token against this node's applied state: a
//! deleted agent or a rotated token closes it with code 1008 and the reason. A node that stops
//! closes it with 1001, so the agent reconnects to another node.
//!
//! Memory: an idle connection must stay small (thousands per node), so the upgrade uses a 4 KiB
//! read buffer, no write buffering and 64 KiB frame/message limits instead of tungstenite's
//! defaults (128 KiB read buffer, 16 MiB messages).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AgentAuth, CLOSE_GOING_AWAY, CLOSE_REVOKED, SOCKET_RECHECK};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::ingest::service;

/// Largest frame or message accepted from an agent.
const MAX_MESSAGE: usize = 64 * 1024;
/// A frame from the agent.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum AgentFrame {
    Heartbeat { agent_version: String, sent_at_ms: u64 },
}

/// `GET /ws/agents/{id}`.
pub async fn connect(
    State(hub): State<Hub>,
    agent: AgentAuth,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if agent.agent_id != id {
        return Err(ApiError::Forbidden("the agent token belongs to another agent".into()));
    }
    Ok(ws
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(hub, agent, socket)))
}

async fn serve(hub: Hub, agent: AgentAuth, socket: WebSocket) {
    let plane = hub.plane.clone();
    let (tx, mut pushes) = plane.sockets.open(&agent.agent_id);
    tracing::debug!(agent = %agent.agent_id, "agent websocket open");
    let (mut sink, mut stream) = socket.split();
    let mut recheck = tokio::time::interval(SOCKET_RECHECK);
    let stop = hub.life.stop.clone();
    loop {
        tokio::select! {
            _ = recheck.tick() => if let Some(why) = agent.revoked(hub.replica.reader()) {
                tracing::info!(agent = %agent.agent_id, why, "closing the agent websocket: credentials revoked");
                let _ = sink.send(close_frame(CLOSE_REVOKED, why)).await;
                break;
            },
            _ = stop.cancelled() => {
                let _ = sink.send(close_frame(CLOSE_GOING_AWAY, "node shutting down; reconnect to another node")).await;
                break;
            }
            push = pushes.recv() => match push {
                Some(text) => if sink.send(Message::Text(text.into())).await.is_err() { break },
                None => break,
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_frame(&hub, &agent, text.as_str()).await;
                    if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // pings are answered by the protocol layer; binary is ignored
            },
        }
    }
    plane.sockets.close(&agent.agent_id, &tx);
    tracing::debug!(agent = %agent.agent_id, "agent websocket closed");
}

/// A close frame with `code` and `reason`.
pub(crate) fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame { code, reason: reason.to_string().into() }))
}

async fn handle_frame(hub: &Hub, agent: &AgentAuth, text: &str) -> serde_json::Value {
    let frame: AgentFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => return json!({ "type": "error", "code": "invalid_body", "error": e.to_string() }),
    };
    match frame {
        AgentFrame::Heartbeat { agent_version, sent_at_ms } => {
            let hb = monsys_proto::agent::Heartbeat { agent_version, sent_at_ms };
            match service::heartbeat(&hub.plane, agent.id(), hb).await {
                Ok(received_at_ms) => json!({ "type": "ack", "last_seen_ms": received_at_ms }),
                Err(e) => {
                    let e = super::agent_plane::ingest_error(e);
                    let (_, code) = e.status_and_code();
                    json!({ "type": "error", "code": code, "error": e.to_string() })
                }
            }
        }
    }
}
