//! Golden bytes of the fleet domain's part of the Raft log: every variant of [`FleetCommand`]
//! and [`GroupItem`], of the enums inside them ([`AlertState`], [`Severity`]), and of the
//! results followers decode ([`FleetResult`], [`ItemOutcome`], [`FleetRejection`],
//! [`AlertSource`]).
//!
//! A FAILING TEST HERE MEANS THE LOG FORMAT CHANGED: a variant was reordered or removed, or a
//! payload struct's fields changed. Nodes of the previous release would misread the log. Put
//! the old shape back and add a new variant at the end instead (see the module doc of
//! `command`); never edit these strings to make a test pass.
//!
//! Values are encoded wrapped in [`Command::Fleet`] / [`CommandResult`], like
//! `command::tests::encoding_is_stable`, so the outer tag is pinned too: the first 4 bytes are
//! the outer variant index, the next 4 the inner one (little-endian u32), strings are a u64
//! length and the bytes. Fields of the same type get distinct values, so swapping two of them
//! changes the bytes.

use std::sync::Arc;

use monsys_proto::agent::Severity;

use super::*;
use crate::codec::assert_golden as check;
use crate::{Command, CommandResult};

fn token() -> EnrollmentToken {
    EnrollmentToken {
        id: "e1".into(),
        tenant: "t".into(),
        name: "n".into(),
        sha256: [7; 32],
        created_at_ms: 1,
        expires_at_ms: Some(2),
        max_uses: Some(3),
        uses: 4,
        revoked: false,
    }
}

fn action() -> AgentAction {
    AgentAction { tenant: "t".into(), agent_id: "a1".into(), actor: "u1".into(), at_ms: 1 }
}

fn rule() -> AlertRule {
    AlertRule {
        id: "r1".into(),
        metric: "cpu".into(),
        threshold: 0.5,
        for_samples: 2,
        severity: Severity::Critical,
        enabled: true,
    }
}

fn ingest_item() -> IngestItem {
    IngestItem {
        tenant: "t".into(),
        agent_id: "a1".into(),
        seq: 1,
        body_sha256: [7; 32],
        collected_at_ms: 2,
        received_at_ms: 3,
        verified_with: Some([8; 32]),
        agent_version: "v1".into(),
        samples: vec![("cpu".into(), 0.5)],
        inventory_json: Some(b"{}".to_vec()),
        processes_json: None,
        agent_alerts: vec![AgentAlertItem { key: "k".into(), severity: Severity::Info, message: "m".into() }],
        fire: vec![RuleFiring {
            rule_id: "r1".into(),
            severity: Severity::Warning,
            message: "m".into(),
            value: 0.25,
        }],
        clear: vec!["r2".into()],
    }
}

fn heartbeat() -> HeartbeatItem {
    HeartbeatItem {
        tenant: "t".into(),
        agent_id: "a1".into(),
        received_at_ms: 1,
        sent_at_ms: 2,
        agent_version: "v1".into(),
    }
}

fn set_alert_state(state: AlertState) -> Command {
    Command::Fleet(FleetCommand::SetAlertState {
        tenant: "t".into(),
        id: 1,
        state,
        actor: "u1".into(),
        at_ms: 2,
    })
}

