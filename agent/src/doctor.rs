//! `shoal node doctor`: what an operator checks by hand when a published
//! port does not answer — is the mesh programmed, do the backends answer
//! on the path the mesh sends packets along, are the other nodes reachable
//! for gossip (7946) and through the overlay (4789) — each result with what
//! to do about it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use shoal_api::node::v1::{CheckStatus, DoctorCheck};
use shoal_common::mesh::{IPPROTO_UDP, ServiceKey};
use tokio::net::{TcpSocket, TcpStream};

use crate::worker::NodeEnv;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn check(check: impl Into<String>, ok: bool, detail: impl Into<String>, hint: &str) -> DoctorCheck {
    DoctorCheck {
        check: check.into(),
        status: if ok {
            CheckStatus::Ok
        } else {
            CheckStatus::Fail
        }
        .into(),
        detail: detail.into(),
        hint: if ok { String::new() } else { hint.into() },
    }
}

fn skip(name: impl Into<String>, detail: impl Into<String>) -> DoctorCheck {
    DoctorCheck {
        check: name.into(),
        status: CheckStatus::Skip.into(),
        detail: detail.into(),
        hint: String::new(),
    }
}

/// A TCP connection to `to` from this node's data address: the source the
/// mesh's own packets have, so the reply comes back the way a client's
/// does.
async fn probe(from: Ipv4Addr, to: SocketAddrV4) -> Result<(), String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .map_err(|e| format!("bind {from}: {e}"))?;
    match tokio::time::timeout(PROBE_TIMEOUT, socket.connect(to.into())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Encrypted networks: whether their ESP states are in the kernel.
fn wireguard_check(env: &NodeEnv) -> DoctorCheck {
    let s = env
        .wireguard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status();
    match (&s.last_error, s.device) {
        (Some(e), false) => check(
            "wireguard",
            false,
            format!("no WireGuard device ({e}): WireGuard networks cannot start tasks here"),
            "check that /dev/net/tun exists (modprobe tun) and restart shoald",
        ),
        (_, false) => check(
            "wireguard",
            true,
            "no task on a WireGuard network here yet: the device is made with the first",
            "",
        ),
        (e, true) => check(
            "wireguard",
            e.is_none(),
            format!(
                "device {}, {} peer(s), {} key rotation(s){}",
                shoal_wg::DEVICE,
                s.peers,
                s.rotations,
                e.as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
            "see shoald's log for 'WireGuard'",
        ),
    }
}

fn ipsec_check(env: &NodeEnv) -> DoctorCheck {
    let ipsec = env
        .view
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ipsec
        .clone();
    let Some(ipsec) = ipsec else {
        return check(
            "ipsec",
            false,
            "no xfrm netlink socket: encrypted networks' traffic to other nodes is blocked",
            "load xfrm_user (modprobe xfrm_user) and restart shoald",
        );
    };
    let s = ipsec.lock().unwrap_or_else(|e| e.into_inner()).status();
    match (&s.last_error, s.unsupported) {
        (Some(e), true) => check(
            "ipsec",
            false,
            format!(
                "this kernel cannot install ESP states ({e}); traffic of encrypted networks \
                 to {} peer(s) is blocked, never sent in clear",
                s.peers
            ),
            "load esp4 and the AES-GCM crypto modules (modprobe esp4 xfrm_user aes gcm), or \
             run the node on a kernel that has them, then restart shoald",
        ),
        (Some(e), false) if s.states == 0 && s.peers > 0 => check(
            "ipsec",
            false,
            format!("xfrm writes refused: {e}"),
            "see shoald's log for 'IPsec'",
        ),
        _ => check(
            "ipsec",
            true,
            format!(
                "{} peer(s), {} ESP states, {} rotation(s)",
                s.peers, s.states, s.rotations
            ),
            "",
        ),
    }
}

pub async fn run(env: &NodeEnv) -> Vec<DoctorCheck> {
    let mut out = Vec::new();
    let forwarding =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
    out.push(check(
        "ip forwarding",
        forwarding,
        if forwarding { "on" } else { "off" },
        "published ports DNATed here are routed into the overlay: \
         sysctl -w net.ipv4.ip_forward=1 (shoald sets it when it starts)",
    ));
    let Some(me) = env.data_ip else {
        out.push(check(
            "data address",
            false,
            format!("{} has no IPv4 address", env.data_iface),
            "give the data interface an address, or pass --data-interface",
        ));
        return out;
    };
    let (node_id, set, gossip) = {
        let v = env.view.lock().unwrap_or_else(|e| e.into_inner());
        (v.node_id.clone(), v.set.clone(), v.gossip.clone())
    };
    if set.version == 0 {
        out.push(check(
            "assignments",
            false,
            "no assignment set from a manager yet",
            "is this node in a swarm (shoal info)? Are the managers' 2377 reachable?",
        ));
        return out;
    }
    if set
        .networks
        .iter()
        .any(|n| n.encryption() == shoal_api::cluster::v1::Encryption::Ipsec)
    {
        out.push(ipsec_check(env));
    }
    if crate::wireguard::needed(&set) {
        out.push(wireguard_check(env));
    }
    let frontends: std::collections::HashMap<ServiceKey, shoal_common::mesh::Service> = {
        let mesh = env.mesh.lock().unwrap_or_else(|e| e.into_inner());
        match mesh.maps.frontends() {
            Ok(f) => f.into_iter().collect(),
            Err(e) => {
                out.push(check("mesh maps", false, e.to_string(), "restart shoald"));
                return out;
            }
        }
    };
    // What the maps should hold, by the policy the worker applies; only
    // published ports are checked, so no VIP needs the local networks.
    let want = shoal_mesh::desired(&set, &node_id, me, &BTreeSet::new());
    // Node data address → (answered, failed) probes through the overlay.
    let mut through: BTreeMap<Ipv4Addr, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for p in &want.published {
        let (addr, published, proto) = p.frontend;
        let udp = proto == IPPROTO_UDP;
        let name = format!("port {published}/{}", if udp { "udp" } else { "tcp" });
        let service = want.names.get(&p.service_id).map_or("", String::as_str);
        if p.host && !p.served {
            out.push(skip(
                name,
                format!("{service}: host mode, no task on this node"),
            ));
            continue;
        }
        let key = ServiceKey::new(u32::from(addr), published, proto);
        let Some(fe) = frontends.get(&key) else {
            out.push(check(
                name,
                false,
                format!("{service} publishes it, but this node's mesh has no frontend"),
                "shoald has not applied the latest assignments; see its log for \
                 'updating the routing mesh'",
            ));
            continue;
        };
        let (backends, target) = match want.frontends.get(&p.frontend) {
            Some(f) => (
                want.groups.get(&f.group).map_or(&[][..], Vec::as_slice),
                f.target_port,
            ),
            None => (&[][..], 0),
        };
        if backends.is_empty() {
            out.push(check(
                name,
                false,
                format!("{service}: no running task"),
                "see `shoal service ps` for why its tasks are not running",
            ));
            continue;
        }
        if fe.backend_count == 0 {
            out.push(check(
                name,
                false,
                format!(
                    "{service}: {} running task(s), none reachable from here yet",
                    backends.len()
                ),
                "the overlay has not learnt their addresses: check gossip on 7946 \
                 (the peer checks) and shoald's log",
            ));
            continue;
        }
        if udp {
            out.push(skip(
                name,
                format!(
                    "{service}: {} backends programmed; UDP is not probed",
                    fe.backend_count
                ),
            ));
            continue;
        }
        let mut answered = 0;
        let mut failures = Vec::new();
        for b in backends {
            let ip = b.addr;
            let r = probe(me, SocketAddrV4::new(ip, target)).await;
            let entry = through.entry(b.vtep).or_default();
            match r {
                Ok(()) => {
                    answered += 1;
                    entry.0.push(b.task_id.clone());
                }
                Err(e) => {
                    failures.push(format!("{ip}:{target} ({e})"));
                    entry.1.push(b.task_id.clone());
                }
            }
        }
        out.push(check(
            name,
            failures.is_empty(),
            format!(
                "{service} → {target}: {answered} of {} backends answer{}",
                backends.len(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!("; not {}", failures.join(", "))
                }
            ),
            "a task that does not listen on its target port, or a node that \
             cannot be reached on UDP 4789 (see the peer checks)",
        ));
    }
    let members = gossip.as_ref().map(|g| g.members()).unwrap_or_default();
    for n in set.nodes.iter().filter(|n| n.id != node_id) {
        let addr = Ipv4Addr::from(n.addr);
        let tcp = tokio::time::timeout(
            PROBE_TIMEOUT,
            TcpStream::connect(SocketAddrV4::new(addr, shoal_gossip::GOSSIP_PORT)),
        )
        .await;
        let member = members.contains_key(&n.id);
        let reachable = matches!(tcp, Ok(Ok(_)));
        out.push(check(
            format!("peer {addr} gossip"),
            reachable && member,
            match (reachable, member) {
                (true, true) => "7946 answers, a gossip member".to_owned(),
                (true, false) => "7946 answers, but gossip does not list it".to_owned(),
                (false, _) => "7946/tcp does not answer".to_owned(),
            },
            "open TCP and UDP 7946 between the nodes; is shoald running there?",
        ));
        match through.get(&addr) {
            Some((ok, _)) if !ok.is_empty() => out.push(check(
                format!("peer {addr} overlay"),
                true,
                format!("4789: {} task(s) there answered through VXLAN", ok.len()),
                "",
            )),
            Some((_, failed)) => out.push(check(
                format!("peer {addr} overlay"),
                false,
                format!(
                    "4789: none of its {} task(s) answered through VXLAN",
                    failed.len()
                ),
                "open UDP 4789 (or the --data-path-port) between the nodes, and check \
                 that the underlay MTU is at least the overlay MTU + 50",
            )),
            None => out.push(skip(
                format!("peer {addr} overlay"),
                "4789: no published task there to probe through",
            )),
        }
    }
    out
}
