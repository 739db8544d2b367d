//! The persisted settings types: [`SettingsV1`] (the settings of one tenant, as the log's
//! settings commands carry them) and [`SettingsRecordV1`] (the stored document: settings plus
//! revision, `settings/<tenant>` in `sm_data`). [`SettingsRecord`] names the current version.
//!
//! Version 1 is byte for byte the layout the settings had before records had versions (the
//! API's `Settings`/`SettingsDoc` encoded by bincode), so logs, sled data and snapshots written
//! before read unchanged; the golden tests below pin it. The binary converts between these and
//! the API types at its edge.
//!
//! The apply-time rules live here too: the range check ([`SettingsV1::check`]) and the defaults
//! of a never-written tenant ([`SettingsV1::default`]) decide apply results and audit details,
//! so they are frozen with the version; the API validates on its own, before proposing.

use serde::{Deserialize, Serialize};

use super::{NoPrevious, Record};

/// Tenant settings, version 1 (fields in this order, never changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsV1 {
    /// Dashboard refresh interval in seconds.
    pub refresh_interval_secs: u32,
    /// Whether open registration is enabled.
    pub registration_enabled: bool,
    /// An agent silent for this long is reported offline, seconds.
    pub agent_offline_after_secs: u32,
    /// Interval of the integrity checker, seconds.
    pub integrity_check_interval_secs: u32,
    /// Retention of metric history per resolution.
    pub retention: RetentionV1,
}

/// Retention per metric resolution, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionV1 {
    /// Raw samples, hours.
    pub raw_hours: u32,
    /// 1-minute rollups, days.
    pub rollup_1m_days: u32,
    /// 5-minute rollups, days.
    pub rollup_5m_days: u32,
    /// 1-hour rollups, days.
    pub rollup_1h_days: u32,
}

/// A tenant's stored settings document, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRecordV1 {
    /// Tenant the settings belong to.
    pub tenant: String,
    /// Revision: 0 for never-written defaults, each accepted write adds 1.
    pub revision: u64,
    /// Proposer's clock at the last accepted write, unix ms (0 for defaults).
    pub updated_at_ms: u64,
    /// The settings.
    pub settings: SettingsV1,
}

/// The current version of the stored settings document.
pub type SettingsRecord = SettingsRecordV1;

impl Record for SettingsRecordV1 {
    const WHAT: &'static str = "settings";
    const VERSION: u8 = 1;
    type Previous = NoPrevious;
    fn upgrade(previous: NoPrevious) -> Self {
        match previous {}
    }
}

impl Default for SettingsV1 {
    /// The settings of a tenant that never wrote any (frozen: audit details of the first write
    /// list the changes from these).
    fn default() -> Self {
        SettingsV1 {
            refresh_interval_secs: 15,
            registration_enabled: false,
            agent_offline_after_secs: 90,
            integrity_check_interval_secs: 600,
            retention: RetentionV1 {
                raw_hours: 48,
                rollup_1m_days: 14,
                rollup_5m_days: 90,
                rollup_1h_days: 730,
            },
        }
    }
}

impl SettingsV1 {
    /// The range check applied to a settings command (frozen: changing it changes apply results
    /// of entries already in logs; a new rule needs a new command variant). Returns every
    /// out-of-range field as `field: value is outside lo..=hi`, joined by `; `.
    pub fn check(&self) -> Result<(), String> {
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
        let errors: Vec<String> = checks
            .iter()
            .filter(|(_, v, lo, hi)| v < lo || v > hi)
            .map(|(field, v, lo, hi)| format!("{field}: {v} is outside {lo}..={hi}"))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }
}

impl SettingsRecordV1 {
    /// The document of a tenant that never wrote settings (revision 0).
    pub fn defaults_of(tenant: &str) -> Self {
        SettingsRecordV1 {
            tenant: tenant.to_string(),
            revision: 0,
            updated_at_ms: 0,
            settings: SettingsV1::default(),
        }
    }
}

