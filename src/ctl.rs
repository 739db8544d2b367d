//! `monsys ctl`: the operator CLI, a thin client of the HTTP API (any node will do).
//!
//! Exit status: 0 on success, 1 when the API answered with an error (its JSON body is printed
//! on stderr), 2 on usage errors (clap).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Flags shared by every `ctl` command.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of any node.
    #[arg(long, env = "MONSYS_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// Admin token, session token or API key.
    #[arg(long, env = "MONSYS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Tenant settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Liveness and readiness of the node at --url.
    Health,
    /// First run: create the first tenant's Owner (only while no owner exists). The password
    /// is read from MONSYS_BOOTSTRAP_PASSWORD or, when unset, from the first line of stdin.
    Bootstrap {
        /// Owner's email (the login name).
        #[arg(long)]
        email: String,
        /// Owner's display name.
        #[arg(long)]
        name: String,
        /// Organisation name.
        #[arg(long, default_value = "Default")]
        tenant_name: String,
    },
    /// Audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The node's cluster view and the tenant's stored telemetry bytes per resolution.
    Status,
    /// One node of the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
}

/// `ctl node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Drain a node and stop it: it hands its agents and (if it leads) Raft leadership to the
    /// others, finishes the requests in flight, then exits (as on SIGTERM).
    Drain {
        /// Raft id of the node.
        id: u64,
    },
}

/// `ctl audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the tenant's audit log on the server.
    Verify,
}

/// `ctl cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, applied index and versions, as the node at --url sees them.
    Status,
    /// Add a node (learner, catch up, then voter unless --no-promote).
    Add {
        /// Raft id of the new node (its data dir's `node_id`).
        #[arg(long)]
        id: u64,
        /// Its HTTP address, host:port.
        #[arg(long)]
        api_addr: String,
        /// Its gossip address, host:port.
        #[arg(long)]
        gossip_addr: String,
        /// Keep it a learner.
        #[arg(long)]
        no_promote: bool,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Raft id.
        id: u64,
    },
    /// Promote a learner to voter.
    Promote {
        /// Raft id.
        id: u64,
    },
    /// Raise the cluster version once every member runs the new binary (ends a rolling
    /// upgrade: from then on, nodes cannot be rolled back to the older build).
    FinalizeUpgrade,
}

/// `ctl settings …`.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the settings (linearizable read).
    Get,
    /// Replace the settings with a JSON file; with --revision, only if unchanged since.
    Put {
        /// JSON file with the full settings document, or what `settings get` prints (its
        /// revision is then the expected one unless --revision is given).
        file: PathBuf,
        /// Expected revision (compare-and-set).
        #[arg(long)]
        revision: Option<u64>,
    },
}

