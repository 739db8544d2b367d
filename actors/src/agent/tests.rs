//! Actor tests against a recording committer.

use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use monsys_proto::agent::{IngestBatch, Sample, Severity, body_sha256, sign_body};

use super::*;

/// Stores seqs like the state machine would (above the highest = stored, else duplicate).
#[derive(Default)]
struct Recorder {
    commits: Mutex<Vec<Accepted>>,
}

impl Committer for Recorder {
    type Error = String;
    async fn commit(&self, accepted: Accepted) -> Result<CommitOutcome, String> {
        let mut commits = self.commits.lock().unwrap();
        let last = commits.iter().map(|a| a.request.batch.seq).max().unwrap_or(0);
        let seq = accepted.request.batch.seq;
        commits.push(accepted);
        Ok(if seq > last {
            CommitOutcome::Stored { last_seq: seq }
        } else {
            CommitOutcome::Duplicate { last_seq: last }
        })
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

fn request(seq: u64, cpu: f64, sign: Option<&SigningKey>, pinned: bool, at_ms: u64) -> IngestRequest {
    let batch = IngestBatch {
        agent_id: "a1".into(),
        seq,
        collected_at_ms: at_ms,
        agent_version: "1".into(),
        metrics: vec![Sample::new("cpu_percent", cpu)],
        inventory: None,
        processes: None,
        alerts: vec![],
    };
    let body = serde_json::to_vec(&batch).unwrap();
    IngestRequest {
        tenant: "default".into(),
        body_sha256: body_sha256(&body),
        signature: sign.map(|k| sign_body(k, &body)),
        series: batch.metrics.iter().map(|s| s.series_key()).collect(),
        batch,
        pinned: pinned.then(|| key().verifying_key().to_bytes()),
        last_seq: 0,
        rules: Arc::from(vec![RuleSpec {
            id: "cpu_high".into(),
            metric: "cpu_percent".into(),
            threshold: 90.0,
            for_samples: 2,
            severity: Severity::Warning,
        }]),
        received_at_ms: at_ms,
    }
}

fn registry() -> (Arc<Recorder>, AgentRegistry<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (rec.clone(), AgentRegistry::new(rec, 100))
}

#[tokio::test]
async fn signatures_are_required_once_a_key_is_pinned() {
    let (rec, reg) = registry();
    let other = SigningKey::from_bytes(&[4; 32]);
    assert!(matches!(
        reg.ingest("a1", request(1, 1.0, None, true, 1000)).await,
        Err(IngestRefusal::SignatureMissing)
    ));
    assert!(matches!(
        reg.ingest("a1", request(1, 1.0, Some(&other), true, 1000)).await,
        Err(IngestRefusal::SignatureInvalid(_))
    ));
    let mut tampered = request(1, 1.0, Some(&key()), true, 1000);
    tampered.body_sha256[0] ^= 1;
    assert!(matches!(reg.ingest("a1", tampered).await, Err(IngestRefusal::SignatureInvalid(_))));
    assert!(rec.commits.lock().unwrap().is_empty(), "nothing refused reaches the committer");

    let ok = reg.ingest("a1", request(1, 1.0, Some(&key()), true, 1000)).await.unwrap();
    assert_eq!(ok, CommitOutcome::Stored { last_seq: 1 });
    assert_eq!(rec.commits.lock().unwrap()[0].verified_with, Some(key().verifying_key().to_bytes()));
    // no pin: accepted unsigned, marked unverified
    reg.ingest("a2", request(1, 1.0, None, false, 1000)).await.unwrap();
    assert_eq!(rec.commits.lock().unwrap()[1].verified_with, None);
}

/// The actor keeps the pinned key decompressed between batches; a new pin (a rotated signing
/// key re-pinned at registration) replaces it at once.
#[tokio::test]
async fn a_changed_pin_is_verified_against_the_new_key_not_the_cached_one() {
    let (rec, reg) = registry();
    let rotated = SigningKey::from_bytes(&[5; 32]);
    let repinned = |seq: u64, signer: &SigningKey| {
        let mut r = request(seq, 1.0, Some(signer), true, 1000 * seq);
        r.pinned = Some(rotated.verifying_key().to_bytes());
        r
    };
    reg.ingest("a1", request(1, 1.0, Some(&key()), true, 1000)).await.unwrap();
    assert!(matches!(reg.ingest("a1", repinned(2, &key())).await, Err(IngestRefusal::SignatureInvalid(_))));
    assert_eq!(reg.ingest("a1", repinned(2, &rotated)).await.unwrap(), CommitOutcome::Stored { last_seq: 2 });
    assert_eq!(rec.commits.lock().unwrap()[1].verified_with, Some(rotated.verifying_key().to_bytes()));
    // and back: the old pin is not remembered either
    assert!(matches!(
        reg.ingest("a1", request(3, 1.0, Some(&rotated), true, 3000)).await,
        Err(IngestRefusal::SignatureInvalid(_))
    ));
}

#[tokio::test]
async fn rate_limit_is_per_agent() {
    let (_, reg) = registry();
    for seq in 1..=60 {
        reg.ingest("a1", request(seq, 1.0, None, false, 5_000)).await.unwrap();
    }
    match reg.ingest("a1", request(61, 1.0, None, false, 5_000)).await {
        Err(IngestRefusal::RateLimited(wait)) => assert_eq!(wait.as_millis(), 1000),
        other => panic!("{other:?}"),
    }
    assert!(
        reg.ingest("a2", request(1, 1.0, None, false, 5_000)).await.is_ok(),
        "another agent is not limited"
    );
}

#[tokio::test]
async fn rules_fire_after_stored_breaches_and_retries_do_not_count() {
    let (rec, reg) = registry();
    reg.ingest("a1", request(1, 95.0, None, false, 1000)).await.unwrap();
    // a retry of seq 1: not fresh, no evaluation
    reg.ingest("a1", request(1, 95.0, None, false, 2000)).await.unwrap();
    reg.ingest("a1", request(2, 96.0, None, false, 3000)).await.unwrap();
    reg.ingest("a1", request(3, 10.0, None, false, 4000)).await.unwrap();
    let commits = rec.commits.lock().unwrap();
    let fired: Vec<usize> = commits.iter().map(|c| c.decisions.fire.len()).collect();
    assert_eq!(fired, vec![0, 0, 1, 0]);
    assert_eq!(commits[3].decisions.clear, vec!["cpu_high".to_string()]);
}

#[tokio::test]
async fn idle_and_moved_actors_are_stopped() {
    let (_, reg) = registry();
    reg.ingest("a1", request(1, 1.0, None, false, 1000)).await.unwrap();
    reg.ingest("a2", request(1, 1.0, None, false, 1000)).await.unwrap();
    assert_eq!(reg.retain(std::time::Duration::from_secs(60), |id| id != "a2").await, 1);
    assert_eq!(reg.agents().await, vec!["a1".to_string()]);
    assert_eq!(reg.retain(std::time::Duration::ZERO, |_| true).await, 1);
    assert!(reg.agents().await.is_empty());
}

/// Commits nothing until the gate opens, then records the seqs it committed.
struct Gated {
    gate: tokio::sync::Semaphore,
    seqs: Mutex<Vec<u64>>,
}

impl Committer for Gated {
    type Error = String;
    async fn commit(&self, accepted: Accepted) -> Result<CommitOutcome, String> {
        let _open = self.gate.acquire().await.map_err(|e| e.to_string())?;
        let seq = accepted.request.batch.seq;
        self.seqs.lock().unwrap().push(seq);
        Ok(CommitOutcome::Stored { last_seq: seq })
    }
}

#[tokio::test]
async fn callers_that_give_up_free_their_place_and_their_batches_are_skipped() {
    use std::time::Duration;
    let gated = Arc::new(Gated { gate: tokio::sync::Semaphore::new(0), seqs: Mutex::default() });
    let reg = AgentRegistry::new(gated.clone(), 100);
    // the first batch blocks in its commit; every caller gives up (as a dropped connection does)
    for seq in 1..=registry::MAX_IN_FLIGHT_PER_AGENT as u64 {
        let call = reg.ingest("a1", request(seq, 1.0, None, false, seq * 1000));
        assert!(tokio::time::timeout(Duration::from_millis(20), call).await.is_err(), "seq {seq}");
    }
    gated.gate.add_permits(1000);
    // the agent is not refused as busy for ever: its places come back as the actor drains
    let mut outcome = None;
    for _ in 0..200 {
        match reg.ingest("a1", request(100, 1.0, None, false, 100_000)).await {
            Err(IngestRefusal::Busy) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => {
                outcome = Some(other);
                break;
            }
        }
    }
    assert!(matches!(outcome, Some(Ok(CommitOutcome::Stored { last_seq: 100 }))), "{outcome:?}");
    // seq 1 was being committed when its caller left; the queued ones were skipped
    assert_eq!(*gated.seqs.lock().unwrap(), [1, 100]);
}
