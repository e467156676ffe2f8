//! The driver: every kernel change the overlay needs, over rtnetlink, in the
//! network namespace its netlink socket was opened in.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use nix::errno::Errno;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};
use shoal_netns::link::{
    controller as link_controller, infos as link_infos, kind as link_kind, mtu as link_mtu,
    name as link_name,
};

use crate::remotes::{FdbEntry, NeighbourEntry, Remotes};
use crate::spec::{bridge_mac, bridge_name, overlay_mtu, vxlan_name};
use crate::{MacAddr, OverlayError, OverlaySpec, RemoteEndpoint, Underlay};

/// A network device the driver made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub index: u32,
}

/// What a VXLAN device puts around a frame its FDB sends to another node,
/// and where it sends it: enough for the fast path to encapsulate the
/// frame itself, as the device would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPath {
    pub vni: u32,
    /// The device itself.
    pub ifindex: u32,
    /// The device it is bound to (IFLA_VXLAN_LINK).
    pub underlay: u32,
    /// Its source address.
    pub local: Ipv4Addr,
    /// Its UDP destination port.
    pub port: u16,
}

/// The devices that carry one overlay network on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDevices {
    /// The bridge tasks' veths are plugged into; holds the gateway address.
    pub bridge: Device,
    /// The VXLAN device, a port of the bridge.
    pub vxlan: Device,
    /// The MTU of both, which task interfaces must use as well.
    pub mtu: u32,
}

/// What [`Driver::release_network`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// No task was left on the network; its devices are gone.
    Removed,
    /// These bridge ports (tasks' veths) still use the network; nothing was
    /// removed.
    InUse { ports: Vec<String> },
}

/// Programs overlay networks into one network namespace.
///
/// Every method reads the kernel's state before changing it, so running one
/// twice (or after a crash half-way) converges instead of failing on what
/// already exists.
#[derive(Debug, Clone)]
pub struct Driver {
    handle: Handle,
    /// One dump at a time: the kernel refuses (EBUSY) a second dump on a
    /// netlink socket while one is running, and clones share the socket.
    dump: std::sync::Arc<tokio::sync::Mutex<()>>,
}

fn netns_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> OverlayError {
    let path = path.to_owned();
    move |source| OverlayError::Netns { path, op, source }
}

fn errno(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(-message.raw_code())),
        _ => None,
    }
}

impl Driver {
    /// A driver on an existing handle: it acts in the namespace the handle's
    /// socket was opened in.
    pub fn new(handle: Handle) -> Driver {
        Driver {
            handle,
            dump: std::sync::Arc::default(),
        }
    }

