//! The routing mesh's policy on a node: what its eBPF maps must hold, worked
//! out from the latest assignment set alone ([`desired`]), and the writes
//! that take the maps there in the order the programs rely on
//! ([`Tables::apply`]).
//!
//! Every node answers every ingress-published port on its own data address,
//! balancing over all of the service's RUNNING tasks; VIPs are answered on
//! the networks this node has tasks on; host-mode ports only where a task of
//! the service runs, and only to those local tasks. A backend is in the maps
//! exactly while the control plane lists it as running, so a stopped task
//! or a dead node leaves every node's rings with the next assignment set.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

use shoal_api::cluster::v1::{AssignmentSet, EndpointMode, MeshService, Protocol, PublishMode};
use shoal_common::mesh::{
    BACKEND_F_LOCAL, Backend, IPPROTO_TCP, IPPROTO_UDP, MAGLEV_SIZE, MAX_BACKENDS, MAX_SERVICES,
    SVC_F_HOST, SVC_F_INGRESS, SVC_F_VIP, Service, ServiceKey,
};
use shoal_mesh::MaglevBackend;

use crate::datapath::DatapathError;

/// One load-balancing group: a service's tasks on one network (its VIP and
/// ingress ports), or its tasks on this node (host-mode ports).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub service_id: String,
    pub scope: Scope,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The tasks' addresses on this network.
    Network(String),
    /// This node's tasks only.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    pub group: GroupKey,
    /// 0 keeps the destination port (VIPs).
    pub target_port: u16,
    pub flags: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackendSpec {
    /// The Maglev key: the task id, the same on every node.
    pub task_id: String,
    pub addr: Ipv4Addr,
    pub vtep: Ipv4Addr,
    pub local: bool,
}

/// (frontend address, port, IP protocol), host order.
pub type Frontend = (Ipv4Addr, u16, u8);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub frontends: BTreeMap<Frontend, FrontendSpec>,
    /// Backends of every group a frontend uses, sorted.
    pub groups: BTreeMap<GroupKey, Vec<BackendSpec>>,
    /// Service id → name, for the counters.
    pub names: BTreeMap<String, String>,
    /// Backends being stopped, per group: kept in the backend table so
    /// their tracked flows finish there, but in no ring, so no new flow
    /// picks them.
    pub draining: BTreeMap<GroupKey, Vec<BackendSpec>>,
    /// What was left out because the wire carried a value this build does
    /// not know (a newer manager), one reason each; logged when applied.
    pub skipped: Vec<String>,
}

/// The IP protocol of a published port; `None` for a value this build
/// does not know.
fn proto(p: i32) -> Option<u8> {
    match Protocol::try_from(p) {
        Ok(Protocol::Tcp) => Some(IPPROTO_TCP),
        Ok(Protocol::Udp) => Some(IPPROTO_UDP),
        Ok(Protocol::Unspecified) | Err(_) => None,
    }
}

/// The maps' content for node `me` (data address `addr`), which has devices
/// for `local_networks`.
pub fn desired(
    set: &AssignmentSet,
    me: &str,
    addr: Ipv4Addr,
    local_networks: &BTreeSet<String>,
) -> Desired {
    let ingress = set
        .networks
        .iter()
        .find(|n| n.ingress)
        .map(|n| n.id.clone());
    let mut out = Desired::default();
    for s in &set.mesh {
        add_service(&mut out, s, me, addr, ingress.as_deref(), local_networks);
        out.names.insert(s.id.clone(), s.name.clone());
    }
    // Only groups a frontend uses get ids and rings.
    let used: BTreeSet<GroupKey> = out.frontends.values().map(|f| f.group.clone()).collect();
    out.groups.retain(|k, _| used.contains(k));
    out.draining.retain(|k, _| used.contains(k));
    // A frontend whose tasks are all stopping (or not running yet) keeps
    // its group with an empty ring: its packets are dropped, so clients
    // retry, instead of reaching this node's own stack (which would reset
    // them), and its draining tasks keep their flows.
    for g in used {
        out.groups.entry(g).or_default();
    }
    for backends in out.groups.values_mut() {
        backends.sort();
        backends.dedup_by(|a, b| a.task_id == b.task_id);
    }
    out
}

