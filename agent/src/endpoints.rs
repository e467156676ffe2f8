//! Remote endpoints of the overlays: learnt by gossip on 7946, checked
//! against the control plane, programmed as static FDB and neighbour
//! entries.
//!
//! An entry is programmed only when the latest assignment set lists the
//! task address on a node, and either gossip has that endpoint or gossip
//! counts that node alive. The control plane is the authority on what
//! exists and where (the VTEP and MAC come from its records, never from
//! gossip), so gossip can never keep a stale endpoint alive, nor point an
//! address at another node. Gossip is the fast *removal* signal: a dead
//! node's endpoints go within its detection time, long before the managers
//! mark it down. A new task is programmed from the set alone, without
//! waiting for its gossip to arrive: a backend the mesh may already use
//! (or an address just freed by a task on another node) is never left
//! without its entry. What is programmed is read back from the kernel on
//! every pass, so nothing drifts.
//!
//! A gossip record counts as "heard" only when its VTEP and MAC are the
//! ones the control plane's records give (the node record's VTEP, the MAC
//! derived from the task address): a record that disagrees, from a
//! compromised member holding the gossip key, is ignored and counted
//! ([`Endpoints::disagreed`]). Records for tasks the control plane has not
//! listed yet are never programmed, whatever they say.
//!
//! Join order: gossip is bound at start but mute and deaf until the first
//! assignment set over the mTLS dispatcher session brings the
//! `networking:gossip` ring ([`Endpoints::set_keys`]); only then does the
//! join loop announce this node to the managers' 7946. Until then entries
//! come from the control plane alone (the node counts nobody alive).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use shoal_api::cluster::v1::{AssignmentSet, EndpointMode, NetworkKey};
use shoal_common::mesh::{PeerKey, Vtep};
use shoal_gossip::{Endpoint, EndpointKey, GOSSIP_PORT, Gossip, GossipConfig, Keyring};
use shoal_overlay::{MacAddr, NeighbourEntry, RemoteEndpoint, Remotes, VxlanPath};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    local::Local,
    ports::{Entry, Overlay, VtepMirror},
};

/// Expected cluster size for gossip's retransmission budget.
const CLUSTER_SIZE_HINT: u32 = 16;
/// Full re-check of the kernel's entries without any trigger.
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("binding gossip on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gossip(#[from] shoal_gossip::GossipError),
}

/// The control plane's subsystem name of the gossip ring.
const GOSSIP_RING: &str = "networking:gossip";

pub struct Endpoints {
    gossip: Arc<Gossip>,
    poke: Arc<Notify>,
    disagreed: Arc<AtomicU64>,
}

impl Endpoints {
    /// Starts this node's gossip member on `ip`:7946.
    pub fn start(node_id: &str, ip: Ipv4Addr) -> Result<Endpoints, EndpointsError> {
        Endpoints::bind(node_id, SocketAddr::new(IpAddr::V4(ip), GOSSIP_PORT))
    }

    /// Starts a gossip member on `addr`.
    pub fn bind(node_id: &str, addr: SocketAddr) -> Result<Endpoints, EndpointsError> {
        let bind = |source| EndpointsError::Bind { addr, source };
        let udp = std::net::UdpSocket::bind(addr).map_err(bind)?;
        let tcp = std::net::TcpListener::bind(addr).map_err(bind)?;
        let cfg = GossipConfig::lan(node_id.to_owned(), addr, CLUSTER_SIZE_HINT);
        tracing::info!(%addr, probe = ?cfg.probe_period, suspect_to_down = ?cfg.suspect_to_down, "gossip started");
        let gossip = Gossip::start(cfg, udp, tcp, CLUSTER_SIZE_HINT)?;
        Ok(Endpoints {
            gossip: Arc::new(gossip),
            poke: Arc::new(Notify::new()),
            disagreed: Arc::default(),
        })
    }

    /// Installs the gossip ring from the control plane's keys (the other
    /// rings are not gossip's). A bad ring is refused and logged, keeping
    /// the one held.
    pub fn set_keys(&self, keys: &[NetworkKey]) {
        let ring: Vec<(u64, Vec<u8>)> = keys
            .iter()
            .filter(|k| k.subsystem == GOSSIP_RING)
            .map(|k| (k.lamport_time, k.key.clone()))
            .collect();
        if ring.is_empty() {
            return;
        }
        match Keyring::new(ring) {
            Ok(r) => self.gossip.set_keyring(r),
            Err(e) => tracing::warn!(error = %e, "gossip key ring from the control plane refused"),
        }
    }

    /// Gossip endpoint records seen whose VTEP or MAC disagreed with the
    /// control plane's (each distinct record once).
    pub fn disagreed(&self) -> Arc<AtomicU64> {
        self.disagreed.clone()
    }

