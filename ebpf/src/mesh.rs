//! The routing mesh on a node's data interface (IPv4 TCP/UDP).
//!
//! `shoal_mesh_in` (ingress): a packet to a frontend (a published port on
//! this node's address, or a service VIP) gets a backend — the one its flow
//! already has in conntrack, or a new one from the service's Maglev table by
//! the 5-tuple hash — and is DNATed to it (destination address and port,
//! IPv4 and L4 checksums fixed incrementally). The client's source address
//! is left alone, so backends see who called them.
//!
//! `shoal_mesh_out` (reply path): a packet from a backend to a client whose
//! flow was DNATed here gets its source rewritten back to the frontend the
//! client called.
//!
//! Verdicts: `TC_ACT_OK` for a rewritten packet (done, the stack routes it),
//! `TC_ACT_SHOT` for a frontend packet that cannot be served (no backend),
//! `TC_ACT_UNSPEC` for everything else, untouched, so the next classifier
//! or the stack decides. Packets the mesh cannot parse pass untouched and
//! are counted ([`MeshReason`]): the stack validates them itself, and the
//! mesh is not a firewall.
//!
//! `shoal_task_in` / `shoal_task_out` (a task's host-side veth, ingress =
//! what the task sends): the same DNAT for packets a task sends to a VIP or
//! a published port, the same reverse NAT for their replies; and the return
//! path of published ports answered here for another node: a flow whose
//! frames arrive from another node's bridge MAC is remembered (RETURN), and
//! the task's replies are addressed back to that MAC, so they go through
//! the node that DNATed them (see common/src/mesh.rs).
//!
//! Isolation (policy.rs) wraps these: a task's packets that no frontend
//! translated must stay within its networks (or go outside the cluster),
//! and the data interface refuses underlay packets to overlay addresses.
//! Egress (egress.rs): what goes outside leaves with the node's address
//! (`shoal_mesh_out`), its replies come back (`shoal_mesh_in`, first).
//!
//! A backend on another node needs no tunnelling here: the DNATed packet is
//! routed into the overlay, whose VXLAN device carries it to the backend's
//! node. ICMP echo is parsed with its identifier as the port (isolation's
//! replies, egress translation); no frontend is ICMP. Not handled (yet):
//! IPv4 fragments pass (only the first carries ports); VLAN-tagged frames
//! and IPv6 pass; ICMP errors about balanced or translated flows are not
//! translated.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The datapath is the one place unsafe is allowed: map pointers, helpers and
// the #[no_mangle] entry points the macros emit.
#![allow(unsafe_code)]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_CURRENT_NETNS, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{
        bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp,
        generated::{
            bpf_check_mtu, bpf_get_hash_recalc, bpf_get_prandom_u32, bpf_redirect,
            bpf_redirect_neigh, bpf_redirect_peer,
        },
    },
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use shoal_common::mesh::{
    BACKEND_F_LOCAL, BACKEND_NONE, Backend, CONN_F_REMOTE, Conn, DEFAULT_TCP_TIMEOUT_NS,
    DEFAULT_UDP_TIMEOUT_NS, FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    LAST_SEEN_GRANULARITY_NS, MAGLEV_SIZE, MAX_BACKENDS, MAX_FLOWS, MAX_FRONTENDS, MAX_SERVICES,
    MAX_VXLANS, MeshConfig, MeshReason, PeerKey, ReturnPath, RevNat, SVC_F_AFFINITY, SVC_F_VIP,
    Service, ServiceKey, ServiceStats, Vtep, VxlanDev, flow_hash, is_bridge_mac, maglev_index,
};
use shoal_common::policy::{Endpoint, MAX_ENDPOINTS, NetEntry};
use shoal_common::ports::VXLAN_PORT;

mod egress;
mod packet;
mod policy;

use packet::Read as _;

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_MIN_HLEN: usize = 20;
/// Offsets in the IPv4 header.
const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;
/// Fragment offset and MF bits of the IPv4 flags/offset field.
const IP_OFFSET_MASK: u16 = 0x1fff;
const IP_MF: u16 = 0x2000;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Offsets in the TCP/UDP headers.
const L4_SPORT: usize = 0;
const L4_DPORT: usize = 2;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const TCP_SYN: u8 = 0x02;
/// `sk_state` of a listening socket (include/net/tcp_states.h).
const TCP_LISTEN: u32 = 10;
/// ICMP echo: header length, type values, and the offsets of the checksum
/// and the identifier (which stands in for the port, see IPPROTO_ICMP).
const ICMP_HLEN: usize = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_CSUM: usize = 2;
const ICMP_ID: usize = 4;
const TCP_ACK: u8 = 0x10;

/// bpf_l4_csum_replace flags (linux/bpf.h).
const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
/// A UDP checksum of 0 means "none": leave it 0, and never produce 0.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

// Map names are literals because the macro wants one; they must equal the
// shoal_common::mesh constants, which the loader looks up (its tests check).
// Every map is pinned by name (the loader gives the directory), so a
// restarted shoald picks up the flows, rings and counters of the last one.
#[map(name = "SHOAL_SVC4_V2")]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_FRONTENDS, 0);

#[map(name = "SHOAL_BE4_V1")]
static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

#[map(name = "SHOAL_MAGLEV_V1")]
static MAGLEV: Array<u32> = Array::pinned(MAX_SERVICES * MAGLEV_SIZE, 0);

#[map(name = "SHOAL_CT4_V1")]
static CONNTRACK: LruHashMap<FlowKey, Conn> = LruHashMap::pinned(MAX_FLOWS, 0);

#[map(name = "SHOAL_RNAT4_V1")]
static REVNAT: LruHashMap<FlowKey, RevNat> = LruHashMap::pinned(MAX_FLOWS, 0);

#[map(name = "SHOAL_SVCST_V1")]
static SERVICE_STATS: PerCpuArray<ServiceStats> = PerCpuArray::pinned(MAX_SERVICES, 0);

#[map(name = "SHOAL_LBRSN_V6")]
static REASONS: PerCpuArray<u64> = PerCpuArray::pinned(MeshReason::COUNT, 0);

#[map(name = "SHOAL_LBCFG_V2")]
static CONFIG: Array<MeshConfig> = Array::pinned(1, 0);

