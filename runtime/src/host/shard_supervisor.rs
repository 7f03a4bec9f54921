//! One supervisor per shard: starts the shard's entities on demand, restarts a failed entity from
//! its persisted state after a backoff, and quarantines one that spends its restart budget. One
//! entity's failure never reaches another entity, the shard or the node: ractor's default handler
//! would stop the supervisor on any child exit, so every exit is handled here.
//!
//! ```text
//! shard host ──Deliver──▶ ShardSupervisor ──Handle──▶ EntityActor (one per entity)
//!                              ▲   │ Restarting: queue requests, RestartDue after backoff
//!            ActorFailed ──────┘   │ Quarantined: refuse with the failure reason until the cooldown ends
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::host::entity::{Call, EntityKey, EntityMsg};
use crate::host::entity_actor::EntityArgs;
use crate::host::entity_kinds::EntityKinds;
use crate::metrics;
use crate::replication::Replicator;
use crate::restart_budget::{RestartDecision, RestartPolicy, RestartTracker};
use crate::storage::Store;
use crate::wire::RemoteError;
use keelson_rules::shard_map::ShardId;
use ractor_cluster::RactorMessage;

/// A request waiting for its entity.
pub type Pending = Call;

/// Messages to a shard supervisor.
#[derive(RactorMessage)]
pub enum ShardMsg {
    /// Deliver a request to an entity, starting it if needed.
    Deliver(EntityKey, Pending),
    /// Stop an entity after it has handled what it already has.
    Passivate(EntityKey, &'static str),
    /// A restart backoff elapsed.
    RestartDue(EntityKey),
}

/// Start-up arguments.
#[derive(Debug)]
pub struct ShardSupervisorArgs {
    /// The shard.
    pub shard: ShardId,
    /// The node's store.
    pub store: Store,
    /// Entity kinds.
    pub kinds: Arc<EntityKinds>,
    /// Restart budget and backoff.
    pub policy: RestartPolicy,
    /// The node's write path.
    pub replicator: Arc<Replicator>,
    /// Size and idempotency bounds of every entity.
    pub limits: crate::config::EntityLimits,
}

enum Slot {
    Active(ActorRef<EntityMsg>),
    /// Draining before a passivation; requests queue until it has stopped.
    Stopping(Vec<Pending>, &'static str),
    /// Failed; restarts when the backoff elapses.
    Restarting(Vec<Pending>),
    Quarantined {
        until: Instant,
        reason: String,
    },
}

/// Supervisor state.
pub struct ShardSupervisorState {
    args: ShardSupervisorArgs,
    slots: HashMap<EntityKey, Slot>,
    by_actor: HashMap<ActorId, EntityKey>,
    trackers: HashMap<EntityKey, RestartTracker>,
}

/// The per-shard supervisor actor.
pub struct ShardSupervisor;

impl ShardSupervisorState {
    /// Starts `key` and hands it `queue`; on failure to start, answers the queue with the error.
    async fn activate(&mut self, myself: &ActorRef<ShardMsg>, key: EntityKey, queue: Vec<Pending>) {
        let Some(factory) = self.args.kinds.get(&key.kind).cloned() else {
            for p in queue {
                let _ = p
                    .reply
                    .send(Err(RemoteError::UnknownKind(key.kind.clone())));
            }
            return;
        };
        let args = EntityArgs {
            id: key.id.clone(),
            shard: self.args.shard,
            store: self.args.store.clone(),
            replicator: self.args.replicator.clone(),
            limits: self.args.limits,
        };
        match factory.spawn(args, myself.get_cell()).await {
            Ok(actor) => {
                let m = metrics::get();
                m.entity_activations.with_label_values(&[&key.kind]).inc();
                m.entities_active.with_label_values(&[&key.kind]).inc();
                self.by_actor.insert(actor.get_id(), key.clone());
                for p in queue {
                    send(&actor, p);
                }
                self.slots.insert(key, Slot::Active(actor));
            }
            Err(e) => {
                tracing::error!(entity = %key, error = %e, "entity failed to start");
                for p in queue {
                    let _ = p.reply.send(Err(RemoteError::Storage(e.clone())));
                }
            }
        }
    }

    async fn deliver(&mut self, myself: &ActorRef<ShardMsg>, key: EntityKey, p: Pending) {
        match self.slots.get_mut(&key) {
            Some(Slot::Active(actor)) => {
                if let Err(ractor::MessagingErr::SendErr(EntityMsg::Handle(p))) =
                    actor.send_message(EntityMsg::Handle(p))
                {
                    // It died and its exit event is still on the way: hold the request for it.
                    self.slots.insert(key, Slot::Stopping(vec![p], "died"));
                }
            }
            Some(Slot::Stopping(queue, _)) | Some(Slot::Restarting(queue)) => queue.push(p),
            Some(Slot::Quarantined { until, reason }) => {
                let now = Instant::now();
                if now < *until {
                    let _ = p.reply.send(Err(RemoteError::Quarantined {
                        kind: key.kind.clone(),
                        id: key.id.clone(),
                        reason: reason.clone(),
                        retry_after_ms: until.duration_since(now).as_millis() as u64,
                    }));
                } else {
                    tracing::info!(entity = %key, "quarantine over; starting again");
                    metrics::get()
                        .entities_quarantined
                        .with_label_values(&[&key.kind])
                        .dec();
                    self.slots.remove(&key);
                    self.activate(myself, key, vec![p]).await;
                }
            }
            None => self.activate(myself, key, vec![p]).await,
        }
    }

