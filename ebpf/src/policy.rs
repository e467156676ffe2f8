//! Isolation: who a task may reach, and what the underlay may reach (the
//! maps and rules are described in common/src/policy.rs). Pure lookups in
//! maps the agent fills; the mesh's entry points call these around their
//! DNAT.

use aya_ebpf::{
    bindings::bpf_xfrm_state,
    helpers::generated::bpf_skb_get_xfrm_state,
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use shoal_common::{
    mesh::{FlowKey, MeshReason},
    policy::{
        Endpoint, IPSEC_MARK, MAX_ENCRYPTED_VNIS, MAX_ENDPOINTS, MAX_NET_ENTRIES, MAX_PERMITS,
        NET_F_ENCRYPTED, NET_F_INGRESS, NET_F_NODE, NetEntry, reply_of,
    },
};

// Literal names, as the macro wants; equal to shoal_common::policy's.
#[map(name = "SHOAL_NET4_V1")]
static NETWORKS: LpmTrie<u32, NetEntry> = LpmTrie::pinned(MAX_NET_ENTRIES, 0);

#[map(name = "SHOAL_EP4_V1")]
static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "SHOAL_PERM4_V1")]
static PERMIT: LruHashMap<FlowKey, u32> = LruHashMap::pinned(MAX_PERMITS, 0);

/// VNI → the UDP port its VXLAN uses, for networks created `--opt
/// encrypted`.
#[map(name = "SHOAL_ENCVNI_V1")]
static ENCRYPTED_VNIS: HashMap<u32, u32> = HashMap::pinned(MAX_ENCRYPTED_VNIS, 0);

/// The overlay subnet or node address `addr` (network order) falls in.
#[inline(always)]
pub fn network_of(addr: u32) -> Option<NetEntry> {
    NETWORKS.get(Key::new(32, addr)).copied()
}

/// The task behind the veth this packet is on (the TC hook's device).
#[inline(always)]
pub fn endpoint(ctx: &TcContext) -> Option<&'static Endpoint> {
    // SAFETY: the context pointer is valid for the program's run; ifindex
    // is a plain field the verifier lets TC programs read.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    endpoint_of(ifindex)
}

/// The task behind the host-side veth `ifindex`.
#[inline(always)]
pub fn endpoint_of(ifindex: u32) -> Option<&'static Endpoint> {
    // SAFETY: a map value stays valid for the program's run (RCU).
    unsafe { ENDPOINTS.get(ifindex) }
}

/// From a task: its source must be its own, whatever the destination.
#[inline(always)]
pub fn check_source(ep: &Endpoint, saddr: u32) -> Result<(), MeshReason> {
    if ep.owns(saddr) {
        Ok(())
    } else {
        Err(MeshReason::SpoofedSource)
    }
}

/// From a task to a VIP frontend: only VIPs of its own networks.
#[inline(always)]
pub fn check_vip(ep: &Endpoint, vip: u32) -> Result<(), MeshReason> {
    match network_of(vip) {
        Some(n) if n.flags & NET_F_INGRESS != 0 => Err(MeshReason::IsolationIngress),
        Some(n) if !ep.member(n.net) => Err(MeshReason::IsolationNetwork),
        // No entry: a VIP of a network this node does not carry, which the
        // mesh never installs; nothing to refuse.
        _ => Ok(()),
    }
}

/// From a task, not translated by the mesh: its own networks' addresses,
/// replies the mesh permitted, and the outside (not from an `--internal`
/// network) pass; the node's own
/// addresses, the ingress network and other networks do not. On success,
/// the destination's entry, which the caller may use again.
#[inline(always)]
pub fn check_destination(
    ep: &Endpoint,
    saddr: u32,
    daddr: u32,
    flow: Option<&FlowKey>,
) -> Result<Option<NetEntry>, MeshReason> {
    let Some(n) = network_of(daddr) else {
        // Outside the cluster's overlays this node knows: egress, unless
        // the source's network is `--internal`.
        return crate::egress::check_internal(saddr).map(|()| None);
    };
    // Published ports on the node's addresses were DNATed before.
    let node = n.flags & NET_F_NODE != 0;
    let ingress = n.flags & NET_F_INGRESS != 0;
    if !node && !ingress && ep.member(n.net) {
        return Ok(Some(n));
    }
    // SAFETY: only presence is read.
    if let Some(f) = flow
        && unsafe { PERMIT.get(f) }.is_some()
    {
        return Ok(Some(n));
    }
    Err(if node {
        MeshReason::IsolationNode
    } else if ingress {
        MeshReason::IsolationIngress
    } else {
        MeshReason::IsolationNetwork
    })
}

