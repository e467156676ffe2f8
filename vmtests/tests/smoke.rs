//! The 2-VM smoke test `cargo xtask test` runs: Shoal on two qemu VMs with
//! Debian's 6.1 kernel, provisioned by vagrant/provision.sh. The swarm
//! forms across the VMs, a published port answers on both VMs from the
//! client namespace with the client's own address seen by the task, and
//! tasks on the two VMs reach each other over VXLAN through virtio NICs,
//! on the overlay's fast path (6.1: clsact, no TCX): each VM hands its
//! task's frames to the VXLAN device and takes the other's straight into
//! its task, as `node stats` counts.
//! Needs root, qemu and the VM image (built once per machine, minutes).

mod common;

use std::time::Duration;

use common::{BoxError, all_ready, curl, mesh_reason, running, shoal, split_answer, task_pid};
use shoal_vmlab::{CLIENT_ADDR, VmLab, node_addr};

/// Generous: every step runs on an emulated CPU when KVM does not work.
const WITHIN: Duration = Duration::from_secs(300);
const SUBNET_PREFIX: &str = "10.77.0.";
/// Requests per entry VM: with two backends, all on one is a 1 in 2^19 chance.
const REQUESTS: usize = 20;

#[tokio::test(flavor = "current_thread")]
async fn two_vms_form_a_swarm_serve_a_published_port_and_talk_over_vxlan() -> Result<(), BoxError> {
    let (lab, timings) = VmLab::builder("vmsmoke")
        .nodes(2)
        .managers(1)
        .start()
        .await?;
    println!(
        "VM lab {} up under {} in {:.1?} (image {}; boot + provision {:.1?})",
        lab.name(),
        lab.accel().name(),
        timings.total,
        timings
            .image_build
            .map_or("cached".into(), |t| format!("built in {t:.1?}")),
        timings.provision
    );

    // The swarm formed across the VMs by provision.sh alone.
    all_ready(&lab, 1, 2, WITHIN).await?;

    shoal(
        &lab,
        1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.77.0.0/24",
            "appnet",
        ],
    )?;
    shoal(
        &lab,
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--mode",
            "global",
            "--network",
            "appnet",
            "-p",
            "8080:80",
            "host",
            "/usr/local/bin/lab-http",
            "serve",
            "80",
        ],
    )?;
    let tasks = running(&lab, "web", 2, WITHIN).await?;

    // Published port on every VM, from the client: the task sees 198.18.0.250.
    for k in 1..=2 {
        let url = format!("http://{}:8080/", node_addr(k));
        let body = common::eventually(WITHIN, &format!("{url} answers"), || {
            Ok(curl(&lab, &url).ok())
        })
        .await?;
        let (task, peer) = split_answer(&body)?;
        println!("{url} -> {task}, seen from {peer}");
        assert_eq!(
            peer,
            CLIENT_ADDR.to_string(),
            "the task saw {peer}, not the client"
        );
        // Each new connection is a new Maglev choice: over a batch, both the
        // local task and the other VM's (through the ingress overlay) serve.
        let mut served = std::collections::BTreeMap::<String, u32>::new();
        let mut failed = Vec::new();
        for _ in 0..REQUESTS {
            match curl(&lab, &url).and_then(|b| split_answer(&b)) {
                Ok((task, peer)) => {
                    assert_eq!(
                        peer,
                        CLIENT_ADDR.to_string(),
                        "{task} saw {peer}, not the client"
                    );
                    *served.entry(task).or_default() += 1;
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        println!(
            "{url}: {REQUESTS} requests, served by {served:?}, {} failed",
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{url}: {} of {REQUESTS} requests failed: {failed:?}",
            failed.len()
        );
        assert_eq!(
            served.len(),
            2,
            "{url}: not both VMs' tasks served: {served:?}"
        );
    }

    // Task to task across the VMs, on the overlay (VXLAN over virtio-net).
    let overlay_ip = |node: &str| -> Result<String, BoxError> {
        let t = tasks
            .iter()
            .find(|t| t.node == node)
            .ok_or_else(|| format!("no task on {node}: {tasks:?}"))?;
        let a = t
            .addresses
            .iter()
            .find(|a| a.starts_with(SUBNET_PREFIX))
            .ok_or_else(|| format!("no appnet address: {t:?}"))?;
        Ok(a.split('/').next().unwrap_or_default().to_owned())
    };
    let fast = |k| -> Result<(u64, u64), BoxError> {
        Ok((
            mesh_reason(&lab, k, "fast-path-tx")? + mesh_reason(&lab, k, "fast-path-encap")?,
            mesh_reason(&lab, k, "fast-path-decap")? + mesh_reason(&lab, k, "fast-path-rx")?,
        ))
    };
    let before = [fast(1)?, fast(2)?];
    for (from, to) in [(1usize, 2usize), (2, 1)] {
        let pid = task_pid(&lab, from, "^/usr/local/bin/lab-http serve 80")?;
        let target = overlay_ip(&format!("n{to}"))?;
        let body = lab.exec(
            from,
            &[
                "nsenter",
                "-t",
                &pid,
                "-n",
                "curl",
                "-sS",
                "--max-time",
                "10",
                &format!("http://{target}/"),
            ],
        )?;
        let (_, peer) = split_answer(body.trim())?;
        println!("task on n{from} -> task on n{to} ({target}): seen from {peer}");
        assert_eq!(
            peer,
            overlay_ip(&format!("n{from}"))?,
            "not the n{from} task's own overlay address"
        );
    }
    for k in 1..=2 {
        let ((tx0, rx0), (tx, rx)) = (before[k - 1], fast(k)?);
        println!(
            "n{k} fast path: {} frames sent (encapsulated or to the VXLAN device), {} into the task",
            tx - tx0,
            rx - rx0
        );
        // A curl is several segments each way: one would be a fluke.
        assert!(
            tx - tx0 >= 3 && rx - rx0 >= 3,
            "n{k}: the task-to-task requests did not take the fast path"
        );
    }
    Ok(())
}
