//! The overlay driver: for each overlay network a node takes part in, a
//! bridge (holding the network's gateway address) and a kernel VXLAN device
//! on it (VNI, the node's VTEP address as source, the data-path port,
//! learning off, no multicast group). Remote endpoints are programmed, never
//! learned: a static FDB entry (MAC → remote VTEP) and a permanent neighbour
//! entry (IP → MAC) on the VXLAN device, whose ARP proxy then answers the
//! tasks' ARP requests locally. Nothing floods; nothing is multicast.
//!
//! Everything goes through rtnetlink; the caller's handle decides the
//! network namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};

/// VXLAN over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// swarm's data-path port.
pub const DEFAULT_PORT: u16 = 4789;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "mtu {mtu}: larger than the underlay's {underlay} minus {VXLAN_OVERHEAD} for VXLAN; give \
         at most {}",
        underlay.saturating_sub(VXLAN_OVERHEAD)
    )]
    Mtu { mtu: u32, underlay: u32 },
    #[error("vni {0}: must be 1-16777215")]
    Vni(u32),
    #[error("network with VNI {vni} is not set up on this node (no {device})")]
    Missing { vni: u32, device: String },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> OverlayError {
    let what = what.into();
    move |source| OverlayError::Netlink { what, source }
}

/// What the node needs to carry one overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vni: u32,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// This node's data-path address (the outer source).
    pub local_vtep: Ipv4Addr,
    pub port: u16,
    pub underlay_mtu: u32,
    /// `None`: the underlay's MTU minus the VXLAN overhead.
    pub mtu: Option<u32>,
}

impl OverlaySpec {
    /// The MTU of the bridge, the VXLAN device and the tasks' interfaces.
    pub fn mtu(&self) -> Result<u32, OverlayError> {
        let max = self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
        match self.mtu {
            None => Ok(max),
            Some(m) if m <= max => Ok(m),
            Some(mtu) => Err(OverlayError::Mtu {
                mtu,
                underlay: self.underlay_mtu,
            }),
        }
    }
}

/// A task interface on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

/// Device names for a VNI: `shl-br<vni>` and `shl-vx<vni>`, at most 14
/// characters (IFNAMSIZ is 16 with the NUL), unique per node.
pub fn device_names(vni: u32) -> (String, String) {
    (format!("shl-br{vni}"), format!("shl-vx{vni}"))
}

pub struct Driver {
    handle: Handle,
}

