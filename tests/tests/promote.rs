//! `shoal node promote` of a worker, in place as swarm does it: the worker
//! gets a manager certificate over its session, starts its own manager,
//! joins Raft, and stays a manager across a restart of its shoald; demoted,
//! it goes back to being a worker in place. Needs root and built
//! `shoald`/`shoal`.

use std::time::Duration;

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

/// `node ls` on node `k` as (hostname, status, manager status, role),
/// sorted by hostname.
fn nodes(lab: &Lab, k: usize) -> anyhow::Result<Vec<(String, String, String, String)>> {
    lab.node_ls(k).map_err(|e| anyhow::anyhow!(e))
}

fn row<'a>(
    rows: &'a [(String, String, String, String)],
    host: &str,
) -> Option<&'a (String, String, String, String)> {
    rows.iter().find(|r| r.0 == host)
}

/// n2 as a manager everywhere it is asked: n1 leads, n2 is a reachable
/// manager, both on the node asked.
fn promoted(lab: &Lab, k: usize) -> anyhow::Result<Option<()>> {
    let rows = nodes(lab, k)?;
    let n1 = row(&rows, "n1").map(|r| r.2.as_str());
    let n2 = row(&rows, "n2").map(|r| (r.2.as_str(), r.3.as_str()));
    Ok((n1 == Some("leader") && n2 == Some(("reachable", "manager"))).then_some(()))
}

#[tokio::test]
async fn a_worker_promoted_in_place_becomes_a_lasting_manager_and_back() -> anyhow::Result<()> {
    let lab = Lab::builder("promo").nodes(3).start().await?;
    // Heartbeats every second: a promotion is seen within about one.
    let joined = lab.form_swarm(1)?;
    for (k, out) in (2..).zip(&joined) {
        ensure!(out.contains("as a worker"), "n{k}: {out}");
    }
    eventually(Duration::from_secs(10), "3 ready nodes", || {
        let rows = nodes(&lab, 1)?;
        Ok((rows.len() == 3 && rows.iter().all(|r| r.1 == "ready")).then_some(()))
    })
    .await?;
    let e = lab.shoal_refused(2, &["node", "ls"])?;
    assert!(e.contains("not a swarm manager"), "{e}");

    // A node that does not heartbeat cannot take its part: refused, saying
    // what to do.
    lab.stop(3).await?;
    eventually(Duration::from_secs(15), "n3 down", || {
        let rows = nodes(&lab, 1)?;
        Ok(row(&rows, "n3")
            .is_some_and(|r| r.1 == "down")
            .then_some(()))
    })
    .await?;
    let e = lab.shoal_refused(1, &["node", "promote", "n3"])?;
    assert!(e.contains("is down") && e.contains("start it"), "{e}");
    let rows = nodes(&lab, 1)?;
    assert_eq!(
        row(&rows, "n3").map(|r| r.3.as_str()),
        Some("worker"),
        "{rows:?}"
    );

    // Promoted: recorded at once, a Raft voter soon after.
    let out = lab.shoal(1, &["node", "promote", "n2"])?;
    assert!(out.contains("Node n2 promoted to a manager"), "{out}");
    eventually(
        Duration::from_secs(30),
        "n2 a reachable manager on n2",
        || Ok(promoted(&lab, 2)?),
    )
    .await?;
    promoted(&lab, 1)?.context("n1 disagrees on n2")?;

    // A write through n2 (forwarded to the leader) is seen on n1.
    lab.shoal(
        2,
        &["node", "update", "--label-add", "promoted-by=n2", "n1"],
    )?;
    let detail = lab.shoal(1, &["node", "inspect", "n1", "--format", "json"])?;
    assert!(detail.contains("promoted-by"), "{detail}");

    // Restarted, n2 resumes as a manager from its own disk.
    lab.stop(2).await?;
    lab.start(2).await?;
    eventually(
        Duration::from_secs(30),
        "restarted n2 a reachable manager",
        || Ok(promoted(&lab, 2)?),
    )
    .await?;
    lab.shoal(
        2,
        &["node", "update", "--label-add", "after-restart=yes", "n1"],
    )?;
    let detail = lab.shoal(1, &["node", "inspect", "n1", "--format", "json"])?;
    assert!(detail.contains("after-restart"), "{detail}");

    // Demoted, it goes back to being a worker in place, and can be
    // promoted again.
    lab.shoal(1, &["node", "demote", "n2"])?;
    eventually(Duration::from_secs(30), "n2 a ready worker again", || {
        let rows = nodes(&lab, 1)?;
        let n2 = row(&rows, "n2").map(|r| (r.1.as_str(), r.2.as_str(), r.3.as_str()));
        let refused = lab.shoal_output(2, &["node", "ls"], b"")?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        Ok(
            (n2 == Some(("ready", "", "worker")) && stderr.contains("not a swarm manager"))
                .then_some(()),
        )
    })
    .await?;
    lab.shoal(1, &["node", "promote", "n2"])?;
    eventually(
        Duration::from_secs(30),
        "n2 a reachable manager again",
        || Ok(promoted(&lab, 2)?),
    )
    .await?;
    lab.shoal(2, &["node", "update", "--label-add", "again=yes", "n1"])?;
    let detail = lab.shoal(1, &["node", "inspect", "n1", "--format", "json"])?;
    assert!(detail.contains("again"), "{detail}");
    Ok(())
}
