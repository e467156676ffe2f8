//! Tasks running for real across lab nodes: spread over three nodes on an
//! overlay, reachable from a task on another node by their overlay address
//! (with a 1400-byte payload), each node's FDB holding exactly the remote
//! endpoints; a killed task restarted by its policy; a drained node's tasks
//! moved; a dead node's endpoints gone from the others and its tasks
//! rescheduled.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_lab::{Lab, TaskRow, eventually, task_pid};
use shoal_overlay::Driver;

fn ps(lab: &Lab, service: &str) -> anyhow::Result<Vec<TaskRow>> {
    lab.service_ps(1, service).map_err(|e| anyhow::anyhow!(e))
}

fn running(tasks: &[TaskRow]) -> Vec<&TaskRow> {
    tasks.iter().filter(|t| t.running()).collect()
}

/// The overlay addresses node `k` has programmed as remote endpoints.
async fn remotes(lab: &Lab, k: usize, vni: u32) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    let driver = Driver::in_netns(format!("/run/netns/{}", lab.node(k).netns()))?;
    let r = driver.remotes(vni).await?;
    // Halves on purpose: other nodes' bridges (02:53:…, FDB only) and VIPs
    // answered by this node's bridge (neighbour only); anything else is an
    // endpoint programmed half-way.
    let bridge = |m: &shoal_overlay::MacAddr| m.octets()[..2] == [0x02, 0x53];
    ensure!(
        r.fdb_only.iter().all(|f| bridge(&f.mac))
            && r.neighbours_only.iter().all(|n| bridge(&n.mac)),
        "node n{k}: half-programmed entries {r:?}"
    );
    Ok(r.endpoints.iter().map(|e| e.ip).collect())
}

