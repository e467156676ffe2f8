//! The overlay driver (shoal-overlay) on two lab nodes: kernel VXLAN devices
//! and bridges made over rtnetlink inside the nodes' namespaces, one task
//! namespace per node plugged into its bridge, remote endpoints programmed
//! as static FDB and neighbour entries. Proves that tasks reach each other
//! only once programmed, that a full-MTU packet with DF crosses, what the
//! kernel holds, that unprogramming cuts traffic, and that removal leaves
//! no device.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use shoal_lab::taskns::TaskNs;
use shoal_lab::{DATA_IFACE, Lab, netns};
use shoal_netns::link::mtu as mtu_of;
use shoal_overlay::{
    DEVICE_PREFIX, Driver, Ipv4Net, MacAddr, NetworkDevices, OverlayError, OverlaySpec, Release,
    RemoteEndpoint, Remotes, Underlay, bridge_name, vxlan_name,
};

const VNI: u32 = 4097;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);

fn subnet() -> Ipv4Net {
    // A constant subnet: no host bits, prefix <= 32.
    Ipv4Net::new(Ipv4Addr::new(10, 0, 9, 0), 24).unwrap_or_else(|e| panic!("{e}"))
}

/// Node `k`'s spec: VTEP = its underlay address, underlay = its eth0.
fn spec(lab: &Lab, k: usize) -> OverlaySpec {
    OverlaySpec::new(
        VNI,
        subnet(),
        GATEWAY,
        lab.node(k).addr(),
        Underlay::Name(DATA_IFACE.to_owned()),
    )
}

/// A task: its namespace, address and MAC, and the name of its veth's end
/// on the node (a port of the network's bridge).
struct Task {
    ns: TaskNs,
    ip: Ipv4Addr,
    mac: MacAddr,
    port: String,
}

impl Task {
    fn endpoint(&self, lab: &Lab, k: usize) -> RemoteEndpoint {
        RemoteEndpoint {
            ip: self.ip,
            mac: self.mac,
            vtep: lab.node(k).addr(),
        }
    }
}

async fn link(handle: &Handle, name: &str) -> anyhow::Result<LinkMessage> {
    handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await?
        .with_context(|| format!("no link {name}"))
}

/// The IPv4 addresses of link `index`, as `a.b.c.d/len`.
async fn ipv4_addresses(handle: &Handle, index: u32) -> anyhow::Result<Vec<String>> {
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(addresses
        .iter()
        .filter(|a| a.header.family == AddressFamily::Inet)
        .filter_map(|a| {
            a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(format!("{ip}/{}", a.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// Names of the `shl-*` devices in a namespace.
async fn shoal_devices(handle: &Handle) -> anyhow::Result<Vec<String>> {
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) if name.starts_with(DEVICE_PREFIX) => {
                    Some(name.clone())
                }
                _ => None,
            })
        })
        .collect())
}

/// A task on node `k`: a fresh namespace whose `eth0` (address `ip`/24,
/// MAC 02:42:<ip>, the overlay MTU, default route via the gateway) is a
/// veth whose other end, `tsk<k>`, is a port of the network's bridge.
async fn plug_task(
    lab: &Lab,
    k: usize,
    devices: &NetworkDevices,
    ip: Ipv4Addr,
) -> anyhow::Result<Task> {
    let ns = TaskNs::create().await?;
    let [a, b, c, d] = ip.octets();
    let mac = MacAddr([0x02, 0x42, a, b, c, d]);
    let port = format!("tsk{k}");
    let fd = netns::open(ns.name())?;
    // The peer is created directly inside the task namespace.
    let peer = LinkUnspec::new_with_name("eth0")
        .address(mac.octets().to_vec())
        .mtu(devices.mtu)
        .setns_by_fd(fd.as_raw_fd())
        .build();
    let node = netns::netlink(lab.node(k).netns())?;
    node.link()
        .add(
            LinkVeth::new(&port, "eth0")
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .mtu(devices.mtu)
                .controller(devices.bridge.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("veth {port} on {} in n{k}", devices.bridge.name))?;

    let handle = ns.netlink()?;
    shoal_lab::address_up(&handle, ns.name(), "eth0", ip, subnet().prefix_len()).await?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(GATEWAY)
                .build(),
        )
        .execute()
        .await
        .context("default route via the gateway")?;
    Ok(Task { ns, ip, mac, port })
}

/// One ICMP echo from `from` to `to` with `payload` bytes and DF set
/// (`-M do`: never fragmented, refused locally if over the MTU).
async fn ping(from: &Task, to: Ipv4Addr, payload: u32, wait_s: u32) -> anyhow::Result<bool> {
    let mut command = from.ns.command("ping");
    command.args(["-n", "-q", "-c", "1", "-M", "do"]);
    command.args(["-W", &wait_s.to_string(), "-s", &payload.to_string()]);
    command.arg(to.to_string());
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .context("run ping (iputils) in the task namespace")?;
    Ok(out.status.success())
}

