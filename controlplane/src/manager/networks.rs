//! Overlay networks over the Control API: validation, IPAM (subnet from the
//! cluster's pools, gateway, VNI) and the `ingress` network of the routing
//! mesh. Conflicts between concurrent creations are settled by `apply`,
//! which refuses an overlapping subnet or a reused VNI; a refused automatic
//! allocation is simply retried against the newer state.

use std::{collections::BTreeSet, net::IpAddr};

use shoal_api::cluster::v1::{CreateNetworkRequest, NetworkRef, NetworkSummary};
use shoal_ca::generate_node_id;

use super::{Manager, ManagerError};
use crate::{
    ipam::{self, Ipv4Net},
    model::{ApplyError, ClusterState, Command, Encryption, Network, NetworkDriver},
    validate, wire,
};

/// The routing mesh's network, as swarm names it.
pub const INGRESS: &str = "ingress";
/// Not a network: `--network host` means the node's own network namespace.
pub const HOST: &str = "host";
/// Attempts of an automatic allocation that lost a race to another manager.
const ALLOCATION_ATTEMPTS: usize = 20;
/// VXLAN's header overhead on an IPv4 underlay.
const VXLAN_OVERHEAD: u32 = 50;
/// The largest MTU a task interface may ask for on a 1500-byte underlay
/// (a node with a larger underlay MTU would allow more; this is the floor).
pub const MAX_MTU: u32 = 9000 - VXLAN_OVERHEAD;

fn services_using(state: &ClusterState, id: &str) -> Vec<String> {
    let mut names: Vec<String> = state
        .services
        .values()
        .filter(|s| s.spec.networks.iter().any(|n| n == id))
        .map(|s| s.spec.name.clone())
        .collect();
    names.sort();
    names
}

fn summary(state: &ClusterState, n: &Network) -> NetworkSummary {
    NetworkSummary {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: "overlay".into(),
        scope: "swarm".into(),
        subnet: n.subnet.clone().unwrap_or_default(),
        gateway: n.gateway.map(|g| g.to_string()).unwrap_or_default(),
        vni: n.vni.unwrap_or_default(),
        attachable: n.attachable,
        encryption: wire::encode_encryption(n.encryption),
        ingress: n.ingress,
        mtu: n.mtu.unwrap_or_default(),
        labels: n.labels.clone().into_iter().collect(),
        version: n.version,
        services: services_using(state, &n.id),
        internal: n.internal,
    }
}

fn invalid(what: String) -> ManagerError {
    ManagerError::Invalid { what }
}

/// An encrypted network's tasks lose the encryption's bytes too (ESP's 26,
/// WireGuard's 60, on top of VXLAN's 50): a larger MTU would be fragmented
/// or dropped on the usual 1500-byte underlay.
fn check_encrypted_mtu(mtu: u32, encryption: Encryption) -> Result<(), ManagerError> {
    let max = encryption.max_mtu();
    if encryption.is_encrypted() && mtu > max {
        let (name, bytes) = match encryption {
            Encryption::Wireguard => ("WireGuard", "60 WireGuard"),
            _ => ("IPsec", "26 ESP"),
        };
        return Err(invalid(format!(
            "--opt com.docker.network.driver.mtu={mtu}: an encrypted ({name}) network's MTU is \
             at most {max} (1500 - {VXLAN_OVERHEAD} VXLAN - {bytes}); give {max} or less, or \
             leave it out"
        )));
    }
    Ok(())
}

/// What a request asks for, checked; subnet and VNI still to allocate.
struct Wanted {
    subnet: Option<Ipv4Net>,
    gateway: Option<std::net::Ipv4Addr>,
}

