//! This node's membership of a swarm: `swarm init`, `swarm join`, `swarm
//! leave`, resuming after a restart, and the session (heartbeats) every node
//! keeps with the managers. A manager also runs the control plane
//! (`shoal_controlplane::manager`) in this process.
//!
//! A worker promoted in place (`node promote`) becomes a manager in this
//! process too: its session gets it a manager certificate, then
//! [`Swarm::follow_promotions`] starts the manager and joins Raft as a
//! joining manager does, keeping the executor and its tasks running.
//!
//! On disk, under `<state-dir>/swarm/`: `node.json` (ids, role, addresses),
//! `key.pem` (0600), `cert.pem`, `ca.pem`, and on managers `store.key` (0600,
//! the key-encryption key of the Raft store) and `raft/`. An autolocked
//! manager keeps neither `store.key` nor `key.pem`, only `key.sealed`: see
//! [`crate::autolock`].

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    link::ManagerLink,
    worker::{NodeEnv, Worker},
};
use shoal_api::{
    CLUSTER_PORT,
    cluster::v1::{JoinRequest, NodeRole as WireRole, join_client::JoinClient},
    node::v1::{
        SwarmInfo, SwarmInitReply, SwarmInitRequest, SwarmJoinReply, SwarmJoinRequest, SwarmState,
    },
};
use shoal_ca::{
    CaCert, Credentials, JoinToken, JoinTokens, NodeIdentity, NodeKey, NodeRole, RemovedNodes,
    RootCa, bootstrap_client_config, generate_node_id, live_client_config,
};
use shoal_controlplane::{
    StoreError, StoreKey,
    manager::{Manager, ManagerConfig, ManagerError, not_a_manager},
    model::{
        Availability, Cluster, ClusterSettings, Command, JoinTokens as StoredTokens, Labels, Node,
        NodeRole as ModelRole, NodeState, RootCaKeys, SecretString,
    },
    store::{CryptoError, UnlockKey, UnlockKeyError},
    transport,
};
use tokio::{
    sync::{Mutex, mpsc},
    task::JoinHandle,
};
use tonic::Status;

use crate::{
    autolock::{self, KeyFiles, Keys, LOCKED_MESSAGE, SharedKeys},
    session::RoleChange,
};

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and \
         join another one."
    )]
    AlreadyActive,
    #[error("This node is not part of a swarm")]
    NotActive,
    #[error("{LOCKED_MESSAGE}")]
    Locked,
    #[error(
        "swarm is not locked: `shoal swarm unlock` is only needed after an autolocked manager \
         restarts"
    )]
    NotLocked,
    /// Stands for the control plane's own "not a swarm manager" answer.
    #[error("this node is not a swarm manager")]
    NotManager,
    #[error(transparent)]
    BadUnlockKey(#[from] UnlockKeyError),
    #[error(
        "invalid key: the unlock key is not correct for this node; give the key \
         `shoal swarm unlock-key` prints on an unlocked manager (a manager that stopped just \
         after a rotation may still need the previous key)"
    )]
    WrongUnlockKey,
    #[error(
        "no unlock key is set: autolock is off for this swarm; turn it on with \
         `shoal swarm update --autolock=true`"
    )]
    NoUnlockKey,
    #[error("the cluster's stored unlock key is unreadable")]
    StoredUnlockKey(#[source] UnlockKeyError),
    #[error("{path}: cannot seal or open the TLS key")]
    Seal {
        path: PathBuf,
        #[source]
        source: CryptoError,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(
        "You are attempting to leave the swarm on a node that is participating as a manager. \
         Demote it first with `shoal node demote`, or use `--force` to leave anyway (the \
         remaining managers must still hold a majority)"
    )]
    ManagerLeave,
    #[error("cannot reach the manager at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the manager refused to let this node join: {0}")]
    JoinRefused(String),
    #[error("certificates")]
    Ca(#[from] shoal_ca::CaError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl From<SwarmError> for Status {
    fn from(e: SwarmError) -> Self {
        let msg = chain(&e);
        match e {
            SwarmError::AlreadyActive
            | SwarmError::NotActive
            | SwarmError::ManagerLeave
            | SwarmError::Locked
            | SwarmError::NotLocked
            | SwarmError::NoUnlockKey => Status::failed_precondition(msg),
            SwarmError::NotManager => not_a_manager(),
            SwarmError::Invalid { .. }
            | SwarmError::BadUnlockKey(_)
            | SwarmError::WrongUnlockKey => Status::invalid_argument(msg),
            SwarmError::Unreachable { .. } => Status::unavailable(msg),
            SwarmError::JoinRefused(_) => Status::permission_denied(msg),
            SwarmError::Manager(m) => m.into(),
            _ => Status::internal(msg),
        }
    }
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        // A cause its error already quotes is not said twice.
        let cause = c.to_string();
        if !s.contains(&cause) {
            s.push_str(": ");
            s.push_str(&cause);
        }
        src = c.source();
    }
    s
}

