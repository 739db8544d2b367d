//! `cargo bench --bench tsdb`: the telemetry layout inside a real state machine (sled, one
//! node, no network), printing each figure next to its target:
//!
//! 1. stored bytes per sample for host metrics read by the agent's own collectors from this
//!    machine's /proc (`TSDB_READINGS` readings, default 40, taken `TSDB_READING_MS` apart,
//!    default 1000, stamped 15 s apart; `TSDB_READING_MS=15000` reads at the agent's real
//!    interval in 10 minutes), and for worst-case random values;
//! 2. samples applied per second (group commits of `TSDB_GROUP` batches of ~50 samples);
//! 3. p50/p99 of a 24 h query of one agent's CPU at 1m, and of a 7-day fleet top-10 over
//!    `TSDB_FLEET_AGENTS` agents (default 100) reporting every 5 minutes.
//!
//! Every phase is bounded in count; data lives in a temp dir.

use std::time::{Duration, Instant};

use monsys_proto::agent::metric;
use monsys_raft::fleet::{
    EnrollmentToken, FleetCommand, FleetResult, GroupItem, IngestItem, Registration, Resolution, Stat,
};
use monsys_raft::{Command, CommandResult, Options, StateMachineStore, StateReader, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

mod common;

use common::{env, pct};

const T: &str = "default";
const T0: u64 = 1_764_000_000_000;

struct Sm {
    sm: StateMachineStore,
    reader: StateReader,
    next: u64,
    _dir: tempfile::TempDir,
}

impl Sm {
    async fn open() -> Sm {
        let dir = tempfile::tempdir().unwrap();
        let s = monsys_raft::open(dir.path(), &Options::default()).await.unwrap();
        Sm { sm: s.sm, reader: s.reader, next: 1, _dir: dir }
    }

    async fn apply(&mut self, cmds: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<Entry<TypeConfig>> = cmds
            .into_iter()
            .map(|cmd| {
                let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.next);
                self.next += 1;
                Entry { log_id, payload: EntryPayload::Normal(cmd) }
            })
            .collect();
        self.sm.apply(entries).await.unwrap()
    }

    /// Registers `n` agents; returns their ids.
    async fn agents(&mut self, n: usize) -> Vec<String> {
        let token = EnrollmentToken {
            id: "bench".into(),
            tenant: T.into(),
            name: "bench".into(),
            sha256: [1; 32],
            created_at_ms: 1,
            expires_at_ms: None,
            max_uses: None,
            uses: 0,
            revoked: false,
        };
        self.apply(vec![Command::Fleet(FleetCommand::CreateEnrollmentToken(token))]).await;
        let regs = (0..n)
            .map(|i| {
                let mut sha = [0u8; 32];
                sha[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                Command::Fleet(FleetCommand::Register(Registration {
                    enrollment_sha256: [1; 32],
                    new_agent_id: format!("agent-{i:05}"),
                    machine_id: format!("machine-{i}"),
                    hostname: format!("host-{i}"),
                    pubkey: None,
                    token_sha256: sha,
                    agent_version: "1.0.0".into(),
                    os: "linux".into(),
                    arch: "x86_64".into(),
                    at_ms: 1,
                }))
            })
            .collect();
        self.apply(regs).await;
        (0..n).map(|i| format!("agent-{i:05}")).collect()
    }
}

fn item(agent: &str, seq: u64, at_ms: u64, samples: Vec<(String, f64)>) -> GroupItem {
    GroupItem::Batch(Box::new(IngestItem {
        tenant: T.into(),
        agent_id: agent.into(),
        seq,
        body_sha256: [seq as u8; 32],
        collected_at_ms: at_ms,
        received_at_ms: at_ms,
        verified_with: None,
        agent_version: "1.0.0".into(),
        samples,
        inventory_json: None,
        processes_json: None,
        agent_alerts: vec![],
        fire: vec![],
        clear: vec![],
    }))
}

/// Host-like samples (50 series) for batch `i` of agent `a`: counters, gauges, constants.
fn synthetic(a: usize, i: u64) -> Vec<(String, f64)> {
    let wobble = |k: u64| ((i * 7919 + k * 104_729 + a as u64 * 13) % 1000) as f64 / 10.0;
    let mut s = vec![
        (metric::CPU_PERCENT.to_string(), wobble(1) * 0.8 + a as f64 % 20.0),
        (metric::LOAD1.to_string(), (wobble(2) / 25.0 * 100.0).round() / 100.0),
        (metric::MEM_TOTAL_BYTES.to_string(), 16.0e9),
        (metric::MEM_USED_BYTES.to_string(), 6.0e9 + (wobble(3) * 1e6).round() * 4096.0),
        (metric::UPTIME_SECS.to_string(), 86_400.0 + i as f64 * 15.0),
    ];
    for c in 0..45 {
        s.push((format!("{}{{core=\"{c}\"}}", metric::CPU_CORE_PERCENT), wobble(10 + c)));
    }
    s
}

fn samples_of(batch: &[monsys_proto::agent::Sample]) -> Vec<(String, f64)> {
    batch.iter().map(|s| (s.series_key(), s.value)).collect()
}

/// Raw bytes stored per sample for `batches` of one agent.
async fn bytes_per_sample(batches: &[(u64, Vec<(String, f64)>)]) -> f64 {
    let mut sm = Sm::open().await;
    let id = sm.agents(1).await.remove(0);
    let mut n = 0usize;
    let mut cmds = Vec::new();
    for (seq, (at, s)) in batches.iter().enumerate() {
        n += s.len();
        cmds.push(Command::Fleet(FleetCommand::Group(
            vec![item(&id, seq as u64 + 1, *at, s.clone())].into(),
        )));
    }
    sm.apply(cmds).await;
    // seal the open window (the leader's retention job does this for idle agents)
    let last = batches.last().map_or(T0, |b| b.0);
    sm.apply(vec![Command::Fleet(FleetCommand::Expire { at_ms: last + 30 * 60_000 })]).await;
    let bytes = sm.reader.fleet().telemetry_bytes().unwrap().get(T).copied().unwrap_or_default();
    bytes[0] as f64 / n.max(1) as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let readings = env("TSDB_READINGS", 40);
    let reading_ms = env("TSDB_READING_MS", 1000) as u64;
    let group = env("TSDB_GROUP", 100);
    let apply_batches = env("TSDB_APPLY_BATCHES", 20_000);
    let fleet_agents = env("TSDB_FLEET_AGENTS", 100);
    let queries = env("TSDB_QUERIES", 200);
    let series = env("TSDB_SERIES", 50);
    println!(
        "tsdb benchmark: readings={readings} group={group} apply_batches={apply_batches} fleet_agents={fleet_agents}"
    );
    println!();
    println!("{:<58} {:>14} {:>12}", "figure", "measured", "target");

    // 1. bytes per sample: the agent's collectors on this machine, then random values
    let mut collector = monsys_agent::collect::Collector::new("/proc");
    collector.collect(T0 - 1000);
    let mut host = Vec::new();
    let started = Instant::now();
    for i in 0..readings as u64 {
        tokio::time::sleep(Duration::from_millis(reading_ms)).await;
        let wall = T0 + (started.elapsed().as_millis() as u64);
        let (samples, _) = collector.collect(wall);
        host.push((T0 + i * 15_000 + (wall % 20), samples_of(&samples)));
    }
    let per_batch = host.first().map_or(0, |b| b.1.len());
    let host_bps = bytes_per_sample(&host).await;
    println!(
        "{:<58} {:>14} {:>12}",
        format!("bytes/sample, host metrics ({per_batch} series, /proc every {reading_ms} ms)"),
        format!("{host_bps:.2}"),
        "<= 2.00"
    );
    // the peer: the same samples as plain Gorilla chunks (Prometheus' and the paper's encoding)
    let mut by_series: std::collections::BTreeMap<&str, Vec<(u64, f64)>> = Default::default();
    for (at, samples) in &host {
        for (k, v) in samples {
            by_series.entry(k.as_str()).or_default().push((*at, *v));
        }
    }
    let gorilla: usize = by_series
        .values()
        .map(|s| monsys_tsdb::Chunk::from_samples(s).map_or(0, |c| c.to_bytes().len()))
        .sum();
    let n: usize = by_series.values().map(Vec::len).sum();
    let gorilla_bps = gorilla as f64 / n.max(1) as f64;
    println!(
        "{:<58} {:>14} {:>12}",
        "bytes/sample, same samples as bare Gorilla chunks (peer)",
        format!("{gorilla_bps:.2}"),
        "(peer)"
    );
    println!(
        "{:<58} {:>14} {:>12}",
        "ratio stored/Gorilla (blocks, keys and ids included)",
        format!("{:.2}", host_bps / gorilla_bps),
        "(report)"
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let random: Vec<(u64, Vec<(String, f64)>)> = (0..240u64)
        .map(|i| {
            (
                T0 + i * 15_000 + rnd() % 2000,
                (0..50).map(|s| (format!("r{s}"), f64::from_bits(rnd()))).collect(),
            )
        })
        .collect();
    println!(
        "{:<58} {:>14} {:>12}",
        "bytes/sample, worst case (random 64-bit values)",
        format!("{:.2}", bytes_per_sample(&random).await),
        "(report)"
    );

    // 2. apply throughput
    let mut sm = Sm::open().await;
    let agents = sm.agents(1000).await;
    let mut cmds = Vec::new();
    let mut samples = 0usize;
    for g in 0..apply_batches.div_ceil(group) {
        let items: Vec<GroupItem> = (0..group)
            .map(|k| {
                let n = g * group + k;
                let (a, i) = (n % agents.len(), (n / agents.len()) as u64);
                let mut s = synthetic(a, i);
                s.truncate(series);
                samples += s.len();
                item(&agents[a], i + 1, T0 + i * 15_000, s)
            })
            .collect();
        cmds.push(Command::Fleet(FleetCommand::Group(items.into())));
    }
    let mut chunks: Vec<Vec<Command>> = Vec::new();
    let mut cmds = cmds.into_iter().peekable();
    while cmds.peek().is_some() {
        chunks.push(cmds.by_ref().take(16).collect());
    }
    let t = Instant::now();
    for chunk in chunks {
        let out = sm.apply(chunk).await;
        assert!(out.iter().all(|r| matches!(r, CommandResult::Fleet(FleetResult::Group(_)))), "{out:?}");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<58} {:>14} {:>12}",
        format!("samples/s applied on one node ({} batches)", apply_batches),
        format!("{:.0}", samples as f64 / secs),
        ">= 1000000"
    );
    println!(
        "{:<58} {:>14} {:>12}",
        format!("µs per batch applied ({series} samples)"),
        format!("{:.1}", secs * 1e6 / apply_batches as f64),
        "(report)"
    );
    drop(sm);
    if std::env::var("TSDB_ONLY_APPLY").is_ok() {
        return;
    }

    // 3a. 24 h of one agent at 15 s, then its CPU at 1m
    let mut sm = Sm::open().await;
    let id = sm.agents(1).await.remove(0);
    let day: Vec<Command> = (0..5760u64)
        .collect::<Vec<_>>()
        .chunks(group)
        .map(|c| {
            Command::Fleet(FleetCommand::Group(
                c.iter().map(|i| item(&id, i + 1, T0 + i * 15_000, synthetic(0, *i))).collect(),
            ))
        })
        .collect();
    sm.apply(day).await;
    let fleet = sm.reader.fleet();
    let cpu = fleet.series(T, &id).unwrap().iter().position(|s| s == metric::CPU_PERCENT).unwrap() as u32;
    let mut lat = Vec::new();
    for _ in 0..queries {
        let t = Instant::now();
        let b = fleet.rollup_series(Resolution::M1, T, &id, cpu, T0, T0 + 86_400_000).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(b.len(), 1440);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "{:<58} {:>14} {:>12}",
        "query 24 h of CPU at 1m, p50 ms",
        format!("{:.2}", pct(&lat, 0.5)),
        "(report)"
    );
    println!(
        "{:<58} {:>14} {:>12}",
        "query 24 h of CPU at 1m, p99 ms",
        format!("{:.2}", pct(&lat, 0.99)),
        "<= 20"
    );
    drop(sm);

    // 3b. 7 days of a fleet every 5 minutes, top-10 by CPU at 1h
    let mut sm = Sm::open().await;
    let agents = sm.agents(fleet_agents).await;
    let per_agent = 7 * 288u64;
    let mut cmds = Vec::new();
    for i in 0..per_agent {
        let items: Vec<GroupItem> = agents
            .iter()
            .enumerate()
            .map(|(a, id)| item(id, i + 1, T0 + i * 300_000, synthetic(a, i)))
            .collect();
        cmds.push(Command::Fleet(FleetCommand::Group(items.into())));
        if cmds.len() == 16 {
            sm.apply(std::mem::take(&mut cmds)).await;
        }
    }
    sm.apply(cmds).await;
    let fleet = sm.reader.fleet();
    let mut lat = Vec::new();
    for _ in 0..queries.min(50) {
        let t = Instant::now();
        let mut top = fleet
            .metric_by_agent(T, metric::CPU_PERCENT, Resolution::H1, T0, T0 + 7 * 86_400_000, Stat::Avg)
            .unwrap();
        top.sort_by(|a, b| Stat::Avg.of(&b.2).total_cmp(&Stat::Avg.of(&a.2)));
        top.truncate(10);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(top.len(), 10.min(fleet_agents));
    }
    lat.sort_by(f64::total_cmp);
    let label = format!("7-day fleet top-10 by CPU ({fleet_agents} agents), p50 ms");
    println!("{:<58} {:>14} {:>12}", label, format!("{:.2}", pct(&lat, 0.5)), "(report)");
    let label = format!("7-day fleet top-10 by CPU ({fleet_agents} agents), p99 ms");
    println!("{:<58} {:>14} {:>12}", label, format!("{:.2}", pct(&lat, 0.99)), "(report)");
}
