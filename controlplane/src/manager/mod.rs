//! A manager: the Raft node, the cluster API it serves on 2377 (mutual TLS),
//! and the leader's failure detector that marks silent nodes down.
//!
//! Any manager answers the API. Writes go to the leader (forwarded over the
//! peer service when this manager follows); reads are linearizable: the
//! leader confirms its leadership (`ensure_linearizable`), a follower asks
//! the leader for that read index and waits until it has applied it.

mod batch;
mod cluster;
mod configs;
mod election_gate;
mod grpc;
mod images;
mod join;
mod logs;
mod netkeys;
mod networks;
mod nodes;
mod pki;
mod raft_network;
mod secrets;
mod services;
mod sessions;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use openraft::{ChangeMembers, LogId, ServerState, error::ClientWriteError};
use serde::{Deserialize, Serialize};
use shoal_api::cluster::v1::{RaftPayload, raft_peer_client::RaftPeerClient};
use shoal_ca::{
    Credentials, NodeRole, RemovedNodes, live_client_config, live_server_config,
    rustls::ClientConfig,
};
use tokio::{net::TcpListener, sync::RwLockReadGuard};
use tonic::transport::Channel;

use crate::{
    RaftId, RaftMember, Response, StateReader, Store, StoreKey,
    model::{Applied, ApplyError, Cluster, ClusterState, Command, Node, NodeReport, NodeState},
    raft::{Raft, raft_config},
    transport,
};

pub use grpc::{Api, LocalCaller, LogStream, not_a_manager};
pub use pki::CaRootsView;