/// This node's certificate chain (leaf first).
pub(crate) const CERT_FILE: &str = "cert.pem";
/// The roots it trusts: one, or two during a root CA rotation.
pub(crate) const CA_FILE: &str = "ca.pem";

/// What the session last found wrong with this node's membership, shown by
/// `shoal info`. Clones share one value.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionProblem(Arc<std::sync::Mutex<Option<String>>>);

impl SessionProblem {
    pub(crate) fn set(&self, problem: Option<String>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// `node.json`: what this node needs to resume its membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeFile {
    pub(crate) node_id: String,
    cluster_id: String,
    role: ModelRole,
    /// host:port of the managers' 2377, most recently seen first.
    pub(crate) managers: Vec<String>,
    /// This node's 2377 as others dial it (managers).
    pub(crate) advertise: String,
    listen: SocketAddr,
    raft_id: Option<u64>,
    pub(crate) heartbeat_secs: u64,
    snapshot_interval: u64,
}

/// This node's part in a swarm.
enum Membership {
    None,
    /// An autolocked manager after a restart: nothing runs until `swarm
    /// unlock` gives the key that opens its store.
    Locked(NodeFile),
    Active(Active),
}

struct Active {
    file: NodeFile,
    /// This node's certificate and roots, as its servers and clients use them.
    creds: Credentials,
    manager: Option<Arc<Manager>>,
    /// A manager's store and TLS keys (autolock).
    keys: Option<SharedKeys>,
    /// Heartbeats, and on a manager the unlock-key follower.
    tasks: Vec<JoinHandle<()>>,
    /// The executor: this node's tasks.
    worker: Option<Worker>,
    /// What the session last found wrong, for `shoal info`.
    problem: SessionProblem,
}

impl Active {
    /// Ends the session. `keep_tasks`: the daemon stops and its tasks keep
    /// running for the next one (live restore); else (leaving) they stop.
    async fn stop(self, keep_tasks: bool) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(w) = self.worker {
            match keep_tasks {
                true => w.detach(),
                false => w.stop().await,
            }
        }
        if let Some(m) = self.manager {
            m.shutdown().await;
        }
    }
}

pub struct Swarm {
    dir: PathBuf,
    hostname: String,
    /// The data interface's address: the default advertise address.
    default_ip: Option<IpAddr>,
    /// Where tasks run.
    env: NodeEnv,
    state: Mutex<Membership>,
    /// Role changes the session asks for.
    promotions: mpsc::Sender<RoleChange>,
    /// Taken by [`Swarm::follow_promotions`].
    promotions_rx: std::sync::Mutex<Option<mpsc::Receiver<RoleChange>>>,
}

