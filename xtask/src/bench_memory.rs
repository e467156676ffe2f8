//! `cargo xtask bench memory`: what `shoald` holds in memory as a manager
//! and as a worker, idle and with a large cluster state, and how fast the
//! control plane moves at scale, on one lab of release binaries:
//! 3 managers + 2 workers, plus synthetic nodes in the client namespace
//! (`shoal_lab::synthetic`: real joins and sessions, no tasks run).
//!
//! 1. Idle: the five daemons' VmRSS, PSS (`smaps_rollup`) and VmHWM.
//! 2. Scale: `service create` of N `host` replicas on the five nodes until
//!    all RUNNING, repeated (bench tasks' measurement, on this lab).
//! 3. The five real nodes drained, S synthetic nodes joined; then the time
//!    for a new global service's tasks to reach every synthetic node's
//!    assignment stream, on the near-empty state.
//! 4. Large state: K services × R replicas created through the Control API
//!    with bounded concurrency, scheduled onto the synthetic nodes (they
//!    stay ASSIGNED); the propagation measured again; memory sampled after
//!    the state settles, with the mappings that hold it and the size of
//!    the managers' state directories.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use shoal_api::cluster::v1::{
    ContainerSpec, CreateServiceRequest, ListNodesRequest, ListTasksRequest, NodeStatus,
    ServiceMode, ServiceRef, TaskState,
};
use shoal_bench::{BenchResult, Metric, RunMeta, ScenarioResult, meta, stats::DEFAULT_SPREAD};
use shoal_lab::{
    Formation, Lab,
    synthetic::{SyntheticNodes, SyntheticSpec},
};

use crate::bench::{Spread, control, millis, run_shoal};

const MANAGERS: usize = 3;
const NODES: usize = 5;
/// Between the last change and a memory sample: the reconcilers and the
/// streams are quiet by then.
const SETTLE: Duration = Duration::from_secs(15);

/// What `bench memory` is asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Params {
    /// Services created for the large state.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Replicas per service.
    #[arg(long, default_value_t = 10)]
    pub replicas: u64,
    /// Synthetic nodes.
    #[arg(long, default_value_t = 50)]
    pub synthetic: usize,
    /// Service creations in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Repetitions of the replicas-to-RUNNING measurement.
    #[arg(long, default_value_t = 3)]
    pub scale_runs: usize,
    /// Replicas in the replicas-to-RUNNING measurement.
    #[arg(long, default_value_t = 100)]
    pub scale_replicas: usize,
    /// Assignment changes timed, on the empty and on the large state.
    #[arg(long, default_value_t = 3)]
    pub propagation_runs: usize,
    /// Where the result file (shoal-bench's schema) is written.
    #[arg(long, default_value = "target/bench/memory.json")]
    pub json: PathBuf,
}

