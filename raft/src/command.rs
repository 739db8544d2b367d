//! The replicated command set: the persisted format of the Raft log.
//!
//! Compatibility rule (rolling upgrades): a newer binary must read every log an older one wrote.
//! bincode encodes an enum variant by its index and a struct by field order, so
//! - variants are only ever **appended** at the end of [`Command`], [`CommandResult`] and
//!   [`Rejection`], never reordered or removed;
//! - a variant's fields never change; a new shape gets a new variant (`PutSettingsV2`), and the
//!   state machine keeps applying the old one;
//! - every log entry on disk is prefixed with a format byte (see `log_store`), bumped only if the
//!   entry envelope itself changes.
//!
//! `command::tests::encoding_is_stable` pins the bytes of each variant so a careless edit fails.
//!
//! Commands carry everything `apply` needs (timestamps are stamped by the proposer), so every
//! replica computes the same state.

use serde::{Deserialize, Serialize};

use crate::fleet::{FleetCommand, FleetRejection, FleetResult};
use crate::identity::{IdentityCommand, IdentityRejection, IdentityResult};
use crate::record::settings::{SettingsRecordV1, SettingsV1};

/// A state change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing; used as a barrier and by tests.
    Noop,
    /// Replaces a tenant's settings. With `expected_revision` it is a compare-and-set: applied
    /// only if the stored revision equals it.
    PutSettings {
        /// Tenant the settings belong to.
        tenant: String,
        /// Revision the writer read; `None` writes unconditionally.
        expected_revision: Option<u64>,
        /// The new settings (already validated by the proposer; checked again on apply).
        settings: SettingsV1,
        /// Proposer's wall clock, unix milliseconds.
        at_ms: u64,
    },
    /// Stores the SHA-256 of the cluster admin token if none is stored yet (first start).
    InitAdminToken {
        /// SHA-256 of the token.
        sha256: [u8; 32],
    },
    /// A change of the fleet domain (agents, telemetry, alerts); see [`crate::fleet`].
    Fleet(FleetCommand),
    /// A change of the identity domain (tenants, users, sessions, keys); see [`crate::identity`].
    Identity(IdentityCommand),
    /// Independent writes proposed together as one entry (one append, one sync, one
    /// replication round), applied in order; each has its own result. Only
    /// [`Command::batchable`] commands may be inside: any other is refused on apply.
    Batch(Vec<Command>),
    /// [`Command::PutSettings`] that also appends a `settings_changed` audit event naming the
    /// actor and each changed field with its old and new value (log feature
    /// `settings-audit`).
    PutSettingsAudited {
        /// Tenant the settings belong to.
        tenant: String,
        /// Revision the writer read; `None` writes unconditionally.
        expected_revision: Option<u64>,
        /// The new settings.
        settings: SettingsV1,
        /// Proposer's wall clock, unix milliseconds.
        at_ms: u64,
        /// Who changed them (user id, `api-key:<id>`, `admin-token`).
        actor: String,
    },
    /// Raises the cluster's active version (see [`crate::cluster_version`]); a lower or equal
    /// version changes nothing. Proposed only once every member announces support for it
    /// (log feature `cluster-version`).
    SetClusterVersion {
        /// The new active version.
        version: u32,
    },
}

/// Log features this binary can apply, announced over gossip. A proposer uses a feature only
/// once every member (voters and learners) announces it, so a rolling upgrade never hands a node an entry it cannot
/// decode or would apply differently. `batch`: [`Command::Batch`]; `batch-register`: agent
/// registrations inside a batch; `settings-audit`: [`Command::PutSettingsAudited`];
/// `record-audit`: `FleetCommand::RecordAudit`; `actor-audit`: the `…By` fleet commands that
/// name who created an enrollment token or changed the alert rules; `reset-exclusive`: the
/// password-reset commands that keep one live token per user; `cluster-version`:
/// [`Command::SetClusterVersion`].
pub const LOG_FEATURES: &[&str] = &[
    LOG_FEATURE_BATCH,
    LOG_FEATURE_BATCH_REGISTER,
    LOG_FEATURE_SETTINGS_AUDIT,
    LOG_FEATURE_RECORD_AUDIT,
    LOG_FEATURE_ACTOR_AUDIT,
    LOG_FEATURE_RESET_EXCLUSIVE,
    LOG_FEATURE_CLUSTER_VERSION,
];
/// See [`LOG_FEATURES`].
pub const LOG_FEATURE_BATCH: &str = "batch";
/// See [`LOG_FEATURES`].
pub const LOG_FEATURE_BATCH_REGISTER: &str = "batch-register";
/// [`Command::PutSettingsAudited`]; see [`LOG_FEATURES`].
pub const LOG_FEATURE_SETTINGS_AUDIT: &str = "settings-audit";
/// `FleetCommand::RecordAudit`; see [`LOG_FEATURES`].
pub const LOG_FEATURE_RECORD_AUDIT: &str = "record-audit";
/// `FleetCommand::CreateEnrollmentTokenBy` and `FleetCommand::PutRulesBy`; see [`LOG_FEATURES`].
pub const LOG_FEATURE_ACTOR_AUDIT: &str = "actor-audit";
/// `IdentityCommand::CreateResetExclusive` and `CompleteResetExclusive`; see [`LOG_FEATURES`].
pub const LOG_FEATURE_RESET_EXCLUSIVE: &str = "reset-exclusive";
/// [`Command::SetClusterVersion`]; see [`LOG_FEATURES`].
pub const LOG_FEATURE_CLUSTER_VERSION: &str = "cluster-version";

