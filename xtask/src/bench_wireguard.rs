//! `cargo xtask bench wireguard`: the WireGuard overlay against the plain
//! overlay and against boringtun alone, in one run (issue 16's figures).
//!
//! - `overlay-wireguard`: a task on n1 to a task on n2 over an
//!   `--opt encrypted=wireguard` network of a 2-node lab of release
//!   `shoald`s: VXLAN through each node's boringtun device.
//! - `overlay-plain`: the same over a plain network of the same lab.
//! - `boringtun-ceiling`: two namespaces of a second lab (no shoald) joined
//!   by boringtun alone (the same shoal-wg device, threads and MTU), no
//!   VXLAN, bridge or eBPF: what this machine's boringtun can carry.
//!
//! Each path: iperf3, one stream, throughput received; and lab-echo's
//! 1-byte TCP round trips. The client and server processes run in the
//! tasks' network namespaces (host binaries), so the three paths differ
//! only in what carries the packets. Repeats alternate the path order.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context, ensure};
use shoal_bench::{
    BenchResult, Iperf3, Metric, Rr, RunMeta, ScenarioResult, meta, stats::DEFAULT_SPREAD,
};
use shoal_lab::Lab;
use shoal_wg::{KeyPair, Tunnel, uapi::PeerChange};

use crate::bench::{form_swarm, run_shoal, unix_now, write_result};

#[derive(clap::Args, Debug)]
pub struct Params {
    /// Measurements per path.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Seconds per iperf3 and round-trip measurement.
    #[arg(long, default_value_t = 4)]
    pub duration: u64,
    /// Where the result file (shoal-bench's schema) is written.
    #[arg(long, default_value = "target/bench/wireguard.json")]
    pub json: PathBuf,
}

const PATHS: [&str; 3] = ["overlay-wireguard", "overlay-plain", "boringtun-ceiling"];
const METRICS: [(&str, &str); 3] = [
    ("throughput (1 stream)", "Gbit/s"),
    ("rr rate", "1/s"),
    ("rr p50", "us"),
];
const IPERF_PORT: &str = "5201";
const ECHO_PORT: &str = "7000";

/// `cmd` run to its end inside the network namespace at `netns`.
fn output_in(netns: &Path, cmd: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let (netns, cmd) = (netns.to_owned(), cmd.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    shoal_lab::probe::in_netns(netns, move || Command::new(cmd).args(args).output())?
        .context("running a client in a namespace")
}

/// `cmd` started inside the network namespace at `netns`.
fn spawn_in(netns: &Path, cmd: &Path, args: &[&str]) -> anyhow::Result<Child> {
    let (netns, cmd) = (netns.to_owned(), cmd.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    shoal_lab::probe::in_netns(netns, move || {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })?
    .context("starting a server in a namespace")
}

/// One path: where its client runs, where its servers listen.
struct Path3 {
    client: PathBuf,
    server: PathBuf,
    server_ip: Ipv4Addr,
}

/// Servers of one path, killed on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _gone = c.kill();
            let _reaped = c.wait();
        }
    }
}

fn start_servers(bin: &Path, p: &Path3) -> anyhow::Result<Servers> {
    Ok(Servers(vec![
        spawn_in(
            &p.server,
            Path::new("/usr/bin/iperf3"),
            &["-s", "-p", IPERF_PORT],
        )?,
        spawn_in(&p.server, &bin.join("lab-echo"), &["serve", ECHO_PORT])?,
    ]))
}