pub async fn run(bin: &Path, p: &Params) -> anyhow::Result<()> {
    ensure!(
        p.services > 0 && p.replicas > 0 && p.synthetic > 0 && p.concurrency > 0,
        "--services, --replicas, --synthetic and --concurrency must be > 0"
    );
    let started_unix = crate::bench::unix_now();
    let lab = Lab::builder("bench-mem")
        .shoald(bin.join("shoald"))
        .nodes(NODES)
        .client(true)
        .start()
        .await?;
    // The default heartbeat, as a cluster would run.
    lab.form_swarm_with(Formation::plain(MANAGERS, NODES), |k, args| {
        run_shoal(&lab, bin, k, args)
    })?;
    ready_nodes(&lab, NODES).await?;
    let mut scenarios = Vec::new();

    tokio::time::sleep(SETTLE).await;
    let idle = sample_all(&lab)?;
    report_memory("idle (3 managers + 2 workers, no services)", &idle);
    scenarios.push(memory_scenario("memory-idle", &idle));

    let mut took = Vec::new();
    println!(
        "\nscale: service create of {} `host` replicas on {NODES} nodes until all RUNNING:",
        p.scale_replicas
    );
    for run in 0..p.scale_runs {
        let s = crate::bench_tasks::timed_service(
            &lab,
            bin,
            &format!("scale{run}"),
            &["--replicas", &p.scale_replicas.to_string()],
            &["host", "sleep", crate::bench_tasks::SLEEP_FOR],
            p.scale_replicas,
        )
        .await?;
        println!(
            "  run {}: {:.2} s ({} failed on the way; removed in {:.2} s)",
            run + 1,
            s.took.as_secs_f64(),
            s.errors,
            s.removed.as_secs_f64()
        );
        took.push(s.took.as_secs_f64());
    }
    if let Some(s) = Spread::of(&took) {
        println!("  to all RUNNING: median [min–max] {s:.2} s (goal ≤ 5 s)");
    }
    scenarios.push(scenario(
        &format!("create-{}-replicas-5-nodes", p.scale_replicas),
        vec![Metric::new(
            "to_all_running",
            "s",
            took,
            vec![],
            Some(DEFAULT_SPREAD),
        )],
    ));

    for k in 1..=NODES {
        run_shoal(
            &lab,
            bin,
            1,
            &[
                "node",
                "update",
                "--availability",
                "drain",
                &format!("n{k}"),
            ],
        )?;
    }
    let client = lab.client_netns().context("the lab's client namespace")?;
    let t = Instant::now();
    let synth = SyntheticNodes::start(SyntheticSpec {
        netns: client,
        managers: (1..=MANAGERS).map(|k| lab.cluster_addr(k)).collect(),
        token: run_shoal(&lab, bin, 1, &["swarm", "join-token", "-q", "worker"])?
            .trim()
            .to_owned(),
        count: p.synthetic,
        prefix: "synth".into(),
        advertise: lab.client_addr(),
    })
    .await?;
    let joined_in = t.elapsed();
    let joins: Vec<f64> = synth.join_times().iter().map(|d| millis(*d)).collect();
    let join_spread = Spread::of(&joins).context("no joins")?;
    println!(
        "\n{} synthetic nodes joined (token + CSR → certificate, 8 at a time) and \
         streaming in {:.1} s; one join {join_spread:.1} ms",
        p.synthetic,
        joined_in.as_secs_f64()
    );
    ready_nodes(&lab, NODES + p.synthetic).await?;
    scenarios.push(scenario(
        "synthetic-join",
        vec![
            Metric::new("join", "ms", joins, vec![], None),
            one("all_joined_and_streaming", "s", joined_in.as_secs_f64()),
        ],
    ));

    let empty = propagation(&lab, &synth, p.propagation_runs, "prop-empty").await?;
    scenarios.push(propagation_scenario(
        &format!("assignment-to-{}-nodes-empty-state", p.synthetic),
        &empty,
    ));
    tokio::time::sleep(SETTLE).await;
    let joined = sample_all(&lab)?;
    report_memory(
        &format!("{} synthetic nodes, no services", p.synthetic),
        &joined,
    );
    scenarios.push(memory_scenario("memory-synthetic-nodes", &joined));

    let (created_in, errors) = create_services(&lab, p).await?;
    let total = p.services * p.replicas as usize;
    let assigned = until_assigned(&lab, total).await;
    println!(
        "\n{} services × {} replicas created in {:.1} s ({:.0}/s, {} concurrent, {} errors)",
        p.services,
        p.replicas,
        created_in.as_secs_f64(),
        p.services as f64 / created_in.as_secs_f64(),
        p.concurrency,
        errors.len(),
    );
    let per_node: Vec<usize> = synth.received().iter().map(|r| r.tasks).collect();
    let set_bytes: Vec<usize> = synth.received().iter().map(|r| r.bytes).collect();
    println!(
        "  tasks per synthetic node: min {} max {}; assignment set {} to {} bytes",
        per_node.iter().min().unwrap_or(&0),
        per_node.iter().max().unwrap_or(&0),
        set_bytes.iter().min().unwrap_or(&0),
        set_bytes.iter().max().unwrap_or(&0)
    );
    let mut created = vec![
        one(
            "services_per_s",
            "1/s",
            p.services as f64 / created_in.as_secs_f64(),
        ),
        Metric::new(
            "errors",
            "requests",
            vec![errors.len() as f64],
            errors,
            None,
        ),
    ];
    let mut notes = Vec::new();
    match &assigned {
        Ok((took, _)) => {
            println!(
                "  all {total} tasks ASSIGNED {:.1} s after the last create",
                took.as_secs_f64()
            );
            created.push(one("to_all_assigned", "s", took.as_secs_f64()));
        }
        Err(stuck) => {
            // Still measured: the memory of the state the cluster reached.
            println!("  NOT all assigned: {stuck}");
            notes.push(format!("large state not reached: {stuck}"));
            created.push(Metric::new(
                "tasks_assigned",
                "tasks",
                vec![stuck.assigned as f64],
                vec![stuck.to_string()],
                None,
            ));
        }
    }
    scenarios.push(scenario("create-services", created));

    if assigned.is_ok() {
        let large = propagation(&lab, &synth, p.propagation_runs, "prop-large").await?;
        scenarios.push(propagation_scenario(
            &format!("assignment-to-{}-nodes-large-state", p.synthetic),
            &large,
        ));
    }
    tokio::time::sleep(SETTLE).await;
    let full = sample_all(&lab)?;
    report_memory(
        &format!(
            "large state: {} services × {} replicas on {} synthetic nodes",
            p.services, p.replicas, p.synthetic
        ),
        &full,
    );
    println!("\nwhere the largest manager and worker hold it (Rss by mapping, top 5):");
    for k in [largest(&full, true), largest(&full, false)] {
        let pid = lab.node(k).pid().context("a pid")?;
        println!("  n{k}:");
        for (name, kib) in mappings(pid)?.into_iter().take(5) {
            println!("    {:>9.1} MiB  {name}", kib as f64 / 1024.0);
        }
    }
    scenarios.push(memory_scenario("memory-large-state", &full));

    drop(synth);
    write_result(p, started_unix, scenarios, notes)?;
    lab.down()?;
    Ok(())
}