impl Command {
    /// The log feature every member must announce before this command may be proposed
    /// (`None`: a baseline command, which every supported build applies). The matches have no
    /// wildcard, so a new variant does not compile until it is classified here; the proposer
    /// (`Replica` in the binary) refuses a command whose feature some member lacks.
    pub fn required_feature(&self) -> Option<&'static str> {
        use crate::fleet::FleetCommand as F;
        use crate::identity::IdentityCommand as I;
        match self {
            Command::Noop | Command::PutSettings { .. } | Command::InitAdminToken { .. } => None,
            Command::Batch(_) => Some(LOG_FEATURE_BATCH),
            Command::PutSettingsAudited { .. } => Some(LOG_FEATURE_SETTINGS_AUDIT),
            Command::SetClusterVersion { .. } => Some(LOG_FEATURE_CLUSTER_VERSION),
            Command::Fleet(f) => match f {
                F::RecordAudit { .. } => Some(LOG_FEATURE_RECORD_AUDIT),
                F::CreateEnrollmentTokenBy { .. } | F::PutRulesBy { .. } => Some(LOG_FEATURE_ACTOR_AUDIT),
                F::CreateEnrollmentToken(_)
                | F::RevokeEnrollmentToken { .. }
                | F::Register(_)
                | F::Group(_)
                | F::DeleteAgent(_)
                | F::RotateToken { .. }
                | F::ClearSigningKey(_)
                | F::FireOffline(_)
                | F::SetAlertState { .. }
                | F::PutRules { .. }
                | F::Expire { .. }
                | F::RecordAnomalies { .. }
                | F::ResolveAnomaly { .. } => None,
            },
            Command::Identity(i) => match i {
                I::CreateResetExclusive(_) | I::CompleteResetExclusive { .. } => {
                    Some(LOG_FEATURE_RESET_EXCLUSIVE)
                }
                I::CreateTenant { .. }
                | I::CreateUser(_)
                | I::UpdateUser { .. }
                | I::SetPassword { .. }
                | I::CreateSession(_)
                | I::RevokeSession { .. }
                | I::TouchSessions { .. }
                | I::CreateApiKey(_)
                | I::RevokeApiKey { .. }
                | I::PutRole(_)
                | I::DeleteRole { .. }
                | I::SetTotpPending { .. }
                | I::EnableTotp { .. }
                | I::DisableTotp { .. }
                | I::CreateChallenge(_)
                | I::CompleteLogin { .. }
                | I::CreateInvitation(_)
                | I::AcceptInvitation { .. }
                | I::CreateReset(_)
                | I::CompleteReset { .. }
                | I::TouchApiKeys { .. }
                | I::CreateTicket(_)
                | I::ConsumeTicket { .. } => None,
            },
        }
    }

    /// Whether the command may travel inside a [`Command::Batch`]: it reads nothing outside
    /// its run's write set (no prescan) and the state machine keeps nothing per entry for it
    /// (so of the fleet commands only registrations: group outcomes are recorded per entry
    /// index for the telemetry replay).
    pub fn batchable(&self) -> bool {
        self.batch_feature().is_some()
    }

    /// The log feature every member must announce before the command is proposed inside a
    /// batch (`None`: never batched). Registrations came later than the rest: a replica
    /// without `batch-register` refuses them inside a batch.
    pub fn batch_feature(&self) -> Option<&'static str> {
        match self {
            Command::PutSettings { .. } => Some(LOG_FEATURE_BATCH),
            Command::PutSettingsAudited { .. } => Some(LOG_FEATURE_SETTINGS_AUDIT),
            Command::Identity(i) => (!crate::identity::needs_prescan(i)).then_some(LOG_FEATURE_BATCH),
            Command::Fleet(crate::fleet::FleetCommand::Register(_)) => Some(LOG_FEATURE_BATCH_REGISTER),
            Command::Noop
            | Command::InitAdminToken { .. }
            | Command::SetClusterVersion { .. }
            | Command::Fleet(_)
            | Command::Batch(_) => None,
        }
    }
}

