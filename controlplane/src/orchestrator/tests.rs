use proptest::prelude::*;

use super::*;
use crate::model::{
    Endpoint, EndpointSpec, Labels, Network, NetworkDriver, NodeRole, PortConfig, PublishMode,
    RestartPolicy, ServiceSpec, TaskSpec, apply,
};

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.to_owned(),
        version: 0,
        hostname: id.to_owned(),
        role: NodeRole::Worker,
        availability: Availability::Active,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        addr: None,
        status: NodeState::Ready,
        manager: None,
        tls: Default::default(),
        resources: Default::default(),
        platform: Default::default(),
        wireguard_key: None,
    }
}

fn service(id: &str, mode: ServiceMode, constraints: &[&str]) -> Service {
    Service {
        id: id.to_owned(),
        version: 0,
        spec: ServiceSpec {
            name: id.to_owned(),
            labels: Labels::new(),
            mode,
            task: TaskSpec::default(),
            endpoint: EndpointSpec::default(),
            networks: vec!["net".into()],
            constraints: constraints.iter().map(|c| (*c).to_owned()).collect(),
            restart: RestartPolicy::default(),
            update: Default::default(),
            rollback: Default::default(),
            placement_prefs: Vec::new(),
            network_aliases: Default::default(),
            max_replicas_per_node: 0,
        },
        previous_spec: None,
        update_status: None,
        endpoint: Endpoint::default(),
    }
}

fn state(nodes: &[Node]) -> ClusterState {
    let mut s = ClusterState::default();
    let net = Network {
        id: "net".into(),
        version: 0,
        name: "net".into(),
        labels: Labels::new(),
        driver: NetworkDriver::Overlay,
        ingress: false,
        attachable: false,
        encryption: crate::model::Encryption::None,
        vni: Some(4097),
        subnet: Some("10.0.1.0/24".into()),
        gateway: None,
        mtu: None,
        internal: false,
    };
    let _ = apply(&mut s, &Command::CreateNetwork(net));
    for n in nodes {
        let _ = apply(&mut s, &Command::CreateNode(n.clone()));
    }
    s
}

/// Runs both reconcilers until they have nothing more to do.
fn converge(s: &mut ClusterState, now: u64, ids: &mut u64) {
    for _ in 0..20 {
        let mut next_id = || {
            *ids += 1;
            format!("t{ids:04}")
        };
        let mut cmds = orchestrate(s, now, &mut next_id);
        for c in &cmds {
            let _ = apply(s, c);
        }
        let sched = schedule(s, now);
        for c in &sched {
            let _ = apply(s, c);
        }
        cmds.extend(sched);
        if cmds.is_empty() {
            return;
        }
    }
    panic!("no fixpoint");
}

fn live_on(s: &ClusterState, service: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .tasks
        .values()
        .filter(|t| t.service_id == service && live(t))
        .map(|t| t.node_id.clone().unwrap_or_else(|| "-".into()))
        .collect();
    v.sort();
    v
}

fn set_state(s: &mut ClusterState, task: &str, state: TaskState, now: u64) {
    let t = s.tasks[task].clone();
    let cmd = update(&t, |t| {
        t.state = state;
        t.status.since_unix = now;
    });
    assert!(apply(s, &cmd).is_ok());
}

#[test]
fn replicas_spread_scale_and_move_off_drained_nodes() {
    let mut s = state(&[node("n1", &[]), node("n2", &[]), node("n3", &[])]);
    let _ = apply(
        &mut s,
        &Command::CreateService(service("web", ServiceMode::Replicated { replicas: 3 }, &[])),
    );
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    assert_eq!(live_on(&s, "web"), ["n1", "n2", "n3"]);
    // Every task has its own address on the network.
    let addrs: BTreeSet<&str> = s
        .tasks
        .values()
        .flat_map(|t| t.networks.iter().flat_map(|n| n.addresses.iter()))
        .map(String::as_str)
        .collect();
    assert_eq!(addrs.len(), 3);
    assert!(!addrs.contains("10.0.1.1/24"), "the gateway was handed out");

    // Drain n2: its task stops, the slot is refilled elsewhere.
    let mut n2 = s.nodes["n2"].clone();
    n2.availability = Availability::Drain;
    let v = n2.version;
    assert!(
        apply(
            &mut s,
            &Command::UpdateNode {
                id: "n2".into(),
                expected_version: v,
                node: n2
            }
        )
        .is_ok()
    );
    converge(&mut s, 101, &mut ids);
    let on = live_on(&s, "web");
    assert_eq!(on.len(), 3);
    assert!(!on.contains(&"n2".to_owned()), "{on:?}");

    // Scale down to 1.
    let mut svc = s.services["web"].clone();
    svc.spec.mode = ServiceMode::Replicated { replicas: 1 };
    let v = svc.version;
    assert!(
        apply(
            &mut s,
            &Command::UpdateService {
                id: "web".into(),
                expected_version: v,
                service: svc
            }
        )
        .is_ok()
    );
    converge(&mut s, 102, &mut ids);
    assert_eq!(live_on(&s, "web").len(), 1);
}

#[test]
fn unschedulable_tasks_stay_pending_with_the_reason() {
    let mut s = state(&[node("n1", &[("zone", "b")])]);
    let _ = apply(
        &mut s,
        &Command::CreateService(service(
            "db",
            ServiceMode::Replicated { replicas: 1 },
            &["node.labels.zone==a"],
        )),
    );
    converge(&mut s, 100, &mut 0);
    let t = s.tasks.values().next().cloned();
    let t = t.unwrap_or_else(|| panic!("no task"));
    assert_eq!(t.state, TaskState::Pending);
    assert!(
        t.status
            .err
            .contains("node n1 fails constraint node.labels.zone==a"),
        "{}",
        t.status.err
    );
    // A node that matches arrives: the task is placed there.
    let _ = apply(&mut s, &Command::CreateNode(node("n2", &[("zone", "a")])));
    converge(&mut s, 101, &mut 0);
    assert_eq!(live_on(&s, "db"), ["n2"]);
}

fn sized(id: &str, cpus: u64, gib: u64) -> Node {
    let mut n = node(id, &[]);
    n.resources = crate::model::NodeResources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: gib << 30,
    };
    n
}

