//! The synthetic nodes that `cargo xtask bench memory` registers by the
//! dozen: they must join through the real path, be listed and ready in
//! `node ls`, and receive the tasks the scheduler gives them on their
//! assignment stream, or the bench measures a cluster without them.

use std::time::Duration;

use anyhow::ensure;
use shoal_lab::{
    Lab, eventually,
    synthetic::{SyntheticNodes, SyntheticSpec},
};

const NODES: usize = 3;

#[tokio::test]
async fn synthetic_nodes_join_are_listed_and_get_assignments() -> anyhow::Result<()> {
    let lab = Lab::builder("synth").nodes(1).client(true).start().await?;
    lab.form_swarm(1)?;
    // The manager runs nothing: every task must go to a synthetic node.
    lab.shoal(1, &["node", "update", "--availability", "drain", "n1"])?;
    let synth = SyntheticNodes::start(SyntheticSpec {
        netns: lab.client_netns().expect("client namespace"),
        managers: vec![lab.cluster_addr(1)],
        token: lab.join_token(1, "worker")?,
        count: NODES,
        prefix: "synth".into(),
        advertise: lab.client_addr(),
    })
    .await?;
    ensure!(synth.ids().len() == NODES, "ids: {:?}", synth.ids());

    let rows = lab.node_ls(1).map_err(|e| anyhow::anyhow!(e))?;
    for i in 1..=NODES {
        let host = format!("synth-{i}");
        let row = rows.iter().find(|r| r.0 == host);
        ensure!(
            row.is_some_and(|r| r.1 == "ready" && r.3 == "worker"),
            "{host} not a ready worker in node ls: {rows:?}"
        );
    }

    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "spread",
            "--replicas",
            "6",
            "host",
            "sleep",
            "1000",
        ],
    )?;
    // Through the stream, not as a first picture: the streams were open.
    eventually(
        Duration::from_secs(20),
        "6 tasks on 3 nodes' streams",
        || {
            let seen = synth.first_seen("spread");
            let tasks: usize = synth.received().iter().map(|r| r.tasks).sum();
            Ok((seen.iter().all(Option::is_some) && tasks == 6).then_some(()))
        },
    )
    .await?;
    // Never started: the control plane still sees them assigned, not running.
    let ps = lab
        .service_ps(1, "spread")
        .map_err(|e| anyhow::anyhow!(e))?;
    ensure!(
        ps.len() == 6
            && ps
                .iter()
                .all(|t| t.node.starts_with("synth-") && t.state == "assigned"),
        "{ps:?}"
    );

    // Still heartbeating after several periods (1 s here): not marked down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows = lab.node_ls(1).map_err(|e| anyhow::anyhow!(e))?;
    ensure!(
        rows.iter()
            .filter(|r| r.0.starts_with("synth-"))
            .all(|r| r.1 == "ready"),
        "{rows:?}"
    );
    drop(synth);
    lab.down()?;
    Ok(())
}
