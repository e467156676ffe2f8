//! What the driver is asked to build, and the pure rules about it: device
//! names, MTU arithmetic, and validation. Nothing here touches the kernel.

use std::fmt;
use std::net::Ipv4Addr;

pub use shoal_common::net::{Ipv4Net, Ipv4NetError};

use crate::{MacAddr, OverlayError};

/// Bytes VXLAN over IPv4 adds to every frame: outer IPv4 20 + UDP 8 +
/// VXLAN 8 + the inner Ethernet header 14 (which the overlay MTU, an IP
/// MTU, does not count).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The IANA VXLAN port, swarm's default data-path port.
pub const DEFAULT_PORT: u16 = shoal_common::ports::VXLAN_PORT;
/// VNIs are 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The smallest MTU IPv4 allows (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Every device the driver creates starts with this, so they are easy to
/// tell from the host's own (and to check for leftovers).
pub const DEVICE_PREFIX: &str = "shl-";
/// Longest interface name the kernel accepts (IFNAMSIZ 16 minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// The network's bridge: `shl-br-<vni>`, the VNI in decimal as `shoal network
/// inspect` shows it. The largest VNI (16777215) gives exactly 15 bytes.
pub fn bridge_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}br-{vni}")
}

/// The network's VXLAN device: `shl-vx-<vni>` (see [`bridge_name`]).
pub fn vxlan_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}vx-{vni}")
}

/// The bridge's MAC: `02:53` and this node's data-path address (the mesh
/// contract's `shoal_common::mesh::bridge_mac`), the same for every network
/// of the node.
///
/// Set explicitly because a bridge with a kernel-chosen MAC takes the lowest
/// MAC of its ports, so the gateway's MAC would change whenever a task
/// joined or left and tasks would keep a stale ARP entry for their gateway.
/// Per node, not per network: frames a node routes into an overlay (a
/// published port's DNATed packets) carry it across VXLAN, and the backend's
/// node sends the replies back to it, so no two nodes may share it.
pub fn bridge_mac(node_vtep: Ipv4Addr) -> MacAddr {
    MacAddr(shoal_common::mesh::bridge_mac(u32::from(node_vtep)))
}

/// The overlay MTU: `requested`, or the underlay's MTU minus
/// [`VXLAN_OVERHEAD`] when none is given; an MTU that would not fit through
/// the underlay once encapsulated is refused.
pub fn overlay_mtu(
    underlay: &str,
    underlay_mtu: u32,
    requested: Option<u32>,
) -> Result<u32, OverlayError> {
    let limit = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
    let mtu = requested.unwrap_or(limit);
    if mtu > limit {
        return Err(OverlayError::MtuTooLarge {
            mtu,
            limit,
            underlay: underlay.to_owned(),
            underlay_mtu,
        });
    }
    if mtu < MIN_MTU {
        return Err(OverlayError::InvalidSpec {
            field: "mtu",
            value: mtu.to_string(),
            reason: match requested {
                Some(_) => format!("below the IPv4 minimum {MIN_MTU}"),
                None => format!(
                    "derived from underlay {underlay}'s MTU {underlay_mtu}, which leaves less than \
                     the IPv4 minimum {MIN_MTU} after {VXLAN_OVERHEAD} bytes of VXLAN; raise the \
                     underlay MTU"
                ),
            },
        });
    }
    Ok(mtu)
}

/// The interface that carries VXLAN packets to other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Underlay {
    Name(String),
    Index(u32),
}

impl fmt::Display for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Underlay::Name(name) => f.write_str(name),
            Underlay::Index(index) => write!(f, "ifindex {index}"),
        }
    }
}

/// One overlay network as this node carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    /// The VXLAN network identifier, 1 to [`MAX_VNI`].
    pub vni: u32,
    /// The network's subnet; the bridge gets `gateway/<its prefix length>`.
    pub subnet: Ipv4Net,
    /// The tasks' default gateway, an address inside `subnet`; the same on
    /// every node, as in swarm.
    pub gateway: Ipv4Addr,
    /// The overlay MTU; `None`: the underlay's MTU minus [`VXLAN_OVERHEAD`].
    pub mtu: Option<u32>,
    /// This node's data-path address, the outer source of VXLAN packets.
    pub local_vtep: Ipv4Addr,
    /// The VXLAN UDP port, the same on every node ([`DEFAULT_PORT`]).
    pub port: u16,
    /// The interface `local_vtep` is reached through; the VXLAN device is
    /// bound to it and its MTU bounds the overlay's.
    pub underlay: Underlay,
    /// Bytes an encryption adds to every VXLAN packet (IPsec ESP: 26), so
    /// a derived MTU leaves room for them; 0 for a plain overlay.
    pub encryption_overhead: u32,
}

