//! The routing mesh's eBPF object (ebpf/src/mesh.rs): loading, attaching to
//! the data interface, and typed access to its maps (common/src/mesh.rs).
//!
//! Policy is not here: the caller decides ids, builds Maglev tables
//! (shoal-mesh) and keeps the write order the program relies on — backends
//! before the rings naming them, rings before the frontends using them, and
//! the reverse order on removal.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{
        TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{
            NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError,
            TcHandle,
        },
    },
    util::KernelVersion,
};
use shoal_common::mesh::{
    BACKENDS_MAP, Backend, CONNTRACK_MAP, Conn, FlowKey, MAGLEV_MAP, MAGLEV_SIZE, MAX_SERVICES,
    MESH_CONFIG_MAP, MESH_REASONS_MAP, MeshConfig, MeshReason, PROG_MESH_EGRESS, PROG_MESH_INGRESS,
    PROG_TASK_EGRESS, PROG_TASK_INGRESS, PROG_VXLAN_INGRESS, PeerKey, RETURN_MAP, REVNAT_MAP,
    ReturnPath, RevNat, SERVICE_STATS_MAP, SERVICES_MAP, Service, ServiceKey, ServiceStats, Vtep,
    VxlanDev,
};

use super::{
    AttachMode, Datapath, DatapathError,
    fastpath::{FastPathMaps, Port},
    policy::PolicyMaps,
};
use shoal_common::policy::Endpoint;

/// The mesh's clsact filters: (program, hook, priority). After the kernel's
/// first automatic priority (49152), which the packet counters take, so the
/// counters still see packets as they arrived.
const CLSACT_SLOTS: [(&str, TcAttachType, u16); 2] = [
    (PROG_MESH_INGRESS, TcAttachType::Ingress, 49153),
    (PROG_MESH_EGRESS, TcAttachType::Egress, 49153),
];
/// The task programs' clsact filters on a task's veth.
const TASK_CLSACT_SLOTS: [(&str, TcAttachType, u16); 2] = [
    (PROG_TASK_INGRESS, TcAttachType::Ingress, 49153),
    (PROG_TASK_EGRESS, TcAttachType::Egress, 49153),
];
/// The fast path's clsact filter on an overlay's VXLAN device.
const VXLAN_CLSACT_SLOTS: [(&str, TcAttachType, u16); 1] =
    [(PROG_VXLAN_INGRESS, TcAttachType::Ingress, 49153)];
/// The filters' handle within their priority.
const CLSACT_HANDLE: TcHandle = TcHandle::new(0, 0x53);

pub(super) static MESH_OBJECT: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shoal-mesh.o"));

pub struct Mesh {
    ebpf: Ebpf,
    /// Where the maps and the data interface's links are pinned.
    pin_dir: PathBuf,
    /// The data interface's links, owned here so they outlive `ebpf`'s
    /// bookkeeping; pinned, so they also outlive this process.
    links: Vec<FdLink>,
    services: HashMap<MapData, ServiceKey, Service>,
    backends: Array<MapData, Backend>,
    maglev: Array<MapData, u32>,
    // Flow tables are the programs' to write; userspace only reads them in
    // the fixture tests (and will for `node doctor`-style inspection).
    #[cfg_attr(not(test), allow(dead_code))]
    conntrack: HashMap<MapData, FlowKey, Conn>,
    #[cfg_attr(not(test), allow(dead_code))]
    revnat: HashMap<MapData, FlowKey, RevNat>,
    #[cfg_attr(not(test), allow(dead_code))]
    returns: HashMap<MapData, FlowKey, ReturnPath>,
    stats: PerCpuArray<MapData, ServiceStats>,
    reasons: PerCpuArray<MapData, u64>,
    config: Array<MapData, MeshConfig>,
    policy: PolicyMaps,
    fast: FastPathMaps,
    /// VXLAN devices carrying `shoal_vxlan_in`, by ifindex, with their name
    /// (to notice a device gone) and, with TCX, the link. Not pinned: when
    /// shoald ends, the links go and frames take the bridge again.
    vxlans: std::collections::BTreeMap<u32, AttachedVxlan>,
    fast_path: FastPath,
}

