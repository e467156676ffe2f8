//! Rolling updates and rollback in the lab (issue 13): a published service
//! under a steady request loop from the lab's client, which is not a node,
//! through every node's published port. Every request is a new connection,
//! so each is a fresh routing decision of the mesh while tasks come and go;
//! the tests count failed requests and assert there are none.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context, ensure};
use shoal_image::Healthcheck;
use shoal_lab::{
    Formation, Lab, eventually,
    images::{busybox_lab, web_image},
    load::LoadReport,
};

const V1: &str = "shoal.local/web:v1";
const V2: &str = "shoal.local/web:v2";
/// Serves, but its image's HEALTHCHECK never passes.
const SICK: &str = "shoal.local/web:sick";
const PORT: u16 = 8080;
/// Between two requests of the loop.
const PAUSE: Duration = Duration::from_millis(20);

/// A 3-node swarm with the web images loaded on n1 (the other nodes fetch
/// them when their tasks need them).
async fn cluster(tag: &str) -> anyhow::Result<Lab> {
    let lab = busybox_lab(tag, Formation::fast(1, 3)).await?;
    lab.load_image(1, &web_image(V1, "v1", None)?)?;
    lab.load_image(1, &web_image(V2, "v2", None)?)?;
    let never = Healthcheck {
        test: vec!["CMD-SHELL".into(), "exit 1".into()],
        interval_ns: 200_000_000,
        timeout_ns: 1_000_000_000,
        retries: 1,
        ..Healthcheck::default()
    };
    lab.load_image(1, &web_image(SICK, "sick", Some(never))?)?;
    Ok(lab)
}

/// The published port on every node.
fn every_node(lab: &Lab) -> Vec<SocketAddr> {
    (1..=3)
        .map(|k| SocketAddr::V4(SocketAddrV4::new(lab.node(k).addr(), PORT)))
        .collect()
}

fn create_web(lab: &Lab, replicas: usize, extra: &[&str], image: &str) -> anyhow::Result<()> {
    let replicas = replicas.to_string();
    let port = format!("{PORT}:80");
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        &replicas,
        "-p",
        &port,
    ];
    args.extend_from_slice(extra);
    args.push(image);
    lab.shoal(1, &args)?;
    Ok(())
}