// ---------------------------------------------------------------- memory

/// One daemon's memory, KiB.
#[derive(Debug, Clone)]
struct Mem {
    node: usize,
    manager: bool,
    rss: u64,
    hwm: u64,
    pss: Option<u64>,
    anon: u64,
    threads: u64,
    /// Bytes under the node's state directory.
    state_bytes: u64,
}

fn sample_all(lab: &Lab) -> anyhow::Result<Vec<Mem>> {
    (1..=NODES)
        .map(|k| {
            let pid = lab.node(k).pid().with_context(|| format!("n{k}'s pid"))?;
            let mut m = sample(pid)?;
            m.node = k;
            m.manager = k <= MANAGERS;
            m.state_bytes = shoal_lab::files_under(lab.node(k).state_dir())?
                .iter()
                .filter_map(|f| std::fs::symlink_metadata(f).ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            Ok(m)
        })
        .collect()
}

fn sample(pid: u32) -> anyhow::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        kib_field(&status, name).with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Absent on kernels before 4.14.
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kib_field(&s, "Pss:"));
    Ok(Mem {
        node: 0,
        manager: false,
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        pss,
        anon: field("RssAnon:")?,
        threads,
        state_bytes: 0,
    })
}

/// `Name:   1234 kB` → 1234.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Rss (KiB) by mapping name from `/proc/PID/smaps`, largest first;
/// unnamed anonymous mappings together as `[anon]`.
fn mappings(pid: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("/proc/{pid}/smaps"))?;
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // start-end perms offset dev inode [path]
            current = words.nth(4).unwrap_or("[anon]").to_owned();
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by.entry(current.clone()).or_default() += kib;
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    Ok(v)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn largest(mems: &[Mem], manager: bool) -> usize {
    mems.iter()
        .filter(|m| m.manager == manager)
        .max_by_key(|m| m.rss)
        .map_or(1, |m| m.node)
}

