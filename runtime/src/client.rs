//! Location transparency: send a command to an entity by `(kind, id)` from any process. The client
//! computes the shard, finds its owner in the shard map, refuses at once if the owner is down (a
//! shard with one copy is unavailable, never served empty elsewhere), and otherwise calls the
//! owner's shard host directly: one hop.

mod retry;
pub mod slow_nodes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;

use crate::cluster::membership::ClusterView;
use crate::consensus::map_follower::Refresh;
use crate::consensus::MapWatch;
use crate::metrics;
use crate::wire::{
    self, EntityReply, EntityRequest, Fault, IdempotencyKey, RemoteError, ShardHostRpc,
};
use keelson_rules::reads::{self, Candidate};
use keelson_rules::shard_map::{ShardId, ShardMap};

/// Why a request got no answer from its entity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The shard's owner is down or unreachable.
    #[error("shard {shard} is unavailable: its owner node \"{owner}\" is {reason}")]
    Unavailable {
        /// Shard.
        shard: u32,
        /// Owner node.
        owner: String,
        /// e.g. `down`, `not connected`.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("shard {shard} on node \"{owner}\" did not answer within {after_ms} ms")]
    Timeout {
        /// Shard.
        shard: u32,
        /// Owner node.
        owner: String,
        /// Deadline.
        after_ms: u64,
    },
    /// The owner answered with a runtime error.
    #[error("{error}")]
    Remote {
        /// Shard.
        shard: u32,
        /// Owner node.
        owner: String,
        /// What it said.
        error: RemoteError,
    },
}

/// What a request may do, which decides when it can be retried safely.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The command only reads.
    pub read: bool,
    /// The client's idempotency key for a write: with one, a write whose outcome is unknown
    /// is retried, and the entity applies it once.
    pub idempotency_key: Option<IdempotencyKey>,
    /// A read that only the primary serves (its live entity, with what it holds in memory),
    /// never a follower's stored copy.
    pub at_primary: bool,
}

impl Access {
    /// A read.
    pub fn read() -> Self {
        Self {
            read: true,
            ..Self::default()
        }
    }

    /// A read served by the primary's live entity: for commands whose answer the entity keeps
    /// computed in memory, which a follower would have to rebuild from the stored state.
    pub fn primary_read() -> Self {
        Self {
            read: true,
            at_primary: true,
            ..Self::default()
        }
    }

    /// A write, with an optional idempotency key.
    pub fn write(idempotency_key: Option<IdempotencyKey>) -> Self {
        Self {
            read: false,
            idempotency_key,
            at_primary: false,
        }
    }

    /// A read when `read`, else a write with `idempotency_key`.
    pub fn of(read: bool, idempotency_key: Option<IdempotencyKey>) -> Self {
        if read {
            Self::read()
        } else {
            Self::write(idempotency_key)
        }
    }

    fn idempotent(&self) -> bool {
        self.read || self.idempotency_key.is_some()
    }
}

/// A successful answer and where it came from.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The node that answered.
    pub node: String,
    /// The shard.
    pub shard: ShardId,
    /// The entity's encoded reply.
    pub reply: Vec<u8>,
    /// True when the reply is the one kept for the request's idempotency key, sent again.
    pub replayed: bool,
}

/// Sends entity requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    map: MapWatch,
    view: watch::Receiver<ClusterView>,
    timeout: Duration,
    refresh: Option<Refresh>,
    /// What this process has seen of each node's answers.
    stats: Arc<HashMap<String, Arc<NodeStats>>>,
    /// Nodes far slower or failing more than their peers: avoided where there is a choice.
    degraded: Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>,
}

