//! `--opt encrypted` on this machine's kernel, which has xfrm policies but
//! no ESP (issue 16 part 3): real shoald processes in a 2-node lab with a
//! client on the underlay. The encrypted network fails closed: its tasks
//! on the two nodes cannot talk (the policy holds, no state exists), no
//! VXLAN of its VNI appears in clear on the underlay, `node stats` and
//! `node doctor` say why; a plain network beside it works. Playing the
//! attacker, the client injects cleartext VXLAN for the encrypted VNI at a
//! node: dropped and counted, while the same for the plain VNI is not.
//! A policy an earlier shoald left for a node that is gone is removed when
//! n2's daemon restarts, and its policy to n1 is back.
//! (The ESP data path itself is proved in the VM lab: vmtests/tests/ipsec.rs.)

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::{
    Lab,
    probe::{
        capture_underlay, connect_from, counters, http_service, in_netns, network_vni, pcap_count,
        task_ip, task_netns, task_row, vxlan_frame, vxlan_of,
    },
};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
const CONNECT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn encrypted_networks_fail_closed_without_esp_and_refuse_injected_cleartext()
-> anyhow::Result<()> {
    let lab = Lab::builder("ipsec").nodes(2).client(true).start().await?;
    lab.form_swarm(1)?;
    lab.nodes_ready(2, Duration::from_secs(15)).await?;
    lab.shoal(1, &["network", "create", "--opt", "encrypted", "encnet"])?;
    lab.shoal(1, &["network", "create", "plainnet"])?;
    for (s, net, node) in [
        ("e1", "encnet", "n1"),
        ("e2", "encnet", "n2"),
        ("p1", "plainnet", "n1"),
        ("p2", "plainnet", "n2"),
    ] {
        http_service(&lab, HTTP, s, net, node)?;
    }
    for s in ["e1", "e2", "p1", "p2"] {
        lab.running(s, 1, Duration::from_secs(40)).await?;
    }
    let (e1, e2, p1, p2) = (
        task_row(&lab, "e1")?,
        task_row(&lab, "e2")?,
        task_row(&lab, "p1")?,
        task_row(&lab, "p2")?,
    );
    let (enc_vni, plain_vni) = (network_vni(&lab, "encnet")?, network_vni(&lab, "plainnet")?);

    // Capture the underlay while both networks are tried.
    let pcap = format!("/tmp/{}-underlay.pcap", lab.name());
    let mut dump = capture_underlay(&lab, &pcap, "udp port 4789 or ip proto 50")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The plain network works across nodes (retried: endpoints are
    // programmed after the task starts).
    let to_p2 = SocketAddr::from((task_ip(&p2)?, 80));
    let mut plain = Err(std::io::Error::other("not tried"));
    for _ in 0..10 {
        plain = connect_from(task_netns(&p1)?, to_p2, CONNECT)?;
        if plain.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(plain.is_ok(), "p1 → p2 on the plain network: {plain:?}");

    // The encrypted one is blocked, never carried in clear.
    let to_e2 = SocketAddr::from((task_ip(&e2)?, 80));
    for _ in 0..3 {
        match connect_from(task_netns(&e1)?, to_e2, CONNECT)? {
            Ok(()) => bail!("e1 → e2 answered on a kernel without ESP: sent in clear?"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => bail!("e1 → e2 failed other than by a drop: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    dump.kill()?;
    dump.wait()?;
    let (enc_clear, plain_clear) = (
        pcap_count(&pcap, &vxlan_of(enc_vni))?,
        pcap_count(&pcap, &vxlan_of(plain_vni))?,
    );
    println!(
        "underlay: {enc_clear} VXLAN packets of encnet (VNI {enc_vni}), {plain_clear} of plainnet"
    );
    ensure!(
        plain_clear > 0,
        "the capture saw no plain VXLAN: is it capturing?"
    );
    ensure!(
        enc_clear == 0,
        "{enc_clear} packets of the encrypted network in clear"
    );

    // Why, as the operator sees it.
    for k in 1..=2 {
        let ipsec = counters(&lab, k, "ipsec")?;
        println!("n{k} ipsec: {ipsec:?}");
        ensure!(
            ipsec.get("kernel without ESP") == Some(&1),
            "n{k}: {ipsec:?}"
        );
        ensure!(ipsec.get("policies") == Some(&1), "n{k}: {ipsec:?}");
        // Doctor exits 1 when a check fails, as this one must.
        let out = lab.shoal_output(k, &["node", "doctor", "--format", "json"], b"")?;
        ensure!(!out.status.success(), "n{k}: doctor passed with no ESP");
        let doctor: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        let check = doctor
            .iter()
            .find(|c| c["check"] == "ipsec")
            .with_context(|| format!("n{k}: no ipsec check in {doctor:?}"))?;
        ensure!(
            check["detail"]
                .as_str()
                .is_some_and(|d| d.contains("cannot install ESP states")),
            "n{k}: {check}"
        );
    }

    // The attacker on the underlay injects VXLAN in clear at n2.
    let n2 = SocketAddr::from((lab.node(2).addr(), 4789));
    let client = PathBuf::from(format!(
        "/run/netns/{}",
        lab.client_netns().context("client netns")?
    ));
    let inject = |vni: u32| -> anyhow::Result<()> {
        let payload = vxlan_frame(vni, to_e2.ip().to_string().parse()?);
        in_netns(client.clone(), move || -> std::io::Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..5 {
                s.send_to(&payload, n2)?;
            }
            Ok(())
        })??;
        Ok(())
    };
    let reason = "cleartext-on-encrypted-network";
    let before = counters(&lab, 2, "mesh_reasons")?
        .get(reason)
        .copied()
        .unwrap_or(0);
    inject(plain_vni)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_plain = counters(&lab, 2, "mesh_reasons")?
        .get(reason)
        .copied()
        .unwrap_or(0);
    inject(enc_vni)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_enc = counters(&lab, 2, "mesh_reasons")?
        .get(reason)
        .copied()
        .unwrap_or(0);
    println!("n2 {reason}: {before} → {after_plain} (plain VNI) → {after_enc} (encrypted VNI)");
    ensure!(after_plain == before, "plain VXLAN counted as {reason}");
    ensure!(
        after_enc >= before + 5,
        "injected cleartext not dropped: {before} → {after_enc}"
    );

    // Leftovers: a Shoal policy for a node no longer in the cluster, as a
    // shoald that died before that node left would leave it. The next
    // daemon removes it and keeps (re-installs) the one to n1.
    let n2_ns = PathBuf::from(format!("/run/netns/{}", lab.node(2).netns()));
    let (n1_addr, n2_addr) = (lab.node(1).addr(), lab.node(2).addr());
    let gone = shoal_xfrm::Policy {
        src: n2_addr,
        dst: std::net::Ipv4Addr::new(198, 18, 0, 77),
        dport: 4789,
        spi: 0x1234_5678,
    };
    let owned = move || -> anyhow::Result<shoal_xfrm::Owned> {
        Ok(in_netns(n2_ns.clone(), || {
            shoal_xfrm::Xfrm::new()?.owned()
        })??)
    };
    in_netns(
        PathBuf::from(format!("/run/netns/{}", lab.node(2).netns())),
        move || shoal_xfrm::Xfrm::new()?.apply(&shoal_xfrm::Op::SetPolicy(gone)),
    )??;
    ensure!(owned()?.policies.contains(&gone), "the planted policy");
    lab.restart(2).await?;
    let mut last = None;
    for _ in 0..50 {
        let now = owned()?;
        let dsts: Vec<_> = now.policies.iter().map(|p| p.dst).collect();
        if dsts == [n1_addr] {
            last = None;
            break;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        last.is_none(),
        "n2's policies after its restart: {last:?} (want only the one to {n1_addr})"
    );
    let swept = counters(&lab, 2, "ipsec")?;
    ensure!(
        swept
            .get("left by an earlier shoald, removed")
            .is_some_and(|n| *n >= 1),
        "n2: {swept:?}"
    );
    lab.down()?;
    Ok(())
}
