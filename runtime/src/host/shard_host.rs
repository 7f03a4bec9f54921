//! The node's one remotable actor for entity traffic. It checks that a request is for a shard this
//! node owns in the current epoch, tracks which entities are active (passivating the idle and the
//! least recently used past the node-wide cap), and hands the request to the shard's supervisor.
//! A small task per request waits for the entity's answer so a slow or crashing entity never
//! blocks the host.
//!
//! ```text
//! peer or local client ──ShardHostRpc::Request──▶ ShardHost ──Deliver──▶ ShardSupervisor(shard)
//!        ▲                                           │ (oneshot)               │
//!        └──────── EntityReply ◀── reply task ◀──────┴─────── EntityActor ◀────┘
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::cluster::lease::Lease;
use crate::cluster::load::Load;
use crate::consensus::MapWatch;
use crate::host::activation::ActivationTable;
use crate::host::entity::{CallResult, EntityKey, Served};
use crate::host::entity_kinds::EntityKinds;
use crate::host::shard_supervisor::{Pending, ShardMsg, ShardSupervisor, ShardSupervisorArgs};
use crate::metrics;
use crate::replication::follower::Follower;
use crate::replication::hand_over;
use crate::replication::Replicator;
use crate::restart_budget::RestartPolicy;
use crate::storage::Store;
use crate::wire::frame_check::{self, FrameLimits};
use crate::wire::{self, EntityReply, EntityRequest, ReadIndex, RemoteError, ShardHostRpc};
use keelson_rules::reads::{self, Ask, Serve};
use keelson_rules::shard_map::{shard_for, ShardId};

/// Entity requests a node works on at once; past it a request is answered `Overloaded` at once
/// rather than queued behind work that would miss its deadline (a node completes roughly
/// 10,000-30,000 entity requests a second on two cores).
pub const MAX_IN_FLIGHT: u32 = 10_000;

/// Start-up arguments of the shard host (cloned for every start: the node restarts a host that
/// died).
#[derive(Debug, Clone)]
pub struct ShardHostArgs {
    /// This node's name.
    pub node: String,
    /// The shard map, as applied on this node.
    pub map: MapWatch,
    /// The node's store.
    pub store: Store,
    /// Entity kinds hosted.
    pub kinds: Arc<EntityKinds>,
    /// Restart policy for every entity.
    pub policy: RestartPolicy,
    /// Size and idempotency bounds of every entity.
    pub entity_limits: crate::config::EntityLimits,
    /// Passivate entities idle this long.
    pub idle_timeout: Duration,
    /// Most active entities on this node.
    pub max_active: usize,
    /// Whether injected faults are honoured.
    pub fault_injection: bool,
    /// Longest wait for an entity's answer.
    pub request_timeout: Duration,
    /// The node's write path.
    pub replicator: Arc<Replicator>,
    /// This node's primary lease.
    pub lease: Lease,
    /// This node's load counters.
    pub load: Load,
    /// Byte limits of frames from and to peers.
    pub frames: FrameLimits,
}

/// Shard host state.
pub struct ShardHostState {
    args: ShardHostArgs,
    supervisors: HashMap<ShardId, ActorRef<ShardMsg>>,
    by_actor: HashMap<ActorId, ShardId>,
    active: ActivationTable<(ShardId, EntityKey)>,
    ticker: Option<JoinHandle<()>>,
    map_task: Option<tokio::task::JoinHandle<()>>,
    /// The replication frames from peers (writes, read index, copy pages).
    follower: Follower,
    /// Shards this node was primary of at the last map change.
    primary_of: std::collections::HashSet<u32>,
}

/// The shard host actor.
pub struct ShardHost;

/// Where a request is served on this node.
enum Route {
    /// As the shard's primary, by the entity actor.
    Primary(ShardId),
    /// As an in-sync follower, a read against the stored state (the primary's name).
    Follower(ShardId, String),
}

impl ShardHostState {
    /// Stops the entities of shards this node no longer leads: their state now lives elsewhere.
    fn map_changed(&mut self) {
        let map = self.args.map.borrow().clone();
        let now: std::collections::HashSet<u32> =
            map.shards_of(&self.args.node).map(|s| s.0).collect();
        let m = metrics::get();
        m.shards_owned.set(now.len() as i64);
        m.shards_under_replicated.set(
            map.iter()
                .filter(|(_, p)| {
                    p.primary == self.args.node && 1 + p.in_sync.len() < map.replication_factor()
                })
                .count() as i64,
        );
        m.shards_following.set(
            map.iter()
                .filter(|(_, p)| p.in_sync.contains(&self.args.node))
                .count() as i64,
        );
        for lost in self.primary_of.clone().difference(&now) {
            self.stop_shard(ShardId(*lost), "primary role moved");
        }
        self.primary_of = now;
    }