impl Desired {
    /// Keeps out of the rings the remote backends this node cannot reach
    /// yet: the overlay learns a new task's address by gossip a moment after
    /// the control plane lists it running, and a connection balanced to it
    /// before then would be lost to a failed ARP. Local backends always
    /// stay; draining ones too (they only keep their flows).
    pub fn only_reachable(&mut self, reachable: impl Fn(&GroupKey, &BackendSpec) -> bool) {
        for (key, backends) in &mut self.groups {
            backends.retain(|b| b.local || reachable(key, b));
        }
    }
}

fn add_service(
    out: &mut Desired,
    s: &MeshService,
    me: &str,
    addr: Ipv4Addr,
    ingress: Option<&str>,
    local_networks: &BTreeSet<String>,
) {
    let group = |scope| GroupKey {
        service_id: s.id.clone(),
        scope,
    };
    for (list, into) in [
        (&s.backends, &mut out.groups),
        (&s.draining, &mut out.draining),
    ] {
        for b in list {
            let (ip, vtep) = (Ipv4Addr::from(b.ip), Ipv4Addr::from(b.node_addr));
            let spec = BackendSpec {
                task_id: b.task_id.clone(),
                addr: ip,
                vtep,
                local: b.node_id == me,
            };
            if spec.local {
                // Host-mode ports go to the task's first address listed.
                let host = into.entry(group(Scope::Host)).or_default();
                if !host.iter().any(|h| h.task_id == spec.task_id) {
                    host.push(spec.clone());
                }
            }
            into.entry(group(Scope::Network(b.network_id.clone())))
                .or_default()
                .push(spec);
        }
    }
    let vip_mode = match EndpointMode::try_from(s.endpoint_mode) {
        Ok(EndpointMode::Vip) => true,
        Ok(EndpointMode::Dnsrr) => false,
        Ok(EndpointMode::Unspecified) | Err(_) => {
            out.skipped.push(format!(
                "service {}: endpoint_mode: unknown value {}; its VIPs are not programmed",
                s.name, s.endpoint_mode
            ));
            false
        }
    };
    if vip_mode {
        for vip in &s.vips {
            let Some(ip) = vip.addr.map(|a| a.ip()) else {
                continue;
            };
            if !local_networks.contains(&vip.network_id) {
                continue;
            }
            for p in [IPPROTO_TCP, IPPROTO_UDP] {
                out.frontends.insert(
                    (ip, 0, p),
                    FrontendSpec {
                        group: group(Scope::Network(vip.network_id.clone())),
                        target_port: 0,
                        flags: SVC_F_VIP,
                    },
                );
            }
        }
    }
    for p in &s.ports {
        let (Ok(published), Ok(target)) = (
            u16::try_from(p.published_port),
            u16::try_from(p.target_port),
        ) else {
            continue;
        };
        if published == 0 {
            continue;
        }
        let (Some(ip_proto), Ok(mode @ (PublishMode::Ingress | PublishMode::Host))) =
            (proto(p.protocol), PublishMode::try_from(p.publish_mode))
        else {
            out.skipped.push(format!(
                "service {} port {published}: protocol {} or publish mode {} is unknown; not \
                 published",
                s.name, p.protocol, p.publish_mode
            ));
            continue;
        };
        let (scope, flags) = if mode == PublishMode::Host {
            (Scope::Host, SVC_F_HOST)
        } else {
            let Some(ingress) = ingress else { continue };
            (Scope::Network(ingress.to_owned()), SVC_F_INGRESS)
        };
        if scope == Scope::Host && !out.groups.contains_key(&group(Scope::Host)) {
            // Host mode: only nodes running a task answer.
            continue;
        }
        out.frontends.insert(
            (addr, published, ip_proto),
            FrontendSpec {
                group: group(scope),
                target_port: target,
                flags,
            },
        );
    }
}

