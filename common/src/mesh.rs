//! The routing mesh's maps: published ports and service VIPs load-balanced
//! by Maglev to backends, with connection tracking and reverse NAT.
//!
//! Katran's shape (`vip_map → ch_rings → reals`): userspace owns small `u32`
//! ids and every table is keyed by one, so a packet does a fixed number of
//! lookups and userspace can rewrite one table without touching the others.
//!
//! ```text
//! SERVICES  {addr, port, proto}        → Service {id, backend_count, target_port, flags}
//! MAGLEV    id * MAGLEV_SIZE + h % M   → backend id (0 = none)
//! BACKENDS  backend id                 → Backend {addr, vtep, flags}
//! CONNTRACK client→frontend FlowKey    → Conn {backend, service, backend addr/port, times}
//! REVNAT    backend→client FlowKey     → RevNat {frontend addr/port, service}
//! RETURN    backend→client FlowKey     → ReturnPath {ingress node's bridge MAC}
//! ```
//!
//! Where the programs hang:
//!
//! ```text
//! data interface  ingress shoal_mesh_in   published ports → DNAT
//!                 egress  shoal_mesh_out  replies → reverse NAT
//! task veth       ingress shoal_task_in   (from the task) VIPs and published
//!                                         ports → DNAT; replies to a flow that
//!                                         another node DNATed → back to it
//!                 egress  shoal_task_out  (to the task) VIP replies → reverse
//!                                         NAT; remembers which node a
//!                                         DNATed flow came through
//! ```
//!
//! A published port answered by a backend on another node keeps the
//! client's address: the ingress node DNATs and routes the packet into the
//! ingress overlay, whose frame carries the ingress node's bridge MAC as
//! its source. The backend's node records that MAC per flow (RETURN) and
//! sends the replies to it, so they go back through the ingress node, whose
//! data-interface egress program reverse-NATs them. Every node's bridges
//! have their own MAC ([`bridge_mac`]) for that reason.
//!
//! Every address and port is stored in network byte order, exactly as the
//! program reads it from the packet, so the kernel side never swaps bytes.
//! Userspace builds keys with [`ServiceKey::new`] / [`FlowKey::new`] from host
//! order values.
//!
//! A service id names one load-balancing group: one Maglev ring and one
//! counter slot. One swarm service normally gets one id shared by its VIP and
//! all its ingress-published ports, since all its tasks listen on the same
//! target ports; a host-mode published port gets its own id whose ring holds
//! only this node's tasks.

