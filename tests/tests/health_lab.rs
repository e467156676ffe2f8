//! Healthchecks, end to end.
//!
//! - The runtime (no daemon): a command runs inside a running task as
//!   `docker exec` runs it, its exit code and combined output captured, and
//!   a command that outlives its timeout is killed. Needs root, runc and
//!   the shim (`cargo build -p shoal-runtime --bins`).
//! - A lab: a published busybox service with `--health-cmd` is STARTING,
//!   then RUNNING and served through every node's published port; when one
//!   task's check fails, no new connection reaches it through any node
//!   within a bound, it is shown failed "unhealthy container" and replaced.
//!   Written against the CLI's `--health-*` flags (issue 13).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use shoal_lab::{Formation, Lab, eventually, images};
use shoal_runtime::{ExecEnd, Runtime, RuntimeOptions, TaskSpec};

/// A task on the node's own filesystem in a netns of its own, with a
/// runtime on a temporary state directory.
#[tokio::test]
async fn exec_runs_in_the_task_captures_its_output_and_kills_it_on_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::with_options(RuntimeOptions::new(dir.path().join("runtime")))?;
    let spec = TaskSpec {
        id: format!("hcexec{}", std::process::id()),
        name: "hc-exec".into(),
        args: vec!["sleep".into(), "1000".into()],
        env: vec![("GREETING".into(), "from the task".into())],
        init: true,
        log_dir: dir.path().join("logs"),
        ..TaskSpec::default()
    };
    let mut task = runtime.start(&spec).await?;
    let exec = task.exec();
    let result = async {
        let argv = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ok = exec.run(&argv(&["true"]), Duration::from_secs(10)).await?;
        ensure!(ok.end == ExecEnd::Exited(0), "true: {ok:?}");
        let no = exec.run(&argv(&["false"]), Duration::from_secs(10)).await?;
        ensure!(no.end == ExecEnd::Exited(1), "false: {no:?}");
        // The task's environment, both streams in one output, its code.
        let script = "echo $GREETING; echo to-stderr >&2; exit 3";
        let out = exec
            .run(&argv(&["sh", "-c", script]), Duration::from_secs(10))
            .await?;
        ensure!(out.end == ExecEnd::Exited(3), "{out:?}");
        let text = String::from_utf8_lossy(&out.output);
        ensure!(
            text.contains("from the task") && text.contains("to-stderr"),
            "{text:?}"
        );
        // In the task's PID namespace: its init is PID 1 there.
        let ps = exec
            .run(
                &argv(&["sh", "-c", "cat /proc/1/cmdline"]),
                Duration::from_secs(10),
            )
            .await?;
        ensure!(
            String::from_utf8_lossy(&ps.output).contains("sleep"),
            "{ps:?}"
        );
        // Outliving its timeout: killed, and reported so, promptly.
        let begun = Instant::now();
        let slow = exec
            .run(&argv(&["sleep", "876543"]), Duration::from_millis(500))
            .await?;
        ensure!(slow.end == ExecEnd::TimedOut, "{slow:?}");
        ensure!(
            begun.elapsed() < Duration::from_secs(5),
            "{:?}",
            begun.elapsed()
        );
        let left = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| c.starts_with(b"sleep\x00876543"))
            .count();
        ensure!(left == 0, "the timed-out command still runs");
        // Output past 4 KiB is cut, as docker's.
        let big = exec
            .run(
                &argv(&[
                    "sh",
                    "-c",
                    "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done",
                ]),
                Duration::from_secs(10),
            )
            .await?;
        ensure!(
            big.output.len() == 4096 && big.truncated,
            "{}",
            big.output.len()
        );
        Ok(())
    }
    .await;
    task.stop(Duration::ZERO).await?;
    result?;
    // Once the task is gone, an exec is an error, not a result.
    let gone = exec.run(&["true".to_owned()], Duration::from_secs(5)).await;
    ensure!(gone.is_err(), "{gone:?}");
    Ok(())
}

const INTERVAL: Duration = Duration::from_secs(1);

/// (status, body) of a GET through node `k`'s published port 8080.
fn get(lab: &Lab, k: usize) -> anyhow::Result<(String, String)> {
    Ok(lab.curl(&format!("http://{}:8080/", lab.node(k).addr()))?)
}