    /// A driver for the calling thread's network namespace. Its netlink
    /// connection runs as a task on the current tokio runtime.
    pub fn connect() -> Result<Driver, OverlayError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OverlayError::NoRuntime)?;
        let (connection, handle, _messages) =
            rtnetlink::new_connection().map_err(|source| OverlayError::Netns {
                path: "/proc/thread-self/ns/net".into(),
                op: "open netlink socket",
                source,
            })?;
        runtime.spawn(connection);
        Ok(Driver::new(handle))
    }

    /// A driver for the network namespace at `netns` (`/run/netns/<name>`,
    /// `/proc/<pid>/ns/net`), whatever namespace the caller is in.
    ///
    /// A netlink socket belongs to the namespace of the thread that creates
    /// it, and `setns` moves only the calling thread, so the socket is made on
    /// a short-lived thread that entered `netns`: no tokio worker ever
    /// changes namespace. Its connection task runs on the current runtime.
    pub fn in_netns(netns: impl AsRef<Path>) -> Result<Driver, OverlayError> {
        let path = netns.as_ref();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OverlayError::NoRuntime)?;
        let ns = File::open(path).map_err(netns_err(path, "open"))?;
        let handle = shoal_netns::netlink_in(ns.as_fd(), &runtime).map_err(|e| match e {
            shoal_netns::NetnsError::Socket { source } => {
                netns_err(path, "open netlink socket")(source)
            }
            other => netns_err(path, "setns")(other.into()),
        })?;
        Ok(Driver::new(handle))
    }

    /// The underlying netlink handle (same namespace as the driver).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Creates the network's bridge and VXLAN device, or brings existing ones
    /// to the spec: MTU, up, the VXLAN device on the bridge, and the
    /// gateway as the bridge's only IPv4 address. A VXLAN device whose VNI,
    /// local address, port, underlay, learning or ARP proxy differs is
    /// reported ([`OverlayError::Mismatch`]), not recreated, because that
    /// would drop its programmed remotes behind the caller's back.
    pub async fn ensure_network(&self, spec: &OverlaySpec) -> Result<NetworkDevices, OverlayError> {
        spec.validate()?;
        let underlay = self.underlay(&spec.underlay).await?;
        let underlay_name = link_name(&underlay).unwrap_or_default().to_owned();
        let underlay_mtu = link_mtu(&underlay).unwrap_or(0);
        // Encryption's bytes come out of the underlay's MTU like VXLAN's.
        let mtu = overlay_mtu(
            &underlay_name,
            underlay_mtu.saturating_sub(spec.encryption_overhead),
            spec.mtu,
        )?;
        self.check_vtep_is_local(spec.local_vtep).await?;
        let bridge = self.ensure_bridge(spec, mtu).await?;
        let vxlan = self
            .ensure_vxlan(spec, mtu, underlay.header.index, bridge.index)
            .await?;
        Ok(NetworkDevices { bridge, vxlan, mtu })
    }

    /// Programs a task on another node: a static FDB entry on the VXLAN
    /// device (`mac` → `vtep`, self, permanent) and a permanent neighbour
    /// entry on it (`ip` → `mac`). Either entry is replaced if it exists.
    ///
    /// The neighbour entry is on the VXLAN device, not on the bridge, because
    /// the device's ARP proxy answers tasks' ARP requests from its own
    /// neighbour table: a task's broadcast ARP reaches the VXLAN port and is
    /// answered there, so no ARP ever crosses the overlay and nothing floods.
    /// An entry on the bridge would only serve this node's own IP stack.
    pub async fn add_remote(&self, vni: u32, remote: RemoteEndpoint) -> Result<(), OverlayError> {
        remote.validate()?;
        let RemoteEndpoint { ip, mac, vtep } = remote;
        // FDB first: once ARP is answered, frames must have somewhere to go.
        self.add_fdb(vni, mac, vtep).await?;
        self.add_neighbour(vni, ip, mac).await
    }

    /// A static FDB entry alone (`mac` → `vtep`, self, permanent), replaced
    /// if it exists: frames for another node's bridge, which has no address
    /// to resolve.
    ///
    /// The entry is pinned to the device's underlay (`via`): the kernel
    /// routes an FDB entry's packets by its own interface, not the device's,
    /// so an unpinned entry of a device bound to a tunnel would leave by
    /// the main table's route, in clear.
    pub async fn add_fdb(
        &self,
        vni: u32,
        mac: MacAddr,
        vtep: Ipv4Addr,
    ) -> Result<(), OverlayError> {
        let (vxlan, underlay) = self.require_vxlan_with_underlay(vni).await?;
        let mut request = self
            .handle
            .neighbours()
            .add_bridge(vxlan, &mac.octets())
            // NTF_SELF: the VXLAN device's own FDB, which holds the remote
            // VTEP; without it the entry lands in the bridge's FDB.
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(vtep))
            .replace();
        if let Some(index) = underlay {
            request
                .message_mut()
                .attributes
                .push(NeighbourAttribute::IfIndex(index));
        }
        request
            .execute()
            .await
            .map_err(OverlayError::netlink(format!(
                "add fdb {mac} dst {vtep} self permanent on {}",
                vxlan_name(vni)
            )))
    }

    /// A permanent neighbour entry alone on the VXLAN device (`ip` →
    /// `mac`), replaced if it exists: the ARP proxy then answers for `ip`.
    /// With this node's bridge MAC, tasks send frames for `ip` (a service
    /// VIP) to their own node.
    pub async fn add_neighbour(
        &self,
        vni: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), OverlayError> {
        let vxlan = self.require_vxlan(vni).await?;
        self.handle
            .neighbours()
            .add(vxlan, IpAddr::V4(ip))
            .link_layer_address(&mac.octets())
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(OverlayError::netlink(format!(
                "add neighbour {ip} lladdr {mac} permanent on {}",
                vxlan_name(vni)
            )))
    }

    /// Removes what [`add_remote`](Self::add_remote) programmed for
    /// `remote`. Entries already gone are not an error, and a neighbour entry
    /// that now maps the IP to another MAC (the address was reused by a
    /// newer task) is left alone.
    pub async fn remove_remote(
        &self,
        vni: u32,
        remote: RemoteEndpoint,
    ) -> Result<(), OverlayError> {
        let RemoteEndpoint { ip, mac, vtep } = remote;
        // Neighbour first, so ARP stops resolving before frames stop flowing.
        self.remove_neighbour(vni, ip, mac).await?;
        self.remove_fdb(vni, mac, vtep).await
    }

    /// Removes the neighbour entry `ip` → `mac`; one that maps `ip`
    /// elsewhere, or none, is left as it is.
    pub async fn remove_neighbour(
        &self,
        vni: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), OverlayError> {
        let vxlan = self.require_vxlan(vni).await?;
        let neighbours = self.neighbours_on(vxlan).await?;
        if !neighbours.contains(&NeighbourEntry { ip, mac }) {
            return Ok(());
        }
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = vxlan;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        self.delete_neighbour(
            message,
            format!("delete neighbour {ip} on {}", vxlan_name(vni)),
        )
        .await
    }

    /// Removes the FDB entry `mac` → `vtep`; gone already is not an error.
    pub async fn remove_fdb(
        &self,
        vni: u32,
        mac: MacAddr,
        vtep: Ipv4Addr,
    ) -> Result<(), OverlayError> {
        let (vxlan, underlay) = self.require_vxlan_with_underlay(vni).await?;
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = vxlan;
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()));
        // With the destination given, the kernel deletes only the entry that
        // still points at this VTEP; it matches the pinned interface too.
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                vtep,
            )));
        if let Some(index) = underlay {
            message.attributes.push(NeighbourAttribute::IfIndex(index));
        }
        self.delete_neighbour(
            message,
            format!("delete fdb {mac} dst {vtep} self on {}", vxlan_name(vni)),
        )
        .await
    }

    /// The FDB and neighbour entries on the network's VXLAN device, read from
    /// the kernel.
    pub async fn remotes(&self, vni: u32) -> Result<Remotes, OverlayError> {
        let vxlan = self.require_vxlan(vni).await?;
        let fdb = self.fdb_on(vxlan).await?;
        let neighbours = self.neighbours_on(vxlan).await?;
        Ok(Remotes::pair(fdb, neighbours))
    }

    /// How the network's VXLAN device sends. `None`: it has no source
    /// address or underlay of its own (the driver always gives both), so
    /// only the device itself knows.
    pub async fn vxlan_path(&self, vni: u32) -> Result<Option<VxlanPath>, OverlayError> {
        let link = self.require_vxlan_link(vni).await?;
        Ok(VxlanConfig::of(&link).path(link.header.index))
    }

    /// Deletes the network's VXLAN device and bridge (and with them every
    /// entry programmed on them); missing devices are not an error. Task
    /// veths still on the bridge are left unplugged, not deleted.
    pub async fn remove_network(&self, vni: u32) -> Result<(), OverlayError> {
        for (name, kind, expected) in [
            (vxlan_name(vni), InfoKind::Vxlan, "vxlan"),
            (bridge_name(vni), InfoKind::Bridge, "bridge"),
        ] {
            let Some(link) = self.link_by_name(&name).await? else {
                continue;
            };
            // Our names, but not our device: refuse rather than destroy it.
            expect_kind(&link, &name, kind, expected)?;
            match self.handle.link().del(link.header.index).execute().await {
                // Raced with another remover.
                Err(e) if errno(&e) == Some(Errno::ENODEV) => {}
                other => other.map_err(OverlayError::netlink(format!("delete {name}")))?,
            }
        }
        Ok(())
    }

    /// Removes the network's devices if the node has no task left on it (no
    /// bridge port but the VXLAN device): what to call when a task on the
    /// network goes. Port membership is read from the kernel, so no task
    /// count can drift from the truth.
    pub async fn release_network(&self, vni: u32) -> Result<Release, OverlayError> {
        let bridge_name = bridge_name(vni);
        if let Some(bridge) = self.link_by_name(&bridge_name).await? {
            expect_kind(&bridge, &bridge_name, InfoKind::Bridge, "bridge")?;
            let vxlan = vxlan_name(vni);
            let mut ports = Vec::new();
            let _one_dump = self.dump.lock().await;
            let mut links = self.handle.link().get().execute();
            while let Some(link) = links
                .try_next()
                .await
                .map_err(OverlayError::netlink("dump links"))?
            {
                let name = link_name(&link).unwrap_or_default();
                if link_controller(&link) == Some(bridge.header.index) && name != vxlan {
                    ports.push(name.to_owned());
                }
            }
            if !ports.is_empty() {
                ports.sort();
                return Ok(Release::InUse { ports });
            }
        }
        self.remove_network(vni).await?;
        Ok(Release::Removed)
    }

    /// VNIs of the overlay networks whose VXLAN device or bridge exists
    /// here, found by the driver's device names: what a restarted agent
    /// must reconcile or release.
    pub async fn networks(&self) -> Result<Vec<u32>, OverlayError> {
        let mut vnis = Vec::new();
        let _one_dump = self.dump.lock().await;
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(OverlayError::netlink("dump links"))?
        {
            let name = link_name(&link).unwrap_or_default();
            let vni = name
                .strip_prefix(crate::DEVICE_PREFIX)
                .and_then(|r| r.strip_prefix("vx-").or_else(|| r.strip_prefix("br-")))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(vni) = vni
                && !vnis.contains(&vni)
            {
                vnis.push(vni);
            }
        }
        vnis.sort_unstable();
        Ok(vnis)
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, OverlayError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(OverlayError::netlink(format!("get link {name}"))(e)),
        }
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, OverlayError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(OverlayError::netlink(format!("get link {index}"))(e)),
        }
    }

    /// A link that must exist because it was just created.
    async fn created(&self, name: &str) -> Result<LinkMessage, OverlayError> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| OverlayError::Netlink {
                op: format!("get {name} after creating it"),
                source: rtnetlink::Error::RequestFailed,
            })
    }

    async fn underlay(&self, underlay: &Underlay) -> Result<LinkMessage, OverlayError> {
        let link = match underlay {
            Underlay::Name(name) => self.link_by_name(name).await?,
            Underlay::Index(index) => self.link_by_index(*index).await?,
        };
        link.ok_or_else(|| OverlayError::UnderlayNotFound {
            underlay: underlay.to_string(),
        })
    }

    /// The kernel accepts a VXLAN device with a foreign local address and
    /// then drops every packet it encapsulates, so catch that here.
    async fn check_vtep_is_local(&self, vtep: Ipv4Addr) -> Result<(), OverlayError> {
        // Collected, not cut short: the dump is read to its end.
        let _one_dump = self.dump.lock().await;
        let found: Vec<_> = self
            .handle
            .address()
            .get()
            .set_address_filter(IpAddr::V4(vtep))
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dump addresses"))?;
        if found.is_empty() {
            Err(OverlayError::VtepNotLocal { vtep })
        } else {
            Ok(())
        }
    }

    async fn ensure_bridge(&self, spec: &OverlaySpec, mtu: u32) -> Result<Device, OverlayError> {
        let name = bridge_name(spec.vni);
        let link = match self.link_by_name(&name).await? {
            Some(link) => {
                expect_kind(&link, &name, InfoKind::Bridge, "bridge")?;
                self.fix_link(&link, &name, mtu, None).await?;
                link
            }
            None => {
                let message = LinkBridge::new(&name)
                    .mtu(mtu)
                    .address(bridge_mac(spec.local_vtep).octets().to_vec())
                    .up()
                    .build();
                self.handle
                    .link()
                    .add(message)
                    .execute()
                    .await
                    .map_err(OverlayError::netlink(format!("add bridge {name}")))?;
                self.created(&name).await?
            }
        };
        let index = link.header.index;
        self.ensure_gateway(spec, index, &name).await?;
        Ok(Device { name, index })
    }

    /// Leaves `gateway/prefix` as the bridge's only IPv4 address: others are
    /// left over from an earlier subnet of the VNI and would route its
    /// traffic to this bridge.
    async fn ensure_gateway(
        &self,
        spec: &OverlaySpec,
        index: u32,
        name: &str,
    ) -> Result<(), OverlayError> {
        let prefix_len = spec.subnet.prefix_len();
        let mut present = false;
        let _one_dump = self.dump.lock().await;
        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink(format!("dump addresses of {name}")))?;
        for address in addresses {
            if address.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = address.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if ip == Some(spec.gateway) && address.header.prefix_len == prefix_len {
                present = true;
                continue;
            }
            let shown = format!(
                "{}/{}",
                ip.map(|ip| ip.to_string()).unwrap_or_default(),
                address.header.prefix_len
            );
            self.handle
                .address()
                .del(address)
                .execute()
                .await
                .map_err(OverlayError::netlink(format!(
                    "delete stale address {shown} from {name}"
                )))?;
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(spec.gateway), prefix_len)
                .execute()
                .await
                .map_err(OverlayError::netlink(format!(
                    "add {}/{prefix_len} to {name}",
                    spec.gateway
                )))?;
        }
        Ok(())
    }

    async fn ensure_vxlan(
        &self,
        spec: &OverlaySpec,
        mtu: u32,
        underlay: u32,
        bridge: u32,
    ) -> Result<Device, OverlayError> {
        let name = vxlan_name(spec.vni);
        let want = VxlanConfig {
            vni: spec.vni,
            local: Some(spec.local_vtep),
            port: spec.port,
            underlay: Some(underlay),
            group: None,
            learning: false,
            proxy: true,
        };
        let index =
            match self.link_by_name(&name).await? {
                Some(link) => {
                    expect_kind(&link, &name, InfoKind::Vxlan, "vxlan")?;
                    let have = VxlanConfig::of(&link);
                    if let Some((field, have, want)) = have.differs_from(&want) {
                        return Err(OverlayError::Mismatch {
                            vni: spec.vni,
                            device: name,
                            field,
                            have,
                            want,
                        });
                    }
                    self.fix_link(&link, &name, mtu, Some(bridge)).await?;
                    link.header.index
                }
                None => {
                    let message = LinkVxlan::new(&name, spec.vni)
                        // IFLA_VXLAN_LINK: binds the device to the underlay, and
                        // the kernel then refuses an MTU the underlay cannot carry.
                        .dev(underlay)
                        .local(spec.local_vtep)
                        .port(spec.port)
                        // Remotes are programmed, never learned from traffic.
                        .learning(false)
                        // Answer ARP from the neighbour table (see add_remote).
                        .proxy(true)
                        .mtu(mtu)
                        .controller(bridge)
                        .up()
                        .build();
                    self.handle.link().add(message).execute().await.map_err(
                        OverlayError::netlink(format!(
                            "add vxlan {name} id {} local {} dstport {} dev ifindex {underlay}",
                            spec.vni, spec.local_vtep, spec.port
                        )),
                    )?;
                    self.created(&name).await?.header.index
                }
            };
        Ok(Device { name, index })
    }

    /// Sets MTU, controller and up where they differ; sends nothing when all
    /// match, so an unchanged network sees no netlink writes.
    async fn fix_link(
        &self,
        link: &LinkMessage,
        name: &str,
        mtu: u32,
        controller: Option<u32>,
    ) -> Result<(), OverlayError> {
        let mut builder = LinkUnspec::new_with_index(link.header.index);
        let mut changes = Vec::new();
        if link_mtu(link) != Some(mtu) {
            builder = builder.mtu(mtu);
            changes.push(format!("mtu {mtu}"));
        }
        if let Some(controller) = controller
            && link_controller(link) != Some(controller)
        {
            builder = builder.controller(controller);
            changes.push(format!("master ifindex {controller}"));
        }
        if !link.header.flags.contains(LinkFlags::Up) {
            builder = builder.up();
            changes.push("up".to_owned());
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(OverlayError::netlink(format!(
                "set {name} {}",
                changes.join(" ")
            )))
    }

    /// The VXLAN device's index and the underlay it is bound to.
    async fn require_vxlan_with_underlay(
        &self,
        vni: u32,
    ) -> Result<(u32, Option<u32>), OverlayError> {
        let link = self.require_vxlan_link(vni).await?;
        Ok((link.header.index, VxlanConfig::of(&link).underlay))
    }

    async fn require_vxlan(&self, vni: u32) -> Result<u32, OverlayError> {
        Ok(self.require_vxlan_link(vni).await?.header.index)
    }

    /// The network's VXLAN device; missing, or not a VXLAN device under
    /// our name, is an error.
    async fn require_vxlan_link(&self, vni: u32) -> Result<LinkMessage, OverlayError> {
        let name = vxlan_name(vni);
        let link = self
            .link_by_name(&name)
            .await?
            .ok_or(OverlayError::NetworkMissing {
                vni,
                device: name.clone(),
            })?;
        expect_kind(&link, &name, InfoKind::Vxlan, "vxlan")?;
        Ok(link)
    }

    /// The VXLAN device's own (NTF_SELF) FDB entries. The bridge's entries
    /// for the same port (learned or local, NTF_MASTER) are not ours.
    async fn fdb_on(&self, vxlan: u32) -> Result<Vec<FdbEntry>, OverlayError> {
        let _one_dump = self.dump.lock().await;
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dump fdb"))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == vxlan && m.header.flags.contains(NeighbourFlags::Own))
            .filter_map(|m| {
                Some(FdbEntry {
                    mac: lladdr(m)?,
                    vtep: destination(m).unwrap_or(Ipv4Addr::UNSPECIFIED),
                })
            })
            .collect())
    }

    async fn neighbours_on(&self, vxlan: u32) -> Result<Vec<NeighbourEntry>, OverlayError> {
        let _one_dump = self.dump.lock().await;
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(OverlayError::netlink("dump neighbours"))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == vxlan)
            .filter_map(|m| {
                Some(NeighbourEntry {
                    ip: destination(m)?,
                    mac: lladdr(m)?,
                })
            })
            .collect())
    }

    async fn delete_neighbour(
        &self,
        message: NeighbourMessage,
        op: String,
    ) -> Result<(), OverlayError> {
        match self.handle.neighbours().del(message).execute().await {
            // Already gone: removal is idempotent.
            Err(e) if errno(&e) == Some(Errno::ENOENT) => Ok(()),
            other => other.map_err(OverlayError::netlink(op)),
        }
    }
}

