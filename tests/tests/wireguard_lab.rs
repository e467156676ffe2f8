//! `--opt encrypted=wireguard` (issue 16 part 4) in the namespace lab: real
//! shoald processes on two nodes, each with its boringtun device. Tasks on
//! the WireGuard network talk across nodes while the underlay capture shows
//! WireGuard UDP and no VXLAN of that network in clear (a plain network
//! beside it shows its VXLAN, so the capture works); both nodes rotate
//! their key pairs during a request loop that loses nothing; VXLAN of the
//! WireGuard VNI injected in clear from the underlay is dropped and
//! counted; a host on the underlay running its own WireGuard device, with
//! a key no node record holds, never completes a handshake with a node;
//! and the task MTU leaves room for WireGuard (1390).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{
    Lab,
    probe::{
        capture_underlay, counters, http_get_from, http_service, in_netns, network_vni, pcap_count,
        task_ip, task_netns, task_row, vxlan_frame, vxlan_of,
    },
};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
/// Short, so that the loop below spans rotations of both nodes.
const ROTATION: &str = "12s";
/// How soon after a restarted daemon is up its WireGuard network must
/// carry requests again (heartbeat, set, peers, handshake).
const RESTORED: Duration = Duration::from_secs(30);
/// The request loop: long enough for two rotations of each node.
const LOOP: Duration = Duration::from_secs(30);
/// One request's budget: a rotation costs at most a handshake retry (5 s).
const REQUEST: Duration = Duration::from_secs(10);