/// Runs a `ctl` command; returns the process exit code.
pub async fn run(args: CtlArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        reqwest::Url::parse(&args.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
        "--url must be a node's URL like http://127.0.0.1:8080, got {:?}",
        args.url
    );
    let client = Client {
        http: reqwest::Client::new(),
        url: args.url.trim_end_matches('/').to_string(),
        token: args.token,
    };
    let result = match args.command {
        CtlCommand::Health => client.call(reqwest::Method::GET, "/api/v1/ready", None, None).await,
        CtlCommand::Bootstrap { email, name, tenant_name } => {
            let password = match std::env::var("MONSYS_BOOTSTRAP_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let body = serde_json::json!({ "email": email, "name": name, "password": password, "tenant_name": tenant_name });
            client.call(reqwest::Method::POST, "/api/v1/auth/register", Some(body), None).await
        }
        CtlCommand::Status => client.status().await,
        CtlCommand::Audit(AuditCommand::Verify) => {
            client.call(reqwest::Method::GET, "/api/v1/audit/verify", None, None).await
        }
        CtlCommand::Cluster(ClusterCommand::Status) => {
            client.call(reqwest::Method::GET, "/api/v1/cluster", None, None).await
        }
        CtlCommand::Cluster(ClusterCommand::Add { id, api_addr, gossip_addr, no_promote }) => {
            let body = serde_json::json!({ "id": id, "api_addr": api_addr, "gossip_addr": gossip_addr, "promote": !no_promote });
            client.call(reqwest::Method::POST, "/api/v1/cluster/members", Some(body), None).await
        }
        CtlCommand::Cluster(ClusterCommand::Remove { id }) => {
            client.call(reqwest::Method::DELETE, &format!("/api/v1/cluster/members/{id}"), None, None).await
        }
        CtlCommand::Cluster(ClusterCommand::Promote { id }) => {
            client
                .call(reqwest::Method::POST, &format!("/api/v1/cluster/members/{id}/promote"), None, None)
                .await
        }
        CtlCommand::Node(NodeCommand::Drain { id }) => {
            client
                .call(reqwest::Method::POST, &format!("/api/v1/cluster/members/{id}/drain"), None, None)
                .await
        }
        CtlCommand::Cluster(ClusterCommand::FinalizeUpgrade) => {
            client.call(reqwest::Method::POST, "/api/v1/cluster/finalize-upgrade", None, None).await
        }
        CtlCommand::Settings(SettingsCommand::Get) => {
            client.call(reqwest::Method::GET, "/api/v1/settings", None, None).await
        }
        CtlCommand::Settings(SettingsCommand::Put { file, revision }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
            let (body, revision) = settings_body(body, revision);
            client.call(reqwest::Method::PUT, "/api/v1/settings", Some(body), revision).await
        }
    }?;
    let (text, code) = match result {
        Ok(v) => (serde_json::to_string_pretty(&v)?, 0),
        Err(v) => (serde_json::to_string_pretty(&v)?, 1),
    };
    print_all(code == 0, &text)?;
    Ok(code)
}

/// The body and expected revision of `settings put`: the settings document itself, or what
/// `settings get` prints (`{"revision", "settings"}`), whose revision is then the expected one
/// unless `--revision` says otherwise.
fn settings_body(doc: Value, revision: Option<u64>) -> (Value, Option<u64>) {
    match (doc.get("settings"), doc.get("revision").and_then(Value::as_u64)) {
        (Some(settings), Some(rev)) if settings.is_object() => (settings.clone(), revision.or(Some(rev))),
        _ => (doc, revision),
    }
}

/// Writes `text` to stdout (`ok`) or stderr; a reader that went away (`ctl … | head`) is not
/// an error.
fn print_all(ok: bool, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let written = if ok {
        writeln!(std::io::stdout().lock(), "{text}")
    } else {
        writeln!(std::io::stderr().lock(), "{text}")
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    /// `ctl status`: the cluster view and the tenant's telemetry storage of the node at --url.
    async fn status(&self) -> anyhow::Result<Result<Value, Value>> {
        let cluster = match self.call(reqwest::Method::GET, "/api/v1/cluster", None, None).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let storage =
            self.call(reqwest::Method::GET, "/api/v1/fleet/storage?consistency=local", None, None).await?;
        Ok(storage.map(|telemetry| serde_json::json!({ "cluster": cluster, "telemetry": telemetry })))
    }

    /// `Ok(Ok(body))` on 2xx, `Ok(Err(body))` on an API error, `Err` when the node is unreachable.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> anyhow::Result<Result<Value, Value>> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(rev) = if_match {
            req = req.header("if-match", format!("\"{rev}\""));
        }
        let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.url))?;
        let ok = resp.status().is_success();
        let status = resp.status();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({ "status": status.as_u16(), "body": text }));
        Ok(if ok { Ok(value) } else { Err(value) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::settings_body;

    #[test]
    fn settings_put_takes_what_settings_get_prints() {
        let settings = json!({ "refresh_interval_secs": 30 });
        let printed = json!({ "revision": 4, "settings": settings });
        assert_eq!(settings_body(printed.clone(), None), (settings.clone(), Some(4)));
        assert_eq!(settings_body(printed, Some(9)), (settings.clone(), Some(9)), "--revision wins");
        assert_eq!(settings_body(settings.clone(), None), (settings, None), "a bare document");
    }
}