/// Hash map [`ServiceKey`] → [`Service`]: the frontends this node answers for.
pub const SERVICES_MAP: &str = "SHOAL_SVC4_V2";
/// Array of [`Backend`], indexed by backend id ([`BACKEND_NONE`] unused).
pub const BACKENDS_MAP: &str = "SHOAL_BE4_V1";
/// Array of backend ids, [`MAGLEV_SIZE`] per service id: row `id` is that
/// service's Maglev lookup table.
pub const MAGLEV_MAP: &str = "SHOAL_MAGLEV_V1";
/// LRU hash [`FlowKey`] (client → frontend, before DNAT) → [`Conn`].
pub const CONNTRACK_MAP: &str = "SHOAL_CT4_V1";
/// LRU hash [`FlowKey`] (backend → client, a reply) → [`RevNat`].
pub const REVNAT_MAP: &str = "SHOAL_RNAT4_V1";
/// Per-CPU array of [`ServiceStats`], indexed by service id.
pub const SERVICE_STATS_MAP: &str = "SHOAL_SVCST_V1";
/// Per-CPU array of `u64`, indexed by [`MeshReason`].
/// V2: the isolation reasons were appended (the array grew); V3: egress's
/// and IPsec's; V4: the fast path's counts; V5: its encapsulation's.
pub const MESH_REASONS_MAP: &str = "SHOAL_LBRSN_V6";
/// Array of one [`MeshConfig`].
pub const MESH_CONFIG_MAP: &str = "SHOAL_LBCFG_V2";
/// LRU hash [`FlowKey`] (backend → client, a reply) → [`ReturnPath`]: flows
/// that reached a local backend through another node.
pub const RETURN_MAP: &str = "SHOAL_RET4_V1";
/// Hash map [`PeerKey`] (a network's VXLAN device, a local task's MAC on
/// it) → the task's host-side veth: the fast path's receive side, which
/// hands frames from the VXLAN device straight into the task's namespace.
pub const PEERS_MAP: &str = "SHOAL_PEER4_V1";
/// Hash map host-side veth ifindex → its network's VXLAN device ifindex:
/// the fast path's send side, which gives a task's frames for other nodes
/// straight to the VXLAN device.
pub const UPLINKS_MAP: &str = "SHOAL_UPLNK_V1";
/// Hash map VNI → [`VxlanDev`]: the overlays whose VXLAN the data
/// interface's program may decapsulate itself for a local task.
pub const VXLANS_MAP: &str = "SHOAL_VXDEV_V1";
/// Hash map [`PeerKey`] (a network's VXLAN device, a MAC behind another
/// node's VTEP) → [`Vtep`]: a mirror of the VXLAN device's static FDB,
/// with what its transmit would put around the frame. The fast path's
/// send side encapsulates a task's frame itself with it and hands the
/// result to the underlay's neighbour output: no VXLAN device, no UDP
/// transmit, no route lookup of the device's. A MAC without an entry goes
/// to the VXLAN device, whose FDB decides as before.
pub const VTEPS_MAP: &str = "SHOAL_VTEP4_V1";
/// Networks a node carries at most, for [`VXLANS_MAP`].
pub const MAX_VXLANS: u32 = 4096;

/// TC classifier for ingress of the data interface: frontends → DNAT.
pub const PROG_MESH_INGRESS: &str = "shoal_mesh_in";
/// TC classifier for the reply path (egress of the data interface for local
/// backends): backend → client packets get their frontend address back.
pub const PROG_MESH_EGRESS: &str = "shoal_mesh_out";
/// TC classifier on ingress of a task's host-side veth (packets the task
/// sends): DNAT to VIPs and published ports, return path of ingress flows.
pub const PROG_TASK_INGRESS: &str = "shoal_task_in";
/// TC classifier on egress of a task's host-side veth (packets to the task):
/// reverse NAT of VIP replies, and the return path's recording.
pub const PROG_TASK_EGRESS: &str = "shoal_task_out";
/// TC classifier on ingress of an overlay's VXLAN device: a frame for a
/// local task gets `shoal_task_out`'s work and is redirected into the
/// task's namespace (`bpf_redirect_peer`), skipping the bridge and the
/// veth's backlog; anything else goes on to the bridge.
pub const PROG_VXLAN_INGRESS: &str = "shoal_vxlan_in";

/// First two bytes of every Shoal bridge's MAC (`02:53`, locally
/// administered); the other four are the node's data-path IPv4 address, so
/// each node's bridges differ from every other node's.
pub const BRIDGE_MAC_PREFIX: [u8; 2] = [0x02, 0x53];

/// The MAC of a node's bridges, from its data-path address (host order).
pub const fn bridge_mac(node_addr: u32) -> [u8; 6] {
    let [a, b, c, d] = node_addr.to_be_bytes();
    [BRIDGE_MAC_PREFIX[0], BRIDGE_MAC_PREFIX[1], a, b, c, d]
}

/// Whether `mac` is some node's bridge (a packet a node routed).
#[inline(always)]
pub const fn is_bridge_mac(mac: &[u8; 6]) -> bool {
    mac[0] == BRIDGE_MAC_PREFIX[0] && mac[1] == BRIDGE_MAC_PREFIX[1]
}