fn reserving(id: &str, replicas: u64, nano_cpus: u64, memory_bytes: u64) -> Service {
    let mut svc = service(id, ServiceMode::Replicated { replicas }, &[]);
    svc.spec.task.resources = Resources {
        reserve_nano_cpus: nano_cpus,
        reserve_memory_bytes: memory_bytes,
        ..Resources::default()
    };
    svc
}

#[test]
fn fit_subtracts_the_reservations_of_tasks_a_node_holds() {
    let r = |cpu, mem| Resources {
        reserve_nano_cpus: cpu,
        reserve_memory_bytes: mem,
        ..Resources::default()
    };
    let free = Free {
        nano_cpus: 1_000,
        memory_bytes: 1_000,
    };
    assert!(
        fits(&r(0, 0), Free::default()),
        "no reservation fits anywhere"
    );
    assert!(fits(&r(1_000, 1_000), free));
    assert!(!fits(&r(1_001, 0), free));
    assert!(!fits(&r(0, 1_001), free));
    // Limits are not scheduled on.
    let limited = Resources {
        limit_nano_cpus: u64::MAX,
        limit_memory_bytes: u64::MAX,
        ..Resources::default()
    };
    assert!(fits(&limited, Free::default()));

    let mut s = state(&[sized("n1", 2, 4)]);
    let _ = apply(
        &mut s,
        &Command::CreateService(reserving("a", 1, 1_500_000_000, 1 << 30)),
    );
    converge(&mut s, 100, &mut 0);
    assert_eq!(live_on(&s, "a"), ["n1"]);
    let left = free_resources(&s)["n1"];
    assert_eq!(
        left,
        Free {
            nano_cpus: 500_000_000,
            memory_bytes: 3 << 30
        }
    );
    // An ended task gives its reservation back.
    let t = s.tasks.keys().next().cloned().unwrap_or_default();
    set_state(&mut s, &t, TaskState::Failed, 100);
    assert_eq!(free_resources(&s)["n1"].nano_cpus, 2_000_000_000);
}

#[test]
fn tasks_that_fit_nowhere_stay_pending_with_swarms_message() {
    let mut s = state(&[sized("n1", 2, 4), sized("n2", 2, 4)]);
    // Three tasks of 1.5 CPUs on two nodes of 2: the third fits nowhere.
    let _ = apply(
        &mut s,
        &Command::CreateService(reserving("big", 3, 1_500_000_000, 0)),
    );
    // A normal service still schedules beside them.
    let _ = apply(&mut s, &Command::CreateService(reserving("small", 2, 0, 0)));
    converge(&mut s, 100, &mut 0);
    assert_eq!(live_on(&s, "big"), ["-", "n1", "n2"]);
    assert_eq!(live_on(&s, "small"), ["n1", "n2"]);
    let pending: Vec<&Task> = s
        .tasks
        .values()
        .filter(|t| t.service_id == "big" && t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.err,
        "no suitable node (insufficient resources on 2 nodes)"
    );
    // More memory than any node has: the same, whatever the CPUs.
    let _ = apply(
        &mut s,
        &Command::CreateService(reserving("huge", 1, 0, 64 << 30)),
    );
    converge(&mut s, 101, &mut 0);
    let huge = s.tasks.values().find(|t| t.service_id == "huge");
    assert_eq!(
        huge.map(|t| (t.state, t.status.err.as_str())),
        Some((
            TaskState::Pending,
            "no suitable node (insufficient resources on 2 nodes)"
        ))
    );
    // A node that has room arrives: the pending tasks are placed there.
    let _ = apply(&mut s, &Command::CreateNode(sized("n3", 2, 128)));
    converge(&mut s, 102, &mut 0);
    assert_eq!(live_on(&s, "big"), ["n1", "n2", "n3"]);
    assert_eq!(live_on(&s, "huge"), ["n3"]);
}

