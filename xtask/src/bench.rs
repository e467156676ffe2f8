//! `cargo xtask bench …`: figures measured on a lab of release binaries,
//! each printed beside a baseline measured in the same run.

use std::{
    io::Write,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_api::cluster::v1::{
    CreateSecretRequest, ListNodesRequest, NodeRole, NodeStatus, NodeSummary,
    control_client::ControlClient,
};
use shoal_lab::{Formation, Lab};
use tonic::transport::Channel;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Raft on 3 managers: committed writes/s and commit latency at 1 and 64
    /// concurrent clients, then leader-failover time over repeated kills.
    Raft {
        /// Seconds of writes per concurrency level.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Leader kills for the failover figure.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
    },
    /// Gossip on 7946: time until every node knows a new endpoint, and until
    /// a dead node's endpoints are gone from all others, at N nodes.
    Gossip {
        #[arg(long, value_delimiter = ',', default_value = "5,20")]
        nodes: Vec<usize>,
        /// Publications and kills measured per cluster size.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The routing mesh: wrk through a published port (local and remote
    /// backend) against HAProxy in TCP mode and against the task directly,
    /// keep-alive requests/s with p50/p99, and new connections/s.
    Mesh {
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// What the task under test runs from.
        #[arg(long, value_enum, default_value_t = Endpoints::Host)]
        image: Endpoints,
    },
    /// Overlay task to task across nodes: iperf3 TCP (1 and 2 streams) and
    /// 1-byte request/response, against kernel VXLAN + bridge made by hand.
    Overlay {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// What the tasks under test run from.
        #[arg(long, value_enum, default_value_t = Endpoints::Host)]
        image: Endpoints,
    },
    /// Tasks on 5 nodes: time to 100 running (busybox image, `host`) against
    /// `runc run -d` by hand, and time to spread a ~50 MB image from one
    /// node to the other four against one plain TCP copy of its bytes.
    Tasks {
        /// Repetitions of each measurement.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Tasks per task-start measurement.
        #[arg(long, default_value_t = 100)]
        replicas: usize,
        /// MiB of pseudo-random bytes added to busybox for the spread image.
        #[arg(long, default_value_t = 50)]
        spread_mib: usize,
        /// Which measurements.
        #[arg(long, value_enum, default_value_t = crate::bench_tasks::Part::All)]
        part: crate::bench_tasks::Part,
    },
    /// A rolling update (`service update --force`) of a published service
    /// under wrk: requests/s and p99 during it against before it, failed
    /// requests, and its time against swarm's bound.
    Update {
        #[arg(long, default_value_t = 10)]
        replicas: usize,
        /// Updates measured.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        parallelism: u64,
        /// Milliseconds between slots.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Milliseconds a new task is watched for failure (swarm: 5 s).
        #[arg(long, default_value_t = 5000)]
        monitor_ms: u64,
        /// stop-first or start-first.
        #[arg(long, default_value = "start-first")]
        order: String,
    },
}

/// Where a benchmark's tasks take their binaries from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoints {
    /// `host`: the node's filesystem, read-only (the binaries of this build).
    Host,
    /// The lab tools image (`shoal.local/lab-tools:latest`), loaded on n1
    /// and fetched by the other nodes.
    LabTools,
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let runtime = crate::root_runtime("benchmarks run in a lab of network namespaces")?;
    if let BenchCmd::Gossip { nodes, rounds } = cmd {
        // Gossip runs in this process (one member per node namespace).
        return runtime.block_on(crate::bench_gossip::run(&nodes, rounds));
    }
    let bin = crate::setup::prepare_release_binaries()?;
    match cmd {
        BenchCmd::Raft {
            seconds,
            kills,
            clients,
        } => runtime.block_on(raft(&bin, Duration::from_secs(seconds), kills, &clients)),
        BenchCmd::Mesh {
            seconds,
            connections,
            image,
        } => runtime.block_on(crate::bench_mesh::run(&bin, seconds, connections, image)),
        BenchCmd::Overlay { seconds, image } => {
            runtime.block_on(crate::bench_overlay::run(&bin, seconds, image))
        }
        BenchCmd::Tasks {
            runs,
            replicas,
            spread_mib,
            part,
        } => runtime.block_on(crate::bench_tasks::run(
            &bin, runs, replicas, spread_mib, part,
        )),
        BenchCmd::Update {
            replicas,
            runs,
            connections,
            parallelism,
            delay_ms,
            monitor_ms,
            order,
        } => runtime.block_on(crate::bench_update::run(
            &bin,
            replicas,
            runs,
            connections,
            crate::bench_update::Policy {
                parallelism,
                delay: Duration::from_millis(delay_ms),
                monitor: Duration::from_millis(monitor_ms),
                order: &order,
            },
        )),
        BenchCmd::Gossip { .. } => Ok(()),
    }
}

