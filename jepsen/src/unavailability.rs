//! API unavailability as clients that fail over to another node see it, per restart window.
//!
//! A window runs from the SIGTERM of one node to the SIGTERM of the next (the last one to the
//! end of the rolling phase), so every disturbance is charged to a restart. In a window:
//! - **longest operation**: the longest time from an operation's first try to its answer, over
//!   operations answered in the window (unknown outcomes are not answers: counted apart);
//! - **longest gap**: the longest time between two consecutive successful completions anywhere
//!   in the cluster, over the gaps that overlap the window (with several clients busy, the time
//!   nobody got anything done);
//! - the same two for acknowledged ingest batches (first try → acknowledgement; gaps between
//!   acknowledgements of all agents).

use serde::Serialize;

use crate::history::{Outcome, Record};
use crate::ingest::Ack;

/// The target for both figures.
pub const TARGET_MS: u64 = 1000;

/// What clients saw during one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Settings operations answered in the window.
    pub operations: usize,
    /// Longest first-try-to-answer time of those, ms.
    pub longest_op_ms: u64,
    /// Longest gap between successful completions overlapping the window, ms.
    pub longest_gap_ms: u64,
    /// Operations whose outcome stayed unknown (completed in the window).
    pub unknown: usize,
    /// Operations answered after failing over to another node.
    pub failed_over: usize,
    /// Ingest batches acknowledged in the window.
    pub batches: usize,
    /// Longest first-try-to-acknowledgement time of those, ms.
    pub longest_batch_ms: u64,
    /// Batches of those that took more than one try.
    pub batches_retried: usize,
    /// Longest gap between acknowledgements overlapping the window, ms.
    pub longest_ack_gap_ms: u64,
}

impl Window {
    /// Whether every figure (settings and ingest) is under [`TARGET_MS`].
    pub fn within_target(&self) -> bool {
        [self.longest_op_ms, self.longest_gap_ms, self.longest_batch_ms, self.longest_ack_gap_ms]
            .iter()
            .all(|ms| *ms < TARGET_MS)
    }
}

/// The longest gap between consecutive `points` (sorted µs) that overlaps `[from, to)`; when
/// nothing completes after the last point, the gap runs to `to`.
fn longest_gap(points: &[u64], from: u64, to: u64) -> u64 {
    let before = points.iter().rev().find(|p| **p < from).copied().unwrap_or(from);
    let mut prev = before;
    let mut longest = 0;
    for &p in points.iter().filter(|p| **p >= from) {
        longest = longest.max(p - prev);
        prev = p;
        if p >= to {
            return longest;
        }
    }
    longest.max(to.saturating_sub(prev))
}

/// Measures the window `[from_us, to_us)` of a history and of the ingest acknowledgements.
pub fn measure(history: &[Record], acks: &[Ack], from_us: u64, to_us: u64) -> Window {
    let inside = |t: u64| t >= from_us && t < to_us;
    let answered: Vec<&Record> =
        history.iter().filter(|r| inside(r.complete_us) && r.outcome != Outcome::Info).collect();
    let mut ok: Vec<u64> =
        history.iter().filter(|r| r.outcome == Outcome::Ok).map(|r| r.complete_us).collect();
    ok.sort_unstable();
    let mut acked: Vec<u64> = acks.iter().map(|a| a.acked_us).collect();
    acked.sort_unstable();
    let in_acks: Vec<&Ack> = acks.iter().filter(|a| inside(a.acked_us)).collect();
    Window {
        operations: answered.len(),
        longest_op_ms: answered.iter().map(|r| r.complete_us - r.invoke_us).max().unwrap_or(0) / 1000,
        longest_gap_ms: longest_gap(&ok, from_us, to_us) / 1000,
        unknown: history.iter().filter(|r| inside(r.complete_us) && r.outcome == Outcome::Info).count(),
        failed_over: answered.iter().filter(|r| r.attempts > 1).count(),
        batches: in_acks.len(),
        longest_batch_ms: in_acks.iter().map(|a| a.acked_us - a.first_us).max().unwrap_or(0) / 1000,
        batches_retried: in_acks.iter().filter(|a| a.tries > 1).count(),
        longest_ack_gap_ms: if acks.is_empty() { 0 } else { longest_gap(&acked, from_us, to_us) / 1000 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn rec(invoke_ms: u64, complete_ms: u64, outcome: Outcome, attempts: u32) -> Record {
        Record {
            process: 0,
            node: 1,
            attempts,
            op: Op::Read,
            invoke_us: invoke_ms * 1000,
            complete_us: complete_ms * 1000,
            outcome,
            result: (outcome == Outcome::Ok).then_some((1, 1)),
            error: None,
        }
    }

    #[test]
    fn gap_spans_the_window_edges() {
        // last success before the window at 900, next at 1700: the gap of 800 overlaps it
        assert_eq!(longest_gap(&[100, 900, 1700, 1800], 1000, 2000), 800);
        // nothing after 1100 until the window's end: the gap runs to the end
        assert_eq!(longest_gap(&[1000, 1100], 1000, 3000), 1900);
        // the first point past the window closes the gap that overlaps it, later ones don't count
        assert_eq!(longest_gap(&[1000, 1900, 2600, 9000], 1000, 2000), 900);
        assert_eq!(longest_gap(&[], 1000, 2000), 1000);
    }

    #[test]
    fn measures_answered_operations_and_counts_unknown_apart() {
        let h = vec![
            rec(0, 50, Outcome::Ok, 1),        // before the window
            rec(990, 1400, Outcome::Ok, 2),    // failed over: 410 ms
            rec(1500, 1510, Outcome::Fail, 1), // a 412 is an answer too
            rec(1000, 6000, Outcome::Info, 1), // unknown: not an answer
            rec(1600, 2100, Outcome::Ok, 1),   // completes after the window
        ];
        let acks = vec![
            Ack { first_us: 1_000_000, acked_us: 1_300_000, tries: 3 },
            Ack { first_us: 1_700_000, acked_us: 1_750_000, tries: 1 },
        ];
        let w = measure(&h, &acks, 1_000_000, 2_000_000);
        assert_eq!(w.operations, 2);
        assert_eq!(w.longest_op_ms, 410);
        assert_eq!(w.failed_over, 1);
        assert_eq!(w.unknown, 0, "the unknown one completed after the window");
        // successes at 50, 1400, 2100: the gap 50 -> 1400 overlaps the window
        assert_eq!(w.longest_gap_ms, 1350);
        assert!(!w.within_target());
        let quick = Window { longest_gap_ms: 200, ..w.clone() };
        assert!(quick.within_target());
        assert!(!Window { longest_ack_gap_ms: 1000, ..quick }.within_target(), "ingest counts too");
        assert_eq!((w.batches, w.longest_batch_ms, w.batches_retried), (2, 300, 1));
        // acks at 1300 and 1750 (nothing before the window): the longest gap is between them
        assert_eq!(w.longest_ack_gap_ms, 450);
        let later = measure(&h, &acks, 2_000_000, 7_000_000);
        assert_eq!(later.unknown, 1);
    }
}
