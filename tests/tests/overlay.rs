//! The overlay driver between two lab nodes: real kernel VXLAN devices and
//! bridges made over rtnetlink, remote endpoints as static FDB and
//! neighbour entries, traffic between task namespaces on different nodes,
//! a 1400-byte packet with DF across, and nothing left when removed.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    process::Command,
};

use anyhow::{Context, ensure};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{LinkUnspec, LinkVeth};
use shoal_lab::{Lab, netns};
use shoal_vxlan::{DEFAULT_PORT, Driver, OverlaySpec, Remote, device_names, mac_for};

const VNI: u32 = 4097;

/// A task's namespace, removed on drop (even on a failed assertion).
struct TaskNs(String);

impl Drop for TaskNs {
    fn drop(&mut self) {
        let _gone = netns::delete(&self.0);
    }
}

fn spec(lab: &Lab, k: usize) -> OverlaySpec {
    OverlaySpec {
        vni: VNI,
        gateway: Ipv4Addr::new(10, 0, 9, 1),
        prefix: 24,
        local_vtep: lab.node(k).addr(),
        port: DEFAULT_PORT,
        underlay_mtu: 1500,
        mtu: None,
    }
}

/// A task on node `k` at 10.0.9.(k+1): a namespace whose eth0 is a veth on
/// the network's bridge, with the MAC derived from its IP.
async fn task(lab: &Lab, k: usize, bridge: u32) -> anyhow::Result<(TaskNs, Ipv4Addr)> {
    let name = format!("{}-t", lab.node(k).netns());
    netns::create(&name)?;
    let guard = TaskNs(name.clone());
    let ip = Ipv4Addr::new(10, 0, 9, k as u8 + 1);
    let fd = netns::open(&name)?;
    let peer = LinkUnspec::new_with_name("eth0")
        .mtu(1450)
        .address(mac_for(ip).to_vec())
        .setns_by_fd(fd.as_raw_fd())
        .build();
    let node = netns::netlink(lab.node(k).netns())?;
    node.link()
        .add(
            LinkVeth::new("tk0", "eth0")
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .mtu(1450)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await?;
    let h = netns::netlink(&name)?;
    for dev in ["lo", "eth0"] {
        let mut links = h.link().get().match_name(dev.to_owned()).execute();
        let l = links.try_next().await?.context(dev)?;
        if dev == "eth0" {
            h.address()
                .add(l.header.index, IpAddr::V4(ip), 24)
                .execute()
                .await?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(l.header.index).up().build())
            .execute()
            .await?;
    }
    Ok((guard, ip))
}

fn ping(ns: &str, to: Ipv4Addr, size: usize) -> anyhow::Result<bool> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W2", "-M", "do", "-s"])
        .arg(size.to_string())
        .arg(to.to_string())
        .output()?;
    Ok(out.status.success())
}

async fn shl_devices(lab: &Lab, k: usize) -> anyhow::Result<Vec<String>> {
    let h = netns::netlink(lab.node(k).netns())?;
    let mut links = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(l) = links.try_next().await? {
        for a in &l.attributes {
            if let LinkAttribute::IfName(n) = a
                && n.starts_with("shl-")
            {
                out.push(n.clone());
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn tasks_on_two_nodes_talk_over_vxlan_without_flooding() -> anyhow::Result<()> {
    let lab = Lab::builder("ovl").nodes(2).daemons(false).start().await?;
    let mut drivers = Vec::new();
    let mut tasks = Vec::new();
    for k in 1..=2 {
        let d = Driver::new(netns::netlink(lab.node(k).netns())?);
        let (bridge, _) = d.ensure_network(&spec(&lab, k)).await?;
        // Idempotent: a second call changes nothing and fails on nothing.
        assert_eq!(d.ensure_network(&spec(&lab, k)).await?.0, bridge);
        let (br, vx) = device_names(VNI);
        assert_eq!(d.mtu_of(&vx).await?, Some(1450));
        assert_eq!(d.mtu_of(&br).await?, Some(1450));
        tasks.push(task(&lab, k, bridge).await?);
        drivers.push(d);
    }
    let (t1, ip1) = (&tasks[0].0.0, tasks[0].1);
    let ip2 = tasks[1].1;

    // Nothing programmed: no flooding, so nothing gets across.
    ensure!(
        !ping(t1, ip2, 56)?,
        "reached n2's task with no FDB entry: flooding?"
    );

    let r1 = Remote {
        ip: ip1,
        mac: mac_for(ip1),
        vtep: lab.node(1).addr(),
    };
    let r2 = Remote {
        ip: ip2,
        mac: mac_for(ip2),
        vtep: lab.node(2).addr(),
    };
    drivers[0].add_remote(VNI, r2).await?;
    drivers[1].add_remote(VNI, r1).await?;
    // Re-adding is harmless (replace).
    drivers[0].add_remote(VNI, r2).await?;
    assert_eq!(
        drivers[0].remotes(VNI).await?,
        vec![r2],
        "n1 holds exactly n2's task"
    );
    assert_eq!(
        drivers[1].remotes(VNI).await?,
        vec![r1],
        "n2 holds exactly n1's task"
    );

    ensure!(ping(t1, ip2, 56)?, "task on n1 cannot reach the task on n2");
    // 1372 bytes of ICMP payload = a 1400-byte IP packet, DF set.
    ensure!(ping(t1, ip2, 1372)?, "a 1400-byte DF packet did not cross");
    // One byte over the overlay MTU is refused at the sender, not lost.
    ensure!(
        !ping(t1, ip2, 1423)?,
        "a 1451-byte DF packet left a 1450-MTU interface"
    );

    drivers[0].remove_remote(VNI, r2).await?;
    assert!(drivers[0].remotes(VNI).await?.is_empty());
    ensure!(
        !ping(t1, ip2, 56)?,
        "still reachable after the remote was removed"
    );

    drop(tasks);
    for (k, d) in drivers.iter().enumerate() {
        d.remove_network(VNI).await?;
        assert!(
            shl_devices(&lab, k + 1).await?.is_empty(),
            "n{} kept devices",
            k + 1
        );
    }
    Ok(())
}