/// One node as this process sees it: requests outstanding to it and its recent latency.
#[derive(Debug, Default)]
struct NodeStats {
    outstanding: AtomicU32,
    latency: std::sync::Mutex<Ewma>,
    /// Requests completed, and of those failed (timeout or connection lost): for gray-failure
    /// detection.
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

/// An exponentially weighted latency that fades back toward zero when not refreshed, so a node
/// avoided for being slow is tried again later.
#[derive(Debug, Default)]
struct Ewma {
    us: f64,
    at: Option<Instant>,
}

impl Ewma {
    fn add(&mut self, sample: Duration) {
        let s = sample.as_micros() as f64;
        self.us = if self.at.is_none() {
            s
        } else {
            0.8 * self.us + 0.2 * s
        };
        self.at = Some(Instant::now());
    }

    fn now(&self) -> f64 {
        match self.at {
            Some(t) => self.us / (1.0 + t.elapsed().as_secs_f64()),
            None => 0.0,
        }
    }
}

/// One request to a node: counted as outstanding until dropped, when its latency is recorded.
struct InFlight(Arc<NodeStats>, Instant);

impl InFlight {
    fn new(stats: Arc<NodeStats>) -> Self {
        stats.outstanding.fetch_add(1, Ordering::AcqRel);
        Self(stats, Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.0
            .latency
            .lock()
            .expect("latency lock")
            .add(self.1.elapsed());
    }
}

impl ClusterClient {
    /// A client routing with `map` and the membership `view`.
    pub fn new(map: MapWatch, view: watch::Receiver<ClusterView>, timeout: Duration) -> Self {
        let stats = map
            .borrow()
            .nodes()
            .iter()
            .map(|n| (n.clone(), Arc::default()))
            .collect();
        Self {
            stats: Arc::new(stats),
            degraded: Arc::default(),
            map,
            view,
            timeout,
            refresh: None,
        }
    }

    /// Asks `refresh` for a newer map whenever a request is retried.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// The shard map in force.
    pub fn map(&self) -> Arc<ShardMap> {
        self.map.borrow().clone()
    }

    /// The current membership view.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Sends `payload` to entity `(kind, id)` and waits for its answer. Requests refused before
    /// they were applied (owner down while a failover is possible, or the node was not the
    /// owner) are retried with the newest map until the request deadline; `read` requests are
    /// also retried after a timeout or a lost connection.
    pub async fn send(
        &self,
        kind: &str,
        id: &str,
        payload: Vec<u8>,
        request_id: &str,
        fault: Option<Fault>,
        access: Access,
    ) -> Result<Answer, RequestError> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let mut pause = backoff.next_delay();
        let mut first = true;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A first read may go to any in-sync copy; a retried one goes to the primary.
            let spread = access.read && !access.at_primary && std::mem::take(&mut first);
            let result = self
                .send_once(
                    kind,
                    id,
                    payload.clone(),
                    request_id,
                    fault,
                    &access,
                    spread,
                    remaining,
                )
                .await;
            let err = match result {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            if !self.retryable(&err, access.idempotent()) || Instant::now() + pause >= deadline {
                return Err(err);
            }
            tracing::debug!(request_id, error = %err, "retrying with the newest shard map");
            metrics::get()
                .routed_requests
                .with_label_values(&["retried"])
                .inc();
            if let Some(r) = &self.refresh {
                r.notify_one();
            }
            tokio::time::sleep(pause).await;
            pause = backoff.next_delay();
        }
    }

    /// The in-sync copy of `shard` (primary included) that looks least loaded: requests this
    /// process has outstanding to it first (a stalled node piles them up at once), then the load
    /// it reports and its heartbeat round trip; a little jitter spreads ties.
    fn least_loaded(&self, map: &ShardMap, shard: ShardId) -> String {
        let p = map.placement(shard);
        let view = self.view.borrow();
        let score = |n: &String| -> u64 {
            let (out, slow) = self.stats.get(n).map_or((0, 0), |s| {
                let out = s.outstanding.load(Ordering::Acquire) as u64;
                (out, s.latency.lock().expect("latency lock").now() as u64)
            });
            let m = view.members.iter().find(|m| &m.name == n);
            let (load, rtt) = m
                .map(|m| (m.load, m.rtt_us.unwrap_or(0)))
                .unwrap_or_default();
            out * 1000
                + slow / 10
                + load.inflight as u64 * 100
                + load.cpu_permille as u64
                + rtt / 10
                + rand::rng().random_range(0..50)
        };
        // A follower read costs one more hop (the primary confirms it is in sync): the rule
        // prefers the primary until it is busier by about one outstanding request.
        let degraded = self.degraded.read().expect("degraded lock");
        let candidates: Vec<Candidate<'_>> = std::iter::once(&p.primary)
            .chain(&p.in_sync)
            .map(|n| Candidate {
                name: n,
                up: view.is_up(n),
                primary: *n == p.primary,
                degraded: degraded.contains(n),
                load: score(n),
            })
            .collect();
        reads::choose(&candidates).unwrap_or(&p.primary).to_string()
    }