    /// Stops the entities of a shard this node no longer leads.
    fn stop_shard(&mut self, shard: ShardId, why: &str) {
        if let Some(sup) = self.supervisors.remove(&shard) {
            tracing::info!(shard = shard.0, why, "passivating the shard's entities");
            self.by_actor.remove(&sup.get_id());
            sup.stop(Some(why.to_string()));
        }
    }

    fn check(&self, req: &EntityRequest) -> Result<Route, RemoteError> {
        let a = &self.args;
        if req.fault.is_some() && !a.fault_injection {
            return Err(RemoteError::FaultInjectionDisabled(a.node.clone()));
        }
        if a.kinds.get(&req.kind).is_none() {
            return Err(RemoteError::UnknownKind(req.kind.clone()));
        }
        let map = a.map.borrow().clone();
        let shard = shard_for(&req.kind, &req.id, map.shard_count());
        let p = map.placement(shard);
        // The sender's epoch may trail ours by follower changes; what fences is that this node
        // leads the shard in its own map while it holds its lease.
        let ask = Ask {
            shard_matches: shard.0 == req.shard,
            read: req.read,
            fault: req.fault.is_some(),
        };
        match reads::serve(self.follower.standing(shard, p, map.version()), ask) {
            Serve::Primary => Ok(Route::Primary(shard)),
            Serve::Follower => Ok(Route::Follower(shard, p.primary.clone())),
            Serve::NoLease => Err(RemoteError::NoLease(a.node.clone())),
            Serve::NotOwner => Err(RemoteError::NotOwner {
                node: a.node.clone(),
                shard: shard.0,
                epoch: req.epoch,
                owner: p.primary.clone(),
            }),
        }
    }

    /// A read on an in-sync follower: the primary confirms the follower is still in sync (so it
    /// holds every acknowledged write), then the command runs against the stored state.
    fn follower_read(
        &self,
        shard: ShardId,
        primary: String,
        req: EntityRequest,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let (node, store, kinds, timeout) = (
            self.args.node.clone(),
            self.args.store.clone(),
            self.args.kinds.clone(),
            self.args.request_timeout,
        );
        let guard = self.args.load.begin();
        let limit = self.args.frames.max_frame_bytes;
        tokio::spawn(async move {
            let _guard = guard;
            let ask = wire::encode(&ReadIndex {
                shard: shard.0,
                follower: node.clone(),
            });
            let confirmed = crate::wire::rpc::call_host(
                &primary,
                ShardHostRpc::ReadIndex,
                ask,
                timeout.min(Duration::from_millis(500)),
            )
            .await
            .ok()
            .and_then(|b| wire::decode::<bool>(&b).ok())
            .unwrap_or(false);
            let answer = if !confirmed {
                EntityReply::Err(RemoteError::NotOwner {
                    node,
                    shard: shard.0,
                    epoch: req.epoch,
                    owner: primary,
                })
            } else {
                let factory = kinds.get(&req.kind).expect("checked").clone();
                metrics::get()
                    .reads_served
                    .with_label_values(&["follower"])
                    .inc();
                match factory.read(&store, shard, &req.id, &req.payload) {
                    Ok(b) => EntityReply::Ok(b),
                    Err(e) => EntityReply::Err(e),
                }
            };
            let _ = reply.send(bounded(&answer, limit));
        });
    }

    async fn supervisor(
        &mut self,
        myself: &ActorRef<ShardHostRpc>,
        shard: ShardId,
    ) -> Result<ActorRef<ShardMsg>, RemoteError> {
        if let Some(s) = self.supervisors.get(&shard) {
            return Ok(s.clone());
        }
        let args = ShardSupervisorArgs {
            shard,
            store: self.args.store.clone(),
            kinds: self.args.kinds.clone(),
            policy: self.args.policy,
            replicator: self.args.replicator.clone(),
            limits: self.args.entity_limits,
        };
        let (sup, _) = Actor::spawn_linked(None, ShardSupervisor, args, myself.get_cell())
            .await
            .map_err(|e| {
                RemoteError::Storage(format!("cannot start shard {shard} supervisor: {e}"))
            })?;
        self.by_actor.insert(sup.get_id(), shard);
        self.supervisors.insert(shard, sup.clone());
        Ok(sup)
    }

