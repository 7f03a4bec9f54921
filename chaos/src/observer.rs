//! Watches the cluster while a scenario runs: who each member believes is up (gateway
//! `/v1/cluster` and every node's ops `/view`, every 25 ms), the shard primaries (every 50 ms),
//! and once a second each node's CPU time and duplicate-primary counter.
//!
//! ```text
//! gateway /v1/cluster ─┐                       ┌─▶ state changes (t, observer, member, state)
//! node ops /view ──────┼─▶ Observer (25 ms) ───┼─▶ primaries whenever the map changes
//! /v1/cluster/shards ──┤                       ├─▶ cumulative CPU seconds per node
//! /proc, /metrics ─────┘                       └─▶ duplicate primaries (counter increases)
//! ```
//!
//! A member that answers heartbeats late (silent for more than two heartbeat intervals) but is
//! not yet marked down is recorded as `suspected`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::faults::{cpu_time, read_run_file};
use crate::workload::{fetch_json, Gateway};

/// One observer's view of one member changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Milliseconds since the start.
    pub t_ms: u64,
    /// Who saw it (`gateway` or a node).
    pub observer: String,
    /// About whom.
    pub member: String,
    /// `up`, `suspected`, `down` or `joining`.
    pub state: String,
}

#[derive(Default)]
struct Seen {
    changes: Vec<StateChange>,
    last: HashMap<(String, String), String>,
    maps: Vec<(u64, Vec<String>)>,
    cpu: BTreeMap<String, Vec<(u64, f64)>>,
    cpu_last: HashMap<String, (u32, f64)>,
    cpu_total: BTreeMap<String, f64>,
    dup_last: HashMap<String, f64>,
    duplicates: f64,
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The gateway (and its name).
    pub gateway: (String, Gateway),
    /// Every node's ops address.
    pub nodes: Vec<(String, SocketAddr)>,
    /// The cluster's data dir (for the run file's pids).
    pub data_dir: PathBuf,
    /// Heartbeat period (for `suspected`).
    pub heartbeat: Duration,
}

/// The observer; recordings are read after [`Observer::stop`].
pub struct Observer {
    seen: Mutex<Seen>,
    stop: AtomicBool,
}

fn derive_state(m: &serde_json::Value, heartbeat: Duration) -> Option<(String, String)> {
    let name = m["name"].as_str()?.to_string();
    let state = m["state"].as_str()?;
    let silent = m["silent_ms"].as_u64().unwrap_or(0);
    let state = if state == "up" && silent > 2 * heartbeat.as_millis() as u64 {
        "suspected"
    } else {
        state
    };
    Some((name, state.to_string()))
}

