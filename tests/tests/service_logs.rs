//! `shoal service logs` across real nodes: a manager fetches the output of
//! a service's tasks from the node running each (itself and a worker),
//! labels it as docker does, cuts it with `--tail`, follows it with `-f`
//! (new lines, new tasks after a scale-up, a node cut off and back), and
//! says so when a node cannot be reached.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::{Lab, eventually, shoal_path};

/// Long enough for a loaded 2-core VM.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Task name (`echo.1`) → (task id, node hostname) of the running tasks.
fn running(lab: &Lab, service: &str) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let out = lab.shoal(1, &["service", "ps", service, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("service ps: {out}"))?;
    let mut tasks = BTreeMap::new();
    for t in v.as_array().context("service ps: not an array")? {
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
        if s("desired_state") == "running" && s("current_state") == "running" {
            tasks.insert(s("name"), (s("id"), s("node")));
        }
    }
    Ok(tasks)
}

/// `shoal service logs -f …` on node 1, its stdout lines sent as they come.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(lab: &Lab, args: &[&str]) -> anyhow::Result<Follower> {
        let mut child = lab
            .command(1, shoal_path()?)
            .args(["service", "logs", "-f"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting shoal service logs -f")?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        // stderr lines come with a "! " in front.
        for (out, prefix) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "! "),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Follower { child, lines })
    }

    /// Waits for a line containing each of `wanted`; returns every line read.
    fn expect(&self, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while !wanted
            .iter()
            .all(|w| seen.iter().any(|l: &String| l.contains(w)))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => bail!("following: {wanted:?} not all seen within {TIMEOUT:?}: {seen:#?}"),
            }
        }
        Ok(seen)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Ours, by its pid; already gone is fine.
        if let Err(e) = self.child.kill() {
            eprintln!("stopping the follower: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("reaping the follower: {e}");
        }
    }
}

/// A file on the node's filesystem, removed whatever the test's outcome.
struct GoFile(std::path::PathBuf);

impl Drop for GoFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

