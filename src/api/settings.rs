//! `GET/PUT /api/v1/settings`: the tenant's settings, a compare-and-set register.
//!
//! Consistency: `GET` is linearizable by default (served by the leader after a read-index
//! barrier); `GET ?consistency=local` answers from the receiving node's applied state, which may
//! be stale by the replication lag. `PUT` returns once the write is committed on a quorum.
//! Both answer with `ETag: "<revision>"`; `PUT` with `If-Match: "<revision>"` is applied only if
//! the stored revision still equals it (else 412 and nothing changes).
//!
//! The edge between the API types (`monsys_proto::Settings`, `SettingsDoc`) and the persisted
//! records of the replicated store (`monsys_raft::SettingsV1`, `SettingsRecord`): this module
//! converts, field by field, with no wildcard, so a field added on either side does not compile
//! until it is mapped here.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use monsys_proto::settings::Retention;
use monsys_proto::{Settings, SettingsDoc};
use monsys_raft::{Command, CommandResult, Rejection, RetentionV1, SettingsRecord, SettingsV1};
use serde::Deserialize;

use super::extract::{IfMatch, JsonBody};
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;

/// Query of reads: `consistency=linearizable|local` (`stale` is an alias of `local`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Requested read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

/// Read consistency levels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read-index through the leader.
    #[default]
    Linearizable,
    /// This node's applied state.
    #[serde(alias = "stale")]
    Local,
}

/// `GET /api/v1/settings`.
pub async fn get(
    State(replica): State<Replica>,
    auth: Auth,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    auth.require(Permission::SettingsRead)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if query.consistency == Consistency::Linearizable {
        replica.linearizable_barrier().await?;
    }
    let doc = replica.reader().settings(&auth.tenant)?;
    Ok(with_etag(doc_to_api(doc)))
}

/// `PUT /api/v1/settings`.
pub async fn put(
    State(hub): State<Hub>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    JsonBody(settings): JsonBody<Settings>,
) -> Result<Response, ApiError> {
    auth.require(Permission::SettingsWrite)?;
    settings.validate().map_err(ApiError::Validation)?;
    retention_in_order(&settings.retention).map_err(ApiError::Validation)?;
    let (tenant, at_ms, settings) = (auth.tenant.clone(), now_ms(), settings_to_record(settings));
    if hub.config.unsafe_ack_before_commit {
        let cmd = Command::PutSettings { tenant, expected_revision: expected, settings, at_ms };
        return unsafe_ack_before_commit(&hub, cmd);
    }
    // audited in the same entry once every member can apply that; until then (a rolling
    // upgrade, a member down) the write goes unaudited, and says so in the log
    let cmd = if hub.replica.members_support(monsys_raft::LOG_FEATURE_SETTINGS_AUDIT) {
        Command::PutSettingsAudited {
            tenant,
            expected_revision: expected,
            settings,
            at_ms,
            actor: auth.actor(),
        }
    } else {
        tracing::warn!("settings write not audited: not every member announces settings-audit");
        Command::PutSettings { tenant, expected_revision: expected, settings, at_ms }
    };
    match hub.replica.write(cmd).await? {
        CommandResult::Settings(doc) => Ok(with_etag(doc_to_api(doc))),
        CommandResult::Rejected(Rejection::RevisionMismatch { current }) => {
            Err(ApiError::RevisionMismatch { current })
        }
        CommandResult::Rejected(Rejection::Invalid(msg)) => Err(ApiError::BadRequest(msg)),
        other => Err(ApiError::Internal(format!("unexpected result of PutSettings: {other:?}"))),
    }
}

/// The chaos checker's deliberately broken build: answers from the local state as if the write
/// had been applied, and proposes it in the background without waiting for the commit.
fn unsafe_ack_before_commit(hub: &Hub, cmd: Command) -> Result<Response, ApiError> {
    let Command::PutSettings { tenant, expected_revision, settings, at_ms } = &cmd else {
        return Err(ApiError::Internal("unsafe ack only covers settings writes".into()));
    };
    let current = hub.replica.reader().settings(tenant)?;
    if expected_revision.is_some_and(|r| r != current.revision) {
        return Err(ApiError::RevisionMismatch { current: current.revision });
    }
    tracing::warn!("UNSAFE: acknowledging a settings write before commit");
    let doc = SettingsDoc {
        tenant: tenant.clone(),
        revision: current.revision + 1,
        updated_at_ms: *at_ms,
        settings: settings_to_api(settings.clone()),
    };
    let replica = hub.replica.clone();
    hub.life.spawn(async move {
        let _ = replica.write(cmd).await;
    });
    Ok(with_etag(doc))
}

/// The persisted form of settings the API accepted.
pub fn settings_to_record(s: Settings) -> SettingsV1 {
    let Settings {
        refresh_interval_secs,
        registration_enabled,
        agent_offline_after_secs,
        integrity_check_interval_secs,
        retention: Retention { raw_hours, rollup_1m_days, rollup_5m_days, rollup_1h_days },
    } = s;
    SettingsV1 {
        refresh_interval_secs,
        registration_enabled,
        agent_offline_after_secs,
        integrity_check_interval_secs,
        retention: RetentionV1 { raw_hours, rollup_1m_days, rollup_5m_days, rollup_1h_days },
    }
}