    fn passivate(&self, evicted: Vec<(ShardId, EntityKey)>, reason: &'static str) {
        for (shard, key) in evicted {
            if let Some(sup) = self.supervisors.get(&shard) {
                let _ = sup.send_message(ShardMsg::Passivate(key, reason));
            }
        }
    }

    /// An entity request: admitted, routed (primary or follower read), then delivered to its
    /// shard's supervisor; a task waits for the entity's answer.
    async fn request(
        &mut self,
        myself: &ActorRef<ShardHostRpc>,
        bytes: Vec<u8>,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let req = match self.admit(&bytes) {
            Ok(r) => r,
            Err(answer) => {
                let _ = reply.send(wire::encode(&answer));
                return;
            }
        };
        match self.check(&req) {
            Ok(Route::Primary(shard)) => self.deliver(myself, shard, req, reply).await,
            Ok(Route::Follower(s, primary)) => self.follower_read(s, primary, req, reply),
            Err(e) => {
                // Routine while shards move or a lease lapses: the sender retries (a warning per
                // refusal would flood the log at thousands a second, and slow the node further).
                let reason = match e {
                    RemoteError::NoLease(_) => "no_lease",
                    _ => "not_owner",
                };
                metrics::get()
                    .requests_refused
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(request_id = %req.request_id, kind = %req.kind, id = %req.id, error = %e, "request refused");
                let _ = reply.send(wire::encode(&EntityReply::Err(e)));
            }
        }
    }

    /// Decodes and checks a request, refusing it at once past the node's in-flight limit.
    fn admit(&self, bytes: &[u8]) -> Result<EntityRequest, EntityReply> {
        let checked = frame_check::decode::<EntityRequest>("request", bytes, &self.args.frames)
            .and_then(|r| {
                frame_check::entity_request(&r, self.args.map.borrow().shard_count())?;
                Ok(r)
            });
        let req = checked.map_err(|e| {
            frame_check::refuse("request", &e);
            EntityReply::Err(RemoteError::BadRequest(format!(
                "entity request refused: {e}"
            )))
        })?;
        if self.args.load.report().inflight >= MAX_IN_FLIGHT {
            tracing::debug!(request_id = %req.request_id, "refused: node at its in-flight limit");
            return Err(EntityReply::Err(RemoteError::Overloaded {
                node: self.args.node.clone(),
                limit: MAX_IN_FLIGHT,
            }));
        }
        Ok(req)
    }

    /// Hands a request this node serves as primary to its entity, and spawns the wait for the
    /// answer.
    async fn deliver(
        &mut self,
        myself: &ActorRef<ShardHostRpc>,
        shard: ShardId,
        req: EntityRequest,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let (req_read, kind) = (req.read, req.kind.clone());
        let key = EntityKey {
            kind: req.kind,
            id: req.id,
        };
        let evicted = self.active.touch(&(shard, key.clone()), Instant::now());
        self.passivate(evicted, "cap");
        let sup = match self.supervisor(myself, shard).await {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(wire::encode(&EntityReply::Err(e)));
                return;
            }
        };
        tracing::debug!(request_id = %req.request_id, entity = %key, shard = shard.0, "delivering");
        let (tx, rx) = ractor::concurrency::oneshot::<CallResult>();
        let failed = RemoteError::EntityFailed {
            kind: key.kind.clone(),
            id: key.id.clone(),
            reason: "it panicked or returned an error".to_string(),
        };
        let pending = Pending {
            payload: req.payload,
            fault: req.fault,
            idempotency_key: req.idempotency_key,
            request_id: req.request_id.clone(),
            reply: tx.into(),
        };
        if sup.send_message(ShardMsg::Deliver(key, pending)).is_err() {
            let _ = reply.send(wire::encode(&EntityReply::Err(failed)));
            return;
        }
        let guard = self.args.load.begin();
        let in_flight = metrics::get()
            .entity_requests_in_flight
            .with_label_values(&[&kind]);
        in_flight.inc();
        if req_read {
            metrics::get()
                .reads_served
                .with_label_values(&["primary"])
                .inc();
        }
        let (request_id, limit) = (req.request_id, self.args.frames.max_frame_bytes);
        let timeout = self.args.request_timeout;
        tokio::spawn(async move {
            let _guard = guard;
            let started = Instant::now();
            let answer = answer_of(tokio::time::timeout(timeout, rx).await, failed, timeout);
            in_flight.dec();
            tracing::debug!(%request_id, kind = %kind, ok = !matches!(answer, EntityReply::Err(_)), latency_us = started.elapsed().as_micros() as u64, "handled");
            let _ = reply.send(bounded(&answer, limit));
        });
    }
}