/// p-th percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest sample with at least p% at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The floor under any Raft commit: one small write made durable with
/// fdatasync on the same filesystem as the managers' state.
fn fsync_baseline(dir: &Path, run_for: Duration) -> anyhow::Result<Vec<Duration>> {
    let path = dir.join("fsync-baseline");
    let mut f = std::fs::File::create(&path)?;
    let mut samples = Vec::new();
    let end = Instant::now() + run_for;
    while Instant::now() < end {
        let t = Instant::now();
        f.write_all(&[0u8; 256])?;
        f.sync_data()?;
        samples.push(t.elapsed());
    }
    std::fs::remove_file(&path)?;
    samples.sort();
    Ok(samples)
}

pub async fn control(lab: &Lab, k: usize) -> anyhow::Result<ControlClient<Channel>> {
    let ch = shoal_api::unix_channel(lab.node(k).socket())
        .await
        .with_context(|| format!("dialling n{k}"))?;
    Ok(ControlClient::new(ch))
}

/// `shoal ARGS` of this build on node `k`; its stdout, or its stderr as the
/// error.
pub fn run_shoal(lab: &Lab, bin: &Path, k: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = lab.command(k, bin.join("shoal")).args(args).output()?;
    ensure!(
        out.status.success(),
        "n{k}: shoal {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `shoal ARGS` of this build on node `k` with `input` on its stdin (an
/// image archive for `image load`); its stdout.
pub fn run_shoal_stdin(
    lab: &Lab,
    bin: &Path,
    k: usize,
    args: &[&str],
    input: &[u8],
) -> anyhow::Result<String> {
    let mut child = lab
        .command(k, bin.join("shoal"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Written from another thread: the CLI may fill its stdout pipe
    // before it has read all of its stdin.
    let mut stdin = child.stdin.take().context("shoal's stdin")?;
    let out = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(input));
        let out = child.wait_with_output();
        (writer.join(), out)
    });
    let out = match out {
        (Ok(written), out) => {
            let out = out?;
            written.with_context(|| format!("n{k}: writing to shoal {}", args.join(" ")))?;
            out
        }
        (Err(_), _) => anyhow::bail!("n{k}: the thread writing to shoal panicked"),
    };
    ensure!(
        out.status.success(),
        "n{k}: shoal {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The lab tools image (`/bin/lab-http`, `/bin/lab-echo`, `/bin/iperf3`
/// with their libraries) made from this build's binaries in `bin`, loaded
/// on node `k`; the reference services name it by.
pub fn load_lab_tools(lab: &Lab, bin: &Path, k: usize) -> anyhow::Result<&'static str> {
    let paths = [
        bin.join("lab-http"),
        bin.join("lab-echo"),
        Path::new("/usr/bin/iperf3").to_path_buf(),
    ];
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let mut archive = Vec::new();
    shoal_image::fixtures::lab_tools(&refs)
        .write_docker_archive(&mut archive)
        .context("building the lab tools image")?;
    run_shoal_stdin(lab, bin, k, &["image", "load"], &archive)?;
    Ok(shoal_image::fixtures::LAB_TOOLS_REFERENCE)
}

/// Median and range of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let (min, max) = (*s.first()?, *s.last()?);
        let mid = s.len() / 2;
        let median = if s.len().is_multiple_of(2) {
            (s[mid - 1] + s[mid]) / 2.0
        } else {
            s[mid]
        };
        Some(Spread { median, min, max })
    }
}