/// The API form of stored settings.
pub fn settings_to_api(s: SettingsV1) -> Settings {
    let SettingsV1 {
        refresh_interval_secs,
        registration_enabled,
        agent_offline_after_secs,
        integrity_check_interval_secs,
        retention: RetentionV1 { raw_hours, rollup_1m_days, rollup_5m_days, rollup_1h_days },
    } = s;
    Settings {
        refresh_interval_secs,
        registration_enabled,
        agent_offline_after_secs,
        integrity_check_interval_secs,
        retention: Retention { raw_hours, rollup_1m_days, rollup_5m_days, rollup_1h_days },
    }
}

/// The API form of a stored settings document.
pub fn doc_to_api(doc: SettingsRecord) -> SettingsDoc {
    let SettingsRecord { tenant, revision, updated_at_ms, settings } = doc;
    SettingsDoc { tenant, revision, updated_at_ms, settings: settings_to_api(settings) }
}

fn with_etag(doc: SettingsDoc) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", doc.revision)).expect("digits are a valid header");
    let mut resp = Json(doc).into_response();
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// Coarser resolutions are kept at least as long as finer ones (raw ≤ 1m ≤ 5m ≤ 1h): history
/// views fall back to coarser data for older ranges, so keeping 1h rollups shorter than 1m
/// ones leaves a gap nobody asked for. Checked here only, not in [`Settings::validate`], whose
/// rules the state machine's apply-time check (`SettingsV1::check`) repeats: a rule added on
/// apply would refuse, on replay, a settings write that replicas of the previous version
/// applied.
fn retention_in_order(
    r: &monsys_proto::settings::Retention,
) -> Result<(), Vec<monsys_proto::settings::FieldError>> {
    let spans = [
        ("retention.raw_hours", u64::from(r.raw_hours)),
        ("retention.rollup_1m_days", u64::from(r.rollup_1m_days) * 24),
        ("retention.rollup_5m_days", u64::from(r.rollup_5m_days) * 24),
        ("retention.rollup_1h_days", u64::from(r.rollup_1h_days) * 24),
    ];
    let errors: Vec<_> = spans
        .windows(2)
        .filter(|w| w[1].1 < w[0].1)
        .map(|w| monsys_proto::settings::FieldError {
            field: w[1].0.into(),
            message: format!("must keep data at least as long as {} does", w[0].0),
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    #[test]
    fn settings_survive_the_round_trip_and_share_their_defaults() {
        let api = Settings {
            refresh_interval_secs: 7,
            registration_enabled: true,
            agent_offline_after_secs: 31,
            integrity_check_interval_secs: 61,
            retention: Retention { raw_hours: 2, rollup_1m_days: 3, rollup_5m_days: 4, rollup_1h_days: 5 },
        };
        assert_eq!(settings_to_api(settings_to_record(api.clone())), api);
        // a never-written tenant reads the record's defaults: the API's must be the same
        assert_eq!(settings_to_record(Settings::default()), SettingsV1::default());
        let doc = SettingsRecord {
            tenant: "t".into(),
            revision: 3,
            updated_at_ms: 9,
            settings: SettingsV1::default(),
        };
        assert_eq!(
            doc_to_api(doc),
            SettingsDoc { tenant: "t".into(), revision: 3, updated_at_ms: 9, settings: Settings::default() }
        );
    }

    /// The API validates before proposing, the state machine checks again on apply with rules
    /// frozen in the record: today they agree on every bound.
    #[test]
    fn api_validation_and_the_apply_check_agree() {
        let bounds =
            [0, 1, 29, 30, 59, 60, 3600, 3601, 8760, 8761, 3650, 3651, 36_500, 36_501, 86_400, 86_401];
        for v in bounds {
            for field in 0..7 {
                let mut s = Settings::default();
                let r = &mut s.retention;
                *[
                    &mut s.refresh_interval_secs,
                    &mut s.agent_offline_after_secs,
                    &mut s.integrity_check_interval_secs,
                    &mut r.raw_hours,
                    &mut r.rollup_1m_days,
                    &mut r.rollup_5m_days,
                    &mut r.rollup_1h_days,
                ][field] = v;
                let api = s.validate().map_err(|e| {
                    e.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
                });
                assert_eq!(api, settings_to_record(s).check(), "field {field} = {v}");
            }
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use monsys_proto::settings::Retention;

    use super::retention_in_order;

    #[test]
    fn coarser_rollups_may_not_be_kept_shorter_than_finer_ones() {
        assert!(retention_in_order(&Retention::default()).is_ok());
        let inverted = Retention { rollup_1h_days: 1, ..Retention::default() };
        let errors = retention_in_order(&inverted).unwrap_err();
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["retention.rollup_1h_days"]);
        let raw_too_long = Retention { raw_hours: 24 * 15, ..Retention::default() };
        assert_eq!(retention_in_order(&raw_too_long).unwrap_err()[0].field, "retention.rollup_1m_days");
        let equal = Retention { raw_hours: 24, rollup_1m_days: 1, rollup_5m_days: 1, rollup_1h_days: 1 };
        assert!(retention_in_order(&equal).is_ok());
    }
}
