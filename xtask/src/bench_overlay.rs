//! `cargo xtask bench overlay`: TCP throughput (iperf3, 1 and 2 streams)
//! and 1-byte request/response rate between tasks on two nodes of a Shoal
//! overlay, against the same kind of path built by hand in the same run:
//!
//! ```text
//!  task A ─veth─ br42 ─ vx42 ─eth0─┐  br0 (underlay  ┌─eth0─ vx42 ─ br42 ─veth─ task B
//!  10.99.0.1/24  (1450)  VNI 42    └─ namespace) ───┘     dstport 4789         10.99.0.2/24
//! ```
//!
//! The baseline is kernel VXLAN made with raw rtnetlink (not Shoal's
//! driver): learning off, ARP proxy on, a static FDB entry and a permanent
//! neighbour entry for the peer task, MTU 1450 on the task side: what
//! `shoald` programs, without its agent, eBPF programs on task veths or
//! DNS. Its five namespaces are [`TaskNs`] guards, removed on drop and swept
//! by the next run if this process is killed.
//!
//! On the Shoal side the servers are tasks on n2 and every client is a task
//! on n1 (a service with `--restart-condition none`) whose stdout is read
//! back with `shoal service logs --raw`. Each measurement runs on both paths
//! back to back, so load from other work on the machine hits both alike.
//!
//! Shoal's tasks run `host` (this build's `lab-echo`, the node's `iperf3`)
//! or, with `--image lab-tools`, the same binaries from the lab tools image
//! loaded on n1 (n2 fetches it). The baseline always runs the host's.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan,
    packet_route::{
        link::{InfoData, InfoVeth},
        neighbour::{NeighbourFlags, NeighbourState},
    },
};
use serde_json::Value;
use shoal_common::ports::VXLAN_PORT;
use shoal_lab::{Lab, eventually, netns, taskns::TaskNs};

use crate::bench::Endpoints;

const VNI: u32 = 42;
/// The lab's underlay MTU minus 50 bytes of VXLAN, as Shoal derives it.
const OVERLAY_MTU: u32 = shoal_lab::MTU - 50;
/// Tasks run commands from the node's filesystem: the same binary on both paths.
const IPERF3: &str = "/usr/bin/iperf3";
const IPERF_PORT: &str = "5201";
const ECHO_PORT: &str = "7000";

/// One iperf3 run, as the receiver counted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tcp {
    pub gbps: f64,
    pub retransmits: u64,
    /// The control connection's MSS: shows both paths ran at one MTU.
    pub mss: Option<u64>,
}

/// Reads `iperf3 -J` output: the receiver's total over all streams (omitted
/// seconds excluded), or iperf3's own error.
pub fn parse_iperf(json: &str) -> anyhow::Result<Tcp> {
    let v: Value = serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 -J: no end.sum_received.bits_per_second")?;
    Ok(Tcp {
        gbps: bps / 1e9,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        mss: v["start"]["tcp_mss_default"].as_u64(),
    })
}

/// What `lab-echo rr` printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rr {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

fn micros(s: &str) -> Option<Duration> {
    let us: f64 = s.strip_suffix("us")?.parse().ok()?;
    (us >= 0.0).then(|| Duration::from_nanos((us * 1e3).round() as u64))
}

/// Reads the `rr N/s p50 Xus p99 Yus` line of `lab-echo rr` among others.
pub fn parse_rr(out: &str) -> Option<Rr> {
    out.lines().find_map(
        |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["rr", rate, "p50", p50, "p99", p99] => Some(Rr {
                per_sec: rate.strip_suffix("/s")?.parse().ok()?,
                p50: micros(p50)?,
                p99: micros(p99)?,
            }),
            _ => None,
        },
    )
}

/// Servers spawned into the baseline's namespaces, killed on drop.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Already gone is fine: only the reaping matters here.
            let _already_exited = c.kill();
            let _status = c.wait();
        }
    }
}

/// The hand-made path. Field order is drop order: servers first, then the
/// namespaces (each deleted by its guard).
struct Baseline {
    servers: Children,
    tasks: [TaskNs; 2],
    nodes: [TaskNs; 2],
    underlay: TaskNs,
}

