//! What this node holds of the overlays: the networks with devices here
//! and the remote endpoints programmed on them. The executor makes and
//! releases networks, the endpoints loop programs them, the mesh sync reads
//! both; this is the state they share, so none of them depends on another.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::Notify;

/// Overlay networks present on this node: network id → (VNI, tasks using it).
pub type LocalNetworks = HashMap<String, (u32, usize)>;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// docker's scheme: `02:42` and the IPv4 address, so a MAC never has to be
/// carried next to an address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub struct Local {
    node_id: String,
    /// The data interface's address: the VTEP and gossip address.
    data_ip: Option<Ipv4Addr>,
    /// Serializes device creation and removal against the use counts.
    networks: tokio::sync::Mutex<LocalNetworks>,
    /// Network → remote task addresses programmed in the overlay now; a
    /// network not in it has not been programmed by this process yet.
    /// Per network, the remote (task address, VTEP) pairs programmed.
    reachable: Mutex<HashMap<String, HashSet<(Ipv4Addr, Ipv4Addr)>>>,
    /// Wakes the mesh sync (a network appeared or went, reachability
    /// changed).
    mesh_poke: Notify,
}

impl Local {
    pub fn new(node_id: String, data_ip: Option<Ipv4Addr>) -> Local {
        Local {
            node_id,
            data_ip,
            networks: tokio::sync::Mutex::new(HashMap::new()),
            reachable: Mutex::new(HashMap::new()),
            mesh_poke: Notify::new(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn data_ip(&self) -> Option<Ipv4Addr> {
        self.data_ip
    }

    /// The use counts, held while devices are made or removed.
    pub async fn networks(&self) -> tokio::sync::MutexGuard<'_, LocalNetworks> {
        self.networks.lock().await
    }

    /// Networks with devices on this node: network id → VNI.
    pub async fn local_networks(&self) -> HashMap<String, u32> {
        self.networks
            .lock()
            .await
            .iter()
            .map(|(id, (vni, _))| (id.clone(), *vni))
            .collect()
    }

    /// Every local network's remote endpoints have been programmed once.
    pub async fn overlay_programmed(&self) -> bool {
        let local = self.local_networks().await;
        let r = lock(&self.reachable);
        local.keys().all(|n| r.contains_key(n))
    }

    /// The remote endpoints programmed now, per network: (address, VTEP).
    pub fn reachable(&self) -> HashMap<String, HashSet<(Ipv4Addr, Ipv4Addr)>> {
        lock(&self.reachable).clone()
    }

    /// The remote endpoints now programmed on `network`, as (address,
    /// VTEP): the mesh may use new backends, or must stop using gone ones.
    /// The VTEP is part of it because a freed address is soon handed to a
    /// task on another node: an entry still pointing at the old node must
    /// not make the new backend look reachable.
    pub fn set_reachable(&self, network: &str, ips: impl Iterator<Item = (Ipv4Addr, Ipv4Addr)>) {
        let now: HashSet<(Ipv4Addr, Ipv4Addr)> = ips.collect();
        let mut r = lock(&self.reachable);
        if r.get(network) == Some(&now) {
            return;
        }
        r.insert(network.to_owned(), now);
        drop(r);
        self.mesh_poke.notify_one();
    }

    pub fn poke_mesh(&self) {
        self.mesh_poke.notify_one();
    }

    pub async fn mesh_poked(&self) {
        self.mesh_poke.notified().await;
    }
}
