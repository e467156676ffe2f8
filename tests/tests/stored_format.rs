//! The stored format survives upgrades: state directories written by shoald
//! at commit e8d19cc (before the typed-wire refactor) open with this build,
//! and every object reads back as the old build printed it.
//!
//! `tests/fixtures/state-e8d19cc/state.tar.gz` holds the `swarm/` dirs of a
//! manager (n1, `swarm init --snapshot-interval 10 --cert-expiry 87600h`, so
//! it has Raft snapshots and a log tail after them, and node certificates
//! that stay valid until 2036) and a worker (n2), made with that commit's
//! binaries: network `appnet` (10.42.0.0/24), secret `db-password` with a
//! label, a label on n2, services `everywhere` (global, dnsrr), `web` (2
//! replicas, env, constraint, restart policy, ingress ports tcp+udp, one
//! added by `service update --publish-add`) and `hostport` (host-mode port,
//! scaled to 2). The JSON files beside it are what that build's `shoal …
//! --format json` printed, before its daemons were stopped, with one
//! addition: `services.json` gained the fields images brought (`image` and
//! docker's `Spec.TaskTemplate.ContainerSpec`), which read `host` and the
//! old command for these services stored with an empty rootfs.
//! Needs root and built `shoald`/`shoal`.

use std::{path::Path, time::Duration};

use anyhow::{Context, ensure};
use serde_json::Value;
use shoal_lab::{Lab, eventually};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/state-e8d19cc");

fn expected(name: &str) -> anyhow::Result<Value> {
    let path = Path::new(FIXTURE).join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn json(lab: &Lab, args: &[&str]) -> anyhow::Result<Value> {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    Ok(serde_json::from_str(&lab.shoal(1, &args)?)?)
}

/// `v` (an array of objects) without the fields that change at run time.
fn without(mut v: Value, fields: &[&str]) -> Value {
    if let Some(items) = v.as_array_mut() {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for f in fields {
                item.remove(*f);
            }
        }
    }
    v
}

fn same(what: &str, got: Value, want: Value) -> anyhow::Result<()> {
    ensure!(
        got == want,
        "{what} differs from what the old build printed:\n got: {got:#}\nwant: {want:#}"
    );
    Ok(())
}

/// `service inspect` less what later builds added to its output (issue
/// 13: the spec's name, placement, update and rollback policies and the
/// previous spec); services stored before those policies existed must
/// show swarm's defaults for them.
fn without_added(mut v: Value) -> anyhow::Result<Value> {
    let defaults = serde_json::json!({
        "Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000u64,
        "MaxFailureRatio": 0.0, "Order": "stop-first",
    });
    for item in v.as_array_mut().into_iter().flatten() {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        obj.remove("PreviousSpec");
        if let Some(spec) = obj.get_mut("Spec").and_then(Value::as_object_mut) {
            for policy in ["UpdateConfig", "RollbackConfig"] {
                let got = spec.remove(policy);
                ensure!(
                    got.as_ref() == Some(&defaults),
                    "{policy} of a service stored before it existed: {got:?}"
                );
            }
            spec.remove("Name");
            if let Some(t) = spec.get_mut("TaskTemplate").and_then(Value::as_object_mut) {
                t.remove("Placement");
            }
        }
    }
    Ok(v)
}

/// Everything stored reads back as the old build printed it.
fn check_objects(lab: &Lab) -> anyhow::Result<()> {
    let running = ["running"];
    same(
        "service inspect",
        without_added(without(
            json(
                lab,
                &["service", "inspect", "web", "everywhere", "hostport"],
            )?,
            &running,
        ))?,
        without(expected("services.json")?, &running),
    )?;
    // `internal` came after that build: every network it stored reads back
    // as not internal (the stored default), and the rest as printed then.
    let networks = json(lab, &["network", "ls"])?;
    ensure!(
        networks
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["internal"] == false)),
        "network ls: an old network reads back internal: {networks}"
    );
    // The stored `encrypted: false` of the old build reads as mode none.
    ensure!(
        networks
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["encryption"] == "none")),
        "network ls: an old unencrypted network reads back encrypted: {networks}"
    );
    same(
        "network ls",
        without(networks, &["internal", "encryption"]),
        expected("networks.json")?,
    )?;
    same(
        "secret ls",
        json(lab, &["secret", "ls"])?,
        expected("secrets.json")?,
    )?;
    // Status, versions and leadership follow heartbeats after the restart.
    let live = ["status", "manager_status", "version"];
    same(
        "node ls",
        without(json(lab, &["node", "ls"])?, &live),
        without(expected("nodes.json")?, &live),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_previous_format_opens_and_takes_writes() -> anyhow::Result<()> {
    let lab = Lab::builder("stored-format")
        .nodes(2)
        .daemons(false)
        .start()
        .await?;
    for k in 1..=2 {
        let dir = lab.node(k).state_dir();
        let parent = dir.parent().context("state dir has a parent")?;
        ensure!(
            dir.file_name() == Some(std::ffi::OsStr::new(lab.node(k).name())),
            "the fixture unpacks into <lab>/nK, but n{k}'s state dir is {}",
            dir.display()
        );
        let status = std::process::Command::new("tar")
            .args(["-xzf", &format!("{FIXTURE}/state.tar.gz"), "-C"])
            .arg(parent)
            .arg(format!("{}/swarm", lab.node(k).name()))
            .status()?;
        ensure!(status.success(), "unpacking n{k}'s state: {status}");
    }
    lab.start(1).await?;
    lab.start(2).await?;
    check_objects(&lab)?;

    // The old state takes new writes, and they survive a restart with it.
    lab.shoal(1, &["service", "scale", "web=3"])?;
    eventually(Duration::from_secs(30), "web runs 3 tasks", || {
        let tasks = lab.service_ps(1, "web")?;
        Ok((tasks.iter().filter(|t| t.running()).count() == 3).then_some(()))
    })
    .await?;
    lab.stop(1).await?;
    lab.start(1).await?;
    let web = json(&lab, &["service", "inspect", "web"])?;
    ensure!(web[0]["desired"] == 3, "scale lost over a restart: {web:#}");
    lab.shoal(1, &["service", "scale", "web=2"])?;
    eventually(Duration::from_secs(30), "web back to 2", || {
        let web = json(&lab, &["service", "inspect", "web"])?;
        Ok((web[0]["desired"] == 2).then_some(()))
    })
    .await?;
    check_objects(&lab)?;
    lab.down()?;
    Ok(())
}
