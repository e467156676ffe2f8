//! In-memory ports for tests without root (Cilium's fake datapath): they
//! answer as the real drivers do and record every change, in order, in one
//! log shared by all of them, so a test sees what happened before what.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    os::fd::BorrowedFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_api::cluster::v1::NodeAddress;
use shoal_mesh::{Changes, Desired, LbError};
use shoal_overlay::{
    Device, FdbEntry, MacAddr, NeighbourEntry, NetworkDevices, OverlayError, OverlaySpec, Release,
    RemoteEndpoint, Remotes, VxlanPath, bridge_name, vxlan_name,
};
use shoal_runtime::{BoxError, Exit, RuntimeError, TaskInterface, TaskSpec};
use tokio::sync::watch;

use shoal_common::policy::{Endpoint, NetEntry};

use crate::{
    datapath::{DatapathError, mesh::TaskVeth, policy::NetPrefix},
    local::lock,
    ports::{Entry, Found, MeshSync, Overlay, Task, Tasks},
};

/// This node's data address, and another node's.
pub const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The overlay network of the tests.
pub const VNI: u32 = 4097;

/// The nodes of an assignment set: this one ("me") and "n2".
pub fn nodes() -> Vec<NodeAddress> {
    [("me", ME), ("n2", PEER)]
        .into_iter()
        .map(|(id, addr)| NodeAddress {
            id: id.into(),
            addr: u32::from(addr),
            ..Default::default()
        })
        .collect()
}

/// A change made through a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureNetwork(u32),
    ReleaseNetwork(u32),
    AddRemote(u32, Ipv4Addr, Ipv4Addr),
    RemoveRemote(u32, Ipv4Addr, Ipv4Addr),
    AddFdb(u32, MacAddr, Ipv4Addr),
    RemoveFdb(u32, MacAddr, Ipv4Addr),
    AddNeighbour(u32, Ipv4Addr, MacAddr),
    RemoveNeighbour(u32, Ipv4Addr, MacAddr),
    /// A task started (its id).
    Start(String),
    /// A task asked to stop (its id).
    Stop(String),
    /// The mesh hung on a task's veth.
    Attach(String),
    Detach(String),
    /// The maps written to hold this.
    MeshSync(Desired),
}

/// The calls made so far, shared by the fakes of one test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    fn push(&self, c: Call) {
        lock(&self.0).push(c);
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.0).clone()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

#[derive(Default)]
struct Vxlan {
    fdb: BTreeSet<FdbEntry>,
    neighbours: BTreeSet<NeighbourEntry>,
}

/// Overlay networks as maps of their FDB and neighbour entries.
pub struct FakeOverlay {
    log: Log,
    nets: Mutex<BTreeMap<u32, Vxlan>>,
    /// Networks whose release finds a port still in use.
    pub busy: Mutex<HashSet<u32>>,
}

impl FakeOverlay {
    pub fn new(log: Log) -> FakeOverlay {
        FakeOverlay {
            log,
            nets: Mutex::default(),
            busy: Mutex::default(),
        }
    }

    /// A network a previous run left, without recording a call.
    pub fn leftover(&self, vni: u32) {
        lock(&self.nets).entry(vni).or_default();
    }

    fn on<R>(&self, vni: u32, f: impl FnOnce(&mut Vxlan) -> R) -> Result<R, OverlayError> {
        let mut nets = lock(&self.nets);
        let v = nets.get_mut(&vni).ok_or(OverlayError::NetworkMissing {
            vni,
            device: vxlan_name(vni),
        })?;
        Ok(f(v))
    }
}

impl Overlay for FakeOverlay {
    async fn ensure_network(&self, spec: &OverlaySpec) -> Result<NetworkDevices, OverlayError> {
        spec.validate()?;
        self.log.push(Call::EnsureNetwork(spec.vni));
        lock(&self.nets).entry(spec.vni).or_default();
        Ok(NetworkDevices {
            bridge: Device {
                name: bridge_name(spec.vni),
                index: spec.vni,
            },
            vxlan: Device {
                name: vxlan_name(spec.vni),
                index: spec.vni + 1,
            },
            mtu: 1450,
        })
    }

    async fn release_network(&self, vni: u32) -> Result<Release, OverlayError> {
        self.log.push(Call::ReleaseNetwork(vni));
        if lock(&self.busy).contains(&vni) {
            return Ok(Release::InUse {
                ports: vec![format!("veth-{vni}")],
            });
        }
        lock(&self.nets).remove(&vni);
        Ok(Release::Removed)
    }

    async fn networks(&self) -> Result<Vec<u32>, OverlayError> {
        Ok(lock(&self.nets).keys().copied().collect())
    }

