//! The executor: runs the tasks the managers assign to this node.
//!
//! A manager streams the node's whole assignment set on every change
//! (`Dispatcher.Assignments`); [`Executor::apply`] diffs it against what
//! runs here. Each task gets a supervisor that prepares its overlay
//! networks (shoal-overlay), starts it (shoal-runtime), publishes its
//! endpoints by gossip, waits for it to exit or to be stopped, and reports
//! every state it reaches (`Dispatcher.ReportTasks`, forward-only on the
//! manager). Tasks keep running while no manager is reachable, as in swarm.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_api::cluster::v1::{
    AssignmentSet, AssignmentsRequest, ContainerSpec, Encryption, EndpointMode, MountType,
    NetworkAssignment, ReportTasksRequest, TaskAssignment, TaskFile, TaskReport, TaskState,
};
use shoal_overlay::{Driver, Ipv4Net, OverlaySpec, Release, Underlay};
use shoal_runtime::{Attachment, Exit, Mount, Root, Runtime, RuntimeOptions, TaskSpec};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use crate::{
    datapath::mesh::{MeshState, TaskVeth, Uplink},
    endpoints::Endpoints,
    link::ManagerLink,
    local::{Local, lock, mac_for},
    ports::{Found, MeshSync, Overlay, Task, Tasks},
    task_files::{Contact, SecretLedger, runtime_files},
};

#[cfg(test)]
mod apply_tests;
pub(crate) mod isolation;

/// docker's default `--stop-grace-period`.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Grace given to tasks when the daemon itself stops or the node leaves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_secs(1);
/// Longest the first mesh sync waits for the overlay's first programming.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(3);

/// Where this node runs tasks: from shoald's flags.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// Task logs (`<id>.log`, CRI format).
    pub tasks_dir: PathBuf,
    /// The task runtime's state (`--runtime-state`).
    pub runtime_dir: PathBuf,
    /// shoald's `--state-dir`: hidden from every task (it holds the keys).
    pub state_dir: PathBuf,
    /// The data interface: underlay of every overlay.
    pub data_iface: String,
    /// Its address: the VTEP and gossip address.
    pub data_ip: Option<Ipv4Addr>,
    /// The routing mesh, attached to the data interface by main.
    pub mesh: Arc<Mutex<MeshState>>,
    /// What the worker last heard, for `node doctor`.
    pub view: Arc<Mutex<NodeView>>,
    /// The node's image store.
    pub images: Arc<crate::images::Images>,
    /// The node's named volumes.
    pub volumes: Arc<crate::volumes::Volumes>,
    /// The secrets this node was sent and holds (ids), for `shoal info`.
    pub secrets: Arc<SecretLedger>,
    /// Whom task logs are served to: the managers the last heartbeat named.
    pub log_readers: crate::logs::LogReaders,
    /// The node's WireGuard key pair and device, shared with the session
    /// (whose heartbeats publish the public key).
    pub wireguard: SharedWireguard,
    /// `--mesh-drain-suspected`: no new connection to a node gossip
    /// suspects lost.
    pub drain_suspected: bool,
}

/// The node's WireGuard state.
pub type SharedWireguard = Arc<Mutex<crate::wireguard::Wireguard>>;

/// The worker's latest picture of the cluster, as `node doctor` reads it.
#[derive(Default)]
pub struct NodeView {
    pub node_id: String,
    pub set: Arc<AssignmentSet>,
    pub gossip: Option<Arc<shoal_gossip::Gossip>>,
    /// Gossip endpoint records that disagreed with the control plane.
    pub gossip_disagreed: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// IPsec of encrypted networks: what is installed, what was refused.
    pub ipsec: Option<SharedIpsec>,
}

/// The node's IPsec reconciler, shared with `node stats` and `node doctor`.
pub type SharedIpsec = Arc<Mutex<crate::ipsec::Ipsec>>;

