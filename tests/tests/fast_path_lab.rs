//! The overlay's fast path (issue 19 part 1) with real shoald processes in
//! a 2-node lab. Task s1 (n1) calls task s2 (n2) on one network, directly
//! and through s2's VIP, on new connections: every answer comes from s2
//! and shows s1's own address (nothing rewrote the client), and `node
//! stats` shows the packets took the fast path: n1's task veth
//! encapsulated s1's frames for n2 itself (fast-path-encap; fast-path-tx
//! when it hands them to the VXLAN device instead) and n2's data
//! interface decapsulated them and handed them into s2's namespace
//! (fast-path-decap; fast-path-rx when the VXLAN device does it), and the
//! replies the same the other way. A frame the redirect lost would have
//! failed a request: there is no second copy on the bridge.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, ensure};
use shoal_lab::{
    Lab,
    probe::{counters, http_get_from, http_service, in_netns, task_ip, task_netns, task_row},
};

const HTTP: &str = env!("CARGO_BIN_EXE_lab-http");
const TIMEOUT: Duration = Duration::from_secs(5);
/// New connections per target.
const CALLS: u64 = 100;
/// Bytes s1 sends s2 on one connection: enough for GSO frames of many
/// segments.
const BULK: usize = 8 << 20;

fn vip_of(lab: &Lab, service: &str) -> anyhow::Result<std::net::Ipv4Addr> {
    let out = lab.shoal(1, &["service", "inspect", service, "--format", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let vip = v
        .pointer("/0/vips/0/addr")
        .or_else(|| v.pointer("/vips/0/addr"))
        .and_then(|a| a.as_str())
        .with_context(|| format!("no VIP in {out}"))?;
    Ok(vip.split('/').next().unwrap_or(vip).parse()?)
}

fn count(m: &std::collections::BTreeMap<String, u64>, r: &str) -> u64 {
    m.get(r).copied().unwrap_or(0)
}

#[tokio::test]
async fn tasks_on_two_nodes_talk_through_the_fast_path() -> anyhow::Result<()> {
    let lab = Lab::builder("fast").nodes(2).start().await?;
    lab.form_swarm(1)?;
    lab.nodes_ready(2, Duration::from_secs(15)).await?;
    lab.shoal(1, &["network", "create", "fastnet"])?;
    http_service(&lab, HTTP, "s1", "fastnet", "n1")?;
    http_service(&lab, HTTP, "s2", "fastnet", "n2")?;
    for s in ["s1", "s2"] {
        lab.running(s, 1, Duration::from_secs(40)).await?;
    }
    let (s1, s2) = (task_row(&lab, "s1")?, task_row(&lab, "s2")?);
    let (s1_ip, s2_ip) = (task_ip(&s1)?, task_ip(&s2)?);
    let s2_vip = vip_of(&lab, "s2")?;
    let from_s1 = task_netns(&s1)?;

    // Endpoints are programmed a moment after the task runs: wait for the
    // first answer before counting.
    let direct = SocketAddr::from((s2_ip, 80));
    let mut first = None;
    for _ in 0..20 {
        first = Some(http_get_from(from_s1.clone(), direct, TIMEOUT)?);
        if matches!(first, Some(Ok(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    first
        .context("no attempt")?
        .with_context(|| format!("s1 → {direct} never answered"))?;
    // The FDB mirror follows the endpoint loop's pass that programmed s2:
    // wait until both nodes encapsulate, within a resync period.
    let encap = |n| -> anyhow::Result<u64> {
        Ok(count(
            &counters(&lab, n, "mesh_reasons")?,
            "fast-path-encap",
        ))
    };
    let mut mirrored = false;
    for _ in 0..20 {
        let before = (encap(1)?, encap(2)?);
        http_get_from(from_s1.clone(), direct, TIMEOUT)??;
        if encap(1)? > before.0 && encap(2)? > before.1 {
            mirrored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(mirrored, "the nodes never encapsulated s1 ↔ s2 themselves");

    let (n1_before, n2_before) = (
        counters(&lab, 1, "mesh_reasons")?,
        counters(&lab, 2, "mesh_reasons")?,
    );
    for to in [direct, SocketAddr::from((s2_vip, 80))] {
        for i in 0..CALLS {
            let body = http_get_from(from_s1.clone(), to, TIMEOUT)?
                .with_context(|| format!("s1 → {to}, call {i}"))?;
            ensure!(
                body.contains(&format!(" {s1_ip}\n")),
                "s1 → {to}: the answer does not show s1's address {s1_ip}: {body:?}"
            );
        }
    }
    let (n1, n2) = (
        counters(&lab, 1, "mesh_reasons")?,
        counters(&lab, 2, "mesh_reasons")?,
    );
    let rose = |after: &std::collections::BTreeMap<String, u64>,
                before: &std::collections::BTreeMap<String, u64>,
                r: &str| count(after, r) - count(before, r);
    let (n1_encap, n1_tx, n1_rx, n1_decap) = (
        rose(&n1, &n1_before, "fast-path-encap"),
        rose(&n1, &n1_before, "fast-path-tx"),
        rose(&n1, &n1_before, "fast-path-rx"),
        rose(&n1, &n1_before, "fast-path-decap"),
    );
    let (n2_encap, n2_tx, n2_rx, n2_decap) = (
        rose(&n2, &n2_before, "fast-path-encap"),
        rose(&n2, &n2_before, "fast-path-tx"),
        rose(&n2, &n2_before, "fast-path-rx"),
        rose(&n2, &n2_before, "fast-path-decap"),
    );
    println!(
        "fast path: n1 encap {n1_encap} tx {n1_tx} rx {n1_rx} decap {n1_decap}, \
         n2 encap {n2_encap} tx {n2_tx} rx {n2_rx} decap {n2_decap}"
    );
    // This kernel shrinks every such packet: the VXLAN device sees none.
    ensure!(
        n1_decap > 0 && n2_decap > 0,
        "no VXLAN was decapsulated on the data interfaces"
    );
    // With the FDB mirrored no frame needs the VXLAN device: both the
    // task's MAC and n1's bridge MAC (the VIP calls' replies) are in it.
    ensure!(
        n1_tx + n2_tx < CALLS / 10,
        "frames still went to the VXLAN devices (n1 {n1_tx}, n2 {n2_tx}) with the FDB mirrored"
    );
    let (n1_tx, n2_tx) = (n1_tx + n1_encap, n2_tx + n2_encap);
    let (n1_rx, n2_rx) = (n1_rx + n1_decap, n2_rx + n2_decap);
    // A connection is at least SYN, request, FIN and their ACKs from s1,
    // and SYN-ACK, answer and FIN from s2. Calls to the VIP leave n1 by
    // its bridge (the task addressed this node's bridge MAC; n1 DNATs and
    // routes them) but arrive on n2's fast path; their replies leave n2 by
    // it too, addressed back to n1's bridge (the return path to the node
    // that translated them), which n1's bridge takes.
    ensure!(
        n1_tx >= 3 * CALLS,
        "n1 sent {n1_tx} frames by the fast path for {CALLS} direct calls"
    );
    ensure!(
        n2_rx >= 3 * 2 * CALLS,
        "n2 handed {n2_rx} frames into s2 for {} calls",
        2 * CALLS
    );
    ensure!(
        n2_tx >= 2 * 2 * CALLS,
        "n2 sent {n2_tx} of s2's frames by the fast path"
    );
    ensure!(
        n1_rx >= 2 * CALLS,
        "n1 handed {n1_rx} frames into s1 for {CALLS} direct calls"
    );

    // Bulk data on one connection: the kernel hands the task veth GSO
    // frames, each judged by its segments against the underlay's MTU. At
    // the MTU tasks are given, every segment fits: all are encapsulated
    // here, none left to the VXLAN device as too big (fast-path-mtu).
    let before = counters(&lab, 1, "mesh_reasons")?;
    let sent = in_netns(from_s1.clone(), move || -> std::io::Result<usize> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect_timeout(&direct, TIMEOUT)?;
        s.set_write_timeout(Some(TIMEOUT))?;
        // One header line the server reads on and on: it answers nothing,
        // and takes every byte.
        s.write_all(b"GET /")?;
        s.write_all(&vec![b'x'; BULK])?;
        s.flush()?;
        Ok(BULK)
    })??;
    let after = counters(&lab, 1, "mesh_reasons")?;
    let (encap, tx, mtu) = (
        rose(&after, &before, "fast-path-encap"),
        rose(&after, &before, "fast-path-tx"),
        rose(&after, &before, "fast-path-mtu"),
    );
    println!("bulk: {sent} bytes, n1 encap {encap} tx {tx} mtu {mtu}");
    ensure!(
        mtu == 0,
        "{mtu} of s1's frames were judged too big for the underlay"
    );
    // At most 64 KiB a frame: 8 MiB takes at least 128 of them.
    ensure!(
        encap >= (BULK >> 16) as u64 && tx < CALLS / 10,
        "the bulk data was not encapsulated here (encap {encap}, tx {tx})"
    );
    lab.down()?;
    Ok(())
}