/// The reply to a delivered request, from what came back within `timeout`.
fn answer_of(
    got: Result<Result<CallResult, impl Sized>, tokio::time::error::Elapsed>,
    failed: RemoteError,
    timeout: Duration,
) -> EntityReply {
    match got {
        Ok(Ok(Ok(Served {
            reply,
            replayed: false,
        }))) => EntityReply::Ok(reply),
        Ok(Ok(Ok(Served {
            reply,
            replayed: true,
        }))) => EntityReply::Replayed(reply),
        Ok(Ok(Err(e))) => EntityReply::Err(e),
        Ok(Err(_)) => EntityReply::Err(failed),
        Err(_) => EntityReply::Err(RemoteError::Timeout(timeout.as_millis() as u64)),
    }
}

/// Encodes an answer for a peer, replacing one over the frame limit by an error: the peer would
/// refuse the frame (and end its session), so it must never be sent.
fn bounded(answer: &EntityReply, limit: usize) -> Vec<u8> {
    let bytes = wire::encode(answer);
    if bytes.len() <= limit {
        return bytes;
    }
    tracing::error!(
        bytes = bytes.len(),
        limit,
        "an entity answer is over the frame limit; answering an error instead"
    );
    wire::encode(&EntityReply::Err(RemoteError::BadRequest(format!(
        "the answer is {} bytes, over the {limit}-byte frame limit (cluster.max_frame_bytes)",
        bytes.len()
    ))))
}

impl Actor for ShardHost {
    type Msg = ShardHostRpc;
    type State = ShardHostState;
    type Arguments = ShardHostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ShardHostArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let m = metrics::get();
        m.shards_owned
            .set(args.map.borrow().shards_of(&args.node).count() as i64);
        // A host starts with no entity (after a restart, ractor killed the old host's
        // supervisors and entities without their exit events).
        for kind in args.kinds.names() {
            m.entities_active.with_label_values(&[kind]).set(0);
            m.entities_quarantined.with_label_values(&[kind]).set(0);
        }
        ractor::pg::join(wire::shard_host_group(&args.node), vec![myself.get_cell()]);
        let tick =
            (args.idle_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let ticker = myself.send_interval(tick, || ShardHostRpc::Tick);
        let mut changes = args.map.clone();
        let me = myself.clone();
        let map_task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if me.send_message(ShardHostRpc::MapChanged).is_err() {
                    return;
                }
            }
        });
        let primary_of = args
            .map
            .borrow()
            .shards_of(&args.node)
            .map(|s| s.0)
            .collect();
        let follower = Follower::new(
            args.node.clone(),
            args.map.clone(),
            args.store.clone(),
            args.replicator.clone(),
            args.lease.clone(),
            args.frames,
        );
        Ok(ShardHostState {
            follower,
            active: ActivationTable::new(args.max_active, args.idle_timeout),
            args,
            supervisors: HashMap::new(),
            by_actor: HashMap::new(),
            ticker: Some(ticker),
            map_task: Some(map_task),
            primary_of,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(
            wire::shard_host_group(&st.args.node),
            vec![myself.get_cell()],
        );
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        if let Some(t) = st.map_task.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardHostRpc::Request(bytes, reply) => st.request(&myself, bytes, reply).await,
            ShardHostRpc::Tick => {
                let idle = st.active.take_idle(Instant::now());
                if !idle.is_empty() {
                    tracing::debug!(count = idle.len(), "passivating idle entities");
                }
                st.passivate(idle, "idle");
            }
            ShardHostRpc::MapChanged => st.map_changed(),
            ShardHostRpc::Replicate(bytes, reply) => st.follower.replicate(bytes, reply),
            ShardHostRpc::Copy(bytes, reply) => st.follower.copy(bytes, reply),
            ShardHostRpc::ReadIndex(bytes, reply) => st.follower.read_index(bytes, reply),
            ShardHostRpc::HandOver(bytes, reply) => {
                let a = &st.args;
                hand_over::answer(&a.replicator, &a.map, &a.frames, bytes, reply)
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A shard supervisor only stops on a bug; the next request for its shard starts a new one.
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(shard) = st.by_actor.remove(&cell.get_id()) {
                    tracing::error!(shard = shard.0, error = %err, "shard supervisor failed");
                    st.supervisors.remove(&shard);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(shard) = st.by_actor.remove(&cell.get_id()) {
                    st.supervisors.remove(&shard);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