#[tokio::test]
async fn tasks_run_reach_each_other_and_recover() -> anyhow::Result<()> {
    let echo = env!("CARGO_BIN_EXE_lab-echo");
    let lab = Lab::builder("tasks").nodes(3).start().await?;
    lab.form_swarm(1)?;
    lab.shoal(1, &["network", "create", "-d", "overlay", "appnet"])?;
    let inspect: Value = serde_json::from_str(&lab.shoal(1, &["network", "inspect", "appnet"])?)?;
    let net = inspect
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or(&inspect);
    let vni = net["vni"].as_u64().context("network inspect: vni")? as u32;

    // Three echo servers, one per node (the scheduler spreads them).
    let out = lab.shoal(
        1,
        &[
            "service",
            "create",
            "--name",
            "srv",
            "--replicas",
            "3",
            "--network",
            "appnet",
            "--restart-delay",
            "1s",
            "host",
            echo,
            "serve",
            "7000",
        ],
    )?;
    ensure!(out.contains("converged"), "create did not converge: {out}");
    let tasks = ps(&lab, "srv")?;
    let live = running(&tasks);
    let nodes: BTreeSet<&str> = live.iter().map(|t| t.node.as_str()).collect();
    ensure!(
        nodes == BTreeSet::from(["n1", "n2", "n3"]),
        "not spread: {tasks:?}"
    );
    let ip_on = |tasks: &[TaskRow], node: &str| -> anyhow::Result<Ipv4Addr> {
        running(tasks)
            .iter()
            .find(|t| t.node == node)
            .and_then(|t| t.ip())
            .with_context(|| format!("no running srv task with an address on {node}: {tasks:?}"))
    };

    // Each node programs exactly the other nodes' endpoints.
    for (k, me) in [(1, "n1"), (2, "n2"), (3, "n3")] {
        let want: BTreeSet<Ipv4Addr> = live
            .iter()
            .filter(|t| t.node != me)
            .filter_map(|t| t.ip())
            .collect();
        remotes_until(&lab, k, vni, Duration::from_secs(15), |got| *got == want)
            .await
            .with_context(|| format!("n{k}: FDB should hold {want:?}"))?;
    }

    // A task on n1 talks TCP to the server on n3 by its overlay address;
    // 1400 bytes cross in one write (the overlay MTU is 1450).
    let target = format!("{}:7000", ip_on(&tasks, "n3")?);
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "cli",
            "--constraint",
            "node.hostname==n1",
            "--network",
            "appnet",
            "--restart-condition",
            "none",
            "host",
            echo,
            "send",
            &target,
            "1400",
        ],
    )?;
    let cli = eventually(Duration::from_secs(30), "the client task ended", || {
        let t = ps(&lab, "cli")?;
        Ok(t.into_iter()
            .find(|t| matches!(t.state.as_str(), "complete" | "failed" | "rejected")))
    })
    .await?;
    ensure!(
        cli.state == "complete",
        "client task on n1 → {target}: {cli:?}"
    );

    // Kill the server process on n2: the slot gets a new task.
    let victim = live
        .iter()
        .find(|t| t.node == "n2")
        .context("srv task on n2")?;
    let pid = task_pid(&victim.name, "serve 7000")
        .with_context(|| format!("no process for {}", victim.name))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let (victim_id, victim_name) = (victim.id.clone(), victim.name.clone());
    eventually(Duration::from_secs(20), "the killed task replaced", || {
        let t = ps(&lab, "srv")?;
        let old_failed = t
            .iter()
            .any(|x| x.id == victim_id && x.state == "failed" && x.error.contains("SIGKILL"));
        let replaced = running(&t)
            .iter()
            .any(|x| x.name == victim_name && x.id != victim_id);
        Ok((old_failed && replaced && running(&t).len() == 3).then_some(()))
    })
    .await?;

    // Drain n2: its task moves to n1 or n3.
    lab.shoal(1, &["node", "update", "--availability", "drain", "n2"])?;
    eventually(Duration::from_secs(20), "srv off n2", || {
        let t = ps(&lab, "srv")?;
        let r = running(&t);
        let gone = t.iter().all(|x| x.node != "n2" || x.state != "running");
        Ok((r.len() == 3 && gone).then_some(()))
    })
    .await?;
    lab.shoal(1, &["node", "update", "--availability", "active", "n2"])?;

    // Kill n3 (daemon and its link): its endpoints leave n1's FDB and its
    // task is rescheduled.
    let tasks = ps(&lab, "srv")?;
    let n3_ips: BTreeSet<Ipv4Addr> = running(&tasks)
        .iter()
        .filter(|t| t.node == "n3")
        .filter_map(|t| t.ip())
        .collect();
    ensure!(!n3_ips.is_empty(), "no task left on n3: {tasks:?}");
    let before = remotes(&lab, 1, vni).await?;
    ensure!(
        n3_ips.is_subset(&before),
        "n1 lacks n3's endpoints before the kill: {before:?}"
    );
    let killed = Instant::now();
    lab.kill(3).await?;
    lab.cut(3).await?;
    remotes_until(&lab, 1, vni, Duration::from_secs(20), |got| {
        got.is_disjoint(&n3_ips)
    })
    .await
    .context("n3's endpoints should leave n1's FDB")?;
    println!(
        "n3's endpoints left n1's FDB {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    eventually(Duration::from_secs(30), "n3's task rescheduled", || {
        let t = ps(&lab, "srv")?;
        let r = running(&t);
        Ok((r.len() == 3 && r.iter().all(|x| x.node != "n3")).then_some(()))
    })
    .await?;
    let t = ps(&lab, "srv")?;
    if running(&t).iter().any(|x| x.node == "n3") {
        bail!("a task still counted as running on dead n3: {t:?}");
    }

    // An image reference docker would refuse is refused, naming it; one
    // this node cannot run is rejected on the node, naming the image.
    let e = lab.shoal_refused(1, &["service", "create", "--name", "r", "Busybox", "true"])?;
    ensure!(
        e.contains("IMAGE \"Busybox\": repository name must be lowercase"),
        "{e}"
    );
    let e = lab.shoal_refused(1, &["service", "create", "--name", "r"])?;
    ensure!(e.contains("requires at least 1 argument"), "{e}");
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nofs",
            "--restart-condition",
            "none",
            "shoal-lab/absent:1",
            "true",
        ],
    )?;
    let rejected = eventually(Duration::from_secs(20), "nofs rejected", || {
        Ok(ps(&lab, "nofs")?
            .into_iter()
            .find(|t| t.state == "rejected"))
    })
    .await?;
    ensure!(
        rejected.error.contains("shoal-lab/absent:1"),
        "{rejected:?}"
    );

    // Removing the services removes the tasks and, with the last task on
    // the network, the overlay's devices on every node still up.
    for s in ["srv", "cli", "nofs"] {
        lab.shoal(1, &["service", "rm", s])?;
    }
    for k in [1, 2] {
        let driver = Driver::in_netns(format!("/run/netns/{}", lab.node(k).netns()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match driver.remotes(vni).await {
                Err(shoal_overlay::OverlayError::NetworkMissing { .. }) => break,
                other if Instant::now() > deadline => {
                    bail!("n{k}: overlay {vni} still present after service rm: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    // Each serving task first waits for every node to drop it from its
    // mesh (5 s at most, a node that never answers) and drains (2 s).
    eventually(
        Duration::from_secs(15),
        "no server process outlives its service",
        || {
            let left: Vec<&str> = ["srv.1", "srv.2", "srv.3"]
                .into_iter()
                .filter(|t| task_pid(t, "serve 7000").is_some())
                .collect();
            if left.is_empty() {
                return Ok(Some(()));
            }
            Err(format!("still running: {left:?}").into())
        },
    )
    .await?;
    Ok(())
}

/// Polls node `k`'s remote endpoints until `done` holds for them.
async fn remotes_until(
    lab: &Lab,
    k: usize,
    vni: u32,
    within: Duration,
    done: impl Fn(&BTreeSet<Ipv4Addr>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let got = remotes(lab, k, vni).await;
        if let Ok(got) = &got
            && done(got)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not within {within:?}; last: {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
