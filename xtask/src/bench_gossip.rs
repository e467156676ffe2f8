//! `cargo xtask bench gossip`: propagation and failure-detection times of
//! the gossip layer on N lab nodes, printed against the bound the SWIM
//! settings give (probe period + probe RTT + suspicion timeout), each run
//! repeated sealed (AES-GCM, as nodes run) and unsealed (the same frames
//! without encryption) in alternating order, so encryption's cost is a
//! same-run ratio; the samples also go to a JSON result file.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_bench::{BenchResult, Metric, RunMeta, ScenarioResult, meta, stats::DEFAULT_SPREAD};
use shoal_gossip::{Endpoint, GOSSIP_PORT, Gossip, GossipConfig, Keyring};
use shoal_lab::Lab;

use crate::bench::{millis, pct};

/// How the members' packets are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// AES-128-GCM with the gossip ring, as every node runs.
    Sealed,
    /// The same frame layout and size without encryption: the baseline.
    Plain,
}

impl Framing {
    fn name(self) -> &'static str {
        match self {
            Framing::Sealed => "sealed",
            Framing::Plain => "plain",
        }
    }

    fn ring(self) -> anyhow::Result<Keyring> {
        Ok(match self {
            Framing::Sealed => Keyring::random(1..=3)?,
            Framing::Plain => Keyring::unsealed_for_bench(),
        })
    }
}

/// The metrics of one run, in the order they are printed and stored.
const METRICS: [&str; 5] = [
    "membership",
    "spread p50",
    "spread max",
    "gone p50",
    "gone max",
];

fn start(lab: &Lab, k: usize, n: usize, ring: &Keyring) -> anyhow::Result<(Gossip, GossipConfig)> {
    let addr = SocketAddr::new(lab.node(k).addr().into(), GOSSIP_PORT);
    let (udp, tcp) = shoal_lab::netns::bind_udp_tcp(lab.node(k).netns(), addr)?;
    let mut cfg = GossipConfig::lan(format!("node{k}"), addr, n as u32);
    cfg.netns = Some(shoal_lab::netns::netns_path(lab.node(k).netns()));
    let g = Gossip::start(cfg.clone(), udp, tcp, n as u32)?;
    // Sealed as on a real node: the cost of encryption is in the figures.
    g.set_keyring(ring.clone());
    Ok((g, cfg))
}

/// Polls every 5 ms until `f` holds; the elapsed time, or an error after 2 min.
async fn until(mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "not within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(t.elapsed())
}

pub async fn run(sizes: &[usize], rounds: usize, repeat: usize, json: &Path) -> anyhow::Result<()> {
    ensure!(
        repeat >= 1,
        "--repeat {repeat}: at least one run per framing"
    );
    let started_unix = crate::bench::unix_now();
    let mut scenarios = Vec::new();
    let mut order = Vec::new();
    let mut notes = Vec::new();
    for &n in sizes {
        ensure!(
            n >= 3,
            "--nodes {n}: gossip needs at least 3 nodes to measure"
        );
        // Alternating which framing goes first, so neither always runs on
        // a warmer or busier machine.
        let mut samples = [Vec::new(), Vec::new()];
        let mut errors = [Vec::new(), Vec::new()];
        let mut swim = None;
        for r in 0..repeat {
            let pair = if r % 2 == 0 {
                [Framing::Sealed, Framing::Plain]
            } else {
                [Framing::Plain, Framing::Sealed]
            };
            for framing in pair {
                let i = framing as usize;
                order.push(format!("gossip-{n}-{}", framing.name()));
                eprintln!(
                    "gossip: {n} nodes, {}, run {}/{repeat}",
                    framing.name(),
                    r + 1
                );
                match once(n, rounds, framing).await {
                    Ok((m, cfg)) => {
                        samples[i].push(m);
                        swim = Some(cfg);
                    }
                    Err(e) => errors[i].push(format!("{e:#}")),
                }
            }
        }
        println!("\n{n} nodes, {repeat} run(s) per framing, median (min–max) in ms over runs:");
        println!("{:>12} {:>22} {:>22} {:>7}", "", "sealed", "plain", "ratio");
        for (j, name) in METRICS.iter().enumerate() {
            let col =
                |i: usize| -> Vec<f64> { samples[i].iter().map(|m: &[f64; 5]| m[j]).collect() };
            let (s, p) = (col(0), col(1));
            let (ms_, mp) = (
                shoal_bench::stats::median(&s),
                shoal_bench::stats::median(&p),
            );
            println!(
                "{name:>12} {:>22} {:>22} {:>7}",
                range(&s),
                range(&p),
                match (ms_, mp) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                }
            );
        }
        if let Some(cfg) = &swim {
            let bound = cfg.probe_period + cfg.probe_rtt + cfg.suspect_to_down;
            notes.push(format!(
                "SWIM at {n} nodes: probe {:?}, rtt {:?}, suspicion {:?}: dead→gone bound {bound:?}",
                cfg.probe_period, cfg.probe_rtt, cfg.suspect_to_down
            ));
            let gone: Vec<f64> = samples[0].iter().map(|m| m[3]).collect();
            if let Some(g) = shoal_bench::stats::median(&gone) {
                println!(
                    "      sealed dead→gone p50 vs the SWIM bound {bound:?}: {:.2}x",
                    g / millis(bound)
                );
            }
        }
        for (i, framing) in [Framing::Sealed, Framing::Plain].into_iter().enumerate() {
            for e in &errors[i] {
                println!("      {} run failed: {e}", framing.name());
            }
            scenarios.push(ScenarioResult {
                name: format!("gossip-{n}-{}", framing.name()),
                metrics: METRICS
                    .iter()
                    .enumerate()
                    .map(|(j, name)| {
                        Metric::new(
                            name,
                            "ms",
                            samples[i].iter().map(|m| m[j]).collect(),
                            errors[i].clone(),
                            Some(DEFAULT_SPREAD),
                        )
                    })
                    .collect(),
                latency: Vec::new(),
            });
        }
    }

    let (cpu_model, cpus) = meta::cpu();
    notes.push(
        "Members run in this process, one per lab node namespace, on UDP/TCP 7946. \
         membership: start to every member listing all others; spread: one endpoint \
         published on one node until every member holds it (p50/max over the rounds of a \
         run); gone: a publisher's member dropped until its endpoints left every other \
         member. sealed = AES-128-GCM with a 3-key ring as nodes run; plain = the same \
         frame layout and size unencrypted (Keyring::unsealed_for_bench), the same-run \
         baseline of encryption's cost."
            .into(),
    );
    let result = BenchResult {
        schema: shoal_bench::result::SCHEMA_VERSION,
        meta: RunMeta {
            shoal_commit: meta::git_commit(),
            daemon_commit: None,
            shoal_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: meta::kernel(),
            cpu_model,
            cpus,
            nodes: sizes.iter().copied().max().unwrap_or_default(),
            repeat: repeat as u32,
            duration_secs: 0,
            started_unix,
            spread_threshold: DEFAULT_SPREAD,
            order,
            commands: vec![format!(
                "cargo xtask bench gossip --nodes {} --rounds {rounds} --repeat {repeat}",
                sizes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )],
            notes,
            streams: 0,
            loaders: 0,
            connections: 0,
            cpu_scope: "missing: not measured by bench gossip".into(),
        },
        scenarios,
    };
    crate::bench::write_result(json, &result)?;
    if !result.flagged().is_empty() {
        println!(
            "flagged (errors or spread over {DEFAULT_SPREAD}): {:?}",
            result.flagged()
        );
    }
    Ok(())
}

