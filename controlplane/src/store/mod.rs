//! The durable, encrypted Raft store: one redb file per manager holding the
//! Raft log, vote, committed pointer and last snapshot, every value sealed
//! with the data key (see [`StoreKey`]).
//!
//! Durability follows swarm's design: the log is written through (fsync per
//! append), the state machine lives in memory and reaches disk only as
//! snapshots; after a restart it is rebuilt from the last snapshot plus the
//! committed log entries after it.

mod crypto;
mod log;
mod sm;
mod unlock;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{ErrorSubject, ErrorVerb, LogId, StorageError, StorageIOError};
use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::crypto::DataKey;
pub use self::crypto::{CryptoError, StoreKey};
pub use self::log::LogStore;
pub use self::sm::{StateMachineStore, StateReader};
pub use self::unlock::{UNLOCK_KEY_PREFIX, UnlockKey, UnlockKeyError};
use crate::raft::{Entry, RaftId};

/// The store's file name inside the manager's state directory.
pub const STORE_FILE: &str = "raft.redb";

/// Wrapped DEK; the only value not sealed by the DEK itself.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// vote, committed, last purged log id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Log entries by index.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The last snapshot: its meta and its data as two records, so the data
/// is stored as bytes rather than re-encoded inside JSON.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const DEK_KEY: &str = "dek";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
const SNAPSHOT_META_KEY: &str = "meta";
const SNAPSHOT_DATA_KEY: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot restrict permissions of {path}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// The key given does not unwrap the store's data key; nothing was changed.
    #[error("store {path} is locked: the key given is not the one it was sealed with")]
    WrongKey { path: PathBuf },
    #[error("store {path} holds tables but no data key")]
    MissingDataKey { path: PathBuf },
    #[error("store {op} failed")]
    Db {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("log entry {expected} is missing (next stored entry is {found})")]
    LogGap { expected: u64, found: u64 },
    #[error("store record could not be sealed or opened")]
    Crypto {
        #[from]
        source: CryptoError,
    },
    #[error("cannot encode record {record}")]
    Encode {
        record: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot decode record {record}")]
    Decode {
        record: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Maps a redb error of any kind into [`StoreError::Db`].
/// Runs `write` in one write transaction and commits it (`commit` names
/// the step in the error).
fn write_txn(
    db: &Database,
    commit: &'static str,
    write: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(redb_err("begin write"))?;
    write(&txn)?;
    txn.commit().map_err(redb_err(commit))
}

fn redb_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: e.into(),
    }
}

/// An open store. [`Store::log_store`] and [`Store::state_machine`] hand out
/// the two halves openraft needs; all share the file and the data key.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    path: PathBuf,
    db: Database,
    dek: DataKey,
}

/// redb's page cache. Its default (1 GiB) keeps every page written, so a
/// manager's memory grew with its file: 22 MiB of a 63 MiB heap at 1,000
/// services × 10 replicas. The log's tail, which replication reads back, is
/// recent and small; older pages come from the kernel's page cache.
const CACHE_BYTES: usize = 4 << 20;

fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

impl Store {
    /// Opens `dir/raft.redb`, creating the directory, the file and a fresh
    /// data key the first time. With an existing file and the wrong `kek`,
    /// fails with [`StoreError::WrongKey`] before writing anything.
    pub fn open(dir: impl AsRef<Path>, kek: &StoreKey) -> Result<Store, StoreError> {
        let dir = dir.as_ref();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let path = dir.join(STORE_FILE);
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };

        let inner = if path.exists() {
            // The key is checked on a read-only handle first: a read-write
            // open rewrites the file header on close, and a wrong key must
            // leave the file as it was. A file left by a crash cannot be
            // opened read-only; then the read-write open repairs it first.
            match ReadOnlyDatabase::open(&path) {
                Ok(read_only) => {
                    let found = read_dek(&read_only, &path, kek);
                    read_only.close().map_err(open_error)?;
                    found?;
                }
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(source) => return Err(open_error(source)),
            }
            let db = builder().open(&path).map_err(open_error)?;
            match read_dek(&db, &path, kek)? {
                Some(dek) => Inner { path, db, dek },
                // Created, then a crash before the first commit.
                None => Inner::initialize(path, db, kek)?,
            }
        } else {
            let db = builder().create(&path).map_err(open_error)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                StoreError::Permissions {
                    path: path.clone(),
                    source,
                }
            })?;
            Inner::initialize(path, db, kek)?
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Rewraps the data key under `new`; no record is re-encrypted. The old
    /// key no longer opens the store once this returns.
    pub fn rotate_kek(&self, new: &StoreKey) -> Result<(), StoreError> {
        let wrapped = self.inner.dek.wrap(new, &record_name("keys", DEK_KEY))?;
        write_txn(&self.inner.db, "commit data key", |txn| {
            let mut keys = txn.open_table(KEYS).map_err(redb_err("open keys"))?;
            keys.insert(DEK_KEY, wrapped.as_slice())
                .map_err(redb_err("write data key"))?;
            Ok(())
        })
    }

    /// The Raft log half.
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.inner.clone())
    }

    /// The state machine half, rebuilt from the last snapshot and the
    /// committed entries after it.
    pub fn state_machine(&self) -> Result<StateMachineStore, StoreError> {
        StateMachineStore::load(self.inner.clone())
    }
}

