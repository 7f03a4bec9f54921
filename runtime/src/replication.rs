//! The write path of a shard's primary: give the write its lsn, apply it locally, send it to
//! every in-sync follower and learner, and confirm it only when every in-sync follower has it.
//! A follower that does not answer is dropped from the in-sync set through the consensus log
//! first, so only a follower holding every acknowledged write can ever be promoted.
//!
//! ```text
//! entity actor ──write()──▶ Replicator ─┬─ store.apply + fsync (local)
//!                                       ├─ Replicate ──▶ in-sync followers (must ack)
//!                                       ├─ Replicate ──▶ learners (best effort)
//!                                       └─ a follower failed ──▶ propose Shrink ──▶ commit ──▶ ok
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use ractor::rpc::CallResult;
use ractor::ActorRef;

use crate::consensus::{MapWatch, ProposeError};
use crate::control_plane::Proposer;
use crate::metrics;
use crate::shard_map::{MapCommand, MapError, ShardId};
use crate::storage::Store;
use crate::wire::{self, RemoteError, ReplicaAck, ReplicaWrite, ShardHostRpc};

/// Bits of an lsn below the epoch.
const COUNTER_BITS: u32 = 40;

/// The first lsn of `epoch`.
pub fn epoch_base(epoch: u64) -> u64 {
    epoch << COUNTER_BITS
}

/// The epoch an lsn was written in.
pub fn epoch_of(lsn: u64) -> u64 {
    lsn >> COUNTER_BITS
}

/// Sends writes to followers; one per node, shared by every entity.
pub struct Replicator {
    node: String,
    store: Store,
    map: MapWatch,
    proposer: Proposer,
    timeout: Duration,
    last: Mutex<HashMap<u32, u64>>,
    /// Held (shared) from reading the map to applying a write locally; taken exclusively once
    /// before a shard copy starts, so no write that missed a new learner is still in flight.
    fences: Vec<RwLock<()>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("node", &self.node)
            .finish()
    }
}

/// Calls `node`'s shard host.
pub(crate) async fn call_host(
    node: &str,
    build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> ShardHostRpc,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let Some(cell) = ractor::pg::get_members(&wire::shard_host_group(node))
        .into_iter()
        .next()
    else {
        return Err(format!("not connected to {node}"));
    };
    let host: ActorRef<ShardHostRpc> = cell.into();
    match host.call(|r| build(body, r), Some(timeout)).await {
        Ok(CallResult::Success(b)) => Ok(b),
        Ok(CallResult::Timeout) => Err(format!("{node} did not answer within {timeout:?}")),
        _ => Err(format!("connection to {node} lost")),
    }
}

impl Replicator {
    /// A replicator for `node`.
    pub fn new(
        node: String,
        store: Store,
        map: MapWatch,
        proposer: Proposer,
        timeout: Duration,
    ) -> Self {
        let fences = (0..map.borrow().shard_count())
            .map(|_| RwLock::new(()))
            .collect();
        Self {
            node,
            store,
            map,
            proposer,
            timeout,
            last: Mutex::new(HashMap::new()),
            fences,
        }
    }

    fn next_lsn(&self, shard: ShardId, epoch: u64) -> u64 {
        let mut last = self.last.lock().expect("lsn lock");
        let floor = self.store.shard_lsn(shard).max(epoch_base(epoch));
        let e = last.entry(shard.0).or_insert(floor);
        *e = (*e).max(floor) + 1;
        *e
    }

