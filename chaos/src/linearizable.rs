//! Per-key linearizability of a register history (Wing & Gong's search with memoisation, as in
//! Knossos and Porcupine). Keys are independent registers, so each key is checked on its own.
//!
//! An operation can be placed next only if no other unplaced operation completed before it was
//! invoked. A read must see the value of the last placed write (`0` before any). Writes of
//! unknown outcome may be placed at any point after their invocation, or never; failed
//! operations and unanswered reads carry no information and are left out.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::history::{History, Op, OpKind, Outcome};

/// Why a key's history is not linearizable, or could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The register.
    pub key: String,
    /// The operations that could not be placed at the furthest point the search reached.
    pub ops: Vec<usize>,
    /// What went wrong, for a person.
    pub explanation: String,
    /// True when the search gave up (too many states) rather than proving a violation.
    pub inconclusive: bool,
}

const MAX_STATES: usize = 2_000_000;

#[derive(Clone, Copy)]
struct Entry {
    id: usize,
    write: Option<u64>,
    read: Option<u64>,
    invoke: u64,
    complete: u64,
    required: bool,
}

/// Checks every key; returns the violations (empty when the whole history is linearizable).
pub fn check_linearizable(history: &History) -> Vec<Violation> {
    history
        .keys()
        .into_iter()
        .filter_map(|k| check_key(k, &history.of_key(k).collect::<Vec<_>>()).err())
        .collect()
}

impl Entry {
    /// What the search needs of one operation, or `None` when it carries no information:
    /// failed operations and unanswered reads.
    fn of(o: &Op) -> Option<Entry> {
        let (write, read, complete, required) = match (&o.kind, o.outcome) {
            (_, Outcome::Failed) | (OpKind::Read(_), Outcome::Unknown) => return None,
            // A write of unknown outcome may take effect any time after it began, or never.
            (OpKind::Write(v), Outcome::Unknown) => (Some(*v), None, u64::MAX, false),
            (OpKind::Write(v), Outcome::Ok) => (Some(*v), None, o.complete_us, true),
            (OpKind::Read(v), Outcome::Ok) => (None, Some(*v), o.complete_us, true),
        };
        Some(Entry {
            id: o.id,
            write,
            read,
            invoke: o.invoke_us,
            complete,
            required,
        })
    }
}

/// A point of the search: which entries are placed (a bit set), the register's value then,
/// and how many required entries are placed.
type Point = (Vec<u64>, u64, usize);

/// The furthest point the search reached where some entry could not be placed.
struct Furthest {
    placed: usize,
    stuck: Vec<usize>,
    value: u64,
}

/// Checks one key's operations.
pub fn check_key(key: &str, ops: &[&Op]) -> Result<(), Violation> {
    let mut entries: Vec<Entry> = ops.iter().filter_map(|o| Entry::of(o)).collect();
    entries.sort_by_key(|e| (e.invoke, e.complete));
    let n = entries.len();
    let words = n.div_ceil(64).max(1);
    let required = entries.iter().filter(|e| e.required).count();
    let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<Point> = vec![(vec![0u64; words], 0u64, 0usize)];
    let mut best = Furthest {
        placed: 0,
        stuck: Vec::new(),
        value: 0,
    };
    while let Some((placed, value, done)) = stack.pop() {
        if done == required {
            return Ok(());
        }
        if !seen.insert((placed.clone(), value)) {
            continue;
        }
        if seen.len() > MAX_STATES {
            return Err(Violation {
                key: key.to_string(),
                ops: Vec::new(),
                explanation: format!("gave up after {MAX_STATES} states"),
                inconclusive: true,
            });
        }
        let stuck = step(&entries, (placed, value, done), &mut stack);
        if done >= best.placed && !stuck.is_empty() {
            best = Furthest {
                placed: done,
                stuck,
                value,
            };
        }
    }
    let Furthest {
        placed,
        stuck,
        value,
    } = best;
    Err(Violation {
        key: key.to_string(),
        explanation: format!(
            "after {placed} of {required} operations could be ordered, the register held {value} and no order lets operation(s) {stuck:?} read what they read"
        ),
        ops: stuck,
        inconclusive: false,
    })
}

