//! The floor peer of the ingest bench (`INGEST_PEER=floor`): three processes that do only
//! what a hub must do for a batch before any replication — read the HTTP request, look the
//! agent token up, parse the JSON batch and key its series, SHA-256 the body, verify the
//! Ed25519 signature against the agent's key, check the `seq` — and answer from memory. The
//! same simulated agents drive it as drive the real cluster, so the two figures side by side
//! show how much of the machine the front end alone takes before Raft and storage.
//!
//! The processes are this bench binary run again with `INGEST_FLOOR_SERVE=<addr>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use monsys_proto::agent::{self as wire, IngestBatch, IngestResponse, IngestStatus};
use serde_json::{Value, json};

use crate::common::{Proc, free_port, wait_until};

/// Environment variable that turns the bench binary into a floor server on that address.
const SERVE_ENV: &str = "INGEST_FLOOR_SERVE";

struct FloorAgent {
    id: String,
    key: VerifyingKey,
    last_seq: u64,
}

struct Floor {
    /// SHA-256 of the agent token → agent (the hub keeps the token's hash too).
    agents: Mutex<HashMap<[u8; 32], FloorAgent>>,
    /// This server's URL, sent as the owner hint.
    owner: HeaderValue,
}

/// Runs the floor server when the process was started as one; returns whether it was.
pub fn serve_if_asked() -> bool {
    let Ok(addr) = std::env::var(SERVE_ENV) else { return false };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("floor runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("floor listener");
        let floor = Arc::new(Floor {
            agents: Mutex::new(HashMap::new()),
            owner: HeaderValue::from_str(&format!("http://{addr}")).expect("address as header"),
        });
        let app = Router::new()
            .route("/api/v1/ready", get(|| async { StatusCode::NO_CONTENT }))
            .route("/api/v1/agents/register", post(register))
            .route("/api/v1/ingest", post(ingest))
            .with_state(floor);
        axum::serve(listener, app).await.expect("floor server");
    });
    true
}

/// Starts three floor servers and waits until each answers.
pub async fn start(http: &reqwest::Client) -> Vec<Proc> {
    let exe = std::env::current_exe().expect("bench binary path");
    let mut procs = Vec::new();
    for _ in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(&exe)
            .env(SERVE_ENV, &addr)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start floor server");
        procs.push(Proc { child, url: format!("http://{addr}") });
    }
    for p in &procs {
        wait_until("floor server ready", Duration::from_secs(20), async || {
            http.get(format!("{}/api/v1/ready", p.url)).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }
    procs
}

fn refuse(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({"error": code, "code": code, "details": {}}))).into_response()
}

async fn register(State(floor): State<Arc<Floor>>, Json(req): Json<Value>) -> Response {
    let Some(key) = req["signing_pubkey"].as_str().and_then(wire::decode_pubkey) else {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("{}{}", wire::AGENT_TOKEN_PREFIX, uuid::Uuid::new_v4().simple());
    let agent = FloorAgent { id: id.clone(), key, last_seq: 0 };
    floor.agents.lock().unwrap().insert(wire::body_sha256(token.as_bytes()), agent);
    Json(json!({"agent_id": id, "agent_token": token})).into_response()
}

async fn ingest(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> Response {
    let json =
        headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let token_sha = wire::body_sha256(token.as_bytes());
    let Some((id, key)) = floor.agents.lock().unwrap().get(&token_sha).map(|a| (a.id.clone(), a.key)) else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Ok(batch) = serde_json::from_slice::<IngestBatch>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad_request");
    };
    let series: Vec<String> = batch.metrics.iter().map(|s| s.series_key()).collect();
    if batch.agent_id != id || series.len() != batch.metrics.len() {
        return refuse(StatusCode::FORBIDDEN, "forbidden");
    }
    let Some(sig) = headers.get(wire::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return refuse(StatusCode::FORBIDDEN, "signature_missing");
    };
    if wire::verify_digest(&key, &wire::body_sha256(&body), sig).is_err() {
        return refuse(StatusCode::FORBIDDEN, "signature_invalid");
    }
    let (status, last_seq) = {
        let mut agents = floor.agents.lock().unwrap();
        let Some(agent) = agents.get_mut(&token_sha) else {
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
        };
        if batch.seq > agent.last_seq {
            agent.last_seq = batch.seq;
            (IngestStatus::Stored, batch.seq)
        } else {
            (IngestStatus::Duplicate, agent.last_seq)
        }
    };
    let mut answer = Json(IngestResponse { status, seq: batch.seq, last_seq }).into_response();
    answer.headers_mut().insert(wire::OWNER_HEADER, floor.owner.clone());
    answer
}
