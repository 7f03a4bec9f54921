//! The fault schedule: at each fault's time, resolve its names to members, apply it (process
//! signals through the run file, link faults through the control), note whose primaries it
//! took, and start probing those shards.
//!
//! ```text
//! at_s ─▶ primaries, busiest shard ─▶ Cluster::apply ─▶ subjects, observers, description
//!      ─▶ shards whose primary is a subject ─▶ probe::start ─▶ Applied
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::Clock;
use super::cluster::{BusyPrimary, Cluster, Labels};
use super::probe;
use crate::control::{LatencyRequest, PartitionRequest};
use crate::faults::{apply, ProcessFault};
use crate::scenario::{Action, FaultSpec};

/// A fault as applied.
pub(super) struct Applied {
    pub(super) at_ms: u64,
    pub(super) action: Action,
    pub(super) description: String,
    /// Members the fault is about (the victim, the cut-off side).
    pub(super) subjects: Vec<String>,
    /// Members whose view counts for detection (everyone else that stays reachable).
    pub(super) observers: Vec<String>,
    /// Shards whose primary was a subject.
    pub(super) affected: Vec<u32>,
    /// First successful probe write per affected shard, ms since the start.
    pub(super) probes: Arc<Mutex<BTreeMap<u32, u64>>>,
    pub(super) note: Option<String>,
}

impl Applied {
    /// Whether every affected shard has served a probe write again.
    pub(super) fn probed(&self) -> bool {
        self.probes.lock().expect("probe lock").len() >= self.affected.len()
    }
}

/// What applying one fault resolved to.
struct Effect {
    subjects: Vec<String>,
    observers: Vec<String>,
    description: String,
}

/// Applies every fault of the schedule at its time.
pub(super) async fn schedule(
    cluster: &Cluster<'_>,
    faults: &[FaultSpec],
    clock: &Clock,
    probe_keys: &HashMap<u32, String>,
) -> Vec<Applied> {
    let mut labels = Labels::new();
    let mut applied = Vec::new();
    for f in faults {
        tokio::time::sleep_until((clock.start + Duration::from_secs_f64(f.at_s)).into()).await;
        applied.push(inject(cluster, f, &mut labels, clock, probe_keys).await);
    }
    applied
}

/// Applies one fault now and starts probing the shards it took the primary of.
async fn inject(
    cluster: &Cluster<'_>,
    f: &FaultSpec,
    labels: &mut Labels,
    clock: &Clock,
    probe_keys: &HashMap<u32, String>,
) -> Applied {
    let primaries = cluster.gateway.primaries().await.unwrap_or_default();
    let busy = clock.load.busiest_shard();
    let busy_primary = || primaries.get(busy as usize).cloned();
    let at_ms = clock.ms();
    let (effect, note) = match cluster.apply(f, labels, &busy_primary).await {
        Ok(e) => (e, None),
        Err(e) => (
            Effect {
                subjects: vec![],
                observers: vec![],
                description: String::new(),
            },
            Some(format!("not applied: {e}")),
        ),
    };
    let description = if f.target.as_deref() == Some("busy-primary") {
        format!("{}, busiest shard {busy}", effect.description)
    } else {
        effect.description
    };
    let takes_primaries = matches!(
        f.action,
        Action::Kill | Action::Freeze | Action::Restart | Action::Partition
    );
    let affected: Vec<u32> = if takes_primaries {
        primaries
            .iter()
            .enumerate()
            .filter(|(_, p)| effect.subjects.contains(p))
            .map(|(s, _)| s as u32)
            .collect()
    } else {
        vec![]
    };
    let keys: Vec<(u32, String)> = affected
        .iter()
        .filter_map(|s| Some((*s, probe_keys.get(s)?.clone())))
        .collect();
    let probes = probe::start(
        cluster.gateway.clone(),
        keys,
        clock.start,
        Duration::from_secs(30),
    );
    clock.event(format!("{} {description}", f.action.as_str()));
    Applied {
        at_ms,
        action: f.action,
        description,
        subjects: effect.subjects,
        observers: effect.observers,
        affected,
        probes,
        note,
    }
}