fn index(ns: &str, name: &str) -> anyhow::Result<u32> {
    let name = name.to_owned();
    netns::run_in_netns(ns, move || nix::net::if_::if_nametoindex(name.as_str()))?
        .with_context(|| format!("no link in {ns}"))
}

async fn up(h: &Handle, ns: &str, name: &str) -> anyhow::Result<()> {
    h.link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .with_context(|| format!("set {name} up in {ns}"))
}

/// A veth `outer` (in `outer_ns`, a port of `bridge`) whose peer is `eth0`
/// in `inner_ns`, with `addr`/24, `mac` if given, `mtu` on both ends.
async fn veth(
    outer: (&Handle, &str, &str),
    bridge: &str,
    inner_ns: &str,
    addr: Ipv4Addr,
    mac: Option<[u8; 6]>,
    mtu: u32,
) -> anyhow::Result<()> {
    let (h, outer_ns, port) = outer;
    let fd = netns::open(inner_ns)?;
    let mut peer = LinkUnspec::new_with_name("eth0")
        .mtu(mtu)
        .setns_by_fd(fd.as_raw_fd());
    if let Some(mac) = mac {
        peer = peer.address(mac.to_vec());
    }
    h.link()
        .add(
            LinkVeth::new(port, "eth0")
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .mtu(mtu)
                .controller(index(outer_ns, bridge)?)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("veth {port} in {outer_ns} → eth0 in {inner_ns}"))?;
    let inner = netns::netlink(inner_ns)?;
    up(&inner, inner_ns, "lo").await?;
    inner
        .address()
        .add(index(inner_ns, "eth0")?, IpAddr::V4(addr), 24)
        .execute()
        .await
        .with_context(|| format!("{addr}/24 on eth0 in {inner_ns}"))?;
    up(&inner, inner_ns, "eth0").await
}

