//! Three Raft managers in one process over an in-memory network: writes go
//! through the leader and are read back on every node; a follower restarted
//! from its directory alone catches up, from a snapshot since the leader has
//! compacted its log meanwhile.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use shoal_controlplane::model::{
    ApplyError, Command, Config, ConfigBytes, Labels, Secret, SecretBytes,
};
use shoal_controlplane::raft::Raft;
use shoal_controlplane::{
    RaftId, RaftMember, Response, StateReader, Store, StoreKey, TypeConfig, raft_config,
};
use tempfile::TempDir;

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Delivers RPCs by calling the target's `Raft` directly.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<RaftId, Raft>>>,
}

impl Router {
    fn get(&self, id: RaftId) -> Result<Raft, Unreachable> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.get(&id).cloned().ok_or_else(|| {
            Unreachable::new(&io::Error::new(io::ErrorKind::NotConnected, "node is down"))
        })
    }

    fn set(&self, id: RaftId, raft: Option<Raft>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match raft {
            Some(raft) => nodes.insert(id, raft),
            None => nodes.remove(&id),
        };
    }
}

struct Connection {
    target: RaftId,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, _node: &RaftMember) -> Connection {
        Connection {
            target,
            router: self.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    std::result::Result<T, RPCError<RaftId, RaftMember, RaftError<RaftId, E>>>;

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>> {
        let raft = self.router.get(self.target)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        let raft = self.router.get(self.target)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftId>> {
        let raft = self.router.get(self.target)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RemoteError::new(self.target, e).into())
    }
}

struct Manager {
    dir: TempDir,
    key: StoreKey,
    raft: Raft,
    reader: StateReader,
}

fn config() -> Result<Arc<openraft::Config>> {
    let mut config = raft_config("test", 5)?;
    // Fast timings for a loopback test, and no log kept behind snapshots so
    // a lagging follower has to be sent one.
    config.heartbeat_interval = 50;
    config.election_timeout_min = 300;
    config.election_timeout_max = 600;
    config.max_in_snapshot_log_to_keep = 0;
    Ok(Arc::new(config.validate()?))
}

async fn start(id: RaftId, dir: TempDir, key: StoreKey, router: &Router) -> Result<Manager> {
    let store = Store::open(dir.path(), &key)?;
    let sm = store.state_machine()?;
    let reader = sm.reader();
    let raft = Raft::new(id, config()?, router.clone(), store.log_store(), sm).await?;
    router.set(id, Some(raft.clone()));
    Ok(Manager {
        dir,
        key,
        raft,
        reader,
    })
}

fn secret(id: &str) -> Secret {
    Secret {
        id: id.to_owned(),
        version: 0,
        name: format!("name-{id}"),
        labels: Labels::new(),
        data: SecretBytes(id.as_bytes().to_vec()),
    }
}

async fn write(leader: &Raft, command: Command) -> Result<(u64, Response)> {
    let written = leader.client_write(command.into()).await?;
    Ok((written.log_id.index, written.data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_and_a_restarted_one_catches_up() -> Result {
    let router = Router::default();
    let mut managers = BTreeMap::new();
    for id in 1..=3 {
        let manager = start(id, tempfile::tempdir()?, StoreKey::generate(), &router).await?;
        managers.insert(id, manager);
    }
    let members: BTreeMap<RaftId, RaftMember> = (1..=3)
        .map(|id| {
            (
                id,
                RaftMember {
                    node_id: format!("node{id}"),
                    addr: format!("m{id}:2377"),
                },
            )
        })
        .collect();
    let first = managers
        .get(&1)
        .map(|m| m.raft.clone())
        .ok_or("no manager 1")?;
    first.initialize(members).await?;
    let metrics = first
        .wait(Some(TIMEOUT))
        .metrics(|m| m.current_leader.is_some(), "leader")
        .await?;
    let leader_id = metrics.current_leader.ok_or("no leader")?;
    let leader = managers
        .get(&leader_id)
        .map(|m| m.raft.clone())
        .ok_or("leader unknown")?;

    // A write, and a stale compare-and-set that is committed but rejected.
    let (_, created) = write(&leader, Command::CreateSecret(secret("s1"))).await?;
    let Response::Applied(applied) = created else {
        return Err(format!("create was not applied: {created:?}").into());
    };
    let stale = Command::RemoveSecret {
        id: "s1".into(),
        expected_version: applied.version + 1,
    };
    let (index, rejected) = write(&leader, stale).await?;
    assert!(matches!(
        rejected,
        Response::Rejected(ApplyError::VersionMismatch { .. })
    ));

    for manager in managers.values() {
        manager
            .raft
            .wait(Some(TIMEOUT))
            .applied_index_at_least(Some(index), "applied")
            .await?;
        let state = manager.reader.state().await;
        assert_eq!(
            state.secrets.get("s1").map(|s| s.version),
            Some(applied.version)
        );
    }

    // Stop a follower; the other two keep a quorum and compact their logs.
    let follower_id = (1..=3).find(|id| *id != leader_id).ok_or("no follower")?;
    let follower = managers.remove(&follower_id).ok_or("follower missing")?;
    router.set(follower_id, None);
    follower.raft.shutdown().await?;
    let Manager {
        dir,
        key,
        raft,
        reader,
    } = follower;
    drop((raft, reader));

    for i in 0..12 {
        write(&leader, Command::CreateSecret(secret(&format!("t{i}")))).await?;
    }
    // A config too, so that it travels in the snapshot the follower gets.
    let config = Config {
        id: "c1".into(),
        version: 0,
        name: "app".into(),
        labels: Labels::new(),
        data: ConfigBytes(b"node={{.Node.ID}}".to_vec()),
        template_driver: "golang".into(),
        created_unix: 1,
    };
    let (last, _) = write(&leader, Command::CreateConfig(config)).await?;
    leader
        .wait(Some(TIMEOUT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > index),
            "leader log compacted",
        )
        .await?;

    // Restarted from its directory alone, it catches up to the same state.
    let restarted = start(follower_id, dir, key, &router).await?;
    let recovered = restarted.reader.last_applied().await.map(|l| l.index);
    assert!(
        recovered >= Some(index),
        "state not recovered from disk: {recovered:?}"
    );
    restarted
        .raft
        .wait(Some(TIMEOUT))
        .applied_index_at_least(Some(last), "caught up")
        .await?;
    let leader_state = managers
        .get(&leader_id)
        .ok_or("leader missing")?
        .reader
        .state()
        .await
        .clone();
    assert_eq!(leader_state.secrets.len(), 13);
    assert_eq!(leader_state.configs["c1"].template_driver, "golang");
    assert_eq!(*restarted.reader.state().await, leader_state);
    assert!(restarted.raft.metrics().borrow().snapshot.is_some());
    managers.insert(follower_id, restarted);

    for manager in managers.values() {
        manager.raft.shutdown().await?;
    }
    Ok(())
}
