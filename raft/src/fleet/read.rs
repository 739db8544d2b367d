//! Local reads of the fleet domain (the applied state of this replica; see the consistency
//! notes of the API for when a read goes through the leader first).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::keys;
use super::types::*;
use crate::{Error, codec};

/// A stored raw batch: collection time, seq, samples.
pub type RawBatch = (u64, u64, Vec<(String, f64)>);
/// A rollup bucket: its start and every series' aggregate.
pub type RollupBucket = (u64, BTreeMap<String, Agg>);

/// Reader of the fleet domain over the `sm_data` tree.
#[derive(Clone)]
pub struct FleetReader {
    pub(crate) data: sled::Tree,
}

fn decode<T: DeserializeOwned>(what: &'static str, v: &[u8]) -> Result<T, Error> {
    codec::decode_value(what, v)
}

impl FleetReader {
    fn get<T: DeserializeOwned>(&self, what: &'static str, key: &[u8]) -> Result<Option<T>, Error> {
        self.data.get(key)?.map(|v| decode(what, &v)).transpose()
    }

    fn scan<T: DeserializeOwned>(&self, what: &'static str, prefix: Vec<u8>) -> Result<Vec<T>, Error> {
        self.data.scan_prefix(prefix).map(|kv| decode(what, &kv?.1)).collect()
    }

    /// The tenant and id of the agent holding the token with this SHA-256.
    pub fn agent_by_token(&self, sha: &[u8; 32]) -> Result<Option<(String, String)>, Error> {
        self.get("agent token index", &keys::agent_token(sha))
    }

    /// One agent.
    pub fn agent(&self, tenant: &str, id: &str) -> Result<Option<AgentRecord>, Error> {
        self.get("agent", &keys::agent(tenant, id))
    }

    /// A tenant's agents, by id.
    pub fn agents(&self, tenant: &str) -> Result<Vec<AgentRecord>, Error> {
        self.scan("agent", keys::agent_prefix(tenant))
    }

    /// Every agent of every tenant.
    pub fn all_agents(&self) -> Result<Vec<AgentRecord>, Error> {
        self.scan("agent", keys::ALL_AGENTS.to_vec())
    }

    /// A tenant's enrollment tokens.
    pub fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentToken>, Error> {
        self.scan("enrollment token", keys::enrollment_prefix(tenant))
    }

    /// Raw batches of an agent collected in `[from, to)`: `(collected_at, seq, samples)`.
    pub fn raw(&self, tenant: &str, agent: &str, from: u64, to: u64) -> Result<Vec<RawBatch>, Error> {
        let (start, end) = (keys::raw(tenant, agent, from, 0), keys::raw(tenant, agent, to, 0));
        let plen = keys::raw_prefix(tenant, agent).len();
        self.data
            .range(start..end)
            .map(|kv| {
                let (k, v) = kv?;
                let at = u64::from_be_bytes(
                    k[plen..plen + 8].try_into().map_err(|_| Error::Corrupt("raw key".into()))?,
                );
                let seq = u64::from_be_bytes(
                    k[plen + 8..plen + 16].try_into().map_err(|_| Error::Corrupt("raw key".into()))?,
                );
                Ok((at, seq, decode("raw batch", &v)?))
            })
            .collect()
    }

    /// Rollup buckets of an agent starting in `[from, to)`: `(bucket start, series → agg)`.
    pub fn rollups(
        &self,
        res: Resolution,
        tenant: &str,
        agent: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<RollupBucket>, Error> {
        let (start, end) =
            (keys::rollup(res.tag(), tenant, agent, from), keys::rollup(res.tag(), tenant, agent, to));
        let plen = keys::rollup_prefix(res.tag(), tenant, agent).len();
        self.data
            .range(start..end)
            .map(|kv| {
                let (k, v) = kv?;
                let at = u64::from_be_bytes(
                    k[plen..plen + 8].try_into().map_err(|_| Error::Corrupt("rollup key".into()))?,
                );
                Ok((at, decode("rollup", &v)?))
            })
            .collect()
    }

    /// Stored inventory JSON and its collection time.
    pub fn inventory(&self, tenant: &str, agent: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.get("inventory", &keys::inventory(tenant, agent))
    }

    /// Stored processes JSON and its collection time.
    pub fn processes(&self, tenant: &str, agent: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.get("processes", &keys::processes(tenant, agent))
    }

    /// A tenant's alerts, oldest first.
    pub fn alerts(&self, tenant: &str) -> Result<Vec<AlertRecord>, Error> {
        self.scan("alert", keys::alert_prefix(tenant))
    }

    /// One alert.
    pub fn alert(&self, tenant: &str, id: u64) -> Result<Option<AlertRecord>, Error> {
        self.get("alert", &keys::alert(tenant, id))
    }

    /// Open alerts of an agent: key → alert id.
    pub fn open_alerts(&self, tenant: &str, agent: &str) -> Result<BTreeMap<String, u64>, Error> {
        Ok(self.get("open alerts", &keys::open_alerts(tenant, agent))?.unwrap_or_default())
    }

    /// A tenant's alert rules (built-in defaults at revision 0 until written).
    pub fn rules(&self, tenant: &str) -> Result<RulesDoc, Error> {
        Ok(self.get("rules", &keys::rules(tenant))?.unwrap_or_else(super::apply::default_rules))
    }

    /// A tenant's audit events with `seq > after`, at most `limit`, oldest first.
    pub fn audit(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
        let start = keys::audit(tenant, after.saturating_add(1));
        let end = keys::audit(tenant, u64::MAX);
        self.data.range(start..end).take(limit).map(|kv| decode("audit event", &kv?.1)).collect()
    }

    /// Verifies a tenant's audit chain; returns the number of events, or the first broken seq.
    pub fn verify_audit(&self, tenant: &str) -> Result<Result<u64, u64>, Error> {
        let mut prev = [0u8; 32];
        let mut n = 0;
        for kv in self.data.scan_prefix(keys::audit_prefix(tenant)) {
            let e: AuditEvent = decode("audit event", &kv?.1)?;
            if e.prev_hash != prev || e.compute_hash() != e.hash || e.seq != n + 1 {
                return Ok(Err(e.seq));
            }
            prev = e.hash;
            n += 1;
        }
        Ok(Ok(n))
    }

    /// A tenant's integrity anomalies, oldest first.
    pub fn anomalies(&self, tenant: &str) -> Result<Vec<Anomaly>, Error> {
        self.scan("anomaly", keys::anomaly_prefix(tenant))
    }

    /// Bytes of stored telemetry keys and values by kind (`raw`, `1m`, `5m`, `1h`), all tenants.
    pub fn telemetry_bytes(&self) -> Result<BTreeMap<&'static str, u64>, Error> {
        let mut out = BTreeMap::new();
        let kinds: [(&'static str, &[u8]); 4] =
            [("raw", b"f/raw/"), ("1m", b"f/ru/a/"), ("5m", b"f/ru/b/"), ("1h", b"f/ru/c/")];
        for (name, prefix) in kinds {
            let mut bytes = 0;
            for kv in self.data.scan_prefix(prefix) {
                let (k, v) = kv?;
                bytes += (k.len() + v.len()) as u64;
            }
            out.insert(name, bytes);
        }
        Ok(out)
    }
}