/// `node doctor`'s wireguard check of node `k`: (passed, detail).
fn wireguard_check(lab: &Lab, k: usize) -> anyhow::Result<(bool, String)> {
    let out = lab.shoal_output(k, &["node", "doctor", "--format", "json"], b"")?;
    let doctor: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let check = doctor
        .iter()
        .find(|c| c["check"] == "wireguard")
        .with_context(|| format!("n{k}: no wireguard check in {doctor:?}"))?;
    Ok((
        check["status"] == "ok",
        check["detail"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The "N key rotation(s)" of a wireguard check's detail.
fn rotations(detail: &str) -> Option<u64> {
    let before = detail.split(" key rotation").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Node `k`'s WireGuard key as the managers hold it (`node inspect`).
fn node_key(lab: &Lab, k: usize) -> anyhow::Result<shoal_wg::PublicKey> {
    let name = format!("n{k}");
    let v: Value =
        serde_json::from_str(&lab.shoal(1, &["node", "inspect", &name, "--format", "json"])?)?;
    let key = v[0]["wireguard_key"]
        .as_str()
        .with_context(|| format!("no wireguard_key in node inspect {name}: {v}"))?;
    Ok(shoal_wg::PublicKey::parse(key)?)
}

/// Packets node `k`'s kernel received from its WireGuard device (the
/// thread's own /proc/net: sysfs shows the mounting namespace's).
fn tunnel_rx(lab: &Lab, k: usize) -> anyhow::Result<u64> {
    let netns = PathBuf::from(format!("/run/netns/{}", lab.node(k).netns()));
    in_netns(netns, || -> anyhow::Result<u64> {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev")?;
        let line = dev
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{}:", shoal_wg::DEVICE))
            })
            .context("no tunnel in /proc/net/dev")?;
        let rx_packets = line
            .split_once(':')
            .and_then(|(_, v)| v.split_whitespace().nth(1))
            .context("no rx packets column")?;
        Ok(rx_packets.parse()?)
    })?
}

fn mtu_in(netns: PathBuf) -> anyhow::Result<u32> {
    // The task's eth0 as its own namespace's netlink reports it.
    in_netns(netns, || -> anyhow::Result<u32> {
        let out = std::process::Command::new("ip")
            .args(["-j", "link", "show", "eth0"])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v[0]["mtu"]
            .as_u64()
            .map(|m| m as u32)
            .context("no mtu in ip -j link")
    })?
}

#[tokio::test]
async fn wireguard_networks_carry_tasks_encrypted_across_key_rotations() -> anyhow::Result<()> {
    let lab = Lab::builder("wg")
        .nodes(2)
        .client(true)
        .shoald_args(&["--wireguard-key-rotation", ROTATION])
        .start()
        .await?;
    lab.form_swarm(1)?;
    lab.nodes_ready(2, Duration::from_secs(15)).await?;
    lab.shoal(
        1,
        &["network", "create", "--opt", "encrypted=wireguard", "wgnet"],
    )?;
    lab.shoal(1, &["network", "create", "plainnet"])?;
    let ls: Value = serde_json::from_str(&lab.shoal(1, &["network", "ls", "--format", "json"])?)?;
    let wgnet = ls
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "wgnet"))
        .context("wgnet not listed")?;
    ensure!(wgnet["encryption"] == "wireguard", "{wgnet}");
    for (s, net, node) in [
        ("w1", "wgnet", "n1"),
        ("w2", "wgnet", "n2"),
        ("p1", "plainnet", "n1"),
        ("p2", "plainnet", "n2"),
    ] {
        http_service(&lab, HTTP, s, net, node)?;
    }
    for s in ["w1", "w2", "p1", "p2"] {
        lab.running(s, 1, Duration::from_secs(40)).await?;
    }
    let (w1, w2, p1, p2) = (
        task_row(&lab, "w1")?,
        task_row(&lab, "w2")?,
        task_row(&lab, "p1")?,
        task_row(&lab, "p2")?,
    );
    let (wg_vni, plain_vni) = (network_vni(&lab, "wgnet")?, network_vni(&lab, "plainnet")?);
    let mtu = mtu_in(task_netns(&w1)?)?;
    ensure!(mtu == 1390, "a WireGuard task's MTU is {mtu}, not 1390");

    let pcap = format!("/tmp/{}-underlay.pcap", lab.name());
    let mut dump = capture_underlay(&lab, &pcap, "udp port 4789 or udp port 51820")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Both networks work across nodes (retried: endpoints and peers are
    // programmed after the tasks start).
    let (to_w2, to_p2) = (
        SocketAddr::from((task_ip(&w2)?, 80)),
        SocketAddr::from((task_ip(&p2)?, 80)),
    );
    for (from, to, what) in [(&p1, to_p2, "plain"), (&w1, to_w2, "WireGuard")] {
        let mut last = Err(std::io::Error::other("not tried"));
        for _ in 0..20 {
            last = http_get_from(task_netns(from)?, to, Duration::from_secs(2))?;
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ensure!(last.is_ok(), "{what} network, node 1 → node 2: {last:?}");
    }

    // A request loop across both nodes' rotations: none lost.
    let rotated_before = [
        rotations(&wireguard_check(&lab, 1)?.1),
        rotations(&wireguard_check(&lab, 2)?.1),
    ];
    let (start, mut ok, mut failed, mut slowest) =
        (Instant::now(), 0u32, Vec::new(), Duration::ZERO);
    while start.elapsed() < LOOP {
        let t = Instant::now();
        match http_get_from(task_netns(&w1)?, to_w2, REQUEST)? {
            Ok(_) => ok += 1,
            Err(e) => failed.push(format!("at {:?}: {e}", start.elapsed())),
        }
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (c1, c2) = (wireguard_check(&lab, 1)?, wireguard_check(&lab, 2)?);
    println!(
        "request loop: {ok} ok, {} failed, slowest {slowest:?}; rotations {rotated_before:?} → \
         n1 {:?}, n2 {:?}",
        failed.len(),
        rotations(&c1.1),
        rotations(&c2.1)
    );
    ensure!(
        failed.is_empty(),
        "requests lost across rotations: {failed:?}"
    );
    for (k, (passed, detail)) in [(1, &c1), (2, &c2)] {
        ensure!(*passed, "n{k} doctor: {detail}");
        let (was, now) = (
            rotated_before[k - 1].unwrap_or(0),
            rotations(detail).unwrap_or(0),
        );
        ensure!(now > was, "n{k} did not rotate during the loop: {detail}");
    }
    // `node stats` reads the device: a live session with the other node,
    // bytes both ways, and the rotations doctor counted.
    for k in 1..=2 {
        let stats: Value =
            serde_json::from_str(&lab.shoal(k, &["node", "stats", "--format", "json"])?)?;
        let counter = |what: &str| {
            stats["wireguard"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["reason"] == what))
                .and_then(|r| r["count"].as_u64())
                .with_context(|| format!("n{k}: no wireguard {what:?} in node stats"))
        };
        ensure!(counter("peers with a session")? >= 1, "n{k}: {stats}");
        ensure!(
            counter("bytes received")? > 0 && counter("bytes sent")? > 0,
            "n{k}: {stats}"
        );
        ensure!(counter("key rotations")? >= 1, "n{k}: {stats}");
        ensure!(counter("errors")? == 0, "n{k}: {stats}");
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    dump.kill()?;
    dump.wait()?;
    let (wg_clear, plain_clear, wireguard) = (
        pcap_count(&pcap, &vxlan_of(wg_vni))?,
        pcap_count(&pcap, &vxlan_of(plain_vni))?,
        pcap_count(&pcap, "udp port 51820")?,
    );
    println!(
        "underlay: {wireguard} WireGuard packets, {wg_clear} VXLAN of wgnet (VNI {wg_vni}) in \
         clear, {plain_clear} of plainnet"
    );
    ensure!(
        plain_clear > 0,
        "the capture saw no plain VXLAN: is it capturing?"
    );
    ensure!(wireguard > 0, "no WireGuard packets on the underlay");
    ensure!(wg_clear == 0, "{wg_clear} VXLAN packets of wgnet in clear");

    // The attacker on the underlay injects VXLAN of the WireGuard VNI in
    // clear at n2: dropped and counted.
    let n2 = SocketAddr::from((lab.node(2).addr(), 4789));
    let client = PathBuf::from(format!(
        "/run/netns/{}",
        lab.client_netns().context("client netns")?
    ));
    let reason = "cleartext-on-encrypted-network";
    let dropped = || -> anyhow::Result<u64> {
        Ok(counters(&lab, 2, "mesh_reasons")?
            .get(reason)
            .copied()
            .unwrap_or(0))
    };
    let before = dropped()?;
    let payload = vxlan_frame(wg_vni, to_w2.ip().to_string().parse()?);
    in_netns(client, move || -> std::io::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..5 {
            s.send_to(&payload, n2)?;
        }
        Ok(())
    })??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = dropped()?;
    println!("n2 {reason}: {before} → {after}");
    ensure!(
        after >= before + 5,
        "injected cleartext not dropped: {before} → {after}"
    );

    // The attacker runs WireGuard too, with its own key and n2 as its peer:
    // n2 knows no such key, so no handshake completes and nothing the
    // attacker sends reaches n2's tunnel.
    let (n2_key, n2_addr) = (node_key(&lab, 2)?, lab.node(2).addr());
    let client = PathBuf::from(format!(
        "/run/netns/{}",
        lab.client_netns().context("client netns")?
    ));
    let rx_before = tunnel_rx(&lab, 2)?;
    let rogue_pcap = format!("/tmp/{}-rogue.pcap", lab.name());
    let mut rogue_dump = capture_underlay(&lab, &rogue_pcap, "udp dst port 51820")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rogue = in_netns(client.clone(), move || {
        shoal_wg::Tunnel::standalone(
            &shoal_wg::KeyPair::generate(),
            &shoal_wg::uapi::PeerChange::Set {
                key: n2_key,
                endpoint: n2_addr,
                allowed: Ipv4Addr::new(10, 66, 0, 2),
            },
            Ipv4Addr::new(10, 66, 0, 1),
            24,
        )
    })??;
    let payload = vxlan_frame(wg_vni, to_w2.ip().to_string().parse()?);
    in_netns(client, move || -> std::io::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        // Into the rogue tunnel: boringtun offers n2 handshakes for them.
        for _ in 0..20 {
            s.send_to(&payload, (Ipv4Addr::new(10, 66, 0, 2), 4789))?;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    })??;
    let status = rogue.status()?;
    let rx_after = tunnel_rx(&lab, 2)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rogue_dump.kill()?;
    rogue_dump.wait()?;
    // The attempts did reach n2: handshake initiations from the client.
    let tried = pcap_count(&rogue_pcap, "src host 198.18.0.250 and udp dst port 51820")?;
    ensure!(
        tried > 0,
        "the rogue device sent nothing to n2: is it running?"
    );
    println!(
        "rogue device: {tried} handshake attempts, {:?}; n2 tunnel rx {rx_before} → {rx_after}",
        status.peers
    );
    ensure!(
        status
            .peers
            .iter()
            .all(|p| p.since_handshake.is_none() && p.rx_bytes == 0),
        "the rogue device got a session with n2: {status:?}"
    );
    ensure!(
        rx_after == rx_before,
        "n2's tunnel took packets from the rogue device: {rx_before} → {rx_after}"
    );
    drop(rogue);

    // A restarted shoald (live restore keeps w2 running) makes a new key
    // pair, a new device and w2's VXLAN device on it again (the old one
    // went with the old tunnel): n1's task reaches w2 again.
    let key_before = node_key(&lab, 2)?;
    lab.restart(2).await?;
    let restarted = Instant::now();
    let mut last = Err(std::io::Error::other("not tried"));
    while restarted.elapsed() < RESTORED {
        last = http_get_from(task_netns(&w1)?, to_w2, REQUEST)?;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        last.is_ok(),
        "w1 → w2 within {RESTORED:?} of n2's restart: {last:?}"
    );
    println!(
        "after n2's restart: w1 → w2 answered {:?} after the daemon was up",
        restarted.elapsed()
    );
    ensure!(
        node_key(&lab, 2)? != key_before,
        "n2 kept its WireGuard key across a restart"
    );
    lab.down()?;
    Ok(())
}
