//! A chaos scenario: the TOML file `keelson chaos run <file>` executes. It names a workload
//! driven through the HTTP gateway, a fault schedule, a duration and the gates the run must pass.
//!
//! ```text
//! file ──toml──▶ Scenario ──validate()──▶ every problem, each "<path>: <why>"
//!                    └──check_members(cluster)──▶ every name that is not a member
//! ```
//!
//! Names in `target`, `groups` and `between` are member names, labels bound by an earlier fault,
//! or keywords: `busy-primary` (primary of the shard the workload uses most), `random-node`,
//! `nodes` (every node), `rest` (every member not in the other group) and, for latency only,
//! `all` (every member).
//!
//! This file holds the schema (serde types, `Action::rule`'s field table) and loading;
//! `validate` holds the rules checked on it.

mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Names a label may not take: they already mean something in `target`, `groups` or `between`.
const RESERVED: [&str; 5] = ["busy-primary", "random-node", "rest", "all", "nodes"];

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Lower-case letters, digits and `-`; names the report directory.
    pub name: String,
    /// What the scenario tests, for the report.
    pub description: String,
    /// Seconds of workload, 5..=3600; fault times count from its start.
    pub duration_s: u64,
    /// The load driven through the gateway.
    pub workload: Workload,
    /// The fault schedule, in non-decreasing `at_s` order (`[[fault]]` tables).
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// What the run must achieve to pass.
    #[serde(default)]
    pub gates: Gates,
}

/// `[workload]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Registers created before the clock starts, 1..=100000.
    pub keys: u32,
    /// Concurrent workers, 1..=256.
    pub concurrency: u32,
    /// Target operations per second over all workers, 1..=100000.
    pub rate: u32,
    /// Per-request client timeout, 100..=60000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Relative weights of the operation kinds.
    pub mix: Mix,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// `workload.mix`: relative weights; their sum must be above 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Weight of creating a new register.
    #[serde(default)]
    pub create: u32,
    /// Weight of writing an existing register.
    #[serde(default)]
    pub update: u32,
    /// Weight of reading an existing register.
    #[serde(default)]
    pub read: u32,
}

/// The operation a worker performs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpChoice {
    /// Create a register.
    Create,
    /// Write a register.
    Update,
    /// Read a register.
    Read,
}

impl Mix {
    /// Sum of the weights (saturating; validation refuses a sum past `u32::MAX`).
    pub fn total(&self) -> u32 {
        self.create
            .saturating_add(self.update)
            .saturating_add(self.read)
    }

    /// Maps `r`, uniform in `0..total()`, to an operation: create's range first, then update's,
    /// then read's. Values past the end pick `Read`.
    pub fn pick(&self, r: u32) -> OpChoice {
        if r < self.create {
            OpChoice::Create
        } else if r - self.create < self.update {
            OpChoice::Update
        } else {
            OpChoice::Read
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL the target; `keelson up` restarts it after its backoff.
    Kill,
    /// SIGSTOP the target: alive but silent.
    Freeze,
    /// SIGCONT a frozen target.
    Thaw,
    /// SIGTERM the target (a clean stop); `keelson up` restarts it after its backoff.
    Restart,
    /// Drop traffic between two groups of members (through the link proxies).
    Partition,
    /// Remove every link fault: partitions and latency.
    Heal,
    /// Delay every link between two groups, in each direction.
    Latency,
}

/// Whether a fault field must, may or must not be given.
#[derive(PartialEq)]
enum Rule {
    Required,
    Optional,
    Forbidden,
}

impl Action {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Restart => "restart",
            Action::Partition => "partition",
            Action::Heal => "heal",
            Action::Latency => "latency",
        }
    }

    /// The one table of which [`FaultSpec`] field goes with which action.
    fn rule(self, field: &str) -> Rule {
        use Action::*;
        match (field, self) {
            ("target", Kill | Freeze | Thaw | Restart) => Rule::Required,
            ("label", Kill | Freeze | Restart | Partition) => Rule::Optional,
            ("groups", Partition) => Rule::Required,
            ("one_way", Partition) => Rule::Optional,
            ("between" | "delay_ms", Latency) => Rule::Required,
            ("jitter_ms", Latency) => Rule::Optional,
            _ => Rule::Forbidden,
        }
    }
}

/// `[[fault]]`: one fault at one time. Which fields go with which action is in `Action::rule`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Seconds after the workload starts; above 0 and below `duration_s`.
    pub at_s: f64,
    /// What to do.
    pub action: Action,
    /// kill/freeze/thaw/restart: a member name, `busy-primary`, `random-node` or an earlier label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// kill/freeze/restart/partition: binds what the fault resolved (its target, or the first
    /// group's members) to this name for later faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// partition: exactly two non-empty groups of members to cut apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Vec<String>>>,
    /// partition: drop only traffic from `groups[0]` to `groups[1]` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_way: Option<bool>,
    /// latency: two non-empty groups; every link between them is delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<Vec<Vec<String>>>,
    /// latency: delay added to each direction of each link, 1..=10000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// latency: uniform jitter around the delay, at most `delay_ms` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
}

/// `[gates]`: pass/fail thresholds; an absent threshold is not checked.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Lowest acceptable ok/attempted over the whole run, 0.0..=1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_availability: Option<f64>,
    /// Every fault with a recovery time must recover, and within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery_ms: Option<u64>,
    /// Longest acceptable time for the cluster to notice a fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detection_ms: Option<u64>,
    /// Highest acceptable p99 latency of successful operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Most acknowledged writes allowed to go missing.
    #[serde(default)]
    pub max_lost_writes: u64,
    /// Whether every key's history must be linearizable.
    #[serde(default = "default_true")]
    pub require_linearizable: bool,
    /// Most times two members may claim the same shard as primary at once.
    #[serde(default)]
    pub max_duplicate_primaries: u64,
}

fn default_true() -> bool {
    true
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            min_availability: None,
            max_recovery_ms: None,
            max_detection_ms: None,
            max_p99_ms: None,
            max_lost_writes: 0,
            require_linearizable: default_true(),
            max_duplicate_primaries: 0,
        }
    }
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, or not the schema (unknown field, wrong type); toml's message names the line.
    #[error("{path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message, with line, column and key.
        message: String,
    },
    /// The file parsed but breaks rules of the schema.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// File path.
        path: PathBuf,
        /// Each problem, prefixed by where it is.
        problems: Vec<String>,
    },
}

impl ScenarioError {
    /// Every problem as its own line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ScenarioError::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

impl Scenario {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        scenario
            .validate()
            .map_err(|problems| ScenarioError::Invalid {
                path: origin.to_path_buf(),
                problems,
            })?;
        Ok(scenario)
    }

    /// Whether any fault works on links (partition, heal, latency), so members must talk
    /// through fault-injecting proxies.
    pub fn needs_link_proxies(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.action, Action::Partition | Action::Heal | Action::Latency))
    }

    fn labels(&self) -> impl Iterator<Item = &str> {
        self.faults.iter().filter_map(|f| f.label.as_deref())
    }
}

#[cfg(test)]
#[path = "scenario_test.rs"]
mod tests;
