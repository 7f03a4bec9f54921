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

mod faults;
mod history;
mod linearizable;
mod lost;
mod proxy;

pub use faults::{apply as apply_fault, status, FaultError, MemberProcess, ProcessFault};
pub use history::{History, Op, OpKind, Outcome};
pub use linearizable::{check_key, check_linearizable, Violation};
pub use lost::{lost_writes, LostWrite};
pub use proxy::{Faults, LinkFaults, Proxy};