    /// The VXLAN device `ensure_network` numbers, bound to ifindex 2
    /// with source `ME`.
    async fn vxlan_path(&self, vni: u32) -> Result<Option<VxlanPath>, OverlayError> {
        self.on(vni, |_| {
            Some(VxlanPath {
                vni,
                ifindex: vni + 1,
                underlay: 2,
                local: ME,
                port: shoal_overlay::DEFAULT_PORT,
            })
        })
    }

    async fn remotes(&self, vni: u32) -> Result<Remotes, OverlayError> {
        self.on(vni, |v| {
            Remotes::pair(
                v.fdb.iter().copied().collect(),
                v.neighbours.iter().copied().collect(),
            )
        })
    }

    async fn add_remote(&self, vni: u32, r: RemoteEndpoint) -> Result<(), OverlayError> {
        r.validate()?;
        self.on(vni, |v| {
            v.fdb.insert(FdbEntry {
                mac: r.mac,
                vtep: r.vtep,
            });
            v.neighbours.insert(NeighbourEntry {
                ip: r.ip,
                mac: r.mac,
            });
        })?;
        self.log.push(Call::AddRemote(vni, r.ip, r.vtep));
        Ok(())
    }

    async fn remove_remote(&self, vni: u32, r: RemoteEndpoint) -> Result<(), OverlayError> {
        self.on(vni, |v| {
            v.neighbours.remove(&NeighbourEntry {
                ip: r.ip,
                mac: r.mac,
            });
            v.fdb.remove(&FdbEntry {
                mac: r.mac,
                vtep: r.vtep,
            });
        })?;
        self.log.push(Call::RemoveRemote(vni, r.ip, r.vtep));
        Ok(())
    }

    async fn add_entry(&self, vni: u32, entry: Entry) -> Result<(), OverlayError> {
        self.on(vni, |v| match entry {
            Entry::Fdb(f) => v.fdb.insert(f),
            Entry::Neighbour(n) => v.neighbours.insert(n),
        })?;
        self.log.push(match entry {
            Entry::Fdb(f) => Call::AddFdb(vni, f.mac, f.vtep),
            Entry::Neighbour(n) => Call::AddNeighbour(vni, n.ip, n.mac),
        });
        Ok(())
    }

    async fn remove_entry(&self, vni: u32, entry: Entry) -> Result<(), OverlayError> {
        self.on(vni, |v| match entry {
            Entry::Fdb(f) => v.fdb.remove(&f),
            Entry::Neighbour(n) => v.neighbours.remove(&n),
        })?;
        self.log.push(match entry {
            Entry::Fdb(f) => Call::RemoveFdb(vni, f.mac, f.vtep),
            Entry::Neighbour(n) => Call::RemoveNeighbour(vni, n.ip, n.mac),
        });
        Ok(())
    }
}

/// Tasks that run until the test ends them ([`FakeTasks::exit`]) or the
/// executor stops them.
pub struct FakeTasks {
    log: Log,
    exits: Mutex<HashMap<String, watch::Sender<Option<Exit>>>>,
    /// Tasks "a previous run of the agent" left running, for `adopt`.
    previous: Mutex<Vec<String>>,
    /// What each task's healthcheck exits with now (0 unless set).
    probes: Probes,
}

/// Exit codes of the tasks' healthchecks, by task id.
pub type Probes = Arc<Mutex<HashMap<String, i32>>>;

/// A task's healthcheck: exits with what [`FakeTasks::probe_exits`] set.
pub struct FakeProber {
    id: String,
    probes: Probes,
}

impl crate::health::Prober for FakeProber {
    async fn probe(
        &self,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<shoal_runtime::ExecOutput, RuntimeError> {
        let code = lock(&self.probes).get(&self.id).copied().unwrap_or(0);
        Ok(shoal_runtime::ExecOutput {
            end: shoal_runtime::ExecEnd::Exited(code),
            output: format!("exit {code}").into_bytes(),
            truncated: false,
        })
    }
}

impl FakeTasks {
    pub fn new(log: Log) -> FakeTasks {
        FakeTasks {
            log,
            exits: Mutex::default(),
            previous: Mutex::default(),
            probes: Probes::default(),
        }
    }

    /// Task `id`'s healthcheck exits with `code` from now on.
    pub fn probe_exits(&self, id: &str, code: i32) {
        lock(&self.probes).insert(id.to_owned(), code);
    }

    /// Task `id` is running from a previous run of the agent.
    pub fn left_running(&self, id: &str) {
        lock(&self.previous).push(id.to_owned());
    }

    /// The task's command ends with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        if let Some(tx) = lock(&self.exits).get(id) {
            tx.send_replace(Some(Exit {
                code: Some(code),
                signal: None,
                oom_killed: false,
            }));
        }
    }
}

