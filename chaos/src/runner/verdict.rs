//! After the run: read every key back, check the history (lost writes, linearizability), draw
//! each fault's timeline, cut the run into phases, and judge it against the gates.
//!
//! ```text
//! keys ─read back─▶ finals ─┬─ lost_writes(history, finals) ─┐
//! history ──────────────────┴─ check_linearizable(history) ──┴─▶ Checks
//! Applied ─timeline─▶ FaultReports ─▶ phases, recovery spread ─┐
//! Checks + totals + FaultReports ─▶ stats::verdict (+ settled) ─┴─▶ Report
//! ```

use std::time::{Duration, Instant};

use super::clock::Clock;
use super::inject::Applied;
use super::timeline::timeline;
use crate::linearizable::check_linearizable;
use crate::lost::lost_writes;
use crate::report::{Checks, FaultReport, Gate, Phase, Report, REPORT_VERSION};
use crate::scenario::Scenario;
use crate::stats;
use crate::workload::Gateway;

/// Reads every key back (each retried for up to 30 s); `None` for a key that never answered.
async fn read_back(gateway: &Gateway, keys: &[(String, u32)]) -> Vec<(String, Option<u64>)> {
    let mut finals = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(32) {
        let values = futures_util::future::join_all(chunk.iter().map(|(k, _)| async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(v) = gateway.read(k).await {
                    return (k.clone(), Some(v));
                }
                if Instant::now() > deadline {
                    return (k.clone(), None);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
        .await;
        finals.extend(values);
    }
    finals
}

/// The history checks: every key read back against what was acknowledged, and every key's
/// history for linearizability.
pub(super) async fn checks(clock: &Clock, gateway: &Gateway) -> Checks {
    let checked = clock.load.history_with_preload();
    let finals = read_back(gateway, &clock.load.keys()).await;
    let unreadable: Vec<String> = finals
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| format!("{k}: unreadable after the run"))
        .collect();
    let finals: Vec<(String, u64)> = finals
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let mut lost: Vec<String> = lost_writes(&checked, &finals)
        .into_iter()
        .map(|l| {
            format!(
                "{}: w{} acknowledged (op {}), found w{}",
                l.key, l.value, l.op, l.found
            )
        })
        .collect();
    lost.extend(unreadable);
    let violations: Vec<String> = check_linearizable(&checked)
        .into_iter()
        .map(|v| format!("{}: {} (ops {:?})", v.key, v.explanation, v.ops))
        .collect();
    Checks {
        keys_checked: finals.len() as u64,
        lost_writes: lost,
        ops_checked: checked.ops.len() as u64,
        linearizable: violations.is_empty(),
        violations,
        duplicate_primaries: clock.observer.duplicate_primaries(),
    }
}

/// What the run ended with, ready to be judged.
pub(super) struct Finished<'a> {
    pub(super) scenario: &'a Scenario,
    pub(super) clock: &'a Clock,
    pub(super) applied: &'a [Applied],
    pub(super) checks: Checks,
    /// Whether the cluster settled after the run, or what it looked like when it did not.
    pub(super) settled: Result<(), String>,
    pub(super) duration_ms: u64,
}

impl Finished<'_> {
    /// Timelines, phases and gates: the report.
    pub(super) fn report(self) -> Report {
        let history = self.clock.load.history();
        let changes = self.clock.observer.changes();
        let maps = self.clock.observer.maps();
        let faults: Vec<FaultReport> = self
            .applied
            .iter()
            .map(|a| timeline(a, &changes, &maps, self.duration_ms))
            .collect();
        let recovery = stats::spread(
            &faults
                .iter()
                .filter_map(|f| f.recovery_ms)
                .collect::<Vec<_>>(),
        );
        let phases = self.phases(&history, &faults);
        let totals = stats::totals(&history, self.scenario.duration_s as f64);
        let mut verdict = stats::verdict(&self.scenario.gates, &totals, &faults, &self.checks);
        if let Err(why) = self.settled {
            verdict.passed = false;
            verdict.gates.push(Gate {
                name: "settled".to_string(),
                limit: "every node up and every shard fully replicated within 60 s".to_string(),
                actual: why,
                passed: false,
            });
        }
        Report {
            version: REPORT_VERSION,
            scenario: self.scenario.name.clone(),
            description: self.scenario.description.clone(),
            started_unix_ms: self.clock.started_unix_ms,
            duration_s: self.duration_ms as f64 / 1000.0,
            verdict,
            totals,
            seconds: stats::seconds(&history, self.scenario.duration_s),
            faults,
            phases,
            checks: self.checks,
            recovery,
        }
    }

    /// The baseline, then one phase from each fault to the next (the last to the end).
    fn phases(&self, history: &crate::history::History, faults: &[FaultReport]) -> Vec<Phase> {
        let mut bounds: Vec<(String, u64)> = vec![("baseline".to_string(), 0)];
        for f in faults {
            bounds.push((format!("{} {}", f.action, f.target), f.at_ms));
        }
        bounds
            .iter()
            .enumerate()
            .map(|(i, (name, from))| {
                let to = bounds.get(i + 1).map(|b| b.1).unwrap_or(self.duration_ms);
                let cpu = self.clock.observer.cpu_pct(*from, to);
                stats::phase(history, name, *from, to, cpu)
            })
            .collect()
    }
}