fn read_dek(
    db: &impl ReadableDatabase,
    path: &Path,
    kek: &StoreKey,
) -> Result<Option<DataKey>, StoreError> {
    let txn = db.begin_read().map_err(redb_err("begin read"))?;
    let keys = match txn.open_table(KEYS) {
        Ok(keys) => keys,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return if txn
                .list_tables()
                .map_err(redb_err("list tables"))?
                .next()
                .is_some()
            {
                Err(StoreError::MissingDataKey {
                    path: path.to_owned(),
                })
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(redb_err("open keys")(e)),
    };
    let wrapped = keys
        .get(DEK_KEY)
        .map_err(redb_err("read data key"))?
        .ok_or_else(|| StoreError::MissingDataKey {
            path: path.to_owned(),
        })?;
    match DataKey::unwrap(kek, &record_name("keys", DEK_KEY), wrapped.value()) {
        Ok(dek) => Ok(Some(dek)),
        Err(CryptoError::Open { .. }) => Err(StoreError::WrongKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

impl Inner {
    fn initialize(path: PathBuf, db: Database, kek: &StoreKey) -> Result<Inner, StoreError> {
        let dek = DataKey::generate();
        let wrapped = dek.wrap(kek, &record_name("keys", DEK_KEY))?;
        write_txn(&db, "commit initial tables", |txn| {
            let mut keys = txn.open_table(KEYS).map_err(redb_err("create keys"))?;
            keys.insert(DEK_KEY, wrapped.as_slice())
                .map_err(redb_err("write data key"))?;
            // Created up front so that readers never meet a missing table.
            txn.open_table(META).map_err(redb_err("create meta"))?;
            txn.open_table(LOG).map_err(redb_err("create log"))?;
            txn.open_table(SNAPSHOT)
                .map_err(redb_err("create snapshot"))?;
            Ok(())
        })?;
        Ok(Inner { path, db, dek })
    }

    fn seal<T: Serialize>(&self, record: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        let plain = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            record: record.to_owned(),
            source,
        })?;
        Ok(self.dek.seal(record, &plain)?)
    }

    fn unseal<T: DeserializeOwned>(&self, record: &str, sealed: &[u8]) -> Result<T, StoreError> {
        let plain = self.dek.open(record, sealed)?;
        serde_json::from_slice(&plain).map_err(|source| StoreError::Decode {
            record: record.to_owned(),
            source,
        })
    }

    /// Reads and decodes one sealed value of a `&str`-keyed table.
    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin read"))?;
        let table_ = txn.open_table(table).map_err(redb_err("open table"))?;
        let Some(sealed) = table_.get(key).map_err(redb_err("read"))? else {
            return Ok(None);
        };
        self.unseal(&record_name(table.name(), key), sealed.value())
            .map(Some)
    }

    /// Seals and writes one value. `durable: false` is for values that are
    /// only a hint (the committed pointer): they reach disk with the next
    /// durable commit or on close, and losing them in a crash is safe.
    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(&record_name(table.name(), key), value)?;
        let mut txn = self.db.begin_write().map_err(redb_err("begin write"))?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(redb_err("set durability"))?;
        }
        {
            let mut table_ = txn.open_table(table).map_err(redb_err("open table"))?;
            table_
                .insert(key, sealed.as_slice())
                .map_err(redb_err("write"))?;
        }
        txn.commit().map_err(redb_err("commit"))
    }

    /// Entries in `range`, in order.
    fn entries(
        &self,
        range: impl std::ops::RangeBounds<u64> + 'static,
    ) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin read"))?;
        let log = txn.open_table(LOG).map_err(redb_err("open log"))?;
        let mut entries = Vec::new();
        for item in log.range(range).map_err(redb_err("read log"))? {
            let (index, sealed) = item.map_err(redb_err("read log"))?;
            entries.push(self.unseal(&log_record(index.value()), sealed.value())?);
        }
        Ok(entries)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_err("begin read"))?;
        let log = txn.open_table(LOG).map_err(redb_err("open log"))?;
        let Some((index, sealed)) = log.last().map_err(redb_err("read log"))? else {
            return Ok(None);
        };
        self.unseal(&log_record(index.value()), sealed.value())
            .map(Some)
    }

    fn committed(&self) -> Result<Option<LogId<RaftId>>, StoreError> {
        Ok(self
            .get::<Option<LogId<RaftId>>>(META, COMMITTED_KEY)?
            .flatten())
    }
}

/// The associated data of a record: its table and key.
fn record_name(table: &str, key: &str) -> String {
    format!("{table}/{key}")
}

fn log_record(index: u64) -> String {
    format!("log/{index}")
}

/// Wraps a store error for openraft, which reports it and stops the node.
fn raft_err(
    subject: ErrorSubject<RaftId>,
    verb: ErrorVerb,
) -> impl FnOnce(StoreError) -> StorageError<RaftId> {
    move |e| StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