/// `median (min–max)` of a column, or `-`.
fn range(v: &[f64]) -> String {
    match shoal_bench::stats::summarize(v, f64::INFINITY) {
        Some(s) => format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max),
        None => "-".into(),
    }
}

/// One run on a fresh lab: the five metrics in ms, and the SWIM settings.
async fn once(
    n: usize,
    rounds: usize,
    framing: Framing,
) -> anyhow::Result<([f64; 5], GossipConfig)> {
    // Kills stop while two members remain to observe them.
    let rounds = rounds.min(n - 2).max(1);
    let lab = Lab::builder("bench-gossip")
        .nodes(n)
        .daemons(false)
        .start()
        .await?;
    let seed = SocketAddr::new(lab.node(1).addr().into(), GOSSIP_PORT);
    let mut members = Vec::new();
    let mut cfg = None;
    let ring = framing.ring()?;
    for k in 1..=n {
        let (g, c) = start(&lab, k, n, &ring)?;
        if k > 1 {
            g.join([seed])?;
        }
        members.push(Some(g));
        cfg = Some(c);
    }
    let cfg = cfg.context("no members")?;
    let membership = until(|| members.iter().flatten().all(|m| m.members().len() == n - 1)).await?;

    let mut spread = Vec::new();
    for r in 0..rounds {
        let e = Endpoint {
            network: "bench".into(),
            ip: Ipv4Addr::new(10, 9, (r / 250) as u8, (r % 250 + 2) as u8),
            mac: [2, 0, 0, 0, 0, r as u8],
            vtep: lab.node(n - r).addr(),
            node_id: format!("node{}", n - r),
        };
        members[n - r - 1]
            .as_ref()
            .context("publisher")?
            .publish(e.clone())?;
        spread.push(until(|| members.iter().flatten().all(|m| m.endpoints().contains(&e))).await?);
    }
    let mut gone = Vec::new();
    for r in 0..rounds {
        // Kill a publisher: its endpoint must leave every other node.
        let k = n - r;
        members[k - 1] = None;
        let id = format!("node{k}");
        gone.push(
            until(|| {
                members
                    .iter()
                    .flatten()
                    .all(|m| m.endpoints().iter().all(|e| e.node_id != id))
            })
            .await?,
        );
    }
    spread.sort();
    gone.sort();
    Ok((
        [
            millis(membership),
            millis(pct(&spread, 50.0)),
            millis(pct(&spread, 100.0)),
            millis(pct(&gone, 50.0)),
            millis(pct(&gone, 100.0)),
        ],
        cfg,
    ))
}