/// Pushes every point reachable by placing one more entry; returns the ids of the reads that
/// could have gone next but saw another value.
fn step(entries: &[Entry], (placed, value, done): Point, stack: &mut Vec<Point>) -> Vec<usize> {
    let n = entries.len();
    let is_placed = |i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
    // Nothing may go before an unplaced operation that completed before it began.
    let horizon = (0..n)
        .filter(|i| !is_placed(*i))
        .map(|i| entries[i].complete)
        .min()
        .unwrap_or(u64::MAX);
    let mut stuck = Vec::new();
    for i in (0..n).filter(|i| !is_placed(*i) && entries[*i].invoke <= horizon) {
        let e = entries[i];
        let next = match (e.write, e.read) {
            (Some(w), _) => w,
            (None, Some(r)) if r == value => value,
            _ => {
                stuck.push(e.id);
                continue;
            }
        };
        let mut p = placed.clone();
        p[i / 64] |= 1 << (i % 64);
        stack.push((p, next, done + usize::from(e.required)));
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome::{Failed, Ok as Acked, Unknown};

    fn history(ops: &[(OpKind, u64, u64, Outcome)]) -> History {
        let mut h = History::default();
        for (kind, a, b, o) in ops {
            h.push("k", kind.clone(), *a, *b, *o);
        }
        h
    }

    fn w(v: u64) -> OpKind {
        OpKind::Write(v)
    }

    fn r(v: u64) -> OpKind {
        OpKind::Read(v)
    }

    #[test]
    fn sequential_and_concurrent_good_histories_pass() {
        let good = [
            history(&[
                (w(1), 0, 10, Acked),
                (r(1), 20, 30, Acked),
                (w(2), 40, 50, Acked),
                (r(2), 60, 70, Acked),
            ]),
            // A read concurrent with a write may see either value.
            history(&[
                (w(1), 0, 10, Acked),
                (w(2), 20, 60, Acked),
                (r(1), 30, 40, Acked),
                (r(2), 45, 50, Acked),
            ]),
            // Reads before any write see the initial value.
            history(&[(r(0), 0, 5, Acked), (w(1), 10, 20, Acked)]),
            // A write of unknown outcome may apply late, or never.
            history(&[
                (w(1), 0, 10, Acked),
                (w(2), 20, 30, Unknown),
                (r(1), 40, 50, Acked),
                (r(2), 60, 70, Acked),
            ]),
            history(&[
                (w(1), 0, 10, Acked),
                (w(2), 20, 30, Unknown),
                (r(1), 40, 50, Acked),
            ]),
            // Failed writes never happened.
            history(&[
                (w(1), 0, 10, Acked),
                (w(2), 20, 30, Failed),
                (r(1), 40, 50, Acked),
            ]),
        ];
        for (i, h) in good.iter().enumerate() {
            assert_eq!(check_linearizable(h), vec![], "history {i}");
        }
    }

    #[test]
    fn a_stale_read_is_caught_and_named() {
        let h = history(&[
            (w(1), 0, 10, Acked),
            (w(2), 20, 30, Acked),
            (r(1), 40, 50, Acked),
        ]);
        let v = check_linearizable(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![2], "{v:?}");
        assert!(!v[0].inconclusive);
        assert!(v[0].explanation.contains("[2]"), "{}", v[0].explanation);
    }

    #[test]
    fn a_lost_write_read_back_as_the_old_value_is_caught() {
        let h = history(&[(w(5), 0, 10, Acked), (r(0), 20, 30, Acked)]);
        let v = check_linearizable(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![1]);
    }

    #[test]
    fn a_non_linearizable_interleaving_is_caught() {
        // Two reads, both after both writes completed, disagree about which write came last.
        let h = history(&[
            (w(1), 0, 10, Acked),
            (w(2), 0, 10, Acked),
            (r(1), 20, 30, Acked),
            (r(2), 40, 50, Acked),
            (r(1), 60, 70, Acked),
        ]);
        let v = check_linearizable(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(!v[0].ops.is_empty());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let h = history(&[(w(1), 0, 10, Acked), (r(9), 20, 30, Acked)]);
        assert_eq!(check_linearizable(&h)[0].ops, vec![1]);
    }

    #[test]
    fn keys_are_independent() {
        let mut h = History::default();
        h.push("a", w(1), 0, 10, Acked);
        h.push("b", w(2), 0, 10, Acked);
        h.push("a", r(1), 20, 30, Acked);
        h.push("b", r(1), 20, 30, Acked);
        let v = check_linearizable(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].key, "b");
    }

    #[test]
    fn long_concurrent_histories_stay_tractable() {
        let mut h = History::default();
        for i in 0..300u64 {
            h.push("k", w(i + 1), i * 10, i * 10 + 25, Acked);
            h.push("k", r(i + 1), i * 10 + 26, i * 10 + 30, Acked);
        }
        assert_eq!(check_linearizable(&h), vec![]);
    }
}
