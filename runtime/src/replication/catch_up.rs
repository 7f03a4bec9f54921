//! A learner copies each shard it was added to from the shard's primary, page by page, while the
//! primary also sends it every new write; records apply by lsn, so the two streams may interleave.
//! When the copy is complete the learner proposes to join the in-sync set. Pages are bounded in
//! bytes by the primary (`cluster.copy_page_bytes`) and checked by the learner before a record
//! of them is applied.
//!
//! ```text
//! map lists me as learner of S ──▶ copy(S): Copy pages from primary ──▶ store.apply (by lsn)
//!                                  └─ done, primary unchanged ──▶ propose Join{S, me} ──▶ in sync
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::consensus::control_plane::Proposer;
use crate::consensus::MapWatch;
use crate::metrics;
use crate::storage::Store;
use crate::wire::frame_check::{self, FrameLimits};
use crate::wire::rpc::call_host;
use crate::wire::{self, CopyPage, CopyRequest, ShardHostRpc};
use keelson_rules::shard_map::{MapCommand, ShardId};

/// Starts the learner loop of `node`.
pub fn spawn(
    node: String,
    store: Store,
    mut map: MapWatch,
    proposer: Proposer,
    timeout: Duration,
    limits: FrameLimits,
) -> tokio::task::JoinHandle<()> {
    let running: Arc<Mutex<HashSet<u32>>> = Arc::default();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                r = map.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
            }
            let current = map.borrow().clone();
            let learning: Vec<ShardId> = current
                .iter()
                .filter(|(_, p)| p.learners.contains(&node))
                .map(|(s, _)| s)
                .collect();
            metrics::get().shards_learning.set(learning.len() as i64);
            for shard in learning {
                if !running.lock().expect("running lock").insert(shard.0) {
                    continue;
                }
                let (node, store, map, proposer, running) = (
                    node.clone(),
                    store.clone(),
                    map.clone(),
                    proposer.clone(),
                    running.clone(),
                );
                tokio::spawn(async move {
                    let started = Instant::now();
                    match copy(&node, &store, &map, &proposer, shard, timeout, &limits).await {
                        Ok(n) => tracing::info!(
                            shard = shard.0,
                            records = n,
                            ms = started.elapsed().as_millis() as u64,
                            "shard copied; joined the in-sync set"
                        ),
                        Err(e) => {
                            tracing::info!(shard = shard.0, error = %e, "shard copy did not finish; will retry")
                        }
                    }
                    running.lock().expect("running lock").remove(&shard.0);
                });
            }
        }
    })
}

/// One page of `shard` from `primary`, after the key `after`, checked against this node's map.
async fn fetch_page(
    node: &str,
    primary: &str,
    map: &MapWatch,
    shard: ShardId,
    after: Option<&[u8]>,
    timeout: Duration,
    limits: &FrameLimits,
) -> Result<CopyPage, String> {
    let req = wire::encode(&CopyRequest {
        shard: shard.0,
        learner: node.to_string(),
        after: after.map(<[u8]>::to_vec),
    });
    let page = call_host(primary, ShardHostRpc::Copy, req, timeout).await?;
    let page = frame_check::decode::<CopyPage>("copy_page", &page, limits).and_then(|p| {
        if let CopyPage::Records {
            records,
            next,
            done,
        } = &p
        {
            let epoch = map.borrow().placement(shard).epoch;
            frame_check::copy_page(records, next.as_deref(), *done, after, epoch, limits)?;
        }
        Ok(p)
    });
    page.map_err(|e| {
        frame_check::refuse("copy_page", &e);
        format!("copy page from {primary} refused: {e}")
    })
}

/// Copies `shard` from its primary page by page, then asks to join its in-sync set.
async fn copy(
    node: &str,
    store: &Store,
    map: &MapWatch,
    proposer: &Proposer,
    shard: ShardId,
    timeout: Duration,
    limits: &FrameLimits,
) -> Result<usize, String> {
    let primary = map.borrow().placement(shard).primary.clone();
    let mut after = None;
    let mut total = 0;
    loop {
        let page = fetch_page(
            node,
            &primary,
            map,
            shard,
            after.as_deref(),
            timeout,
            limits,
        )
        .await?;
        match page {
            CopyPage::Refused(why) => {
                // The primary may not have applied the map change yet.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(why);
            }
            CopyPage::Records {
                records,
                next,
                done,
            } => {
                total += records.len();
                metrics::get().copy_records.inc_by(records.len() as u64);
                for (kind, id, lsn, value) in records {
                    store
                        .apply(shard, &kind, &id, lsn, value.as_deref())
                        .map_err(|e| e.to_string())?;
                }
                if done {
                    break;
                }
                after = next;
            }
        }
    }
    store.commit().await.map_err(|e| e.to_string())?;
    let p = map.borrow().placement(shard).clone();
    if p.primary != primary || !p.learners.iter().any(|l| l == node) {
        return Err("the shard changed during the copy".to_string());
    }
    proposer
        .propose(MapCommand::Join {
            shard: shard.0,
            epoch: p.epoch,
            node: node.to_string(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(total)
}
