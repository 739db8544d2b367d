//! The rolling-upgrade run: a cluster started on an older binary is replaced one node at a
//! time by a newer one while the settings workload and the signed-ingest agents run through
//! every node; then the upgrade is finalized and the whole history is checked.
//!
//! Each step drains and stops one node (SIGTERM, wait for the exit, kill -9 at the bound and
//! say so), starts it on the other binary with the same data directory and addresses, waits
//! for `GET /api/v1/ready`, and lets the load run on. Every node runs with
//! `MONSYS_AUTO_FINALIZE_UPGRADE=false` (a binary that does not know it ignores it), so the
//! harness decides when the cluster version moves: forward, `POST
//! /api/v1/cluster/finalize-upgrade` after the last node, and every node must then report the
//! higher `active_version`; backwards (`--backwards`), every node goes old → new and then back
//! new → old without finalizing, and the cluster version must not have moved. After a
//! finalized run (and its checkers), the last node is stopped and started on the old binary
//! once more: it must refuse to start (going back after finalizing is not supported), and is
//! then started on the new binary again.
//!
//! Per restart window the report gives the API unavailability seen by clients that fail over
//! to another node (see the `unavailability` module), next to the 1 s target.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::{self, Cluster};
use crate::harness::{self, Env};
use crate::ingest;
use crate::unavailability::{self, TARGET_MS, Window};
use crate::until::Until;
use crate::workload;

/// `monsys-jepsen upgrade` options.
#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// `netns`, `process` or `auto` (netns when possible).
    #[arg(long, default_value = "auto")]
    mode: String,
    /// The binary the cluster starts on (the previous release: jepsen/scripts/build-previous.sh).
    #[arg(long)]
    old_binary: PathBuf,
    /// The binary the nodes are upgraded to.
    #[arg(long)]
    new_binary: PathBuf,
    /// Roll every node to the new binary without finalizing, then every node back to the old.
    #[arg(long)]
    backwards: bool,
    /// Do not finalize after a forward roll (for a new binary without cluster versions).
    #[arg(long)]
    no_finalize: bool,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent settings clients.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Simulated agents sending signed batches.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Seconds of load before the first restart.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds of load after each node is ready again.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Seconds of load after the last step (and the finalize).
    #[arg(long, default_value_t = 5)]
    after: u64,
    /// Seconds a node may take to exit after SIGTERM before it is killed.
    #[arg(long, default_value_t = 15)]
    stop_timeout: u64,
    /// Seconds a restarted node may take to answer `/api/v1/ready`.
    #[arg(long, default_value_t = 60)]
    ready_timeout: u64,
    /// Results folder (default: jepsen/results/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The environment variable that keeps the new binary from finalizing by itself.
pub const NO_AUTO_FINALIZE: (&str, &str) = ("MONSYS_AUTO_FINALIZE_UPGRADE", "false");

/// One node replaced.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// 1-based node id.
    pub node: usize,
    /// `old->new` or `new->old`.
    pub step: String,
    /// The binary it runs now.
    pub binary: String,
    /// It was the leader when it got SIGTERM.
    pub was_leader: bool,
    /// SIGTERM sent, s since the start of the load.
    pub stop_s: f64,
    /// The process exited, s.
    pub exited_s: f64,
    /// It exited by itself (false: killed at `--stop-timeout`).
    pub graceful: bool,
    /// Started on the other binary, s.
    pub started_s: f64,
    /// `GET /api/v1/ready` answered 200, s (none: it never did).
    pub ready_s: Option<f64>,
    /// What clients saw from this SIGTERM to the next step.
    pub window: Option<Window>,
}

/// The cluster-version view of every node (`active_version` and each member's
/// `cluster_version` as `GET /api/v1/cluster` shows them; absent on builds without them).
async fn versions(http: &reqwest::Client, urls: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for u in urls {
        let v = match http.get(format!("{u}/api/v1/cluster")).bearer_auth(cluster::TOKEN).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let members: Vec<Value> = v["members"]
            .as_array()
            .map(|m| {
                m.iter().map(|x| json!({ "id": x["id"], "cluster_version": x["cluster_version"] })).collect()
            })
            .unwrap_or_default();
        out.push(json!({ "active_version": v["active_version"], "members": members }));
    }
    out
}

