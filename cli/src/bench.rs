//! `shoal bench`: measures the cluster's paths with short-lived services
//! from the lab tools image, through the same API connection as every other
//! verb, and removes all it made — at the end, on a failed step, and on
//! Ctrl-C. Repeats run in rounds, each round every scenario once in a
//! shuffled order, so a slow minute of a shared machine does not land on
//! one path only, and each ratio is also taken within each round.

mod crr;
mod ebpf;
mod fixture;
mod http;
mod kvxlan;
mod progress;
mod report;
mod rr;
mod scenario;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use rand::seq::SliceRandom;
use shoal_bench::{
    BenchResult, Histogram, Latency, Metric, RunMeta, ScenarioResult, meta, stats::DEFAULT_SPREAD,
};

use crate::{bench::scenario::Scenario, client, output::Format};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    /// Scenarios to run: overlay, overlay-wireguard, overlay-ipsec (only
    /// when named: it needs ESP in the nodes' kernels), vip, ingress-local,
    /// ingress-remote, underlay, and the baselines kernel-vxlan (built by
    /// hand on the caller's kernel: root, namespace lab), direct,
    /// haproxy-local, haproxy-remote (default: all but overlay-ipsec;
    /// kernel-vxlan only where it can run: it also needs the lab-echo
    /// binary beside shoal or on PATH).
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Measurements per scenario.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// Length of one measurement: seconds, or a duration such as 5s.
    #[arg(long, default_value = "5s")]
    duration: String,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Directory to write result.json and the plots (plot-METRIC.svg/.png) to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail when a metric is flagged (errors, no sample, or a spread over
    /// the threshold).
    #[arg(long)]
    strict: bool,
    /// Parallel TCP streams of the multi-stream throughput measurement
    /// (iperf3 -P); default: the caller's CPUs, 4 if unknown or 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=128))]
    streams: Option<u32>,
    /// Concurrent connections of the connection-rate and HTTP loaders (as
    /// wrk -c), spread over as many threads as the caller has CPUs.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    connections: u32,
    /// Source address of the distinct-tuples connection-rate runs, repeated
    /// for more (each must be an address of the caller's machine); default:
    /// the one the route picks. More addresses give more tuples before one
    /// must wait out TIME_WAIT.
    #[arg(long = "source", value_name = "ADDR")]
    sources: Vec<std::net::Ipv4Addr>,
    /// Weigh throughput by each end's node's CPU (a sampler task on each)
    /// even when every node shares the caller's kernel, where the whole
    /// machine is measured by default; on separate machines it is always
    /// per node.
    #[arg(long)]
    cpu_per_node: bool,
    /// The image holding /bin/iperf3, /bin/lab-echo and /bin/lab-http.
    #[arg(long, default_value = "shoal.local/lab-tools:latest")]
    image: String,
    /// The image HAProxy runs from: `host` runs the nodes' own
    /// /usr/sbin/haproxy; any other runs `haproxy` from its PATH.
    #[arg(long, default_value = "host")]
    haproxy_image: String,
}

