//! A node's part in the control plane: its openraft instance over the shard-map log, the
//! consensus endpoint peers call, and — while this node leads — the planner loop that turns
//! membership changes into map changes.
//!
//! ```text
//! ClusterView (who is up) ──▶ planner (leader only) ──plan()──▶ propose ──▶ raft ──▶ map watch
//! leader's connection lost ──▶ trigger an election at once (a killed leader is not waited out)
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ClusterConfig;
use crate::consensus::{
    self, members, node_id, raft_config, serve_raft_rpc, LogStore, MapStateMachine, MapWatch,
    ProposeError, Raft, RaftNetworkFactory,
};
use crate::membership::ClusterView;
use crate::wire::RaftRpc;
use crate::RuntimeError;
use keelson_rules::planner::{plan, PlanLimits};
use keelson_rules::promotion::{self, Seen};
use keelson_rules::shard_map::{MapCommand, ShardId, ShardMap};

/// The running control plane of one node.
pub struct ControlPlane {
    raft: Arc<Raft>,
    server: ActorRef<RaftRpc>,
    map: MapWatch,
    planner: JoinHandle<()>,
    timeout: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("version", &self.map.borrow().version())
            .finish()
    }
}

/// What the stored log was created for; a restart with another layout would misread it.
fn fingerprint(cfg: &ClusterConfig) -> String {
    format!(
        "nodes={};shards={};rf={}",
        cfg.node_names().join(","),
        cfg.shards,
        cfg.replication_factor
    )
}

impl ControlPlane {
    /// Starts consensus for node `me` on `db`, publishing the map's version into `version`.
    pub async fn start(
        cfg: &ClusterConfig,
        me: &str,
        db: &sled::Db,
        view: watch::Receiver<ClusterView>,
        version: Arc<AtomicU64>,
    ) -> Result<Self, RuntimeError> {
        let sled_err =
            |e: sled::Error| RuntimeError::Storage(crate::StorageError::Sled(e.to_string()));
        let meta = db.open_tree("raft_state").map_err(sled_err)?;
        let want = fingerprint(cfg);
        match meta.get("fingerprint").map_err(sled_err)? {
            Some(found) if found.as_ref() != want.as_bytes() => {
                return Err(RuntimeError::Layout(
                    String::from_utf8_lossy(&found).into_owned(),
                    want,
                ));
            }
            Some(_) => {}
            None => {
                meta.insert("fingerprint", want.as_bytes())
                    .map_err(sled_err)?;
            }
        }
        let nodes = cfg.node_names();
        let initial = ShardMap::initial(&nodes, cfg.shards, cfg.replication_factor);
        let log = LogStore::open(db).map_err(sled_err)?;
        let (sm, map) = MapStateMachine::open(db, initial).map_err(sled_err)?;
        let config = raft_config(&cfg.name, cfg.failure_timeout)
            .validate()
            .map_err(|e| RuntimeError::Spawn("consensus", e.to_string()))?;
        let raft = Arc::new(
            Raft::new(node_id(me), Arc::new(config), RaftNetworkFactory, log, sm)
                .await
                .map_err(|e| RuntimeError::Spawn("consensus", e.to_string()))?,
        );
        let server = serve_raft_rpc(
            me,
            raft.clone(),
            map.clone(),
            cfg.request_timeout,
            crate::frame_check::FrameLimits::of(cfg),
        )
        .await
        .map_err(|e| RuntimeError::Spawn("consensus endpoint", e.to_string()))?;
        if !raft.is_initialized().await.unwrap_or(true) {
            // Safe on every node with the same membership: openraft converges on one leader.
            if let Err(e) = raft.initialize(members(&nodes)).await {
                tracing::debug!(error = %e, "consensus already initialised");
            }
        }
        version.store(map.borrow().version(), Ordering::Release);
        let planner = tokio::spawn(planner_loop(
            me.to_string(),
            raft.clone(),
            map.clone(),
            view,
            version,
            cfg.promotion_delay(),
        ));
        tracing::info!(version = map.borrow().version(), "control plane started");
        // Proposals wait at most a failure timeout: without a majority they fail fast.
        Ok(Self {
            raft,
            server,
            map,
            planner,
            timeout: cfg.failure_timeout,
        })
    }

    /// The map, as applied on this node.
    pub fn map(&self) -> MapWatch {
        self.map.clone()
    }

    /// Proposes a map change through the leader.
    pub async fn propose(&self, cmd: MapCommand) -> Result<u64, ProposeError> {
        consensus::propose(&self.raft, cmd, self.timeout).await
    }

    /// A handle for proposing from other tasks.
    pub fn proposer(&self) -> Proposer {
        Proposer {
            raft: self.raft.clone(),
            timeout: self.timeout,
        }
    }

    /// True while this node is the consensus leader (at most one per term): where a cluster-wide
    /// singleton such as the MQTT bridge runs.
    pub fn leader(&self, me: &str) -> watch::Receiver<bool> {
        let id = crate::consensus::node_id(me);
        let mut metrics = self.raft.metrics();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let is = {
                    let m = metrics.borrow_and_update();
                    m.current_leader == Some(id) && m.state.is_leader()
                };
                tx.send_if_modified(|old| std::mem::replace(old, is) != is);
                if metrics.changed().await.is_err() || tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    /// Stops the planner, the endpoint and openraft.
    pub async fn stop(self) {
        self.planner.abort();
        let _ = self
            .server
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        let _ = self.raft.shutdown().await;
    }
}

/// Proposes map changes from anywhere in the node; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    raft: Arc<Raft>,
    timeout: Duration,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proposer")
    }
}

