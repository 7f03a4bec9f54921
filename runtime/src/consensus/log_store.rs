//! openraft's log storage in sled: tree `raft_log` (index → entry), tree `raft_state` (vote,
//! committed, last purged). Every write is fsynced before it is reported done.

#![allow(clippy::result_large_err)] // openraft fixes the size of StorageError.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::MapRaft;

type Err = StorageError<u64>;

/// The raft log of one node.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    state: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("raft types serialise")
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, Err> {
    serde_json::from_slice(b).map_err(|e| StorageIOError::read(&e).into())
}

impl LogStore {
    /// Opens the log trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            state: db.open_tree("raft_state")?,
        })
    }

    fn get_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Err> {
        match self.state.get(key).map_err(|e| StorageIOError::read(&e))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    fn remove_entries<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), Err> {
        let keys: Vec<_> = self
            .log
            .range(range)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        for k in keys {
            self.log
                .remove(k)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }

    async fn put_state<T: Serialize>(&self, key: &str, v: &T) -> Result<(), Err> {
        self.state
            .insert(key, enc(v))
            .map_err(|e| StorageIOError::write(&e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }
}

impl RaftLogReader<MapRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MapRaft>>, Err> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().expect("8-byte keys"));
            if !range.contains(&idx) {
                break;
            }
            out.push(dec(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<MapRaft> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<MapRaft>, Err> {
        let last_purged: Option<LogId<u64>> = self.get_state("last_purged")?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, v)) => Some(*dec::<Entry<MapRaft>>(&v)?.get_log_id()),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Err> {
        self.put_state("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Err> {
        self.get_state("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Err> {
        self.put_state("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Err> {
        Ok(self.get_state::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<MapRaft>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<MapRaft>> + Send,
    {
        for e in entries {
            self.log
                .insert(e.get_log_id().index.to_be_bytes(), enc(&e))
                .map_err(|err| StorageIOError::write_logs(&err))?;
        }
        let flushed = self
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        self.remove_entries(log_id.index.to_be_bytes()..)?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        self.put_state("last_purged", &log_id).await?;
        self.remove_entries(..=log_id.index.to_be_bytes())?;
        Ok(())
    }
}