#[tokio::test]
async fn an_unhealthy_task_leaves_every_nodes_rings_and_is_replaced() -> anyhow::Result<()> {
    let lab = Lab::builder("health").nodes(3).client(true).start().await?;
    lab.form_swarm_of(Formation::fast(1, 3))?;
    lab.nodes_ready(3, Duration::from_secs(15)).await?;
    lab.load_image(1, images::busybox_archive()?)?;
    // Each task serves a token of its own (a replacement has a new one, its
    // hostname would not), and is unhealthy once a file named after its
    // token exists in a directory every node (and so every task) shares.
    let flags = lab.dir().join("health-flags");
    std::fs::create_dir_all(&flags)?;
    let mount = format!("type=bind,source={},target=/flags", flags.display());
    let interval = format!("{}s", INTERVAL.as_secs());
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hc",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--mount",
            &mount,
            "--health-cmd",
            "test ! -e /flags/$(cat /www/index.html)",
            "--health-interval",
            &interval,
            "--health-retries",
            "1",
            "--health-start-period",
            "0s",
            "busybox",
            "sh",
            "-c",
            "cat /proc/sys/kernel/random/uuid > /www/index.html; exec httpd -f -p 80 -h /www",
        ],
    )?;
    // STARTING (the check has not passed yet), then RUNNING.
    eventually(Duration::from_secs(60), "a task starting", || {
        let rows = lab.service_ps(1, "hc")?;
        Ok(rows.iter().any(|r| r.state == "starting").then_some(()))
    })
    .await
    .with_context(|| format!("{:?}", lab.service_ps(1, "hc")))?;
    lab.running("hc", 2, Duration::from_secs(60))
        .await
        .with_context(|| format!("{:?}", lab.service_ps(1, "hc")))?;

    // Both tasks answer through every node.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    eventually(
        Duration::from_secs(20),
        "both tasks through every node",
        || {
            for k in 1..=3 {
                let (code, body) = get(&lab, k)?;
                if code == "200" {
                    *seen.entry(format!("{k}:{body}")).or_default() += 1;
                }
            }
            let per_node = |k: usize| {
                seen.keys()
                    .filter(|key| key.starts_with(&format!("{k}:")))
                    .count()
            };
            Ok((1..=3).all(|k| per_node(k) == 2).then_some(()))
        },
    )
    .await
    .with_context(|| format!("seen {seen:?}"))?;
    let victim = seen
        .keys()
        .next()
        .and_then(|k| k.split_once(':'))
        .map(|(_, host)| host.to_owned())
        .context("no task answered")?;

    // Its check fails from now on: one failure (retries 1) at most one
    // interval from now makes it unhealthy, and within a second of that
    // (the check's own run, the report, the managers' next set) no node
    // may send it a new connection (each curl is a new connection).
    let flagged = Instant::now();
    std::fs::write(flags.join(&victim), b"")?;
    let bound = INTERVAL + Duration::from_secs(1);
    let mut last_victim = None;
    let (mut ok, mut failed) = (0usize, 0usize);
    // (node, code, sent and done since the flag) of each failed request.
    let mut failures = Vec::new();
    while flagged.elapsed() < bound + Duration::from_secs(4) {
        for k in 1..=3 {
            let sent = flagged.elapsed();
            let (code, body) = get(&lab, k)?;
            if code != "200" {
                failed += 1;
                failures.push((k, code, sent, flagged.elapsed()));
                continue;
            }
            ok += 1;
            if body == victim {
                last_victim = Some((k, flagged.elapsed()));
            }
        }
    }
    println!("requests: {ok} answered, {failed} failed; victim last answered {last_victim:?}");
    // Every request answered: the unhealthy task leaves the rings before it
    // stops, and its replacement is used only once this node's overlay
    // entries point at the replacement's node (an address just freed is
    // soon handed to a task elsewhere).
    if failed > 0 {
        // What the nodes did around it, kept with the lab's other output.
        lab.print_diagnostics();
    }
    ensure!(
        failed == 0,
        "{failed} of {} requests failed (node, code, sent, done since the flag): {failures:?}",
        ok + failed
    );
    if let Some((k, at)) = last_victim
        && at > bound
    {
        bail!(
            "the unhealthy task {victim} still got a new connection through n{k} {at:?} after its check began failing (bound {bound:?})"
        );
    }

    // Shown failed with docker's words, and replaced.
    let failed_row = eventually(Duration::from_secs(20), "the unhealthy task failed", || {
        let rows = lab.service_ps(1, "hc")?;
        Ok(rows
            .into_iter()
            .find(|r| r.state == "failed" && r.error == "unhealthy container"))
    })
    .await
    .with_context(|| format!("{:?}", lab.service_ps(1, "hc")))?;
    println!("failed: {failed_row:?}");
    lab.running("hc", 2, Duration::from_secs(60))
        .await
        .with_context(|| format!("{:?}", lab.service_ps(1, "hc")))?;
    let answered = eventually(Duration::from_secs(20), "a new task answers", || {
        let (code, body) = get(&lab, 1)?;
        Ok(
            (code == "200" && body != victim && !seen.contains_key(&format!("1:{body}")))
                .then_some(body),
        )
    })
    .await?;
    println!("replacement: {answered}");
    Ok(())
}
