//! Sealed gossip against a rogue on the underlay: three nodes with a 3 s
//! network key rotation, a service on an overlay across them, and a rogue
//! process in its own namespace on the lab's underlay (the client's,
//! 198.18.0.250) that
//! (a) sends valid SWIM packets (an announce carrying a forged endpoint
//!     record) and a full-table push in cleartext,
//! (b) sends the same packets sealed with wrong keys, under key tags the
//!     ring uses and under others,
//! (c) as a compromised member — holding n3's certificate, it fetches the
//!     gossip ring over n3's dispatcher session, joins and gossips a forged
//!     endpoint pointing n3's task at the rogue's own address.
//! (a) and (b) change nothing and raise the drop counters of `node stats`;
//! in (c) the forged VTEP is never programmed (read back from the FDB by
//! netlink) and is counted as disagreeing with the control plane. While
//! keys rotate every 3 s, every node keeps every other as a gossip member.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use foca::{AccumulatingRuntime, BroadcastHandler, Config, Foca, Invalidates, PostcardCodec};
use serde_json::Value;
use shoal_api::cluster::v1::{AssignmentsRequest, dispatcher_client::DispatcherClient};
use shoal_gossip::{
    Endpoint, EndpointKey, GOSSIP_PORT, Gossip, GossipConfig, Keyring, Member, Record,
};
use shoal_lab::{Formation, Lab, TaskRow, eventually};
use shoal_overlay::{Driver, RemoteEndpoint};

const ROTATION_SECS: u64 = 3;
const ROGUE: Ipv4Addr = shoal_lab::CLIENT_ADDR;

fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// Node `k`'s `node stats` gossip counters by reason.
fn gossip_stats(lab: &Lab, k: usize) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = lab.shoal(k, &["node", "stats", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    v["gossip"]
        .as_array()
        .context("node stats: no gossip counters")?
        .iter()
        .map(|r| {
            Ok((
                r["reason"].as_str().context("reason")?.to_owned(),
                r["count"].as_u64().context("count")?,
            ))
        })
        .collect()
}

fn count(stats: &BTreeMap<String, u64>, reason: &str) -> u64 {
    stats.get(reason).copied().unwrap_or_default()
}

/// Node `k`'s remote endpoints on `vni`, as the kernel holds them.
async fn remotes(lab: &Lab, k: usize, vni: u32) -> anyhow::Result<Vec<RemoteEndpoint>> {
    let driver = Driver::in_netns(format!("/run/netns/{}", lab.node(k).netns()))?;
    Ok(driver.remotes(vni).await?.endpoints)
}

/// Whether every peer check of node `k`'s `node doctor` says the peer is
/// a gossip member.
fn all_gossip_members(lab: &Lab, k: usize) -> anyhow::Result<bool> {
    let out = lab.shoal(k, &["node", "doctor", "--format", "json"])?;
    let rows: Vec<Value> = serde_json::from_str(&out)?;
    let peers: Vec<&Value> = rows
        .iter()
        .filter(|r| r["check"].as_str().is_some_and(|c| c.ends_with(" gossip")))
        .collect();
    Ok(peers.len() == 2
        && peers
            .iter()
            .all(|r| r["detail"].as_str() == Some("7946 answers, a gossip member")))
}

fn lines_with(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test]
async fn rogue_gossip_changes_nothing_and_forged_endpoints_are_never_programmed()
-> anyhow::Result<()> {
    let echo = env!("CARGO_BIN_EXE_lab-echo");
    let lab = Lab::builder("gossipsec")
        .nodes(3)
        .client(true)
        .start()
        .await?;
    let rotation = format!("{ROTATION_SECS}s");
    lab.form_swarm_of(Formation {
        managers: 1,
        nodes: 3,
        init: &[
            "--dispatcher-heartbeat",
            "1s",
            "--network-key-rotation",
            &rotation,
        ],
    })?;
    lab.shoal(1, &["network", "create", "-d", "overlay", "appnet"])?;
    let inspect: Value = serde_json::from_str(&lab.shoal(1, &["network", "inspect", "appnet"])?)?;
    let net = inspect
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or(&inspect);
    let vni = net["vni"].as_u64().context("network inspect: vni")? as u32;
    let net_id = net["id"]
        .as_str()
        .context("network inspect: id")?
        .to_owned();
    let out = lab.shoal(
        1,
        &[
            "service",
            "create",
            "--name",
            "srv",
            "--replicas",
            "3",
            "--network",
            "appnet",
            "host",
            echo,
            "serve",
            "7000",
        ],
    )?;
    ensure!(out.contains("converged"), "create did not converge: {out}");
    let tasks: Vec<TaskRow> = lab.service_ps(1, "srv").map_err(|e| anyhow::anyhow!(e))?;
    let n3_task = tasks
        .iter()
        .find(|t| t.running() && t.node == "n3")
        .and_then(TaskRow::ip)
        .with_context(|| format!("no running task with an address on n3: {tasks:?}"))?;
    let nodes: Value = serde_json::from_str(&lab.shoal(1, &["node", "ls", "--format", "json"])?)?;
    let n3_id = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["hostname"] == "n3"))
        .and_then(|n| n["id"].as_str())
        .context("node ls: no n3")?
        .to_owned();
    let n3_vtep = lab.node(3).addr();
    let points_at_n3 = |r: &[RemoteEndpoint]| {
        r.iter()
            .any(|e| e.ip == n3_task && e.vtep == n3_vtep && e.mac.octets() == mac_for(n3_task))
    };
    for k in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !points_at_n3(&remotes(&lab, k, vni).await?) {
            ensure!(Instant::now() < deadline, "n{k} never programmed n3's task");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Rotation: four periods go by; every node installs each new ring,
    // keeps the others as members and drops nothing of theirs.
    let installs = |k: usize| lines_with(lab.node(k).log(), "gossip key ring installed");
    let before: Vec<usize> = (1..=3).map(installs).collect();
    let t = Instant::now();
    eventually(
        Duration::from_secs(ROTATION_SECS * 8),
        "four key rotations on every node",
        || {
            Ok((1..=3)
                .all(|k| installs(k) >= before[k - 1] + 4)
                .then_some(()))
        },
    )
    .await?;
    eprintln!(
        "4 rotations installed on all 3 nodes in {:?} (period {ROTATION_SECS} s)",
        t.elapsed()
    );
    for k in 1..=3 {
        ensure!(
            all_gossip_members(&lab, k)?,
            "n{k} lost a gossip member across rotations"
        );
        let s = gossip_stats(&lab, k)?;
        eprintln!("n{k} after rotations: {s:?}");
        ensure!(
            count(&s, "dropped unknown key") == 0 && count(&s, "dropped forged") == 0,
            "n{k} dropped peers' packets across rotations: {s:?}"
        );
        ensure!(count(&s, "opened") > 0, "n{k} opened nothing: {s:?}");
    }

    // (a) and (b): a rogue without the ring.
    let forged = Endpoint {
        network: net_id.clone(),
        ip: n3_task,
        mac: mac_for(n3_task),
        vtep: ROGUE,
        node_id: n3_id.clone(),
    };
    let before: Vec<BTreeMap<String, u64>> = (1..=3)
        .map(|k| gossip_stats(&lab, k))
        .collect::<Result<_, _>>()?;
    let targets: Vec<SocketAddr> = (1..=3)
        .map(|k| SocketAddr::new(lab.node(k).addr().into(), GOSSIP_PORT))
        .collect();
    let client_ns = shoal_lab::netns::netns_path(&lab.client_netns().context("client netns")?);
    let record = Record {
        key: EndpointKey {
            network: net_id.clone(),
            ip: n3_task,
        },
        origin: "rogue".into(),
        version: u64::MAX / 2,
        endpoint: Some(forged.clone()),
    };
    let answered = shoal_netns::spawn_in(client_ns.clone(), move || {
        without_the_ring(&targets, &record)
    })
    .await??;
    ensure!(
        answered == 0,
        "the nodes answered {answered} packets of a rogue without the ring"
    );
    for k in 1..=3 {
        let s = gossip_stats(&lab, k)?;
        let b = &before[k - 1];
        eprintln!("n{k} after the rogue without the ring: {s:?}");
        for reason in ["dropped cleartext", "dropped forged", "dropped unknown key"] {
            ensure!(
                count(&s, reason) > count(b, reason),
                "n{k}: {reason} did not rise: {b:?} → {s:?}"
            );
        }
        // Nothing reached the endpoint table: no record to disagree with.
        ensure!(
            count(&s, "endpoint disagrees with control plane") == 0,
            "n{k} took a record from a rogue without the ring: {s:?}"
        );
        ensure!(all_gossip_members(&lab, k)?, "n{k}: membership changed");
    }
    for k in [1, 2] {
        ensure!(
            points_at_n3(&remotes(&lab, k, vni).await?),
            "n{k}: n3's task moved"
        );
    }

    // (c): a compromised member with the ring gossips a forged VTEP.
    let state = lab.node(3).state_dir().to_owned();
    let manager = format!(
        "{}:{}",
        lab.node(1).addr(),
        shoal_common::ports::CLUSTER_PORT
    );
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rogue = tokio::spawn(shoal_netns::spawn_in(client_ns, move || {
        compromised_member(&state, &manager, &n3_id, forged, joined_tx, stop_rx)
    }));
    let members = match tokio::time::timeout(Duration::from_secs(40), joined_rx).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => {
            rogue.await???;
            bail!("the compromised member stopped without joining");
        }
        Err(_) => bail!("the compromised member did not join within 40 s"),
    };
    eprintln!("compromised member joined with the ring; sees {members} members");
    let t = Instant::now();
    let mut checks = 0;
    let mut counted = [false; 2];
    // For 10 s (three more rotations), n1 and n2 never point n3's task at
    // the rogue, and both count the forged record.
    while t.elapsed() < Duration::from_secs(10) {
        for k in [1, 2] {
            let r = remotes(&lab, k, vni).await?;
            if let Some(bad) = r.iter().find(|e| e.vtep == ROGUE) {
                bail!("n{k} programmed the forged VTEP: {bad:?}");
            }
            ensure!(points_at_n3(&r), "n{k}: n3's task lost its entry: {r:?}");
            counted[k - 1] |= count(
                &gossip_stats(&lab, k)?,
                "endpoint disagrees with control plane",
            ) > 0;
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _stopped = stop_tx.send(());
    rogue.await???;
    eprintln!("{checks} FDB checks on n1 and n2 over 10 s: the forged VTEP never programmed");
    ensure!(
        counted == [true, true],
        "the forged record was not counted as disagreeing on n1/n2: {counted:?}"
    );
    for k in 1..=3 {
        eprintln!("n{k} final: {:?}", gossip_stats(&lab, k)?);
    }
    Ok(())
}

/// foca's custom broadcasts need a handler; the rogue takes nothing in.
struct Deaf;

#[derive(Clone)]
struct NoKey;

impl Invalidates for NoKey {
    fn invalidates(&self, _: &Self) -> bool {
        false
    }
}

impl BroadcastHandler<Member> for Deaf {
    type Key = NoKey;
    type Error = std::io::Error;

    fn receive_item(&mut self, _: &[u8], _: Option<&Member>) -> Result<Option<NoKey>, Self::Error> {
        Ok(None)
    }
}

/// In the rogue's namespace: valid SWIM announces carrying `record`, and a
/// full-table push of it, in cleartext, then sealed with wrong keys.
/// Returns how many packets came back.
fn without_the_ring(targets: &[SocketAddr], record: &Record) -> anyhow::Result<usize> {
    let me = SocketAddr::new(ROGUE.into(), GOSSIP_PORT);
    let udp = std::net::UdpSocket::bind(me)?;
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let identity = Member {
        addr: me,
        node_id: "rogue".into(),
        incarnation: 1,
    };
    let rng: rand::rngs::StdRng = rand::make_rng();
    let mut foca = Foca::with_custom_broadcast(
        identity,
        Config::new_lan(std::num::NonZeroU32::new(4).context("size")?),
        rng,
        PostcardCodec,
        Deaf,
    );
    foca.add_broadcast(&postcard::to_allocvec(record)?)?;
    let mut rt = AccumulatingRuntime::new();
    let mut packets = Vec::new();
    for &to in targets {
        let dst = Member {
            addr: to,
            node_id: String::new(),
            incarnation: 0,
        };
        foca.announce(dst, &mut rt)?;
        while let Some((to, data)) = rt.to_send() {
            packets.push((to.addr, data));
        }
    }
    ensure!(!packets.is_empty(), "foca made no announce");
    // (a) cleartext, three times over.
    for _ in 0..3 {
        for (to, data) in &packets {
            udp.send_to(data, to)?;
        }
    }
    let push = postcard::to_allocvec(&vec![record.clone()])?;
    for to in targets {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect_timeout(to, Duration::from_secs(3))?;
        s.write_all(&push)?;
    }
    // (b) sealed with wrong keys: Lamport tags are small, so 1..=500 covers
    // the ring's current tags (a forgery under a known tag) and others.
    for tag in 1..=500u64 {
        let wrong = Keyring::random([tag])?;
        for (to, data) in &packets {
            udp.send_to(&wrong.seal(data), to)?;
        }
    }
    // Whatever comes back in 3 s: a node that took the announce answers.
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if udp.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
    }
    Ok(answered)
}

