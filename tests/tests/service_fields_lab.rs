//! The service fields stacks need, end to end (issue 14), on a two-node
//! lab of real shoald processes with busybox tasks run by runc:
//!
//! - `--network name=N,alias=A`: another service's task reaches the
//!   service by its alias.
//! - `--replicas-max-per-node 1` with 3 replicas on 2 nodes: two run, one
//!   stays pending with swarm's message.
//! - `--ulimit` and `--add-host` (docker's `--host`): the task's `ulimit -n` and `/etc/hosts` show
//!   them; `service inspect` shows every field.
//! - A whole-spec update (`UpdateServiceRequest.spec`, as `stack deploy`
//!   sends it) with the same spec restarts nothing; a changed one does.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use shoal_api::cluster::v1::{
    ContainerSpec, CreateServiceRequest, ServiceRef, UpdateServiceRequest,
    control_client::ControlClient,
};
use shoal_lab::{Formation, Lab, eventually, images};

const WAIT: Duration = Duration::from_secs(60);

async fn running(lab: &Lab, service: &str, n: usize) -> anyhow::Result<()> {
    Ok(lab.running(service, n, WAIT).await?)
}

/// Ids of the service's tasks wanted running.
fn live_ids(lab: &Lab, service: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(lab
        .service_ps(1, service)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .filter(|t| t.desired.eq_ignore_ascii_case("running"))
        .map(|t| t.id)
        .collect())
}

#[tokio::test]
async fn aliases_limits_ulimits_hosts_and_whole_spec_updates() -> anyhow::Result<()> {
    let lab = images::busybox_lab("svcf", Formation::fast(1, 2)).await?;
    lab.shoal(1, &["network", "create", "-d", "overlay", "appnet"])?;

    // A server known on appnet as "store" too, and a client that asks for
    // it by that name only.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "db",
            "--network",
            "name=appnet,alias=store",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; mkdir -p /www && echo from-the-store > /www/i; \
             httpd -f -p 80 -h /www & wait",
        ],
    )?;
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "client",
            "--network",
            "appnet",
            // The node's own getent and curl: busybox's static resolver
            // cannot look names up.
            "host",
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while true; do getent ahostsv4 store tasks.store; \
             /usr/bin/curl -s -m 2 http://store/i; sleep 1; done",
        ],
    )?;
    running(&lab, "db", 1).await?;
    running(&lab, "client", 1).await?;
    lab.logs_until("client", WAIT, "the client reached the store alias", |l| {
        l.contains("from-the-store")
    })
    .await?;
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.shoal(1, &["service", "inspect", "db"])?)?;
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    ensure!(
        inspect["network_aliases"]["appnet"] == serde_json::json!(["store"]),
        "{inspect}"
    );

    // At most one per node: the third replica waits.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "spread",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    )?;
    running(&lab, "spread", 2).await?;
    let pending = eventually(WAIT, "a pending task with swarm's reason", || {
        let ps = lab.service_ps(1, "spread")?;
        Ok(ps
            .into_iter()
            .find(|t| t.state.to_ascii_lowercase().starts_with("pending") && !t.error.is_empty()))
    })
    .await?;
    ensure!(
        pending.error == "no suitable node (max replicas per node limit exceed)",
        "{pending:?}"
    );
    let nodes: BTreeSet<String> = lab
        .service_ps(1, "spread")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .filter(|t| t.state.to_ascii_lowercase().starts_with("running"))
        .map(|t| t.node)
        .collect();
    ensure!(nodes.len() == 2, "one per node: {nodes:?}");

    // ulimits and extra hosts inside the task.
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "lim",
            "--ulimit",
            "nofile=1024:2048",
            "--add-host",
            "db.example:10.9.9.9",
            "--restart-window",
            "2m",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo soft=$(ulimit -n) hard=$(ulimit -Hn); cat /etc/hosts; \
             while true; do sleep 1; done",
        ],
    )?;
    running(&lab, "lim", 1).await?;
    let logs = lab
        .logs_until("lim", WAIT, "the task printed its limits", |l| {
            l.contains("db.example")
        })
        .await?;
    ensure!(logs.contains("soft=1024 hard=2048"), "{logs}");
    ensure!(logs.contains("10.9.9.9\tdb.example"), "{logs}");
    let pretty = lab.shoal(1, &["service", "inspect", "--pretty", "lim"])?;
    ensure!(pretty.contains("nofile:\t1024:2048"), "{pretty}");
    ensure!(pretty.contains(" Window:\t\t2m0s"), "{pretty}");

    // A whole-spec update, as `stack deploy` sends it.
    let socket = lab.node(1).socket().to_path_buf();
    let mut control = ControlClient::new(shoal_api::unix_channel(socket).await?);
    let spec = CreateServiceRequest {
        name: "whole".into(),
        replicas: 2,
        args: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while true; do sleep 1; done".into(),
        ],
        container: Some(ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    control.create_service(spec.clone()).await?;
    running(&lab, "whole", 2).await?;
    let before = live_ids(&lab, "whole")?;
    let replace = |spec: CreateServiceRequest| UpdateServiceRequest {
        service: "whole".into(),
        spec: Some(spec),
        ..Default::default()
    };
    let version = control
        .inspect_service(ServiceRef {
            service: "whole".into(),
        })
        .await?
        .into_inner()
        .version;
    let after = control
        .update_service(replace(spec.clone()))
        .await?
        .into_inner();
    ensure!(after.version > version, "the update was stored");
    // Give the reconcilers time to act, had they anything to do.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        live_ids(&lab, "whole")? == before,
        "the same spec restarted tasks"
    );
    // A rename is refused, and nothing changes.
    let renamed = control
        .update_service(replace(CreateServiceRequest {
            name: "other".into(),
            ..spec.clone()
        }))
        .await;
    let status = renamed.err().context("a rename was accepted")?;
    ensure!(
        status
            .message()
            .contains("renaming services is not supported"),
        "{status:?}"
    );
    // A changed spec replaces them.
    control
        .update_service(replace(CreateServiceRequest {
            env: vec!["CHANGED=1".into()],
            ..spec
        }))
        .await?;
    eventually(WAIT, "the changed spec's tasks", || {
        let now = live_ids(&lab, "whole")?;
        Ok((now.len() == 2 && now.is_disjoint(&before)).then_some(()))
    })
    .await?;
    running(&lab, "whole", 2).await?;
    Ok(())
}

