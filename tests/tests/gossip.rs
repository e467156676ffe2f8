//! Gossip on 7946 between lab nodes: membership by SWIM, endpoints spread
//! to every node, a late joiner learning the whole table at once, and a
//! dead node's endpoints removed everywhere within the detection time.
//! Prints the measured times (the figures of the issue note).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context;
use shoal_gossip::{Endpoint, EndpointKey, Gossip, GossipConfig, Keyring};
use shoal_lab::{Lab, eventually};

const NODES: usize = 5;

fn start(lab: &Lab, k: usize) -> anyhow::Result<Gossip> {
    let addr = SocketAddr::new(lab.node(k).addr().into(), shoal_gossip::GOSSIP_PORT);
    let (udp, tcp) = shoal_lab::netns::bind_udp_tcp(lab.node(k).netns(), addr)?;
    let mut cfg = GossipConfig::lan(format!("node{k}"), addr, NODES as u32);
    // All members live in this test process: TCP pushes must be made from
    // the member's own namespace.
    cfg.netns = Some(shoal_lab::netns::netns_path(lab.node(k).netns()));
    let g = Gossip::start(cfg, udp, tcp, NODES as u32)?;
    g.set_keyring(ring().clone());
    Ok(g)
}

/// One ring for every member of this test.
fn ring() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(|| Keyring::random(1..=3).expect("a ring"))
}

fn endpoint(k: usize, last: u8) -> Endpoint {
    Endpoint {
        network: "appnet".into(),
        ip: Ipv4Addr::new(10, 0, 1, last),
        mac: [2, 0x42, 10, 0, 1, last],
        vtep: Ipv4Addr::new(198, 18, 0, k as u8),
        node_id: format!("node{k}"),
    }
}

fn knows(g: &Gossip, e: &Endpoint) -> bool {
    g.endpoints().iter().any(|x| x == e)
}

#[tokio::test]
async fn endpoints_spread_and_die_with_their_node() -> anyhow::Result<()> {
    let lab = Lab::builder("gossip").nodes(NODES).start().await?;
    let cfg = GossipConfig::lan("x".into(), "0.0.0.0:0".parse()?, NODES as u32);
    eprintln!(
        "SWIM timings for {NODES} nodes: probe every {:?}, rtt {:?}, suspect → down after {:?}",
        cfg.probe_period, cfg.probe_rtt, cfg.suspect_to_down
    );
    let seed = SocketAddr::new(lab.node(1).addr().into(), shoal_gossip::GOSSIP_PORT);
    let mut g: Vec<Option<Gossip>> = Vec::new();
    for k in 1..NODES {
        let m = start(&lab, k)?;
        if k > 1 {
            m.join([seed])?;
        }
        g.push(Some(m));
    }
    let live = |g: &Vec<Option<Gossip>>| -> Vec<usize> {
        g.iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|_| i))
            .collect()
    };
    eventually(Duration::from_secs(15), "4 members know each other", || {
        Ok(g.iter()
            .flatten()
            .all(|m| m.members().len() == NODES - 2)
            .then_some(()))
    })
    .await?;

    // An endpoint published on n3 reaches every node.
    let e3 = endpoint(3, 3);
    let t = Instant::now();
    g[2].as_ref().context("n3")?.publish(e3.clone())?;
    eventually(Duration::from_secs(10), "all know n3's endpoint", || {
        Ok(g.iter().flatten().all(|m| knows(m, &e3)).then_some(()))
    })
    .await?;
    eprintln!(
        "new endpoint known by all {} nodes after {:?}",
        NODES - 1,
        t.elapsed()
    );
    g[0].as_ref().context("n1")?.publish(endpoint(1, 2))?;

    // A node joining later learns the whole table from the push on join.
    let t = Instant::now();
    let late = start(&lab, NODES)?;
    late.join([seed])?;
    let r = eventually(Duration::from_secs(10), "late joiner has the table", || {
        Ok((knows(&late, &e3) && knows(&late, &endpoint(1, 2))).then_some(()))
    })
    .await;
    r?;
    eprintln!("late joiner had both endpoints after {:?}", t.elapsed());
    g.push(Some(late));

    // Withdrawn on purpose: gone everywhere.
    let e4 = endpoint(4, 4);
    g[3].as_ref().context("n4")?.publish(e4.clone())?;
    eventually(Duration::from_secs(10), "all know n4's endpoint", || {
        Ok(g.iter().flatten().all(|m| knows(m, &e4)).then_some(()))
    })
    .await?;
    g[3].as_ref().context("n4")?.withdraw(EndpointKey {
        network: "appnet".into(),
        ip: e4.ip,
    })?;
    eventually(Duration::from_secs(10), "n4's endpoint withdrawn", || {
        Ok(g.iter().flatten().all(|m| !knows(m, &e4)).then_some(()))
    })
    .await?;

    // n3 dies without a word: its endpoint leaves every other node.
    let t = Instant::now();
    g[2] = None;
    let dead = eventually(
        Duration::from_secs(60),
        "n3's endpoint gone everywhere",
        || {
            Ok(g.iter()
                .flatten()
                .all(|m| !knows(m, &e3) && !m.members().contains_key("node3"))
                .then_some(t.elapsed()))
        },
    )
    .await?;
    eprintln!("dead node's endpoints removed from all others after {dead:?}");
    assert_eq!(live(&g).len(), NODES - 1);
    // The others still hold each other's endpoints.
    assert!(g.iter().flatten().all(|m| knows(m, &endpoint(1, 2))));
    Ok(())
}