#[map(name = "SHOAL_RET4_V1")]
static RETURN: LruHashMap<FlowKey, ReturnPath> = LruHashMap::pinned(MAX_FLOWS, 0);

#[map(name = "SHOAL_PEER4_V1")]
static PEERS: HashMap<PeerKey, u32> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "SHOAL_UPLNK_V1")]
static UPLINKS: HashMap<u32, u32> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "SHOAL_VXDEV_V1")]
static VXLANS: HashMap<u32, VxlanDev> = HashMap::pinned(MAX_VXLANS, 0);

// Task endpoints of other nodes and other nodes' bridges, per network.
#[map(name = "SHOAL_VTEP4_V1")]
static VTEPS: HashMap<PeerKey, Vtep> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[classifier]
pub fn shoal_mesh_in(ctx: TcContext) -> i32 {
    match try_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    }
}

#[classifier]
pub fn shoal_mesh_out(ctx: TcContext) -> i32 {
    match try_reply(&ctx) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    }
}

#[classifier]
pub fn shoal_task_in(ctx: TcContext) -> i32 {
    let mut seen = Seen::default();
    let verdict = match try_task_in(&ctx, &mut seen) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    };
    // Every packet that goes on is marked by where it goes now (after any
    // DNAT), unparsed ones too: encryption fails closed.
    if verdict != TC_ACT_SHOT
        && let Ok(daddr) = ctx.read::<u32>(ETH_HLEN + IP_DADDR)
        && matches!(ctx.read::<u16>(ETH_HLEN - 2), Ok(t) if u16::from_be(t) == ETH_P_IP)
    {
        let dest = match seen.dest {
            Some((addr, n)) if addr == daddr => n,
            _ => policy::network_of(daddr),
        };
        // Encrypted packets keep the bridge path, the one IPsec is tested on.
        if policy::mark_encrypted(&ctx, dest) {
            return verdict;
        }
        if let Some(vxlan) = remote_uplink(&ctx) {
            if let Some(verdict) = try_encap(&ctx, vxlan, seen.net) {
                return verdict;
            }
            count_reason(MeshReason::FastPathTx);
            // SAFETY: a helper with plain arguments; it only records where
            // the skb goes once this program returns.
            return unsafe { bpf_redirect(vxlan, 0) } as i32;
        }
    }
    verdict
}

/// Map entries `try_task_in` read for a frame, so that what follows it in
/// `shoal_task_in` need not read them again: the veth's network, and an
/// address with its entry in the networks trie (`None` inside: looked up,
/// none there).
#[derive(Default)]
struct Seen {
    net: Option<u32>,
    dest: Option<(u32, Option<NetEntry>)>,
}

#[classifier]
pub fn shoal_task_out(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let veth = unsafe { (*ctx.skb.skb).ifindex };
    match try_task_out(&ctx, veth, None) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    }
}

/// The fast path's receive side. A frame the VXLAN device decapsulated for
/// a task on this node gets what the task's veth would have done to it on
/// the way in (`shoal_task_out`) and goes straight into the task's
/// namespace: no bridge, no veth transmit, no second trip through the
/// backlog. Frames for anyone else (the node's bridge, ARP, broadcasts, a
/// MAC no local task has) go on to the bridge as before.
#[classifier]
pub fn shoal_vxlan_in(ctx: TcContext) -> i32 {
    let Some(veth) = local_peer(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    let verdict = match try_task_out(&ctx, veth, None) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    };
    if verdict == TC_ACT_SHOT {
        return verdict;
    }
    count_reason(MeshReason::FastPathRx);
    // SAFETY: a helper with plain arguments; it only records where the skb
    // goes once this program returns.
    unsafe { bpf_redirect_peer(veth, 0) as i32 }
}

/// The host-side veth of the local task this IPv4 frame is for, if the
/// frame arrived on that task's network's VXLAN device. The veth's
/// isolation entry must own the destination address: an entry left by a
/// task that is gone (its ifindex maybe reused) never redirects.
#[inline(always)]
fn local_peer(ctx: &TcContext) -> Option<u32> {
    let ethertype = ctx.read::<u16>(ETH_HLEN - 2).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
    let mac = ctx.read::<[u8; 6]>(0).ok()?;
    // SAFETY: the context pointer is valid for the program's run.
    let dev = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain value, copied out at once.
    let veth = unsafe { PEERS.get(PeerKey::new(dev, mac)) }.copied()?;
    let daddr = ctx.read::<u32>(ETH_HLEN + IP_DADDR).ok()?;
    policy::endpoint_of(veth)
        .filter(|ep| ep.owns(daddr))
        .map(|_| veth)
}

/// The VXLAN device to hand a task's frame to, when the frame is unicast
/// to another node: not to this node's bridge (the gateway, VIPs, the
/// node's addresses, egress), not to another task here (the bridge
/// delivers it, through that task's veth programs), not broadcast or
/// multicast. The VXLAN device's static FDB sends it to its node as the
/// bridge would have after its own FDB lookup.
#[inline(always)]
fn remote_uplink(ctx: &TcContext) -> Option<u32> {
    // SAFETY: the context pointer is valid for the program's run.
    let veth = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain value, copied out at once.
    let vxlan = unsafe { UPLINKS.get(veth) }.copied()?;
    let mac = ctx.read::<[u8; 6]>(0).ok()?;
    if mac[0] & 1 != 0 {
        return None;
    }
    let cfg = CONFIG.get(0)?;
    if cfg.node_mac == mac || cfg.node_mac == [0; 6] {
        return None;
    }
    // SAFETY: only presence is read.
    if unsafe { PEERS.get(PeerKey::new(vxlan, mac)) }.is_some() {
        return None;
    }
    Some(vxlan)
}