/// `--network host`: the task listens in its node's own namespace, so it is
/// reached at the node's underlay address with no mesh in between, and has
/// no overlay address and no VIP; an ingress port with it is refused.
#[tokio::test]
async fn host_network_task_answers_on_the_nodes_address() -> anyhow::Result<()> {
    let lab = images::busybox_lab("hnet", Formation::fast(1, 2)).await?;
    let refused = lab.shoal_refused(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            "--network",
            "host",
            "--publish",
            "80:80",
            "busybox",
            "true",
        ],
    )?;
    ensure!(
        refused.contains("--publish published=80,target=80: a task on the host network"),
        "{refused}"
    );
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hostweb",
            "--network",
            "host",
            "--publish",
            "mode=host,published=18080,target=18080",
            "--constraint",
            "node.role==worker",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; mkdir -p /www && echo on-the-node > /www/i; \
             httpd -f -p 18080 -h /www & wait",
        ],
    )?;
    running(&lab, "hostweb", 1).await?;
    let task = lab
        .service_ps(1, "hostweb")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .find(|t| t.running())
        .context("a running task")?;
    ensure!(task.addresses.is_empty(), "no overlay address: {task:?}");
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.shoal(1, &["service", "inspect", "hostweb"])?)?;
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    ensure!(
        inspect["vips"].as_array().is_none_or(|v| v.is_empty()),
        "no VIP: {inspect}"
    );
    // The worker is node 2; its underlay address, from the lab's client.
    let url = format!("http://{}:18080/i", lab.node(2).addr());
    let body = eventually(WAIT, "the host-network task answering", || {
        let out = lab
            .client_command("curl")
            .args(["-s", "-m", "2", &url])
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((body == "on-the-node").then_some(body))
    })
    .await?;
    ensure!(body == "on-the-node");
    // Node 1 (no task) does not answer the port: it is not a mesh port.
    let other = lab
        .client_command("curl")
        .args([
            "-s",
            "-m",
            "2",
            &format!("http://{}:18080/i", lab.node(1).addr()),
        ])
        .output()?;
    ensure!(!other.status.success(), "node 1 answered: {other:?}");
    Ok(())
}