/// To a task: a flow from another network (or through the ingress network)
/// reached it, so the mesh brought it (a published port a task called, or
/// a VIP's backend on several networks), or the node itself called it
/// (`node doctor`'s probes): its replies may go back. Nothing else can put
/// such a source here: tasks cannot spoof, and the underlay cannot reach
/// overlay addresses.
#[inline(always)]
pub fn permit_replies(ep: &Endpoint, flow: &FlowKey) -> Result<(), MeshReason> {
    let Some(n) = network_of(flow.saddr) else {
        return Ok(());
    };
    let own = n.flags & (NET_F_NODE | NET_F_INGRESS) == 0 && ep.member(n.net);
    if own {
        return Ok(());
    }
    let reply = reply_of(flow);
    // SAFETY: only presence is read.
    if unsafe { PERMIT.get(reply) }.is_some() {
        return Ok(());
    }
    PERMIT
        .insert(reply, 1, 0)
        .map_err(|_| MeshReason::PermitInsert)
}

/// On the data interface, after published ports: nothing from the underlay
/// goes to an overlay address (a task, a VIP, a gateway) untranslated.
#[inline(always)]
pub fn check_underlay(daddr: u32) -> Result<(), MeshReason> {
    match network_of(daddr) {
        Some(n) if n.net != 0 => Err(MeshReason::UnderlayToOverlay),
        _ => Ok(()),
    }
}

/// From a task, on any packet that passes: one to an encrypted network's
/// address gets the IPsec mark, so the node pair's xfrm policy (looked up
/// when the VXLAN device routes the encapsulated packet, which keeps the
/// mark) sends it as ESP. Without a state the kernel drops it: no packet
/// of an encrypted network leaves in clear. `dest` is the destination
/// address's entry ([`network_of`]). Returns whether it marked.
#[inline(always)]
pub fn mark_encrypted(ctx: &TcContext, dest: Option<NetEntry>) -> bool {
    if let Some(n) = dest
        && n.flags & NET_F_ENCRYPTED != 0
    {
        ctx.set_mark(IPSEC_MARK);
        return true;
    }
    false
}

/// Whether `vni` is an encrypted network's (its VXLAN must go through the
/// stack, where IPsec and the checks above apply).
#[inline(always)]
pub fn encrypted_vni(vni: u32) -> bool {
    // SAFETY: only presence is read.
    unsafe { ENCRYPTED_VNIS.get(vni) }.is_some()
}

/// Leaving by the data interface: VXLAN (UDP to the network's port) of an
/// encrypted VNI never does in clear, whatever sent it (a device or an FDB
/// entry routed past the tunnel, a missing xfrm policy).
#[inline(always)]
pub fn check_vxlan_out(dport: u16, vni: u32) -> Result<(), MeshReason> {
    // SAFETY: a plain value read; copied out at once.
    match (unsafe { ENCRYPTED_VNIS.get(vni) }).copied() {
        Some(value) if value & 0xffff == u32::from(dport) => Err(MeshReason::CleartextEncrypted),
        _ => Ok(()),
    }
}

/// On the data interface: VXLAN (UDP to the network's port) of an
/// encrypted VNI passes only if an ESP state of Shoal's decrypted it (the
/// skb's secpath holds a state with swarm's reqid); in clear it is dropped.
/// The kernel's VXLAN socket takes encapsulated packets before any inbound
/// xfrm policy check, so this is the only gate (swarm: iptables INPUT).
/// On success, whether `vni` is an encrypted network's at all (as
/// [`encrypted_vni`] would say).
#[inline(always)]
pub fn check_vxlan(ctx: &TcContext, dport: u16, vni: u32) -> Result<bool, MeshReason> {
    // SAFETY: a plain value read; copied out at once.
    let Some(value) = (unsafe { ENCRYPTED_VNIS.get(vni) }).copied() else {
        return Ok(false);
    };
    if value & 0xffff != u32::from(dport) {
        return Ok(true);
    }
    // WireGuard's VXLAN comes out of the tunnel device, never in here.
    if value & shoal_common::policy::ENCVNI_F_WIREGUARD != 0 {
        return Err(MeshReason::CleartextEncrypted);
    }
    // SAFETY: zeroed plain-data struct the helper fills; its size is given.
    let mut state: bpf_xfrm_state = unsafe { core::mem::zeroed() };
    // SAFETY: the context's skb pointer is valid for the program's run.
    let rc = unsafe {
        bpf_skb_get_xfrm_state(
            ctx.skb.skb,
            0,
            &mut state,
            core::mem::size_of::<bpf_xfrm_state>() as u32,
            0,
        )
    };
    if rc == 0 && state.reqid == shoal_common::policy::IPSEC_REQID {
        Ok(true)
    } else {
        Err(MeshReason::CleartextEncrypted)
    }
}
