//! The routing mesh's eBPF object (ebpf/src/mesh.rs): loading, attaching to
//! the data interface, and typed access to its maps (common/src/mesh.rs).
//!
//! Policy is not here: the caller decides ids, builds Maglev tables
//! (shoal-mesh) and keeps the write order the program relies on — backends
//! before the rings naming them, rings before the frontends using them, and
//! the reverse order on removal.
use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{TcAttachType, tc::SchedClassifierLinkId},
};
use shoal_common::mesh::{
    BACKENDS_MAP, Backend, CONNTRACK_MAP, Conn, FlowKey, MAGLEV_MAP, MAGLEV_SIZE, MAX_SERVICES,
    MESH_CONFIG_MAP, MESH_REASONS_MAP, MeshConfig, MeshReason, PROG_MESH_EGRESS, PROG_MESH_INGRESS,
    PROG_TASK_EGRESS, PROG_TASK_INGRESS, RETURN_MAP, REVNAT_MAP, ReturnPath, RevNat,
    SERVICE_STATS_MAP, SERVICES_MAP, Service, ServiceKey, ServiceStats,
};

use super::{AttachMode, Datapath, DatapathError};

static MESH_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shoal-mesh.o"));

pub struct Mesh {
    ebpf: Ebpf,
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
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
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

impl Mesh {
    /// Loads the object and both programs, attached nowhere yet.
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = Ebpf::load(MESH_OBJECT).map_err(DatapathError::Load)?;
        for name in Self::programs() {
            Datapath::classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    name,
                    action: "load",
                    source,
                })?;
        }
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
            ebpf,
        })
    }

    pub fn programs() -> [&'static str; 4] {
        [
            PROG_MESH_INGRESS,
            PROG_MESH_EGRESS,
            PROG_TASK_INGRESS,
            PROG_TASK_EGRESS,
        ]
    }

    /// Attaches DNAT to `iface`'s ingress and reverse NAT to its egress,
    /// after any classifier already there (the packet counters, so they see
    /// packets as they arrived).
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, DatapathError> {
        super::attach_classifiers(
            &mut self.ebpf,
            iface,
            &[
                (PROG_MESH_INGRESS, TcAttachType::Ingress),
                (PROG_MESH_EGRESS, TcAttachType::Egress),
            ],
        )
    }

    /// Attaches the task programs to a task's host-side veth (its ingress
    /// is what the task sends). The links go with the veth; [`detach_task`]
    /// (Self::detach_task) forgets them.
    pub fn attach_task(&mut self, veth: &str) -> Result<TaskLinks, DatapathError> {
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
        Ok(TaskLinks(links))
    }

    /// Drops a task's links. Their veth is normally gone already, which took
    /// the kernel's side with it, so a failed detach is only logged.
    pub fn detach_task(&mut self, links: TaskLinks) {
        for (name, id) in links.0 {
            let detached = Datapath::classifier(&mut self.ebpf, name).map(|p| p.detach(id));
            if let Ok(Err(e)) = detached {
                tracing::debug!(program = name, error = %e, "detaching from a task veth");
            }
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn return_path(&self, reply: &FlowKey) -> Result<Option<ReturnPath>, DatapathError> {
        match self.returns.get(reply, 0) {
            Ok(r) => Ok(Some(r)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(read(RETURN_MAP)(e)),
        }
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
        match self.conntrack.get(flow, 0) {
            Ok(c) => Ok(Some(c)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(read(CONNTRACK_MAP)(e)),
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn revnat(&self, reply: &FlowKey) -> Result<Option<RevNat>, DatapathError> {
        match self.revnat.get(reply, 0) {
            Ok(r) => Ok(Some(r)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(read(REVNAT_MAP)(e)),
        }
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

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").finish_non_exhaustive()
    }
}

/// The links of one task veth's programs.
#[derive(Debug)]
pub struct TaskLinks(Vec<(&'static str, SchedClassifierLinkId)>);
