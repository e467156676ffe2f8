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
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use shoal_api::cluster::v1::{AssignmentSet, EndpointMode, MeshService, Protocol, PublishMode};
use shoal_common::mesh::{IPPROTO_TCP, IPPROTO_UDP, SVC_F_HOST, SVC_F_INGRESS, SVC_F_VIP};

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
    /// Every port the services publish, in the set's order, and whether
    /// this node answers it: what `node doctor` checks the maps against.
    pub published: Vec<Published>,
}

/// A published port on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub service_id: String,
    /// This node's data address, the port, the IP protocol.
    pub frontend: Frontend,
    pub host: bool,
    /// False for a host-mode port with no task here, or an ingress port
    /// with no ingress network: no frontend is wanted.
    pub served: bool,
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
    /// Moves the backends of the tasks `leaving` names out of the rings
    /// into draining, before the control plane knows they are leaving: a
    /// task this node found unhealthy gets no new connection from this
    /// node's next write on, and keeps the flows it has until it stops.
    pub fn drain_tasks(&mut self, leaving: impl Fn(&str) -> bool) {
        self.drain_backends(|b| leaving(&b.task_id));
    }

    /// [`Self::drain_tasks`] by any property of the backend: those of a
    /// node gossip suspects lost (its VTEP) take no new connection while
    /// the suspicion lasts, and keep their flows should it refute.
    pub fn drain_backends(&mut self, leaving: impl Fn(&BackendSpec) -> bool) {
        for (key, backends) in &mut self.groups {
            let (gone, kept): (Vec<BackendSpec>, Vec<BackendSpec>) =
                backends.drain(..).partition(|b| leaving(b));
            *backends = kept;
            if gone.is_empty() {
                continue;
            }
            let draining = self.draining.entry(key.clone()).or_default();
            for b in gone {
                if !draining.iter().any(|d| d.task_id == b.task_id) {
                    draining.push(b);
                }
            }
            draining.sort();
        }
    }

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
        let frontend = (addr, published, ip_proto);
        let host = mode == PublishMode::Host;
        let mut published = Published {
            service_id: s.id.clone(),
            frontend,
            host,
            served: false,
        };
        let (scope, flags) = if host {
            (Scope::Host, SVC_F_HOST)
        } else {
            let Some(ingress) = ingress else {
                out.published.push(published);
                continue;
            };
            (Scope::Network(ingress.to_owned()), SVC_F_INGRESS)
        };
        // Host mode: only nodes running a task answer.
        published.served = scope != Scope::Host || out.groups.contains_key(&group(Scope::Host));
        let served = published.served;
        out.published.push(published);
        if !served {
            continue;
        }
        out.frontends.insert(
            frontend,
            FrontendSpec {
                group: group(scope),
                target_port: target,
                flags,
            },
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

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

    pub(crate) fn set() -> AssignmentSet {
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
                network_aliases: Default::default(),
            }],
            ..Default::default()
        }
    }

    pub(crate) fn local(nets: &[&str]) -> BTreeSet<String> {
        nets.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tasks_drained_here_leave_every_ring_but_keep_their_backend_entries() {
        let mut d = desired(&set(), "me", ME, &local(&["ing", "app"]));
        let before_groups = d.groups.len();
        d.drain_tasks(|id| id == "t1");
        assert_eq!(d.groups.len(), before_groups, "no group is dropped");
        for (key, ring) in &d.groups {
            assert!(ring.iter().all(|b| b.task_id != "t1"), "{key:?}: {ring:?}");
            assert!(
                d.draining[key].iter().any(|b| b.task_id == "t1"),
                "{key:?} drains t1"
            );
        }
        let ingress = &d.frontends[&(ME, 8080, IPPROTO_TCP)].group;
        assert_eq!(d.groups[ingress].len(), 1, "t2 still serves");
    }

    #[test]
    fn a_suspected_nodes_backends_drain_and_the_others_keep_serving() {
        let mut d = desired(&set(), "me", ME, &local(&["ing", "app"]));
        let n2 = Ipv4Addr::new(198, 18, 0, 2);
        d.drain_backends(|b| !b.local && b.vtep == n2);
        let ingress = &d.frontends[&(ME, 8080, IPPROTO_TCP)].group;
        assert_eq!(
            d.groups[ingress]
                .iter()
                .map(|b| b.task_id.as_str())
                .collect::<Vec<_>>(),
            ["t1"],
            "only the local task takes new connections"
        );
        assert!(
            d.draining[ingress].iter().any(|b| b.task_id == "t2"),
            "t2 keeps its flows: {:?}",
            d.draining
        );
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
    fn unreachable_remote_backends_wait_outside_the_ring() {
        let mut d = desired(&set(), "me", ME, &local(&["ing"]));
        d.only_reachable(|_, b| b.addr != Ipv4Addr::new(10, 0, 0, 4));
        let ingress = &d.frontends[&(ME, 8080, IPPROTO_TCP)];
        let ring: Vec<Ipv4Addr> = d.groups[&ingress.group].iter().map(|b| b.addr).collect();
        assert_eq!(ring, [Ipv4Addr::new(10, 0, 0, 3)], "the local one stays");
    }

    #[test]
    fn published_ports_say_whether_this_node_answers() {
        let served = |d: &Desired| {
            d.published
                .iter()
                .map(|p| (p.frontend, p.host, p.served))
                .collect::<Vec<_>>()
        };
        let d = desired(&set(), "me", ME, &local(&[]));
        assert_eq!(
            served(&d),
            [
                ((ME, 8080, IPPROTO_TCP), false, true),
                ((ME, 9090, IPPROTO_UDP), true, true)
            ]
        );
        assert!(d.published.iter().all(|p| p.service_id == "web"));
        // No task here: the host-mode port is listed, not answered.
        let mut other = set();
        other.mesh[0].backends.retain(|b| b.node_id != "me");
        let d = desired(&other, "me", ME, &local(&[]));
        assert_eq!(
            served(&d),
            [
                ((ME, 8080, IPPROTO_TCP), false, true),
                ((ME, 9090, IPPROTO_UDP), true, false)
            ]
        );
        // No ingress network: the ingress port is not answered either.
        other.networks.clear();
        let d = desired(&other, "me", ME, &local(&[]));
        assert!(d.published.iter().all(|p| !p.served));
        assert!(d.frontends.is_empty());
    }

    #[test]
    fn dnsrr_has_no_vip() {
        let mut s = set();
        s.mesh[0].endpoint_mode = EndpointMode::Dnsrr.into();
        let d = desired(&s, "me", ME, &local(&["ing", "app"]));
        assert!(d.frontends.keys().all(|(a, _, _)| *a == ME));
    }
}
