//! Egress end to end (issue 16, part 5): real shoald processes in a 2-node
//! lab, and an "outside" server in the lab's client namespace (on the
//! underlay, outside every overlay) that answers each HTTP request and UDP
//! datagram with the peer address it saw.
//!
//! A task on a normal overlay (on n2, a worker) reaches it over TCP (a full
//! HTTP request and response) and UDP, and the server sees n2's address:
//! the source was translated in eBPF. Its pings get answers too (ICMP echo
//! translated by identifier: the outside has no route back to the task's
//! address, so only a translated request can be answered). A task on an
//! `--internal` network
//! does not reach it, and `egress-internal` rises. Playing the attacker
//! from the outside: packets to n2's egress ports that no flow explains
//! (a forged reply) are dropped (`egress-no-flow`, a TCP connect times out
//! rather than being reset), and the task's address is still unreachable
//! from the underlay with a route to the overlays. `--internal` is shown
//! by `network inspect`/`ls`; `network create host` is refused.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use shoal_lab::{Lab, TaskRow};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
const CONNECT: Duration = Duration::from_secs(3);
/// The outside server's port.
const OUTSIDE_PORT: u16 = 9000;

/// Runs `f` on a thread that entered the network namespace at `netns`
/// (setns changes only the calling thread).
fn in_netns<R: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> anyhow::Result<std::io::Result<R>> {
    let netns = netns.to_owned();
    std::thread::spawn(move || -> anyhow::Result<std::io::Result<R>> {
        let ns = std::fs::File::open(&netns).with_context(|| format!("{}", netns.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// One HTTP/1.1 GET from `netns` to `to`: the response body.
fn http_get(netns: &Path, to: SocketAddr) -> anyhow::Result<std::io::Result<String>> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&to, CONNECT)?;
        s.set_read_timeout(Some(CONNECT))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: outside\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP body in {resp:?}")))?;
        if !resp.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("not a 200: {resp:?}")));
        }
        Ok(body)
    })
}

