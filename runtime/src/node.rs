//! One shard-hosting node process, started in one linear, logged sequence and stopped in reverse.
//!
//! ```text
//! start: metrics → store (sled) → cluster member (transport, heartbeat, membership)
//!        → control plane (raft over the shard map) → shard host → ops endpoint → ready
//! stop:  not ready → shard host (entities stop) → control plane → cluster member → ops
//!        → store flush
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use crate::catch_up;
use crate::config::ClusterConfig;
use crate::control_plane::ControlPlane;
use crate::entity::EntityKinds;
use crate::member::ClusterMember;
use crate::metrics;
use crate::ops;
use crate::replication::Replicator;
use crate::shard_host::{ShardHost, ShardHostArgs};
use crate::shutdown;
use crate::storage::Store;
use crate::RuntimeError;

/// Runs node `name` until `stop` resolves.
pub async fn run(
    cfg: ClusterConfig,
    name: &str,
    kinds: EntityKinds,
    stop: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let me = cfg
        .nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .ok_or_else(|| RuntimeError::UnknownNode(name.to_string(), cfg.node_names().join(", ")))?;
    metrics::init(&me.name, "node");
    tracing::info!(node = %me.name, cluster = %cfg.name, shards = cfg.shards, "starting node");

    let dir = cfg.node_data_dir(&me.name).join("db");
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::DataDir(dir.clone(), e))?;
    let store = Store::open(&dir, cfg.shards, cfg.flush, cfg.cache_bytes)?;
    tracing::info!(path = %dir.display(), flush = ?cfg.flush, "store open");

    let member = ClusterMember::join(&cfg, &me).await?;
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
    let replicator = Arc::new(Replicator::new(
        me.name.clone(),
        store.clone(),
        map.clone(),
        control.proposer(),
        cfg.failure_timeout,
    ));
    let learner = catch_up::spawn(
        me.name.clone(),
        store.clone(),
        map.clone(),
        control.proposer(),
        cfg.request_timeout,
    );
    let (host, _) = Actor::spawn(
        None,
        ShardHost,
        ShardHostArgs {
            node: me.name.clone(),
            map: map.clone(),
            store: store.clone(),
            kinds: Arc::new(kinds),
            policy: cfg.restart,
            idle_timeout: cfg.idle_timeout,
            max_active: cfg.max_active,
            fault_injection: cfg.fault_injection,
            request_timeout: cfg.request_timeout,
            replicator,
            lease: member.lease(),
            load: member.load(),
        },
    )
    .await
    .map_err(|e| RuntimeError::Spawn("shard host", e.to_string()))?;
    tracing::info!(
        owned = map.borrow().shards_of(&me.name).count(),
        version = map.borrow().version(),
        "shard host started"
    );

    let ready = Arc::new(AtomicBool::new(false));
    let (trigger, shutdown_rx) = shutdown::channel();
    let ops_task = ops::serve(me.ops_addr, ready.clone(), member.view(), shutdown_rx)
        .await
        .map_err(|e| RuntimeError::Bind {
            what: "ops",
            addr: me.ops_addr,
            source: e,
        })?;
    ready.store(true, Ordering::Release);
    tracing::info!(node = %me.name, ops = %me.ops_addr, cluster = %me.cluster_addr, "node ready");

    stop.await;

    tracing::info!(node = %me.name, "stopping node");
    ready.store(false, Ordering::Release);
    let _ = host.stop_and_wait(None, Some(Duration::from_secs(5))).await;
    learner.abort();
    sampler.abort();
    control.stop().await;
    member.leave().await;
    trigger.fire();
    let _ = ops_task.await;
    store.flush_blocking()?;
    tracing::info!(node = %me.name, "node stopped");
    Ok(())
}
