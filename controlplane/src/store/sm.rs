//! openraft's state machine: the [`ClusterState`] in memory, snapshots in
//! the redb file.

use std::io::Cursor;
use std::sync::Arc;

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::{ReadableDatabase, TableHandle};
use tokio::sync::{RwLock, RwLockReadGuard};

use super::{
    Inner, SNAPSHOT, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY, StoreError, raft_err, record_name,
    redb_err, write_txn,
};
use crate::model::{self, ClusterState};
use crate::raft::{Entry, Proposal, RaftId, RaftMember, Response, TypeConfig};

type Meta = SnapshotMeta<RaftId, RaftMember>;

/// What the state machine holds.
#[derive(Debug, Clone, Default)]
struct Applied {
    last_applied: Option<LogId<RaftId>>,
    membership: StoredMembership<RaftId, RaftMember>,
    state: ClusterState,
}

impl Applied {
    fn apply(&mut self, entry: Entry) -> Response {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Response::Noop,
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                Response::Noop
            }
            EntryPayload::Normal(Proposal::One(command)) => {
                apply_one(&mut self.state, entry.log_id.index, &command)
            }
            // Each command of a batch succeeds or is rejected on its own,
            // exactly as if it had been its own entry.
            EntryPayload::Normal(Proposal::Batch(commands)) => Response::Batch(
                commands
                    .iter()
                    .map(|c| apply_one(&mut self.state, entry.log_id.index, c))
                    .collect(),
            ),
        }
    }
}

fn apply_one(state: &mut ClusterState, index: u64, command: &model::Command) -> Response {
    match model::apply(state, command) {
        Ok(applied) => Response::Applied(applied),
        Err(rejected) => {
            tracing::debug!(index, %rejected, "command rejected");
            Response::Rejected(rejected)
        }
    }
}

/// The Raft state machine. Hand out a [`StateReader`] before giving this to
/// `Raft::new`, which takes it.
pub struct StateMachineStore {
    inner: Arc<Inner>,
    data: Arc<RwLock<Applied>>,
}

/// Read access to the applied cluster state, for API handlers and reconcilers.
#[derive(Clone)]
pub struct StateReader {
    data: Arc<RwLock<Applied>>,
}

impl StateReader {
    /// The state as of the last applied entry. Hold the guard briefly: it
    /// blocks `apply`.
    pub async fn state(&self) -> RwLockReadGuard<'_, ClusterState> {
        RwLockReadGuard::map(self.data.read().await, |d| &d.state)
    }

    pub async fn last_applied(&self) -> Option<LogId<RaftId>> {
        self.data.read().await.last_applied
    }
}

impl StateMachineStore {
    /// Last snapshot, then the committed entries after it: the same applied
    /// state as before the restart, without waiting for a leader.
    pub(super) fn load(inner: Arc<Inner>) -> Result<Self, StoreError> {
        let mut data = match read_snapshot(&inner)? {
            Some((meta, bytes)) => Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
                state: decode_state(&bytes)?,
            },
            None => Applied::default(),
        };
        if let Some(committed) = inner.committed()? {
            let from = data.last_applied.map_or(0, |l| l.index + 1);
            if from <= committed.index {
                // With nothing applied yet the log may start at 0 or 1.
                let mut next = data.last_applied.map(|l| l.index + 1);
                for entry in inner.entries(from..=committed.index)? {
                    let found = entry.log_id.index;
                    if let Some(expected) = next.filter(|e| *e != found) {
                        return Err(StoreError::LogGap { expected, found });
                    }
                    next = Some(found + 1);
                    data.apply(entry);
                }
            }
        }
        Ok(StateMachineStore {
            inner,
            data: Arc::new(RwLock::new(data)),
        })
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            data: self.data.clone(),
        }
    }
}

fn decode_state(bytes: &[u8]) -> Result<ClusterState, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        record: record_name(SNAPSHOT.name(), SNAPSHOT_DATA_KEY),
        source,
    })
}

fn read_snapshot(inner: &Inner) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let Some(meta) = inner.get::<Meta>(SNAPSHOT, SNAPSHOT_META_KEY)? else {
        return Ok(None);
    };
    let txn = inner.db.begin_read().map_err(redb_err("begin read"))?;
    let table = txn
        .open_table(SNAPSHOT)
        .map_err(redb_err("open snapshot"))?;
    let record = record_name(SNAPSHOT.name(), SNAPSHOT_DATA_KEY);
    let sealed = table
        .get(SNAPSHOT_DATA_KEY)
        .map_err(redb_err("read snapshot"))?
        .ok_or_else(|| StoreError::Db {
            op: "read snapshot data",
            source: redb::Error::Corrupted(format!("{record} missing beside its meta")),
        })?;
    let bytes = inner.dek.open(&record, sealed.value())?;
    Ok(Some((meta, bytes)))
}

/// Replaces the stored snapshot; meta and data in one transaction.
fn write_snapshot(inner: &Inner, meta: &Meta, bytes: &[u8]) -> Result<(), StoreError> {
    let sealed_meta = inner.seal(&record_name(SNAPSHOT.name(), SNAPSHOT_META_KEY), meta)?;
    let sealed_data = inner
        .dek
        .seal(&record_name(SNAPSHOT.name(), SNAPSHOT_DATA_KEY), bytes)?;
    write_txn(&inner.db, "commit snapshot", |txn| {
        let mut table = txn
            .open_table(SNAPSHOT)
            .map_err(redb_err("open snapshot"))?;
        table
            .insert(SNAPSHOT_META_KEY, sealed_meta.as_slice())
            .map_err(redb_err("write"))?;
        table
            .insert(SNAPSHOT_DATA_KEY, sealed_data.as_slice())
            .map_err(redb_err("write"))?;
        Ok(())
    })
}

/// Writes the state as serialized when openraft asked for a builder, so
/// `apply` goes on while the snapshot is written.
///
/// Serialized there, under the read lock, rather than cloned: a clone held
/// the whole state a second time (35 MiB at 1,000 services × 10 replicas)
/// for no less time under the lock than serializing it takes.
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
    last_applied: Option<LogId<RaftId>>,
    membership: StoredMembership<RaftId, RaftMember>,
    state: Result<Vec<u8>, serde_json::Error>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let bytes = std::mem::replace(&mut self.state, Ok(Vec::new()))
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        // Unique across nodes and rebuilds at the same index.
        let suffix = OsRng.next_u64();
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{suffix:016x}", l.leader_id, l.index),
            None => format!("--{suffix:016x}"),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        write_snapshot(&self.inner, &meta, &bytes).map_err(raft_err(subject, ErrorVerb::Write))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, RaftMember>), StorageError<RaftId>>
    {
        let data = self.data.read().await;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Nothing is written here: the log already holds these entries, and
        // the state reaches disk with the next snapshot.
        let mut data = self.data.write().await;
        Ok(entries.into_iter().map(|entry| data.apply(entry)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let data = self.data.read().await;
        SnapshotBuilder {
            inner: self.inner.clone(),
            last_applied: data.last_applied,
            membership: data.membership.clone(),
            state: serde_json::to_vec(&data.state),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let state = decode_state(&bytes).map_err(raft_err(subject(), ErrorVerb::Read))?;
        // Stored before it replaces the state in memory: a failed write
        // leaves the state machine as it was.
        write_snapshot(&self.inner, meta, &bytes).map_err(raft_err(subject(), ErrorVerb::Write))?;
        *self.data.write().await = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        let snapshot = read_snapshot(&self.inner)
            .map_err(raft_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(snapshot.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
