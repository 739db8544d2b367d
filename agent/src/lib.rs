//! `monsys agent`: collects host telemetry every interval, signs each batch with its Ed25519
//! key and delivers it to any hub, failing over between hub URLs and buffering on disk while no
//! hub answers.
//!
//! Data flow: [`collect`] + [`inventory`] → a [`monsys_proto::agent::IngestBatch`] with the next
//! `seq` (persisted first) → signed → appended to the on-disk [`buffer`] → drained in order by
//! the [`sender`], which removes a batch only when a hub took it (or it can never succeed).
//! Delivery is at-least-once; the hub stores each `seq` once.
//!
//! Layout: `state` (key, registration, seq), `collect` (procfs metrics, top processes),
//! `inventory`, `buffer`, `sender`.

pub mod buffer;
pub mod collect;
pub mod inventory;
pub mod sender;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use ed25519_dalek::SigningKey;
use monsys_proto::agent::{IngestBatch, RegisterRequest, encode_pubkey, sign_body};

use self::buffer::{Buffer, Entry};
use self::sender::{Sender, Verdict};
use self::state::{Registration, State};

/// Agent version, reported in every batch.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How often inventory is collected.
pub const INVENTORY_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Flags of `monsys agent` (each also a `MONSYS_AGENT_*` variable).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Hub base URL; repeat (or comma-separate) for fail-over, in order of preference.
    #[arg(long = "hub", env = "MONSYS_AGENT_HUBS", value_delimiter = ',')]
    pub hubs: Vec<String>,
    /// Enrollment token (`mse_…`) for the first registration and re-registration.
    #[arg(long, env = "MONSYS_AGENT_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// Key, registration, seq and buffer live here.
    #[arg(long, env = "MONSYS_AGENT_STATE_DIR", default_value = "/var/lib/monsys-agent")]
    pub state_dir: PathBuf,
    /// Collection interval, seconds.
    #[arg(long, env = "MONSYS_AGENT_INTERVAL_SECS", default_value_t = 15)]
    pub interval_secs: u64,
    /// Largest on-disk buffer, bytes (oldest batches dropped beyond it).
    #[arg(long, env = "MONSYS_AGENT_BUFFER_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub buffer_max_bytes: u64,
    /// Timeout of one request to a hub, milliseconds.
    #[arg(long, env = "MONSYS_AGENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Collect once and stop.
    #[arg(long)]
    pub once: bool,
    /// Print the batch as JSON instead of sending it (no network, no state written).
    #[arg(long)]
    pub dry_run: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Batches a hub took.
    pub delivered: usize,
    /// Batches dropped as undeliverable.
    pub dropped: usize,
    /// Batches still waiting.
    pub waiting: usize,
}

/// A running agent.
pub struct Agent {
    args: AgentArgs,
    state: State,
    key: SigningKey,
    registration: Option<Registration>,
    buffer: Buffer,
    sender: Sender,
    collector: collect::Collector,
    last_inventory_ms: u64,
    /// Earliest time the next delivery attempt may run (back-off after a failure).
    retry_at_ms: u64,
}

impl Agent {
    /// Opens the state directory, the key and the buffer.
    pub fn open(args: AgentArgs) -> anyhow::Result<Agent> {
        let state = State::open(&args.state_dir)?;
        let key = state.signing_key()?;
        let buffer = Buffer::open(&args.state_dir.join("buffer"), args.buffer_max_bytes)?;
        let sender = Sender::new(args.hubs.clone(), Duration::from_millis(args.timeout_ms))?;
        Ok(Agent {
            registration: state.registration(),
            args,
            state,
            key,
            buffer,
            sender,
            collector: collect::Collector::new("/proc"),
            last_inventory_ms: 0,
            retry_at_ms: 0,
        })
    }

    /// The agent id, once registered.
    pub fn agent_id(&self) -> Option<&str> {
        self.registration.as_ref().map(|r| r.agent_id.as_str())
    }

    /// Batches waiting in the buffer.
    pub fn waiting(&self) -> usize {
        self.buffer.len()
    }

    /// Registers with the enrollment token (same host and key → same agent id).
    pub async fn register(&mut self) -> anyhow::Result<()> {
        let token = self
            .args
            .enrollment_token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--enrollment-token is needed to register"))?;
        let req = RegisterRequest {
            enrollment_token: token,
            hostname: hostname(),
            machine_id: self.state.machine_id()?,
            signing_pubkey: Some(encode_pubkey(&self.key.verifying_key())),
            agent_version: VERSION.into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        };
        let resp = self.sender.register(&req).await?;
        let r = Registration { agent_id: resp.agent_id, agent_token: resp.agent_token };
        self.state.save_registration(&r)?;
        tracing::info!(agent_id = %r.agent_id, hub = self.sender.current(), "registered");
        self.registration = Some(r);
        Ok(())
    }