/// bpf_skb_adjust_room flags (linux/bpf.h): the room is an IPv4 + UDP
/// tunnel carrying Ethernet, whose inner header is the last `ETH_HLEN`
/// bytes of the room. With them the kernel marks the skb encapsulated
/// (inner headers, `SKB_GSO_UDP_TUNNEL`), as a VXLAN device's transmit
/// does, so a GSO packet is segmented, or its segments checksummed, as
/// tunnelled TCP.
const BPF_F_ADJ_ROOM_ENCAP_L3_IPV4: u64 = 1 << 1;
const BPF_F_ADJ_ROOM_ENCAP_L4_UDP: u64 = 1 << 4;
const BPF_F_ADJ_ROOM_ENCAP_L2_ETH: u64 = 1 << 6;
const BPF_ADJ_ROOM_ENCAP_L2_SHIFT: u64 = 56;
/// What encapsulation adds after the outer Ethernet header.
const ENCAP_LEN: usize = IPV4_MIN_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
/// The outer UDP source port is taken from the inner flow's hash in the
/// kernel's default local port range, as `udp_flow_src_port` does for a
/// VXLAN device: one flow keeps one outer tuple (no reordering across
/// underlay paths), different flows spread.
const SPORT_MIN: u32 = 32768;
const SPORT_SPAN: u32 = 60999 - 32768;
/// The outer TTL a VXLAN device without `ttl` gives (the route's default).
const OUTER_TTL: u8 = 64;
const VXLAN_F_VNI: u8 = 0x08;

/// The fast path's send side without the VXLAN device: a task's frame for
/// a MAC the device's FDB sends to another node (mirrored in `VTEPS`)
/// gets the outer headers that device would give it (its source address,
/// port and VNI, a flow-hashed source port, no UDP checksum, DF clear)
/// and goes to the underlay's neighbour output. `None`: no entry, or the
/// kernel refused to grow the frame: nothing was changed, and the VXLAN
/// device takes it as before. `net`: the veth's network, if read already.
#[inline(always)]
fn try_encap(ctx: &TcContext, vxlan: u32, net: Option<u32>) -> Option<i32> {
    let inner: [u8; ETH_HLEN] = ctx.read(0).ok()?;
    let mac = [inner[0], inner[1], inner[2], inner[3], inner[4], inner[5]];
    // SAFETY: a plain value, copied out at once.
    let vtep = unsafe { VTEPS.get(PeerKey::new(vxlan, mac)) }.copied()?;
    let net = net.or_else(|| policy::endpoint(ctx).map(|ep| ep.net));
    // An entry left under a reused device index names another network.
    if vtep.underlay == 0 || net != Some(vtep.vni) {
        return None;
    }
    if !fits_underlay(ctx, vtep.underlay) {
        count_reason(MeshReason::FastPathMtu);
        return None;
    }
    let outer_len = ctx.len() as usize - ETH_HLEN + ENCAP_LEN;
    // SAFETY: the context pointer is valid for the program's run.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) } as u32;
    let sport = (((u64::from(hash) * u64::from(SPORT_SPAN)) >> 32) as u32 + SPORT_MIN) as u16;
    // SAFETY: a helper without arguments.
    let id = unsafe { bpf_get_prandom_u32() } as u16;
    ctx.adjust_room(
        ENCAP_LEN as i32,
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_FIXED_GSO)
            | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
            | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH
            | (ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT,
    )
    .ok()?;
    // From here the frame is the outer one: it cannot go back.
    let h = vxlan_headers(&inner, &vtep, outer_len, sport, id);
    if ctx.store(0, &h, 0).is_err() {
        return Some(fail(MeshReason::Rewrite.into()));
    }
    count_reason(MeshReason::FastPathEncap);
    // SAFETY: a helper with plain arguments (no next hop given: the
    // kernel routes the outer destination on that device); it only
    // records where the skb goes once this program returns.
    Some(unsafe { bpf_redirect_neigh(vtep.underlay, core::ptr::null_mut(), 0, 0) } as i32)
}

/// Whether the frame, encapsulated, fits the underlay's MTU (read from the
/// device each time, so a change applies at once). A GSO frame is judged
/// by its segments: its IPv4 and TCP or UDP headers and `gso_size` bytes.
/// A frame that does not fit goes to the VXLAN device, whose transmit
/// answers a DF packet with ICMP "fragmentation needed" (or fragments the
/// outer packet of one without DF), which this path cannot do.
#[inline(always)]
fn fits_underlay(ctx: &TcContext, underlay: u32) -> bool {
    let mut mtu: u32 = 0;
    // SAFETY: the context's skb and a stack slot for the helper's output;
    // with no length given it only reports the device's MTU here.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), underlay, &mut mtu, 0, 0) };
    if rc < 0 {
        return false;
    }
    // SAFETY: the context pointer is valid for the program's run.
    let gso = unsafe { (*ctx.skb.skb).gso_size };
    let inner_l3 = if gso == 0 {
        ctx.len().saturating_sub(ETH_HLEN as u32)
    } else {
        let Some(headers) = l4_headers_end(ctx) else {
            return false;
        };
        (headers - ETH_HLEN) as u32 + gso
    };
    inner_l3 + ENCAP_LEN as u32 <= mtu
}

/// Where a TCP or UDP frame's transport header ends (the IPv4 options and
/// TCP options counted); `None` for anything else.
#[inline(always)]
fn l4_headers_end(ctx: &TcContext) -> Option<usize> {
    let ip: Ipv4Fixed = ctx.read(ETH_HLEN).ok()?;
    let l4 = ETH_HLEN + usize::from(ip.ver_ihl & 0x0f) * 4;
    match ip.proto {
        IPPROTO_UDP => Some(l4 + UDP_HLEN),
        IPPROTO_TCP => tcp_offset_flags(ctx, l4).ok().map(|(len, _)| l4 + len),
        _ => None,
    }
}