#[test]
fn services_stored_with_a_rootfs_are_not_run_from_the_nodes_filesystem() {
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("old", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.task.legacy_rootfs = "/srv/tree".into();
    let _ = apply(&mut s, &Command::CreateService(svc));
    converge(&mut s, 100, &mut 0);
    let t = s.tasks.values().next().cloned();
    let t = t.unwrap_or_else(|| panic!("no task"));
    assert_eq!(t.state, TaskState::Pending);
    assert!(
        t.status.err.contains("/srv/tree (--rootfs)"),
        "{}",
        t.status.err
    );
    assert!(
        t.status.err.contains("recreate it with an image"),
        "{}",
        t.status.err
    );
}

#[test]
fn global_services_follow_nodes() {
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    let _ = apply(
        &mut s,
        &Command::CreateService(service("agent", ServiceMode::Global, &[])),
    );
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    assert_eq!(live_on(&s, "agent"), ["n1", "n2"]);
    let _ = apply(&mut s, &Command::CreateNode(node("n3", &[])));
    converge(&mut s, 101, &mut ids);
    assert_eq!(live_on(&s, "agent"), ["n1", "n2", "n3"]);
    let mut n1 = s.nodes["n1"].clone();
    n1.status = NodeState::Down;
    let v = n1.version;
    assert!(
        apply(
            &mut s,
            &Command::UpdateNode {
                id: "n1".into(),
                expected_version: v,
                node: n1
            }
        )
        .is_ok()
    );
    converge(&mut s, 102, &mut ids);
    assert_eq!(live_on(&s, "agent"), ["n2", "n3"]);
}

#[test]
fn restart_policy_decides_replacements() {
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("job", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        delay_secs: 5,
        max_attempts: Some(1),
        window_ns: 0,
    };
    let _ = apply(&mut s, &Command::CreateService(svc));
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let first = s.tasks.keys().next().cloned().unwrap_or_default();
    set_state(&mut s, &first, TaskState::Failed, 100);
    // Within the delay: no replacement yet.
    converge(&mut s, 103, &mut ids);
    assert_eq!(live_on(&s, "job").len(), 0);
    converge(&mut s, 105, &mut ids);
    assert_eq!(live_on(&s, "job").len(), 1, "failed once: restarted");
    let second = s
        .tasks
        .values()
        .find(|t| live(t))
        .map(|t| t.id.clone())
        .unwrap_or_default();
    set_state(&mut s, &second, TaskState::Failed, 106);
    converge(&mut s, 200, &mut ids);
    assert_eq!(live_on(&s, "job").len(), 0, "max attempts reached");

    // on-failure: a clean exit is not restarted.
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("once", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.restart.condition = RestartCondition::OnFailure;
    let _ = apply(&mut s, &Command::CreateService(svc));
    converge(&mut s, 100, &mut ids);
    let t = s.tasks.keys().next().cloned().unwrap_or_default();
    set_state(&mut s, &t, TaskState::Complete, 100);
    converge(&mut s, 200, &mut ids);
    assert_eq!(live_on(&s, "once").len(), 0);
}

proptest! {
    /// Whatever the nodes and services: at the fixpoint, each replicated
    /// service holds exactly its replica count when enough eligible nodes
    /// exist, live tasks sit only on eligible nodes, and no address is
    /// handed out twice.
    #[test]
    fn fixpoint_invariants(
        nodes in proptest::collection::vec((any::<bool>(), any::<bool>(), prop::option::of("[ab]")), 1..5),
        services in proptest::collection::vec((0u64..4, any::<bool>(), prop::option::of("[ab]")), 1..4),
    ) {
        let nodes: Vec<Node> = nodes.iter().enumerate().map(|(i, (ready, active, zone))| {
            let mut n = node(&format!("n{i}"), &[]);
            if let Some(z) = zone { n.labels.insert("zone".into(), z.clone()); }
            if !ready { n.status = NodeState::Down; }
            if !active { n.availability = Availability::Drain; }
            n
        }).collect();
        let mut s = state(&nodes);
        for (i, (replicas, global, zone)) in services.iter().enumerate() {
            let constraint = zone.as_ref().map(|z| format!("node.labels.zone=={z}"));
            let c: Vec<&str> = constraint.iter().map(String::as_str).collect();
            let mode = if *global { ServiceMode::Global } else { ServiceMode::Replicated { replicas: *replicas } };
            let _ = apply(&mut s, &Command::CreateService(service(&format!("s{i}"), mode, &c)));
        }
        converge(&mut s, 100, &mut 0);
        let mut addrs = BTreeSet::new();
        for t in s.tasks.values().filter(|t| live(t)) {
            let svc = &s.services[&t.service_id];
            if let Some(n) = &t.node_id && t.state >= TaskState::Assigned {
                prop_assert!(ineligible(&s.nodes[n], svc).is_none());
            }
            for a in t.networks.iter().flat_map(|n| n.addresses.iter()) {
                prop_assert!(addrs.insert(a.clone()), "{a} twice");
            }
        }
        for svc in s.services.values() {
            let eligible = s.nodes.values().filter(|n| ineligible(n, svc).is_none()).count();
            let live: Vec<&Task> = s.tasks.values().filter(|t| t.service_id == svc.id && live(t)).collect();
            match svc.spec.mode {
                ServiceMode::Replicated { replicas } => {
                    prop_assert_eq!(live.len() as u64, replicas);
                    let assigned = live.iter().filter(|t| t.state == TaskState::Assigned).count();
                    if eligible > 0 {
                        prop_assert_eq!(assigned as u64, replicas);
                    }
                }
                ServiceMode::Global => prop_assert_eq!(live.len(), eligible),
            }
        }
    }
}

proptest! {
    /// Tasks fail and are replaced, and the manager restarts in between
    /// (its state reloaded from what it persisted, serialized and read
    /// back): no two tasks in the state ever hold the same address, and
    /// every address is inside the network and not its gateway.
    #[test]
    fn addresses_are_never_handed_out_twice_across_restarts(
        replicas in 1u64..6,
        events in proptest::collection::vec((0usize..8, any::<bool>()), 1..16),
    ) {
        let mut s = state(&[node("n1", &[]), node("n2", &[]), node("n3", &[])]);
        let _ = apply(
            &mut s,
            &Command::CreateService(service("web", ServiceMode::Replicated { replicas }, &[])),
        );
        let mut ids = 0;
        let mut now = 100;
        converge(&mut s, now, &mut ids);
        for (pick, restart) in events {
            if restart {
                let disk = serde_json::to_vec(&s).expect("state serializes");
                s = serde_json::from_slice(&disk).expect("state reloads");
            }
            let live: Vec<String> = s.tasks.values().filter(|t| live(t)).map(|t| t.id.clone()).collect();
            if !live.is_empty() {
                set_state(&mut s, &live[pick % live.len()], TaskState::Failed, now);
            }
            now += 10;
            converge(&mut s, now, &mut ids);
            let mut seen = BTreeSet::new();
            for a in s.tasks.values().flat_map(|t| t.networks.iter().flat_map(|n| n.addresses.iter())) {
                prop_assert!(seen.insert(a.clone()), "{} handed out twice", a);
                prop_assert!(a.starts_with("10.0.1.") && a != "10.0.1.1/24", "{}", a);
            }
        }
        prop_assert_eq!(live_on(&s, "web").len() as u64, replicas);
    }
}

#[test]
fn tasks_of_a_removed_node_are_orphaned_and_replaced() {
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    let _ = apply(
        &mut s,
        &Command::CreateService(service("web", ServiceMode::Replicated { replicas: 2 }, &[])),
    );
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let on_n2 = s
        .tasks
        .values()
        .find(|t| t.node_id.as_deref() == Some("n2"))
        .map(|t| t.id.clone())
        .expect("a task on n2");
    set_state(&mut s, &on_n2, TaskState::Running, 100);
    let n2 = s.nodes["n2"].clone();
    assert!(
        apply(
            &mut s,
            &Command::RemoveNode {
                id: n2.id,
                expected_version: n2.version
            }
        )
        .is_ok()
    );
    converge(&mut s, 110, &mut ids);
    let t = &s.tasks[&on_n2];
    assert_eq!(
        (t.state, t.desired_state),
        (TaskState::Orphaned, TaskState::Shutdown)
    );
    assert_eq!(live_on(&s, "web"), ["n1", "n1"]);
}

fn add_ingress(s: &mut ClusterState) {
    let net = Network {
        id: "ing".into(),
        version: 0,
        name: "ingress".into(),
        labels: Labels::new(),
        driver: NetworkDriver::Overlay,
        ingress: true,
        attachable: false,
        encryption: crate::model::Encryption::None,
        vni: Some(4096),
        subnet: Some("10.0.0.0/24".into()),
        gateway: None,
        mtu: None,
        internal: false,
    };
    assert!(apply(s, &Command::CreateNetwork(net)).is_ok());
}

fn published(n: u16, mode: PublishMode) -> PortConfig {
    PortConfig {
        protocol: Protocol::Tcp,
        target_port: 80,
        published_port: Some(n),
        publish_mode: mode,
    }
}

fn with_ports(mut svc: Service, ports: Vec<PortConfig>) -> Service {
    svc.spec.endpoint.ports = ports.clone();
    svc.endpoint.ports = ports;
    svc
}

fn attachments(t: &Task) -> Vec<&str> {
    t.networks.iter().map(|n| n.network_id.as_str()).collect()
}

fn update_service(s: &mut ClusterState, id: &str, f: impl FnOnce(&mut Service)) {
    let mut svc = s.services[id].clone();
    f(&mut svc);
    let v = svc.version;
    assert!(
        apply(
            s,
            &Command::UpdateService {
                id: id.into(),
                expected_version: v,
                service: svc
            }
        )
        .is_ok()
    );
}

#[test]
fn vips_per_network_and_ingress_first_for_published_ports() {
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    add_ingress(&mut s);
    let web = with_ports(
        service("web", ServiceMode::Replicated { replicas: 2 }, &[]),
        vec![published(8080, PublishMode::Ingress)],
    );
    let mut dns = service("dns", ServiceMode::Replicated { replicas: 1 }, &[]);
    dns.spec.endpoint.mode = EndpointMode::Dnsrr;
    let host = with_ports(
        service("host", ServiceMode::Replicated { replicas: 1 }, &[]),
        vec![published(9000, PublishMode::Host)],
    );
    for svc in [web, dns, host] {
        assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
    }
    converge(&mut s, 100, &mut 0);
    let vips = |s: &ClusterState, id: &str| -> Vec<(String, String)> {
        s.services[id]
            .endpoint
            .vips
            .iter()
            .map(|v| (v.network_id.clone(), v.addr.clone()))
            .collect()
    };
    // Service order (by id): dns, host, web; VIPs before any task address.
    assert_eq!(vips(&s, "dns"), []);
    assert_eq!(vips(&s, "host"), [("net".into(), "10.0.1.2/24".into())]);
    assert_eq!(
        vips(&s, "web"),
        [
            ("ing".into(), "10.0.0.2/24".into()),
            ("net".into(), "10.0.1.3/24".into())
        ]
    );
    for t in s.tasks.values() {
        let want: &[&str] = if t.service_id == "web" {
            &["ing", "net"]
        } else {
            &["net"]
        };
        assert_eq!(attachments(t), want, "{}", t.service_id);
    }
    // The last ingress port goes: the ingress VIP is released.
    update_service(&mut s, "web", |svc| svc.endpoint.ports.clear());
    converge(&mut s, 101, &mut 0);
    assert_eq!(vips(&s, "web"), [("net".into(), "10.0.1.3/24".into())]);
}

#[test]
fn host_mode_ports_keep_tasks_apart() {
    let mut s = state(&[node("n1", &[]), node("n2", &[]), node("n3", &[])]);
    let svc = with_ports(
        service("web", ServiceMode::Replicated { replicas: 4 }, &[]),
        vec![published(8080, PublishMode::Host)],
    );
    assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
    converge(&mut s, 100, &mut 0);
    assert_eq!(live_on(&s, "web"), ["-", "n1", "n2", "n3"]);
    let pending: Vec<&Task> = s
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.err,
        "no suitable node (host-mode port 8080/tcp in use on 3 nodes)"
    );
    // Another service on the same host port: also kept off those nodes;
    // a new node takes one of them.
    let other = with_ports(
        service("api", ServiceMode::Replicated { replicas: 1 }, &[]),
        vec![published(8080, PublishMode::Host)],
    );
    assert!(apply(&mut s, &Command::CreateService(other)).is_ok());
    let _ = apply(&mut s, &Command::CreateNode(node("n4", &[])));
    converge(&mut s, 101, &mut 0);
    let placed = live_on(&s, "web").len() + live_on(&s, "api").len();
    assert_eq!(placed, 5);
    let assigned: Vec<String> = s
        .tasks
        .values()
        .filter(|t| live(t) && t.state == TaskState::Assigned)
        .filter_map(|t| t.node_id.clone())
        .collect();
    let distinct: BTreeSet<&String> = assigned.iter().collect();
    assert_eq!(
        assigned.len(),
        distinct.len(),
        "two on one node: {assigned:?}"
    );
}

#[test]
fn network_changes_replace_running_tasks_one_slot_at_a_time() {
    let mut s = state(&[node("n1", &[]), node("n2", &[]), node("n3", &[])]);
    add_ingress(&mut s);
    let svc = service("web", ServiceMode::Replicated { replicas: 3 }, &[]);
    assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let run_all = |s: &mut ClusterState| {
        let ids: Vec<String> = s
            .tasks
            .values()
            .filter(|t| live(t) && t.state == TaskState::Assigned)
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            set_state(s, &id, TaskState::Running, 100);
        }
        // What agents do with tasks asked to stop.
        let stopping: Vec<String> = s
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Shutdown && !ended(t.state))
            .map(|t| t.id.clone())
            .collect();
        for id in stopping {
            set_state(s, &id, TaskState::Shutdown, 100);
        }
    };
    run_all(&mut s);
    // The first ingress port: tasks need the ingress network first.
    update_service(&mut s, "web", |svc| {
        svc.endpoint.ports = vec![published(8080, PublishMode::Ingress)];
    });
    let on_ingress = |s: &ClusterState| {
        s.tasks
            .values()
            .filter(|t| live(t) && attachments(t) == ["ing", "net"])
            .count()
    };
    for replaced in 1..=3 {
        converge(&mut s, 101, &mut ids);
        assert_eq!(on_ingress(&s), replaced, "one slot per step");
        // The two other slots keep serving meanwhile.
        let running = s
            .tasks
            .values()
            .filter(|t| live(t) && t.state == TaskState::Running)
            .count();
        assert_eq!(running, 2);
        run_all(&mut s);
    }
    assert_eq!(live_on(&s, "web").len(), 3);
    // Host-mode ports need no ingress: back to the service's own network.
    update_service(&mut s, "web", |svc| {
        svc.endpoint.ports = vec![published(8080, PublishMode::Host)];
    });
    // Each new task waits for the old one to free the port on its node.
    for _ in 0..6 {
        converge(&mut s, 102, &mut ids);
        run_all(&mut s);
    }
    assert_eq!(on_ingress(&s), 0);
    let live_attach: Vec<Vec<&str>> = s
        .tasks
        .values()
        .filter(|t| live(t))
        .map(attachments)
        .collect();
    assert_eq!(live_attach, [["net"], ["net"], ["net"]]);
}