/// The VXLAN settings the driver fixes at creation and cannot change in
/// place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VxlanConfig {
    vni: u32,
    local: Option<Ipv4Addr>,
    port: u16,
    underlay: Option<u32>,
    group: Option<Ipv4Addr>,
    learning: bool,
    proxy: bool,
}

impl VxlanConfig {
    /// Reads a dumped VXLAN link. The kernel omits LOCAL, LINK and GROUP
    /// when unset, hence the `Option`s.
    fn of(link: &LinkMessage) -> VxlanConfig {
        let mut config = VxlanConfig {
            vni: 0,
            local: None,
            port: 0,
            underlay: None,
            group: None,
            learning: false,
            proxy: false,
        };
        for info in vxlan_info(link) {
            match info {
                InfoVxlan::Id(vni) => config.vni = *vni,
                InfoVxlan::Local(local) if !local.is_unspecified() => config.local = Some(*local),
                InfoVxlan::Port(port) => config.port = *port,
                InfoVxlan::Link(index) if *index != 0 => config.underlay = Some(*index),
                InfoVxlan::Group(group) if !group.is_unspecified() => config.group = Some(*group),
                InfoVxlan::Learning(on) => config.learning = *on,
                InfoVxlan::Proxy(on) => config.proxy = *on,
                _ => {}
            }
        }
        config
    }