/// What applying a [`Command`] produced. Deterministic: every replica computes the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; nothing to report (also the result of blank and membership entries).
    Ok,
    /// Settings after a successful `PutSettings`.
    Settings(SettingsRecordV1),
    /// The command was valid Raft input but refused by the state machine; nothing changed.
    Rejected(Rejection),
    /// Result of a fleet command.
    Fleet(FleetResult),
    /// A fleet command refused by the state machine; nothing changed.
    FleetRejected(FleetRejection),
    /// Result of an identity command.
    Identity(IdentityResult),
    /// An identity command refused by the state machine; nothing changed.
    IdentityRejected(IdentityRejection),
    /// Results of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResult>),
    /// Result of a [`Command::SetClusterVersion`]: the active version after it, and before.
    ClusterVersion {
        /// The active version now.
        active: u32,
        /// The active version before the command.
        previous: u32,
    },
}

/// Why the state machine refused a command. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// Compare-and-set failed: the stored revision is `current`.
    RevisionMismatch {
        /// The revision currently stored.
        current: u64,
    },
    /// The value failed validation when applied.
    Invalid(String),
    /// A one-time initialisation was already done.
    AlreadyInitialized,
}

/// Encodes a command for a node-to-node proposal (the same bincode as the log).
pub fn encode_command(cmd: &Command) -> Result<Vec<u8>, crate::Error> {
    crate::codec::encode("command", cmd, crate::codec::MAX_VALUE_BYTES)
}

/// Decodes a command received from a peer (size-limited).
pub fn decode_command(bytes: &[u8]) -> Result<Command, crate::Error> {
    crate::codec::decode("command", bytes, crate::codec::MAX_VALUE_BYTES)
}

/// Encodes a command result for the proposer.
pub fn encode_result(result: &CommandResult) -> Result<Vec<u8>, crate::Error> {
    crate::codec::encode("command result", result, crate::codec::MAX_RPC_BYTES)
}

