//! The overlay driver (DESIGN.md, data flow steps 3–4): for each overlay
//! network a node has a task on, a bridge holding the network's gateway
//! address and a kernel VXLAN device on it (the network's VNI, the node's
//! data-path address as source, the data-path port, learning off, no
//! multicast group, MTU = underlay MTU − 50 unless given). Tasks on other
//! nodes are programmed, never learned: a static FDB entry (MAC → remote
//! VTEP) and a permanent neighbour entry (IP → MAC) on the VXLAN device,
//! whose ARP proxy answers local tasks' ARP requests. With no all-zeros FDB
//! entry and no group, nothing floods and nothing is multicast.
//!
//! Device names: `shl-br-<vni>` and `shl-vx-<vni>` (VNI in decimal, at most
//! 15 bytes). Everything goes through rtnetlink, in the network namespace of
//! the driver's netlink socket ([`Driver::in_netns`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::Ipv4Addr;
//! use shoal_overlay::{Driver, OverlaySpec, RemoteEndpoint, Underlay};
//!
//! let driver = Driver::in_netns("/run/netns/node1")?;
//! let spec = OverlaySpec::new(
//!     4097,
//!     "10.0.9.0/24".parse()?,
//!     Ipv4Addr::new(10, 0, 9, 1),
//!     Ipv4Addr::new(198, 18, 0, 1),
//!     Underlay::Name("eth0".into()),
//! );
//! let devices = driver.ensure_network(&spec).await?;
//! driver
//!     .add_remote(4097, RemoteEndpoint {
//!         ip: Ipv4Addr::new(10, 0, 9, 3),
//!         mac: "02:42:0a:00:09:03".parse()?,
//!         vtep: Ipv4Addr::new(198, 18, 0, 2),
//!     })
//!     .await?;
//! assert_eq!(devices.mtu, 1450); // on a 1500-byte underlay
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod driver;
mod error;
mod mac;
mod remotes;
mod spec;

pub use driver::{Device, Driver, NetworkDevices, Release, VxlanPath};
pub use error::OverlayError;
pub use mac::{MacAddr, ParseMacError};
pub use remotes::{FdbEntry, NeighbourEntry, Remotes};
pub use spec::{
    DEFAULT_PORT, DEVICE_PREFIX, Ipv4Net, Ipv4NetError, MAX_IFNAME_LEN, MAX_VNI, MIN_MTU,
    OverlaySpec, RemoteEndpoint, Underlay, VXLAN_OVERHEAD, bridge_mac, bridge_name, overlay_mtu,
    vxlan_name,
};