#[derive(clap::Subcommand)]
enum BenchCmd {
    /// The change of each metric's median from run A to run B.
    Compare {
        /// result.json of the earlier run.
        a: PathBuf,
        /// result.json of the later run.
        b: PathBuf,
    },
    /// Plots (plot-METRIC.svg/.png) of a result.json, as `--out` writes them.
    Plot {
        result: PathBuf,
        /// Directory to write them to.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `--duration`: whole seconds, 1 or more.
fn parse_secs(s: &str) -> anyhow::Result<u64> {
    let secs = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => crate::parse::parse_duration(s)
            .map_err(|e| anyhow::anyhow!("--duration {s:?}: {e}; give seconds (5) or 5s"))?
            .as_secs(),
    };
    if secs == 0 {
        bail!("--duration {s:?}: at least 1 s is needed for a measurement; give e.g. 2s");
    }
    Ok(secs)
}

pub async fn run(host: &str, a: BenchArgs) -> anyhow::Result<()> {
    match &a.cmd {
        Some(BenchCmd::Compare { a, b }) => {
            let (ra, rb) = (report::load(a)?, report::load(b)?);
            let changes = shoal_bench::compare(&ra, &rb)?;
            print!("{}", report::changes(&changes, &ra, &rb));
            return Ok(());
        }
        Some(BenchCmd::Plot { result, out }) => return report::plots(result, out),
        None => {}
    }
    let scenarios = scenario::parse_list(&a.scenarios)?;
    let secs = parse_secs(&a.duration)?;
    if a.repeat == 0 {
        bail!(
            "--repeat 0: at least one measurement per scenario is needed; give --repeat 1 or more"
        );
    }
    let sources = match a.sources.as_slice() {
        [] => vec![std::net::Ipv4Addr::UNSPECIFIED],
        s => s.to_vec(),
    };
    let opts = scenario::Opts {
        streams: a.streams.unwrap_or_else(default_streams),
        loaders: meta::cpu().1.max(1),
        conns: a.connections as usize,
        budgets: std::sync::Arc::new(crr::Budgets::new(&sources, crr::ephemeral_range()?)),
        cpu: if a.cpu_per_node {
            scenario::CpuScope::PerNode
        } else {
            scenario::CpuScope::Missing("not checked yet".into())
        },
    };
    let mut d = client::connect(host).await?;
    let id = format!("{:08x}", rand::random::<u32>());
    let prefix = format!("shoal-bench-{id}-");
    eprintln!("shoal bench {id}: everything it makes is named {prefix}*");
    let mut fx = fixture::Fixture::new(&d, &prefix, &a.image, &a.haproxy_image);
    // Ctrl-C is raced against the whole run, so setup and measurement stop
    // alike; a second Ctrl-C during the cleanup is swallowed by the same
    // handler, so the cleanup finishes.
    let outcome = tokio::select! {
        r = measure(&mut d, &mut fx, scenarios, a.scenarios.is_empty(), a.repeat, secs, &opts, a.format) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
    };
    if outcome.is_err() {
        eprintln!("shoal bench {id}: stopped; removing {prefix}*");
    }
    let cleaned = fx.remove_all().await;
    let result = match (outcome, cleaned) {
        (Ok(r), Ok(())) => r,
        (Err(e), Ok(())) => return Err(e),
        (Ok(_), Err(c)) => return Err(c),
        (Err(e), Err(c)) => return Err(e.context(format!("and the cleanup failed too: {c:#}"))),
    };
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
        let path = dir.join("result.json");
        std::fs::write(&path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
        // The figures are in result.json whatever happens to the plots: a
        // machine without a font gets a warning, not a failed run.
        match shoal_bench::plot::write_plots(&result, dir) {
            Ok(files) => files
                .iter()
                .for_each(|f| eprintln!("wrote {}", f.display())),
            Err(e) => eprintln!("warning: no plots: {e}"),
        }
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Format::Table => {
            print!("{}", report::table(&result));
            print!(
                "{}",
                shoal_bench::ratio::lines(&shoal_bench::ratio::ratios(&result))
            );
        }
    }
    let flagged = result.flagged();
    if a.strict && !flagged.is_empty() {
        bail!(
            "--strict: flagged: {}; see their errors and spread above, then rerun with a longer \
             --duration or more --repeat on a quieter machine",
            flagged.join(", ")
        );
    }
    Ok(())
}

/// The repeats' order: `repeat` rounds, each every scenario once in its
/// own shuffled order. Each side of a ratio then gets one sample per round
/// (the same-round ratios of `shoal_bench::ratio`), and no scenario gets
/// more of a slow stretch of the machine than one sample per round.
fn rounds<R: rand::Rng + ?Sized>(
    scenarios: &[Scenario],
    repeat: u32,
    rng: &mut R,
) -> Vec<Scenario> {
    let mut order = Vec::with_capacity(scenarios.len() * repeat as usize);
    for _ in 0..repeat {
        let mut round = scenarios.to_vec();
        round.shuffle(rng);
        order.extend(round);
    }
    order
}

/// One metric's values and the errors of the repeats that gave none.
type Samples = (Vec<f64>, Vec<String>);

/// Setup, warm-ups and the repeats in rounds.
#[allow(clippy::too_many_arguments)]
async fn measure(
    d: &mut client::Daemon,
    fx: &mut fixture::Fixture,
    mut scenarios: Vec<Scenario>,
    defaulted: bool,
    repeat: u32,
    secs: u64,
    opts: &scenario::Opts,
    format: crate::output::Format,
) -> anyhow::Result<BenchResult> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let daemon_commit = client::call(&d.host, d.node.info(shoal_api::node::v1::InfoRequest {}))
        .await
        .ok()
        .map(|i| i.commit)
        .filter(|c| !c.is_empty());
    let mut layout = fx.setup(d, &scenarios, opts.loaders).await?;
    let kernels = kernels(fx, &layout, &scenarios).await;
    let opts = &scenario::Opts {
        // `--cpu-per-node` came in as PerNode.
        cpu: match (&kernels, &opts.cpu) {
            (Kernels::Shared, scenario::CpuScope::PerNode) | (Kernels::Separate(_), _) => {
                scenario::CpuScope::PerNode
            }
            (Kernels::Shared, _) => scenario::CpuScope::SharedKernel,
            (Kernels::Unknown(why), _) => scenario::CpuScope::Missing(why.clone()),
        },
        ..opts.clone()
    };
    if scenarios.contains(&Scenario::KernelVxlan) {
        let why_not = match (&kernels, nix::unistd::geteuid().is_root()) {
            (Kernels::Separate(why) | Kernels::Unknown(why), _) => Some(format!(
                "it is built on the caller's kernel and means something only when every node \
                 shares it (the namespace lab): {why}"
            )),
            (_, false) => Some("it builds namespaces: run shoal bench as root".to_owned()),
            _ => kvxlan::lab_echo().err().map(|e| format!("{e:#}")),
        };
        match why_not {
            Some(why) if defaulted => {
                eprintln!("kernel-vxlan left out: {why}");
                scenarios.retain(|s| *s != Scenario::KernelVxlan);
            }
            Some(why) => bail!("SCENARIO kernel-vxlan: {why}; leave it out"),
            None => {
                let mtu = kvxlan::underlay_mtu(layout.caller.addr).await;
                let b = kvxlan::Baseline::build(mtu).await?;
                layout.kvxlan_mtu = b.overlay_mtu;
                layout.kvxlan = Some(b);
            }
        }
    }
    let scenarios = &scenarios[..];
    let order = rounds(scenarios, repeat, &mut rand::rng());
    let mut commands = Vec::new();
    for s in scenarios {
        s.warm_up(d, fx, &layout, opts, &mut commands).await?;
    }
    let mut got: BTreeMap<Scenario, BTreeMap<&'static str, Samples>> = BTreeMap::new();
    let mut latency: BTreeMap<Scenario, Vec<(&'static str, Histogram)>> = BTreeMap::new();
    let progress = progress::Progress::new(format, order.len());
    for (i, s) in order.iter().enumerate() {
        progress.start(i, &s.to_string());
        let m = s.measure(d, fx, &layout, secs, opts, &mut commands).await;
        let per = got.entry(*s).or_default();
        match m {
            Ok(m) => {
                for (name, v) in m.values {
                    per.entry(name).or_default().0.push(v);
                }
                for (name, e) in m.errors {
                    per.entry(name).or_default().1.push(e);
                }
                let merged = latency.entry(*s).or_default();
                for (name, h) in m.latency {
                    match merged.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, all)) => all.merge(&h),
                        None => merged.push((name, h)),
                    }
                }
            }
            Err(e) => {
                progress.say(&format!("  {s}: {e:#}"));
                for name in s.metric_names(opts) {
                    per.entry(name).or_default().1.push(format!("{e:#}"));
                }
            }
        }
    }
    progress.finish();
    let (cpu_model, cpus) = meta::cpu();
    let results = scenarios
        .iter()
        .map(|s| ScenarioResult {
            name: s.to_string(),
            metrics: s
                .metric_names(opts)
                .into_iter()
                .map(|name| {
                    let (samples, errors) = got
                        .get_mut(s)
                        .and_then(|m| m.remove(name))
                        .unwrap_or_default();
                    Metric::new(
                        name,
                        s.unit(name),
                        samples,
                        errors,
                        s.spread_threshold(name),
                    )
                })
                .collect(),
            latency: latency
                .remove(s)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, histogram)| Latency {
                    name: name.to_owned(),
                    histogram,
                })
                .collect(),
        })
        .collect();
    Ok(BenchResult {
        schema: shoal_bench::result::SCHEMA_VERSION,
        meta: RunMeta {
            shoal_commit: Some(shoal_buildinfo::COMMIT)
                .filter(|c| *c != "unknown")
                .map(str::to_owned)
                .or_else(meta::git_commit),
            daemon_commit,
            shoal_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: meta::kernel(),
            cpu_model,
            cpus,
            nodes: layout.nodes,
            repeat,
            duration_secs: secs,
            started_unix,
            spread_threshold: DEFAULT_SPREAD,
            order: order.iter().map(ToString::to_string).collect(),
            commands,
            streams: opts.streams,
            loaders: opts.loaders,
            connections: opts.conns,
            cpu_scope: match &opts.cpu {
                scenario::CpuScope::SharedKernel => "whole machine (shared kernel)".into(),
                scenario::CpuScope::PerNode => "per node (client's and server's)".into(),
                scenario::CpuScope::Missing(why) => format!("missing: {why}"),
            },
            notes: scenarios.iter().map(|s| s.note(&layout, opts)).collect(),
        },
        scenarios: results,
    })
}