impl OverlaySpec {
    /// A spec with the defaults: port 4789, MTU derived from the underlay.
    pub fn new(
        vni: u32,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        local_vtep: Ipv4Addr,
        underlay: Underlay,
    ) -> OverlaySpec {
        OverlaySpec {
            vni,
            subnet,
            gateway,
            mtu: None,
            local_vtep,
            port: DEFAULT_PORT,
            underlay,
            encryption_overhead: 0,
        }
    }

    /// Checks what can be checked without the kernel; the MTU's upper bound
    /// needs the underlay and is checked by [`overlay_mtu`].
    pub fn validate(&self) -> Result<(), OverlayError> {
        let invalid = |field, value: &dyn fmt::Display, reason: &str| OverlayError::InvalidSpec {
            field,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(invalid("vni", &self.vni, "VNIs are 1 to 16777215"));
        }
        if self.subnet.prefix_len() > 30 {
            return Err(invalid(
                "subnet",
                &self.subnet,
                "leaves no room for a gateway and a task; use a prefix of /30 or shorter",
            ));
        }
        let gw = self.gateway;
        if !self.subnet.contains(gw) {
            return Err(invalid(
                "gateway",
                &gw,
                &format!("outside the subnet {}", self.subnet),
            ));
        }
        if gw == self.subnet.network() || gw == self.subnet.broadcast() {
            return Err(invalid(
                "gateway",
                &gw,
                &format!(
                    "is the network or broadcast address of {}; pick a host address",
                    self.subnet
                ),
            ));
        }
        let vtep = self.local_vtep;
        if !is_host_address(vtep) {
            return Err(invalid(
                "local_vtep",
                &vtep,
                "must be the node's unicast data-path address",
            ));
        }
        if self.subnet.contains(vtep) {
            return Err(invalid(
                "local_vtep",
                &vtep,
                &format!(
                    "is inside the overlay subnet {}, whose route would capture the underlay's \
                     traffic; use a subnet that does not overlap the underlay",
                    self.subnet
                ),
            ));
        }
        if self.port == 0 {
            return Err(invalid("port", &self.port, "give a UDP port, e.g. 4789"));
        }
        if let Some(mtu) = self.mtu
            && mtu < MIN_MTU
        {
            return Err(invalid(
                "mtu",
                &mtu,
                &format!("below the IPv4 minimum {MIN_MTU}"),
            ));
        }
        if let Underlay::Name(name) = &self.underlay
            && (name.is_empty() || name.len() > MAX_IFNAME_LEN)
        {
            return Err(invalid(
                "underlay",
                &format!("{name:?}"),
                "interface names are 1 to 15 bytes",
            ));
        }
        Ok(())
    }
}

/// A unicast IPv4 address a host can own.
fn is_host_address(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
}

/// A task interface on another node, as the overlay needs it: its overlay
/// address and MAC, and the data-path address of the node it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteEndpoint {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub vtep: Ipv4Addr,
}