async fn reaches(from: &Task, to: &Task, payload: u32) -> anyhow::Result<bool> {
    ping(from, to.ip, payload, 2).await
}

/// A refused ping waits out its whole timeout; keep that short.
async fn blocked(from: &Task, to: &Task) -> anyhow::Result<bool> {
    Ok(!ping(from, to.ip, 56, 1).await?)
}

fn only(endpoint: RemoteEndpoint) -> Remotes {
    Remotes {
        endpoints: vec![endpoint],
        ..Remotes::default()
    }
}

#[tokio::test]
async fn overlay_driver_connects_tasks_across_nodes() -> anyhow::Result<()> {
    let started = Instant::now();
    let lab = Lab::builder("ovl").nodes(2).daemons(false).start().await?;
    let node_path = |k: usize| netns::netns_path(lab.node(k).netns());
    let drivers = [
        Driver::in_netns(node_path(1))?,
        Driver::in_netns(node_path(2))?,
    ];
    let (d1, d2) = (&drivers[0], &drivers[1]);
    let n1 = netns::netlink(lab.node(1).netns())?;

    // --- devices ---
    let dev1 = d1.ensure_network(&spec(&lab, 1)).await?;
    let dev2 = d2.ensure_network(&spec(&lab, 2)).await?;
    assert_eq!(dev1.bridge.name, "shl-br-4097");
    assert_eq!(dev1.vxlan.name, "shl-vx-4097");
    assert_eq!(
        (&dev2.bridge.name, &dev2.vxlan.name),
        (&bridge_name(VNI), &vxlan_name(VNI))
    );
    assert_eq!(dev1.mtu, 1450, "lab underlay MTU 1500 - 50");
    for name in [&dev1.bridge.name, &dev1.vxlan.name] {
        assert_eq!(mtu_of(&link(&n1, name).await?), Some(1450), "{name}");
    }
    assert_eq!(
        ipv4_addresses(&n1, dev1.bridge.index).await?,
        ["10.0.9.1/24"]
    );

    // Idempotent: the same spec again finds the same devices.
    assert_eq!(d1.ensure_network(&spec(&lab, 1)).await?, dev1);

    // An MTU the underlay cannot carry is refused, naming field and limit.
    let too_big = OverlaySpec {
        mtu: Some(1451),
        ..spec(&lab, 1)
    };
    match d1.ensure_network(&too_big).await {
        Err(e @ OverlayError::MtuTooLarge { limit: 1450, .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains("mtu = 1451") && text.contains("at most 1450"),
                "{text}"
            );
        }
        other => bail!("mtu 1451 on a 1500 underlay: {other:?}"),
    }
    // A setting the kernel cannot change in place is reported, not forced.
    let other_port = OverlaySpec {
        port: 4790,
        ..spec(&lab, 1)
    };
    match d1.ensure_network(&other_port).await {
        Err(OverlayError::Mismatch {
            field: "dstport", ..
        }) => {}
        other => bail!("dstport 4790 on an existing 4789 device: {other:?}"),
    }
    // A VTEP that is not this node's address is caught before any change.
    let foreign_vtep = OverlaySpec {
        local_vtep: lab.node(2).addr(),
        ..spec(&lab, 1)
    };
    match d1.ensure_network(&foreign_vtep).await {
        Err(OverlayError::VtepNotLocal { .. }) => {}
        other => bail!("n2's address as n1's VTEP: {other:?}"),
    }
    // What can change in place is fixed: a smaller MTU and another subnet,
    // then back to the spec.
    let changed = OverlaySpec {
        mtu: Some(1400),
        subnet: Ipv4Net::new(Ipv4Addr::new(10, 0, 19, 0), 24)?,
        gateway: Ipv4Addr::new(10, 0, 19, 1),
        ..spec(&lab, 1)
    };
    assert_eq!(d1.ensure_network(&changed).await?.mtu, 1400);
    assert_eq!(mtu_of(&link(&n1, &dev1.vxlan.name).await?), Some(1400));
    assert_eq!(
        ipv4_addresses(&n1, dev1.bridge.index).await?,
        ["10.0.19.1/24"]
    );
    assert_eq!(d1.ensure_network(&spec(&lab, 1)).await?, dev1);
    assert_eq!(mtu_of(&link(&n1, &dev1.bridge.name).await?), Some(1450));
    assert_eq!(
        ipv4_addresses(&n1, dev1.bridge.index).await?,
        ["10.0.9.1/24"]
    );

    // --- tasks ---
    let t1 = plug_task(&lab, 1, &dev1, Ipv4Addr::new(10, 0, 9, 2)).await?;
    let t2 = plug_task(&lab, 2, &dev2, Ipv4Addr::new(10, 0, 9, 3)).await?;
    ensure!(
        ping(&t1, GATEWAY, 56, 2).await?,
        "t1 cannot reach its gateway on n1's bridge"
    );

    // Nothing programmed: no flooding, no learning, so nothing crosses.
    assert_eq!(d1.remotes(VNI).await?, Remotes::default());
    ensure!(
        blocked(&t1, &t2).await?,
        "t1 reached t2 with no remote programmed: flooding?"
    );

    let (r1, r2) = (t1.endpoint(&lab, 1), t2.endpoint(&lab, 2));
    d1.add_remote(VNI, r2).await?;
    d2.add_remote(VNI, r1).await?;
    // Programming twice is harmless (entries are replaced).
    d1.add_remote(VNI, r2).await?;

    // The kernel holds exactly the other node's endpoint, both halves of it.
    assert_eq!(
        d1.remotes(VNI).await?,
        only(r2),
        "n1's VXLAN FDB/neighbours"
    );
    assert_eq!(
        d2.remotes(VNI).await?,
        only(r1),
        "n2's VXLAN FDB/neighbours"
    );

    ensure!(reaches(&t1, &t2, 56).await?, "t1 (n1) cannot reach t2 (n2)");
    ensure!(reaches(&t2, &t1, 56).await?, "t2 (n2) cannot reach t1 (n1)");
    // 1372 bytes of ICMP payload = a 1400-byte IP packet, DF set.
    ensure!(
        reaches(&t1, &t2, 1372).await?,
        "a 1400-byte DF packet did not cross"
    );
    // The largest packet the overlay MTU allows (1450) fills the 1500-byte
    // underlay exactly once encapsulated: the MTU derivation is exact.
    ensure!(
        reaches(&t1, &t2, 1422).await?,
        "a 1450-byte DF packet did not cross"
    );

    // Unprogramming n1 cuts both directions: n1 can no longer send to t2,
    // not even the reply to t2's request.
    d1.remove_remote(VNI, r2).await?;
    assert_eq!(d1.remotes(VNI).await?, Remotes::default());
    assert_eq!(d2.remotes(VNI).await?, only(r1));
    ensure!(
        blocked(&t1, &t2).await?,
        "t1 still reaches t2 after remove_remote"
    );
    ensure!(
        blocked(&t2, &t1).await?,
        "t2 still gets replies from t1 after remove_remote"
    );
    // Removing again is a no-op; programming again restores the path.
    d1.remove_remote(VNI, r2).await?;
    d1.add_remote(VNI, r2).await?;
    ensure!(
        reaches(&t1, &t2, 56).await?,
        "re-adding the remote did not restore the path"
    );

    // --- teardown ---
    // What a restarted agent finds by the driver's names.
    assert_eq!(d1.networks().await?, vec![VNI]);
    // A network with a task on the node stays.
    assert_eq!(
        d1.release_network(VNI).await?,
        Release::InUse {
            ports: vec![t1.port.clone()]
        }
    );
    ensure!(
        link(&n1, &dev1.vxlan.name).await.is_ok(),
        "released while in use"
    );
    // n1: its last task goes (veth deleted), then the network goes with it.
    n1.link()
        .del(link(&n1, &t1.port).await?.header.index)
        .execute()
        .await?;
    assert_eq!(d1.release_network(VNI).await?, Release::Removed);
    // n2: removed outright, with its task still plugged; twice is fine.
    d2.remove_network(VNI).await?;
    d2.remove_network(VNI).await?;
    for k in 1..=2 {
        let handle = netns::netlink(lab.node(k).netns())?;
        assert_eq!(shoal_devices(&handle).await?, Vec::<String>::new(), "n{k}");
    }
    assert_eq!(d1.networks().await?, Vec::<u32>::new());
    match d1.remotes(VNI).await {
        Err(OverlayError::NetworkMissing { vni: VNI, device }) => {
            assert_eq!(device, vxlan_name(VNI));
        }
        other => bail!("remotes of a removed network: {other:?}"),
    }

    let task_namespaces = [t1.ns.name().to_owned(), t2.ns.name().to_owned()];
    drop((t1, t2));
    for name in task_namespaces {
        ensure!(!netns::exists(&name), "task namespace {name} left behind");
    }
    lab.down()?;
    eprintln!("overlay driver test took {:?}", started.elapsed());
    Ok(())
}