/// Whether the throughput scenarios' nodes run on the caller's kernel.
enum Kernels {
    /// Every one (the namespace lab): the caller's /proc/stat is the whole
    /// machine, nodes and all.
    Shared,
    /// Not: why (which node differs).
    Separate(String),
    /// Cannot tell: why.
    Unknown(String),
}

/// Compares the kernels' boot ids, read by a task on each node, with the
/// caller's.
async fn kernels(
    fx: &mut fixture::Fixture,
    l: &fixture::Layout,
    scenarios: &[Scenario],
) -> Kernels {
    if !scenarios.iter().any(|s| s.kind() == scenario::Kind::Stream) {
        return Kernels::Unknown("no throughput scenario".into());
    }
    let path = "/proc/sys/kernel/random/boot_id";
    let mine = match std::fs::read_to_string(path) {
        Ok(id) => id.trim().to_owned(),
        Err(e) => return Kernels::Unknown(format!("the caller's {path}: {e}")),
    };
    for node in [&l.client, &l.server] {
        let theirs = fx
            .run_task(
                node,
                fixture::Net::Overlay,
                &["/bin/lab-echo", "boot-id"],
                TASK_SLACK,
            )
            .await
            .map(|out| {
                out.lines()
                    .find_map(|l| l.trim().strip_prefix("boot-id ").map(str::to_owned))
            });
        match theirs {
            Ok(Some(id)) if id == mine => {}
            Ok(Some(_)) => {
                return Kernels::Separate(format!(
                    "node {} runs another kernel than the caller",
                    node.hostname
                ));
            }
            Ok(None) | Err(_) => {
                return Kernels::Unknown(format!(
                    "node {}'s boot id is unreadable (the image's lab-echo has no boot-id mode?)",
                    node.hostname
                ));
            }
        }
    }
    Kernels::Shared
}

