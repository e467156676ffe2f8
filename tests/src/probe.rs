//! Probes the encrypted-overlay labs share (ipsec_lab, wireguard_lab):
//! reaching a task from another task's namespace, its address and VNI,
//! `node stats` counters, a VXLAN frame to inject, and counting packets
//! in an underlay capture. Test support: errors are anyhow's.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use serde_json::Value;

use crate::{Lab, TaskRow};

/// Runs `f` on a thread inside the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(
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

/// A TCP connection from `netns` to `to`, closed at once.
pub fn connect_from(
    netns: PathBuf,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<std::io::Result<()>> {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&to, timeout).map(drop)
    })
}

/// One HTTP GET from `netns` to `to` (lab-http's answer), within `timeout`.
pub fn http_get_from(
    netns: PathBuf,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<std::io::Result<String>> {
    in_netns(netns, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        if out.starts_with("HTTP/1.1 200") {
            Ok(out)
        } else {
            Err(std::io::Error::other(format!("answer {out:?}")))
        }
    })
}

/// A running task of `service`, as node 1's `service ps` shows it.
pub fn task_row(lab: &Lab, service: &str) -> anyhow::Result<TaskRow> {
    lab.service_ps(1, service)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(TaskRow::running)
        .with_context(|| format!("no running task of {service}"))
}

/// The task's address outside the ingress network (10.255/16).
pub fn task_ip(row: &TaskRow) -> anyhow::Result<Ipv4Addr> {
    row.addresses
        .iter()
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.octets().starts_with(&[10, 255]))
        .with_context(|| format!("no address: {:?}", row.addresses))
}

/// The network namespace of a `lab-http serve 80` task.
pub fn task_netns(row: &TaskRow) -> anyhow::Result<PathBuf> {
    let pid = crate::task_pid(&row.name, "serve 80")
        .with_context(|| format!("no process for task {}", row.name))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

pub fn network_vni(lab: &Lab, network: &str) -> anyhow::Result<u32> {
    let v: Value = serde_json::from_str(&lab.shoal(1, &["network", "ls", "--format", "json"])?)?;
    v.as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == network))
        .and_then(|n| n["vni"].as_u64())
        .map(|v| v as u32)
        .with_context(|| format!("no VNI for {network}"))
}

/// `node stats --format json`'s list `list` as reason → count.
pub fn counters(lab: &Lab, k: usize, list: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let v: Value = serde_json::from_str(&lab.shoal(k, &["node", "stats", "--format", "json"])?)?;
    Ok(v[list]
        .as_array()
        .with_context(|| format!("no {list} in node stats"))?
        .iter()
        .filter_map(|r| Some((r["reason"].as_str()?.to_owned(), r["count"].as_u64()?)))
        .collect())
}

/// A `lab-http serve 80` service (`http`: the binary's path) on network
/// `network`, pinned to `node`.
pub fn http_service(
    lab: &Lab,
    http: &str,
    name: &str,
    network: &str,
    node: &str,
) -> anyhow::Result<()> {
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
            http,
            "serve",
            "80",
        ],
    )?;
    Ok(())
}

/// A VXLAN datagram for `vni` carrying a TCP SYN to `to` (the inner frame
/// need not be deliverable: the gate looks at the VNI).
pub fn vxlan_frame(vni: u32, to: Ipv4Addr) -> Vec<u8> {
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

/// tcpdump on the lab's underlay bridge, writing `pcap`.
pub fn capture_underlay(lab: &Lab, pcap: &str, filter: &str) -> anyhow::Result<Child> {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.underlay_netns(),
            "tcpdump",
            "-i",
            "br0",
        ])
        .args(["-nn", "-U", "-w", pcap, filter])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("tcpdump (cargo xtask setup installs it)")
}

/// Packets of `pcap` that match `filter`.
pub fn pcap_count(pcap: &str, filter: &str) -> anyhow::Result<usize> {
    let out = Command::new("tcpdump")
        .args(["-r", pcap, "-nn", filter])
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// A tcpdump filter for VXLAN of `vni` on port 4789.
pub fn vxlan_of(vni: u32) -> String {
    format!("udp port 4789 and udp[12:4] & 0xffffff00 = {}", vni << 8)
}
