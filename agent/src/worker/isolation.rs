//! What the isolation maps must hold, from the assignment set: the overlay
//! subnets and node addresses (common/src/policy.rs), and each task veth's
//! endpoint. Pure, so it is tested without root.
use std::{collections::BTreeMap, net::Ipv4Addr};

use shoal_api::cluster::v1::{AssignmentSet, Encryption, TaskAssignment};
use shoal_common::policy::{
    ENCVNI_F_WIREGUARD, Endpoint, NET_F_ENCRYPTED, NET_F_INGRESS, NET_F_INTERNAL, NET_F_NODE,
    NetEntry,
};

use crate::datapath::{DatapathError, policy::NetPrefix};

/// Every network of the set's subnet (its VNI), each gateway and the node's
/// data address as node addresses. A network whose subnet does not parse is
/// left out (the overlay refuses it anyway, and logs why).
pub fn network_entries(set: &AssignmentSet, data_ip: Ipv4Addr) -> BTreeMap<NetPrefix, NetEntry> {
    let mut out = BTreeMap::new();
    for n in &set.networks {
        let Some(subnet) = n.subnet.as_ref().and_then(|p| p.net(String::new).ok()) else {
            continue;
        };
        let mut flags = if n.ingress { NET_F_INGRESS } else { 0 };
        if n.internal {
            // Its tasks' packets to the outside are dropped (egress).
            flags |= NET_F_INTERNAL;
        }
        // IPsec's packets are marked for the pair's xfrm policy; WireGuard's
        // need no mark (their VXLAN device is bound to the tunnel).
        if n.encryption() == Encryption::Ipsec {
            flags |= NET_F_ENCRYPTED;
        }
        out.insert(
            (subnet.network(), subnet.prefix_len()),
            NetEntry { net: n.vni, flags },
        );
        // As the worker makes the bridge's address: 0 = the first host.
        let gateway = if n.gateway == 0 {
            Ipv4Addr::from(u32::from(subnet.network()) + 1)
        } else {
            Ipv4Addr::from(n.gateway)
        };
        out.insert(
            (gateway, 32),
            NetEntry {
                net: n.vni,
                flags: flags | NET_F_NODE,
            },
        );
    }
    out.insert(
        (data_ip, 32),
        NetEntry {
            net: 0,
            flags: NET_F_NODE,
        },
    );
    out
}

/// The encrypted networks' VNIs, each with the VXLAN port it uses here
/// (WireGuard's flagged: their VXLAN never arrives on the data interface).
pub fn encrypted_vnis(set: &AssignmentSet, port: u16) -> BTreeMap<u32, u32> {
    set.networks
        .iter()
        .filter_map(|n| match n.encryption() {
            Encryption::None => None,
            Encryption::Ipsec => Some((n.vni, u32::from(port))),
            Encryption::Wireguard => Some((n.vni, u32::from(port) | ENCVNI_F_WIREGUARD)),
        })
        .collect()
}

