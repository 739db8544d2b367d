//! API behaviour on a real cluster: bad input gets clear JSON errors and changes nothing,
//! authentication of public and internal routes, operability endpoints, forwarding limits.

mod common;

use common::{TOKEN, TestCluster, split};
use serde_json::{Value, json};

async fn settings_revision(c: &TestCluster) -> u64 {
    let (status, doc) = c.get(0, "/api/v1/settings").await;
    assert_eq!(status, 200, "{doc}");
    doc["revision"].as_u64().unwrap()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "error message present: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let c = TestCluster::start(3).await;
    assert_eq!(c.put_refresh(0, 30).await.0, 200);
    let before = settings_revision(&c).await;
    let follower = c.follower().await;
    let url = format!("{}/api/v1/settings", c.nodes[follower].url());
    let put = |body: &'static str, ct: &'static str| {
        c.http.put(&url).bearer_auth(TOKEN).header("content-type", ct).body(body).send()
    };

    let (s, b) = split(put("{\"refresh_interval_secs\": ", "application/json").await.unwrap()).await;
    assert_error(s, &b, 400, "bad_request");

    let mut wrong_type = common::settings_with_refresh(5);
    wrong_type["refresh_interval_secs"] = json!("five");
    let (s, b) = split(c.http.put(&url).bearer_auth(TOKEN).json(&wrong_type).send().await.unwrap()).await;
    assert_error(s, &b, 422, "invalid_body");

    let mut unknown = common::settings_with_refresh(5);
    unknown["colour"] = json!("blue");
    let (s, b) = split(c.http.put(&url).bearer_auth(TOKEN).json(&unknown).send().await.unwrap()).await;
    assert_error(s, &b, 422, "invalid_body");

    let (s, b) = c.put_settings(follower, &common::settings_with_refresh(0), None).await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["details"]["fields"][0]["field"], "refresh_interval_secs");

    let (s, b) = split(put("{}", "text/plain").await.unwrap()).await;
    assert_error(s, &b, 415, "unsupported_media_type");

    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(200 * 1024));
    let (s, b) = split(
        c.http
            .put(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 413, "payload_too_large");

    let (s, b) = c.put_settings(follower, &common::settings_with_refresh(7), Some(before - 1)).await;
    assert_error(s, &b, 412, "revision_mismatch");
    assert_eq!(b["details"]["current_revision"], before);

    let bad_etag = c
        .http
        .put(&url)
        .bearer_auth(TOKEN)
        .header("if-match", "\"abc\"")
        .json(&common::settings_with_refresh(7));
    let (s, b) = split(bad_etag.send().await.unwrap()).await;
    assert_error(s, &b, 400, "bad_request");

    let (s, b) = split(c.http.put(&url).json(&common::settings_with_refresh(7)).send().await.unwrap()).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = split(
        c.http
            .put(&url)
            .bearer_auth("msa_wrong")
            .json(&common::settings_with_refresh(7))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 401, "unauthorized");

    let (s, b) = c.get(follower, "/api/v1/nope").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = split(c.http.delete(&url).bearer_auth(TOKEN).send().await.unwrap()).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (s, b) = c.get(follower, "/api/v1/settings?consistency=sideways").await;
    assert_error(s, &b, 400, "bad_request");

    assert_eq!(settings_revision(&c).await, before, "no bad request changed the settings");
    let (_, doc) = c.get(0, "/api/v1/settings").await;
    assert_eq!(doc["settings"]["refresh_interval_secs"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_applies_only_on_the_current_revision() {
    let c = TestCluster::start(3).await;
    let (s, doc) = c.put_settings(1, &common::settings_with_refresh(11), Some(0)).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["revision"], 1);
    let (s, _) = c.put_settings(2, &common::settings_with_refresh(12), Some(0)).await;
    assert_eq!(s, 412, "second writer with the same stale revision loses");
    let r =
        c.http.get(format!("{}/api/v1/settings", c.nodes[2].url())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let (_, doc) = split(r).await;
    assert_eq!(doc["settings"]["refresh_interval_secs"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_routes_require_the_cluster_secret() {
    let c = TestCluster::start(1).await;
    let url = format!("{}/internal/v1/raft/vote", c.nodes[0].url());
    let (s, b) = split(c.http.post(&url).body(vec![1, 2, 3]).send().await.unwrap()).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = split(
        c.http
            .post(&url)
            .header("x-monsys-cluster-secret", "wrong-secret-xxxxxxxx")
            .body(vec![1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = split(
        c.http
            .post(&url)
            .header("x-monsys-cluster-secret", common::SECRET)
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
    let join = json!({"id": 99, "api_addr": "127.0.0.1:1", "gossip_addr": "127.0.0.1:2"});
    let members = format!("{}/api/v1/cluster/members", c.nodes[0].url());
    let (s, b) = split(
        c.http
            .post(&members)
            .header("x-monsys-cluster-secret", "nope-nope-nope-nope")
            .json(&join)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 401, "unauthorized");
    assert_eq!(
        monsys::cluster::status::status(&c.nodes[0].hub().replica).members.len(),
        1,
        "nothing was added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operability_endpoints_describe_the_cluster() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    for (i, node) in c.running() {
        let (s, b) = split(c.http.get(format!("{}/api/v1/health", node.url())).send().await.unwrap()).await;
        assert_eq!((s, b["status"].clone()), (200, json!("ok")));
        let (s, b) = split(c.http.get(format!("{}/api/v1/ready", node.url())).send().await.unwrap()).await;
        assert_eq!(s, 200, "node {i} ready: {b}");
        let (s, b) = c.get(i, "/api/v1/cluster").await;
        assert_eq!(s, 200);
        assert_eq!(b["leader"], c.nodes[leader].id());
        assert_eq!(b["members"].as_array().unwrap().len(), 3);
        assert!(b["members"].as_array().unwrap().iter().all(|m| m["role"] == "voter"));
    }
    c.wait_for("gossip sees everyone", std::time::Duration::from_secs(20), |c| async move {
        let (_, b) = c.get(0, "/api/v1/cluster").await;
        b["members"].as_array().unwrap().iter().all(|m| m["live"] == true && m["version"].is_string())
    })
    .await;
    let text =
        c.http.get(format!("{}/metrics", c.nodes[leader].url())).send().await.unwrap().text().await.unwrap();
    for name in [
        "monsys_raft_term",
        "monsys_raft_applied_index",
        "monsys_raft_is_leader 1",
        "monsys_gossip_live_members 3",
        "monsys_http_requests_total",
        "# HELP monsys_raft_leader_changes_total",
    ] {
        assert!(text.contains(name), "metrics contain {name}:\n{text}");
    }
    let (s, b) = c.get(0, "/api/v1/cluster/placement/agent/web-01").await;
    assert_eq!(s, 200, "{b}");
    assert!(b["owner"].is_u64());
    let (_, b1) = c.get(2, "/api/v1/cluster/placement/agent/web-01").await;
    assert_eq!(b["owner"], b1["owner"], "every node computes the same owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_request_is_never_forwarded_again() {
    let c = TestCluster::start(3).await;
    let follower = c.follower().await;
    let r = c
        .http
        .get(format!("{}/api/v1/settings", c.nodes[follower].url()))
        .bearer_auth(TOKEN)
        .header("x-monsys-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, b) = split(r).await;
    assert_error(s, &b, 503, "unavailable");
}

/// Every path and method in docs/openapi.json is routed (not the 404/405 fallback), so the
/// document cannot drift from the route table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_route_exists() {
    let c = TestCluster::start(1).await;
    let spec: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "999").replace("{kind}", "agent").replace("{key}", "k1");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = c.http.request(m, format!("{}{concrete}", c.nodes[0].url())).send().await.unwrap();
            let status = r.status().as_u16();
            let (_, body) = split(r).await;
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && body["error"] == "no such route"),
                "{method} {path} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} operations");
}

/// Requests that an extractor refuses before any handler runs (a path segment that is not a
/// number, a WebSocket route called without an upgrade, a query of the wrong type) get the
/// same JSON error body as every other error; they were plain text before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extractor_rejections_are_json_errors() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let r =
        c.http.delete(format!("{url}/api/v1/cluster/members/abc")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let (s, b) = split(r).await;
    assert_error(s, &b, 400, "bad_request");
    assert!(b["error"].as_str().unwrap().contains("abc"), "{b}");

    let (s, b) = split(c.http.get(format!("{url}/ws/alerts?ticket=mst_x")).send().await.unwrap()).await;
    assert!(b.is_object(), "JSON body: {b}");
    assert!((400..500).contains(&s), "{s} {b}");
    assert_eq!(b["code"], if s == 405 { "method_not_allowed" } else { "bad_request" }, "{b}");

    let (s, b) = split(
        c.http
            .post(format!("{url}/internal/v1/wait-applied?index=abc&wait_ms=1"))
            .header("x-monsys-cluster-secret", common::SECRET)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
}

/// The OpenAPI document's error codes are exactly the codes the API answers with.
#[test]
fn documented_error_codes_are_the_codes_the_api_uses() {
    let spec: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let documented: std::collections::BTreeSet<String> = spec["components"]["schemas"]["Error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .expect("Error.code enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let used: std::collections::BTreeSet<String> =
        monsys::error::CODES.iter().map(|c| c.to_string()).collect();
    assert_eq!(documented, used);
}

/// Every route of the route table (`src/api/mod.rs`) is in the OpenAPI document with the same
/// methods: with `every_documented_route_exists`, the two cannot drift either way.
#[test]
fn every_routed_path_is_documented() {
    let spec: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let table = include_str!("../src/api/mod.rs");
    let mut checked = 0;
    for chunk in table.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        let call = rest.split(".route").next().unwrap().split(';').next().unwrap();
        let ops =
            spec["paths"][path].as_object().unwrap_or_else(|| panic!("{path} is routed but not documented"));
        for method in ["get", "post", "put", "patch", "delete"] {
            let routed = call.contains(&format!(" {method}(")) || call.contains(&format!(".{method}("));
            assert_eq!(
                routed,
                ops.contains_key(method),
                "{method} {path}: routed {routed}, documented {}",
                !routed
            );
            checked += routed as usize;
        }
    }
    assert!(checked >= 40, "checked {checked} routes");
}

/// Settings changes and enrollment-token revocations are in the audit log with who made them;
/// a settings event lists each changed field with its old and new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_changes_and_token_revocations_are_audited() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    // a settings write is audited in its own entry once every member announces that it can
    // apply the audited form (gossip, moments after the start)
    c.wait_for("every member announces settings-audit", std::time::Duration::from_secs(20), |c| async move {
        c.running().all(|(_, n)| {
            n.hub().replica.members_support(monsys_raft::LOG_FEATURE_SETTINGS_AUDIT)
                && n.hub().replica.members_support(monsys_raft::LOG_FEATURE_ACTOR_AUDIT)
        })
    })
    .await;
    let follower = c.follower().await;
    assert_eq!(c.put_refresh(follower, 42).await.0, 200);
    // alert rules: written back unchanged, which is still a change of revision, audited
    let (_, rules) = c.get(follower, "/api/v1/alert-rules").await;
    let r = c
        .http
        .put(format!("{}/api/v1/alert-rules", c.nodes[follower].url()))
        .bearer_auth(TOKEN)
        .json(&json!({ "rules": rules["rules"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = c.nodes[follower].url();
    let (s, t) = split(
        c.http
            .post(format!("{url}/api/v1/enrollment-tokens"))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": "audited" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_str().unwrap();
    let r = c
        .http
        .delete(format!("{url}/api/v1/enrollment-tokens/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // the revocation's event is written just after the answer
    let audit = common::wait_audit(&c, 0, |events| {
        events.iter().any(|e| e["event_type"] == "enrollment_token_revoked")
    })
    .await;
    let events = audit["events"].as_array().unwrap();
    let find =
        |t: &str| events.iter().find(|e| e["event_type"] == t).unwrap_or_else(|| panic!("no {t} in {audit}"));
    let changed = find("settings_changed");
    assert_eq!(changed["actor"], "admin-token", "{changed}");
    let details = &changed["details"];
    assert_eq!(details["changes"], json!({ "refresh_interval_secs": [15, 42] }), "{details}");
    assert_eq!(details["revision"], 1);
    let revoked = find("enrollment_token_revoked");
    assert_eq!(revoked["actor"], "admin-token");
    // who created the token and who changed the rules is recorded, not a fixed "admin"
    let created = events
        .iter()
        .find(|e| e["event_type"] == "enrollment_token_created" && e["details"]["id"] == json!(id))
        .unwrap_or_else(|| panic!("no creation event of {id} in {audit}"));
    assert_eq!(created["actor"], "admin-token", "{created}");
    assert_eq!(created["details"]["name"], "audited", "{created}");
    assert_eq!(find("alert_rules_changed")["actor"], "admin-token");
    assert_eq!(revoked["details"]["id"], id, "{revoked}");
    let (_, verify) = c.get(0, "/api/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "the chain still verifies: {verify}");
}

/// Sends `raw` on a fresh connection to node 0 and returns what comes back within `within`
/// (empty if nothing does).
async fn raw_exchange(c: &TestCluster, raw: &[u8], within: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(c.nodes[0].config.api_addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_length_over_the_limit_is_refused_at_once() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    for (method, path) in
        [("PUT", "/api/v1/settings"), ("POST", "/api/v1/ingest"), ("POST", "/api/v1/agents/a1/heartbeat")]
    {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: 99999999999\r\n\r\n{{"
        );
        let answer = raw_exchange(&c, raw.as_bytes(), std::time::Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer:?}");
        assert!(answer.contains("payload_too_large"), "{path}: the JSON error body: {answer:?}");
    }
}

/// A connection to node 0 from the loopback address `from` (127.0.0.x), with `raw` sent.
async fn connect_from(c: &TestCluster, from: [u8; 4], raw: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    let mut s = socket.connect(c.nodes[0].config.api_addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    s
}

/// Reads what the server sends until it closes the connection or `within` passes; whether it
/// closed, and what it sent.
async fn until_closed(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> (bool, String) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_clients_are_cut_and_one_address_cannot_take_every_connection() {
    use std::time::Duration;
    let opts = common::ClusterOpts {
        http_header_timeout_ms: 1000,
        http_body_stall_ms: 1000,
        max_connections_per_ip: 3,
        ..Default::default()
    };
    let c = TestCluster::start_with(1, opts).await;
    c.wait_leader().await;

    // headers that never finish (slowloris): closed at the header deadline
    let mut slow = connect_from(&c, [127, 0, 0, 2], b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: ").await;
    let started = std::time::Instant::now();
    let (closed, _) = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());

    // a body that stalls: the request ends with an answer instead of waiting for ever
    let stalled = format!(
        "PUT /api/v1/settings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\""
    );
    let mut body = connect_from(&c, [127, 0, 0, 3], stalled.as_bytes()).await;
    let (_, answer) = until_closed(&mut body, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "an error answer, not a hang: {answer:?}");
    assert!(answer.contains("\"code\""), "with the JSON error body: {answer:?}");

    // three idle connections from 127.0.0.4 fill its cap; a fourth is refused, others are not
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from(&c, [127, 0, 0, 4], b"").await);
    }
    let mut fourth = connect_from(&c, [127, 0, 0, 4], b"").await;
    let (closed, answer) = until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("\"code\":\"unavailable\""), "{answer:?}");
    assert_eq!(c.get(0, "/api/v1/health").await.0, 200, "another address is served");
    // the idle ones reach the idle deadline and free the address's places
    for s in &mut idle {
        assert!(until_closed(s, Duration::from_secs(5)).await.0, "an idle connection is closed");
    }
    let mut again = connect_from(&c, [127, 0, 0, 4], b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (_, answer) = until_closed(&mut again, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// Every request body the API parses refuses unknown fields, and the document says so, so that
/// a generated client or fuzzer does not send fields the server refuses. (The internal
/// rate-limit check is the one body that tolerates extra fields.)
#[test]
fn documented_request_bodies_refuse_unknown_fields() {
    let spec: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let schemas = spec["components"]["schemas"].clone();
    let resolve = |s: &Value| {
        let mut s = s.clone();
        while let Some(r) = s["$ref"].as_str() {
            s = schemas[r.rsplit('/').next().unwrap()].clone();
        }
        s
    };
    let mut checked = 0;
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let Some(content) = op["requestBody"]["content"].as_object() else { continue };
            for (ct, body) in content {
                let schema = resolve(&body["schema"]);
                if schema["type"] != "object" || path == "/internal/v1/ratelimit" {
                    continue;
                }
                assert_eq!(schema["additionalProperties"], false, "{method} {path} ({ct})");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} bodies checked");
}
