//! `cargo xtask bench raft`: commit throughput and latency by concurrency
//! against a same-run fsync loop, and the leader-failover distribution,
//! printed and written as a shoal-bench result file.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use shoal_api::cluster::v1::{
    CreateSecretRequest, ListNodesRequest, NodeRole, NodeStatus, NodeSummary,
};
use shoal_bench::{BenchResult, Metric, RunMeta, ScenarioResult, meta, stats::DEFAULT_SPREAD};
use shoal_lab::Lab;

use crate::bench::{control, form_swarm, fsync_baseline, millis, ms, pct};

pub async fn run(
    bin: &Path,
    run_for: Duration,
    kills: usize,
    levels: &[usize],
    json: &Path,
) -> anyhow::Result<()> {
    let started_unix = crate::bench::unix_now();
    let lab = Lab::builder("bench-raft")
        .shoald(bin.join("shoald"))
        .nodes(3)
        .start()
        .await?;
    form_swarm(&lab, bin, lab.nodes().len())?;
    settled_leader(&lab, Duration::from_secs(20)).await?;
    let mut scenarios = Vec::new();

    let base = fsync_baseline(lab.node(1).state_dir(), Duration::from_secs(2))?;
    let base_p50 = pct(&base, 50.0);
    println!(
        "\nbaseline: write of 256 B + fdatasync in a loop on the managers' filesystem: \
         p50 {}, p99 {} ({} samples, {:.0}/s)",
        ms(base_p50),
        ms(pct(&base, 99.0)),
        base.len(),
        base.len() as f64 / 2.0
    );
    scenarios.push(scenario(
        "fsync-baseline",
        vec![
            one("writes_per_s", "1/s", base.len() as f64 / 2.0),
            one("p50", "ms", millis(base_p50)),
            one("p99", "ms", millis(pct(&base, 99.0))),
        ],
    ));

    println!("\nRaft commits on 3 managers (each a new 64 B secret, through any manager):");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>14}",
        "clients", "writes/s", "p50", "p99", "errors", "p50/fsync p50"
    );
    for &clients in levels {
        let (errors, samples) = load(&lab, clients, run_for, &format!("c{clients}")).await?;
        let p50 = pct(&samples, 50.0);
        let rate = samples.len() as f64 / run_for.as_secs_f64();
        println!(
            "{clients:>8} {rate:>12.0} {:>12} {:>12} {errors:>10} {:>13.1}x",
            ms(p50),
            ms(pct(&samples, 99.0)),
            p50.as_secs_f64() / base_p50.as_secs_f64().max(1e-9),
        );
        scenarios.push(scenario(
            &format!("commit-{clients}-clients"),
            vec![
                one("writes_per_s", "1/s", rate),
                one("p50", "ms", millis(p50)),
                one("p99", "ms", millis(pct(&samples, 99.0))),
                Metric::new("errors", "writes", vec![errors as f64], vec![], None),
            ],
        ));
    }

    println!("\nLeader failover: SIGKILL the leader, write through a survivor every 10 ms:");
    let (times, terms) = failovers(&lab, kills).await?;
    let sorted = {
        let mut t = times.clone();
        t.sort();
        t
    };
    if let (Some(min), Some(max)) = (sorted.first(), sorted.last()) {
        println!(
            "failover over {} kills: median {}, p90 {}, min {}, max {}; elections per kill {:?}",
            sorted.len(),
            ms(median(&sorted)),
            ms(pct(&sorted, 90.0)),
            ms(*min),
            ms(*max),
            terms
        );
    }
    scenarios.push(scenario(
        "failover",
        vec![
            // A distribution, not repeats of one figure: never flagged for spread.
            Metric::new(
                "kill_to_first_write",
                "ms",
                times.iter().map(|t| millis(*t)).collect(),
                vec![],
                None,
            ),
            Metric::new(
                "terms_per_kill",
                "elections",
                terms.iter().map(|t| *t as f64).collect(),
                vec![],
                None,
            ),
        ],
    ));

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
            repeat: 1,
            duration_secs: run_for.as_secs(),
            started_unix,
            spread_threshold: DEFAULT_SPREAD,
            order: scenarios.iter().map(|s| s.name.clone()).collect(),
            commands: vec![format!(
                "cargo xtask bench raft --seconds {} --kills {kills} --clients {}",
                run_for.as_secs(),
                levels
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )],
            notes: vec![
                "3 managers as lab namespaces on one host; each write is CreateSecret of a \
                 new 64 B secret over the local socket of manager 1 + client % 3 (two thirds \
                 forwarded to the leader), returned once committed and applied on the manager \
                 that took it, and read back from its state."
                    .into(),
                "fsync-baseline: a loop of 256 B write + fdatasync on the managers' filesystem."
                    .into(),
                "failover: SIGKILL of the leader's shoald after all three agree on it; time \
                 to the first acknowledged write through a survivor (1 s timeout per try, \
                 10 ms apart); terms_per_kill is the term increase, 1 = one election round."
                    .into(),
            ],
            streams: 0,
            loaders: 0,
            connections: 0,
            cpu_scope: "missing: not measured by bench raft".into(),
        },
        scenarios,
    };
    crate::bench::write_result(json, &result)
}

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// A metric measured once in the run.
fn one(name: &str, unit: &str, value: f64) -> Metric {
    Metric::new(name, unit, vec![value], vec![], Some(DEFAULT_SPREAD))
}

