//! The Raft log and vote on disk (redb).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};

use super::{MasterId, RegistryRaft};

/// Entries by index, encoded with `plexus_net::codec`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The vote, the last committed and the last purged log ids.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// Errors of opening a log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The database could not be opened or created.
    #[error("raft log {path}: {why}")]
    Open {
        /// Its file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The Raft log and vote of one master, in a redb file. Cheap to clone (readers share
/// the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

type Err = StorageError<MasterId>;

/// Which storage error an I/O failure is.
type Make = fn(AnyError) -> StorageIOError<MasterId>;

/// Turns a database or codec failure into openraft's storage error.
trait Failing<T> {
    fn into_storage(self, make: Make) -> Result<T, Err>;
}

impl<T, E: std::error::Error + 'static> Failing<T> for Result<T, E> {
    fn into_storage(self, make: Make) -> Result<T, Err> {
        self.map_err(|e| make(AnyError::new(&e)).into())
    }
}

/// A log file kept in memory that outlives the database opened on it: a simulated
/// master's disk, kept across its restarts. Every write is durable at once.
#[derive(Debug, Clone, Default)]
pub struct MemFile(Arc<std::sync::Mutex<Vec<u8>>>);

impl MemFile {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl redb::StorageBackend for MemFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let b = self.bytes();
        let start = offset as usize;
        b.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read of {len} bytes at {offset} past the end ({})", b.len()),
                )
            })
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.bytes().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut b = self.bytes();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<LogStore, LogStoreError> {
        let fail = |why: String| LogStoreError::Open {
            path: path.to_path_buf(),
            why,
        };
        let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
        Self::on(db, path)
    }

    /// Opens (or creates) the log kept in `file` (`name` says which, in errors).
    pub fn open_in(file: MemFile, name: &Path) -> Result<LogStore, LogStoreError> {
        let db = redb::Builder::new()
            .create_with_backend(file)
            .map_err(|e| LogStoreError::Open {
                path: name.to_path_buf(),
                why: e.to_string(),
            })?;
        Self::on(db, name)
    }

    /// The log in `db`, its tables made if new.
    fn on(db: Database, path: &Path) -> Result<LogStore, LogStoreError> {
        let fail = |why: String| LogStoreError::Open {
            path: path.to_path_buf(),
            why,
        };
        let tx = db.begin_write().map_err(|e| fail(e.to_string()))?;
        tx.open_table(LOG).map_err(|e| fail(e.to_string()))?;
        tx.open_table(META).map_err(|e| fail(e.to_string()))?;
        tx.commit().map_err(|e| fail(e.to_string()))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Err> {
        let read: Make = StorageIOError::read;
        let tx = self.db.begin_read().into_storage(read)?;
        let t = tx.open_table(META).into_storage(read)?;
        match t.get(key).into_storage(read)? {
            None => Ok(None),
            Some(v) => plexus_net::codec::decode(v.value())
                .map(Some)
                .into_storage(read),
        }
    }

    fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T, make: Make) -> Result<(), Err> {
        let fail: Make = make;
        let bytes = plexus_net::codec::encode(value).into_storage(fail)?;
        let tx = self.db.begin_write().into_storage(fail)?;
        tx.open_table(META)
            .into_storage(fail)?
            .insert(key, bytes.as_slice())
            .into_storage(fail)?;
        tx.commit().into_storage(fail)
    }

    fn last_entry(&self) -> Result<Option<LogId<MasterId>>, Err> {
        let read: Make = StorageIOError::read_logs;
        let tx = self.db.begin_read().into_storage(read)?;
        let t = tx.open_table(LOG).into_storage(read)?;
        let Some((_, v)) = t.last().into_storage(read)? else {
            return Ok(None);
        };
        let e: Entry<RegistryRaft> = plexus_net::codec::decode(v.value()).into_storage(read)?;
        Ok(Some(e.log_id))
    }

    /// Removes the entries at `range` of indexes in one durable transaction.
    fn remove(&self, range: (Bound<u64>, Bound<u64>)) -> Result<(), Err> {
        let fail: Make = StorageIOError::write_logs;
        let tx = self.db.begin_write().into_storage(fail)?;
        {
            let mut t = tx.open_table(LOG).into_storage(fail)?;
            t.retain_in::<u64, _>(range, |_, _| false)
                .into_storage(fail)?;
        }
        tx.commit().into_storage(fail)
    }
}

impl RaftLogReader<RegistryRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<RegistryRaft>>, Err> {
        let read: Make = StorageIOError::read_logs;
        let tx = self.db.begin_read().into_storage(read)?;
        let t = tx.open_table(LOG).into_storage(read)?;
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for kv in t.range::<u64>(bounds).into_storage(read)? {
            let (_, v) = kv.into_storage(read)?;
            out.push(plexus_net::codec::decode(v.value()).into_storage(read)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<RegistryRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<RegistryRaft>, Err> {
        let purged: Option<LogId<MasterId>> = self.meta(PURGED)?;
        let last = self.last_entry()?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MasterId>) -> Result<(), Err> {
        self.set_meta(VOTE, vote, StorageIOError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MasterId>>, Err> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<MasterId>>) -> Result<(), Err> {
        self.set_meta(COMMITTED, &committed, StorageIOError::write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MasterId>>, Err> {
        Ok(self.meta::<Option<LogId<MasterId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<RegistryRaft>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<RegistryRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let fail: Make = StorageIOError::write_logs;
        let tx = self.db.begin_write().into_storage(fail)?;
        {
            let mut t = tx.open_table(LOG).into_storage(fail)?;
            for e in entries {
                let bytes = plexus_net::codec::encode(&e).into_storage(fail)?;
                t.insert(e.log_id.index, bytes.as_slice())
                    .into_storage(fail)?;
            }
        }
        // Committed durably (synced) before the entries are acknowledged.
        let r = tx.commit();
        let told = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(told);
        r.into_storage(fail)
    }

    async fn truncate(&mut self, log_id: LogId<MasterId>) -> Result<(), Err> {
        self.remove((Bound::Included(log_id.index), Bound::Unbounded))
    }

    async fn purge(&mut self, log_id: LogId<MasterId>) -> Result<(), Err> {
        if let Some(prev) = self.meta::<LogId<MasterId>>(PURGED)? {
            assert!(prev <= log_id, "purge went back from {prev} to {log_id}");
        }
        self.set_meta(PURGED, &log_id, StorageIOError::write_logs)?;
        self.remove((Bound::Unbounded, Bound::Included(log_id.index)))
    }
}
