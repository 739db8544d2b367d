//! State-machine tests of the fleet domain: registration, exactly-once ingest, alerts, audit.

use monsys_proto::agent::Severity;

use super::*;
use crate::state_machine::test_support::apply_commands;
use crate::{Command, CommandResult, Options, StateMachineStore, storage};

const T: &str = "default";

async fn sm() -> (tempfile::TempDir, StateMachineStore) {
    let dir = tempfile::tempdir().unwrap();
    let sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
    (dir, sm)
}

async fn run(sm: &mut StateMachineStore, cmd: FleetCommand) -> CommandResult {
    apply_commands(sm, vec![Command::Fleet(cmd)]).await.remove(0)
}

fn token(sha: u8, max_uses: Option<u32>) -> FleetCommand {
    FleetCommand::CreateEnrollmentToken(EnrollmentToken {
        id: format!("et{sha}"),
        tenant: T.into(),
        name: "test".into(),
        sha256: [sha; 32],
        created_at_ms: 1,
        expires_at_ms: Some(1_000_000),
        max_uses,
        uses: 0,
        revoked: false,
    })
}

fn registration(machine: &str, key: Option<u8>, token_sha: u8, at_ms: u64) -> FleetCommand {
    FleetCommand::Register(Registration {
        enrollment_sha256: [1; 32],
        new_agent_id: format!("agent-{machine}-{at_ms}"),
        machine_id: machine.into(),
        hostname: format!("host-{machine}"),
        pubkey: key.map(|k| [k; 32]),
        token_sha256: [token_sha; 32],
        agent_version: "1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        at_ms,
    })
}

fn registered(r: CommandResult) -> (String, bool, bool) {
    match r {
        CommandResult::Fleet(FleetResult::Registered { agent_id, pinned, created }) => {
            (agent_id, pinned, created)
        }
        other => panic!("not registered: {other:?}"),
    }
}

fn batch(agent: &str, seq: u64, body: u8, key: Option<u8>, cpu: f64, at_ms: u64) -> IngestItem {
    IngestItem {
        tenant: T.into(),
        agent_id: agent.into(),
        seq,
        body_sha256: [body; 32],
        collected_at_ms: at_ms,
        received_at_ms: at_ms,
        verified_with: key.map(|k| [k; 32]),
        agent_version: "1.0".into(),
        samples: vec![("cpu_percent".into(), cpu), ("mem_percent".into(), 40.0)],
        inventory_json: None,
        processes_json: None,
        agent_alerts: vec![],
        fire: vec![],
        clear: vec![],
    }
}

/// The agent's stored cpu_percent samples (series 0 of `batch`).
fn cpu(fleet: &FleetReader, id: &str) -> Vec<(u64, f64)> {
    fleet.raw_series(T, id, 0, 0, u64::MAX).unwrap()
}

/// Bytes of the agent's blocks per resolution, counted from the stored keys.
fn stored_bytes(fleet: &FleetReader, id: &str) -> [i64; 4] {
    let prefix = format!("f/ts/{T}/{id}/").into_bytes();
    let mut out = [0i64; 4];
    for (k, v) in fleet.telemetry_dump(T, id).unwrap() {
        if let Some((res, ..)) = monsys_tsdb::series::parse_block_key(&prefix, &k) {
            out[res.index()] += (k.len() + v.len()) as i64;
        }
    }
    out
}

async fn ingest(sm: &mut StateMachineStore, items: Vec<IngestItem>) -> Vec<ItemOutcome> {
    match run(
        sm,
        FleetCommand::Group(
            items.into_iter().map(|i| GroupItem::Batch(Box::new(i))).collect::<Vec<_>>().into(),
        ),
    )
    .await
    {
        CommandResult::Fleet(FleetResult::Group(o)) => o,
        other => panic!("{other:?}"),
    }
}

async fn setup() -> (tempfile::TempDir, StateMachineStore, String) {
    let (dir, mut sm) = sm().await;
    run(&mut sm, token(1, None)).await;
    let (id, pinned, created) = registered(run(&mut sm, registration("m1", Some(7), 2, 10)).await);
    assert!(pinned && created);
    (dir, sm, id)
}