/// The outer Ethernet, IPv4, UDP and VXLAN headers and the inner Ethernet
/// header `inner`, for an outer IPv4 packet of `outer_len` bytes. The
/// outer MACs are the inner ones: the neighbour output writes the real
/// ones, and wants a unicast destination to start from.
#[inline(always)]
fn vxlan_headers(
    inner: &[u8; ETH_HLEN],
    vtep: &Vtep,
    outer_len: usize,
    sport: u16,
    id: u16,
) -> [u8; ETH_HLEN + ENCAP_LEN] {
    let mut h = [0u8; ETH_HLEN + ENCAP_LEN];
    h[..12].copy_from_slice(&inner[..12]);
    h[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    // A GSO packet's lengths are the segmentation's to set; one past
    // 64 KiB cannot carry a length (the kernel writes 0 then too).
    let tot = u16::try_from(outer_len).unwrap_or(0);
    let ip = ETH_HLEN;
    h[ip] = 0x45;
    h[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
    h[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
    h[ip + 8] = OUTER_TTL;
    h[ip + 9] = IPPROTO_UDP;
    h[ip + IP_SADDR..ip + IP_SADDR + 4].copy_from_slice(&vtep.local.to_ne_bytes());
    h[ip + IP_DADDR..ip + IP_DADDR + 4].copy_from_slice(&vtep.remote.to_ne_bytes());
    let mut sum: u32 = 0;
    let mut i = ip;
    while i < ip + IPV4_MIN_HLEN {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    h[ip + IP_CSUM..ip + IP_CSUM + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = ip + IPV4_MIN_HLEN;
    h[udp..udp + 2].copy_from_slice(&sport.to_be_bytes());
    h[udp + 2..udp + 4].copy_from_slice(&vtep.port.to_be_bytes());
    let ulen = u16::try_from(outer_len - IPV4_MIN_HLEN).unwrap_or(0);
    h[udp + 4..udp + 6].copy_from_slice(&ulen.to_be_bytes());
    let vx = udp + UDP_HLEN;
    h[vx] = VXLAN_F_VNI;
    h[vx + 4..vx + 8].copy_from_slice(&(vtep.vni << 8).to_be_bytes());
    h[vx + VXLAN_HLEN..].copy_from_slice(inner);
    h
}

/// A failure, with the service to charge the drop to when there is one.
struct Fail {
    reason: MeshReason,
    service: Option<u32>,
}

impl From<MeshReason> for Fail {
    #[inline(always)]
    fn from(reason: MeshReason) -> Self {
        Fail {
            reason,
            service: None,
        }
    }
}

#[inline(always)]
fn count_reason(reason: MeshReason) {
    if let Some(n) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn fail(e: Fail) -> i32 {
    count_reason(e.reason);
    if !e.reason.drops() {
        return TC_ACT_UNSPEC;
    }
    if let Some(id) = e.service {
        with_stats(id, |s| s.drops += 1);
    }
    TC_ACT_SHOT
}

#[inline(always)]
fn with_stats(service: u32, f: impl FnOnce(&mut ServiceStats)) {
    if let Some(s) = SERVICE_STATS.get_ptr_mut(service) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        f(unsafe { &mut *s });
    }
}

/// An IPv4 TCP/UDP packet or ICMP echo: its 5-tuple and where its L4
/// header starts.
struct Packet {
    flow: FlowKey,
    l4: usize,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
    /// The first fragment of a datagram (the later ones never get here).
    first_fragment: bool,
}

/// The fixed part of the IPv4 header, read in one helper call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Fixed {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    csum: u16,
    saddr: u32,
    daddr: u32,
}
const _: () = assert!(core::mem::size_of::<Ipv4Fixed>() == IPV4_MIN_HLEN);

/// The IPv4 header of any IPv4 packet (isolation looks at every protocol);
/// `Ok(None)` for other ethertypes.
#[inline(always)]
fn parse_l3(ctx: &TcContext) -> Result<Option<Ipv4Fixed>, MeshReason> {
    let Ok(ethertype) = ctx.read::<u16>(ETH_HLEN - 2) else {
        return Ok(None);
    };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Ok(None);
    }
    let ip: Ipv4Fixed = ctx.read(ETH_HLEN).map_err(|_| MeshReason::TruncatedIpv4)?;
    if ip.ver_ihl >> 4 != 4 || usize::from(ip.ver_ihl & 0x0f) * 4 < IPV4_MIN_HLEN {
        return Err(MeshReason::BadIpv4Header);
    }
    Ok(Some(ip))
}

/// `Ok(None)`: not IPv4 TCP/UDP/ICMP echo, or a later fragment — not the
/// mesh's.
///
/// Reads are bounded against the linear data or, past it, the whole skb
/// (packet.rs), so a short packet is an error, never an out-of-bounds
/// read, and the offsets may depend on the IHL.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Option<Packet>, MeshReason> {
    let Ok(ethertype) = ctx.read::<u16>(ETH_HLEN - 2) else {
        // Shorter than Ethernet: not IPv4; the counter program counts it.
        return Ok(None);
    };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Ok(None);
    }
    let ip: Ipv4Fixed = ctx.read(ETH_HLEN).map_err(|_| MeshReason::TruncatedIpv4)?;
    let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
    if ip.ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(MeshReason::BadIpv4Header);
    }
    let (l4_min, proto) = match ip.proto {
        IPPROTO_TCP => (TCP_HLEN, IPPROTO_TCP),
        IPPROTO_UDP => (UDP_HLEN, IPPROTO_UDP),
        IPPROTO_ICMP => (ICMP_HLEN, IPPROTO_ICMP),
        _ => return Ok(None),
    };
    let frag = u16::from_be(ip.frag_off);
    if frag & IP_OFFSET_MASK != 0 {
        // A later fragment: what sits where the ports would be is payload.
        return Ok(None);
    }
    let l4 = ETH_HLEN + ihl;
    if (ctx.len() as usize) < l4 {
        // Options cut short.
        return Err(MeshReason::TruncatedIpv4);
    }
    if (ctx.len() as usize) < l4 + l4_min {
        return Err(MeshReason::TruncatedL4);
    }
    let ports: [u16; 2] = if proto == IPPROTO_ICMP {
        // Type, code, checksum and identifier in one read.
        let h: [u8; ICMP_ID + 2] = ctx.read(l4).map_err(|_| MeshReason::TruncatedL4)?;
        let id = u16::from_ne_bytes([h[ICMP_ID], h[ICMP_ID + 1]]);
        match h[0] {
            ICMP_ECHO_REQUEST => [id, 0],
            ICMP_ECHO_REPLY => [0, id],
            // Errors and the rest: not a flow of their own.
            _ => return Ok(None),
        }
    } else {
        ctx.read(l4 + L4_SPORT)
            .map_err(|_| MeshReason::TruncatedL4)?
    };
    let tcp_flags = if proto == IPPROTO_TCP {
        tcp_offset_flags(ctx, l4)
            .map_err(|_| MeshReason::TruncatedL4)?
            .1
    } else {
        0
    };
    Ok(Some(Packet {
        flow: FlowKey {
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: ports[0],
            dport: ports[1],
            proto,
            _pad: [0; 3],
        },
        l4,
        tcp_flags,
        first_fragment: frag & IP_MF != 0,
    }))
}