/// The map writes the applier needs: the real maps, or a fake in tests.
pub trait MeshMaps {
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError>;
    fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), DatapathError>;
    fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), DatapathError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError>;
}

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(transparent)]
    Map(#[from] DatapathError),
    #[error("more than {limit} {what} on this node")]
    Full { what: &'static str, limit: u32 },
    #[error("Maglev table of service {service}: {source}")]
    Maglev {
        service: String,
        #[source]
        source: shoal_mesh::MaglevError,
    },
}

/// Small integer ids handed out from a range and reused once freed.
#[derive(Debug)]
struct Ids<K> {
    by_key: HashMap<K, u32>,
    used: std::collections::HashSet<u32>,
    free: Vec<u32>,
    next: u32,
    limit: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Ids<K> {
    fn new(first: u32, limit: u32) -> Self {
        Ids {
            by_key: HashMap::new(),
            used: std::collections::HashSet::new(),
            free: Vec::new(),
            next: first,
            limit,
        }
    }

    /// `key`'s id; a new key takes `hint` when it is free (the id a previous
    /// run gave it), else the next free one.
    fn get_or_assign(
        &mut self,
        key: &K,
        hint: Option<u32>,
        what: &'static str,
    ) -> Result<u32, LbError> {
        if let Some(id) = self.by_key.get(key) {
            return Ok(*id);
        }
        let hinted = hint.filter(|h| *h < self.limit && !self.used.contains(h));
        let id = match hinted.or_else(|| self.fresh()) {
            Some(id) => id,
            None => {
                return Err(LbError::Full {
                    what,
                    limit: self.limit,
                });
            }
        };
        self.used.insert(id);
        self.by_key.insert(key.clone(), id);
        Ok(id)
    }

    fn fresh(&mut self) -> Option<u32> {
        while let Some(id) = self.free.pop() {
            if !self.used.contains(&id) {
                return Some(id);
            }
        }
        while self.next < self.limit {
            let id = self.next;
            self.next += 1;
            if !self.used.contains(&id) {
                return Some(id);
            }
        }
        None
    }

    fn release(&mut self, key: &K) -> Option<u32> {
        let id = self.by_key.remove(key)?;
        self.used.remove(&id);
        self.free.push(id);
        Some(id)
    }
}

/// What this node wrote into its maps, so each pass writes only changes.
#[derive(Debug)]
pub struct Tables {
    groups: Ids<GroupKey>,
    backends: Ids<(String, Ipv4Addr)>,
    backend_values: HashMap<u32, Backend>,
    /// Group id → the (backend id, task id) its ring was built from.
    rings: HashMap<u32, Vec<(u32, String)>>,
    services: HashMap<ServiceKey, Service>,
    names: BTreeMap<String, String>,
    /// What a previous run left in the pinned maps: ids to give the same
    /// groups and backends again, and backend slots to clear if nothing
    /// claims them.
    restored: Restored,
}

#[derive(Debug, Default)]
struct Restored {
    group_of_frontend: HashMap<ServiceKey, u32>,
    backend_of_addr: HashMap<u32, u32>,
    backends: BTreeSet<u32>,
}

/// The mesh's maps and what this node wrote into them, under one lock.
#[derive(Debug)]
pub struct MeshState {
    pub maps: crate::datapath::mesh::Mesh,
    pub tables: Tables,
}

/// One group's counters, summed over CPUs.
#[derive(Debug, Clone)]
pub struct GroupStats {
    pub key: GroupKey,
    pub service: String,
    pub backends: u32,
    pub stats: shoal_common::mesh::ServiceStats,
}

impl MeshState {
    /// Takes over the maps, and what a previous run left in them.
    pub fn new(maps: crate::datapath::mesh::Mesh) -> Self {
        let tables = match (maps.frontends(), maps.backends()) {
            (Ok(s), Ok(b)) => {
                if !s.is_empty() {
                    tracing::info!(
                        frontends = s.len(),
                        backends = b.len(),
                        "routing mesh restored from the pinned maps"
                    );
                }
                Tables::restore(s, b)
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "reading the pinned mesh maps; starting from empty tables");
                Tables::default()
            }
        };
        MeshState { maps, tables }
    }

    /// Counters of every group in the maps now.
    pub fn group_stats(&self) -> Result<Vec<GroupStats>, DatapathError> {
        let mut out = Vec::new();
        let mut groups: Vec<(&GroupKey, &u32)> = self.tables.groups.by_key.iter().collect();
        groups.sort();
        for (key, gid) in groups {
            out.push(GroupStats {
                key: key.clone(),
                service: self
                    .tables
                    .names
                    .get(&key.service_id)
                    .cloned()
                    .unwrap_or_default(),
                backends: self.tables.rings.get(gid).map_or(0, |r| r.len() as u32),
                stats: self.maps.service_stats(*gid)?,
            });
        }
        Ok(out)
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            groups: Ids::new(0, MAX_SERVICES),
            backends: Ids::new(1, MAX_BACKENDS),
            backend_values: HashMap::new(),
            rings: HashMap::new(),
            services: HashMap::new(),
            names: BTreeMap::new(),
            restored: Restored::default(),
        }
    }
}

