//! `monsys-jepsen`: starts a cluster of real `monsys hub` processes (one network namespace per
//! node when the machine allows it), runs concurrent clients against every node while a
//! nemesis injects faults, records every operation, and checks the history: linearizability of
//! the settings compare-and-set register and convergence of every node after healing.
//!
//! `run` writes `history.jsonl`, `summary.json` and `verdict.txt` into `--out` and exits 0 when
//! valid, 1 when invalid, 2 when the checker could not decide or the run failed. `upgrade`
//! replaces the binary of every node in turn under load (the `upgrade` module) and is judged
//! the same way. `check` re-checks a saved history.

mod checker;
mod cluster;
mod harness;
mod history;
mod ingest;
mod nemesis;
mod net;
mod unavailability;
mod until;
mod upgrade;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::cluster::Cluster;
use crate::harness::Env;
use crate::nemesis::Fault;
use crate::until::Until;

#[derive(Parser)]
#[command(name = "monsys-jepsen", about = "Chaos runs against real monsys clusters")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a workload under faults and check it.
    Run(RunArgs),
    /// Rolling upgrade (or upgrade and back) from an older binary under load, then check it.
    Upgrade(upgrade::UpgradeArgs),
    /// Re-check a saved history.
    Check {
        /// history.jsonl of a run.
        history: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// `netns`, `process` or `auto` (netns when possible).
    #[arg(long, default_value = "auto")]
    mode: String,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Faults, comma-separated: kill, kill-leader, pause, partition-majority, partition-leader,
    /// partition-bridge, netem, rolling-restart; `none` for none.
    #[arg(
        long,
        default_value = "kill-leader,pause,partition-majority,partition-leader,partition-bridge,netem,kill,rolling-restart"
    )]
    nemesis: String,
    /// Seconds between fault injections.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Seconds a fault lasts.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// The monsys binary.
    #[arg(long, default_value = "target/release/monsys")]
    binary: PathBuf,
    /// Results folder (default: jepsen/results/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Simulated agents sending signed batches during the run (0: no ingest workload).
    #[arg(long, default_value_t = 0)]
    agents: usize,
    /// Run the deliberately broken build (acknowledges settings writes before commit).
    #[arg(long)]
    unsafe_ack_before_commit: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let code = match cli.command {
        Cmd::Check { history } => {
            let h = history::read(&history)?;
            let v = checker::check(&h, (0, 15));
            println!("{} operations: {v:?}", h.len());
            harness::exit_code(&v, true)
        }
        Cmd::Run(args) => rt.block_on(run(args))?,
        Cmd::Upgrade(args) => rt.block_on(upgrade::run(args))?,
    };
    std::process::exit(code)
}