    fn path(&self, ifindex: u32) -> Option<VxlanPath> {
        Some(VxlanPath {
            vni: self.vni,
            ifindex,
            underlay: self.underlay?,
            local: self.local?,
            port: self.port,
        })
    }

    /// The first setting that differs: (field, have, want).
    fn differs_from(&self, want: &VxlanConfig) -> Option<(&'static str, String, String)> {
        fn shown<T: ToString>(value: Option<T>) -> String {
            value.map_or_else(|| "none".to_owned(), |v| v.to_string())
        }
        let fields = [
            ("vni", self.vni.to_string(), want.vni.to_string()),
            ("local", shown(self.local), shown(want.local)),
            ("dstport", self.port.to_string(), want.port.to_string()),
            (
                "underlay ifindex",
                shown(self.underlay),
                shown(want.underlay),
            ),
            ("group", shown(self.group), shown(want.group)),
            (
                "learning",
                self.learning.to_string(),
                want.learning.to_string(),
            ),
            ("proxy", self.proxy.to_string(), want.proxy.to_string()),
        ];
        fields.into_iter().find(|(_, have, want)| have != want)
    }
}

fn vxlan_info(link: &LinkMessage) -> &[InfoVxlan] {
    link_infos(link)
        .iter()
        .find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(infos)) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