impl Baseline {
    async fn build() -> anyhow::Result<Baseline> {
        let b = Baseline {
            servers: Children::default(),
            tasks: [TaskNs::create().await?, TaskNs::create().await?],
            nodes: [TaskNs::create().await?, TaskNs::create().await?],
            underlay: TaskNs::create().await?,
        };
        let ul = b.underlay.name();
        let ulh = b.underlay.netlink()?;
        ulh.link()
            .add(LinkBridge::new("br0").mtu(shoal_lab::MTU).up().build())
            .execute()
            .await
            .context("underlay bridge")?;
        let vtep = |i: usize| Ipv4Addr::new(198, 19, 0, 1 + i as u8);
        let task_ip = |i: usize| Ipv4Addr::new(10, 99, 0, 1 + i as u8);
        let task_mac = |i: usize| [0x02, 0x42, 10, 99, 0, 1 + i as u8];
        for i in 0..2 {
            let node = b.nodes[i].name();
            let h = b.nodes[i].netlink()?;
            veth(
                (&ulh, ul, &format!("n{i}")),
                "br0",
                node,
                vtep(i),
                None,
                shoal_lab::MTU,
            )
            .await?;
            h.link()
                .add(LinkBridge::new("br42").mtu(OVERLAY_MTU).up().build())
                .execute()
                .await
                .context("overlay bridge")?;
            h.link()
                .add(
                    LinkVxlan::new("vx42", VNI)
                        .dev(index(node, "eth0")?)
                        .local(vtep(i))
                        .port(VXLAN_PORT)
                        .learning(false)
                        .proxy(true)
                        .mtu(OVERLAY_MTU)
                        .controller(index(node, "br42")?)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .context("vxlan device")?;
            let task = b.tasks[i].name();
            veth(
                (&h, node, "tsk"),
                "br42",
                task,
                task_ip(i),
                Some(task_mac(i)),
                OVERLAY_MTU,
            )
            .await?;
            // The peer task: its MAC behind the peer VTEP (NTF_SELF, the
            // VXLAN device's own FDB), and its address answered by the ARP
            // proxy, so nothing is flooded or learned.
            let (peer, vx) = (1 - i, index(node, "vx42")?);
            h.neighbours()
                .add_bridge(vx, &task_mac(peer))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(IpAddr::V4(vtep(peer)))
                .execute()
                .await
                .context("fdb entry")?;
            h.neighbours()
                .add(vx, IpAddr::V4(task_ip(peer)))
                .link_layer_address(&task_mac(peer))
                .state(NeighbourState::Permanent)
                .execute()
                .await
                .context("neighbour entry")?;
        }
        Ok(b)
    }
}

fn shoal(lab: &Lab, bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    crate::bench::run_shoal(lab, bin, 1, args)
}

/// (state, node, first address) of each task of `service`.
fn ps(lab: &Lab, bin: &Path, service: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = shoal(lab, bin, &["service", "ps", service, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    let rows = v.as_array().context("service ps: not an array")?;
    Ok(rows
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            let addr = t["addresses"][0].as_str().unwrap_or_default();
            let ip = addr.split('/').next().unwrap_or_default().to_owned();
            (s("current_state"), s("node"), ip)
        })
        .collect())
}

/// `image` + `cmd` as a one-shot task on n1 on the overlay; its stdout once
/// it ended.
async fn task_on_n1(
    lab: &Lab,
    bin: &Path,
    image: &str,
    name: &str,
    cmd: &[&str],
    secs: u64,
) -> anyhow::Result<String> {
    let mut args = vec!["service", "create", "--detach", "--name", name];
    args.extend(["--constraint", "node.hostname==n1", "--network", "benchnet"]);
    args.extend(["--restart-condition", "none", image]);
    args.extend(cmd);
    shoal(lab, bin, &args)?;
    let within = Duration::from_secs(secs + 60);
    let state = eventually(within, &format!("{name} ended"), || {
        Ok(ps(lab, bin, name)?
            .into_iter()
            .map(|t| t.0)
            .find(|s| matches!(s.as_str(), "complete" | "failed" | "rejected")))
    })
    .await?;
    let logs = lab
        .command(1, bin.join("shoal"))
        .args(["service", "logs", "--raw", name])
        .output()?;
    shoal(lab, bin, &["service", "rm", name])?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&logs.stdout).into_owned(),
        String::from_utf8_lossy(&logs.stderr),
    );
    ensure!(
        state == "complete",
        "task {name} {state}:\n{stdout}\n{stderr}"
    );
    Ok(stdout)
}

/// Runs `attempt` until it parses: the first connect to a server that has
/// only just started may be refused.
async fn retried<T, F>(what: &str, mut attempt: impl FnMut(u32) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let mut n = 0;
    loop {
        match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) if n < 3 => eprintln!("bench: {what}, attempt {}: {e:#}; again", n + 1),
            Err(e) => return Err(e.context(format!("{what}: 4 attempts"))),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() || text.trim_start().starts_with('{'),
        "{cmd:?}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

fn iperf_args(ip: &str, secs: u64, streams: u32) -> Vec<String> {
    // -O 1: slow start and a new task's first ARP are not in the figure.
    let mut a: Vec<String> = [
        "-c",
        ip,
        "-p",
        IPERF_PORT,
        "-t",
        &secs.to_string(),
        "-O",
        "1",
    ]
    .map(String::from)
    .to_vec();
    a.extend(["-P".into(), streams.to_string(), "-J".into()]);
    a
}

/// One measurement on both paths, baseline first.
#[derive(Debug, Clone, Copy)]
struct Pair<T> {
    base: T,
    shoal: T,
}

/// What Shoal's tasks run: an image and the binaries' paths in it.
struct TaskImage {
    image: String,
    iperf3: String,
    echo: String,
}

struct Ctx<'a> {
    lab: &'a Lab,
    bin: &'a Path,
    task: &'a TaskImage,
    base: &'a Baseline,
    iperf_ip: String,
    echo_ip: String,
    secs: u64,
}

