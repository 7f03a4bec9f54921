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

use std::collections::HashSet;
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

    /// Checks every rule that needs no cluster and collects every problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !name_ok(&self.name) {
            p.push(format!(
                "name: \"{}\" must be non-empty and only a-z, 0-9 and '-' (it names the report directory)",
                self.name
            ));
        }
        if self.description.trim().is_empty() {
            p.push("description: must not be empty".to_string());
        }
        range(&mut p, "duration_s", self.duration_s, 5, 3600);
        let w = &self.workload;
        range(&mut p, "workload.keys", w.keys.into(), 1, 100_000);
        range(&mut p, "workload.concurrency", w.concurrency.into(), 1, 256);
        range(&mut p, "workload.rate", w.rate.into(), 1, 100_000);
        range(&mut p, "workload.timeout_ms", w.timeout_ms, 100, 60_000);
        let sum = u64::from(w.mix.create) + u64::from(w.mix.update) + u64::from(w.mix.read);
        if sum == 0 {
            p.push(
                "workload.mix: weights sum to 0; give at least one of create, update, read a weight"
                    .to_string(),
            );
        } else if sum > u64::from(u32::MAX) {
            p.push(format!(
                "workload.mix: weights sum to {sum}, past {}",
                u32::MAX
            ));
        }

        let all_labels: HashSet<&str> = self.labels().collect();
        let mut bound: HashSet<&str> = HashSet::new();
        let mut previous: Option<(usize, f64)> = None;
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault[{i}]");
            let action = f.action.as_str();
            if !f.at_s.is_finite() || f.at_s <= 0.0 {
                p.push(format!("{at}.at_s: {} must be a number above 0", f.at_s));
            } else if f.at_s >= self.duration_s as f64 {
                p.push(format!(
                    "{at}.at_s: {} is past the end of the run (duration_s = {})",
                    f.at_s, self.duration_s
                ));
            }
            if let Some((j, before)) = previous {
                if f.at_s < before {
                    p.push(format!(
                        "{at}.at_s: {} is earlier than fault[{j}] (at_s = {before}); list faults in time order",
                        f.at_s
                    ));
                }
            }
            previous = Some((i, f.at_s));

            let fields = [
                ("target", f.target.is_some()),
                ("label", f.label.is_some()),
                ("groups", f.groups.is_some()),
                ("one_way", f.one_way.is_some()),
                ("between", f.between.is_some()),
                ("delay_ms", f.delay_ms.is_some()),
                ("jitter_ms", f.jitter_ms.is_some()),
            ];
            for (field, present) in fields {
                match (f.action.rule(field), present) {
                    (Rule::Required, false) => {
                        p.push(format!("{at}.{field}: required for action \"{action}\""))
                    }
                    (Rule::Forbidden, true) => {
                        p.push(format!("{at}.{field}: forbidden for action \"{action}\""))
                    }
                    _ => {}
                }
            }
            let refs = Refs {
                bound: &bound,
                all_labels: &all_labels,
            };
            if let (Some(t), Rule::Required) = (&f.target, f.action.rule("target")) {
                let path = format!("{at}.target");
                if ["rest", "all", "nodes"].contains(&t.as_str()) {
                    p.push(format!(
                        "{path}: \"{t}\" names a group; a {action} target is a member name, busy-primary, random-node or a label"
                    ));
                } else {
                    refs.check(&mut p, &path, t);
                }
            }
            if let (Some(g), Rule::Required) = (&f.groups, f.action.rule("groups")) {
                refs.check_groups(&mut p, &format!("{at}.groups"), g, false);
            }
            if let (Some(g), Rule::Required) = (&f.between, f.action.rule("between")) {
                refs.check_groups(&mut p, &format!("{at}.between"), g, true);
            }
            if let (Some(d), Rule::Required) = (f.delay_ms, f.action.rule("delay_ms")) {
                range(&mut p, &format!("{at}.delay_ms"), d, 1, 10_000);
                if let Some(j) = f.jitter_ms.filter(|&j| j > d) {
                    p.push(format!("{at}.jitter_ms: {j} is more than delay_ms ({d})"));
                }
            }
            if let (Some(l), Rule::Optional) = (&f.label, f.action.rule("label")) {
                if RESERVED.contains(&l.as_str()) {
                    p.push(format!(
                        "{at}.label: \"{l}\" is a reserved word; pick another"
                    ));
                } else if !name_ok(l) {
                    p.push(format!(
                        "{at}.label: \"{l}\" must be non-empty and only a-z, 0-9 and '-'"
                    ));
                } else if let Some(j) = self.faults[..i]
                    .iter()
                    .position(|e| e.label.as_deref() == Some(l.as_str()))
                {
                    p.push(format!(
                        "{at}.label: \"{l}\" is already bound by fault[{j}]"
                    ));
                }
                bound.insert(l);
            }
        }

        let g = &self.gates;
        if let Some(a) = g.min_availability.filter(|a| !(0.0..=1.0).contains(a)) {
            p.push(format!(
                "gates.min_availability: {a} is out of range 0.0..=1.0"
            ));
        }
        if let Some(v) = g.max_p99_ms.filter(|v| !v.is_finite() || *v <= 0.0) {
            p.push(format!("gates.max_p99_ms: {v} must be a number above 0"));
        }
        for (field, v) in [
            ("max_recovery_ms", g.max_recovery_ms),
            ("max_detection_ms", g.max_detection_ms),
        ] {
            if v == Some(0) {
                p.push(format!("gates.{field}: must be at least 1"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// Checks every literal member name (not a keyword or label) against the cluster: `nodes`
    /// hosts shards, `members` is every process including the gateway.
    pub fn check_members(&self, nodes: &[String], members: &[String]) -> Result<(), Vec<String>> {
        let mut known: Vec<&str> = members.iter().map(String::as_str).collect();
        known.extend(
            nodes
                .iter()
                .map(String::as_str)
                .filter(|n| !members.iter().any(|m| m == n)),
        );
        let list = known.join(", ");
        let labels: HashSet<&str> = self.labels().collect();
        let mut p = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault[{i}]");
            let mut names: Vec<(String, &str)> = Vec::new();
            if let Some(t) = &f.target {
                names.push((format!("{at}.target"), t));
            }
            for (field, groups) in [("groups", &f.groups), ("between", &f.between)] {
                for (g, group) in groups.iter().flatten().enumerate() {
                    names.extend(
                        group
                            .iter()
                            .map(|n| (format!("{at}.{field}[{g}]"), n.as_str())),
                    );
                }
            }
            for (path, name) in names {
                let needs_node = ["busy-primary", "random-node", "nodes"].contains(&name);
                if needs_node && nodes.is_empty() {
                    p.push(format!("{path}: \"{name}\" needs at least one node"));
                } else if !RESERVED.contains(&name)
                    && !labels.contains(name)
                    && !known.contains(&name)
                {
                    p.push(format!(
                        "{path}: \"{name}\" is not a member (members: {list})"
                    ));
                }
            }
            if let Some(l) = f.label.as_deref().filter(|l| known.contains(l)) {
                p.push(format!(
                    "{at}.label: \"{l}\" is also a member name; pick another so it cannot hide the member"
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
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

/// Pushes a problem unless `lo <= v <= hi`.
fn range(p: &mut Vec<String>, path: &str, v: u64, lo: u64, hi: u64) {
    if !(lo..=hi).contains(&v) {
        p.push(format!("{path}: {v} is out of range {lo}..={hi}"));
    }
}

/// What a name in a fault may refer to at one point of the schedule.
struct Refs<'a> {
    /// Labels bound by earlier faults.
    bound: &'a HashSet<&'a str>,
    /// Every label in the file, to tell a label used too early from a member name.
    all_labels: &'a HashSet<&'a str>,
}

impl Refs<'_> {
    fn check(&self, p: &mut Vec<String>, path: &str, name: &str) {
        if name.is_empty() {
            p.push(format!("{path}: a name must not be empty"));
        } else if self.all_labels.contains(name) && !self.bound.contains(name) {
            p.push(format!(
                "{path}: \"{name}\" is not a label bound by an earlier fault"
            ));
        }
    }

    /// `groups` (partition) or, with `allow_all`, `between` (latency).
    fn check_groups(
        &self,
        p: &mut Vec<String>,
        path: &str,
        groups: &[Vec<String>],
        allow_all: bool,
    ) {
        if groups.len() != 2 {
            p.push(format!(
                "{path}: needs exactly two groups, found {}",
                groups.len()
            ));
        }
        let mut with_rest = 0;
        for (g, group) in groups.iter().enumerate() {
            let gpath = format!("{path}[{g}]");
            if group.is_empty() {
                p.push(format!("{gpath}: must not be empty"));
            }
            if group.iter().any(|n| n == "rest") {
                with_rest += 1;
                if group.len() > 1 {
                    p.push(format!("{gpath}: \"rest\" must be alone in its group"));
                }
            }
            for name in group {
                if name == "all" && !allow_all {
                    p.push(format!(
                        "{gpath}: \"all\" is only for latency's between; use \"nodes\" or \"rest\""
                    ));
                } else {
                    self.check(p, &gpath, name);
                }
            }
        }
        if with_rest > 1 {
            p.push(format!(
                "{path}: \"rest\" may be used in only one of the two groups"
            ));
        }
    }
}

#[cfg(test)]
#[path = "scenario_test.rs"]
mod tests;