/// Throughput (Gbit/s), rr rate and rr p50 (µs) of one measurement.
fn measure(bin: &Path, p: &Path3, secs: u64) -> anyhow::Result<[f64; 3]> {
    let ip = p.server_ip.to_string();
    let t = secs.to_string();
    let out = output_in(
        &p.client,
        Path::new("/usr/bin/iperf3"),
        &["-c", &ip, "-p", IPERF_PORT, "-t", &t, "-J"],
    )?;
    let iperf = Iperf3::parse(&String::from_utf8_lossy(&out.stdout))?;
    let to = format!("{ip}:{ECHO_PORT}");
    let out = output_in(&p.client, &bin.join("lab-echo"), &["rr", &to, &t])?;
    ensure!(
        out.status.success(),
        "lab-echo rr {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rr = Rr::parse(&String::from_utf8_lossy(&out.stdout))?;
    Ok([iperf.bits_per_second / 1e9, rr.per_second, rr.p50_us])
}

/// The netns of the task `<service>.1` (a `lab-http serve 80` holder).
async fn holder(service: &str) -> anyhow::Result<PathBuf> {
    for _ in 0..300 {
        if let Some(pid) = shoal_lab::task_pid(&format!("{service}.1"), "serve 80") {
            return Ok(PathBuf::from(format!("/proc/{pid}/ns/net")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("task {service}.1 did not start within 60 s")
}

/// The IPv4 address of `eth0` in `netns`.
fn eth0_ip(netns: &Path) -> anyhow::Result<Ipv4Addr> {
    let out = output_in(
        netns,
        Path::new("ip"),
        &["-4", "-o", "addr", "show", "eth0"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .with_context(|| format!("no eth0 address in {text:?}"))
}

/// Client and server tasks on `network`, pinned to n1 and n2.
async fn task_pair(lab: &Lab, bin: &Path, network: &str) -> anyhow::Result<Path3> {
    let http = bin.join("lab-http");
    let http = http.to_str().context("lab-http path")?;
    for (role, node) in [("cli", "n1"), ("srv", "n2")] {
        let name = format!("{network}-{role}");
        let constraint = format!("node.hostname=={node}");
        run_shoal(
            lab,
            bin,
            1,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                &name,
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
    }
    let client = holder(&format!("{network}-cli")).await?;
    let server = holder(&format!("{network}-srv")).await?;
    let server_ip = eth0_ip(&server)?;
    Ok(Path3 {
        client,
        server,
        server_ip,
    })
}

/// Two namespaces of a daemon-less lab joined by boringtun alone:
/// 10.77.0.1/24 on n1, 10.77.0.2/24 on n2, over the lab's underlay.
async fn ceiling(lab: &Lab) -> anyhow::Result<(Path3, Vec<Tunnel>)> {
    let mut tunnels = Vec::new();
    let keys = [KeyPair::generate(), KeyPair::generate()];
    let inner = |k: usize| Ipv4Addr::new(10, 77, 0, k as u8);
    let netns = |k: usize| PathBuf::from(format!("/run/netns/{}", lab.node(k).netns()));
    for k in 1..=2 {
        let (key, peer) = (keys[k - 1].clone(), keys[2 - k].public());
        let peer_change = PeerChange::Set {
            key: peer,
            endpoint: lab.node(3 - k).addr(),
            allowed: inner(3 - k),
        };
        let addr = inner(k);
        let t = shoal_lab::probe::in_netns(netns(k), move || {
            Tunnel::standalone(&key, &peer_change, addr, 24)
        })??;
        tunnels.push(t);
    }
    Ok((
        Path3 {
            client: netns(1),
            server: netns(2),
            server_ip: inner(2),
        },
        tunnels,
    ))
}

pub async fn run(bin: &Path, p: &Params) -> anyhow::Result<()> {
    ensure!(p.repeat > 0, "--repeat must be at least 1");
    let started_unix = unix_now();
    let lab = Lab::builder("bench-wg")
        .shoald(bin.join("shoald"))
        .nodes(2)
        .start()
        .await?;
    form_swarm(&lab, bin, 1)?;
    run_shoal(
        &lab,
        bin,
        1,
        &["network", "create", "--opt", "encrypted=wireguard", "wgnet"],
    )?;
    run_shoal(&lab, bin, 1, &["network", "create", "plainnet"])?;
    let wg = task_pair(&lab, bin, "wgnet").await?;
    let plain = task_pair(&lab, bin, "plainnet").await?;
    let bare = Lab::builder("bench-wgc")
        .nodes(2)
        .daemons(false)
        .start()
        .await?;
    let (ceiling, _tunnels) = ceiling(&bare).await?;
    let paths = [wg, plain, ceiling];
    let servers: Vec<Servers> = paths
        .iter()
        .map(|p| start_servers(bin, p))
        .collect::<anyhow::Result<_>>()?;
    // Warm up each path (handshakes, ARP proxies, endpoints programmed).
    for (i, path) in paths.iter().enumerate() {
        let mut last = None;
        for _ in 0..30 {
            match measure(bin, path, 1) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(e) = last {
            return Err(e.context(format!("{} never answered", PATHS[i])));
        }
    }
    let mut samples = vec![Vec::<[f64; 3]>::new(); 3];
    let mut errors = vec![Vec::<String>::new(); 3];
    let mut order = Vec::new();
    for r in 0..p.repeat {
        let mut turn: Vec<usize> = (0..3).collect();
        turn.rotate_left(r % 3);
        for i in turn {
            eprintln!("wireguard bench: {} run {}/{}", PATHS[i], r + 1, p.repeat);
            order.push(PATHS[i].to_owned());
            match measure(bin, &paths[i], p.duration) {
                Ok(m) => samples[i].push(m),
                Err(e) => errors[i].push(format!("{e:#}")),
            }
        }
    }
    drop(servers);
    let median = |i: usize, j: usize| {
        shoal_bench::stats::median(&samples[i].iter().map(|m| m[j]).collect::<Vec<_>>())
    };
    println!("\n{} run(s) per path, median:", p.repeat);
    println!(
        "{:>24} {:>10} {:>10} {:>10}",
        "", "Gbit/s", "rr/s", "rr p50 us"
    );
    for (i, name) in PATHS.iter().enumerate() {
        let v = |j| median(i, j).map_or("-".into(), |v| format!("{v:.2}"));
        println!("{name:>24} {:>10} {:>10} {:>10}", v(0), v(1), v(2));
    }
    let ratio = |a: usize, b: usize, j: usize| match (median(a, j), median(b, j)) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}x", x / y),
        _ => "-".into(),
    };
    println!(
        "wireguard / ceiling: throughput {}, rr {}; wireguard / plain: throughput {}, rr {}",
        ratio(0, 2, 0),
        ratio(0, 2, 1),
        ratio(0, 1, 0),
        ratio(0, 1, 1)
    );
    let scenarios = PATHS
        .iter()
        .enumerate()
        .map(|(i, name)| ScenarioResult {
            name: (*name).to_owned(),
            metrics: METRICS
                .iter()
                .enumerate()
                .map(|(j, (metric, unit))| {
                    Metric::new(
                        metric,
                        unit,
                        samples[i].iter().map(|m| m[j]).collect(),
                        errors[i].clone(),
                        Some(DEFAULT_SPREAD),
                    )
                })
                .collect(),
            latency: Vec::new(),
        })
        .collect();
    let (cpu_model, cpus) = meta::cpu();
    let result = BenchResult {
        schema: shoal_bench::result::SCHEMA_VERSION,
        meta: RunMeta {
            shoal_commit: meta::git_commit(),
            daemon_commit: None,
            shoal_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: meta::kernel(),
            cpu_model,
            cpus,
            nodes: 2,
            repeat: p.repeat as u32,
            duration_secs: p.duration,
            started_unix,
            spread_threshold: DEFAULT_SPREAD,
            order,
            commands: vec![format!(
                "cargo xtask bench wireguard --repeat {} --duration {}",
                p.repeat, p.duration
            )],
            notes: vec![
                "overlay-wireguard and overlay-plain: a task on n1 to a task on n2 of a 2-node \
                 namespace lab of release shoald, over an --opt encrypted=wireguard network \
                 and a plain one; boringtun-ceiling: two namespaces joined by boringtun alone \
                 (shoal-wg's device, 2 threads, MTU 1440), no VXLAN, bridge or eBPF. iperf3 \
                 and lab-echo run in the namespaces as host processes. All nodes share one \
                 kernel and this machine's cores."
                    .into(),
            ],
            streams: 1,
            loaders: 1,
            connections: 1,
            cpu_scope: "missing: not measured by bench wireguard".into(),
        },
        scenarios,
    };
    write_result(&p.json, &result)?;
    lab.down()?;
    bare.down()?;
    Ok(())
}
