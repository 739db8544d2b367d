//! `cargo bench --bench stalled`: what stalled clients cost a hub's other clients.
//!
//! One real hub on 127.0.0.1. First a baseline: `STALLED_CLIENTS` (default 16) clients read
//! `GET /api/v1/settings` (linearizable) back to back for `STALLED_SECS` (default 5) seconds.
//! Then `STALLED_CONNS` (default 500) connections from 127.0.0.2 stall: half send a request
//! line and part of a header and then one more header byte every second (slowloris), half send
//! headers declaring a 100-byte body and then nothing. The same load runs again while they
//! stall, and the bench prints both runs side by side with the ratio stalled ÷ baseline
//! (target: throughput ≥ 0.9×, p99 ≤ 1.5×). Last it waits out the hub's header deadline
//! (20 s by default) and counts how many stalled connections the hub has closed (target: all).
//! `MONSYS_BENCH_BIN=<path>` runs it against another hub binary.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TOKEN, env, pct, start_hub, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `clients` readers for `secs`; returns (requests/s, sorted latencies in ms, errors).
async fn load(http: &reqwest::Client, url: &str, clients: usize, secs: u64) -> (f64, Vec<f64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, stop) = (http.clone(), url.to_string(), stop.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match http.get(format!("{url}/api/v1/settings")).bearer_auth(TOKEN).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    (all.len() as f64 / started.elapsed().as_secs_f64(), all, errors)
}

/// Opens a stalled connection from 127.0.0.2: a slowloris header (`trickle`) or a body that
/// never comes.
async fn stall(addr: std::net::SocketAddr, trickle: bool) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(([127, 0, 0, 2], 0).into()).ok()?;
    let mut s = socket.connect(addr).await.ok()?;
    let head: &[u8] = if trickle {
        b"GET /api/v1/settings HTTP/1.1\r\nHost: x\r\nX-Slow: "
    } else {
        b"PUT /api/v1/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    };
    s.write_all(head).await.ok()?;
    Some(s)
}

/// Whether the hub closed `s` (a read returns end of file or an error at once).
async fn closed_by_hub(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an error answer before the close
            Err(_) => return false,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("stalled: bench");
        return;
    }
    let (clients, secs, conns) =
        (env("STALLED_CLIENTS", 16), env("STALLED_SECS", 5) as u64, env("STALLED_CONNS", 500));
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path(), 1, None);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_until("hub ready", Duration::from_secs(30), async || {
        http.get(format!("{}/api/v1/ready", hub.url)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let addr: std::net::SocketAddr = hub.url.trim_start_matches("http://").parse().unwrap();
    let _ = load(&http, &hub.url, clients, 1).await; // warm up
    let (base_rate, base_lat, base_err) = load(&http, &hub.url, clients, secs).await;

    let mut stalled = Vec::new();
    for i in 0..conns {
        if let Some(s) = stall(addr, i % 2 == 0).await {
            stalled.push((s, i % 2 == 0));
        }
    }
    let opened = stalled.len();
    let trickling = Arc::new(AtomicBool::new(true));
    let (rate, lat, err) = {
        // one more header byte per second on the slowloris half while the load runs
        let flag = trickling.clone();
        let mut trickled: Vec<TcpStream> = Vec::new();
        let mut bodies: Vec<TcpStream> = Vec::new();
        for (s, trickle) in stalled {
            if trickle { trickled.push(s) } else { bodies.push(s) }
        }
        let trickler = tokio::spawn(async move {
            while flag.load(Ordering::Relaxed) {
                for s in trickled.iter_mut() {
                    let _ = s.write_all(b"a").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            trickled
        });
        let result = load(&http, &hub.url, clients, secs).await;
        trickling.store(false, Ordering::Relaxed);
        let mut all = trickler.await.unwrap();
        all.append(&mut bodies);
        stalled = all.into_iter().map(|s| (s, false)).collect();
        result
    };

    // the header deadline (and the body stall limit) close every stalled connection
    let deadline = Duration::from_millis(
        monsys::config::Config::default()
            .http_header_timeout_ms
            .max(monsys::config::Config::default().http_body_stall_ms),
    ) + Duration::from_secs(3);
    tokio::time::sleep(deadline.saturating_sub(Duration::from_secs(secs))).await;
    let mut closed = 0;
    for (s, _) in stalled.iter_mut() {
        if closed_by_hub(s).await {
            closed += 1;
        }
    }

    println!(
        "\nstalled bench: 1 hub on 127.0.0.1, {clients} clients reading /api/v1/settings for {secs} s, \
         {opened} stalled connections from 127.0.0.2 (half slowloris, half a body that never comes)"
    );
    println!("{:<44} {:>10} {:>10} {:>8} {:>10}", "figure", "baseline", "stalled", "ratio", "target");
    let row = |name: &str, b: f64, s: f64, target: &str| {
        println!("{name:<44} {b:>10.1} {s:>10.1} {:>8.2} {target:>10}", s / b.max(1e-9));
    };
    row("reads/s", base_rate, rate, "≥ 0.90");
    row("read p50, ms", pct(&base_lat, 0.5), pct(&lat, 0.5), "-");
    row("read p99, ms", pct(&base_lat, 0.99), pct(&lat, 0.99), "≤ 1.50");
    row("failed reads", base_err as f64, err as f64, "0");
    println!(
        "stalled connections closed by the hub {:.0} s after they stalled: {closed} of {opened} (target: all)",
        deadline.as_secs_f64().max(secs as f64)
    );
    drop(hub);
}
