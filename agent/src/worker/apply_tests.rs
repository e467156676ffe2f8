//! The executor's logic through fake ports ([`crate::fake`]): what an
//! assignment set makes it do, in what order, with no root and no kernel.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use shoal_api::cluster::v1::{
    AssignmentSet, MeshBackend, MeshService, NetworkAssignment, TaskAddress, TaskAssignment,
    TaskReport, VirtualIp,
};
use shoal_mesh::{BackendSpec, GroupKey, Scope};
use shoal_overlay::bridge_mac;
use tokio::sync::mpsc;

use super::{Executor, Setup};
use crate::{
    endpoints::Endpoints,
    fake::{Call, FakeMesh, FakeOverlay, FakeTasks, Log, ME, PEER, VNI, nodes},
    local::{Local, lock, mac_for},
};

const INGRESS_VNI: u32 = 4096;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

struct Node {
    exec: Arc<Executor<FakeOverlay, FakeTasks, FakeMesh>>,
    reports: mpsc::UnboundedReceiver<TaskReport>,
    log: Log,
    _dir: tempfile::TempDir,
}

/// An executor on fakes; with a gossip member on loopback if `gossip`.
fn node(gossip: bool) -> Node {
    let log = Log::default();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoints = gossip.then(|| {
        Endpoints::bind("me", "127.0.0.1:0".parse().expect("an address"))
            .expect("gossip on loopback")
    });
    let setup = Setup {
        images: Arc::new(
            crate::images::Images::open(&dir.path().join("images"), Default::default())
                .expect("an image store"),
        ),
        volumes: Arc::new(crate::volumes::Volumes::new(&dir.path().join("volumes"))),
        tls: None,
        tasks_dir: dir.path().to_owned(),
        data_iface: "eth0".into(),
        local: Arc::new(Local::new("me".into(), Some(ME))),
        endpoints,
        dns: shoal_dns::Resolver::new(Vec::new()),
        resolv_conf: None,
        node_view: Arc::default(),
        secrets: Arc::default(),
        contact: Default::default(),
        peers: None,
        ipsec: None,
        wireguard: Arc::default(),
        drain_suspected: true,
    };
    let (exec, reports) = Executor::new(
        setup,
        FakeOverlay::new(log.clone()),
        FakeTasks::new(log.clone()),
        FakeMesh::new(log.clone()),
    );
    Node {
        exec: Arc::new(exec),
        reports,
        log,
        _dir: dir,
    }
}

/// A prefix in the tests' text, its length unchecked (33 is a test case).
fn cidr(s: &str) -> Option<shoal_api::cluster::v1::Ipv4Prefix> {
    let (a, l) = s.split_once('/')?;
    Some(shoal_api::cluster::v1::Ipv4Prefix {
        addr: u32::from(a.parse::<Ipv4Addr>().ok()?),
        prefix_len: l.parse().ok()?,
    })
}

/// A task state's raw value from its word; 99 (unknown) for a typo.
fn state_of(word: &str) -> i32 {
    use shoal_api::words::Word;
    shoal_api::cluster::v1::TaskState::from_word(word).map_or(99, Into::into)
}

/// A raw task state's word, as the assertions were written.
fn word_of(state: i32) -> &'static str {
    use shoal_api::words::Word;
    shoal_api::cluster::v1::TaskState::try_from(state).map_or("?", Word::word)
}

fn network() -> NetworkAssignment {
    NetworkAssignment {
        id: "net-a".into(),
        name: "front".into(),
        vni: VNI,
        subnet: cidr("10.0.1.0/24"),
        ..Default::default()
    }
}

fn ingress() -> NetworkAssignment {
    NetworkAssignment {
        id: "ingress".into(),
        name: "ingress".into(),
        vni: INGRESS_VNI,
        subnet: cidr("10.255.0.0/16"),
        ingress: true,
        ..Default::default()
    }
}