impl Ctx<'_> {
    async fn tcp(&self, streams: u32) -> anyhow::Result<Pair<Tcp>> {
        let base = retried("baseline iperf3", |_| async {
            let mut cmd = self.base.tasks[0].command(IPERF3);
            cmd.args(iperf_args("10.99.0.2", self.secs, streams));
            parse_iperf(&output(cmd)?)
        })
        .await?;
        let args = iperf_args(&self.iperf_ip, self.secs, streams);
        let shoal = retried("shoal iperf3", |n| {
            let mut cmd = vec![self.task.iperf3.as_str()];
            cmd.extend(args.iter().map(String::as_str));
            async move {
                let name = format!("tcp{streams}-{n}");
                let image = &self.task.image;
                parse_iperf(&task_on_n1(self.lab, self.bin, image, &name, &cmd, self.secs).await?)
            }
        })
        .await?;
        Ok(Pair { base, shoal })
    }

    async fn rr(&self) -> anyhow::Result<Pair<Rr>> {
        let echo = self.bin.join("lab-echo");
        let echo = echo.to_str().context("lab-echo path")?;
        let secs = self.secs.to_string();
        let mut cmd = self.base.tasks[0].command(echo);
        cmd.args(["rr", &format!("10.99.0.2:{ECHO_PORT}"), &secs]);
        let text = output(cmd)?;
        let base = parse_rr(&text).with_context(|| format!("baseline rr: {text}"))?;
        let target = format!("{}:{ECHO_PORT}", self.echo_ip);
        let text = task_on_n1(
            self.lab,
            self.bin,
            &self.task.image,
            "rr",
            &[&self.task.echo, "rr", &target, &secs],
            self.secs,
        )
        .await?;
        let shoal = parse_rr(&text).with_context(|| format!("shoal rr: {text}"))?;
        Ok(Pair { base, shoal })
    }
}