/// In the rogue's namespace, with n3's certificate: the gossip ring from
/// n3's dispatcher session (kept current as it rotates), a gossip member
/// joined with it, and `forged` published. Runs until `stop`.
fn compromised_member(
    state: &Path,
    manager: &str,
    node_id: &str,
    forged: Endpoint,
    joined: tokio::sync::oneshot::Sender<usize>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // The node's swarm files: what a root compromise of n3 yields.
        let text = |n: &str| -> anyhow::Result<String> {
            let p = state.join("swarm").join(n);
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let key = shoal_ca::NodeKey::from_pem(&text("key.pem")?)?;
        let identity = shoal_ca::NodeIdentity::from_pem(&text("cert.pem")?, &key.to_pem())?;
        let ca = shoal_ca::CaCert::bundle_from_pem(&text("ca.pem")?)?
            .into_iter()
            .next()
            .context("ca.pem: no certificate")?;
        let mut tls =
            shoal_ca::client_config(&identity, &ca, Arc::new(shoal_ca::RemovedNodes::new()))?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let ch = shoal_controlplane::transport::channel(
            manager,
            Arc::new(tls),
            shoal_ca::NodeRole::Manager.server_name(),
        )?;
        let mut sets = DispatcherClient::new(ch)
            .assignments(AssignmentsRequest {
                node_id: node_id.to_owned(),
            })
            .await?
            .into_inner();
        let ring = |set: &shoal_api::cluster::v1::AssignmentSet| {
            Keyring::new(
                set.network_keys
                    .iter()
                    .filter(|k| k.subsystem == "networking:gossip")
                    .map(|k| (k.lamport_time, k.key.clone())),
            )
        };
        let first = sets.message().await?.context("no assignment set")?;
        eprintln!(
            "rogue: n3's session gave {} ring keys",
            first.network_keys.len()
        );
        let addr = SocketAddr::new(ROGUE.into(), GOSSIP_PORT);
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        let g = Gossip::start(GossipConfig::lan("rogue".into(), addr, 4), udp, tcp, 4)?;
        g.set_keyring(ring(&first)?);
        let seed = SocketAddr::new(
            manager
                .split(':')
                .next()
                .context("manager address")?
                .parse::<Ipv4Addr>()?
                .into(),
            GOSSIP_PORT,
        );
        let t = Instant::now();
        while g.members().len() < 3 {
            ensure!(
                t.elapsed() < Duration::from_secs(20),
                "never joined: {:?}",
                g.members()
            );
            g.join([seed])?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        g.publish(forged)?;
        let _gone = joined.send(g.members().len());
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                set = sets.message() => match set? {
                    Some(set) => g.set_keyring(ring(&set)?),
                    None => bail!("the dispatcher closed n3's stream"),
                },
            }
        }
    })
}
