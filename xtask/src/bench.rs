//! `cargo xtask bench …`: figures measured on a lab of release binaries,
//! each printed beside a baseline measured in the same run.

use std::{
    io::Write,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_api::cluster::v1::control_client::ControlClient;
use shoal_lab::{Formation, Lab};
use tonic::transport::Channel;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Raft on 3 managers: committed writes/s and commit latency at 1 to
    /// 256 concurrent clients, then the leader-failover distribution over
    /// repeated kills; the figures also go to a JSON result file.
    Raft {
        /// Seconds of writes per concurrency level.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Leader kills for the failover figure.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
        clients: Vec<usize>,
        /// Where the result file (shoal-bench's schema) is written.
        #[arg(long, default_value = "target/bench/raft.json")]
        json: std::path::PathBuf,
    },
    /// A worker lost under load: its underlay cut while the lab's client
    /// opens a connection every 10 ms through a third node; the time from
    /// each cut to the last failed request, over repeated cuts, against
    /// daemons that drop a node only once gossip declares it down, in the
    /// same run; the figures also go to a JSON result file.
    Failover {
        /// Cuts (the two workers in turn).
        #[arg(long, default_value_t = 10)]
        cuts: usize,
        /// Seconds each cut lasts: past gossip's 4.8 s from suspected to
        /// down (which the baseline waits for), below the managers' 15 s
        /// (3 missed 5 s heartbeats), so the lost node's task stays where
        /// it is for the next round.
        #[arg(long, default_value_t = 8)]
        hold: u64,
        /// Where the result file (shoal-bench's schema) is written.
        #[arg(long, default_value = "target/bench/failover.json")]
        json: std::path::PathBuf,
    },
    /// `shoald`'s memory as manager and worker, idle and with a large state
    /// (services × replicas scheduled onto synthetic nodes that join for
    /// real but run nothing), and the control plane at scale: N replicas on
    /// 5 nodes to RUNNING, and one assignment change reaching every
    /// synthetic node; the figures also go to a JSON result file.
    Memory {
        #[command(flatten)]
        params: crate::bench_memory::Params,
    },
    /// The WireGuard overlay against the plain overlay and against
    /// boringtun alone joining two namespaces (its ceiling here), in one
    /// run: throughput and 1-byte round trips; a JSON result file.
    Wireguard {
        #[command(flatten)]
        params: crate::bench_wireguard::Params,
    },
    /// Gossip on 7946: time until every node knows a new endpoint, and until
    /// a dead node's endpoints are gone from all others, at N nodes, sealed
    /// (as nodes run) against the same frames unencrypted, in one run; the
    /// figures also go to a JSON result file.
    Gossip {
        #[arg(long, value_delimiter = ',', default_value = "5,20")]
        nodes: Vec<usize>,
        /// Publications and kills measured per run.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Runs per cluster size and framing (each on a fresh lab).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Where the result file (shoal-bench's schema) is written.
        #[arg(long, default_value = "target/bench/gossip.json")]
        json: std::path::PathBuf,
    },
    /// The routing mesh through `shoal bench`: published ports entered on
    /// the server's node and on another, against HAProxy in TCP mode (as
    /// many threads as the loaders) and the servers directly.
    Mesh {
        #[command(flatten)]
        pass: crate::bench_shoal::Pass,
    },
    /// The overlay through `shoal bench`: task to task, through a VIP, the
    /// bare underlay and kernel VXLAN built by hand in the same run.
    Overlay {
        #[command(flatten)]
        pass: crate::bench_shoal::Pass,
    },
    /// Every `shoal bench` scenario in one run (the full matrix).
    Matrix {
        #[command(flatten)]
        pass: crate::bench_shoal::Pass,
    },
    /// New connections through a published port with 10 to 10,000
    /// frontends installed: the frontend table's size must not show.
    Frontends {
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
    /// docs/bench.md from the result files and fragments listed in
    /// docs/bench/manifest.jsonl (plots a result lacks are drawn from it).
    Docs {
        /// Write nothing; fail if docs/bench.md or a plot it links is not
        /// what the generator would write.
        #[arg(long)]
        check: bool,
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

/// Names a directory of release binaries to bench instead of building them.
pub const PREBUILT_ENV: &str = "SHOAL_BENCH_BIN";

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    if let BenchCmd::Docs { check } = cmd {
        // Files only: no root, no lab.
        return crate::bench_docs::run(check);
    }
    let runtime = crate::root_runtime("benchmarks run in a lab of network namespaces")?;
    if let BenchCmd::Gossip {
        nodes,
        rounds,
        repeat,
        json,
    } = cmd
    {
        // Gossip runs in this process (one member per node namespace).
        return runtime.block_on(crate::bench_gossip::run(&nodes, rounds, repeat, &json));
    }
    // A directory of release binaries built beforehand: `cargo xtask`
    // runs cargo with its own package's environment, which some build
    // scripts track, so its release build can redo one made from a shell.
    let bin = match std::env::var_os(PREBUILT_ENV) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => crate::setup::prepare_release_binaries()?,
    };
    match cmd {
        BenchCmd::Failover { cuts, hold, json } => {
            // The lab's helpers run `shoald` and `shoal`: the release build.
            shoal_lab::use_binaries_from(bin.clone());
            runtime.block_on(crate::bench_failover::run(
                cuts,
                Duration::from_secs(hold),
                &json,
            ))
        }
        BenchCmd::Raft {
            seconds,
            kills,
            clients,
            json,
        } => runtime.block_on(crate::bench_raft::run(
            &bin,
            Duration::from_secs(seconds),
            kills,
            &clients,
            &json,
        )),
        BenchCmd::Mesh { pass } => runtime.block_on(crate::bench_shoal::run(
            &bin,
            "mesh",
            crate::bench_shoal::MESH,
            &pass,
        )),
        BenchCmd::Overlay { pass } => runtime.block_on(crate::bench_shoal::run(
            &bin,
            "overlay",
            crate::bench_shoal::OVERLAY,
            &pass,
        )),
        BenchCmd::Matrix { pass } => runtime.block_on(crate::bench_shoal::run(
            &bin,
            "matrix",
            crate::bench_shoal::MATRIX,
            &pass,
        )),
        BenchCmd::Frontends {
            seconds,
            connections,
            image,
        } => runtime.block_on(crate::bench_mesh::frontends(
            &bin,
            seconds,
            connections,
            image,
        )),
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
        BenchCmd::Memory { params } => runtime.block_on(crate::bench_memory::run(&bin, &params)),
        BenchCmd::Wireguard { params } => {
            runtime.block_on(crate::bench_wireguard::run(&bin, &params))
        }
        BenchCmd::Gossip { .. } | BenchCmd::Docs { .. } => Ok(()),
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
    format!("{:.2} ms", millis(d))
}

/// A duration as a metric value in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Unix seconds now: a result file's `started_unix`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs())
}

/// Writes `result` to `json` (its directory made if missing) and says where.
pub fn write_result(json: &Path, result: &shoal_bench::BenchResult) -> anyhow::Result<()> {
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(result)?)?;
    println!("\nresult file: {}", json.display());
    Ok(())
}

/// The floor under any Raft commit: one small write made durable with
/// fdatasync on the same filesystem as the managers' state.
pub fn fsync_baseline(dir: &Path, run_for: Duration) -> anyhow::Result<Vec<Duration>> {
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
    Ok(ControlClient::new(ch).max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES))
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
    run_shoal_stdin(lab, bin, k, &["image", "load"], &lab_tools_archive(bin)?)?;
    Ok(shoal_image::fixtures::LAB_TOOLS_REFERENCE)
}

/// The lab tools image as a `docker save` archive, from `bin`'s lab-http
/// and lab-echo and the host's iperf3 (with their libraries).
pub fn lab_tools_archive(bin: &Path) -> anyhow::Result<Vec<u8>> {
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
    Ok(archive)
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
