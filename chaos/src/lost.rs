//! Lost writes: an acknowledged write must be visible at the end, unless a later write to the
//! same key may have replaced it.

use serde::{Deserialize, Serialize};

use crate::history::{History, OpKind, Outcome};

/// An acknowledged write that is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The register.
    pub key: String,
    /// The write's operation id.
    pub op: usize,
    /// The value it wrote.
    pub value: u64,
    /// What the final read saw.
    pub found: u64,
}

/// Compares the final value of every key (`finals`, read after the run settled) with its
/// acknowledged writes. The final value must be the last acknowledged write, or a write that
/// did not complete before that one began (acknowledged or of unknown outcome).
pub fn lost_writes(history: &History, finals: &[(String, u64)]) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for (key, found) in finals {
        let writes: Vec<_> = history
            .of_key(key)
            .filter_map(|o| match o.kind {
                OpKind::Write(v) if o.outcome != Outcome::Failed => Some((o, v)),
                _ => None,
            })
            .collect();
        // The acknowledged write that completed last.
        let Some((last, value)) = writes
            .iter()
            .filter(|(o, _)| o.outcome == Outcome::Ok)
            .max_by_key(|(o, _)| o.complete_us)
            .copied()
        else {
            continue;
        };
        let acceptable = writes.iter().any(|(o, v)| {
            *v == *found
                && (o.id == last.id
                    || o.outcome == Outcome::Unknown
                    || o.complete_us > last.invoke_us)
        });
        if !acceptable {
            lost.push(LostWrite {
                key: key.clone(),
                op: last.id,
                value,
                found: *found,
            });
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ops: &[(&str, OpKind, u64, u64, Outcome)]) -> History {
        let mut h = History::default();
        for (k, kind, a, b, o) in ops {
            h.push(k, kind.clone(), *a, *b, *o);
        }
        h
    }

    #[test]
    fn the_last_acknowledged_write_must_survive() {
        let hist = h(&[
            ("a", OpKind::Write(1), 0, 10, Outcome::Ok),
            ("a", OpKind::Write(2), 20, 30, Outcome::Ok),
            ("b", OpKind::Write(7), 0, 10, Outcome::Ok),
        ]);
        assert!(lost_writes(&hist, &[("a".into(), 2), ("b".into(), 7)]).is_empty());
        let lost = lost_writes(&hist, &[("a".into(), 1), ("b".into(), 7)]);
        assert_eq!(
            lost,
            vec![LostWrite {
                key: "a".into(),
                op: 1,
                value: 2,
                found: 1
            }]
        );
    }

    #[test]
    fn a_concurrent_or_unknown_later_write_may_win() {
        let hist = h(&[
            ("a", OpKind::Write(1), 0, 50, Outcome::Ok),
            ("a", OpKind::Write(2), 10, 40, Outcome::Ok),
            ("a", OpKind::Write(3), 60, 70, Outcome::Unknown),
            ("a", OpKind::Write(4), 60, 70, Outcome::Failed),
        ]);
        assert!(
            lost_writes(&hist, &[("a".into(), 2)]).is_empty(),
            "concurrent with the last ack"
        );
        assert!(
            lost_writes(&hist, &[("a".into(), 3)]).is_empty(),
            "unknown outcome may have applied"
        );
        assert_eq!(
            lost_writes(&hist, &[("a".into(), 4)]).len(),
            1,
            "a failed write never applied"
        );
    }
}