#[test]
fn fleet_commands_are_pinned() {
    let fleet = Command::Fleet;
    check(&[
        (
            fleet(FleetCommand::CreateEnrollmentToken(token())),
            "03000000000000000200000000000000653101000000000000007401000000000000006e0707070707070707070707070707070707070707070707070707070707070707010000000000000001020000000000000001030000000400000000",
        ),
        (
            fleet(FleetCommand::RevokeEnrollmentToken { tenant: "t".into(), id: "e1".into() }),
            "030000000100000001000000000000007402000000000000006531",
        ),
        (
            fleet(FleetCommand::Register(Registration {
                enrollment_sha256: [7; 32],
                new_agent_id: "a1".into(),
                machine_id: "m".into(),
                hostname: "h".into(),
                pubkey: Some([8; 32]),
                token_sha256: [9; 32],
                agent_version: "v1".into(),
                os: "o".into(),
                arch: "x".into(),
                at_ms: 1,
            })),
            "030000000200000007070707070707070707070707070707070707070707070707070707070707070200000000000000613101000000000000006d01000000000000006801080808080808080808080808080808080808080808080808080808080808080809090909090909090909090909090909090909090909090909090909090909090200000000000000763101000000000000006f0100000000000000780100000000000000",
        ),
        (
            fleet(FleetCommand::Group(Arc::from([GroupItem::Batch(Box::new(ingest_item()))]))),
            "03000000030000000100000000000000000000000100000000000000740200000000000000613101000000000000000707070707070707070707070707070707070707070707070707070707070707020000000000000003000000000000000108080808080808080808080808080808080808080808080808080808080808080200000000000000763101000000000000000300000000000000637075000000000000e03f0102000000000000007b7d00010000000000000001000000000000006b0000000001000000000000006d0100000000000000020000000000000072310100000001000000000000006d000000000000d03f010000000000000002000000000000007232",
        ),
        (
            fleet(FleetCommand::Group(Arc::from([GroupItem::Heartbeat(heartbeat())]))),
            "0300000003000000010000000000000001000000010000000000000074020000000000000061310100000000000000020000000000000002000000000000007631",
        ),
        (
            fleet(FleetCommand::DeleteAgent(action())),
            "030000000400000001000000000000007402000000000000006131020000000000000075310100000000000000",
        ),
        (
            fleet(FleetCommand::RotateToken { action: action(), token_sha256: [7; 32] }),
            "0300000005000000010000000000000074020000000000000061310200000000000000753101000000000000000707070707070707070707070707070707070707070707070707070707070707",
        ),
        (
            fleet(FleetCommand::ClearSigningKey(action())),
            "030000000600000001000000000000007402000000000000006131020000000000000075310100000000000000",
        ),
        (
            fleet(FleetCommand::FireOffline(vec![OfflineFiring {
                tenant: "t".into(),
                agent_id: "a1".into(),
                last_seen_ms: 1,
                at_ms: 2,
            }])),
            "030000000700000001000000000000000100000000000000740200000000000000613101000000000000000200000000000000",
        ),
        (
            set_alert_state(AlertState::Acknowledged),
            "0300000008000000010000000000000074010000000000000001000000020000000000000075310200000000000000",
        ),
        (
            set_alert_state(AlertState::Resolved),
            "0300000008000000010000000000000074010000000000000002000000020000000000000075310200000000000000",
        ),
        (
            fleet(FleetCommand::PutRules {
                tenant: "t".into(),
                expected_revision: Some(1),
                rules: vec![rule()],
                at_ms: 2,
            }),
            "03000000090000000100000000000000740101000000000000000100000000000000020000000000000072310300000000000000637075000000000000e03f0200000002000000010200000000000000",
        ),
        (fleet(FleetCommand::Expire { at_ms: 1 }), "030000000a0000000100000000000000"),
        (
            fleet(FleetCommand::RecordAnomalies {
                tenant: "t".into(),
                anomalies: vec![NewAnomaly { agent_id: "a1".into(), kind: "k".into(), details: "{}".into() }],
                at_ms: 1,
            }),
            "030000000b00000001000000000000007401000000000000000200000000000000613101000000000000006b02000000000000007b7d0100000000000000",
        ),
        (
            fleet(FleetCommand::ResolveAnomaly { tenant: "t".into(), id: 1, actor: "u1".into(), at_ms: 2 }),
            "030000000c0000000100000000000000740100000000000000020000000000000075310200000000000000",
        ),
        (
            fleet(FleetCommand::RecordAudit {
                tenant: "t".into(),
                at_ms: 1,
                event_type: "e".into(),
                actor: "u1".into(),
                details: "{}".into(),
            }),
            "030000000d00000001000000000000007401000000000000000100000000000000650200000000000000753102000000000000007b7d",
        ),
        (
            fleet(FleetCommand::CreateEnrollmentTokenBy { token: token(), actor: "u1".into() }),
            "030000000e0000000200000000000000653101000000000000007401000000000000006e070707070707070707070707070707070707070707070707070707070707070701000000000000000102000000000000000103000000040000000002000000000000007531",
        ),
        (
            fleet(FleetCommand::PutRulesBy {
                tenant: "t".into(),
                expected_revision: Some(1),
                rules: vec![rule()],
                at_ms: 2,
                actor: "u1".into(),
            }),
            "030000000f0000000100000000000000740101000000000000000100000000000000020000000000000072310300000000000000637075000000000000e03f020000000200000001020000000000000002000000000000007531",
        ),
    ]);
}

