//! `cargo xtask bench update`: a rolling update of a published service
//! under load, against the same service before the update and against the
//! time swarm's algorithm allows.
//!
//! `web` runs `lab-http serve 80` (from `host`) as N replicas spread over 3
//! nodes, published on 8080, with a healthcheck that passes once the server
//! answers. wrk from the lab's client (not a node) goes through n1's
//! published port, so every request takes the mesh to one of the replicas
//! on any node. Each run measures wrk alone for the baseline, then
//! `service update --force` (every task replaced) with wrk running in
//! back-to-back slices until the service's UpdateStatus says completed.
//!
//! Reported per run and as median (min–max) over the runs: requests/s
//! during the update / before it, p99 during / before (the worst slice's
//! p99 against the baseline's), failed requests (wrk's socket errors and
//! non-2xx answers: the goal is 0), and the update's wall time against
//! swarm's bound ⌈N / parallelism⌉ × (task replacement + delay) + monitor,
//! the task replacement time being a one-replica service of the same spec
//! created and timed to RUNNING in the same run.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

use crate::{
    bench::{Spread, run_shoal},
    bench_mesh::{Wrk, wrk},
};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    before: Wrk,
    /// Requests/s over every slice; p99 of the worst slice; errors summed.
    during: Wrk,
    slices: usize,
    took: Duration,
    bound: Duration,
}

/// `--update-*` flags of the service under test.
pub struct Policy<'a> {
    pub parallelism: u64,
    pub delay: Duration,
    pub monitor: Duration,
    pub order: &'a str,
}