/// Polls `GET /api/v1/ready` of one node until it answers 200.
async fn wait_ready(http: &reqwest::Client, url: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if http.get(format!("{url}/api/v1/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `POST /api/v1/cluster/finalize-upgrade` through any node (a refused connection or a 503 is
/// tried on the next), then waits until every node reports the new `active_version`.
async fn finalize(http: &reqwest::Client, urls: &[String]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 0;
    let (status, body) = loop {
        let url = &urls[k % urls.len()];
        k += 1;
        match http
            .post(format!("{url}/api/v1/cluster/finalize-upgrade"))
            .bearer_auth(cluster::TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() != 503 || Instant::now() >= deadline => {
                let status = r.status().as_u16();
                break (status, r.json::<Value>().await.unwrap_or(Value::Null));
            }
            Err(e) if Instant::now() >= deadline => break (0, json!({ "error": e.to_string() })),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let target = body["active_version"].as_u64();
    let wait = Instant::now() + Duration::from_secs(15);
    let (all_moved, seen) = loop {
        let seen = versions(http, urls).await;
        let moved = target.is_some() && seen.iter().all(|v| v["active_version"].as_u64() == target);
        if moved || status != 200 || Instant::now() >= wait {
            break (moved, seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rose = status == 200
        && all_moved
        && match (target, body["previous_version"].as_u64()) {
            (Some(now), Some(before)) => now > before,
            _ => false,
        };
    json!({ "status": status, "answer": body, "every_node": seen, "ok": rose })
}

/// Runs the upgrade (or upgrade-and-back) under load and checks it; returns the exit code.
pub async fn run(args: UpgradeArgs) -> anyhow::Result<i32> {
    let old = harness::binary(&args.old_binary)?;
    let new = harness::binary(&args.new_binary)?;
    let env = Env::prepare(&args.mode, args.nodes, args.out.clone())?;
    let result = run_in(&args, &env, old, new).await;
    env.teardown();
    result
}

async fn run_in(args: &UpgradeArgs, env: &Env, old: PathBuf, new: PathBuf) -> anyhow::Result<i32> {
    let (mode, out) = (env.mode, env.out.clone());
    let vars = vec![(NO_AUTO_FINALIZE.0.to_string(), NO_AUTO_FINALIZE.1.to_string())];
    let cluster = Cluster::start(old.clone(), args.nodes, mode, &env.data, false, vars)?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let cluster = Arc::new(Mutex::new(cluster));
    harness::wait_formed(&urls, args.nodes, Duration::from_secs(60)).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let versions_at_start = versions(&http, &urls).await;
    let direction = match (args.backwards, args.no_finalize) {
        (true, _) => "old -> new -> old, not finalized",
        (false, true) => "old -> new, not finalized (--no-finalize)",
        (false, false) => "old -> new, finalized",
    };
    println!("cluster of {} ready on {} ({mode:?}); rolling {direction}", args.nodes, old.display());

    let start = Instant::now();
    let until = Until::open();
    if args.agents > 0 {
        ingest::prepare(&reqwest::Client::new(), &urls[0]).await?;
    }
    let ingest_task = (args.agents > 0).then(|| {
        let (urls, agents, until) = (urls.clone(), args.agents, until.clone());
        tokio::spawn(async move { ingest::run(urls, agents, start, until, Duration::from_millis(200)).await })
    });
    let load = {
        let (urls, until) = (urls.clone(), until.clone());
        tokio::spawn(workload::run(urls, args.concurrency, start, until))
    };
    let at = || start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let mut plan: Vec<(usize, PathBuf, &str)> =
        (0..args.nodes).map(|i| (i, new.clone(), "old->new")).collect();
    if args.backwards {
        plan.extend((0..args.nodes).map(|i| (i, old.clone(), "new->old")));
    }
    let mut restarts = Vec::new();
    let mut failure = None;
    for (i, binary, step) in plan {
        let leader = {
            let urls = urls.clone();
            tokio::task::spawn_blocking(move || crate::nemesis::leader(&urls)).await?
        };
        let stop_s = at();
        let stopped = {
            let (cluster, bound) = (cluster.clone(), Duration::from_secs(args.stop_timeout));
            tokio::task::spawn_blocking(move || cluster.lock().expect("cluster").stop_within(i, bound))
                .await?
        };
        let exited_s = at();
        {
            let mut c = cluster.lock().expect("cluster");
            c.set_binary(i, binary.clone());
            c.restart(i)?;
        }
        let started_s = at();
        let ready = wait_ready(&http, &urls[i], Duration::from_secs(args.ready_timeout)).await;
        let ready_s = ready.then(at);
        println!(
            "node {}{} {step}: SIGTERM at {stop_s:.2}s, exited after {:.2}s{}, started, ready after {}",
            i + 1,
            if leader == Some(i + 1) { " (leader)" } else { "" },
            exited_s - stop_s,
            if stopped.graceful { "" } else { " (KILLED at the bound)" },
            ready_s.map_or("NEVER".to_string(), |r| format!("{:.2}s from SIGTERM", r - stop_s)),
        );
        restarts.push(Restart {
            node: i + 1,
            step: step.into(),
            binary: binary.display().to_string(),
            was_leader: leader == Some(i + 1),
            stop_s,
            exited_s,
            graceful: stopped.graceful,
            started_s,
            ready_s,
            window: None,
        });
        if !ready {
            failure = Some(format!("node {} did not become ready on {} ({step})", i + 1, binary.display()));
            break;
        }
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
    }
    let rolled_s = at();
    let finalized = if failure.is_none() && !args.backwards && !args.no_finalize {
        let f = finalize(&http, &urls).await;
        println!("finalize-upgrade: {} {}", f["status"], f["answer"]);
        if f["ok"] != true {
            failure = Some(format!("finalize did not raise active_version on every node: {f}"));
        }
        Some(f)
    } else {
        None
    };
    if failure.is_none() {
        tokio::time::sleep(Duration::from_secs(args.after)).await;
    }
    until.set(Instant::now());
    let history = load.await?;
    let agents = match ingest_task {
        Some(t) => Some(t.await??),
        None => None,
    };
    let versions_at_end = versions(&http, &urls).await;
    if args.backwards && failure.is_none() {
        let active = |v: &[Value]| v.iter().map(|x| x["active_version"].clone()).collect::<Vec<_>>();
        if active(&versions_at_end) != active(&versions_at_start) {
            failure = Some(format!(
                "the cluster version moved without a finalize: {:?} -> {:?}",
                active(&versions_at_start),
                active(&versions_at_end)
            ));
        }
    }

    // every node up again before the checkers (a failed step leaves its node down)
    for i in 0..args.nodes {
        let _ = cluster.lock().expect("cluster").restart(i);
    }
    let judged = harness::judge(&out, &urls, &history, agents.as_deref()).await?;
    let acks: Vec<ingest::Ack> = agents.iter().flatten().flat_map(|a| a.acks.iter().copied()).collect();
    let us = |s: f64| (s * 1e6) as u64;
    for k in 0..restarts.len() {
        let to = restarts.get(k + 1).map_or(rolled_s, |r| r.stop_s);
        restarts[k].window = Some(unavailability::measure(&history, &acks, us(restarts[k].stop_s), us(to)));
    }
    let downgrade = match &finalized {
        Some(f) if f["ok"] == true => {
            let d = refuses_old(&cluster, &http, &urls, &old, &new, args).await?;
            println!("old binary on a finalized node: {d}");
            if d["refused"] != true {
                failure = Some(format!("the old binary started on a finalized node: {d}"));
            }
            Some(d)
        }
        _ => None,
    };
    let report = report(&restarts);
    let valid = judged.valid() && failure.is_none();
    let mut summary = json!({
        "kind": "upgrade", "direction": direction, "mode": format!("{mode:?}"), "nodes": args.nodes,
        "concurrency": args.concurrency, "old_binary": old.display().to_string(), "new_binary": new.display().to_string(),
        "load_s": start.elapsed().as_secs_f64(), "restarts": restarts, "finalize": finalized,
        "downgrade_after_finalize": downgrade, "cluster_versions_at_start": versions_at_start, "cluster_versions_at_end": versions_at_end,
        "unavailability_target_ms": TARGET_MS, "failure": failure, "valid": valid,
    });
    harness::merge(&mut summary, harness::summary(&history, &judged, agents.as_deref()));
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    let mut text = harness::verdict_text(&history, &judged);
    if !valid && judged.valid() {
        text = text.replacen("VALID", "INVALID", 1);
    }
    text.push_str(&format!(
        "upgrade: {direction}; {}\n",
        failure.as_deref().unwrap_or("every step completed")
    ));
    if let Some(f) = &finalized {
        text.push_str(&format!("finalize: {} {} (every node: {})\n", f["status"], f["answer"], f["ok"]));
    }
    if let Some(d) = &downgrade {
        text.push_str(&format!("old binary after finalize: refused {} ({})\n", d["refused"], d["why"]));
    }
    text.push_str(&report);
    std::fs::write(out.join("verdict.txt"), &text)?;
    println!("{text}results in {}", out.display());
    cluster.lock().expect("cluster").shutdown();
    Ok(if failure.is_some() && judged.exit_code() == 0 { 1 } else { judged.exit_code() })
}

/// Stops the last node, starts it on the old binary (which must exit with an error: the
/// finalized data directory is newer than it reads), then starts it on the new one again.
async fn refuses_old(
    cluster: &Arc<Mutex<Cluster>>,
    http: &reqwest::Client,
    urls: &[String],
    old: &std::path::Path,
    new: &std::path::Path,
    args: &UpgradeArgs,
) -> anyhow::Result<Value> {
    let i = urls.len() - 1;
    let (cluster2, bound, old) = (cluster.clone(), Duration::from_secs(args.stop_timeout), old.to_path_buf());
    let exit = tokio::task::spawn_blocking(move || {
        let mut c = cluster2.lock().expect("cluster");
        c.stop_within(i, bound);
        c.set_binary(i, old);
        c.restart(i)?;
        anyhow::Ok(c.exited_within(i, Duration::from_secs(20)))
    })
    .await??;
    let tail = cluster.lock().expect("cluster").log_tail(i, 400);
    // the error the binary exits with (a backtrace follows it)
    let why =
        tail.iter().rev().find(|l| l.starts_with("Error:")).cloned().unwrap_or_else(|| tail.join(" | "));
    let refused = exit.is_some_and(|s| !s.success());
    {
        let mut c = cluster.lock().expect("cluster");
        if exit.is_none() {
            c.kill(i);
        }
        c.set_binary(i, new.to_path_buf());
        c.restart(i)?;
    }
    let back = wait_ready(http, &urls[i], Duration::from_secs(args.ready_timeout)).await;
    Ok(
        json!({ "node": i + 1, "refused": refused, "exit": exit.map(|s| s.to_string()), "why": why, "new_binary_ready_again": back }),
    )
}

/// The per-restart unavailability table.
fn report(restarts: &[Restart]) -> String {
    let mut s = format!(
        "API unavailability per restart, as clients failing over to another node see it (target < {TARGET_MS} ms):\n"
    );
    s.push_str("node        step      exit(s) ready(s)  ops  longest-op(ms) longest-gap(ms) unknown | batches longest-batch(ms) ack-gap(ms) | target\n");
    for r in restarts {
        let Some(w) = &r.window else { continue };
        s.push_str(&format!(
            "{:>4} {:<6} {:<9} {:>7.2} {:>8} {:>4} {:>14} {:>15} {:>7} | {:>7} {:>17} {:>11} | {}\n",
            r.node,
            if r.was_leader { "leader" } else { "" },
            r.step,
            r.exited_s - r.stop_s,
            r.ready_s.map_or("never".into(), |t| format!("{:.2}", t - r.stop_s)),
            w.operations,
            w.longest_op_ms,
            w.longest_gap_ms,
            w.unknown,
            w.batches,
            w.longest_batch_ms,
            w.longest_ack_gap_ms,
            if w.within_target() { "met" } else { "MISSED" },
        ));
    }
    s
}
