//! What every kind of run shares: choosing the isolation mode and the results folder (and
//! creating the network namespaces), waiting for the cluster to form, and judging a finished
//! run — linearizability, convergence and the ingest checkers — into `verdict.txt` and the
//! common fields of `summary.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checker::{self, Verdict};
use crate::cluster::{self, Mode};
use crate::history::{self, Outcome, Record};
use crate::ingest::{self, AgentRun, IngestVerdict};
use crate::net;

/// Where and how a run takes place.
pub struct Env {
    /// Process isolation.
    pub mode: Mode,
    /// Results folder.
    pub out: PathBuf,
    /// Data directories and node logs (inside `out`).
    pub data: PathBuf,
    /// The namespaces and bridge (netns mode).
    pub net: Option<net::Net>,
}

impl Env {
    /// Picks the mode (`netns`, `process`, `auto`), creates the results folder (default
    /// `jepsen/results/<unix time>`) with an empty data folder, and the namespaces in netns mode
    /// (`auto` falls back to process mode when they cannot be made).
    pub fn prepare(mode: &str, nodes: usize, out: Option<PathBuf>) -> anyhow::Result<Env> {
        let mut chosen = match mode {
            "netns" => Mode::Netns,
            "process" => Mode::Process,
            _ if net::available() => Mode::Netns,
            _ => Mode::Process,
        };
        let out = out.unwrap_or_else(|| {
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
        let net = match chosen {
            Mode::Netns => match net::Net::create(nodes) {
                Ok(n) => Some(n),
                Err(e) if mode == "auto" => {
                    eprintln!("network namespaces unusable ({e}); falling back to process mode");
                    net::Net::cleanup(nodes.max(9));
                    chosen = Mode::Process;
                    None
                }
                Err(e) => return Err(e),
            },
            Mode::Process => None,
        };
        Ok(Env { mode: chosen, out, data, net })
    }

    /// Removes the namespaces (netns mode).
    pub fn teardown(&self) {
        if let Some(n) = &self.net {
            n.teardown();
        }
    }
}

/// A binary's canonical path, with a clear error when it is missing.
pub fn binary(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| anyhow::anyhow!("binary {}: {e}", path.display()))
}

/// Waits until the node at `urls[0]` sees `n` voters.
pub async fn wait_formed(urls: &[String], n: usize, wait: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(r) =
            http.get(format!("{}/api/v1/cluster", urls[0])).bearer_auth(cluster::TOKEN).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["members"].as_array().is_some_and(|m| m.iter().filter(|x| x["role"] == "voter").count() == n)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("cluster did not form {n} voters in {wait:?}")
}

/// The checkers' verdicts on a finished run.
pub struct Judged {
    /// Linearizability of the settings register.
    pub verdict: Verdict,
    /// Every node's local read agreed after the run.
    pub converged: bool,
    /// What each node read last.
    pub finals: Vec<Option<(u64, u32)>>,
    /// The ingest checkers (when agents ran).
    pub ingest: Option<IngestVerdict>,
    /// Time the linearizability search took.
    pub checker_ms: u64,
}

impl Judged {
    /// Whether every checker passed.
    pub fn valid(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable)
            && self.converged
            && self.ingest.as_ref().is_none_or(IngestVerdict::valid)
    }

    /// Exit code: 0 valid, 1 invalid, 2 undecided.
    pub fn exit_code(&self) -> i32 {
        exit_code(&self.verdict, self.converged && self.ingest.as_ref().is_none_or(IngestVerdict::valid))
    }
}

/// Exit code of a verdict: 0 valid, 1 invalid, 2 undecided.
pub fn exit_code(v: &Verdict, others_ok: bool) -> i32 {
    match v {
        Verdict::Linearizable if others_ok => 0,
        Verdict::Linearizable | Verdict::NotLinearizable { .. } => 1,
        Verdict::Unknown => 2,
    }
}

/// Runs the checkers over a finished run (every node up and healed): convergence (60 s), the
/// ingest checkers and linearizability. Writes `history.jsonl`.
pub async fn judge(
    out: &std::path::Path,
    urls: &[String],
    history: &[Record],
    agents: Option<&[AgentRun]>,
) -> anyhow::Result<Judged> {
    let (converged, finals) = crate::workload::converge(urls, Duration::from_secs(60)).await;
    let ingest = match agents {
        Some(runs) => Some(ingest::check(urls, runs).await),
        None => None,
    };
    history::write(&out.join("history.jsonl"), history)?;
    let checked = Instant::now();
    let verdict = checker::check(history, (0, 15));
    Ok(Judged { verdict, converged, finals, ingest, checker_ms: checked.elapsed().as_millis() as u64 })
}

fn count(history: &[Record], o: Outcome) -> usize {
    history.iter().filter(|r| r.outcome == o).count()
}

/// The summary fields every run has.
pub fn summary(history: &[Record], judged: &Judged, agents: Option<&[AgentRun]>) -> Value {
    json!({
        "operations": history.len(), "ok": count(history, Outcome::Ok), "fail": count(history, Outcome::Fail),
        "info": count(history, Outcome::Info),
        "retried_operations": history.iter().filter(|r| r.attempts > 1).count(),
        "linearizable": format!("{:?}", judged.verdict), "checker_ms": judged.checker_ms,
        "converged": judged.converged, "final_local_reads": judged.finals,
        "ingest": judged.ingest, "agents": agents,
    })
}

/// The first lines of `verdict.txt`: the verdict and each checker's finding.
pub fn verdict_text(history: &[Record], judged: &Judged) -> String {
    format!(
        "{}\nlinearizability: {:?}\nconvergence: {} {:?}\ningest: {}\noperations: {} (ok {}, fail {}, info {}; {} failed over to another node)\n",
        if judged.valid() { "VALID" } else { "INVALID" },
        judged.verdict,
        judged.converged,
        judged.finals,
        match &judged.ingest {
            Some(v) => format!(
                "{} acknowledged batches; lost {:?}, stored twice {:?}, duplicate alerts {:?}, refused retries {:?}",
                v.acknowledged, v.lost, v.doubled, v.duplicate_alerts, v.refused
            ),
            None => "not run".into(),
        },
        history.len(),
        count(history, Outcome::Ok),
        count(history, Outcome::Fail),
        count(history, Outcome::Info),
        history.iter().filter(|r| r.attempts > 1).count(),
    )
}

/// Adds the fields of `more` (an object) to `into` (an object).
pub fn merge(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}
