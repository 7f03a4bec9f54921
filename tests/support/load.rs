//! A write and read load with a history, for tests that change the cluster under it: writers
//! own their keys and set rising values (`company = "w<seq>"`), each write retried with its
//! Idempotency-Key until it is acknowledged; readers read any key, retrying until answered.
//! [`Registers::finish`] reads every key back and judges: nothing acknowledged lost, no read
//! older than a write acknowledged before it began, every key's history linearizable, and
//! every error absorbed by a retry.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Cluster;

/// How long one operation is retried before it counts as failed for the client.
const GIVE_UP: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct Op {
    key: usize,
    write: bool,
    /// Written, or seen.
    seq: u64,
    start: Instant,
    end: Instant,
    ok: bool,
}

fn seq_of(v: &serde_json::Value) -> u64 {
    v["company"]
        .as_str()
        .and_then(|c| c.strip_prefix('w'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a run of the load came to.
#[derive(Debug)]
pub struct Verdict {
    pub writes: usize,
    pub reads: usize,
    /// Attempts that failed and were tried again (absorbed).
    pub retries: u64,
    /// Operations that still failed after retrying for [`GIVE_UP`].
    pub failed: usize,
    pub lost: Vec<String>,
    pub stale: Vec<String>,
    pub not_linearizable: Vec<String>,
}

impl Verdict {
    /// Panics with the details unless every check held.
    pub fn assert_clean(&self) {
        assert!(
            self.writes > 200 && self.reads > 200,
            "too little load to judge: {self:?}"
        );
        assert_eq!(self.failed, 0, "errors a retry did not absorb: {self:?}");
        assert!(
            self.lost.is_empty(),
            "acknowledged writes lost: {:?}",
            self.lost
        );
        assert!(
            self.stale.is_empty(),
            "stale reads: {:?}",
            &self.stale[..self.stale.len().min(5)]
        );
        assert!(
            self.not_linearizable.is_empty(),
            "not linearizable: {:?}",
            self.not_linearizable
        );
    }
}

/// The running load.
pub struct Registers {
    prefix: String,
    keys: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    retries: Arc<AtomicU64>,
    history: Arc<Mutex<Vec<Op>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Registers {
    /// Creates `keys` customers `<prefix><k>` and starts `writers` writers and `readers`
    /// readers, each bounded in count (100,000 operations) as well as by [`Registers::finish`].
    pub async fn start(
        c: &Cluster,
        prefix: &str,
        keys: usize,
        writers: usize,
        readers: usize,
    ) -> Self {
        for k in 0..keys {
            let (s, _, v) = c
                .req(
                    "POST",
                    "/v1/customers",
                    Some(
                        &json!({"id": format!("{prefix}{k}"), "name": "R", "company": "w0"})
                            .to_string(),
                    ),
                )
                .await;
            assert_eq!(s, 201, "create {prefix}{k}: {v}");
        }
        let mut load = Self {
            prefix: prefix.to_string(),
            keys,
            start: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            retries: Arc::new(AtomicU64::new(0)),
            history: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
        };
        for w in 0..writers {
            load.spawn(
                c,
                move |i| (w + writers * (i % (keys / writers).max(1))) % keys,
                true,
            );
        }
        for r in 0..readers {
            load.spawn(c, move |i| (r * 7919 + i * 104_729) % keys, false);
        }
        load
    }

    fn spawn(
        &mut self,
        c: &Cluster,
        key_of: impl Fn(usize) -> usize + Send + 'static,
        write: bool,
    ) {
        let (http, gw, prefix) = (c.http.clone(), c.gateway.clone(), self.prefix.clone());
        let (stop, retries, history) = (
            self.stop.clone(),
            self.retries.clone(),
            self.history.clone(),
        );
        let keys = self.keys;
        self.tasks.push(tokio::spawn(async move {
            let mut seq = vec![0u64; keys];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let key = key_of(i);
                i += 1;
                let url = format!("{gw}/v1/customers/{prefix}{key}");
                let t0 = Instant::now();
                let (ok, value) = if write {
                    seq[key] += 1;
                    let s = seq[key];
                    let body = json!({"company": format!("w{s}")}).to_string();
                    let idem = format!("{prefix}{key}-{s}");
                    let ok = retry(&retries, || async {
                        let r = http
                            .patch(&url)
                            .header("idempotency-key", &idem)
                            .body(body.clone())
                            .send()
                            .await;
                        matches!(&r, Ok(r) if r.status() == 200).then_some(())
                    })
                    .await
                    .is_some();
                    (ok, s)
                } else {
                    match retry(&retries, || async {
                        let r = http.get(&url).send().await.ok()?;
                        if r.status() != 200 {
                            return None;
                        }
                        Some(seq_of(&r.json::<serde_json::Value>().await.ok()?))
                    })
                    .await
                    {
                        Some(v) => (true, v),
                        None => (false, 0),
                    }
                };
                history.lock().unwrap().push(Op {
                    key,
                    write,
                    seq: value,
                    start: t0,
                    end: Instant::now(),
                    ok,
                });
            }
        }));
    }

    /// Operations so far.
    pub fn count(&self) -> usize {
        self.history.lock().unwrap().len()
    }

    /// Stops the load, reads every key back and judges the history.
    pub async fn finish(self, c: &Cluster) -> Verdict {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let history = self.history.lock().unwrap().clone();
        let mut lost = Vec::new();
        for k in 0..self.keys {
            let last = history
                .iter()
                .filter(|o| o.write && o.ok && o.key == k)
                .map(|o| o.seq)
                .max()
                .unwrap_or(0);
            let (s, _, v) = c
                .req("GET", &format!("/v1/customers/{}{k}", self.prefix), None)
                .await;
            assert_eq!(s, 200, "{}{k} unreadable after the run: {v}", self.prefix);
            if seq_of(&v) < last {
                lost.push(format!(
                    "{}{k}: has w{} but w{last} was acknowledged",
                    self.prefix,
                    seq_of(&v)
                ));
            }
        }
        let mut stale = Vec::new();
        for r in history.iter().filter(|o| !o.write && o.ok) {
            let newest = history
                .iter()
                .filter(|w| w.write && w.ok && w.key == r.key && w.end < r.start)
                .map(|w| w.seq)
                .max()
                .unwrap_or(0);
            if r.seq < newest {
                stale.push(format!(
                    "{}{}: read w{} after w{newest} was acknowledged",
                    self.prefix, r.key, r.seq
                ));
            }
        }
        let mut h = keelson_chaos::History::default();
        for o in &history {
            let (kind, outcome) = match (o.write, o.ok) {
                (true, true) => (
                    keelson_chaos::OpKind::Write(o.seq),
                    keelson_chaos::Outcome::Ok,
                ),
                (true, false) => (
                    keelson_chaos::OpKind::Write(o.seq),
                    keelson_chaos::Outcome::Unknown,
                ),
                (false, true) => (
                    keelson_chaos::OpKind::Read(o.seq),
                    keelson_chaos::Outcome::Ok,
                ),
                (false, false) => continue,
            };
            let us = |t: Instant| t.duration_since(self.start).as_micros() as u64;
            h.push(
                &format!("{}{}", self.prefix, o.key),
                kind,
                us(o.start),
                us(o.end),
                outcome,
            );
        }
        Verdict {
            writes: history.iter().filter(|o| o.write).count(),
            reads: history.iter().filter(|o| !o.write).count(),
            retries: self.retries.load(Ordering::Relaxed),
            failed: history.iter().filter(|o| !o.ok).count(),
            lost,
            stale,
            not_linearizable: keelson_chaos::check_linearizable(&h)
                .iter()
                .map(|v| format!("{v:?}"))
                .collect(),
        }
    }
}

/// Tries `attempt` until it answers, for at most [`GIVE_UP`], counting the retries.
async fn retry<T, F, Fut>(retries: &AtomicU64, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + GIVE_UP;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = attempt().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
