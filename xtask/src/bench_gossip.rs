//! `cargo xtask bench gossip`: propagation and failure-detection times of
//! the gossip layer on N lab nodes, printed against the bound the SWIM
//! settings give (probe period + probe RTT + suspicion timeout).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use shoal_gossip::{Endpoint, GOSSIP_PORT, Gossip, GossipConfig, Keyring};
use shoal_lab::Lab;

use crate::bench::{ms, pct};

fn start(lab: &Lab, k: usize, n: usize, ring: &Keyring) -> anyhow::Result<(Gossip, GossipConfig)> {
    let addr = SocketAddr::new(lab.node(k).addr().into(), GOSSIP_PORT);
    let (udp, tcp) = shoal_lab::netns::bind_udp_tcp(lab.node(k).netns(), addr)?;
    let mut cfg = GossipConfig::lan(format!("node{k}"), addr, n as u32);
    cfg.netns = Some(shoal_lab::netns::netns_path(lab.node(k).netns()));
    let g = Gossip::start(cfg.clone(), udp, tcp, n as u32)?;
    // Sealed as on a real node: the cost of encryption is in the figures.
    g.set_keyring(ring.clone());
    Ok((g, cfg))
}

/// Polls every 5 ms until `f` holds; the elapsed time, or an error after 2 min.
async fn until(mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "not within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(t.elapsed())
}

pub async fn run(sizes: &[usize], rounds: usize) -> anyhow::Result<()> {
    println!(
        "{:>6} {:>12} {:>14} {:>14} {:>14} {:>14} {:>10}",
        "nodes",
        "membership",
        "spread p50",
        "spread max",
        "dead→gone p50",
        "dead→gone max",
        "vs bound"
    );
    for &n in sizes {
        ensure!(
            n >= 3,
            "--nodes {n}: gossip needs at least 3 nodes to measure"
        );
        // Kills stop while two members remain to observe them.
        let rounds = rounds.min(n - 2);
        let lab = Lab::builder("bench-gossip")
            .nodes(n)
            .daemons(false)
            .start()
            .await?;
        let seed = SocketAddr::new(lab.node(1).addr().into(), GOSSIP_PORT);
        let mut members = Vec::new();
        let mut cfg = None;
        let ring = Keyring::random(1..=3)?;
        for k in 1..=n {
            let (g, c) = start(&lab, k, n, &ring)?;
            if k > 1 {
                g.join([seed])?;
            }
            members.push(Some(g));
            cfg = Some(c);
        }
        let cfg = cfg.context("no members")?;
        let membership =
            until(|| members.iter().flatten().all(|m| m.members().len() == n - 1)).await?;

        let mut spread = Vec::new();
        for r in 0..rounds {
            let e = Endpoint {
                network: "bench".into(),
                ip: Ipv4Addr::new(10, 9, (r / 250) as u8, (r % 250 + 2) as u8),
                mac: [2, 0, 0, 0, 0, r as u8],
                vtep: lab.node(n - r).addr(),
                node_id: format!("node{}", n - r),
            };
            members[n - r - 1]
                .as_ref()
                .context("publisher")?
                .publish(e.clone())?;
            spread.push(
                until(|| members.iter().flatten().all(|m| m.endpoints().contains(&e))).await?,
            );
        }
        let mut gone = Vec::new();
        for r in 0..rounds {
            // Kill a publisher: its endpoint must leave every other node.
            let k = n - r;
            members[k - 1] = None;
            let id = format!("node{k}");
            gone.push(
                until(|| {
                    members
                        .iter()
                        .flatten()
                        .all(|m| m.endpoints().iter().all(|e| e.node_id != id))
                })
                .await?,
            );
        }
        spread.sort();
        gone.sort();
        let bound = cfg.probe_period + cfg.probe_rtt + cfg.suspect_to_down;
        println!(
            "{n:>6} {:>12} {:>14} {:>14} {:>14} {:>14} {:>9.2}x",
            ms(membership),
            ms(pct(&spread, 50.0)),
            ms(pct(&spread, 100.0)),
            ms(pct(&gone, 50.0)),
            ms(pct(&gone, 100.0)),
            pct(&gone, 50.0).as_secs_f64() / bound.as_secs_f64(),
        );
        println!(
            "        (SWIM at {n} nodes: probe {:?}, rtt {:?}, suspicion {:?}: bound {:?})",
            cfg.probe_period, cfg.probe_rtt, cfg.suspect_to_down, bound
        );
    }
    Ok(())
}