impl Swarm {
    pub fn new(
        state_dir: &Path,
        hostname: String,
        default_ip: Option<IpAddr>,
        env: NodeEnv,
    ) -> Self {
        // One waiting request is enough: each carries the latest addresses
        // and a promotion already done ignores the rest.
        let (promotions, rx) = mpsc::channel(1);
        Swarm {
            dir: state_dir.join("swarm"),
            hostname,
            default_ip,
            env,
            state: Mutex::new(Membership::None),
            promotions,
            promotions_rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Starts this node's manager whenever its session, promoted to a
    /// manager certificate, asks for it, and stops it once demoted; for as
    /// long as the process runs.
    pub fn follow_promotions(self: &Arc<Self>) {
        let rx = self
            .promotions_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut rx) = rx else {
            tracing::warn!("promotions are already followed");
            return;
        };
        let swarm = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let Some(swarm) = swarm.upgrade() else { return };
                // On an error the session asks again on its next heartbeat.
                match change {
                    RoleChange::Promote(managers) => match swarm.promote(&managers).await {
                        Ok(true) => tracing::info!("promoted: this node is a manager now"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %chain(&e), "starting the promoted manager")
                        }
                    },
                    RoleChange::Demote(managers) => match swarm.demote(managers).await {
                        Ok(true) => tracing::info!("demoted: this node is a worker now"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %chain(&e), "stopping the demoted manager")
                        }
                    },
                }
            }
        });
    }

    /// Turns this worker, which holds a manager certificate now, into a
    /// manager: its own Raft store and manager on its 2377, admitted to Raft
    /// through `managers`, saved so that a restart resumes it as a manager.
    /// The executor keeps running; only the session and the worker's log
    /// server (on the same port as the manager) are replaced. `false` if
    /// there was nothing to do.
    async fn promote(&self, managers: &[String]) -> Result<bool, SwarmError> {
        let mut state = self.state.lock().await;
        let ready = matches!(
            &*state,
            Membership::Active(a)
                if a.manager.is_none() && a.creds.identity().role() == NodeRole::Manager
        );
        if !ready {
            return Ok(false);
        }
        let Membership::Active(a) = std::mem::replace(&mut *state, Membership::None) else {
            return Ok(false);
        };
        let Active {
            file,
            creds,
            tasks,
            worker,
            ..
        } = a;
        // Awaited, not only aborted: the log server must free the port the
        // manager binds.
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            if let Err(e) = t.await
                && !e.is_cancelled()
            {
                tracing::warn!(error = %e, "a worker session task ended badly");
            }
        }
        match self.start_promoted(&file, &creds, managers).await {
            Ok((file, manager, keys)) => {
                *state = Membership::Active(self.session_around(
                    file,
                    creds,
                    Some(manager),
                    Some(keys),
                    worker,
                ));
                Ok(true)
            }
            Err(e) => {
                *state = Membership::Active(self.session_around(file, creds, None, None, worker));
                Err(e)
            }
        }
    }

    /// Turns this manager, which Raft dropped (`node demote`), back into a
    /// worker: the manager stops, its store goes, and the session goes on
    /// as a worker's, which trades the manager certificate for a worker one.
    /// The executor keeps running. `false` if there was nothing to do.
    async fn demote(&self, managers: Vec<String>) -> Result<bool, SwarmError> {
        let mut state = self.state.lock().await;
        if !matches!(&*state, Membership::Active(a) if a.manager.is_some()) {
            return Ok(false);
        }
        let Membership::Active(a) = std::mem::replace(&mut *state, Membership::None) else {
            return Ok(false);
        };
        let Active {
            mut file,
            creds,
            manager,
            tasks,
            worker,
            ..
        } = a;
        for t in &tasks {
            t.abort();
        }
        if let Some(m) = manager {
            m.shutdown().await;
        }
        // A worker keeps its TLS key in the clear (an autolocked manager
        // had it sealed) and no store.
        let files = self.key_files();
        let key = NodeKey::from_pem(creds.identity().key_pem())?;
        files.write_tls_key(&key, None)?;
        file.role = ModelRole::Worker;
        file.raft_id = None;
        let others: Vec<String> = managers
            .into_iter()
            .filter(|m| *m != file.advertise)
            .collect();
        if !others.is_empty() {
            file.managers = others;
        }
        // node.json first: a crash after it resumes a worker, whatever is
        // left of the store.
        let saved = self.save(&file);
        let raft_dir = self.dir.join("raft");
        if let Err(e) = std::fs::remove_dir_all(&raft_dir) {
            tracing::warn!(path = %raft_dir.display(), error = %e, "removing the Raft store");
        }
        *state = Membership::Active(self.session_around(file, creds, None, None, worker));
        saved.map(|()| true)
    }

    async fn start_promoted(
        &self,
        file: &NodeFile,
        creds: &Credentials,
        managers: &[String],
    ) -> Result<(NodeFile, Arc<Manager>, SharedKeys), SwarmError> {
        let files = self.key_files();
        // A worker's TLS key is never sealed: only managers lock.
        let tls = files.tls_key(None)?;
        let raft_dir = self.dir.join("raft");
        // Left by an attempt that failed: a new Raft id starts from nothing.
        if raft_dir.exists() {
            std::fs::remove_dir_all(&raft_dir).map_err(io(&raft_dir))?;
        }
        let store_key = StoreKey::generate();
        files.write_store_key(&store_key)?;
        let raft_id = rand::random();
        let mut next = file.clone();
        next.role = ModelRole::Manager;
        next.raft_id = Some(raft_id);
        let m = self.start_manager(&next, raft_id, store_key, creds).await?;
        // The session's latest addresses first: one of them just answered.
        let mut vias: Vec<&String> = Vec::new();
        for v in managers.iter().chain(&file.managers) {
            if !vias.contains(&v) && *v != next.advertise {
                vias.push(v);
            }
        }
        let mut last = SwarmError::Invalid {
            field: "managers",
            reason: "no manager address known to join Raft through".into(),
        };
        let mut joined = false;
        for via in vias {
            match m.join_raft(via).await {
                Ok(()) => {
                    joined = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(%via, error = %chain(&e), "joining Raft");
                    last = e.into();
                }
            }
        }
        if !joined {
            m.shutdown().await;
            if let Err(e) = std::fs::remove_dir_all(&raft_dir) {
                tracing::warn!(path = %raft_dir.display(), error = %e, "removing the Raft store");
            }
            return Err(last);
        }
        // Only now: a restart before this resumes a worker, which the
        // session promotes again.
        self.save(&next)?;
        Ok((next, m, Keys::new(files, tls, None)))
    }

    /// Where tasks run, for `node doctor`.
    pub fn env(&self) -> &NodeEnv {
        &self.env
    }

    /// The routing mesh's maps and tables, for the counters.
    pub fn mesh(&self) -> &Arc<std::sync::Mutex<crate::datapath::mesh::MeshState>> {
        &self.env.mesh
    }

    fn key_files(&self) -> KeyFiles {
        KeyFiles::new(&self.dir)
    }

    /// Picks the membership up again after a restart, from disk alone.
    pub async fn resume(&self) -> Result<(), SwarmError> {
        let path = self.dir.join("node.json");
        if !path.exists() {
            return Ok(());
        }
        let file: NodeFile =
            serde_json::from_slice(&read(&path)?).map_err(|source| SwarmError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let files = self.key_files();
        let mut state = self.state.lock().await;
        let Some(raft_id) = file.raft_id else {
            let creds = self.load_credentials(&files.tls_key(None)?)?;
            tracing::info!(node = %file.node_id, role = ?file.role, "resumed swarm membership");
            *state = Membership::Active(self.spawn_session(file, creds, None, None));
            return Ok(());
        };
        // Without store.key, or with one a lock cut short left stale (the
        // plaintext TLS key goes before it), only the operator's key opens
        // the store.
        let manager = match files.store_key()? {
            Some(store_key) if files.has_plain_tls_key() => {
                let tls = files.tls_key(None)?;
                let creds = self.load_credentials(&tls)?;
                match self.start_manager(&file, raft_id, store_key, &creds).await {
                    Ok(m) => Some((m, tls, creds)),
                    Err(SwarmError::Manager(ManagerError::Store(StoreError::WrongKey {
                        ..
                    }))) => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let Some((manager, tls, creds)) = manager else {
            tracing::warn!(
                node = %file.node_id,
                "this manager is autolocked: give its unlock key with `shoal swarm unlock`"
            );
            *state = Membership::Locked(file);
            return Ok(());
        };
        let keys = Keys::new(files, tls, None);
        tracing::info!(node = %file.node_id, role = ?file.role, "resumed swarm membership");
        *state = Membership::Active(self.spawn_session(file, creds, Some(manager), Some(keys)));
        Ok(())
    }

    /// `shoal swarm unlock`: opens a restarted autolocked manager with the
    /// operator's key and starts it.
    pub async fn unlock(&self, key: &str) -> Result<(), SwarmError> {
        let mut state = self.state.lock().await;
        let file = match &*state {
            Membership::Locked(file) => file.clone(),
            Membership::None => return Err(SwarmError::NotActive),
            Membership::Active(_) => return Err(SwarmError::NotLocked),
        };
        let Some(raft_id) = file.raft_id else {
            return Err(SwarmError::NotLocked);
        };
        let key = UnlockKey::parse(key)?;
        let kek = key.kek();
        let files = self.key_files();
        let tls = files.tls_key(Some(&kek))?;
        let creds = self.load_credentials(&tls)?;
        // The store decides: the TLS key may be readable under a key the
        // store no longer opens with (a rotation cut short).
        let manager = match self.start_manager(&file, raft_id, kek, &creds).await {
            Err(SwarmError::Manager(ManagerError::Store(StoreError::WrongKey { .. }))) => {
                return Err(SwarmError::WrongUnlockKey);
            }
            other => other?,
        };
        let keys = Keys::new(files, tls, Some(key));
        tracing::info!(node = %file.node_id, "swarm unlocked");
        *state = Membership::Active(self.spawn_session(file, creds, Some(manager), Some(keys)));
        Ok(())
    }

    /// `shoal swarm unlock-key [--rotate]`: the cluster's unlock key, read
    /// (and replaced) through this manager.
    pub async fn unlock_key(&self, rotate: bool) -> Result<String, SwarmError> {
        // Not held across Raft: `info` must answer while a write waits.
        let (manager, keys) = match &*self.state.lock().await {
            Membership::None => return Err(SwarmError::NotActive),
            Membership::Locked(_) => return Err(SwarmError::Locked),
            Membership::Active(a) => match (&a.manager, &a.keys) {
                (Some(m), Some(k)) => (m.clone(), k.clone()),
                _ => return Err(SwarmError::NotManager),
            },
        };
        let mut cluster = manager
            .read()
            .await?
            .clusters
            .values()
            .next()
            .cloned()
            .ok_or(ManagerError::NoCluster)?;
        if cluster.unlock_key.0.is_empty() {
            return Err(SwarmError::NoUnlockKey);
        }
        if !rotate {
            return Ok(cluster.unlock_key.0);
        }
        let fresh = UnlockKey::generate().format();
        let version = cluster.version;
        cluster.unlock_key = SecretString(fresh.clone());
        manager
            .propose(Command::UpdateCluster {
                id: cluster.id.clone(),
                expected_version: version,
                cluster,
            })
            .await?;
        // Rewrapped before the operator sees the new key, so that this
        // manager opens with it from now on. The linearizable read makes the
        // local state hold the write, which `sync` reads.
        drop(manager.read().await?);
        autolock::sync(&keys, &manager).await?;
        tracing::info!("unlock key rotated");
        Ok(fresh)
    }

    pub async fn init(&self, r: SwarmInitRequest) -> Result<SwarmInitReply, SwarmError> {
        let mut state = self.state.lock().await;
        if !matches!(*state, Membership::None) {
            return Err(SwarmError::AlreadyActive);
        }
        let listen = parse_listen(&r.listen_addr)?;
        let advertise = self.advertise(&r.advertise_addr, listen.port())?;
        let mut settings = ClusterSettings::default();
        if !r.default_addr_pool.is_empty() {
            settings.default_addr_pool = r.default_addr_pool.clone();
        }
        if r.default_addr_pool_mask_length != 0 {
            settings.subnet_size = u8::try_from(r.default_addr_pool_mask_length)
                .ok()
                .filter(|m| *m <= 32)
                .ok_or_else(|| invalid("--default-addr-pool-mask-length", "must be 0-32"))?;
        }
        if r.data_path_port != 0 {
            settings.data_path_port = u16::try_from(r.data_path_port)
                .map_err(|_| invalid("--data-path-port", "must be 1-65535"))?;
        }
        if r.cert_expiry_secs != 0 {
            settings.node_cert_expiry_secs = r.cert_expiry_secs;
        }
        if r.dispatcher_heartbeat_secs != 0 {
            settings.dispatcher_heartbeat_secs = r.dispatcher_heartbeat_secs;
        }
        if r.snapshot_interval != 0 {
            settings.snapshot_interval = r.snapshot_interval;
        }
        if r.network_key_rotation_secs != 0 {
            settings.network_key_rotation_secs = shoal_controlplane::keys::rotation_period(
                "--network-key-rotation",
                r.network_key_rotation_secs,
            )
            .map_err(|reason| invalid("--network-key-rotation", &reason))?;
        }
        settings.autolock = r.autolock;
        // With autolock the store's KEK is the unlock key, never on disk.
        let unlock = r.autolock.then(UnlockKey::generate);

        let cluster_id = generate_node_id();
        let ca = RootCa::generate(&cluster_id, shoal_ca::DEFAULT_ROOT_CA_VALIDITY)?;
        let node_id = generate_node_id();
        let key = NodeKey::generate()?;
        let cert = ca.issue(
            &key.csr()?,
            &node_id,
            NodeRole::Manager,
            &cluster_id,
            Duration::from_secs(settings.node_cert_expiry_secs),
        )?;
        let tokens = JoinTokens::generate(&ca.digest());
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let files = self.key_files();
        let store_key = match &unlock {
            Some(u) => u.kek(),
            None => {
                let k = StoreKey::generate();
                files.write_store_key(&k)?;
                k
            }
        };
        files.write_tls_key(&key, unlock.as_ref().map(|_| &store_key))?;
        write(&self.dir.join(CERT_FILE), cert.as_bytes(), 0o644)?;
        write(&self.dir.join(CA_FILE), ca.cert_pem().as_bytes(), 0o644)?;
        let creds = self.load_credentials(&key)?;

        let file = NodeFile {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: ModelRole::Manager,
            managers: vec![advertise.clone()],
            advertise: advertise.clone(),
            listen,
            raft_id: Some(rand::random()),
            heartbeat_secs: settings.dispatcher_heartbeat_secs,
            snapshot_interval: settings.snapshot_interval,
        };
        let manager = self
            .start_manager(&file, file.raft_id.unwrap_or_default(), store_key, &creds)
            .await?;
        let cluster = Cluster {
            id: cluster_id.clone(),
            version: 0,
            name: "default".into(),
            settings,
            join_tokens: StoredTokens {
                worker: SecretString(tokens.get(NodeRole::Worker).to_string()),
                manager: SecretString(tokens.get(NodeRole::Manager).to_string()),
            },
            root_ca: RootCaKeys {
                cert_pem: ca.cert_pem().to_owned(),
                key_pem: SecretString(ca.key_pem().to_string()),
                rotation: None,
            },
            removed_nodes: Default::default(),
            unlock_key: SecretString(unlock.as_ref().map(UnlockKey::format).unwrap_or_default()),
            // Made now, so this node's first assignment set has them.
            network_keys: shoal_controlplane::keys::NetworkKeys::made(),
        };
        let me = self.node_object(&node_id, ModelRole::Manager, &advertise);
        if let Err(e) = manager.bootstrap(cluster, me).await {
            manager.shutdown().await;
            let _ = std::fs::remove_dir_all(&self.dir);
            return Err(e.into());
        }
        self.save(&file)?;
        let unlock_key = unlock.as_ref().map(UnlockKey::format).unwrap_or_default();
        let keys = Keys::new(files, key, unlock);
        *state = Membership::Active(self.spawn_session(file, creds, Some(manager), Some(keys)));
        tracing::info!(
            node = %node_id, cluster = %cluster_id, %advertise, autolock = r.autolock,
            "swarm initialised"
        );
        Ok(SwarmInitReply {
            node_id,
            cluster_id,
            worker_token: tokens.get(NodeRole::Worker).to_string(),
            manager_token: tokens.get(NodeRole::Manager).to_string(),
            unlock_key,
            advertise_addr: advertise,
        })
    }

    pub async fn join(&self, r: SwarmJoinRequest) -> Result<SwarmJoinReply, SwarmError> {
        let mut state = self.state.lock().await;
        if !matches!(*state, Membership::None) {
            return Err(SwarmError::AlreadyActive);
        }
        let token =
            JoinToken::parse(r.token.trim()).map_err(|e| invalid("--token", &e.to_string()))?;
        let remote = with_port(&r.remote_addr);
        if r.remote_addr.trim().is_empty() {
            return Err(invalid(
                "HOST:PORT",
                "give a manager's address, e.g. 198.18.0.1:2377",
            ));
        }
        let listen = parse_listen(&r.listen_addr)?;
        let advertise = self.advertise(&r.advertise_addr, listen.port())?;
        let key = NodeKey::generate()?;
        let mut tls = bootstrap_client_config(&token)?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let channel = transport::channel(&remote, Arc::new(tls), NodeRole::Manager.server_name())
            .map_err(|e| SwarmError::Unreachable {
            addr: remote.clone(),
            reason: e.to_string(),
        })?;
        let reply = JoinClient::new(channel)
            .join(JoinRequest {
                token: r.token.trim().to_owned(),
                csr_pem: key.csr()?.into_string(),
                hostname: self.hostname.clone(),
                advertise_addr: advertise.clone(),
                data_path_addr: r.data_path_addr.clone(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
                    SwarmError::Unreachable {
                        addr: remote.clone(),
                        reason: s.message().to_owned(),
                    }
                }
                _ => SwarmError::JoinRefused(s.message().to_owned()),
            })?
            .into_inner();

        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        // Plaintext even when the cluster is autolocked: this manager learns
        // the unlock key from the replicated state, then seals both keys
        // (docker's joining managers do the same).
        let files = self.key_files();
        files.write_tls_key(&key, None)?;
        write(&self.dir.join(CERT_FILE), reply.cert_pem.as_bytes(), 0o644)?;
        write(&self.dir.join(CA_FILE), reply.ca_pem.as_bytes(), 0o644)?;
        let creds = self.load_credentials(&key)?;
        let role = match creds.identity().role() {
            NodeRole::Manager => ModelRole::Manager,
            NodeRole::Worker => ModelRole::Worker,
        };
        let mut managers = reply.managers.clone();
        if !managers.contains(&remote) {
            managers.insert(0, remote.clone());
        }
        let mut file = NodeFile {
            node_id: reply.node_id.clone(),
            cluster_id: reply.cluster_id.clone(),
            role,
            managers,
            advertise,
            listen,
            raft_id: None,
            heartbeat_secs: reply.heartbeat_secs.max(1),
            snapshot_interval: shoal_controlplane::raft::DEFAULT_SNAPSHOT_INTERVAL,
        };
        let (manager, keys) = if role == ModelRole::Manager {
            let store_key = StoreKey::generate();
            files.write_store_key(&store_key)?;
            let raft_id = rand::random();
            file.raft_id = Some(raft_id);
            let m = self
                .start_manager(&file, raft_id, store_key, &creds)
                .await?;
            if let Err(e) = m.join_raft(&remote).await {
                m.shutdown().await;
                let _ = std::fs::remove_dir_all(&self.dir);
                return Err(e.into());
            }
            (Some(m), Some(Keys::new(files, key, None)))
        } else {
            (None, None)
        };
        self.save(&file)?;
        tracing::info!(node = %reply.node_id, ?role, "joined the swarm");
        *state = Membership::Active(self.spawn_session(file, creds, manager, keys));
        Ok(SwarmJoinReply {
            node_id: reply.node_id,
            // The certificate's role, which is the one the reply names.
            role: shoal_controlplane::wire::encode(role),
        })
    }

    pub async fn leave(&self, force: bool) -> Result<(), SwarmError> {
        let mut state = self.state.lock().await;
        match &*state {
            Membership::None => return Err(SwarmError::NotActive),
            // A locked manager cannot leave Raft: the others keep it as a
            // member until `node demote`/`node rm` on one of them.
            Membership::Locked(_) if !force => return Err(SwarmError::ManagerLeave),
            Membership::Locked(_) => {}
            Membership::Active(a) => {
                if let Some(m) = &a.manager {
                    if !force {
                        return Err(SwarmError::ManagerLeave);
                    }
                    // Best effort: a forced leave must work even without a quorum.
                    if let Err(e) = m.remove_manager(m.raft_id()).await {
                        tracing::warn!(error = %e, "leaving Raft");
                    }
                }
            }
        }
        if let Membership::Active(a) = std::mem::replace(&mut *state, Membership::None) {
            a.stop(false).await;
        }
        std::fs::remove_dir_all(&self.dir).map_err(io(&self.dir))?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// The manager running in this process, for the cluster API: refused
    /// with docker's words on a worker, and on a locked manager.
    pub async fn manager(&self) -> Result<Arc<Manager>, SwarmError> {
        match &*self.state.lock().await {
            Membership::Locked(_) => Err(SwarmError::Locked),
            Membership::Active(Active {
                manager: Some(m), ..
            }) => Ok(m.clone()),
            _ => Err(SwarmError::NotManager),
        }
    }

    pub async fn info(&self) -> SwarmInfo {
        match &*self.state.lock().await {
            Membership::None => SwarmInfo {
                state: SwarmState::Inactive.into(),
                ..Default::default()
            },
            Membership::Locked(file) => SwarmInfo {
                state: SwarmState::Locked.into(),
                node_id: file.node_id.clone(),
                cluster_id: file.cluster_id.clone(),
                role: WireRole::Manager.into(),
                managers: file.managers.clone(),
                error: String::new(),
            },
            Membership::Active(a) => SwarmInfo {
                state: if a.problem.get().is_some() {
                    SwarmState::Error
                } else {
                    SwarmState::Active
                }
                .into(),
                node_id: a.file.node_id.clone(),
                cluster_id: a.file.cluster_id.clone(),
                role: if a.manager.is_some() {
                    WireRole::Manager
                } else {
                    WireRole::Worker
                }
                .into(),
                managers: a
                    .manager
                    .as_ref()
                    .map(|m| m.manager_addrs())
                    .unwrap_or_else(|| a.file.managers.clone()),
                error: a.problem.get().unwrap_or_default(),
            },
        }
    }

    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        if let Membership::Active(a) = std::mem::replace(&mut *state, Membership::None) {
            a.stop(true).await;
        }
    }

    async fn start_manager(
        &self,
        file: &NodeFile,
        raft_id: u64,
        store_key: StoreKey,
        creds: &Credentials,
    ) -> Result<Arc<Manager>, SwarmError> {
        Ok(Manager::start(ManagerConfig {
            raft_dir: self.dir.join("raft"),
            store_key,
            credentials: creds.clone(),
            raft_id,
            advertise: file.advertise.clone(),
            listen: file.listen,
            snapshot_interval: file.snapshot_interval,
            extra_routes: Some(crate::logs::routes(
                self.env.tasks_dir.clone(),
                &self.env.images,
                self.env.log_readers.clone(),
            )),
            resolve_image: Some(crate::images::resolver(self.env.images.clone())),
        })
        .await?)
    }

    fn spawn_session(
        &self,
        file: NodeFile,
        creds: Credentials,
        manager: Option<Arc<Manager>>,
        keys: Option<SharedKeys>,
    ) -> Active {
        let worker = self.start_worker(&file, &creds, manager.is_some());
        self.session_around(file, creds, manager, keys, worker)
    }

    /// The session and its companions for a running executor.
    fn session_around(
        &self,
        file: NodeFile,
        creds: Credentials,
        manager: Option<Arc<Manager>>,
        keys: Option<SharedKeys>,
        worker: Option<Worker>,
    ) -> Active {
        let mut tasks = Vec::new();
        // A manager serves task logs on its cluster API; a worker needs a
        // listener of its own for them.
        if manager.is_none() {
            let dir = self.env.tasks_dir.clone();
            match crate::logs::spawn_worker_server(
                file.listen,
                &creds,
                dir,
                self.env.images.clone(),
                self.env.log_readers.clone(),
            ) {
                Ok(server) => tasks.push(server),
                Err(e) => tracing::error!(error = %chain(&e), "task logs will not be served"),
            }
        }
        let problem = SessionProblem::default();
        let session = crate::session::Session {
            file: file.clone(),
            dir: self.dir.clone(),
            creds: creds.clone(),
            manager: manager.clone(),
            problem: problem.clone(),
            roles: self.promotions.clone(),
            contact: worker.as_ref().map(Worker::contact),
            log_readers: self.env.log_readers.clone(),
            wireguard: self.env.wireguard.clone(),
        };
        tasks.push(tokio::spawn(session.run()));
        if let (Some(m), Some(k)) = (&manager, &keys) {
            tasks.push(tokio::spawn(autolock::follow(k.clone(), m.clone())));
        }
        Active {
            file,
            creds,
            manager,
            keys,
            tasks,
            worker,
            problem,
        }
    }

    /// The executor, talking to this node's own manager first on a manager.
    fn start_worker(
        &self,
        file: &NodeFile,
        creds: &Credentials,
        is_manager: bool,
    ) -> Option<Worker> {
        let tls = match live_client_config(creds, Arc::new(RemovedNodes::new())) {
            Ok(mut c) => {
                c.alpn_protocols = vec![b"h2".to_vec()];
                Arc::new(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "no TLS identity for the executor; no tasks will run");
                return None;
            }
        };
        let mut managers = Vec::new();
        if is_manager {
            managers.push(file.advertise.clone());
        }
        managers.extend(
            file.managers
                .iter()
                .filter(|m| **m != file.advertise)
                .cloned(),
        );
        let link = ManagerLink {
            node_id: file.node_id.clone(),
            managers,
            tls,
        };
        match Worker::start(link, self.env.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "the executor did not start; no tasks will run");
                None
            }
        }
    }

    fn node_object(&self, id: &str, role: ModelRole, advertise: &str) -> Node {
        Node {
            id: id.to_owned(),
            version: 0,
            hostname: self.hostname.clone(),
            role,
            availability: Availability::Active,
            labels: Labels::new(),
            addr: advertise.parse::<SocketAddr>().ok().map(|a| a.ip()),
            status: NodeState::Ready,
            manager: None,
            tls: Default::default(),
            resources: Default::default(),
            wireguard_key: None,
            platform: Default::default(),
        }
    }

    fn advertise(&self, given: &str, port: u16) -> Result<String, SwarmError> {
        let given = given.trim();
        if given.is_empty() {
            let ip = self.default_ip.ok_or_else(|| {
                invalid(
                    "--advertise-addr",
                    "the data interface has no IPv4 address; give one",
                )
            })?;
            return Ok(SocketAddr::new(ip, port).to_string());
        }
        if let Ok(a) = given.parse::<SocketAddr>() {
            return Ok(a.to_string());
        }
        given
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, port).to_string())
            .map_err(|_| {
                invalid(
                    "--advertise-addr",
                    &format!("{given:?} is not an IP or IP:PORT"),
                )
            })
    }

    /// The certificate and trust roots from disk, with the TLS key the
    /// caller holds (it may be sealed on disk).
    fn load_credentials(&self, key: &NodeKey) -> Result<Credentials, SwarmError> {
        let text = |name: &str| -> Result<String, SwarmError> {
            let p = self.dir.join(name);
            String::from_utf8(read(&p)?).map_err(|e| SwarmError::Io {
                path: p,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
        };
        let identity = NodeIdentity::from_pem(&text(CERT_FILE)?, &key.to_pem())?;
        let trust = CaCert::bundle_from_pem(&text(CA_FILE)?)?;
        Ok(Credentials::new(identity, trust)?)
    }

    fn save(&self, file: &NodeFile) -> Result<(), SwarmError> {
        let path = self.dir.join("node.json");
        let json = serde_json::to_vec_pretty(file).map_err(|source| SwarmError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write(&path, &json, 0o600)
    }
}

fn parse_listen(given: &str) -> Result<SocketAddr, SwarmError> {
    let given = given.trim();
    if given.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], CLUSTER_PORT)));
    }
    given
        .parse::<SocketAddr>()
        .or_else(|_| {
            given
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, CLUSTER_PORT))
        })
        .map_err(|_| {
            invalid(
                "--listen-addr",
                &format!("{given:?} is not an IP or IP:PORT"),
            )
        })
}