impl Driver {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    async fn index(&self, name: &str) -> Result<Option<u32>, OverlayError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            // ENODEV: no such device.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    async fn require(&self, vni: u32, name: &str) -> Result<u32, OverlayError> {
        self.index(name).await?.ok_or(OverlayError::Missing {
            vni,
            device: name.to_owned(),
        })
    }

    /// Creates (or, when present, brings to spec) the bridge and VXLAN
    /// device of `spec`'s network; returns their indexes.
    pub async fn ensure_network(&self, spec: &OverlaySpec) -> Result<(u32, u32), OverlayError> {
        if spec.vni == 0 || spec.vni > 0x00ff_ffff {
            return Err(OverlayError::Vni(spec.vni));
        }
        let mtu = spec.mtu()?;
        let (br, vx) = device_names(spec.vni);
        let links = self.handle.link();
        let bridge = match self.index(&br).await? {
            Some(i) => i,
            None => {
                links
                    .add(LinkBridge::new(&br).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(nl(format!("add bridge {br}")))?;
                let i = self.require(spec.vni, &br).await?;
                self.handle
                    .address()
                    .add(i, IpAddr::V4(spec.gateway), spec.prefix)
                    .execute()
                    .await
                    .map_err(nl(format!("add {}/{} to {br}", spec.gateway, spec.prefix)))?;
                i
            }
        };
        let vxlan = match self.index(&vx).await? {
            Some(i) => i,
            None => {
                let msg = LinkVxlan::new(&vx, spec.vni)
                    .local(spec.local_vtep)
                    .port(spec.port)
                    .learning(false)
                    // Answer the tasks' ARP from the neighbour entries below.
                    .proxy(true)
                    .mtu(mtu)
                    .controller(bridge)
                    .build();
                links
                    .add(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("add vxlan {vx} (vni {})", spec.vni)))?;
                self.require(spec.vni, &vx).await?
            }
        };
        for (i, name) in [(bridge, &br), (vxlan, &vx)] {
            links
                .set(LinkUnspec::new_with_index(i).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {name} up, mtu {mtu}")))?;
        }
        Ok((bridge, vxlan))
    }

    /// Programs a remote endpoint: FDB entry and neighbour entry.
    pub async fn add_remote(&self, vni: u32, r: Remote) -> Result<(), OverlayError> {
        let (_, vx) = device_names(vni);
        let vxlan = self.require(vni, &vx).await?;
        let neigh = self.handle.neighbours();
        neigh
            .add_bridge(vxlan, &r.mac)
            // NTF_SELF: the entry belongs to the VXLAN device's own FDB
            // (where the remote VTEP lives), not to the bridge's.
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(r.vtep))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("fdb {} → {} on {vx}", mac(&r.mac), r.vtep)))?;
        neigh
            .add(vxlan, IpAddr::V4(r.ip))
            .link_layer_address(&r.mac)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("neighbour {} → {} on {vx}", r.ip, mac(&r.mac))))
    }

    /// Everything this node programmed on the network's VXLAN device.
    pub async fn remotes(&self, vni: u32) -> Result<Vec<Remote>, OverlayError> {
        let (_, vx) = device_names(vni);
        let vxlan = self.require(vni, &vx).await?;
        let mut fdb = Vec::new();
        let mut all = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = all.try_next().await.map_err(nl("dump fdb"))? {
            if m.header.ifindex != vxlan {
                continue;
            }
            if let (Some(lla), Some(IpAddr::V4(dst))) = (lladdr(&m), dst(&m)) {
                fdb.push((lla, dst));
            }
        }
        let mut neighbours = Vec::new();
        let mut all = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(m) = all.try_next().await.map_err(nl("dump neighbours"))? {
            if m.header.ifindex != vxlan {
                continue;
            }
            if let (Some(lla), Some(IpAddr::V4(ip))) = (lladdr(&m), dst(&m)) {
                neighbours.push((ip, lla));
            }
        }
        let mut out: Vec<Remote> = neighbours
            .into_iter()
            .filter_map(|(ip, mac)| {
                fdb.iter().find(|(m, _)| *m == mac).map(|(_, vtep)| Remote {
                    ip,
                    mac,
                    vtep: *vtep,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes a remote endpoint's FDB and neighbour entries.
    pub async fn remove_remote(&self, vni: u32, r: Remote) -> Result<(), OverlayError> {
        let (_, vx) = device_names(vni);
        let vxlan = self.require(vni, &vx).await?;
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = vxlan;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                r.ip,
            )));
        self.handle
            .neighbours()
            .del(n)
            .execute()
            .await
            .map_err(nl(format!("delete neighbour {} on {vx}", r.ip)))?;
        let mut f = NeighbourMessage::default();
        f.header.family = AddressFamily::Bridge;
        f.header.ifindex = vxlan;
        f.header.flags = NeighbourFlags::Own;
        f.attributes
            .push(NeighbourAttribute::LinkLayerAddress(r.mac.to_vec()));
        f.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                r.vtep,
            )));
        self.handle
            .neighbours()
            .del(f)
            .execute()
            .await
            .map_err(nl(format!("delete fdb {} on {vx}", mac(&r.mac))))
    }

    /// Deletes the network's devices (and with them every entry on them).
    pub async fn remove_network(&self, vni: u32) -> Result<(), OverlayError> {
        let (br, vx) = device_names(vni);
        for name in [vx, br] {
            if let Some(i) = self.index(&name).await? {
                self.handle
                    .link()
                    .del(i)
                    .execute()
                    .await
                    .map_err(nl(format!("delete {name}")))?;
            }
        }
        Ok(())
    }

    /// The device's MTU, for checks.
    pub async fn mtu_of(&self, name: &str) -> Result<Option<u32>, OverlayError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let Some(l) = links.try_next().await.map_err(nl(format!("get {name}")))? else {
            return Ok(None);
        };
        Ok(l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        }))
    }
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
        _ => None,
    })
}

fn dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        // In AF_BRIDGE (FDB) messages the parser cannot tell the address
        // family and keeps the raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            <[u8; 4]>::try_from(raw.as_slice())
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
        }
        _ => None,
    })
}

/// `02:42:0a:00:01:02`.
pub fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC swarm derives from an IPv4 address: `02:42` + the address, so a
/// task's MAC is known wherever its IP is.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        let (br, vx) = device_names(0x00ff_ffff);
        assert!(br.len() <= 15 && vx.len() <= 15, "{br} {vx}");
        assert_eq!(
            device_names(4097),
            ("shl-br4097".into(), "shl-vx4097".into())
        );
    }

    #[test]
    fn mtu_is_derived_or_checked() {
        let mut s = OverlaySpec {
            vni: 4097,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            prefix: 24,
            local_vtep: Ipv4Addr::new(198, 18, 0, 1),
            port: DEFAULT_PORT,
            underlay_mtu: 1500,
            mtu: None,
        };
        assert_eq!(s.mtu().ok(), Some(1450));
        s.mtu = Some(1400);
        assert_eq!(s.mtu().ok(), Some(1400));
        s.mtu = Some(1451);
        let e = s.mtu().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("give at most 1450"), "{e}");
    }

    proptest! {
        #[test]
        fn macs_follow_ips(a in any::<u32>()) {
            let ip = Ipv4Addr::from(a);
            let m = mac_for(ip);
            prop_assert_eq!(m[0] & 1, 0, "multicast bit set");
            prop_assert_eq!(m[0] & 2, 2, "not locally administered");
            prop_assert_eq!(&m[2..], &ip.octets()[..]);
            prop_assert_eq!(mac(&m).len(), 17);
        }
    }
}
