//! The control plane across real nodes: `shoal swarm init/join` over mutual
//! TLS on 2377, Raft among three managers, workers' sessions, and the
//! refusals an operator must get. Needs root and built `shoald`/`shoal`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{Lab, eventually};

/// Heartbeats every second: a silent node is down after ~3 s.
const HEARTBEAT: &str = "1s";

fn token(lab: &Lab, k: usize, role: &str) -> anyhow::Result<String> {
    Ok(lab.join_token(k, role)?)
}

/// `node ls` as (hostname, status, availability, manager status, role),
/// sorted by hostname: what every manager must agree on.
fn nodes(lab: &Lab, k: usize) -> anyhow::Result<Vec<(String, String, String, String)>> {
    lab.node_ls(k).map_err(|e| anyhow::anyhow!(e))
}

/// n1 inits; n2, n3 join as managers; n4, n5 as workers.
async fn form(lab: &Lab) -> anyhow::Result<()> {
    let init = lab.shoal(1, &["swarm", "init", "--dispatcher-heartbeat", HEARTBEAT])?;
    ensure!(init.contains("Swarm initialized"), "{init}");
    let (manager, worker) = (token(lab, 1, "manager")?, token(lab, 1, "worker")?);
    ensure!(manager.starts_with("SWMTKN-1-") && worker.starts_with("SWMTKN-1-"));
    ensure!(manager != worker);
    let n1 = lab.cluster_addr(1);
    for k in [2, 3] {
        let out = lab.shoal(k, &["swarm", "join", "--token", &manager, &n1])?;
        ensure!(out.contains("as a manager"), "n{k}: {out}");
    }
    for k in [4, 5] {
        let out = lab.shoal(k, &["swarm", "join", "--token", &worker, &n1])?;
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
    let e = lab.shoal_refused(4, &["node", "ls"])?;
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
            Ok(lab
                .shoal_output(
                    survivor,
                    &["node", "update", "--label-add", "zone=a", "n4"],
                    b"",
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
    lab.shoal(1, &["swarm", "init"])?;
    let n1 = lab.cluster_addr(1);
    let worker = token(&lab, 1, "worker")?;

    // Not a token at all.
    let e = lab.shoal_refused(2, &["swarm", "join", "--token", "SWMTKN-1-nope-nope", &n1])?;
    assert!(e.to_lowercase().contains("token"), "{e}");

    // A token rotated out.
    lab.shoal(1, &["swarm", "join-token", "--rotate", "worker"])?;
    let e = lab.shoal_refused(2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(e.contains("not valid for this swarm"), "{e}");

    // The token of another cluster: its CA digest doesn't match n1's CA, so
    // the joiner refuses the manager before sending anything.
    lab.shoal(3, &["swarm", "init"])?;
    let foreign = token(&lab, 3, "worker")?;
    let e = lab.shoal_refused(2, &["swarm", "join", "--token", &foreign, &n1])?;
    assert!(!e.is_empty());
    let e2 = lab.shoal_refused(2, &["node", "ls"])?;
    assert!(
        e2.contains("not a swarm manager") || e2.contains("not part of a swarm"),
        "{e2}"
    );

    // A fresh token works, and the worker's role comes from the token.
    let worker = token(&lab, 1, "worker")?;
    let out = lab.shoal(2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(out.contains("as a worker"), "{out}");
    // Joining twice is refused with docker's words.
    let e = lab.shoal_refused(2, &["swarm", "join", "--token", &worker, &n1])?;
    assert!(e.contains("already part of a swarm"), "{e}");

    // A removed node's certificate is refused from then on: it can no
    // longer heartbeat, so it shows down and stays gone.
    lab.shoal(1, &["node", "rm", "--force", "n2"])?;
    let rows = nodes(&lab, 1)?;
    assert!(rows.iter().all(|r| r.0 != "n2"), "{rows:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(nodes(&lab, 1)?.iter().all(|r| r.0 != "n2"), "n2 came back");
    Ok(())
}

#[tokio::test]
async fn a_partitioned_manager_refuses_writes_and_catches_up() -> anyhow::Result<()> {
    let lab = Lab::builder("partition").nodes(3).start().await?;
    lab.form_swarm(3)?;
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
    lab.shoal(
        majority,
        &[
            "node",
            "update",
            "--label-add",
            &format!("secret={marker}"),
            "n1",
        ],
    )?;
    let payload = format!("p4ssw0rd-{marker}");
    let id = lab.shoal_stdin(
        majority,
        &["secret", "create", "db-password", "-"],
        payload.as_bytes(),
    )?;
    ensure!(id.trim().len() == 25, "secret create printed {id:?}");
    // The minority refuses, saying why.
    let t = Instant::now();
    let e = lab.shoal_refused(
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
            let out = lab.shoal(cut, &["node", "inspect", "n1", "--format", "json"])?;
            Ok(out.contains(&marker).then_some(()))
        },
    )
    .await?;
    let listed = lab.shoal(cut, &["secret", "ls", "--format", "json"])?;
    assert!(listed.contains("\"db-password\""), "{listed}");
    // The payload never comes back out through the API.
    let shown = lab.shoal(cut, &["secret", "inspect", "db-password"])?;
    assert!(
        !shown.contains(&payload) && shown.contains(&payload.len().to_string()),
        "{shown}"
    );

    // Cluster state at rest is encrypted: neither the label's value nor the
    // secret's payload (as bytes or as the hex the state machine keeps) is
    // in plaintext under any manager's state directory.
    let hex: String = payload.bytes().map(|b| format!("{b:02x}")).collect();
    for k in 1..=3 {
        let files = shoal_lab::files_under(lab.node(k).state_dir())?;
        ensure!(files.len() > 2, "n{k}: no state on disk? {files:?}");
        for file in files {
            let bytes = std::fs::read(&file)?;
            for needle in [marker.as_bytes(), hex.as_bytes()] {
                let found = bytes.windows(needle.len()).any(|w| w == needle);
                assert!(
                    !found,
                    "{} holds cluster state in plaintext",
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// What the writer saw of one `secret create`.
struct Attempt {
    name: String,
    acked: bool,
    /// When the attempt ended.
    at: Instant,
}

/// Names in `secret ls --format json` on node `k`.
fn secret_names(lab: &Lab, k: usize) -> anyhow::Result<Vec<String>> {
    let out = lab.shoal(k, &["secret", "ls", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("secret ls: {out}"))?;
    v.as_array()
        .context("secret ls --format json: not an array")?
        .iter()
        .map(|s| {
            s["name"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no name in {s}"))
        })
        .collect()
}

#[tokio::test]
async fn a_leader_killed_under_write_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };

    let lab = Arc::new(Lab::builder("failover").nodes(3).start().await?);
    lab.form_swarm(3)?;
    eventually(Duration::from_secs(10), "3 managers", || {
        let rows = nodes(&lab, 1)?;
        Ok((rows.iter().filter(|r| r.3 == "manager").count() == 3).then_some(()))
    })
    .await?;
    let leader: usize = nodes(&lab, 1)?
        .into_iter()
        .find(|r| r.2 == "leader")
        .context("leader")?
        .0[1..]
        .parse()?;

    // One client writing without pause, round-robin over the managers (so
    // most writes are forwarded to the leader), never retrying a name: an
    // unacknowledged write may or may not have committed, an acknowledged
    // one must have.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (lab, stop, acked_so_far) = (
            Arc::clone(&lab),
            Arc::clone(&stop),
            Arc::clone(&acked_so_far),
        );
        std::thread::spawn(move || -> anyhow::Result<Vec<Attempt>> {
            let mut log = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let k = 1 + i % 3;
                let name = format!("w{i:05}");
                let out =
                    lab.shoal_output(k, &["secret", "create", &name, "/proc/self/cmdline"], b"")?;
                if out.status.success() {
                    acked_so_far.fetch_add(1, Ordering::Relaxed);
                }
                log.push(Attempt {
                    name,
                    acked: out.status.success(),
                    at: Instant::now(),
                });
                i += 1;
            }
            Ok(log)
        })
    };
    // Enough acknowledged writes before the kill to prove something, however
    // slow the machine is today.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warmup = Instant::now();
    while acked_so_far.load(Ordering::Relaxed) < 20 && warmup.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = Instant::now();
    lab.kill(leader).await?;
    // Writes continue until survivors have acknowledged for a while.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    let log = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;

    let survivors: Vec<usize> = [1, 2, 3].into_iter().filter(|k| *k != leader).collect();
    let acked: Vec<&str> = log
        .iter()
        .filter(|a| a.acked)
        .map(|a| a.name.as_str())
        .collect();
    let before = log.iter().filter(|a| a.acked && a.at < killed_at).count();
    let first_after = log
        .iter()
        .find(|a| a.acked && a.at > killed_at)
        .map(|a| a.at - killed_at)
        .context("no write acknowledged after the leader was killed")?;
    eprintln!(
        "{} attempts, {} acknowledged ({before} before the kill); leader n{leader} killed: \
         first acknowledged write {first_after:?} later",
        log.len(),
        acked.len()
    );
    ensure!(
        before >= 10,
        "too few writes before the kill ({before}) to prove anything"
    );

    // The killed manager restarts from its disk and catches up; then all
    // three hold every acknowledged write, exactly once, and nothing that
    // was never attempted.
    lab.start(leader).await?;
    let attempted: std::collections::BTreeSet<&str> = log.iter().map(|a| a.name.as_str()).collect();
    let reference = secret_names(&lab, survivors[0])?;
    for k in [survivors[0], survivors[1], leader] {
        let names = eventually(Duration::from_secs(20), "managers agree", || {
            let names = secret_names(&lab, k)?;
            Ok((names.len() == reference.len()).then_some(names))
        })
        .await?;
        let set: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(set.len(), names.len(), "n{k}: a write applied twice");
        for a in &acked {
            assert!(set.contains(a), "n{k}: acknowledged write {a} lost");
        }
        for n in &set {
            assert!(attempted.contains(n), "n{k}: {n} was never written");
        }
        let mut sorted = names.clone();
        sorted.sort();
        let mut want = reference.clone();
        want.sort();
        assert_eq!(sorted, want, "n{k} disagrees with n{}", survivors[0]);
    }
    Ok(())
}
