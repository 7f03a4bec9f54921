//! One shard-hosting node process, started in one linear, logged sequence and stopped in reverse.
//!
//! ```text
//! start: metrics → store (sled) → cluster member (transport, heartbeat, membership)
//!        → control plane (raft over the shard map) → shard host (kept: restarted with backoff
//!        if it dies, /ready false meanwhile) → ops endpoint → ready
//! stop:  not ready → shard host (entities stop) → control plane → cluster member → ops
//!        → store flush
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use tokio::sync::watch;

use crate::client::ClusterClient;
use crate::cluster::lease::Lease;
use crate::cluster::member::ClusterMember;
use crate::config::{ClusterConfig, Member};
use crate::consensus::control_plane::ControlPlane;
use crate::consensus::{removal, MapWatch};
use crate::host::entity_kinds::EntityKinds;
use crate::host::keeper::{Keeper, KeeperArgs, KeeperMsg};
use crate::host::shard_host::{ShardHost, ShardHostArgs};
use crate::metrics;
use crate::ops::{self, Readiness};
use crate::replication::catch_up;
use crate::replication::takeover::Takeovers;
use crate::replication::Replicator;
use crate::restart_budget::RestartPolicy;
use crate::shutdown;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::storage::Store;
use crate::wire::frame_check::FrameLimits;
use crate::RuntimeError;

/// How the node restarts a shard host that died: quickly at first (the entities restart from
/// their persisted state on their next request), backing off to 5 s, and never giving up (a
/// spent budget waits 30 s and tries again).
const SHARD_HOST_RESTARTS: RestartPolicy = RestartPolicy {
    max_restarts: 10,
    window: Duration::from_secs(60),
    backoff_base: Duration::from_millis(100),
    backoff_max: Duration::from_secs(5),
    quarantine: Duration::from_secs(30),
};

/// What a node lends the services the binary runs beside its shards (the MQTT bridge).
#[derive(Clone)]
pub struct NodeContext {
    /// The cluster configuration.
    pub cfg: ClusterConfig,
    /// This node.
    pub name: String,
    /// Calls any entity in the cluster.
    pub client: ClusterClient,
    /// True while this node should run the cluster's singletons: it is the consensus leader and
    /// a majority answers its heartbeats (or stopped answering less than a failure timeout ago).
    pub singleton: watch::Receiver<bool>,
    /// Resolves when the node stops; a service must end its task then.
    pub shutdown: Shutdown,
}

/// A service started once the node is ready; its task is awaited (5 s at most) at shutdown.
pub type NodeService = Box<dyn FnOnce(NodeContext) -> tokio::task::JoinHandle<()> + Send>;

/// The exit code of a node process that stopped because it was removed from the cluster, or
/// refused to start because it had been: `keelson up` does not start it again.
pub const LEFT_THE_CLUSTER: i32 = 3;

/// Why a node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `stop` resolved (a signal).
    Asked,
    /// It was drained and removed from the cluster (`keelson nodes remove`).
    Removed,
}

/// Runs node `name` with no extra services until `stop` resolves.
pub async fn run(
    cfg: ClusterConfig,
    name: &str,
    kinds: EntityKinds,
    stop: impl Future<Output = ()>,
) -> Result<Stopped, RuntimeError> {
    run_with(cfg, name, kinds, Vec::new(), stop).await
}

/// Runs node `name` and `services` until `stop` resolves.
pub async fn run_with(
    cfg: ClusterConfig,
    name: &str,
    kinds: EntityKinds,
    services: Vec<NodeService>,
    stop: impl Future<Output = ()>,
) -> Result<Stopped, RuntimeError> {
    let me = cfg
        .node(name)
        .cloned()
        .ok_or_else(|| RuntimeError::UnknownNode(name.to_string(), cfg.node_names().join(", ")))?;
    metrics::init(&me.name, "node");
    metrics::get().known_kinds(kinds.names());
    tracing::info!(node = %me.name, cluster = %cfg.name, shards = cfg.shards, "starting node");

    let store = open_store(&cfg, &me.name)?;
    if let Some(version) = store.removed_at()? {
        return Err(RuntimeError::Removed(
            me.name.clone(),
            version,
            cfg.node_data_dir(&me.name),
        ));
    }
    let mut member = ClusterMember::join(&cfg, &me).await?;
    let sampler = member.load().spawn_sampler();
    let control = ControlPlane::start(
        &cfg,
        &me.name,
        store.db(),
        member.view(),
        member.map_version(),
    )
    .await?;
    let map = control.map();
    let stored = map.borrow().clone();
    if stored.version() > 0 && !stored.nodes().iter().any(|n| n == &me.name) {
        control.stop().await;
        member.leave().await;
        return Err(RuntimeError::Removed(
            me.name.clone(),
            stored.version(),
            cfg.node_data_dir(&me.name),
        ));
    }
    member.follow_map(&cfg, map.clone());
    let quorum = cfg.nodes.len();
    let takeovers = Takeovers::new(
        &me.name,
        &map.borrow(),
        quorum,
        cfg.lease(),
        member.support(),
        control.primary_changes(),
    );
    let replicator = Arc::new(Replicator::new(
        me.name.clone(),
        store.clone(),
        map.clone(),
        control.proposer(),
        cfg.failure_timeout,
        takeovers,
    ));
    let learner = catch_up::spawn(
        me.name.clone(),
        store.clone(),
        map.clone(),
        control.proposer(),
        cfg.request_timeout,
        FrameLimits::of(&cfg),
    );
    let host_args = shard_host_args(&cfg, &me.name, kinds, &store, &map, replicator, &member);
    let (host, host_up) = start_shard_host(host_args).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let (trigger, shutdown_rx) = shutdown::channel();
    let readiness = Readiness::all(vec![("started", ready.clone()), ("shard_host", host_up)]);
    let ops_task = start_ops(&cfg, &me, readiness, &member, shutdown_rx).await?;
    let (services_stop, service_tasks) =
        start_services(&cfg, &me.name, services, &control, &member);
    ready.store(true, Ordering::Release);
    tracing::info!(node = %me.name, ops = %me.ops_addr, cluster = %me.cluster_addr, services = service_tasks.len(), "node ready");

    let why = tokio::select! {
        _ = stop => Stopped::Asked,
        version = removal::removed(&me.name, map.clone(), member.view(), cfg.request_timeout) => {
            tracing::info!(node = %me.name, version, "removed from the cluster: it holds nothing and is no member any more; stopping");
            if let Err(e) = store.mark_removed(version) {
                tracing::warn!(error = %e, "cannot record the removal in the data dir");
            }
            Stopped::Removed
        }
    };

    tracing::info!(node = %me.name, "stopping node");
    ready.store(false, Ordering::Release);
    services_stop.fire();
    for t in service_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = host.stop_and_wait(None, Some(Duration::from_secs(5))).await;
    learner.abort();
    sampler.abort();
    control.stop().await;
    member.leave().await;
    trigger.fire();
    let _ = ops_task.await;
    store.flush_blocking()?;
    tracing::info!(node = %me.name, "node stopped");
    Ok(why)
}