#[test]
fn spec_changes_replace_running_tasks_one_slot_at_a_time() {
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    let svc = service("web", ServiceMode::Replicated { replicas: 2 }, &[]);
    assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let run_all = |s: &mut ClusterState| {
        let ids: Vec<String> = s
            .tasks
            .values()
            .filter(|t| !ended(t.state) && t.state >= TaskState::Assigned)
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let next = if s.tasks[&id].desired_state == TaskState::Running {
                TaskState::Running
            } else {
                TaskState::Shutdown
            };
            if s.tasks[&id].state != next {
                set_state(s, &id, next, 100);
            }
        }
    };
    run_all(&mut s);
    let secret = crate::model::FileRef {
        id: "s1".into(),
        name: "db".into(),
        target: "db".into(),
        uid: 0,
        gid: 0,
        mode: 0o444,
    };
    let _ = apply(
        &mut s,
        &Command::CreateSecret(crate::model::Secret {
            id: "s1".into(),
            version: 0,
            name: "db".into(),
            labels: Labels::new(),
            data: crate::model::SecretBytes(b"pw".to_vec()),
        }),
    );
    update_service(&mut s, "web", |svc| {
        svc.spec.task.secrets = vec![secret.clone()]
    });
    let current = |s: &ClusterState| {
        s.tasks
            .values()
            .filter(|t| live(t) && t.spec.secrets.len() == 1)
            .count()
    };
    for replaced in 1..=2 {
        converge(&mut s, 101, &mut ids);
        assert_eq!(current(&s), replaced, "one slot per step");
        // Never both slots down: the other keeps running meanwhile.
        let running = s
            .tasks
            .values()
            .filter(|t| live(t) && t.state == TaskState::Running)
            .count();
        assert_eq!(running, 1);
        let why: Vec<&str> = s
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Shutdown && !ended(t.state))
            .map(|t| t.status.message.as_str())
            .collect();
        assert_eq!(why, ["replaced: the service's spec changed"]);
        run_all(&mut s);
    }
    // Up to date: nothing more to do.
    converge(&mut s, 102, &mut ids);
    assert_eq!(current(&s), 2);
    assert_eq!(orchestrate(&s, 103, &mut || "x".into()), []);
    // A task not running yet is in a dirty slot like the others.
    update_service(&mut s, "web", |svc| svc.spec.task.env = vec!["A=1".into()]);
    let pending = s.tasks.values().find(|t| live(t)).map(|t| t.id.clone());
    let pending = pending.unwrap_or_default();
    let mut t = s.tasks[&pending].clone();
    t.state = TaskState::Assigned;
    let _ = apply(
        &mut s,
        &Command::UpdateTask {
            id: pending.clone(),
            expected_version: t.version,
            task: t,
        },
    );
    let cmds = orchestrate(&s, 104, &mut || "new".into());
    let shut: Vec<&str> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::UpdateTask { id, task, .. } if task.desired_state == TaskState::Shutdown => {
                Some(id.as_str())
            }
            _ => None,
        })
        .collect();
    // As swarm's updater: a slot whose task is not running yet is one
    // dirty slot among the others, replaced `parallelism` (1) at a time.
    assert_eq!(shut.len(), 1, "{shut:?}");
}

