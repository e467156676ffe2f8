//! Isolation end to end (issue 16, part 5): real shoald processes in a
//! 3-node lab with a client on the underlay.
//!
//! Services `a1` (n1) and `a2` (n2, published 8080) on network neta, `b1`
//! (n1) and `b2` (n2) on netb. From inside a1's network namespace:
//! a2 (other node) and a2's VIP answer; b1 (same node), b2 (other node) and
//! b1's VIP do not; the node's own 7946 and 2377 do not, its published 8080
//! does; a2's ingress address does not. A task on netb reaches the
//! published port too (its replies cross networks). The underlay client
//! with a route to the overlays reaches neither a2's ingress nor its neta
//! address, only 8080. Each refusal shows in `node stats`.
//!
//! A refused packet is dropped, not reset: a blocked connect times out,
//! and only a completed handshake counts as reached.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use shoal_lab::{Lab, TaskRow};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
/// Long enough for a handshake on a loaded machine, short enough for the
/// refused cases (a dropped SYN) not to drag.
const CONNECT: Duration = Duration::from_secs(3);

/// Connects to `to` from inside the network namespace at `netns`, on a
/// thread of its own (setns changes only the calling thread).
fn connect_from(netns: PathBuf, to: SocketAddr) -> anyhow::Result<Result<(), std::io::Error>> {
    std::thread::spawn(move || -> anyhow::Result<Result<(), std::io::Error>> {
        let ns = std::fs::File::open(&netns).with_context(|| format!("{}", netns.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(TcpStream::connect_timeout(&to, CONNECT).map(drop))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("connect thread panicked"))?
}

fn task_netns(row: &TaskRow) -> anyhow::Result<PathBuf> {
    let pid = shoal_lab::task_pid(&row.name, "serve 80")
        .with_context(|| format!("no process for task {}", row.name))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// `to` answers from `netns` (retried a while: endpoints are programmed
/// asynchronously after a task starts).
async fn reaches(netns: &Path, to: SocketAddr, what: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..10 {
        match connect_from(netns.to_owned(), to)? {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{what}: {to} never answered: {last:?}")
}

/// `to` does not answer from `netns`: the SYN is dropped (a timeout, not a
/// refusal, which would mean the packet got there).
fn refused(netns: &Path, to: SocketAddr, what: &str) -> anyhow::Result<()> {
    match connect_from(netns.to_owned(), to)? {
        Ok(()) => bail!("{what}: {to} answered"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(()),
        Err(e) => bail!("{what}: {to} failed other than by a drop: {e}"),
    }
}

/// `node stats` reason counts on node `k`.
fn reasons(lab: &Lab, k: usize) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let out = lab.shoal(k, &["node", "stats", "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("node stats json")?;
    let rows = v
        .get("mesh_reasons")
        .and_then(|r| r.as_array())
        .with_context(|| format!("no mesh_reasons in {out}"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get("reason")?.as_str()?.to_owned(),
                r.get("count")?.as_u64()?,
            ))
        })
        .collect())
}

fn subnet_of(lab: &Lab, network: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let out = lab.shoal(1, &["network", "ls", "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let subnet = v
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n.get("name").and_then(|x| x.as_str()) == Some(network))
        })
        .and_then(|n| n.get("subnet")?.as_str())
        .with_context(|| format!("no subnet for {network} in {out}"))?;
    let (addr, len) = subnet.split_once('/').context("subnet")?;
    Ok((addr.parse()?, len.parse()?))
}

fn in_subnet(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The one running task of `service` and its address on `subnet`.
fn task_on(
    lab: &Lab,
    service: &str,
    subnet: (Ipv4Addr, u8),
) -> anyhow::Result<(TaskRow, Ipv4Addr)> {
    let rows = lab
        .service_ps(1, service)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let row = rows
        .into_iter()
        .find(TaskRow::running)
        .with_context(|| format!("no running task of {service}"))?;
    let ip = row
        .addresses
        .iter()
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| in_subnet(*ip, subnet))
        .with_context(|| format!("{service}: no address in {subnet:?}: {:?}", row.addresses))?;
    Ok((row, ip))
}

fn vip_of(lab: &Lab, service: &str, network: &str) -> anyhow::Result<Ipv4Addr> {
    let inspect = lab.shoal(1, &["service", "inspect", service, "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    let vip = v
        .pointer("/0/vips")
        .or_else(|| v.pointer("/vips"))
        .and_then(|vips| vips.as_array())
        .and_then(|vips| {
            vips.iter().find_map(|x| {
                let net = x.get("network")?.as_str()?;
                (net == network).then(|| x.get("addr")?.as_str().map(str::to_owned))?
            })
        })
        .with_context(|| format!("no {network} VIP in {inspect}"))?;
    Ok(vip.split('/').next().unwrap_or(&vip).parse()?)
}

fn service(lab: &Lab, name: &str, network: &str, node: &str, extra: &[&str]) -> anyhow::Result<()> {
    let constraint = format!("node.hostname=={node}");
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--network",
        network,
        "--constraint",
        &constraint,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["host", HTTP, "serve", "80"]);
    lab.shoal(1, &args)?;
    Ok(())
}

/// Adds `dst` via `gateway` in the namespace `ns` (the test's own client).
async fn add_route(ns: &str, dst: (Ipv4Addr, u8), gateway: Ipv4Addr) -> anyhow::Result<()> {
    let handle = shoal_lab::netns::netlink(ns)?;
    let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.0, dst.1)
        .gateway(gateway)
        .build();
    handle.route().add(route).execute().await?;
    Ok(())
}

#[tokio::test]
async fn tasks_reach_their_networks_and_published_ports_only() -> anyhow::Result<()> {
    let lab = Lab::builder("iso").nodes(3).client(true).start().await?;
    lab.form_swarm(1)?;
    lab.nodes_ready(3, Duration::from_secs(15)).await?;
    lab.shoal(1, &["network", "create", "neta"])?;
    lab.shoal(1, &["network", "create", "netb"])?;
    service(&lab, "a1", "neta", "n1", &[])?;
    service(&lab, "a2", "neta", "n2", &["-p", "8080:80"])?;
    service(&lab, "b1", "netb", "n1", &[])?;
    service(&lab, "b2", "netb", "n2", &[])?;
    for s in ["a1", "a2", "b1", "b2"] {
        lab.running(s, 1, Duration::from_secs(40)).await?;
    }
    let (neta, netb, ingress) = (
        subnet_of(&lab, "neta")?,
        subnet_of(&lab, "netb")?,
        subnet_of(&lab, "ingress")?,
    );
    let (a1, _) = task_on(&lab, "a1", neta)?;
    let (_, a2_ip) = task_on(&lab, "a2", neta)?;
    let (_, a2_ingress) = task_on(&lab, "a2", ingress)?;
    let (b1, b1_ip) = task_on(&lab, "b1", netb)?;
    let (_, b2_ip) = task_on(&lab, "b2", netb)?;
    let a2_vip = vip_of(&lab, "a2", "neta")?;
    let b1_vip = vip_of(&lab, "b1", "netb")?;
    let n1 = lab.node(1).addr();
    let at = |ip: Ipv4Addr, port| SocketAddr::from((ip, port));
    let from_a1 = task_netns(&a1)?;
    let before = reasons(&lab, 1)?;
    let before_n2 = reasons(&lab, 2)?;

    // Its own network, across nodes, and its VIP.
    reaches(&from_a1, at(a2_ip, 80), "a1 → a2 (neta, n2)").await?;
    reaches(&from_a1, at(a2_vip, 80), "a1 → a2's VIP").await?;
    // The published port on its own node.
    reaches(&from_a1, at(n1, 8080), "a1 → n1:8080").await?;
    // Another network, same node and other node, and its VIP.
    refused(&from_a1, at(b1_ip, 80), "a1 → b1 (netb, same node)")?;
    refused(&from_a1, at(b2_ip, 80), "a1 → b2 (netb, n2)")?;
    refused(&from_a1, at(b1_vip, 80), "a1 → b1's VIP")?;
    // The node's own ports that are not published.
    refused(&from_a1, at(n1, 7946), "a1 → n1:7946")?;
    refused(&from_a1, at(n1, 2377), "a1 → n1:2377")?;
    // The ingress network only carries what the mesh translated.
    refused(&from_a1, at(a2_ingress, 80), "a1 → a2's ingress address")?;
    // A task of another network reaches the published port: its backend's
    // replies go back across networks.
    reaches(&task_netns(&b1)?, at(n1, 8080), "b1 → n1:8080").await?;

    // The underlay client with a route to the overlays through n2.
    let client = lab.client_netns().context("client netns")?;
    let client_ns = PathBuf::from(format!("/run/netns/{client}"));
    add_route(&client, (Ipv4Addr::new(10, 0, 0, 0), 8), lab.node(2).addr()).await?;
    refused(
        &client_ns,
        at(a2_ingress, 80),
        "client → a2's ingress address",
    )?;
    refused(&client_ns, at(a2_ip, 80), "client → a2's neta address")?;
    reaches(&client_ns, at(lab.node(2).addr(), 8080), "client → n2:8080").await?;

    let after = reasons(&lab, 1)?;
    let after_n2 = reasons(&lab, 2)?;
    let rose =
        |b: &std::collections::BTreeMap<String, u64>,
         a: &std::collections::BTreeMap<String, u64>,
         r: &str| { a.get(r).copied().unwrap_or(0) > b.get(r).copied().unwrap_or(0) };
    for r in ["isolation-network", "isolation-node", "isolation-ingress"] {
        ensure!(
            rose(&before, &after, r),
            "n1's {r} did not rise: {before:?} → {after:?}"
        );
    }
    ensure!(
        rose(&before_n2, &after_n2, "underlay-to-overlay"),
        "n2's underlay-to-overlay did not rise: {before_n2:?} → {after_n2:?}"
    );
    println!("n1 reasons: {after:?}\nn2 reasons: {after_n2:?}");
    lab.down()?;
    Ok(())
}