#[tokio::test]
async fn registration_is_idempotent_per_host_and_pins_the_key() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    assert_eq!(fleet.agent_by_token(&[2; 32]).unwrap(), Some((T.into(), id.clone())));

    // same host, same key: same id, new token, old token dead
    let (again, pinned, created) = registered(run(&mut sm, registration("m1", Some(7), 3, 20)).await);
    assert_eq!((again.as_str(), pinned, created), (id.as_str(), true, false));
    assert_eq!(fleet.agent_by_token(&[2; 32]).unwrap(), None);
    assert_eq!(fleet.agent_by_token(&[3; 32]).unwrap(), Some((T.into(), id.clone())));

    // same host, other key: refused, nothing changed
    let r = run(&mut sm, registration("m1", Some(8), 4, 30)).await;
    assert_eq!(r, CommandResult::FleetRejected(FleetRejection::SigningKeyMismatch));
    assert_eq!(fleet.agent_by_token(&[3; 32]).unwrap(), Some((T.into(), id.clone())));
    assert_eq!(fleet.agent(T, &id).unwrap().unwrap().pubkey, Some([7; 32]));

    // unknown enrollment token
    let mut bad = registration("m2", None, 5, 40);
    if let FleetCommand::Register(r) = &mut bad {
        r.enrollment_sha256 = [9; 32];
    }
    assert_eq!(run(&mut sm, bad).await, CommandResult::FleetRejected(FleetRejection::EnrollmentRefused));
    assert_eq!(fleet.agents(T).unwrap().len(), 1);
}

#[tokio::test]
async fn enrollment_tokens_expire_and_count_uses() {
    let (_d, mut sm) = sm().await;
    run(&mut sm, token(1, Some(1))).await;
    registered(run(&mut sm, registration("a", None, 2, 10)).await);
    // re-registration of the same host does not use the token up
    registered(run(&mut sm, registration("a", None, 3, 11)).await);
    let second = run(&mut sm, registration("b", None, 4, 12)).await;
    assert_eq!(second, CommandResult::FleetRejected(FleetRejection::EnrollmentRefused));
    run(&mut sm, token(1, None)).await; // same hash, fresh token (uses reset)
    let expired = run(&mut sm, registration("c", None, 5, 2_000_000)).await;
    assert_eq!(expired, CommandResult::FleetRejected(FleetRejection::EnrollmentRefused));
}

#[tokio::test]
async fn a_seq_is_stored_once_and_conflicts_and_replays_are_refused() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let out = ingest(
        &mut sm,
        vec![batch(&id, 1, 1, Some(7), 10.0, 60_000), batch(&id, 2, 2, Some(7), 20.0, 75_000)],
    )
    .await;
    assert_eq!(out, vec![ItemOutcome::Stored { last_seq: 1 }, ItemOutcome::Stored { last_seq: 2 }]);

    // a retry (same seq, same body) in the same group and later: duplicate, stored once
    let out = ingest(
        &mut sm,
        vec![
            batch(&id, 2, 2, Some(7), 20.0, 75_000),
            batch(&id, 3, 3, Some(7), 30.0, 90_000),
            batch(&id, 3, 3, Some(7), 30.0, 90_000),
        ],
    )
    .await;
    assert_eq!(
        out,
        vec![
            ItemOutcome::Duplicate { last_seq: 2 },
            ItemOutcome::Stored { last_seq: 3 },
            ItemOutcome::Duplicate { last_seq: 3 }
        ]
    );
    assert_eq!(cpu(&fleet, &id).len(), 3);

    // different body under a used seq
    let out = ingest(&mut sm, vec![batch(&id, 2, 9, Some(7), 99.0, 75_000)]).await;
    assert_eq!(out, vec![ItemOutcome::SeqConflict { last_seq: 3 }]);
    // a captured batch replayed after the duplicate window
    let mut late = batch(&id, 1, 1, Some(7), 10.0, 60_000);
    late.received_at_ms += DUPLICATE_WINDOW_MS + 1;
    assert_eq!(ingest(&mut sm, vec![late]).await, vec![ItemOutcome::Replay { last_seq: 3 }]);

    assert_eq!(cpu(&fleet, &id), vec![(60_000, 10.0), (75_000, 20.0), (90_000, 30.0)]);
    let events: Vec<String> = fleet.audit(T, 0, 100).unwrap().into_iter().map(|e| e.event_type).collect();
    assert!(events.contains(&"ingest_seq_conflict".to_string()), "{events:?}");
    assert!(events.contains(&"ingest_replay_rejected".to_string()), "{events:?}");
    assert_eq!(fleet.agent(T, &id).unwrap().unwrap().batches, 3);
}

