//! Prometheus metrics of one node (`GET /metrics`).
//!
//! Each node owns its own recorder (not the process-global one) so that several nodes in one
//! test process keep separate figures. Counters are recorded through [`NodeMetrics::record`];
//! Raft and gossip gauges are sampled when the page is rendered.
//!
//! Upkeep: the recorder keeps every histogram sample recorded since it last folded them into
//! their summaries, which it does on a render or an upkeep. A hub that nobody scrapes would
//! grow with every request it answers, so each node runs [`Upkeeper::run`] every
//! [`UPKEEP_EVERY`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use monsys_raft::RaftMetrics;

/// How often pending histogram samples are folded into their summaries.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The metrics registry of one node.
pub struct NodeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    upkeeps: Arc<AtomicU64>,
}

/// Folds a registry's pending histogram samples periodically (see the module doc).
pub struct Upkeeper {
    handle: PrometheusHandle,
    upkeeps: Arc<AtomicU64>,
}

impl Upkeeper {
    /// Runs the upkeep every `every` until `stop` is cancelled.
    pub async fn run(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.handle.run_upkeep();
                    self.upkeeps.fetch_add(1, Ordering::Relaxed);
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// A registry with every metric described (help text), none recorded yet.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = NodeMetrics { recorder, handle, upkeeps: Default::default() };
        m.record(describe_all);
        m
    }

    /// The task body that keeps this registry's memory bounded (spawn it once per node).
    pub fn upkeeper(&self) -> Upkeeper {
        Upkeeper { handle: self.handle.clone(), upkeeps: self.upkeeps.clone() }
    }

    /// How many upkeeps ran.
    pub fn upkeeps(&self) -> u64 {
        self.upkeeps.load(Ordering::Relaxed)
    }

    /// Runs `f` with this node's recorder installed (for the `metrics` macros inside it).
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Counts one finished HTTP request.
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let (route, method, status) = (route.to_string(), method.to_string(), status.to_string());
        self.record(|| {
            counter!("monsys_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
                .increment(1);
            metrics::histogram!("monsys_http_request_duration_seconds", "route" => route).record(seconds);
        });
    }

    /// Counts one request forwarded to another node.
    pub fn forwarded(&self, target: &'static str, outcome: &'static str) {
        self.record(|| {
            counter!("monsys_forwarded_requests_total", "target" => target, "outcome" => outcome).increment(1)
        });
    }

    /// Counts one group commit of `items` batches/heartbeats.
    pub fn group_committed(&self, items: usize) {
        self.record(|| {
            counter!("monsys_ingest_groups_total").increment(1);
            counter!("monsys_ingest_group_items_total").increment(items as u64);
        });
    }

    /// Counts one ingest request by outcome (`stored`, `duplicate`, `seq_conflict`, …).
    pub fn ingest(&self, outcome: &'static str) {
        self.record(|| counter!("monsys_ingest_batches_total", "outcome" => outcome).increment(1));
    }

    /// Samples the local actor count, the stored telemetry bytes per tenant and resolution,
    /// and the open telemetry windows held in memory (`heads`: agents, bytes).
    pub fn fleet_gauges(
        &self,
        actors: usize,
        telemetry: &std::collections::BTreeMap<String, [i64; 4]>,
        heads: (usize, usize),
    ) {
        self.record(|| {
            gauge!("monsys_agent_actors").set(actors as f64);
            gauge!("monsys_telemetry_heads").set(heads.0 as f64);
            gauge!("monsys_telemetry_head_bytes").set(heads.1 as f64);
            for (tenant, bytes) in telemetry {
                for (res, b) in ["raw", "1m", "5m", "1h"].into_iter().zip(bytes) {
                    gauge!("monsys_telemetry_bytes", "tenant" => tenant.clone(), "resolution" => res)
                        .set(*b as f64);
                }
            }
        });
    }

    /// Counts one change of the leader seen by this node.
    pub fn leader_changed(&self) {
        self.record(|| counter!("monsys_raft_leader_changes_total").increment(1));
    }

    /// Renders the exposition text, sampling Raft and gossip gauges first.
    pub fn render(&self, raft: &RaftMetrics, live_members: usize) -> String {
        self.record(|| {
            gauge!("monsys_raft_term").set(raft.current_term as f64);
            gauge!("monsys_raft_last_log_index").set(raft.last_log_index.unwrap_or(0) as f64);
            gauge!("monsys_raft_applied_index").set(raft.last_applied.map(|l| l.index).unwrap_or(0) as f64);
            gauge!("monsys_raft_snapshot_index").set(raft.snapshot.map(|l| l.index).unwrap_or(0) as f64);
            gauge!("monsys_raft_is_leader").set(if raft.current_leader == Some(raft.id) { 1.0 } else { 0.0 });
            gauge!("monsys_raft_voters").set(raft.membership_config.membership().voter_ids().count() as f64);
            gauge!("monsys_gossip_live_members").set(live_members as f64);
        });
        self.handle.render()
    }
}

fn describe_all() {
    describe_counter!("monsys_http_requests_total", "HTTP requests answered, by route, method and status.");
    describe_histogram!(
        "monsys_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_counter!(
        "monsys_forwarded_requests_total",
        "Requests forwarded to another node, by target (leader, owner) and outcome."
    );
    describe_counter!(
        "monsys_raft_leader_changes_total",
        "Changes of the Raft leader observed by this node."
    );
    describe_counter!(
        "monsys_ingest_groups_total",
        "Group commits (Raft entries) of agent batches proposed by this node."
    );
    describe_counter!(
        "monsys_ingest_group_items_total",
        "Batches and heartbeats carried by this node's group commits."
    );
    describe_counter!(
        "monsys_ingest_batches_total",
        "Ingest requests handled by this node as owner, by outcome."
    );
    describe_gauge!("monsys_agent_actors", "Agent actors alive on this node.");
    describe_gauge!(
        "monsys_telemetry_bytes",
        "Bytes of stored telemetry blocks (keys and values) in this replica, by tenant and resolution."
    );
    describe_gauge!(
        "monsys_telemetry_heads",
        "Agents with an open telemetry window held in memory on this node."
    );
    describe_gauge!(
        "monsys_telemetry_head_bytes",
        "Bytes of open telemetry windows (head blocks) held in memory on this node."
    );
    describe_gauge!("monsys_raft_term", "Current Raft term.");
    describe_gauge!("monsys_raft_last_log_index", "Index of the last entry in this node's Raft log.");
    describe_gauge!("monsys_raft_applied_index", "Index of the last entry applied to the state machine.");
    describe_gauge!("monsys_raft_snapshot_index", "Last log index covered by this node's latest snapshot.");
    describe_gauge!("monsys_raft_is_leader", "1 when this node is the Raft leader.");
    describe_gauge!("monsys_raft_voters", "Voters in the Raft configuration as known to this node.");
    describe_gauge!("monsys_gossip_live_members", "Members gossip currently sees alive, this node included.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upkeep_runs_until_shutdown_and_keeps_the_counts() {
        let m = NodeMetrics::new();
        for _ in 0..1000 {
            m.http_request("/api/v1/ingest", "POST", 200, 0.002);
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(m.upkeeper().run(Duration::from_millis(10), stop.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while m.upkeeps() < 3 {
            assert!(std::time::Instant::now() < deadline, "upkeep did not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("upkeep stops on shutdown").unwrap();
        let page = m.handle.render();
        assert!(
            page.lines()
                .any(|l| l.starts_with("monsys_http_request_duration_seconds_count") && l.ends_with(" 1000")),
            "{page}"
        );
    }
}