pub async fn run(bin: &Path, secs: u64, image: Endpoints) -> anyhow::Result<()> {
    ensure!(
        Path::new(IPERF3).is_file(),
        "no {IPERF3} (apt-get install iperf3)"
    );
    let echo = bin.join("lab-echo");
    let echo = echo.to_str().context("lab-echo path")?;

    let mut base = Baseline::build().await?;
    for args in [
        vec![IPERF3, "-s", "-p", IPERF_PORT],
        vec![echo, "serve", ECHO_PORT],
    ] {
        let child = base.tasks[1]
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {args:?} in the baseline"))?;
        base.servers.0.push(child);
    }

    let lab = Lab::builder("bench-ovl")
        .shoald(bin.join("shoald"))
        .nodes(2)
        .start()
        .await?;
    crate::bench::form_swarm(&lab, bin, 1)?;
    let task = match image {
        Endpoints::Host => TaskImage {
            image: "host".into(),
            iperf3: IPERF3.into(),
            echo: echo.into(),
        },
        Endpoints::LabTools => TaskImage {
            image: crate::bench::load_lab_tools(&lab, bin, 1)?.into(),
            iperf3: "/bin/iperf3".into(),
            echo: "/bin/lab-echo".into(),
        },
    };
    println!(
        "Shoal's tasks run {} {} and {} {}",
        task.image, task.iperf3, task.image, task.echo
    );
    shoal(
        &lab,
        bin,
        &["network", "create", "-d", "overlay", "benchnet"],
    )?;
    for (name, cmd) in [
        ("ipsrv", vec![task.iperf3.as_str(), "-s", "-p", IPERF_PORT]),
        ("echosrv", vec![task.echo.as_str(), "serve", ECHO_PORT]),
    ] {
        let mut args = vec!["service", "create", "--detach", "--name", name];
        args.extend([
            "--constraint",
            "node.hostname==n2",
            "--network",
            "benchnet",
            &task.image,
        ]);
        args.extend(cmd);
        shoal(&lab, bin, &args)?;
    }
    let mut ips = Vec::new();
    for name in ["ipsrv", "echosrv"] {
        let ip = eventually(Duration::from_secs(60), &format!("{name} running"), || {
            Ok(ps(&lab, bin, name)?
                .into_iter()
                .find(|t| t.0 == "running" && t.1 == "n2" && !t.2.is_empty())
                .map(|t| t.2))
        })
        .await?;
        ips.push(ip);
    }
    let ctx = Ctx {
        lab: &lab,
        bin,
        task: &task,
        base: &base,
        iperf_ip: ips[0].clone(),
        echo_ip: ips[1].clone(),
        secs,
    };

    let started = Instant::now();
    // RR first: its client retries the connect, so it also waits out the
    // servers' start on both paths.
    let rr = ctx.rr().await?;
    let one = ctx.tcp(1).await?;
    let two = ctx.tcp(2).await?;
    println!("\nmeasured in {:.0} s", started.elapsed().as_secs_f64());
    drop(ctx);
    report(secs, &one, &two, &rr);
    drop(base);
    lab.down()?;
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn report(secs: u64, one: &Pair<Tcp>, two: &Pair<Tcp>, rr: &Pair<Rr>) {
    println!(
        "\nTask to task across two nodes, MTU {OVERLAY_MTU}, {secs} s per run \
         (iperf3 after 1 s omitted; RR: 1 byte each way on one connection):"
    );
    println!(
        "{:>22} {:>14} {:>14} {:>10} {:>10} {:>10} {:>8}",
        "path", "1 stream", "2 streams", "RR/s", "RR p50", "RR p99", "retrans"
    );
    let row = |name: &str, a: Tcp, b: Tcp, r: Rr| {
        println!(
            "{name:>22} {:>9.2} Gb/s {:>9.2} Gb/s {:>10.0} {:>10} {:>10} {:>8}",
            a.gbps,
            b.gbps,
            r.per_sec,
            us(r.p50),
            us(r.p99),
            a.retransmits + b.retransmits
        );
    };
    row("kernel VXLAN by hand", one.base, two.base, rr.base);
    row("Shoal overlay", one.shoal, two.shoal, rr.shoal);
    let x = |s: f64, b: f64| format!("{:.2}×", s / b.max(1e-12));
    println!(
        "{:>22} {:>14} {:>14} {:>10} {:>10} {:>10}",
        "Shoal / baseline",
        x(one.shoal.gbps, one.base.gbps),
        x(two.shoal.gbps, two.base.gbps),
        x(rr.shoal.per_sec, rr.base.per_sec),
        x(rr.shoal.p50.as_secs_f64(), rr.base.p50.as_secs_f64()),
        x(rr.shoal.p99.as_secs_f64(), rr.base.p99.as_secs_f64()),
    );
    let mss = |t: Tcp| t.mss.map_or("?".to_owned(), |m| m.to_string());
    println!(
        "TCP MSS: baseline {}, Shoal {}",
        mss(one.base),
        mss(one.shoal)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf3_json() {
        let out = r#"{"start": {"connected": [], "tcp_mss_default": 1398},
            "intervals": [],
            "end": {
                "sum_sent": {"bytes": 5000000000, "bits_per_second": 8.1e9, "retransmits": 12},
                "sum_received": {"bytes": 4990000000, "bits_per_second": 7.98e9}
            }}"#;
        let t = parse_iperf(out).expect("parsed");
        assert!((t.gbps - 7.98).abs() < 1e-9, "{t:?}");
        assert_eq!(t.retransmits, 12);
        assert_eq!(t.mss, Some(1398));
        let refused = r#"{"start": {}, "intervals": [], "end": {},
            "error": "unable to connect to server: Connection refused"}"#;
        let e = parse_iperf(refused).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("iperf3: unable to connect to server: Connection refused")
        );
        assert!(parse_iperf("not json").is_err());
        assert!(parse_iperf(r#"{"end": {}}"#).is_err());
    }

    #[test]
    fn reads_rr_lines() {
        let out = "connect 10.0.1.3:7000: Connection refused; retrying\n\
                   rr 23456.7/s p50 41.2us p99 80.5us\n";
        let r = parse_rr(out).expect("parsed");
        assert!((r.per_sec - 23456.7).abs() < 1e-9);
        assert_eq!(r.p50, Duration::from_nanos(41_200));
        assert_eq!(r.p99, Duration::from_nanos(80_500));
        assert!(parse_rr("rr 1/s p50 2ms p99 3us").is_none());
        assert!(parse_rr("").is_none());
    }
}