    pub fn publish(&self, e: Endpoint) -> Option<EndpointKey> {
        let key = e.key();
        match self.gossip.publish(e) {
            Ok(()) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "publishing an endpoint");
                None
            }
        }
    }

    pub fn withdraw(&self, key: EndpointKey) {
        if let Err(e) = self.gossip.withdraw(key) {
            tracing::warn!(error = %e, "withdrawing an endpoint");
        }
    }

    pub fn gossip(&self) -> Arc<Gossip> {
        self.gossip.clone()
    }

    /// Asks for a pass now (a network appeared on this node).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// The loops: joining gossip through the managers (host:port of
    /// their 2377), and programming the local networks through `overlay`
    /// (and the fast path's copy of their FDBs through `mirror`).
    pub fn spawn_sync<O: Overlay>(
        &self,
        overlay: Arc<O>,
        mirror: Option<Arc<dyn VtepMirror>>,
        local: Arc<Local>,
        view: watch::Receiver<Arc<AssignmentSet>>,
        managers: &[String],
    ) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(join(self.gossip.clone(), managers.to_vec())),
            tokio::spawn(program(
                overlay,
                mirror,
                local,
                self.gossip.clone(),
                view,
                self.poke.clone(),
                self.disagreed.clone(),
            )),
        ]
    }
}

/// Joins through the managers' addresses, again whenever this member finds
/// itself alone (it started before them, or they all restarted).
async fn join(gossip: Arc<Gossip>, managers: Vec<String>) {
    let peers: Vec<SocketAddr> = managers
        .iter()
        .filter_map(|m| m.parse::<SocketAddr>().ok())
        .map(|a| SocketAddr::new(a.ip(), GOSSIP_PORT))
        .collect();
    loop {
        // Without the ring nothing would go out: wait for the control plane.
        if gossip.has_keyring()
            && gossip.members().is_empty()
            && let Err(e) = gossip.join(peers.iter().copied())
        {
            tracing::warn!(error = %e, "joining gossip");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn program<O: Overlay>(
    overlay: Arc<O>,
    mirror: Option<Arc<dyn VtepMirror>>,
    local: Arc<Local>,
    gossip: Arc<Gossip>,
    mut view: watch::Receiver<Arc<AssignmentSet>>,
    poke: Arc<Notify>,
    disagreed: Arc<AtomicU64>,
) {
    let mut changes = gossip.subscribe();
    let started = tokio::time::Instant::now();
    let mut leaving = Leaving::default();
    let mut seen_bad: HashSet<Endpoint> = HashSet::new();
    let mut suspected = BTreeSet::new();
    loop {
        // The mesh drains a suspected or down node's backends (a suspected
        // node's entries here stay, for the flows they carry): a change of
        // either is the mesh's to act on.
        let mut now_suspected = gossip.suspected();
        now_suspected.extend(gossip.declared_down());
        if now_suspected != suspected {
            suspected = now_suspected;
            local.poke_mesh();
        }
        let set = view.borrow_and_update().clone();
        let me = local.node_id();
        let nets = local.local_networks().await;
        let heard = gossip.endpoints();
        for bad in disagreeing(&heard, &set, me) {
            if seen_bad.insert(bad.clone()) {
                disagreed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    network = %bad.network, ip = %bad.ip, node = %bad.node_id, vtep = %bad.vtep,
                    "gossip endpoint disagrees with the control plane: ignored"
                );
            }
        }
        // Bounded: forget what gossip no longer carries.
        seen_bad.retain(|b| heard.contains(b));
        let want = wanted(&heard, &gossip.members(), &set, &nets, me);
        let own_mac = local.data_ip().map(shoal_overlay::bridge_mac);
        // Just started, gossip knows nobody yet: entries a previous run left
        // that the control plane still lists stay until gossip has had its
        // chance, so connections through this node survive a restart.
        let warming = started.elapsed() < WARMUP;
        // ...but not those of a node gossip has since declared down.
        let down: HashSet<u32> = if warming {
            let down = gossip.declared_down();
            set.nodes
                .iter()
                .filter(|n| down.contains(&n.id))
                .map(|n| n.addr)
                .collect()
        } else {
            HashSet::new()
        };
        let now = tokio::time::Instant::now();
        let encrypted = crate::worker::isolation::encrypted_vnis(&set, shoal_overlay::DEFAULT_PORT);
        // What the mirror holds after this pass, network by network.
        let mut vteps = BTreeMap::new();
        for (network, vni) in &nets {
            let mut want = want.get(network).cloned().unwrap_or_default();
            let have = have_on(&*overlay, *vni).await;
            if warming {
                want.extend(
                    listed(&set, network, me, &have)
                        .into_iter()
                        .filter(|r| !down.contains(&u32::from(r.vtep))),
                );
            }
            let mut keep = want.clone();
            keep.extend(leaving.still(*vni, &want, &have, now));
            let converged = converge(&*overlay, *vni, &keep).await;
            if let Some(own) = own_mac {
                let extras = wanted_extras(&set, network, me, own);
                if let Err(e) = converge_extras(&*overlay, *vni, own, &extras).await {
                    tracing::warn!(vni, error = %e, "programming node and VIP entries");
                }
            }
            match converged {
                // The mesh only balances to backends the overlay reaches:
                // what is wanted, never what only lingers.
                Ok(()) => {
                    if let Some(mirror) = &mirror {
                        let sealed = encrypted.contains_key(vni);
                        vteps.extend(mirror_network(&*overlay, &**mirror, sealed, *vni).await);
                    }
                    local.set_reachable(network, want.iter().map(|r| (r.ip, r.vtep)));
                }
                Err(e) => tracing::warn!(vni, error = %e, "programming remote endpoints"),
            }
        }
        leaving.forget_networks(&nets);
        // Networks that went, or did not converge, leave the mirror.
        if let Some(mirror) = &mirror
            && let Err(e) = mirror.set_vteps(None, &vteps)
        {
            tracing::warn!(error = %e, "mirroring the overlays' FDBs for the fast path");
        }
        // (A floor: an entry past due that failed to go is not retried in
        // a tight loop.)
        let next = leaving.next_due().map_or(RESYNC, |due| {
            due.saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(100))
        });
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = view.changed() => if r.is_err() { return },
            _ = poke.notified() => {}
            _ = tokio::time::sleep(next.min(RESYNC)) => {}
        }
    }
}

