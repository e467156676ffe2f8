use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageError, StorageIOError,
    Vote,
};
use tempfile::TempDir;

use super::*;
use crate::model::{self, ClusterState, Command, Secret, SecretBytes};
use crate::raft::{Entry, Proposal, RaftMember, Response, TypeConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MARKER: &str = "s3cr3t-marker-XYZ";

struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<RaftId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let store = Store::open(dir.path(), &StoreKey::generate())
            .map_err(raft_err(ErrorSubject::Store, ErrorVerb::Write))?;
        let sm = store
            .state_machine()
            .map_err(raft_err(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok((dir, store.log_store(), sm))
    }
}

/// openraft's own storage test suite (it sleeps ~8 s waiting on callbacks).
#[test]
fn openraft_storage_suite() -> Result<(), Box<StorageError<RaftId>>> {
    Suite::test_all(TempStores).map_err(Box::new)
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(1, 0, index),
        payload,
    }
}

fn secret_command(id: &str, name: &str) -> Command {
    Command::CreateSecret(Secret {
        id: id.to_owned(),
        version: 0,
        name: name.to_owned(),
        labels: BTreeMap::from([("note".to_owned(), MARKER.to_owned())]),
        data: SecretBytes(MARKER.as_bytes().to_vec()),
    })
}

fn members() -> Membership<RaftId, RaftMember> {
    let voters = BTreeSet::from([0]);
    let nodes = BTreeMap::from([(
        0,
        RaftMember {
            node_id: "n0".into(),
            addr: "x:2377".into(),
        },
    )]);
    Membership::new(vec![voters], nodes)
}

/// Every form the marker could take in a plaintext record.
fn plaintext_forms() -> [Vec<u8>; 2] {
    let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
    [MARKER.as_bytes().to_vec(), hex.into_bytes()]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn nothing_is_written_in_plaintext() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    let entries = vec![entry(
        1,
        EntryPayload::Normal(secret_command("sec1", MARKER).into()),
    )];
    // The check below means something only if a plaintext record would
    // show the marker.
    let plain = serde_json::to_vec(&entries)?;
    assert!(plaintext_forms().iter().all(|form| contains(&plain, form)));
    {
        let store = Store::open(dir.path(), &kek)?;
        let mut log = store.log_store();
        log.blocking_append(entries.clone()).await?;
        log.save_committed(Some(log_id(1, 0, 1))).await?;
        log.save_vote(&Vote::new(1, 0)).await?;
        let mut sm = store.state_machine()?;
        sm.apply(entries).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
    }
    let raw = std::fs::read(dir.path().join(STORE_FILE))?;
    for form in plaintext_forms() {
        assert!(!contains(&raw, &form), "plaintext found in the store file");
    }

    // With the right key everything reads back.
    let store = Store::open(dir.path(), &kek)?;
    let back = store.log_store().try_get_log_entries(1..2).await?;
    let EntryPayload::Normal(Proposal::One(Command::CreateSecret(secret))) = &back[0].payload
    else {
        panic!("unexpected entry {back:?}");
    };
    assert_eq!(secret.data.0, MARKER.as_bytes());
    let sm = store.state_machine()?;
    let state = sm.reader();
    let state = state.state().await;
    assert_eq!(
        state.find_by_name::<Secret>(MARKER).map(|s| s.id.as_str()),
        Some("sec1")
    );
    Ok(())
}

fn file_bytes(dir: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(dir.join(STORE_FILE))
}

#[tokio::test]
async fn wrong_key_is_refused_and_touches_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    {
        let store = Store::open(dir.path(), &kek)?;
        store.log_store().save_vote(&Vote::new(3, 1)).await?;
    }
    let before = file_bytes(dir.path())?;
    let wrong = Store::open(dir.path(), &StoreKey::generate());
    assert!(
        matches!(wrong, Err(StoreError::WrongKey { .. })),
        "{:?}",
        wrong.err()
    );
    assert_eq!(
        file_bytes(dir.path())?,
        before,
        "a refused open changed the file"
    );
    let store = Store::open(dir.path(), &kek)?;
    assert_eq!(store.log_store().read_vote().await?, Some(Vote::new(3, 1)));
    Ok(())
}

#[tokio::test]
async fn rotate_kek_rewraps_the_data_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old = StoreKey::generate();
    let new = StoreKey::from_bytes(*StoreKey::generate().as_bytes());
    {
        let store = Store::open(dir.path(), &old)?;
        store
            .log_store()
            .blocking_append([entry(1, EntryPayload::Blank)])
            .await?;
        store.rotate_kek(&new)?;
    }
    assert!(matches!(
        Store::open(dir.path(), &old),
        Err(StoreError::WrongKey { .. })
    ));
    let store = Store::open(dir.path(), &new)?;
    let entries = store.log_store().try_get_log_entries(..).await?;
    assert_eq!(entries.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_moved_record_does_not_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), &StoreKey::generate())?;
    let mut log = store.log_store();
    log.blocking_append([entry(1, EntryPayload::Blank), entry(2, EntryPayload::Blank)])
        .await?;
    // Copy entry 1's sealed bytes over entry 2, as an attacker with write
    // access to the file could.
    let txn = store.inner.db.begin_write()?;
    {
        let mut table = txn.open_table(LOG)?;
        let first = table
            .get(1)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        table.insert(2, first.as_slice())?;
    }
    txn.commit()?;
    assert!(log.try_get_log_entries(2..3).await.is_err());
    Ok(())
}