/// The TCP header at `l4`: its length (the data offset) and its flags, in
/// one two-byte read (packet.rs reads a byte alone through the helper).
#[inline(always)]
fn tcp_offset_flags(ctx: &TcContext, l4: usize) -> Result<(usize, u8), i64> {
    let b: [u8; 2] = ctx.read(l4 + TCP_FLAGS - 1)?;
    Ok((usize::from(b[0] >> 4) * 4, b[1]))
}

#[inline(always)]
fn lookup_service(flow: &FlowKey) -> Option<Service> {
    let exact = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: Service is Copy; copied out at once (a concurrent update can
    // at worst give a mix of old and new fields of one frontend).
    if let Some(s) = unsafe { SERVICES.get(exact) } {
        return Some(*s);
    }
    let any_port = ServiceKey { port: 0, ..exact };
    unsafe { SERVICES.get(any_port) }.copied()
}

/// From the underlay: published ports are DNATed; anything else addressed
/// to an overlay (a task's address, a VIP, a gateway: someone added a
/// route) is dropped, so tasks are reached through published ports only.
#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Result<i32, Fail> {
    let Some(ip) = parse_l3(ctx)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    let checked = check_vxlan(ctx, &ip)?;
    if let Some(verdict) = try_decap(ctx, &ip, checked) {
        return Ok(verdict);
    }
    // A packet the mesh cannot parse is still refused an overlay address.
    let pkt = match parse(ctx) {
        Ok(p) => p,
        Err(reason) => {
            policy::check_underlay(ip.daddr)?;
            return Err(reason.into());
        }
    };
    let Some(pkt) = pkt else {
        policy::check_underlay(ip.daddr)?;
        return Ok(TC_ACT_UNSPEC);
    };
    // Replies to tasks' egress flows first: their translated destination
    // is an overlay address the underlay check refuses.
    if let Some(verdict) = egress::reverse(ctx, &pkt)? {
        return Ok(verdict);
    }
    if let Some(svc) = lookup_service(&pkt.flow) {
        if svc.flags & SVC_F_VIP != 0 {
            return Err(MeshReason::UnderlayToOverlay.into());
        }
        return dnat(ctx, &pkt, svc, Origin::Underlay);
    }
    policy::check_underlay(ip.daddr)?;
    Ok(egress::check_no_flow(ctx, &pkt)?)
}

/// VXLAN from the underlay: an encrypted VNI's must have come through ESP.
/// Later fragments carry no header to check and pass (the stack reassembles
/// before the VXLAN socket; the first fragment was checked). On success,
/// the VNI checked and whether it is an encrypted network's, if it was.
#[inline(always)]
fn check_vxlan(ctx: &TcContext, ip: &Ipv4Fixed) -> Result<Option<(u32, bool)>, MeshReason> {
    if ip.proto != IPPROTO_UDP || u16::from_be(ip.frag_off) & IP_OFFSET_MASK != 0 {
        return Ok(None);
    }
    let l4 = ETH_HLEN + usize::from(ip.ver_ihl & 0x0f) * 4;
    let Ok(dport) = ctx.read::<u16>(l4 + L4_DPORT) else {
        return Ok(None);
    };
    let Some(vni) = vxlan_vni(ctx, l4) else {
        return Ok(None);
    };
    let encrypted = policy::check_vxlan(ctx, u16::from_be(dport), vni)?;
    Ok(Some((vni, encrypted)))
}

/// VXLAN header length; the inner frame starts this far after the outer
/// IPv4 header (no options), UDP and VXLAN headers.
const VXLAN_HLEN: usize = 8;
const INNER: usize = ETH_HLEN + IPV4_MIN_HLEN + UDP_HLEN + VXLAN_HLEN;
/// What decapsulation removes after the outer Ethernet header: outer
/// IPv4, UDP, VXLAN and the inner Ethernet header (whose MACs are copied
/// into the outer one).
const DECAP_LEN: i32 = ENCAP_LEN as i32;

/// The fast path's receive side before the stack: VXLAN to this node's
/// VTEP, of an unencrypted overlay, for a local task (the same checks as
/// [`local_peer`], keyed by the overlay's VXLAN device), loses its outer
/// headers here and goes straight into the task's namespace after the
/// task veth's own work: no IP and UDP receive, no VXLAN device, no GRO
/// cell. `None`: not such a packet, or the kernel refused to shrink it:
/// the stack takes it as before, unchanged. `checked`: what
/// [`check_vxlan`] found.
#[inline(always)]
fn try_decap(ctx: &TcContext, ip: &Ipv4Fixed, checked: Option<(u32, bool)>) -> Option<i32> {
    if ip.proto != IPPROTO_UDP
        || ip.ver_ihl != 0x45
        || u16::from_be(ip.frag_off) & (IP_OFFSET_MASK | IP_MF) != 0
    {
        return None;
    }
    // Only to this node's VTEP, which its bridge MAC carries.
    let vtep = CONFIG.get(0)?.node_mac;
    if ip.daddr.to_ne_bytes() != [vtep[2], vtep[3], vtep[4], vtep[5]] {
        return None;
    }
    let l4 = ETH_HLEN + IPV4_MIN_HLEN;
    let vx: [u8; VXLAN_HLEN] = ctx.read(l4 + UDP_HLEN).ok()?;
    // The I flag: a VNI is present.
    if vx[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from(vx[4]) << 16 | u32::from(vx[5]) << 8 | u32::from(vx[6]);
    // SAFETY: a plain value, copied out at once.
    let dev = unsafe { VXLANS.get(vni) }.copied()?;
    let dport: u16 = ctx.read(l4 + L4_DPORT).ok()?;
    let encrypted = match checked {
        Some((v, encrypted)) if v == vni => encrypted,
        _ => policy::encrypted_vni(vni),
    };
    if u16::from_be(dport) != dev.port || encrypted {
        return None;
    }
    let eth: [u8; ETH_HLEN] = ctx.read(INNER).ok()?;
    if eth[12..14] != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let mac = [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]];
    // SAFETY: a plain value, copied out at once.
    let veth = unsafe { PEERS.get(PeerKey::new(dev.ifindex, mac)) }.copied()?;
    let daddr: u32 = ctx.read(INNER + ETH_HLEN + IP_DADDR).ok()?;
    let ep = policy::endpoint_of(veth).filter(|ep| ep.owns(daddr))?;
    // FIXED_GSO: the inner segments keep their size (the helper would
    // grow gso_size by what it removed, and the task's TCP would misjudge
    // its peer's MSS from it).
    ctx.adjust_room(
        -DECAP_LEN,
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_FIXED_GSO),
    )
    .ok()?;
    // From here the packet is the inner one: it cannot go back.
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&eth[..12]);
    if ctx.store(0, &macs, 0).is_err() {
        return Some(fail(MeshReason::Rewrite.into()));
    }
    let verdict = match try_task_out(ctx, veth, Some(ep)) {
        Ok(verdict) => verdict,
        Err(e) => fail(e),
    };
    if verdict == TC_ACT_SHOT {
        return Some(verdict);
    }
    count_reason(MeshReason::FastPathDecap);
    // SAFETY: a helper with plain arguments; it only records where the skb
    // goes once this program returns.
    Some(unsafe { bpf_redirect_peer(veth, 0) } as i32)
}

