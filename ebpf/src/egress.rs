//! Egress SNAT (contract and design in common/src/egress.rs): a task's
//! packets to the outside leave with the node's address; their replies are
//! translated back before isolation looks at them.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap, programs::TcContext};
use shoal_common::{
    egress::{
        EGRESS_PORT_PROBES, MAX_SNAT_FLOWS, SNAT_F_CLOSING, Snat, SnatRev, egress_port,
        is_egress_port, node_addr_of_mac, snat_reply, snat_stale,
    },
    mesh::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, LAST_SEEN_GRANULARITY_NS, MeshReason, flow_hash},
    policy::{NET_F_INGRESS, NET_F_INTERNAL, NET_F_NODE},
};

use crate::{
    CONFIG, IP_DADDR, IP_SADDR, L4_DPORT, L4_SPORT, Packet, TC_ACT_OK, TC_ACT_UNSPEC, count_reason,
    node_socket, policy, rewrite, timeout_ns,
};

// Literal names, as the macro wants; equal to shoal_common::egress's.
#[map(name = "SHOAL_SNAT4_V1")]
static SNAT: LruHashMap<FlowKey, Snat> = LruHashMap::pinned(MAX_SNAT_FLOWS, 0);

#[map(name = "SHOAL_SNATR4_V1")]
static SNAT_REV: LruHashMap<FlowKey, SnatRev> = LruHashMap::pinned(MAX_SNAT_FLOWS, 0);

const BPF_NOEXIST: u64 = 1;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// The node's data address (network order), 0 before the agent set it.
#[inline(always)]
pub fn node_addr() -> u32 {
    let mac = CONFIG.get(0).map(|c| c.node_mac).unwrap_or_default();
    if mac == [0; 6] {
        0
    } else {
        node_addr_of_mac(&mac)
    }
}

/// Whether a task on the network of `saddr` may reach the outside: not on
/// an `--internal` network. Sources outside the overlays are not tasks.
#[inline(always)]
pub fn check_internal(saddr: u32) -> Result<(), MeshReason> {
    match policy::network_of(saddr) {
        Some(n) if n.flags & NET_F_INTERNAL != 0 => Err(MeshReason::EgressInternal),
        _ => Ok(()),
    }
}

/// Refreshes a reply entry: last seen, and whether the flow is closing.
#[inline(always)]
fn touch(rev: *mut SnatRev, pkt: &Packet, now: u64) {
    // SAFETY: a live LRU value; plain integers, a racing CPU can only make
    // one write stale.
    let rev = unsafe { &mut *rev };
    if now.wrapping_sub(rev.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
        rev.last_seen_ns = now;
    }
    if pkt.flow.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        rev.flags |= SNAT_F_CLOSING;
        rev.last_seen_ns = now;
    }
}

