//! keelson-chaos: break a running cluster on purpose and prove what happened. This crate drives
//! the cluster from outside (processes, links, HTTP); it never reaches into the runtime.
//!
//! ```text
//! scenario (TOML) ─▶ runner ─┬─ workload ──HTTP──▶ gateway    ──▶ History ─┬─▶ lost_writes
//!                            ├─ faults: process signals (run file)          └─▶ linearizable
//!                            │          link faults (control ─▶ proxies)
//!                            ├─ probes: one write per affected shard until it is served again
//!                            └─ observer: views, shard map, CPU, duplicate primaries
//!                  ─▶ stats (per second, per phase, per fault) ─▶ gates ─▶ Report
//!                  ─▶ render: report.json, report.md, chart (SVG)
//! ```
//!
//! - `faults`: kill, freeze, thaw, restart members found through `keelson up`'s run file.
//! - `proxy`, `links`, `control`: a fault-injecting TCP proxy per (member, node) link under
//!   `keelson up --chaos`, the per-direction fault table, and the HTTP control that sets it.
//! - `scenario`: the scenario file; `scenario/validate.rs`: its rules.
//! - `workload`, `observer`, `runner`: running a scenario; `stats`: its figures. The runner's
//!   steps: `cluster` (settle, probe keys, names), `clock` (workload, observer, progress),
//!   `inject` and `probe` (the fault schedule), `timeline` and `verdict` (the report).
//! - `history`, `lost`, `linearizable`: the operation history and its checkers.
//! - `report`, `render`, `chart`: the report and its files.

mod chart;
mod control;
mod faults;
mod history;
mod linearizable;
mod links;
mod lost;
mod observer;
mod proxy;
mod render;
mod report;
mod runner;
mod scenario;
mod stats;
mod workload;

pub use control::{
    Authorize, LatencyRequest, LinkClient, LinkControl, LinkMember, LinkState, PartitionRequest,
};
pub use faults::{
    apply as apply_fault, read_run_file, status, wait_exited, FaultError, MemberProcess,
    ProcessFault, RunFile, RunMember,
};
pub use history::{History, Op, OpKind, Outcome};
pub use linearizable::{check_key, check_linearizable, Violation};
pub use links::{LinkError, LinkFault, LinkTable};
pub use lost::{lost_writes, LostWrite};
pub use proxy::{Faults, LinkFaults, Proxy};
pub use render::{markdown, write_report, Written};
pub use report::{
    Checks, FaultReport, Gate, Phase, Report, Second, Spread, Stage, Totals, Verdict,
    REPORT_VERSION,
};
pub use runner::{run as run_scenario, Progress, RunError, Target};
pub use scenario::{Action, FaultSpec, Gates, Mix, OpChoice, Scenario, ScenarioError, Workload};
pub use workload::Gateway;
