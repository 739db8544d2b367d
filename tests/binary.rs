//! The real `monsys` binary as an operator runs it: first start prints the admin token once,
//! the node serves the API, a restart keeps the data and prints no new token, `monsys ctl`
//! talks to it, and a second process joins it with `--join`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Hub {
    child: Child,
    url: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_hub(dir: &std::path::Path, api: u16, gossip: u16, extra: &[&str]) -> Hub {
    let child = Command::new(env!("CARGO_BIN_EXE_monsys"))
        .args([
            "hub",
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--gossip-addr",
            &format!("127.0.0.1:{gossip}"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("MONSYS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Hub { child, url: format!("http://127.0.0.1:{api}") }
}

/// Waits up to `within` for the admin token line on the hub's stdout.
fn read_token(hub: &mut Hub, within: Duration) -> Option<String> {
    let out = hub.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(t) = line.trim().strip_prefix("msa_") {
                let _ = tx.send(format!("msa_{t}"));
            }
        }
    });
    rx.recv_timeout(within).ok()
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    common::eventually(&format!("{url} to be ready"), Duration::from_secs(30), || async {
        let ready = client.get(format!("{url}/api/v1/ready")).timeout(Duration::from_secs(5)).send().await;
        ready.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await
}

fn ctl(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_monsys"))
        .args(["ctl", "--url", url, "--token", token])
        .args(args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_token_and_restart_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (api, gossip) = (free_port(), free_udp_port());
    let mut hub = spawn_hub(dir.path(), api, gossip, &[]);
    let token = read_token(&mut hub, Duration::from_secs(30)).expect("first start prints the admin token");
    wait_ready(&hub.url).await;

    let settings = dir.path().join("settings.json");
    let mut doc = serde_json::to_value(monsys_proto::Settings::default()).unwrap();
    doc["refresh_interval_secs"] = 33.into();
    std::fs::write(&settings, doc.to_string()).unwrap();
    let (code, out) =
        ctl(&hub.url, &token, &["settings", "put", settings.to_str().unwrap(), "--revision", "0"]);
    assert_eq!(code, 0, "{out}");
    let (code, _) = ctl(&hub.url, "msa_wrong", &["settings", "get"]);
    assert_eq!(code, 1, "a wrong token is refused");
    drop(hub);

    let mut hub = spawn_hub(dir.path(), api, gossip, &[]);
    wait_ready(&hub.url).await;
    assert_eq!(read_token(&mut hub, Duration::from_millis(500)), None, "a restart prints no new token");
    let (code, out) = ctl(&hub.url, &token, &["settings", "get"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["revision"].as_u64(), v["settings"]["refresh_interval_secs"].as_u64()),
        (Some(1), Some(33))
    );

    // Grow it: a second process joins with the first node's cluster secret.
    let secret = std::fs::read_to_string(dir.path().join("cluster.secret")).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let hub2 = spawn_hub(
        dir2.path(),
        free_port(),
        free_udp_port(),
        &["--join", &hub.url, "--cluster-secret", &secret],
    );
    wait_ready(&hub2.url).await;
    let (code, out) = ctl(&hub2.url, &token, &["settings", "get"]);
    assert_eq!(code, 0, "{out}");
    // ready as a learner; a voter once the leader has seen it catch up
    common::eventually("the joined node to become a voter", Duration::from_secs(30), || async {
        let (_, status) = ctl(&hub.url, &token, &["cluster", "status"]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let voters = status["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count();
        (voters == 2).then_some(())
    })
    .await;
}
