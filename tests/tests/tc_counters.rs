//! The TC programs `shoald` attaches count real packets crossing between two
//! lab nodes, and the `shoal` CLI reports them.
#![allow(unsafe_code)] // one AF_PACKET socket, to put a malformed frame on the wire

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::{Lab, run_in_netns};

const UDP_PORT: u16 = 40001;
const TCP_PORT: u16 = 40002;
const DATAGRAMS: u64 = 100;
const PAYLOAD: usize = 1000;
/// Ethernet 14 + IPv4 20 + UDP 8: what TC sees around a payload.
const UDP_OVERHEAD: u64 = 42;

fn shoal_bin() -> anyhow::Result<PathBuf> {
    let p = shoal_lab::shoald_path()?.with_file_name("shoal");
    ensure!(
        p.is_file(),
        "{} missing: run `cargo build --workspace --bins`",
        p.display()
    );
    Ok(p)
}

/// `shoal node stats --format json` against node `k`'s daemon.
fn stats(lab: &Lab, k: usize) -> anyhow::Result<Value> {
    let out = lab
        .command(k, shoal_bin()?)
        .args(["node", "stats", "--format", "json"])
        .output()?;
    ensure!(
        out.status.success(),
        "shoal node stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn counter(v: &Value, dir: &str, proto: &str) -> anyhow::Result<(u64, u64)> {
    let c = v["counters"]
        .as_array()
        .context("counters")?
        .iter()
        .find(|c| c["direction"] == dir && c["protocol"] == proto)
        .with_context(|| format!("no {dir}/{proto} counter in {v}"))?;
    Ok((
        c["packets"].as_u64().unwrap_or(0),
        c["bytes"].as_u64().unwrap_or(0),
    ))
}

fn reason(v: &Value, name: &str) -> anyhow::Result<u64> {
    v["reasons"]
        .as_array()
        .context("reasons")?
        .iter()
        .find(|r| r["reason"] == name)
        .and_then(|r| r["count"].as_u64())
        .with_context(|| format!("no reason {name} in {v}"))
}

fn delta(before: &Value, after: &Value, dir: &str, proto: &str) -> anyhow::Result<(u64, u64)> {
    let (bp, bb) = counter(before, dir, proto)?;
    let (ap, ab) = counter(after, dir, proto)?;
    Ok((ap - bp, ab - bb))
}

#[tokio::test]
async fn tc_programs_count_real_traffic_between_nodes() -> anyhow::Result<()> {
    let lab = Lab::builder("tc").nodes(2).start().await?;
    let (n1, n2) = (
        lab.node(1).netns().to_owned(),
        lab.node(2).netns().to_owned(),
    );
    let n2_addr = lab.node(2).addr();

    let info = lab
        .command(1, shoal_bin()?)
        .args(["info", "--format", "json"])
        .output()?;
    let info: Value = serde_json::from_slice(&info.stdout)?;
    assert_eq!(info["hostname"], "n1");
    assert_eq!(info["data_interface"], "eth0");

    // Sockets keep the namespace they were opened in.
    let rx = run_in_netns(&n2, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT)))??;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    let tx = run_in_netns(&n1, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
    let to = SocketAddrV4::new(n2_addr, UDP_PORT);
    let mut buf = [0u8; 2048];
    // Warm up ARP so the measured window holds only our datagrams.
    tx.send_to(b"warm-up", to)?;
    rx.recv_from(&mut buf)
        .context("warm-up datagram never arrived")?;

    let (b1, b2) = (stats(&lab, 1)?, stats(&lab, 2)?);
    let payload = [0x5a_u8; PAYLOAD];
    // Lock-step, so the receive buffer never overflows.
    for i in 0..DATAGRAMS {
        tx.send_to(&payload, to)?;
        let (n, _) = rx
            .recv_from(&mut buf)
            .with_context(|| format!("datagram {i} lost"))?;
        assert_eq!(n, PAYLOAD);
    }
    let (a1, a2) = (stats(&lab, 1)?, stats(&lab, 2)?);
    // No other UDP flows between lab nodes yet, so the counts are exact.
    let want = (DATAGRAMS, DATAGRAMS * (PAYLOAD as u64 + UDP_OVERHEAD));
    assert_eq!(delta(&b1, &a1, "egress", "udp")?, want, "n1 egress udp");
    assert_eq!(delta(&b2, &a2, "ingress", "udp")?, want, "n2 ingress udp");
    assert_eq!(
        delta(&b1, &a1, "ingress", "udp")?,
        (0, 0),
        "n1 received no udp"
    );
    assert_eq!(delta(&b2, &a2, "egress", "udp")?, (0, 0), "n2 sent no udp");

    // TCP: 256 KiB one way. Segments may be GSO/GRO-merged at TC, so bytes
    // are at least the payload and packets are at least one per direction.
    const BULK: usize = 256 * 1024;
    let listener = run_in_netns(&n2, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)))??;
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got.len())
    });
    let mut client = run_in_netns(&n1, || TcpStream::connect((n2_addr, TCP_PORT)))??;
    client.write_all(&vec![7u8; BULK])?;
    drop(client);
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    assert_eq!(got, BULK);
    let (c1, c2) = (stats(&lab, 1)?, stats(&lab, 2)?);
    let (p, b) = delta(&a1, &c1, "egress", "tcp")?;
    assert!(
        p >= 1 && b >= BULK as u64,
        "n1 egress tcp: {p} packets, {b} bytes"
    );
    let (p, b) = delta(&a2, &c2, "ingress", "tcp")?;
    assert!(
        p >= 1 && b >= BULK as u64,
        "n2 ingress tcp: {p} packets, {b} bytes"
    );
    let (p, _) = delta(&a2, &c2, "egress", "tcp")?;
    assert!(p >= 1, "n2 sent ACKs");

    // A frame that claims IPv4 but is cut short: counted by reason on the way
    // out, and not dropped by the counter. (The receiving node gets it padded
    // by the underlay path, so only the sender can see it truncated.)
    let r1 = reason(&c1, "truncated-ipv4")?;
    run_in_netns(&n1, send_truncated_ipv4_broadcast)??;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let x1 = reason(&stats(&lab, 1)?, "truncated-ipv4")? - r1;
        if x1 == 1 {
            break;
        }
        if x1 > 1 || std::time::Instant::now() > deadline {
            bail!("truncated-ipv4 on n1 egress: +{x1}, want +1");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The table form is what operators read.
    let table = lab
        .command(2, shoal_bin()?)
        .args(["node", "stats"])
        .output()?;
    let table = String::from_utf8(table.stdout)?;
    assert!(
        table.contains("IN PACKETS") && table.contains("truncated-ipv4"),
        "{table}"
    );
    Ok(())
}

/// Sends a 20-byte Ethernet broadcast with ethertype IPv4 and a 6-byte
/// "header" out of eth0, through an AF_PACKET socket.
fn send_truncated_ipv4_broadcast() -> anyhow::Result<()> {
    let ifindex = nix::net::if_::if_nametoindex("eth0")?;
    let mut frame: Vec<u8> = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    frame.extend_from_slice(&[0x45, 0, 0, 20, 0, 0]);
    // SAFETY: plain socket syscalls on a fd we own and close; the address is
    // a fully initialised sockaddr_ll of the size we pass.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        ensure!(sent == frame.len() as isize, "AF_PACKET sendto: {err}");
    }
    Ok(())
}
