//! Overlay networks in the control plane: IPAM from the default pool, the
//! ingress network made at init, refusals that name the problem, no subnet
//! or VNI handed out twice even when managers race, and allocations that
//! survive a manager restart. Needs root and built `shoald`/`shoal`.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{Formation, Lab, eventually};

/// (name, subnet, vni, gateway) of every network, via node `k`.
fn networks(lab: &Lab, k: usize) -> anyhow::Result<Vec<(String, String, u64, String)>> {
    let out = lab.shoal(k, &["network", "ls", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("network ls: {out}"))?;
    let mut rows = v
        .as_array()
        .context("network ls --format json: not an array")?
        .iter()
        .map(|n| {
            Ok((
                n["name"].as_str().context("name")?.to_owned(),
                n["subnet"].as_str().context("subnet")?.to_owned(),
                n["vni"].as_u64().context("vni")?,
                n["gateway"].as_str().context("gateway")?.to_owned(),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    rows.sort();
    Ok(rows)
}

#[tokio::test]
async fn overlay_networks_are_allocated_once_and_refused_clearly() -> anyhow::Result<()> {
    let lab = std::sync::Arc::new(Lab::builder("nets").nodes(3).start().await?);
    lab.form_swarm_of(Formation::plain(3, 3))?;

    // The routing mesh's network exists from the start, as in swarm.
    let ingress = eventually(Duration::from_secs(10), "ingress network", || {
        Ok(networks(&lab, 2)?.into_iter().find(|n| n.0 == "ingress"))
    })
    .await?;
    assert_eq!(
        ingress,
        (
            "ingress".into(),
            "10.0.0.0/24".into(),
            4096,
            "10.0.0.1".into()
        )
    );

    let id = lab.shoal(1, &["network", "create", "-d", "overlay", "appnet"])?;
    ensure!(id.trim().len() == 25, "network create printed {id:?}");
    let app = networks(&lab, 3)?
        .into_iter()
        .find(|n| n.0 == "appnet")
        .context("appnet on n3")?;
    assert_eq!(
        app,
        (
            "appnet".into(),
            "10.0.1.0/24".into(),
            4097,
            "10.0.1.1".into()
        )
    );

    // Refusals name the flag and what to do.
    let cases: [(&[&str], &str); 9] = [
        (
            &["--subnet", "10.0.1.128/25", "x1"],
            "overlaps network appnet (10.0.1.0/24)",
        ),
        (&["--subnet", "198.18.0.0/16", "x2"], "contains node n"),
        (
            &["--subnet", "10.0.9.1/24", "x3"],
            "did you mean 10.0.9.0/24?",
        ),
        (
            &["--subnet", "10.0.9.0/24", "--gateway", "10.0.8.1", "x4"],
            "inside --subnet",
        ),
        (
            &["--opt", "com.docker.network.driver.mtu=9999", "x5"],
            "must be 576-8950",
        ),
        (&["-d", "bridge", "x6"], "only the overlay driver"),
        (
            &[
                "--opt",
                "encrypted",
                "--opt",
                "com.docker.network.driver.mtu=1450",
                "x7",
            ],
            "MTU is at most 1424",
        ),
        (&["--opt", "encrypted=ipsek", "x8"], "unknown encryption"),
        (&["-bad"], "unexpected argument"),
    ];
    for (args, want) in cases {
        let mut full = vec!["network", "create"];
        full.extend_from_slice(args);
        let e = lab.shoal_refused(2, &full)?;
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let e = lab.shoal_refused(1, &["network", "create", "appnet"])?;
    assert!(e.contains("already used"), "{e}");
    let e = lab.shoal_refused(1, &["network", "create", "--subnet", "10.0.9.0/24", "a-"])?;
    assert!(e.contains("network name \"a-\""), "{e}");
    let e = lab.shoal_refused(1, &["network", "rm", "ingress"])?;
    assert!(e.contains("routing mesh"), "{e}");
    // Nothing refused was stored.
    assert_eq!(networks(&lab, 1)?.len(), 2);

    // Three managers creating at once: every subnet and VNI distinct.
    let writers: Vec<_> = (1..=3)
        .map(|k| {
            let lab = std::sync::Arc::clone(&lab);
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in 0..3 {
                    lab.shoal(k, &["network", "create", &format!("race-{k}-{i}")])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let all = networks(&lab, 1)?;
    assert_eq!(all.len(), 11, "{all:?}");
    let subnets: BTreeSet<&str> = all.iter().map(|n| n.1.as_str()).collect();
    let vnis: BTreeSet<u64> = all.iter().map(|n| n.2).collect();
    assert_eq!(subnets.len(), 11, "a subnet handed out twice: {all:?}");
    assert_eq!(vnis.len(), 11, "a VNI handed out twice: {all:?}");

    // Allocations live in the Raft state: a restarted manager shows the same
    // networks, and the next allocation does not reuse a freed subnet's
    // neighbours wrongly or any live one.
    lab.shoal(1, &["network", "rm", "appnet"])?;
    lab.stop(1).await?;
    lab.start(1).await?;
    let after = eventually(Duration::from_secs(20), "n1 serves network ls", || {
        Ok(networks(&lab, 1).ok())
    })
    .await?;
    assert_eq!(after.len(), 10);
    assert!(after.iter().all(|n| n.0 != "appnet"));
    lab.shoal(1, &["network", "create", "late"])?;
    let last = networks(&lab, 2)?;
    let subnets: BTreeSet<&str> = last.iter().map(|n| n.1.as_str()).collect();
    assert_eq!(subnets.len(), 11, "{last:?}");
    Ok(())
}