/// One UDP datagram from `netns` to `to`: the reply.
fn udp_ask(netns: &Path, to: SocketAddr) -> anyhow::Result<std::io::Result<String>> {
    in_netns(netns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(CONNECT))?;
        s.send_to(b"who am i", to)?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// The peer address the outside server saw, from its answer
/// `<hostname> <peer>`.
fn peer_in(answer: &str) -> anyhow::Result<Ipv4Addr> {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no peer address in {answer:?}"))
}

/// Retries `f` a while: endpoints and maps are programmed asynchronously
/// after a task starts.
async fn eventually<R>(
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<std::io::Result<R>>,
) -> anyhow::Result<R> {
    let mut last = None;
    for _ in 0..10 {
        match f()? {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{what}: never answered: {last:?}")
}

/// `ping` from `netns` to `to` (`count` echoes, 2 s each): whether every
/// echo got its reply.
fn ping(netns: &Path, to: Ipv4Addr, count: u32) -> anyhow::Result<bool> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ping", "-n", "-q", "-W", "2", "-i", "0.2", "-c"])
        .arg(count.to_string())
        .arg(to.to_string())
        .output()
        .context("ping (iputils-ping)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("ping {to} from {}: {}", netns.display(), text.trim());
    Ok(out.status.success() && text.contains(&format!("{count} received")))
}

/// The connect from `netns` to `to` is dropped: a timeout, not a refusal
/// (which would mean the packet got somewhere).
fn dropped(netns: &Path, to: SocketAddr, what: &str) -> anyhow::Result<()> {
    match in_netns(netns, move || {
        TcpStream::connect_timeout(&to, CONNECT).map(drop)
    })? {
        Ok(()) => bail!("{what}: {to} answered"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(()),
        Err(e) => bail!("{what}: {to} failed other than by a drop: {e}"),
    }
}

fn task_netns(row: &TaskRow) -> anyhow::Result<PathBuf> {
    let pid = shoal_lab::task_pid(&row.name, "serve 80")
        .with_context(|| format!("no process for task {}", row.name))?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

fn running_task(lab: &Lab, service: &str) -> anyhow::Result<TaskRow> {
    lab.service_ps(1, service)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(TaskRow::running)
        .with_context(|| format!("no running task of {service}"))
}

fn task_addr(row: &TaskRow) -> anyhow::Result<Ipv4Addr> {
    row.addresses
        .iter()
        .find_map(|a| a.split('/').next()?.parse().ok())
        .with_context(|| format!("{}: no address", row.name))
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

/// The outside server, killed when dropped.
struct Outside(Child);

impl Drop for Outside {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill() {
            eprintln!("outside server: {e}");
        }
        let _ = self.0.wait();
    }
}

fn service(lab: &Lab, name: &str, network: &str) -> anyhow::Result<()> {
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
            "node.hostname==n2",
            "host",
            HTTP,
            "serve",
            "80",
        ],
    )?;
    Ok(())
}

#[tokio::test]
async fn tasks_reach_the_outside_as_their_node_unless_internal() -> anyhow::Result<()> {
    let lab = Lab::builder("egress").nodes(2).client(true).start().await?;
    lab.form_swarm(1)?;
    lab.nodes_ready(2, Duration::from_secs(15)).await?;
    lab.shoal(1, &["network", "create", "pub"])?;
    lab.shoal(1, &["network", "create", "--internal", "priv"])?;
    // Stored through Raft, shown by inspect (json) and ls.
    let inspect = lab.shoal(1, &["network", "inspect", "priv", "pub"])?;
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    ensure!(
        v.pointer("/0/internal") == Some(&serde_json::Value::Bool(true))
            && v.pointer("/1/internal") == Some(&serde_json::Value::Bool(false)),
        "inspect: {inspect}"
    );
    let ls = lab.shoal(1, &["network", "ls"])?;
    ensure!(
        ls.lines()
            .any(|l| l.contains("priv") && l.trim_end().ends_with("true")),
        "ls: {ls}"
    );
    // `host` is the node's own network, never a network's name.
    let e = lab.shoal_refused(1, &["network", "create", "host"])?;
    ensure!(e.contains("network name \"host\" is reserved"), "{e}");
    service(&lab, "e1", "pub")?;
    service(&lab, "i1", "priv")?;
    for s in ["e1", "i1"] {
        lab.running(s, 1, Duration::from_secs(40)).await?;
    }
    let _server = Outside(
        lab.client_command(HTTP)
            .args(["serve", &OUTSIDE_PORT.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("outside server")?,
    );
    let outside = SocketAddr::from((lab.client_addr(), OUTSIDE_PORT));
    let n2 = lab.node(2).addr();
    let e1 = running_task(&lab, "e1")?;
    let e1_ns = task_netns(&e1)?;
    let i1_ns = task_netns(&running_task(&lab, "i1")?)?;
    let before = reasons(&lab, 2)?;

    // TCP: a full request and response; the server saw n2.
    let body = eventually("e1 → outside (tcp)", || http_get(&e1_ns, outside)).await?;
    ensure!(
        peer_in(&body)? == n2,
        "the outside saw {body:?}, not n2 ({n2})"
    );
    // Several connections in a row, each a new translation.
    for i in 0..5 {
        let body = http_get(&e1_ns, outside)?.with_context(|| format!("request {i}"))?;
        ensure!(peer_in(&body)? == n2, "request {i}: {body:?}");
    }
    // UDP.
    let answer = eventually("e1 → outside (udp)", || udp_ask(&e1_ns, outside)).await?;
    ensure!(
        peer_in(&answer)? == n2,
        "the outside saw {answer:?} over UDP, not n2"
    );
    println!("outside saw: tcp {body:?}, udp {answer:?}");

    // ICMP echo: the replies come back through the translation.
    let client_addr = lab.client_addr();
    eventually("e1 pings the outside", || {
        Ok(if ping(&e1_ns, client_addr, 1)? {
            Ok(())
        } else {
            Err(std::io::Error::other("no reply"))
        })
    })
    .await?;
    ensure!(
        ping(&e1_ns, client_addr, 5)?,
        "e1's pings to the outside lost replies"
    );

    // The internal network's task gets nothing out.
    dropped(&i1_ns, outside, "i1 (internal) → outside")?;
    ensure!(
        !ping(&i1_ns, client_addr, 2)?,
        "i1 (internal) pinged the outside"
    );

    // The attacker on the underlay: forged replies to n2's egress ports.
    let client = lab.client_netns().context("client netns")?;
    let client_ns = PathBuf::from(format!("/run/netns/{client}"));
    for port in [61000, 62345, 65535] {
        dropped(
            &client_ns,
            SocketAddr::from((n2, port)),
            "client → n2 egress port",
        )?;
    }
    let forged = in_netns(&client_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for port in 61000..61100u16 {
            s.send_to(b"forged", SocketAddr::from((n2, port)))?;
        }
        Ok(())
    })?;
    forged.context("forged datagrams")?;
    // And with a route to the overlays, the task's own address.
    let handle = shoal_lab::netns::netlink(&client)?;
    let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::new(10, 0, 0, 0), 8)
        .gateway(n2)
        .build();
    handle.route().add(route).execute().await?;
    dropped(
        &client_ns,
        SocketAddr::from((task_addr(&e1)?, 80)),
        "client → e1",
    )?;
    // The translated flows still work after all that.
    let body = http_get(&e1_ns, outside)?.context("e1 → outside after the attack")?;
    ensure!(peer_in(&body)? == n2, "after: {body:?}");

    let after = reasons(&lab, 2)?;
    let rose = |r: &str| after.get(r).copied().unwrap_or(0) - before.get(r).copied().unwrap_or(0);
    ensure!(
        rose("egress-translated") >= 8,
        "egress-translated: {before:?} → {after:?}"
    );
    ensure!(
        rose("egress-internal") >= 3,
        "egress-internal: {before:?} → {after:?}"
    );
    ensure!(
        rose("egress-no-flow") >= 100,
        "egress-no-flow: {before:?} → {after:?}"
    );
    ensure!(
        rose("underlay-to-overlay") >= 1,
        "underlay-to-overlay: {before:?} → {after:?}"
    );
    println!("n2 reasons: {after:?}");
    lab.down()?;
    Ok(())
}