    fn on_exit(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        id: ActorId,
        failure: Option<String>,
    ) -> Option<(EntityKey, Vec<Pending>)> {
        let key = self.by_actor.remove(&id)?;
        metrics::get()
            .entities_active
            .with_label_values(&[&key.kind])
            .dec();
        let queue = match self.slots.remove(&key) {
            Some(Slot::Stopping(q, reason)) => {
                if failure.is_none() {
                    metrics::get()
                        .entity_passivations
                        .with_label_values(&[&key.kind, reason])
                        .inc();
                }
                q
            }
            Some(other @ (Slot::Restarting(_) | Slot::Quarantined { .. })) => {
                // A stale exit of an older incarnation; keep the newer slot.
                self.slots.insert(key, other);
                return None;
            }
            Some(Slot::Active(_)) | None => Vec::new(),
        };
        let Some(reason) = failure else {
            return Some((key, queue));
        };
        let m = metrics::get();
        m.entity_failures.with_label_values(&[&key.kind]).inc();
        let class = if reason.contains("panic") {
            "panic"
        } else {
            "error"
        };
        let now = Instant::now();
        let decision = self
            .trackers
            .entry(key.clone())
            .or_default()
            .on_failure(&self.args.policy, now);
        match decision {
            RestartDecision::Restart { after, attempt } => {
                m.entity_restarts
                    .with_label_values(&[&key.kind, class])
                    .inc();
                tracing::warn!(entity = %key, %reason, attempt, backoff_ms = after.as_millis() as u64, "entity failed; restarting after backoff");
                self.slots.insert(key.clone(), Slot::Restarting(queue));
                let k = key.clone();
                myself.send_after(after, move || ShardMsg::RestartDue(k));
            }
            RestartDecision::Quarantine { until } => {
                tracing::error!(entity = %key, %reason, quarantine_s = self.args.policy.quarantine.as_secs(), "entity spent its restart budget; quarantined");
                m.entity_quarantines
                    .with_label_values(&[&key.kind, "restart_budget"])
                    .inc();
                m.entities_quarantined.with_label_values(&[&key.kind]).inc();
                for p in queue {
                    let _ = p.reply.send(Err(RemoteError::Quarantined {
                        kind: key.kind.clone(),
                        id: key.id.clone(),
                        reason: reason.clone(),
                        retry_after_ms: until.duration_since(now).as_millis() as u64,
                    }));
                }
                self.slots.insert(key, Slot::Quarantined { until, reason });
            }
        }
        None
    }
}

fn send(actor: &ActorRef<EntityMsg>, p: Pending) {
    let _ = actor.send_message(EntityMsg::Handle(p));
}

impl Actor for ShardSupervisor {
    type Msg = ShardMsg;
    type State = ShardSupervisorState;
    type Arguments = ShardSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ShardSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ShardSupervisorState {
            args,
            slots: HashMap::new(),
            by_actor: HashMap::new(),
            trackers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Deliver(key, p) => st.deliver(&myself, key, p).await,
            ShardMsg::Passivate(key, reason) => {
                if let Some(Slot::Active(actor)) = st.slots.get(&key) {
                    if actor.drain().is_ok() {
                        st.slots
                            .insert(key.clone(), Slot::Stopping(Vec::new(), reason));
                    }
                }
                let policy = st.args.policy;
                if st
                    .trackers
                    .get(&key)
                    .is_some_and(|t| t.is_idle(&policy, Instant::now()))
                {
                    st.trackers.remove(&key);
                }
            }
            ShardMsg::RestartDue(key) => {
                if let Some(Slot::Restarting(_)) = st.slots.get(&key) {
                    let Some(Slot::Restarting(queue)) = st.slots.remove(&key) else {
                        unreachable!("checked above")
                    };
                    tracing::info!(entity = %key, queued = queue.len(), "restarting entity from its persisted state");
                    st.activate(&myself, key, queue).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let restart = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.on_exit(&myself, cell.get_id(), None)
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                st.on_exit(&myself, cell.get_id(), Some(err.to_string()))
            }
            _ => None,
        };
        // A passivated entity that received requests while draining starts again for them.
        if let Some((key, queue)) = restart {
            if !queue.is_empty() {
                st.activate(&myself, key, queue).await;
            }
        }
        Ok(())
    }
}