fn check(r: &CreateNetworkRequest) -> Result<Wanted, ManagerError> {
    validate::name("network name", &r.name)?;
    validate::labels("--label", &r.labels)?;
    match r.driver.as_str() {
        "" | "overlay" => {}
        other => {
            return Err(invalid(format!(
                "--driver {other:?}: only the overlay driver exists in a swarm; use -d overlay"
            )));
        }
    }
    let encryption = wire::decode_encryption(r.encryption)?;
    check_encrypted_mtu(r.mtu, encryption)?;
    if r.mtu != 0 && !(576..=MAX_MTU).contains(&r.mtu) {
        return Err(invalid(format!(
            "--opt com.docker.network.driver.mtu={}: must be 576-{MAX_MTU} (the VXLAN header \
             takes {VXLAN_OVERHEAD} bytes of the underlay's MTU)",
            r.mtu
        )));
    }
    let subnet = match r.subnet.as_str() {
        "" => None,
        s => Some(validate::subnet("--subnet", s)?),
    };
    let gateway = match r.gateway.as_str() {
        "" => None,
        g => {
            let Some(subnet) = subnet else {
                return Err(invalid("--gateway needs --subnet: give both".into()));
            };
            let gw: std::net::Ipv4Addr = g.parse().map_err(|_| {
                invalid(format!(
                    "--gateway {g:?}: expected an IPv4 address in {subnet}"
                ))
            })?;
            if !subnet.contains(gw) || gw == subnet.network() || gw == subnet.broadcast() {
                return Err(invalid(format!(
                    "--gateway {gw}: must be a host address inside --subnet {subnet}"
                )));
            }
            Some(gw)
        }
    };
    Ok(Wanted { subnet, gateway })
}

/// The network to propose against `state`: the given subnet (checked
/// against the nodes' own addresses) or the next free one.
fn allocate(
    state: &ClusterState,
    r: &CreateNetworkRequest,
    wanted: &Wanted,
    ingress: bool,
) -> Result<Network, ManagerError> {
    let taken: Vec<Ipv4Net> = state
        .networks
        .values()
        .filter_map(|n| n.subnet.as_deref().and_then(ipam::parse_net))
        .collect();
    let subnet = match wanted.subnet {
        Some(s) => s,
        None => {
            let settings = state
                .clusters
                .values()
                .next()
                .map(|c| c.settings.clone())
                .unwrap_or_default();
            let pools: Vec<Ipv4Net> = settings
                .default_addr_pool
                .iter()
                .filter_map(|p| ipam::parse_net(p))
                .collect();
            ipam::next_subnet(&pools, settings.subnet_size, &taken).ok_or_else(|| {
                invalid(format!(
                    "no free /{} left in the default address pools ({}); give --subnet",
                    settings.subnet_size,
                    settings.default_addr_pool.join(", ")
                ))
            })?
        }
    };
    // An overlay subnet that holds a node's own address would black-hole
    // the cluster's own traffic on that node.
    if let Some(node) = state.nodes.values().find(|n| match n.addr {
        Some(IpAddr::V4(a)) => ipam::contains(subnet, a),
        _ => false,
    }) {
        return Err(invalid(format!(
            "--subnet {subnet} contains node {}'s address {}; pick a subnet outside the \
             underlay",
            node.hostname,
            node.addr.map(|a| a.to_string()).unwrap_or_default()
        )));
    }
    let vnis: BTreeSet<u32> = state.networks.values().filter_map(|n| n.vni).collect();
    let vni = ipam::next_vni(&vnis).ok_or_else(|| invalid("no free VNI left".into()))?;
    let gateway = wanted.gateway.or_else(|| ipam::gateway(subnet));
    Ok(Network {
        id: generate_node_id(),
        version: 0,
        name: r.name.clone(),
        labels: r.labels.clone().into_iter().collect(),
        driver: NetworkDriver::Overlay,
        ingress,
        attachable: r.attachable,
        encryption: wire::decode_encryption(r.encryption)?,
        vni: Some(vni),
        subnet: Some(subnet.to_string()),
        gateway: gateway.map(IpAddr::V4),
        mtu: (r.mtu != 0).then_some(r.mtu),
        internal: r.internal,
    })
}

