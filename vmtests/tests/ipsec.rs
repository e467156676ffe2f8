//! `--opt encrypted` (IPsec ESP) between two qemu VMs on Debian's 6.1
//! kernel, which has esp4 and rfc4106(gcm(aes)) (the netns lab's kernel
//! has no ESP). Tasks on the two VMs talk over an encrypted network; a
//! capture on the underlay (the host side of n1's tap) shows ESP and no
//! VXLAN in clear; key rotations every few seconds lose no request; and the
//! functional throughput of the ESP path is printed (TCG: no ratio claims).
//! Needs root, qemu and the VM image.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{BoxError, all_ready, running, shoal, split_answer, task_pid};
use shoal_vmlab::VmLab;

const WITHIN: Duration = Duration::from_secs(600);
const SUBNET_PREFIX: &str = "10.78.0.";
/// Requests across the VMs while the capture runs.
const REQUESTS: usize = 5;
/// The rotation period during the rotation loop, and how long it runs.
const ROTATION: &str = "15s";
const ROTATION_LOOP: Duration = Duration::from_secs(75);
/// Bytes per echo for the throughput figure: one write that lab-echo
/// reads back only after sending it all, so it must fit the sockets'
/// buffers (8 MiB in one echo deadlocked: both receive queues full).
const ECHO: usize = 32 << 10;
/// Echoes in the timed loop.
const ECHOES: usize = 100;