    /// Waits (up to the replica timeout) for this node's map to show it still primary of
    /// `shard` with `node` out of the in-sync set.
    async fn dropped(&self, shard: ShardId, node: &str) -> bool {
        let mut map = self.map.clone();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            {
                let now = map.borrow_and_update();
                let q = now.placement(shard);
                if q.primary != self.node {
                    return false;
                }
                if !q.in_sync.iter().any(|n| n == node) {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, map.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Waits until no write that read an older map is between reading it and applying locally.
    pub fn fence(&self, shard: ShardId) {
        drop(self.fences[shard.0 as usize].write().expect("fence lock"));
    }

    /// Writes `value` (or a deletion) for an entity of `shard`, returning once it is durable on
    /// this node and on every in-sync follower.
    pub async fn write(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
        value: Option<&[u8]>,
    ) -> Result<(), RemoteError> {
        let (p, lsn) = {
            let _fence = self.fences[shard.0 as usize].read().expect("fence lock");
            let p = self.map.borrow().placement(shard).clone();
            if p.primary != self.node {
                return Err(RemoteError::NotOwner {
                    node: self.node.clone(),
                    shard: shard.0,
                    epoch: p.epoch,
                    owner: p.primary,
                });
            }
            let lsn = self.next_lsn(shard, p.epoch);
            self.store
                .apply(shard, kind, id, lsn, value)
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            (p, lsn)
        };
        let frame = wire::encode(&ReplicaWrite {
            shard: shard.0,
            primary: self.node.clone(),
            epoch: p.epoch,
            lsn,
            kind: kind.to_string(),
            id: id.to_string(),
            value: value.map(<[u8]>::to_vec),
        });
        let targets: Vec<&String> = p.in_sync.iter().chain(&p.learners).collect();
        let sends = targets
            .iter()
            .map(|t| call_host(t, ShardHostRpc::Replicate, frame.clone(), self.timeout));
        let (local, acks) = tokio::join!(self.store.commit(), join_all(sends));
        local.map_err(|e| RemoteError::Storage(e.to_string()))?;
        let unconfirmed = |reason: String| RemoteError::WriteNotConfirmed {
            shard: shard.0,
            reason,
        };
        let mut failed = Vec::new();
        for (target, ack) in targets.iter().zip(acks) {
            let in_sync = p.in_sync.contains(target);
            match ack.map(|b| wire::decode::<ReplicaAck>(&b)) {
                Ok(Ok(ReplicaAck::Applied)) => {}
                Ok(Ok(ReplicaAck::Stale { epoch })) => {
                    metrics::get().stale_primary_refusals.inc();
                    return Err(unconfirmed(format!(
                        "follower {target} is at epoch {epoch}; this node is no longer primary"
                    )));
                }
                other if in_sync => {
                    tracing::warn!(shard = shard.0, follower = %target, result = ?other, "follower did not confirm a write; dropping it from the in-sync set");
                    failed.push((*target).clone());
                }
                _ => {}
            }
        }
        for node in failed {
            let cmd = MapCommand::Shrink {
                shard: shard.0,
                epoch: p.epoch,
                node: node.clone(),
            };
            match self.proposer.propose(cmd).await {
                Ok(_) => metrics::get().in_sync_shrinks.inc(),
                Err(ProposeError::Refused(MapError::StaleEpoch { .. })) => {
                    // Someone else changed the shard meanwhile (often the planner dropping the
                    // same follower): fine once this node's map shows it is still primary and
                    // the follower is out of the in-sync set.
                    if !self.dropped(shard, &node).await {
                        return Err(unconfirmed(format!("shard changed while dropping {node}")));
                    }
                }
                Err(e) => {
                    return Err(unconfirmed(format!(
                        "cannot drop unresponsive follower {node}: {e}"
                    )))
                }
            }
        }
        // Fencing check. A write that straddles a handoff or promotion is confirmed by the new
        // primary too (it was an in-sync follower and acknowledged it before taking over), so it
        // is ordered before anything the new primary writes. Two primaries at once would be a
        // new primary that never confirmed this write: counted, and it must stay 0.
        let now = self.map.borrow().clone();
        let q = now.placement(shard);
        if q.primary != self.node && epoch_of(lsn) < q.epoch && !p.in_sync.contains(&q.primary) {
            metrics::get().duplicate_primary.inc();
            tracing::error!(shard = shard.0, epoch = p.epoch, new_primary = %q.primary, "write confirmed while another node, without it, had become primary");
        } else if q.primary != self.node {
            tracing::debug!(shard = shard.0, new_primary = %q.primary, "write confirmed across a primary change; the new primary has it");
        }
        Ok(())
    }
}
