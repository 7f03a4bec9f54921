//! What a scenario run found: the data behind `report.json`, `report.md` and `chart.svg`.
//! The runner fills it; `render` and `chart` turn it into files. All times are milliseconds from
//! the start of the workload unless a field says otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the `report.json` layout.
pub const REPORT_VERSION: u32 = 1;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Layout version ([`REPORT_VERSION`]).
    pub version: u32,
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Wall-clock start of the workload, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long the workload ran, seconds.
    pub duration_s: f64,
    /// Pass or fail, gate by gate.
    pub verdict: Verdict,
    /// Whole-run figures.
    pub totals: Totals,
    /// One entry per second of the workload.
    pub seconds: Vec<Second>,
    /// One entry per scheduled fault, in schedule order.
    pub faults: Vec<FaultReport>,
    /// Stretches between faults (the latency sweep's table).
    pub phases: Vec<Phase>,
    /// Correctness checks on the history.
    pub checks: Checks,
    /// Recovery times over every fault that has one.
    pub recovery: Option<Spread>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every gate passed.
    pub passed: bool,
    /// Each gate.
    pub gates: Vec<Gate>,
}

/// One pass/fail gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// e.g. `min_availability`.
    pub name: String,
    /// The limit, for a person (e.g. `>= 0.95`).
    pub limit: String,
    /// What was measured (e.g. `0.987`).
    pub actual: String,
    /// Whether it held.
    pub passed: bool,
}

/// Whole-run figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Operations sent.
    pub attempted: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations refused (did not happen).
    pub failed: u64,
    /// Operations of unknown outcome (timeouts, lost connections).
    pub unknown: u64,
    /// `ok / attempted` (1.0 when nothing was attempted).
    pub availability: f64,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Reads answered.
    pub reads_ok: u64,
    /// Latency of successful operations, median.
    pub p50_ms: f64,
    /// Latency of successful operations, 99th percentile.
    pub p99_ms: f64,
    /// Successful operations per second over the run.
    pub throughput: f64,
}

/// One second of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start (operations that began in `[t, t+1)`).
    pub t: u32,
    /// Operations begun.
    pub attempted: u64,
    /// Of those, succeeded.
    pub ok: u64,
    /// Of those, failed or of unknown outcome.
    pub errors: u64,
    /// `ok / attempted` (1.0 when nothing was attempted).
    pub availability: f64,
    /// Median latency of the successful ones.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the successful ones.
    pub p99_ms: Option<f64>,
}

/// One scheduled fault and what followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// When it was applied.
    pub at_ms: u64,
    /// `kill`, `freeze`, `thaw`, `restart`, `partition`, `heal`, `latency`.
    pub action: String,
    /// What it hit, for a person (e.g. `n2 (primary of shard 17)`, `n1 | n2 n3 n4 gateway`).
    pub target: String,
    /// Shards whose primary it took away (those recovery waits for).
    pub shards_affected: u32,
    /// Fault to the target first marked down by any observer.
    pub detection_ms: Option<u64>,
    /// Fault to every affected shard serving a write again.
    pub recovery_ms: Option<u64>,
    /// Stages in time order: `suspected`, `marked down`, `promoted`, `first success`,
    /// `recovered`, `back up`.
    pub stages: Vec<Stage>,
    /// Anything the runner wants a reader to know (e.g. `recovery not seen within 30 s`).
    pub note: Option<String>,
}

/// One stage of a fault's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Milliseconds after the fault.
    pub after_ms: u64,
}

/// A stretch of the run between two faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// e.g. `baseline`, `latency 25 ms`, `after kill n2`.
    pub name: String,
    /// Start.
    pub from_ms: u64,
    /// End.
    pub to_ms: u64,
    /// Operations begun in it.
    pub attempted: u64,
    /// `ok / attempted`.
    pub availability: f64,
    /// Mean latency of successful operations.
    pub mean_ms: Option<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// CPU used by each node process over the phase, percent of one core.
    pub node_cpu_pct: BTreeMap<String, f64>,
}

/// Correctness checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// Keys read back at the end.
    pub keys_checked: u64,
    /// Acknowledged writes missing at the end, one line each.
    pub lost_writes: Vec<String>,
    /// Operations in the history given to the linearizability checker.
    pub ops_checked: u64,
    /// Every key's history is linearizable.
    pub linearizable: bool,
    /// Violations, one line each with the operation ids.
    pub violations: Vec<String>,
    /// Increase of `keelson_duplicate_primary_total` over the run, summed over nodes.
    pub duplicate_primaries: u64,
}

/// Distribution of a duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Samples.
    pub count: u32,
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile (nearest rank).
    pub p99_ms: u64,
    /// Largest.
    pub max_ms: u64,
}
