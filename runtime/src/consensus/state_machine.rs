//! The shard map as openraft's state machine. Applied state (map, last applied log id,
//! membership) and the latest snapshot are written to sled on every apply, so a restart resumes
//! where it stopped; every applied change is published on a watch channel.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::primary_changes::{PrimaryChange, PrimaryChanges};
use super::{MapRaft, MapResponse};
use crate::metrics;
use keelson_rules::shard_map::{ShardId, ShardMap};

type Err = StorageError<u64>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    map: ShardMap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The map state machine of one node.
#[derive(Debug, Clone)]
pub struct MapStateMachine {
    db: sled::Db,
    tree: sled::Tree,
    applied: Applied,
    publish: Arc<watch::Sender<Arc<ShardMap>>>,
    changes: PrimaryChanges,
}

fn io<E: std::error::Error + 'static>(e: E) -> Err {
    StorageIOError::write_state_machine(&e).into()
}

impl MapStateMachine {
    /// Loads the applied state from `db`, or starts from `initial`; every change of a shard's
    /// primary it applies is recorded in `changes` before the map is published. Returns the
    /// machine and a receiver of the map it publishes.
    pub fn open(
        db: &sled::Db,
        initial: ShardMap,
        changes: PrimaryChanges,
    ) -> Result<(Self, watch::Receiver<Arc<ShardMap>>), sled::Error> {
        let tree = db.open_tree("raft_state")?;
        let applied = match tree.get("applied")? {
            Some(v) => serde_json::from_slice(&v)
                .unwrap_or_else(|e| panic!("stored shard map is unreadable: {e}")),
            None => Applied {
                last_applied: None,
                membership: StoredMembership::default(),
                map: initial,
            },
        };
        let (tx, rx) = watch::channel(Arc::new(applied.map.clone()));
        Ok((
            Self {
                db: db.clone(),
                tree,
                applied,
                publish: Arc::new(tx),
                changes,
            },
            rx,
        ))
    }

    async fn persist(&self) -> Result<(), Err> {
        self.tree
            .insert("applied", serde_json::to_vec(&self.applied).map_err(io)?)
            .map_err(io)?;
        self.db.flush_async().await.map_err(io)?;
        Ok(())
    }

    fn publish(&self) {
        metrics::get()
            .shard_epoch
            .set(self.applied.map.version() as i64);
        self.publish
            .send_replace(Arc::new(self.applied.map.clone()));
    }
}

impl RaftSnapshotBuilder<MapRaft> for MapStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MapRaft>, Err> {
        let data = serde_json::to_vec(&self.applied).map_err(io)?;
        let last = self.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.index).unwrap_or(0),
                crate::clock::now_ms()
            ),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.tree
            .insert("snapshot", serde_json::to_vec(&stored).map_err(io)?)
            .map_err(io)?;
        self.db.flush_async().await.map_err(io)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MapRaft> for MapStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Err> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MapResponse>, Err>
    where
        I: IntoIterator<Item = Entry<MapRaft>> + Send,
    {
        let mut out = Vec::new();
        let mut changed = false;
        for e in entries {
            self.applied.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(MapResponse(Ok(self.applied.map.version()))),
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(MapResponse(Ok(self.applied.map.version())));
                }
                EntryPayload::Normal(req) => {
                    let shard = req
                        .0
                        .shard()
                        .map(ShardId)
                        .filter(|s| s.0 < self.applied.map.shard_count());
                    let before = shard.map(|s| self.applied.map.placement(s).clone());
                    let result = self.applied.map.apply(&req.0);
                    match &result {
                        Ok(()) => {
                            self.applied.map.set_version(e.log_id.index);
                            changed = true;
                            if let (Some(s), Some(before)) = (shard, before) {
                                let after = self.applied.map.placement(s);
                                if let Some(c) =
                                    PrimaryChange::between(&before, after, e.log_id.index)
                                {
                                    self.changes.record(s, c);
                                }
                            }
                            tracing::info!(command = ?req.0, version = e.log_id.index, "shard map changed");
                        }
                        Err(err) => {
                            tracing::debug!(command = ?req.0, error = %err, "shard map change refused")
                        }
                    }
                    out.push(MapResponse(result.map(|()| e.log_id.index)));
                }
            }
        }
        self.persist().await?;
        if changed {
            self.publish();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let data = snapshot.into_inner();
        let applied: Applied = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // A peer's snapshot of another shard count would make every shard number wrong here
        // (single-chunk snapshots are refused on arrival; this catches the chunked ones). The
        // members may differ: nodes join and leave.
        if applied.map.shard_count() != self.applied.map.shard_count() {
            let e = std::io::Error::other(format!(
                "a snapshot of {} shards does not match this cluster's {} shards",
                applied.map.shard_count(),
                self.applied.map.shard_count(),
            ));
            return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
        }
        self.applied = applied;
        self.applied.last_applied = meta.last_log_id;
        self.applied.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.tree
            .insert("snapshot", serde_json::to_vec(&stored).map_err(io)?)
            .map_err(io)?;
        self.persist().await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MapRaft>>, Err> {
        let Some(v) = self.tree.get("snapshot").map_err(io)? else {
            return Ok(None);
        };
        let s: StoredSnapshot =
            serde_json::from_slice(&v).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
