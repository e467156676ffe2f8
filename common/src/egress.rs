//! Egress: a task's connections to destinations outside the cluster leave
//! with the node's address as source (SNAT), in the mesh object's data
//! interface programs (ebpf/src/egress.rs).
//!
//! ```text
//! SNAT  task → outside FlowKey (as the task sent it)  → Snat {port, node addr}
//! SNATR outside → node FlowKey (a reply, translated)  → SnatRev {task addr/port, last seen}
//! ```
//!
//! `shoal_mesh_out` (egress of the data interface, after the mesh's reverse
//! NAT): a packet from an overlay address to an address outside every
//! overlay subnet gets the node's data address and a port of
//! [`EGRESS_PORT_MIN`]`..=`[`EGRESS_PORT_MAX`] (above Linux's ephemeral
//! range, so the node's own connections never collide). `shoal_mesh_in`
//! translates the replies back before isolation's underlay check; a packet
//! to that range that no entry explains is dropped (a stale or forged
//! reply). The reply entry is the port's owner: a forward entry whose reply
//! entry names another flow chooses again.
//!
//! ICMP echo is translated the same way, its identifier standing in for the
//! port ([`IPPROTO_ICMP`](crate::mesh::IPPROTO_ICMP)), so a task's ping
//! reaches the outside. Unexplained echo replies are not dropped: the
//! node's own pings use identifiers in the range too (one that equals a
//! live translated one to the same peer loses its replies to the task).

use crate::mesh::FlowKey;

/// LRU hash [`FlowKey`] (task → outside) → [`Snat`].
pub const SNAT_MAP: &str = "SHOAL_SNAT4_V1";
/// LRU hash [`FlowKey`] (outside → node, a reply) → [`SnatRev`].
pub const SNAT_REV_MAP: &str = "SHOAL_SNATR4_V1";

/// Translated flows per node (each map).
pub const MAX_SNAT_FLOWS: u32 = 65536;
/// The node-side ports of translated flows (host order): above Linux's
/// default ephemeral range (32768–60999) and swarm's published range.
pub const EGRESS_PORT_MIN: u16 = 61000;
pub const EGRESS_PORT_MAX: u16 = 65535;
/// Ports tried for a new flow before it is refused (ports exhausted): a
/// bounded loop, as the verifier wants.
pub const EGRESS_PORT_PROBES: u32 = 16;
/// A TCP flow that saw FIN or RST frees its port after this long idle.
pub const SNAT_CLOSING_TIMEOUT_NS: u64 = 10 * 1_000_000_000;

/// [`SnatRev::flags`]: the flow saw a FIN or RST.
pub const SNAT_F_CLOSING: u32 = 1 << 0;

/// Value of [`SNAT_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snat {
    /// The node's address the flow leaves with, network order.
    pub addr: u32,
    /// The node-side port, network order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Snat>() == 8);

/// Value of [`SNAT_REV_MAP`]: where replies go back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatRev {
    /// The task's address, network order.
    pub addr: u32,
    /// The task's port, network order.
    pub port: u16,
    pub _pad: u16,
    /// `SNAT_F_*`.
    pub flags: u32,
    pub _pad2: u32,
    /// Last packet either way (`bpf_ktime_get_ns`), to [`LAST_SEEN_GRANULARITY_NS`](crate::mesh::LAST_SEEN_GRANULARITY_NS).
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SnatRev>() == 24);

/// Whether `port` (host order) is one egress translates to.
#[inline(always)]
pub const fn is_egress_port(port: u16) -> bool {
    port >= EGRESS_PORT_MIN
}

/// The `attempt`th port (host order) a flow of hash `hash` tries: a start
/// spread by the hash, then consecutive ports, wrapping inside the range.
#[inline(always)]
pub const fn egress_port(hash: u32, attempt: u32) -> u16 {
    let span = (EGRESS_PORT_MAX - EGRESS_PORT_MIN) as u32 + 1;
    let off = (hash % span + attempt % span) % span;
    EGRESS_PORT_MIN + off as u16
}

/// Whether a reply entry no longer holds its port: idle past `timeout_ns`,
/// or past [`SNAT_CLOSING_TIMEOUT_NS`] once closing.
#[inline(always)]
pub const fn snat_stale(rev: &SnatRev, now: u64, timeout_ns: u64) -> bool {
    let idle = now.wrapping_sub(rev.last_seen_ns);
    idle > timeout_ns || (rev.flags & SNAT_F_CLOSING != 0 && idle > SNAT_CLOSING_TIMEOUT_NS)
}

/// The reply key of a translated flow: what the outside sends back to
/// `node:port` (network order values).
#[inline(always)]
pub const fn snat_reply(flow: &FlowKey, node: u32, port: u16) -> FlowKey {
    FlowKey {
        saddr: flow.daddr,
        daddr: node,
        sport: flow.dport,
        dport: port,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// The node's data address (network order) a bridge MAC stands for
/// ([`bridge_mac`](crate::mesh::bridge_mac)): the mesh's configuration
/// already carries it, so egress needs no map of its own.
#[inline(always)]
pub const fn node_addr_of_mac(mac: &[u8; 6]) -> u32 {
    u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]])
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C), integer fields only, padding written out (size
    // asserts above), every bit pattern valid.
    unsafe impl aya::Pod for super::Snat {}
    unsafe impl aya::Pod for super::SnatRev {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::bridge_mac;

    #[test]
    fn names_fit_the_kernel_limit() {
        for n in [SNAT_MAP, SNAT_REV_MAP] {
            assert!(n.len() <= 15, "{n} is longer than BPF_OBJ_NAME_LEN - 1");
        }
    }

    #[test]
    fn the_mac_gives_the_node_address_in_network_order() {
        let node = 0xc612_0002; // 198.18.0.2
        assert_eq!(node_addr_of_mac(&bridge_mac(node)), u32::to_be(node));
    }

    #[test]
    fn closing_flows_free_their_port_sooner() {
        let mut r = SnatRev {
            last_seen_ns: 1_000,
            ..SnatRev::default()
        };
        let later = 1_000 + SNAT_CLOSING_TIMEOUT_NS + 1;
        assert!(!snat_stale(&r, later, u64::MAX / 2));
        r.flags = SNAT_F_CLOSING;
        assert!(snat_stale(&r, later, u64::MAX / 2));
        assert!(!snat_stale(
            &r,
            1_000 + SNAT_CLOSING_TIMEOUT_NS,
            u64::MAX / 2
        ));
    }

    proptest::proptest! {
        #[test]
        fn ports_stay_in_the_range_and_probes_differ(hash: u32, a in 0..EGRESS_PORT_PROBES, b in 0..EGRESS_PORT_PROBES) {
            let p = egress_port(hash, a);
            proptest::prop_assert!((EGRESS_PORT_MIN..=EGRESS_PORT_MAX).contains(&p));
            proptest::prop_assert!(is_egress_port(p));
            if a != b {
                proptest::prop_assert_ne!(p, egress_port(hash, b));
            }
        }
    }
}
