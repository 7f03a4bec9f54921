//! One sled database per node. Each shard has its own tree (`shard-00042`) so a shard can be copied
//! or dropped whole; an entity's record lives at `kind 0x00 id` inside its shard's tree.
//!
//! A record is `lsn (u64, big-endian) · flag (0 live, 1 deleted) · value`, where the value is a
//! versioned [`codec`](crate::wire::codec) blob written by its entity crate. The lsn orders writes to a
//! shard across primaries (`epoch << 40 | counter`): a replica applies a record only if its lsn
//! is newer than the one it holds, so copies and live replication can arrive in any order.
//! Deletions are kept as tombstones so a copy never brings a deleted entity back.
//!
//! With [`FlushPolicy::OnWrite`] a write is acknowledged only after an fsync. Concurrent writers
//! share fsyncs (group commit): a single flusher task takes every waiter queued while the previous
//! flush ran and answers them all with the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::config::FlushPolicy;
use crate::metrics;
use keelson_rules::shard_map::ShardId;

/// Layout version of the database itself (tree names, key layout, meta keys).
pub const STORAGE_LAYOUT_VERSION: u8 = 2;

/// Storage failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(String),
    /// The database was created with another shard count: its data would be misplaced.
    #[error("{path}: created with {found} shards but the configuration says {configured}; use a new data_dir or the original shard count")]
    ShardCountMismatch {
        /// Database directory.
        path: PathBuf,
        /// Shard count on disk.
        found: u32,
        /// Shard count configured.
        configured: u32,
    },
    /// The database was written by a newer layout.
    #[error("{path}: storage layout version {found} is newer than this build's ({STORAGE_LAYOUT_VERSION})")]
    LayoutVersion {
        /// Database directory.
        path: PathBuf,
        /// Version on disk.
        found: u8,
    },
    /// The flusher task is gone (the store is shutting down).
    #[error("the storage flusher has stopped")]
    FlusherStopped,
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Sled(e.to_string())
    }
}

/// A commit waiter; it carries a handle to the database so the flusher holds none between
/// flushes and the database closes when its last [`Store`] is dropped.
type Waiter = (sled::Db, oneshot::Sender<Result<(), StorageError>>);

/// A node's store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    shards: Vec<sled::Tree>,
    /// Highest lsn applied per shard.
    lsns: Vec<AtomicU64>,
    committer: Option<mpsc::UnboundedSender<Waiter>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

/// One page of a shard scan: `(kind, id, record)` and the key to resume after, if any remain.
pub type ScanPage = (Vec<(String, String, Record)>, Option<Vec<u8>>);

/// One stored entity: its last write's lsn and value (`None` once deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log sequence number of the write.
    pub lsn: u64,
    /// The entity's bytes, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
}

impl Record {
    fn encode(lsn: u64, value: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + value.map_or(0, <[u8]>::len));
        out.extend_from_slice(&lsn.to_be_bytes());
        out.push(u8::from(value.is_none()));
        out.extend_from_slice(value.unwrap_or_default());
        out
    }

    fn lsn_of(raw: &[u8]) -> u64 {
        be_u64(raw)
    }

    fn decode(raw: &[u8]) -> Self {
        let lsn = be_u64(raw);
        let value = match raw.get(8) {
            Some(0) => Some(raw[9..].to_vec()),
            _ => None,
        };
        Self { lsn, value }
    }
}

/// Meta key: the map version at which this node was removed from the cluster (absent while
/// it is a member).
const REMOVED_KEY: &str = "removed-at-version";

fn lsn_key(shard: ShardId) -> String {
    format!("lsn-{:05}", shard.0)
}

/// Layout 1 stored bare values: wrap each as a live record at lsn 0.
fn migrate_v1(db: &sled::Db, shard_count: u32) -> Result<(), StorageError> {
    for s in 0..shard_count {
        let tree = db.open_tree(format!("shard-{s:05}"))?;
        for item in tree.iter() {
            let (k, v) = item?;
            tree.insert(k, Record::encode(0, Some(&v)))?;
        }
    }
    db.flush()?;
    tracing::info!("storage migrated from layout 1 to 2");
    Ok(())
}