proptest! {
    /// Random services (vip or dnsrr, with or without an ingress port) on
    /// random nodes, converged and with tasks failing: VIPs and task
    /// addresses are all distinct, inside their network, never a gateway,
    /// and each vip-mode service has exactly one VIP per network its tasks
    /// use.
    #[test]
    fn vips_and_task_addresses_never_collide(
        services in proptest::collection::vec((1u64..4, any::<bool>(), any::<bool>()), 1..4),
        fails in proptest::collection::vec(0usize..8, 0..6),
    ) {
        let mut s = state(&[node("n1", &[]), node("n2", &[])]);
        add_ingress(&mut s);
        for (i, (replicas, dnsrr, ingress)) in services.iter().enumerate() {
            let mut svc = service(&format!("s{i}"), ServiceMode::Replicated { replicas: *replicas }, &[]);
            if *dnsrr {
                svc.spec.endpoint.mode = EndpointMode::Dnsrr;
            }
            let mode = if *ingress && !*dnsrr { PublishMode::Ingress } else { PublishMode::Host };
            let svc = with_ports(svc, vec![published(8000 + i as u16, mode)]);
            prop_assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
        }
        let mut ids = 0;
        let mut now = 100;
        converge(&mut s, now, &mut ids);
        for pick in fails {
            let live: Vec<String> = s.tasks.values().filter(|t| live(t)).map(|t| t.id.clone()).collect();
            if !live.is_empty() {
                set_state(&mut s, &live[pick % live.len()], TaskState::Failed, now);
            }
            now += 10;
            converge(&mut s, now, &mut ids);
            let mut seen = BTreeSet::new();
            let task_addrs = s.tasks.values().flat_map(|t| t.networks.iter().flat_map(|n| n.addresses.iter().map(move |a| (n.network_id.clone(), a.clone()))));
            let vips = s.services.values().flat_map(|svc| svc.endpoint.vips.iter().map(|v| (v.network_id.clone(), v.addr.clone())));
            for (net, a) in task_addrs.chain(vips) {
                let prefix = if net == "ing" { "10.0.0." } else { "10.0.1." };
                prop_assert!(a.starts_with(prefix) && !a.ends_with(".1/24"), "{}", a);
                prop_assert!(seen.insert(a.clone()), "{} handed out twice", a);
            }
            for svc in s.services.values() {
                let nets: Vec<&str> = svc.endpoint.vips.iter().map(|v| v.network_id.as_str()).collect();
                let want: Vec<&str> = match svc.spec.endpoint.mode {
                    EndpointMode::Dnsrr => vec![],
                    EndpointMode::Vip if ports::has_ingress(&svc.endpoint.ports) => vec!["ing", "net"],
                    EndpointMode::Vip => vec!["net"],
                };
                prop_assert_eq!(nets, want);
            }
        }
    }
}