fn task(id: &str, desired: &str, state: &str, ip: &str) -> TaskAssignment {
    TaskAssignment {
        id: id.into(),
        name: format!("web.{id}"),
        service_id: "svc".into(),
        service_name: "web".into(),
        desired_state: state_of(desired),
        state: state_of(state),
        args: vec!["sleep".into(), "1000".into()],
        addresses: vec![TaskAddress {
            network_id: "net-a".into(),
            addr: cidr(&format!("{ip}/24")),
        }],
        container: Some(shoal_api::cluster::v1::ContainerSpec {
            image: "host".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn backend(task: &str, node: &str, node_addr: Ipv4Addr, ip: &str) -> MeshBackend {
    MeshBackend {
        task_id: task.into(),
        node_id: node.into(),
        node_addr: u32::from(node_addr),
        network_id: "net-a".into(),
        ip: ip.parse::<Ipv4Addr>().map_or(0, u32::from),
    }
}

fn set(version: u64, tasks: Vec<TaskAssignment>) -> AssignmentSet {
    AssignmentSet {
        version,
        tasks,
        networks: vec![network()],
        nodes: nodes(),
        mesh: vec![MeshService {
            id: "svc".into(),
            name: "web".into(),
            endpoint_mode: shoal_api::cluster::v1::EndpointMode::Vip.into(),
            vips: vec![VirtualIp {
                network_id: "net-a".into(),
                network: "front".into(),
                addr: cidr(&format!("{VIP}/24")),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The reports up to and including the first in `state`.
async fn until(rx: &mut mpsc::UnboundedReceiver<TaskReport>, state: &str) -> Vec<TaskReport> {
    let mut seen = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {state} report in time; got {seen:?}"))
            .expect("the reports channel is open");
        let last = word_of(r.state) == state;
        seen.push(r);
        if last {
            return seen;
        }
    }
}

fn states(reports: &[TaskReport]) -> Vec<(&str, &str)> {
    reports
        .iter()
        .map(|r| (r.task_id.as_str(), word_of(r.state)))
        .collect()
}

/// Until the task's supervisor is done (its networks released).
async fn gone(n: &Node, id: &str) {
    for _ in 0..500 {
        if !lock(&n.exec.running).contains_key(id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} is still supervised");
}

/// A node running task t1 on net-a, with no call recorded yet.
async fn running_t1() -> Node {
    let mut n = node(false);
    n.exec
        .apply(set(1, vec![task("t1", "running", "assigned", "10.0.1.5")]));
    until(&mut n.reports, "running").await;
    n.log.clear();
    n
}

/// No report comes within a moment.
async fn quiet(rx: &mut mpsc::UnboundedReceiver<TaskReport>) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(r) = rx.try_recv() {
        panic!("unexpected report {r:?}");
    }
}

#[tokio::test]
async fn a_new_network_is_programmed_before_its_first_task_runs() {
    let mut n = node(true);
    n.exec
        .apply(set(1, vec![task("t1", "running", "assigned", "10.0.1.5")]));
    let reports = until(&mut n.reports, "running").await;
    assert_eq!(
        states(&reports),
        [
            ("t1", "accepted"),
            ("t1", "preparing"),
            ("t1", "starting"),
            ("t1", "running")
        ]
    );
    assert_eq!(
        n.log.calls(),
        [
            Call::EnsureNetwork(VNI),
            // The other node's bridge and the service VIP, before the task.
            Call::AddFdb(VNI, bridge_mac(PEER), PEER),
            Call::AddNeighbour(VNI, VIP, bridge_mac(ME)),
            Call::Start("t1".into()),
            Call::Attach("veth-t1-0".into()),
        ]
    );
    assert_eq!(
        n.exec.local().local_networks().await,
        [("net-a".to_owned(), VNI)].into()
    );
    // Its address is published by gossip once it runs.
    let gossip = n.exec.setup.endpoints.as_ref().expect("gossip").gossip();
    let ip = Ipv4Addr::new(10, 0, 1, 5);
    let mut published = Vec::new();
    for _ in 0..200 {
        published = gossip.endpoints();
        if !published.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        published,
        [shoal_gossip::Endpoint {
            network: "net-a".into(),
            ip,
            mac: mac_for(ip),
            vtep: ME,
            node_id: "me".into(),
        }]
    );
}

#[tokio::test]
async fn a_task_gone_from_the_set_is_stopped_then_its_network_released() {
    let mut n = running_t1().await;
    n.exec.apply(set(2, Vec::new()));
    let end = until(&mut n.reports, "shutdown").await;
    assert_eq!(states(&end), [("t1", "shutdown")]);
    assert_eq!(end[0].message, "shutdown");
    assert_eq!(end[0].exit_code, Some(143));
    gone(&n, "t1").await;
    assert_eq!(
        n.log.calls(),
        [
            Call::Stop("t1".into()),
            Call::Detach("veth-t1-0".into()),
            Call::ReleaseNetwork(VNI),
        ]
    );
    assert!(n.exec.local().local_networks().await.is_empty());
    quiet(&mut n.reports).await;
}

#[tokio::test]
async fn desired_shutdown_stops_the_task_and_reports_its_end_once() {
    let mut n = running_t1().await;
    let stopping = set(2, vec![task("t1", "shutdown", "running", "10.0.1.5")]);
    n.exec.apply(stopping.clone());
    let end = until(&mut n.reports, "shutdown").await;
    assert_eq!(states(&end), [("t1", "shutdown")]);
    gone(&n, "t1").await;
    // The manager repeats the set until it has the report: nothing more.
    n.exec.apply(stopping);
    quiet(&mut n.reports).await;
    let stops = n
        .log
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Stop(_)))
        .count();
    assert_eq!(stops, 1);
}

#[tokio::test]
async fn tasks_this_process_did_not_start_are_reported_without_running() {
    let mut n = node(false);
    let s = set(
        1,
        vec![
            // Accepted by a previous run of the daemon: its process is gone.
            task("lost", "running", "running", "10.0.1.5"),
            // Never started, and no longer wanted.
            task("late", "shutdown", "assigned", "10.0.1.6"),
        ],
    );
    n.exec.apply(s.clone());
    let lost = until(&mut n.reports, "failed").await;
    assert_eq!(states(&lost), [("lost", "failed")]);
    assert_eq!(lost[0].message, "task lost");
    let late = until(&mut n.reports, "shutdown").await;
    assert_eq!(states(&late), [("late", "shutdown")]);
    n.exec.apply(s);
    quiet(&mut n.reports).await;
    assert_eq!(n.log.calls(), []);
}

#[tokio::test]
async fn tasks_a_previous_run_left_are_taken_back_or_stopped() {
    let mut n = node(false);
    n.exec.tasks.left_running("kept");
    n.exec.tasks.left_running("stale");
    n.exec.adopt_previous().await;
    n.exec
        .apply(set(1, vec![task("kept", "running", "running", "10.0.1.5")]));
    // Followed again (reported running once more), never started anew.
    let kept = until(&mut n.reports, "running").await;
    assert_eq!(states(&kept), [("kept", "running")]);
    // "stale" is not assigned any more: stopped.
    for _ in 0..500 {
        if n.log.calls().contains(&Call::Stop("stale".into())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = n.log.calls();
    assert!(calls.contains(&Call::Stop("stale".into())), "{calls:?}");
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Start(_))),
        "{calls:?}"
    );
    // Its end is reported as usual.
    n.exec.tasks.exit("kept", 0);
    let end = until(&mut n.reports, "complete").await;
    assert_eq!(states(&end), [("kept", "complete")]);
}

#[tokio::test]
async fn a_task_that_exits_is_reported_failed_and_its_network_released() {
    let mut n = running_t1().await;
    n.exec.tasks.exit("t1", 3);
    let end = until(&mut n.reports, "failed").await;
    assert_eq!(states(&end), [("t1", "failed")]);
    assert_eq!(end[0].err, "task: non-zero exit (3)");
    assert_eq!(end[0].exit_code, Some(3));
    gone(&n, "t1").await;
    assert_eq!(
        n.log.calls(),
        [Call::Detach("veth-t1-0".into()), Call::ReleaseNetwork(VNI)]
    );
    // Still assigned as running: not started again by this process.
    n.exec
        .apply(set(2, vec![task("t1", "running", "assigned", "10.0.1.5")]));
    quiet(&mut n.reports).await;
}

#[tokio::test]
async fn a_network_is_released_when_its_last_task_ends() {
    let mut n = node(false);
    let t1 = task("t1", "running", "assigned", "10.0.1.5");
    let t2 = task("t2", "running", "assigned", "10.0.1.6");
    n.exec.apply(set(1, vec![t1.clone(), t2.clone()]));
    until(&mut n.reports, "running").await;
    until(&mut n.reports, "running").await;
    n.log.clear();
    n.exec.apply(set(2, vec![t2]));
    until(&mut n.reports, "shutdown").await;
    gone(&n, "t1").await;
    assert_eq!(
        n.log.calls(),
        [Call::Stop("t1".into()), Call::Detach("veth-t1-0".into())]
    );
    n.log.clear();
    n.exec.apply(set(3, Vec::new()));
    until(&mut n.reports, "shutdown").await;
    gone(&n, "t2").await;
    assert_eq!(
        n.log.calls(),
        [
            Call::Stop("t2".into()),
            Call::Detach("veth-t2-0".into()),
            Call::ReleaseNetwork(VNI),
        ]
    );
}

#[tokio::test]
async fn the_ingress_network_outlives_the_tasks_on_it() {
    let mut n = node(false);
    let mut t = task("t1", "running", "assigned", "10.255.0.5");
    t.addresses[0].network_id = "ingress".into();
    t.addresses[0].addr = cidr("10.255.0.5/16");
    let mut s = set(1, vec![t]);
    s.networks.push(ingress());
    n.exec.ensure_ingress(&s).await;
    n.exec.apply(s.clone());
    until(&mut n.reports, "running").await;
    s.version = 2;
    s.tasks.clear();
    n.exec.apply(s);
    until(&mut n.reports, "shutdown").await;
    gone(&n, "t1").await;
    assert_eq!(
        n.log.calls(),
        [
            Call::EnsureNetwork(INGRESS_VNI),
            Call::EnsureNetwork(INGRESS_VNI),
            Call::Start("t1".into()),
            Call::Attach("veth-t1-0".into()),
            Call::Stop("t1".into()),
            Call::Detach("veth-t1-0".into()),
        ]
    );
    assert_eq!(
        n.exec.local().local_networks().await,
        [("ingress".to_owned(), INGRESS_VNI)].into()
    );
}

#[tokio::test]
async fn a_network_that_cannot_be_made_rejects_the_task_before_it_starts() {
    let mut n = node(false);
    let mut s = set(1, vec![task("t1", "running", "assigned", "10.0.1.5")]);
    s.networks[0].subnet = cidr("10.0.1.0/33");
    n.exec.apply(s);
    let reports = until(&mut n.reports, "rejected").await;
    assert_eq!(
        states(&reports),
        [("t1", "accepted"), ("t1", "preparing"), ("t1", "rejected")]
    );
    assert_eq!(reports[2].message, "preparing failed");
    assert!(reports[2].err.contains("subnet"), "{:?}", reports[2].err);
    gone(&n, "t1").await;
    assert_eq!(n.log.calls(), []);
}

#[tokio::test]
async fn leftovers_the_first_set_does_not_name_are_removed() {
    let n = node(false);
    n.exec.overlay.leftover(VNI);
    n.exec.overlay.leftover(9999);
    n.exec.sweep_leftovers(&set(1, Vec::new())).await;
    assert_eq!(n.log.calls(), [Call::ReleaseNetwork(9999)]);
}

#[tokio::test]
async fn the_mesh_gets_reachable_backends_and_keeps_draining_ones_out_of_rings() {
    let n = node(false);
    let mut s = set(1, Vec::new());
    s.mesh[0].backends = vec![
        backend("t1", "me", ME, "10.0.1.5"),
        backend("t2", "n2", PEER, "10.0.1.6"),
    ];
    s.mesh[0].draining = vec![backend("t3", "n2", PEER, "10.0.1.7")];
    n.exec
        .local()
        .networks()
        .await
        .insert("net-a".into(), (VNI, 1));
    let group = GroupKey {
        service_id: "svc".into(),
        scope: Scope::Network("net-a".into()),
    };
    let synced = |log: &Log| match log.calls().as_slice() {
        [Call::MeshSync(want)] => want.clone(),
        other => panic!("expected one mesh sync, got {other:?}"),
    };
    let tasks =
        |b: &[BackendSpec]| -> Vec<String> { b.iter().map(|b| b.task_id.clone()).collect() };

    // The remote task is not programmed in the overlay yet.
    n.exec.sync_mesh(&s).await;
    let want = synced(&n.log);
    let vips: BTreeSet<Ipv4Addr> = want.frontends.keys().map(|(ip, _, _)| *ip).collect();
    assert_eq!(vips, [VIP].into());
    assert_eq!(tasks(&want.groups[&group]), ["t1"]);
    assert_eq!(tasks(&want.draining[&group]), ["t3"]);

    // The address is programmed, but still towards another node (it was a
    // task's there until just now): t2 is not reachable through it.
    n.log.clear();
    let elsewhere = Ipv4Addr::new(198, 18, 0, 99);
    n.exec.local().set_reachable(
        "net-a",
        [(Ipv4Addr::new(10, 0, 1, 6), elsewhere)].into_iter(),
    );
    n.exec.sync_mesh(&s).await;
    let want = synced(&n.log);
    assert_eq!(tasks(&want.groups[&group]), ["t1"]);

    n.log.clear();
    n.exec
        .local()
        .set_reachable("net-a", [(Ipv4Addr::new(10, 0, 1, 6), PEER)].into_iter());
    n.exec.sync_mesh(&s).await;
    let want = synced(&n.log);
    assert_eq!(tasks(&want.groups[&group]), ["t1", "t2"]);
    assert_eq!(tasks(&want.draining[&group]), ["t3"]);
}

fn with_secret(mut t: TaskAssignment, secret: &str) -> TaskAssignment {
    t.files = vec![shoal_api::cluster::v1::TaskFile {
        kind: shoal_api::cluster::v1::TaskFileKind::Secret.into(),
        id: secret.into(),
        name: format!("{secret}-name"),
        target: format!("/run/secrets/{secret}"),
        mode: 0o444,
        data: b"hunter2".to_vec(),
        ..Default::default()
    }];
    t
}

#[tokio::test]
async fn a_task_with_secrets_waits_for_the_managers_and_the_node_counts_what_it_got() {
    let mut n = node(false);
    let secrets = n.exec.setup.secrets.clone();
    // No assignment stream yet: the managers are not in reach.
    n.exec.apply(set(
        1,
        vec![
            with_secret(task("t1", "running", "assigned", "10.0.1.5"), "s1"),
            with_secret(task("t2", "running", "assigned", "10.0.1.6"), "s2"),
        ],
    ));
    until(&mut n.reports, "preparing").await;
    until(&mut n.reports, "preparing").await;
    quiet(&mut n.reports).await;
    assert!(!n.log.calls().contains(&Call::Start("t1".into())));
    assert_eq!(secrets.received_ids(), ["s1", "s2"]);
    assert_eq!(secrets.held_ids(), ["s1", "s2"]);
    // The view kept for the mesh, DNS and `node doctor` has no file data.
    let view = n.exec.view.borrow().clone();
    assert!(view.tasks.iter().all(|t| t.files.is_empty()));
    // One is called off while it waits: it never starts.
    n.exec.apply(set(
        2,
        vec![
            with_secret(task("t1", "running", "assigned", "10.0.1.5"), "s1"),
            task("t2", "shutdown", "preparing", "10.0.1.6"),
        ],
    ));
    assert_eq!(
        states(&until(&mut n.reports, "shutdown").await),
        [("t2", "shutdown")]
    );
    gone(&n, "t2").await;
    assert_eq!(secrets.held_ids(), ["s1"]);
    // Back in touch: the other starts.
    n.exec.setup.contact.set_stream(true);
    until(&mut n.reports, "running").await;
    assert!(n.log.calls().contains(&Call::Start("t1".into())));
    assert!(!n.log.calls().contains(&Call::Start("t2".into())));
    // Once it ends, the node holds no secret; it did receive both.
    n.exec.apply(set(3, vec![]));
    until(&mut n.reports, "shutdown").await;
    gone(&n, "t1").await;
    assert!(secrets.held_ids().is_empty());
    assert_eq!(secrets.received_ids(), ["s1", "s2"]);
}

/// Task `id` with a healthcheck probed every 10 ms, unhealthy after two
/// failures, with a start period of `start_period_secs` (probed every
/// 10 ms during it).
fn checked(id: &str, ip: &str, start_period_secs: u64) -> TaskAssignment {
    let mut t = task(id, "running", "assigned", ip);
    if let Some(c) = t.container.as_mut() {
        c.healthcheck = Some(shoal_api::cluster::v1::HealthConfig {
            test: vec!["CMD".into(), "/check".into()],
            interval_ns: Some(10_000_000),
            start_period_ns: Some(start_period_secs * 1_000_000_000),
            start_interval_ns: Some(10_000_000),
            retries: Some(2),
            ..Default::default()
        });
    }
    t
}

fn health_of(r: &TaskReport) -> Option<shoal_api::cluster::v1::HealthStatus> {
    r.health
        .as_ref()
        .and_then(|h| shoal_api::cluster::v1::HealthStatus::try_from(h.status).ok())
}

#[tokio::test]
async fn a_task_with_a_healthcheck_is_starting_until_its_first_healthy_result() {
    use shoal_api::cluster::v1::HealthStatus;
    let mut n = node(false);
    n.exec.tasks.probe_exits("t1", 1);
    n.exec.apply(set(1, vec![checked("t1", "10.0.1.5", 60)]));
    let mut reports = until(&mut n.reports, "starting").await;
    // The second STARTING carries the health: the container runs.
    reports.extend(until(&mut n.reports, "starting").await);
    let last = reports.last().expect("a report");
    assert_eq!(health_of(last), Some(HealthStatus::Starting));
    // Failing, in its start period: neither RUNNING nor unhealthy.
    quiet(&mut n.reports).await;
    n.exec.tasks.probe_exits("t1", 0);
    let running = until(&mut n.reports, "running").await;
    assert_eq!(states(&running), [("t1", "running")]);
    assert_eq!(health_of(&running[0]), Some(HealthStatus::Healthy));
    let health = running[0].health.as_ref().expect("health");
    assert_eq!(health.log.last().map(|r| r.exit_code), Some(0));
    assert_eq!(health.log.last().map(|r| r.output.as_str()), Some("exit 0"));
}

#[tokio::test]
async fn an_unhealthy_task_leaves_the_mesh_is_reported_failed_then_stopped() {
    use shoal_api::cluster::v1::HealthStatus;
    let mut n = node(false);
    n.exec.apply(set(1, vec![checked("t1", "10.0.1.5", 0)]));
    until(&mut n.reports, "running").await;
    // The managers list it as a backend, with one on the other node.
    let mut serving = set(2, vec![checked("t1", "10.0.1.5", 0)]);
    serving.tasks[0].state = state_of("running");
    serving.mesh[0].backends = vec![
        backend("t1", "me", ME, "10.0.1.5"),
        backend("t2", "n2", PEER, "10.0.1.6"),
    ];
    n.exec.apply(serving);
    n.log.clear();
    n.exec.tasks.probe_exits("t1", 1);
    let failed = until(&mut n.reports, "failed").await;
    assert_eq!(states(&failed), [("t1", "failed")]);
    assert_eq!(failed[0].err, "unhealthy container");
    assert_eq!(health_of(&failed[0]), Some(HealthStatus::Unhealthy));
    assert_eq!(failed[0].health.as_ref().map(|h| h.failing_streak), Some(2));
    gone(&n, "t1").await;
    let calls = n.log.calls();
    let drained = calls
        .iter()
        .position(|c| match c {
            Call::MeshSync(want) => {
                let key = GroupKey {
                    service_id: "svc".into(),
                    scope: Scope::Network("net-a".into()),
                };
                // (t2 is not reachable here yet: no ring has it either.)
                want.groups
                    .get(&key)
                    .is_some_and(|ring| ring.iter().all(|b| b.task_id != "t1"))
                    && want
                        .draining
                        .get(&key)
                        .is_some_and(|d| d.iter().any(|b: &BackendSpec| b.task_id == "t1"))
            }
            _ => false,
        })
        .unwrap_or_else(|| panic!("no sync took t1 out of the ring: {calls:?}"));
    let stopped = calls
        .iter()
        .position(|c| *c == Call::Stop("t1".into()))
        .unwrap_or_else(|| panic!("t1 was not stopped: {calls:?}"));
    assert!(
        drained < stopped,
        "out of the ring before the stop: {calls:?}"
    );
    // Its DNS names are gone too; its end is not reported twice.
    let names = super::dns_names(&n.exec.view.borrow(), &lock(&n.exec.unhealthy));
    assert_eq!(
        names["net-a"]["tasks.web"],
        [Ipv4Addr::new(10, 0, 1, 6)],
        "only the healthy task"
    );
    quiet(&mut n.reports).await;
}

#[test]
fn aliases_answer_like_the_name_on_their_network_only() {
    use std::collections::HashSet;
    let alias = |a: &str| shoal_api::cluster::v1::Aliases {
        aliases: vec![a.into()],
    };
    let mut b2 = backend("t2", "n2", PEER, "10.0.2.6");
    b2.network_id = "net-b".into();
    let vip_mode = MeshService {
        id: "svc".into(),
        name: "web".into(),
        endpoint_mode: shoal_api::cluster::v1::EndpointMode::Vip.into(),
        vips: vec![VirtualIp {
            network_id: "net-a".into(),
            network: "front".into(),
            addr: cidr("10.0.1.2/24"),
        }],
        backends: vec![backend("t1", "me", ME, "10.0.1.5"), b2],
        network_aliases: [("net-a".to_owned(), alias("www"))].into(),
        ..Default::default()
    };
    let dnsrr = MeshService {
        id: "db".into(),
        name: "db".into(),
        endpoint_mode: shoal_api::cluster::v1::EndpointMode::Dnsrr.into(),
        backends: vec![
            backend("t3", "me", ME, "10.0.1.7"),
            backend("t4", "me", ME, "10.0.1.8"),
        ],
        network_aliases: [("net-a".to_owned(), alias("store"))].into(),
        ..Default::default()
    };
    let set = AssignmentSet {
        mesh: vec![vip_mode, dnsrr],
        ..Default::default()
    };
    let names = super::dns_names(&set, &HashSet::new());
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED);
    assert_eq!(names["net-a"]["www"], [ip("10.0.1.2")], "the VIP");
    assert_eq!(names["net-a"]["tasks.www"], [ip("10.0.1.5")]);
    assert_eq!(
        names["net-a"]["store"],
        [ip("10.0.1.7"), ip("10.0.1.8")],
        "dnsrr: the tasks"
    );
    assert!(names["net-b"].contains_key("web"));
    assert!(
        !names["net-b"].contains_key("www"),
        "not on another network"
    );
}
