//! Linearizability of the settings register, checked with the Wing & Gong search as improved by
//! Lowe (the algorithm behind Knossos and Porcupine): walk the history's call/return events in
//! time order, linearize any call whose operation is consistent with the model, backtrack at a
//! return whose call is not linearized yet, and memoize (linearized set, state) pairs.
//!
//! The register is the settings document seen as `(revision, value)`; a write bumps the
//! revision, a compare-and-set bumps it only if it equals the expected one. Outcomes:
//! - `ok` operations must take effect exactly as answered, between invocation and completion;
//! - `fail` is certainly not applied; a `412 revision_mismatch` CAS also asserts that the
//!   revision differed at some point in its interval; other failures carry no information;
//! - `info` (timeout, 504, lost connection) may take effect at any point after invocation, or
//!   never: both are tried.

use std::collections::HashSet;

use crate::history::{Op, Outcome, Record};

/// The register's state.
pub type State = (u64, u32);

/// What the checker concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the longest linearizable prefix had this many operations, and this
    /// operation (index in the history) could not be placed.
    NotLinearizable {
        /// Operations linearized at best.
        best: usize,
        /// An operation that could not be linearized there.
        stuck_at: usize,
    },
    /// The search budget ran out.
    Unknown,
}

/// Search steps before giving up.
pub const BUDGET: u64 = 20_000_000;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Read(State),
    Write { value: u32, rev: Option<u64> },
    Cas { expected: u64, value: u32, rev: Option<u64> },
    CasRefused { expected: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// May take effect or not (`info`).
    optional: bool,
    record: usize,
}

/// The model: the state after `e` from `s`, if `e` is possible there (`skip`: the optional
/// operation took no effect).
fn step(s: State, e: &Entry, skip: bool) -> Option<State> {
    if skip {
        return e.optional.then_some(s);
    }
    match e.kind {
        Kind::Read(seen) => (seen == s).then_some(s),
        Kind::Write { value, rev } => rev.is_none_or(|r| r == s.0 + 1).then_some((s.0 + 1, value)),
        Kind::Cas { expected, value, rev } => {
            (s.0 == expected && rev.is_none_or(|r| r == s.0 + 1)).then_some((s.0 + 1, value))
        }
        Kind::CasRefused { expected } => (s.0 != expected).then_some(s),
    }
}

fn entries(history: &[Record]) -> Vec<(Entry, u64, u64)> {
    history
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let kind = match (r.op, r.outcome) {
                (Op::Read, Outcome::Ok) => Kind::Read(r.result?),
                (Op::Read, _) => return None,
                (Op::Write { value }, Outcome::Ok) => Kind::Write { value, rev: r.result.map(|x| x.0) },
                (Op::Write { value }, Outcome::Info) => Kind::Write { value, rev: None },
                (Op::Cas { expected, value }, Outcome::Ok) => {
                    Kind::Cas { expected, value, rev: r.result.map(|x| x.0) }
                }
                (Op::Cas { expected, value }, Outcome::Info) => Kind::Cas { expected, value, rev: None },
                (Op::Cas { expected, .. }, Outcome::Fail)
                    if r.error.as_deref() == Some("revision_mismatch") =>
                {
                    Kind::CasRefused { expected }
                }
                (_, Outcome::Fail) => return None,
            };
            let optional = r.outcome == Outcome::Info;
            let end = if optional { u64::MAX } else { r.complete_us };
            Some((Entry { kind, optional, record: i }, r.invoke_us, end))
        })
        .collect()
}