/// What one pass changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub backends: usize,
    pub rings: usize,
    pub frontends: usize,
    pub removed: usize,
}

impl Changes {
    pub fn any(&self) -> bool {
        *self != Changes::default()
    }
}

impl Tables {
    /// Tables that know what the pinned maps hold (Cilium's restore before
    /// reconcile): the frontends and backends a previous run wrote. The
    /// next [`apply`](Self::apply) gives the same groups and backends the
    /// same ids, so tracked flows keep matching, and removes what is no
    /// longer wanted.
    pub fn restore(services: Vec<(ServiceKey, Service)>, backends: Vec<(u32, Backend)>) -> Tables {
        let mut t = Tables::default();
        for (key, svc) in services {
            t.restored.group_of_frontend.insert(key, svc.id);
            t.services.insert(key, svc);
        }
        for (id, b) in backends {
            if b.addr != 0 {
                t.restored.backend_of_addr.insert(b.addr, id);
                t.restored.backends.insert(id);
                t.backend_values.insert(id, b);
            }
        }
        t
    }

    /// Writes the maps until they hold `want`: backends first, then the
    /// rings naming them, then the frontends using the rings; removals in
    /// the reverse order. A failed write leaves what is recorded as written
    /// consistent with the maps, so the next pass retries the rest.
    pub fn apply(&mut self, want: &Desired, maps: &mut impl MeshMaps) -> Result<Changes, LbError> {
        self.names.clone_from(&want.names);
        let mut changes = Changes::default();
        let mut ring_of: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
        let mut live_backends = BTreeSet::new();
        for (key, backends) in &want.groups {
            let hint = want
                .frontends
                .iter()
                .filter(|(_, f)| f.group == *key)
                .find_map(|((addr, port, proto), _)| {
                    let k = ServiceKey::new(u32::from(*addr), *port, *proto);
                    self.restored.group_of_frontend.get(&k).copied()
                });
            let gid = self
                .groups
                .get_or_assign(key, hint, "load-balanced services")?;
            let mut ring = Vec::new();
            let draining = want.draining.get(key).map_or(&[][..], Vec::as_slice);
            for (b, in_ring) in backends
                .iter()
                .map(|b| (b, true))
                .chain(draining.iter().map(|b| (b, false)))
            {
                let hint = self
                    .restored
                    .backend_of_addr
                    .get(&u32::from(b.addr).to_be())
                    .copied();
                let bid =
                    self.backends
                        .get_or_assign(&(b.task_id.clone(), b.addr), hint, "backends")?;
                let value = Backend {
                    addr: u32::from(b.addr).to_be(),
                    vtep: u32::from(b.vtep).to_be(),
                    flags: if b.local { BACKEND_F_LOCAL } else { 0 },
                };
                if self.backend_values.get(&bid) != Some(&value) {
                    maps.set_backend(bid, value)?;
                    self.backend_values.insert(bid, value);
                    changes.backends += 1;
                }
                live_backends.insert(bid);
                if in_ring {
                    ring.push((bid, b.task_id.clone()));
                }
            }
            ring_of.insert(gid, ring);
        }
        for (gid, ring) in &ring_of {
            if self.rings.get(gid) == Some(ring) {
                continue;
            }
            let members: Vec<MaglevBackend<'_>> = ring
                .iter()
                .map(|(id, key)| MaglevBackend {
                    id: *id,
                    key: key.as_bytes(),
                })
                .collect();
            let table = shoal_mesh::table(&members).map_err(|source| LbError::Maglev {
                service: gid.to_string(),
                source,
            })?;
            maps.set_ring(*gid, &table)?;
            self.rings.insert(*gid, ring.clone());
            changes.rings += 1;
        }
        let mut wanted_services = HashMap::new();
        for ((addr, port, proto), f) in &want.frontends {
            let Some(gid) = self.groups.by_key.get(&f.group).copied() else {
                continue;
            };
            let key = ServiceKey::new(u32::from(*addr), *port, *proto);
            let value = Service {
                id: gid,
                backend_count: ring_of.get(&gid).map_or(0, |r| r.len() as u32),
                target_port: f.target_port.to_be(),
                flags: f.flags,
            };
            wanted_services.insert(key, value);
        }
        for (key, value) in &wanted_services {
            if self.services.get(key) != Some(value) {
                maps.set_service(*key, *value)?;
                self.services.insert(*key, *value);
                changes.frontends += 1;
            }
        }
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !wanted_services.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            maps.remove_service(&key)?;
            self.services.remove(&key);
            changes.removed += 1;
        }
        let stale_groups: Vec<GroupKey> = self
            .groups
            .by_key
            .keys()
            .filter(|k| !want.groups.contains_key(*k))
            .cloned()
            .collect();
        for key in stale_groups {
            if let Some(gid) = self.groups.by_key.get(&key).copied() {
                // Emptied before the id is reused, so a new group never
                // starts with another's backends.
                maps.set_ring(gid, &vec![shoal_mesh::BACKEND_NONE; MAGLEV_SIZE as usize])?;
                self.rings.remove(&gid);
                self.groups.release(&key);
                changes.removed += 1;
            }
        }
        let stale_backends: Vec<(String, Ipv4Addr)> = self
            .backends
            .by_key
            .iter()
            .filter(|(_, id)| !live_backends.contains(*id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale_backends {
            if let Some(bid) = self.backends.by_key.get(&key).copied() {
                // Zeroed: flows still tracked to it choose again.
                maps.remove_backend(bid)?;
                self.backend_values.remove(&bid);
                self.backends.release(&key);
                changes.removed += 1;
            }
        }
        // A previous run's backends that nothing claimed this time.
        let unclaimed: Vec<u32> = std::mem::take(&mut self.restored.backends)
            .into_iter()
            .filter(|id| !live_backends.contains(id))
            .collect();
        for bid in unclaimed {
            maps.remove_backend(bid)?;
            self.backend_values.remove(&bid);
            changes.removed += 1;
        }
        self.restored = Restored::default();
        Ok(changes)
    }
}

impl MeshMaps for crate::datapath::mesh::Mesh {
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        crate::datapath::mesh::Mesh::set_backend(self, id, backend)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        crate::datapath::mesh::Mesh::remove_backend(self, id)
    }
    fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), DatapathError> {
        crate::datapath::mesh::Mesh::set_ring(self, service, table)
    }
    fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), DatapathError> {
        crate::datapath::mesh::Mesh::set_service(self, key, svc)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        crate::datapath::mesh::Mesh::remove_service(self, key)
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::{
        cluster::v1::{Ipv4Prefix, MeshBackend, NetworkAssignment, PortConfig, VirtualIp},
        words::Word,
    };

    use super::*;

    /// An address in the tests' text; 0.0.0.0 for a typo.
    fn ip4(s: &str) -> u32 {
        s.parse::<Ipv4Addr>().map_or(0, u32::from)
    }

    fn cidr(s: &str) -> Option<Ipv4Prefix> {
        let (a, l) = s.split_once('/')?;
        Some(Ipv4Prefix::new(a.parse().ok()?, l.parse().ok()?))
    }

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn backend(task: &str, node: &str, node_addr: &str, net: &str, ip: &str) -> MeshBackend {
        MeshBackend {
            task_id: task.into(),
            node_id: node.into(),
            node_addr: ip4(node_addr),
            network_id: net.into(),
            ip: ip4(ip),
        }
    }

    fn port(published: u32, target: u32, proto: &str, mode: &str) -> PortConfig {
        PortConfig {
            protocol: Protocol::from_word(proto).map_or(7, Into::into),
            target_port: target,
            published_port: published,
            publish_mode: PublishMode::from_word(mode).map_or(7, Into::into),
        }
    }

    fn set() -> AssignmentSet {
        AssignmentSet {
            networks: vec![NetworkAssignment {
                id: "ing".into(),
                ingress: true,
                ..Default::default()
            }],
            mesh: vec![MeshService {
                id: "web".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip.into(),
                vips: vec![
                    VirtualIp {
                        network_id: "app".into(),
                        network: "app".into(),
                        addr: cidr("10.0.1.2/24"),
                    },
                    VirtualIp {
                        network_id: "ing".into(),
                        network: "ingress".into(),
                        addr: cidr("10.0.0.2/24"),
                    },
                ],
                ports: vec![
                    port(8080, 80, "tcp", "ingress"),
                    port(9090, 90, "udp", "host"),
                ],
                backends: vec![
                    backend("t1", "me", "198.18.0.1", "ing", "10.0.0.3"),
                    backend("t1", "me", "198.18.0.1", "app", "10.0.1.3"),
                    backend("t2", "n2", "198.18.0.2", "ing", "10.0.0.4"),
                    backend("t2", "n2", "198.18.0.2", "app", "10.0.1.4"),
                ],
                draining: vec![],
            }],
            ..Default::default()
        }
    }

    fn local(nets: &[&str]) -> BTreeSet<String> {
        nets.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_unknown_protocol_is_left_out_with_a_reason_not_taken_for_tcp() {
        let mut s = set();
        s.mesh[0].ports[0].protocol = 7;
        let d = desired(&s, "me", ME, &local(&["ing"]));
        assert!(!d.frontends.keys().any(|(_, port, _)| *port == 8080));
        assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
        assert!(d.skipped[0].contains("port 8080"), "{:?}", d.skipped);
    }

    #[test]
    fn ingress_ports_on_every_node_vips_on_local_networks_host_ports_where_tasks_run() {
        let d = desired(&set(), "me", ME, &local(&["ing"]));
        let keys: Vec<Frontend> = d.frontends.keys().copied().collect();
        let vip_ing = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            keys,
            [
                (vip_ing, 0, IPPROTO_TCP),
                (vip_ing, 0, IPPROTO_UDP),
                (ME, 8080, IPPROTO_TCP),
                (ME, 9090, IPPROTO_UDP),
            ],
            "no VIP on app: this node has no task there"
        );
        let ingress = &d.frontends[&(ME, 8080, IPPROTO_TCP)];
        assert_eq!((ingress.target_port, ingress.flags), (80, SVC_F_INGRESS));
        let ring = &d.groups[&ingress.group];
        assert_eq!(
            ring.iter().map(|b| (b.addr, b.local)).collect::<Vec<_>>(),
            [
                (Ipv4Addr::new(10, 0, 0, 3), true),
                (Ipv4Addr::new(10, 0, 0, 4), false)
            ]
        );
        let host = &d.frontends[&(ME, 9090, IPPROTO_UDP)];
        assert_eq!(host.flags, SVC_F_HOST);
        assert_eq!(d.groups[&host.group].len(), 1, "only the local task");

        // A node with no task of the service: ingress still, host mode not.
        let mut other = set();
        other.mesh[0].backends.retain(|b| b.node_id != "me");
        let d = desired(&other, "me", ME, &local(&["ing", "app"]));
        assert!(d.frontends.contains_key(&(ME, 8080, IPPROTO_TCP)));
        assert!(!d.frontends.contains_key(&(ME, 9090, IPPROTO_UDP)));
        assert!(
            d.frontends
                .contains_key(&(Ipv4Addr::new(10, 0, 1, 2), 0, IPPROTO_TCP))
        );
    }

    #[test]
    fn draining_backends_keep_their_slot_but_leave_the_ring() {
        let mut t = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        let key = ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP);
        let gid = maps.services[&key].id;
        let t2_id = |maps: &Fake| {
            maps.backends
                .iter()
                .find(|(_, b)| b.addr == u32::from(Ipv4Addr::new(10, 0, 0, 4)).to_be())
                .map(|(id, _)| *id)
        };
        let before = t2_id(&maps).expect("t2 is a backend");

        // t2 is being stopped: still running, no longer wanted.
        let mut s = set();
        let (gone, kept): (Vec<_>, Vec<_>) = s.mesh[0]
            .backends
            .drain(..)
            .partition(|b| b.task_id == "t2");
        s.mesh[0].backends = kept;
        s.mesh[0].draining = gone;
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(t2_id(&maps), Some(before), "its flows still find it");
        assert!(
            !maps.rings[&gid].contains(&before),
            "no new flow may pick it"
        );
        assert_eq!(maps.services[&key].backend_count, 1);

        // Every task stopping at once: the frontend stays, with an empty
        // ring, and both keep their flows.
        let mut all = set();
        let stopping = std::mem::take(&mut all.mesh[0].backends);
        all.mesh[0].draining = stopping;
        let d = desired(&all, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(maps.services[&key].backend_count, 0);
        assert_eq!(maps.services[&key].id, gid);
        assert!(maps.rings[&gid].iter().all(|id| *id == 0));
        assert_eq!(t2_id(&maps), Some(before));

        // Stopped: gone from the backend table too.
        s.mesh[0].draining.clear();
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(t2_id(&maps), None);
    }

    #[test]
    fn restored_tables_keep_the_ids_and_drop_what_is_gone() {
        let mut first = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing", "app"]));
        first.apply(&d, &mut maps).expect("apply");
        // A frontend and a backend nobody wants any more, left in the maps.
        let stale = ServiceKey::new(u32::from(ME), 7777, IPPROTO_TCP);
        maps.services.insert(stale, Service::default());
        maps.backends.insert(
            999,
            Backend {
                addr: 1,
                ..Backend::default()
            },
        );
        let services: Vec<_> = maps.services.iter().map(|(k, v)| (*k, *v)).collect();
        let backends: Vec<_> = maps.backends.iter().map(|(k, v)| (*k, *v)).collect();
        let before = (maps.services.clone(), maps.backends.clone());

        let mut restarted = Tables::restore(services, backends);
        maps.log.clear();
        restarted.apply(&d, &mut maps).expect("apply");
        assert!(!maps.services.contains_key(&stale));
        assert!(!maps.backends.contains_key(&999));
        let mut want_services = before.0;
        want_services.remove(&stale);
        let mut want_backends = before.1;
        want_backends.remove(&999);
        assert_eq!(maps.services, want_services, "same frontends, same ids");
        assert_eq!(maps.backends, want_backends, "same backends, same ids");
        assert!(
            maps.log
                .iter()
                .all(|l| !l.starts_with("backend ") && !l.starts_with("service ")),
            "nothing rewritten but rings: {:?}",
            maps.log
        );
    }

    #[test]
    fn unreachable_remote_backends_wait_outside_the_ring() {
        let mut d = desired(&set(), "me", ME, &local(&["ing"]));
        d.only_reachable(|_, b| b.addr != Ipv4Addr::new(10, 0, 0, 4));
        let ingress = &d.frontends[&(ME, 8080, IPPROTO_TCP)];
        let ring: Vec<Ipv4Addr> = d.groups[&ingress.group].iter().map(|b| b.addr).collect();
        assert_eq!(ring, [Ipv4Addr::new(10, 0, 0, 3)], "the local one stays");
    }

    #[test]
    fn dnsrr_has_no_vip() {
        let mut s = set();
        s.mesh[0].endpoint_mode = EndpointMode::Dnsrr.into();
        let d = desired(&s, "me", ME, &local(&["ing", "app"]));
        assert!(d.frontends.keys().all(|(a, _, _)| *a == ME));
    }

    /// Records every write, in order.
    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        backends: HashMap<u32, Backend>,
        rings: HashMap<u32, Vec<u32>>,
        services: HashMap<ServiceKey, Service>,
    }

    impl MeshMaps for Fake {
        fn set_backend(&mut self, id: u32, b: Backend) -> Result<(), DatapathError> {
            self.log.push(format!("backend {id}"));
            self.backends.insert(id, b);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
            self.log.push(format!("-backend {id}"));
            self.backends.remove(&id);
            Ok(())
        }
        fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), DatapathError> {
            self.log.push(format!("ring {service}"));
            self.rings.insert(service, table.to_vec());
            Ok(())
        }
        fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), DatapathError> {
            self.log.push(format!("service {}", u16::from_be(key.port)));
            self.services.insert(key, svc);
            Ok(())
        }
        fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
            self.log
                .push(format!("-service {}", u16::from_be(key.port)));
            self.services.remove(key);
            Ok(())
        }
    }

    impl Fake {
        /// Every frontend's ring names only backends that exist.
        fn consistent(&self) -> bool {
            self.services.values().all(|s| {
                self.rings.get(&s.id).is_some_and(|r| {
                    r.iter()
                        .all(|id| *id == 0 || self.backends.get(id).is_some_and(|b| b.addr != 0))
                })
            })
        }
    }

    #[test]
    fn writes_in_order_only_changes_and_cleans_up() {
        let mut t = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing"]));
        let c = t.apply(&d, &mut maps).expect("apply");
        assert!(c.any());
        let first_ring = maps
            .log
            .iter()
            .position(|l| l.starts_with("ring"))
            .expect("ring");
        let last_backend = maps
            .log
            .iter()
            .rposition(|l| l.starts_with("backend"))
            .expect("backend");
        let first_service = maps
            .log
            .iter()
            .position(|l| l.starts_with("service"))
            .expect("service");
        assert!(last_backend < first_ring && first_ring < first_service);
        assert!(maps.consistent());

        // The same set again writes nothing.
        maps.log.clear();
        let c = t.apply(&d, &mut maps).expect("apply");
        assert!(!c.any(), "{c:?} {:?}", maps.log);

        // t2 stops: its backend leaves after the rings stop naming it.
        let mut s = set();
        s.mesh[0].backends.retain(|b| b.task_id != "t2");
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        let ring = maps
            .log
            .iter()
            .position(|l| l.starts_with("ring"))
            .expect("ring");
        let removed = maps
            .log
            .iter()
            .position(|l| l.starts_with("-backend"))
            .expect("removed");
        assert!(ring < removed, "{:?}", maps.log);
        assert!(maps.consistent());
        let svc = maps.services[&ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP)];
        assert_eq!(svc.backend_count, 1);

        // The service goes: nothing of it is left.
        let empty = Desired::default();
        t.apply(&empty, &mut maps).expect("apply");
        assert!(maps.services.is_empty());
        assert!(maps.backends.is_empty());
        assert!(maps.rings.values().all(|r| r.iter().all(|id| *id == 0)));
        assert!(t.groups.by_key.is_empty() && t.backends.by_key.is_empty());
    }

    #[test]
    fn every_node_builds_the_same_ring() {
        // Two nodes list the backends in different orders and give them
        // different ids: the slots still name the same tasks.
        let d1 = desired(&set(), "me", ME, &local(&["ing"]));
        let mut reversed = set();
        reversed.mesh[0].backends.reverse();
        let d2 = desired(
            &reversed,
            "n2",
            Ipv4Addr::new(198, 18, 0, 2),
            &local(&["ing"]),
        );
        let (mut t1, mut t2) = (Tables::default(), Tables::default());
        let (mut m1, mut m2) = (Fake::default(), Fake::default());
        // Skew n2's ids.
        t2.backends
            .get_or_assign(&("x".into(), ME), None, "b")
            .expect("id");
        t1.apply(&d1, &mut m1).expect("apply");
        t2.apply(&d2, &mut m2).expect("apply");
        let task_of = |t: &Tables, id: u32| {
            t.backends
                .by_key
                .iter()
                .find(|(_, v)| **v == id)
                .map(|(k, _)| k.0.clone())
        };
        let s1 = m1.services[&ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP)];
        let s2 = m2.services
            [&ServiceKey::new(u32::from(Ipv4Addr::new(198, 18, 0, 2)), 8080, IPPROTO_TCP)];
        let r1: Vec<_> = m1.rings[&s1.id]
            .iter()
            .map(|id| task_of(&t1, *id))
            .collect();
        let r2: Vec<_> = m2.rings[&s2.id]
            .iter()
            .map(|id| task_of(&t2, *id))
            .collect();
        assert_eq!(r1, r2);
    }
}