/// Copies what one network's FDB holds now, read back from the kernel
/// after its entries converged, into the fast path's mirror, which
/// encapsulates with it; returns what it wrote. Done before the mesh is
/// told what the entries reach: a MAC that moved to another node (an
/// address handed to a task elsewhere) is encapsulated to its new node
/// before any ring can send a connection to it. An encrypted network gets
/// no entries: its VXLAN must go through the stack (IPsec's policies, the
/// WireGuard device); nor does one whose device or entries could not be
/// read: its frames take the VXLAN device.
async fn mirror_network(
    overlay: &impl Overlay,
    mirror: &dyn VtepMirror,
    encrypted: bool,
    vni: u32,
) -> BTreeMap<PeerKey, Vtep> {
    let Ok(Some(path)) = overlay.vxlan_path(vni).await else {
        return BTreeMap::new();
    };
    // An encrypted network's FDB is not even read: its device's entries
    // only go.
    let want: BTreeMap<PeerKey, Vtep> = if encrypted {
        BTreeMap::new()
    } else {
        match overlay.remotes(vni).await {
            Ok(remotes) => vteps_of(&path, &remotes).into_iter().collect(),
            Err(_) => BTreeMap::new(),
        }
    };
    if let Err(e) = mirror.set_vteps(Some(path.ifindex), &want) {
        tracing::warn!(vni, error = %e, "mirroring the overlay's FDB for the fast path");
    }
    want
}

/// The mirror's entries of one network: each unicast MAC its FDB sends to
/// one VTEP, with what the device would encapsulate it with.
pub fn vteps_of(path: &VxlanPath, remotes: &Remotes) -> Vec<(PeerKey, Vtep)> {
    remotes
        .unicast_destinations()
        .into_iter()
        .map(|(mac, remote)| {
            (
                PeerKey::new(path.ifindex, mac.octets()),
                Vtep {
                    remote: u32::from(remote).to_be(),
                    local: u32::from(path.local).to_be(),
                    underlay: path.underlay,
                    vni: path.vni,
                    port: path.port,
                    _pad: 0,
                },
            )
        })
        .collect()
}

/// How long an entry the control plane no longer lists stays programmed.
/// The same assignment set takes the task out of this node's rings, on
/// another loop: the entry goes after the mesh has let go of it, so a
/// connection the mesh sends to a task that still serves (an unhealthy one
/// being drained, or one being stopped) is never blackholed in between.
const LINGER: Duration = Duration::from_secs(2);

/// Entries no longer wanted, with when they stopped being wanted.
#[derive(Default)]
struct Leaving {
    since: BTreeMap<(u32, RemoteEndpoint), tokio::time::Instant>,
}

impl Leaving {
    /// Of `have` on `vni`, the entries no longer in `want` that stay for
    /// now: within [`LINGER`], and their address not wanted towards
    /// another node (a reused address takes its new entry at once).
    fn still(
        &mut self,
        vni: u32,
        want: &BTreeSet<RemoteEndpoint>,
        have: &BTreeSet<RemoteEndpoint>,
        now: tokio::time::Instant,
    ) -> Vec<RemoteEndpoint> {
        let wanted_ips: HashSet<Ipv4Addr> = want.iter().map(|r| r.ip).collect();
        self.since
            .retain(|(v, r), _| *v != vni || (have.contains(r) && !want.contains(r)));
        let mut out = Vec::new();
        for r in have.difference(want) {
            if wanted_ips.contains(&r.ip) {
                continue;
            }
            let since = *self.since.entry((vni, *r)).or_insert(now);
            if now.saturating_duration_since(since) < LINGER {
                out.push(*r);
            }
        }
        out
    }

    fn forget_networks(&mut self, nets: &std::collections::HashMap<String, u32>) {
        let vnis: HashSet<u32> = nets.values().copied().collect();
        self.since.retain(|(v, _), _| vnis.contains(v));
    }

    /// When the next lingering entry is due to go.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.since.values().min().map(|s| *s + LINGER)
    }
}

/// One pass over one network, for a network just made on this node (the
/// loop would get to it a moment later, after its first task started).
/// `known` and `alive` are what gossip knows now.
pub async fn program_network<O: Overlay>(
    overlay: &O,
    local: &Local,
    (known, alive): (&[Endpoint], &BTreeMap<String, SocketAddr>),
    set: &AssignmentSet,
    network: &str,
    vni: u32,
) {
    let nets = std::collections::HashMap::from([(network.to_owned(), vni)]);
    let want = wanted(known, alive, set, &nets, local.node_id())
        .remove(network)
        .unwrap_or_default();
    match converge(overlay, vni, &want).await {
        Ok(()) => local.set_reachable(network, want.iter().map(|r| (r.ip, r.vtep))),
        Err(e) => tracing::warn!(vni, error = %e, "programming a new network's endpoints"),
    }
    if let Some(own) = local.data_ip().map(shoal_overlay::bridge_mac) {
        let extras = wanted_extras(set, network, local.node_id(), own);
        if let Err(e) = converge_extras(overlay, vni, own, &extras).await {
            tracing::warn!(vni, error = %e, "programming a new network's node and VIP entries");
        }
    }
}