/// Sum of every sample of `metric` in Prometheus text.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Observer {
    /// Starts watching; times are measured from `start`.
    pub fn start(sources: Sources, start: Instant) -> Arc<Self> {
        let me = Arc::new(Self {
            seen: Mutex::new(Seen::default()),
            stop: AtomicBool::new(false),
        });
        let this = me.clone();
        tokio::spawn(async move { this.watch(sources, start).await });
        me
    }

    fn record(&self, t_ms: u64, observer: &str, members: &[serde_json::Value], hb: Duration) {
        let mut seen = self.seen.lock().expect("observer lock");
        for m in members {
            let Some((member, state)) = derive_state(m, hb) else {
                continue;
            };
            if member == observer {
                continue;
            }
            let key = (observer.to_string(), member.clone());
            if seen.last.get(&key) != Some(&state) {
                seen.last.insert(key, state.clone());
                seen.changes.push(StateChange {
                    t_ms,
                    observer: observer.to_string(),
                    member,
                    state,
                });
            }
        }
    }

    /// Calls `f` every `period` until stopped (bounded: a scenario lasts at most an hour).
    async fn every<F, Fut>(&self, period: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut next = Instant::now();
        let limit = (3600 * 1000 / period.as_millis().max(1)) as u64 + 1;
        for _ in 0..limit {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep_until(next.into()).await;
            // A slow answer delays only its own source, and never causes a burst.
            next = (next + period).max(Instant::now());
            f().await;
        }
    }

    /// One polling loop per source, so a frozen member stalls only its own.
    async fn watch(self: Arc<Self>, src: Sources, start: Instant) {
        let src = Arc::new(src);
        let ms = move || start.elapsed().as_millis() as u64;
        let mut loops = Vec::new();
        let mut sources: Vec<(String, String)> = src
            .nodes
            .iter()
            .map(|(name, ops)| (name.clone(), format!("http://{ops}/view")))
            .collect();
        sources.push((
            src.gateway.0.clone(),
            format!("{}/v1/cluster", src.gateway.1.base),
        ));
        for (name, url) in sources {
            let (me, src) = (self.clone(), src.clone());
            loops.push(tokio::spawn(async move {
                me.every(Duration::from_millis(25), || async {
                    if let Some(v) =
                        fetch_json(&src.gateway.1.http, &url, Some(Duration::from_millis(300)))
                            .await
                    {
                        if let Some(members) = v["members"].as_array() {
                            me.record(ms(), &name, members, src.heartbeat);
                        }
                    }
                })
                .await
            }));
        }
        let (me, s) = (self.clone(), src.clone());
        loops.push(tokio::spawn(async move {
            me.every(Duration::from_millis(50), || async {
                let Some(primaries) = s.gateway.1.primaries().await else {
                    return;
                };
                let mut seen = me.seen.lock().expect("observer lock");
                if seen.maps.last().map(|(_, p)| p) != Some(&primaries) {
                    seen.maps.push((ms(), primaries));
                }
            })
            .await
        }));
        let (me, s) = (self.clone(), src.clone());
        loops.push(tokio::spawn(async move {
            me.every(Duration::from_secs(1), || me.sample_processes(&s, ms()))
                .await
        }));
        for l in loops {
            let _ = l.await;
        }
    }

    async fn sample_processes(&self, src: &Sources, t: u64) {
        let pids: HashMap<String, u32> = read_run_file(&src.data_dir)
            .map(|r| {
                r.members
                    .into_iter()
                    .filter_map(|m| Some((m.name, m.pid?)))
                    .collect()
            })
            .unwrap_or_default();
        {
            let mut seen = self.seen.lock().expect("observer lock");
            for (name, _) in &src.nodes {
                let Some(&pid) = pids.get(name) else { continue };
                let Some(cpu) = cpu_time(pid) else { continue };
                let cpu = cpu.as_secs_f64();
                // A restarted node is a new process: count its CPU from zero.
                let delta = match seen.cpu_last.get(name) {
                    Some(&(p, last)) if p == pid => (cpu - last).max(0.0),
                    _ => cpu,
                };
                seen.cpu_last.insert(name.clone(), (pid, cpu));
                let total = seen.cpu_total.entry(name.clone()).or_default();
                *total += delta;
                let total = *total;
                seen.cpu.entry(name.clone()).or_default().push((t, total));
            }
        }
        let metrics = futures_util::future::join_all(src.nodes.iter().map(|(name, ops)| {
            let http = src.gateway.1.http.clone();
            async move {
                let r = http
                    .get(format!("http://{ops}/metrics"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .ok()?;
                Some((name.clone(), r.text().await.ok()?))
            }
        }))
        .await;
        let mut seen = self.seen.lock().expect("observer lock");
        for (name, text) in metrics.into_iter().flatten() {
            let v = metric_sum(&text, "keelson_duplicate_primary_total");
            // Counters restart from zero with their process.
            let inc = match seen.dup_last.get(&name) {
                Some(&last) if v >= last => v - last,
                Some(_) => v,
                None => 0.0,
            };
            seen.dup_last.insert(name, v);
            seen.duplicates += inc;
        }
    }

    /// Stops watching.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Every state change seen so far, in time order.
    pub fn changes(&self) -> Vec<StateChange> {
        self.seen.lock().expect("observer lock").changes.clone()
    }

    /// The primaries of every shard as last seen at or before `t_ms`, and later snapshots.
    pub fn maps(&self) -> Vec<(u64, Vec<String>)> {
        self.seen.lock().expect("observer lock").maps.clone()
    }

    /// Increase of the duplicate-primary counters, summed over nodes.
    pub fn duplicate_primaries(&self) -> u64 {
        self.seen.lock().expect("observer lock").duplicates.round() as u64
    }

    /// CPU used by each node between `from_ms` and `to_ms`, percent of one core (from the
    /// samples nearest inside the interval; absent when fewer than two samples fall in it).
    pub fn cpu_pct(&self, from_ms: u64, to_ms: u64) -> BTreeMap<String, f64> {
        let seen = self.seen.lock().expect("observer lock");
        seen.cpu
            .iter()
            .filter_map(|(name, samples)| {
                let inside: Vec<&(u64, f64)> = samples
                    .iter()
                    .filter(|(t, _)| (from_ms..=to_ms).contains(t))
                    .collect();
                let (first, last) = (inside.first()?, inside.last()?);
                let span = last.0.saturating_sub(first.0);
                (span > 0).then(|| {
                    (
                        name.clone(),
                        (last.1 - first.1) / (span as f64 / 1000.0) * 100.0,
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_labelled_sample_of_exactly_that_metric() {
        let text = "# HELP keelson_duplicate_primary_total x\n\
                    keelson_duplicate_primary_total{node=\"n1\"} 2\n\
                    keelson_duplicate_primary_total 1\n\
                    keelson_duplicate_primary_total_created 99\n";
        assert_eq!(metric_sum(text, "keelson_duplicate_primary_total"), 3.0);
    }

    #[test]
    fn a_late_heartbeat_reads_as_suspected() {
        let hb = Duration::from_millis(150);
        let m = serde_json::json!({"name": "n2", "state": "up", "silent_ms": 400});
        assert_eq!(
            derive_state(&m, hb),
            Some(("n2".into(), "suspected".into()))
        );
        let m = serde_json::json!({"name": "n2", "state": "up", "silent_ms": 100});
        assert_eq!(derive_state(&m, hb), Some(("n2".into(), "up".into())));
    }
}
