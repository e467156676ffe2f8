//! `--opt encrypted` on this machine's kernel, which has xfrm policies but
//! no ESP (issue 16 part 3): real shoald processes in a 2-node lab with a
//! client on the underlay. The encrypted network fails closed: its tasks
//! on the two nodes cannot talk (the policy holds, no state exists), no
//! VXLAN of its VNI appears in clear on the underlay, `node stats` and
//! `node doctor` say why; a plain network beside it works. Playing the
//! attacker, the client injects cleartext VXLAN for the encrypted VNI at a
//! node: dropped and counted, while the same for the plain VNI is not.
//! (The ESP data path itself is proved in the VM lab: vmtests/tests/ipsec.rs.)

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::{Lab, TaskRow};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
const CONNECT: Duration = Duration::from_secs(3);

fn in_netns<T: Send + 'static>(
    netns: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || -> anyhow::Result<T> {
        let ns = std::fs::File::open(&netns).with_context(|| format!("{}", netns.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

fn connect_from(netns: PathBuf, to: SocketAddr) -> anyhow::Result<std::io::Result<()>> {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&to, CONNECT).map(drop)
    })
}

fn task_row(lab: &Lab, service: &str) -> anyhow::Result<TaskRow> {
    lab.service_ps(1, service)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(TaskRow::running)
        .with_context(|| format!("no running task of {service}"))
}

fn task_ip(row: &TaskRow) -> anyhow::Result<Ipv4Addr> {
    row.addresses
        .iter()
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.octets().starts_with(&[10, 255]))
        .with_context(|| format!("no address: {:?}", row.addresses))
}

fn task_netns(row: &TaskRow) -> anyhow::Result<PathBuf> {
    let pid = shoal_lab::task_pid(&row.name, "serve 80")
        .with_context(|| format!("no process for task {}", row.name))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

fn vni(lab: &Lab, network: &str) -> anyhow::Result<u32> {
    let v: Value = serde_json::from_str(&lab.shoal(1, &["network", "ls", "--format", "json"])?)?;
    v.as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == network))
        .and_then(|n| n["vni"].as_u64())
        .map(|v| v as u32)
        .with_context(|| format!("no VNI for {network}"))
}

/// `node stats --format json`'s list `list` as reason → count.
fn counters(
    lab: &Lab,
    k: usize,
    list: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let v: Value = serde_json::from_str(&lab.shoal(k, &["node", "stats", "--format", "json"])?)?;
    Ok(v[list]
        .as_array()
        .with_context(|| format!("no {list} in node stats"))?
        .iter()
        .filter_map(|r| Some((r["reason"].as_str()?.to_owned(), r["count"].as_u64()?)))
        .collect())
}

fn service(lab: &Lab, name: &str, network: &str, node: &str) -> anyhow::Result<()> {
    let constraint = format!("node.hostname=={node}");
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--network",
            network,
            "--constraint",
            &constraint,
            "host",
            HTTP,
            "serve",
            "80",
        ],
    )?;
    Ok(())
}

/// A VXLAN datagram for `vni` carrying a TCP SYN to `to` (the inner frame
/// need not be deliverable: the gate looks at the VNI).
fn vxlan(vni: u32, to: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&[0x02, 0x42, 0, 0, 0, 1, 0x02, 0x42, 0, 0, 0, 2, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 9, 9, 9];
    ip.extend_from_slice(&to.octets());
    p.extend(ip);
    p.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0,
    ]);
    p
}

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
        service(&lab, s, net, node)?;
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
    let (enc_vni, plain_vni) = (vni(&lab, "encnet")?, vni(&lab, "plainnet")?);

    // Capture the underlay while both networks are tried.
    let pcap = format!("/tmp/{}-underlay.pcap", lab.name());
    let mut dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.underlay_netns(),
            "tcpdump",
            "-i",
            "br0",
        ])
        .args(["-nn", "-U", "-w", &pcap, "udp port 4789 or ip proto 50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The plain network works across nodes (retried: endpoints are
    // programmed after the task starts).
    let to_p2 = SocketAddr::from((task_ip(&p2)?, 80));
    let mut plain = Err(std::io::Error::other("not tried"));
    for _ in 0..10 {
        plain = connect_from(task_netns(&p1)?, to_p2)?;
        if plain.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(plain.is_ok(), "p1 → p2 on the plain network: {plain:?}");

    // The encrypted one is blocked, never carried in clear.
    let to_e2 = SocketAddr::from((task_ip(&e2)?, 80));
    for _ in 0..3 {
        match connect_from(task_netns(&e1)?, to_e2)? {
            Ok(()) => bail!("e1 → e2 answered on a kernel without ESP: sent in clear?"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => bail!("e1 → e2 failed other than by a drop: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    dump.kill()?;
    dump.wait()?;
    let count = |filter: &str| -> anyhow::Result<usize> {
        let out = Command::new("tcpdump")
            .args(["-r", &pcap, "-nn", filter])
            .stderr(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    };
    let vni_is = |v: u32| format!("udp port 4789 and udp[12:4] & 0xffffff00 = {}", v << 8);
    let (enc_clear, plain_clear) = (count(&vni_is(enc_vni))?, count(&vni_is(plain_vni))?);
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
        let payload = vxlan(vni, to_e2.ip().to_string().parse()?);
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
    lab.down()?;
    Ok(())
}