/// The VNI of a UDP datagram read as VXLAN (header: flags 1, reserved 3,
/// VNI 3, reserved 1); `None` if it is too short to be.
#[inline(always)]
fn vxlan_vni(ctx: &TcContext, l4: usize) -> Option<u32> {
    let vni = ctx.read::<[u8; 4]>(l4 + UDP_HLEN + 4).ok()?;
    Some(u32::from(vni[0]) << 16 | u32::from(vni[1]) << 8 | u32::from(vni[2]))
}

/// From a task: its connections to frontends are balanced as a client's
/// are (VIPs of its own networks only); its replies to flows another node
/// DNATed go back to that node; everything else must pass isolation.
#[inline(always)]
fn try_task_in(ctx: &TcContext, seen: &mut Seen) -> Result<i32, Fail> {
    let Some(ip) = parse_l3(ctx)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    let ep = policy::endpoint(ctx).ok_or(MeshReason::UnknownEndpoint)?;
    seen.net = Some(ep.net);
    policy::check_source(ep, ip.saddr)?;
    let pkt = match parse(ctx) {
        Ok(p) => p,
        Err(reason) => {
            // Malformed L4 passes to the stack, but only where it may go.
            let n = policy::check_destination(ep, ip.saddr, ip.daddr, None)?;
            seen.dest = Some((ip.daddr, n));
            return Err(reason.into());
        }
    };
    let Some(pkt) = pkt else {
        let n = policy::check_destination(ep, ip.saddr, ip.daddr, None)?;
        seen.dest = Some((ip.daddr, n));
        return Ok(TC_ACT_UNSPEC);
    };
    // Frontends and the replies of flows another node DNATed only ever go
    // to this node's bridge MAC (VIPs resolve to it, the rest is routed):
    // a frame to any other MAC is task to task, and isolation is all it
    // needs. That spares such frames three hash lookups.
    if !to_node_bridge(ctx) {
        let n = policy::check_destination(ep, pkt.flow.saddr, pkt.flow.daddr, Some(&pkt.flow))?;
        seen.dest = Some((pkt.flow.daddr, n));
        return Ok(TC_ACT_UNSPEC);
    }
    if let Some(svc) = lookup_service(&pkt.flow) {
        if svc.flags & SVC_F_VIP != 0 {
            policy::check_vip(ep, pkt.flow.daddr)?;
        }
        return dnat(ctx, &pkt, svc, Origin::Task);
    }
    // SAFETY: ReturnPath is Copy; copied out at once.
    let Some(ret) = (unsafe { RETURN.get(pkt.flow) }).copied() else {
        let n = policy::check_destination(ep, pkt.flow.saddr, pkt.flow.daddr, Some(&pkt.flow))?;
        seen.dest = Some((pkt.flow.daddr, n));
        return Ok(TC_ACT_UNSPEC);
    };
    // The destination MAC only: the bridge forwards the frame to the VXLAN
    // port whose FDB sends that node's MAC to its VTEP, and that node's
    // bridge hands it to its stack, which routes it out of the data
    // interface through the reverse NAT.
    ctx.store(0, &ret.mac, 0)
        .map_err(|_| Fail::from(MeshReason::Rewrite))?;
    Ok(TC_ACT_OK)
}

/// Whether a task's frame is addressed to this node's bridge, or this
/// node's bridge MAC is not known yet (then every frame may be).
#[inline(always)]
fn to_node_bridge(ctx: &TcContext) -> bool {
    let Some(node) = CONFIG.get(0).map(|c| c.node_mac) else {
        return true;
    };
    node == [0; 6] || ctx.read::<[u8; 6]>(0).is_ok_and(|mac| mac == node)
}

/// To a task: replies from the backends it reached through a VIP get the
/// VIP back; flows routed here by another node are remembered. `ep`: the
/// veth's endpoint, if read already.
#[inline(always)]
fn try_task_out(ctx: &TcContext, veth: u32, ep: Option<&Endpoint>) -> Result<i32, Fail> {
    let Some(pkt) = parse(ctx)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    // SAFETY: RevNat is Copy; copied out at once.
    if let Some(rev) = (unsafe { REVNAT.get(pkt.flow) }).copied() {
        return reverse_nat(ctx, &pkt, rev);
    }
    remember_return(ctx, &pkt)?;
    if let Some(ep) = ep.or_else(|| policy::endpoint_of(veth))
        && let Err(reason) = policy::permit_replies(ep, &pkt.flow)
    {
        // Passed: the packet is fine; only its replies may be refused.
        count_reason(reason);
    }
    Ok(TC_ACT_UNSPEC)
}