    /// Watches every node's heartbeat round trip and request errors once a second: marks the
    /// degraded ones (see
    /// `slow_nodes`), and exports them with each node's latency and the shards whose primary is
    /// down, as this process sees them.
    pub fn spawn_health_watch(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut detector = crate::client::slow_nodes::SlowNodeDetector::default();
            let mut last: HashMap<String, (u64, u64)> = HashMap::new();
            // Each node's own latency: its heartbeat round trip, smoothed. (Request latency
            // would blame a follower for the primary it asks before serving a read.)
            let mut rtt: HashMap<String, f64> = HashMap::new();
            metrics::get().known_nodes(me.stats.keys().map(String::as_str));
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let view = me.view.borrow().clone();
                for m in &view.members {
                    if let Some(us) = m.rtt_us {
                        let e = rtt.entry(m.name.clone()).or_insert(us as f64);
                        *e = 0.7 * *e + 0.3 * us as f64;
                    }
                }
                n += 1;
                if !n.is_multiple_of(4) {
                    continue;
                }
                let m = metrics::get();
                let mut samples = std::collections::BTreeMap::new();
                for (name, s) in me.stats.iter() {
                    let req = s.requests.load(Ordering::Acquire);
                    let err = s.errors.load(Ordering::Acquire);
                    let (r0, e0) = last.insert(name.clone(), (req, err)).unwrap_or((req, err));
                    let latency_us = rtt.get(name).copied().unwrap_or(0.0);
                    m.node_latency
                        .with_label_values(&[name])
                        .set(latency_us / 1e6);
                    samples.insert(
                        name.clone(),
                        crate::client::slow_nodes::NodeSample {
                            latency_us,
                            requests: req - r0,
                            errors: err - e0,
                        },
                    );
                }
                let degraded = detector.observe(&samples);
                for name in me.stats.keys() {
                    m.node_degraded
                        .with_label_values(&[name])
                        .set(i64::from(degraded.contains(name)));
                }
                *me.degraded.write().expect("degraded lock") = degraded;
                let map = me.map();
                m.shards_unavailable
                    .set(map.iter().filter(|(_, p)| !view.is_up(&p.primary)).count() as i64);
            }
        })
    }

    fn retryable(&self, err: &RequestError, idempotent: bool) -> bool {
        let map = self.map();
        let view = self.view.borrow();
        let up = map.nodes().iter().filter(|n| view.is_up(n)).count();
        let (failure, shard) = match err {
            RequestError::Unavailable { shard, .. } => (retry::Failure::Unavailable, *shard),
            RequestError::Timeout { shard, .. } => (retry::Failure::Timeout, *shard),
            RequestError::Remote { shard, error, .. } => (retry::Failure::Remote(error), *shard),
        };
        let facts = retry::Facts {
            majority_up: up * 2 > map.nodes().len(),
            in_sync_follower_up: map
                .placement(ShardId(shard))
                .in_sync
                .iter()
                .any(|n| view.is_up(n)),
            idempotent,
        };
        retry::may_retry(failure, facts)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        kind: &str,
        id: &str,
        payload: Vec<u8>,
        request_id: &str,
        fault: Option<Fault>,
        access: &Access,
        spread: bool,
        timeout: Duration,
    ) -> Result<Answer, RequestError> {
        let map = self.map();
        let (shard, primary) = map.locate(kind, id);
        let owner = if spread {
            self.least_loaded(&map, shard)
        } else {
            primary.to_string()
        };
        let host = self.host_of(shard, &owner)?;
        let request = wire::encode(&EntityRequest {
            request_id: request_id.to_string(),
            kind: kind.to_string(),
            id: id.to_string(),
            shard: shard.0,
            epoch: map.epoch(shard),
            fault,
            read: access.read,
            idempotency_key: access.idempotency_key.clone(),
            payload,
        });
        let bytes = self.call(&host, shard, &owner, request, timeout).await?;
        read_reply(shard, owner, &bytes)
    }

    /// `owner`'s shard host, if the owner is up and connected.
    fn host_of(&self, shard: ShardId, owner: &str) -> Result<ActorRef<ShardHostRpc>, RequestError> {
        {
            let view = self.view.borrow();
            if !view.is_up(owner) {
                let state = view.state_of(owner).unwrap_or("unknown");
                return Err(unavailable(shard, owner, state));
            }
        }
        let Some(cell) = ractor::pg::get_members(&wire::shard_host_group(owner))
            .into_iter()
            .next()
        else {
            return Err(unavailable(shard, owner, "not connected"));
        };
        Ok(cell.into())
    }

    /// Sends one request frame to `owner`'s shard host, counting it in the owner's stats.
    async fn call(
        &self,
        host: &ActorRef<ShardHostRpc>,
        shard: ShardId,
        owner: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let in_flight = self.stats.get(owner).map(|s| InFlight::new(s.clone()));
        let result = host
            .call(|r| ShardHostRpc::Request(request, r), Some(timeout))
            .await;
        drop(in_flight);
        if let Some(s) = self.stats.get(owner) {
            s.requests.fetch_add(1, Ordering::AcqRel);
            if !matches!(result, Ok(CallResult::Success(_))) {
                s.errors.fetch_add(1, Ordering::AcqRel);
            }
        }
        match result {
            Ok(CallResult::Success(bytes)) => Ok(bytes),
            Ok(CallResult::Timeout) => {
                metrics::get()
                    .routed_requests
                    .with_label_values(&["timeout"])
                    .inc();
                Err(RequestError::Timeout {
                    shard: shard.0,
                    owner: owner.to_string(),
                    after_ms: timeout.as_millis() as u64,
                })
            }
            Ok(CallResult::SenderError) | Err(_) => {
                Err(unavailable(shard, owner, "unreachable (connection lost)"))
            }
        }
    }
}