fn report_memory(what: &str, mems: &[Mem]) {
    println!("\nshoald memory, {what}:");
    println!(
        "{:>4} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "node", "role", "VmRSS MiB", "Pss MiB", "VmHWM MiB", "anon MiB", "threads", "state MiB"
    );
    for m in mems {
        println!(
            "{:>4} {:>8} {:>10.1} {:>10} {:>10.1} {:>10.1} {:>8} {:>12.2}",
            format!("n{}", m.node),
            if m.manager { "manager" } else { "worker" },
            mib(m.rss),
            m.pss.map_or("n/a".into(), |p| format!("{:.1}", mib(p))),
            mib(m.hwm),
            mib(m.anon),
            m.threads,
            m.state_bytes as f64 / (1 << 20) as f64
        );
    }
}

fn memory_scenario(name: &str, mems: &[Mem]) -> ScenarioResult {
    let mut metrics = Vec::new();
    for (role, manager) in [("manager", true), ("worker", false)] {
        let of = |f: &dyn Fn(&Mem) -> f64| -> Vec<f64> {
            mems.iter()
                .filter(|m| m.manager == manager)
                .map(f)
                .collect()
        };
        // One sample per daemon of the role: a spread between daemons, not
        // between repeats, so never flagged.
        metrics.push(Metric::new(
            &format!("{role}_rss"),
            "MiB",
            of(&|m| mib(m.rss)),
            vec![],
            None,
        ));
        metrics.push(Metric::new(
            &format!("{role}_pss"),
            "MiB",
            of(&|m| m.pss.map_or(f64::NAN, mib)),
            vec![],
            None,
        ));
        metrics.push(Metric::new(
            &format!("{role}_hwm"),
            "MiB",
            of(&|m| mib(m.hwm)),
            vec![],
            None,
        ));
        metrics.push(Metric::new(
            &format!("{role}_state_dir"),
            "MiB",
            of(&|m| m.state_bytes as f64 / (1 << 20) as f64),
            vec![],
            None,
        ));
    }
    scenario(name, metrics)
}

// ---------------------------------------------------------------- the control plane