/// The endpoint of the task's veth whose address is `addr`: the task's
/// every attachment (network VNI, address) and the network of this one.
/// Attachments on networks the set does not describe are left out (the
/// task cannot have started on them).
pub fn task_endpoint(
    set: &AssignmentSet,
    t: &TaskAssignment,
    addr: Ipv4Addr,
) -> Result<Endpoint, DatapathError> {
    let vni = |id: &str| set.networks.iter().find(|n| n.id == id).map(|n| n.vni);
    let attachments: Vec<(u32, Ipv4Addr)> = t
        .addresses
        .iter()
        .filter_map(|a| Some((vni(&a.network_id)?, a.addr.as_ref()?.ip())))
        .collect();
    let own = attachments
        .iter()
        .find(|(_, a)| *a == addr)
        .map_or(0, |(net, _)| *net);
    crate::datapath::policy::endpoint(own, &attachments)
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::{Ipv4Prefix, NetworkAssignment, TaskAddress};

    use super::*;

    fn net(id: &str, vni: u32, subnet: [u8; 4], ingress: bool) -> NetworkAssignment {
        NetworkAssignment {
            id: id.into(),
            name: id.into(),
            vni,
            subnet: Some(Ipv4Prefix::new(subnet.into(), 24)),
            ingress,
            ..NetworkAssignment::default()
        }
    }

    fn set() -> AssignmentSet {
        let mut b = net("b", 4097, [10, 0, 2, 0], false);
        b.gateway = u32::from(Ipv4Addr::new(10, 0, 2, 254));
        let mut c = net("c", 4099, [10, 0, 3, 0], false);
        c.internal = true;
        AssignmentSet {
            networks: vec![
                net("ing", 4096, [10, 255, 0, 0], true),
                net("a", 4098, [10, 0, 1, 0], false),
                b,
                c,
            ],
            ..AssignmentSet::default()
        }
    }

    #[test]
    fn subnets_gateways_and_the_data_address() {
        let e = network_entries(&set(), Ipv4Addr::new(198, 18, 0, 1));
        let get = |a: [u8; 4], p| e.get(&(Ipv4Addr::from(a), p)).copied();
        let entry = |net, flags| Some(NetEntry { net, flags });
        assert_eq!(get([10, 0, 1, 0], 24), entry(4098, 0));
        assert_eq!(get([10, 0, 1, 1], 32), entry(4098, NET_F_NODE));
        assert_eq!(get([10, 0, 2, 254], 32), entry(4097, NET_F_NODE));
        assert_eq!(get([10, 255, 0, 0], 24), entry(4096, NET_F_INGRESS));
        assert_eq!(
            get([10, 255, 0, 1], 32),
            entry(4096, NET_F_INGRESS | NET_F_NODE)
        );
        assert_eq!(get([198, 18, 0, 1], 32), entry(0, NET_F_NODE));
        assert_eq!(get([10, 0, 3, 0], 24), entry(4099, NET_F_INTERNAL));
        assert_eq!(e.len(), 9);
    }

    #[test]
    fn a_task_endpoint_names_every_network_and_address() {
        let addr = |id: &str, a: [u8; 4]| TaskAddress {
            network_id: id.into(),
            addr: Some(Ipv4Prefix::new(a.into(), 24)),
        };
        let t = TaskAssignment {
            addresses: vec![
                addr("a", [10, 0, 1, 5]),
                addr("ing", [10, 255, 0, 9]),
                addr("gone", [10, 9, 9, 9]),
            ],
            ..TaskAssignment::default()
        };
        let ep = task_endpoint(&set(), &t, Ipv4Addr::new(10, 255, 0, 9)).expect("endpoint");
        assert_eq!(ep.net, 4096, "the veth's own network");
        assert_eq!(ep.count, 2, "the unknown network is left out");
        assert!(ep.member(4098) && ep.member(4096) && !ep.member(4097));
        assert!(ep.owns(u32::from(Ipv4Addr::new(10, 0, 1, 5)).to_be()));
        assert!(!ep.owns(u32::from(Ipv4Addr::new(10, 9, 9, 9)).to_be()));
    }

    proptest::proptest! {
        /// Whatever the control plane sends: subnet entries are networks
        /// (host bits clear, so the trie holds one entry per subnet), each
        /// with its gateway as a node address, the data address always in;
        /// a subnet with host bits set is left out, never mis-keyed.
        #[test]
        fn entries_are_keyed_by_network_and_flag_node_addresses(
            nets in proptest::collection::vec((proptest::prelude::any::<u32>(), 8u8..=30, 1u32..1 << 24, proptest::prelude::any::<bool>()), 0..8),
            data in proptest::prelude::any::<u32>(),
        ) {
            let set = AssignmentSet {
                networks: nets
                    .iter()
                    .enumerate()
                    .map(|(i, (addr, len, vni, ingress))| NetworkAssignment {
                        id: format!("n{i}"),
                        vni: *vni,
                        subnet: Some(Ipv4Prefix::new(Ipv4Addr::from(*addr), *len)),
                        ingress: *ingress,
                        ..NetworkAssignment::default()
                    })
                    .collect(),
                ..AssignmentSet::default()
            };
            let data = Ipv4Addr::from(data);
            let e = network_entries(&set, data);
            proptest::prop_assert!(e.get(&(data, 32)).is_some_and(|v| v.flags & NET_F_NODE != 0));
            for ((addr, len), v) in &e {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                proptest::prop_assert_eq!(u32::from(*addr) & !mask, 0, "host bits of {}/{}", addr, len);
                // The /32s are exactly the node's addresses.
                proptest::prop_assert_eq!(*len == 32, v.flags & NET_F_NODE != 0);
            }
            for (addr, len, _, _) in &nets {
                let mask = u32::MAX << (32 - u32::from(*len));
                let clean = addr & !mask == 0;
                let entry = e.get(&(Ipv4Addr::from(*addr), *len));
                proptest::prop_assert_eq!(clean, entry.is_some(), "{:?}", (addr, len));
                if let Some(v) = entry {
                    // Two networks of one subnet: the later one's VNI wins.
                    let last = nets.iter().rev().find(|n| n.0 == *addr && n.1 == *len);
                    proptest::prop_assert_eq!(Some(v.net), last.map(|n| n.2));
                }
            }
        }

        /// Any attachments: up to the limit, every one is a membership and
        /// an owned address; past it, refused.
        #[test]
        fn endpoints_hold_every_attachment_or_refuse(
            atts in proptest::collection::vec((1u32..1 << 24, proptest::prelude::any::<u32>()), 0..20),
        ) {
            let attachments: Vec<(u32, Ipv4Addr)> =
                atts.iter().map(|(n, a)| (*n, Ipv4Addr::from(*a))).collect();
            match crate::datapath::policy::endpoint(1, &attachments) {
                Ok(ep) => {
                    proptest::prop_assert!(attachments.len() <= 16);
                    for (n, a) in &attachments {
                        proptest::prop_assert!(ep.member(*n));
                        proptest::prop_assert!(ep.owns(u32::from(*a).to_be()));
                    }
                }
                Err(e) => {
                    proptest::prop_assert!(attachments.len() > 16);
                    let too_many = matches!(e, DatapathError::TooManyNetworks { .. });
                    proptest::prop_assert!(too_many);
                }
            }
        }
    }

    #[test]
    fn too_many_networks_is_refused_with_the_limit() {
        let t = TaskAssignment {
            addresses: (0..17)
                .map(|i| TaskAddress {
                    network_id: "a".into(),
                    addr: Some(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, i), 24)),
                })
                .collect(),
            ..TaskAssignment::default()
        };
        let e = task_endpoint(&set(), &t, Ipv4Addr::new(10, 0, 1, 0)).expect_err("17 networks");
        assert!(matches!(
            e,
            DatapathError::TooManyNetworks { count: 17, max: 16 }
        ));
    }
}
