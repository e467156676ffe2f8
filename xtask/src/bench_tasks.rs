//! `cargo xtask bench tasks`: how fast Shoal starts tasks and spreads an
//! image, each against the same work done by hand in the same run, on one
//! 5-node lab of release binaries.
//!
//! Task start: `--replicas N` of `sleep 100000`, timed from `service create`
//! until all N are running (Control API polled every 100 ms), once from the
//! busybox image (already on every node, so nothing is fetched) and once
//! from `host`; then N × `runc run -d` by hand on n1 of the same busybox
//! root filesystem, one after another. Shoal's N tasks are spread over five
//! nodes that start theirs in parallel; the runc baseline is serial on one
//! node. Both share the machine's two cores, so the parallelism is in the
//! work, not in the CPUs.
//!
//! Image spread: busybox plus a file of pseudo-random bytes (gzip cannot
//! shrink it), loaded on n1 only; a global service of it is timed until all
//! five tasks run, i.e. until four nodes fetched it from n1 over 2377 and
//! unpacked it. The baseline is one plain TCP copy of the archive's bytes
//! from n1 to n2, in memory on both ends.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_api::cluster::v1::{ListTasksRequest, TaskState};
use shoal_image::{ImageStore, Reference, fixtures};
use shoal_lab::Lab;

use crate::bench::{Spread, control, run_shoal, run_shoal_stdin};

const NODES: usize = 5;
/// The argument every task's `sleep` gets, which is also how their
/// processes are recognised when waiting for them to be gone.
pub(crate) const SLEEP_FOR: &str = "100000";
const POLL: Duration = Duration::from_millis(100);
/// Nothing here takes this long unless something is broken.
const WITHIN: Duration = Duration::from_secs(300);

/// Which measurements `bench tasks` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Start,
    Spread,
    All,
}

pub async fn run(
    bin: &Path,
    runs: usize,
    replicas: usize,
    spread_mib: usize,
    part: Part,
) -> anyhow::Result<()> {
    ensure!(
        runs > 0 && replicas > 0,
        "--runs and --replicas must be > 0"
    );
    let lab = Lab::builder("bench-tasks")
        .shoald(bin.join("shoald"))
        .nodes(NODES)
        .start()
        .await?;
    crate::bench::form_swarm(&lab, bin, 1)?;
    let busybox = shoal_lab::images::busybox_archive()?;
    run_shoal_stdin(&lab, bin, 1, &["image", "load"], busybox)?;

    if matches!(part, Part::Start | Part::All) {
        let starts = task_start(&lab, bin, busybox, runs, replicas).await?;
        report_start(&starts, replicas);
    }
    if matches!(part, Part::Spread | Part::All) {
        let spreads = image_spread(&lab, bin, runs, spread_mib).await?;
        report_spread(&spreads);
    }
    lab.down()?;
    Ok(())
}

// ---------------------------------------------------------------- task start

/// One timed start of a service's tasks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    /// `service create` until every task runs.
    pub(crate) took: Duration,
    /// `service rm` until every task's process is gone.
    pub(crate) removed: Duration,
    /// Tasks that failed or were rejected on the way.
    pub(crate) errors: usize,
}

/// One run: the same N sleeps three ways.
#[derive(Debug, Clone, Copy)]
struct StartRun {
    busybox: Started,
    host: Started,
    runc: Started,
}

async fn task_start(
    lab: &Lab,
    bin: &Path,
    busybox: &[u8],
    runs: usize,
    replicas: usize,
) -> anyhow::Result<Vec<StartRun>> {
    // Every node holds busybox before anything is timed: a global service
    // makes each fetch it from n1.
    let started = timed_service(
        lab,
        bin,
        "prespread",
        &["--mode", "global"],
        &["busybox", "sleep", SLEEP_FOR],
        NODES,
    )
    .await?;
    println!(
        "busybox on all {NODES} nodes in {:.1} s ({} errors); removed in {:.1} s",
        started.took.as_secs_f64(),
        started.errors,
        started.removed.as_secs_f64()
    );

    // The runc baseline's bundle: the same image unpacked by the same code
    // the nodes use, in a store of its own.
    let scratch = tempfile::Builder::new()
        .prefix("shoal-bench-runc-")
        .tempdir()
        .context("a scratch directory")?;
    let store = ImageStore::open(&scratch.path().join("store"))?;
    let loaded = store.load_archive(busybox)?;
    let manifest = &loaded
        .first()
        .context("busybox archive: no image")?
        .manifest;
    let rootfs = store.rootfs(manifest)?;
    let bundle = runc_bundle(scratch.path(), &rootfs)?;

    let replicas_arg = replicas.to_string();
    let mut out = Vec::new();
    for run in 1..=runs {
        let busybox = timed_service(
            lab,
            bin,
            &format!("bb{run}"),
            &["--replicas", &replicas_arg],
            &["busybox", "sleep", SLEEP_FOR],
            replicas,
        )
        .await?;
        let host = timed_service(
            lab,
            bin,
            &format!("host{run}"),
            &["--replicas", &replicas_arg],
            &["host", "/bin/sleep", SLEEP_FOR],
            replicas,
        )
        .await?;
        let runc = runc_by_hand(lab, scratch.path(), &bundle, replicas, run).await?;
        println!(
            "run {run}: {replicas} running in busybox {:.2} s, host {:.2} s, runc by hand {:.2} s \
             (errors {}/{}/{})",
            busybox.took.as_secs_f64(),
            host.took.as_secs_f64(),
            runc.took.as_secs_f64(),
            busybox.errors,
            host.errors,
            runc.errors
        );
        out.push(StartRun {
            busybox,
            host,
            runc,
        });
    }
    Ok(out)
}