/// A request found no way to `owner` (counted).
fn unavailable(shard: ShardId, owner: &str, reason: &str) -> RequestError {
    metrics::get()
        .routed_requests
        .with_label_values(&["unavailable"])
        .inc();
    RequestError::Unavailable {
        shard: shard.0,
        owner: owner.to_string(),
        reason: reason.to_string(),
    }
}

/// The answer in `owner`'s reply frame (counted by outcome).
fn read_reply(shard: ShardId, owner: String, bytes: &[u8]) -> Result<Answer, RequestError> {
    let m = metrics::get();
    let reply = wire::decode::<EntityReply>(bytes).map_err(|e| RequestError::Remote {
        shard: shard.0,
        owner: owner.clone(),
        error: RemoteError::BadRequest(format!("reply does not decode: {e}")),
    })?;
    let (reply, replayed) = match reply {
        EntityReply::Ok(reply) => (reply, false),
        EntityReply::Replayed(reply) => (reply, true),
        EntityReply::Err(error) => {
            m.routed_requests.with_label_values(&["remote_error"]).inc();
            return Err(RequestError::Remote {
                shard: shard.0,
                owner,
                error,
            });
        }
    };
    m.routed_requests.with_label_values(&["ok"]).inc();
    Ok(Answer {
        node: owner,
        shard,
        reply,
        replayed,
    })
}
