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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngExt;

use crate::control::{LatencyRequest, LinkClient, PartitionRequest};
use crate::faults::{apply, status, ProcessFault};
use crate::history::Outcome;
use crate::linearizable::check_linearizable;
use crate::lost::lost_writes;
use crate::observer::{Observer, Sources, StateChange};
use crate::report::{Checks, FaultReport, Report, Stage, REPORT_VERSION};
use crate::scenario::{Action, FaultSpec, Scenario};
use crate::stats;
use crate::workload::{Gateway, Load};

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

/// A fault as applied.
struct Applied {
    at_ms: u64,
    action: Action,
    description: String,
    /// Members the fault is about (the victim, the cut-off side).
    subjects: Vec<String>,
    /// Members whose view counts for detection (everyone else that stays reachable).
    observers: Vec<String>,
    /// Shards whose primary was a subject.
    affected: Vec<u32>,
    /// First successful probe write per affected shard, ms since the start.
    probes: Arc<Mutex<BTreeMap<u32, u64>>>,
    note: Option<String>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Ctx<'a> {
    target: &'a Target,
    gateway: Gateway,
    links: Option<LinkClient>,
    members: Vec<String>,
    nodes: Vec<String>,
}

impl Ctx<'_> {
    /// Waits until the gateway sees every node up and no shard under-replicated.
    async fn settle(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer from the gateway");
        while Instant::now() < deadline {
            if let Some(v) = self.gateway.get_json("/v1/cluster").await {
                let up = v["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter(|m| m["role"] == "node" && m["state"] == "up")
                            .count()
                    })
                    .unwrap_or(0);
                let under = v["under_replicated"].as_u64().unwrap_or(u64::MAX);
                let learners = v["learners"].as_u64().unwrap_or(u64::MAX);
                if up == self.nodes.len() && under == 0 && learners == 0 {
                    return Ok(());
                }
                last = format!(
                    "{up}/{} nodes up, {under} shards under-replicated, {learners} copies in progress",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// Finds a key on every shard, creates them, and returns them by shard.
    async fn probe_keys(&self, prefix: &str) -> Result<HashMap<u32, String>, String> {
        let mut found: HashMap<u32, String> = HashMap::new();
        let mut j = 0u32;
        let limit = self.target.shards * 40;
        while found.len() < self.target.shards as usize && j < limit {
            let batch: Vec<String> = (j..j + 64).map(|i| format!("{prefix}-p{i}")).collect();
            j += 64;
            let located = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|id| async move { (id.clone(), self.gateway.shard_of(id).await) }),
            )
            .await;
            for (id, shard) in located {
                if let Some(s) = shard {
                    found.entry(s).or_insert(id);
                }
            }
        }
        let ids: Vec<(u32, String)> = found.iter().map(|(s, k)| (*s, k.clone())).collect();
        for chunk in ids.chunks(32) {
            let created = futures_util::future::join_all(
                chunk.iter().map(|(_, id)| self.gateway.create(id, 1)),
            )
            .await;
            if created.contains(&Outcome::Unknown) {
                return Err("could not create the probe keys".to_string());
            }
        }
        Ok(found)
    }

    fn resolve_one(
        &self,
        name: &str,
        labels: &HashMap<String, Vec<String>>,
        busy_primary: &dyn Fn() -> Option<String>,
    ) -> Result<Vec<String>, String> {
        match name {
            "busy-primary" => busy_primary()
                .map(|p| vec![p])
                .ok_or_else(|| "no primary known for the busiest shard".to_string()),
            "random-node" => {
                let running: Vec<String> = status(&self.target.data_dir)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|m| m.role == "node" && m.state == "running")
                    .map(|m| m.name)
                    .collect();
                if running.is_empty() {
                    return Err("no node is running".to_string());
                }
                Ok(vec![
                    running[rand::rng().random_range(0..running.len())].clone()
                ])
            }
            "nodes" => Ok(self.nodes.clone()),
            "all" => Ok(self.members.clone()),
            other => Ok(labels
                .get(other)
                .cloned()
                .unwrap_or_else(|| vec![other.to_string()])),
        }
    }

    fn resolve_group(
        &self,
        group: &[String],
        other: &[String],
        labels: &HashMap<String, Vec<String>>,
        busy_primary: &dyn Fn() -> Option<String>,
    ) -> Result<Vec<String>, String> {
        if group.len() == 1 && group[0] == "rest" {
            return Ok(self
                .members
                .iter()
                .filter(|m| !other.contains(m))
                .cloned()
                .collect());
        }
        let mut out = Vec::new();
        for g in group {
            for m in self.resolve_one(g, labels, busy_primary)? {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Applies one fault; returns its subjects, observers and description, or why it failed.
    async fn apply(
        &self,
        f: &FaultSpec,
        labels: &mut HashMap<String, Vec<String>>,
        busy_primary: &dyn Fn() -> Option<String>,
    ) -> Result<(Vec<String>, Vec<String>, String), String> {
        let everyone_but = |subjects: &[String]| -> Vec<String> {
            self.members
                .iter()
                .filter(|m| !subjects.contains(m))
                .cloned()
                .collect()
        };
        let links = || {
            self.links
                .as_ref()
                .ok_or_else(|| "the cluster has no link proxies".to_string())
        };
        let (subjects, observers, description) = match f.action {
            Action::Kill | Action::Freeze | Action::Thaw | Action::Restart => {
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
                let what = if spec == targets.join(" ") {
                    targets.join(" ")
                } else {
                    format!("{} ({spec})", targets.join(" "))
                };
                let observers = everyone_but(&targets);
                (targets, observers, what)
            }
            Action::Partition => {
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
                links()?
                    .partition(&PartitionRequest {
                        a: a.clone(),
                        b: b.clone(),
                        one_way,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let arrow = if one_way { "-/->" } else { "|" };
                (
                    a.clone(),
                    b.clone(),
                    format!("{} {arrow} {}", a.join(" "), b.join(" ")),
                )
            }
            Action::Latency => {
                let between = f.between.clone().unwrap_or_default();
                let a = self.resolve_group(&between[0], &[], labels, busy_primary)?;
                let b = self.resolve_group(&between[1], &a, labels, busy_primary)?;
                let delay_ms = f.delay_ms.unwrap_or(0);
                let jitter_ms = f.jitter_ms.unwrap_or(0);
                links()?
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
                (
                    vec![],
                    vec![],
                    format!("{delay_ms} ms{jitter} between {sides}"),
                )
            }
            Action::Heal => {
                links()?.heal().await.map_err(|e| e.to_string())?;
                // What was cut off comes back.
                let cut: Vec<String> = labels.values().flatten().cloned().collect();
                let observers = everyone_but(&cut);
                (cut, observers, "every link".to_string())
            }
        };
        if let Some(label) = &f.label {
            labels.insert(label.clone(), subjects.clone());
        }
        Ok((subjects, observers, description))
    }
}

/// Writes to each shard's probe key every 20 ms until each succeeds once (or `within` passes).
fn probe(
    gateway: Gateway,
    keys: Vec<(u32, String)>,
    start: Instant,
    within: Duration,
) -> Arc<Mutex<BTreeMap<u32, u64>>> {
    let done: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    let out = done.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + within;
        let mut value = 1_000_000u64;
        while Instant::now() < deadline {
            let pending: Vec<&(u32, String)> = {
                let d = done.lock().expect("probe lock");
                keys.iter().filter(|(s, _)| !d.contains_key(s)).collect()
            };
            if pending.is_empty() {
                return;
            }
            value += 1;
            let next = Instant::now() + Duration::from_millis(20);
            let results = futures_util::future::join_all(pending.iter().map(|(shard, key)| {
                let g = &gateway;
                async move { (*shard, g.update(key, value).await) }
            }))
            .await;
            let t = start.elapsed().as_millis() as u64;
            {
                let mut d = done.lock().expect("probe lock");
                for (shard, outcome) in results {
                    if outcome == Outcome::Ok {
                        d.entry(shard).or_insert(t);
                    }
                }
            }
            tokio::time::sleep_until(next.into()).await;
        }
    });
    out
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

fn timeline(
    a: &Applied,
    changes: &[StateChange],
    maps: &[(u64, Vec<String>)],
    duration_ms: u64,
) -> FaultReport {
    let after = |t: u64| t.saturating_sub(a.at_ms);
    let mut stages = Vec::new();
    let mut push = |name: &str, t: Option<u64>| {
        if let Some(t) = t {
            stages.push(Stage {
                name: name.to_string(),
                after_ms: after(t),
            });
        }
    };
    let detection = match a.action {
        Action::Kill | Action::Freeze | Action::Restart | Action::Partition => {
            let suspected = first_change(
                changes,
                a.at_ms,
                &a.subjects,
                &a.observers,
                &["suspected", "down"],
            );
            let down = first_change(changes, a.at_ms, &a.subjects, &a.observers, &["down"]);
            push("suspected", suspected);
            push("marked down", down);
            down
        }
        _ => None,
    };
    let probes = a.probes.lock().expect("probe lock").clone();
    let mut recovery = None;
    if !a.affected.is_empty() {
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
        push("promoted", promoted);
        push("first success", probes.values().min().copied());
        if probes.len() == a.affected.len() {
            recovery = probes.values().max().copied();
            push("recovered", recovery);
        }
    }
    if matches!(
        a.action,
        Action::Kill | Action::Restart | Action::Thaw | Action::Heal
    ) && !a.subjects.is_empty()
    {
        push(
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
    stages.sort_by_key(|s| s.after_ms);
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
        detection_ms: detection.map(after),
        recovery_ms: recovery.map(after),
        stages,
        note,
    }
}

/// Runs `scenario` against `target` and judges it.
pub async fn run(
    scenario: &Scenario,
    target: &Target,
    progress: Progress,
) -> Result<Report, RunError> {
    let links = if scenario.needs_link_proxies() {
        Some(LinkClient::for_cluster(
            &target.data_dir,
            target.api.http.clone(),
        )?)
    } else {
        None
    };
    let nodes: Vec<String> = target.nodes.iter().map(|(n, _)| n.clone()).collect();
    let mut members = nodes.clone();
    members.push(target.gateway.clone());
    let gateway = target.api.clone();
    let ctx = Ctx {
        target,
        gateway: gateway.clone(),
        links,
        members,
        nodes,
    };
    progress(0, 0, 0, Some("waiting for the cluster to settle".into()));
    ctx.settle(Duration::from_secs(120))
        .await
        .map_err(RunError::NotReady)?;
    let prefix = format!("x{:x}", now_unix_ms());
    progress(0, 0, 0, Some("creating keys".into()));
    let load = Load::prepare(&scenario.workload, gateway.clone(), &prefix, target.shards)
        .await
        .map_err(RunError::Setup)?;
    let probe_keys = ctx.probe_keys(&prefix).await.map_err(RunError::Setup)?;

    let duration = Duration::from_secs(scenario.duration_s);
    let start = Instant::now();
    let started_unix_ms = now_unix_ms();
    let observer = Observer::start(
        Sources {
            gateway: (target.gateway.clone(), gateway.clone()),
            nodes: target.nodes.clone(),
            data_dir: target.data_dir.clone(),
            heartbeat: target.heartbeat,
        },
        start,
    );
    let workload = tokio::spawn(load.clone().run(start, duration));
    let ticker = {
        let load = load.clone();
        let progress = Arc::new(progress);
        let p = progress.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let (begun, ok) = load.counts();
                p(start.elapsed().as_secs(), begun, ok, None);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        (progress, stop, task)
    };

    let mut labels: HashMap<String, Vec<String>> = HashMap::new();
    let mut applied: Vec<Applied> = Vec::new();
    for f in &scenario.faults {
        tokio::time::sleep_until((start + Duration::from_secs_f64(f.at_s)).into()).await;
        let primaries = ctx.gateway.primaries().await.unwrap_or_default();
        let busy = load.busiest_shard();
        let busy_primary = || primaries.get(busy as usize).cloned();
        let at_ms = start.elapsed().as_millis() as u64;
        let result = ctx.apply(f, &mut labels, &busy_primary).await;
        let (subjects, observers, description, note) = match result {
            Ok((s, o, d)) => (s, o, d, None),
            Err(e) => (
                vec![],
                vec![],
                String::new(),
                Some(format!("not applied: {e}")),
            ),
        };
        let description = if f.target.as_deref() == Some("busy-primary") {
            format!("{description}, busiest shard {busy}")
        } else {
            description
        };
        let takes_primaries = matches!(
            f.action,
            Action::Kill | Action::Freeze | Action::Restart | Action::Partition
        );
        let affected: Vec<u32> = if takes_primaries {
            primaries
                .iter()
                .enumerate()
                .filter(|(_, p)| subjects.contains(p))
                .map(|(s, _)| s as u32)
                .collect()
        } else {
            vec![]
        };
        let keys: Vec<(u32, String)> = affected
            .iter()
            .filter_map(|s| Some((*s, probe_keys.get(s)?.clone())))
            .collect();
        let probes = probe(gateway.clone(), keys, start, Duration::from_secs(30));
        let (begun, ok) = load.counts();
        (ticker.0)(
            start.elapsed().as_secs(),
            begun,
            ok,
            Some(format!("{} {description}", f.action.as_str())),
        );
        applied.push(Applied {
            at_ms,
            action: f.action,
            description,
            subjects,
            observers,
            affected,
            probes,
            note,
        });
    }
    tokio::time::sleep_until((start + duration).into()).await;
    load.stop();
    let _ = workload.await;
    ticker.1.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.2.await;
    let duration_ms = start.elapsed().as_millis() as u64;

    // Undo what the scenario left behind, so the final reads see a whole cluster.
    let (begun, ok) = load.counts();
    (ticker.0)(
        start.elapsed().as_secs(),
        begun,
        ok,
        Some("checking".into()),
    );
    if let Some(links) = &ctx.links {
        let _ = links.heal().await;
    }
    if let Ok(members) = status(&target.data_dir) {
        for m in members.iter().filter(|m| m.state == "frozen") {
            let _ = apply(&target.data_dir, &m.name, ProcessFault::Thaw);
        }
    }
    let settled = ctx.settle(Duration::from_secs(60)).await;
    // Give the probes of the last fault their chance before the timelines are drawn.
    let probe_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < probe_deadline
        && applied
            .iter()
            .any(|a| a.probes.lock().expect("probe lock").len() < a.affected.len())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    observer.stop();

    let history = load.history();
    let checked = load.history_with_preload();
    let keys = load.keys();
    let mut finals = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(32) {
        let values = futures_util::future::join_all(chunk.iter().map(|(k, _)| {
            let g = &gateway;
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if let Some(v) = g.read(k).await {
                        return (k.clone(), Some(v));
                    }
                    if Instant::now() > deadline {
                        return (k.clone(), None);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }))
        .await;
        finals.extend(values);
    }
    let unreadable: Vec<String> = finals
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| format!("{k}: unreadable after the run"))
        .collect();
    let finals: Vec<(String, u64)> = finals
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let mut lost: Vec<String> = lost_writes(&checked, &finals)
        .into_iter()
        .map(|l| {
            format!(
                "{}: w{} acknowledged (op {}), found w{}",
                l.key, l.value, l.op, l.found
            )
        })
        .collect();
    lost.extend(unreadable);
    let violations: Vec<String> = check_linearizable(&checked)
        .into_iter()
        .map(|v| format!("{}: {} (ops {:?})", v.key, v.explanation, v.ops))
        .collect();
    let checks = Checks {
        keys_checked: finals.len() as u64,
        lost_writes: lost,
        ops_checked: checked.ops.len() as u64,
        linearizable: violations.is_empty(),
        violations,
        duplicate_primaries: observer.duplicate_primaries(),
    };

    let changes = observer.changes();
    let maps = observer.maps();
    let faults: Vec<FaultReport> = applied
        .iter()
        .map(|a| timeline(a, &changes, &maps, duration_ms))
        .collect();
    let recovery = stats::spread(
        &faults
            .iter()
            .filter_map(|f| f.recovery_ms)
            .collect::<Vec<_>>(),
    );
    let mut bounds: Vec<(String, u64)> = vec![("baseline".to_string(), 0)];
    for f in &faults {
        bounds.push((format!("{} {}", f.action, f.target), f.at_ms));
    }
    let phases = bounds
        .iter()
        .enumerate()
        .map(|(i, (name, from))| {
            let to = bounds.get(i + 1).map(|b| b.1).unwrap_or(duration_ms);
            stats::phase(&history, name, *from, to, observer.cpu_pct(*from, to))
        })
        .collect();
    let totals = stats::totals(&history, duration.as_secs_f64());
    let mut verdict = stats::verdict(&scenario.gates, &totals, &faults, &checks);
    if let Err(why) = settled {
        verdict.passed = false;
        verdict.gates.push(crate::report::Gate {
            name: "settled".to_string(),
            limit: "every node up and every shard fully replicated within 60 s".to_string(),
            actual: why,
            passed: false,
        });
    }
    Ok(Report {
        version: REPORT_VERSION,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        started_unix_ms,
        duration_s: duration_ms as f64 / 1000.0,
        verdict,
        totals,
        seconds: stats::seconds(&history, scenario.duration_s),
        faults,
        phases,
        checks,
        recovery,
    })
}
