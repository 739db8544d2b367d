//! `cargo bench --bench auth`: login throughput (argon2id) through the HTTP API and the cost of
//! authenticating a request (session token, API key) from local replicated state, on a
//! single-node hub in this process. Prints each figure next to its target.
//!
//! Knobs: `AUTH_LOGINS` (default 40), `AUTH_CHECKS` (default 100000). Logins come from several
//! 127.0.0.x source addresses so the 10/min/IP login limit does not throttle the measurement.

use std::time::{Duration, Instant};

use monsys::auth::principal::authenticate;
use monsys::config::Config;
use serde_json::{Value, json};

const TOKEN: &str = "msa_bench_admin_token";
const PW: &str = "bench passphrase 0123456789";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("auth: bench");
        return;
    }
    let (logins, checks) = (env("AUTH_LOGINS", 40), env("AUTH_CHECKS", 100_000));
    let dir = tempfile::tempdir().unwrap();
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = Config {
        node_id: Some(1),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        gossip_addr: gossip,
        data_dir: dir.path().join("n1"),
        admin_token: Some(TOKEN.into()),
        cluster_secret: Some("bench-cluster-secret-0123456789".into()),
        ..Config::default()
    };
    let node = monsys::node::start(config).await.expect("start hub");
    let url = format!("http://{}", node.api_addr);
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/api/v1/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{url}/api/v1/auth/register"))
        .json(&json!({ "email": "bench@example.com", "password": PW, "name": "Bench" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.text().await.unwrap_or_default());

    // logins, 4 concurrent, from rotating source addresses
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut token = String::new();
    for chunk in (0..logins).collect::<Vec<_>>().chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let client = reqwest::Client::builder()
                    .local_address(std::net::IpAddr::from([127, 0, 0, 2 + (*i / 8) as u8]))
                    .build()
                    .unwrap();
                let url = url.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = client
                        .post(format!("{url}/api/v1/auth/login"))
                        .json(&json!({ "email": "bench@example.com", "password": PW }))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "login: {}", r.status());
                    let v: Value = r.json().await.unwrap();
                    (t.elapsed().as_secs_f64() * 1000.0, v["token"].as_str().unwrap().to_string())
                })
            })
            .collect();
        for t in tasks {
            let (ms, tok) = t.await.unwrap();
            lat.push(ms);
            token = tok;
        }
    }
    let login_rate = logins as f64 / started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);

    let r = http
        .post(format!("{url}/api/v1/api-keys"))
        .bearer_auth(&token)
        .json(&json!({ "name": "bench" }))
        .send()
        .await
        .unwrap();
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();

    let hub = node.hub.clone();
    let measure = async |credential: &str| {
        let mut us = Vec::with_capacity(checks);
        for _ in 0..checks {
            let t = Instant::now();
            let auth = authenticate(&hub, credential).await.expect("valid credential");
            us.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(auth);
        }
        us.sort_by(f64::total_cmp);
        us
    };
    let session = measure(&token).await;
    let api_key = measure(&key).await;

    println!(
        "\nauth bench: single hub in-process, {logins} logins (argon2id 19 MiB, t=2), {checks} credential checks each"
    );
    println!("{:<44} {:>12} {:>12}", "figure", "measured", "target");
    println!("{:<44} {:>12.1} {:>12}", "logins/s (4 concurrent)", login_rate, "-");
    println!("{:<44} {:>12.1} {:>12}", "login latency p50, ms", pct(&lat, 0.5), "-");
    println!("{:<44} {:>12.1} {:>12}", "login latency p99, ms", pct(&lat, 0.99), "-");
    println!("{:<44} {:>12.2} {:>12}", "session check p50, µs", pct(&session, 0.5), "≤ 100");
    println!("{:<44} {:>12.2} {:>12}", "session check p99, µs", pct(&session, 0.99), "-");
    println!("{:<44} {:>12.2} {:>12}", "API key check p50, µs", pct(&api_key, 0.5), "≤ 100");
    println!("{:<44} {:>12.2} {:>12}", "API key check p99, µs", pct(&api_key, 0.99), "-");
    println!(
        "{:<44} {:>12.3} {:>12}",
        "ratio session p50 ÷ 100 µs target",
        pct(&session, 0.5) / 100.0,
        "≤ 1.000"
    );
    node.shutdown().await;
}