fn scenario(name: &str, metrics: Vec<Metric>) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        metrics,
        latency: Vec::new(),
    }
}

/// `kills` rounds of: wait for a settled leader, SIGKILL it, time the first
/// write through a survivor, restart the killed manager. The times, and by
/// how many terms each failover moved the cluster.
async fn failovers(lab: &Lab, kills: usize) -> anyhow::Result<(Vec<Duration>, Vec<u64>)> {
    let (mut times, mut terms) = (Vec::new(), Vec::new());
    for round in 0..kills {
        let leader = settled_leader(lab, Duration::from_secs(60)).await?;
        let survivor = if leader == 1 { 2 } else { 1 };
        let mut api = control(lab, survivor).await?;
        let before = term(lab, survivor).await?;
        let killed = Instant::now();
        lab.kill(leader).await?;
        let mut i = 0;
        let took = loop {
            let name = format!("failover-{round}-{i}");
            i += 1;
            let attempt =
                tokio::time::timeout(Duration::from_secs(1), api.create_secret(secret(name)));
            if let Ok(Ok(_)) = attempt.await {
                break killed.elapsed();
            }
            ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "no write within 60 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let after = term(lab, survivor).await?;
        println!(
            "  kill {:>2}: n{leader} → first write after {} (term {before} → {after})",
            round + 1,
            ms(took)
        );
        times.push(took);
        terms.push(after.saturating_sub(before));
        lab.start(leader).await?;
    }
    Ok((times, terms))
}

/// The Raft term of manager `k`.
pub async fn term(lab: &Lab, k: usize) -> anyhow::Result<u64> {
    Ok(control(lab, k)
        .await?
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .raft_term)
}

async fn nodes(lab: &Lab, k: usize) -> anyhow::Result<Vec<NodeSummary>> {
    Ok(control(lab, k)
        .await?
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes)
}

/// The leader's lab index once all three managers are ready, agree on one
/// leader, and each has applied the log up to a linearizable read (so a
/// manager restarted by the previous round has caught up).
pub async fn settled_leader(lab: &Lab, within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for k in 1..=3 {
            let Ok(nodes) = nodes(lab, k).await else {
                break;
            };
            let ready = nodes
                .iter()
                .filter(|n| {
                    n.role == NodeRole::Manager as i32 && n.status == NodeStatus::Ready as i32
                })
                .count();
            match nodes.iter().find(|n| n.manager_status == "Leader") {
                Some(l) if ready == 3 => leaders.push(l.hostname.clone()),
                _ => break,
            }
        }
        if leaders.len() == 3 && leaders.iter().all(|l| *l == leaders[0]) {
            return Ok(leaders[0][1..].parse()?);
        }
        ensure!(
            Instant::now() < deadline,
            "no settled leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secret(name: String) -> CreateSecretRequest {
    CreateSecretRequest {
        name,
        labels: Default::default(),
        data: vec![b'x'; 64],
    }
}

/// `clients` writers, each on its own connection to manager 1+i%3, for
/// `run_for`: every write a new secret (no compare-and-set conflicts).
async fn load(
    lab: &Lab,
    clients: usize,
    run_for: Duration,
    tag: &str,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let mut tasks = tokio::task::JoinSet::new();
    let end = Instant::now() + run_for;
    for c in 0..clients {
        let mut api = control(lab, 1 + c % 3).await?;
        let tag = format!("{tag}-{c}");
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let mut i = 0usize;
            while Instant::now() < end {
                let t = Instant::now();
                match api.create_secret(secret(format!("{tag}-{i}"))).await {
                    Ok(_) => samples.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (errors, samples)
        });
    }
    let (mut errors, mut all) = (0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (e, s) = r?;
        errors += e;
        all.extend(s);
    }
    all.sort();
    Ok((errors, all))
}
