//! `monsys-jepsen`: starts a cluster of real `monsys hub` processes (one network namespace per
//! node when the machine allows it), runs concurrent clients against every node while a
//! nemesis injects faults, records every operation, and checks the history: linearizability of
//! the settings compare-and-set register and convergence of every node after healing.
//!
//! `run` writes `history.jsonl`, `summary.json` and `verdict.txt` into `--out` and exits 0 when
//! valid, 1 when invalid, 2 when the checker could not decide or the run failed. `check`
//! re-checks a saved history.

mod checker;
mod cluster;
mod history;
mod ingest;
mod nemesis;
mod net;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::checker::Verdict;
use crate::cluster::{Cluster, Mode};
use crate::nemesis::Fault;

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
            exit_code(&v, true)
        }
        Cmd::Run(args) => rt.block_on(run(args))?,
    };
    std::process::exit(code)
}

fn exit_code(v: &Verdict, converged: bool) -> i32 {
    match v {
        Verdict::Linearizable if converged => 0,
        Verdict::Linearizable | Verdict::NotLinearizable { .. } => 1,
        Verdict::Unknown => 2,
    }
}

async fn wait_ready(urls: &[String], n: usize, wait: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(r) =
            http.get(format!("{}/api/v1/cluster", urls[0])).bearer_auth(cluster::TOKEN).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["members"].as_array().is_some_and(|m| m.iter().filter(|x| x["role"] == "voter").count() == n)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("cluster did not form {n} voters in {wait:?}")
}

async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut mode = match args.mode.as_str() {
        "netns" => Mode::Netns,
        "process" => Mode::Process,
        _ if net::available() => Mode::Netns,
        _ => Mode::Process,
    };
    let faults: Vec<Fault> = if args.nemesis == "none" {
        vec![]
    } else {
        args.nemesis
            .split(',')
            .map(|f| Fault::parse(f.trim()).ok_or_else(|| anyhow::anyhow!("unknown fault {f}")))
            .collect::<Result<_, _>>()?
    };
    let faults = nemesis::supported(&faults, mode);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "jepsen/results/{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ))
    });
    std::fs::create_dir_all(&out)?;
    let data = out.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let binary = std::fs::canonicalize(&args.binary)
        .map_err(|e| anyhow::anyhow!("binary {}: {e}", args.binary.display()))?;

    let net = match mode {
        Mode::Netns => match net::Net::create(args.nodes) {
            Ok(n) => Some(n),
            Err(e) if args.mode == "auto" => {
                eprintln!("network namespaces unusable ({e}); falling back to process mode");
                net::Net::cleanup(args.nodes.max(9));
                mode = Mode::Process;
                None
            }
            Err(e) => return Err(e),
        },
        Mode::Process => None,
    };
    let faults = nemesis::supported(&faults, mode);
    let result = async {
        let cluster = Cluster::start(binary, args.nodes, mode, &data, args.unsafe_ack_before_commit)?;
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
        let cluster = Arc::new(Mutex::new(cluster));
        wait_ready(&urls, args.nodes, Duration::from_secs(60)).await?;
        println!("cluster of {} ready ({mode:?}); running {}s with {:?}", args.nodes, args.time_limit, faults);

        let start = Instant::now();
        let deadline = start + Duration::from_secs(args.time_limit);
        let nemesis = {
            let (cluster, faults) = (cluster.clone(), faults.clone());
            let (interval, duration) = (Duration::from_secs(args.interval), Duration::from_secs(args.duration));
            let net_ref = net.as_ref().map(|_| ());
            tokio::task::spawn_blocking(move || {
                if faults.is_empty() {
                    return vec![];
                }
                let net = net_ref.map(|_| net::Net::attach(args.nodes));
                nemesis::run(cluster, net.as_ref(), &faults, start, deadline, interval, duration)
            })
        };
        let ingest_task = if args.agents > 0 {
            let http = reqwest::Client::new();
            ingest::prepare(&http, &urls[0]).await?;
            let (urls, agents) = (urls.clone(), args.agents);
            Some(tokio::spawn(async move { ingest::run(urls, agents, deadline, Duration::from_millis(200)).await }))
        } else {
            None
        };
        let history = workload::run(urls.clone(), args.concurrency, start, deadline).await;
        let ingest_runs = match ingest_task {
            Some(t) => Some(t.await??),
            None => None,
        };
        let events = nemesis.await.unwrap_or_default();
        if let Some(n) = &net {
            n.heal();
        }
        for i in 0..args.nodes {
            let mut c = cluster.lock().expect("cluster");
            c.resume(i);
            let _ = c.restart(i);
        }
        let (converged, finals) = workload::converge(&urls, Duration::from_secs(60)).await;
        let ingest_verdict = match &ingest_runs {
            Some(runs) => Some(ingest::check(&urls, runs).await),
            None => None,
        };
        let ingest_ok = ingest_verdict.as_ref().is_none_or(|v| v.valid());
        history::write(&out.join("history.jsonl"), &history)?;
        let checked = Instant::now();
        let verdict = checker::check(&history, (0, 15));
        let count = |o| history.iter().filter(|r| r.outcome == o).count();
        let summary = json!({
            "mode": format!("{mode:?}"), "nodes": args.nodes, "time_limit_s": args.time_limit, "concurrency": args.concurrency,
            "unsafe_ack_before_commit": args.unsafe_ack_before_commit,
            "operations": history.len(), "ok": count(history::Outcome::Ok), "fail": count(history::Outcome::Fail),
            "info": count(history::Outcome::Info), "faults": events,
            "linearizable": format!("{verdict:?}"), "checker_ms": checked.elapsed().as_millis() as u64,
            "converged": converged, "final_local_reads": finals,
            "ingest": ingest_verdict, "agents": ingest_runs,
        });
        std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
        let valid = matches!(verdict, Verdict::Linearizable) && converged && ingest_ok;
        let text = format!(
            "{}\nlinearizability: {verdict:?}\nconvergence: {converged} {finals:?}\ningest: {}\noperations: {} (ok {}, fail {}, info {}), faults injected: {}\n",
            if valid { "VALID" } else { "INVALID" },
            match &ingest_verdict {
                Some(v) => format!("{} acknowledged batches; lost {:?}, stored twice {:?}, duplicate alerts {:?}, refused retries {:?}", v.acknowledged, v.lost, v.doubled, v.duplicate_alerts, v.refused),
                None => "not run".into(),
            },
            history.len(), count(history::Outcome::Ok), count(history::Outcome::Fail), count(history::Outcome::Info),
            events.iter().filter(|e| e.phase == "inject").count(),
        );
        std::fs::write(out.join("verdict.txt"), &text)?;
        println!("{text}results in {}", out.display());
        cluster.lock().expect("cluster").shutdown();
        anyhow::Ok(exit_code(&verdict, converged && ingest_ok))
    }
    .await;
    if let Some(n) = &net {
        n.teardown();
    }
    result
}
