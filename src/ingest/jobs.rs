//! Background jobs of the agent plane.
//!
//! - every node, for the agents it owns: silent-agent detection ([`OFFLINE_SWEEP`]) and the
//!   clean-up of idle or moved actors ([`ACTOR_SWEEP`]);
//! - the Raft leader only: retention ([`EXPIRE_EVERY`]) and the integrity checker. A job on a node that just lost
//!   leadership proposes at most once more; the state machine makes each proposal idempotent
//!   (an offline firing carries the `last_seen` it saw and is dropped if the agent spoke since;
//!   expiry deletes what is expired at the proposer's time).

use std::time::Duration;

use monsys_actors::ActorKey;
use monsys_raft::Command;
use monsys_raft::fleet::{EXPIRE_BATCH, FleetCommand, FleetResult, OfflineFiring};

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::routing::owner::{Placement, place};

/// Interval of the silent-agent sweep.
pub const OFFLINE_SWEEP: Duration = Duration::from_secs(5);
/// Interval of the actor clean-up.
pub const ACTOR_SWEEP: Duration = Duration::from_secs(30);
/// An actor idle this long is stopped (rebuilt on the next batch).
pub const ACTOR_IDLE: Duration = Duration::from_secs(600);
/// Interval of the retention job.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Most offline firings per proposal.
const OFFLINE_BATCH: usize = 500;

/// Starts the jobs; they stop when the node stops.
pub fn spawn(hub: Hub) {
    let every = |period: Duration, job: fn(Hub) -> futures::future::BoxFuture<'static, ()>| {
        let worker = hub.clone();
        hub.life.spawn_until_stop(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                job(worker.clone()).await;
            }
        });
    };
    every(OFFLINE_SWEEP, |hub| Box::pin(sweep_offline(hub)));
    every(ACTOR_SWEEP, |hub| Box::pin(sweep_actors(hub)));
    every(EXPIRE_EVERY, |hub| Box::pin(expire(hub)));
    every(super::integrity::WAKE, |hub| Box::pin(integrity(hub)));
}

fn owned_here(hub: &Hub, agent_id: &str) -> bool {
    matches!(place(hub, &ActorKey::Agent(agent_id.to_string())), Ok(Placement::Local))
}

/// Fires `offline` for owned agents silent longer than their tenant's setting.
async fn sweep_offline(hub: Hub) {
    if hub.replica.leader().is_none() {
        return;
    }
    let fleet = hub.replica.reader().fleet();
    let Ok(agents) = fleet.all_agents() else { return };
    let now = now_ms();
    let mut firings = Vec::new();
    for a in agents {
        let Ok(settings) = hub.replica.reader().settings(&a.tenant) else { continue };
        let limit = u64::from(settings.settings.agent_offline_after_secs) * 1000;
        if now.saturating_sub(a.last_seen_ms) <= limit || !owned_here(&hub, &a.id) {
            continue;
        }
        if fleet.open_alerts(&a.tenant, &a.id).is_ok_and(|open| open.contains_key("offline")) {
            continue;
        }
        firings.push(OfflineFiring {
            tenant: a.tenant,
            agent_id: a.id,
            last_seen_ms: a.last_seen_ms,
            at_ms: now,
        });
    }
    for chunk in firings.chunks(OFFLINE_BATCH) {
        match hub.replica.propose(Command::Fleet(FleetCommand::FireOffline(chunk.to_vec()))).await {
            Ok(r) => tracing::info!(?r, candidates = chunk.len(), "offline sweep"),
            Err(e) => tracing::warn!(error = %e, "offline sweep not committed; next sweep retries"),
        }
    }
}

async fn sweep_actors(hub: Hub) {
    let stopped = hub.plane.registry.retain(ACTOR_IDLE, |id| owned_here(&hub, id)).await;
    if stopped > 0 {
        tracing::debug!(stopped, "agent actors stopped (idle or moved)");
    }
}

/// Runs the integrity checker when this node leads and the interval has passed.
async fn integrity(hub: Hub) {
    let plane = hub.plane.clone();
    use std::sync::atomic::Ordering;
    if !hub.replica.is_leader() {
        return;
    }
    let Ok(settings) = hub.replica.reader().settings(monsys_proto::DEFAULT_TENANT) else { return };
    let interval = u64::from(settings.settings.integrity_check_interval_secs) * 1000;
    let now = now_ms();
    if now.saturating_sub(plane.integrity_last_ms.load(Ordering::Relaxed)) < interval {
        return;
    }
    plane.integrity_last_ms.store(now, Ordering::Relaxed);
    let found = super::integrity::run_once(&hub).await;
    tracing::info!(found, "integrity check done");
}

/// Deletes expired telemetry, a bounded number of keys per entry.
async fn expire(hub: Hub) {
    if !hub.replica.is_leader() {
        return;
    }
    for _ in 0..50 {
        match hub.replica.write(Command::Fleet(FleetCommand::Expire { at_ms: now_ms() })).await {
            Ok(monsys_raft::CommandResult::Fleet(FleetResult::Count(n))) if n as usize >= EXPIRE_BATCH => {
                continue;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "retention job failed; next run retries");
                return;
            }
        }
    }
}