/// Records the bridge MAC of the node that routed this packet here, unless
/// it is this node's own (or the frame came straight from another task).
#[inline(always)]
fn remember_return(ctx: &TcContext, pkt: &Packet) -> Result<(), Fail> {
    let Ok(src) = ctx.read::<[u8; 6]>(6) else {
        return Ok(());
    };
    if !is_bridge_mac(&src) {
        return Ok(());
    }
    let cfg = CONFIG.get(0).copied().unwrap_or_default();
    if cfg.node_mac == [0; 6] {
        return Ok(());
    }
    let reply = FlowKey {
        saddr: pkt.flow.daddr,
        daddr: pkt.flow.saddr,
        sport: pkt.flow.dport,
        dport: pkt.flow.sport,
        proto: pkt.flow.proto,
        _pad: [0; 3],
    };
    if cfg.node_mac == src {
        // Routed by this node: the flow entered here. The mesh keeps the
        // client's address, so a client that reuses its port towards
        // another node's address makes the same 4-tuple here as a flow
        // that entered there; that flow's return path must not take this
        // one's replies (they would reach a node that never saw the SYN).
        // Checked when a connection starts (and for every UDP datagram).
        let starts =
            pkt.flow.proto == IPPROTO_UDP || pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        // SAFETY: only whether an entry is there is read.
        if starts && unsafe { RETURN.get(reply) }.is_some() {
            let _ = RETURN.remove(reply);
        }
        return Ok(());
    }
    // SAFETY: ReturnPath is Copy; read at once.
    if let Some(known) = unsafe { RETURN.get(reply) }
        && known.mac == src
    {
        return Ok(());
    }
    let path = ReturnPath {
        mac: src,
        _pad: [0; 2],
    };
    // Not dropped when the insert fails: the packet itself is fine, only its
    // replies would leave untranslated; counted so it shows.
    if RETURN.insert(reply, path, 0).is_err() {
        count_reason(MeshReason::ReturnInsert);
    }
    Ok(())
}

/// Where a packet to a frontend came from.
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    /// The data interface: clients, and replies to the node's own
    /// connections.
    Underlay,
    /// A task's veth.
    Task,
}

/// Whether this node has a connection for the packet's 4-tuple (TCP: not
/// a listener, time-wait and request sockets count; UDP: a connected
/// socket). A packet to a published or egress port that no tracked flow
/// explains (and, for TCP, that does not start a connection) is then a
/// reply to one of the node's own
/// connections whose source port is that port: a client binding it, or an
/// ephemeral range widened over Shoal's ports. The mesh leaves it to the
/// stack: translated it would reach a task that never saw the SYN, dropped
/// the node's connection would fail.
#[inline(always)]
pub fn node_socket(ctx: &TcContext, flow: &FlowKey) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: flow.saddr,
                daddr: flow.daddr,
                sport: flow.sport,
                dport: flow.dport,
            },
        },
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the tuple lives across the call and its size is the IPv4
    // member's, as the helpers require; a socket returned is released below.
    let sk = unsafe {
        match flow.proto {
            IPPROTO_TCP => bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, size, netns, 0),
            IPPROTO_UDP => bpf_sk_lookup_udp(ctx.as_ptr(), &mut tuple, size, netns, 0),
            _ => return false,
        }
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a referenced socket from the lookup; `state` and `dst_port`
    // are readable on every kind it returns. A listener, or an unconnected
    // UDP socket bound to the port, is not a connection of the node's: the
    // published port comes first, as it does in swarm.
    let connection = unsafe {
        match flow.proto {
            IPPROTO_TCP => (*sk).state != TCP_LISTEN,
            _ => (*sk).dst_port != 0,
        }
    };
    // SAFETY: releases the reference the lookup took, on every path.
    unsafe { bpf_sk_release(sk.cast()) };
    connection
}

#[inline(always)]
fn dnat(ctx: &TcContext, pkt: &Packet, svc: Service, origin: Origin) -> Result<i32, Fail> {
    if pkt.first_fragment {
        return Err(MeshReason::Fragment.into());
    }
    let charge = |reason| Fail {
        reason,
        service: Some(svc.id),
    };
    if svc.id >= MAX_SERVICES {
        return Err(MeshReason::BadServiceId.into());
    }

    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let timeout = timeout_ns(pkt.flow.proto);
    // A bare SYN starts a connection: it takes the ring's current choice even
    // if an old flow with the same 5-tuple is remembered.
    let syn = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let tracked = if syn {
        None
    } else {
        CONNTRACK.get_ptr_mut(pkt.flow)
    };
    let (addr, port, flags) = match tracked.and_then(|c| live_conn(c, &svc, now, timeout)) {
        Some(c) => c,
        None => {
            // UDP has no start: a reply to the node's own datagram has no
            // tracked flow either, and a socket of the node takes it.
            let starts = syn || pkt.flow.proto == IPPROTO_ICMP;
            if !starts && origin == Origin::Underlay && node_socket(ctx, &pkt.flow) {
                return Ok(TC_ACT_UNSPEC);
            }
            let c = new_conn(&pkt.flow, &svc, now).map_err(charge)?;
            with_stats(svc.id, |s| s.new_flows += 1);
            c
        }
    };

    rewrite(
        ctx,
        pkt,
        IP_DADDR,
        L4_DPORT,
        pkt.flow.daddr,
        addr,
        pkt.flow.dport,
        port,
    )
    .map_err(charge)?;
    with_stats(svc.id, |s| {
        s.packets += 1;
        s.bytes += u64::from(ctx.len());
        if flags & CONN_F_REMOTE != 0 {
            s.remote += 1;
        }
    });
    // A remote backend (CONN_F_REMOTE) is reached by routing: the stack sends
    // the DNATed packet into the overlay the backend's address is on.
    Ok(TC_ACT_OK)
}

#[inline(always)]
fn timeout_ns(proto: u8) -> u64 {
    let cfg = CONFIG.get(0).copied().unwrap_or_default();
    let (set, default) = if proto == IPPROTO_TCP {
        (cfg.tcp_timeout_ns, DEFAULT_TCP_TIMEOUT_NS)
    } else {
        (cfg.udp_timeout_ns, DEFAULT_UDP_TIMEOUT_NS)
    };
    if set == 0 { default } else { set }
}

/// The tracked backend `(addr, port, conn flags)` if the flow is still good:
/// same service, not idle past its timeout, and its backend id still names
/// the same address (ids are reused; a removed backend is never used).
#[inline(always)]
fn live_conn(c: *mut Conn, svc: &Service, now: u64, timeout: u64) -> Option<(u32, u16, u32)> {
    // SAFETY: a live LRU entry; fields are plain integers, a racing update by
    // another CPU can only make one read stale, which the checks tolerate.
    let conn = unsafe { &mut *c };
    if conn.service != svc.id || now.wrapping_sub(conn.last_seen_ns) > timeout {
        return None;
    }
    let be = BACKENDS.get(conn.backend)?;
    if be.addr == 0 || be.addr != conn.backend_addr {
        return None;
    }
    if now.wrapping_sub(conn.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
        conn.last_seen_ns = now;
    }
    Some((conn.backend_addr, conn.backend_port, conn.flags))
}

