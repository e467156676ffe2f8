//! The control plane across real nodes: `shoal swarm init/join` over mutual
//! TLS on 2377, Raft among three managers, workers' sessions, and the
//! refusals an operator must get. Needs root and built `shoald`/`shoal`.

use std::{
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::Lab;

/// Heartbeats every second: a silent node is down after ~3 s.
const HEARTBEAT: &str = "1s";

fn shoal_bin() -> anyhow::Result<PathBuf> {
    let p = shoal_lab::shoald_path()?.with_file_name("shoal");
    ensure!(
        p.is_file(),
        "{} missing: run `cargo build --workspace --bins`",
        p.display()
    );
    Ok(p)
}

/// Runs `shoal ARGS` against node `k`'s daemon.
fn shoal(lab: &Lab, k: usize, args: &[&str]) -> anyhow::Result<Output> {
    Ok(lab.command(k, shoal_bin()?).args(args).output()?)
}

/// Runs `shoal ARGS` on node `k` and returns stdout, failing with stderr.
fn ok(lab: &Lab, k: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = shoal(lab, k, args)?;
    ensure!(
        out.status.success(),
        "n{k}: shoal {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs `shoal ARGS` on node `k`, expecting it to fail; returns stderr.
fn refused(lab: &Lab, k: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = shoal(lab, k, args)?;
    ensure!(
        !out.status.success(),
        "n{k}: shoal {} should have failed",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn token(lab: &Lab, k: usize, role: &str) -> anyhow::Result<String> {
    Ok(ok(lab, k, &["swarm", "join-token", "-q", role])?
        .trim()
        .to_owned())
}

/// `node ls` as (hostname, status, availability, manager status, role),
/// sorted by hostname: what every manager must agree on.
fn nodes(lab: &Lab, k: usize) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let out = ok(lab, k, &["node", "ls", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("node ls json: {out}"))?;
    let list = v
        .as_array()
        .context("node ls --format json: not an array")?;
    let field = |n: &Value, key: &str| -> anyhow::Result<String> {
        n[key]
            .as_str()
            .map(str::to_lowercase)
            .with_context(|| format!("node ls --format json: no {key:?} in {n}"))
    };
    let mut rows = list
        .iter()
        .map(|n| {
            Ok((
                field(n, "hostname")?,
                field(n, "status")?,
                field(n, "manager_status")?,
                field(n, "role")?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    rows.sort();
    Ok(rows)
}

/// Polls `check` until it holds or `within` passes.
async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// n1 inits; n2, n3 join as managers; n4, n5 as workers.
async fn form(lab: &Lab) -> anyhow::Result<()> {
    let init = ok(
        lab,
        1,
        &["swarm", "init", "--dispatcher-heartbeat", HEARTBEAT],
    )?;
    ensure!(init.contains("Swarm initialized"), "{init}");
    let (manager, worker) = (token(lab, 1, "manager")?, token(lab, 1, "worker")?);
    ensure!(manager.starts_with("SWMTKN-1-") && worker.starts_with("SWMTKN-1-"));
    ensure!(manager != worker);
    let n1 = format!("{}:2377", lab.node(1).addr());
    for k in [2, 3] {
        let out = ok(lab, k, &["swarm", "join", "--token", &manager, &n1])?;
        ensure!(out.contains("as a manager"), "n{k}: {out}");
    }
    for k in [4, 5] {
        let out = ok(lab, k, &["swarm", "join", "--token", &worker, &n1])?;
        ensure!(out.contains("as a worker"), "n{k}: {out}");
    }
    Ok(())
}

#[tokio::test]
async fn managers_and_workers_form_agree_and_survive_failures() -> anyhow::Result<()> {
    let lab = Lab::builder("cluster").nodes(5).start().await?;
    form(&lab).await?;

    // Every manager shows the same five nodes, one leader, all ready.
    let want = |rows: &Vec<(String, String, String, String)>| {
        rows.len() == 5
            && rows.iter().all(|r| r.1 == "ready")
            && rows.iter().filter(|r| r.2 == "leader").count() == 1
            && rows.iter().filter(|r| r.3 == "manager").count() == 3
    };
    let first = eventually(Duration::from_secs(10), "5 ready nodes on n1", || {
        let rows = nodes(&lab, 1)?;
        Ok(want(&rows).then_some(rows))
    })
    .await?;
    for k in [2, 3] {
        assert_eq!(nodes(&lab, k)?, first, "node ls on n{k} differs from n1");
    }
    let hosts: Vec<&str> = first.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(hosts, ["n1", "n2", "n3", "n4", "n5"]);

    // A worker can't act as a manager.
    let e = refused(&lab, 4, &["node", "ls"])?;
    assert!(e.contains("not a swarm manager"), "{e}");

    // A worker that stops heartbeating goes down on every manager.
    lab.stop(5).await?;
    eventually(Duration::from_secs(15), "n5 down on n2", || {
        let rows = nodes(&lab, 2)?;
        Ok(rows
            .iter()
            .any(|r| r.0 == "n5" && r.1 == "down")
            .then_some(()))
    })
    .await?;

    // Restart a follower manager: it comes back from its disk and agrees.
    let leader = first
        .iter()
        .find(|r| r.2 == "leader")
        .map(|r| r.0.clone())
        .context("leader")?;
    let follower = ["n2", "n3"]
        .into_iter()
        .find(|h| *h != leader)
        .unwrap_or("n3");
    let fk: usize = follower[1..].parse()?;
    lab.stop(fk).await?;
    lab.start(fk).await?;
    eventually(
        Duration::from_secs(15),
        "restarted manager serves node ls",
        || {
            let rows = nodes(&lab, fk)?;
            Ok((rows.len() == 5).then_some(()))
        },
    )
    .await?;

    // Kill the leader: the other two elect a new one and keep committing.
    let lk: usize = leader[1..].parse()?;
    lab.stop(lk).await?;
    let survivor = [1, 2, 3]
        .into_iter()
        .find(|k| *k != lk)
        .context("survivor")?;
    let t = Instant::now();
    eventually(
        Duration::from_secs(20),
        "a write after the leader died",
        || {
            Ok(shoal(
                &lab,
                survivor,
                &["node", "update", "--label-add", "zone=a", "n4"],
            )?
            .status
            .success()
            .then_some(()))
        },
    )
    .await?;
    eprintln!(
        "leader n{lk} stopped: first write committed after {:?}",
        t.elapsed()
    );
    let rows = nodes(&lab, survivor)?;
    let new_leader = rows
        .iter()
        .find(|r| r.2 == "leader")
        .context("no leader shown")?;
    assert_ne!(
        new_leader.0, leader,
        "the dead manager is still shown as leader"
    );
    Ok(())
}

#[tokio::test]
async fn joins_are_refused_with_reasons() -> anyhow::Result<()> {
    let lab = Lab::builder("refuse").nodes(4).start().await?;
    ok(&lab, 1, &["swarm", "init"])?;
    let n1 = format!("{}:2377", lab.node(1).addr());
    let worker = token(&lab, 1, "worker")?;

    // Not a token at all.
    let e = refused(
        &lab,
        2,
        &["swarm", "join", "--token", "SWMTKN-1-nope-nope", &n1],
    )?;
    assert!(e.to_lowercase().contains("token"), "{e}");

    // A token rotated out.
    ok(&lab, 1, &["swarm", "join-token", "--rotate", "worker"])?;
    let e = refused(&lab, 2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(e.contains("not valid for this swarm"), "{e}");

    // The token of another cluster: its CA digest doesn't match n1's CA, so
    // the joiner refuses the manager before sending anything.
    ok(&lab, 3, &["swarm", "init"])?;
    let foreign = token(&lab, 3, "worker")?;
    let e = refused(&lab, 2, &["swarm", "join", "--token", &foreign, &n1])?;
    assert!(!e.is_empty());
    let e2 = refused(&lab, 2, &["node", "ls"])?;
    assert!(
        e2.contains("not a swarm manager") || e2.contains("not part of a swarm"),
        "{e2}"
    );

    // A fresh token works, and the worker's role comes from the token.
    let worker = token(&lab, 1, "worker")?;
    let out = ok(&lab, 2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(out.contains("as a worker"), "{out}");
    // Joining twice is refused with docker's words.
    let e = refused(&lab, 2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(e.contains("already part of a swarm"), "{e}");

    // A removed node's certificate is refused from then on: it can no
    // longer heartbeat, so it shows down and stays gone.
    ok(&lab, 1, &["node", "rm", "--force", "n2"])?;
    let rows = nodes(&lab, 1)?;
    assert!(rows.iter().all(|r| r.0 != "n2"), "{rows:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(nodes(&lab, 1)?.iter().all(|r| r.0 != "n2"), "n2 came back");
    Ok(())
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_partitioned_manager_refuses_writes_and_catches_up() -> anyhow::Result<()> {
    let lab = Lab::builder("partition").nodes(3).start().await?;
    ok(
        &lab,
        1,
        &["swarm", "init", "--dispatcher-heartbeat", HEARTBEAT],
    )?;
    let manager = token(&lab, 1, "manager")?;
    let n1 = format!("{}:2377", lab.node(1).addr());
    for k in [2, 3] {
        ok(&lab, k, &["swarm", "join", "--token", &manager, &n1])?;
    }
    eventually(Duration::from_secs(10), "3 managers", || {
        let rows = nodes(&lab, 3)?;
        Ok((rows.iter().filter(|r| r.3 == "manager").count() == 3).then_some(()))
    })
    .await?;
    // Make sure the minority is a follower: n1 leads until something fails.
    let leader = nodes(&lab, 1)?
        .into_iter()
        .find(|r| r.2 == "leader")
        .context("leader")?;
    let cut: usize = if leader.0 == "n3" { 2 } else { 3 };
    let majority: usize = [1, 2, 3]
        .into_iter()
        .find(|k| *k != cut && format!("n{k}") != leader.0)
        .unwrap_or(1);

    lab.cut(cut).await?;
    // The majority keeps committing.
    let marker = format!("s3cr3t-marker-{}", std::process::id());
    ok(
        &lab,
        majority,
        &[
            "node",
            "update",
            "--label-add",
            &format!("secret={marker}"),
            "n1",
        ],
    )?;
    // The minority refuses, saying why.
    let t = Instant::now();
    let e = refused(
        &lab,
        cut,
        &["node", "update", "--label-add", "zone=minority", "n1"],
    )?;
    assert!(e.contains("quorum") || e.contains("leader"), "{e}");
    eprintln!("minority refused the write after {:?}", t.elapsed());

    // Healed, it catches up: a linearizable read on it sees the write.
    lab.heal(cut).await?;
    eventually(
        Duration::from_secs(20),
        "the healed manager sees the majority's write",
        || {
            let out = ok(&lab, cut, &["node", "inspect", "n1", "--format", "json"])?;
            Ok(out.contains(&marker).then_some(()))
        },
    )
    .await?;

    // Cluster state at rest is encrypted: the label's value is nowhere in
    // plaintext under any manager's state directory.
    for k in 1..=3 {
        for file in files(lab.node(k).state_dir())? {
            let bytes = std::fs::read(&file)?;
            let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
            assert!(!found, "{} holds the marker in plaintext", file.display());
        }
    }
    Ok(())
}
