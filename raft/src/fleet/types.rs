//! Persisted records and command payloads of the fleet domain (agents, telemetry, alerts, audit).
//!
//! These types are part of the Raft log and of snapshots: bincode encodes structs by field order
//! and enums by variant index, so the rule of `command` applies here too — fields never change,
//! enum variants are only appended. JSON-shaped agent data (inventory, processes) is kept as the
//! JSON bytes the agent sent, so the agent protocol can grow without touching the log format.

use monsys_proto::agent::Severity;
use serde::{Deserialize, Serialize};

/// A fleet-domain state change (a [`crate::Command::Fleet`] payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FleetCommand {
    /// Creates a tenant enrollment token.
    CreateEnrollmentToken(EnrollmentToken),
    /// Revokes an enrollment token (registrations with it are refused afterwards).
    RevokeEnrollmentToken {
        /// Tenant.
        tenant: String,
        /// Token id.
        id: String,
    },
    /// Registers an agent, or re-registers a known host (same agent id, fresh token).
    Register(Registration),
    /// A group commit of many agents' batches and heartbeats. Shared, because the log store
    /// hands the same decoded entry to replication and apply (encoded like a `Vec`).
    Group(std::sync::Arc<[GroupItem]>),
    /// Deletes an agent and all its data.
    DeleteAgent(AgentAction),
    /// Replaces an agent's token.
    RotateToken {
        /// Who and which agent.
        action: AgentAction,
        /// SHA-256 of the new token.
        token_sha256: [u8; 32],
    },
    /// Clears the pinned signing key (the next registration pins again).
    ClearSigningKey(AgentAction),
    /// Fires alerts decided outside an ingest (silent agents).
    FireOffline(Vec<OfflineFiring>),
    /// Changes an alert's state by an operator.
    SetAlertState {
        /// Tenant.
        tenant: String,
        /// Alert id.
        id: u64,
        /// New state: `Acknowledged` or `Resolved`.
        state: AlertState,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Replaces a tenant's alert rules (compare-and-set on the revision when given).
    PutRules {
        /// Tenant.
        tenant: String,
        /// Expected revision.
        expected_revision: Option<u64>,
        /// The rules.
        rules: Vec<AlertRule>,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Deletes telemetry older than each resolution's retention (leader job).
    Expire {
        /// Proposer's clock; retention is read from each tenant's settings.
        at_ms: u64,
    },
    /// Records integrity anomalies found by the leader's checker.
    RecordAnomalies {
        /// Tenant.
        tenant: String,
        /// Anomalies (duplicates of an open one with the same agent and kind are skipped).
        anomalies: Vec<NewAnomaly>,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Resolves an integrity anomaly.
    ResolveAnomaly {
        /// Tenant.
        tenant: String,
        /// Anomaly id.
        id: u64,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Appends an audit event for a change made outside the replicated state machine's
    /// commands (membership changes) or by a command that records none (log feature
    /// `record-audit`).
    RecordAudit {
        /// Tenant whose audit log gets the event.
        tenant: String,
        /// Proposer's clock.
        at_ms: u64,
        /// Event type, e.g. `cluster_member_added`.
        event_type: String,
        /// Who.
        actor: String,
        /// Details (JSON text).
        details: String,
    },
    /// [`FleetCommand::CreateEnrollmentToken`] naming who created it in the audit event (log
    /// feature `actor-audit`; the older variant records "admin").
    CreateEnrollmentTokenBy {
        /// The token.
        token: EnrollmentToken,
        /// Who (user id, `api-key:<id>`, `admin-token`).
        actor: String,
    },
    /// [`FleetCommand::PutRules`] naming who changed the rules in the audit event (log feature
    /// `actor-audit`).
    PutRulesBy {
        /// Tenant.
        tenant: String,
        /// Expected revision.
        expected_revision: Option<u64>,
        /// The rules.
        rules: Vec<AlertRule>,
        /// Proposer's clock.
        at_ms: u64,
        /// Who.
        actor: String,
    },
}

/// What a [`FleetCommand`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FleetResult {
    /// A registration: the agent id and whether a key is pinned now.
    Registered {
        /// Agent id.
        agent_id: String,
        /// A key is pinned after this registration.
        pinned: bool,
        /// The agent was created (not re-registered).
        created: bool,
    },
    /// One outcome per [`GroupItem`], in order.
    Group(Vec<ItemOutcome>),
    /// Alert rules after `PutRules`.
    Rules(RulesDoc),
    /// An alert after `SetAlertState`.
    Alert(AlertRecord),
    /// An anomaly after `ResolveAnomaly`.
    Anomaly(Anomaly),
    /// Number of records changed (expiry, offline firings, anomalies).
    Count(u64),
}

/// Why a fleet command was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetRejection {
    /// Unknown, expired, revoked or used-up enrollment token.
    EnrollmentRefused,
    /// The host is registered with a different pinned key.
    SigningKeyMismatch,
    /// No such agent.
    UnknownAgent,
    /// No such alert or anomaly.
    NotFound,
    /// A resolved alert cannot change state again.
    AlreadyResolved,
}

/// An enrollment token (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Token id (public).
    pub id: String,
    /// Tenant the agents will belong to.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret token.
    pub sha256: [u8; 32],
    /// Creation time.
    pub created_at_ms: u64,
    /// Expiry, if any.
    pub expires_at_ms: Option<u64>,
    /// Maximum number of new agents, if bounded (re-registrations do not count).
    pub max_uses: Option<u32>,
    /// New agents registered with it.
    pub uses: u32,
    /// Revoked by an admin.
    pub revoked: bool,
}

