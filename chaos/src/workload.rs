//! The scenario workload: creates, updates and reads of customer registers through the gateway,
//! paced to a rate, each one recorded in the history.
//!
//! ```text
//! worker w (of C) ──every C/rate s──▶ pick create|update|read (Mix)
//!     create: POST /v1/customers {id: <new key>, company: "w1"}        → owned by w
//!     update: PATCH /v1/customers/<key w owns> {company: "w<seq>"}     (Idempotency-Key)
//!     read:   GET /v1/customers/<any created key>                      → value seq
//!     ──▶ History (invoke, complete, key, value, outcome) + per-shard op counts
//! ```
//!
//! A key is written by one worker only, so its values rise; reads go to any key. A write that
//! got no definite answer is recorded as of unknown outcome, which is what the checkers expect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngExt;
use serde_json::json;

use crate::history::{History, OpKind, Outcome};
use crate::scenario::OpChoice;

/// The register value a customer document holds (`company = "w<seq>"`; 0 when absent).
pub fn value_of(doc: &serde_json::Value) -> u64 {
    doc["company"]
        .as_str()
        .and_then(|c| c.strip_prefix('w'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `GET url` as JSON, if it answers 200 (within `timeout`, else the client's).
pub async fn fetch_json(
    http: &reqwest::Client,
    url: &str,
    timeout: Option<Duration>,
) -> Option<serde_json::Value> {
    let mut req = http.get(url);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let r = req.send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// The gateway and how to reach it.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// `http://host:port`.
    pub base: String,
    /// Shared client.
    pub http: reqwest::Client,
}

/// How a write attempt ended.
fn write_outcome(r: &Result<reqwest::Response, reqwest::Error>) -> Outcome {
    match r {
        Ok(r) if r.status().is_success() => Outcome::Ok,
        // Refused as invalid, missing or conflicting: it did not happen.
        Ok(r) if matches!(r.status().as_u16(), 400 | 404 | 409 | 413 | 422) => Outcome::Failed,
        // 503, 504, timeouts, lost connections: it may have happened.
        _ => Outcome::Unknown,
    }
}

impl Gateway {
    /// The gateway at `base` (`https://host:port`), reached with `http` (which carries the
    /// cluster's CA, the API key and the workload's request timeout).
    pub fn new(base: String, http: reqwest::Client) -> Self {
        Self { base, http }
    }

    /// Creates customer `id` with value `value`.
    pub async fn create(&self, id: &str, value: u64) -> Outcome {
        let r = self
            .http
            .post(format!("{}/v1/customers", self.base))
            .header("idempotency-key", format!("{id}-create"))
            .json(&json!({"id": id, "name": "chaos register", "company": format!("w{value}")}))
            .send()
            .await;
        write_outcome(&r)
    }

    /// Sets customer `id`'s value.
    pub async fn update(&self, id: &str, value: u64) -> Outcome {
        let r = self
            .http
            .patch(format!("{}/v1/customers/{id}", self.base))
            .header("idempotency-key", format!("{id}-{value}"))
            .json(&json!({"company": format!("w{value}")}))
            .send()
            .await;
        write_outcome(&r)
    }

    /// Reads customer `id`'s value: `Some(0)` when it does not exist, `None` without an answer.
    pub async fn read(&self, id: &str) -> Option<u64> {
        let r = self
            .http
            .get(format!("{}/v1/customers/{id}", self.base))
            .send()
            .await
            .ok()?;
        match r.status().as_u16() {
            200 => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .map(|v| value_of(&v)),
            404 => Some(0),
            _ => None,
        }
    }

    /// `GET path` as JSON, if it answers 200.
    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        fetch_json(&self.http, &format!("{}{path}", self.base), None).await
    }

    /// Every shard's primary, by shard number, as the gateway follows the map; `None` if it does
    /// not answer.
    pub async fn primaries(&self) -> Option<Vec<String>> {
        let v = self.get_json("/v1/cluster/shards").await?;
        Some(
            v["shards"]
                .as_array()?
                .iter()
                .map(|p| p["primary"].as_str().unwrap_or("").to_string())
                .collect(),
        )
    }

    /// The shard of customer `id`.
    pub async fn shard_of(&self, id: &str) -> Option<u32> {
        let v = self
            .get_json(&format!("/v1/cluster/locate/customer/{id}"))
            .await?;
        v["shard"].as_u64().map(|s| s as u32)
    }
}

/// The running workload, shared with the runner.
pub struct Load {
    spec: crate::scenario::Workload,
    gateway: Gateway,
    prefix: String,
    stop: AtomicBool,
    history: Mutex<History>,
    /// Created keys, and the shard of each.
    keys: RwLock<Vec<(String, u32)>>,
    /// Operations begun per shard (which shard is busiest).
    per_shard: Vec<AtomicU64>,
    /// Operations begun / succeeded (for the progress bar).
    pub begun: AtomicU64,
    /// Operations that succeeded.
    pub succeeded: AtomicU64,
}

impl Load {
    /// Creates the scenario's keys (before the clock starts) and learns their shards.
    pub async fn prepare(
        spec: &crate::scenario::Workload,
        gateway: Gateway,
        prefix: &str,
        shards: u32,
    ) -> Result<Arc<Self>, String> {
        let ids: Vec<String> = (0..spec.keys).map(|i| format!("{prefix}-k{i}")).collect();
        let mut keys = Vec::with_capacity(ids.len());
        let gateway = &gateway;
        for chunk in ids.chunks(32) {
            let results = futures_util::future::join_all(chunk.iter().map(|id| async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    // Failed means it exists already (an earlier attempt took effect).
                    if gateway.create(id, 1).await != Outcome::Unknown
                        && gateway.read(id).await == Some(1)
                    {
                        if let Some(s) = gateway.shard_of(id).await {
                            return Ok((id.clone(), s));
                        }
                    }
                    if Instant::now() > deadline {
                        return Err(format!("cannot create {id} through {}", gateway.base));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }))
            .await;
            for r in results {
                keys.push(r?);
            }
        }
        Ok(Arc::new(Self {
            spec: spec.clone(),
            gateway: gateway.clone(),
            prefix: prefix.to_string(),
            stop: AtomicBool::new(false),
            history: Mutex::new(History::default()),
            keys: RwLock::new(keys),
            per_shard: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            begun: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
        }))
    }

    /// Runs the workers from `start` until `stop` (or a count bound); returns when all ended.
    pub async fn run(self: Arc<Self>, start: Instant, duration: Duration) {
        let workers = self.spec.concurrency as usize;
        let period = Duration::from_secs_f64(workers as f64 / self.spec.rate as f64);
        // Bounded in count as well as in time.
        let max_per_worker =
            (self.spec.rate as f64 * duration.as_secs_f64() * 1.2 / workers as f64) as u64 + 10;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                me.worker(w, workers, start, period, max_per_worker).await
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn worker(
        &self,
        w: usize,
        workers: usize,
        start: Instant,
        period: Duration,
        max_ops: u64,
    ) {
        let mut worker = Worker::new(self, w, workers);
        // Spread the workers' ticks over one period.
        let mut next = start + period.mul_f64(w as f64 / workers as f64);
        for _ in 0..max_ops {
            tokio::time::sleep_until(next.into()).await;
            next += period;
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let choice = {
                let total = self.spec.mix.total();
                let r = rand::rng().random_range(0..total);
                self.spec.mix.pick(r)
            };
            let t0 = Instant::now();
            let (key, shard, kind, outcome) = worker.perform(choice).await;
            let t1 = Instant::now();
            let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
            self.record(&key, shard, kind, (us(t0), us(t1)), outcome);
        }
    }

    /// Counts one finished operation and adds it to the history.
    fn record(&self, key: &str, shard: u32, kind: OpKind, (t0, t1): (u64, u64), outcome: Outcome) {
        self.begun.fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.per_shard.get(shard as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.history
            .lock()
            .expect("history lock")
            .push(key, kind, t0, t1, outcome);
    }

    /// Operations begun and succeeded so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.begun.load(Ordering::Relaxed),
            self.succeeded.load(Ordering::Relaxed),
        )
    }

    /// Asks every worker to stop after its current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The shard with the most operations so far.
    pub fn busiest_shard(&self) -> u32 {
        self.per_shard
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| c.load(Ordering::Relaxed))
            .map(|(i, _)| i as u32)
            .unwrap_or(0)
    }

    /// The history the checkers need: the preloaded keys' first writes (acknowledged before
    /// the clock started) followed by the workload's operations.
    pub fn history_with_preload(&self) -> History {
        let mut h = History::default();
        for i in 0..self.spec.keys {
            h.push(
                &format!("{}-k{i}", self.prefix),
                OpKind::Write(1),
                0,
                0,
                Outcome::Ok,
            );
        }
        for o in &self.history.lock().expect("history lock").ops {
            h.push(
                &o.key,
                o.kind.clone(),
                o.invoke_us,
                o.complete_us,
                o.outcome,
            );
        }
        h
    }

    /// Every created key with its shard.
    pub fn keys(&self) -> Vec<(String, u32)> {
        self.keys.read().expect("keys lock").clone()
    }

    /// The history recorded so far.
    pub fn history(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }
}

/// One worker's own state: the keys it writes (only it does, so their values rise) and the
/// next value of each.
struct Worker<'a> {
    load: &'a Load,
    w: usize,
    owned: Vec<(String, u32)>,
    seq: HashMap<String, u64>,
    created: u64,
}

impl<'a> Worker<'a> {
    /// Worker `w` of `workers` owns every `workers`-th preloaded key.
    fn new(load: &'a Load, w: usize, workers: usize) -> Self {
        let owned: Vec<(String, u32)> = load
            .keys
            .read()
            .expect("keys lock")
            .iter()
            .enumerate()
            .filter(|(i, _)| i % workers == w)
            .map(|(_, k)| k.clone())
            .collect();
        let seq = owned.iter().map(|(k, _)| (k.clone(), 1)).collect();
        Self {
            load,
            w,
            owned,
            seq,
            created: 0,
        }
    }

    /// Performs one operation: (key, shard, what it was, outcome).
    async fn perform(&mut self, choice: OpChoice) -> (String, u32, OpKind, Outcome) {
        match choice {
            OpChoice::Create => self.create().await,
            OpChoice::Update if !self.owned.is_empty() => self.update().await,
            _ => self.read().await,
        }
    }

    async fn create(&mut self) -> (String, u32, OpKind, Outcome) {
        let gateway = &self.load.gateway;
        self.created += 1;
        let id = format!("{}-w{}n{}", self.load.prefix, self.w, self.created);
        let outcome = gateway.create(&id, 1).await;
        let shard = gateway.shard_of(&id).await.unwrap_or(0);
        if outcome == Outcome::Ok {
            self.owned.push((id.clone(), shard));
            self.seq.insert(id.clone(), 1);
            self.load
                .keys
                .write()
                .expect("keys lock")
                .push((id.clone(), shard));
        }
        (id, shard, OpKind::Write(1), outcome)
    }

    async fn update(&mut self) -> (String, u32, OpKind, Outcome) {
        let (id, shard) = self.owned[rand::rng().random_range(0..self.owned.len())].clone();
        let s = self.seq.entry(id.clone()).or_insert(1);
        *s += 1;
        let v = *s;
        let outcome = self.load.gateway.update(&id, v).await;
        (id, shard, OpKind::Write(v), outcome)
    }

    async fn read(&self) -> (String, u32, OpKind, Outcome) {
        let (id, shard) = {
            let keys = self.load.keys.read().expect("keys lock");
            keys[rand::rng().random_range(0..keys.len())].clone()
        };
        match self.load.gateway.read(&id).await {
            Some(v) => (id, shard, OpKind::Read(v), Outcome::Ok),
            None => (id, shard, OpKind::Read(0), Outcome::Failed),
        }
    }
}