impl Proposer {
    /// Proposes a map change through the leader.
    pub async fn propose(&self, cmd: MapCommand) -> Result<u64, ProposeError> {
        consensus::propose(&self.raft, cmd, self.timeout).await
    }
}

async fn planner_loop(
    me: String,
    raft: Arc<Raft>,
    mut map: MapWatch,
    mut view: watch::Receiver<ClusterView>,
    version: Arc<AtomicU64>,
    promotion_delay: Duration,
) {
    let my_id = node_id(&me);
    let mut metrics = raft.metrics();
    let mut elected_for: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = view.changed() => if r.is_err() { return },
            r = map.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
        }
        let current = map.borrow().clone();
        version.store(current.version(), Ordering::Release);
        let (state, leader) = {
            let m = metrics.borrow();
            (m.state, m.current_leader)
        };
        let v = view.borrow().clone();
        // A killed leader closes its connections at once; do not wait out the election timeout.
        if let Some(l) = leader.filter(|l| *l != my_id) {
            let name = current.nodes().iter().find(|n| node_id(n) == l).cloned();
            if let Some(name) = name {
                if v.state_of(&name) == Some("down") && elected_for != Some(l) {
                    elected_for = Some(l);
                    tracing::info!(leader = %name, "consensus leader is down; starting an election");
                    let _ = raft.trigger().elect().await;
                }
            }
        }
        crate::metrics::get()
            .consensus_leader
            .set(i64::from(state == ServerState::Leader));
        if state != ServerState::Leader {
            continue;
        }
        elected_for = None;
        // Down counts only once the node's lease has surely run out.
        let health = |n: &str| promotion::health(n == me, seen(&v, n), promotion_delay);
        let started = std::time::Instant::now();
        let cmds = plan(&current, &health, PlanLimits::default());
        let mut seen = HashSet::new();
        let mut cmds: Vec<MapCommand> = cmds
            .into_iter()
            .filter(|c| seen.insert(c.shard()))
            .collect();
        // Promotions first: they end unavailability; the rest only restore redundancy.
        cmds.sort_by_key(|c| !matches!(c, MapCommand::Promote { .. }));
        // Proposed together so openraft commits them in a few batches, not one round each.
        let proposals = cmds.into_iter().map(|cmd| {
            let raft = raft.clone();
            let old_primary = current.placement(ShardId(cmd.shard())).primary.clone();
            async move {
                let result = match &cmd {
                    // A planned move: the primary gives the shard up itself, so it stops
                    // writing before the new primary starts.
                    MapCommand::Handoff { shard, epoch, to } => {
                        hand_over(&old_primary, *shard, *epoch, to)
                            .await
                            .map(|()| 0)
                    }
                    _ => consensus::propose(&raft, cmd.clone(), Duration::from_secs(2))
                        .await
                        .map_err(|e| e.to_string()),
                };
                (cmd, result)
            }
        });
        for (cmd, result) in futures_util::future::join_all(proposals).await {
            match result {
                Ok(committed) => {
                    let kind = match cmd {
                        MapCommand::Promote { .. } => "promote",
                        MapCommand::Shrink { .. } => "shrink",
                        MapCommand::AddLearner { .. } => "add_learner",
                        MapCommand::Join { .. } => "join",
                        MapCommand::Handoff { .. } => "handoff",
                    };
                    let m = crate::metrics::get();
                    m.map_changes.with_label_values(&[kind]).inc();
                    if let MapCommand::Promote { .. } = cmd {
                        // The old primary was down for at least the promotion delay; `for_ms`
                        // says since when, as this leader saw it.
                        m.failovers.inc();
                        if let Some(since) = down_for(&v, &current, &cmd) {
                            m.failover_seconds
                                .observe(since.as_secs_f64() + started.elapsed().as_secs_f64());
                        }
                    }
                    tracing::debug!(?cmd, version = committed, "planned change committed");
                }
                Err(e) => tracing::debug!(?cmd, error = %e, "planned change not applied"),
            }
        }
    }
}

/// What the failure detector says of `node`, as this node's view shows it.
fn seen(view: &ClusterView, node: &str) -> Seen {
    match view.members.iter().find(|m| m.name == node) {
        Some(m) if m.state == "up" => Seen::Up,
        Some(m) if m.state == "down" => Seen::DownFor(Duration::from_millis(m.for_ms)),
        _ => Seen::Unknown,
    }
}

/// How long the primary that `cmd` replaces had been down when the plan was made.
fn down_for(view: &ClusterView, map: &ShardMap, cmd: &MapCommand) -> Option<Duration> {
    let old = &map.placement(ShardId(cmd.shard())).primary;
    view.members
        .iter()
        .find(|m| &m.name == old && m.state == "down")
        .map(|m| Duration::from_millis(m.for_ms))
}

/// Asks `primary` to hand `shard` over to `to` (see `Replicator::hand_over`).
async fn hand_over(primary: &str, shard: u32, epoch: u64, to: &str) -> Result<(), String> {
    let req = crate::wire::encode(&crate::wire::HandOver {
        shard,
        epoch,
        to: to.to_string(),
    });
    let bytes = crate::rpc::call_host(
        primary,
        crate::wire::ShardHostRpc::HandOver,
        req,
        Duration::from_secs(3),
    )
    .await?;
    crate::wire::decode::<Result<(), String>>(&bytes).map_err(|e| e.to_string())?
}
