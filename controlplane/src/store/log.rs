//! openraft's log storage over the redb file.
//!
//! redb calls block; they run inline on openraft's storage task, as in
//! openraft's own examples. That task does nothing but storage IO, and
//! moving writes to other threads would break the rule that log and vote
//! writes complete in order.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::TableHandle;

use super::{
    COMMITTED_KEY, Inner, LOG, META, PURGED_KEY, StoreError, VOTE_KEY, log_record, raft_err,
    record_name, redb_err, write_txn,
};
use crate::raft::{Entry, RaftId, TypeConfig};

/// The Raft log, vote and committed pointer. Cheap to clone: clones are the
/// log readers openraft hands to replication tasks.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        LogStore { inner }
    }

    fn append_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        write_txn(&self.inner.db, "commit log", |txn| {
            let mut log = txn.open_table(LOG).map_err(redb_err("open log"))?;
            for entry in entries {
                let index = entry.log_id.index;
                let sealed = self.inner.seal(&log_record(index), &entry)?;
                log.insert(index, sealed.as_slice())
                    .map_err(redb_err("write log"))?;
            }
            Ok(())
        })
    }

    /// Removes entries at and after `from`.
    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        write_txn(&self.inner.db, "commit truncate", |txn| {
            let mut log = txn.open_table(LOG).map_err(redb_err("open log"))?;
            log.retain_in(from.., |_, _| false)
                .map_err(redb_err("truncate log"))?;
            Ok(())
        })
    }

    /// Removes entries up to and including `upto`, recording it as purged in
    /// the same transaction so the log state never shows a hole.
    fn purge_upto(&self, upto: LogId<RaftId>) -> Result<(), StoreError> {
        let sealed = self
            .inner
            .seal(&record_name(META.name(), PURGED_KEY), &upto)?;
        write_txn(&self.inner.db, "commit purge", |txn| {
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            meta.insert(PURGED_KEY, sealed.as_slice())
                .map_err(redb_err("write purged"))?;
            let mut log = txn.open_table(LOG).map_err(redb_err("open log"))?;
            log.retain_in(..=upto.index, |_, _| false)
                .map_err(redb_err("purge log"))?;
            Ok(())
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<RaftId>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.inner
            .entries(range)
            .map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let read = raft_err(ErrorSubject::Logs, ErrorVerb::Read);
        let last_purged_log_id = self
            .inner
            .get::<LogId<RaftId>>(META, PURGED_KEY)
            .map_err(read)?;
        let read = raft_err(ErrorSubject::Logs, ErrorVerb::Read);
        let last = self.inner.last_entry().map_err(read)?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.inner
            .put(META, VOTE_KEY, vote, true)
            .map_err(raft_err(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        self.inner
            .get(META, VOTE_KEY)
            .map_err(raft_err(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError<RaftId>> {
        // Not fsynced on its own: a stale pointer after a crash only means
        // fewer entries are re-applied before the leader confirms the rest.
        self.inner
            .put(META, COMMITTED_KEY, &committed, false)
            .map_err(raft_err(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        self.inner
            .committed()
            .map_err(raft_err(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The commit is durable when it returns, so the flush is reported here.
        match self.append_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(raft_err(ErrorSubject::Logs, ErrorVerb::Write)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.truncate_from(log_id.index)
            .map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.purge_upto(log_id)
            .map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