/// How long a write or read may wait for a leader before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Missed heartbeat periods after which the leader marks a node down.
const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(
        "the swarm does not have a leader. It's possible that too few managers are online. \
         Make sure more than half of the managers are online"
    )]
    NoLeader,
    #[error(
        "no quorum: this manager could not reach a majority of the managers within {waited:?}; \
         check that more than half of them are up and reachable on 2377 (a write that timed out \
         may still be applied once they reconnect)"
    )]
    NoQuorum { waited: Duration },
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error(transparent)]
    Validation(#[from] crate::validate::ValidationError),
    #[error(transparent)]
    Container(#[from] crate::validate::ContainerError),
    #[error("the cluster is not initialised yet")]
    NoCluster,
    #[error("{what}")]
    Invalid { what: String },
    #[error("{what}")]
    Denied { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// `--secret`/`--config` naming none: docker's wording, and the fix.
    #[error("{kind} {name:?} not found: create it first with shoal {kind} create")]
    NoSuchFile {
        kind: crate::model::Kind,
        name: String,
    },
    /// The request is valid but the cluster is not in a state to grant it.
    #[error("{what}")]
    Precondition { what: String },
    /// The stored state is unusable.
    #[error("{what}")]
    Internal { what: String },
    #[error("Raft: {0}")]
    Raft(String),
    #[error("opening the Raft store")]
    Store(#[from] crate::StoreError),
    #[error("binding the cluster API on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration")]
    Tls(#[from] shoal_ca::CaError),
    #[error("Raft configuration")]
    Config(#[from] crate::raft::RaftConfigError),
    #[error("forwarding to the leader at {addr}: {message}")]
    Forward { addr: String, message: String },
}

/// What one manager hands another over `RaftPeer.Forward`.
#[derive(Debug, Serialize, Deserialize)]
enum Forward {
    Propose(Box<Command>),
    ReadIndex,
    Heartbeat {
        node_id: String,
        #[serde(flatten)]
        report: NodeReport,
    },
    AddManager {
        raft_id: RaftId,
        node_id: String,
        addr: String,
    },
    RemoveManager {
        raft_id: RaftId,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum ForwardReply {
    Proposed(Result<Applied, ApplyError>),
    ReadIndex(Option<LogId<RaftId>>),
    Done,
}

pub struct ManagerConfig {
    /// Directory of this manager's Raft store.
    pub raft_dir: PathBuf,
    pub store_key: StoreKey,
    /// This node's certificate and trust roots, shared with its session:
    /// renewal and root rotation change them under the running servers.
    pub credentials: Credentials,
    pub raft_id: RaftId,
    /// `host:port` other nodes dial for this manager.
    pub advertise: String,
    pub listen: SocketAddr,
    pub snapshot_interval: u64,
    /// More services for the 2377 listener, served beside the manager's
    /// own: the agent's task logs, which this crate knows nothing of.
    pub extra_routes: Option<tonic::service::Routes>,
    /// Asks an image's registry for the digest its reference names now,
    /// for `service create` of an image the catalogue does not know (as
    /// the docker CLI asks the registry before swarm stores the spec).
    pub resolve_image: Option<ResolveImage>,
}

/// (`reference`, the service's `--with-registry-auth` credentials, empty
/// without) → the manifest digest its registry gives, or `None`.
pub type ResolveImage = Arc<
    dyn Fn(
            String,
            String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

pub struct Manager {
    raft: Raft,
    resolve_image: Option<ResolveImage>,
    /// Kept for [`Manager::rotate_store_key`] (autolock).
    store: Store,
    reader: StateReader,
    raft_id: RaftId,
    node_id: String,
    advertise: String,
    removed: RemovedNodes,
    credentials: Credentials,
    peer_tls: Arc<ClientConfig>,
    /// Leader-side session table: last heartbeat per node id.
    last_seen: Mutex<HashMap<String, Instant>>,
    /// When this manager last became leader; nodes get a full grace period
    /// from then, since heartbeats went to the previous leader.
    leader_since: Mutex<Option<Instant>>,
    leader_channels: Mutex<HashMap<String, Channel>>,
    /// Group commit of this manager's proposals while it leads.
    proposer: batch::Proposer,
    /// Concurrent linearizable reads share one leadership confirmation.
    read_index: batch::ReadIndex,
    /// Holds a restarted manager's elections until a leader reaches it.
    election_gate: election_gate::ElectionGate,
    /// node id → the latest assignment-set version whose mesh it wrote
    /// (`AckApplied`): in memory, every node says it again at its next sync.
    applied: Mutex<HashMap<String, u64>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Manager {
    /// Opens the store, starts Raft and serves the cluster API on `listen`.
    pub async fn start(cfg: ManagerConfig) -> Result<Arc<Self>, ManagerError> {
        let store = Store::open(&cfg.raft_dir, &cfg.store_key)?;
        let sm = store.state_machine()?;
        let reader = sm.reader();
        let removed = RemovedNodes::new();
        let mut peer = live_client_config(&cfg.credentials, Arc::new(removed.clone()))?;
        peer.alpn_protocols = vec![b"h2".to_vec()];
        let peer_tls = Arc::new(peer);
        let config = Arc::new(raft_config("shoal", cfg.snapshot_interval)?);
        let raft = Raft::new(
            cfg.raft_id,
            config,
            raft_network::Network {
                tls: peer_tls.clone(),
            },
            store.log_store(),
            sm,
        )
        .await
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
        let election_gate = election_gate::ElectionGate::start(&raft);
        let proposer = batch::Proposer::spawn(raft.clone());
        let read_index = batch::ReadIndex::spawn(raft.clone(), LEADER_WAIT);

        let mut server = live_server_config(&cfg.credentials, Arc::new(removed.clone()), true)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| ManagerError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let manager = Arc::new(Manager {
            raft,
            store,
            reader,
            raft_id: cfg.raft_id,
            node_id: cfg.credentials.identity().node_id().to_owned(),
            advertise: cfg.advertise,
            removed,
            credentials: cfg.credentials,
            peer_tls,
            last_seen: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            leader_since: Mutex::new(None),
            leader_channels: Mutex::new(HashMap::new()),
            proposer,
            read_index,
            election_gate,
            resolve_image: cfg.resolve_image,
            stop,
        });
        grpc::serve(
            manager.clone(),
            listener,
            Arc::new(server),
            cfg.extra_routes,
            stopped.clone(),
        );
        tokio::spawn(failure_detector(manager.clone(), stopped.clone()));
        tokio::spawn(reconciler(manager.clone(), stopped));
        Ok(manager)
    }

    /// Makes this manager the single voter of a new cluster and stores the
    /// cluster and this node.
    pub async fn bootstrap(&self, cluster: Cluster, mut me: Node) -> Result<(), ManagerError> {
        let member = RaftMember {
            node_id: self.node_id.clone(),
            addr: self.advertise.clone(),
        };
        self.raft
            .initialize(
                [(self.raft_id, member)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        self.raft
            .wait(Some(LEADER_WAIT))
            .state(ServerState::Leader, "bootstrap")
            .await
            .map_err(|_| ManagerError::NoLeader)?;
        self.propose(Command::CreateCluster(cluster)).await?;
        me.manager = Some(crate::model::ManagerInfo {
            raft_id: self.raft_id,
            addr: self.advertise.clone(),
        });
        self.propose(Command::CreateNode(me)).await?;
        Ok(())
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn raft_id(&self) -> RaftId {
        self.raft_id
    }

    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.raft_id)
    }

    /// The current leader's Raft id, if one is known.
    pub fn leader(&self) -> Option<RaftId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Commits `cmd` through the leader and returns what it did.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ManagerError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            // A leader cut off from the others keeps its term until it hears
            // a newer one, so its writes would wait forever without this.
            let written = tokio::time::timeout(LEADER_WAIT, self.proposer.write(cmd.clone()))
                .await
                .map_err(|_| ManagerError::NoQuorum {
                    waited: LEADER_WAIT,
                })?
                .ok_or_else(|| ManagerError::Raft("Raft is shutting down".into()))?;
            match written {
                Ok(resp) => {
                    return match resp {
                        Response::Applied(applied) => Ok(applied),
                        Response::Rejected(e) => Err(ManagerError::Rejected(e)),
                        Response::Noop | Response::Batch(_) => {
                            Err(ManagerError::Raft("command applied as no-op".into()))
                        }
                    };
                }
                Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    match self.forward(Forward::Propose(Box::new(cmd.clone()))).await {
                        Ok(ForwardReply::Proposed(r)) => return r.map_err(ManagerError::Rejected),
                        Ok(_) => return Err(ManagerError::Raft("unexpected forward reply".into())),
                        Err(ManagerError::NoLeader) if Instant::now() < deadline => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(ManagerError::Raft(e.to_string())),
            }
            self.leader_change(Duration::from_millis(200)).await;
        }
    }

    /// Waits until this manager's Raft view changes (a new leader is
    /// known, typically), at most `max`: a retry then goes straight to the
    /// new leader instead of sleeping through the end of a failover.
    async fn leader_change(&self, max: Duration) {
        let mut metrics = self.raft.metrics();
        metrics.borrow_and_update();
        let _ = tokio::time::timeout(max, metrics.changed()).await;
    }

    /// This manager's current Raft term.
    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// A leader's AppendEntries was accepted here (see [`election_gate`]).
    pub(crate) fn leader_heard(&self) {
        self.election_gate.leader_heard();
    }

    /// A linearizable view of the cluster state.
    pub async fn read(&self) -> Result<RwLockReadGuard<'_, ClusterState>, ManagerError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let index = loop {
            let asked = if self.is_leader() {
                self.confirm_leadership().await
            } else {
                match self.forward(Forward::ReadIndex).await {
                    Ok(ForwardReply::ReadIndex(index)) => Ok(index),
                    Ok(_) => return Err(ManagerError::Raft("unexpected forward reply".into())),
                    Err(e) => Err(e),
                }
            };
            match asked {
                Ok(index) => break index,
                // Leadership moved while asking (an election under way):
                // ask again once the new leader is known, as writes do,
                // rather than fail the caller's request.
                Err(ManagerError::NoLeader) if Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
            self.leader_change(Duration::from_millis(200)).await;
        };
        if let Some(index) = index {
            self.raft
                .wait(Some(LEADER_WAIT))
                .applied_index_at_least(Some(index.index), "linearizable read")
                .await
                .map_err(|_| ManagerError::NoLeader)?;
        }
        Ok(self.reader.state().await)
    }

    /// The state as of `applied` or later, to answer a write with: this
    /// manager's own state once it holds the write. The leader applies
    /// before answering, and a follower that forwarded the write applies it
    /// with the next AppendEntries, so this saves the quorum round of a
    /// linearizable read per Control API write. That read is the fallback
    /// if the entry does not arrive in time.
    pub async fn after(
        &self,
        applied: &Applied,
    ) -> Result<RwLockReadGuard<'_, ClusterState>, ManagerError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut metrics = self.raft.metrics();
        loop {
            metrics.borrow_and_update();
            let local = self.reader.state().await;
            if local.version >= applied.version {
                return Ok(local);
            }
            drop(local);
            let now = Instant::now();
            if now >= deadline {
                return self.read().await;
            }
            // Applied entries show in the metrics; the bound covers an
            // update that raced the check above.
            let wait = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
    }

    /// The read index: the leader's commit index once a quorum confirmed it
    /// still leads.
    async fn confirm_leadership(&self) -> Result<Option<LogId<RaftId>>, ManagerError> {
        match self.read_index.get().await {
            None => Err(ManagerError::Raft("Raft is shutting down".into())),
            Some(Ok(index)) => Ok(index),
            Some(Err(batch::ReadError::NoQuorum)) => Err(ManagerError::NoQuorum {
                waited: LEADER_WAIT,
            }),
            Some(Err(batch::ReadError::NotLeader)) => Err(ManagerError::NoLeader),
            Some(Err(batch::ReadError::Raft(e))) => Err(ManagerError::Raft(e)),
        }
    }

    /// This manager's applied state, possibly stale; for display only.
    pub async fn local_state(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.reader.state().await
    }

    /// Records a node's heartbeat on the leader (forwarded from followers),
    /// with what it reports of its certificate.
    pub async fn heartbeat(&self, node_id: &str, report: NodeReport) -> Result<(), ManagerError> {
        if !self.is_leader() {
            self.forward(Forward::Heartbeat {
                node_id: node_id.to_owned(),
                report,
            })
            .await?;
            return Ok(());
        }
        self.lock_seen().insert(node_id.to_owned(), Instant::now());
        let node = self.read().await?.nodes.get(node_id).cloned();
        let Some(mut node) = node else {
            return Err(ManagerError::NotFound {
                what: format!("node {node_id}"),
            });
        };
        let (id, version) = (node.id.clone(), node.version);
        let mut changed = false;
        if node.status != NodeState::Ready {
            tracing::info!(node = %id, hostname = %node.hostname, "node status: ready");
            node.status = NodeState::Ready;
            changed = true;
        }
        let NodeReport {
            tls,
            resources,
            platform,
            wireguard_key,
        } = report;
        if let Some(tls) = tls.filter(|t| *t != node.tls) {
            node.tls = tls;
            changed = true;
        }
        if let Some(r) = resources.filter(|r| *r != node.resources) {
            node.resources = r;
            changed = true;
        }
        if let Some(p) = platform.filter(|p| !p.is_empty() && *p != node.platform) {
            node.platform = p;
            changed = true;
        }
        if wireguard_key.is_some() && wireguard_key != node.wireguard_key {
            tracing::info!(node = %id, key = ?wireguard_key, "node's WireGuard key");
            node.wireguard_key = wireguard_key;
            changed = true;
        }
        if changed {
            self.propose(Command::UpdateNode {
                id,
                expected_version: version,
                node,
            })
            .await?;
        }
        Ok(())
    }

    /// Adds a joined manager as a Raft voter: learner first, so it catches
    /// up before it counts towards the quorum.
    pub async fn add_manager(
        &self,
        raft_id: RaftId,
        node_id: &str,
        addr: &str,
    ) -> Result<(), ManagerError> {
        if !self.is_leader() {
            let f = Forward::AddManager {
                raft_id,
                node_id: node_id.to_owned(),
                addr: addr.to_owned(),
            };
            self.forward(f).await?;
            return Ok(());
        }
        let member = RaftMember {
            node_id: node_id.to_owned(),
            addr: addr.to_owned(),
        };
        self.raft
            .add_learner(raft_id, member, true)
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([raft_id])), false)
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        // A voter the node object does not name would be invisible to
        // `node ls` and `node demote`, so a heartbeat that moved the version
        // meanwhile only means another try.
        for attempt in 0.. {
            let node = self.read().await?.nodes.get(node_id).cloned();
            let Some(mut node) = node else { break };
            let version = node.version;
            node.role = crate::model::NodeRole::Manager;
            node.manager = Some(crate::model::ManagerInfo {
                raft_id,
                addr: addr.to_owned(),
            });
            match self
                .propose(Command::UpdateNode {
                    id: node_id.to_owned(),
                    expected_version: version,
                    node,
                })
                .await
            {
                Err(ManagerError::Rejected(ApplyError::VersionMismatch { .. })) if attempt < 10 => {
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        tracing::info!(node = %node_id, raft_id, %addr, "manager admitted as a Raft voter");
        Ok(())
    }

    /// Takes a manager out of the Raft voters (demote, leave, node rm).
    pub async fn remove_manager(&self, raft_id: RaftId) -> Result<(), ManagerError> {
        if !self.is_leader() {
            self.forward(Forward::RemoveManager { raft_id }).await?;
            return Ok(());
        }
        self.raft
            .change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([raft_id])),
                false,
            )
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Asks the manager at `via` to make this (new, empty) manager a Raft
    /// voter; returns once the leader has admitted it.
    pub async fn join_raft(&self, via: &str) -> Result<(), ManagerError> {
        let channel =
            transport::channel(via, self.peer_tls.clone(), NodeRole::Manager.server_name())
                .map_err(|e| ManagerError::Forward {
                    addr: via.to_owned(),
                    message: e.to_string(),
                })?;
        let req = Forward::AddManager {
            raft_id: self.raft_id,
            node_id: self.node_id.clone(),
            addr: self.advertise.clone(),
        };
        let json = serde_json::to_vec(&req).map_err(|e| ManagerError::Raft(e.to_string()))?;
        let reply = RaftPeerClient::new(channel)
            .max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES)
            .forward(RaftPayload { json })
            .await
            .map_err(|s| ManagerError::Forward {
                addr: via.to_owned(),
                message: s.message().to_owned(),
            })?;
        let reply: Result<ForwardReply, String> = serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        reply.map(|_| ()).map_err(|message| ManagerError::Forward {
            addr: via.to_owned(),
            message,
        })
    }

    /// host:port of every manager in the Raft membership.
    pub fn manager_addrs(&self) -> Vec<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(_, m)| m.addr.clone())
            .collect()
    }

    /// Rewraps this manager's store data key under `new` (autolock turned
    /// on, or its unlock key rotated); the old key stops opening the store.
    pub fn rotate_store_key(&self, new: &StoreKey) -> Result<(), ManagerError> {
        Ok(self.store.rotate_kek(new)?)
    }

    pub fn removed_nodes(&self) -> &RemovedNodes {
        &self.removed
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft shutdown");
        }
    }

    async fn set_status(&self, mut node: Node, status: NodeState) -> Result<(), ManagerError> {
        let (id, version) = (node.id.clone(), node.version);
        node.status = status;
        tracing::info!(node = %id, hostname = %node.hostname, ?status, "node status");
        self.propose(Command::UpdateNode {
            id,
            expected_version: version,
            node,
        })
        .await
        .map(|_| ())
    }

    /// Records that `node_id` wrote its mesh from the set of `version`.
    /// Versions only move forward: acks sent to several managers, or
    /// retried, may arrive out of order.
    pub fn ack_applied(&self, node_id: &str, version: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let v = applied.entry(node_id.to_owned()).or_default();
        *v = (*v).max(version);
    }

    /// Every node's latest [`Manager::ack_applied`] heard here.
    pub fn applied_versions(&self) -> HashMap<String, u64> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.last_seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` to the current leader's peer service.
    async fn forward(&self, req: Forward) -> Result<ForwardReply, ManagerError> {
        let (leader, addr) = {
            let metrics = self.raft.metrics().borrow().clone();
            let leader = metrics.current_leader.ok_or(ManagerError::NoLeader)?;
            let addr = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|m| m.addr.clone())
                .ok_or(ManagerError::NoLeader)?;
            (leader, addr)
        };
        if leader == self.raft_id {
            // We became leader meanwhile; the caller retries locally.
            return Err(ManagerError::NoLeader);
        }
        let channel = {
            let mut channels = self
                .leader_channels
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match channels.get(&addr) {
                Some(c) => c.clone(),
                None => {
                    let c = transport::channel(
                        &addr,
                        self.peer_tls.clone(),
                        NodeRole::Manager.server_name(),
                    )
                    .map_err(|e| ManagerError::Forward {
                        addr: addr.clone(),
                        message: e.to_string(),
                    })?;
                    channels.insert(addr.clone(), c.clone());
                    c
                }
            }
        };
        let json = serde_json::to_vec(&req).map_err(|e| ManagerError::Raft(e.to_string()))?;
        let reply = RaftPeerClient::new(channel)
            .max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES)
            .forward(RaftPayload { json })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => ManagerError::NoLeader,
                _ => ManagerError::Forward {
                    addr: addr.clone(),
                    message: s.message().to_owned(),
                },
            })?;
        let reply: Result<ForwardReply, String> = serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        reply.map_err(|message| ManagerError::Forward { addr, message })
    }

    /// Serves a request forwarded by a follower.
    async fn handle_forward(&self, req: Forward) -> Result<ForwardReply, ManagerError> {
        // Each method below forwards again if leadership moved meanwhile.
        Ok(match req {
            Forward::Propose(cmd) => match self.propose(*cmd).await {
                Ok(applied) => ForwardReply::Proposed(Ok(applied)),
                Err(ManagerError::Rejected(e)) => ForwardReply::Proposed(Err(e)),
                Err(e) => return Err(e),
            },
            Forward::ReadIndex if self.is_leader() => {
                ForwardReply::ReadIndex(self.confirm_leadership().await?)
            }
            Forward::ReadIndex => return Err(ManagerError::NoLeader),
            Forward::Heartbeat { node_id, report } => {
                self.heartbeat(&node_id, report).await?;
                ForwardReply::Done
            }
            Forward::AddManager {
                raft_id,
                node_id,
                addr,
            } => {
                self.add_manager(raft_id, &node_id, &addr).await?;
                ForwardReply::Done
            }
            Forward::RemoveManager { raft_id } => {
                self.remove_manager(raft_id).await?;
                ForwardReply::Done
            }
        })
    }
}

/// On the leader: the reconcilers (ingress network, orchestrator,
/// scheduler) run as soon as something is applied, so a failed task is
/// replaced and a new one placed without waiting for a tick; the tick is
/// for what time alone changes (restart delays).
async fn reconciler(m: Arc<Manager>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut metrics = m.raft.metrics();
    let mut applied = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // An update's delay or monitor window ending: a pass is due then, to
    // the millisecond, not at the next tick.
    let mut wake: Option<tokio::time::Instant> = None;
    loop {
        let deadline =
            wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stopped.changed() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => applied = None,
            _ = tokio::time::sleep_until(deadline), if wake.is_some() => {
                wake = None;
                applied = None;
            }
        }
        let (leader, now) = {
            let mm = metrics.borrow();
            (mm.state == ServerState::Leader, mm.last_applied)
        };
        if !leader || now == applied {
            continue;
        }
        applied = now;
        // Lets a burst of reports land as one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = networks::ensure_ingress(&m).await {
            tracing::warn!(error = %e, "creating the ingress network");
        }
        if let Some(at_ms) = services::reconcile(&m).await {
            let wait = at_ms.saturating_sub(services::now_unix_ms());
            wake = Some(tokio::time::Instant::now() + Duration::from_millis(wait));
        }
        pki::finish_rotation(&m).await;
        netkeys::rotate(&m).await;
    }
}

/// On the leader: a node silent for `MISSED_HEARTBEATS` periods goes down.
/// On every manager: keep the TLS revocation set in step with the state.
async fn failure_detector(m: Arc<Manager>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        let (removed, period, nodes) = {
            let state = m.local_state().await;
            let cluster = state.cluster();
            (
                cluster
                    .map(|c| c.removed_nodes.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default(),
                cluster.map_or(5, |c| c.settings.dispatcher_heartbeat_secs.max(1)),
                state.nodes.values().cloned().collect::<Vec<_>>(),
            )
        };
        m.removed.replace(removed);

        let leader = m.raft.metrics().borrow().state == ServerState::Leader;
        let since = {
            let mut s = m.leader_since.lock().unwrap_or_else(|e| e.into_inner());
            match (leader, *s) {
                (true, None) => *s = Some(Instant::now()),
                (false, Some(_)) => *s = None,
                _ => {}
            }
            *s
        };
        let Some(since) = since else { continue };
        let grace = Duration::from_secs(period) * MISSED_HEARTBEATS;
        let now = Instant::now();
        for node in nodes.into_iter().filter(|n| n.status == NodeState::Ready) {
            let last = m
                .lock_seen()
                .get(&node.id)
                .copied()
                .unwrap_or(since)
                .max(since);
            if now.duration_since(last) > grace
                && let Err(e) = m.set_status(node, NodeState::Down).await
            {
                tracing::warn!(error = %e, "marking a node down");
            }
        }
    }
}

/// The summary of every object of a kind.
async fn list_all<T: crate::model::StoredObject, S>(
    m: &Manager,
    summary: impl Fn(&ClusterState, &T) -> S,
) -> Result<Vec<S>, ManagerError> {
    let state = m.read().await?;
    Ok(T::table(&state)
        .values()
        .map(|o| summary(&state, o))
        .collect())
}

/// The summary of the object `key` names (see [`lookup`]).
async fn inspect_one<T: crate::model::StoredObject, S>(
    m: &Manager,
    key: &str,
    summary: impl Fn(&ClusterState, &T) -> S,
) -> Result<S, ManagerError> {
    let state = m.read().await?;
    Ok(summary(&state, lookup::<T>(&state, key)?))
}

/// The kinds the operator removes by reference.
trait Removable: crate::model::StoredObject {
    fn remove_command(id: String, expected_version: u64) -> Command;
}

macro_rules! removable {
    ($($ty:ident => $variant:ident),*) => {
        $(impl Removable for crate::model::$ty {
            fn remove_command(id: String, expected_version: u64) -> Command {
                Command::$variant { id, expected_version }
            }
        })*
    };
}

removable!(
    Network => RemoveNetwork,
    Secret => RemoveSecret,
    Config => RemoveConfig,
    Service => RemoveService
);

/// docker's refusal to remove a secret or config that services mount,
/// naming them all (the apply-time check names only one, by id, and is
/// there for a service created meanwhile).
fn refuse_in_use<'a>(
    kind: crate::model::Kind,
    name: &str,
    users: impl Iterator<Item = &'a crate::model::Service>,
) -> Result<(), ManagerError> {
    let names: Vec<&str> = users.map(|s| s.spec.name.as_str()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let plural = if names.len() == 1 { "" } else { "s" };
    Err(ManagerError::Precondition {
        what: format!(
            "{kind} '{name}' is in use by the following service{plural}: {}; remove it from \
             them first (shoal service update --{kind}-rm {name} SERVICE)",
            names.join(", ")
        ),
    })
}

/// Removes the object `key` names once `check` allows it; returns its id.
async fn remove_one<T: Removable>(
    m: &Manager,
    key: &str,
    check: impl FnOnce(&ClusterState, &T) -> Result<(), ManagerError>,
) -> Result<String, ManagerError> {
    let (id, version) = {
        let state = m.read().await?;
        let o = lookup::<T>(&state, key)?;
        check(&state, o)?;
        (o.id().to_owned(), o.version())
    };
    m.propose(T::remove_command(id.clone(), version)).await?;
    Ok(id)
}

/// The cluster object, which every manager's state has once initialised.
fn cluster_of(state: &ClusterState) -> Result<&Cluster, ManagerError> {
    state.cluster().ok_or(ManagerError::NoCluster)
}

/// Finds an object as docker resolves a reference: by id, then by name,
/// then by unique id prefix.
pub(super) fn lookup<'a, T: crate::model::StoredObject>(
    state: &'a ClusterState,
    key: &str,
) -> Result<&'a T, ManagerError> {
    let table = T::table(state);
    if let Some(o) = table.get(key) {
        return Ok(o);
    }
    if let Some(o) = state.find_by_name::<T>(key) {
        return Ok(o);
    }
    // Ids sort by prefix: the matches are one range of the table.
    let by_prefix: Vec<&T> = table
        .range::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
        .take_while(|(id, _)| !key.is_empty() && id.starts_with(key))
        .map(|(_, o)| o)
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok(one),
        [] => Err(ManagerError::NotFound {
            what: format!("{} {key}", T::KIND),
        }),
        _ => Err(ManagerError::Invalid {
            what: format!(
                "{} {key} is ambiguous ({} matches); use its ID",
                T::KIND,
                by_prefix.len()
            ),
        }),
    }
}
