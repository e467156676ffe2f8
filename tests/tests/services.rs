//! Services in the control plane across real managers: tasks created per
//! slot (or per node for global services), spread by the scheduler, kept
//! pending with the reason when nothing fits, moved off drained nodes,
//! scaled, and networks refused removal while in use. The nodes' agents run
//! the tasks (`sleep`), so they reach RUNNING; tests/tasks.rs checks what
//! they do there.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{Lab, eventually};

/// (name, node, desired, current, error, addresses) of a service's tasks.
type Row = (String, String, String, String, String, Vec<String>);

fn ps(lab: &Lab, service: &str) -> anyhow::Result<Vec<Row>> {
    let out = lab.shoal(1, &["service", "ps", service, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("service ps: {out}"))?;
    v.as_array()
        .context("service ps --format json: not an array")?
        .iter()
        .map(|t| {
            let s = |k: &str| -> anyhow::Result<String> {
                Ok(t[k]
                    .as_str()
                    .with_context(|| format!("{k} in {t}"))?
                    .to_owned())
            };
            let addrs = t["addresses"]
                .as_array()
                .context("addresses")?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            Ok((
                s("name")?,
                s("node")?,
                s("desired_state")?,
                s("current_state")?,
                s("error")?,
                addrs,
            ))
        })
        .collect()
}

fn live(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| r.2 == "running").collect()
}

#[tokio::test]
async fn services_become_tasks_spread_moved_and_scaled() -> anyhow::Result<()> {
    let lab = Lab::builder("svc").nodes(4).start().await?;
    lab.shoal(1, &["swarm", "init", "--dispatcher-heartbeat", "1s"])?;
    let worker = lab.shoal(1, &["swarm", "join-token", "-q", "worker"])?;
    let n1 = format!("{}:2377", lab.node(1).addr());
    for k in [2, 3] {
        lab.shoal(k, &["swarm", "join", "--token", worker.trim(), &n1])?;
    }
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
            "--",
            "sleep",
            "1000",
        ],
    )?;
    let rows = eventually(Duration::from_secs(10), "3 web tasks running", || {
        let rows = ps(&lab, "web")?;
        Ok((live(&rows).iter().filter(|r| r.3 == "running").count() == 3).then_some(rows))
    })
    .await?;
    let nodes: BTreeSet<&str> = live(&rows).iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["n1", "n2", "n3"]),
        "not spread: {rows:?}"
    );
    let addrs: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.5.iter())
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
            "--",
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
            "--",
            "true",
        ],
    )?;
    eventually(Duration::from_secs(10), "mgr tasks on n1", || {
        let rows = ps(&lab, "mgr")?;
        Ok((live(&rows).len() == 2 && live(&rows).iter().all(|r| r.1 == "n1")).then_some(()))
    })
    .await?;
    let why = eventually(
        Duration::from_secs(10),
        "nowhere pending with a reason",
        || {
            let rows = ps(&lab, "nowhere")?;
            Ok(rows
                .into_iter()
                .find(|r| r.3 == "pending" && !r.4.is_empty()))
        },
    )
    .await?;
    assert!(
        why.4.contains("fails constraint node.labels.zone==x"),
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
            "--",
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
            "--",
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
        Ok((l.len() == 3 && l.iter().all(|r| r.1 != "n2" && r.3 == "running")).then_some(()))
    })
    .await?;
    lab.shoal(1, &["node", "update", "--availability", "active", "n2"])?;

    // A global service follows a node that joins later.
    lab.shoal(
        1,
        &[
            "service", "create", "-d", "--name", "agent", "--mode", "global", "--", "sleep", "1000",
        ],
    )?;
    eventually(Duration::from_secs(10), "agent on 3 nodes", || {
        Ok((live(&ps(&lab, "agent")?).len() == 3).then_some(()))
    })
    .await?;
    lab.shoal(4, &["swarm", "join", "--token", worker.trim(), &n1])?;
    eventually(Duration::from_secs(10), "agent on n4 too", || {
        let rows = ps(&lab, "agent")?;
        Ok(live(&rows).iter().any(|r| r.1 == "n4").then_some(()))
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
