//! keelson-chaos: break a running cluster on purpose and prove what happened. This crate drives
//! the cluster from outside; it never reaches into the runtime.
//!
//! ```text
//! workload ──records──▶ History (one Op per request: invoke, complete, key, value, outcome)
//!                          │
//!                          ├─▶ lost_writes      every acknowledged write is there at the end
//!                          └─▶ linearizable     per-key register history has a legal order
//! ```
//!
//!
//! faults: kill, freeze, thaw and restart members of a cluster started by `keelson up`, found
//! through its run file.
//!
//! proxy: a fault-injecting TCP proxy (latency with jitter, one-way or symmetric partitions).
//!
//! So far: the history, its checkers and the proxy. The fault commands, scenarios and reports
//! come next.

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
    LatencyRequest, LinkClient, LinkControl, LinkMember, LinkState, PartitionRequest,
};
pub use faults::{
    apply as apply_fault, read_run_file, status, FaultError, MemberProcess, ProcessFault, RunFile,
    RunMember,
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
