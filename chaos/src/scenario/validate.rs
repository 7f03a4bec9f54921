//! The scenario's rules, checked: `validate` needs only the file and collects every problem as
//! "<path>: <why>"; `check_members` needs the cluster's member names.
//!
//! ```text
//! Scenario ─validate─┬─ header: name, description, duration_s
//!                    ├─ [workload]: ranges, mix weights
//!                    ├─ [[fault]] in order: time, fields per action, names (Refs), label
//!                    └─ [gates]: ranges
//!          ─check_members(nodes, members)─▶ every literal name is a member
//! ```

use std::collections::HashSet;

use super::{FaultSpec, Gates, Rule, Scenario, Workload, RESERVED};

impl Scenario {
    /// Checks every rule that needs no cluster and collects every problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        self.check_header(&mut p);
        self.workload.check(&mut p);
        self.check_faults(&mut p);
        self.gates.check(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    fn check_header(&self, p: &mut Vec<String>) {
        if !name_ok(&self.name) {
            p.push(format!(
                "name: \"{}\" must be non-empty and only a-z, 0-9 and '-' (it names the report directory)",
                self.name
            ));
        }
        if self.description.trim().is_empty() {
            p.push("description: must not be empty".to_string());
        }
        range(p, "duration_s", self.duration_s, 5, 3600);
    }

    /// Every fault in schedule order: a label counts as bound only after the fault binding it.
    fn check_faults(&self, p: &mut Vec<String>) {
        let all_labels: HashSet<&str> = self.labels().collect();
        let mut bound: HashSet<&str> = HashSet::new();
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault[{i}]");
            self.check_time(p, i, &at);
            check_fields(p, &at, f);
            let refs = Refs {
                bound: &bound,
                all_labels: &all_labels,
            };
            refs.check_fault(p, &at, f);
            if let (Some(l), Rule::Optional) = (&f.label, f.action.rule("label")) {
                self.check_label(p, i, &at, l);
                bound.insert(l);
            }
        }
    }

    /// `at_s` is inside the run and not before the previous fault's.
    fn check_time(&self, p: &mut Vec<String>, i: usize, at: &str) {
        let f = &self.faults[i];
        if !f.at_s.is_finite() || f.at_s <= 0.0 {
            p.push(format!("{at}.at_s: {} must be a number above 0", f.at_s));
        } else if f.at_s >= self.duration_s as f64 {
            p.push(format!(
                "{at}.at_s: {} is past the end of the run (duration_s = {})",
                f.at_s, self.duration_s
            ));
        }
        if let Some(j) = i.checked_sub(1) {
            let before = self.faults[j].at_s;
            if f.at_s < before {
                p.push(format!(
                    "{at}.at_s: {} is earlier than fault[{j}] (at_s = {before}); list faults in time order",
                    f.at_s
                ));
            }
        }
    }

    /// A label is a fresh, well-formed name that is not a keyword.
    fn check_label(&self, p: &mut Vec<String>, i: usize, at: &str, l: &str) {
        if RESERVED.contains(&l) {
            p.push(format!(
                "{at}.label: \"{l}\" is a reserved word; pick another"
            ));
        } else if !name_ok(l) {
            p.push(format!(
                "{at}.label: \"{l}\" must be non-empty and only a-z, 0-9 and '-'"
            ));
        } else if let Some(j) = self.faults[..i]
            .iter()
            .position(|e| e.label.as_deref() == Some(l))
        {
            p.push(format!(
                "{at}.label: \"{l}\" is already bound by fault[{j}]"
            ));
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
}

/// Lower-case letters, digits and `-`, at least one.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Workload {
    fn check(&self, p: &mut Vec<String>) {
        range(p, "workload.keys", self.keys.into(), 1, 100_000);
        range(p, "workload.concurrency", self.concurrency.into(), 1, 256);
        range(p, "workload.rate", self.rate.into(), 1, 100_000);
        range(p, "workload.timeout_ms", self.timeout_ms, 100, 60_000);
        let m = &self.mix;
        let sum = u64::from(m.create) + u64::from(m.update) + u64::from(m.read);
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
    }
}

/// Which fields go with the action (`Action::rule`), and the latency bounds.
fn check_fields(p: &mut Vec<String>, at: &str, f: &FaultSpec) {
    let action = f.action.as_str();
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
}

impl Gates {
    fn check(&self, p: &mut Vec<String>) {
        if let Some(a) = self.min_availability.filter(|a| !(0.0..=1.0).contains(a)) {
            p.push(format!(
                "gates.min_availability: {a} is out of range 0.0..=1.0"
            ));
        }
        if let Some(v) = self.max_p99_ms.filter(|v| !v.is_finite() || *v <= 0.0) {
            p.push(format!("gates.max_p99_ms: {v} must be a number above 0"));
        }
        for (field, v) in [
            ("max_recovery_ms", self.max_recovery_ms),
            ("max_detection_ms", self.max_detection_ms),
        ] {
            if v == Some(0) {
                p.push(format!("gates.{field}: must be at least 1"));
            }
        }
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
    /// The names of one fault: its target, groups or between, and the delay they get.
    fn check_fault(&self, p: &mut Vec<String>, at: &str, f: &FaultSpec) {
        let action = f.action.as_str();
        if let (Some(t), Rule::Required) = (&f.target, f.action.rule("target")) {
            let path = format!("{at}.target");
            if ["rest", "all", "nodes"].contains(&t.as_str()) {
                p.push(format!(
                    "{path}: \"{t}\" names a group; a {action} target is a member name, busy-primary, random-node or a label"
                ));
            } else {
                self.check(p, &path, t);
            }
        }
        if let (Some(g), Rule::Required) = (&f.groups, f.action.rule("groups")) {
            self.check_groups(p, &format!("{at}.groups"), g, false);
        }
        if let (Some(g), Rule::Required) = (&f.between, f.action.rule("between")) {
            self.check_groups(p, &format!("{at}.between"), g, true);
        }
        if let (Some(d), Rule::Required) = (f.delay_ms, f.action.rule("delay_ms")) {
            range(p, &format!("{at}.delay_ms"), d, 1, 10_000);
            if let Some(j) = f.jitter_ms.filter(|&j| j > d) {
                p.push(format!("{at}.jitter_ms: {j} is more than delay_ms ({d})"));
            }
        }
    }

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