#[tokio::test]
async fn service_logs_from_a_manager_and_a_worker() -> anyhow::Result<()> {
    let lab = Lab::builder("logs").nodes(2).start().await?;
    lab.form_swarm(1)?;

    // The tasks wait for this file before their last line. Tasks on the
    // node's filesystem see it read-only, and not under /run (the lab's
    // directory) or /tmp, which are their own: so /var/tmp.
    let go = GoFile(std::path::PathBuf::from(format!(
        "/var/tmp/shoal-{}-go",
        lab.name()
    )));
    let go = &go.0;
    let script = format!(
        "echo first-$HOSTNAME; echo hello-$HOSTNAME; \
         while [ ! -e {go} ]; do sleep 0.2; done; \
         echo later-$HOSTNAME; echo oops-$HOSTNAME >&2; sleep 1000",
        go = go.display()
    );
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "echo",
            "--replicas",
            "2",
            "host",
            "sh",
            "-c",
            &script,
        ],
    )?;
    let tasks = eventually(TIMEOUT, "2 echo tasks running on n1 and n2", || {
        let tasks = running(&lab, "echo")?;
        let mut nodes: Vec<&str> = tasks.values().map(|(_, n)| n.as_str()).collect();
        nodes.sort_unstable();
        Ok((nodes == ["n1", "n2"]).then_some(tasks))
    })
    .await?;
    let context = |name: &str| -> anyhow::Result<String> {
        let (id, node) = tasks.get(name).with_context(|| format!("no task {name}"))?;
        Ok(format!(
            "{name}.{}@{node}    | ",
            id.get(..12).unwrap_or(id)
        ))
    };
    let (c1, c2) = (context("echo.1")?, context("echo.2")?);

    // Everything so far, from both nodes, as docker prints it.
    let out = eventually(TIMEOUT, "both tasks' lines", || {
        let out = lab.shoal(1, &["service", "logs", "echo"])?;
        Ok((out.contains("hello-echo.1") && out.contains("hello-echo.2")).then_some(out))
    })
    .await?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let mut expected = vec![
        format!("{c1}first-echo.1"),
        format!("{c1}hello-echo.1"),
        format!("{c2}first-echo.2"),
        format!("{c2}hello-echo.2"),
    ];
    expected.sort_unstable();
    assert_eq!(lines, expected, "{out}");
    // In time order: each task's first line before its second.
    let at = |l: &str| out.find(l).unwrap_or(usize::MAX);
    assert!(at("first-echo.1") < at("hello-echo.1"), "{out}");
    // --tail 1: the last line of each task.
    let out = lab.shoal(1, &["service", "logs", "--tail", "1", "echo"])?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let mut expected = vec![format!("{c1}hello-echo.1"), format!("{c2}hello-echo.2")];
    expected.sort_unstable();
    assert_eq!(lines, expected, "{out}");
    // Other forms: a task id, --raw, --no-task-ids, timestamps.
    let (id2, node2) = &tasks["echo.2"];
    let out = lab.shoal(1, &["service", "logs", "--raw", id2])?;
    assert_eq!(out, "first-echo.2\nhello-echo.2\n");
    let out = lab.shoal(1, &["service", "logs", "--no-task-ids", "--tail", "1", id2])?;
    assert_eq!(out, format!("echo.2@{node2}    | hello-echo.2\n"));
    let out = lab.shoal(1, &["service", "logs", "-t", "--tail", "1", id2])?;
    ensure!(
        out.len() == "2026-11-02T10:11:12.000000000Z ".len() + c2.len() + "hello-echo.2\n".len()
            && out.as_bytes().get(29) == Some(&b'Z')
            && out.ends_with(&format!(" {c2}hello-echo.2\n")),
        "{out}"
    );
    let e = lab.shoal_refused(1, &["service", "logs", "nope"])?;
    ensure!(e.contains("task or service nope not found"), "{e}");
    let e = lab.shoal_refused(2, &["service", "logs", "echo"])?;
    ensure!(e.contains("not a swarm manager"), "{e}");

    // --tail 0: nothing old (with -f, only what comes next).
    assert_eq!(
        lab.shoal(1, &["service", "logs", "--tail", "0", "echo"])?,
        ""
    );

    // Following: the last line of each task, then a line written after it
    // started, on both nodes; then a task that did not exist when it began.
    let follower = Follower::start(&lab, &["--tail", "1", "echo"])?;
    // Both streams are open once their last lines are in.
    let old = follower.expect(&["hello-echo.1", "hello-echo.2"])?;
    ensure!(
        !old.iter().any(|l| l.contains("first-")),
        "--tail 1 showed more: {old:#?}"
    );
    std::fs::write(go, b"")?;
    let seen = follower.expect(&["later-echo.1", "later-echo.2"])?;
    ensure!(
        seen.contains(&format!("{c1}later-echo.1")) && seen.contains(&format!("{c2}later-echo.2")),
        "{seen:#?}"
    );
    lab.shoal(1, &["service", "scale", "-d", "echo=3"])?;
    follower.expect(&["later-echo.3"])?;
    // n2 cut off: the follower says so rather than going quiet, and takes
    // up n2's stream again once it is back.
    lab.cut(2).await?;
    follower.expect(&["! warning: node n2 is not available"])?;
    lab.heal(2).await?;
    follower.expect(&["! warning: node n2: log stream resumed"])?;
    drop(follower);
    // stderr lines on stderr.
    let both = lab.shoal_output(1, &["service", "logs", "echo"], b"")?;
    let stderr = String::from_utf8_lossy(&both.stderr);
    ensure!(
        stderr.contains(&format!("{c1}oops-echo.1"))
            && stderr.contains(&format!("{c2}oops-echo.2")),
        "{stderr}"
    );

    // A node that cannot be reached: what the others had, then the reason.
    lab.stop(2).await?;
    let out = lab.shoal_output(1, &["service", "logs", "echo"], b"")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{stdout}");
    let on_n1 = tasks
        .iter()
        .find(|(_, (_, node))| node == "n1")
        .map(|(name, _)| name.clone())
        .context("no task on n1")?;
    let shown = format!("{}hello-{on_n1}", context(&on_n1)?);
    ensure!(stdout.contains(&shown), "{stdout}");
    ensure!(
        stderr.contains("incomplete log stream") && stderr.contains("node n2 is not available"),
        "{stderr}"
    );
    Ok(())
}
