//! Command-line interface: `monsys hub`, `monsys ctl …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

/// monsys: highly available hub cluster for fleet monitoring and emergency access.
#[derive(Debug, Parser)]
#[command(name = "monsys", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Commands,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a hub node (with no flags: a single-node cluster on 127.0.0.1:8080, data in ./monsys-data).
    Hub(Box<HubArgs>),
    /// Operate a running cluster through its API.
    Ctl(crate::ctl::CtlArgs),
    /// Run the agent on a monitored host (collect, sign, deliver to any hub).
    Agent(monsys_agent::AgentArgs),
}

/// Flags of `monsys hub`; each overrides the config file and has a `MONSYS_*` variable.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// TOML config file (see config/monsys.example.toml).
    #[arg(long, env = "MONSYS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Raft node id (default: generated on first start).
    #[arg(long, env = "MONSYS_NODE_ID")]
    pub node_id: Option<u64>,
    /// HTTP listen address.
    #[arg(long, env = "MONSYS_API_ADDR")]
    pub api_addr: Option<std::net::SocketAddr>,
    /// HTTP address other nodes use to reach this one (host:port).
    #[arg(long, env = "MONSYS_ADVERTISE_API_ADDR")]
    pub advertise_api_addr: Option<String>,
    /// Base URL agents use to reach this node directly, sent to them as the owner hint
    /// (`agent_url` in the config file).
    #[arg(long, env = "MONSYS_AGENT_URL")]
    pub agent_url: Option<String>,
    /// UDP gossip listen address.
    #[arg(long, env = "MONSYS_GOSSIP_ADDR")]
    pub gossip_addr: Option<std::net::SocketAddr>,
    /// Gossip address other nodes use to reach this one (host:port).
    #[arg(long, env = "MONSYS_ADVERTISE_GOSSIP_ADDR")]
    pub advertise_gossip_addr: Option<String>,
    /// Extra gossip seed (host:port); repeatable.
    #[arg(long = "seed", env = "MONSYS_GOSSIP_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Data directory.
    #[arg(long, env = "MONSYS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Join the cluster of this node on first start (e.g. http://10.0.0.1:8080).
    #[arg(long, env = "MONSYS_JOIN")]
    pub join: Option<String>,
    /// Cluster secret shared by all nodes (default: generated into the data dir).
    #[arg(long, env = "MONSYS_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Admin token to install on first start instead of a random one.
    #[arg(long, env = "MONSYS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Enrollment token (mse_…) to create on first start, for agents started with the cluster.
    #[arg(long, env = "MONSYS_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// Finalize upgrades by itself once every member supports a newer cluster version
    /// (`false` keeps rolling back possible until `monsys ctl cluster finalize-upgrade`).
    #[arg(long, env = "MONSYS_AUTO_FINALIZE_UPGRADE", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub auto_finalize_upgrade: Option<bool>,
    /// Test-only fault: acknowledge settings writes before they commit (the chaos checker's
    /// broken build). Never use in production.
    #[arg(long, env = "MONSYS_UNSAFE_ACK_BEFORE_COMMIT", hide = true)]
    pub unsafe_ack_before_commit: bool,
}

impl HubArgs {
    /// The effective configuration: defaults < file < environment/flags.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if self.node_id.is_some() {
            c.node_id = self.node_id;
        }
        if let Some(a) = self.api_addr {
            c.api_addr = a;
        }
        if let Some(a) = self.gossip_addr {
            c.gossip_addr = a;
        }
        if self.advertise_api_addr.is_some() {
            c.advertise_api_addr = self.advertise_api_addr;
        }
        if self.advertise_gossip_addr.is_some() {
            c.advertise_gossip_addr = self.advertise_gossip_addr;
        }
        if self.agent_url.is_some() {
            c.agent_url = self.agent_url;
        }
        c.gossip_seeds.extend(self.seeds.into_iter().filter(|s| !s.is_empty()));
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if self.join.is_some() {
            c.join = self.join;
        }
        if self.cluster_secret.is_some() {
            c.cluster_secret = self.cluster_secret;
        }
        if self.admin_token.is_some() {
            c.admin_token = self.admin_token;
        }
        if self.enrollment_token.is_some() {
            c.enrollment_token = self.enrollment_token;
        }
        if let Some(auto) = self.auto_finalize_upgrade {
            c.auto_finalize_upgrade = auto;
        }
        if self.unsafe_ack_before_commit {
            c.unsafe_ack_before_commit = true;
        }
        c.validate()?;
        Ok(c)
    }
}