/// Slots per Maglev table. Prime, as the paper requires (every skip is then
/// coprime with it, so each backend's permutation visits every slot).
///
/// Why 4099 and not Katran's 65537: Maglev gives every backend ⌊M/N⌋ or
/// ⌈M/N⌉ slots, so the worst imbalance is one slot, N/M relative: 2.4 % at
/// 100 replicas, 0.5 % at 20, which covers swarm services. A table costs
/// 4 × M bytes of locked kernel memory per service: 16 KiB here, 256 KiB at
/// 65537 — [`MAX_SERVICES`] of those is 16 MiB instead of 256 MiB on every
/// node. Changing it changes the contract (bump the map version).
pub const MAGLEV_SIZE: u32 = 4099;
/// Service ids are `0..MAX_SERVICES`: sizes the Maglev and counter arrays.
pub const MAX_SERVICES: u32 = 1024;
/// Backend ids are `1..MAX_BACKENDS`.
pub const MAX_BACKENDS: u32 = 16384;
/// Frontend entries (VIP ports and published ports): a hash map, so its
/// size costs memory (≈ 2 MiB here) but not lookup time; room for 10,000
/// services with a VIP (two entries each) and their ports. V2 of the map:
/// V1 held 4096.
pub const MAX_FRONTENDS: u32 = 32768;
/// Tracked flows per node; the oldest are evicted first (LRU).
pub const MAX_FLOWS: u32 = 262_144;
/// The backend id no backend has: an unfilled Maglev slot (arrays start
/// zeroed) means "no backend", never "backend 0".
pub const BACKEND_NONE: u32 = 0;

/// IP protocol numbers the mesh balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// ICMP: only echo request/reply are parsed, for isolation's replies and
/// egress translation; no frontend is ever ICMP. Their identifier stands
/// in for a port: a request's [`FlowKey`] has `sport` = id, `dport` = 0, a
/// reply's `sport` = 0, `dport` = id, so the reply's key is the request's
/// swapped, as for TCP and UDP.
pub const IPPROTO_ICMP: u8 = 1;

/// Key of [`SERVICES_MAP`]: a frontend address (a VIP or this node's data
/// address), its port and protocol. Port 0 is the "any port" entry of a VIP,
/// looked up when no exact entry exists: swarm's VIPs forward every port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// IPv4 address, network order.
    pub addr: u32,
    /// Port, network order; 0 = any port.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

impl ServiceKey {
    /// From host-order values (`addr` as `u32::from(Ipv4Addr)`).
    pub const fn new(addr: u32, port: u16, proto: u8) -> Self {
        Self {
            addr: addr.to_be(),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

/// The frontend is a service VIP (east-west).
pub const SVC_F_VIP: u16 = 1 << 0;
/// The frontend is a port published through the routing mesh on every node.
pub const SVC_F_INGRESS: u16 = 1 << 1;
/// The frontend is a host-mode published port: only this node's tasks.
pub const SVC_F_HOST: u16 = 1 << 2;
/// Client affinity: the backend is chosen by the client address alone, so
/// all of a client's connections land on the same backend.
pub const SVC_F_AFFINITY: u16 = 1 << 3;

/// Value of [`SERVICES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Row of [`MAGLEV_MAP`] and slot of [`SERVICE_STATS_MAP`].
    pub id: u32,
    /// Backends in the ring; 0 means new flows are dropped
    /// ([`MeshReason::NoBackend`]) rather than handed to the host stack.
    pub backend_count: u32,
    /// Backend port, network order; 0 keeps the destination port (VIPs).
    pub target_port: u16,
    /// `SVC_F_*`.
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<Service>() == 12);

/// The backend runs on this node (reached by routing, no tunnel).
pub const BACKEND_F_LOCAL: u32 = 1 << 0;

/// Value of [`BACKENDS_MAP`]: a task address. The port comes from the
/// service entry ([`Service::target_port`]), as a swarm service's tasks all
/// listen on the same ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Task address on its overlay network, network order; 0 = slot unused.
    pub addr: u32,
    /// Underlay address of the node running the task (its VXLAN endpoint),
    /// network order.
    pub vtep: u32,
    /// `BACKEND_F_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 12);

/// A directed IPv4 5-tuple, network order: the key of [`CONNTRACK_MAP`]
/// (as the client sent it) and of [`REVNAT_MAP`] (as the backend replies).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

impl FlowKey {
    /// From host-order values.
    pub const fn new(saddr: u32, sport: u16, daddr: u32, dport: u16, proto: u8) -> Self {
        Self {
            saddr: saddr.to_be(),
            daddr: daddr.to_be(),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            _pad: [0; 3],
        }
    }
}

/// The backend is on another node ([`Backend::vtep`]): the DNATed packet is
/// routed into its overlay and crosses VXLAN to it; counted as
/// [`ServiceStats::remote`].
pub const CONN_F_REMOTE: u32 = 1 << 0;

/// Value of [`CONNTRACK_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// The backend chosen when the flow started.
    pub backend: u32,
    /// The service it was chosen for.
    pub service: u32,
    /// The backend's address and port at that time, network order. A flow
    /// whose backend id now names another address (or nothing) is stale and
    /// chooses again: ids can be reused, addresses are checked.
    pub backend_addr: u32,
    pub backend_port: u16,
    pub _pad: u16,
    /// `CONN_F_*`.
    pub flags: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the flow was created.
    pub created_ns: u64,
    /// … and last seen; refreshed at most every [`LAST_SEEN_GRANULARITY_NS`].
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Conn>() == 40);

/// A flow's `last_seen_ns` is rewritten only when it is this stale, so busy
/// flows do not bounce the entry's cache line between CPUs on every packet.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Value of [`REVNAT_MAP`]: what the reply's source must become.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat {
    /// Frontend address and port the client sent to, network order.
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
    /// For the reply counters.
    pub service: u32,
}
const _: () = assert!(core::mem::size_of::<RevNat>() == 12);