/// How long after start gossip's silence does not remove entries.
const WARMUP: Duration = Duration::from_secs(10);

async fn have_on(overlay: &impl Overlay, vni: u32) -> BTreeSet<RemoteEndpoint> {
    match overlay.remotes(vni).await {
        Ok(r) => r.endpoints.into_iter().collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Those of `have` that the control plane lists on `network`, on the node
/// whose VTEP they point at.
fn listed(
    set: &AssignmentSet,
    network: &str,
    me: &str,
    have: &BTreeSet<RemoteEndpoint>,
) -> Vec<RemoteEndpoint> {
    have.iter()
        .filter(|r| {
            set.endpoints.iter().any(|e| {
                e.network_id == network
                    && e.node_id != me
                    && Ipv4Addr::from(e.ip) == r.ip
                    && Ipv4Addr::from(e.node_addr) == r.vtep
            })
        })
        .copied()
        .collect()
}

/// Whether a gossip record says what the control plane says: the VTEP of
/// its node's record and the MAC derived from its address.
fn agrees(e: &Endpoint, cp_vtep: u32) -> bool {
    u32::from(e.vtep) == cp_vtep && e.mac == crate::local::mac_for(e.ip)
}

/// Gossip records (of other nodes) that contradict the control plane: a
/// task it lists elsewhere or behind another VTEP or MAC, or a VTEP that
/// is not the one of the node record the record names.
pub fn disagreeing<'a>(gossip: &'a [Endpoint], set: &AssignmentSet, me: &str) -> Vec<&'a Endpoint> {
    let listed: HashMap<(&str, u32), (&str, u32)> = set
        .endpoints
        .iter()
        .map(|e| {
            (
                (e.network_id.as_str(), e.ip),
                (e.node_id.as_str(), e.node_addr),
            )
        })
        .collect();
    let nodes: HashMap<&str, u32> = set.nodes.iter().map(|n| (n.id.as_str(), n.addr)).collect();
    gossip
        .iter()
        .filter(|e| e.node_id != me)
        .filter(|e| {
            match listed.get(&(e.network.as_str(), u32::from(e.ip))) {
                Some((node, vtep)) => *node != e.node_id || !agrees(e, *vtep),
                // Not listed yet: only its node's VTEP can be checked.
                None => nodes
                    .get(e.node_id.as_str())
                    .is_some_and(|v| !agrees(e, *v)),
            }
        })
        .collect()
}

/// The remote endpoints each local network should have: listed by the
/// control plane on another node, and either heard of in gossip (a record
/// that agrees with the control plane) or on a node gossip counts alive
/// (`alive`: its live members).
pub fn wanted(
    gossip: &[Endpoint],
    alive: &BTreeMap<String, SocketAddr>,
    set: &AssignmentSet,
    local: &std::collections::HashMap<String, u32>,
    me: &str,
) -> BTreeMap<String, BTreeSet<RemoteEndpoint>> {
    let heard: HashMap<(&str, u32, &str), &Endpoint> = gossip
        .iter()
        .map(|e| ((e.network.as_str(), u32::from(e.ip), e.node_id.as_str()), e))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<RemoteEndpoint>> = BTreeMap::new();
    for e in &set.endpoints {
        if e.node_id == me || e.node_addr == 0 || !local.contains_key(&e.network_id) {
            continue;
        }
        let key = (e.network_id.as_str(), e.ip, e.node_id.as_str());
        let heard = heard.get(&key).is_some_and(|g| agrees(g, e.node_addr));
        if !heard && !alive.contains_key(&e.node_id) {
            continue;
        }
        let ip = Ipv4Addr::from(e.ip);
        out.entry(e.network_id.clone())
            .or_default()
            .insert(RemoteEndpoint {
                ip,
                mac: MacAddr(crate::local::mac_for(ip)),
                vtep: Ipv4Addr::from(e.node_addr),
            });
    }
    out
}