/// On the data interface's egress: a task's packet to the outside gets the
/// node's address and its flow's port. `Ok(None)`: not egress traffic.
#[inline(always)]
pub fn snat(ctx: &TcContext, pkt: &Packet) -> Result<Option<i32>, MeshReason> {
    let flow = &pkt.flow;
    // From a task: an overlay address that is not the node's own.
    let Some(src) = policy::network_of(flow.saddr) else {
        return Ok(None);
    };
    if src.net == 0 || src.flags & NET_F_NODE != 0 || policy::network_of(flow.daddr).is_some() {
        return Ok(None);
    }
    if src.flags & NET_F_INTERNAL != 0 {
        return Err(MeshReason::EgressInternal);
    }
    // The ingress network's tasks answer published ports (reverse NAT,
    // before this); they open nothing to the outside through it.
    if src.flags & NET_F_INGRESS != 0 {
        return Ok(None);
    }
    let node = node_addr();
    if node == 0 {
        return Ok(None);
    }
    if pkt.first_fragment {
        return Err(MeshReason::Fragment);
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let port = match known_port(pkt, node, now) {
        Some(p) => p,
        None => {
            let p = new_port(pkt, node, now)?;
            count_reason(MeshReason::EgressTranslated);
            p
        }
    };
    rewrite(
        ctx, pkt, IP_SADDR, L4_SPORT, flow.saddr, node, flow.sport, port,
    )?;
    Ok(Some(TC_ACT_OK))
}

/// The flow's port, if it still owns it (its reply entry names it).
#[inline(always)]
fn known_port(pkt: &Packet, node: u32, now: u64) -> Option<u16> {
    // SAFETY: Snat is Copy; copied out at once.
    let fwd = unsafe { SNAT.get(pkt.flow) }.copied()?;
    if fwd.addr != node {
        return None;
    }
    let rev = SNAT_REV.get_ptr_mut(snat_reply(&pkt.flow, node, fwd.port))?;
    // SAFETY: read of a live LRU value's plain fields.
    let owner = unsafe { ((*rev).addr, (*rev).port) };
    if owner != (pkt.flow.saddr, pkt.flow.sport) {
        return None;
    }
    touch(rev, pkt, now);
    Some(fwd.port)
}

/// Claims a port for a new flow: the first probed one that no live flow
/// to the same destination holds; reply entry first, so the port is owned
/// before any packet uses it.
#[inline(always)]
fn new_port(pkt: &Packet, node: u32, now: u64) -> Result<u16, MeshReason> {
    let flow = &pkt.flow;
    let hash = flow_hash(flow, false);
    let timeout = timeout_ns(flow.proto);
    let rev = SnatRev {
        addr: flow.saddr,
        port: flow.sport,
        _pad: 0,
        flags: 0,
        _pad2: 0,
        last_seen_ns: now,
    };
    let mut i = 0;
    while i < EGRESS_PORT_PROBES {
        let port = egress_port(hash, i).to_be();
        let key = snat_reply(flow, node, port);
        // SAFETY: SnatRev is Copy; copied out at once.
        let held = unsafe { SNAT_REV.get(key) }.copied();
        let claimed = match held {
            None => SNAT_REV.insert(key, rev, BPF_NOEXIST).is_ok(),
            // Taken over: its flow's next packet finds another owner and
            // chooses again.
            Some(old) if snat_stale(&old, now, timeout) => SNAT_REV.insert(key, rev, 0).is_ok(),
            Some(_) => false,
        };
        if claimed {
            let fwd = Snat {
                addr: node,
                port,
                _pad: 0,
            };
            SNAT.insert(flow, fwd, 0)
                .map_err(|_| MeshReason::ConntrackInsert)?;
            return Ok(port);
        }
        i += 1;
    }
    Err(MeshReason::EgressPortsExhausted)
}

/// On the data interface's ingress, before published ports and the
/// underlay check: a reply to a translated flow goes back to its task.
/// `Ok(None)`: not a reply of one; an unexplained packet to the node's
/// egress ports is refused by [`check_no_flow`] after published ports.
#[inline(always)]
pub fn reverse(ctx: &TcContext, pkt: &Packet) -> Result<Option<i32>, MeshReason> {
    let flow = &pkt.flow;
    if !is_egress_port(u16::from_be(flow.dport)) {
        return Ok(None);
    }
    let Some(rev) = SNAT_REV.get_ptr_mut(flow) else {
        return Ok(None);
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    touch(rev, pkt, now);
    // SAFETY: read of a live LRU value's plain fields.
    let (addr, port) = unsafe { ((*rev).addr, (*rev).port) };
    if pkt.first_fragment {
        return Err(MeshReason::Fragment);
    }
    rewrite(
        ctx, pkt, IP_DADDR, L4_DPORT, flow.daddr, addr, flow.dport, port,
    )?;
    Ok(Some(TC_ACT_OK))
}

/// After published ports: a TCP/UDP packet to the node's address in the
/// egress range that no translated flow explains is dropped, so a forged
/// reply reaches neither a task nor the node's stack, unless a socket of
/// the node's own has that 4-tuple (its connection from such a port).
/// ICMP echo replies pass: the node's own pings choose identifiers
/// anywhere.
#[inline(always)]
pub fn check_no_flow(ctx: &TcContext, pkt: &Packet) -> Result<i32, MeshReason> {
    let node = node_addr();
    if node != 0
        && pkt.flow.daddr == node
        && pkt.flow.proto != IPPROTO_ICMP
        && is_egress_port(u16::from_be(pkt.flow.dport))
        && !node_socket(ctx, &pkt.flow)
    {
        return Err(MeshReason::EgressNoFlow);
    }
    Ok(TC_ACT_UNSPEC)
}
