//! One fault's timeline, drawn after the run from what the observer saw and what the probes
//! measured: suspected → marked down → promoted → first success → recovered → back up.
//!
//! ```text
//! Applied + state changes + shard maps + probe successes ─▶ stages ─▶ FaultReport
//! ```

use std::collections::{BTreeMap, HashMap};

use super::inject::Applied;
use crate::observer::StateChange;
use crate::report::{FaultReport, Stage};
use crate::scenario::Action;

/// The stages seen so far, as ms after the fault.
struct Stages {
    at_ms: u64,
    list: Vec<Stage>,
}

impl Stages {
    fn after(&self, t: u64) -> u64 {
        t.saturating_sub(self.at_ms)
    }

    fn push(&mut self, name: &str, t: Option<u64>) {
        if let Some(t) = t {
            let after_ms = self.after(t);
            self.list.push(Stage {
                name: name.to_string(),
                after_ms,
            });
        }
    }
}

/// The report of one applied fault.
pub(super) fn timeline(
    a: &Applied,
    changes: &[StateChange],
    maps: &[(u64, Vec<String>)],
    duration_ms: u64,
) -> FaultReport {
    let mut stages = Stages {
        at_ms: a.at_ms,
        list: Vec::new(),
    };
    let detection = detection(a, changes, &mut stages);
    let probes = a.probes.lock().expect("probe lock").clone();
    let recovery = recovery(a, maps, &probes, &mut stages);
    back_up_stage(a, changes, duration_ms, &mut stages);
    stages.list.sort_by_key(|s| s.after_ms);
    let mut note = a.note.clone();
    if !a.affected.is_empty() && recovery.is_none() && note.is_none() {
        note = Some(format!(
            "{} of {} shards served a write again before the probe gave up",
            probes.len(),
            a.affected.len()
        ));
    }
    FaultReport {
        at_ms: a.at_ms,
        action: a.action.as_str().to_string(),
        target: a.description.clone(),
        shards_affected: a.affected.len() as u32,
        detection_ms: detection.map(|t| stages.after(t)),
        recovery_ms: recovery.map(|t| stages.after(t)),
        stages: stages.list,
        note,
    }
}

/// Suspected and marked down, for faults that make members unreachable; returns when down.
fn detection(a: &Applied, changes: &[StateChange], stages: &mut Stages) -> Option<u64> {
    match a.action {
        Action::Kill | Action::Freeze | Action::Restart | Action::Partition => {
            let suspected = first_change(
                changes,
                a.at_ms,
                &a.subjects,
                &a.observers,
                &["suspected", "down"],
            );
            let down = first_change(changes, a.at_ms, &a.subjects, &a.observers, &["down"]);
            stages.push("suspected", suspected);
            stages.push("marked down", down);
            down
        }
        _ => None,
    }
}

/// Promoted, first success and recovered, for faults that took primaries; returns when every
/// affected shard served a write again.
fn recovery(
    a: &Applied,
    maps: &[(u64, Vec<String>)],
    probes: &BTreeMap<u32, u64>,
    stages: &mut Stages,
) -> Option<u64> {
    if a.affected.is_empty() {
        return None;
    }
    let promoted = maps
        .iter()
        .filter(|(t, _)| *t >= a.at_ms)
        .find(|(_, primaries)| {
            a.affected.iter().all(|s| {
                primaries
                    .get(*s as usize)
                    .is_some_and(|p| !a.subjects.contains(p))
            })
        })
        .map(|(t, _)| *t);
    stages.push("promoted", promoted);
    stages.push("first success", probes.values().min().copied());
    let mut recovery = None;
    if probes.len() == a.affected.len() {
        recovery = probes.values().max().copied();
        stages.push("recovered", recovery);
    }
    recovery
}

/// Back up, for faults whose subjects come back (within a minute of the run's end).
fn back_up_stage(a: &Applied, changes: &[StateChange], duration_ms: u64, stages: &mut Stages) {
    if !matches!(
        a.action,
        Action::Kill | Action::Restart | Action::Thaw | Action::Heal
    ) || a.subjects.is_empty()
    {
        return;
    }
    stages.push(
        "back up",
        back_up(changes, a.at_ms, &a.subjects, &a.observers)
            .or_else(|| {
                // Thaw and heal bring back members the others may never have marked down.
                matches!(a.action, Action::Thaw | Action::Heal)
                    .then(|| first_change(changes, a.at_ms, &a.subjects, &a.observers, &["up"]))
                    .flatten()
            })
            .filter(|t| *t <= duration_ms + 60_000),
    );
}

/// First change after `from` by one of `observers` about one of `subjects` into `states`.
fn first_change(
    changes: &[StateChange],
    from: u64,
    subjects: &[String],
    observers: &[String],
    states: &[&str],
) -> Option<u64> {
    changes
        .iter()
        .filter(|c| c.t_ms >= from)
        .filter(|c| subjects.contains(&c.member) && observers.contains(&c.observer))
        .find(|c| states.contains(&c.state.as_str()))
        .map(|c| c.t_ms)
}

/// When, after `from`, every observer's latest view of every subject is `up` again.
fn back_up(
    changes: &[StateChange],
    from: u64,
    subjects: &[String],
    observers: &[String],
) -> Option<u64> {
    let mut state: HashMap<(&str, &str), &str> = HashMap::new();
    let all_up = |state: &HashMap<(&str, &str), &str>| {
        subjects.iter().all(|s| {
            observers
                .iter()
                .filter(|o| *o != s)
                .all(|o| state.get(&(o.as_str(), s.as_str())).copied() == Some("up"))
        })
    };
    let mut went_away = false;
    for c in changes {
        state.insert((&c.observer, &c.member), &c.state);
        if c.t_ms < from {
            continue;
        }
        if !all_up(&state) {
            went_away = true;
        } else if went_away {
            return Some(c.t_ms);
        }
    }
    None
}
