//! Figures from a history: per-second availability and latency, phases, spreads, and the gates'
//! verdict. Pure functions over the recorded operations.

use std::collections::BTreeMap;

use crate::history::{History, Op, Outcome};
use crate::report::{Checks, FaultReport, Gate, Phase, Second, Spread, Totals, Verdict};
use crate::scenario::Gates;

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn latency_ms(o: &Op) -> f64 {
    o.complete_us.saturating_sub(o.invoke_us) as f64 / 1000.0
}

fn sorted_latencies<'a>(ops: impl Iterator<Item = &'a Op>) -> Vec<f64> {
    let mut l: Vec<f64> = ops
        .filter(|o| o.outcome == Outcome::Ok)
        .map(latency_ms)
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

fn ratio(ok: u64, attempted: u64) -> f64 {
    if attempted == 0 {
        1.0
    } else {
        ok as f64 / attempted as f64
    }
}

/// One entry per second of `duration_s`, by the second each operation began in.
pub fn seconds(history: &History, duration_s: u64) -> Vec<Second> {
    let mut buckets: Vec<Vec<&Op>> = vec![Vec::new(); duration_s as usize];
    for o in &history.ops {
        let t = (o.invoke_us / 1_000_000) as usize;
        if let Some(b) = buckets.get_mut(t) {
            b.push(o);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(t, ops)| {
            let attempted = ops.len() as u64;
            let ok = ops.iter().filter(|o| o.outcome == Outcome::Ok).count() as u64;
            let l = sorted_latencies(ops.iter().copied());
            Second {
                t: t as u32,
                attempted,
                ok,
                errors: attempted - ok,
                availability: ratio(ok, attempted),
                p50_ms: percentile(&l, 0.5),
                p99_ms: percentile(&l, 0.99),
            }
        })
        .collect()
}

/// Whole-run figures; `writes` tells which operations were writes.
pub fn totals(history: &History, duration_s: f64) -> Totals {
    let attempted = history.ops.len() as u64;
    let count = |f: &dyn Fn(&Op) -> bool| history.ops.iter().filter(|o| f(o)).count() as u64;
    let ok = count(&|o| o.outcome == Outcome::Ok);
    let l = sorted_latencies(history.ops.iter());
    Totals {
        attempted,
        ok,
        failed: count(&|o| o.outcome == Outcome::Failed),
        unknown: count(&|o| o.outcome == Outcome::Unknown),
        availability: ratio(ok, attempted),
        writes_acked: count(&|o| o.outcome == Outcome::Ok && o.kind.is_write()),
        reads_ok: count(&|o| o.outcome == Outcome::Ok && !o.kind.is_write()),
        p50_ms: percentile(&l, 0.5).unwrap_or(0.0),
        p99_ms: percentile(&l, 0.99).unwrap_or(0.0),
        throughput: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
    }
}

/// Figures for the operations begun in `[from_ms, to_ms)`.
pub fn phase(
    history: &History,
    name: &str,
    from_ms: u64,
    to_ms: u64,
    node_cpu_pct: BTreeMap<String, f64>,
) -> Phase {
    let ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|o| (from_ms * 1000..to_ms * 1000).contains(&o.invoke_us))
        .collect();
    let attempted = ops.len() as u64;
    let l = sorted_latencies(ops.iter().copied());
    Phase {
        name: name.to_string(),
        from_ms,
        to_ms,
        attempted,
        availability: ratio(l.len() as u64, attempted),
        mean_ms: (!l.is_empty()).then(|| l.iter().sum::<f64>() / l.len() as f64),
        p50_ms: percentile(&l, 0.5),
        p99_ms: percentile(&l, 0.99),
        node_cpu_pct,
    }
}

/// Distribution of durations, if any.
pub fn spread(samples: &[u64]) -> Option<Spread> {
    let mut s = samples.to_vec();
    s.sort_unstable();
    Some(Spread {
        count: s.len() as u32,
        p50_ms: percentile(&s, 0.5)?,
        p99_ms: percentile(&s, 0.99)?,
        max_ms: *s.last()?,
    })
}

/// The worst of one timing over the faults that should have it, and whether it is within
/// `max`. A fault that took primaries away but was never detected or recovered from fails.
fn worst_timing(
    faults: &[FaultReport],
    max: u64,
    which: fn(&FaultReport) -> Option<u64>,
    never: &str,
) -> (String, bool) {
    let relevant: Vec<&FaultReport> = faults
        .iter()
        .filter(|f| {
            matches!(
                f.action.as_str(),
                "kill" | "freeze" | "restart" | "partition"
            ) && f.shards_affected > 0
                || which(f).is_some()
        })
        .collect();
    let missing = relevant.iter().any(|f| which(f).is_none());
    let worst = relevant.iter().filter_map(|f| which(f)).max();
    match (missing, worst) {
        (true, _) => (never.to_string(), false),
        (false, Some(w)) => (w.to_string(), w <= max),
        (false, None) => ("no faults".to_string(), true),
    }
}

/// Judges the run against the scenario's gates.
pub fn verdict(gates: &Gates, totals: &Totals, faults: &[FaultReport], checks: &Checks) -> Verdict {
    let mut out = Vec::new();
    let mut gate = |name: &str, limit: String, actual: String, passed: bool| {
        out.push(Gate {
            name: name.to_string(),
            limit,
            actual,
            passed,
        })
    };
    if let Some(min) = gates.min_availability {
        gate(
            "min_availability",
            format!(">= {min}"),
            format!("{:.4}", totals.availability),
            totals.availability >= min,
        );
    }
    if let Some(max) = gates.max_p99_ms {
        gate(
            "max_p99_ms",
            format!("<= {max}"),
            format!("{:.1}", totals.p99_ms),
            totals.p99_ms <= max,
        );
    }
    if let Some(max) = gates.max_detection_ms {
        let (actual, passed) = worst_timing(faults, max, |f| f.detection_ms, "not detected");
        gate("max_detection_ms", format!("<= {max}"), actual, passed);
    }
    if let Some(max) = gates.max_recovery_ms {
        let (actual, passed) = worst_timing(faults, max, |f| f.recovery_ms, "did not recover");
        gate("max_recovery_ms", format!("<= {max}"), actual, passed);
    }
    let lost = checks.lost_writes.len() as u64;
    gate(
        "max_lost_writes",
        format!("<= {}", gates.max_lost_writes),
        lost.to_string(),
        lost <= gates.max_lost_writes,
    );
    if gates.require_linearizable {
        gate(
            "linearizable",
            "every key".to_string(),
            if checks.linearizable {
                "yes".to_string()
            } else {
                format!("{} violations", checks.violations.len())
            },
            checks.linearizable,
        );
    }
    gate(
        "max_duplicate_primaries",
        format!("<= {}", gates.max_duplicate_primaries),
        checks.duplicate_primaries.to_string(),
        checks.duplicate_primaries <= gates.max_duplicate_primaries,
    );
    Verdict {
        passed: out.iter().all(|g| g.passed),
        gates: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpKind;

    fn history() -> History {
        let mut h = History::default();
        // Second 0: 3 ok (1, 2, 3 ms); second 1: 1 ok (10 ms) + 1 unknown.
        h.push("a", OpKind::Write(1), 0, 1_000, Outcome::Ok);
        h.push("a", OpKind::Read(1), 100_000, 102_000, Outcome::Ok);
        h.push("b", OpKind::Write(1), 200_000, 203_000, Outcome::Ok);
        h.push("b", OpKind::Write(2), 1_100_000, 1_110_000, Outcome::Ok);
        h.push(
            "b",
            OpKind::Write(3),
            1_200_000,
            6_200_000,
            Outcome::Unknown,
        );
        h
    }

    #[test]
    fn seconds_bucket_by_start_and_count_errors() {
        let s = seconds(&history(), 3);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].attempted, s[0].ok, s[0].errors), (3, 3, 0));
        assert_eq!(s[0].p50_ms, Some(2.0));
        assert_eq!(s[0].p99_ms, Some(3.0));
        assert_eq!((s[1].attempted, s[1].ok, s[1].errors), (2, 1, 1));
        assert_eq!(s[1].availability, 0.5);
        assert_eq!(
            s[2].availability, 1.0,
            "nothing attempted counts as available"
        );
        assert_eq!(s[2].p50_ms, None);
    }

    #[test]
    fn totals_and_phases_count_only_successes_in_latency() {
        let t = totals(&history(), 2.0);
        assert_eq!((t.attempted, t.ok, t.unknown, t.failed), (5, 4, 1, 0));
        assert_eq!((t.writes_acked, t.reads_ok), (3, 1));
        assert_eq!(t.availability, 0.8);
        assert_eq!(t.p99_ms, 10.0);
        let p = phase(&history(), "late", 1_000, 2_000, BTreeMap::new());
        assert_eq!(p.attempted, 2);
        assert_eq!(p.mean_ms, Some(10.0));
    }

    #[test]
    fn percentiles_and_spreads_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile::<u64>(&[], 0.5), None);
        let s = spread(&[700, 600, 650]).unwrap();
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms, s.count), (650, 700, 700, 3));
        assert_eq!(spread(&[]), None);
    }

    fn fault(recovery: Option<u64>) -> FaultReport {
        FaultReport {
            at_ms: 10_000,
            action: "kill".into(),
            target: "n2".into(),
            shards_affected: 60,
            detection_ms: Some(3),
            recovery_ms: recovery,
            stages: vec![],
            note: None,
        }
    }

    #[test]
    fn the_verdict_fails_on_any_broken_gate_and_on_a_fault_that_never_recovered() {
        let gates = Gates {
            min_availability: Some(0.7),
            max_recovery_ms: Some(3000),
            ..Gates::default()
        };
        let t = totals(&history(), 2.0);
        let clean = Checks {
            keys_checked: 2,
            lost_writes: vec![],
            ops_checked: 5,
            linearizable: true,
            violations: vec![],
            duplicate_primaries: 0,
        };
        assert!(verdict(&gates, &t, &[fault(Some(700))], &clean).passed);
        let v = verdict(&gates, &t, &[fault(None)], &clean);
        assert!(!v.passed);
        let g = v
            .gates
            .iter()
            .find(|g| g.name == "max_recovery_ms")
            .unwrap();
        assert_eq!(g.actual, "did not recover");
        let lost = Checks {
            lost_writes: vec!["b: w2 acknowledged, found w1".into()],
            ..clean.clone()
        };
        let v = verdict(&gates, &t, &[fault(Some(700))], &lost);
        assert_eq!(
            v.gates
                .iter()
                .filter(|g| !g.passed)
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            vec!["max_lost_writes"]
        );
        let strict = Gates {
            min_availability: Some(0.9),
            ..gates
        };
        assert!(!verdict(&strict, &t, &[], &clean).passed);
    }
}
