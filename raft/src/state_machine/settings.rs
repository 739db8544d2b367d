//! The settings domain: one settings document per tenant (`settings/<tenant>` in `sm_data`),
//! written by compare-and-set on its revision and validated again on apply. With an actor
//! (`PutSettingsAudited`), the write appends a `settings_changed` audit event listing each
//! changed field's old and new value.
//!
//! The stored document is a versioned record (`record::settings`): read through the record
//! chain, written at version 1. The range check is part of the apply result: a rule change
//! needs a new command variant, not an edit of `SettingsV1::check` (see the invariants in the
//! parent module).

use crate::record::settings::{SettingsRecord, SettingsRecordV1, SettingsV1};
use crate::txn::Tx;
use crate::{CommandResult, Error, Rejection, audit, record};

pub(super) fn settings_key(tenant: &str) -> Vec<u8> {
    format!("settings/{tenant}").into_bytes()
}

pub(super) fn default_doc(tenant: &str) -> SettingsRecord {
    SettingsRecord::defaults_of(tenant)
}

/// A tenant's settings read directly from the data tree (outside an apply run).
pub(crate) fn settings_in(data: &sled::Tree, tenant: &str) -> Result<SettingsRecord, Error> {
    decode_doc(tenant, data.get(settings_key(tenant))?)
}

pub(super) fn decode_doc(tenant: &str, raw: Option<impl AsRef<[u8]>>) -> Result<SettingsRecord, Error> {
    raw.map_or_else(|| Ok(default_doc(tenant)), |v| record::decode(v.as_ref()))
}

/// Applies a settings write (compare-and-set on the revision, validated again); with an
/// actor, also appends a `settings_changed` audit event with each changed field's old and new
/// value.
pub(super) fn put_settings(
    data: &Tx<'_>,
    tenant: &str,
    expected_revision: Option<u64>,
    settings: &SettingsV1,
    at_ms: u64,
    actor: Option<&str>,
) -> Result<CommandResult, Error> {
    let key = settings_key(tenant);
    let current = decode_doc(tenant, data.get(&key)?)?;
    if let Some(expected) = expected_revision.filter(|r| *r != current.revision) {
        tracing::debug!(%tenant, expected, current = current.revision, "settings revision mismatch");
        return Ok(CommandResult::Rejected(Rejection::RevisionMismatch { current: current.revision }));
    }
    if let Err(msg) = settings.check() {
        return Ok(CommandResult::Rejected(Rejection::Invalid(msg)));
    }
    let doc = SettingsRecordV1 {
        tenant: tenant.to_string(),
        revision: current.revision + 1,
        updated_at_ms: at_ms,
        settings: settings.clone(),
    };
    if let Some(actor) = actor {
        let details = serde_json::json!({
            "revision": doc.revision,
            "changes": changed_fields(&current.settings, settings),
        });
        audit::append(data, tenant, at_ms, "settings_changed", actor, None, &details.to_string())?;
    }
    let value = record::encode(&doc)?;
    data.insert(key, value)?;
    Ok(CommandResult::Settings(doc))
}

/// Each field that differs between two settings documents, by dotted path: `[old, new]`.
/// Deterministic (serde_json's maps are ordered), as everything applied must be.
fn changed_fields(old: &SettingsV1, new: &SettingsV1) -> serde_json::Map<String, serde_json::Value> {
    fn walk(
        path: &str,
        a: &serde_json::Value,
        b: &serde_json::Value,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, va) in x {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&p, va, y.get(k).unwrap_or(&serde_json::Value::Null), out);
                }
            }
            _ if a != b => {
                out.insert(path.to_string(), serde_json::json!([a, b]));
            }
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    let (a, b) = (serde_json::to_value(old), serde_json::to_value(new));
    if let (Ok(a), Ok(b)) = (a, b) {
        walk("", &a, &b, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;

    use super::*;
    use crate::state_machine::test_support::*;
    use crate::{Options, storage};

    /// The audit details are persisted: the field paths stay those of the settings before they
    /// were records.
    #[test]
    fn changed_fields_name_the_fields_as_before() {
        let mut new = refresh(30);
        new.retention.raw_hours = 24;
        let changes = serde_json::Value::Object(changed_fields(&SettingsV1::default(), &new));
        assert_eq!(changes.to_string(), r#"{"refresh_interval_secs":[15,30],"retention.raw_hours":[48,24]}"#);
    }

    #[tokio::test]
    async fn put_settings_is_a_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let reader = sm.reader();
        assert_eq!(reader.settings("t1").unwrap(), default_doc("t1"));

        let results = apply_commands(
            &mut sm,
            vec![
                put("t1", Some(0), refresh(30), 1000),
                put("t1", Some(0), refresh(40), 2000),
                put("t1", None, refresh(0), 3000),
                put("t1", Some(1), refresh(50), 4000),
                put("t2", None, refresh(60), 5000),
            ],
        )
        .await;

        let doc1 =
            SettingsRecordV1 { tenant: "t1".into(), revision: 1, updated_at_ms: 1000, settings: refresh(30) };
        let doc2 =
            SettingsRecordV1 { tenant: "t1".into(), revision: 2, updated_at_ms: 4000, settings: refresh(50) };
        assert_eq!(results[0], CommandResult::Settings(doc1));
        assert_eq!(results[1], CommandResult::Rejected(Rejection::RevisionMismatch { current: 1 }));
        assert!(
            matches!(&results[2], CommandResult::Rejected(Rejection::Invalid(m)) if m.contains("refresh_interval_secs")),
            "{:?}",
            results[2]
        );
        assert_eq!(results[3], CommandResult::Settings(doc2.clone()));
        assert_eq!(reader.settings("t1").unwrap(), doc2);
        assert_eq!(reader.settings("t2").unwrap().revision, 1);
        assert_eq!(reader.last_applied().unwrap(), Some(log_id(1, 1, 5)));
    }
}