async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let faults: Vec<Fault> = if args.nemesis == "none" {
        vec![]
    } else {
        args.nemesis
            .split(',')
            .map(|f| Fault::parse(f.trim()).ok_or_else(|| anyhow::anyhow!("unknown fault {f}")))
            .collect::<Result<_, _>>()?
    };
    let binary = harness::binary(&args.binary)?;
    let env = Env::prepare(&args.mode, args.nodes, args.out.clone())?;
    let (mode, out, data) = (env.mode, env.out.clone(), env.data.clone());
    let has_net = env.net.is_some();
    let faults = nemesis::supported(&faults, mode);
    let result = async {
        let cluster = Cluster::start(binary, args.nodes, mode, &data, args.unsafe_ack_before_commit, vec![])?;
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
        let cluster = Arc::new(Mutex::new(cluster));
        harness::wait_formed(&urls, args.nodes, Duration::from_secs(60)).await?;
        println!("cluster of {} ready ({mode:?}); running {}s with {:?}", args.nodes, args.time_limit, faults);

        let start = Instant::now();
        let deadline = start + Duration::from_secs(args.time_limit);
        let nemesis = {
            let (cluster, faults) = (cluster.clone(), faults.clone());
            let (interval, duration) = (Duration::from_secs(args.interval), Duration::from_secs(args.duration));
            tokio::task::spawn_blocking(move || {
                if faults.is_empty() {
                    return vec![];
                }
                let net = has_net.then(|| net::Net::attach(args.nodes));
                nemesis::run(cluster, net.as_ref(), &faults, start, deadline, interval, duration)
            })
        };
        let ingest_task = if args.agents > 0 {
            let http = reqwest::Client::new();
            ingest::prepare(&http, &urls[0]).await?;
            let (urls, agents) = (urls.clone(), args.agents);
            Some(tokio::spawn(async move {
                ingest::run(urls, agents, start, Until::at(deadline), Duration::from_millis(200)).await
            }))
        } else {
            None
        };
        let history = workload::run(urls.clone(), args.concurrency, start, Until::at(deadline)).await;
        let ingest_runs = match ingest_task {
            Some(t) => Some(t.await??),
            None => None,
        };
        let events = nemesis.await.unwrap_or_default();
        if let Some(n) = &env.net {
            n.heal();
        }
        for i in 0..args.nodes {
            let mut c = cluster.lock().expect("cluster");
            c.resume(i);
            let _ = c.restart(i);
        }
        let judged = harness::judge(&out, &urls, &history, ingest_runs.as_deref()).await?;
        let acks: Vec<ingest::Ack> =
            ingest_runs.iter().flatten().flat_map(|a| a.acks.iter().copied()).collect();
        let windows = fault_windows(&events, &history, &acks, args.time_limit);
        print_fault_windows(&windows);
        let mut summary = json!({
            "mode": format!("{mode:?}"), "nodes": args.nodes, "time_limit_s": args.time_limit, "concurrency": args.concurrency,
            "unsafe_ack_before_commit": args.unsafe_ack_before_commit, "faults": events, "fault_windows": windows,
        });
        harness::merge(&mut summary, harness::summary(&history, &judged, ingest_runs.as_deref()));
        std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
        let text = format!(
            "{}faults injected: {}\n",
            harness::verdict_text(&history, &judged),
            events.iter().filter(|e| e.phase == "inject").count()
        );
        std::fs::write(out.join("verdict.txt"), &text)?;
        println!("{text}results in {}", out.display());
        cluster.lock().expect("cluster").shutdown();
        anyhow::Ok(judged.exit_code())
    }
    .await;
    env.teardown();
    result
}

/// What clients saw from one fault's injection to the next one's (or the end of the run).
#[derive(Debug, serde::Serialize)]
struct FaultWindow {
    at_s: f64,
    fault: nemesis::Fault,
    nodes: Vec<usize>,
    window: unavailability::Window,
}

/// One [`FaultWindow`] per injected fault: for a kill, its longest batch and acknowledgement gap
/// are how long the killed node's agents waited for their next owner (the hand-off).
fn fault_windows(
    events: &[nemesis::Event],
    history: &[history::Record],
    acks: &[ingest::Ack],
    time_limit_s: u64,
) -> Vec<FaultWindow> {
    let injects: Vec<&nemesis::Event> = events.iter().filter(|e| e.phase == "inject").collect();
    let us = |s: f64| (s * 1e6) as u64;
    injects
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let to = injects.get(k + 1).map_or(time_limit_s as f64, |n| n.at_s);
            FaultWindow {
                at_s: e.at_s,
                fault: e.fault,
                nodes: e.nodes.clone(),
                window: unavailability::measure(history, acks, us(e.at_s), us(to)),
            }
        })
        .collect()
}

fn print_fault_windows(windows: &[FaultWindow]) {
    if windows.is_empty() {
        return;
    }
    println!(
        "per fault (until the next one): longest op / gap, longest batch / ack gap, ms (target < {})",
        unavailability::TARGET_MS
    );
    for w in windows {
        let x = &w.window;
        println!(
            "  {:>6.1}s {:<20} nodes {:?}: op {} / gap {}, batch {} / ack gap {}",
            w.at_s,
            format!("{:?}", w.fault),
            w.nodes,
            x.longest_op_ms,
            x.longest_gap_ms,
            x.longest_batch_ms,
            x.longest_ack_gap_ms
        );
    }
}