#[tokio::test]
async fn the_pin_fences_batches_verified_under_another_key() {
    let (_d, mut sm, id) = setup().await;
    // unsigned batch of a pinned agent
    assert_eq!(
        ingest(&mut sm, vec![batch(&id, 1, 1, None, 1.0, 60_000)]).await,
        vec![ItemOutcome::KeyChanged]
    );
    // pin cleared: unsigned accepted, with one unsigned_payload audit per hour
    let clear = AgentAction { tenant: T.into(), agent_id: id.clone(), actor: "admin".into(), at_ms: 50_000 };
    assert_eq!(run(&mut sm, FleetCommand::ClearSigningKey(clear)).await, CommandResult::Ok);
    let out =
        ingest(&mut sm, vec![batch(&id, 1, 1, None, 1.0, 60_000), batch(&id, 2, 2, None, 1.0, 75_000)]).await;
    assert_eq!(out, vec![ItemOutcome::Stored { last_seq: 1 }, ItemOutcome::Stored { last_seq: 2 }]);
    let events: Vec<String> =
        sm.reader().fleet().audit(T, 0, 100).unwrap().into_iter().map(|e| e.event_type).collect();
    assert_eq!(events.iter().filter(|e| *e == "unsigned_payload").count(), 1, "{events:?}");
    assert!(events.contains(&"agent_signing_key_cleared".to_string()));
    // next registration pins the new key
    let (_, pinned, _) = registered(run(&mut sm, registration("m1", Some(8), 5, 80_000)).await);
    assert!(pinned);
    assert_eq!(
        ingest(&mut sm, vec![batch(&id, 3, 3, Some(7), 1.0, 90_000)]).await,
        vec![ItemOutcome::KeyChanged]
    );
    assert_eq!(
        ingest(&mut sm, vec![batch(&id, 3, 3, Some(8), 1.0, 90_000)]).await,
        vec![ItemOutcome::Stored { last_seq: 3 }]
    );
}

#[tokio::test]
async fn alerts_fire_once_and_auto_resolve() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let firing = |rule: &str| RuleFiring {
        rule_id: rule.into(),
        severity: Severity::Warning,
        message: "cpu high".into(),
        value: 97.0,
    };
    let mut b1 = batch(&id, 1, 1, Some(7), 97.0, 60_000);
    b1.fire = vec![firing("cpu_high")];
    b1.agent_alerts = vec![AgentAlertItem {
        key: "unit_failed_nginx".into(),
        severity: Severity::Critical,
        message: "nginx failed".into(),
    }];
    // the same firing proposed twice (e.g. by an old and a new owner) creates one alert
    let mut b2 = batch(&id, 2, 2, Some(7), 98.0, 75_000);
    b2.fire = vec![firing("cpu_high")];
    b2.agent_alerts = b1.agent_alerts.clone();
    ingest(&mut sm, vec![b1, b2]).await;
    let alerts = fleet.alerts(T).unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let cpu = alerts.iter().find(|a| a.key == "cpu_high").unwrap();
    assert_eq!((cpu.occurrences, cpu.state), (2, AlertState::Active));

    // condition clear + agent alert gone: both resolve automatically
    let mut b3 = batch(&id, 3, 3, Some(7), 5.0, 90_000);
    b3.clear = vec!["cpu_high".into()];
    ingest(&mut sm, vec![b3]).await;
    assert!(
        fleet
            .alerts(T)
            .unwrap()
            .iter()
            .all(|a| a.state == AlertState::Resolved && a.resolved_by.as_deref() == Some("auto"))
    );
    assert!(fleet.open_alerts(T, &id).unwrap().is_empty());

    // fires again after resolution: a new alert
    let mut b4 = batch(&id, 4, 4, Some(7), 99.0, 105_000);
    b4.fire = vec![firing("cpu_high")];
    ingest(&mut sm, vec![b4]).await;
    assert_eq!(fleet.alerts(T).unwrap().len(), 3);
}

