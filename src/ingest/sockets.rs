//! Agents connected to this node by WebSocket, and the push channel to each.
//!
//! `api::agent_ws` opens and closes entries; anything on the node that needs to reach an agent
//! it owns (console tokens, remote commands) pushes through [`Sockets::push`]. A reconnect
//! replaces the entry; the closing socket removes only its own entry.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// Pushes queued per socket before new ones are refused.
pub const PUSH_QUEUE: usize = 8;

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

    /// Registers a newly opened socket of `agent_id` (replacing an older one) and returns the
    /// receiving end of its push channel.
    pub fn open(&self, agent_id: &str) -> (mpsc::Sender<String>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        self.by_agent.lock().expect("sockets lock").insert(agent_id.to_string(), tx.clone());
        (tx, rx)
    }

    /// Forgets the socket of `agent_id` whose push channel is `tx`, unless a newer socket of the
    /// same agent has replaced it.
    pub fn close(&self, agent_id: &str, tx: &mpsc::Sender<String>) {
        let mut map = self.by_agent.lock().expect("sockets lock");
        if map.get(agent_id).is_some_and(|current| current.same_channel(tx)) {
            map.remove(agent_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_socket_does_not_remove_its_replacement() {
        let sockets = Sockets::default();
        let (old, _old_rx) = sockets.open("a");
        let (_new, mut new_rx) = sockets.open("a");
        sockets.close("a", &old);
        assert_eq!(sockets.connected(), 1);
        assert!(sockets.push("a", "hi".into()));
        assert_eq!(new_rx.try_recv().unwrap(), "hi");
        assert!(!sockets.push("b", "x".into()), "not connected");
    }
}