/// Value of [`SERVICE_STATS_MAP`] (per CPU; userspace sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Client → backend packets and bytes DNATed.
    pub packets: u64,
    pub bytes: u64,
    /// Backend → client packets and bytes reverse-NATed.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Flows created (a backend chosen through the Maglev table).
    pub new_flows: u64,
    /// Packets sent to a backend on another node.
    pub remote: u64,
    /// Packets dropped for this service (see [`MESH_REASONS_MAP`] for why).
    pub drops: u64,
}
const _: () = assert!(core::mem::size_of::<ServiceStats>() == 56);

/// Value of [`MESH_CONFIG_MAP`]. Zero fields mean the defaults below, so the
/// program behaves before userspace writes anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// A TCP flow idle this long chooses its backend again (default
    /// [`DEFAULT_TCP_TIMEOUT_NS`]).
    pub tcp_timeout_ns: u64,
    /// Same for UDP (default [`DEFAULT_UDP_TIMEOUT_NS`]).
    pub udp_timeout_ns: u64,
    /// This node's bridge MAC ([`bridge_mac`]): frames from it were routed
    /// here, not through another node. All zero: no return paths are kept.
    pub node_mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<MeshConfig>() == 24);

/// Value of [`RETURN_MAP`]: the bridge MAC of the node a flow came through,
/// where the backend's replies must go back to for reverse NAT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnPath {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ReturnPath>() == 8);

/// Key of [`PEERS_MAP`] and [`VTEPS_MAP`]: a VXLAN device and a
/// destination MAC behind it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    /// The overlay network's VXLAN device (ifindex, this node's namespace).
    pub dev: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PeerKey>() == 12);

/// Value of [`VXLANS_MAP`]: an overlay's VXLAN device here and the UDP
/// port its VXLAN uses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VxlanDev {
    pub ifindex: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<VxlanDev>() == 8);

/// Value of [`VTEPS_MAP`]: where and how a VXLAN device would send a MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vtep {
    /// The remote VTEP (network order).
    pub remote: u32,
    /// The device's own source address (network order).
    pub local: u32,
    /// The underlay the device is bound to (its IFLA_VXLAN_LINK).
    pub underlay: u32,
    /// The device's VNI. The send side checks it against the task veth's
    /// network, so an entry left under a reused device index never puts a
    /// frame into another network.
    pub vni: u32,
    /// The device's UDP destination port (host order).
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Vtep>() == 20);

impl PeerKey {
    pub const fn new(dev: u32, mac: [u8; 6]) -> Self {
        PeerKey {
            dev,
            mac,
            _pad: [0; 2],
        }
    }
}

