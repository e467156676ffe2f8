//! Who a task may reach: the isolation maps the mesh object's task and
//! data-interface programs read (ebpf/src/policy.rs).
//!
//! ```text
//! NETWORKS  LPM {prefix_len, addr}  → NetEntry {net, flags}
//!           every overlay subnet this node knows (net = its VNI), and /32s
//!           for the node's own addresses (its data address, each bridge's
//!           gateway: NET_F_NODE)
//! ENDPOINTS host veth ifindex       → Endpoint {the task's addresses and
//!                                      the networks it is attached to}
//! PERMIT    reply FlowKey           → 1: replies a task may send to a
//!                                      network it is not on (a flow the
//!                                      mesh brought to it)
//! ```
//!
//! A task's packet (`shoal_task_in`, the host side of its veth) passes when
//! it goes to a published port (DNAT), to a VIP or task of a network the
//! task is attached to, or outside the cluster; it is dropped when it goes
//! to another network's addresses, to the ingress network directly, or to
//! the node's own addresses. A packet arriving on the data interface for an
//! overlay address (someone routed a task's subnet to the node) is dropped:
//! from the underlay, tasks are reachable through published ports only.
//!
//! Encrypted (IPsec) networks: their subnet entries carry
//! [`NET_F_ENCRYPTED`], and a task's packet to such an address gets
//! [`IPSEC_MARK`], which the node pair's xfrm policy selects (the policy
//! lookup happens in the VXLAN device's route lookup, after the task veth);
//! [`ENCRYPTED_VNIS_MAP`] lists their VNIs for the data interface, which
//! drops VXLAN of those VNIs that arrives in clear.
//!
//! One `Endpoint` value holds everything about a veth, so the agent replaces
//! it in one write: a veth index the kernel reuses can never inherit part
//! of a previous task's memberships.

use crate::mesh::FlowKey;

/// LPM trie `{prefix_len: u32, addr: u32 (network order)}` → [`NetEntry`].
pub const NETWORKS_MAP: &str = "SHOAL_NET4_V1";
/// Hash map host veth ifindex (`u32`) → [`Endpoint`].
pub const ENDPOINTS_MAP: &str = "SHOAL_EP4_V1";
/// LRU hash [`FlowKey`] (a reply, as the task sends it) → `u32` (1).
pub const PERMIT_MAP: &str = "SHOAL_PERM4_V1";

/// Hash map VNI (`u32`) → `u32` (the VXLAN port, | [`ENCVNI_F_WIREGUARD`]):
/// networks created `--opt encrypted[=wireguard]`.
pub const ENCRYPTED_VNIS_MAP: &str = "SHOAL_ENCVNI_V1";
/// In an [`ENCRYPTED_VNIS_MAP`] value (the VXLAN port in its low 16
/// bits): the network is WireGuard's, whose VXLAN only ever arrives through
/// the tunnel, so any on the data interface is dropped.
pub const ENCVNI_F_WIREGUARD: u32 = 1 << 31;
/// Encrypted networks one node knows.
pub const MAX_ENCRYPTED_VNIS: u32 = 4096;
/// The mark on packets of encrypted networks: swarm's `0xD0C4E3`, the value
/// its xfrm policies select (shoal-xfrm's `MARK`).
pub const IPSEC_MARK: u32 = 0x00D0_C4E3;
/// The reqid of Shoal's (and swarm's) ESP states: a packet the data
/// interface sees decrypted by one of them passed IPsec.
pub const IPSEC_REQID: u32 = 0x00D0_C4E3;

/// Entries of [`NETWORKS_MAP`]: subnets and node addresses.
pub const MAX_NET_ENTRIES: u32 = 4096;
/// Task veths on one node.
pub const MAX_ENDPOINTS: u32 = 16384;
/// Replies to cross-network flows the mesh made (published ports reached
/// from tasks); LRU, the oldest go first.
pub const MAX_PERMITS: u32 = 65536;
/// Networks (and addresses) one task can have: docker allows more, but a
/// fixed array keeps the endpoint one value (see the module doc).
pub const MAX_TASK_NETWORKS: usize = 16;

/// The entry is the ingress network: it carries only mesh-translated flows,
/// so a task's own membership does not open it.
pub const NET_F_INGRESS: u32 = 1 << 0;
/// The entry is one of this node's own addresses (a /32).
pub const NET_F_NODE: u32 = 1 << 1;
/// The network was created `--internal`: no egress to the outside.
pub const NET_F_INTERNAL: u32 = 1 << 2;
/// The network was created `--opt encrypted` (IPsec): packets to it are
/// marked [`IPSEC_MARK`].
pub const NET_F_ENCRYPTED: u32 = 1 << 3;

/// Value of [`NETWORKS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEntry {
    /// The network's VNI; 0 for a node address on no overlay (the data
    /// address).
    pub net: u32,
    /// `NET_F_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<NetEntry>() == 8);

/// Value of [`ENDPOINTS_MAP`]: one task, seen from one of its veths.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Entries used in `nets` and `addrs`.
    pub count: u32,
    /// The VNI of the network this veth is on.
    pub net: u32,
    /// The VNIs of every network the task is attached to.
    pub nets: [u32; MAX_TASK_NETWORKS],
    /// The task's addresses (network order), on any of its veths: its
    /// packets may leave by a veth other than their address's (the default
    /// route is via the first network).
    pub addrs: [u32; MAX_TASK_NETWORKS],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 8 + 8 * MAX_TASK_NETWORKS);

impl Endpoint {
    /// Whether the task is attached to network `net`.
    #[inline(always)]
    pub fn member(&self, net: u32) -> bool {
        let mut i = 0;
        while i < MAX_TASK_NETWORKS {
            if (i as u32) < self.count && self.nets[i] == net {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Whether `addr` (network order) is one of the task's.
    #[inline(always)]
    pub fn owns(&self, addr: u32) -> bool {
        let mut i = 0;
        while i < MAX_TASK_NETWORKS {
            if (i as u32) < self.count && self.addrs[i] == addr {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// The reply key of a flow: `flow` as its other end sends back.
#[inline(always)]
pub const fn reply_of(flow: &FlowKey) -> FlowKey {
    FlowKey {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C), integer fields only, no implicit padding (size
    // asserts above), every bit pattern valid.
    unsafe impl aya::Pod for super::NetEntry {}
    unsafe impl aya::Pod for super::Endpoint {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        for n in [NETWORKS_MAP, ENDPOINTS_MAP, PERMIT_MAP, ENCRYPTED_VNIS_MAP] {
            assert!(n.len() <= 15, "{n} is longer than BPF_OBJ_NAME_LEN - 1");
        }
    }

    #[test]
    fn membership_ignores_unused_slots() {
        let mut e = Endpoint {
            count: 1,
            net: 7,
            ..Endpoint::default()
        };
        e.nets[0] = 7;
        e.addrs[0] = 5;
        assert!(e.member(7) && e.owns(5));
        // Unused slots are zero: neither network 0 nor address 0 is in.
        assert!(!e.member(0) && !e.owns(0));
    }
}