fn health(url: &str) -> Vec<String> {
    [
        "--health-cmd",
        &format!("curl -sf -o /dev/null {url}"),
        "--health-interval",
        "2s",
        "--health-start-period",
        "60s",
        "--health-start-interval",
        "100ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The service's UpdateStatus.State, as `service inspect` shows it.
fn update_state(lab: &Lab, bin: &Path) -> anyhow::Result<String> {
    let out = run_shoal(lab, bin, 1, &["service", "inspect", "web"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("service inspect")?;
    Ok(v[0]["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn running(lab: &Lab, bin: &Path, service: &str) -> anyhow::Result<usize> {
    let out = run_shoal(lab, bin, 1, &["service", "ps", service, "--format", "json"])?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    Ok(rows
        .iter()
        .filter(|r| r["desired_state"] == "running" && r["current_state"] == "running")
        .count())
}

/// Time from `service create` of one replica of the same spec to RUNNING
/// (healthy), polled every 50 ms; the service is removed after.
fn replacement_time(lab: &Lab, bin: &Path, spec: &[String]) -> anyhow::Result<Duration> {
    let mut args: Vec<&str> = vec!["service", "create", "-d", "--name", "probe"];
    args.extend(spec.iter().map(String::as_str));
    let start = Instant::now();
    run_shoal(lab, bin, 1, &args)?;
    loop {
        if running(lab, bin, "probe")? == 1 {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(60), "probe never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    run_shoal(lab, bin, 1, &["service", "rm", "probe"])?;
    Ok(took)
}

pub async fn run(
    bin: &Path,
    replicas: usize,
    runs: usize,
    conns: usize,
    policy: Policy<'_>,
) -> anyhow::Result<()> {
    crate::bench_mesh::ensure_tools()?;
    let lab = crate::bench::three_nodes("bench-update", bin).await?;
    let http = bin.join("lab-http");
    let http = http.to_str().context("binary path")?;
    let mut spec = health("http://127.0.0.1:80/");
    spec.extend(["host", http, "serve", "80"].map(str::to_owned));
    let replicas_s = replicas.to_string();
    let parallelism = policy.parallelism.to_string();
    let delay = format!("{}ms", policy.delay.as_millis());
    let monitor = format!("{}ms", policy.monitor.as_millis());
    let mut create: Vec<&str> = vec![
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        &replicas_s,
        "-p",
        "8080:80",
        "--update-parallelism",
        &parallelism,
        "--update-delay",
        &delay,
        "--update-monitor",
        &monitor,
        "--update-order",
        policy.order,
    ];
    create.extend(spec.iter().map(String::as_str));
    run_shoal(&lab, bin, 1, &create)?;
    eventually(Duration::from_secs(120), "every replica running", || {
        Ok((running(&lab, bin, "web")? == replicas).then_some(()))
    })
    .await?;
    let url = format!("http://{}:8080/", lab.node(1).addr());
    // Warm-up: connections, ARP and the mesh's maps on every path.
    wrk(&lab, &url, conns, 2, false)?;
    println!(
        "rolling update of {replicas} replicas (lab-http from host, healthcheck curl), \
         parallelism {}, delay {}, monitor {}, {}; wrk -t2 -c{conns} through n1:8080",
        policy.parallelism,
        secs(policy.delay),
        secs(policy.monitor),
        policy.order
    );
    let mut results = Vec::new();
    for i in 1..=runs {
        let replace = replacement_time(&lab, bin, &spec)?;
        let batches = if policy.parallelism == 0 {
            1
        } else {
            replicas.div_ceil(policy.parallelism as usize)
        };
        let bound = (replace + policy.delay) * batches as u32 + policy.monitor;
        let before = wrk(&lab, &url, conns, 5, false)?;
        let start = Instant::now();
        run_shoal(&lab, bin, 1, &["service", "update", "-d", "--force", "web"])?;
        let done = Arc::new(AtomicBool::new(false));
        // wrk in 2 s slices until the update is done (the last slice
        // ends up to 2 s after it).
        let slicer = {
            let (done, url) = (done.clone(), url.clone());
            let lab = Lab::open(lab.name())?;
            std::thread::spawn(move || -> anyhow::Result<Vec<Wrk>> {
                let mut slices = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    slices.push(wrk(&lab, &url, conns, 2, false)?);
                }
                Ok(slices)
            })
        };
        let took = loop {
            let state = update_state(&lab, bin)?;
            if state == "completed" {
                break start.elapsed();
            }
            ensure!(
                state != "paused" && start.elapsed() < Duration::from_secs(600),
                "the update did not complete: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        done.store(true, Ordering::Relaxed);
        let slices = slicer
            .join()
            .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
        ensure!(!slices.is_empty(), "no wrk slice ran");
        let during = Wrk {
            rps: slices.iter().map(|w| w.rps).sum::<f64>() / slices.len() as f64,
            p50: slices.iter().map(|w| w.p50).max().unwrap_or_default(),
            p99: slices.iter().map(|w| w.p99).max().unwrap_or_default(),
            errors: slices.iter().map(|w| w.errors).sum(),
        };
        println!(
            "run {i}: before {:.0} req/s p99 {:.2} ms ({} errors); during {:.0} req/s p99 {:.2} ms \
             ({} errors, {} slices); update {} against bound {} (replacement {})",
            before.rps,
            before.p99.as_secs_f64() * 1e3,
            before.errors,
            during.rps,
            during.p99.as_secs_f64() * 1e3,
            during.errors,
            slices.len(),
            secs(took),
            secs(bound),
            secs(replace),
        );
        results.push(Run {
            before,
            during,
            slices: slices.len(),
            took,
            bound,
        });
    }
    report(&results);
    Ok(())
}

fn report(runs: &[Run]) {
    let spread = |f: &dyn Fn(&Run) -> f64| {
        Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
            .map_or_else(|| "-".to_owned(), |s| s.to_string())
    };
    println!("\nover {} runs, median (min–max):", runs.len());
    println!(
        "  requests/s during / before: {}",
        spread(&|r| r.during.rps / r.before.rps)
    );
    println!(
        "  p99 during (worst slice) / before: {}",
        spread(&|r| r.during.p99.as_secs_f64() / r.before.p99.as_secs_f64())
    );
    println!(
        "  failed requests during the update: {} (total {}), before: {}",
        spread(&|r| r.during.errors as f64),
        runs.iter().map(|r| r.during.errors).sum::<u64>(),
        runs.iter().map(|r| r.before.errors).sum::<u64>(),
    );
    println!(
        "  update time / swarm's bound: {}",
        spread(&|r| r.took.as_secs_f64() / r.bound.as_secs_f64())
    );
    println!(
        "  update time s: {}; wrk slices per update: {}",
        spread(&|r| r.took.as_secs_f64()),
        spread(&|r| r.slices as f64)
    );
}