/// Creates service `name` (`flags`, then `image_cmd`), times it until
/// `want` tasks run, then removes it and times that until no task process
/// is left.
pub(crate) async fn timed_service(
    lab: &Lab,
    bin: &Path,
    name: &str,
    flags: &[&str],
    image_cmd: &[&str],
    want: usize,
) -> anyhow::Result<Started> {
    ensure!(
        sleepers()?.is_empty(),
        "sleep {SLEEP_FOR} processes left over from before {name}"
    );
    let mut api = control(lab, 1).await?;
    let mut args = vec!["service", "create", "--detach", "--name", name];
    args.extend(flags);
    args.extend(image_cmd);
    let t = Instant::now();
    run_shoal(lab, bin, 1, &args)?;
    let mut failed = HashSet::new();
    let took = loop {
        let tasks = api
            .list_tasks(ListTasksRequest {
                service: name.to_owned(),
            })
            .await?
            .into_inner()
            .tasks;
        let running = tasks
            .iter()
            .filter(|t| {
                t.state == TaskState::Running as i32 && t.desired_state == TaskState::Running as i32
            })
            .count();
        failed.extend(
            tasks
                .iter()
                .filter(|t| {
                    t.state == TaskState::Failed as i32 || t.state == TaskState::Rejected as i32
                })
                .map(|t| (t.id.clone(), t.err.clone())),
        );
        if running >= want {
            break t.elapsed();
        }
        if t.elapsed() > WITHIN {
            bail!(
                "{name}: {running}/{want} running after {WITHIN:?}; failed: {:?}",
                failed.iter().take(3).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some((_, err)) = failed.iter().next() {
        eprintln!(
            "bench: {name}: {} task(s) failed on the way, e.g. {err}",
            failed.len()
        );
    }
    let t = Instant::now();
    run_shoal(lab, bin, 1, &["service", "rm", name])?;
    until_no_sleepers(name).await?;
    let removed = t.elapsed();
    Ok(Started {
        took,
        removed,
        errors: failed.len(),
    })
}

/// PIDs of every `sleep 100000` on the machine: the tasks' and runc's
/// containers' processes, whatever namespace they are in.
fn sleepers() -> anyhow::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let argv0 = args.next().unwrap_or_default();
        if argv0.ends_with(b"sleep") && args.next() == Some(SLEEP_FOR.as_bytes()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Waits until no `sleep 100000` is left.
async fn until_no_sleepers(what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let left = sleepers()?.len();
        if left == 0 {
            return Ok(());
        }
        ensure!(
            t.elapsed() < WITHIN,
            "{what}: {left} sleep processes still there after {WITHIN:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `runc spec` in `dir/bundle`, edited to run `sleep 100000` without a
/// terminal on `rootfs`, read-only (so one bundle serves every container).
fn runc_bundle(dir: &Path, rootfs: &Path) -> anyhow::Result<PathBuf> {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let status = std::process::Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .status()
        .context("runc spec (apt-get install runc)")?;
    ensure!(status.success(), "runc spec: {status}");
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["args"] = serde_json::json!(["sleep", SLEEP_FOR]);
    spec["process"]["terminal"] = Value::Bool(false);
    spec["root"]["path"] = Value::String(rootfs.to_str().context("rootfs path")?.to_owned());
    spec["root"]["readonly"] = Value::Bool(true);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(bundle)
}

/// `n` × `runc run -d` of `bundle` from n1's namespace, one after another
/// (timed), then `runc delete -f` of each (timed, until no process is left).
async fn runc_by_hand(
    lab: &Lab,
    dir: &Path,
    bundle: &Path,
    n: usize,
    run: usize,
) -> anyhow::Result<Started> {
    ensure!(
        sleepers()?.is_empty(),
        "sleep {SLEEP_FOR} processes left over before runc by hand"
    );
    let root = dir.join("runc");
    // The containers inherit runc's stdio: a pipe would never close.
    let log = dir.join(format!("runc-{run}.log"));
    let log = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let runc = |args: &[&str]| -> anyhow::Result<bool> {
        Ok(lab
            .command(1, "runc")
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()?
            .success())
    };
    let bundle = bundle.to_str().context("bundle path")?;
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{run}-{i}")).collect();
    let mut errors = 0;
    let t = Instant::now();
    for id in &ids {
        if !runc(&["run", "-d", "--bundle", bundle, id])? {
            errors += 1;
        }
    }
    let took = t.elapsed();
    let running = sleepers()?.len();
    if running != n - errors {
        eprintln!("bench: runc by hand: {running} sleeps running for {n} containers started");
    }
    let t = Instant::now();
    for id in &ids {
        // A container that failed to start may not exist: not an error here.
        let _deleted = runc(&["delete", "-f", id])?;
    }
    until_no_sleepers("runc delete").await?;
    Ok(Started {
        took,
        removed: t.elapsed(),
        errors,
    })
}

fn spread_of(runs: &[StartRun], f: impl Fn(&StartRun) -> f64) -> Spread {
    let v: Vec<f64> = runs.iter().map(f).collect();
    Spread::of(&v).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

fn report_start(runs: &[StartRun], n: usize) {
    println!(
        "\nTask start: {n} × `sleep {SLEEP_FOR}` until all run, median [min–max] of {} runs:",
        runs.len()
    );
    println!(
        "{:>44} {:>22} {:>22} {:>20} {:>7}",
        "", "seconds to all running", "tasks/s", "removal s", "errors"
    );
    type Pick = fn(&StartRun) -> Started;
    let rows: [(&str, Pick); 3] = [
        ("Shoal, busybox image (5 nodes in parallel)", |r| r.busybox),
        ("Shoal, host (5 nodes in parallel)", |r| r.host),
        ("runc run -d by hand (n1, one by one)", |r| r.runc),
    ];
    for (name, pick) in rows {
        println!(
            "{name:>44} {:>22} {:>22} {:>20} {:>7}",
            spread_of(runs, |r| pick(r).took.as_secs_f64()).to_string(),
            format!(
                "{:.1}",
                spread_of(runs, |r| n as f64 / pick(r).took.as_secs_f64())
            ),
            spread_of(runs, |r| pick(r).removed.as_secs_f64()).to_string(),
            runs.iter().map(|r| pick(r).errors).sum::<usize>(),
        );
    }
    let ratio = |a: Pick, b: Pick| {
        spread_of(runs, |r| {
            a(r).took.as_secs_f64() / b(r).took.as_secs_f64().max(1e-9)
        })
    };
    println!("ratios of time to all running (per run, then median [min–max]):");
    println!(
        "  Shoal busybox / runc by hand {}×; Shoal host / runc by hand {}×; busybox / host {}×",
        ratio(|r| r.busybox, |r| r.runc),
        ratio(|r| r.host, |r| r.runc),
        ratio(|r| r.busybox, |r| r.host),
    );
    println!(
        "  (Shoal's {n} tasks are spread over {NODES} nodes that start them in parallel; runc by \
         hand starts them one after another on one node. All share the machine's CPUs.)"
    );
}

// ---------------------------------------------------------------- image spread

/// One run of the spread measurement.
#[derive(Debug, Clone, Copy)]
struct SpreadRun {
    /// Bytes of the `docker save` archive.
    bytes: usize,
    /// `service create --mode global` until every node's task runs.
    spread: Duration,
    /// One plain TCP copy of `bytes` from n1 to n2.
    copy: Duration,
    errors: usize,
}

/// SplitMix64: deterministic bytes gzip cannot shrink.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A busybox image with `mib` MiB of pseudo-random bytes in /data, its own
/// tag and bytes per `run` (so no node holds it before it is timed).
fn spread_image(run: usize, mib: usize) -> anyhow::Result<(String, Vec<u8>)> {
    let reference = format!("shoal.local/bench-spread:r{run}");
    let mut archive = Vec::new();
    fixtures::busybox()
        .with_reference(Reference::parse(&reference)?)
        .add_bytes(pseudo_random(run as u64, mib << 20), "/data/random", 0o644)
        .write_docker_archive(&mut archive)?;
    Ok((reference, archive))
}

/// One TCP connection from n1 to n2 carrying `bytes`; the time from
/// connecting until the receiver read the last byte.
fn tcp_copy(lab: &Lab, bytes: &[u8]) -> anyhow::Result<Duration> {
    let bind = SocketAddr::new(lab.node(2).addr().into(), 0);
    let listener = shoal_lab::run_in_netns(lab.node(2).netns(), move || TcpListener::bind(bind))??;
    let to = listener.local_addr()?;
    std::thread::scope(|s| {
        let receiver = s.spawn(move || -> std::io::Result<usize> {
            let (mut conn, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            loop {
                match conn.read(&mut buf)? {
                    0 => return Ok(got),
                    n => got += n,
                }
            }
        });
        let t = Instant::now();
        let sent = shoal_lab::run_in_netns(lab.node(1).netns(), move || TcpStream::connect(to))?
            .and_then(|mut conn| {
                conn.write_all(bytes)?;
                conn.shutdown(Shutdown::Write)
            });
        let got = match receiver.join() {
            Ok(got) => got?,
            Err(_) => bail!("the receiving thread panicked"),
        };
        let took = t.elapsed();
        sent.context("sending from n1")?;
        ensure!(
            got == bytes.len(),
            "received {got} of {} bytes",
            bytes.len()
        );
        Ok(took)
    })
}

async fn image_spread(
    lab: &Lab,
    bin: &Path,
    runs: usize,
    mib: usize,
) -> anyhow::Result<Vec<SpreadRun>> {
    let mut out = Vec::new();
    for run in 1..=runs {
        let (reference, archive) = spread_image(run, mib)?;
        run_shoal_stdin(lab, bin, 1, &["image", "load"], &archive)?;
        let copy = tcp_copy(lab, &archive)?;
        let started = timed_service(
            lab,
            bin,
            &format!("spread{run}"),
            &["--mode", "global"],
            &[&reference, "sleep", SLEEP_FOR],
            NODES,
        )
        .await?;
        println!(
            "run {run}: {:.1} MB image on {NODES} nodes in {:.2} s; plain TCP copy n1→n2 {:.3} s \
             ({} errors)",
            archive.len() as f64 / 1e6,
            started.took.as_secs_f64(),
            copy.as_secs_f64(),
            started.errors
        );
        out.push(SpreadRun {
            bytes: archive.len(),
            spread: started.took,
            copy,
            errors: started.errors,
        });
    }
    Ok(out)
}

fn report_spread(runs: &[SpreadRun]) {
    let s = |f: &dyn Fn(&SpreadRun) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        Spread::of(&v).unwrap_or(Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        })
    };
    let mb = |r: &SpreadRun| r.bytes as f64 / 1e6;
    let fetchers = (NODES - 1) as f64;
    println!(
        "\nImage spread: a {:.1} MB image (busybox + pseudo-random bytes) loaded on n1, a global \
         service of it until all {NODES} tasks run ({} fetch it from n1 over 2377), median \
         [min–max] of {} runs:",
        s(&mb).median,
        NODES - 1,
        runs.len()
    );
    println!(
        "  Shoal, create → {NODES} running:      {} s   per fetching node {} MB/s, all {} \
         together {} MB/s   errors {}",
        s(&|r| r.spread.as_secs_f64()),
        format_args!("{:.1}", s(&|r| mb(r) / r.spread.as_secs_f64())),
        NODES - 1,
        format_args!("{:.1}", s(&|r| fetchers * mb(r) / r.spread.as_secs_f64())),
        runs.iter().map(|r| r.errors).sum::<usize>()
    );
    println!(
        "  plain TCP copy n1 → n2 (memory):  {} s   {} MB/s",
        format_args!("{:.3}", s(&|r| r.copy.as_secs_f64())),
        format_args!("{:.0}", s(&|r| mb(r) / r.copy.as_secs_f64())),
    );
    println!(
        "  spread to {} nodes / one plain copy: {}× (per run, then median [min–max])",
        NODES - 1,
        format_args!(
            "{:.1}",
            s(&|r| r.spread.as_secs_f64() / r.copy.as_secs_f64().max(1e-9))
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_bytes_are_deterministic_and_incompressible() {
        let a = pseudo_random(1, 1 << 16);
        assert_eq!(a.len(), 1 << 16);
        assert_eq!(a, pseudo_random(1, 1 << 16));
        assert_ne!(a, pseudo_random(2, 1 << 16));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&a).expect("gzip");
        let packed = gz.finish().expect("gzip");
        assert!(packed.len() > a.len() * 99 / 100, "{} bytes", packed.len());
    }
}
