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

use crate::activation::ActivationTable;
use crate::consensus::MapWatch;
use crate::entity::{EntityKey, EntityKinds, EntityResult};
use crate::metrics;
use crate::restart_budget::RestartPolicy;
use crate::shard_map::{shard_for, ShardId};
use crate::shard_supervisor::{Pending, ShardMsg, ShardSupervisor, ShardSupervisorArgs};
use crate::storage::Store;
use crate::wire::{self, EntityReply, EntityRequest, RemoteError, ShardHostRpc};

/// Start-up arguments of the shard host.
#[derive(Debug)]
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
    /// Passivate entities idle this long.
    pub idle_timeout: Duration,
    /// Most active entities on this node.
    pub max_active: usize,
    /// Whether injected faults are honoured.
    pub fault_injection: bool,
    /// Longest wait for an entity's answer.
    pub request_timeout: Duration,
}

/// Shard host state.
pub struct ShardHostState {
    args: ShardHostArgs,
    supervisors: HashMap<ShardId, ActorRef<ShardMsg>>,
    by_actor: HashMap<ActorId, ShardId>,
    active: ActivationTable<(ShardId, EntityKey)>,
    ticker: Option<JoinHandle<()>>,
}

/// The shard host actor.
pub struct ShardHost;

impl ShardHostState {
    fn check(&self, req: &EntityRequest) -> Result<ShardId, RemoteError> {
        let a = &self.args;
        if req.fault.is_some() && !a.fault_injection {
            return Err(RemoteError::FaultInjectionDisabled(a.node.clone()));
        }
        if a.kinds.get(&req.kind).is_none() {
            return Err(RemoteError::UnknownKind(req.kind.clone()));
        }
        let map = a.map.borrow().clone();
        let shard = shard_for(&req.kind, &req.id, map.shard_count());
        let owner = map.owner(shard);
        if shard.0 != req.shard || req.epoch != map.epoch(shard) || owner != a.node {
            return Err(RemoteError::NotOwner {
                node: a.node.clone(),
                shard: shard.0,
                epoch: req.epoch,
                owner: owner.to_string(),
            });
        }
        Ok(shard)
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

    async fn request(
        &mut self,
        myself: &ActorRef<ShardHostRpc>,
        bytes: Vec<u8>,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let req: EntityRequest = match wire::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(wire::encode(&EntityReply::Err(RemoteError::BadRequest(
                    format!("entity request does not decode: {e}"),
                ))));
                return;
            }
        };
        let shard = match self.check(&req) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(request_id = %req.request_id, kind = %req.kind, id = %req.id, error = %e, "request refused");
                let _ = reply.send(wire::encode(&EntityReply::Err(e)));
                return;
            }
        };
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
        let (tx, rx) = ractor::concurrency::oneshot::<EntityResult>();
        let timeout = self.args.request_timeout;
        let failed = RemoteError::EntityFailed {
            kind: key.kind.clone(),
            id: key.id.clone(),
            reason: "it panicked or returned an error".to_string(),
        };
        if sup
            .send_message(ShardMsg::Deliver(
                key,
                Pending {
                    payload: req.payload,
                    fault: req.fault,
                    reply: tx.into(),
                },
            ))
            .is_err()
        {
            let _ = reply.send(wire::encode(&EntityReply::Err(failed)));
            return;
        }
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(bytes))) => EntityReply::Ok(bytes),
                Ok(Ok(Err(e))) => EntityReply::Err(e),
                Ok(Err(_)) => EntityReply::Err(failed),
                Err(_) => EntityReply::Err(RemoteError::Timeout(timeout.as_millis() as u64)),
            };
            let _ = reply.send(wire::encode(&answer));
        });
    }
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
        ractor::pg::join(wire::shard_host_group(&args.node), vec![myself.get_cell()]);
        let tick =
            (args.idle_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let ticker = myself.send_interval(tick, || ShardHostRpc::Tick);
        Ok(ShardHostState {
            active: ActivationTable::new(args.max_active, args.idle_timeout),
            args,
            supervisors: HashMap::new(),
            by_actor: HashMap::new(),
            ticker: Some(ticker),
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