    /// Builds the next batch from a collection (inventory when due).
    pub async fn collect_batch(&mut self, agent_id: &str, seq: u64) -> IngestBatch {
        let now = now_ms();
        let (metrics, processes) = self.collector.collect(now);
        let inventory = if now.saturating_sub(self.last_inventory_ms) >= INVENTORY_EVERY.as_millis() as u64 {
            self.last_inventory_ms = now;
            Some(inventory::collect().await)
        } else {
            None
        };
        IngestBatch {
            agent_id: agent_id.into(),
            seq,
            collected_at_ms: now,
            agent_version: VERSION.into(),
            metrics,
            inventory,
            processes: Some(processes),
            alerts: vec![],
        }
    }

    /// Signs `batch` (whose seq must be the agent's next one) and buffers it durably.
    pub fn enqueue(&mut self, batch: &IngestBatch) -> anyhow::Result<()> {
        let body = serde_json::to_vec(batch)?;
        anyhow::ensure!(
            body.len() <= monsys_proto::agent::MAX_INGEST_BODY_BYTES,
            "batch of {} bytes is over the limit",
            body.len()
        );
        self.state.save_next_seq(batch.seq + 1)?;
        let signature = sign_body(&self.key, &body);
        self.buffer.push(Entry { seq: batch.seq, signature, body })?;
        Ok(())
    }

    /// Collects one batch and buffers it.
    pub async fn collect_and_enqueue(&mut self) -> anyhow::Result<u64> {
        let id = self.agent_id().ok_or_else(|| anyhow::anyhow!("not registered"))?.to_string();
        let seq = self.state.next_seq();
        let batch = self.collect_batch(&id, seq).await;
        self.enqueue(&batch)?;
        Ok(seq)
    }

    /// Sends buffered batches in order until the buffer is empty or a hub refuses for now.
    pub async fn drain(&mut self) -> anyhow::Result<Drained> {
        let mut d = Drained::default();
        let mut reregistered = false;
        if now_ms() < self.retry_at_ms {
            d.waiting = self.buffer.len();
            return Ok(d);
        }
        while let Some(entry) = self.buffer.front().cloned() {
            let Some(token) = self.registration.as_ref().map(|r| r.agent_token.clone()) else { break };
            match self.sender.send(&token, &entry.body, &entry.signature).await {
                Verdict::Delivered => {
                    self.buffer.pop()?;
                    d.delivered += 1;
                }
                Verdict::Drop(reason) => {
                    tracing::warn!(seq = entry.seq, %reason, "batch can never be stored; dropped");
                    self.buffer.pop()?;
                    d.dropped += 1;
                }
                Verdict::Reregister if !reregistered => {
                    reregistered = true;
                    if let Err(e) = self.register().await {
                        tracing::warn!(error = %e, "re-registration failed");
                        self.retry_at_ms = now_ms() + 5_000;
                        break;
                    }
                }
                Verdict::Reregister => {
                    self.retry_at_ms = now_ms() + 30_000;
                    break;
                }
                Verdict::Retry { after, reason } => {
                    tracing::warn!(seq = entry.seq, %reason, waiting = self.buffer.len(), "no hub took the batch; buffered");
                    self.retry_at_ms = now_ms() + after.as_millis() as u64;
                    break;
                }
            }
        }
        d.waiting = self.buffer.len();
        Ok(d)
    }
}

/// `monsys agent`: the collection loop (or one dry-run batch).
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.dry_run {
        let mut c = collect::Collector::new("/proc");
        c.collect(now_ms());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (metrics, processes) = c.collect(now_ms());
        let batch = IngestBatch {
            agent_id: "(dry run)".into(),
            seq: 0,
            collected_at_ms: now_ms(),
            agent_version: VERSION.into(),
            metrics,
            inventory: Some(inventory::collect().await),
            processes: Some(processes),
            alerts: vec![],
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&batch)?);
        return Ok(());
    }
    let mut agent = Agent::open(args.clone())?;
    if agent.agent_id().is_none() {
        let mut wait = Duration::from_secs(1);
        loop {
            match agent.register().await {
                Ok(()) => break,
                Err(e) if args.once => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "registration failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
    // CPU and rate metrics are deltas between two readings: one reading a second before the
    // first batch gives that batch them too
    agent.collector.collect(now_ms());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown() => return Ok(()),
        }
        match agent.collect_and_enqueue().await {
            Ok(seq) => tracing::debug!(seq, "batch collected"),
            Err(e) => tracing::error!(error = %e, "collection failed"),
        }
        let d = agent.drain().await?;
        tracing::debug!(?d, dropped_total = agent.buffer.dropped(), "delivery pass");
        if args.once {
            return Ok(());
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