#[tokio::test]
async fn offline_alerts_are_fenced_by_last_seen_and_resolved_by_a_heartbeat() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let seen = fleet.agent(T, &id).unwrap().unwrap().last_seen_ms;
    let stale =
        OfflineFiring { tenant: T.into(), agent_id: id.clone(), last_seen_ms: seen - 1, at_ms: 500_000 };
    let fresh = OfflineFiring { tenant: T.into(), agent_id: id.clone(), last_seen_ms: seen, at_ms: 500_000 };
    assert_eq!(
        run(&mut sm, FleetCommand::FireOffline(vec![stale])).await,
        CommandResult::Fleet(FleetResult::Count(0))
    );
    assert_eq!(
        run(&mut sm, FleetCommand::FireOffline(vec![fresh.clone(), fresh])).await,
        CommandResult::Fleet(FleetResult::Count(1))
    );
    assert_eq!(fleet.open_alerts(T, &id).unwrap().len(), 1);
    let hb = HeartbeatItem {
        tenant: T.into(),
        agent_id: id.clone(),
        received_at_ms: 600_000,
        sent_at_ms: 600_250,
        agent_version: "1.0".into(),
    };
    let out = run(&mut sm, FleetCommand::Group(vec![GroupItem::Heartbeat(hb)].into())).await;
    assert_eq!(out, CommandResult::Fleet(FleetResult::Group(vec![ItemOutcome::Seen])));
    assert!(fleet.open_alerts(T, &id).unwrap().is_empty());
    let rec = fleet.agent(T, &id).unwrap().unwrap();
    assert_eq!((rec.last_seen_ms, rec.clock_offset_ms), (600_000, 250));
}

#[tokio::test]
async fn rollups_aggregate_and_expiry_deletes_only_old_keys() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let day = 24 * 3_600_000;
    let t0 = 10 * day;
    ingest(
        &mut sm,
        vec![
            batch(&id, 1, 1, Some(7), 10.0, t0),
            batch(&id, 2, 2, Some(7), 30.0, t0 + 15_000),
            batch(&id, 3, 3, Some(7), 20.0, t0 + 45_000),
        ],
    )
    .await;
    // the head window is not sealed yet: its buckets are computed on read
    let m1 = fleet.rollup_series(Resolution::M1, T, &id, 0, 0, u64::MAX).unwrap();
    assert_eq!(m1.len(), 1);
    let a = m1[0].1;
    assert_eq!((a.min, a.max, a.count, a.last), (10.0, 30.0, 3, 20.0));
    assert_eq!(a.avg(), 20.0);

    // a batch three days later seals the first window into stored rollups
    ingest(&mut sm, vec![batch(&id, 4, 4, Some(7), 50.0, t0 + 3 * day)]).await;
    assert_eq!(fleet.rollup_series(Resolution::M1, T, &id, 0, 0, u64::MAX).unwrap()[0], m1[0]);
    let bytes_before = fleet.telemetry_bytes().unwrap()[T];
    // raw keeps 48 h by default: expiring at t0 + 3 days drops the first window's raw block
    let r = run(&mut sm, FleetCommand::Expire { at_ms: t0 + 3 * day }).await;
    assert_eq!(r, CommandResult::Fleet(FleetResult::Count(1)));
    assert_eq!(cpu(&fleet, &id), vec![(t0 + 3 * day, 50.0)]);
    assert_eq!(
        fleet.rollup_series(Resolution::M1, T, &id, 0, 0, u64::MAX).unwrap().len(),
        2,
        "1m rollups are kept 14 days"
    );
    let bytes_after = fleet.telemetry_bytes().unwrap()[T];
    assert!(
        bytes_after[0] < bytes_before[0] && bytes_after[1] == bytes_before[1],
        "{bytes_before:?} {bytes_after:?}"
    );
    assert_eq!(bytes_after, stored_bytes(&fleet, &id), "counters match the blocks");
}

