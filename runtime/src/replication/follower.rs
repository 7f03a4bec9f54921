//! What a node does with its peers' replication frames, beside the entity traffic the shard
//! host serves: as a follower it applies the primary's writes (or refuses them as stale); as a
//! primary it answers a follower's read-index question and serves a learner's copy pages.
//! Every frame is checked (`frame_check`) before anything is done; the decisions are
//! `keelson_rules::{follower, reads}`.
//!
//! ```text
//! primary ──Replicate(ReplicaWrite)──▶ Follower::replicate ─on_write─▶ apply + commit ─▶ Applied
//!                                                            └─ stale ─▶ Stale{epoch}
//! follower ──ReadIndex──▶ Follower::read_index (primary) ─grant_read─▶ bool
//! learner ──Copy(CopyRequest)──▶ Follower::copy (primary) ─▶ CopyPage
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::cluster::lease::Lease;
use crate::consensus::MapWatch;
use crate::metrics;
use crate::replication::Replicator;
use crate::storage::Store;
use crate::wire::frame_check::{self, FrameLimits};
use crate::wire::{self, CopyPage, CopyRequest, FrameError, ReadIndex, ReplicaAck, ReplicaWrite};
use keelson_rules::follower::{self, Known, Mark, Verdict};
use keelson_rules::reads::{self, Standing};
use keelson_rules::shard_map::{Placement, ShardId};

/// The replication side of a node's shard host.
#[derive(Debug)]
pub struct Follower {
    node: String,
    map: MapWatch,
    store: Store,
    replicator: Arc<Replicator>,
    lease: Lease,
    frames: FrameLimits,
    /// Highest epoch (and its primary) this node has accepted replicated writes at, per shard.
    accepted: HashMap<u32, Mark>,
}

impl Follower {
    /// The replication side of node `node`.
    pub fn new(
        node: String,
        map: MapWatch,
        store: Store,
        replicator: Arc<Replicator>,
        lease: Lease,
        frames: FrameLimits,
    ) -> Self {
        Self {
            node,
            map,
            store,
            replicator,
            lease,
            frames,
            accepted: HashMap::new(),
        }
    }

    /// Where this node stands for `shard` (placed at `p` in its map of `version`).
    pub fn standing(&self, shard: ShardId, p: &Placement, version: u64) -> Standing {
        let primary = p.primary == self.node;
        Standing {
            lease_valid: self.lease.is_valid(),
            primary,
            deposed: self.replicator.is_deposed(shard, p.epoch),
            in_sync: p.in_sync.contains(&self.node),
            // Judged on every request so the takeover tracks every placement it served under.
            taking_over: self.replicator.taking_over(shard, p, version) && primary,
        }
    }