impl RemoteEndpoint {
    /// Refuses what would turn a static entry into something else: the zero
    /// MAC is the VXLAN device's flood destination, a group MAC or IP is
    /// multicast, and an unspecified VTEP means "this node".
    pub fn validate(&self) -> Result<(), OverlayError> {
        let invalid = |field, value: String, reason| OverlayError::InvalidRemote {
            field,
            value,
            reason,
        };
        if !is_host_address(self.ip) {
            return Err(invalid(
                "ip",
                self.ip.to_string(),
                "must be a task's unicast address",
            ));
        }
        if !self.mac.is_unicast() {
            return Err(invalid(
                "mac",
                self.mac.to_string(),
                "must be a unicast MAC (the zero MAC would make the VXLAN device flood)",
            ));
        }
        if !is_host_address(self.vtep) {
            return Err(invalid(
                "vtep",
                self.vtep.to_string(),
                "must be the remote node's unicast data-path address",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn spec() -> OverlaySpec {
        OverlaySpec::new(
            4097,
            net("10.0.9.0/24"),
            Ipv4Addr::new(10, 0, 9, 1),
            Ipv4Addr::new(198, 18, 0, 1),
            Underlay::Name("eth0".into()),
        )
    }

    #[test]
    fn names_carry_the_vni_and_fit_ifnamsiz() {
        assert_eq!(bridge_name(4097), "shl-br-4097");
        assert_eq!(vxlan_name(4097), "shl-vx-4097");
        for name in [bridge_name(MAX_VNI), vxlan_name(MAX_VNI)] {
            assert_eq!(name.len(), MAX_IFNAME_LEN, "{name}");
        }
        assert_ne!(bridge_name(1), vxlan_name(1));
    }

    #[test]
    fn bridge_mac_is_local_unicast_and_per_node() {
        let mac = bridge_mac(Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(mac.to_string(), "02:53:c6:12:00:02");
        assert!(mac.is_unicast());
        assert_eq!(mac.0[0] & 2, 2, "locally administered");
        assert_ne!(
            bridge_mac(Ipv4Addr::new(198, 18, 0, 2)),
            bridge_mac(Ipv4Addr::new(198, 18, 0, 3))
        );
    }

    #[test]
    fn mtu_defaults_to_underlay_minus_overhead() {
        assert_eq!(overlay_mtu("eth0", 1500, None).ok(), Some(1450));
        assert_eq!(overlay_mtu("eth0", 9000, None).ok(), Some(8950));
        assert_eq!(overlay_mtu("eth0", 1500, Some(1400)).ok(), Some(1400));
        assert_eq!(overlay_mtu("eth0", 1500, Some(1450)).ok(), Some(1450));
    }

    #[test]
    fn mtu_above_the_limit_names_field_and_limit() {
        let err = overlay_mtu("eth0", 1500, Some(1451)).err();
        assert!(
            matches!(
                err,
                Some(OverlayError::MtuTooLarge {
                    mtu: 1451,
                    limit: 1450,
                    ..
                })
            ),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("mtu = 1451") && text.contains("at most 1450"),
            "{text}"
        );
    }

    #[test]
    fn mtu_below_the_ipv4_minimum_is_refused() {
        assert!(overlay_mtu("eth0", 1500, Some(67)).is_err());
        let tiny = overlay_mtu("eth0", 100, None).err();
        assert!(
            matches!(tiny, Some(OverlayError::InvalidSpec { field: "mtu", .. })),
            "{tiny:?}"
        );
    }

    #[test]
    fn a_good_spec_validates() {
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn bad_specs_name_the_field() {
        type Breaker = fn(&mut OverlaySpec);
        let cases: [(&str, Breaker); 9] = [
            ("vni", |s| s.vni = 0),
            ("vni", |s| s.vni = MAX_VNI + 1),
            ("subnet", |s| s.subnet = net("10.0.9.0/31")),
            ("gateway", |s| s.gateway = Ipv4Addr::new(10, 0, 8, 1)),
            ("gateway", |s| s.gateway = Ipv4Addr::new(10, 0, 9, 255)),
            ("local_vtep", |s| s.local_vtep = Ipv4Addr::UNSPECIFIED),
            ("local_vtep", |s| s.local_vtep = Ipv4Addr::new(10, 0, 9, 7)),
            ("port", |s| s.port = 0),
            ("underlay", |s| {
                s.underlay = Underlay::Name("a-name-too-long-0".into())
            }),
        ];
        for (field, break_it) in cases {
            let mut s = spec();
            break_it(&mut s);
            match s.validate() {
                Err(OverlayError::InvalidSpec { field: f, .. }) => assert_eq!(f, field, "{s:?}"),
                other => panic!("{s:?}: expected an error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn remotes_refuse_flooding_and_group_addresses() {
        let good = RemoteEndpoint {
            ip: Ipv4Addr::new(10, 0, 9, 3),
            mac: MacAddr([0x02, 0x42, 10, 0, 9, 3]),
            vtep: Ipv4Addr::new(198, 18, 0, 2),
        };
        assert!(good.validate().is_ok());
        let cases: [(&str, RemoteEndpoint); 4] = [
            (
                "mac",
                RemoteEndpoint {
                    mac: MacAddr::ZERO,
                    ..good
                },
            ),
            (
                "mac",
                RemoteEndpoint {
                    mac: MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                    ..good
                },
            ),
            (
                "ip",
                RemoteEndpoint {
                    ip: Ipv4Addr::new(224, 0, 0, 1),
                    ..good
                },
            ),
            (
                "vtep",
                RemoteEndpoint {
                    vtep: Ipv4Addr::UNSPECIFIED,
                    ..good
                },
            ),
        ];
        for (field, remote) in cases {
            match remote.validate() {
                Err(OverlayError::InvalidRemote { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{remote:?}: expected an error on {field}, got {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn derived_mtu_plus_overhead_fits_the_underlay(underlay in 0u32..=65_535) {
            match overlay_mtu("eth0", underlay, None) {
                Ok(mtu) => prop_assert_eq!(mtu + VXLAN_OVERHEAD, underlay),
                Err(_) => prop_assert!(underlay < MIN_MTU + VXLAN_OVERHEAD),
            }
        }

        #[test]
        fn names_always_fit(vni in 1u32..=MAX_VNI) {
            prop_assert!(bridge_name(vni).len() <= MAX_IFNAME_LEN);
            prop_assert!(vxlan_name(vni).len() <= MAX_IFNAME_LEN);
        }
    }
}