/// `--streams`' default: as many streams as the caller has CPUs (the client
/// task runs on the caller's node), 4 when that is unknown or 1, so the
/// multi-stream figure differs from the single-stream one.
fn default_streams() -> u32 {
    match meta::cpu().1 {
        n @ 2..=128 => u32::try_from(n).unwrap_or(4),
        _ => 4,
    }
}

/// How long a client task may take beyond its measurement: scheduling, an
/// image fetch on a node that lacks it, and reading its logs back.
const TASK_SLACK: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: BenchArgs,
        }
        let m = <Cli as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches(&m).map(|c| c.a)
    }

    #[test]
    fn repeats_run_in_rounds_of_every_scenario_once() {
        let all = [Scenario::Overlay, Scenario::KernelVxlan, Scenario::Underlay];
        let order = rounds(&all, 7, &mut rand::rng());
        assert_eq!(order.len(), 21);
        let names: Vec<String> = order.iter().map(ToString::to_string).collect();
        assert_eq!(shoal_bench::ratio::rounds(&names), Some(7), "{names:?}");
        for round in order.chunks(3) {
            let mut r = round.to_vec();
            r.sort();
            let mut want = all.to_vec();
            want.sort();
            assert_eq!(r, want);
        }
        // Shuffled within rounds: 20 runs of 7 rounds never all in one order.
        let fixed = (0..20).all(|_| {
            rounds(&all, 7, &mut rand::rng())
                .chunks(3)
                .all(|c| c == all.as_slice())
        });
        assert!(!fixed, "rounds are not shuffled");
    }

    #[test]
    fn scenarios_and_compare_parse_apart() {
        let a = parse(&["bench", "overlay", "ingress-remote", "--repeat", "2"]).ok();
        let a = a.as_ref();
        assert_eq!(
            a.map(|a| (a.scenarios.clone(), a.repeat, a.cmd.is_none())),
            Some((vec!["overlay".into(), "ingress-remote".into()], 2, true))
        );
        let c = parse(&["bench", "compare", "a.json", "b.json"]).ok();
        assert!(matches!(
            c.and_then(|c| c.cmd),
            Some(BenchCmd::Compare { a, b }) if a.as_os_str() == "a.json" && b.as_os_str() == "b.json"
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("2").ok(), Some(2));
        assert_eq!(parse_secs("5s").ok(), Some(5));
        assert_eq!(parse_secs("1m").ok(), Some(60));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("fast").is_err());
    }
}