/// Until `want` nodes are ready (Control API on n1).
async fn ready_nodes(lab: &Lab, want: usize) -> anyhow::Result<()> {
    let mut api = control(lab, 1).await?;
    let t = Instant::now();
    loop {
        let nodes = api
            .list_nodes(ListNodesRequest::default())
            .await?
            .into_inner()
            .nodes;
        let ready = nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Ready as i32)
            .count();
        if ready >= want {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("{ready}/{want} nodes ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn host_service(name: &str, mode: ServiceMode, replicas: u64) -> CreateServiceRequest {
    CreateServiceRequest {
        name: name.to_owned(),
        mode: mode.into(),
        replicas,
        args: vec!["sleep".into(), crate::bench_tasks::SLEEP_FOR.into()],
        container: Some(ContainerSpec {
            image: "host".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `p.services` replicated services through n1's Control API, at most
/// `p.concurrency` in flight; how long it took and the errors.
async fn create_services(lab: &Lab, p: &Params) -> anyhow::Result<(Duration, Vec<String>)> {
    let api = control(lab, 1).await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..p.concurrency {
        let (mut api, next, services, replicas) =
            (api.clone(), next.clone(), p.services, p.replicas);
        workers.spawn(async move {
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= services {
                    return errors;
                }
                let req = host_service(&format!("s{i:04}"), ServiceMode::Replicated, replicas);
                if let Err(s) = api.create_service(req).await {
                    errors.push(format!("s{i:04}: {}", s.message()));
                }
            }
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = workers.join_next().await {
        errors.extend(r?);
    }
    Ok((t.elapsed(), errors))
}

/// How long the large state may take to be scheduled before the bench
/// measures the state it reached instead.
const ASSIGN_WITHIN: Duration = Duration::from_secs(180);

/// Tasks short of ASSIGNED when [`ASSIGN_WITHIN`] ran out.
#[derive(Debug)]
struct Stuck {
    assigned: usize,
    want: usize,
    tasks: usize,
    /// The last refusal of the task list, if any: a refused answer must
    /// not pass for "not assigned yet".
    error: Option<String>,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} tasks assigned ({} tasks exist) {} s after the last create",
            self.assigned,
            self.want,
            self.tasks,
            ASSIGN_WITHIN.as_secs()
        )?;
        match &self.error {
            Some(e) => write!(f, "; the task list last failed: {e}"),
            None => Ok(()),
        }
    }
}

/// Until `want` tasks are ASSIGNED (or further): how long, and how many.
async fn until_assigned(lab: &Lab, want: usize) -> Result<(Duration, usize), Stuck> {
    let t = Instant::now();
    let mut last = Stuck {
        assigned: 0,
        want,
        tasks: 0,
        error: None,
    };
    while t.elapsed() < ASSIGN_WITHIN {
        // A manager that cannot answer now may later: only the deadline
        // ends the wait.
        let listed = match control(lab, 1).await {
            Ok(mut api) => api
                .list_tasks(ListTasksRequest::default())
                .await
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(format!("{e:#}")),
        };
        match listed {
            Err(e) => last.error = Some(e),
            Ok(r) => {
                let tasks = r.into_inner().tasks;
                let assigned = tasks
                    .iter()
                    .filter(|t| {
                        t.desired_state == TaskState::Running as i32
                            && (TaskState::Assigned as i32..=TaskState::Running as i32)
                                .contains(&t.state)
                    })
                    .count();
                last = Stuck {
                    assigned,
                    want,
                    tasks: tasks.len(),
                    error: None,
                };
                if assigned >= want {
                    return Ok((t.elapsed(), assigned));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(last)
}

/// One assignment change reaching every synthetic node.
#[derive(Debug, Clone, Copy)]
struct Reach {
    /// CreateService call until its reply (committed and applied).
    commit: Duration,
    /// The reply until the last node's stream delivered the task.
    after_commit: Duration,
    /// The reply until the median node had it.
    median_after_commit: Duration,
}

/// `runs` global services created one after another; each timed until its
/// task reached every synthetic node's stream, then removed.
async fn propagation(
    lab: &Lab,
    synth: &SyntheticNodes,
    runs: usize,
    prefix: &str,
) -> anyhow::Result<Vec<Reach>> {
    let mut api = control(lab, 1).await?;
    let mut out = Vec::new();
    println!(
        "\nassignment change to {} synthetic nodes ({prefix}): a new global service, \
         from its commit until every node's stream delivered its task:",
        synth.ids().len()
    );
    for run in 0..runs {
        let name = format!("{prefix}{run}");
        let sent = Instant::now();
        api.create_service(host_service(&name, ServiceMode::Global, 0))
            .await
            .with_context(|| format!("creating {name}"))?;
        let committed = Instant::now();
        let seen = loop {
            let seen = synth.first_seen(&name);
            if seen.iter().all(Option::is_some) {
                break seen.into_iter().flatten().collect::<Vec<_>>();
            }
            if sent.elapsed() > Duration::from_secs(120) {
                let got = seen.iter().filter(|s| s.is_some()).count();
                bail!(
                    "{name}: {got}/{} nodes had its task after 120 s",
                    seen.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut after: Vec<Duration> = seen
            .iter()
            .map(|s| s.saturating_duration_since(committed))
            .collect();
        after.sort();
        let r = Reach {
            commit: committed - sent,
            after_commit: *after.last().unwrap_or(&Duration::ZERO),
            median_after_commit: after[after.len() / 2],
        };
        println!(
            "  run {}: commit {:.1} ms, then last node {:.1} ms (median node {:.1} ms)",
            run + 1,
            millis(r.commit),
            millis(r.after_commit),
            millis(r.median_after_commit)
        );
        out.push(r);
        api.remove_service(ServiceRef {
            service: name.clone(),
        })
        .await
        .with_context(|| format!("removing {name}"))?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(out)
}

fn propagation_scenario(name: &str, reach: &[Reach]) -> ScenarioResult {
    let of = |f: fn(&Reach) -> Duration| reach.iter().map(|r| millis(f(r))).collect();
    scenario(
        name,
        vec![
            Metric::new("commit", "ms", of(|r| r.commit), vec![], None),
            Metric::new(
                "commit_to_last_node",
                "ms",
                of(|r| r.after_commit),
                vec![],
                Some(DEFAULT_SPREAD),
            ),
            Metric::new(
                "commit_to_median_node",
                "ms",
                of(|r| r.median_after_commit),
                vec![],
                None,
            ),
        ],
    )
}

// ---------------------------------------------------------------- the result file

fn one(name: &str, unit: &str, value: f64) -> Metric {
    Metric::new(name, unit, vec![value], vec![], None)
}

fn scenario(name: &str, metrics: Vec<Metric>) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        metrics,
        latency: Vec::new(),
    }
}

fn write_result(
    p: &Params,
    started_unix: u64,
    scenarios: Vec<ScenarioResult>,
    mut found: Vec<String>,
) -> anyhow::Result<()> {
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
            nodes: NODES + p.synthetic,
            repeat: u32::try_from(p.scale_runs).unwrap_or(u32::MAX),
            duration_secs: 0,
            started_unix,
            spread_threshold: DEFAULT_SPREAD,
            order: scenarios.iter().map(|s| s.name.clone()).collect(),
            commands: vec![format!(
                "cargo xtask bench memory --services {} --replicas {} --synthetic {} \
                 --concurrency {} --scale-runs {} --scale-replicas {} --propagation-runs {}",
                p.services,
                p.replicas,
                p.synthetic,
                p.concurrency,
                p.scale_runs,
                p.scale_replicas,
                p.propagation_runs
            )],
            notes: vec![
                "Lab namespaces on one host: n1-n3 managers, n4-n5 workers (release shoald, \
                 default 5 s heartbeat); synthetic nodes are in-process clients in the \
                 client namespace that join with a worker token + CSR, heartbeat and hold \
                 their Assignments stream, spread over the three managers, and never run \
                 or report tasks (they stay ASSIGNED)."
                    .into(),
                "memory-*: one sample per daemon of the role (VmRSS, Pss from \
                 smaps_rollup, VmHWM from /proc/PID/status), 15 s after the last change; \
                 state_dir is every file under the node's state directory (Raft log, \
                 snapshot, keys)."
                    .into(),
                "create-N-replicas-5-nodes: `shoal service create --detach --replicas N \
                 host sleep 100000` on all five (not yet drained) nodes until N RUNNING \
                 (Control API polled every 100 ms), then removed."
                    .into(),
                "assignment-to-S-nodes-*: CreateService of a global `host` service on n1; \
                 commit = the call until its reply; commit_to_last_node = the reply until \
                 the last synthetic node's stream delivered its task; the five real nodes \
                 are drained so only the synthetic nodes get one."
                    .into(),
            ]
            .into_iter()
            .chain(found.drain(..))
            .collect(),
            streams: 0,
            loaders: 0,
            connections: p.concurrency,
            cpu_scope: "missing: not measured by bench memory".into(),
        },
        scenarios,
    };
    crate::bench::write_result(&p.json, &result)
}