async fn create_network(
    m: &Manager,
    r: CreateNetworkRequest,
    ingress: bool,
) -> Result<NetworkSummary, ManagerError> {
    let wanted = check(&r)?;
    if r.name == HOST {
        return Err(invalid(
            "network name \"host\" is reserved (`--network host` means the node's own network); \
             pick another name"
                .into(),
        ));
    }
    if !ingress && r.name == INGRESS {
        return Err(invalid(
            "network name \"ingress\" is the routing mesh's; pick another name".into(),
        ));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let network = allocate(&*m.read().await?, &r, &wanted, ingress)?;
        let id = network.id.clone();
        match m.propose(Command::CreateNetwork(network)).await {
            Ok(applied) => {
                let state = m.after(&applied).await?;
                return Ok(summary(&state, super::lookup::<Network>(&state, &id)?));
            }
            // Another manager took the same automatic VNI (or subnet) first.
            Err(ManagerError::Rejected(e))
                if attempt < ALLOCATION_ATTEMPTS && lost_race(&e, &wanted) =>
            {
                // Racing managers would otherwise retry in lockstep.
                let jitter = u64::from(generate_node_id().as_bytes()[0] % 32);
                tokio::time::sleep(std::time::Duration::from_millis(
                    5 * attempt as u64 + jitter,
                ))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A rejection that a fresh allocation fixes: the VNI is always automatic,
/// the subnet only when none was given.
fn lost_race(e: &ApplyError, wanted: &Wanted) -> bool {
    match e {
        ApplyError::VniInUse { .. } => true,
        ApplyError::SubnetOverlap { .. } => wanted.subnet.is_none(),
        _ => false,
    }
}

pub(super) async fn create(
    m: &Manager,
    r: CreateNetworkRequest,
) -> Result<NetworkSummary, ManagerError> {
    // The routing mesh's network comes first, whatever raced it: swarm
    // operators expect it to hold the pool's first subnet.
    ensure_ingress(m).await?;
    create_network(m, r, false).await
}

/// Makes the routing mesh's `ingress` network if the cluster has none yet
/// (run by the leader; a racing creation fails on the name and is ignored).
pub(super) async fn ensure_ingress(m: &Manager) -> Result<(), ManagerError> {
    if m.local_state().await.networks.values().any(|n| n.ingress) {
        return Ok(());
    }
    let r = CreateNetworkRequest {
        name: INGRESS.into(),
        ..Default::default()
    };
    match create_network(m, r, true).await {
        Ok(_) | Err(ManagerError::Rejected(ApplyError::NameConflict { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) async fn list(m: &Manager) -> Result<Vec<NetworkSummary>, ManagerError> {
    super::list_all(m, summary).await
}

pub(super) async fn inspect(m: &Manager, r: &NetworkRef) -> Result<NetworkSummary, ManagerError> {
    super::inspect_one(m, &r.network, summary).await
}

pub(super) async fn remove(m: &Manager, r: &NetworkRef) -> Result<String, ManagerError> {
    let check = |state: &ClusterState, n: &Network| {
        let users = services_using(state, &n.id);
        if !users.is_empty() {
            return Err(ManagerError::Denied {
                what: format!(
                    "network {} is in use by service{} {}; remove {} first (shoal service rm)",
                    n.name,
                    if users.len() == 1 { "" } else { "s" },
                    users.join(", "),
                    if users.len() == 1 { "it" } else { "them" },
                ),
            });
        }
        if n.ingress {
            return Err(ManagerError::Denied {
                what: "the ingress network carries the routing mesh and cannot be removed".into(),
            });
        }
        Ok(())
    };
    super::remove_one(m, &r.network, check).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(encryption: Encryption, mtu: u32) -> CreateNetworkRequest {
        CreateNetworkRequest {
            name: "enc".into(),
            encryption: wire::encode_encryption(encryption),
            mtu,
            ..Default::default()
        }
    }

    #[test]
    fn encrypted_networks_are_accepted_up_to_their_mode_s_mtu() {
        for (mode, max) in [(Encryption::Ipsec, 1424), (Encryption::Wireguard, 1390)] {
            assert!(check(&request(mode, 0)).is_ok());
            assert!(check(&request(mode, max)).is_ok());
            let Err(ManagerError::Invalid { what }) = check(&request(mode, max + 1)) else {
                panic!("{} accepted on a {mode:?} network", max + 1)
            };
            assert!(
                what.contains(&format!("com.docker.network.driver.mtu={}", max + 1))
                    && what.contains(&format!("at most {max}")),
                "{what}"
            );
        }
        // Unencrypted networks keep VXLAN's own limit.
        assert!(check(&request(Encryption::None, 1450)).is_ok());
    }

    #[test]
    fn an_unknown_mode_is_refused_by_name() {
        let r = CreateNetworkRequest {
            name: "enc".into(),
            encryption: 7,
            ..Default::default()
        };
        let Err(ManagerError::Invalid { what }) = check(&r) else {
            panic!("mode 7 accepted")
        };
        assert!(what.contains("wireguard"), "{what}");
    }
}