fn entity_key(kind: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(kind.len() + 1 + id.len());
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

impl Store {
    /// Opens (or creates) the database in `dir` for `shard_count` shards. Must be called inside a
    /// tokio runtime when `flush` is [`FlushPolicy::OnWrite`] (it starts the flusher task).
    pub fn open(
        dir: &Path,
        shard_count: u32,
        flush: FlushPolicy,
        cache_bytes: u64,
    ) -> Result<Self, StorageError> {
        let flush_every = match flush {
            FlushPolicy::OnWrite => None,
            FlushPolicy::Periodic(d) => Some(d.as_millis().max(1) as u64),
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(flush_every)
            .open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("layout")? {
            Some(v) if v.first().copied().unwrap_or(0) > STORAGE_LAYOUT_VERSION => {
                return Err(StorageError::LayoutVersion {
                    path: dir.to_path_buf(),
                    found: v[0],
                })
            }
            Some(v) if v.first() == Some(&1) => {
                migrate_v1(&db, shard_count)?;
                meta.insert("layout", &[STORAGE_LAYOUT_VERSION])?;
            }
            Some(_) => {}
            None => {
                meta.insert("layout", &[STORAGE_LAYOUT_VERSION])?;
            }
        }
        match meta.get("shards")? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
                if found != shard_count {
                    return Err(StorageError::ShardCountMismatch {
                        path: dir.to_path_buf(),
                        found,
                        configured: shard_count,
                    });
                }
            }
            None => {
                meta.insert("shards", &shard_count.to_be_bytes())?;
            }
        }
        let shards = (0..shard_count)
            .map(|s| db.open_tree(format!("shard-{s:05}")))
            .collect::<Result<Vec<_>, _>>()?;
        db.flush()?;
        let committer = match flush {
            FlushPolicy::OnWrite => Some(spawn_flusher()),
            FlushPolicy::Periodic(_) => None,
        };
        let lsns = (0..shard_count)
            .map(|s| {
                meta.get(lsn_key(ShardId(s)))
                    .map(|v| AtomicU64::new(v.map(|v| be_u64(&v)).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                meta,
                shards,
                lsns,
                committer,
            }),
        })
    }

    fn tree(&self, shard: ShardId) -> &sled::Tree {
        &self.inner.shards[shard.0 as usize]
    }

    /// The live value of an entity (none if absent or deleted).
    pub fn get(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.record(shard, kind, id)?.and_then(|r| r.value))
    }

    /// The record of an entity, tombstones included.
    pub fn record(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
    ) -> Result<Option<Record>, StorageError> {
        Ok(self
            .tree(shard)
            .get(entity_key(kind, id))?
            .map(|v| Record::decode(&v)))
    }

    /// The lsn of the last write to `kind`/`id` (`None` if it was never written), without
    /// copying its value.
    pub fn lsn(&self, shard: ShardId, kind: &str, id: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .tree(shard)
            .get(entity_key(kind, id))?
            .map(|v| Record::lsn_of(&v)))
    }

    /// Stores `value` (or a tombstone) at `lsn` if that is newer than what is stored; returns
    /// whether it was applied. Call [`Store::commit`] before acknowledging.
    pub fn apply(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
        lsn: u64,
        value: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let new = Record::encode(lsn, value);
        let mut applied = false;
        self.tree(shard)
            .fetch_and_update(entity_key(kind, id), |old| {
                let newer = old.is_none_or(|o| Record::lsn_of(o) < lsn);
                applied = newer;
                if newer {
                    Some(new.clone())
                } else {
                    old.map(<[u8]>::to_vec)
                }
            })?;
        let seen = &self.inner.lsns[shard.0 as usize];
        if seen.fetch_max(lsn, Ordering::AcqRel) < lsn {
            self.inner.meta.insert(lsn_key(shard), &lsn.to_be_bytes())?;
        }
        Ok(applied)
    }

    /// Puts back `prev` (or removes the entity if there was none) if the record stored is still
    /// the write at `written`: undoes a primary's local write that no follower confirmed, so no
    /// read on this node sees a value the cluster may never have. Call [`Store::commit`] after.
    pub fn restore(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
        written: u64,
        prev: Option<&Record>,
    ) -> Result<bool, StorageError> {
        let mut restored = false;
        self.tree(shard)
            .fetch_and_update(entity_key(kind, id), |old| match old {
                Some(o) if Record::lsn_of(o) == written => {
                    restored = true;
                    prev.map(|p| Record::encode(p.lsn, p.value.as_deref()))
                }
                other => other.map(<[u8]>::to_vec),
            })?;
        Ok(restored)
    }

    /// Highest lsn applied to `shard`.
    pub fn shard_lsn(&self, shard: ShardId) -> u64 {
        self.inner.lsns[shard.0 as usize].load(Ordering::Acquire)
    }

    /// Up to `limit` records of `shard` after key `after` (tombstones included), for copying
    /// the shard to another node; also the key to resume after, if any remain. The page stops
    /// once it holds `max_bytes` (keys, values and 16 bytes per record), with at least one
    /// record, so a page always fits a frame and a copy always moves on.
    pub fn scan(
        &self,
        shard: ShardId,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ScanPage, StorageError> {
        let tree = self.tree(shard);
        let iter = match after {
            Some(k) => {
                tree.range::<&[u8], _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
            }
            None => tree.iter(),
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut bytes = 0usize;
        for item in iter {
            if out.len() == limit || (!out.is_empty() && bytes >= max_bytes) {
                return Ok((out, last));
            }
            let (k, v) = item?;
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let kind = String::from_utf8_lossy(&k[..sep]).into_owned();
            let id = String::from_utf8_lossy(&k[sep + 1..]).into_owned();
            bytes += k.len() + v.len() + 16;
            out.push((kind, id, Record::decode(&v)));
            last = Some(k.to_vec());
        }
        Ok((out, None))
    }

    /// Records that this node was removed from the cluster at shard-map version `version`, so
    /// that a start on this data dir refuses even when the node never applied its own removal
    /// (it learned of it from a peer's map). Flushed before it returns.
    pub fn mark_removed(&self, version: u64) -> Result<(), StorageError> {
        self.inner
            .meta
            .insert(REMOVED_KEY, &version.to_be_bytes())?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// The shard-map version at which this node was recorded removed, if it was.
    pub fn removed_at(&self) -> Result<Option<u64>, StorageError> {
        Ok(self
            .inner
            .meta
            .get(REMOVED_KEY)?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
    }

    /// The underlying database, for the consensus log that shares it.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Number of entities stored in a shard.
    pub fn shard_len(&self, shard: ShardId) -> usize {
        self.tree(shard).len()
    }

    /// Makes every write so far durable as the flush policy promises: an fsync (shared with
    /// concurrent callers) for `on_write`, nothing for `periodic`.
    pub async fn commit(&self) -> Result<(), StorageError> {
        let Some(committer) = &self.inner.committer else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        committer
            .send((self.inner.db.clone(), tx))
            .map_err(|_| StorageError::FlusherStopped)?;
        rx.await.map_err(|_| StorageError::FlusherStopped)?
    }

    /// Flushes everything; used at shutdown.
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

fn spawn_flusher() -> mpsc::UnboundedSender<Waiter> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
    tokio::spawn(async move {
        let m = metrics::get();
        while let Some((db, first)) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok((_, w)) = rx.try_recv() {
                batch.push(w);
            }
            let started = Instant::now();
            let result = db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(StorageError::from);
            m.storage_flush_seconds
                .observe(started.elapsed().as_secs_f64());
            m.storage_flush_batch.observe(batch.len() as f64);
            if let Err(e) = &result {
                tracing::error!(error = %e, "storage flush failed");
            }
            drop(db);
            for w in batch {
                let _ = w.send(result.clone());
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keelson-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn values_live_per_shard_and_survive_reopen() {
        let dir = tmp("reopen");
        {
            let s = Store::open(&dir, 8, FlushPolicy::OnWrite, 1 << 20).unwrap();
            assert!(s
                .apply(ShardId(3), "customer", "a", 5, Some(b"one"))
                .unwrap());
            assert!(s
                .apply(ShardId(4), "customer", "a", 6, Some(b"two"))
                .unwrap());
            s.commit().await.unwrap();
            assert_eq!(s.get(ShardId(3), "customer", "a").unwrap().unwrap(), b"one");
            assert_eq!(s.get(ShardId(3), "device", "a").unwrap(), None);
            assert!(s.apply(ShardId(4), "customer", "a", 7, None).unwrap());
            s.commit().await.unwrap();
        }
        let s = Store::open(&dir, 8, FlushPolicy::OnWrite, 1 << 20).unwrap();
        assert_eq!(s.get(ShardId(3), "customer", "a").unwrap().unwrap(), b"one");
        assert_eq!(s.get(ShardId(4), "customer", "a").unwrap(), None);
        assert_eq!(s.shard_len(ShardId(3)), 1);
        assert_eq!((s.shard_lsn(ShardId(3)), s.shard_lsn(ShardId(4))), (5, 7));
        let tomb = s.record(ShardId(4), "customer", "a").unwrap().unwrap();
        assert_eq!(
            tomb,
            Record {
                lsn: 7,
                value: None
            }
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn older_writes_never_overwrite_newer_ones() {
        let dir = tmp("lsn");
        let s = Store::open(&dir, 2, FlushPolicy::OnWrite, 1 << 20).unwrap();
        assert!(s.apply(ShardId(1), "c", "x", 10, Some(b"new")).unwrap());
        assert!(!s.apply(ShardId(1), "c", "x", 9, Some(b"old")).unwrap());
        assert!(!s.apply(ShardId(1), "c", "x", 10, None).unwrap());
        assert_eq!(s.get(ShardId(1), "c", "x").unwrap().unwrap(), b"new");
        assert!(s.apply(ShardId(1), "c", "x", 11, None).unwrap());
        assert!(
            !s.apply(ShardId(1), "c", "x", 10, Some(b"again")).unwrap(),
            "a copy must not resurrect a deleted entity"
        );
        assert_eq!(s.get(ShardId(1), "c", "x").unwrap(), None);
        let (scanned, next) = s.scan(ShardId(1), None, 10, usize::MAX).unwrap();
        assert_eq!(
            scanned,
            vec![(
                "c".to_string(),
                "x".to_string(),
                Record {
                    lsn: 11,
                    value: None
                }
            )]
        );
        assert_eq!(next, None);
        for i in 0..5 {
            s.apply(ShardId(0), "c", &format!("k{i}"), 20 + i, Some(b"v"))
                .unwrap();
        }
        let (page, next) = s.scan(ShardId(0), None, 3, usize::MAX).unwrap();
        assert_eq!((page.len(), page[0].1.as_str()), (3, "k0"));
        let (rest, end) = s.scan(ShardId(0), next.as_deref(), 3, usize::MAX).unwrap();
        assert_eq!((rest.len(), rest[0].1.as_str(), end), (2, "k3", None));
        // A byte budget ends the page early, never before its first record.
        let (one, next) = s.scan(ShardId(0), None, 3, 1).unwrap();
        assert_eq!((one.len(), one[0].1.as_str()), (1, "k0"));
        let (two, _) = s.scan(ShardId(0), next.as_deref(), 3, 40).unwrap();
        assert_eq!(
            two.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["k1", "k2"],
            "each record is 4 + 10 + 16 = 30 bytes: the second passes the 40-byte budget"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_different_shard_count_is_refused() {
        let dir = tmp("shards");
        drop(Store::open(&dir, 8, FlushPolicy::OnWrite, 1 << 20).unwrap());
        // sled's background flusher may hold the file lock a moment after the drop: wait for it
        // (polled, with a deadline), then the shard count decides.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match Store::open(&dir, 16, FlushPolicy::OnWrite, 1 << 20) {
                Err(StorageError::Sled(e)) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "store still locked; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => break e,
                Ok(_) => panic!("a store of 8 shards opened with 16"),
            }
        };
        assert!(matches!(
            err,
            StorageError::ShardCountMismatch {
                found: 8,
                configured: 16,
                ..
            }
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn concurrent_commits_share_flushes() {
        let dir = tmp("group");
        let s = Store::open(&dir, 1, FlushPolicy::OnWrite, 1 << 20).unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.apply(ShardId(0), "k", &i.to_string(), i + 1, Some(b"v"))
                        .unwrap();
                    s.commit().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.shard_len(ShardId(0)), 64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