pub struct FakeTask {
    id: String,
    probes: Probes,
    log: Log,
    interfaces: Vec<TaskInterface>,
    exit: watch::Receiver<Option<Exit>>,
}

impl Tasks for FakeTasks {
    type Task = FakeTask;

    async fn start<F>(&self, spec: &TaskSpec, _before_exec: F) -> Result<FakeTask, RuntimeError>
    where
        F: FnOnce(BorrowedFd<'_>) -> Result<(), BoxError> + Send,
    {
        spec.validate()?;
        self.log.push(Call::Start(spec.id.clone()));
        let interfaces = spec
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| TaskInterface {
                bridge: a.bridge.clone(),
                host_veth: format!("veth-{}-{i}", spec.id),
                ifname: format!("eth{i}"),
                mac: a.mac.unwrap_or_default(),
                addr: a.addr,
                prefix: a.prefix,
            })
            .collect();
        let (tx, exit) = watch::channel(None);
        lock(&self.exits).insert(spec.id.clone(), tx);
        Ok(FakeTask {
            id: spec.id.clone(),
            probes: self.probes.clone(),
            log: self.log.clone(),
            interfaces,
            exit,
        })
    }

    async fn adopt(&self) -> Result<Found<FakeTask>, RuntimeError> {
        let ids = std::mem::take(&mut *lock(&self.previous));
        let running = ids
            .into_iter()
            .map(|id| {
                let (tx, exit) = watch::channel(None);
                lock(&self.exits).insert(id.clone(), tx);
                FakeTask {
                    id,
                    probes: self.probes.clone(),
                    log: self.log.clone(),
                    interfaces: Vec::new(),
                    exit,
                }
            })
            .collect();
        Ok(Found {
            running,
            ended: Vec::new(),
        })
    }

    async fn kill_all(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
}

impl Task for FakeTask {
    type Prober = FakeProber;

    fn id(&self) -> &str {
        &self.id
    }

    fn prober(&self) -> FakeProber {
        FakeProber {
            id: self.id.clone(),
            probes: self.probes.clone(),
        }
    }

    fn netns(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn pid(&self) -> u32 {
        1
    }

    fn interfaces(&self) -> &[TaskInterface] {
        &self.interfaces
    }

    async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        let exit = self.exit.wait_for(Option::is_some).await.map(|e| *e);
        match exit {
            Ok(exit) => Ok(exit.expect("waited for an exit")),
            // The test dropped the runtime: the task is gone with it.
            Err(_) => std::future::pending().await,
        }
    }

    async fn stop(&mut self, _grace: Duration) -> Result<Exit, RuntimeError> {
        self.log.push(Call::Stop(self.id.clone()));
        Ok(Exit {
            code: None,
            signal: Some(15),
            oom_killed: false,
        })
    }
}

/// Mesh maps that only record what they are asked to hold.
pub struct FakeMesh {
    log: Log,
    /// Isolation entries, apart from the call log (their writes are not
    /// ordered with the other calls').
    pub endpoints: Mutex<HashMap<String, Endpoint>>,
    /// What each attached veth was given (MAC, VXLAN device).
    pub veths: Mutex<HashMap<String, TaskVeth>>,
    pub networks: Mutex<BTreeMap<NetPrefix, NetEntry>>,
    pub encrypted: Mutex<BTreeMap<u32, u32>>,
}

impl FakeMesh {
    pub fn new(log: Log) -> FakeMesh {
        FakeMesh {
            log,
            endpoints: Mutex::default(),
            veths: Mutex::default(),
            networks: Mutex::default(),
            encrypted: Mutex::default(),
        }
    }
}

impl MeshSync for FakeMesh {
    type Links = String;

    fn sync(&self, want: &Desired) -> Result<Changes, LbError<DatapathError>> {
        self.log.push(Call::MeshSync(want.clone()));
        Ok(Changes::default())
    }

    fn attach_task(&self, veth: &TaskVeth, ep: &Endpoint) -> Result<String, DatapathError> {
        self.log.push(Call::Attach(veth.name.clone()));
        lock(&self.endpoints).insert(veth.name.clone(), *ep);
        lock(&self.veths).insert(veth.name.clone(), veth.clone());
        Ok(veth.name.clone())
    }

    fn set_networks(&self, want: &BTreeMap<NetPrefix, NetEntry>) -> Result<(), DatapathError> {
        *lock(&self.networks) = want.clone();
        Ok(())
    }

    fn set_encrypted_vnis(&self, want: &BTreeMap<u32, u32>) -> Result<(), DatapathError> {
        *lock(&self.encrypted) = want.clone();
        Ok(())
    }

    fn detach_task(&self, links: String) {
        self.log.push(Call::Detach(links));
    }
}
