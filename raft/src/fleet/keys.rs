//! Key layout of the fleet domain in the `sm_data` tree.
//!
//! Every key starts with `f/<kind>/` and then the tenant, so a tenant's data is a set of
//! contiguous ranges (future shard groups split by tenant). Components never contain `/` (ids,
//! tenants and machine ids are validated by the hub), so a prefix ending in `/` selects exactly
//! one parent. Numbers that order scans are big-endian.

/// `f/et/<tenant>/<id>` → `EnrollmentToken`.
pub(crate) fn enrollment(tenant: &str, id: &str) -> Vec<u8> {
    format!("f/et/{tenant}/{id}").into_bytes()
}

/// Prefix of a tenant's enrollment tokens.
pub(crate) fn enrollment_prefix(tenant: &str) -> Vec<u8> {
    format!("f/et/{tenant}/").into_bytes()
}

/// `f/eth/<sha256 hex>` → `(tenant, id)`.
pub(crate) fn enrollment_hash(sha: &[u8; 32]) -> Vec<u8> {
    format!("f/eth/{}", hex(sha)).into_bytes()
}

/// `f/ag/<tenant>/<agent>` → `AgentRecord`.
pub(crate) fn agent(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/ag/{tenant}/{agent}").into_bytes()
}

/// Prefix of a tenant's agents.
pub(crate) fn agent_prefix(tenant: &str) -> Vec<u8> {
    format!("f/ag/{tenant}/").into_bytes()
}

/// Prefix of every agent of every tenant.
pub(crate) const ALL_AGENTS: &[u8] = b"f/ag/";

/// `f/at/<sha256 hex>` → `(tenant, agent)`.
pub(crate) fn agent_token(sha: &[u8; 32]) -> Vec<u8> {
    format!("f/at/{}", hex(sha)).into_bytes()
}

/// `f/am/<tenant>/<machine id>` → agent id.
pub(crate) fn machine(tenant: &str, machine_id: &str) -> Vec<u8> {
    format!("f/am/{tenant}/{machine_id}").into_bytes()
}

/// Prefix of an agent's seq window.
pub(crate) fn seq_prefix(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/sq/{tenant}/{agent}/").into_bytes()
}

/// `f/sq/<tenant>/<agent>/<seq be>` → `(body sha256, committed at)`.
pub(crate) fn seq(tenant: &str, agent: &str, seq: u64) -> Vec<u8> {
    let mut k = seq_prefix(tenant, agent);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of an agent's raw batches.
pub(crate) fn raw_prefix(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/raw/{tenant}/{agent}/").into_bytes()
}

/// `f/raw/<tenant>/<agent>/<collected_at be><seq be>` → samples.
pub(crate) fn raw(tenant: &str, agent: &str, at_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = raw_prefix(tenant, agent);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of an agent's rollups at one resolution.
pub(crate) fn rollup_prefix(tag: u8, tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/ru/{}/{tenant}/{agent}/", tag as char).into_bytes()
}

/// `f/ru/<res>/<tenant>/<agent>/<bucket be>` → series → `Agg`.
pub(crate) fn rollup(tag: u8, tenant: &str, agent: &str, bucket_ms: u64) -> Vec<u8> {
    let mut k = rollup_prefix(tag, tenant, agent);
    k.extend_from_slice(&bucket_ms.to_be_bytes());
    k
}

/// `f/inv/<tenant>/<agent>` → `(collected at, JSON)`.
pub(crate) fn inventory(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/inv/{tenant}/{agent}").into_bytes()
}

/// `f/proc/<tenant>/<agent>` → `(collected at, JSON)`.
pub(crate) fn processes(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/proc/{tenant}/{agent}").into_bytes()
}

/// `f/al/<tenant>/<id be>` → `AlertRecord`.
pub(crate) fn alert(tenant: &str, id: u64) -> Vec<u8> {
    let mut k = alert_prefix(tenant);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of a tenant's alerts.
pub(crate) fn alert_prefix(tenant: &str) -> Vec<u8> {
    format!("f/al/{tenant}/").into_bytes()
}

/// `f/alo/<tenant>/<agent>` → open alerts of the agent: key → alert id.
pub(crate) fn open_alerts(tenant: &str, agent: &str) -> Vec<u8> {
    format!("f/alo/{tenant}/{agent}").into_bytes()
}

/// `f/cnt/<name>/<tenant>` → last id handed out.
pub(crate) fn counter(name: &str, tenant: &str) -> Vec<u8> {
    format!("f/cnt/{name}/{tenant}").into_bytes()
}

/// `f/au/<tenant>/<seq be>` → `AuditEvent`.
pub(crate) fn audit(tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = audit_prefix(tenant);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of a tenant's audit log.
pub(crate) fn audit_prefix(tenant: &str) -> Vec<u8> {
    format!("f/au/{tenant}/").into_bytes()
}

/// `f/auh/<tenant>` → `(seq, hash)` of the newest audit event.
pub(crate) fn audit_head(tenant: &str) -> Vec<u8> {
    format!("f/auh/{tenant}").into_bytes()
}

/// `f/rules/<tenant>` → `RulesDoc`.
pub(crate) fn rules(tenant: &str) -> Vec<u8> {
    format!("f/rules/{tenant}").into_bytes()
}

/// `f/an/<tenant>/<id be>` → `Anomaly`.
pub(crate) fn anomaly(tenant: &str, id: u64) -> Vec<u8> {
    let mut k = anomaly_prefix(tenant);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of a tenant's anomalies.
pub(crate) fn anomaly_prefix(tenant: &str) -> Vec<u8> {
    format!("f/an/{tenant}/").into_bytes()
}

/// `f/ano/<tenant>/<agent>/<kind>` → id of the open anomaly of that kind.
pub(crate) fn open_anomaly(tenant: &str, agent: &str, kind: &str) -> Vec<u8> {
    format!("f/ano/{tenant}/{agent}/{kind}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
