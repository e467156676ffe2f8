//! Services in the control plane across real managers: tasks created per
//! slot (or per node for global services), spread by the scheduler, kept
//! pending with the reason when nothing fits, moved off drained nodes,
//! scaled, and networks refused removal while in use. The nodes' agents run
//! the tasks (`sleep`), so they reach RUNNING; tests/tasks.rs checks what
//! they do there.

use std::{collections::BTreeSet, time::Duration};

use anyhow::ensure;
use shoal_lab::{Formation, Lab, TaskRow, eventually};

fn ps(lab: &Lab, service: &str) -> anyhow::Result<Vec<TaskRow>> {
    lab.service_ps(1, service).map_err(|e| anyhow::anyhow!(e))
}

fn live(rows: &[TaskRow]) -> Vec<&TaskRow> {
    rows.iter().filter(|r| r.desired == "running").collect()
}

#[tokio::test]
async fn services_become_tasks_spread_moved_and_scaled() -> anyhow::Result<()> {
    let lab = Lab::builder("svc").nodes(4).start().await?;
    lab.form_swarm_of(Formation::fast(1, 3))?;
    lab.shoal(1, &["network", "create", "appnet"])?;

    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "appnet",
            "host",
            "sleep",
            "1000",
        ],
    )?;
    let rows = eventually(Duration::from_secs(10), "3 web tasks running", || {
        let rows = ps(&lab, "web")?;
        Ok((live(&rows).iter().filter(|r| r.state == "running").count() == 3).then_some(rows))
    })
    .await?;
    let nodes: BTreeSet<&str> = live(&rows).iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["n1", "n2", "n3"]),
        "not spread: {rows:?}"
    );
    let addrs: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.addresses.iter())
        .map(String::as_str)
        .collect();
    assert_eq!(addrs.len(), 3, "{rows:?}");
    assert!(
        addrs
            .iter()
            .all(|a| a.starts_with("10.0.1.") && *a != "10.0.1.1/24"),
        "{addrs:?}"
    );
    let ls = lab.shoal(1, &["service", "ls"])?;
    assert!(ls.contains("web") && ls.contains("3/3"), "{ls}");

    // Constraints: pinned to the manager; impossible ones wait with a reason.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "mgr",
            "--replicas",
            "2",
            "--constraint",
            "node.role==manager",
            "host",
            "sleep",
            "1000",
        ],
    )?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nowhere",
            "--constraint",
            "node.labels.zone==x",
            "host",
            "true",
        ],
    )?;
    eventually(Duration::from_secs(10), "mgr tasks on n1", || {
        let rows = ps(&lab, "mgr")?;
        Ok((live(&rows).len() == 2 && live(&rows).iter().all(|r| r.node == "n1")).then_some(()))
    })
    .await?;
    let why = eventually(
        Duration::from_secs(10),
        "nowhere pending with a reason",
        || {
            let rows = ps(&lab, "nowhere")?;
            Ok(rows
                .into_iter()
                .find(|r| r.state == "pending" && !r.error.is_empty()))
        },
    )
    .await?;
    assert!(
        why.error.contains("fails constraint node.labels.zone==x"),
        "{why:?}"
    );
    let e = lab.shoal_refused(
        1,
        &[
            "service",
            "create",
            "--name",
            "bad",
            "--constraint",
            "node.rol==worker",
            "host",
            "true",
        ],
    )?;
    assert!(e.contains("--constraint") && e.contains("node.rol"), "{e}");
    let e = lab.shoal_refused(
        1,
        &[
            "service",
            "create",
            "--name",
            "x",
            "--network",
            "nope",
            "host",
            "true",
        ],
    )?;
    assert!(e.contains("--network nope"), "{e}");

    // A network in use cannot be removed; the error names the service.
    let e = lab.shoal_refused(1, &["network", "rm", "appnet"])?;
    assert!(e.contains("in use by service web"), "{e}");

    // Drain n2: its web task stops and the slot is refilled on n1 or n3.
    lab.shoal(1, &["node", "update", "--availability", "drain", "n2"])?;
    eventually(Duration::from_secs(10), "web off n2", || {
        let rows = ps(&lab, "web")?;
        let l = live(&rows);
        Ok(
            (l.len() == 3 && l.iter().all(|r| r.node != "n2" && r.state == "running"))
                .then_some(()),
        )
    })
    .await?;
    lab.shoal(1, &["node", "update", "--availability", "active", "n2"])?;

    // A global service follows a node that joins later.
    lab.shoal(
        1,
        &[
            "service", "create", "-d", "--name", "agent", "--mode", "global", "host", "sleep",
            "1000",
        ],
    )?;
    eventually(Duration::from_secs(10), "agent on 3 nodes", || {
        Ok((live(&ps(&lab, "agent")?).len() == 3).then_some(()))
    })
    .await?;
    let worker = lab.join_token(1, "worker")?;
    lab.shoal(
        4,
        &["swarm", "join", "--token", &worker, &lab.cluster_addr(1)],
    )?;
    eventually(Duration::from_secs(10), "agent on n4 too", || {
        let rows = ps(&lab, "agent")?;
        Ok(live(&rows).iter().any(|r| r.node == "n4").then_some(()))
    })
    .await?;

    // Scale down, then remove: the network is free again.
    lab.shoal(1, &["service", "scale", "--detach", "web=1"])?;
    eventually(Duration::from_secs(10), "web at 1", || {
        Ok((live(&ps(&lab, "web")?).len() == 1).then_some(()))
    })
    .await?;
    lab.shoal(1, &["service", "rm", "web"])?;
    eventually(Duration::from_secs(10), "appnet removable", || {
        Ok(lab.shoal(1, &["network", "rm", "appnet"]).ok())
    })
    .await?;
    let e = lab.shoal_refused(1, &["service", "ps", "web"])?;
    ensure!(e.contains("service web not found"), "{e}");
    Ok(())
}

