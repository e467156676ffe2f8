//! Attributes of a netlink link message, by type.

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// `IFLA_IFNAME`.
pub fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// `IFLA_MTU`.
pub fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// `IFLA_MASTER`: the bridge the link is a port of.
pub fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// `IFLA_ADDRESS`, if it is a MAC.
pub fn mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

/// `IFLA_LINKINFO`, empty if absent.
pub fn infos(link: &LinkMessage) -> &[LinkInfo] {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `IFLA_INFO_KIND`: bridge, vxlan, veth...; None for a plain device.
pub fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    infos(link).iter().find_map(|i| match i {
        LinkInfo::Kind(kind) => Some(kind),
        _ => None,
    })
}