/// A registration request, as proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// SHA-256 of the enrollment token presented (the tenant comes from the token).
    pub enrollment_sha256: [u8; 32],
    /// Id to use if the host is new (generated by the proposer).
    pub new_agent_id: String,
    /// Stable host identity.
    pub machine_id: String,
    /// Host name.
    pub hostname: String,
    /// Ed25519 public key presented, if any.
    pub pubkey: Option<[u8; 32]>,
    /// SHA-256 of the fresh agent token.
    pub token_sha256: [u8; 32],
    /// Agent version.
    pub agent_version: String,
    /// OS.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// Proposer's clock.
    pub at_ms: u64,
}

/// An operator action on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAction {
    /// Tenant.
    pub tenant: String,
    /// Agent id.
    pub agent_id: String,
    /// Who (for the audit log).
    pub actor: String,
    /// Proposer's clock.
    pub at_ms: u64,
}

/// One element of a group commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupItem {
    /// An ingest batch, verified by the agent's owner.
    Batch(Box<IngestItem>),
    /// A heartbeat.
    Heartbeat(HeartbeatItem),
}

/// A verified ingest batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestItem {
    /// Tenant.
    pub tenant: String,
    /// Agent id.
    pub agent_id: String,
    /// The batch's sequence number.
    pub seq: u64,
    /// SHA-256 of the exact body (tells a retry from a conflicting body).
    pub body_sha256: [u8; 32],
    /// Collection time (agent clock).
    pub collected_at_ms: u64,
    /// Reception time (owner's clock).
    pub received_at_ms: u64,
    /// The pinned key the owner verified the signature with; `None` for an unsigned batch of an
    /// agent without a pin. Applied only if it still equals the stored pin (fences a key change
    /// racing with the batch).
    pub verified_with: Option<[u8; 32]>,
    /// Agent version.
    pub agent_version: String,
    /// Samples: canonical series key (`name{k="v",…}`) and value.
    pub samples: Vec<(String, f64)>,
    /// Inventory JSON, when sent.
    pub inventory_json: Option<Vec<u8>>,
    /// Processes JSON, when sent.
    pub processes_json: Option<Vec<u8>>,
    /// Agent-side alerts currently firing (others of this agent auto-resolve).
    pub agent_alerts: Vec<AgentAlertItem>,
    /// Threshold rules the owner found breached long enough: fire (deduplicated).
    pub fire: Vec<RuleFiring>,
    /// Threshold rules whose condition is clear in this batch: auto-resolve if open.
    pub clear: Vec<String>,
}

/// A heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatItem {
    /// Tenant.
    pub tenant: String,
    /// Agent id.
    pub agent_id: String,
    /// Reception time (owner's clock).
    pub received_at_ms: u64,
    /// Agent's clock when sent.
    pub sent_at_ms: u64,
    /// Agent version.
    pub agent_version: String,
}

/// An agent-side alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAlertItem {
    /// Stable key.
    pub key: String,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
}

/// A threshold rule the owner found breached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFiring {
    /// Rule id.
    pub rule_id: String,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// Observed value.
    pub value: f64,
}

/// An offline alert decided by the owner's sweeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineFiring {
    /// Tenant.
    pub tenant: String,
    /// Agent id.
    pub agent_id: String,
    /// The agent's last-seen time the sweeper saw (fires only if still the latest).
    pub last_seen_ms: u64,
    /// Proposer's clock.
    pub at_ms: u64,
}

