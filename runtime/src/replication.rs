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

use crate::consensus::{MapWatch, ProposeError};
use crate::control_plane::Proposer;
use crate::metrics;
use crate::rpc::call_host;
use keelson_rules::shard_map::{MapCommand, MapError, ShardId};
use crate::storage::Store;
use crate::wire::{self, RemoteError, ReplicaAck, ReplicaWrite, ShardHostRpc};

pub use crate::lsn::{epoch_base, epoch_of};

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
    /// Per shard, an epoch at which another node is known to lead it although this node's map
    /// may still say otherwise (0: none). This node must not serve the shard as primary until
    /// its map reaches that epoch.
    deposed: Vec<std::sync::atomic::AtomicU64>,
    /// Per shard, in-sync followers that failed to confirm a write that this node could not
    /// drop them for: they may lack a value reads here would show, or hold one taken back here,
    /// so they serve no follower read until they confirm a later write.
    suspects: Mutex<HashMap<u32, std::collections::HashSet<String>>>,
    /// Writes between passing the ownership check and their outcome, per shard: a hand-over
    /// waits for them.
    in_flight: Vec<std::sync::atomic::AtomicU32>,
}

/// Counts a write in flight on a shard until dropped.
struct WriteInFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("node", &self.node)
            .finish()
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
        let in_flight = (0..map.borrow().shard_count())
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect();
        let deposed = (0..map.borrow().shard_count())
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        Self {
            node,
            store,
            map,
            proposer,
            timeout,
            last: Mutex::new(HashMap::new()),
            fences,
            deposed,
            suspects: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    /// Hands `shard` (at `epoch`) to the in-sync follower `to`: stops taking writes, waits for
    /// the ones in flight to finish (each confirmed by `to` or taken back), then commits the
    /// change. The new primary therefore starts with every write this node ever acknowledged,
    /// and no write of this node can reach a follower after it. On failure this node resumes.
    pub async fn hand_over(&self, shard: ShardId, epoch: u64, to: &str) -> Result<(), String> {
        {
            let _fence = self.fences[shard.0 as usize].write().expect("fence lock");
            let p = self.map.borrow().placement(shard).clone();
            if p.primary != self.node || p.epoch != epoch {
                return Err(format!(
                    "{} is not primary of shard {} at epoch {epoch}",
                    self.node, shard.0
                ));
            }
            self.depose(shard, epoch + 1);
        }
        let counter = &self.in_flight[shard.0 as usize];
        let deadline = std::time::Instant::now() + self.timeout;
        while counter.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if std::time::Instant::now() > deadline {
                self.resume(shard, epoch + 1);
                return Err(format!("writes on shard {} did not finish", shard.0));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let cmd = MapCommand::Handoff {
            shard: shard.0,
            epoch,
            to: to.to_string(),
        };
        match self.proposer.propose(cmd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.resume(shard, epoch + 1);
                Err(e.to_string())
            }
        }
    }

    /// Undoes a [`Replicator::depose`] at `epoch` that did not lead to a map change.
    fn resume(&self, shard: ShardId, epoch: u64) {
        let _ = self.deposed[shard.0 as usize].compare_exchange(
            epoch,
            0,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
    }

    /// False for a follower that may have diverged from this primary on `shard` (see
    /// `suspects`): it must not serve follower reads yet.
    pub fn may_serve_reads(&self, shard: ShardId, follower: &str) -> bool {
        self.suspects
            .lock()
            .expect("suspects lock")
            .get(&shard.0)
            .is_none_or(|s| !s.contains(follower))
    }

    /// Records that another node leads `shard` at `epoch`: this node stops serving it as
    /// primary until its own map catches up. Returns true the first time for that epoch.
    pub fn depose(&self, shard: ShardId, epoch: u64) -> bool {
        let prev =
            self.deposed[shard.0 as usize].fetch_max(epoch, std::sync::atomic::Ordering::AcqRel);
        prev < epoch
    }

    /// True while this node must not act as primary of `shard` although its map (at
    /// `map_epoch`) says it is.
    pub fn is_deposed(&self, shard: ShardId, map_epoch: u64) -> bool {
        self.deposed[shard.0 as usize].load(std::sync::atomic::Ordering::Acquire) > map_epoch
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
        let (p, lsn, prev, _in_flight) = {
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
            if self.is_deposed(shard, p.epoch) {
                return Err(RemoteError::NotOwner {
                    node: self.node.clone(),
                    shard: shard.0,
                    epoch: p.epoch,
                    owner: p.primary,
                });
            }
            self.in_flight[shard.0 as usize].fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let guard = WriteInFlight(&self.in_flight[shard.0 as usize]);
            let prev = self
                .store
                .record(shard, kind, id)
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            let lsn = self.next_lsn(shard, p.epoch);
            self.store
                .apply(shard, kind, id, lsn, value)
                .map_err(|e| RemoteError::Storage(e.to_string()))?;
            (p, lsn, prev, guard)
        };
        let applied_elsewhere = std::sync::atomic::AtomicBool::new(false);
        let write = ReplicaWrite {
            shard: shard.0,
            primary: self.node.clone(),
            epoch: p.epoch,
            lsn,
            kind: kind.to_string(),
            id: id.to_string(),
            value: value.map(<[u8]>::to_vec),
        };
        let result = self.confirm(&write, &p, &applied_elsewhere).await;
        if result.is_err() && !applied_elsewhere.load(std::sync::atomic::Ordering::Acquire) {
            // No follower confirmed it: take the local write back, so no read here shows a value
            // the rest of the cluster may never have. (A follower that timed out may still hold
            // it and the write may surface later, an outcome the client was told is unknown;
            // such a follower serves no read until it confirms a later write.)
            match self.store.restore(shard, kind, id, lsn, prev.as_ref()) {
                Ok(true) => {
                    let _ = self.store.commit().await;
                    tracing::debug!(shard = shard.0, kind, id, "unconfirmed write taken back");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(shard = shard.0, kind, id, error = %e, "cannot take back an unconfirmed write")
                }
            }
        }
        result
    }

    /// Sends a locally applied write to the followers and waits for them (or drops the ones
    /// that fail through consensus).
    async fn confirm(
        &self,
        write: &ReplicaWrite,
        p: &keelson_rules::shard_map::Placement,
        applied_elsewhere: &std::sync::atomic::AtomicBool,
    ) -> Result<(), RemoteError> {
        let (shard, lsn) = (ShardId(write.shard), write.lsn);
        let frame = wire::encode(write);
        let targets: Vec<&String> = p.in_sync.iter().chain(&p.learners).collect();
        let sends = targets
            .iter()
            .map(|t| call_host(t, ShardHostRpc::Replicate, frame.clone(), self.timeout));
        let waited = std::time::Instant::now();
        let (local, acks) = tokio::join!(self.store.commit(), async {
            let acks = join_all(sends).await;
            if !targets.is_empty() {
                metrics::get()
                    .replication_ack
                    .observe(waited.elapsed().as_secs_f64());
            }
            acks
        });
        local.map_err(|e| RemoteError::Storage(e.to_string()))?;
        let unconfirmed = |reason: String| RemoteError::WriteNotConfirmed {
            shard: shard.0,
            reason,
        };
        {
            let mut suspects = self.suspects.lock().expect("suspects lock");
            for (target, a) in targets.iter().zip(&acks) {
                if matches!(
                    a.as_ref().map(|b| wire::decode::<ReplicaAck>(b)),
                    Ok(Ok(ReplicaAck::Applied))
                ) {
                    applied_elsewhere.store(true, std::sync::atomic::Ordering::Release);
                    if let Some(s) = suspects.get_mut(&shard.0) {
                        s.remove(*target);
                    }
                }
            }
        }
        let mut failed = Vec::new();
        for (target, ack) in targets.iter().zip(acks) {
            let in_sync = p.in_sync.contains(target);
            match ack.map(|b| wire::decode::<ReplicaAck>(&b)) {
                Ok(Ok(ReplicaAck::Applied)) => {}
                Ok(Ok(ReplicaAck::Stale { epoch }))
                    if crate::frame_check::stale_epoch(epoch, write.epoch)
                        .inspect_err(|e| crate::frame_check::refuse("replica_ack", e))
                        .is_ok() =>
                {
                    metrics::get().stale_primary_refusals.inc();
                    if self.depose(shard, epoch) {
                        tracing::warn!(shard = shard.0, follower = %target, epoch, "a follower knows a newer primary; stepping down");
                    }
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
        if !failed.is_empty() {
            // Until they are dropped from the in-sync set (or confirm a later write), they may
            // disagree with this node.
            let mut suspects = self.suspects.lock().expect("suspects lock");
            suspects
                .entry(shard.0)
                .or_default()
                .extend(failed.iter().cloned());
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