#[tokio::test]
async fn delete_agent_removes_its_data_and_the_audit_chain_verifies() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    ingest(&mut sm, vec![batch(&id, 1, 1, Some(7), 10.0, 60_000)]).await;
    let del = AgentAction { tenant: T.into(), agent_id: id.clone(), actor: "admin".into(), at_ms: 70_000 };
    assert_eq!(run(&mut sm, FleetCommand::DeleteAgent(del.clone())).await, CommandResult::Ok);
    assert!(fleet.agent(T, &id).unwrap().is_none());
    assert!(fleet.series(T, &id).unwrap().is_empty());
    assert!(fleet.telemetry_dump(T, &id).unwrap().is_empty());
    assert_eq!(
        fleet.telemetry_bytes().unwrap().get(T).copied().unwrap_or_default(),
        [0; 4],
        "counters follow the deletion"
    );
    assert!(fleet.agent_by_token(&[2; 32]).unwrap().is_none());
    assert_eq!(
        ingest(&mut sm, vec![batch(&id, 2, 2, Some(7), 1.0, 80_000)]).await,
        vec![ItemOutcome::UnknownAgent]
    );
    assert_eq!(
        run(&mut sm, FleetCommand::DeleteAgent(del)).await,
        CommandResult::FleetRejected(FleetRejection::UnknownAgent)
    );
    let n = fleet.verify_audit(T).unwrap().unwrap();
    assert!(n >= 3, "{n}");
}

/// One apply call carrying data and then the deletion of its agent: the deletion starts a
/// new run, so its prescan sees what the entries before it wrote.
#[tokio::test]
async fn a_delete_applied_with_earlier_writes_in_one_call_sees_them() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let group = |seq: u64, at: u64| {
        Command::Fleet(FleetCommand::Group(
            vec![GroupItem::Batch(Box::new(batch(&id, seq, seq as u8, Some(7), 5.0, at)))].into(),
        ))
    };
    let del = AgentAction { tenant: T.into(), agent_id: id.clone(), actor: "admin".into(), at_ms: 90_000 };
    let results = apply_commands(
        &mut sm,
        vec![group(1, 60_000), group(2, 75_000), Command::Fleet(FleetCommand::DeleteAgent(del))],
    )
    .await;
    assert_eq!(results[2], CommandResult::Ok);
    assert!(fleet.agent(T, &id).unwrap().is_none());
    assert!(fleet.series(T, &id).unwrap().is_empty());
    assert!(fleet.telemetry_dump(T, &id).unwrap().is_empty(), "nothing written by the same call survives");
    assert_eq!(fleet.telemetry_bytes().unwrap().get(T).copied().unwrap_or_default(), [0; 4]);
}

#[tokio::test]
async fn rules_are_a_compare_and_set_and_validated() {
    let (_d, mut sm) = sm().await;
    let fleet = sm.reader().fleet();
    assert_eq!(fleet.rules(T).unwrap().revision, 0);
    let rules = vec![AlertRule {
        id: "cpu".into(),
        metric: "cpu_percent".into(),
        threshold: 80.0,
        for_samples: 2,
        severity: Severity::Warning,
        enabled: true,
    }];
    let put = |rev: Option<u64>, rules: Vec<AlertRule>| FleetCommand::PutRules {
        tenant: T.into(),
        expected_revision: rev,
        rules,
        at_ms: 1,
    };
    assert!(matches!(
        run(&mut sm, put(Some(0), rules.clone())).await,
        CommandResult::Fleet(FleetResult::Rules(RulesDoc { revision: 1, .. }))
    ));
    assert_eq!(
        run(&mut sm, put(Some(0), rules.clone())).await,
        CommandResult::Rejected(crate::Rejection::RevisionMismatch { current: 1 })
    );
    let dup = vec![rules[0].clone(), rules[0].clone()];
    assert!(matches!(
        run(&mut sm, put(None, dup)).await,
        CommandResult::Rejected(crate::Rejection::Invalid(_))
    ));
    assert_eq!(fleet.rules(T).unwrap().rules, rules);
}