/// Chooses a backend through the service's Maglev table and records the
/// flow both ways. Returns `(addr, port, conn flags)`.
#[inline(always)]
fn new_conn(flow: &FlowKey, svc: &Service, now: u64) -> Result<(u32, u16, u32), MeshReason> {
    if svc.backend_count == 0 {
        return Err(MeshReason::NoBackend);
    }
    let hash = flow_hash(flow, svc.flags & SVC_F_AFFINITY != 0);
    let id = *MAGLEV
        .get(maglev_index(svc.id, hash))
        .ok_or(MeshReason::BadServiceId)?;
    if id == BACKEND_NONE {
        return Err(MeshReason::NoBackend);
    }
    let be = BACKENDS.get(id).ok_or(MeshReason::MissingBackend)?;
    if be.addr == 0 {
        return Err(MeshReason::MissingBackend);
    }
    let port = if svc.target_port != 0 {
        svc.target_port
    } else {
        flow.dport
    };
    let flags = if be.flags & BACKEND_F_LOCAL != 0 {
        0
    } else {
        CONN_F_REMOTE
    };
    let conn = Conn {
        backend: id,
        service: svc.id,
        backend_addr: be.addr,
        backend_port: port,
        _pad: 0,
        flags,
        _pad2: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    let reply = FlowKey {
        saddr: be.addr,
        daddr: flow.saddr,
        sport: port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let rev = RevNat {
        addr: flow.daddr,
        port: flow.dport,
        _pad: 0,
        service: svc.id,
    };
    // Reverse entry first: a forward entry without it would DNAT packets
    // whose replies then leave un-translated.
    REVNAT
        .insert(reply, rev, 0)
        .map_err(|_| MeshReason::ConntrackInsert)?;
    CONNTRACK
        .insert(flow, conn, 0)
        .map_err(|_| MeshReason::ConntrackInsert)?;
    Ok((be.addr, port, flags))
}

#[inline(always)]
fn try_reply(ctx: &TcContext) -> Result<i32, Fail> {
    let Some(pkt) = parse(ctx)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    // An encrypted network's VXLAN leaves as ESP (transformed before TC)
    // or inside WireGuard's UDP: in clear here it is a leak, stopped.
    if pkt.flow.proto == IPPROTO_UDP
        && let Some(vni) = vxlan_vni(ctx, pkt.l4)
    {
        policy::check_vxlan_out(u16::from_be(pkt.flow.dport), vni)?;
        // This node's own VXLAN is neither a reply the mesh translated
        // nor a task's flow to the outside: no lookups for it.
        if u16::from_be(pkt.flow.dport) == VXLAN_PORT && pkt.flow.saddr == egress::node_addr() {
            return Ok(TC_ACT_UNSPEC);
        }
    }
    // SAFETY: RevNat is Copy; copied out at once.
    let Some(rev) = (unsafe { REVNAT.get(pkt.flow) }).copied() else {
        // Not a reply the mesh translated: a task's flow to the outside?
        return Ok(egress::snat(ctx, &pkt)?.unwrap_or(TC_ACT_UNSPEC));
    };
    reverse_nat(ctx, &pkt, rev)
}

#[inline(always)]
fn reverse_nat(ctx: &TcContext, pkt: &Packet, rev: RevNat) -> Result<i32, Fail> {
    if pkt.first_fragment {
        return Err(MeshReason::Fragment.into());
    }
    rewrite(
        ctx,
        pkt,
        IP_SADDR,
        L4_SPORT,
        pkt.flow.saddr,
        rev.addr,
        pkt.flow.sport,
        rev.port,
    )
    .map_err(|reason| Fail {
        reason,
        service: Some(rev.service),
    })?;
    with_stats(rev.service, |s| {
        s.reply_packets += 1;
        s.reply_bytes += u64::from(ctx.len());
    });
    Ok(TC_ACT_OK)
}

/// Rewrites one address and port of the packet (network order values) and
/// fixes the IPv4 and L4 checksums incrementally. The helpers also keep
/// `skb->csum` right for CHECKSUM_COMPLETE and leave a CHECKSUM_PARTIAL
/// packet's pseudo-header sum consistent. ICMP echo: the "port" is the
/// identifier, whichever side `port_field` names, and its checksum covers
/// no pseudo-header.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    ip_field: usize,
    port_field: usize,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
) -> Result<(), MeshReason> {
    let (csum, mangled_0, port_at) = match pkt.flow.proto {
        IPPROTO_TCP => (pkt.l4 + TCP_CSUM, 0, pkt.l4 + port_field),
        IPPROTO_UDP => (pkt.l4 + UDP_CSUM, BPF_F_MARK_MANGLED_0, pkt.l4 + port_field),
        _ => (pkt.l4 + ICMP_CSUM, 0, pkt.l4 + ICMP_ID),
    };
    let e = |_| MeshReason::Rewrite;
    if old_addr != new_addr {
        if pkt.flow.proto != IPPROTO_ICMP {
            ctx.l4_csum_replace(
                csum,
                u64::from(old_addr),
                u64::from(new_addr),
                BPF_F_PSEUDO_HDR | mangled_0 | 4,
            )
            .map_err(e)?;
        }
        ctx.l3_csum_replace(
            ETH_HLEN + IP_CSUM,
            u64::from(old_addr),
            u64::from(new_addr),
            4,
        )
        .map_err(e)?;
        ctx.store(ETH_HLEN + ip_field, &new_addr, 0).map_err(e)?;
    }
    if old_port != new_port {
        ctx.l4_csum_replace(
            csum,
            u64::from(old_port),
            u64::from(new_port),
            mangled_0 | 2,
        )
        .map_err(e)?;
        ctx.store(port_at, &new_port, 0).map_err(e)?;
    }
    Ok(())
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Host builds (clippy, `cargo test --workspace`) only type-check the
/// programs; the real object is built for bpfel-unknown-none by agent/build.rs.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