/// Adds and removes entries on one VXLAN device until it holds `want`.
async fn converge(
    overlay: &impl Overlay,
    vni: u32,
    want: &BTreeSet<RemoteEndpoint>,
) -> Result<(), shoal_overlay::OverlayError> {
    let have: BTreeSet<RemoteEndpoint> = match overlay.remotes(vni).await {
        Ok(r) => r.endpoints.into_iter().collect(),
        // The network went between listing and now.
        Err(shoal_overlay::OverlayError::NetworkMissing { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    for gone in have.difference(want) {
        overlay.remove_remote(vni, *gone).await?;
        tracing::info!(vni, ip = %gone.ip, vtep = %gone.vtep, "remote endpoint removed");
    }
    for new in want.difference(&have) {
        overlay.add_remote(vni, *new).await?;
        tracing::info!(vni, ip = %new.ip, vtep = %new.vtep, "remote endpoint added");
    }
    Ok(())
}

/// The halves a network needs besides task endpoints: an FDB entry for
/// every other node's bridge (replies to flows that node DNATed go back to
/// it), and a neighbour entry for each service VIP on the network pointing
/// at this node's bridge (tasks' ARP for a VIP is answered by the VXLAN
/// device's proxy, and their packets reach the task veth's DNAT).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub nodes: BTreeSet<shoal_overlay::FdbEntry>,
    pub vips: BTreeSet<Ipv4Addr>,
}

pub fn wanted_extras(set: &AssignmentSet, network: &str, me: &str, own: MacAddr) -> Extras {
    let nodes = set
        .nodes
        .iter()
        .filter(|n| n.id != me)
        .map(|n| Ipv4Addr::from(n.addr))
        .map(|vtep| shoal_overlay::FdbEntry {
            mac: shoal_overlay::bridge_mac(vtep),
            vtep,
        })
        .filter(|f| f.mac != own)
        .collect();
    let vips = set
        .mesh
        .iter()
        .filter(|s| EndpointMode::try_from(s.endpoint_mode) == Ok(EndpointMode::Vip))
        .flat_map(|s| s.vips.iter())
        .filter(|v| v.network_id == network)
        .filter_map(|v| Some(v.addr?.ip()))
        .collect();
    Extras { nodes, vips }
}

/// Brings the device's node FDB entries and VIP neighbour entries to
/// `want`; other unpaired entries (not ours) are left alone.
async fn converge_extras(
    overlay: &impl Overlay,
    vni: u32,
    own: MacAddr,
    want: &Extras,
) -> Result<(), shoal_overlay::OverlayError> {
    let have = match overlay.remotes(vni).await {
        Ok(r) => r,
        Err(shoal_overlay::OverlayError::NetworkMissing { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let is_node = |m: &MacAddr| shoal_common::mesh::is_bridge_mac(&m.octets()) && *m != own;
    let have_nodes: BTreeSet<_> = have
        .fdb_only
        .iter()
        .filter(|f| is_node(&f.mac))
        .copied()
        .collect();
    for gone in have_nodes.difference(&want.nodes) {
        overlay.remove_entry(vni, Entry::Fdb(*gone)).await?;
    }
    for new in want.nodes.difference(&have_nodes) {
        overlay.add_entry(vni, Entry::Fdb(*new)).await?;
        tracing::debug!(vni, vtep = %new.vtep, "node bridge programmed");
    }
    let have_vips: BTreeSet<Ipv4Addr> = have
        .neighbours_only
        .iter()
        .filter(|n| n.mac == own)
        .map(|n| n.ip)
        .collect();
    for gone in have_vips.difference(&want.vips) {
        overlay
            .remove_entry(
                vni,
                Entry::Neighbour(NeighbourEntry {
                    ip: *gone,
                    mac: own,
                }),
            )
            .await?;
    }
    for new in want.vips.difference(&have_vips) {
        overlay
            .add_entry(vni, Entry::Neighbour(NeighbourEntry { ip: *new, mac: own }))
            .await?;
        tracing::info!(vni, vip = %new, "service VIP answered here");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shoal_api::cluster::v1::Endpoint as CpEndpoint;
    use shoal_overlay::{FdbEntry, OverlaySpec, Underlay, bridge_mac};

    use super::*;
    use crate::fake::{Call, FakeOverlay, Log, ME, PEER, VNI, nodes};

    /// A fake overlay holding network `VNI`, with no call recorded yet.
    async fn overlay() -> (FakeOverlay, Log) {
        let log = Log::default();
        let o = FakeOverlay::new(log.clone());
        let subnet = "10.0.1.0/24".parse().expect("a subnet");
        let spec = OverlaySpec::new(
            VNI,
            subnet,
            Ipv4Addr::new(10, 0, 1, 1),
            ME,
            Underlay::Name("eth0".into()),
        );
        o.ensure_network(&spec).await.expect("the network");
        log.clear();
        (o, log)
    }

    fn remote(ip: [u8; 4], vtep: Ipv4Addr) -> RemoteEndpoint {
        RemoteEndpoint {
            ip: ip.into(),
            mac: MacAddr(crate::local::mac_for(ip.into())),
            vtep,
        }
    }

    /// A mirror that keeps what it was last given.
    #[derive(Default)]
    struct Mirror(std::sync::Mutex<BTreeMap<PeerKey, Vtep>>);

    impl VtepMirror for Mirror {
        fn set_vteps(
            &self,
            only: Option<u32>,
            want: &BTreeMap<PeerKey, Vtep>,
        ) -> Result<(), crate::datapath::DatapathError> {
            let mut m = self.0.lock().expect("mirror");
            m.retain(|k, _| only.is_some_and(|dev| k.dev != dev));
            m.extend(want);
            Ok(())
        }
    }

    /// The loop's mirror writes for one pass over `nets`.
    async fn mirror_pass(
        o: &FakeOverlay,
        mirror: &Mirror,
        set: &AssignmentSet,
        nets: &HashMap<String, u32>,
    ) {
        let encrypted = crate::worker::isolation::encrypted_vnis(set, shoal_overlay::DEFAULT_PORT);
        let mut all = BTreeMap::new();
        for vni in nets.values() {
            all.extend(mirror_network(o, mirror, encrypted.contains_key(vni), *vni).await);
        }
        mirror.set_vteps(None, &all).expect("whole");
    }

    /// The fast path's FDB mirror holds what the kernel holds, in the
    /// contract's byte order, for the unencrypted networks only; a MAC
    /// whose entries went leaves it on the next pass.
    #[tokio::test]
    async fn the_fdb_mirror_copies_unencrypted_networks_entries() {
        use shoal_api::cluster::v1::{Encryption, NetworkAssignment};
        let (o, _) = overlay().await;
        const SEALED: u32 = VNI + 10;
        let spec = OverlaySpec::new(
            SEALED,
            "10.0.2.0/24".parse().expect("a subnet"),
            Ipv4Addr::new(10, 0, 2, 1),
            ME,
            Underlay::Name("eth0".into()),
        );
        o.ensure_network(&spec).await.expect("the sealed network");
        let task = remote([10, 0, 1, 5], PEER);
        let sealed_task = remote([10, 0, 2, 5], PEER);
        o.add_remote(VNI, task).await.expect("task");
        o.add_remote(SEALED, sealed_task)
            .await
            .expect("sealed task");
        let node = FdbEntry {
            mac: bridge_mac(PEER),
            vtep: PEER,
        };
        o.add_entry(VNI, Entry::Fdb(node)).await.expect("node");
        let mut sealed = NetworkAssignment {
            id: "sealed".into(),
            vni: SEALED,
            ..Default::default()
        };
        sealed.set_encryption(Encryption::Wireguard);
        let set = AssignmentSet {
            networks: vec![sealed],
            ..Default::default()
        };
        let nets = HashMap::from([("net".to_owned(), VNI), ("sealed".to_owned(), SEALED)]);
        let mirror = Mirror::default();
        mirror_pass(&o, &mirror, &set, &nets).await;
        let vtep = Vtep {
            remote: u32::from(PEER).to_be(),
            local: u32::from(ME).to_be(),
            underlay: 2,
            vni: VNI,
            port: shoal_overlay::DEFAULT_PORT,
            _pad: 0,
        };
        let want = BTreeMap::from([
            (PeerKey::new(VNI + 1, task.mac.octets()), vtep),
            (PeerKey::new(VNI + 1, node.mac.octets()), vtep),
        ]);
        assert_eq!(*mirror.0.lock().expect("mirror"), want);

        // One network's write (right after its entries converged) leaves
        // the other networks' entries; an encrypted one writes none.
        mirror_network(&o, &mirror, true, VNI).await;
        let left: Vec<_> = mirror.0.lock().expect("mirror").keys().copied().collect();
        assert!(left.is_empty(), "as if encrypted: {left:?}");
        mirror_network(&o, &mirror, false, VNI).await;
        assert_eq!(*mirror.0.lock().expect("mirror"), want);

        o.remove_remote(VNI, task).await.expect("remove");
        mirror_network(&o, &mirror, false, VNI).await;
        let left: Vec<_> = mirror.0.lock().expect("mirror").keys().copied().collect();
        assert_eq!(left, vec![PeerKey::new(VNI + 1, node.mac.octets())]);
        mirror_pass(&o, &mirror, &set, &nets).await;
        let left: Vec<_> = mirror.0.lock().expect("mirror").keys().copied().collect();
        assert_eq!(left, vec![PeerKey::new(VNI + 1, node.mac.octets())]);
    }

    #[tokio::test]
    async fn converge_removes_what_is_not_wanted_and_adds_what_is_missing() {
        let (o, log) = overlay().await;
        let (a, b, c) = (
            remote([10, 0, 1, 2], PEER),
            remote([10, 0, 1, 3], PEER),
            remote([10, 0, 1, 4], PEER),
        );
        o.add_remote(VNI, a).await.expect("a");
        o.add_remote(VNI, b).await.expect("b");
        log.clear();
        converge(&o, VNI, &[b, c].into()).await.expect("converged");
        assert_eq!(
            log.calls(),
            [
                Call::RemoveRemote(VNI, a.ip, PEER),
                Call::AddRemote(VNI, c.ip, PEER)
            ]
        );
        let have = o.remotes(VNI).await.expect("remotes");
        assert_eq!(have.endpoints, [b, c]);
        // Converged: a second pass changes nothing.
        log.clear();
        converge(&o, VNI, &[b, c].into()).await.expect("converged");
        assert_eq!(log.calls(), []);
        // A network gone meanwhile is no error.
        converge(&o, 9999, &[b].into())
            .await
            .expect("nothing to do");
        assert_eq!(log.calls(), []);
    }

    #[tokio::test]
    async fn extras_change_only_node_bridges_and_own_vips() {
        let (o, log) = overlay().await;
        let own = bridge_mac(ME);
        let stale_node = Ipv4Addr::new(198, 18, 0, 9);
        let flood = FdbEntry {
            mac: MacAddr([0; 6]),
            vtep: PEER,
        };
        o.add_entry(VNI, Entry::Fdb(flood)).await.expect("flood");
        o.add_entry(
            VNI,
            Entry::Fdb(FdbEntry {
                mac: bridge_mac(stale_node),
                vtep: stale_node,
            }),
        )
        .await
        .expect("stale node");
        let stale_vip = Ipv4Addr::new(10, 0, 1, 200);
        o.add_entry(
            VNI,
            Entry::Neighbour(NeighbourEntry {
                ip: stale_vip,
                mac: own,
            }),
        )
        .await
        .expect("stale vip");
        let foreign = NeighbourEntry {
            ip: Ipv4Addr::new(10, 0, 1, 201),
            mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
        };
        o.add_entry(VNI, Entry::Neighbour(foreign))
            .await
            .expect("foreign");
        log.clear();
        let vip = Ipv4Addr::new(10, 0, 1, 2);
        let want = Extras {
            nodes: [FdbEntry {
                mac: bridge_mac(PEER),
                vtep: PEER,
            }]
            .into(),
            vips: [vip].into(),
        };
        converge_extras(&o, VNI, own, &want)
            .await
            .expect("converged");
        assert_eq!(
            log.calls(),
            [
                Call::RemoveFdb(VNI, bridge_mac(stale_node), stale_node),
                Call::AddFdb(VNI, bridge_mac(PEER), PEER),
                Call::RemoveNeighbour(VNI, stale_vip, own),
                Call::AddNeighbour(VNI, vip, own),
            ]
        );
        let have = o.remotes(VNI).await.expect("remotes");
        assert!(have.fdb_only.contains(&flood), "{have:?}");
        assert!(have.neighbours_only.contains(&foreign), "{have:?}");
    }

    #[tokio::test]
    async fn a_new_network_gets_confirmed_endpoints_and_node_bridges_and_is_reachable() {
        let (o, log) = overlay().await;
        let local = Local::new("me".into(), Some(ME));
        let known = [
            g("net-a", [10, 0, 1, 2], "n2", PEER.octets()),
            // Not confirmed by the control plane.
            g("net-a", [10, 0, 1, 3], "n2", PEER.octets()),
        ];
        let set = AssignmentSet {
            endpoints: vec![cp("net-a", "10.0.1.2", "n2")],
            nodes: nodes(),
            ..Default::default()
        };
        program_network(&o, &local, (&known, &BTreeMap::new()), &set, "net-a", VNI).await;
        assert_eq!(
            log.calls(),
            [
                Call::AddRemote(VNI, Ipv4Addr::new(10, 0, 1, 2), PEER),
                Call::AddFdb(VNI, bridge_mac(PEER), PEER),
            ]
        );
        assert_eq!(
            local.reachable(),
            HashMap::from([(
                "net-a".to_owned(),
                [(Ipv4Addr::new(10, 0, 1, 2), PEER)].into()
            )])
        );
    }

    fn g(net: &str, ip: [u8; 4], node: &str, vtep: [u8; 4]) -> Endpoint {
        Endpoint {
            network: net.into(),
            ip: ip.into(),
            mac: crate::local::mac_for(ip.into()),
            vtep: vtep.into(),
            node_id: node.into(),
        }
    }

    /// The VTEP of each test node, as the control plane records it.
    fn vtep_of(node: &str) -> Ipv4Addr {
        match node {
            "me" => ME,
            "n2" => PEER,
            "n3" => Ipv4Addr::new(198, 18, 0, 3),
            _ => Ipv4Addr::new(198, 18, 0, 4),
        }
    }

    fn cp(net: &str, ip: &str, node: &str) -> CpEndpoint {
        CpEndpoint {
            network_id: net.into(),
            task_id: format!("t-{ip}"),
            ip: ip.parse::<Ipv4Addr>().map_or(0, u32::from),
            node_id: node.into(),
            node_addr: u32::from(vtep_of(node)),
        }
    }

    #[test]
    fn an_entry_no_longer_listed_lingers_unless_its_address_moved() {
        let t0 = tokio::time::Instant::now();
        let (a, b) = (remote([10, 0, 1, 2], PEER), remote([10, 0, 1, 3], PEER));
        let moved = remote([10, 0, 1, 3], Ipv4Addr::new(198, 18, 0, 3));
        let mut l = Leaving::default();
        let have: BTreeSet<_> = [a, b].into();
        // a is no longer wanted: it stays for LINGER, then goes.
        let want: BTreeSet<_> = [b].into();
        assert_eq!(l.still(VNI, &want, &have, t0), [a]);
        assert_eq!(l.next_due(), Some(t0 + LINGER));
        assert_eq!(l.still(VNI, &want, &have, t0 + LINGER / 2), [a]);
        assert!(l.still(VNI, &want, &have, t0 + LINGER).is_empty());
        // Gone from the kernel: forgotten.
        l.still(VNI, &want, &[b].into(), t0 + LINGER);
        assert_eq!(l.next_due(), None);
        // b's address now belongs to a task on another node: no lingering,
        // the new entry replaces it at once.
        let want: BTreeSet<_> = [moved].into();
        assert!(l.still(VNI, &want, &[b].into(), t0).is_empty());
        // Wanted again while lingering: nothing left to linger.
        let mut l = Leaving::default();
        l.still(VNI, &[b].into(), &have, t0);
        l.still(VNI, &have, &have, t0 + LINGER / 4);
        assert_eq!(l.next_due(), None);
    }

    fn pairs(want: &BTreeMap<String, BTreeSet<RemoteEndpoint>>, net: &str) -> Vec<String> {
        want.get(net)
            .into_iter()
            .flatten()
            .map(|r| {
                assert_eq!(r.mac, MacAddr(crate::local::mac_for(r.ip)));
                format!("{}@{}", r.ip, r.vtep)
            })
            .collect()
    }

    #[test]
    fn only_listed_remote_endpoints_on_local_networks_heard_of_or_on_live_nodes() {
        let gossip = vec![
            g("a", [10, 0, 1, 2], "n2", [198, 18, 0, 2]),
            // Our own: the bridge reaches it.
            g("a", [10, 0, 1, 3], "me", [198, 18, 0, 1]),
            // Stale: the control plane no longer lists it.
            g("a", [10, 0, 1, 4], "n3", [198, 18, 0, 3]),
            // Gossip still has the address on n3; the control plane has
            // handed it to a new task on n2 (a rolling update freed it).
            g("a", [10, 0, 1, 5], "n3", [198, 18, 0, 3]),
            // A network with no task here.
            g("b", [10, 0, 2, 2], "n2", [198, 18, 0, 2]),
            // Heard of with a VTEP the control plane does not know for n2:
            // not heard at all; programmed (towards n2's recorded VTEP)
            // only because n2 is alive.
            g("a", [10, 0, 1, 6], "n2", [203, 0, 113, 9]),
            // Heard of on n4, which gossip no longer counts alive.
            g("a", [10, 0, 1, 7], "n4", [198, 18, 0, 4]),
        ];
        let set = AssignmentSet {
            endpoints: vec![
                cp("a", "10.0.1.2", "n2"),
                cp("a", "10.0.1.3", "me"),
                cp("a", "10.0.1.5", "n2"),
                cp("b", "10.0.2.2", "n2"),
                cp("a", "10.0.1.6", "n2"),
                cp("a", "10.0.1.7", "n4"),
                // Not (yet) in gossip, on a live node: programmed at once.
                cp("a", "10.0.1.9", "n2"),
                // Not in gossip, on a node gossip does not count alive.
                cp("a", "10.0.1.10", "n3"),
            ],
            ..Default::default()
        };
        let local = HashMap::from([("a".to_owned(), 4097)]);
        let alive = BTreeMap::from([("n2".to_owned(), "198.18.0.2:7946".parse().expect("addr"))]);
        let want = wanted(&gossip, &alive, &set, &local, "me");
        assert_eq!(
            pairs(&want, "a"),
            [
                "10.0.1.2@198.18.0.2",
                "10.0.1.5@198.18.0.2",
                "10.0.1.6@198.18.0.2",
                "10.0.1.7@198.18.0.4",
                "10.0.1.9@198.18.0.2",
            ]
        );
        assert_eq!(want.len(), 1);

        // Gossip has not met anyone yet: only what it has heard of, and
        // agrees with the control plane (not 10.0.1.6's forged VTEP).
        let want = wanted(&gossip, &BTreeMap::new(), &set, &local, "me");
        assert_eq!(
            pairs(&want, "a"),
            ["10.0.1.2@198.18.0.2", "10.0.1.7@198.18.0.4"]
        );
        // A forged MAC is not heard either.
        let mut forged = g("a", [10, 0, 1, 2], "n2", [198, 18, 0, 2]);
        forged.mac = [2, 0x42, 6, 6, 6, 6];
        let want = wanted(&[forged], &BTreeMap::new(), &set, &local, "me");
        assert_eq!(pairs(&want, "a"), Vec::<String>::new());
    }

    #[test]
    fn gossip_records_that_contradict_the_control_plane_are_singled_out() {
        let set = AssignmentSet {
            endpoints: vec![cp("a", "10.0.1.2", "n2"), cp("a", "10.0.1.3", "n3")],
            nodes: ["n2", "n3"]
                .iter()
                .map(|n| shoal_api::cluster::v1::NodeAddress {
                    id: (*n).into(),
                    addr: u32::from(vtep_of(n)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut bad_mac = g("a", [10, 0, 1, 2], "n2", [198, 18, 0, 2]);
        bad_mac.mac = [2, 0x42, 6, 6, 6, 6];
        let gossip = vec![
            // Agrees.
            g("a", [10, 0, 1, 2], "n2", [198, 18, 0, 2]),
            // Listed task, another VTEP (a redirect to an attacker).
            g("a", [10, 0, 1, 3], "n3", [203, 0, 113, 9]),
            // Listed on n3, claimed by n2.
            g("a", [10, 0, 1, 3], "n2", [198, 18, 0, 2]),
            bad_mac.clone(),
            // Not listed yet, its node's VTEP: fine (and not programmed).
            g("a", [10, 0, 1, 9], "n2", [198, 18, 0, 2]),
            // Not listed yet, another VTEP than its node's.
            g("a", [10, 0, 1, 8], "n2", [203, 0, 113, 9]),
            // Our own records are ours to judge.
            g("a", [10, 0, 1, 7], "me", [203, 0, 113, 9]),
        ];
        let bad: Vec<String> = disagreeing(&gossip, &set, "me")
            .iter()
            .map(|e| format!("{}@{}/{}", e.ip, e.vtep, e.node_id))
            .collect();
        assert_eq!(
            bad,
            [
                "10.0.1.3@203.0.113.9/n3",
                "10.0.1.3@198.18.0.2/n2",
                "10.0.1.2@198.18.0.2/n2",
                "10.0.1.8@203.0.113.9/n2",
            ]
        );
    }
}