/// Long: a TCP flow that chooses again mid-connection breaks if its ring
/// changed, and LRU eviction bounds the table anyway (IPVS's silent 900 s is
/// what swarm users trip on).
pub const DEFAULT_TCP_TIMEOUT_NS: u64 = 6 * 3600 * 1_000_000_000;
/// Short: UDP has no end of flow, and re-balancing soon after a ring change
/// is what a UDP client expects.
pub const DEFAULT_UDP_TIMEOUT_NS: u64 = 60 * 1_000_000_000;

/// Why the mesh could not handle a packet as it meant to, or refused it.
/// Packets it cannot parse pass untouched (the stack validates and drops
/// them itself); packets for a frontend it cannot serve are dropped, and so
/// are packets isolation forbids (common/src/policy.rs). Values are stable:
/// append only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshReason {
    /// IPv4 header cut short: passed.
    TruncatedIpv4 = 0,
    /// IPv4 version or IHL not valid: passed.
    BadIpv4Header = 1,
    /// TCP/UDP header cut short: passed.
    TruncatedL4 = 2,
    /// An IPv4 fragment: passed. Only the first fragment carries ports, so
    /// fragments are not balanced (a fragment-tracking map would be needed).
    Fragment = 3,
    /// Frontend with no backend (none in the ring, or an empty slot): dropped.
    NoBackend = 4,
    /// The ring names a backend id that has no entry: dropped. Userspace
    /// writes backends before rings and removes them after; this counts a
    /// violation of that order.
    MissingBackend = 5,
    /// Conntrack or reverse NAT insert failed: dropped (the reply could not
    /// be reverse-NATed).
    ConntrackInsert = 6,
    /// A packet rewrite or checksum helper failed: dropped, the packet may be
    /// half rewritten.
    Rewrite = 7,
    /// Service id outside `0..MAX_SERVICES`: dropped.
    BadServiceId = 8,
    /// A return path could not be recorded: passed (the flow's replies
    /// leave without reverse NAT).
    ReturnInsert = 9,
    /// A task's packet to a task or VIP of a network it is not attached
    /// to: dropped.
    IsolationNetwork = 10,
    /// A task's packet to one of the node's own addresses (its data
    /// address, a gateway) that is not a published port: dropped.
    IsolationNode = 11,
    /// A task's packet straight to an address of the ingress network,
    /// which carries only mesh-translated flows: dropped.
    IsolationIngress = 12,
    /// A packet arriving on the data interface for an overlay address (a
    /// task, a VIP, a gateway) that no published port translated: dropped.
    UnderlayToOverlay = 13,
    /// A task's packet whose source is none of the task's addresses:
    /// dropped.
    SpoofedSource = 14,
    /// A packet on a task veth the agent has not described (no endpoint
    /// entry): dropped, isolation fails closed.
    UnknownEndpoint = 15,
    /// A reply permit could not be recorded: passed (the task's replies to
    /// that flow will be dropped as `isolation-network`).
    PermitInsert = 16,
    /// A task's flow to the outside got the node's address (counted once
    /// per new translation): passed.
    EgressTranslated = 17,
    /// No free node-side port for a task's flow to the outside (every port
    /// probed is held by a live flow to the same destination): dropped.
    EgressPortsExhausted = 18,
    /// A task on an `--internal` network sent to the outside: dropped.
    EgressInternal = 19,
    /// A packet to the node's egress port range that no translated flow
    /// explains (stale, or forged): dropped.
    EgressNoFlow = 20,
    /// VXLAN in clear on the data interface for a VNI created `--opt
    /// encrypted`, not decrypted by an ESP state: dropped (someone on the
    /// underlay injecting, or a peer sending without IPsec).
    CleartextEncrypted = 21,
    /// A frame from a VXLAN device handed straight into a local task's
    /// namespace (counted, not dropped).
    FastPathRx = 22,
    /// A task's frame for another node handed straight to its network's
    /// VXLAN device (counted, not dropped).
    FastPathTx = 23,
    /// VXLAN for a local task decapsulated on the data interface and
    /// handed straight into the task's namespace, before the stack's UDP
    /// and VXLAN receive (counted, not dropped).
    FastPathDecap = 24,
    /// A task's frame for another node encapsulated in VXLAN by the task
    /// veth's program and handed to the underlay's neighbour output,
    /// without the VXLAN device (counted, not dropped).
    FastPathEncap = 25,
    /// A task's frame for another node that would not fit the underlay's
    /// MTU once encapsulated (the MTU shrank under a running task), left
    /// to the VXLAN device, which answers the task with ICMP
    /// "fragmentation needed" as it did before the fast path (counted,
    /// not dropped).
    FastPathMtu = 26,
}

