//! Hub configuration: one documented struct, from a TOML file with flags and `MONSYS_*`
//! environment variables on top (see `config/monsys.example.toml` for every key).
//!
//! Precedence: built-in defaults < config file < environment < command-line flags (clap reads
//! the environment variables of the flags it defines). Validated once in [`Config::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Configuration of a hub node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Raft node id. When unset, a random id is generated on first start and kept in the data dir.
    pub node_id: Option<u64>,
    /// Listen address of the HTTP API, the WebSocket endpoints and the internal peer routes.
    pub api_addr: SocketAddr,
    /// `host:port` other nodes use to reach this node's HTTP port (default: `api_addr`).
    pub advertise_api_addr: Option<String>,
    /// UDP listen address of gossip.
    pub gossip_addr: SocketAddr,
    /// `host:port` other nodes use to gossip with this node (default: `gossip_addr`).
    pub advertise_gossip_addr: Option<String>,
    /// Base URL (`scheme://host:port`) at which agents reach this node directly. When set, it
    /// is sent in `x-monsys-owner` on the answers to the agents this node owns, so they skip the
    /// forwarding hop. Unset (the default) or `""`: no hint, agents keep the URLs they were
    /// given (e.g. a load balancer). Use `https` when agents talk https.
    pub agent_url: Option<String>,
    /// Extra gossip seeds (`host:port`). Members of the Raft configuration are always seeds.
    pub gossip_seeds: Vec<String>,
    /// Gossip round interval, milliseconds.
    pub gossip_interval_ms: u64,
    /// Directory of the Raft log, state machine and snapshots.
    pub data_dir: PathBuf,
    /// Cluster name; nodes of different clusters ignore each other's gossip.
    pub cluster_name: String,
    /// Shared secret authenticating node-to-node traffic. When unset, it is read from
    /// `<data_dir>/cluster.secret`, which is generated on first start.
    pub cluster_secret: Option<String>,
    /// URL of any node of an existing cluster to join on first start (e.g. `http://10.0.0.1:8080`).
    pub join: Option<String>,
    /// Admin token to install on first start instead of a random one (automation, containers).
    pub admin_token: Option<String>,
    /// Enrollment token (`mse_…`) of the default tenant to create on first start, so agents
    /// can register without an operator step (automation, containers). Valid one year.
    pub enrollment_token: Option<String>,
    /// Largest accepted request body on the public API, bytes.
    pub max_body_bytes: usize,
    /// Timeout of a request forwarded to another node, milliseconds.
    pub forward_timeout_ms: u64,
    /// Deadline of a request's headers, and of an idle keep-alive connection, milliseconds.
    /// Keep it above 10 s: peers and agents reuse a pooled connection for up to 10 s.
    pub http_header_timeout_ms: u64,
    /// Longest pause in a request body before the request is ended, milliseconds.
    pub http_body_stall_ms: u64,
    /// Most open connections from one client address (agents behind one NAT address count
    /// together).
    pub max_connections_per_ip: usize,
    /// A follower whose applied index trails its log by more than this is not ready.
    pub ready_max_lag_entries: u64,
    /// Raise the cluster version by itself once every member runs a build that supports a
    /// newer one (see `monsys ctl cluster finalize-upgrade`). Turn it off on the new binaries
    /// before a rolling upgrade to keep rolling back possible until you finalize by hand.
    pub auto_finalize_upgrade: bool,
    /// Raft and storage tunables.
    pub raft: monsys_raft::Options,
    /// Outgoing mail (invitations, password resets).
    pub mail: MailConfig,
    /// **Deliberately unsafe, for the chaos checker only**: settings writes are acknowledged
    /// from the local state before Raft commits them. Exists so `jepsen/` can show that its
    /// checker catches a broken build; never set it in production.
    pub unsafe_ack_before_commit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: None,
            api_addr: "127.0.0.1:8080".parse().expect("static addr"),
            advertise_api_addr: None,
            gossip_addr: "127.0.0.1:7946".parse().expect("static addr"),
            advertise_gossip_addr: None,
            agent_url: None,
            gossip_seeds: Vec::new(),
            gossip_interval_ms: 300,
            data_dir: PathBuf::from("./monsys-data"),
            cluster_name: "monsys".to_string(),
            cluster_secret: None,
            join: None,
            admin_token: None,
            enrollment_token: None,
            max_body_bytes: 1024 * 1024,
            forward_timeout_ms: 5000,
            http_header_timeout_ms: 20_000,
            http_body_stall_ms: 30_000,
            max_connections_per_ip: 4096,
            ready_max_lag_entries: 1000,
            auto_finalize_upgrade: true,
            raft: monsys_raft::Options::default(),
            unsafe_ack_before_commit: false,
            mail: MailConfig::default(),
        }
    }
}