/// Outcome of one group item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOutcome {
    /// Stored; the agent's highest seq is now `last_seq`.
    Stored {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// Already stored with the same body.
    Duplicate {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// The seq was used with a different body.
    SeqConflict {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// The seq is old (outside the duplicate window or never stored): a replay.
    Replay {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// The agent does not exist (deleted).
    UnknownAgent,
    /// The pinned key changed since the owner verified the batch.
    KeyChanged,
    /// A heartbeat was recorded.
    Seen,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Host name.
    pub hostname: String,
    /// Host identity.
    pub machine_id: String,
    /// OS.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// Last agent version seen.
    pub agent_version: String,
    /// Pinned Ed25519 key.
    pub pubkey: Option<[u8; 32]>,
    /// SHA-256 of the current agent token.
    pub token_sha256: [u8; 32],
    /// Registration time.
    pub registered_at_ms: u64,
    /// Last batch or heartbeat (hub clock).
    pub last_seen_ms: u64,
    /// Highest stored seq.
    pub last_seq: u64,
    /// Collection time of the highest stored batch.
    pub last_collected_at_ms: u64,
    /// Batches stored.
    pub batches: u64,
    /// Samples stored.
    pub samples: u64,
    /// Last time an `unsigned_payload` audit event was written for this agent.
    pub last_unsigned_audit_ms: u64,
    /// Last heartbeat's agent clock minus hub clock, ms (clock drift).
    pub clock_offset_ms: i64,
}

/// State of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertState {
    /// Firing, not yet seen by an operator.
    Active,
    /// Seen by an operator; still open (de-duplicates and auto-resolves).
    Acknowledged,
    /// Closed (by an operator or automatically).
    Resolved,
}

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertSource {
    /// A threshold rule evaluated by the agent's owner.
    Rule,
    /// The agent itself.
    Agent,
    /// The agent went silent.
    Offline,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Id (per tenant, increasing).
    pub id: u64,
    /// Tenant.
    pub tenant: String,
    /// Agent.
    pub agent_id: String,
    /// De-duplication key within the agent (rule id, `agent:<key>`, `offline`).
    pub key: String,
    /// Source.
    pub source: AlertSource,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// Observed value, for rules.
    pub value: Option<f64>,
    /// State.
    pub state: AlertState,
    /// First firing.
    pub fired_at_ms: u64,
    /// Last change or re-firing.
    pub updated_at_ms: u64,
    /// Resolution time.
    pub resolved_at_ms: Option<u64>,
    /// Who resolved it (`auto` or an operator).
    pub resolved_by: Option<String>,
    /// How many times the condition fired while open.
    pub occurrences: u32,
}

/// A threshold alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Id (unique per tenant).
    pub id: String,
    /// Metric name; for labelled metrics the highest value across labels is compared.
    pub metric: String,
    /// Fires when the value is above this.
    pub threshold: f64,
    /// Consecutive breaching batches needed to fire.
    pub for_samples: u32,
    /// Severity.
    pub severity: Severity,
    /// Disabled rules are ignored.
    pub enabled: bool,
}

/// A tenant's alert rules with their revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesDoc {
    /// Revision (0 = built-in defaults, never written).
    pub revision: u64,
    /// Rules.
    pub rules: Vec<AlertRule>,
}

/// An audit event (hash-chained per tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the tenant's chain, from 1.
    pub seq: u64,
    /// Time (proposer's clock).
    pub at_ms: u64,
    /// Event type, e.g. `agent_token_rotated`.
    pub event_type: String,
    /// Who (`system`, an operator, an agent id).
    pub actor: String,
    /// Agent concerned.
    pub agent_id: Option<String>,
    /// Details as JSON text.
    pub details: String,
    /// Hash of the previous event (zeros for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 over `prev_hash` and the other fields.
    pub hash: [u8; 32],
}

/// An anomaly found by the integrity checker, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAnomaly {
    /// Agent.
    pub agent_id: String,
    /// `clock_drift`, `cadence_anomaly`, `flat_metrics`, `version_downgrade`.
    pub kind: String,
    /// Details as JSON text.
    pub details: String,
}

/// A stored integrity anomaly (append-only; resolving sets `resolved_at_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Id (per tenant, increasing).
    pub id: u64,
    /// Tenant.
    pub tenant: String,
    /// Agent.
    pub agent_id: String,
    /// Kind.
    pub kind: String,
    /// Details as JSON text.
    pub details: String,
    /// Detection time.
    pub detected_at_ms: u64,
    /// Resolution time.
    pub resolved_at_ms: Option<u64>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
}

/// Rollup resolutions kept in the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resolution {
    /// Raw samples.
    Raw,
    /// 1-minute buckets.
    M1,
    /// 5-minute buckets.
    M5,
    /// 1-hour buckets.
    H1,
}

impl Resolution {
    /// The rollup resolutions, finest first.
    pub const ROLLUPS: [Resolution; 3] = [Resolution::M1, Resolution::M5, Resolution::H1];

    /// Bucket width, ms (0 for raw).
    pub fn width_ms(self) -> u64 {
        match self {
            Resolution::Raw => 0,
            Resolution::M1 => 60_000,
            Resolution::M5 => 300_000,
            Resolution::H1 => 3_600_000,
        }
    }

    /// Name in the API (`raw`, `1m`, `5m`, `1h`).
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::M1 => "1m",
            Resolution::M5 => "5m",
            Resolution::H1 => "1h",
        }
    }

    /// Key tag.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Resolution::Raw => b'r',
            Resolution::M1 => b'a',
            Resolution::M5 => b'b',
            Resolution::H1 => b'c',
        }
    }
}

impl AuditEvent {
    /// SHA-256 over `prev_hash` and every other field (length-prefixed), excluding `hash`.
    pub fn compute_hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.prev_hash);
        h.update(self.seq.to_le_bytes());
        h.update(self.at_ms.to_le_bytes());
        for field in [
            self.event_type.as_str(),
            self.actor.as_str(),
            self.agent_id.as_deref().unwrap_or(""),
            self.details.as_str(),
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        h.update([u8::from(self.agent_id.is_some())]);
        h.finalize().into()
    }
}