impl MeshReason {
    pub const COUNT: u32 = 27;
    pub const ALL: [MeshReason; MeshReason::COUNT as usize] = [
        MeshReason::TruncatedIpv4,
        MeshReason::BadIpv4Header,
        MeshReason::TruncatedL4,
        MeshReason::Fragment,
        MeshReason::NoBackend,
        MeshReason::MissingBackend,
        MeshReason::ConntrackInsert,
        MeshReason::Rewrite,
        MeshReason::BadServiceId,
        MeshReason::ReturnInsert,
        MeshReason::IsolationNetwork,
        MeshReason::IsolationNode,
        MeshReason::IsolationIngress,
        MeshReason::UnderlayToOverlay,
        MeshReason::SpoofedSource,
        MeshReason::UnknownEndpoint,
        MeshReason::PermitInsert,
        MeshReason::EgressTranslated,
        MeshReason::EgressPortsExhausted,
        MeshReason::EgressInternal,
        MeshReason::EgressNoFlow,
        MeshReason::CleartextEncrypted,
        MeshReason::FastPathRx,
        MeshReason::FastPathTx,
        MeshReason::FastPathDecap,
        MeshReason::FastPathEncap,
        MeshReason::FastPathMtu,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            MeshReason::TruncatedIpv4 => "truncated-ipv4",
            MeshReason::BadIpv4Header => "bad-ipv4-header",
            MeshReason::TruncatedL4 => "truncated-l4",
            MeshReason::Fragment => "fragment",
            MeshReason::NoBackend => "no-backend",
            MeshReason::MissingBackend => "missing-backend",
            MeshReason::ConntrackInsert => "conntrack-insert",
            MeshReason::Rewrite => "rewrite",
            MeshReason::BadServiceId => "bad-service-id",
            MeshReason::ReturnInsert => "return-insert",
            MeshReason::IsolationNetwork => "isolation-network",
            MeshReason::IsolationNode => "isolation-node",
            MeshReason::IsolationIngress => "isolation-ingress",
            MeshReason::UnderlayToOverlay => "underlay-to-overlay",
            MeshReason::SpoofedSource => "spoofed-source",
            MeshReason::UnknownEndpoint => "unknown-endpoint",
            MeshReason::PermitInsert => "permit-insert",
            MeshReason::EgressTranslated => "egress-translated",
            MeshReason::EgressPortsExhausted => "egress-ports-exhausted",
            MeshReason::EgressInternal => "egress-internal",
            MeshReason::EgressNoFlow => "egress-no-flow",
            MeshReason::CleartextEncrypted => "cleartext-on-encrypted-network",
            MeshReason::FastPathRx => "fast-path-rx",
            MeshReason::FastPathTx => "fast-path-tx",
            MeshReason::FastPathDecap => "fast-path-decap",
            MeshReason::FastPathEncap => "fast-path-encap",
            MeshReason::FastPathMtu => "fast-path-mtu",
        }
    }

    /// Whether the packet was dropped (else it passed untouched).
    pub const fn drops(self) -> bool {
        !matches!(
            self,
            MeshReason::TruncatedIpv4
                | MeshReason::BadIpv4Header
                | MeshReason::TruncatedL4
                | MeshReason::Fragment
                | MeshReason::ReturnInsert
                | MeshReason::PermitInsert
                | MeshReason::EgressTranslated
                | MeshReason::FastPathRx
                | MeshReason::FastPathTx
                | MeshReason::FastPathDecap
                | MeshReason::FastPathEncap
                | MeshReason::FastPathMtu
        )
    }
}