/// Outgoing mail. Without `smtp_url`, mail is written to the outbox directory (one `.eml` file
/// per message), so invitations and resets work without a mail server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host:port` of a relay (plain SMTP; TLS relays are not supported yet).
    pub smtp_url: Option<String>,
    /// Sender address.
    pub from: String,
    /// Outbox directory (default: `<data_dir>/outbox`).
    pub outbox_dir: Option<PathBuf>,
    /// Base URL put in links (default: `http://<advertise_api_addr>`).
    pub public_url: Option<String>,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            from: "monsys <monsys@localhost>".into(),
            outbox_dir: None,
            public_url: None,
        }
    }
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// Checks values that would otherwise fail late and obscurely.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node_id != Some(0), "node_id must not be 0");
        anyhow::ensure!(!self.cluster_name.is_empty(), "cluster_name must not be empty");
        anyhow::ensure!(self.max_body_bytes >= 1024, "max_body_bytes must be at least 1024");
        anyhow::ensure!(self.http_header_timeout_ms >= 1000, "http_header_timeout_ms must be at least 1000");
        anyhow::ensure!(self.http_body_stall_ms >= 100, "http_body_stall_ms must be at least 100");
        anyhow::ensure!(self.max_connections_per_ip >= 1, "max_connections_per_ip must be at least 1");
        anyhow::ensure!(self.gossip_interval_ms >= 10, "gossip_interval_ms must be at least 10");
        if let Some(secret) = &self.cluster_secret {
            anyhow::ensure!(secret.len() >= 16, "cluster_secret must be at least 16 characters");
        }
        if let Some(url) = &self.join {
            anyhow::ensure!(url.starts_with("http://"), "join must be an http:// URL, got {url}");
        }
        if let Some(url) = self.agent_url.as_deref().filter(|u| !u.is_empty()) {
            anyhow::ensure!(
                monsys_proto::agent::base_url_scheme(url).is_some(),
                "agent_url must be an http:// or https:// base URL (scheme://host:port, no path), got {url}"
            );
        }
        let r = &self.raft;
        anyhow::ensure!(
            r.heartbeat_ms < r.election_timeout_min_ms
                && r.election_timeout_min_ms < r.election_timeout_max_ms,
            "raft timeouts must satisfy heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
        );
        Ok(())
    }

    /// Checks `admin_token` before a first start installs it: credentials are told apart by
    /// prefix, so a token without `msa_` would be installed but never recognised as the admin
    /// token. Not part of [`Config::validate`]: on a node with data the setting is never read,
    /// and refusing it there would stop nodes that ran with such a value before.
    pub fn check_admin_token(&self) -> anyhow::Result<()> {
        if let Some(token) = &self.admin_token {
            anyhow::ensure!(
                token.starts_with(crate::secrets::ADMIN_PREFIX) && token.len() >= 20,
                "admin_token must start with msa_ and have at least 16 characters after it"
            );
        }
        Ok(())
    }

    /// The address peers use for this node's HTTP port.
    pub fn advertised_api_addr(&self) -> String {
        self.advertise_api_addr.clone().unwrap_or_else(|| self.api_addr.to_string())
    }

    /// The base URL sent to this node's agents as the owner hint (`None`: hints are off).
    pub fn agent_url(&self) -> Option<String> {
        self.agent_url.clone().filter(|u| !u.is_empty())
    }

    /// The address peers use for this node's gossip port.
    pub fn advertised_gossip_addr(&self) -> String {
        self.advertise_gossip_addr.clone().unwrap_or_else(|| self.gossip_addr.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_single_node_quick_start() {
        let c = Config::default();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.gossip_addr.to_string(), "127.0.0.1:7946");
        assert_eq!(c.data_dir, PathBuf::from("./monsys-data"));
        c.validate().unwrap();
    }

    #[test]
    fn example_config_documents_the_defaults() {
        let example: Config = toml::from_str(include_str!("../config/monsys.example.toml")).unwrap();
        assert_eq!(example, Config::default());
    }

    #[test]
    fn an_admin_token_without_its_prefix_is_refused() {
        let with = |t: &str| Config { admin_token: Some(t.into()), ..Config::default() }.check_admin_token();
        assert!(with("my-secret-admin-token-value").is_err(), "no msa_ prefix");
        assert!(with("msa_short").is_err(), "too short");
        with("msa_0123456789abcdef").unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("api_adr = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn file_values_override_defaults() {
        let c: Config = toml::from_str("api_addr = \"0.0.0.0:9000\"\n[raft]\nheartbeat_ms = 50\n").unwrap();
        assert_eq!(c.api_addr.port(), 9000);
        assert_eq!(c.raft.heartbeat_ms, 50);
        assert_eq!(c.raft.election_timeout_min_ms, monsys_raft::Options::default().election_timeout_min_ms);
    }

    #[test]
    fn the_owner_hint_is_off_unless_a_base_url_is_set() {
        let mut c = Config { advertise_api_addr: Some("hub1.internal:8080".into()), ..Config::default() };
        assert_eq!(c.agent_url(), None, "the peer address is not assumed to be reachable by agents");
        c.agent_url = Some(String::new());
        assert_eq!(c.agent_url(), None);
        c.validate().unwrap();
        c.agent_url = Some("https://hub1.example.com:8443".into());
        assert_eq!(c.agent_url().as_deref(), Some("https://hub1.example.com:8443"));
        c.validate().unwrap();
        for bad in
            ["hub1:8080", "https://hub1.example.com/", "http://", "https://proxy/monsys", "http://u@h:1"]
        {
            c.agent_url = Some(bad.into());
            assert!(c.validate().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_timeouts_fail_validation() {
        let mut c = Config::default();
        c.raft.heartbeat_ms = 5000;
        assert!(c.validate().is_err());
    }
}
