//! A node's part in the control plane: its openraft instance over the shard-map log, the
//! consensus endpoint peers call, and — while this node leads — the planner loop (`planning`)
//! that turns membership changes into map changes.
//!
//! ```text
//! ClusterView (who is up) ──▶ planner (leader only) ──plan()──▶ propose ──▶ raft ──▶ map watch
//! leader's connection lost ──▶ trigger an election at once (a killed leader is not waited out)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::membership::ClusterView;
use crate::config::ClusterConfig;
use crate::consensus::primary_changes::PrimaryChanges;
use crate::consensus::{
    self, members, node_id, raft_config, serve_raft_rpc, LogStore, MapStateMachine, MapWatch,
    ProposeError, Raft, RaftNetworkFactory,
};
use crate::wire::RaftRpc;
use crate::RuntimeError;
use keelson_rules::shard_map::{MapCommand, ShardMap};

/// The running control plane of one node.
pub struct ControlPlane {
    raft: Arc<Raft>,
    server: ActorRef<RaftRpc>,
    map: MapWatch,
    planner: JoinHandle<()>,
    /// A joining node's proposal of itself, until committed.
    join: Option<JoinHandle<()>>,
    changes: PrimaryChanges,
    timeout: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("version", &self.map.borrow().version())
            .finish()
    }
}

/// What the stored log was created for; a restart with another layout would misread it. The
/// seed nodes are part of it: they vote and make the lease majority, so they stay; the other
/// members change through the log itself (join, remove).
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
        let changes = PrimaryChanges::default();
        let (sm, map) = MapStateMachine::open(db, initial, changes.clone()).map_err(sled_err)?;
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
            crate::wire::frame_check::FrameLimits::of(cfg),
        )
        .await
        .map_err(|e| RuntimeError::Spawn("consensus endpoint", e.to_string()))?;
        let seed = nodes.iter().any(|n| n == me);
        if seed && !raft.is_initialized().await.unwrap_or(true) {
            // Safe on every seed with the same seed list: openraft converges on one leader. A
            // node that joins later is added by the leader (as a learner) instead.
            if let Err(e) = raft.initialize(members(&nodes)).await {
                tracing::debug!(error = %e, "consensus already initialised");
            }
        }
        let join = cfg
            .joining
            .clone()
            .filter(|j| j.member.name == me)
            .map(|j| super::join::spawn(j, nodes.clone(), cfg.request_timeout));
        version.store(map.borrow().version(), Ordering::Release);
        let planner = tokio::spawn(super::planning::planner_loop(
            me.to_string(),
            nodes.clone(),
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
            join,
            changes,
            timeout: cfg.failure_timeout,
        })
    }

    /// The map, as applied on this node.
    pub fn map(&self) -> MapWatch {
        self.map.clone()
    }

    /// The last change of every shard's primary applied on this node.
    pub fn primary_changes(&self) -> PrimaryChanges {
        self.changes.clone()
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
        if let Some(j) = &self.join {
            j.abort();
        }
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
