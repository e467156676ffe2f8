//! The lab's wiring, all by netlink: a bridge `br0` in the underlay
//! namespace, and per member a veth whose underlay end (`nK`, `client`) is a
//! bridge port and whose other end is `eth0` inside the member's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

use crate::{LabError, netns};

/// The bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";
/// The member's interface inside its own namespace.
pub const DATA_IFACE: &str = "eth0";
/// MTU of every underlay link.
pub const MTU: u32 = 1500;
/// Prefix length of the underlay subnet 198.18.0.0/24.
pub const PREFIX_LEN: u8 = 24;

/// Underlay address of node `k` (1-based).
pub fn node_addr(k: usize) -> Ipv4Addr {
    // The builder caps the node count well below 250.
    Ipv4Addr::new(198, 18, 0, u8::try_from(k).unwrap_or(u8::MAX))
}

/// Underlay address of the client namespace.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

fn netlink_err(what: String) -> impl FnOnce(rtnetlink::Error) -> LabError {
    move |source| LabError::Netlink { what, source }
}

/// The link `name` in the namespace `ns` (which only labels errors).
pub async fn link(handle: &Handle, ns: &str, name: &str) -> Result<LinkMessage, LabError> {
    let what = || format!("get link {name} in {ns}");
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(netlink_err(what()))?;
    // A dump by name that succeeds returns the link; None would be a kernel bug.
    link.ok_or(LabError::Netlink {
        what: what(),
        source: rtnetlink::Error::RequestFailed,
    })
}

/// The index of the link `name` in the namespace `ns`.
pub async fn link_index(handle: &Handle, ns: &str, name: &str) -> Result<u32, LabError> {
    Ok(link(handle, ns, name).await?.header.index)
}

/// Gives the link `name` in `ns` the address `addr/prefix_len`, then sets
/// it up.
pub async fn address_up(
    handle: &Handle,
    ns: &str,
    name: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), LabError> {
    let index = link_index(handle, ns, name).await?;
    handle
        .address()
        .add(index, IpAddr::V4(addr), prefix_len)
        .execute()
        .await
        .map_err(netlink_err(format!(
            "add {addr}/{prefix_len} to {name} in {ns}"
        )))?;
    set_link_up(handle, ns, name, true).await
}

/// Sets the link `name` in the namespace `ns` up or down.
pub async fn set_link_up(handle: &Handle, ns: &str, name: &str, up: bool) -> Result<(), LabError> {
    let builder = LinkUnspec::new_with_name(name);
    let message = if up { builder.up() } else { builder.down() }.build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(netlink_err(format!(
            "set {name} {} in {ns}",
            if up { "up" } else { "down" }
        )))
}

/// Creates `br0` (up) in the underlay namespace `ul`.
pub async fn create_bridge(handle: &Handle, ul: &str) -> Result<(), LabError> {
    set_link_up(handle, ul, "lo", true).await?;
    handle
        .link()
        .add(LinkBridge::new(BRIDGE).mtu(MTU).build())
        .execute()
        .await
        .map_err(netlink_err(format!("add bridge {BRIDGE} in {ul}")))
}

/// Plugs the namespace `member_ns` into the bridge: veth `port` on `br0` in
/// `ul`, `eth0` with `addr`/24 in `member_ns`, both up, loopback up.
pub async fn attach(
    ul_handle: &Handle,
    ul: &str,
    port: &str,
    member_ns: &str,
    addr: Ipv4Addr,
) -> Result<(), LabError> {
    let bridge = link_index(ul_handle, ul, BRIDGE).await?;
    let member = netns::open(member_ns)?;
    // The peer is created directly in the member namespace, so the name eth0
    // never exists in the underlay namespace, where every member has one.
    let peer = LinkUnspec::new_with_name(DATA_IFACE)
        .mtu(MTU)
        .setns_by_fd(member.as_raw_fd())
        .build();
    let veth = LinkVeth::new(port, DATA_IFACE)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(MTU)
        .controller(bridge)
        .up()
        .build();
    ul_handle
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(netlink_err(format!(
            "add veth {port} (peer {DATA_IFACE} in {member_ns})"
        )))?;

    let handle = netns::netlink(member_ns)?;
    set_link_up(&handle, member_ns, "lo", true).await?;
    address_up(&handle, member_ns, DATA_IFACE, addr, PREFIX_LEN).await
}
