//! `keelson chaos run`: one scenario against a running cluster, start to verdict.
//!
//! ```text
//! settle (every node up, nothing under-replicated) → create the keys, one probe key per shard
//!   → clock starts: workload + observer ──────────────────────────────┐
//!   → at each fault's time: resolve targets → apply → probe its shards │ history, state changes,
//!   → stop at duration_s → heal links, thaw frozen members            │ maps, CPU, duplicates
//!   → settle → read every key back → lost writes, linearizability ◀────┘
//!   → per second, per phase, per fault (timeline) → gates → Report
//! ```
//!
//! - `cluster`: the cluster from outside: settling, probe keys, names resolved to members.
//! - `clock`: the workload, the observer and the progress ticker, from start to `duration_s`.
//! - `inject`: the fault schedule, each fault applied; `probe`: the recovery probes it starts.
//! - `timeline`: one fault's stages; `verdict`: the checks, the phases, the gates, the report.

mod clock;
mod cluster;
mod inject;
mod probe;
mod timeline;
mod verdict;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::report::Report;
use crate::scenario::Scenario;
use crate::workload::{Gateway, Load};
use clock::Clock;
use cluster::Cluster;

/// The cluster a scenario runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// Gateway name.
    pub gateway: String,
    /// The gateway's API, with credentials and the workload's request timeout.
    pub api: Gateway,
    /// Node names and ops addresses.
    pub nodes: Vec<(String, SocketAddr)>,
    /// Data dir of the running cluster (its run file).
    pub data_dir: PathBuf,
    /// Shard count.
    pub shards: u32,
    /// Heartbeat period.
    pub heartbeat: Duration,
}

/// Why a run could not happen (a failed gate is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster never became healthy enough to start.
    #[error("the cluster is not ready: {0}")]
    NotReady(String),
    /// Link faults asked of a cluster without link proxies, or the like.
    #[error(transparent)]
    Fault(#[from] crate::faults::FaultError),
    /// Setting up the keys failed.
    #[error("setting up the workload failed: {0}")]
    Setup(String),
}

/// Progress callback: (seconds elapsed, operations begun, operations succeeded, last event).
pub type Progress = Box<dyn Fn(u64, u64, u64, Option<String>) + Send + Sync>;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `scenario` against `target` and judges it.
pub async fn run(
    scenario: &Scenario,
    target: &Target,
    progress: Progress,
) -> Result<Report, RunError> {
    let cluster = Cluster::new(scenario, target)?;
    progress(0, 0, 0, Some("waiting for the cluster to settle".into()));
    cluster
        .settle(Duration::from_secs(120))
        .await
        .map_err(RunError::NotReady)?;
    let prefix = format!("x{:x}", now_unix_ms());
    progress(0, 0, 0, Some("creating keys".into()));
    let load = Load::prepare(
        &scenario.workload,
        target.api.clone(),
        &prefix,
        target.shards,
    )
    .await
    .map_err(RunError::Setup)?;
    let probe_keys = cluster.probe_keys(&prefix).await.map_err(RunError::Setup)?;

    let duration = Duration::from_secs(scenario.duration_s);
    let mut clock = Clock::start(target, load, progress, duration);
    let applied = inject::schedule(&cluster, &scenario.faults, &clock, &probe_keys).await;
    let duration_ms = clock.run_out(duration).await;

    clock.event("checking".into());
    let settled = cluster.heal_and_settle().await;
    wait_for_probes(&applied).await;
    clock.observer.stop();

    let checks = verdict::checks(&clock, &cluster.gateway).await;
    Ok(verdict::Finished {
        scenario,
        clock: &clock,
        applied: &applied,
        checks,
        settled,
        duration_ms,
    }
    .report())
}

/// Gives the probes of the last fault their chance (up to 30 s) before the timelines are drawn.
async fn wait_for_probes(applied: &[inject::Applied]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && applied.iter().any(|a| !a.probed()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