/// Nodes report their CPUs and memory; a task reserving more than any node
/// has stays pending with swarm's message, and other services still run.
/// The image catalogue is empty, so an image service is created unpinned
/// with swarm's warning.
#[tokio::test]
async fn reservations_beyond_every_node_stay_pending() -> anyhow::Result<()> {
    let lab = Lab::builder("svc-res").nodes(2).start().await?;
    lab.form_swarm_of(Formation::fast(1, 2))?;
    let node = |k: usize| -> anyhow::Result<serde_json::Value> {
        let out = lab.shoal(1, &["node", "inspect", &format!("n{k}")])?;
        Ok(serde_json::from_str(&out)?)
    };
    for k in [1, 2] {
        let reported = eventually(Duration::from_secs(10), "resources reported", || {
            let v = node(k)?;
            let r = &v[0]["Description"]["Resources"];
            Ok((r["NanoCPUs"].as_u64().unwrap_or(0) >= 1_000_000_000
                && r["MemoryBytes"].as_u64().unwrap_or(0) > 0)
                .then_some(()))
        })
        .await;
        reported?;
    }
    let pretty = lab.shoal(1, &["node", "inspect", "--pretty", "n1"])?;
    ensure!(pretty.contains("Resources:\n CPUs:"), "{pretty}");

    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "huge",
            "--reserve-memory",
            "1p",
            "host",
            "sleep",
            "1000",
        ],
    )?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "small",
            "--reserve-memory",
            "8m",
            "--replicas",
            "2",
            "host",
            "sleep",
            "1000",
        ],
    )?;
    let why = eventually(
        Duration::from_secs(10),
        "huge pending with a reason",
        || {
            let rows = ps(&lab, "huge")?;
            Ok(rows
                .into_iter()
                .find(|r| r.state == "pending" && !r.error.is_empty()))
        },
    )
    .await?;
    ensure!(
        why.error == "no suitable node (insufficient resources on 2 nodes)",
        "{why:?}"
    );
    eventually(Duration::from_secs(20), "small runs", || {
        let rows = ps(&lab, "small")?;
        Ok((rows.iter().filter(|r| r.state == "running").count() == 2).then_some(()))
    })
    .await?;
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.shoal(1, &["service", "inspect", "huge"])?)?;
    let spec = &inspect[0]["Spec"]["TaskTemplate"];
    ensure!(spec["ContainerSpec"]["Image"] == "host", "{inspect:#}");
    ensure!(
        spec["Resources"]["Reservations"]["MemoryBytes"] == 1u64 << 50,
        "{inspect:#}"
    );

    // An image no node registered: created unpinned, with swarm's warning.
    let out = lab
        .command(1, shoal_lab::shoal_path()?)
        .args(["service", "create", "-d", "--name", "img", "busybox:1.36"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        stderr.contains("image busybox:1.36 could not be accessed on a registry to record"),
        "{stderr}"
    );
    let ls = lab.shoal(1, &["service", "ls"])?;
    ensure!(ls.contains("busybox:1.36") && ls.contains("IMAGE"), "{ls}");
    lab.down()?;
    Ok(())
}