impl Cluster<'_> {
    /// Applies one fault; returns its subjects, observers and description, or why it failed.
    async fn apply(
        &self,
        f: &FaultSpec,
        labels: &mut Labels,
        busy_primary: BusyPrimary<'_>,
    ) -> Result<Effect, String> {
        let effect = match f.action {
            Action::Kill | Action::Freeze | Action::Thaw | Action::Restart => {
                self.signal(f, labels, busy_primary)?
            }
            Action::Partition => self.partition(f, labels, busy_primary).await?,
            Action::Latency => self.latency(f, labels, busy_primary).await?,
            Action::Heal => self.heal(labels).await?,
        };
        if let Some(label) = &f.label {
            labels.insert(label.clone(), effect.subjects.clone());
        }
        Ok(effect)
    }

    fn link_control(&self) -> Result<&crate::control::LinkClient, String> {
        self.links
            .as_ref()
            .ok_or_else(|| "the cluster has no link proxies".to_string())
    }

    /// kill, freeze, thaw, restart: a signal to each target process.
    fn signal(
        &self,
        f: &FaultSpec,
        labels: &Labels,
        busy_primary: BusyPrimary,
    ) -> Result<Effect, String> {
        let spec = f.target.as_deref().unwrap_or_default();
        let targets = self.resolve_one(spec, labels, busy_primary)?;
        let fault = match f.action {
            Action::Kill => ProcessFault::Kill,
            Action::Freeze => ProcessFault::Freeze,
            Action::Thaw => ProcessFault::Thaw,
            _ => ProcessFault::Restart,
        };
        for t in &targets {
            apply(&self.target.data_dir, t, fault).map_err(|e| e.to_string())?;
        }
        let description = if spec == targets.join(" ") {
            targets.join(" ")
        } else {
            format!("{} ({spec})", targets.join(" "))
        };
        Ok(Effect {
            observers: self.everyone_but(&targets),
            subjects: targets,
            description,
        })
    }

    async fn partition(
        &self,
        f: &FaultSpec,
        labels: &Labels,
        busy_primary: BusyPrimary<'_>,
    ) -> Result<Effect, String> {
        let groups = f.groups.clone().unwrap_or_default();
        let (ga, gb) = (&groups[0], &groups[1]);
        // Resolve the side that is not `rest` first, so `rest` means everyone else.
        let (a, b) = if ga.len() == 1 && ga[0] == "rest" {
            let b = self.resolve_group(gb, &[], labels, busy_primary)?;
            (self.resolve_group(ga, &b, labels, busy_primary)?, b)
        } else {
            let a = self.resolve_group(ga, &[], labels, busy_primary)?;
            (a.clone(), self.resolve_group(gb, &a, labels, busy_primary)?)
        };
        let one_way = f.one_way.unwrap_or(false);
        self.link_control()?
            .partition(&PartitionRequest {
                a: a.clone(),
                b: b.clone(),
                one_way,
            })
            .await
            .map_err(|e| e.to_string())?;
        let arrow = if one_way { "-/->" } else { "|" };
        Ok(Effect {
            description: format!("{} {arrow} {}", a.join(" "), b.join(" ")),
            subjects: a,
            observers: b,
        })
    }

    async fn latency(
        &self,
        f: &FaultSpec,
        labels: &Labels,
        busy_primary: BusyPrimary<'_>,
    ) -> Result<Effect, String> {
        let between = f.between.clone().unwrap_or_default();
        let a = self.resolve_group(&between[0], &[], labels, busy_primary)?;
        let b = self.resolve_group(&between[1], &a, labels, busy_primary)?;
        let delay_ms = f.delay_ms.unwrap_or(0);
        let jitter_ms = f.jitter_ms.unwrap_or(0);
        self.link_control()?
            .latency(&LatencyRequest {
                a: a.clone(),
                b: b.clone(),
                delay_ms,
                jitter_ms,
            })
            .await
            .map_err(|e| e.to_string())?;
        let jitter = if jitter_ms > 0 {
            format!(" ± {jitter_ms} ms")
        } else {
            String::new()
        };
        let sides = if a == b {
            a.join(" ")
        } else {
            format!("{} ↔ {}", a.join(" "), b.join(" "))
        };
        Ok(Effect {
            subjects: vec![],
            observers: vec![],
            description: format!("{delay_ms} ms{jitter} between {sides}"),
        })
    }

    async fn heal(&self, labels: &Labels) -> Result<Effect, String> {
        self.link_control()?
            .heal()
            .await
            .map_err(|e| e.to_string())?;
        // What was cut off comes back.
        let cut: Vec<String> = labels.values().flatten().cloned().collect();
        Ok(Effect {
            observers: self.everyone_but(&cut),
            subjects: cut,
            description: "every link".to_string(),
        })
    }
}