/// The flow hash that indexes a Maglev table: murmur3's 32-bit mixing over
/// the key's words as stored (network order). Fixed, so every node maps a
/// flow to the same slot, and shared, so tests can predict the backend.
/// With [`SVC_F_AFFINITY`] only the client address is hashed.
#[inline(always)]
pub const fn flow_hash(key: &FlowKey, affinity: bool) -> u32 {
    let mut h = 0x5348_4f41; // "SHOA"
    h = murmur_mix(h, key.saddr);
    if !affinity {
        h = murmur_mix(h, key.daddr);
        h = murmur_mix(h, key.sport as u32 | (key.dport as u32) << 16);
        h = murmur_mix(h, key.proto as u32);
    }
    murmur_fmix(h)
}

#[inline(always)]
const fn murmur_mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn murmur_fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Index in [`MAGLEV_MAP`] of the slot a flow hash selects for a service.
#[inline(always)]
pub const fn maglev_index(service: u32, hash: u32) -> u32 {
    service * MAGLEV_SIZE + hash % MAGLEV_SIZE
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C), integer fields only, padding spelled out as
    // fields (size asserts above), every bit pattern valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::RevNat {}
    unsafe impl aya::Pod for super::ServiceStats {}
    unsafe impl aya::Pod for super::MeshConfig {}
    unsafe impl aya::Pod for super::ReturnPath {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::VxlanDev {}
    unsafe impl aya::Pod for super::Vtep {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        for n in [
            SERVICES_MAP,
            BACKENDS_MAP,
            MAGLEV_MAP,
            CONNTRACK_MAP,
            REVNAT_MAP,
            SERVICE_STATS_MAP,
            MESH_REASONS_MAP,
            MESH_CONFIG_MAP,
            RETURN_MAP,
            PEERS_MAP,
            UPLINKS_MAP,
            VXLANS_MAP,
            PROG_VXLAN_INGRESS,
            PROG_MESH_INGRESS,
            PROG_MESH_EGRESS,
            PROG_TASK_INGRESS,
            PROG_TASK_EGRESS,
        ] {
            assert!(n.len() <= 15, "{n} is longer than BPF_OBJ_NAME_LEN - 1");
        }
    }

    #[test]
    fn reasons_match_their_values() {
        for (i, r) in MeshReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn maglev_size_is_prime_and_the_array_fits_u32() {
        let m = MAGLEV_SIZE;
        assert!(
            (2..m)
                .take_while(|d| d * d <= m)
                .all(|d| !m.is_multiple_of(d))
        );
        assert!(u64::from(MAX_SERVICES) * u64::from(m) <= u64::from(u32::MAX));
    }

    #[test]
    fn keys_are_network_order() {
        let k = ServiceKey::new(0xc612_0001, 8080, IPPROTO_TCP);
        // SAFETY-free view of the bytes as the kernel sees them.
        assert_eq!(k.addr.to_ne_bytes(), [198, 18, 0, 1]);
        assert_eq!(k.port.to_ne_bytes(), [0x1f, 0x90]);
    }

    #[test]
    fn bridge_macs_carry_the_node_address() {
        let mac = bridge_mac(u32::from_be_bytes([198, 18, 0, 3]));
        assert_eq!(mac, [0x02, 0x53, 198, 18, 0, 3]);
        assert!(is_bridge_mac(&mac));
        assert!(!is_bridge_mac(&[0x02, 0x42, 10, 0, 0, 5]));
    }

    #[test]
    fn affinity_hash_ignores_the_client_port() {
        let a = FlowKey::new(1, 1000, 2, 80, IPPROTO_TCP);
        let b = FlowKey::new(1, 2000, 2, 80, IPPROTO_TCP);
        assert_eq!(flow_hash(&a, true), flow_hash(&b, true));
        assert_ne!(flow_hash(&a, false), flow_hash(&b, false));
    }
}
