//! A GCRA rate limiter (generic cell rate algorithm): `rate` requests per `period` with a burst
//! of `burst`, one `u64` of state. It lives inside the actor that owns the key, so one limiter
//! counts a key's requests from every node.

use std::time::Duration;

/// GCRA state for one key.
#[derive(Debug, Clone)]
pub struct Gcra {
    /// Time between two requests at the sustained rate, ms.
    interval_ms: u64,
    /// How far ahead of now the theoretical arrival time may run (burst tolerance), ms.
    tolerance_ms: u64,
    /// Theoretical arrival time of the next request, ms.
    tat_ms: u64,
}

impl Gcra {
    /// `rate` requests per `period`, up to `burst` at once (burst ≥ 1).
    pub fn new(rate: u32, period: Duration, burst: u32) -> Gcra {
        let interval_ms = (period.as_millis() as u64 / u64::from(rate.max(1))).max(1);
        Gcra { interval_ms, tolerance_ms: interval_ms * u64::from(burst.max(1) - 1), tat_ms: 0 }
    }

    /// Admits a request at `now_ms`, or says how long to wait.
    pub fn check(&mut self, now_ms: u64) -> Result<(), Duration> {
        let tat = self.tat_ms.max(now_ms);
        let allow_at = tat.saturating_sub(self.tolerance_ms);
        if now_ms < allow_at {
            return Err(Duration::from_millis(allow_at - now_ms));
        }
        self.tat_ms = tat + self.interval_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let mut g = Gcra::new(60, Duration::from_secs(60), 60);
        for _ in 0..60 {
            assert!(g.check(1_000).is_ok());
        }
        let wait = g.check(1_000).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(g.check(1_999).is_err());
        assert!(g.check(2_000).is_ok());
        // a minute later the burst is available again
        let later = 200_000;
        for _ in 0..60 {
            assert!(g.check(later).is_ok());
        }
        assert!(g.check(later).is_err());
    }

    #[test]
    fn sustained_rate_is_exact() {
        let mut g = Gcra::new(60, Duration::from_secs(60), 1);
        let admitted = (0..120_000u64).step_by(100).filter(|t| g.check(*t).is_ok()).count();
        assert_eq!(admitted, 120);
    }
}