impl std::fmt::Display for Spread {
    /// `median [min–max]`, with `f.precision()` decimals (2 if unset).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(2);
        write!(f, "{:.p$} [{:.p$}–{:.p$}]", self.median, self.min, self.max)
    }
}

/// `swarm init` on n1 (1 s heartbeats), n2..=`managers` joined as managers
/// and the other nodes as workers, by the release build in `bin`.
/// A 3-node lab of this build's release `shoald` with the client, formed
/// into a swarm with one manager.
pub async fn three_nodes(name: &str, bin: &Path) -> anyhow::Result<Lab> {
    let lab = Lab::builder(name)
        .shoald(bin.join("shoald"))
        .nodes(3)
        .client(true)
        .start()
        .await?;
    form_swarm(&lab, bin, 1)?;
    Ok(lab)
}

pub fn form_swarm(lab: &Lab, bin: &Path, managers: usize) -> anyhow::Result<()> {
    let swarm = Formation::fast(managers, lab.nodes().len());
    lab.form_swarm_with(swarm, |k, args| run_shoal(lab, bin, k, args))?;
    Ok(())
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
async fn settled_leader(lab: &Lab, within: Duration) -> anyhow::Result<usize> {
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

async fn raft(bin: &Path, run_for: Duration, kills: usize, levels: &[usize]) -> anyhow::Result<()> {
    let lab = Lab::builder("bench-raft")
        .shoald(bin.join("shoald"))
        .nodes(3)
        .start()
        .await?;
    form_swarm(&lab, bin, lab.nodes().len())?;
    settled_leader(&lab, Duration::from_secs(20)).await?;

    let base = fsync_baseline(lab.node(1).state_dir(), Duration::from_secs(2))?;
    let base_p50 = pct(&base, 50.0);
    println!(
        "\nbaseline: fdatasync of 256 B on the managers' filesystem: p50 {}, p99 {} ({} samples)",
        ms(base_p50),
        ms(pct(&base, 99.0)),
        base.len()
    );
    println!("\nRaft commits on 3 managers (each a new 64 B secret, through any manager):");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>14}",
        "clients", "writes/s", "p50", "p99", "errors", "p50/fsync p50"
    );
    for &clients in levels {
        let (errors, samples) = load(&lab, clients, run_for, &format!("c{clients}")).await?;
        let p50 = pct(&samples, 50.0);
        println!(
            "{clients:>8} {:>12.0} {:>12} {:>12} {errors:>10} {:>13.1}x",
            samples.len() as f64 / run_for.as_secs_f64(),
            ms(p50),
            ms(pct(&samples, 99.0)),
            p50.as_secs_f64() / base_p50.as_secs_f64().max(1e-9),
        );
    }

    println!("\nLeader failover: SIGKILL the leader, write through a survivor every 10 ms:");
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = settled_leader(&lab, Duration::from_secs(60)).await?;
        let survivor = if leader == 1 { 2 } else { 1 };
        let mut api = control(&lab, survivor).await?;
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
        println!(
            "  kill {:>2}: n{leader} → first write after {}",
            round + 1,
            ms(took)
        );
        times.push(took);
        lab.start(leader).await?;
    }
    times.sort();
    if let (Some(max), false) = (times.last(), times.is_empty()) {
        println!(
            "failover over {} kills: median {}, max {} (election timeout 1-2 s)",
            times.len(),
            ms(pct(&times, 50.0)),
            ms(*max)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&s, 50.0), Duration::from_millis(50));
        assert_eq!(pct(&s, 99.0), Duration::from_millis(99));
        assert_eq!(pct(&s, 100.0), Duration::from_millis(100));
        assert_eq!(pct(&[], 50.0), Duration::ZERO);
        assert_eq!(pct(&s[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn medians_and_ranges() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!(
            odd,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let even = Spread::of(&[4.0, 1.0, 2.0, 3.0]).expect("samples");
        assert_eq!(even.median, 2.5);
        assert_eq!(format!("{even:.1}"), "2.5 [1.0–4.0]");
        assert!(Spread::of(&[]).is_none());
    }
}