#[test]
fn fleet_results_are_pinned() {
    let alert = AlertRecord {
        id: 1,
        tenant: "t".into(),
        agent_id: "a1".into(),
        key: "k".into(),
        source: AlertSource::Rule,
        severity: Severity::Warning,
        message: "m".into(),
        value: Some(0.5),
        state: AlertState::Active,
        fired_at_ms: 2,
        updated_at_ms: 3,
        resolved_at_ms: None,
        resolved_by: None,
        occurrences: 4,
    };
    let anomaly = Anomaly {
        id: 1,
        tenant: "t".into(),
        agent_id: "a1".into(),
        kind: "k".into(),
        details: "{}".into(),
        detected_at_ms: 2,
        resolved_at_ms: Some(3),
        resolved_by: Some("u1".into()),
    };
    let outcomes = vec![
        ItemOutcome::Stored { last_seq: 1 },
        ItemOutcome::Duplicate { last_seq: 2 },
        ItemOutcome::SeqConflict { last_seq: 3 },
        ItemOutcome::Replay { last_seq: 4 },
        ItemOutcome::UnknownAgent,
        ItemOutcome::KeyChanged,
        ItemOutcome::Seen,
    ];
    let result = CommandResult::Fleet;
    let rejected = CommandResult::FleetRejected;
    check(&[
        (
            result(FleetResult::Registered { agent_id: "a1".into(), pinned: true, created: false }),
            "0300000000000000020000000000000061310100",
        ),
        (
            result(FleetResult::Group(outcomes)),
            "03000000010000000700000000000000000000000100000000000000010000000200000000000000020000000300000000000000030000000400000000000000040000000500000006000000",
        ),
        (
            result(FleetResult::Rules(RulesDoc { revision: 1, rules: vec![rule()] })),
            "030000000200000001000000000000000100000000000000020000000000000072310300000000000000637075000000000000e03f020000000200000001",
        ),
        (
            result(FleetResult::Alert(alert)),
            "030000000300000001000000000000000100000000000000740200000000000000613101000000000000006b000000000100000001000000000000006d01000000000000e03f0000000002000000000000000300000000000000000004000000",
        ),
        (
            result(FleetResult::Anomaly(anomaly)),
            "030000000400000001000000000000000100000000000000740200000000000000613101000000000000006b02000000000000007b7d02000000000000000103000000000000000102000000000000007531",
        ),
        (result(FleetResult::Count(7)), "03000000050000000700000000000000"),
        (rejected(FleetRejection::EnrollmentRefused), "0400000000000000"),
        (rejected(FleetRejection::SigningKeyMismatch), "0400000001000000"),
        (rejected(FleetRejection::UnknownAgent), "0400000002000000"),
        (rejected(FleetRejection::NotFound), "0400000003000000"),
        (rejected(FleetRejection::AlreadyResolved), "0400000004000000"),
    ]);
}

/// The small enums inside the records, on their own (each also appears above in context).
#[test]
fn fleet_field_enums_are_pinned() {
    check(&[
        (AlertState::Active, "00000000"),
        (AlertState::Acknowledged, "01000000"),
        (AlertState::Resolved, "02000000"),
    ]);
    check(&[
        (AlertSource::Rule, "00000000"),
        (AlertSource::Agent, "01000000"),
        (AlertSource::Offline, "02000000"),
    ]);
    check(&[(Severity::Info, "00000000"), (Severity::Warning, "01000000"), (Severity::Critical, "02000000")]);
}