/// The updater, driven as the leader drives it: passes of the
/// reconcilers at a given time (ms), and agents that run (or fail) what
/// they are given.
mod updater {
    use super::*;
    use crate::model::{FailureAction, Ratio, UpdateConfig, UpdateOrder, UpdateState};

    struct Lab {
        s: ClusterState,
        ids: u64,
    }

    impl Lab {
        /// Four replicas of `web` running on three nodes.
        fn new(update: UpdateConfig) -> Lab {
            let mut s = state(&[node("a", &[]), node("b", &[]), node("c", &[])]);
            let mut svc = service("web", ServiceMode::Replicated { replicas: 4 }, &[]);
            svc.spec.task.image = "app:1".into();
            svc.spec.update = update;
            assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
            let mut lab = Lab { s, ids: 0 };
            lab.pass(1_000);
            lab.agents(1_000, |_| false);
            lab
        }

        /// Reconciler passes at `now_ms` until nothing more is proposed.
        fn pass(&mut self, now_ms: u64) {
            for _ in 0..20 {
                let ids = &mut self.ids;
                let mut next_id = || {
                    *ids += 1;
                    format!("t{ids:04}")
                };
                let mut cmds = orchestrate_at(&self.s, now_ms, &mut next_id);
                for c in &cmds {
                    let _ = apply(&mut self.s, c);
                }
                let sched = schedule(&self.s, now_ms / 1000);
                for c in &sched {
                    let _ = apply(&mut self.s, c);
                }
                cmds.extend(sched);
                if cmds.is_empty() {
                    return;
                }
            }
            panic!("no fixpoint");
        }

        /// Every agent: assigned tasks run (or fail, as `fails` says),
        /// tasks asked to stop stop.
        fn agents(&mut self, now_ms: u64, fails: impl Fn(&Task) -> bool) {
            let ids: Vec<String> = self.s.tasks.keys().cloned().collect();
            for id in ids {
                let t = &self.s.tasks[&id];
                if ended(t.state) || t.state < TaskState::Assigned {
                    continue;
                }
                let next = if t.desired_state != TaskState::Running {
                    TaskState::Shutdown
                } else if t.state == TaskState::Running {
                    continue;
                } else if fails(t) {
                    TaskState::Failed
                } else {
                    TaskState::Running
                };
                set_state(&mut self.s, &id, next, now_ms / 1000);
            }
        }

        /// A `service update --image` as the manager makes it.
        fn update_image(&mut self, image: &str) {
            update_service(&mut self.s, "web", |svc| {
                svc.previous_spec = Some(svc.spec.clone());
                svc.spec.task.image = image.into();
                svc.update_status = None;
            });
        }

        fn live(&self, image: &str) -> usize {
            self.s
                .tasks
                .values()
                .filter(|t| live(t) && t.spec.image == image)
                .count()
        }

        fn running(&self, image: &str) -> usize {
            self.s
                .tasks
                .values()
                .filter(|t| live(t) && t.spec.image == image && t.state == TaskState::Running)
                .count()
        }

        fn status(&self) -> (Option<UpdateState>, String) {
            let u = self.s.services["web"].update_status.as_ref();
            (
                u.map(|u| u.state),
                u.map(|u| u.message.clone()).unwrap_or_default(),
            )
        }
    }

    #[test]
    fn stop_first_replaces_one_slot_at_a_time_and_completes_after_the_monitor() {
        let mut lab = Lab::new(UpdateConfig::default());
        assert_eq!(lab.running("app:1"), 4);
        lab.update_image("app:2");
        lab.pass(10_000);
        assert_eq!(lab.status().0, Some(UpdateState::Updating));
        // The old task is shut down as the new one is created.
        assert_eq!((lab.live("app:1"), lab.live("app:2")), (3, 1));
        for (i, t) in (1..=4).zip((10_000..).step_by(100)) {
            lab.agents(t, |_| false);
            lab.pass(t);
            assert!(lab.running("app:2") >= i, "slot {i}");
            assert!(lab.live("app:1") + lab.live("app:2") <= 4);
        }
        assert_eq!((lab.live("app:1"), lab.running("app:2")), (0, 4));
        // Not before one monitor window (5 s) after the last slot.
        lab.pass(14_000);
        assert_eq!(lab.status().0, Some(UpdateState::Updating));
        assert_eq!(next_wake(&lab.s, 14_000), Some(10_300 + 5_000));
        lab.pass(15_300);
        assert_eq!(
            lab.status(),
            (Some(UpdateState::Completed), "update completed".into())
        );
    }

