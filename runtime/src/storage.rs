//! One sled database per node. Each shard has its own tree (`shard-00042`) so a shard can be copied
//! or dropped whole; an entity's value lives at `kind 0x00 id` inside its shard's tree, as a
//! versioned [`codec`](crate::codec) blob written by its entity crate.
//!
//! With [`FlushPolicy::OnWrite`] a write is acknowledged only after an fsync. Concurrent writers
//! share fsyncs (group commit): a single flusher task takes every waiter queued while the previous
//! flush ran and answers them all with the next one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::config::FlushPolicy;
use crate::metrics;
use crate::shard_map::ShardId;

/// Layout version of the database itself (tree names, key layout, meta keys).
pub const STORAGE_LAYOUT_VERSION: u8 = 1;

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
    shards: Vec<sled::Tree>,
    committer: Option<mpsc::UnboundedSender<Waiter>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
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
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                shards,
                committer,
            }),
        })
    }

    fn tree(&self, shard: ShardId) -> &sled::Tree {
        &self.inner.shards[shard.0 as usize]
    }

    /// The stored value of an entity.
    pub fn get(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree(shard)
            .get(entity_key(kind, id))?
            .map(|v| v.to_vec()))
    }

    /// Stores an entity's value; call [`Store::commit`] before acknowledging.
    pub fn put(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.tree(shard).insert(entity_key(kind, id), value)?;
        Ok(())
    }

    /// Removes an entity's value; call [`Store::commit`] before acknowledging.
    pub fn delete(&self, shard: ShardId, kind: &str, id: &str) -> Result<(), StorageError> {
        self.tree(shard).remove(entity_key(kind, id))?;
        Ok(())
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
            s.put(ShardId(3), "customer", "a", b"one").unwrap();
            s.put(ShardId(4), "customer", "a", b"two").unwrap();
            s.commit().await.unwrap();
            assert_eq!(s.get(ShardId(3), "customer", "a").unwrap().unwrap(), b"one");
            assert_eq!(s.get(ShardId(3), "device", "a").unwrap(), None);
            s.delete(ShardId(4), "customer", "a").unwrap();
            s.commit().await.unwrap();
        }
        let s = Store::open(&dir, 8, FlushPolicy::OnWrite, 1 << 20).unwrap();
        assert_eq!(s.get(ShardId(3), "customer", "a").unwrap().unwrap(), b"one");
        assert_eq!(s.get(ShardId(4), "customer", "a").unwrap(), None);
        assert_eq!(s.shard_len(ShardId(3)), 1);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_different_shard_count_is_refused() {
        let dir = tmp("shards");
        drop(Store::open(&dir, 8, FlushPolicy::OnWrite, 1 << 20).unwrap());
        let err = Store::open(&dir, 16, FlushPolicy::OnWrite, 1 << 20).unwrap_err();
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
                    s.put(ShardId(0), "k", &i.to_string(), b"v").unwrap();
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