/// How much of the overlay's path the fast path takes (`--fast-path`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FastPath {
    /// Decapsulation on the data interface, encapsulation on the task
    /// veths, and both redirects.
    #[default]
    Full,
    /// The redirects only: the VXLAN devices send and receive VXLAN.
    Redirect,
    /// The bridge for every frame.
    Off,
}

struct AttachedVxlan {
    name: String,
    vni: u32,
    link: Option<SchedClassifierLinkId>,
}

/// A task's host-side veth, as the mesh attaches to it.
#[derive(Debug, Clone)]
pub struct TaskVeth {
    pub name: String,
    /// The task's MAC on the veth's network.
    pub mac: [u8; 6],
    /// The network's VXLAN device, for the fast path; `None` (or a device
    /// not found) leaves the task on the bridge path.
    pub vxlan: Option<Uplink>,
}

/// An overlay network's VXLAN device on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub device: String,
    pub vni: u32,
    /// The UDP port its VXLAN uses.
    pub port: u16,
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn update(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::MapUpdate { name, source }
}

fn read(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// `key`'s entry in the flow table `name`, if any.
fn lookup<V: aya::Pod>(
    map: &HashMap<MapData, FlowKey, V>,
    key: &FlowKey,
    name: &'static str,
) -> Result<Option<V>, DatapathError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(read(name)(e)),
    }
}

