//! A deadline that can be moved while the load runs: a fixed run knows its end in advance, an
//! upgrade run ends its load only after the last node is back (and the upgrade finalized).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared, movable deadline (cheap to clone).
#[derive(Clone, Debug)]
pub struct Until(Arc<Mutex<Instant>>);

impl Until {
    /// Ends at `at`.
    pub fn at(at: Instant) -> Until {
        Until(Arc::new(Mutex::new(at)))
    }

    /// Ends when [`Until::set`] says (at the latest in a day).
    pub fn open() -> Until {
        Until::at(Instant::now() + Duration::from_secs(86_400))
    }

    /// The deadline now.
    pub fn get(&self) -> Instant {
        *self.0.lock().expect("deadline")
    }

    /// Moves the deadline.
    pub fn set(&self, at: Instant) {
        *self.0.lock().expect("deadline") = at;
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_the_deadline_is_seen_by_every_clone() {
        let u = Until::open();
        let seen = u.clone();
        assert!(!seen.passed());
        u.set(Instant::now());
        assert!(seen.passed());
    }
}