    #[test]
    fn start_first_keeps_the_old_task_until_the_new_one_runs() {
        let mut lab = Lab::new(UpdateConfig {
            order: UpdateOrder::StartFirst,
            ..UpdateConfig::default()
        });
        lab.update_image("app:2");
        lab.pass(10_000);
        // Both hold the slot: the old one keeps serving.
        assert_eq!((lab.running("app:1"), lab.live("app:2")), (4, 1));
        lab.agents(10_100, |_| false);
        lab.pass(10_100);
        // The new one runs: the old one is asked to stop, the next slot starts.
        assert_eq!((lab.live("app:1"), lab.running("app:2")), (3, 1));
        assert_eq!(lab.live("app:2"), 2);
        let stopping = lab
            .s
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Shutdown && !ended(t.state))
            .count();
        assert_eq!(stopping, 1);
        for t in [10_200, 10_300, 10_400] {
            lab.agents(t, |_| false);
            lab.pass(t);
        }
        assert_eq!((lab.live("app:1"), lab.running("app:2")), (0, 4));
    }

    #[test]
    fn parallelism_two_with_a_delay_starts_no_slot_before_the_delay_ends() {
        let mut lab = Lab::new(UpdateConfig {
            parallelism: 2,
            delay_nanos: 2_000_000_000,
            ..UpdateConfig::default()
        });
        lab.update_image("app:2");
        lab.pass(10_000);
        assert_eq!(lab.live("app:2"), 2, "two slots at once");
        lab.agents(10_500, |_| false);
        lab.pass(10_500);
        // Both workers rest 2 s: nothing new until 12.5 s.
        assert_eq!(lab.live("app:2"), 2);
        assert_eq!(next_wake(&lab.s, 10_500), Some(12_500));
        lab.pass(12_499);
        assert_eq!(lab.live("app:2"), 2);
        lab.pass(12_500);
        assert_eq!(lab.live("app:2"), 4);
        lab.agents(12_600, |_| false);
        lab.pass(12_600);
        // Complete one monitor after the last delay: 14.6 + 5.
        lab.pass(19_599);
        assert_eq!(lab.status().0, Some(UpdateState::Updating));
        lab.pass(19_600);
        assert_eq!(lab.status().0, Some(UpdateState::Completed));
    }

    #[test]
    fn a_failure_pauses_and_a_new_update_restarts_it() {
        let mut lab = Lab::new(UpdateConfig::default());
        lab.update_image("bad");
        lab.pass(10_000);
        lab.agents(10_100, |t| t.spec.image == "bad");
        lab.pass(10_100);
        let (state, message) = lab.status();
        assert_eq!(state, Some(UpdateState::Paused));
        assert!(
            message.starts_with("update paused due to failure or early termination of task t"),
            "{message}"
        );
        // Paused: no other slot is touched; the old version keeps serving.
        lab.pass(20_000);
        assert_eq!(lab.running("app:1"), 3);
        // A new update (here back to a good image) starts again.
        lab.update_image("app:3");
        lab.pass(21_000);
        assert_eq!(lab.status().0, Some(UpdateState::Updating));
    }

    #[test]
    fn a_failure_rolls_back_and_a_failing_rollback_pauses() {
        let mut lab = Lab::new(UpdateConfig {
            failure_action: FailureAction::Rollback,
            ..UpdateConfig::default()
        });
        lab.update_image("bad");
        lab.pass(10_000);
        lab.agents(10_100, |t| t.spec.image == "bad");
        lab.pass(10_100);
        let (state, message) = lab.status();
        assert_eq!(state, Some(UpdateState::RollbackStarted));
        assert!(
            message.starts_with("update rolled back due to failure"),
            "{message}"
        );
        let svc = &lab.s.services["web"];
        assert_eq!(svc.spec.task.image, "app:1");
        assert_eq!(svc.previous_spec, None);
        // The rollback itself fails (say the old image is gone now): it
        // pauses, it is never rolled back.
        lab.agents(10_200, |_| true);
        lab.pass(10_200);
        lab.agents(10_300, |_| true);
        lab.pass(10_300);
        let (state, message) = lab.status();
        assert_eq!(state, Some(UpdateState::RollbackPaused));
        assert!(
            message.starts_with("update paused due to failure"),
            "{message}"
        );
        assert_eq!(lab.s.services["web"].spec.task.image, "app:1");
    }

    #[test]
    fn a_rollback_with_failure_action_rollback_pauses_instead() {
        let mut lab = Lab::new(UpdateConfig::default());
        update_service(&mut lab.s, "web", |svc| {
            svc.previous_spec = Some(svc.spec.clone());
            svc.spec.task.image = "bad".into();
            // As a rollback: the rollback config is the one in force.
            svc.spec.rollback.failure_action = FailureAction::Rollback;
            svc.update_status = Some(crate::model::UpdateStatus {
                state: UpdateState::RollbackStarted,
                started_unix: 10,
                completed_unix: 0,
                message: "manually requested rollback".into(),
                progress: Default::default(),
            });
        });
        lab.pass(10_000);
        lab.agents(10_100, |t| t.spec.image == "bad");
        lab.pass(10_100);
        let (state, message) = lab.status();
        assert_eq!(state, Some(UpdateState::RollbackPaused));
        assert!(
            message.starts_with("rollback paused due to failure"),
            "{message}"
        );
    }

    #[test]
    fn the_failure_ratio_acts_only_when_strictly_greater() {
        // 1 failure of 4 slots = 0.25: not more than 0.25, go on.
        let mut lab = Lab::new(UpdateConfig {
            max_failure_ratio: Ratio(0.25),
            ..UpdateConfig::default()
        });
        lab.update_image("app:2");
        lab.pass(10_000);
        let first = lab
            .s
            .tasks
            .values()
            .find(|t| live(t) && t.spec.image == "app:2");
        let first = first.map(|t| t.id.clone()).unwrap_or_default();
        lab.agents(10_100, |t| t.id == first);
        lab.pass(10_100);
        assert_eq!(lab.status().0, Some(UpdateState::Updating));
        // A second one: 0.5 > 0.25, paused.
        let second = lab
            .s
            .tasks
            .values()
            .find(|t| live(t) && t.spec.image == "app:2" && t.id != first);
        let second = second.map(|t| t.id.clone()).unwrap_or_default();
        lab.agents(10_200, |t| t.id == second);
        lab.pass(10_200);
        assert_eq!(lab.status().0, Some(UpdateState::Paused));
    }

    #[test]
    fn a_task_failing_after_the_monitor_window_is_no_update_failure() {
        let mut lab = Lab::new(UpdateConfig::default());
        lab.update_image("app:2");
        for t in [10_000, 10_100, 10_200, 10_300] {
            lab.pass(t);
            lab.agents(t, |_| false);
        }
        lab.pass(10_400);
        let id = lab
            .s
            .tasks
            .values()
            .find(|t| live(t) && t.spec.image == "app:2");
        let id = id.map(|t| t.id.clone()).unwrap_or_default();
        // 6 s after it ran, with a 5 s monitor: the restart policy's.
        set_state(&mut lab.s, &id, TaskState::Failed, 16);
        lab.pass(16_000);
        assert_eq!(lab.status().0, Some(UpdateState::Completed));
    }

    #[test]
    fn a_new_leader_continues_from_the_stored_state_alone() {
        let mut lab = Lab::new(UpdateConfig {
            delay_nanos: 1_000_000_000,
            ..UpdateConfig::default()
        });
        lab.update_image("app:2");
        lab.pass(10_000);
        lab.agents(10_100, |_| false);
        lab.pass(10_100);
        // The leader changes: the new one has only the committed state
        // (through serde, as a snapshot carries it).
        let json = serde_json::to_string(&lab.s).unwrap_or_default();
        let restored: Option<ClusterState> = serde_json::from_str(&json).ok();
        let mut next = Lab {
            s: restored.unwrap_or_default(),
            ids: 100,
        };
        assert_eq!(next.s, lab.s);
        // It keeps the worker's delay...
        next.pass(11_000);
        assert_eq!(next.live("app:2"), 1);
        // ...then goes on with the next slot.
        next.pass(11_100);
        assert_eq!(next.live("app:2"), 2);
        assert_eq!(next.status().0, Some(UpdateState::Updating));
    }
}