impl Mesh {
    /// Loads the object and its programs, attached nowhere yet. Its maps are
    /// pinned in `pin_dir` (on bpffs): maps a previous run pinned there are
    /// reused with what they hold, so tracked flows carry on.
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        super::ensure_bpffs(pin_dir)?;
        std::fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(MESH_OBJECT)
            .map_err(DatapathError::Load)?;
        Datapath::load_classifiers(&mut ebpf, &Self::programs())?;
        Ok(Self {
            services: take(&mut ebpf, SERVICES_MAP)?,
            backends: take(&mut ebpf, BACKENDS_MAP)?,
            maglev: take(&mut ebpf, MAGLEV_MAP)?,
            conntrack: take(&mut ebpf, CONNTRACK_MAP)?,
            revnat: take(&mut ebpf, REVNAT_MAP)?,
            returns: take(&mut ebpf, RETURN_MAP)?,
            stats: take(&mut ebpf, SERVICE_STATS_MAP)?,
            reasons: take(&mut ebpf, MESH_REASONS_MAP)?,
            config: take(&mut ebpf, MESH_CONFIG_MAP)?,
            policy: PolicyMaps::take(&mut ebpf)?,
            fast: FastPathMaps::take(&mut ebpf)?,
            vxlans: Default::default(),
            fast_path: FastPath::default(),
            ebpf,
            pin_dir: pin_dir.to_owned(),
            links: Vec::new(),
        })
    }

    pub fn programs() -> [&'static str; 5] {
        [
            PROG_MESH_INGRESS,
            PROG_MESH_EGRESS,
            PROG_TASK_INGRESS,
            PROG_TASK_EGRESS,
            PROG_VXLAN_INGRESS,
        ]
    }

    /// Attaches DNAT to `iface`'s ingress and reverse NAT to its egress,
    /// after any classifier already there (the packet counters, so they see
    /// packets as they arrived).
    ///
    /// With TCX the links are pinned beside the maps: a link a previous run
    /// pinned is updated to this run's program in one step (Cilium's
    /// "replace, never detach"), so packets are handled by one program or the
    /// other throughout a restart and no connection sees a gap.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, DatapathError> {
        if !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            return self.attach_clsact(iface);
        }
        for (name, hook, what) in [
            (PROG_MESH_INGRESS, TcAttachType::Ingress, "ingress"),
            (PROG_MESH_EGRESS, TcAttachType::Egress, "egress"),
        ] {
            let pin = self.pin_dir.join(format!("link-{iface}-{what}"));
            let link = self.attach_pinned(name, iface, hook, &pin)?;
            self.links.push(link);
        }
        Ok(AttachMode::Tcx)
    }

    /// Without TCX (Debian 12's 6.1): clsact filters at fixed slots
    /// ([`CLSACT_SLOTS`]). A filter a previous run left is given this run's
    /// program in place (a replace, never a detach), and this run leaves
    /// its filters behind when it ends, as pinned TCX links are left: until
    /// the next shoald replaces them they keep translating with the pinned
    /// maps, so connections through this node survive a restart.
    fn attach_clsact(&mut self, iface: &str) -> Result<AttachMode, DatapathError> {
        self.attach_slots(iface, &CLSACT_SLOTS)?;
        Ok(AttachMode::Netlink)
    }

    /// Puts each program of `slots` into its clsact filter on `iface`,
    /// replacing the program of a filter already there, and leaves the
    /// filters to outlive this process.
    fn attach_slots(
        &mut self,
        iface: &str,
        slots: &[(&'static str, TcAttachType, u16)],
    ) -> Result<(), DatapathError> {
        super::add_clsact(iface)?;
        for &(name, hook, priority) in slots {
            let prog = Datapath::classifier(&mut self.ebpf, name)?;
            let err = |action| {
                move |source| DatapathError::Program {
                    name,
                    action,
                    source,
                }
            };
            let left = SchedClassifierLink::attached(iface, hook, priority, CLSACT_HANDLE, None)
                .map_err(|e| err("find the previous filter")(TcError::IoError(e).into()))?;
            let id = match prog.attach_to_link(left) {
                Ok(id) => id,
                // No filter in that slot yet: the first start on this boot.
                Err(_) => prog
                    .attach_with_options(
                        iface,
                        hook,
                        TcAttachOptions::Netlink(NlOptions {
                            priority,
                            handle: CLSACT_HANDLE,
                            classid: None,
                        }),
                    )
                    .map_err(err("attach"))?,
            };
            // Dropping the link would delete the filter when shoald exits.
            std::mem::forget(prog.take_link(id).map_err(err("keep the filter"))?);
        }
        Ok(())
    }

    fn attach_pinned(
        &mut self,
        name: &'static str,
        iface: &str,
        hook: TcAttachType,
        pin: &Path,
    ) -> Result<FdLink, DatapathError> {
        let pin_err = |source: std::io::Error| DatapathError::PinLink {
            path: pin.to_owned(),
            source,
        };
        let program_err = |action, source| DatapathError::Program {
            name,
            action,
            source,
        };
        let prog = Datapath::classifier(&mut self.ebpf, name)?;
        let reused = match PinnedLink::from_pin(pin) {
            Ok(old) => {
                let link = SchedClassifierLink::try_from(FdLink::from(old))
                    .map_err(|e| pin_err(std::io::Error::other(e)))?;
                match prog.attach_to_link(link) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        // Its interface is gone (a new namespace, a new
                        // device): start over with a fresh link.
                        tracing::warn!(program = name, error = %e, "pinned link unusable; attaching anew");
                        std::fs::remove_file(pin).map_err(pin_err)?;
                        None
                    }
                }
            }
            Err(LinkError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(pin_err(std::io::Error::other(e))),
        };
        let fresh = reused.is_none();
        let id = match reused {
            Some(id) => id,
            None => prog
                .attach(iface, hook)
                .map_err(|e| program_err("attach", e))?,
        };
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| program_err("take link", e))?
            .try_into()
            .map_err(|e: LinkError| pin_err(std::io::Error::other(e)))?;
        if fresh {
            let pinned = link
                .pin(pin)
                .map_err(|e| pin_err(std::io::Error::other(e)))?;
            // Dropping a pinned link's handle leaves it attached.
            return Ok(FdLink::from(pinned));
        }
        Ok(link)
    }

    /// Attaches the task programs to a task's host-side veth (its ingress
    /// is what the task sends). The links go with the veth; [`detach_task`]
    /// (Self::detach_task) forgets them.
    ///
    /// The veth's isolation entry (`ep`) is written first: the programs
    /// drop what a veth without one sends.
    pub fn attach_task(
        &mut self,
        task: &TaskVeth,
        ep: &Endpoint,
    ) -> Result<TaskLinks, DatapathError> {
        let veth = task.name.as_str();
        let ifindex =
            nix::net::if_::if_nametoindex(veth).map_err(|source| DatapathError::Veth {
                veth: veth.to_owned(),
                source,
            })?;
        self.policy.set_endpoint(ifindex, ep)?;
        let mut links = self.attach_task_programs(veth, ifindex)?;
        // After the veth's own programs: the fast path skips them.
        if let Some(vxlan) = task
            .vxlan
            .as_ref()
            .filter(|_| self.fast_path != FastPath::Off)
        {
            match self.attach_fast_path(ifindex, vxlan, task.mac) {
                Ok(port) => links.fast = port,
                // The bridge path still carries the task.
                Err(e) => {
                    tracing::warn!(veth, vxlan = %vxlan.device, error = %e, "the overlay's fast path; the task keeps the bridge path")
                }
            }
        }
        if links.fast.is_none() {
            // An entry a gone veth of this index left (a crashed shoald's)
            // would send this one's frames to another network's device.
            self.fast.forget_uplink(ifindex)?;
        }
        Ok(links)
    }

    /// Puts `shoal_vxlan_in` on the VXLAN device `vxlan` (once per device)
    /// and the veth into the fast path's maps. `None` when the device is
    /// not there (a network without VXLAN here).
    fn attach_fast_path(
        &mut self,
        veth: u32,
        uplink: &Uplink,
        mac: [u8; 6],
    ) -> Result<Option<Port>, DatapathError> {
        let vxlan = uplink.device.as_str();
        let Ok(dev) = nix::net::if_::if_nametoindex(vxlan) else {
            return Ok(None);
        };
        self.forget_gone_vxlans();
        if !self.vxlans.contains_key(&dev) {
            let link = if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
                let id = Datapath::classifier(&mut self.ebpf, PROG_VXLAN_INGRESS)?
                    .attach(vxlan, TcAttachType::Ingress)
                    .map_err(|source| DatapathError::Program {
                        name: PROG_VXLAN_INGRESS,
                        action: "attach",
                        source,
                    })?;
                Some(id)
            } else {
                self.attach_slots(vxlan, &VXLAN_CLSACT_SLOTS)?;
                None
            };
            if self.fast_path == FastPath::Full {
                self.fast.set_vxlan(
                    uplink.vni,
                    VxlanDev {
                        ifindex: dev,
                        port: uplink.port,
                        _pad: 0,
                    },
                )?;
            } else {
                // A previous run's entry would go on decapsulating.
                self.fast.forget_vxlan(uplink.vni, dev)?;
            }
            self.vxlans.insert(
                dev,
                AttachedVxlan {
                    name: vxlan.to_owned(),
                    vni: uplink.vni,
                    link,
                },
            );
        }
        let port = Port {
            veth,
            vxlan: dev,
            mac,
        };
        self.fast.add(port)?;
        Ok(Some(port))
    }

    /// Drops what is kept of VXLAN devices gone (their network removed):
    /// the kernel took their programs with them, and a new device may get
    /// an index again.
    fn forget_gone_vxlans(&mut self) {
        let gone: Vec<u32> = self
            .vxlans
            .iter()
            .filter(|(dev, v)| {
                nix::net::if_::if_indextoname(**dev).map_or(true, |n| n.to_str() != Ok(&v.name))
            })
            .map(|(dev, _)| *dev)
            .collect();
        for dev in gone {
            let Some(v) = self.vxlans.remove(&dev) else {
                continue;
            };
            if let Err(e) = self.fast.forget_vxlan(v.vni, dev) {
                tracing::warn!(vni = v.vni, error = %e, "forgetting a gone VXLAN device");
            }
            if let Some(id) = v.link
                && let Ok(prog) = Datapath::classifier(&mut self.ebpf, PROG_VXLAN_INGRESS)
            {
                let _ = prog.detach(id);
            }
        }
    }

    fn attach_task_programs(
        &mut self,
        veth: &str,
        ifindex: u32,
    ) -> Result<TaskLinks, DatapathError> {
        // Without TCX: the veth's own clsact qdisc (on Debian 12's 6.1 every
        // task attach failed without it, so replies to flows another node
        // routed here left untranslated), and filters at fixed slots that a
        // restarting shoald leaves and the next one takes over, as on the
        // data interface: the task's flows keep their translation across
        // the restart. They go with the veth when the task ends.
        if !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            self.attach_slots(veth, &TASK_CLSACT_SLOTS)?;
            return Ok(TaskLinks {
                ifindex,
                links: Vec::new(),
                fast: None,
            });
        }
        let mut links = Vec::new();
        for (name, hook) in [
            (PROG_TASK_INGRESS, TcAttachType::Ingress),
            (PROG_TASK_EGRESS, TcAttachType::Egress),
        ] {
            let id = Datapath::classifier(&mut self.ebpf, name)?
                .attach(veth, hook)
                .map_err(|source| DatapathError::Program {
                    name,
                    action: "attach",
                    source,
                })?;
            links.push((name, id));
        }
        Ok(TaskLinks {
            ifindex,
            links,
            fast: None,
        })
    }

    /// Drops a task's links. Their veth is normally gone already, which took
    /// the kernel's side with it, so a failed detach is only logged.
    pub fn detach_task(&mut self, links: TaskLinks) {
        if let Some(port) = links.fast
            && let Err(e) = self.fast.remove(port)
        {
            tracing::warn!(ifindex = links.ifindex, error = %e, "removing a task veth's fast path");
        }
        // The index may go to another veth next: its entry must not stay.
        if let Err(e) = self.policy.remove_endpoint(links.ifindex) {
            tracing::warn!(ifindex = links.ifindex, error = %e, "removing a task veth's isolation entry");
        }
        for (name, id) in links.links {
            let detached = Datapath::classifier(&mut self.ebpf, name).map(|p| p.detach(id));
            if let Ok(Err(e)) = detached {
                tracing::debug!(program = name, error = %e, "detaching from a task veth");
            }
        }
    }

    /// The isolation maps: the overlay subnets and node addresses.
    pub fn policy(&mut self) -> &mut PolicyMaps {
        &mut self.policy
    }

    /// Sets how much of the path tasks attached from now on skip, and
    /// takes out what a previous run's wider mode left in the pinned maps
    /// (its tasks' entries would go on redirecting).
    pub fn set_fast_path(&mut self, mode: FastPath) -> Result<(), DatapathError> {
        self.fast_path = mode;
        match mode {
            FastPath::Full => Ok(()),
            FastPath::Redirect => {
                self.fast.set_vteps(None, &BTreeMap::new())?;
                self.fast.clear_vxlans()
            }
            FastPath::Off => {
                self.fast.set_vteps(None, &BTreeMap::new())?;
                self.fast.clear_vxlans()?;
                self.fast.clear_peers()
            }
        }
    }

    /// Mirrors the VXLAN devices' FDBs (all, or `only` one device's) for
    /// the send side's encapsulation, in full mode; otherwise the mirror
    /// stays empty.
    pub fn set_vteps(
        &mut self,
        only: Option<u32>,
        want: &BTreeMap<PeerKey, Vtep>,
    ) -> Result<(), DatapathError> {
        if self.fast_path == FastPath::Full {
            self.fast.set_vteps(only, want)
        } else {
            self.fast.set_vteps(None, &BTreeMap::new())
        }
    }

    /// The fast path's maps.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn fast_path(&mut self) -> &mut FastPathMaps {
        &mut self.fast
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn return_path(&self, reply: &FlowKey) -> Result<Option<ReturnPath>, DatapathError> {
        lookup(&self.returns, reply, RETURN_MAP)
    }

    #[cfg(test)]
    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), DatapathError> {
        self.services
            .insert(key, svc, 0)
            .map_err(update(SERVICES_MAP))
    }

    /// Removing a frontend that is not there is not an error.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        match self.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(update(SERVICES_MAP)(e)),
        }
    }

    pub fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        self.backends
            .set(id, backend, 0)
            .map_err(update(BACKENDS_MAP))
    }

    /// Every frontend in the map (what a previous run left, after a restart).
    pub fn frontends(&self) -> Result<Vec<(ServiceKey, Service)>, DatapathError> {
        self.services
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(read(SERVICES_MAP))
    }

    /// Every backend slot in use.
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, DatapathError> {
        let mut out = Vec::new();
        for id in 1..shoal_common::mesh::MAX_BACKENDS {
            let b = self.backends.get(&id, 0).map_err(read(BACKENDS_MAP))?;
            if b.addr != 0 {
                out.push((id, b));
            }
        }
        Ok(out)
    }

    /// An all-zero entry: flows still tracked to `id` choose again.
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        self.set_backend(id, Backend::default())
    }

    /// Writes `table` (a shoal-mesh Maglev table) as service `service`'s row.
    /// Slot by slot, so packets meanwhile see a mix of the old and new
    /// tables: fine as long as every backend either names is present.
    pub fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), DatapathError> {
        if table.len() != MAGLEV_SIZE as usize || service >= MAX_SERVICES {
            return Err(DatapathError::Ring {
                service,
                len: table.len(),
            });
        }
        let base = service * MAGLEV_SIZE;
        for (slot, id) in (base..).zip(table) {
            self.maglev.set(slot, id, 0).map_err(update(MAGLEV_MAP))?;
        }
        Ok(())
    }

    pub fn set_config(&mut self, config: MeshConfig) -> Result<(), DatapathError> {
        self.config
            .set(0, config, 0)
            .map_err(update(MESH_CONFIG_MAP))
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn conn(&self, flow: &FlowKey) -> Result<Option<Conn>, DatapathError> {
        lookup(&self.conntrack, flow, CONNTRACK_MAP)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn revnat(&self, reply: &FlowKey) -> Result<Option<RevNat>, DatapathError> {
        lookup(&self.revnat, reply, REVNAT_MAP)
    }

    /// A service's counters summed over CPUs.
    pub fn service_stats(&self, service: u32) -> Result<ServiceStats, DatapathError> {
        let per_cpu = self
            .stats
            .get(&service, 0)
            .map_err(read(SERVICE_STATS_MAP))?;
        Ok(per_cpu
            .iter()
            .fold(ServiceStats::default(), |a, s| ServiceStats {
                packets: a.packets + s.packets,
                bytes: a.bytes + s.bytes,
                reply_packets: a.reply_packets + s.reply_packets,
                reply_bytes: a.reply_bytes + s.reply_bytes,
                new_flows: a.new_flows + s.new_flows,
                remote: a.remote + s.remote,
                drops: a.drops + s.drops,
            }))
    }

    /// Every reason with its count summed over CPUs, in contract order.
    pub fn reasons(&self) -> Result<Vec<(MeshReason, u64)>, DatapathError> {
        MeshReason::ALL
            .iter()
            .map(|r| {
                let per_cpu = self
                    .reasons
                    .get(&(*r as u32), 0)
                    .map_err(read(MESH_REASONS_MAP))?;
                Ok((*r, per_cpu.iter().sum()))
            })
            .collect()
    }
}

/// The mesh's aya maps and what this node wrote into them.
pub type MeshState = shoal_mesh::MeshState<Mesh>;

impl shoal_mesh::MeshMaps for Mesh {
    type Error = DatapathError;
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        Mesh::set_backend(self, id, backend)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        Mesh::remove_backend(self, id)
    }
    fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), DatapathError> {
        Mesh::set_ring(self, service, table)
    }
    fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), DatapathError> {
        Mesh::set_service(self, key, svc)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        Mesh::remove_service(self, key)
    }
    fn frontends(&self) -> Result<Vec<(ServiceKey, Service)>, DatapathError> {
        Mesh::frontends(self)
    }
    fn backends(&self) -> Result<Vec<(u32, Backend)>, DatapathError> {
        Mesh::backends(self)
    }
    fn service_stats(&self, service: u32) -> Result<ServiceStats, DatapathError> {
        Mesh::service_stats(self, service)
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").finish_non_exhaustive()
    }
}

/// A pin directory of its own for a test, removed (with whatever was pinned
/// there) when dropped; tests run in parallel and must not share maps.
#[cfg(test)]
pub struct TestPins(PathBuf);

#[cfg(test)]
impl TestPins {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TestPins(PathBuf::from(format!(
            "/sys/fs/bpf/shoal-test-{}-{n}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestPins {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

/// The links of one task veth's programs, and the veth's index (the key of
/// its isolation entry).
#[derive(Debug)]
pub struct TaskLinks {
    ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// Its fast path's entries, when it has one.
    fast: Option<Port>,
}