/// `tcpdump` on n1's tap in the underlay namespace, writing `pcap`.
fn capture(lab: &VmLab, pcap: &str) -> Result<Child, BoxError> {
    let ns = lab.underlay_netns();
    Ok(Command::new("ip")
        .args(["netns", "exec", &ns, "tcpdump", "-i", "n1", "-nn", "-U"])
        .args(["-w", pcap, "ip proto 50 or udp port 4789"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Packets of `pcap` matching `filter`.
fn count(pcap: &str, filter: &str) -> Result<usize, BoxError> {
    let out = Command::new("tcpdump")
        .args(["-r", pcap, "-nn", filter])
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// `node stats --format json`'s IPsec counter `what` on VM `k`.
fn ipsec_counter(lab: &VmLab, k: usize, what: &str) -> Result<u64, BoxError> {
    let v: serde_json::Value =
        serde_json::from_str(&shoal(lab, k, &["node", "stats", "--format", "json"])?)?;
    v["ipsec"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["reason"] == what))
        .and_then(|r| r["count"].as_u64())
        .ok_or_else(|| format!("n{k}: no ipsec counter {what:?} in {v}").into())
}

/// A curl from VM `from`'s task namespace to `target`; the answer's peer.
fn request(lab: &VmLab, pid: &str, from: usize, target: &str) -> Result<String, BoxError> {
    let body = lab.exec(
        from,
        &[
            "nsenter",
            "-t",
            pid,
            "-n",
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("http://{target}/"),
        ],
    )?;
    Ok(split_answer(body.trim())?.1)
}

#[tokio::test(flavor = "current_thread")]
async fn an_encrypted_network_carries_esp_only_and_survives_key_rotation() -> Result<(), BoxError> {
    let (lab, timings) = VmLab::builder("vmipsec")
        .nodes(2)
        .managers(1)
        .start()
        .await?;
    println!(
        "VM lab {} up under {} in {:.1?}",
        lab.name(),
        lab.accel().name(),
        timings.total
    );
    all_ready(&lab, 1, 2, WITHIN).await?;
    shoal(
        &lab,
        1,
        &[
            "network",
            "create",
            "--opt",
            "encrypted",
            "--subnet",
            "10.78.0.0/24",
            "encnet",
        ],
    )?;
    for (name, cmd) in [
        ("web", ["/usr/local/bin/lab-http", "serve", "80"]),
        ("echo", ["/usr/local/bin/lab-echo", "serve", "7000"]),
    ] {
        let mut args = vec![
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--mode",
            "global",
            "--network",
            "encnet",
            "host",
        ];
        args.extend_from_slice(&cmd);
        shoal(&lab, 1, &args)?;
    }
    let tasks = running(&lab, "web", 2, WITHIN).await?;
    let echo = running(&lab, "echo", 2, WITHIN).await?;
    let addr = |list: &[common::Task], node: &str| -> Result<String, BoxError> {
        let t = list
            .iter()
            .find(|t| t.node == node)
            .ok_or_else(|| format!("no task on {node}"))?;
        let a = t
            .addresses
            .iter()
            .find(|a| a.starts_with(SUBNET_PREFIX))
            .ok_or_else(|| format!("no encnet address: {t:?}"))?;
        Ok(a.split('/').next().unwrap_or_default().to_owned())
    };
    // Both nodes installed the pair: 3 inbound states + 1 outbound.
    for k in 1..=2 {
        let states = common::eventually(WITHIN, &format!("n{k}'s ESP states"), || {
            Ok(ipsec_counter(&lab, k, "states").ok().filter(|s| *s == 4))
        })
        .await?;
        assert_eq!(ipsec_counter(&lab, k, "kernel without ESP")?, 0);
        println!("n{k}: {states} ESP states");
    }

    let pid1 = task_pid(&lab, 1, "^/usr/local/bin/lab-http serve 80")?;
    let pid2 = task_pid(&lab, 2, "^/usr/local/bin/lab-http serve 80")?;
    let (ip1, ip2) = (addr(&tasks, "n1")?, addr(&tasks, "n2")?);
    // The first request may wait for ARP and the states: not captured.
    common::eventually(WITHIN, "n1's task reaches n2's", || {
        Ok(request(&lab, &pid1, 1, &ip2).ok())
    })
    .await?;

    let pcap = format!("/tmp/{}-n1.pcap", lab.name());
    let mut dump = capture(&lab, &pcap)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for _ in 0..REQUESTS {
        assert_eq!(request(&lab, &pid1, 1, &ip2)?, ip1, "n1 -> n2");
        assert_eq!(request(&lab, &pid2, 2, &ip1)?, ip2, "n2 -> n1");
    }
    let rr = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    dump.kill()?;
    dump.wait()?;
    let (esp, vxlan) = (count(&pcap, "ip proto 50")?, count(&pcap, "udp port 4789")?);
    println!(
        "capture on n1's tap: {esp} ESP packets, {vxlan} VXLAN in clear, for {} requests in {rr:.1?}",
        2 * REQUESTS
    );
    assert!(esp >= 2 * REQUESTS, "too few ESP packets: {esp}");
    assert_eq!(vxlan, 0, "VXLAN in clear on the underlay");

    // Functional throughput of the ESP path (emulated CPUs: a floor, not
    // a ratio), timed inside the VM so ssh is not counted.
    let epid1 = task_pid(&lab, 1, "^/usr/local/bin/lab-echo serve 7000")?;
    let target = format!("{}:7000", addr(&echo, "n2")?);
    let script = format!(
        "s=$(date +%s%N); for i in $(seq {ECHOES}); do \
         /usr/local/bin/lab-echo send {target} {ECHO} 60 >/dev/null || exit 1; done; \
         echo $(( $(date +%s%N) - s ))"
    );
    let ns = lab.exec(
        1,
        &[
            "nsenter", "-t", &epid1, "-n", "bash", "-c",
            // exec quotes each word for the remote shell.
            &script,
        ],
    )?;
    let took = Duration::from_nanos(ns.trim().parse()?);
    let bytes = ECHO * ECHOES;
    println!(
        "ESP path (TCG): {ECHOES} echoes of {ECHO} bytes in {took:.1?}: {:.2} Mbit/s each way \
         (a process per echo included)",
        bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
    );

    // Rotations: every ROTATION, for ROTATION_LOOP, requests never fail.
    let before = ipsec_counter(&lab, 1, "key rotations")?;
    shoal(
        &lab,
        1,
        &["swarm", "update", "--network-key-rotation", ROTATION],
    )?;
    let started = Instant::now();
    let (mut ok, mut failed) = (0usize, Vec::new());
    while started.elapsed() < ROTATION_LOOP {
        match request(&lab, &pid1, 1, &ip2) {
            Ok(peer) if peer == ip1 => ok += 1,
            Ok(peer) => failed.push(format!("answered as {peer}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let rotations = [
        ipsec_counter(&lab, 1, "key rotations")? - before,
        ipsec_counter(&lab, 2, "key rotations")?,
    ];
    println!(
        "rotation loop {ROTATION_LOOP:?} (period {ROTATION}): {ok} requests ok, {} failed, \
         rotations installed n1 {} n2 {}",
        failed.len(),
        rotations[0],
        rotations[1]
    );
    assert!(
        failed.is_empty(),
        "requests failed across rotations: {failed:?}"
    );
    assert!(
        rotations.iter().all(|r| *r >= 2),
        "rotations: {rotations:?}"
    );
    assert!(ok > 0);
    Ok(())
}