/// Checks `history` against the register starting at `init`.
pub fn check(history: &[Record], init: State) -> Verdict {
    let ops = entries(history);
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // events: (time, is_return, op); calls sort before returns at equal times (overlap)
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, (_, call, ret)) in ops.iter().enumerate() {
        events.push((*call, false, i));
        events.push((*ret, true, i));
    }
    events.sort();
    // doubly linked list over events; node 0 is the head sentinel, event k is node k + 1
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    next[len - 1] = usize::MAX;
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    let mut call_node = vec![0; n];
    let mut ret_node = vec![0; n];
    for (k, (_, is_ret, op)) in events.iter().enumerate() {
        if *is_ret { ret_node[*op] = k + 1 } else { call_node[*op] = k + 1 }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != usize::MAX {
            prev[nx] = x;
        }
    };

    let words = n.div_ceil(64);
    let mut bits = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State, bool)> = Vec::new();
    let mut state = init;
    let mut cur = next[0];
    let mut resume_skip: Option<bool> = None; // variant to try next at `cur` after a backtrack
    let (mut best, mut stuck_at) = (0, ops[0].0.record);
    let mut steps = 0u64;
    while next[0] != usize::MAX {
        steps += 1;
        if steps > BUDGET {
            return Verdict::Unknown;
        }
        // at the end of the list, or at the earliest pending return whose call is not
        // linearized yet: undo the last linearized call and try its next option
        let at_return = cur != usize::MAX && events[cur - 1].1;
        if cur == usize::MAX || at_return {
            let Some((op, s, skip)) = stack.pop() else {
                return Verdict::NotLinearizable { best, stuck_at };
            };
            state = s;
            bits[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_node[op]);
            relink(&mut next, &mut prev, call_node[op]);
            cur = call_node[op];
            resume_skip = if skip || !ops[op].0.optional { None } else { Some(true) };
            if resume_skip.is_none() {
                cur = next[cur];
            }
            continue;
        }
        let op = events[cur - 1].2;
        let entry = &ops[op].0;
        let variants: &[bool] = match resume_skip.take() {
            Some(true) => &[true],
            _ if entry.optional => &[false, true],
            _ => &[false],
        };
        let mut placed = false;
        for &skip in variants {
            let Some(ns) = step(state, entry, skip) else { continue };
            bits[op / 64] |= 1 << (op % 64);
            if cache.insert((bits.clone(), ns)) {
                stack.push((op, state, skip));
                state = ns;
                unlink(&mut next, &mut prev, call_node[op]);
                unlink(&mut next, &mut prev, ret_node[op]);
                if stack.len() > best {
                    best = stack.len();
                }
                cur = next[0];
                placed = true;
                break;
            }
            bits[op / 64] &= !(1 << (op % 64));
        }
        if !placed {
            if stack.len() >= best {
                stuck_at = entry.record;
            }
            cur = next[cur];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(process: usize, op: Op, t: (u64, u64), outcome: Outcome, result: Option<State>) -> Record {
        Record {
            process,
            node: 0,
            attempts: 1,
            op,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            result,
            error: None,
        }
    }

    const INIT: State = (0, 15);

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            rec(0, Op::Write { value: 1 }, (0, 10), Outcome::Ok, Some((1, 1))),
            rec(0, Op::Read, (20, 30), Outcome::Ok, Some((1, 1))),
            rec(0, Op::Cas { expected: 1, value: 2 }, (40, 50), Outcome::Ok, Some((2, 2))),
            rec(0, Op::Read, (60, 70), Outcome::Ok, Some((2, 2))),
        ];
        assert_eq!(check(&h, INIT), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            rec(0, Op::Write { value: 1 }, (0, 10), Outcome::Ok, Some((1, 1))),
            rec(1, Op::Read, (20, 30), Outcome::Ok, Some((0, 15))),
        ];
        assert!(matches!(check(&h, INIT), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        let h = vec![
            rec(0, Op::Write { value: 1 }, (0, 100), Outcome::Ok, Some((2, 1))),
            rec(1, Op::Write { value: 2 }, (10, 90), Outcome::Ok, Some((1, 2))),
            rec(2, Op::Read, (20, 80), Outcome::Ok, Some((1, 2))),
        ];
        assert_eq!(check(&h, INIT), Verdict::Linearizable);
    }

    #[test]
    fn two_cas_from_the_same_revision_cannot_both_succeed() {
        let h = vec![
            rec(0, Op::Cas { expected: 0, value: 1 }, (0, 100), Outcome::Ok, Some((1, 1))),
            rec(1, Op::Cas { expected: 0, value: 2 }, (0, 100), Outcome::Ok, Some((1, 2))),
        ];
        assert!(matches!(check(&h, INIT), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = vec![
            rec(0, Op::Write { value: 7 }, (0, 10), Outcome::Ok, Some((1, 7))),
            rec(1, Op::Read, (20, 30), Outcome::Ok, Some((0, 15))),
            rec(1, Op::Read, (40, 50), Outcome::Ok, Some((1, 7))),
        ];
        assert!(matches!(check(&h, INIT), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn unknown_operations_may_or_may_not_apply() {
        let applied = vec![
            rec(0, Op::Write { value: 9 }, (0, 10), Outcome::Info, None),
            rec(1, Op::Read, (20, 30), Outcome::Ok, Some((1, 9))),
        ];
        assert_eq!(check(&applied, INIT), Verdict::Linearizable);
        let not_applied = vec![
            rec(0, Op::Write { value: 9 }, (0, 10), Outcome::Info, None),
            rec(1, Op::Read, (20, 30), Outcome::Ok, Some((0, 15))),
            rec(1, Op::Read, (40, 50), Outcome::Ok, Some((1, 9))),
        ];
        assert_eq!(check(&not_applied, INIT), Verdict::Linearizable, "it may apply late");
        // a 412 for expected revision 0 means the revision was not 0 then; a later read of
        // revision 0 contradicts it, whatever the unknown write did
        let mut refused = rec(2, Op::Cas { expected: 0, value: 3 }, (35, 36), Outcome::Fail, None);
        refused.error = Some("revision_mismatch".into());
        let h = vec![
            rec(0, Op::Write { value: 9 }, (0, 10), Outcome::Info, None),
            refused,
            rec(1, Op::Read, (40, 50), Outcome::Ok, Some((0, 15))),
        ];
        assert!(matches!(check(&h, INIT), Verdict::NotLinearizable { .. }));
    }

    proptest::proptest! {
        /// Histories produced by a sequential execution with random overlap are linearizable.
        #[test]
        fn histories_of_a_real_register_are_linearizable(ops in proptest::collection::vec((0u8..3, 0u32..5, 0u64..3), 1..40)) {
            let mut state = INIT;
            let mut h = Vec::new();
            for (i, (kind, v, slack)) in ops.iter().enumerate() {
                let t = i as u64 * 10;
                let (op, result) = match kind {
                    0 => (Op::Read, Some(state)),
                    1 => { state = (state.0 + 1, *v); (Op::Write { value: *v }, Some(state)) }
                    _ => { let e = state.0; state = (state.0 + 1, *v); (Op::Cas { expected: e, value: *v }, Some(state)) }
                };
                // overlap with neighbours without changing the real order's validity
                h.push(rec(i % 4, op, (t, t + 5 + slack), Outcome::Ok, result));
            }
            proptest::prop_assert_eq!(check(&h, INIT), Verdict::Linearizable);
        }
    }
}
