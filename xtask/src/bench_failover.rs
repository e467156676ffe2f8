//! `cargo xtask bench failover`: a worker lost under load (issue 19, part
//! 5), repeated. `web` runs on two workers and is published on every node;
//! the lab's client opens a new connection to the manager n1 (which runs no
//! task) every 10 ms with a 1 s limit, whatever the earlier ones did. Each
//! round cuts one worker's underlay for `--hold`, heals it and waits until
//! both tasks serve again; the workers take turns. Reported: from each cut
//! to the last failed request's send (the mesh's last new connection to the
//! lost node) and to its failure (what a client sees), and the failed
//! requests per cut. The baseline, measured in the same run on a lab of its
//! own: daemons run with `--mesh-drain-suspected false`, where a lost node
//! leaves the rings only when gossip declares it down (the design before
//! issue 19; swarm takes about 15 s).

use std::{path::Path, time::Duration};

use shoal_bench::{BenchResult, Metric, RunMeta, ScenarioResult, meta};
use shoal_lab::nodeloss::{self, CLIENT_TIMEOUT, PAUSE};

use crate::bench::{millis, ms, pct};

/// The cuts of one lab: the times and failures of each.
#[derive(Default)]
struct Phase {
    sent: Vec<Duration>,
    failed_at: Vec<Duration>,
    failed: Vec<f64>,
    errors: Vec<String>,
}

async fn phase(tag: &str, args: &[&str], cuts: usize, hold: Duration) -> anyhow::Result<Phase> {
    let lab = nodeloss::cluster(tag, args).await?;
    let mut p = Phase::default();
    println!(
        "{:>4} {:>7} {:>16} {:>16} {:>8} {:>8}",
        "cut", "victim", "last sent", "last failed", "failed", "ok"
    );
    for i in 0..cuts {
        let victim = 3 - i % 2;
        let c = nodeloss::cut_once(&lab, victim, hold).await?;
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), ms);
        println!(
            "{:>4} {:>7} {:>16} {:>16} {:>8} {:>8}",
            i + 1,
            format!("n{victim}"),
            show(c.last_sent),
            show(c.last_failed),
            c.failed,
            c.ok_during
        );
        if c.before.len() < 2 {
            p.errors.push(format!(
                "cut {}: only {:?} answered before it",
                i + 1,
                c.before
            ));
        }
        // No failure at all means the node was not in n1's rings: the round
        // measured nothing, and is counted as an error, not as 0 s.
        match (c.last_sent, c.last_failed) {
            (Some(s), Some(f)) => {
                p.sent.push(s);
                p.failed_at.push(f);
            }
            _ => p.errors.push(format!("cut {}: no request failed", i + 1)),
        }
        p.failed.push(c.failed as f64);
    }
    for (name, v) in [
        ("cut → last failed request sent", &p.sent),
        ("cut → last failed request failed", &p.failed_at),
    ] {
        let mut s = v.clone();
        s.sort();
        if let (Some(min), Some(max)) = (s.first(), s.last()) {
            println!(
                "{name} over {} cuts: median {}, p90 {}, min {}, max {}",
                s.len(),
                ms(pct(&s, 50.0)),
                ms(pct(&s, 90.0)),
                ms(*min),
                ms(*max)
            );
        }
    }
    Ok(p)
}

fn scenario(name: &str, p: Phase) -> ScenarioResult {
    let to_ms = |v: &[Duration]| v.iter().map(|d| millis(*d)).collect::<Vec<_>>();
    // Distributions, not repeats of one figure: never flagged for spread.
    ScenarioResult {
        name: name.into(),
        metrics: vec![
            Metric::new(
                "cut_to_last_failed_sent",
                "ms",
                to_ms(&p.sent),
                p.errors.clone(),
                None,
            ),
            Metric::new(
                "cut_to_last_failure",
                "ms",
                to_ms(&p.failed_at),
                p.errors.clone(),
                None,
            ),
            Metric::new("failed_requests", "requests", p.failed, p.errors, None),
        ],
        latency: Vec::new(),
    }
}

pub async fn run(cuts: usize, hold: Duration, json: &Path) -> anyhow::Result<()> {
    let started_unix = crate::bench::unix_now();
    println!("node-loss: the mesh drains a node as soon as gossip suspects it (the default)");
    let drained = phase("bench-nodeloss", &[], cuts, hold).await?;
    println!(
        "\nnode-loss-down-only (baseline): `shoald --mesh-drain-suspected false`, a node \
         leaves the rings when gossip declares it down"
    );
    let baseline = phase(
        "bench-nodeloss-base",
        &["--mesh-drain-suspected", "false"],
        cuts,
        hold,
    )
    .await?;
    let median = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        pct(&s, 50.0)
    };
    println!(
        "\ncut → last failure, median: {} against {} down-only: {:.2}×",
        ms(median(&drained.failed_at)),
        ms(median(&baseline.failed_at)),
        median(&drained.failed_at).as_secs_f64()
            / median(&baseline.failed_at).as_secs_f64().max(1e-9)
    );
    let scenarios = vec![
        scenario("node-loss", drained),
        scenario("node-loss-down-only", baseline),
    ];
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
            nodes: 3,
            repeat: cuts as u32,
            duration_secs: hold.as_secs(),
            started_unix,
            spread_threshold: shoal_bench::stats::DEFAULT_SPREAD,
            order: scenarios.iter().map(|s| s.name.clone()).collect(),
            commands: vec![format!(
                "cargo xtask bench failover --cuts {cuts} --hold {}",
                hold.as_secs()
            )],
            notes: vec![format!(
                "n1 manager (no task), n2 and n3 workers each running one `web` task (busybox \
                 httpd) published on 8080, default 5 s heartbeats; gossip probes every {:?} \
                 (ack within {:?}). The lab's client opens a new connection to n1:8080 every \
                 {PAUSE:?}, each with a {CLIENT_TIMEOUT:?} limit, without waiting for earlier \
                 ones. Each cut takes a worker's underlay port down for {hold:?} (workers in \
                 turn), then heals it and waits until both tasks answer and nothing fails. \
                 cut_to_last_failed_sent: from the cut to the send of the last request that \
                 failed; cut_to_last_failure: to its failure. node-loss-down-only, the \
                 baseline: the same on daemons run with `--mesh-drain-suspected false` (a \
                 node leaves the rings when gossip declares it down, as before issue 19).",
                shoal_gossip::LAN_PROBE_PERIOD,
                shoal_gossip::LAN_PROBE_RTT,
            )],
            streams: 0,
            loaders: 0,
            connections: 0,
            cpu_scope: "missing: not measured by bench failover".into(),
        },
        scenarios,
    };
    crate::bench::write_result(json, &result)
}
