//! How a process that hosts no shards (a gateway) learns the shard map: every heartbeat answer
//! carries the responder's map version; when a member reports a newer one, fetch it from that
//! member. A slow poll backs this up. A map of another shape than the configured one (shard
//! count, nodes) is refused: every shard number routed with it would be wrong.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::cluster::membership::ClusterView;
use crate::consensus::{fetch_map, MapWatch};
use keelson_rules::shard_map::ShardMap;

/// Asks the follower to fetch the map now (a request just found its map stale).
pub type Refresh = Arc<Notify>;

/// Starts following the map from the nodes; returns the published map and a refresh handle.
pub fn follow(
    initial: ShardMap,
    mut view: watch::Receiver<ClusterView>,
    timeout: Duration,
) -> (MapWatch, Refresh) {
    let expected = initial.clone();
    let (tx, rx) = watch::channel(Arc::new(initial));
    let refresh: Refresh = Arc::new(Notify::new());
    let nudged = refresh.clone();
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            let everyone = tokio::select! {
                r = view.changed() => if r.is_err() { return } else { false },
                _ = poll.tick() => false,
                _ = nudged.notified() => true,
            };
            let have = tx.borrow().version();
            let sources: Vec<String> = {
                let v = view.borrow();
                let mut ahead: Vec<_> = v
                    .members
                    .iter()
                    .filter(|m| {
                        m.name != v.me
                            && m.role == crate::config::Role::Node
                            && m.state == "up"
                            && (everyone || m.map_version > have)
                    })
                    .collect();
                ahead.sort_by_key(|m| std::cmp::Reverse(m.map_version));
                ahead.into_iter().map(|m| m.name.clone()).collect()
            };
            let fetches = sources
                .iter()
                .map(|from| async move { (from, fetch_map(from, timeout).await) });
            for (from, result) in futures_util::future::join_all(fetches).await {
                let result = result.and_then(|map| {
                    crate::wire::frame_check::shard_map(&map, &expected)
                        .map(|()| map)
                        .map_err(|e| {
                            crate::wire::frame_check::refuse("shard_map", &e);
                            e.to_string()
                        })
                });
                match result {
                    Ok(map) if map.version() > tx.borrow().version() => {
                        tracing::info!(version = map.version(), from = %from, "learned a newer shard map");
                        crate::metrics::get().shard_epoch.set(map.version() as i64);
                        tx.send_replace(Arc::new(map));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(from = %from, error = %e, "cannot fetch the shard map")
                    }
                }
            }
        }
    });
    (rx, refresh)
}
