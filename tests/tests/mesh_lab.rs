//! The routing mesh end to end: real shoald processes in a 3-node lab, a
//! service published on 8080 with tasks on n1 and n2 only, and a client on
//! the underlay that is not a node (198.18.0.250).
//!
//! - Every node answers 8080, n3 with no task too; requests spread over
//!   both tasks; each task sees the client's own address as the source.
//! - UDP published ports work the same way.
//! - A task reaches the service by its VIP.
//! - A backend that goes stops receiving new connections.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");

/// `curl` from the client namespace: (status, body).
fn curl(lab: &Lab, url: &str) -> anyhow::Result<(String, String)> {
    let out = lab
        .client_command("curl")
        .args(["-s", "-m", "3", "-w", "\n%{http_code}", url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().to_owned(), body.trim().to_owned()))
}

async fn cluster(tag: &str) -> anyhow::Result<Lab> {
    let lab = Lab::builder(tag).nodes(3).client(true).start().await?;
    lab.shoal(1, &["swarm", "init", "--dispatcher-heartbeat", "1s"])?;
    let worker = lab.shoal(1, &["swarm", "join-token", "-q", "worker"])?;
    let n1 = format!("{}:2377", lab.node(1).addr());
    for k in [2, 3] {
        lab.shoal(k, &["swarm", "join", "--token", worker.trim(), &n1])?;
    }
    Ok(lab)
}

async fn running(lab: &Lab, service: &str, n: usize) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), "tasks running", || {
        let rows = lab.service_ps(1, service)?;
        Ok((rows.iter().filter(|r| r.running()).count() == n).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn published_ports_answer_on_every_node_and_keep_the_client_address() -> anyhow::Result<()> {
    let lab = cluster("mesh").await?;
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
            "2",
            "--constraint",
            "node.hostname!=n3",
            "--network",
            "appnet",
            "-p",
            "8080:80",
            "-p",
            "5353:80/udp",
            "--",
            HTTP,
            "serve",
            "80",
        ],
    )?;
    running(&lab, "web", 2).await?;
    let client = lab.client_addr().to_string();

    // Every node answers, n3 included, and both backends get requests.
    let mut backends = BTreeSet::new();
    for k in 1..=3 {
        let url = format!("http://{}:8080/", lab.node(k).addr());
        let (code, body) = eventually(Duration::from_secs(15), "published port answers", || {
            let (code, body) = curl(&lab, &url)?;
            Ok((code == "200").then_some((code, body)))
        })
        .await
        .with_context(|| format!("{url} never answered"))?;
        ensure!(code == "200");
        for _ in 0..12 {
            let (code, body) = curl(&lab, &url)?;
            ensure!(code == "200", "{url}: {code} {body}");
            let (task, seen) = body.split_once(' ').context("body")?;
            ensure!(
                seen == client,
                "{url}: the backend saw {seen}, not the client's {client} ({body})"
            );
            backends.insert(task.to_owned());
        }
        let _ = body;
    }
    ensure!(
        backends.len() == 2,
        "requests did not spread over both tasks: {backends:?}"
    );

    // A task reaches the service through its VIP on appnet.
    let inspect = lab.shoal(1, &["service", "inspect", "web", "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    let vip = v
        .pointer("/0/vips")
        .or_else(|| v.pointer("/vips"))
        .and_then(|vips| vips.as_array())
        .and_then(|vips| {
            vips.iter().find_map(|x| {
                let net = x.get("network")?.as_str()?;
                (net == "appnet").then(|| x.get("addr")?.as_str().map(str::to_owned))?
            })
        })
        .with_context(|| format!("no appnet VIP in {inspect}"))?;
    let vip = vip.split('/').next().unwrap_or(&vip).to_owned();
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "probe",
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n3",
            "--restart-condition",
            "none",
            "--",
            "/usr/bin/curl",
            "-s",
            "-m",
            "5",
            &format!("http://{vip}:80/"),
        ],
    )?;
    let logs = eventually(Duration::from_secs(30), "probe reached the VIP", || {
        let out = lab
            .shoal(1, &["service", "logs", "--raw", "probe"])
            .unwrap_or_default();
        Ok(out.contains("web.").then_some(out))
    })
    .await?;
    ensure!(logs.contains("web."), "{logs}");

    // UDP through the published port.
    let out = lab
        .client_command(HTTP)
        .args(["udp", &format!("{}:5353", lab.node(3).addr())])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains(&client),
        "UDP via n3: {out:?}"
    );
    ensure!(
        text.contains(&format!("from {}:5353", lab.node(3).addr())),
        "the reply must come from the address the client sent to: {text}"
    );

    // Scale to one task on n1: n2's task goes, and no request fails after
    // the control plane lists it as gone.
    lab.shoal(1, &["service", "scale", "--detach", "web=1"])?;
    running(&lab, "web", 1).await?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    let mut ok = 0;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (code, body) = curl(&lab, &url)?;
        if code == "200" {
            ok += 1;
            seen.insert(body.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    ensure!(
        ok == 20 && seen.len() == 1,
        "after scale-down: {ok}/20 ok, {seen:?}"
    );
    lab.down()?;
    Ok(())
}
