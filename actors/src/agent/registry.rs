//! The node-local registry of agent actors: spawn on first use, find, stop when idle or when
//! this node no longer owns the agent.
//!
//! Back-pressure: ractor mailboxes are unbounded, so the registry counts each actor's requests
//! in flight and refuses more than [`MAX_IN_FLIGHT_PER_AGENT`] (an agent sends one batch at a
//! time; more means retries piling up) and more than `max_actors` live actors. A request counts
//! from its send until the actor is done with it ([`InFlight`] travels in the message), so a
//! caller that gives up (timeout, closed connection) neither leaks its place nor frees it
//! before the actor has skipped its message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::Mutex;

use super::actor::{AgentActor, AgentMsg, CommitOutcome, Committer, IngestRefusal, IngestRequest};

/// Requests queued or running per agent actor before new ones are refused.
pub const MAX_IN_FLIGHT_PER_AGENT: usize = 8;
/// How long a caller waits for the actor's answer (covers the commit timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// One request's place in an actor's count of requests in flight: taken before the send,
/// given back when the message is dropped (handled, skipped, or the actor stopped).
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Takes a place, unless `limit` are taken.
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<InFlight> {
        if count.fetch_add(1, Ordering::AcqRel) >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Slot<E> {
    actor: ActorRef<AgentMsg<E>>,
    in_flight: Arc<AtomicUsize>,
    last_used: Instant,
}

/// Agent actors living on this node.
pub struct AgentRegistry<C: Committer> {
    committer: Arc<C>,
    max_actors: usize,
    slots: Mutex<HashMap<String, Slot<C::Error>>>,
}

impl<C: Committer> AgentRegistry<C> {
    /// A registry whose actors commit through `committer`.
    pub fn new(committer: Arc<C>, max_actors: usize) -> Self {
        AgentRegistry { committer, max_actors, slots: Mutex::new(HashMap::new()) }
    }

    /// Runs `req` on the agent's actor, spawning it if needed.
    pub async fn ingest(
        &self,
        agent_id: &str,
        req: IngestRequest,
    ) -> Result<CommitOutcome, IngestRefusal<C::Error>> {
        let (actor, in_flight) = self.acquire(agent_id).await?;
        let place = InFlight::take(&in_flight, MAX_IN_FLIGHT_PER_AGENT).ok_or(IngestRefusal::Busy)?;
        let result =
            actor.call(|reply| AgentMsg::Ingest(Box::new(req), reply, place), Some(CALL_TIMEOUT)).await;
        match result {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(IngestRefusal::Timeout),
            Ok(CallResult::SenderError) | Err(_) => {
                self.slots.lock().await.remove(agent_id);
                Err(IngestRefusal::Stopped)
            }
        }
    }

    async fn acquire(
        &self,
        agent_id: &str,
    ) -> Result<(ActorRef<AgentMsg<C::Error>>, Arc<AtomicUsize>), IngestRefusal<C::Error>> {
        let mut slots = self.slots.lock().await;
        if let Some(slot) = slots.get_mut(agent_id) {
            slot.last_used = Instant::now();
            return Ok((slot.actor.clone(), slot.in_flight.clone()));
        }
        if slots.len() >= self.max_actors {
            return Err(IngestRefusal::Busy);
        }
        let (actor, _) = Actor::spawn(None, AgentActor::new(self.committer.clone()), ())
            .await
            .map_err(|_| IngestRefusal::Stopped)?;
        tracing::debug!(agent_id, "agent actor started");
        let in_flight = Arc::new(AtomicUsize::new(0));
        slots.insert(
            agent_id.to_string(),
            Slot { actor: actor.clone(), in_flight: in_flight.clone(), last_used: Instant::now() },
        );
        Ok((actor, in_flight))
    }

    /// Stops the actors of agents for which `keep` is false (hand-off after a membership change)
    /// and those idle for longer than `idle`. Returns how many were stopped.
    pub async fn retain(&self, idle: Duration, keep: impl Fn(&str) -> bool) -> usize {
        let mut slots = self.slots.lock().await;
        let before = slots.len();
        slots.retain(|id, slot| {
            let busy = slot.in_flight.load(Ordering::Acquire) > 0;
            let alive = busy || (keep(id) && slot.last_used.elapsed() < idle);
            if !alive {
                slot.actor.stop(Some("idle or moved".into()));
            }
            alive
        });
        before - slots.len()
    }

    /// Agent ids with a live actor here.
    pub async fn agents(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.slots.lock().await.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Stops every actor (node shutdown).
    pub async fn stop_all(&self) {
        for (_, slot) in self.slots.lock().await.drain() {
            slot.actor.stop(Some("shutdown".into()));
        }
    }
}