impl std::fmt::Debug for NodeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeView")
            .field("node_id", &self.node_id)
            .field("version", &self.set.version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the task runtime: {0}")]
    Runtime(#[from] shoal_runtime::RuntimeError),
    #[error("the overlay driver: {0}")]
    Overlay(#[from] shoal_overlay::OverlayError),
    #[error("network {0} of the task is not in its assignment")]
    UnknownNetwork(String),
    #[error("network {network}: {field} {value:?} is not valid")]
    BadNetwork {
        network: String,
        field: &'static str,
        value: String,
    },
    #[error("the data interface has no IPv4 address to use as the VXLAN endpoint")]
    NoDataAddress,
    /// Its text is the task's error in `service ps`: docker's words first.
    #[error(transparent)]
    Image(#[from] crate::images::ImagesError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error("the task names no image; its service must give one, or `host`")]
    NoImage,
    #[error("WireGuard: {0}")]
    Wireguard(#[from] shoal_wg::WgError),
}

/// A task this node runs.
struct Supervised {
    stop: Arc<Notify>,
}

/// What the executor needs besides its ports.
pub struct Setup {
    /// Task logs.
    pub tasks_dir: PathBuf,
    /// The underlay of every overlay.
    pub data_iface: String,
    /// The node's networks, shared with the endpoints loop.
    pub local: Arc<Local>,
    /// Remote endpoints by gossip; none without a data address.
    pub endpoints: Option<Endpoints>,
    /// The embedded DNS (swarm's 127.0.0.11), served in every task.
    pub dns: shoal_dns::Resolver,
    /// The resolv.conf tasks see: 127.0.0.11, the node's search options.
    pub resolv_conf: Option<PathBuf>,
    /// Where `node doctor` reads the latest assignment set.
    pub node_view: Arc<Mutex<NodeView>>,
    /// The node's images and named volumes.
    pub images: Arc<crate::images::Images>,
    pub volumes: Arc<crate::volumes::Volumes>,
    /// This node's TLS identity, to fetch image blobs from other nodes.
    pub tls: Option<Arc<shoal_ca::rustls::ClientConfig>>,
    /// The secrets this node was sent and holds.
    pub secrets: Arc<SecretLedger>,
    /// Whether the managers are in reach: tasks with files wait for them.
    pub contact: Contact,
    /// See [`NodeEnv::drain_suspected`].
    pub drain_suspected: bool,
    /// The managers, asked which set each node wrote into its mesh before
    /// a task leaves; none (tests) waits [`PEERS_APPLY`] instead.
    pub peers: Option<crate::applied::Peers>,
    /// ESP states and policies towards peers on encrypted networks.
    pub ipsec: Option<SharedIpsec>,
    /// The WireGuard device of `encrypted=wireguard` networks.
    pub wireguard: SharedWireguard,
}

/// Runs the assigned tasks through its ports: overlay networks (`O`), the
/// task runtime (`T`) and the routing mesh (`M`).
pub struct Executor<O = Driver, T: Tasks = Runtime, M = Arc<Mutex<MeshState>>> {
    setup: Setup,
    overlay: Arc<O>,
    tasks: T,
    mesh: M,
    reports: mpsc::UnboundedSender<TaskReport>,
    running: Mutex<HashMap<String, Supervised>>,
    /// Tasks whose end this process reported: never reported again.
    done: Mutex<HashSet<String>>,
    /// Tasks a previous run left running, until an assignment claims them.
    adopted: Mutex<HashMap<String, T::Task>>,
    /// Tasks a previous run left that ended meanwhile, with their exit.
    ended: Mutex<HashMap<String, Option<Exit>>>,
    /// The latest assignment set: the control plane's view of endpoints.
    view: watch::Sender<Arc<AssignmentSet>>,
    /// Tasks this node found unhealthy, out of its rings and DNS answers
    /// at once, until the control plane no longer lists them as backends.
    unhealthy: Mutex<HashSet<String>>,
    /// One mesh write at a time: a sync computed before a task turned
    /// unhealthy must not land after the one that took it out.
    mesh_turn: tokio::sync::Mutex<()>,
    /// The version of the last set written into the mesh.
    written: watch::Sender<u64>,
}

/// The longest an unhealthy task, already out of this node's rings, waits
/// for the other nodes to drop it before it is stopped.
const UNHEALTHY_LEAVE_MAX: Duration = Duration::from_secs(3);
/// Once the managers' set no longer lists a task: time for the other nodes
/// to apply the same set, when the managers cannot say who has.
const PEERS_APPLY: Duration = Duration::from_secs(1);
/// The longest a leaving task waits for a node that does not acknowledge
/// the set (its agent wedged, or too old to say).
const PEERS_APPLY_MAX: Duration = Duration::from_secs(5);
/// After the last node wrote its maps: a connection it routed just before
/// is still on its way to the task.
const IN_FLIGHT: Duration = Duration::from_millis(50);
/// The longest a task out of the mesh waits for its clients' connections
/// to end before it is stopped (long-lived ones are cut then, as by the
/// stop itself).
const DRAIN_MAX: Duration = Duration::from_secs(2);

fn report(
    task: &str,
    state: TaskState,
    message: impl Into<String>,
    err: impl Into<String>,
) -> TaskReport {
    TaskReport {
        task_id: task.to_owned(),
        state: state.into(),
        message: message.into(),
        err: err.into(),
        exit_code: None,
        health: None,
    }
}

/// The running executor and its loops; [`Worker::stop`] ends them and the
/// tasks.
pub struct Worker {
    executor: Arc<Executor>,
    loops: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts the executor, its link to the managers, and gossip.
    pub fn start(link: ManagerLink, env: NodeEnv) -> Result<Worker, WorkerError> {
        let mut options = RuntimeOptions::new(env.runtime_dir.clone());
        options.hide = vec![env.state_dir.clone()];
        let runtime = Runtime::with_options(options)?;
        let overlay = Driver::connect()?;
        let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let dns = shoal_dns::Resolver::new(shoal_dns::parse_resolv_conf(&node_resolv));
        let resolv_path = env.tasks_dir.join("resolv.conf");
        // The task logs' directory: root's alone (the runtime keeps it so).
        let resolv_conf = match shoal_runtime::logs::ensure_log_dir(&env.tasks_dir)
            .map_err(|e| std::io::Error::other(crate::swarm::chain(&e)))
            .and_then(|()| std::fs::write(&resolv_path, shoal_dns::task_resolv_conf(&node_resolv)))
        {
            Ok(()) => Some(resolv_path),
            Err(e) => {
                tracing::warn!(error = %e, "writing the tasks' resolv.conf; tasks keep the node's");
                None
            }
        };
        let endpoints = match env.data_ip {
            Some(ip) => match Endpoints::start(&link.node_id, ip) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::error!(error = %e, "gossip did not start; overlays get no remote endpoints");
                    None
                }
            },
            None => None,
        };
        let local = Arc::new(Local::new(link.node_id.clone(), env.data_ip));
        let peers = crate::applied::Peers::new(&link);
        let setup = Setup {
            tasks_dir: env.tasks_dir.clone(),
            data_iface: env.data_iface.clone(),
            local: local.clone(),
            endpoints,
            dns,
            resolv_conf,
            node_view: env.view.clone(),
            images: env.images.clone(),
            volumes: env.volumes.clone(),
            tls: Some(link.tls.clone()),
            secrets: env.secrets.clone(),
            contact: Contact::default(),
            peers: Some(peers.clone()),
            ipsec: start_ipsec(),
            wireguard: env.wireguard.clone(),
            drain_suspected: env.drain_suspected,
        };
        let (executor, reports_rx) = Executor::new(setup, overlay, runtime, env.mesh.clone());
        let executor = Arc::new(executor);
        *lock(&env.view) = NodeView {
            node_id: link.node_id.clone(),
            set: Arc::default(),
            gossip: executor.setup.endpoints.as_ref().map(Endpoints::gossip),
            gossip_disagreed: executor.setup.endpoints.as_ref().map(Endpoints::disagreed),
            ipsec: executor.setup.ipsec.clone(),
        };
        let view_rx = executor.view.subscribe();
        let mut loops = vec![
            tokio::spawn(crate::applied::ack_loop(
                peers,
                executor.written.subscribe(),
            )),
            tokio::spawn(assignments(executor.clone(), link.clone())),
            tokio::spawn(reporter(link.clone(), reports_rx)),
            tokio::spawn(mesh_sync(executor.clone(), view_rx.clone())),
            tokio::spawn(crate::images::register_loop(
                env.images.clone(),
                link.clone(),
            )),
        ];
        if let Some(e) = &executor.setup.endpoints {
            let mirror: Arc<dyn crate::ports::VtepMirror> = Arc::new(env.mesh.clone());
            loops.extend(e.spawn_sync(
                executor.overlay.clone(),
                Some(mirror),
                local,
                view_rx,
                &link.managers,
            ));
        }
        Ok(Worker { executor, loops })
    }

    /// What the session tells about its heartbeats, and the tasks with
    /// files wait on.
    pub fn contact(&self) -> Contact {
        self.executor.setup.contact.clone()
    }

    /// Stops the loops, then every task (briefly graced), and kills what
    /// a previous run left: the node leaves the swarm.
    pub async fn stop(self) {
        for l in &self.loops {
            l.abort();
        }
        self.executor.stop_all().await;
        if let Err(error) = Tasks::kill_all(&self.executor.tasks).await {
            tracing::warn!(%error, "killing the node's remaining tasks");
        }
    }

    /// Stops the loops and leaves the tasks running: the next shoald takes
    /// them back (live restore).
    pub fn detach(self) {
        for l in &self.loops {
            l.abort();
        }
    }
}

/// Keeps the ingress network present and the mesh maps equal to what the
/// latest assignment set asks for; also every few seconds, so a failed
/// write is retried.
async fn mesh_sync<O: Overlay, T: Tasks, M: MeshSync>(
    exec: Arc<Executor<O, T, M>>,
    mut view: watch::Receiver<Arc<AssignmentSet>>,
) {
    let mut swept = false;
    let mut synced = false;
    let started = tokio::time::Instant::now();
    let local = &exec.setup.local;
    loop {
        let set = view.borrow_and_update().clone();
        // Version 0 is the empty set before any manager answered: acting on
        // it would empty maps that a previous run left serving.
        if set.version > 0 {
            lock(&exec.setup.node_view).set = set.clone();
            if !swept {
                exec.sweep_leftovers(&set).await;
                swept = true;
            }
            exec.ensure_ingress(&set).await;
            exec.sync_names(&set);
            // The first pass after a start waits (briefly) for the overlay
            // to be programmed: maps a previous run left must not lose
            // remote backends only because this run has not learnt them yet.
            while !synced
                && started.elapsed() < FIRST_SYNC_WAIT
                && !local.overlay_programmed().await
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if exec.sync_mesh(&set).await {
                exec.written
                    .send_if_modified(|v| std::mem::replace(v, set.version) != set.version);
            }
            synced = true;
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            _ = local.mesh_poked() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Follows the assignment stream of whichever manager answers.
async fn assignments(exec: Arc<Executor>, link: ManagerLink) {
    exec.adopt_previous().await;
    loop {
        for (addr, mut client) in link.dispatchers() {
            let req = AssignmentsRequest {
                node_id: link.node_id.clone(),
            };
            let mut stream = match client.assignments(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    tracing::debug!(%addr, error = %s.message(), "assignments");
                    continue;
                }
            };
            tracing::info!(%addr, "receiving assignments");
            loop {
                match stream.message().await {
                    Ok(Some(set)) => {
                        exec.setup.contact.set_stream(true);
                        exec.apply(set);
                    }
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(%addr, error = %s.message(), "assignment stream");
                        break;
                    }
                }
            }
            exec.setup.contact.set_stream(false);
            tracing::info!(%addr, "assignment stream ended; reconnecting");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Sends task reports in order, in batches, until a manager takes them.
async fn reporter(link: ManagerLink, mut rx: mpsc::UnboundedReceiver<TaskReport>) {
    let mut batch = Vec::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(r) => batch.push(r),
                None => return,
            }
        }
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        let mut sent = false;
        for (addr, mut client) in link.dispatchers() {
            let req = ReportTasksRequest {
                node_id: link.node_id.clone(),
                reports: batch.clone(),
            };
            match client.report_tasks(req).await {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(s) => tracing::debug!(%addr, error = %s.message(), "reporting task states"),
            }
        }
        if sent {
            batch.clear();
        } else {
            tracing::warn!(
                pending = batch.len(),
                "no manager took the task reports; retrying"
            );
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// The IPsec reconciler on an xfrm socket in shoald's namespace; none if
/// the kernel has no xfrm netlink at all (reported: encrypted networks'
/// packets are then still marked, and the peers' ingress drops them).
fn start_ipsec() -> Option<SharedIpsec> {
    match shoal_xfrm::Xfrm::new() {
        Ok(x) => Some(Arc::new(Mutex::new(crate::ipsec::Ipsec::new(
            Box::new(x),
            shoal_overlay::DEFAULT_PORT,
        )))),
        Err(e) => {
            tracing::error!(error = %e, "IPsec: no xfrm netlink; encrypted networks cannot be served");
            None
        }
    }
}

impl<O: Overlay, T: Tasks, M: MeshSync> Executor<O, T, M> {
    /// An executor with no task yet, and the receiving end of its task
    /// reports.
    pub fn new(
        setup: Setup,
        overlay: O,
        tasks: T,
        mesh: M,
    ) -> (Self, mpsc::UnboundedReceiver<TaskReport>) {
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let (view, _) = watch::channel(Arc::new(AssignmentSet::default()));
        let exec = Executor {
            setup,
            overlay: Arc::new(overlay),
            tasks,
            mesh,
            reports,
            running: Mutex::new(HashMap::new()),
            done: Mutex::new(HashSet::new()),
            adopted: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            view,
            unhealthy: Mutex::new(HashSet::new()),
            mesh_turn: tokio::sync::Mutex::new(()),
            written: watch::channel(0).0,
        };
        (exec, reports_rx)
    }

    fn send(&self, r: TaskReport) {
        // The reporter lives as long as the worker; a send after it stopped
        // has nobody left to tell.
        let _ = self.reports.send(r);
    }

    fn local(&self) -> &Local {
        &self.setup.local
    }

    /// Brings what runs here in line with `set`.
    pub fn apply(self: &Arc<Self>, mut set: AssignmentSet) {
        self.setup.secrets.received(&set);
        // The rings go to gossip and nowhere else: the view kept for the
        // mesh, DNS and `node doctor` holds no key.
        // IPsec reads the ipsec ring here, before the keys leave the set.
        if let (Some(ipsec), Some(me)) = (&self.setup.ipsec, self.local().data_ip()) {
            lock(ipsec).sync(&set, me);
        }
        lock(&self.setup.wireguard).sync(&set, self.local().node_id());
        let keys = std::mem::take(&mut set.network_keys);
        if let Some(e) = &self.setup.endpoints {
            e.set_keys(&keys);
        }
        // The files' data goes to the tasks that start now and nowhere
        // else: the view kept for the mesh, DNS and `node doctor` has none,
        // so a secret leaves memory when its last task here has started.
        let mut files: HashMap<String, Vec<TaskFile>> = set
            .tasks
            .iter_mut()
            .map(|t| (t.id.clone(), std::mem::take(&mut t.files)))
            .collect();
        let mut with_files = |t: &TaskAssignment| {
            let mut t = t.clone();
            t.files = files.remove(&t.id).unwrap_or_default();
            t
        };
        let set = Arc::new(set);
        self.view.send_replace(set.clone());
        let wanted: HashSet<&str> = set.tasks.iter().map(|t| t.id.as_str()).collect();
        let mut running = lock(&self.running);
        for t in &set.tasks {
            let known = running.get(&t.id);
            let done = lock(&self.done).contains(&t.id);
            // A desired state this build does not know stops the task: the
            // one it surely does not mean is "keep running".
            let desired = TaskState::try_from(t.desired_state);
            if desired.is_err() {
                tracing::warn!(task = %t.id, value = t.desired_state, "unknown desired state");
            }
            match (desired == Ok(TaskState::Running), known) {
                (true, None) if !done => {
                    if let Some(task) = lock(&self.adopted).remove(&t.id) {
                        tracing::info!(task = %t.name, id = %t.id, "taking back a running task");
                        let stop = Arc::new(Notify::new());
                        running.insert(t.id.clone(), Supervised { stop: stop.clone() });
                        let nets = set.networks.clone();
                        let t = with_files(t);
                        tokio::spawn(self.clone().supervise_adopted(t, nets, stop, task));
                    } else if t.state == i32::from(TaskState::Assigned) {
                        let stop = Arc::new(Notify::new());
                        running.insert(t.id.clone(), Supervised { stop: stop.clone() });
                        let nets = set.networks.clone();
                        tokio::spawn(self.clone().supervise(with_files(t), nets, stop));
                    } else if let Some(Some(exit)) = lock(&self.ended).remove(&t.id) {
                        // It ended while no shoald watched it.
                        lock(&self.done).insert(t.id.clone());
                        self.send(finished(&t.id, exit, false));
                    } else {
                        // Accepted earlier by a previous run of this daemon,
                        // whose process is gone.
                        lock(&self.done).insert(t.id.clone());
                        self.send(report(
                            &t.id,
                            TaskState::Failed,
                            "task lost",
                            "the node's agent restarted and the task's process is gone",
                        ));
                    }
                }
                (true, _) => {}
                (false, Some(s)) => s.stop.notify_one(),
                (false, None) if !done => {
                    lock(&self.done).insert(t.id.clone());
                    self.send(report(&t.id, TaskState::Shutdown, "shutdown", ""));
                }
                _ => {}
            }
        }
        for (id, s) in running.iter() {
            if !wanted.contains(id.as_str()) {
                s.stop.notify_one();
            }
        }
        // What a previous run left and no assignment claims: stopped.
        let unclaimed: Vec<T::Task> = {
            let mut adopted = lock(&self.adopted);
            let ids: Vec<String> = adopted
                .keys()
                .filter(|id| !running.contains_key(*id))
                .cloned()
                .collect();
            ids.iter().filter_map(|id| adopted.remove(id)).collect()
        };
        for mut task in unclaimed {
            tokio::spawn(async move {
                match task.stop(STOP_GRACE).await {
                    Ok(exit) => {
                        tracing::info!(id = task.id(), %exit, "stopped a task no longer assigned")
                    }
                    Err(error) => {
                        tracing::warn!(id = task.id(), %error, "stopping a task no longer assigned")
                    }
                }
            });
        }
    }

    /// Takes back what a previous run of the agent left running (before
    /// the first assignment set is applied).
    async fn adopt_previous(&self) {
        match self.tasks.adopt().await {
            Ok(Found { running, ended }) => {
                if !running.is_empty() || !ended.is_empty() {
                    tracing::info!(
                        running = running.len(),
                        ended = ended.len(),
                        "tasks of a previous run"
                    );
                }
                lock(&self.adopted).extend(running.into_iter().map(|t| (t.id().to_owned(), t)));
                lock(&self.ended).extend(ended);
            }
            Err(error) => tracing::warn!(%error, "looking for the tasks of a previous run"),
        }
    }

    async fn stop_all(&self) {
        let stops: Vec<Arc<Notify>> = lock(&self.running)
            .values()
            .map(|s| s.stop.clone())
            .collect();
        for s in &stops {
            s.notify_one();
        }
        // Supervisors remove themselves once their task is down.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(2);
        while !lock(&self.running).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One task's life on this node.
    async fn supervise(
        self: Arc<Self>,
        mut t: TaskAssignment,
        nets: Vec<NetworkAssignment>,
        stop: Arc<Notify>,
    ) {
        let id = t.id.clone();
        self.send(report(&id, TaskState::Accepted, "accepted", ""));
        self.send(report(&id, TaskState::Preparing, "preparing", ""));
        // Held by the task from here (in memory, then on its tmpfs) until
        // it ends; the data is moved into its start and dropped there.
        let files = std::mem::take(&mut t.files);
        self.setup.secrets.hold(&id, &files);
        let end = self.run(&t, files, &nets, &stop).await;
        self.setup.secrets.release(&id);
        if let Some(end) = end {
            self.send(end);
        }
        self.release(&t).await;
        lock(&self.done).insert(id.clone());
        lock(&self.running).remove(&id);
    }

    /// Runs the task to its end; returns the final report, unless it was
    /// sent already (a task that turned unhealthy).
    async fn run(
        &self,
        t: &TaskAssignment,
        files: Vec<TaskFile>,
        nets: &[NetworkAssignment],
        stop: &Notify,
    ) -> Option<TaskReport> {
        // Swarm's rule: a node cut off from the managers keeps its running
        // tasks' secrets, but starts no new task with them until it is back
        // (the managers may have moved the task, or removed the secret).
        if !files.is_empty() && !self.setup.contact.is_up() {
            tracing::info!(
                task = %t.name,
                id = %t.id,
                "the task has secrets or configs and no manager is in reach: it waits for one"
            );
            tokio::select! {
                () = self.setup.contact.until_up() => {
                    tracing::info!(task = %t.name, id = %t.id, "managers in reach: starting the task");
                }
                () = stop.notified() => {
                    return Some(report(&t.id, TaskState::Shutdown, "shutdown", ""));
                }
            }
        }
        // The image first: a task whose image no one has is rejected
        // before its networks are made.
        let prepared = match self.prepare_root(t).await {
            Ok(p) => p,
            Err(e) => {
                return Some(report(
                    &t.id,
                    TaskState::Rejected,
                    "preparing failed",
                    e.to_string(),
                ));
            }
        };
        let attachments = match self.prepare(t, nets).await {
            Ok(a) => a,
            Err(e) => {
                return Some(report(
                    &t.id,
                    TaskState::Rejected,
                    "preparing failed",
                    e.to_string(),
                ));
            }
        };
        let spec = match task_spec(t, &files, attachments, &self.setup, &prepared) {
            Ok(spec) => spec,
            Err(e) => {
                return Some(report(
                    &t.id,
                    TaskState::Rejected,
                    "invalid task",
                    e.to_string(),
                ));
            }
        };
        self.send(report(&t.id, TaskState::Starting, "starting", ""));
        let networks: Vec<String> = t.addresses.iter().map(|a| a.network_id.clone()).collect();
        let mut dns = None;
        let serve_dns = |ns: std::os::fd::BorrowedFd<'_>| -> Result<(), shoal_runtime::BoxError> {
            dns = Some(self.setup.dns.serve_task_fd(ns, &t.id, networks)?);
            Ok(())
        };
        // Not cut short by a stop: an abandoned start would leave a container
        // running with nobody to follow it. A stop asked meanwhile is kept
        // by the Notify and ends the task right after.
        let started = self.tasks.start(&spec, serve_dns).await;
        // The task holds its own copy now (or failed): no other is kept.
        drop(spec);
        drop(files);
        let task = match started {
            Ok(task) => task,
            Err(e) => {
                return Some(report(
                    &t.id,
                    TaskState::Rejected,
                    "starting task failed",
                    e.to_string(),
                ));
            }
        };
        tracing::info!(task = %t.name, id = %t.id, pid = task.pid(), "task running");
        let check = health_check(t, prepared.healthcheck.as_ref());
        let end = self.follow(t, task, dns, stop, check).await;
        // The image and volumes stay held until the task is down.
        drop(prepared);
        end
    }

    /// What a task taken back from a previous shoald holds: its image (by
    /// the pinned digest, else the reference) and its named volumes.
    fn hold(&self, t: &TaskAssignment) -> Prepared {
        let mut held = Prepared {
            root: Root::Host,
            image: None,
            volumes: Vec::new(),
            healthcheck: None,
        };
        let Some(c) = &t.container else {
            return held;
        };
        if c.image != shoal_runtime::HOST_IMAGE {
            let store = self.setup.images.store();
            let digest = shoal_image::Digest::parse(&c.image_digest)
                .ok()
                .or_else(|| {
                    shoal_image::Reference::parse(&c.image)
                        .ok()
                        .and_then(|r| store.resolve(&r))
                });
            held.healthcheck = digest.as_ref().and_then(|d| self.image_healthcheck(d));
            held.image = digest.map(|d| self.setup.images.hold(&d));
        }
        match self.mount_volumes(t, c) {
            Ok(v) => held.volumes = v,
            Err(error) => {
                tracing::warn!(task = %t.name, %error, "the volumes of a task taken back")
            }
        }
        held
    }

    /// The image's `HEALTHCHECK`; one that cannot be read is logged and
    /// left out (the task runs, unchecked, as it would have before).
    fn image_healthcheck(&self, digest: &shoal_image::Digest) -> Option<shoal_image::Healthcheck> {
        match self.setup.images.store().healthcheck(digest) {
            Ok(h) => h,
            Err(error) => {
                tracing::warn!(image = %digest, %error, "reading the image's healthcheck");
                None
            }
        }
    }

    /// Marks each volume the task mounts in use, making a named one on its
    /// first use and an anonymous one of the task's own.
    fn mount_volumes(
        &self,
        t: &TaskAssignment,
        c: &ContainerSpec,
    ) -> Result<Vec<crate::volumes::Mounted>, crate::volumes::VolumeError> {
        c.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.r#type == MountType::Volume as i32)
            .map(|(i, m)| self.setup.volumes.mount(&volume_name(t, i, &m.source)))
            .collect()
    }

    /// The task's root filesystem and its volumes: the node's own for
    /// `host`, else the image from this node's store, fetched from a node
    /// that holds it or pulled from its registry first when missing.
    async fn prepare_root(&self, t: &TaskAssignment) -> Result<Prepared, WorkerError> {
        let default = ContainerSpec::default();
        let c = t.container.as_ref().unwrap_or(&default);
        let mut prepared = Prepared {
            root: Root::Host,
            image: None,
            volumes: Vec::new(),
            healthcheck: None,
        };
        if c.image.is_empty() {
            return Err(WorkerError::NoImage);
        }
        if c.image != shoal_runtime::HOST_IMAGE {
            let digest = match c.image_digest.as_str() {
                "" => None,
                d => Some(shoal_image::Digest::parse(d).map_err(crate::images::ImagesError::from)?),
            };
            let holders: Vec<crate::images::Holder> = t
                .image_holders
                .iter()
                .map(|h| crate::images::Holder {
                    node_id: h.node_id.clone(),
                    addr: h.addr.clone(),
                    // Empty from an older manager: fetched as before, pinned only.
                    digest: shoal_image::Digest::parse(&h.digest).ok(),
                })
                .collect();
            let images = &self.setup.images;
            let (digest, lower) = images
                .ensure(
                    &c.image,
                    digest.as_ref(),
                    &holders,
                    self.setup.tls.clone(),
                    None,
                )
                .await?;
            let config = images
                .store()
                .config(&digest)
                .map_err(crate::images::ImagesError::from)?;
            prepared.healthcheck = self.image_healthcheck(&digest);
            prepared.image = Some(images.hold(&digest));
            prepared.root = Root::Image {
                lower,
                config: image_defaults(&config),
            };
        }
        prepared.volumes = self.mount_volumes(t, c)?;
        Ok(prepared)
    }

    /// A task a previous run of the agent started: its networks counted
    /// and its DNS served again, then followed as any other.
    async fn supervise_adopted(
        self: Arc<Self>,
        mut t: TaskAssignment,
        nets: Vec<NetworkAssignment>,
        stop: Arc<Notify>,
        task: T::Task,
    ) {
        let id = t.id.clone();
        // Its files are on its tmpfs already: the ids are counted, the data
        // sent again is dropped.
        self.setup.secrets.hold(&id, &t.files);
        t.files = Vec::new();
        // Counts the task as a user of its networks (made present again if
        // a sweep removed them).
        if let Err(error) = self.prepare(&t, &nets).await {
            tracing::warn!(task = %t.name, %error, "the networks of a task taken back");
        }
        let networks: Vec<String> = t.addresses.iter().map(|a| a.network_id.clone()).collect();
        let dns = match task.netns() {
            Some(netns) => match self.setup.dns.serve_task(&netns, networks) {
                Ok(dns) => Some(dns),
                Err(error) => {
                    tracing::warn!(task = %t.name, %error, "serving DNS in a task taken back");
                    None
                }
            },
            None => None,
        };
        // Its image and volumes are in use again: `image rm` and `volume
        // rm` must refuse them while it runs.
        let held = self.hold(&t);
        // Its monitor starts again as docker's does on a restore: starting,
        // with a fresh start period.
        let check = health_check(&t, held.healthcheck.as_ref());
        let end = self.follow(&t, task, dns, &stop, check).await;
        drop(held);
        self.setup.secrets.release(&id);
        if let Some(end) = end {
            self.send(end);
        }
        self.release(&t).await;
        lock(&self.done).insert(id.clone());
        lock(&self.running).remove(&id);
    }

    /// A running task until it ends, is stopped or turns unhealthy;
    /// returns the final report, or None when it was sent already.
    ///
    /// With a healthcheck the task stays STARTING until its first healthy
    /// result, and only then is reported RUNNING (which makes the control
    /// plane list it as a backend). Unhealthy, it leaves this node's rings
    /// and DNS answers first, is reported FAILED at once (so the managers
    /// take it out of every node's), and only then is stopped.
    async fn follow(
        &self,
        t: &TaskAssignment,
        mut task: T::Task,
        dns: Option<shoal_dns::TaskDns>,
        stop: &Notify,
        check: Option<crate::health::Check>,
    ) -> Option<TaskReport> {
        let links = self.attach_mesh(t, task.interfaces());
        let (changes, mut health) = mpsc::unbounded_channel();
        // Reported RUNNING: a backend in other nodes' rings.
        let mut serving = check.is_none();
        let monitor = match check {
            None => {
                self.send(report(&t.id, TaskState::Running, "started", ""));
                None
            }
            Some(check) => {
                let starting = crate::health::Monitor::new(check.clone()).health();
                let mut r = report(&t.id, TaskState::Starting, "starting", "");
                r.health = Some(starting);
                self.send(r);
                let started = tokio::time::Instant::now();
                Some(tokio::spawn(crate::health::monitor(
                    check,
                    task.prober(),
                    started,
                    changes,
                )))
            }
        };
        let published = self.publish(t);
        let mut unhealthy = None;
        let ended = loop {
            tokio::select! {
                exit = task.wait() => break Some(exit),
                _ = stop.notified() => break None,
                Some(h) = health.recv() => match shoal_api::cluster::v1::HealthStatus::try_from(h.status) {
                    Ok(shoal_api::cluster::v1::HealthStatus::Healthy) => {
                        tracing::info!(task = %t.name, id = %t.id, "task healthy");
                        serving = true;
                        let mut r = report(&t.id, TaskState::Running, "started", "");
                        r.health = Some(h);
                        self.send(r);
                    }
                    Ok(shoal_api::cluster::v1::HealthStatus::Unhealthy) => {
                        unhealthy = Some(h);
                        break None;
                    }
                    _ => {}
                },
            }
        };
        if let Some(m) = &monitor {
            m.abort();
        }
        if let Some(h) = unhealthy.take() {
            tracing::warn!(task = %t.name, id = %t.id, "task unhealthy: out of the mesh, then stopped");
            self.leave_mesh_now(&t.id).await;
            let mut r = report(
                &t.id,
                TaskState::Failed,
                "started",
                crate::health::UNHEALTHY_ERR,
            );
            r.health = Some(h);
            self.send(r);
            // Other nodes still route new connections to it until the
            // managers' next set reaches them: it serves those meanwhile.
            self.until_peers_dropped(&t.id).await;
            self.drain(t, task.pid()).await;
            let exit = task.stop(stop_grace(t)).await;
            self.withdraw(published);
            self.detach_mesh(links);
            drop(dns);
            match exit {
                Ok(exit) => {
                    tracing::info!(task = %t.name, id = %t.id, %exit, "unhealthy task stopped")
                }
                Err(error) => {
                    tracing::warn!(task = %t.name, id = %t.id, %error, "stopping an unhealthy task")
                }
            }
            return None;
        }
        let requested = ended.is_none();
        let exit = match ended {
            Some(exit) => exit,
            None => {
                // The set that stops it took it out of every node's rings;
                // the other nodes apply it as this one does: until they
                // have, a new connection may still reach it, and must
                // find it serving.
                if serving {
                    let version = self.view.borrow().version;
                    self.until_peers_applied(version, PEERS_APPLY_MAX).await;
                    self.drain(t, task.pid()).await;
                }
                task.stop(stop_grace(t)).await
            }
        };
        self.withdraw(published);
        self.detach_mesh(links);
        // Its sockets would keep the task's namespace alive.
        drop(dns);
        let exit = match exit {
            Ok(exit) => exit,
            Err(e) => return Some(report(&t.id, TaskState::Failed, "task lost", e.to_string())),
        };
        tracing::info!(task = %t.name, id = %t.id, %exit, requested, "task ended");
        Some(finished(&t.id, exit, requested))
    }

    /// Waits until the managers' assignment set no longer lists task `id`
    /// as a backend and every node wrote that set into its mesh, or
    /// [`UNHEALTHY_LEAVE_MAX`] at most (managers out of reach must not keep
    /// an unhealthy task alive).
    async fn until_peers_dropped(&self, id: &str) {
        let mut view = self.view.subscribe();
        let dropped = async {
            let version = loop {
                let (listed, version) = {
                    let set = view.borrow_and_update();
                    let listed = set
                        .mesh
                        .iter()
                        .any(|s| s.backends.iter().any(|b| b.task_id == id));
                    (listed, set.version)
                };
                if !listed || view.changed().await.is_err() {
                    break version;
                }
            };
            self.until_peers_applied(version, UNHEALTHY_LEAVE_MAX).await;
        };
        if tokio::time::timeout(UNHEALTHY_LEAVE_MAX, dropped)
            .await
            .is_err()
        {
            tracing::warn!(
                id,
                "the managers still list an unhealthy task; stopping it anyway"
            );
        }
    }

    /// Waits until this node and every node that is up wrote a set of
    /// `version` or later into its mesh (at most `max`), then for the
    /// connections routed just before.
    async fn until_peers_applied(&self, version: u64, max: Duration) {
        let Some(peers) = &self.setup.peers else {
            tokio::time::sleep(PEERS_APPLY).await;
            return;
        };
        // A node gossip already counts dead routes nothing here and will
        // not answer: the managers list it as up until its heartbeats lapse.
        let alive = self.setup.endpoints.as_ref().map(|e| e.gossip().members());
        let nodes: Vec<String> = self
            .view
            .borrow()
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .filter(|id| match &alive {
                Some(members) if !members.is_empty() => members.contains_key(id),
                _ => true,
            })
            .collect();
        let mut own = self.written.subscribe();
        match peers.wait(version, &nodes, &mut own, max).await {
            Ok(took) => tracing::info!(
                version,
                ?took,
                "every node wrote the set without the leaving task"
            ),
            Err(behind) => tracing::warn!(
                version,
                ?behind,
                "nodes did not acknowledge the set that takes a task out of the mesh; stopping it anyway"
            ),
        }
        tokio::time::sleep(IN_FLIGHT).await;
    }

    /// Lets the connections routed to task `t` before it left the mesh end
    /// (at most [`DRAIN_MAX`]).
    async fn drain(&self, t: &TaskAssignment, pid: u32) {
        let started = tokio::time::Instant::now();
        match crate::drain::wait(pid, DRAIN_MAX).await {
            0 => tracing::debug!(task = %t.name, took = ?started.elapsed(), "connections drained"),
            open => {
                tracing::info!(task = %t.name, open, "connections still open after the drain; stopping")
            }
        }
    }

    /// Takes task `id` out of this node's rings and DNS answers now,
    /// without waiting for the control plane's next assignment set.
    async fn leave_mesh_now(&self, id: &str) {
        lock(&self.unhealthy).insert(id.to_owned());
        let set = self.view.borrow().clone();
        if set.version > 0 {
            self.sync_names(&set);
            self.sync_mesh(&set).await;
        }
        // A sync of the loop computed meanwhile runs after this one.
        self.local().poke_mesh();
    }

    /// Makes the task's networks present and returns its interfaces.
    async fn prepare(
        &self,
        t: &TaskAssignment,
        nets: &[NetworkAssignment],
    ) -> Result<Vec<Attachment>, WorkerError> {
        let mut out = Vec::new();
        let mut local = self.local().networks().await;
        for a in &t.addresses {
            let net = nets
                .iter()
                .find(|n| n.id == a.network_id)
                .ok_or_else(|| WorkerError::UnknownNetwork(a.network_id.clone()))?;
            if net.encryption() == Encryption::Wireguard {
                self.ensure_wireguard().await?;
            }
            let (spec, gateway) = self.overlay_spec(net)?;
            let bad = |field, value: &str| WorkerError::BadNetwork {
                network: net.name.clone(),
                field,
                value: value.to_owned(),
            };
            let addr = a.addr.ok_or_else(|| bad("task address", "missing"))?;
            let (ip, prefix) = (
                addr.ip(),
                addr.prefix(String::new)
                    .map_err(|_| bad("task address", &addr.to_string()))?,
            );
            let devices = self.overlay.ensure_network(&spec).await?;
            let users = &mut local.entry(net.id.clone()).or_insert((net.vni, 0)).1;
            *users += 1;
            if *users == 1
                && let Some(e) = &self.setup.endpoints
            {
                // New here: program what gossip knows of it before the task
                // runs, so its first ARP for a peer or a VIP is answered.
                let set = self.view.borrow().clone();
                let gossip = e.gossip();
                let (known, alive) = (gossip.endpoints(), gossip.members());
                crate::endpoints::program_network(
                    &*self.overlay,
                    self.local(),
                    (&known, &alive),
                    &set,
                    &net.id,
                    net.vni,
                )
                .await;
            }
            out.push(Attachment {
                bridge: devices.bridge.name,
                addr: ip,
                prefix,
                gateway: Some(gateway),
                mac: Some(mac_for(ip)),
                mtu: None,
            });
        }
        drop(local);
        if let Some(e) = &self.setup.endpoints {
            e.poke();
        }
        self.local().poke_mesh();
        Ok(out)
    }

    /// The WireGuard device, made and brought up on first use, with the
    /// peers of the latest set.
    async fn ensure_wireguard(&self) -> Result<(), WorkerError> {
        if !lock(&self.setup.wireguard).ensure_device()? {
            return Ok(());
        }
        let vtep = self.local().data_ip().ok_or(WorkerError::NoDataAddress)?;
        if let Err(e) = shoal_wg::bring_up(shoal_wg::DEVICE, vtep, 32).await {
            lock(&self.setup.wireguard).drop_device();
            return Err(e.into());
        }
        let set = self.view.borrow().clone();
        lock(&self.setup.wireguard).sync(&set, self.local().node_id());
        Ok(())
    }

    /// The overlay spec of a network on this node, and its gateway.
    fn overlay_spec(
        &self,
        net: &NetworkAssignment,
    ) -> Result<(OverlaySpec, Ipv4Addr), WorkerError> {
        let bad = |field, value: &str| WorkerError::BadNetwork {
            network: net.name.clone(),
            field,
            value: value.to_owned(),
        };
        let subnet: Ipv4Net = match &net.subnet {
            Some(p) => p
                .net(String::new)
                .map_err(|_| bad("subnet", &p.to_string()))?,
            None => return Err(bad("subnet", "missing")),
        };
        // 0.0.0.0 is never a gateway: not given, the subnet's first host.
        let gateway: Ipv4Addr = if net.gateway == 0 {
            Ipv4Addr::from(u32::from(subnet.network()) + 1)
        } else {
            Ipv4Addr::from(net.gateway)
        };
        let vtep = self.local().data_ip().ok_or(WorkerError::NoDataAddress)?;
        let mut spec = OverlaySpec::new(
            net.vni,
            subnet,
            gateway,
            vtep,
            Underlay::Name(self.setup.data_iface.clone()),
        );
        spec.mtu = (net.mtu != 0).then_some(net.mtu);
        match net.encryption() {
            Encryption::Ipsec => spec.encryption_overhead = shoal_xfrm::ESP_OVERHEAD,
            // Bound to the tunnel: its MTU already leaves WireGuard's bytes.
            Encryption::Wireguard => spec.underlay = Underlay::Name(shoal_wg::DEVICE.into()),
            Encryption::None => {}
        }
        Ok((spec, gateway))
    }

    /// Removes overlay devices a previous run of the daemon left that the
    /// first assignment set does not name (their tasks died with it).
    /// Networks it names stay as they are, with their entries: above all
    /// the ingress network, which carries connections DNATed here across a
    /// restart.
    async fn sweep_leftovers(&self, set: &AssignmentSet) {
        let wanted: HashSet<u32> = set.networks.iter().map(|n| n.vni).collect();
        let vnis = match self.overlay.networks().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "listing leftover overlay networks");
                return;
            }
        };
        let local = self.local().networks().await;
        let in_use: HashSet<u32> = local.values().map(|(vni, _)| *vni).collect();
        for vni in vnis {
            if wanted.contains(&vni) || in_use.contains(&vni) {
                continue;
            }
            match self.overlay.release_network(vni).await {
                Ok(Release::Removed) => tracing::info!(vni, "removed a leftover overlay network"),
                Ok(Release::InUse { ports }) => {
                    tracing::warn!(
                        vni,
                        ?ports,
                        "leftover overlay network still has ports; kept"
                    )
                }
                Err(e) => tracing::warn!(vni, error = %e, "removing a leftover overlay network"),
            }
        }
    }

    /// Every node carries the ingress network, task or not: a published
    /// port DNATed here is routed into it. Held for as long as the worker
    /// runs (one use that no task releases).
    async fn ensure_ingress(&self, set: &AssignmentSet) {
        let Some(net) = set.networks.iter().find(|n| n.ingress) else {
            return;
        };
        let mut local = self.local().networks().await;
        if local.contains_key(&net.id) {
            return;
        }
        let made = match self.overlay_spec(net) {
            Ok((spec, _)) => self
                .overlay
                .ensure_network(&spec)
                .await
                .map_err(WorkerError::from),
            Err(e) => Err(e),
        };
        match made {
            Ok(_) => {
                local.insert(net.id.clone(), (net.vni, 1));
                tracing::info!(vni = net.vni, "ingress network present");
                drop(local);
                if let Some(e) = &self.setup.endpoints {
                    e.poke();
                }
            }
            Err(e) => tracing::warn!(error = %e, "making the ingress network; retrying"),
        }
    }

    /// The VTEPs (node addresses) of the nodes gossip suspects now or has
    /// declared down (both, so the step from one to the other, which
    /// clears the suspicion, never puts the node back for a moment).
    fn lost_vteps(&self, set: &AssignmentSet) -> std::collections::HashSet<Ipv4Addr> {
        let Some(e) = self
            .setup
            .endpoints
            .as_ref()
            .filter(|_| self.setup.drain_suspected)
        else {
            return Default::default();
        };
        let gossip = e.gossip();
        let mut suspected = gossip.suspected();
        suspected.extend(gossip.declared_down());
        if suspected.is_empty() {
            return Default::default();
        }
        set.nodes
            .iter()
            .filter(|n| suspected.contains(&n.id))
            .map(|n| Ipv4Addr::from(n.addr))
            .collect()
    }

    /// Writes the mesh maps for `set`; whether they hold it now (a node
    /// without a data address has no mesh to write).
    async fn sync_mesh(&self, set: &AssignmentSet) -> bool {
        let Some(addr) = self.local().data_ip() else {
            return true;
        };
        let _turn = self.mesh_turn.lock().await;
        let networks = self.local().local_networks().await;
        let local: std::collections::BTreeSet<String> = networks.keys().cloned().collect();
        let mut want = shoal_mesh::desired(set, self.local().node_id(), addr, &local);
        let unhealthy = self.unhealthy_in(set);
        want.drain_tasks(|id| unhealthy.contains(id));
        // A node gossip suspects lost gets no new connection until it
        // refutes, nor once declared down until it is back: seconds before
        // the managers notice its missing heartbeats.
        let lost = self.lost_vteps(set);
        if !lost.is_empty() {
            want.drain_backends(|b| !b.local && lost.contains(&b.vtep));
        }
        for reason in &want.skipped {
            tracing::warn!("routing mesh: {reason}");
        }
        // What the overlay can reach now: remote endpoints programmed here
        // (as the endpoints loop last wrote them; no second netlink dump).
        let programmed = self.local().reachable();
        want.only_reachable(|key, b| match &key.scope {
            shoal_mesh::Scope::Network(net) => programmed
                .get(net)
                .is_some_and(|ips| ips.contains(&(b.addr, b.vtep))),
            shoal_mesh::Scope::Host => b.local,
        });
        // Before the frontends: a VIP is isolated by its network's entry.
        if let Err(e) = self
            .mesh
            .set_networks(&isolation::network_entries(set, addr))
        {
            tracing::warn!(error = %e, "writing the isolation networks; retrying");
            return false;
        }
        if let Err(e) = self
            .mesh
            .set_encrypted_vnis(&isolation::encrypted_vnis(set, shoal_overlay::DEFAULT_PORT))
        {
            tracing::warn!(error = %e, "writing the encrypted networks; retrying");
            return false;
        }
        match self.mesh.sync(&want) {
            Ok(c) if c.any() => tracing::info!(
                frontends = want.frontends.len(),
                backends = c.backends,
                rings = c.rings,
                changed = c.frontends,
                removed = c.removed,
                "routing mesh updated"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "updating the routing mesh; retrying");
                return false;
            }
        }
        true
    }

    /// The tasks this node found unhealthy that `set` still lists as
    /// backends; those it no longer lists are forgotten.
    fn unhealthy_in(&self, set: &AssignmentSet) -> HashSet<String> {
        let mut unhealthy = lock(&self.unhealthy);
        unhealthy.retain(|id| {
            set.mesh
                .iter()
                .any(|s| s.backends.iter().any(|b| &b.task_id == id))
        });
        unhealthy.clone()
    }

    /// The embedded DNS's names per network: each service attached to it
    /// (its VIP there, or its tasks in dnsrr mode), and `tasks.<service>`.
    /// Every network of the set, local or not yet: a task that is about to
    /// start on one must find its names from its first query. Only RUNNING
    /// tasks (the set's backends) are answered, less those found unhealthy
    /// here.
    fn sync_names(&self, set: &AssignmentSet) {
        let names = dns_names(set, &self.unhealthy_in(set));
        for n in &set.networks {
            match names.get(&n.id) {
                Some(names) => self.setup.dns.set_names(&n.id, names.clone()),
                None => self.setup.dns.remove_network(&n.id),
            }
        }
    }

    /// Hangs the task programs on the task's veths, each with its
    /// isolation entry. A failure leaves the task running without VIPs or
    /// return paths, which is logged.
    fn attach_mesh(
        &self,
        t: &TaskAssignment,
        ifaces: &[shoal_runtime::TaskInterface],
    ) -> Vec<M::Links> {
        let set = self.view.borrow().clone();
        let task = t.name.as_str();
        ifaces
            .iter()
            .filter_map(|i| {
                let attached = isolation::task_endpoint(&set, t, i.addr).and_then(|ep| {
                    let veth = TaskVeth {
                        name: i.host_veth.clone(),
                        mac: mac_for(i.addr),
                        // Every overlay network has its VXLAN device here.
                        vxlan: (ep.net != 0).then(|| Uplink {
                            device: shoal_overlay::vxlan_name(ep.net),
                            vni: ep.net,
                            port: shoal_overlay::DEFAULT_PORT,
                        }),
                    };
                    self.mesh.attach_task(&veth, &ep)
                });
                match attached {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::error!(task, veth = %i.host_veth, error = %e, "attaching the mesh to a task");
                        None
                    }
                }
            })
            .collect()
    }

    fn detach_mesh(&self, links: Vec<M::Links>) {
        for l in links {
            self.mesh.detach_task(l);
        }
    }

    /// Drops the task's use of its networks; removes the devices of those
    /// no other task here uses.
    async fn release(&self, t: &TaskAssignment) {
        // The ingress network stays for as long as the worker runs, whichever
        // of a task or ensure_ingress made it first.
        let ingress: Option<String> = self
            .view
            .borrow()
            .networks
            .iter()
            .find(|n| n.ingress)
            .map(|n| n.id.clone());
        let mut local = self.local().networks().await;
        for a in &t.addresses {
            if Some(&a.network_id) == ingress.as_ref() {
                continue;
            }
            let Some((vni, users)) = local.get_mut(&a.network_id) else {
                continue;
            };
            *users = users.saturating_sub(1);
            if *users > 0 {
                continue;
            }
            let vni = *vni;
            match self.overlay.release_network(vni).await {
                Ok(Release::Removed) => {
                    local.remove(&a.network_id);
                    tracing::info!(vni, "overlay network removed: no task left on it");
                    self.local().poke_mesh();
                }
                Ok(Release::InUse { ports }) => {
                    tracing::warn!(vni, ?ports, "overlay network still has ports; kept");
                }
                Err(e) => tracing::warn!(vni, error = %e, "removing an overlay network"),
            }
        }
    }

    fn publish(&self, t: &TaskAssignment) -> Vec<shoal_gossip::EndpointKey> {
        let (Some(e), Some(vtep)) = (&self.setup.endpoints, self.local().data_ip()) else {
            return Vec::new();
        };
        t.addresses
            .iter()
            .filter_map(|a| {
                let ip: Ipv4Addr = a.addr?.ip();
                e.publish(shoal_gossip::Endpoint {
                    network: a.network_id.clone(),
                    ip,
                    mac: mac_for(ip),
                    vtep,
                    node_id: self.local().node_id().to_owned(),
                })
            })
            .collect()
    }

    fn withdraw(&self, keys: Vec<shoal_gossip::EndpointKey>) {
        if let Some(e) = &self.setup.endpoints {
            for k in keys {
                e.withdraw(k);
            }
        }
    }
}

/// Network id → name → addresses, from the mesh part of an assignment set,
/// leaving out the tasks in `leaving`.
fn dns_names(
    set: &AssignmentSet,
    leaving: &HashSet<String>,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<Ipv4Addr>>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut out: BTreeMap<String, BTreeMap<String, Vec<Ipv4Addr>>> = BTreeMap::new();
    for s in &set.mesh {
        let mut nets: BTreeSet<&str> = s.backends.iter().map(|b| b.network_id.as_str()).collect();
        nets.extend(s.vips.iter().map(|v| v.network_id.as_str()));
        for net in nets {
            let tasks: Vec<Ipv4Addr> = s
                .backends
                .iter()
                .filter(|b| b.network_id == net && !leaving.contains(&b.task_id))
                .map(|b| Ipv4Addr::from(b.ip))
                .collect();
            let vip = (EndpointMode::try_from(s.endpoint_mode) == Ok(EndpointMode::Vip))
                .then(|| {
                    s.vips
                        .iter()
                        .find(|v| v.network_id == net)
                        .and_then(|v| Some(v.addr?.ip()))
                })
                .flatten();
            let names = out.entry(net.to_owned()).or_default();
            for (name, addrs) in shoal_dns::service_names(&s.name, vip, &tasks) {
                names.insert(name, addrs);
            }
            // `--network name=N,alias=A`: answered as the service's name
            // (VIP, or the tasks with dnsrr, and `tasks.A`), on N only.
            for alias in s.network_aliases.get(net).map_or(&[][..], |a| &a.aliases) {
                for (name, addrs) in shoal_dns::service_names(alias, vip, &tasks) {
                    names.entry(name).or_insert(addrs);
                }
            }
        }
    }
    out
}

/// The report for a task that ended: swarm's states and docker's wording.
/// The runtime's spec of an assigned task. The control plane has no image
/// yet: every task runs on the node's filesystem ([`Root::Host`]), its
/// `args` the whole command, under a small init (as the earlier runtime
/// always had one) so that `stop`'s SIGTERM reaches commands like `sleep`.
pub fn task_spec(
    t: &TaskAssignment,
    files: &[TaskFile],
    attachments: Vec<Attachment>,
    setup: &Setup,
    prepared: &Prepared,
) -> Result<TaskSpec, shoal_runtime::RuntimeError> {
    let env = t
        .env
        .iter()
        .map(|e| shoal_runtime::parse_env(e))
        .collect::<Result<Vec<_>, _>>()?;
    let default = ContainerSpec::default();
    let c = t.container.as_ref().unwrap_or(&default);
    let r = t.resources.unwrap_or_default();
    let some = |v: u64| (v != 0).then_some(v);
    let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let mut mounts = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let target = m.target.clone();
        let mount = match MountType::try_from(m.r#type) {
            Ok(MountType::Bind) => Mount::Bind {
                source: PathBuf::from(&m.source),
                target,
                readonly: m.read_only,
            },
            Ok(MountType::Tmpfs) => Mount::Tmpfs {
                target,
                size: some(m.tmpfs_size_bytes),
            },
            Ok(MountType::Volume) => Mount::Volume {
                source: prepared
                    .volumes
                    .iter()
                    .find(|v| v.name() == volume_name(t, i, &m.source))
                    .map(|v| v.path.clone())
                    .unwrap_or_default(),
                target,
                readonly: m.read_only,
            },
            Ok(MountType::Unspecified) | Err(_) => {
                return Err(shoal_runtime::RuntimeError::InvalidSpec {
                    id: t.id.clone(),
                    field: "mounts",
                    value: format!("{:?}", m.r#type),
                    reason: "unknown mount type; give volume, bind or tmpfs".into(),
                });
            }
        };
        mounts.push(mount);
    }
    Ok(TaskSpec {
        id: t.id.clone(),
        name: t.name.clone(),
        root: prepared.root.clone(),
        entrypoint: c.entrypoint.as_ref().map(|e| e.args.clone()),
        args: t.args.clone(),
        env,
        workdir: text(&c.workdir),
        user: text(&c.user),
        hostname: text(&c.hostname),
        stop_signal: text(&c.stop_signal),
        read_only: c.read_only,
        // The init is the shim binary, linked against the node's libc: it
        // runs on the node's filesystem, and in an image only when asked.
        init: c.init || matches!(prepared.root, Root::Host),
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        sysctls: c
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        resources: shoal_runtime::Resources {
            cpu_nanos_limit: some(r.limit_nano_cpus),
            memory_limit: some(r.limit_memory_bytes),
            pids_limit: some(r.limit_pids).map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
            cpu_nanos_reservation: some(r.reserve_nano_cpus),
            memory_reservation: some(r.reserve_memory_bytes),
        },
        mounts,
        files: runtime_files(files),
        attachments,
        network_host: c.network_host,
        // The embedded resolver's 127.0.0.11 is in the task's own
        // namespace: one on the node's uses the node's resolv.conf.
        resolv_conf: setup.resolv_conf.clone().filter(|_| !c.network_host),
        log_dir: setup.tasks_dir.clone(),
        rlimits: c.ulimits.iter().map(rlimit).collect(),
        extra_hosts: c.hosts.clone(),
    })
}

/// A `--ulimit` as the runtime takes it: docker's name to the kernel's,
/// -1 (docker's unlimited) to RLIM_INFINITY. An unknown name is passed on
/// as it came, for the runtime's check to refuse with the task's id.
fn rlimit(u: &shoal_api::cluster::v1::Ulimit) -> shoal_runtime::Rlimit {
    let value = |v: i64| u64::try_from(v).unwrap_or(shoal_runtime::RLIM_INFINITY);
    shoal_runtime::Rlimit {
        kind: shoal_api::container::rlimit(&u.name).map_or_else(|| u.name.clone(), str::to_owned),
        soft: value(u.soft),
        hard: value(u.hard),
    }
}

/// A volume mount's volume: its name, or for an anonymous one (no source)
/// a name of the task's own, as docker gives each container its own.
fn volume_name(t: &TaskAssignment, index: usize, source: &str) -> String {
    if source.is_empty() {
        format!("{}-{index}", t.id)
    } else {
        source.to_owned()
    }
}

/// The task's effective healthcheck: its service's merged with its image's.
fn health_check(
    t: &TaskAssignment,
    image: Option<&shoal_image::Healthcheck>,
) -> Option<crate::health::Check> {
    let own = t.container.as_ref().and_then(|c| c.healthcheck.as_ref());
    crate::health::effective(own, image)
}

/// How long a stop waits before killing: the service's
/// `--stop-grace-period`, docker's 10 s by default.
fn stop_grace(t: &TaskAssignment) -> Duration {
    t.container
        .as_ref()
        .and_then(|c| c.stop_grace_period_ns)
        .map_or(STOP_GRACE, Duration::from_nanos)
}

/// What a task holds while it runs: its root, its image (so `image rm`
/// is refused) and its named volumes (so `volume rm` is).
#[derive(Debug)]
pub struct Prepared {
    pub root: Root,
    pub image: Option<crate::images::InUse>,
    pub volumes: Vec<crate::volumes::Mounted>,
    /// The image's `HEALTHCHECK`, merged with the service's.
    pub healthcheck: Option<shoal_image::Healthcheck>,
}

/// The runtime's view of an image's config (Entrypoint, Cmd, Env, …).
fn image_defaults(config: &oci_spec::image::ImageConfiguration) -> shoal_runtime::ImageDefaults {
    let Some(c) = config.config() else {
        return shoal_runtime::ImageDefaults::default();
    };
    let env = c
        .env()
        .iter()
        .flatten()
        .filter_map(|e| shoal_runtime::parse_env(e).ok())
        .collect();
    shoal_runtime::ImageDefaults {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env,
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
        volumes: c.volumes().clone().unwrap_or_default(),
    }
}

fn finished(id: &str, exit: Exit, requested: bool) -> TaskReport {
    let mut r = if requested {
        report(id, TaskState::Shutdown, "shutdown", "")
    } else if exit.success() {
        report(id, TaskState::Complete, "finished", "")
    } else if exit.oom_killed {
        report(
            id,
            TaskState::Failed,
            "started",
            format!("task: {exit}: its memory limit was reached"),
        )
    } else if let Some(code) = exit.code {
        report(
            id,
            TaskState::Failed,
            "started",
            format!("task: non-zero exit ({code})"),
        )
    } else {
        report(id, TaskState::Failed, "started", format!("task: {exit}"))
    };
    r.exit_code = Some(exit.shell_code());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_docker() {
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 0, 1, 7)),
            [0x02, 0x42, 10, 0, 1, 7]
        );
    }

    #[test]
    fn ends_are_reported_as_swarm_does() {
        let ok = Exit {
            code: Some(0),
            signal: None,
            oom_killed: false,
        };
        let bad = Exit {
            code: Some(3),
            signal: None,
            oom_killed: false,
        };
        let killed = Exit {
            code: None,
            signal: Some(9),
            oom_killed: false,
        };
        let state = |r: &TaskReport| shoal_api::words::word::<TaskState>(r.state).into_owned();
        assert_eq!(state(&finished("t", ok, false)), "complete");
        let f = finished("t", bad, false);
        assert_eq!(
            (state(&f).as_str(), f.err.as_str()),
            ("failed", "task: non-zero exit (3)")
        );
        assert_eq!(f.exit_code, Some(3));
        let k = finished("t", killed, false);
        assert_eq!(state(&k), "failed");
        assert_eq!(k.exit_code, Some(137));
        assert_eq!(state(&finished("t", bad, true)), "shutdown");
    }
}
