//! Rate limiters of the keys this node owns (`ActorKey::Limit`): one GCRA cell per key, so the
//! requests for a key count once however many nodes they arrive at. The table is bounded; the
//! least recently used cells go first (a forgotten cell starts with a full burst again, which
//! errs on the side of the user).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::agent::limiter::Gcra;

/// A limit: `rate` requests per `period`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Sustained requests per period.
    pub rate: u32,
    /// The period.
    pub period: Duration,
    /// Largest burst.
    pub burst: u32,
}

/// The limiter cells owned by this node.
pub struct LimitTable {
    cells: Mutex<HashMap<String, (Gcra, Policy, u64)>>,
    max: usize,
}

impl LimitTable {
    /// A table of at most `max` keys.
    pub fn new(max: usize) -> Self {
        LimitTable { cells: Mutex::new(HashMap::new()), max }
    }

    /// Admits one request for `key` at `now_ms`, or says how long to wait.
    pub fn check(&self, key: &str, policy: Policy, now_ms: u64) -> Result<(), Duration> {
        let mut cells = self.cells.lock().expect("limit table lock");
        if !cells.contains_key(key) && cells.len() >= self.max {
            let oldest = cells.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cells.remove(&k);
            }
        }
        let cell = cells
            .entry(key.to_string())
            .or_insert_with(|| (Gcra::new(policy.rate, policy.period, policy.burst), policy, now_ms));
        if cell.1 != policy {
            *cell = (Gcra::new(policy.rate, policy.period, policy.burst), policy, now_ms);
        }
        cell.2 = now_ms;
        cell.0.check(now_ms)
    }

    /// Whether this table holds a cell for `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.cells.lock().expect("limit table lock").contains_key(key)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.cells.lock().expect("limit table lock").len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_limited_separately_and_the_table_is_bounded() {
        let t = LimitTable::new(2);
        let p = Policy { rate: 10, period: Duration::from_secs(60), burst: 10 };
        for _ in 0..10 {
            assert!(t.check("a", p, 0).is_ok());
        }
        assert!(t.check("a", p, 0).is_err());
        assert!(t.check("b", p, 0).is_ok());
        assert!(t.check("c", p, 1).is_ok());
        assert_eq!(t.len(), 2, "the least recently used key was dropped");
    }
}