#[tokio::test]
async fn reopening_restores_vote_log_state_and_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    let mut entries = vec![entry(1, EntryPayload::Membership(members()))];
    for i in 2..=9 {
        let cmd = secret_command(&format!("sec{i}"), &format!("name{i}"));
        entries.push(entry(i, EntryPayload::Normal(cmd.into())));
    }
    // The state a correct restart must reach: entries 1..=7 are committed.
    let mut expected = ClusterState::default();
    for e in &entries[..7] {
        if let EntryPayload::Normal(Proposal::One(cmd)) = &e.payload {
            model::apply(&mut expected, cmd)?;
        }
    }

    let (log_state, snapshot_meta) = {
        let store = Store::open(dir.path(), &kek)?;
        let mut log = store.log_store();
        let mut sm = store.state_machine()?;
        log.save_vote(&Vote::new_committed(2, 0)).await?;
        log.blocking_append(entries.clone()).await?;
        sm.apply(entries[..4].to_vec()).await?;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        sm.apply(entries[4..7].to_vec()).await?;
        log.save_committed(Some(log_id(1, 0, 7))).await?;
        log.purge(log_id(1, 0, 2)).await?;
        (log.get_log_state().await?, snapshot.meta)
    };

    let store = Store::open(dir.path(), &kek)?;
    let mut log = store.log_store();
    assert_eq!(log.read_vote().await?, Some(Vote::new_committed(2, 0)));
    assert_eq!(log.read_committed().await?, Some(log_id(1, 0, 7)));
    assert_eq!(log.get_log_state().await?, log_state);
    assert_eq!(log_state.last_purged_log_id, Some(log_id(1, 0, 2)));
    assert_eq!(log.try_get_log_entries(3..).await?, entries[2..].to_vec());

    let mut sm = store.state_machine()?;
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(1, 0, 7)));
    assert_eq!(membership.membership(), &members());
    assert_eq!(*sm.reader().state().await, expected);
    let current = sm.get_current_snapshot().await?.map(|s| s.meta);
    assert_eq!(current, Some(snapshot_meta));
    Ok(())
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_survives_restart() -> TestResult {
    let source = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    let snapshot = {
        let store = Store::open(source.path(), &kek)?;
        let mut sm = store.state_machine()?;
        sm.apply([entry(
            1,
            EntryPayload::Normal(secret_command("a", "b").into()),
        )])
        .await?;
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    {
        let store = Store::open(target.path(), &kek)?;
        let mut sm = store.state_machine()?;
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await?;
        assert!(sm.reader().state().await.secrets.contains_key("a"));
    }
    let store = Store::open(target.path(), &kek)?;
    let sm = store.state_machine()?;
    assert_eq!(sm.reader().last_applied().await, Some(log_id(1, 0, 1)));
    assert!(sm.reader().state().await.secrets.contains_key("a"));
    Ok(())
}

#[test]
fn a_second_open_of_the_same_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    let _first = Store::open(dir.path(), &kek)?;
    assert!(Store::open(dir.path(), &kek).is_err());
    Ok(())
}

/// A log written before batching (bare commands) and batch entries after
/// it apply alike, on the live state machine and again after a restart;
/// within a batch each command stands or falls on its own.
#[tokio::test]
async fn batch_entries_apply_beside_single_ones_and_after_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kek = StoreKey::generate();
    let entries = vec![
        entry(1, EntryPayload::Membership(members())),
        entry(
            2,
            EntryPayload::Normal(secret_command("a", "name-a").into()),
        ),
        entry(
            3,
            EntryPayload::Normal(Proposal::Batch(vec![
                secret_command("b", "name-b"),
                // Same name as `a`: rejected, and the batch goes on.
                secret_command("c", "name-a"),
                secret_command("d", "name-d"),
            ])),
        ),
    ];
    let mut expected = ClusterState::default();
    for cmd in [
        secret_command("a", "name-a"),
        secret_command("b", "name-b"),
        secret_command("d", "name-d"),
    ] {
        model::apply(&mut expected, &cmd)?;
    }
    {
        let store = Store::open(dir.path(), &kek)?;
        let mut log = store.log_store();
        let mut sm = store.state_machine()?;
        log.blocking_append(entries.clone()).await?;
        let answers = sm.apply(entries.clone()).await?;
        let Some(Response::Batch(batch)) = answers.last() else {
            panic!("no batch answer in {answers:?}");
        };
        assert_eq!(batch.len(), 3);
        assert!(matches!(batch[0], Response::Applied(_)), "{batch:?}");
        assert!(matches!(batch[1], Response::Rejected(_)), "{batch:?}");
        assert!(matches!(batch[2], Response::Applied(_)), "{batch:?}");
        assert_eq!(*sm.reader().state().await, expected);
        log.save_committed(Some(log_id(1, 0, 3))).await?;
    }
    let store = Store::open(dir.path(), &kek)?;
    let sm = store.state_machine()?;
    assert_eq!(*sm.reader().state().await, expected);
    Ok(())
}