/// The settings the golden-bytes tests pin (the defaults with registration on).
#[cfg(test)]
pub(crate) fn golden_settings() -> SettingsV1 {
    SettingsV1 { registration_enabled: true, ..SettingsV1::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::codec::{self, assert_golden};
    use crate::record::{self, assert_chain};

    fn settings() -> SettingsV1 {
        golden_settings()
    }

    fn doc() -> SettingsRecordV1 {
        SettingsRecordV1 { tenant: "acme".into(), revision: 4, updated_at_ms: 5, settings: settings() }
    }

    /// The bytes the settings and the stored document had before they were records (the
    /// API types encoded by bincode): version 1 must keep them.
    const SETTINGS_HEX: &str = "0f000000015a00000058020000300000000e0000005a000000da020000";
    const DOC_HEX: &str = "040000000000000061636d65040000000000000005000000000000000f000000015a00000058020000300000000e0000005a000000da020000";

    #[test]
    fn version_1_keeps_the_layout_of_the_api_types_it_replaced() {
        assert_golden(&[(settings(), SETTINGS_HEX)]);
        assert_golden(&[(doc(), DOC_HEX)]);
        // the stored value: the codec's version byte (1) in front, as `encode_value` wrote it
        let stored = record::encode(&doc()).unwrap();
        assert_eq!(hex::encode(&stored), format!("01{DOC_HEX}"));
        assert_eq!(record::decode::<SettingsRecord>(&stored).unwrap(), doc());
        assert_eq!(codec::encode_value("settings", &doc()).unwrap(), stored);
        assert_chain::<SettingsRecord>();
    }

    #[test]
    fn version_1_decodes_what_the_api_types_wrote() {
        let api = monsys_proto::SettingsDoc {
            tenant: "acme".into(),
            revision: 4,
            updated_at_ms: 5,
            settings: monsys_proto::Settings {
                registration_enabled: true,
                ..monsys_proto::Settings::default()
            },
        };
        let written = codec::encode_value("settings", &api).unwrap();
        assert_eq!(record::decode::<SettingsRecord>(&written).unwrap(), doc());
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let mut stored = record::encode(&doc()).unwrap();
        stored[0] = 2;
        let e = record::decode::<SettingsRecord>(&stored).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFormat { what: "settings", found: 2, supported: 1 }), "{e:?}");
        assert!(matches!(record::decode::<SettingsRecord>(&[]), Err(Error::Corrupt(_))));
        assert!(matches!(
            record::decode::<SettingsRecord>(&[0]),
            Err(Error::UnsupportedFormat { found: 0, .. })
        ));
    }

    #[test]
    fn check_names_every_field_out_of_range() {
        assert_eq!(SettingsV1::default().check(), Ok(()));
        let retention = RetentionV1 { raw_hours: 9000, ..SettingsV1::default().retention };
        let s = SettingsV1 { refresh_interval_secs: 0, retention, ..SettingsV1::default() };
        assert_eq!(
            s.check(),
            Err(
                "refresh_interval_secs: 0 is outside 1..=3600; retention.raw_hours: 9000 is outside 1..=8760"
                    .into()
            )
        );
    }

    /// The migration path: a version 2 that adds a field with a default, upgraded from 1.
    mod v2 {
        use super::*;

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        struct SettingsV2 {
            v1: SettingsV1,
            /// The new field (an example: a maintenance window, minutes; 0 = none).
            maintenance_window_mins: u32,
        }

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        struct SettingsRecordV2 {
            tenant: String,
            revision: u64,
            updated_at_ms: u64,
            settings: SettingsV2,
        }

        impl Record for SettingsRecordV2 {
            const WHAT: &'static str = "settings";
            const VERSION: u8 = 2;
            type Previous = SettingsRecordV1;
            fn upgrade(p: SettingsRecordV1) -> Self {
                SettingsRecordV2 {
                    tenant: p.tenant,
                    revision: p.revision,
                    updated_at_ms: p.updated_at_ms,
                    settings: SettingsV2 { v1: p.settings, maintenance_window_mins: 0 },
                }
            }
        }

        #[test]
        fn a_version_1_record_upgrades_and_version_2_round_trips() {
            assert_chain::<SettingsRecordV2>();
            let stored_v1 = hex::decode(format!("01{DOC_HEX}")).unwrap();
            let upgraded: SettingsRecordV2 = record::decode(&stored_v1).unwrap();
            assert_eq!(upgraded.settings.maintenance_window_mins, 0, "the new field's default");
            assert_eq!(upgraded.settings.v1, settings());
            assert_eq!((upgraded.tenant.as_str(), upgraded.revision, upgraded.updated_at_ms), ("acme", 4, 5));

            let mut newer = upgraded.clone();
            newer.settings.maintenance_window_mins = 30;
            let stored_v2 = record::encode(&newer).unwrap();
            assert_eq!(stored_v2[0], 2);
            assert_eq!(hex::encode(&stored_v2[1..]), format!("{DOC_HEX}1e000000"));
            assert_eq!(record::decode::<SettingsRecordV2>(&stored_v2).unwrap(), newer);

            // a build that only knows version 1 refuses the newer record instead of misreading it
            let e = record::decode::<SettingsRecordV1>(&stored_v2).unwrap_err();
            assert!(matches!(e, Error::UnsupportedFormat { found: 2, supported: 1, .. }), "{e:?}");
            // and this one refuses a version 3
            let mut v3 = stored_v2;
            v3[0] = 3;
            let e = record::decode::<SettingsRecordV2>(&v3).unwrap_err();
            assert!(matches!(e, Error::UnsupportedFormat { found: 3, supported: 2, .. }), "{e:?}");
            let e = record::decode::<SettingsRecordV2>(&[0, 1]).unwrap_err();
            assert!(matches!(e, Error::UnsupportedFormat { found: 0, supported: 2, .. }), "{e:?}");
        }
    }
}