#[test]
fn placement_preferences_spread_over_label_values_then_nodes() {
    let nodes = [
        node("a", &[("zone", "1")]),
        node("b", &[("zone", "1")]),
        node("c", &[("zone", "2")]),
        node("d", &[]),
    ];
    let mut s = state(&nodes);
    let mut svc = service("web", ServiceMode::Replicated { replicas: 6 }, &[]);
    svc.spec.placement_prefs = vec!["spread=node.labels.zone".into()];
    assert!(apply(&mut s, &Command::CreateService(svc)).is_ok());
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let on = |n: &str| {
        s.tasks
            .values()
            .filter(|t| live(t) && t.node_id.as_deref() == Some(n))
            .count()
    };
    // Three groups (zone 1, zone 2, no zone): two tasks each, and zone 1's
    // two spread over its nodes.
    assert_eq!((on("a"), on("b"), on("c"), on("d")), (1, 1, 2, 2));
}

#[test]
fn max_replicas_per_node_leaves_the_rest_pending_with_swarms_words() {
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    let mut svc = service("web", ServiceMode::Replicated { replicas: 3 }, &[]);
    svc.spec.max_replicas_per_node = 1;
    let _ = apply(&mut s, &Command::CreateService(svc));
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    assert_eq!(live_on(&s, "web"), ["-", "n1", "n2"]);
    let pending: Vec<&Task> = s
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.err,
        "no suitable node (max replicas per node limit exceed)"
    );
    // A third node takes the pending task.
    let _ = apply(&mut s, &Command::CreateNode(node("n3", &[])));
    converge(&mut s, 101, &mut ids);
    assert_eq!(live_on(&s, "web"), ["n1", "n2", "n3"]);
    // Without the limit, two nodes hold three tasks.
    let mut s = state(&[node("n1", &[]), node("n2", &[])]);
    let svc = service("web", ServiceMode::Replicated { replicas: 3 }, &[]);
    let _ = apply(&mut s, &Command::CreateService(svc));
    converge(&mut s, 100, &mut 0);
    assert_eq!(live_on(&s, "web"), ["n1", "n1", "n2"]);
}

/// Fails the slot's live task at `at` and runs the reconcilers at `at`
/// and again much later: whether it was restarted.
fn fail_and_restarted(s: &mut ClusterState, ids: &mut u64, at: u64) -> bool {
    let live_id = s
        .tasks
        .values()
        .find(|t| live(t))
        .map(|t| t.id.clone())
        .unwrap_or_default();
    set_state(s, &live_id, TaskState::Failed, at);
    converge(s, at, ids);
    // Much later too: the window sliding past does not undo the decision.
    converge(s, at + 1000, ids);
    !live_on(s, "job").is_empty()
}

#[test]
fn restarts_count_against_max_attempts_only_within_the_window() {
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("job", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.restart = RestartPolicy {
        condition: RestartCondition::Any,
        delay_secs: 0,
        max_attempts: Some(2),
        window_ns: 60 * NANOS_PER_SEC,
    };
    let _ = apply(&mut s, &Command::CreateService(svc));
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    // Failures far apart: each window holds one restart, so it goes on
    // past max_attempts.
    for at in [100, 200, 300, 400] {
        assert!(fail_and_restarted(&mut s, &mut ids, at), "at {at}");
    }
    // Three failures within a minute: two restarts, then none.
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("job", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.restart = RestartPolicy {
        condition: RestartCondition::Any,
        delay_secs: 0,
        max_attempts: Some(2),
        window_ns: 60 * NANOS_PER_SEC,
    };
    let _ = apply(&mut s, &Command::CreateService(svc));
    converge(&mut s, 100, &mut ids);
    let fail_at = |s: &mut ClusterState, ids: &mut u64, at| {
        let id = s
            .tasks
            .values()
            .find(|t| live(t))
            .map(|t| t.id.clone())
            .unwrap_or_default();
        set_state(s, &id, TaskState::Failed, at);
        converge(s, at, ids);
        !live_on(s, "job").is_empty()
    };
    assert!(fail_at(&mut s, &mut ids, 100));
    assert!(fail_at(&mut s, &mut ids, 110));
    assert!(
        !fail_at(&mut s, &mut ids, 120),
        "third failure in the window"
    );
    converge(&mut s, 5000, &mut ids);
    assert!(live_on(&s, "job").is_empty(), "stays down, as in swarm");
    // Without a window every restart counts, however far apart.
    let mut s = state(&[node("n1", &[])]);
    let mut svc = service("job", ServiceMode::Replicated { replicas: 1 }, &[]);
    svc.spec.restart.max_attempts = Some(2);
    let _ = apply(&mut s, &Command::CreateService(svc));
    converge(&mut s, 100, &mut ids);
    assert!(fail_and_restarted(&mut s, &mut ids, 100));
    assert!(fail_and_restarted(&mut s, &mut ids, 2000));
    assert!(!fail_and_restarted(&mut s, &mut ids, 4000));
}

#[test]
fn new_pull_credentials_alone_restart_no_running_task() {
    let mut s = state(&[node("n1", &[])]);
    let _ = apply(
        &mut s,
        &Command::CreateService(service("web", ServiceMode::Replicated { replicas: 1 }, &[])),
    );
    let mut ids = 0;
    converge(&mut s, 100, &mut ids);
    let id = s.tasks.keys().next().cloned().unwrap_or_default();
    set_state(&mut s, &id, TaskState::Running, 100);
    let mut svc = s.services["web"].clone();
    svc.spec.task.registry_auth = "eyJ1c2VybmFtZSI6ImEifQ==".into();
    let v = svc.version;
    let cmd = Command::UpdateService {
        id: "web".into(),
        expected_version: v,
        service: svc,
    };
    assert!(apply(&mut s, &cmd).is_ok());
    converge(&mut s, 101, &mut ids);
    assert_eq!(s.tasks[&id].desired_state, TaskState::Running, "replaced");
    // Anything else that changes is a change.
    let mut svc = s.services["web"].clone();
    svc.spec.task.env = vec!["A=1".into()];
    let v = svc.version;
    let cmd = Command::UpdateService {
        id: "web".into(),
        expected_version: v,
        service: svc,
    };
    assert!(apply(&mut s, &cmd).is_ok());
    converge(&mut s, 102, &mut ids);
    assert_eq!(s.tasks[&id].desired_state, TaskState::Shutdown);
}