fn expect_kind(
    link: &LinkMessage,
    name: &str,
    kind: InfoKind,
    expected: &'static str,
) -> Result<(), OverlayError> {
    match link_kind(link) {
        Some(found) if *found == kind => Ok(()),
        found => Err(OverlayError::WrongKind {
            device: name.to_owned(),
            expected,
            found: found.map_or_else(|| "kindless".to_owned(), ToString::to_string),
        }),
    }
}

fn lladdr(message: &NeighbourMessage) -> Option<MacAddr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

fn destination(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // In an AF_BRIDGE (FDB) dump the parser cannot tell the VTEP's
        // family from the message's, so it hands over the raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkAttribute;

    fn vxlan_link(infos: Vec<InfoVxlan>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(infos)),
        ]));
        link
    }

    fn wanted() -> VxlanConfig {
        VxlanConfig {
            vni: 4097,
            local: Some(Ipv4Addr::new(198, 18, 0, 1)),
            port: 4789,
            underlay: Some(2),
            group: None,
            learning: false,
            proxy: true,
        }
    }

    #[test]
    fn a_dump_of_what_we_create_matches_the_spec() {
        // As the kernel dumps it: unset group omitted, every flag present.
        let link = vxlan_link(vec![
            InfoVxlan::Id(4097),
            InfoVxlan::Link(2),
            InfoVxlan::Local(Ipv4Addr::new(198, 18, 0, 1)),
            InfoVxlan::Learning(false),
            InfoVxlan::Proxy(true),
            InfoVxlan::L2Miss(false),
            InfoVxlan::Port(4789),
        ]);
        assert_eq!(VxlanConfig::of(&link).differs_from(&wanted()), None);
        assert!(expect_kind(&link, "shl-vx-4097", InfoKind::Vxlan, "vxlan").is_ok());
    }

    #[test]
    fn differences_name_the_field() {
        let link = vxlan_link(vec![
            InfoVxlan::Id(4097),
            InfoVxlan::Link(2),
            InfoVxlan::Local(Ipv4Addr::new(198, 18, 0, 9)),
            InfoVxlan::Group(Ipv4Addr::new(239, 1, 1, 1)),
            InfoVxlan::Learning(true),
            InfoVxlan::Proxy(true),
            InfoVxlan::Port(4789),
        ]);
        let have = VxlanConfig::of(&link);
        assert_eq!(
            have.differs_from(&wanted()),
            Some(("local", "198.18.0.9".to_owned(), "198.18.0.1".to_owned()))
        );
        let have = VxlanConfig {
            local: wanted().local,
            ..have
        };
        assert_eq!(have.differs_from(&wanted()).map(|d| d.0), Some("group"));
    }

    #[test]
    fn fdb_destinations_are_read_from_raw_bytes() {
        let mut fdb = NeighbourMessage::default();
        fdb.header.family = AddressFamily::Bridge;
        fdb.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                vec![198, 18, 0, 2],
            )));
        assert_eq!(destination(&fdb), Some(Ipv4Addr::new(198, 18, 0, 2)));
        fdb.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Other(
            vec![0; 16],
        ))];
        assert_eq!(destination(&fdb), None, "an IPv6 VTEP is not ours");
    }

    #[test]
    fn a_foreign_device_under_our_name_is_refused() {
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        let err = expect_kind(&link, "shl-br-7", InfoKind::Bridge, "bridge");
        assert!(
            matches!(&err, Err(OverlayError::WrongKind { found, .. }) if found == "dummy"),
            "{err:?}"
        );
    }
}
