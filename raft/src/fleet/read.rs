//! Local reads of the fleet domain (the applied state of this replica; see the consistency
//! notes of the API for when a read goes through the leader first).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use monsys_tsdb::Agg;
use monsys_tsdb::series::{Head, Kv, Reader};

use super::keys;
use super::telemetry::{self, SharedHeads, TreeSource};
use super::types::*;
use crate::{Error, codec};

/// Which aggregate ranks series and agents in fleet-wide reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Average.
    Avg,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Latest value.
    Last,
}

impl Stat {
    /// The statistic of an aggregate.
    pub fn of(self, a: &Agg) -> f64 {
        match self {
            Stat::Avg => a.avg(),
            Stat::Max => a.max,
            Stat::Min => a.min,
            Stat::Last => a.last,
        }
    }
}

/// Reader of the fleet domain over the `sm_data` tree.
#[derive(Clone)]
pub struct FleetReader {
    pub(crate) data: sled::Tree,
    pub(crate) heads: SharedHeads,
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

    /// Runs `f` on the agent's series reader while holding the heads' read lock, so the
    /// sealed blocks and the head it sees belong to the same applied entry.
    fn series_read<T>(
        &self,
        tenant: &str,
        agent: &str,
        f: impl FnOnce(&Reader<'_, TreeSource<'_>>) -> Result<T, monsys_tsdb::series::Error<Error>>,
    ) -> Result<T, Error> {
        let p = telemetry::prefix(tenant, agent);
        let heads = self.heads.read().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
        let src = TreeSource(&self.data);
        f(&Reader::new(&src, &p, heads.get(&p))).map_err(telemetry::layout_err)
    }

    /// The agent's series keys (`name{label="value",…}`); a series' id is its position.
    pub fn series(&self, tenant: &str, agent: &str) -> Result<Vec<String>, Error> {
        self.series_read(tenant, agent, |r| r.series())
    }

    /// Raw samples of series `id` collected in `[from, to)`, in time order.
    pub fn raw_series(
        &self,
        tenant: &str,
        agent: &str,
        id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, f64)>, Error> {
        self.series_read(tenant, agent, |r| r.raw(id, from, to))
    }

    /// Rollup buckets of series `id` starting in `[from, to)` at `res` (not `Raw`).
    pub fn rollup_series(
        &self,
        res: Resolution,
        tenant: &str,
        agent: &str,
        id: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Agg)>, Error> {
        self.series_read(tenant, agent, |r| r.rollup(telemetry::res(res), id, from, to))
    }

    /// For each agent of the tenant with samples of `metric` (any labels), its series whose
    /// aggregate over the buckets of `res` starting in `[from, to)` ranks highest by `stat`,
    /// with that aggregate. Reads rollup blocks only (plus the open window's head block).
    pub fn metric_by_agent(
        &self,
        tenant: &str,
        metric: &str,
        res: Resolution,
        from: u64,
        to: u64,
        stat: Stat,
    ) -> Result<Vec<(AgentRecord, String, Agg)>, Error> {
        let labelled = format!("{metric}{{");
        let mut out = Vec::new();
        for agent in self.agents(tenant)? {
            let mut best: Option<(String, Agg)> = None;
            for (id, key) in self.series(tenant, &agent.id)?.into_iter().enumerate() {
                if key != metric && !key.starts_with(&labelled) {
                    continue;
                }
                let buckets = self.rollup_series(res, tenant, &agent.id, id as u32, from, to)?;
                let Some(total) = buckets.into_iter().map(|b| b.1).reduce(|mut acc, a| {
                    acc.merge(&a);
                    acc
                }) else {
                    continue;
                };
                if best.as_ref().is_none_or(|(_, b)| stat.of(&total) > stat.of(b)) {
                    best = Some((key, total));
                }
            }
            if let Some((series, agg)) = best {
                out.push((agent, series, agg));
            }
        }
        Ok(out)
    }

    /// The agent's telemetry head: newest window and samples refused so far.
    pub fn telemetry_head(&self, tenant: &str, agent: &str) -> Result<Head, Error> {
        self.series_read(tenant, agent, |r| r.head())
    }

    /// Every stored telemetry value of an agent (keys and bytes, in key order): what replicas
    /// compare to prove they built the same blocks.
    pub fn telemetry_dump(&self, tenant: &str, agent: &str) -> Result<Vec<Kv>, Error> {
        let p = telemetry::prefix(tenant, agent);
        let heads = self.heads.read().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
        let mut out: Vec<Kv> = self
            .data
            .scan_prefix(&p)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from))
            .collect::<Result<_, _>>()?;
        if let Some(h) = heads.get(&p) {
            out.extend(h.to_records().into_iter().map(|r| ([p.as_slice(), b"~head"].concat(), r)));
        }
        Ok(out)
    }

    /// Agents with an open telemetry window and the bytes their head blocks hold in memory.
    pub fn head_stats(&self) -> Result<(usize, usize), Error> {
        let heads = self.heads.read().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
        Ok((heads.len(), heads.values().map(|h| h.bytes()).sum()))
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

    /// Stored telemetry bytes per tenant, by resolution (`[raw, 1m, 5m, 1h]`); kept by every
    /// write, so this reads one small value per tenant.
    pub fn telemetry_bytes(&self) -> Result<BTreeMap<String, [i64; 4]>, Error> {
        telemetry::bytes_by_tenant(&self.data)
    }
}
