//! `GET /ws/agents/{id}`: the agent's WebSocket, accepted on any node.
//!
//! The agent authenticates with its bearer token at the upgrade. The socket carries JSON text
//! frames: from the agent `{"type":"heartbeat","agent_version","sent_at_ms"}` (committed like
//! `POST …/heartbeat`, answered `{"type":"ack","last_seen_ms"}`); from the hub, later, pushed
//! commands (emergency-console tokens). The node keeps a sender per connected agent in
//! [`Sockets`] for those pushes.
//!
//! Memory: an idle connection must stay small (thousands per node), so the upgrade uses a 4 KiB
//! read buffer, no write buffering and 64 KiB frame/message limits instead of tungstenite's
//! defaults (128 KiB read buffer, 16 MiB messages).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use monsys_raft::fleet::{GroupItem, HeartbeatItem, ItemOutcome};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::extract::AgentAuth;
use super::settings::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;

/// Largest frame or message accepted from an agent.
const MAX_MESSAGE: usize = 64 * 1024;
/// Pushes queued per socket before new ones are refused.
const PUSH_QUEUE: usize = 8;

/// Agents connected to this node by WebSocket: agent id → push channel.
#[derive(Default)]
pub struct Sockets {
    by_agent: Mutex<HashMap<String, mpsc::Sender<String>>>,
}

impl Sockets {
    /// Agents connected here.
    pub fn connected(&self) -> usize {
        self.by_agent.lock().expect("sockets lock").len()
    }

    /// Queues a text frame for a connected agent; false if it is not connected here or its
    /// queue is full.
    pub fn push(&self, agent_id: &str, text: String) -> bool {
        let map = self.by_agent.lock().expect("sockets lock");
        map.get(agent_id).is_some_and(|tx| tx.try_send(text).is_ok())
    }
}

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
    hub.plane()?;
    Ok(ws
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(hub, agent, socket)))
}

async fn serve(hub: Hub, agent: AgentAuth, socket: WebSocket) {
    let Ok(plane) = hub.plane().cloned() else { return };
    let (tx, mut pushes) = mpsc::channel::<String>(PUSH_QUEUE);
    plane.sockets.by_agent.lock().expect("sockets lock").insert(agent.agent_id.clone(), tx.clone());
    tracing::debug!(agent = %agent.agent_id, "agent websocket open");
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
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
    let mut map = plane.sockets.by_agent.lock().expect("sockets lock");
    if map.get(&agent.agent_id).is_some_and(|current| current.same_channel(&tx)) {
        map.remove(&agent.agent_id);
    }
    tracing::debug!(agent = %agent.agent_id, "agent websocket closed");
}

async fn handle_frame(hub: &Hub, agent: &AgentAuth, text: &str) -> serde_json::Value {
    let frame: AgentFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => return json!({ "type": "error", "code": "invalid_body", "error": e.to_string() }),
    };
    match frame {
        AgentFrame::Heartbeat { agent_version, sent_at_ms } => {
            if agent_version.is_empty() || agent_version.len() > 64 {
                return json!({ "type": "error", "code": "invalid_body", "error": "agent_version: 1-64 bytes" });
            }
            let received_at_ms = now_ms();
            let item = HeartbeatItem {
                tenant: agent.tenant.clone(),
                agent_id: agent.agent_id.clone(),
                received_at_ms,
                sent_at_ms,
                agent_version,
            };
            let result = match hub.plane() {
                Ok(plane) => plane.group.submit(GroupItem::Heartbeat(item)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ItemOutcome::Seen) => json!({ "type": "ack", "last_seen_ms": received_at_ms }),
                Ok(other) => {
                    json!({ "type": "error", "code": "unauthorized", "error": format!("{other:?}") })
                }
                Err(e) => {
                    let (_, code) = e.status_and_code();
                    json!({ "type": "error", "code": code, "error": e.to_string() })
                }
            }
        }
    }
}
