use proptest::prelude::*;

use super::*;
use crate::model::{
    Endpoint, EndpointSpec, Labels, Network, NetworkDriver, NodeRole, RestartPolicy, ServiceSpec,
    TaskSpec, apply,
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
            secrets: Vec::new(),
            constraints: constraints.iter().map(|c| (*c).to_owned()).collect(),
            restart: RestartPolicy::default(),
        },
        previous_spec: None,
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
        encrypted: false,
        vni: Some(4097),
        subnet: Some("10.0.1.0/24".into()),
        gateway: None,
        mtu: None,
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
