//! Agent plane on real in-process clusters: registration anywhere, ingest through any node to
//! the agent's owner, exactly-once storage across owner failover, signatures and replays,
//! alerts fired once, token rotation, silent agents.

mod common;

use std::time::Duration;

use common::agent::{TestAgent, enrollment_token};
use common::{TOKEN, TestCluster, split};
use serde_json::{Value, json};

fn urls(c: &TestCluster) -> Vec<String> {
    c.running().map(|(_, n)| n.url()).collect()
}

async fn agent_doc(c: &TestCluster, node: usize, id: &str) -> Value {
    let (status, doc) = c.get(node, &format!("/api/v1/agents/{id}")).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

/// Waits until every node's gossip sees every voter (placement views agree).
async fn wait_gossip(c: &TestCluster) {
    let n = c.running().count();
    c.wait_for("gossip sees every voter", Duration::from_secs(20), |c| async move {
        c.running().all(|(_, node)| node.hub().replica.live_voters().len() == n)
    })
    .await;
}

/// A 3-node cluster with a leader and full gossip, its URLs, and an enrollment token created
/// through node `via`.
async fn ready_cluster(via: usize) -> (TestCluster, Vec<String>, String) {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    wait_gossip(&c).await;
    let urls = urls(&c);
    let enrollment = enrollment_token(&c.http, &urls[via]).await;
    (c, urls, enrollment)
}

async fn owner_of(c: &TestCluster, id: &str) -> u64 {
    let (status, doc) = c.get(0, &format!("/api/v1/cluster/placement/agent/{id}")).await;
    assert_eq!(status, 200, "{doc}");
    doc["owner"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_register_anywhere_and_ingest_through_any_node() {
    let (c, urls, enrollment) = ready_cluster(1).await;
    let mut agents = Vec::new();
    // 12 random agent ids all land on one node of three with probability 3^-11
    for i in 0..12 {
        agents.push(TestAgent::register(&c.http, &urls[i % 3], &enrollment, &format!("m{i}"), false).await);
    }
    for (i, a) in agents.iter().enumerate() {
        for seq in 1..=5u64 {
            // a different node each time; the first ingest goes to a node other than the one
            // that registered the agent
            let (status, body) = a
                .deliver(&urls[(i + seq as usize) % 3..], seq, 10.0 + seq as f64, Duration::from_secs(20))
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["status"], "stored");
        }
    }
    let mut owners = std::collections::BTreeSet::new();
    for a in &agents {
        owners.insert(owner_of(&c, &a.id).await);
        for node in 0..3 {
            let doc = agent_doc(&c, node, &a.id).await;
            assert_eq!((doc["last_seq"].as_u64(), doc["batches"].as_u64()), (Some(5), Some(5)), "{doc}");
            assert_eq!(doc["status"], "online");
        }
    }
    assert!(owners.len() >= 2, "twelve agents should spread over the nodes: {owners:?}");

    // history: raw points and a rollup
    let id = &agents[0].id;
    let (from, to) = (1_700_000_000_000u64, 1_700_000_000_000u64 + 3_600_000);
    let (status, m) = c
        .get(2, &format!("/api/v1/agents/{id}/metrics?from={from}&to={to}&interval=raw&metric=cpu_percent"))
        .await;
    assert_eq!(status, 200, "{m}");
    let points = m["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 5, "{m}");
    assert_eq!(points[0]["v"], 11.0);
    let (status, m) = c
        .get(1, &format!("/api/v1/agents/{id}/metrics?from={from}&to={to}&interval=1m&metric=cpu_percent"))
        .await;
    assert_eq!(status, 200, "{m}");
    let buckets = m["series"][0]["points"].as_array().unwrap();
    let count: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 5, "{m}");
    let (status, list) = c.get(0, "/api/v1/agents?consistency=local").await;
    assert_eq!(status, 200);
    assert!(list["agents"].as_array().unwrap().len() <= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signatures_duplicates_conflicts_and_replays() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let a = TestAgent::register(&c.http, &url, &enrollment, "sig", false).await;
    let body = a.body(1, 5.0);

    // pinned key: a missing signature, a foreign key and a tampered body are refused
    let unsigned = c
        .http
        .post(format!("{url}/api/v1/ingest"))
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, e) = split(unsigned).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("signature_missing")), "{e}");
    let foreign = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let (status, e) =
        a.post(&url, &body, Some(monsys_proto::agent::sign_body(&foreign, &body))).await.unwrap();
    assert_eq!((status, e["code"].as_str()), (403, Some("signature_invalid")), "{e}");
    let sig = monsys_proto::agent::sign_body(a.key.as_ref().unwrap(), &body);
    let (status, e) = a.post(&url, &a.body(1, 6.0), Some(sig)).await.unwrap();
    assert_eq!((status, e["code"].as_str()), (403, Some("signature_invalid")), "{e}");

    // stored once; a retry is a duplicate; another body under the seq is a conflict
    let (status, r) = a.post(&url, &body, None).await.unwrap();
    assert_eq!((status, r["status"].as_str()), (200, Some("stored")), "{r}");
    let (status, r) = a.post(&url, &body, None).await.unwrap();
    assert_eq!((status, r["status"].as_str()), (200, Some("duplicate")), "{r}");
    let (status, e) = a.post(&url, &a.body(1, 99.0), None).await.unwrap();
    assert_eq!((status, e["code"].as_str()), (409, Some("seq_conflict")), "{e}");
    // a seq below the highest that was never stored: a replay
    assert_eq!(a.post(&url, &a.body(3, 1.0), None).await.unwrap().0, 200);
    let (status, e) = a.post(&url, &a.body(2, 1.0), None).await.unwrap();
    assert_eq!((status, e["code"].as_str()), (403, Some("replay_rejected")), "{e}");
    let doc = agent_doc(&c, 0, &a.id).await;
    assert_eq!((doc["batches"].as_u64(), doc["last_seq"].as_u64()), (Some(2), Some(3)), "{doc}");

    // bad input: nothing stored
    for (bytes, status, code) in [
        (b"{not json".to_vec(), 400, "bad_request"),
        (br#"{"agent_id":1}"#.to_vec(), 422, "invalid_body"),
        (vec![b' '; 200 * 1024], 413, "payload_too_large"),
    ] {
        let (s, e) = a.post(&url, &bytes, None).await.unwrap();
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{e}");
    }
    let mut other = serde_json::from_slice::<Value>(&a.body(4, 1.0)).unwrap();
    other["agent_id"] = json!("someone-else");
    let (s, e) = a.post(&url, &serde_json::to_vec(&other).unwrap(), None).await.unwrap();
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{e}");
    let mut bad_name = serde_json::from_slice::<Value>(&a.body(4, 1.0)).unwrap();
    bad_name["metrics"][0]["name"] = json!("CPU Percent!");
    let (s, e) = a.post(&url, &serde_json::to_vec(&bad_name).unwrap(), None).await.unwrap();
    assert_eq!((s, e["code"].as_str()), (422, Some("validation_failed")), "{e}");
    let mut repeated = serde_json::from_slice::<Value>(&a.body(4, 1.0)).unwrap();
    let first = repeated["metrics"][0].clone();
    repeated["metrics"].as_array_mut().unwrap().push(first);
    let (s, e) = a.post(&url, &serde_json::to_vec(&repeated).unwrap(), None).await.unwrap();
    assert_eq!((s, e["code"].as_str()), (422, Some("validation_failed")), "{e}");
    assert!(e.to_string().contains("series repeated"), "{e}");
    assert_eq!(agent_doc(&c, 0, &a.id).await["batches"], 2);

    // an agent without a key: accepted, audited as unsigned
    let u = TestAgent::register(&c.http, &url, &enrollment, "nokey", true).await;
    assert_eq!(u.post(&url, &u.body(1, 1.0), None).await.unwrap().0, 200);
    let (_, audit) = c.get(0, "/api/v1/audit?limit=1000").await;
    let types: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    for t in ["agent_registered", "ingest_seq_conflict", "ingest_replay_rejected", "unsigned_payload"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let (_, verify) = c.get(0, "/api/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
}

/// A host whose clock runs more than 10 minutes fast keeps reporting: its batches are stored
/// (seq, alerts, inventory) and only their samples, which cannot be placed in time, are refused
/// and counted. Refusing the batch with a 422 made `monsys agent` drop it, so such a host lost
/// all its telemetry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_agent_clock_loses_only_its_samples_not_its_batches() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let a = TestAgent::register(&c.http, &url, &enrollment, "fast-clock", false).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let batch_at = |seq: u64, collected_at_ms: u64| {
        let mut b: Value = serde_json::from_slice(&a.body(seq, 5.0)).unwrap();
        b["collected_at_ms"] = json!(collected_at_ms);
        serde_json::to_vec(&b).unwrap()
    };

    let (status, r) = a.post(&url, &batch_at(1, now + 11 * 60_000), None).await.unwrap();
    assert_eq!((status, r["status"].as_str()), (200, Some("stored")), "{r}");
    let doc = agent_doc(&c, 0, &a.id).await;
    assert_eq!((doc["last_seq"].as_u64(), doc["samples_refused"].as_u64()), (Some(1), Some(2)), "{doc}");

    // once the clock is right again, samples are stored and nothing more is refused
    let (status, r) = a.post(&url, &batch_at(2, now), None).await.unwrap();
    assert_eq!((status, r["status"].as_str()), (200, Some("stored")), "{r}");
    let doc = agent_doc(&c, 0, &a.id).await;
    assert_eq!((doc["batches"].as_u64(), doc["samples_refused"].as_u64()), (Some(2), Some(2)), "{doc}");
    let query = format!(
        "/api/v1/agents/{}/metrics?metric=cpu_percent&interval=raw&from={}&to={}",
        a.id,
        now - 1,
        now + 20 * 60_000
    );
    let (status, m) = c.get(0, &query).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        m["series"][0]["points"],
        json!([{ "t": now, "v": 5.0 }]),
        "batch 2's sample is stored, batch 1's is not: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_rotation_and_re_registration() {
    let (c, urls, enrollment) = ready_cluster(0).await;
    let mut a = TestAgent::register(&c.http, &urls[0], &enrollment, "rl", false).await;

    // 60 per minute per agent, counted by the owner whichever node receives the batch
    let mut limited = None;
    for seq in 1..=61u64 {
        let (s, body) = a.post(&urls[seq as usize % 3], &a.body(seq, 1.0), None).await.unwrap();
        if s == 429 {
            limited = Some((seq, body));
            break;
        }
        assert_eq!(s, 200, "{body}");
    }
    let (seq, body) = limited.expect("the 61st batch within a minute is limited");
    assert_eq!(seq, 61, "{body}");
    assert_eq!(body["code"], "rate_limited");

    // rotation: the old token is dead on every node once the call returns
    let r = c
        .http
        .post(format!("{}/api/v1/agents/{}/rotate-token", urls[1], a.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (s, v) = split(r).await;
    assert_eq!(s, 200, "{v}");
    for url in &urls {
        let (s, _) = a.post(url, &a.body(62, 1.0), None).await.unwrap();
        assert_eq!(s, 401, "old token still accepted at {url}");
    }
    a.token = v["agent_token"].as_str().unwrap().to_string();

    // re-registration keeps the id; another key is refused until the pin is cleared
    let id = a.id.clone();
    let (s, _) = a.try_register(&urls[2], &enrollment).await;
    assert_eq!((s, a.id.as_str()), (200, id.as_str()));
    a.key = Some(ed25519_dalek::SigningKey::from_bytes(&[42; 32]));
    let (s, e) = a.try_register(&urls[1], &enrollment).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("signing_key_mismatch")), "{e}");
    let r = c
        .http
        .post(format!("{}/api/v1/agents/{id}/rotate-signing-key", urls[2]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = a.try_register(&urls[0], &enrollment).await;
    assert_eq!((s, v["signing_key_pinned"].as_bool(), a.id.as_str()), (200, Some(true), id.as_str()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_owner_mid_stream_loses_nothing_and_fires_alerts_once() {
    let (mut c, all, enrollment) = ready_cluster(0).await;
    let rules = json!({ "rules": [{ "id": "cpu_high", "metric": "cpu_percent", "threshold": 90.0, "for_samples": 2, "severity": "warning", "enabled": true }] });
    let r = c
        .http
        .put(format!("{}/api/v1/alert-rules", all[0]))
        .bearer_auth(TOKEN)
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(TestAgent::register(&c.http, &all[i % 3], &enrollment, &format!("fo{i}"), false).await);
    }
    let victim_id = owner_of(&c, &agents[0].id).await;
    let victim = c.nodes.iter().position(|n| n.id() == victim_id).unwrap();

    const N: u64 = 24;
    let mut streams = Vec::new();
    for a in agents.drain(..) {
        let urls = all.clone();
        streams.push(tokio::spawn(async move {
            for seq in 1..=N {
                let (s, body) = a.deliver(&urls, seq, 95.0, Duration::from_secs(60)).await;
                assert_eq!(s, 200, "agent {} seq {seq}: {body}", a.id);
            }
            a
        }));
    }
    // crash the owner of agent 0 while the agents stream
    c.wait_for("agent 0 half way", Duration::from_secs(60), |c| {
        let id = c.nodes[0].hub().replica.reader().fleet().all_agents().unwrap();
        async move { id.iter().any(|a| a.last_seq >= N / 3) }
    })
    .await;
    c.crash(victim).await;
    let mut agents = Vec::new();
    for s in streams {
        agents.push(s.await.unwrap());
    }
    let survivor = (0..3).find(|i| *i != victim).unwrap();
    for a in &agents {
        let doc = agent_doc(&c, survivor, &a.id).await;
        assert_eq!(
            (doc["last_seq"].as_u64(), doc["batches"].as_u64()),
            (Some(N), Some(N)),
            "stored exactly once: {doc}"
        );
        let (_, m) = c
            .get(
                survivor,
                &format!(
                    "/api/v1/agents/{}/metrics?from=0&to=1800000000000&interval=1h&metric=cpu_percent",
                    a.id
                ),
            )
            .await;
        let count: u64 =
            m["series"][0]["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(count, N, "{m}");
        let (_, alerts) = c.get(survivor, &format!("/api/v1/alerts?state=all&agent_id={}", a.id)).await;
        let cpu: Vec<&Value> =
            alerts["alerts"].as_array().unwrap().iter().filter(|x| x["key"] == "cpu_high").collect();
        assert_eq!(cpu.len(), 1, "one cpu_high alert despite the owner change: {alerts}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_agent_raises_an_offline_alert_that_a_heartbeat_resolves() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let mut s = common::settings_with_refresh(15);
    s["agent_offline_after_secs"] = json!(30);
    assert_eq!(c.put_settings(0, &s, None).await.0, 200);
    let enrollment = enrollment_token(&c.http, &url).await;
    let a = TestAgent::register(&c.http, &url, &enrollment, "quiet", false).await;
    c.wait_for("an offline alert", Duration::from_secs(60), |c| {
        let id = a.id.clone();
        async move {
            let (_, v) = c.get(0, &format!("/api/v1/alerts?agent_id={id}")).await;
            v["alerts"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["key"] == "offline" && x["state"] == "active"))
        }
    })
    .await;
    assert_eq!(agent_doc(&c, 0, &a.id).await["status"], "offline");
    let hb = c
        .http
        .post(format!("{url}/api/v1/agents/{}/heartbeat", a.id))
        .bearer_auth(&a.token)
        .json(&json!({ "agent_version": "1.0.0", "sent_at_ms": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 204);
    let (_, v) = c.get(0, &format!("/api/v1/alerts?state=all&agent_id={}", a.id)).await;
    let offline: Vec<&Value> =
        v["alerts"].as_array().unwrap().iter().filter(|x| x["key"] == "offline").collect();
    assert_eq!(offline.len(), 1, "{v}");
    assert_eq!(
        (offline[0]["state"].as_str(), offline[0]["resolved_by"].as_str()),
        (Some("resolved"), Some("auto"))
    );
    assert_eq!(agent_doc(&c, 0, &a.id).await["status"], "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_integrity_checker_records_flat_metrics_downgrades_and_drift_once() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let mut a = TestAgent::register(&c.http, &url, &enrollment, "frozen", false).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    a.base_ms = now - 22 * 15_000;
    for seq in 1..=21 {
        assert_eq!(a.post(&url, &a.body(seq, 42.0), None).await.unwrap().0, 200);
    }
    // an older version and a clock ten minutes ahead, reported by a heartbeat
    let hb = json!({ "agent_version": "0.9.0", "sent_at_ms": now + 600_000 });
    let r = c
        .http
        .post(format!("{url}/api/v1/agents/{}/heartbeat", a.id))
        .bearer_auth(&a.token)
        .json(&hb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let hub = c.nodes[0].hub();
    assert!(monsys::ingest::integrity::run_once(hub).await >= 3);
    monsys::ingest::integrity::run_once(hub).await; // a second run records nothing twice
    let (status, v) = c.get(0, "/api/v1/integrity-anomalies").await;
    assert_eq!(status, 200, "{v}");
    let mut kinds: Vec<&str> =
        v["anomalies"].as_array().unwrap().iter().map(|x| x["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["clock_drift", "flat_metrics", "version_downgrade"], "{v}");

    let id = v["anomalies"][0]["id"].as_u64().unwrap();
    let resolve = |id: u64| {
        c.http.patch(format!("{url}/api/v1/integrity-anomalies/{id}/resolve")).bearer_auth(TOKEN).send()
    };
    assert_eq!(resolve(id).await.unwrap().status(), 200);
    assert_eq!(resolve(id).await.unwrap().status(), 409);
    assert_eq!(resolve(999).await.unwrap().status(), 404);
    let (_, v) = c.get(0, "/api/v1/integrity-anomalies").await;
    assert_eq!(v["anomalies"].as_array().unwrap().len(), 2);
    let (_, v) = c.get(0, "/api/v1/integrity-anomalies?include_resolved=1").await;
    assert_eq!(v["anomalies"].as_array().unwrap().len(), 3);
    assert_eq!(c.get(0, "/api/v1/integrity-anomalies?include_resolved=2").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_websocket_carries_heartbeats_on_any_node() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let (c, all, enrollment) = ready_cluster(0).await;
    let a = TestAgent::register(&c.http, &all[1], &enrollment, "ws", false).await;
    let connect = |node: usize, token: String, id: String| {
        let url = format!("{}/ws/agents/{id}", all[node].replace("http://", "ws://"));
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(req).await
        }
    };
    // a wrong token or another agent's id is refused at the upgrade
    assert!(connect(0, "ms_nope".into(), a.id.clone()).await.is_err());
    assert!(connect(0, a.token.clone(), "other".into()).await.is_err());
    for node in 0..3 {
        let (mut ws, _) = connect(node, a.token.clone(), a.id.clone()).await.unwrap();
        ws.send(Message::Text(
            json!({ "type": "heartbeat", "agent_version": "1.0.1", "sent_at_ms": 5 }).to_string().into(),
        ))
        .await
        .unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "ack", "{v}");
        ws.send(Message::Text("{\"type\":\"nonsense\"}".into())).await.unwrap();
        let v: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(v["code"], "invalid_body", "{v}");
        ws.close(None).await.unwrap();
    }
    assert_eq!(agent_doc(&c, 2, &a.id).await["agent_version"], "1.0.1");

    // an open socket is closed once the agent's token is rotated (here: by deleting the agent)
    let (mut ws, _) = connect(0, a.token.clone(), a.id.clone()).await.unwrap();
    let r =
        c.http.delete(format!("{}/api/v1/agents/{}", all[1], a.id)).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the server closes the socket");
    let (code, reason) = closed.expect("a close frame with a code");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_is_forwarded_once_to_the_owner_and_never_twice() {
    let (c, all, enrollment) = ready_cluster(0).await;
    let a = TestAgent::register(&c.http, &all[0], &enrollment, "hop", false).await;
    let owner_id = owner_of(&c, &a.id).await;
    let owner = c.nodes.iter().position(|n| n.id() == owner_id).unwrap();
    let other = (0..3).find(|i| *i != owner).unwrap();

    // through a non-owner: forwarded once, stored, counted as an owner forward there
    let (s, v) = a.post(&all[other], &a.body(1, 1.0), None).await.unwrap();
    assert_eq!(s, 200, "{v}");
    let metrics = c.http.get(format!("{}/metrics", all[other])).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("monsys_forwarded_requests_total")
            && l.contains("target=\"owner\"")
            && l.contains("outcome=\"ok\"")),
        "{metrics}"
    );
    let owner_metrics =
        c.http.get(format!("{}/metrics", all[owner])).send().await.unwrap().text().await.unwrap();
    assert!(owner_metrics.contains("monsys_ingest_batches_total{outcome=\"stored\"} 1"), "{owner_metrics}");

    // the answer names the owner; a batch sent there is stored without another forward
    let hinted = a.post_raw(&all[other], &a.body(2, 1.0), None).await.unwrap();
    let hint = hinted.headers()[monsys_proto::agent::OWNER_HEADER].to_str().unwrap().to_string();
    assert_eq!(hint, all[owner], "x-monsys-owner names the owner's URL");
    assert_eq!(split(hinted).await.0, 200);
    let (s, v) = a.post(&hint, &a.body(3, 1.0), None).await.unwrap();
    assert_eq!(s, 200, "{v}");
    // refusals of the owner carry the hint too (the agent trusts a hinted URL only then)
    let refused = a.post_raw(&all[other], &a.body(3, 2.0), None).await.unwrap();
    assert_eq!(refused.headers()[monsys_proto::agent::OWNER_HEADER], hint.as_str());
    assert_eq!(split(refused).await.0, 409, "seq 3 with another body");
    let owner_metrics =
        c.http.get(format!("{}/metrics", all[owner])).send().await.unwrap().text().await.unwrap();
    assert!(owner_metrics.contains("monsys_ingest_batches_total{outcome=\"stored\"} 3"), "{owner_metrics}");
    assert!(
        !owner_metrics
            .lines()
            .any(|l| l.starts_with("monsys_forwarded_requests_total") && l.contains("owner")),
        "the owner forwarded nothing: {owner_metrics}"
    );

    // a request that already made its hop and lands on a non-owner is refused, retryable
    let body = a.body(4, 1.0);
    let r = c
        .http
        .post(format!("{}/api/v1/ingest", all[other]))
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .header("x-monsys-hop", "1")
        .header(
            monsys_proto::agent::SIGNATURE_HEADER,
            monsys_proto::agent::sign_body(a.key.as_ref().unwrap(), &body),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, v) = split(r).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("unavailable")), "{v}");
    assert_eq!(agent_doc(&c, owner, &a.id).await["last_seq"], 3, "nothing applied");
}

/// Registrations wait for every live voter to have the entry while Raft keeps publishing its
/// metrics; hundreds at once once hung a node for good (a read of the metrics nested inside
/// another read deadlocked with openraft's writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_registrations_never_hang_a_node() {
    let (c, all, enrollment) = ready_cluster(0).await;
    let leader = c.wait_leader().await;
    let log_before = c.nodes[leader].hub().replica.raft_metrics().last_log_index.unwrap_or(0);
    let registrations = (0..1500).map(|i| {
        let (http, url, enrollment) = (c.http.clone(), all[i % 3].clone(), enrollment.clone());
        async move {
            let body = json!({
                "enrollment_token": enrollment, "hostname": format!("h{i}"), "machine_id": format!("m{i}"),
                "agent_version": "1.0.0", "os": "linux", "arch": "x86_64",
            });
            for _ in 0..50 {
                match http.post(format!("{url}/api/v1/agents/register")).json(&body).send().await {
                    Ok(r) if r.status().is_success() => return,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            panic!("registration {i} never succeeded");
        }
    });
    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(registrations))
        .await
        .expect("registrations hung");
    for url in &all {
        let r = c.http.get(format!("{url}/api/v1/health")).timeout(Duration::from_secs(5)).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "{url} stopped answering");
    }
    // concurrent registrations share entries (before: one entry, sync and replication each)
    let entries = c.nodes[leader].hub().replica.raft_metrics().last_log_index.unwrap_or(0) - log_before;
    assert!(entries < 750, "1500 registrations took {entries} log entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_limits_count_characters_as_the_document_says() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let body = |os: String| {
        json!({
            "enrollment_token": enrollment, "hostname": "h", "machine_id": "m1",
            "agent_version": "1.0.0", "os": os, "arch": "x86_64",
        })
    };
    // 64 characters of two bytes each are within the documented 1-64
    let r = c
        .http
        .post(format!("{url}/api/v1/agents/register"))
        .json(&body("é".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = split(
        c.http
            .post(format!("{url}/api/v1/agents/register"))
            .json(&body("é".repeat(65)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (422, Some("validation_failed")), "{v}");
}

/// An owner that is gone (its port refuses connections) is skipped at once by the node that
/// tried it: the agent's next owner takes the batch, without the seconds of 503s gossip's
/// failure detector would take to drop the dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_owner_is_skipped_at_once() {
    let (mut c, all, enrollment) = ready_cluster(0).await;
    let leader = c.wait_leader().await;
    // an agent owned by a follower (losing the leader would stall writes for an election)
    let mut found = None;
    for i in 0..20 {
        let a = TestAgent::register(&c.http, &all[0], &enrollment, &format!("handoff-{i}"), false).await;
        let owner_id = owner_of(&c, &a.id).await;
        let owner = c.nodes.iter().position(|n| n.id() == owner_id).unwrap();
        if owner != leader {
            found = Some((a, owner_id, owner));
            break;
        }
    }
    let (a, owner_id, owner) = found.expect("some agent is owned by a follower");
    let other = (0..3).find(|i| *i != owner && *i != leader).unwrap();
    let (s, body) = a.post(&all[other], &a.body(1, 1.0), None).await.unwrap();
    assert_eq!(s, 200, "{body}");

    c.crash(owner).await;
    let gossip_still_live = c.nodes[other].hub().replica.live_voters().contains_key(&owner_id);
    let (s, body) = a.post(&all[other], &a.body(2, 1.0), None).await.unwrap();
    assert_eq!(
        s, 200,
        "the next owner took the batch at once (gossip still live: {gossip_still_live}): {body}"
    );
    let (s, body) = a.post(&all[leader], &a.body(3, 1.0), None).await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(agent_doc(&c, leader, &a.id).await["last_seq"], 3);
}