/// `service inspect web` as JSON.
fn inspect(lab: &Lab) -> anyhow::Result<serde_json::Value> {
    let out = lab.shoal(1, &["service", "inspect", "web"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("service inspect")?;
    Ok(v[0].clone())
}

/// docker's `UpdateStatus.State` of `web`; empty before any update.
fn update_state(lab: &Lab) -> anyhow::Result<String> {
    Ok(inspect(lab)?["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn until_state(lab: &Lab, state: &str, within: Duration) -> anyhow::Result<()> {
    eventually(within, &format!("update state {state}"), || {
        let now = update_state(lab)?;
        if now == state {
            return Ok(Some(()));
        }
        Err(format!(
            "update state {now:?}; service ps: {:?}",
            lab.service_ps(1, "web")
        )
        .into())
    })
    .await?;
    Ok(())
}

/// Waits until the last `n` answers of the loop are all `body`.
async fn until_serving(
    lab: &Lab,
    load: &shoal_lab::load::RequestLoop,
    body: &str,
    n: usize,
) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(90),
        &format!("only {body} answers"),
        || {
            let r = load.report();
            if r.ends_with(body, n) {
                return Ok(Some(()));
            }
            Err(format!(
                "answers {:?}, {} failed; service ps: {:?}",
                r.bodies,
                r.failures.len(),
                lab.service_ps(1, "web")
            )
            .into())
        },
    )
    .await?;
    Ok(())
}

fn no_failures(what: &str, r: &LoadReport) -> anyhow::Result<()> {
    println!(
        "{what}: {} requests answered ({:?}), {} failed",
        r.ok,
        r.bodies,
        r.failures.len()
    );
    ensure!(
        r.failures.is_empty(),
        "{what}: {} of {} requests failed: {:?}",
        r.failures.len(),
        r.ok + r.failures.len() as u64,
        r.failures.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// The health flags of a web service: ready once httpd answers.
const HEALTHY_WHEN_SERVING: &[&str] = &[
    "--health-cmd",
    "wget -q -O /dev/null http://127.0.0.1/",
    "--health-interval",
    "1s",
    "--health-start-period",
    "30s",
    "--health-start-interval",
    "100ms",
    "--health-retries",
    "2",
];

#[tokio::test]
async fn start_first_and_stop_first_updates_fail_no_request() -> anyhow::Result<()> {
    let lab = cluster("upd-roll").await?;
    let mut extra = vec!["--update-order", "start-first"];
    extra.extend_from_slice(HEALTHY_WHEN_SERVING);
    create_web(&lab, 4, &extra, V1)?;
    lab.running("web", 4, Duration::from_secs(90)).await?;
    let load = lab.request_loop(every_node(&lab), PAUSE);
    until_serving(&lab, &load, "v1", 20).await?;

    // start-first: each slot's new task runs (and is healthy) before its
    // old one leaves the rings and drains.
    let out = lab.shoal(1, &["service", "update", "--image", V2, "web"])?;
    ensure!(out.contains("converged"), "update output: {out}");
    until_serving(&lab, &load, "v2", 40).await?;
    ensure!(
        update_state(&lab)? == "completed",
        "after the update: {:?}",
        inspect(&lab)?["UpdateStatus"]
    );

    // stop-first, one slot at a time: the old task leaves the rings and
    // drains before it stops, and the other three serve meanwhile.
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "--update-order",
            "stop-first",
            "--update-parallelism",
            "1",
            "--image",
            V1,
            "web",
        ],
    )?;
    until_serving(&lab, &load, "v1", 40).await?;
    let report = load.finish()?;
    ensure!(
        report.bodies.get("v2").copied().unwrap_or_default() > 20,
        "v2 barely answered: {:?}",
        report.bodies
    );
    no_failures("start-first then stop-first", &report)
}

#[tokio::test]
async fn an_update_that_never_turns_healthy_pauses_or_rolls_back() -> anyhow::Result<()> {
    let lab = cluster("upd-sick").await?;
    create_web(
        &lab,
        2,
        &["--update-order", "start-first", "--update-monitor", "2s"],
        V1,
    )?;
    lab.running("web", 2, Duration::from_secs(90)).await?;
    let load = lab.request_loop(every_node(&lab), PAUSE);
    until_serving(&lab, &load, "v1", 20).await?;

    // The image's own HEALTHCHECK fails: the new task never runs, the
    // update pauses (the default failure action), the old tasks serve on.
    let out = lab.shoal_output(1, &["service", "update", "--image", SICK, "web"], b"")?;
    ensure!(
        !out.status.success(),
        "a paused update must exit non-zero: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    until_state(&lab, "paused", Duration::from_secs(60)).await?;
    let status = &inspect(&lab)?["UpdateStatus"];
    ensure!(
        status["Message"]
            .as_str()
            .is_some_and(|m| m.contains("update paused")),
        "UpdateStatus: {status}"
    );
    let ps = lab.shoal(1, &["service", "ps", "--no-trunc", "web"])?;
    ensure!(ps.contains("unhealthy container"), "service ps:\n{ps}");

    // `service rollback` returns to the old spec.
    lab.shoal(1, &["service", "rollback", "-d", "web"])?;
    until_state(&lab, "rollback_completed", Duration::from_secs(60)).await?;
    let image = inspect(&lab)?["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(image.starts_with(V1), "image after rollback: {image}");
    lab.running("web", 2, Duration::from_secs(60)).await?;

    // With --update-failure-action rollback it goes back by itself.
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "-d",
            "--update-failure-action",
            "rollback",
            "--image",
            SICK,
            "web",
        ],
    )?;
    until_state(&lab, "rollback_completed", Duration::from_secs(60)).await?;
    let image = inspect(&lab)?["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        image.starts_with(V1),
        "image after the automatic rollback: {image}"
    );
    lab.running("web", 2, Duration::from_secs(60)).await?;
    let report = load.finish()?;
    ensure!(
        !report.bodies.contains_key("sick"),
        "a task that never turned healthy answered: {:?}",
        report.bodies
    );
    no_failures("a failing update, paused then rolled back", &report)
}

/// Unix seconds at which each task of `web` running `image` (pinned form
/// starts with it) began running, sorted.
fn running_since(lab: &Lab, image: &str) -> anyhow::Result<Vec<u64>> {
    let out = lab.shoal(1, &["service", "ps", "--format", "json", "web"])?;
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    let mut since: Vec<u64> = tasks
        .iter()
        .filter(|t| {
            t["current_state"] == "running"
                && t["image"].as_str().is_some_and(|i| i.starts_with(image))
        })
        .filter_map(|t| t["since_unix"].as_u64())
        .collect();
    since.sort_unstable();
    Ok(since)
}

#[tokio::test]
async fn slots_roll_two_at_a_time_with_the_delay_between() -> anyhow::Result<()> {
    let lab = cluster("upd-par").await?;
    create_web(&lab, 4, &[], V1)?;
    lab.running("web", 4, Duration::from_secs(90)).await?;
    lab.shoal(
        1,
        &[
            "service",
            "update",
            "-d",
            "--update-parallelism",
            "2",
            "--update-delay",
            "4s",
            "--image",
            V2,
            "web",
        ],
    )?;
    until_state(&lab, "completed", Duration::from_secs(90)).await?;
    let since = eventually(Duration::from_secs(30), "4 tasks of v2 running", || {
        let s = running_since(&lab, V2)?;
        Ok((s.len() == 4).then_some(s))
    })
    .await?;
    // Two batches: each pair started together (within 2 s: each old task
    // first waits for every node to drop it, which varies under load), the
    // second at least the delay after the first (whole seconds: a gap of
    // more than 4 s shows as at least 4).
    ensure!(
        since[1] - since[0] <= 2 && since[3] - since[2] <= 2,
        "not two at a time: {since:?}"
    );
    ensure!(
        since[2] - since[1] >= 4,
        "the second pair did not wait the 4 s delay: {since:?}"
    );

    // Bad input: refused with the flag named, nothing changed.
    let before = inspect(&lab)?;
    for (args, names) in [
        (&["--update-delay", "-1s"][..], "--update-delay"),
        (
            &["--update-max-failure-ratio", "1.5"][..],
            "--update-max-failure-ratio",
        ),
        (
            &["--update-failure-action", "explode"][..],
            "--update-failure-action",
        ),
        (
            &["--rollback-failure-action", "rollback"][..],
            "--rollback-failure-action",
        ),
        (
            &["--health-cmd", "true", "--no-healthcheck"][..],
            "--no-healthcheck",
        ),
        (&["--update-monitor", "soon"][..], "--update-monitor"),
    ] {
        let mut cmd = vec!["service", "update", "-d"];
        cmd.extend_from_slice(args);
        cmd.push("web");
        let out = lab.shoal_output(1, &cmd, b"")?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} was accepted");
        ensure!(
            err.contains(names),
            "{args:?}: the error does not name {names}: {err}"
        );
    }
    let after = inspect(&lab)?;
    ensure!(
        before == after,
        "a refused update changed the service: {before} → {after}"
    );
    lab.shoal(1, &["service", "create", "-d", "--name", "fresh", V1])?;
    let out = lab.shoal_output(1, &["service", "rollback", "fresh"], b"")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("does not have a previous spec"),
        "rollback without a previous spec: {err}"
    );
    Ok(())
}
