//! Per-tenant settings: the first replicated resource.
//!
//! `PUT /api/v1/settings` replaces the whole document (every field required, unknown fields
//! refused) and bumps its revision; `If-Match: "<revision>"` makes the write a compare-and-set.
//! Validation lives here so the hub refuses bad values before they reach the Raft log. These
//! are the API types only: the replicated store persists its own versioned records
//! (`monsys_raft::SettingsV1`), converted by the hub, and re-checks them on apply with rules
//! frozen there (a test in the hub keeps the two checks in agreement).

use serde::{Deserialize, Serialize};

/// Tenant settings as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Dashboard refresh interval in seconds (1..=3600).
    pub refresh_interval_secs: u32,
    /// Whether `POST /auth/register` is open to new users.
    pub registration_enabled: bool,
    /// An agent silent for this long is reported offline (30..=86400 s).
    pub agent_offline_after_secs: u32,
    /// Interval of the leader's integrity checker (60..=86400 s).
    pub integrity_check_interval_secs: u32,
    /// Retention of metric history per resolution.
    pub retention: Retention,
}

/// Retention per metric resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Raw samples, in hours (1..=8760).
    pub raw_hours: u32,
    /// 1-minute rollups, in days (1..=3650).
    pub rollup_1m_days: u32,
    /// 5-minute rollups, in days (1..=3650).
    pub rollup_5m_days: u32,
    /// 1-hour rollups, in days (1..=36500).
    pub rollup_1h_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_interval_secs: 15,
            registration_enabled: false,
            agent_offline_after_secs: 90,
            integrity_check_interval_secs: 600,
            retention: Retention::default(),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention { raw_hours: 48, rollup_1m_days: 14, rollup_5m_days: 90, rollup_1h_days: 730 }
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `retention.raw_hours`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Settings {
    /// Checks every field's range; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let r = &self.retention;
        let checks: [(&str, u32, u32, u32); 7] = [
            ("refresh_interval_secs", self.refresh_interval_secs, 1, 3600),
            ("agent_offline_after_secs", self.agent_offline_after_secs, 30, 86_400),
            ("integrity_check_interval_secs", self.integrity_check_interval_secs, 60, 86_400),
            ("retention.raw_hours", r.raw_hours, 1, 8760),
            ("retention.rollup_1m_days", r.rollup_1m_days, 1, 3650),
            ("retention.rollup_5m_days", r.rollup_5m_days, 1, 3650),
            ("retention.rollup_1h_days", r.rollup_1h_days, 1, 36_500),
        ];
        let errors: Vec<FieldError> = checks
            .iter()
            .filter(|(_, v, lo, hi)| v < lo || v > hi)
            .map(|(field, v, lo, hi)| FieldError {
                field: (*field).to_string(),
                message: format!("{v} is outside {lo}..={hi}"),
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// Settings with their revision, as returned by `GET /api/v1/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsDoc {
    /// Tenant the settings belong to.
    pub tenant: String,
    /// Revision, starting at 0 for never-written defaults; each accepted write adds 1.
    pub revision: u64,
    /// Unix milliseconds of the last accepted write (0 for defaults), stamped by the proposer.
    pub updated_at_ms: u64,
    /// The settings themselves.
    pub settings: Settings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn every_out_of_range_field_is_reported() {
        let s = Settings {
            refresh_interval_secs: 0,
            retention: Retention { raw_hours: 9000, ..Retention::default() },
            ..Settings::default()
        };
        let errs = s.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["refresh_interval_secs", "retention.raw_hours"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(Settings::default()).unwrap();
        v["colour"] = serde_json::json!("blue");
        assert!(serde_json::from_value::<Settings>(v).is_err());
    }
}