fn with_port(addr: &str) -> String {
    let addr = addr.trim();
    if addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_owned()
    } else {
        format!("{addr}:{CLUSTER_PORT}")
    }
}

fn invalid(field: &'static str, reason: &str) -> SwarmError {
    SwarmError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwarmError + '_ {
    move |source| SwarmError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, SwarmError> {
    std::fs::read(path).map_err(io(path))
}

/// Writes a whole file with `mode` from the start (no window where a key is
/// world-readable), replacing it atomically.
pub(crate) fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), SwarmError> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Caused {
        text: String,
        #[source]
        source: Option<Box<Caused>>,
    }

    fn caused(text: &str, source: Option<Caused>) -> Caused {
        Caused {
            text: text.into(),
            source: source.map(Box::new),
        }
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let dns = || caused("lookup failed", Some(caused("no resolver", None)));
        assert_eq!(
            chain(&caused("pulling busybox", Some(dns()))),
            "pulling busybox: lookup failed: no resolver"
        );
        // A registry error quoting its cause: the cause is not repeated,
        // its own cause still is.
        assert_eq!(
            chain(&caused(
                "cannot reach r: lookup failed; check the name",
                Some(dns())
            )),
            "cannot reach r: lookup failed; check the name: no resolver"
        );
    }

    #[test]
    fn addresses_get_the_cluster_port() {
        assert_eq!(with_port("198.18.0.1"), "198.18.0.1:2377");
        assert_eq!(with_port("198.18.0.1:4000"), "198.18.0.1:4000");
        assert_eq!(with_port("manager1"), "manager1:2377");
        assert_eq!(
            parse_listen("").ok(),
            Some(SocketAddr::from(([0, 0, 0, 0], 2377)))
        );
        assert_eq!(
            parse_listen("10.1.2.3").ok(),
            Some(SocketAddr::from(([10, 1, 2, 3], 2377)))
        );
        assert!(matches!(
            parse_listen("nope"),
            Err(SwarmError::Invalid {
                field: "--listen-addr",
                ..
            })
        ));
    }
}