/// Decodes a command result received from the leader (size-limited).
pub fn decode_result(bytes: &[u8]) -> Result<CommandResult, crate::Error> {
    crate::codec::decode("command result", bytes, crate::codec::MAX_RPC_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, MAX_VALUE_BYTES};

    fn settings() -> SettingsV1 {
        crate::record::settings::golden_settings()
    }

    fn hex_of<T: Serialize>(value: &T) -> String {
        hex::encode(codec::encode("test", value, MAX_VALUE_BYTES).unwrap())
    }

    /// A group shared by `Arc` encodes exactly like the `Vec` it replaced.
    #[test]
    fn a_group_shared_by_arc_encodes_like_the_vec_it_replaced() {
        use crate::fleet::{FleetCommand, GroupItem, HeartbeatItem};
        let items = vec![GroupItem::Heartbeat(HeartbeatItem {
            tenant: "t".into(),
            agent_id: "a".into(),
            received_at_ms: 7,
            sent_at_ms: 6,
            agent_version: "1".into(),
        })];
        let shared =
            codec::encode_value("cmd", &Command::Fleet(FleetCommand::Group(items.clone().into()))).unwrap();
        let as_vec = codec::encode_value("items", &items).unwrap();
        // version byte, then the Command and FleetCommand variant tags (u32 each), then the items
        assert_eq!(shared.len(), as_vec.len() + 8);
        assert!(shared.ends_with(&as_vec[1..]), "{shared:?} vs {as_vec:?}");
        let back: Command = codec::decode_value("cmd", &shared).unwrap();
        assert_eq!(format!("{back:?}"), format!("{:?}", Command::Fleet(FleetCommand::Group(items.into()))));
    }

    /// Pins the persisted bytes of every variant (nested ones: `fleet::golden`,
    /// `identity::golden`). If this fails, you changed the log format: append a new variant
    /// instead (see the module doc).
    #[test]
    fn encoding_is_stable() {
        let commands = [
            (Command::Noop, "00000000"),
            (
                Command::PutSettings {
                    tenant: "acme".into(),
                    expected_revision: Some(3),
                    settings: settings(),
                    at_ms: 1_700_000_000_000,
                },
                "01000000040000000000000061636d650103000000000000000f000000015a00000058020000300000000e0000005a000000da0200000068e5cf8b010000",
            ),
            (
                Command::PutSettings {
                    tenant: "a".into(),
                    expected_revision: None,
                    settings: settings(),
                    at_ms: 0,
                },
                "01000000010000000000000061000f000000015a00000058020000300000000e0000005a000000da0200000000000000000000",
            ),
            (
                Command::InitAdminToken { sha256: [0xab; 32] },
                "02000000abababababababababababababababababababababababababababababababab",
            ),
            (Command::Batch(vec![Command::Noop]), "05000000010000000000000000000000"),
            (
                Command::PutSettingsAudited {
                    tenant: "a".into(),
                    expected_revision: None,
                    settings: settings(),
                    at_ms: 0,
                    actor: "u".into(),
                },
                "06000000010000000000000061000f000000015a00000058020000300000000e0000005a000000da0200000000000000000000010000000000000075",
            ),
        ];
        let doc =
            SettingsRecordV1 { tenant: "acme".into(), revision: 4, updated_at_ms: 5, settings: settings() };
        let results = [
            (CommandResult::Ok, "00000000"),
            (
                CommandResult::Settings(doc),
                "01000000040000000000000061636d65040000000000000005000000000000000f000000015a00000058020000300000000e0000005a000000da020000",
            ),
            (
                CommandResult::Rejected(Rejection::RevisionMismatch { current: 7 }),
                "02000000000000000700000000000000",
            ),
            (
                CommandResult::Rejected(Rejection::Invalid("bad".into())),
                "02000000010000000300000000000000626164",
            ),
            (CommandResult::Rejected(Rejection::AlreadyInitialized), "0200000002000000"),
            (CommandResult::Batch(vec![CommandResult::Ok]), "07000000010000000000000000000000"),
        ];
        for (cmd, hex) in &commands {
            assert_eq!(hex_of(cmd), *hex, "{cmd:?}");
            let bytes = hex::decode(hex).unwrap();
            assert_eq!(codec::decode::<Command>("test", &bytes, MAX_VALUE_BYTES).unwrap(), *cmd);
        }
        for (result, hex) in &results {
            assert_eq!(hex_of(result), *hex, "{result:?}");
            let bytes = hex::decode(hex).unwrap();
            assert_eq!(codec::decode::<CommandResult>("test", &bytes, MAX_VALUE_BYTES).unwrap(), *result);
        }
    }

    #[test]
    fn actor_audit_variants_encoding_is_stable() {
        use crate::fleet::EnrollmentToken;
        let token = EnrollmentToken {
            id: "e1".into(),
            tenant: "t".into(),
            name: "n".into(),
            sha256: [7; 32],
            created_at_ms: 1,
            expires_at_ms: None,
            max_uses: Some(2),
            uses: 0,
            revoked: false,
        };
        let commands = [
            (
                Command::Fleet(FleetCommand::CreateEnrollmentTokenBy { token, actor: "u1".into() }),
                "030000000e0000000200000000000000653101000000000000007401000000000000006e07070707070707070707070707070707070707070707070707070707070707070100000000000000000102000000000000000002000000000000007531",
            ),
            (
                Command::Fleet(FleetCommand::PutRulesBy {
                    tenant: "t".into(),
                    expected_revision: Some(1),
                    rules: vec![],
                    at_ms: 2,
                    actor: "u1".into(),
                }),
                "030000000f0000000100000000000000740101000000000000000000000000000000020000000000000002000000000000007531",
            ),
        ];
        codec::assert_golden(&commands);
    }

    #[test]
    fn cluster_version_variants_encoding_is_stable() {
        codec::assert_golden(&[(Command::SetClusterVersion { version: 1 }, "0700000001000000")]);
        codec::assert_golden(&[(
            CommandResult::ClusterVersion { active: 1, previous: 0 },
            "080000000100000000000000",
        )]);
    }

    #[test]
    fn every_gated_command_names_a_feature_this_build_announces() {
        use crate::fleet::FleetCommand;
        let token = crate::state_machine::test_support::enrollment_token();
        let gated = [
            Command::Batch(vec![]),
            Command::PutSettingsAudited {
                tenant: "t".into(),
                expected_revision: None,
                settings: settings(),
                at_ms: 1,
                actor: "a".into(),
            },
            Command::Fleet(FleetCommand::RecordAudit {
                tenant: "t".into(),
                at_ms: 1,
                event_type: "x".into(),
                actor: "a".into(),
                details: "{}".into(),
            }),
            Command::Fleet(FleetCommand::CreateEnrollmentTokenBy { token: token.clone(), actor: "a".into() }),
            Command::SetClusterVersion { version: 1 },
        ];
        for cmd in &gated {
            let f = cmd.required_feature().unwrap_or_else(|| panic!("{cmd:?} is gated"));
            assert!(LOG_FEATURES.contains(&f), "{f} is announced by this build");
        }
        assert_eq!(Command::Fleet(FleetCommand::CreateEnrollmentToken(token)).required_feature(), None);
        assert_eq!(Command::Noop.required_feature(), None);
    }
}