#[tokio::test]
async fn samples_from_the_future_are_refused_and_idle_heads_are_sealed_by_expiry() {
    let (_d, mut sm, id) = setup().await;
    let fleet = sm.reader().fleet();
    let t0 = 10 * 24 * 3_600_000;
    let mut ahead = batch(&id, 1, 1, Some(7), 10.0, t0 + super::telemetry::MAX_FUTURE_MS + 1);
    ahead.received_at_ms = t0;
    assert_eq!(ingest(&mut sm, vec![ahead]).await, vec![ItemOutcome::Stored { last_seq: 1 }]);
    assert!(cpu(&fleet, &id).is_empty(), "the batch is stored, its samples are not");
    assert_eq!(fleet.telemetry_head(T, &id).unwrap().refused, 2);

    ingest(&mut sm, vec![batch(&id, 2, 2, Some(7), 20.0, t0)]).await;
    let head_window = |f: &FleetReader| f.telemetry_head(T, &id).unwrap().window;
    assert_eq!(head_window(&fleet), Some(t0));
    // an expiry run soon after leaves the head alone; one two windows later seals it
    run(&mut sm, FleetCommand::Expire { at_ms: t0 + 60_000 }).await;
    assert_eq!(head_window(&fleet), Some(t0));
    run(&mut sm, FleetCommand::Expire { at_ms: t0 + 20 * 60_000 }).await;
    assert_eq!(head_window(&fleet), Some(t0 + 10 * 60_000));
    assert_eq!(cpu(&fleet, &id), vec![(t0, 20.0)]);
    let h1 = fleet.rollup_series(Resolution::H1, T, &id, 0, 0, u64::MAX).unwrap();
    assert_eq!(h1.len(), 1);
    assert_eq!(h1[0].1.count, 1);
    assert_eq!(fleet.telemetry_bytes().unwrap()[T], stored_bytes(&fleet, &id));
}

#[tokio::test]
async fn registrations_in_one_batch_apply_as_if_one_after_another() {
    let (_d, mut sm) = sm().await;
    run(&mut sm, token(1, Some(2))).await;
    let reg = |machine, key, sha, at| Command::Fleet(registration(machine, key, sha, at));
    assert!(reg("a", None, 2, 10).batchable(), "registrations may be batched");
    let results = apply_commands(
        &mut sm,
        vec![Command::Batch(vec![
            reg("a", Some(7), 2, 10),
            reg("a", Some(7), 3, 11), // the same host again: same id, token 2 replaced
            reg("a", Some(8), 4, 12), // another key for it: refused
            reg("b", None, 5, 13),    // uses the token's second use
            reg("c", None, 6, 14),    // no use left
        ])],
    )
    .await;
    let CommandResult::Batch(mut r) = results.into_iter().next().unwrap() else { panic!("not a batch") };
    let (a, pinned, created) = registered(r.remove(0));
    assert!(pinned && created);
    assert_eq!(registered(r.remove(0)), (a.clone(), true, false));
    assert_eq!(r.remove(0), CommandResult::FleetRejected(FleetRejection::SigningKeyMismatch));
    assert!(registered(r.remove(0)).2, "b is new");
    assert_eq!(r.remove(0), CommandResult::FleetRejected(FleetRejection::EnrollmentRefused));
    let fleet = sm.reader().fleet();
    assert_eq!(fleet.agent_by_token(&[2; 32]).unwrap(), None);
    assert_eq!(fleet.agent_by_token(&[3; 32]).unwrap(), Some((T.into(), a)));
    assert_eq!(fleet.agents(T).unwrap().len(), 2);
}
