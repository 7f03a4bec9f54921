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

use crate::consensus::control_plane::Proposer;
use crate::consensus::{MapWatch, ProposeError};
use crate::metrics;
use crate::storage::Store;
use crate::wire::codec::CodecError;
use crate::wire::frame_check;
use crate::wire::rpc::call_host;
use crate::wire::rpc::RpcError;
use crate::wire::{self, RemoteError, ReplicaAck, ReplicaWrite, ShardHostRpc};
use keelson_rules::acks::{self, Ack, AckPlan};
use keelson_rules::shard_map::{MapCommand, MapError, Placement, ShardId};

pub use crate::lsn::{epoch_base, epoch_of};

/// Sends writes to followers; one per node, shared by every entity.
pub struct Replicator {
    pub(super) node: String,
    store: Store,
    pub(super) map: MapWatch,
    pub(super) proposer: Proposer,
    pub(super) timeout: Duration,
    last: Mutex<HashMap<u32, u64>>,
    /// Held (shared) from reading the map to applying a write locally; taken exclusively once
    /// before a shard copy starts, so no write that missed a new learner is still in flight.
    pub(super) fences: Vec<RwLock<()>>,
    /// Per shard, an epoch at which another node is known to lead it although this node's map
    /// may still say otherwise (0: none). This node must not serve the shard as primary until
    /// its map reaches that epoch.
    pub(super) deposed: Vec<std::sync::atomic::AtomicU64>,
    /// Per shard, in-sync followers that failed to confirm a write that this node could not
    /// drop them for: they may lack a value reads here would show, or hold one taken back here,
    /// so they serve no follower read until they confirm a later write.
    suspects: Mutex<HashMap<u32, std::collections::HashSet<String>>>,
    /// Writes between passing the ownership check and their outcome, per shard: a hand-over
    /// waits for them.
    pub(super) in_flight: Vec<std::sync::atomic::AtomicU32>,
    /// Shards this node was promoted to lead and does not serve yet.
    takeovers: super::takeover::Takeovers,
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
        takeovers: super::takeover::Takeovers,
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
            takeovers,
        }
    }

    /// True while this node, promoted to lead `shard` (placed at `p` in map `version`), waits
    /// for the old primary's lease support to run out.
    pub fn taking_over(&self, shard: ShardId, p: &Placement, version: u64) -> bool {
        self.takeovers.waiting(shard, p, version)
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
                if let Some(out) = acks::dropped(&self.node, now.placement(shard), node) {
                    return out;
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
            let version = self.map.borrow().version();
            if self.taking_over(shard, &p, version) {
                return Err(RemoteError::NoLease(self.node.clone()));
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
        let mut plan = AckPlan::default();
        let write = ReplicaWrite {
            shard: shard.0,
            primary: self.node.clone(),
            epoch: p.epoch,
            lsn,
            kind: kind.to_string(),
            id: id.to_string(),
            value: value.map(<[u8]>::to_vec),
        };
        let result = self.confirm(&write, &p, &mut plan).await;
        if result.is_err() && acks::take_back(&plan) {
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
    /// that fail through consensus). `plan` is what their answers said (the default if none
    /// came back).
    async fn confirm(
        &self,
        write: &ReplicaWrite,
        p: &Placement,
        plan: &mut AckPlan,
    ) -> Result<(), RemoteError> {
        let shard = ShardId(write.shard);
        let targets: Vec<&String> = p.in_sync.iter().chain(&p.learners).collect();
        let answers = self.send(write, &targets).await?;
        let acks = read_acks(&answers, write.epoch);
        let classified: Vec<(bool, Ack)> = targets
            .iter()
            .zip(&acks)
            .map(|(t, a)| (p.in_sync.contains(t), *a))
            .collect();
        *plan = acks::classify(&classified);
        self.clear_suspects(shard, plan.confirmed.iter().map(|i| targets[*i]));
        // Every in-sync follower that failed before the first stale answer is reported.
        let stale_at = acks.iter().position(|a| matches!(a, Ack::Stale { .. }));
        for (i, (in_sync, ack)) in classified
            .iter()
            .enumerate()
            .take(stale_at.unwrap_or(acks.len()))
        {
            if *in_sync && *ack == Ack::Failed {
                tracing::warn!(shard = shard.0, follower = %targets[i], result = ?answers[i], "follower did not confirm a write; dropping it from the in-sync set");
            }
        }
        if let (Some(epoch), Some(i)) = (plan.step_down, stale_at) {
            metrics::get().stale_primary_refusals.inc();
            if self.depose(shard, epoch) {
                tracing::warn!(shard = shard.0, follower = %targets[i], epoch, "a follower knows a newer primary; stepping down");
            }
            return Err(unconfirmed(
                shard,
                format!(
                    "follower {} is at epoch {epoch}; this node is no longer primary",
                    targets[i]
                ),
            ));
        }
        let failed = plan.shrink.iter().map(|i| targets[*i].clone()).collect();
        self.drop_unconfirmed(shard, p.epoch, failed).await?;
        self.fencing_check(shard, write, p);
        Ok(())
    }

    /// Sends the write to `targets` while committing it locally; the followers' answers, in
    /// order, once the local commit succeeded.
    async fn send(
        &self,
        write: &ReplicaWrite,
        targets: &[&String],
    ) -> Result<Vec<Answer>, RemoteError> {
        let frame = wire::encode(write);
        let sends = targets
            .iter()
            .map(|t| call_host(t, ShardHostRpc::Replicate, frame.clone(), self.timeout));
        let waited = std::time::Instant::now();
        let (local, answers) = tokio::join!(self.store.commit(), async {
            let answers = join_all(sends).await;
            if !targets.is_empty() {
                metrics::get()
                    .replication_ack
                    .observe(waited.elapsed().as_secs_f64());
            }
            answers
        });
        local.map_err(|e| RemoteError::Storage(e.to_string()))?;
        Ok(answers
            .into_iter()
            .map(|a| a.map(|b| wire::decode::<ReplicaAck>(&b)))
            .collect())
    }

    /// Followers that confirmed a write may serve follower reads again.
    fn clear_suspects<'a>(&self, shard: ShardId, confirmed: impl Iterator<Item = &'a String>) {
        let mut suspects = self.suspects.lock().expect("suspects lock");
        if let Some(s) = suspects.get_mut(&shard.0) {
            for target in confirmed {
                s.remove(target);
            }
        }
    }

    /// Drops in-sync followers that did not confirm a write (at `epoch`) through consensus; the
    /// write is confirmed only once every one of them is out of the in-sync set.
    async fn drop_unconfirmed(
        &self,
        shard: ShardId,
        epoch: u64,
        failed: Vec<String>,
    ) -> Result<(), RemoteError> {
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
                epoch,
                node: node.clone(),
            };
            match self.proposer.propose(cmd).await {
                Ok(_) => metrics::get().in_sync_shrinks.inc(),
                // Someone else changed the shard meanwhile (often the planner dropping the same
                // follower): fine once this node's map shows the follower out (below).
                Err(ProposeError::Refused(MapError::StaleEpoch { .. })) => {}
                Err(e) => {
                    return Err(unconfirmed(
                        shard,
                        format!("cannot drop unresponsive follower {node}: {e}"),
                    ))
                }
            }
            // Confirmed only once this node's own map shows the follower out while it still
            // leads: a primary that restarts forgets its suspects, and its map must then keep the
            // follower from serving reads it missed (found by the model checker).
            if !self.dropped(shard, &node).await {
                return Err(unconfirmed(
                    shard,
                    format!("shard changed while dropping {node}"),
                ));
            }
        }
        Ok(())
    }

    /// Fencing check. A write that straddles a handoff or promotion is confirmed by the new
    /// primary too (it was an in-sync follower and acknowledged it before taking over), so it
    /// is ordered before anything the new primary writes. Two primaries at once would be a new
    /// primary that never confirmed this write: counted, and it must stay 0.
    fn fencing_check(&self, shard: ShardId, write: &ReplicaWrite, p: &Placement) {
        let now = self.map.borrow().clone();
        let q = now.placement(shard);
        let write_epoch = epoch_of(write.lsn);
        if acks::two_primaries(&self.node, write_epoch, &p.in_sync, &q.primary, q.epoch) {
            metrics::get().duplicate_primary.inc();
            tracing::error!(shard = shard.0, epoch = p.epoch, new_primary = %q.primary, "write confirmed while another node, without it, had become primary");
        } else if q.primary != self.node {
            tracing::debug!(shard = shard.0, new_primary = %q.primary, "write confirmed across a primary change; the new primary has it");
        }
    }
}

/// A follower's answer to a replicated write, as it came back.
type Answer = Result<Result<ReplicaAck, CodecError>, RpcError>;

/// The answers as the ack rules read them. A stale answer must name an epoch plausibly newer than
/// the write's; an implausible one is refused (logged, counted) and read as a failure. Answers
/// after the first stale one are not checked: the write steps down at it.
fn read_acks(answers: &[Answer], write_epoch: u64) -> Vec<Ack> {
    let mut stepping_down = false;
    answers
        .iter()
        .map(|a| match a {
            Ok(Ok(ReplicaAck::Applied)) => Ack::Applied,
            Ok(Ok(ReplicaAck::Stale { epoch }))
                if !stepping_down
                    && frame_check::stale_epoch(*epoch, write_epoch)
                        .inspect_err(|e| frame_check::refuse("replica_ack", e))
                        .is_ok() =>
            {
                stepping_down = true;
                Ack::Stale { epoch: *epoch }
            }
            _ => Ack::Failed,
        })
        .collect()
}

/// The error of a write that could not be confirmed.
fn unconfirmed(shard: ShardId, reason: String) -> RemoteError {
    RemoteError::WriteNotConfirmed {
        shard: shard.0,
        reason,
    }
}