    /// A follower applies a write from the shard's primary, unless it knows a newer epoch.
    pub fn replicate(&mut self, bytes: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) {
        let m = metrics::get();
        let w = match self.check_write(&bytes) {
            Ok(w) => w,
            Err(e) => {
                frame_check::refuse("replicate", &e);
                let _ = reply.send(wire::encode(&ReplicaAck::Refused(e)));
                return;
            }
        };
        let shard = ShardId(w.shard);
        if let Verdict::Stale { epoch } = self.judge(&w) {
            m.replica_writes.with_label_values(&["stale"]).inc();
            let _ = reply.send(wire::encode(&ReplicaAck::Stale { epoch }));
            return;
        }
        if let Err(e) = self
            .store
            .apply(shard, &w.kind, &w.id, w.lsn, w.value.as_deref())
        {
            m.replica_writes.with_label_values(&["failed"]).inc();
            let _ = reply.send(wire::encode(&ReplicaAck::Failed(e.to_string())));
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let ack = match store.commit().await {
                Ok(()) => {
                    metrics::get()
                        .replica_writes
                        .with_label_values(&["applied"])
                        .inc();
                    ReplicaAck::Applied
                }
                Err(e) => ReplicaAck::Failed(e.to_string()),
            };
            let _ = reply.send(wire::encode(&ack));
        });
    }

    /// Decodes a replicated write and checks it against this node's map.
    fn check_write(&self, bytes: &[u8]) -> Result<ReplicaWrite, FrameError> {
        let w = frame_check::decode::<ReplicaWrite>("replicate", bytes, &self.frames)?;
        let map = self.map.borrow();
        let s = frame_check::shard(w.shard, map.shard_count())?;
        let epoch = map.placement(s).epoch;
        frame_check::replica_write(&w, map.shard_count(), map.nodes(), epoch, &self.frames)?;
        Ok(w)
    }

    /// The follower rule's verdict on `w`, with its effects performed: the new mark is kept and
    /// a node that still thinks it leads steps down.
    fn judge(&mut self, w: &ReplicaWrite) -> Verdict {
        let shard = ShardId(w.shard);
        let verdict = {
            let map = self.map.borrow();
            let p = map.placement(shard);
            let known = Known {
                me: &self.node,
                map_epoch: p.epoch,
                map_primary: &p.primary,
                mark: self.accepted.get(&w.shard),
            };
            follower::on_write(known, w.epoch, &w.primary)
        };
        if let Verdict::Apply { mark, step_down } = &verdict {
            if let Some(mark) = mark {
                self.accepted.insert(w.shard, mark.clone());
            }
            // Another node writes as primary at a newer epoch while this node's map still
            // names it: the map change has not arrived here yet. Step down now, before
            // acknowledging, so no entity here answers from memory that no longer has every
            // acknowledged write.
            if *step_down && self.replicator.depose(shard, w.epoch) {
                // Requests stop at the ownership check; the entities stop when the map arrives.
                tracing::warn!(shard = w.shard, new_primary = %w.primary, epoch = w.epoch, "another node leads this shard at a newer epoch; stepping down before the map says so");
            }
        }
        verdict
    }

    /// The primary serves one page of a shard to a learner it knows about.
    pub fn copy(&mut self, bytes: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) {
        let checked =
            frame_check::decode::<CopyRequest>("copy", &bytes, &self.frames).and_then(|r| {
                let map = self.map.borrow();
                let s = frame_check::copy_request(&r, map.shard_count(), map.nodes())?;
                Ok((s, r))
            });
        let page = match checked {
            Err(e) => {
                frame_check::refuse("copy", &e);
                CopyPage::Refused(format!("copy request refused: {e}"))
            }
            Ok((shard, req)) => self.page(shard, &req),
        };
        let _ = reply.send(wire::encode(&page));
    }

    /// One page of `shard` for a checked copy request.
    fn page(&self, shard: ShardId, req: &CopyRequest) -> CopyPage {
        let p = self.map.borrow().placement(shard).clone();
        if p.primary != self.node || !p.learners.contains(&req.learner) {
            return CopyPage::Refused(format!(
                "{} is not primary of shard {} with learner {}",
                self.node, req.shard, req.learner
            ));
        }
        if req.after.is_none() {
            // Every write from now on is sent to the learner; wait out any write that read the
            // map before it listed the learner.
            self.replicator.fence(shard);
        }
        match self.store.scan(
            shard,
            req.after.as_deref(),
            frame_check::MAX_PAGE_RECORDS,
            self.frames.copy_page_bytes,
        ) {
            Ok((records, next)) => CopyPage::Records {
                records: records
                    .into_iter()
                    .map(|(k, i, r)| (k, i, r.lsn, r.value))
                    .collect(),
                done: next.is_none(),
                next,
            },
            Err(e) => CopyPage::Refused(format!("cannot read shard {}: {e}", req.shard)),
        }
    }

    /// The primary answers a follower's [`ReadIndex`].
    pub fn read_index(&self, bytes: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) {
        let checked = frame_check::decode::<ReadIndex>("read_index", &bytes, &self.frames)
            .and_then(|q| {
                let map = self.map.borrow();
                frame_check::read_index(&q, map.shard_count(), map.nodes())?;
                Ok(q)
            });
        // A question that breaks the rules is answered "not confirmed": the follower must not
        // serve the read.
        let ok = checked
            .inspect_err(|e| frame_check::refuse("read_index", e))
            .is_ok_and(|q| {
                let shard = ShardId(q.shard);
                let map = self.map.borrow();
                let p = map.placement(shard);
                let suspect = !self.replicator.may_serve_reads(shard, &q.follower);
                reads::grant_read(
                    self.standing(shard, p, map.version()),
                    p.in_sync.contains(&q.follower),
                    suspect,
                )
            });
        let _ = reply.send(wire::encode(&ok));
    }
}