/// Opens (creating it if needed) node `node`'s store.
fn open_store(cfg: &ClusterConfig, node: &str) -> Result<Store, RuntimeError> {
    let dir = cfg.node_data_dir(node).join("db");
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::DataDir(dir.clone(), e))?;
    let store = Store::open(&dir, cfg.shards, cfg.flush, cfg.cache_bytes)?;
    tracing::info!(path = %dir.display(), flush = ?cfg.flush, "store open");
    Ok(store)
}

/// What every start of node `node`'s shard host is given.
fn shard_host_args(
    cfg: &ClusterConfig,
    node: &str,
    kinds: EntityKinds,
    store: &Store,
    map: &MapWatch,
    replicator: Arc<Replicator>,
    member: &ClusterMember,
) -> ShardHostArgs {
    ShardHostArgs {
        node: node.to_string(),
        map: map.clone(),
        store: store.clone(),
        kinds: Arc::new(kinds),
        policy: cfg.restart,
        entity_limits: cfg.entity_limits,
        idle_timeout: cfg.idle_timeout,
        max_active: cfg.max_active,
        fault_injection: cfg.fault_injection,
        request_timeout: cfg.request_timeout,
        replicator,
        lease: member.lease(),
        load: member.load(),
        frames: FrameLimits::of(cfg),
    }
}

/// Starts the shard host under its keeper; the flag is true while a host is running.
async fn start_shard_host(
    args: ShardHostArgs,
) -> Result<(ActorRef<KeeperMsg>, Arc<AtomicBool>), RuntimeError> {
    let (node, map) = (args.node.clone(), args.map.clone());
    let host_up = Arc::new(AtomicBool::new(false));
    let (host, _) = Actor::spawn(
        None,
        Keeper::<ShardHost>::new(),
        KeeperArgs {
            name: "shard host",
            start: Box::new(move || (ShardHost, args.clone())),
            policy: SHARD_HOST_RESTARTS,
            up: host_up.clone(),
            restarts: metrics::get().shard_host_restarts.clone(),
        },
    )
    .await
    .map_err(|e| RuntimeError::Spawn("shard host", e.to_string()))?;
    tracing::info!(
        owned = map.borrow().shards_of(&node).count(),
        version = map.borrow().version(),
        "shard host started"
    );
    Ok((host, host_up))
}

/// Serves the ops endpoint (/metrics, /health, /ready) until `shutdown`.
async fn start_ops(
    cfg: &ClusterConfig,
    me: &Member,
    readiness: Readiness,
    member: &ClusterMember,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, RuntimeError> {
    ops::serve(
        me.ops_addr,
        readiness,
        member.view(),
        cfg.auth.metrics_token.clone(),
        shutdown,
    )
    .await
    .map_err(|e| RuntimeError::Bind {
        what: "ops",
        addr: me.ops_addr,
        source: e,
    })
}

/// Starts the services run beside the node; the trigger stops them.
fn start_services(
    cfg: &ClusterConfig,
    node: &str,
    services: Vec<NodeService>,
    control: &ControlPlane,
    member: &ClusterMember,
) -> (ShutdownTrigger, Vec<tokio::task::JoinHandle<()>>) {
    let (services_stop, services_shutdown) = shutdown::channel();
    let singleton = singleton_watch(control.leader(node), member.lease(), cfg.failure_timeout);
    let ctx = NodeContext {
        cfg: cfg.clone(),
        name: node.to_string(),
        client: ClusterClient::new(control.map(), member.view(), cfg.request_timeout),
        singleton,
        shutdown: services_shutdown,
    };
    let tasks = services.into_iter().map(|s| s(ctx.clone())).collect();
    (services_stop, tasks)
}

/// Leader and lease holder (`keelson_rules::singleton`: through a lapse shorter than the
/// failure timeout), re-checked every 100 ms (a lease runs out without an event).
fn singleton_watch(
    mut leader: watch::Receiver<bool>,
    lease: Lease,
    grace: Duration,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut rule = keelson_rules::singleton::Singleton::new(grace);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = leader.changed() => if r.is_err() { return },
            }
            let is = rule.observe(*leader.borrow(), lease.is_valid(), Instant::now());
            tx.send_if_modified(|old| std::mem::replace(old, is) != is);
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}
