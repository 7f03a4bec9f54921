//! Keeps one essential actor running: a node's shard host. If it dies (a panic or an error in a
//! handler), the keeper starts a new one after a backoff and clears its `up` flag meanwhile, so
//! the node's `/ready` answers not-ready until the actor is back. ractor has no restart
//! strategies (restarting is spawning again), so this is one, for one child.
//!
//! ```text
//! node ──spawn──▶ Keeper ──spawn_linked──▶ child (ShardHost ─▶ shard supervisors ─▶ entities)
//!                   ▲ ActorFailed / ActorTerminated
//!                   └─ up = false ─▶ backoff (restart_budget) ─▶ Start ─▶ spawn again ─▶ up = true
//! stop:  Keeper.stop ─▶ child.stop_and_wait ─▶ up = false
//! ```
//!
//! When the child dies ractor kills its children too (the shard supervisors and their
//! entities), so a new shard host starts with none and every entity restarts from its persisted
//! state on its next request.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::restart_budget::{RestartDecision, RestartPolicy, RestartTracker};

/// Makes the child and its start-up arguments, once per start.
pub type StartChild<A> = Box<dyn Fn() -> (A, <A as Actor>::Arguments) + Send + Sync>;

/// Start-up arguments of a keeper.
pub struct KeeperArgs<A: Actor> {
    /// What the child is, for logs.
    pub name: &'static str,
    /// Makes the child.
    pub start: StartChild<A>,
    /// Backoff between restarts; a spent budget waits `quarantine` before the next try (an
    /// essential actor is never given up on).
    pub policy: RestartPolicy,
    /// True while the child runs.
    pub up: Arc<AtomicBool>,
    /// Counts restarts.
    pub restarts: prometheus::IntCounter,
}

/// How long a graceful stop of the child may take.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The keeper's messages.
#[derive(RactorMessage)]
pub enum KeeperMsg {
    /// The backoff elapsed: start the child again.
    Start,
}

/// The keeper actor of a child of type `A`.
pub struct Keeper<A>(PhantomData<fn() -> A>);

impl<A> Keeper<A> {
    /// A keeper.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A> Default for Keeper<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeper state.
pub struct KeeperState<A: Actor> {
    args: KeeperArgs<A>,
    child: Option<ActorRef<A::Msg>>,
    tracker: RestartTracker,
}

/// Delay before the next start after a failure: the budget's backoff, or its quarantine once the
/// budget is spent.
pub fn delay(tracker: &mut RestartTracker, policy: &RestartPolicy, now: Instant) -> Duration {
    match tracker.on_failure(policy, now) {
        RestartDecision::Restart { after, .. } => after,
        RestartDecision::Quarantine { until } => until.saturating_duration_since(now),
    }
}

impl<A: Actor> KeeperState<A> {
    async fn start(&mut self, myself: &ActorRef<KeeperMsg>) -> Result<(), String> {
        let (actor, args) = (self.args.start)();
        let (child, _) = Actor::spawn_linked(None, actor, args, myself.get_cell())
            .await
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        self.args.up.store(true, Ordering::Release);
        Ok(())
    }

    fn schedule(&mut self, myself: &ActorRef<KeeperMsg>) {
        let after = delay(&mut self.tracker, &self.args.policy, Instant::now());
        tracing::warn!(
            child = self.args.name,
            backoff_ms = after.as_millis() as u64,
            "restarting after backoff"
        );
        myself.send_after(after, || KeeperMsg::Start);
    }
}

impl<A: Actor> Actor for Keeper<A> {
    type Msg = KeeperMsg;
    type State = KeeperState<A>;
    type Arguments = KeeperArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: KeeperArgs<A>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = KeeperState {
            args,
            child: None,
            tracker: RestartTracker::default(),
        };
        // The first start fails the node's start-up: nothing has worked yet to restart.
        st.start(&myself)
            .await
            .map_err(|e| format!("cannot start the {}: {e}", st.args.name))?;
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.args.up.store(false, Ordering::Release);
        if let Some(child) = st.child.take() {
            let _ = child.stop_and_wait(None, Some(STOP_WAIT)).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let KeeperMsg::Start = message;
        if st.child.is_some() {
            return Ok(());
        }
        match st.start(&myself).await {
            Ok(()) => {
                st.args.restarts.inc();
                tracing::info!(child = st.args.name, "restarted; ready again");
            }
            Err(e) => {
                tracing::error!(child = st.args.name, error = %e, "restart failed");
                st.schedule(&myself);
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
        // ractor's default would stop the keeper with its child: every exit is handled here.
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            _ => return Ok(()),
        };
        if st.child.as_ref().map(|c| c.get_id()) != Some(cell.get_id()) {
            return Ok(());
        }
        st.child = None;
        st.args.up.store(false, Ordering::Release);
        tracing::error!(child = st.args.name, reason = %why, "died; not ready until it is back");
        st.schedule(&myself);
        Ok(())
    }
}

#[cfg(test)]
#[path = "keeper_test.rs"]
mod tests;
