//! How a process that hosts no shards (a gateway) learns the shard map: every heartbeat answer
//! carries the responder's map version; when a member reports a newer one, fetch it from that
//! member. A slow poll backs this up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::consensus::{fetch_map, MapWatch};
use crate::membership::ClusterView;
use crate::shard_map::ShardMap;

/// Starts following the map from the nodes; returns the published map.
pub fn follow(
    initial: ShardMap,
    mut view: watch::Receiver<ClusterView>,
    timeout: Duration,
) -> MapWatch {
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                _ = poll.tick() => {}
            }
            let have = tx.borrow().version();
            let newest = {
                let v = view.borrow();
                v.members
                    .iter()
                    .filter(|m| m.name != v.me && m.state == "up" && m.map_version > have)
                    .max_by_key(|m| m.map_version)
                    .map(|m| m.name.clone())
            };
            let Some(from) = newest else { continue };
            match fetch_map(&from, timeout).await {
                Ok(map) if map.version() > tx.borrow().version() => {
                    tracing::info!(version = map.version(), from = %from, "learned a newer shard map");
                    crate::metrics::get().shard_epoch.set(map.version() as i64);
                    tx.send_replace(Arc::new(map));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(from = %from, error = %e, "cannot fetch the shard map"),
            }
        }
    });
    rx
}
