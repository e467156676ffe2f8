use std::net::Ipv4Addr;

use shoal_api::{
    cluster::v1 as pb,
    words::{Word, word},
};

use super::*;

/// A wire address as the text the assertions were written in.
fn ip(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

fn cidr(p: &Option<pb::Ipv4Prefix>) -> String {
    p.map(|p| p.to_string()).unwrap_or_default()
}
use crate::model::{
    Availability, Endpoint as ServiceEndpoint, EndpointSpec, Labels, Network, NetworkAttachment,
    NetworkDriver, Node, NodeRole, RestartPolicy, Service, ServiceMode, ServiceSpec, TaskSpec,
    apply,
};

/// Stores task `id` as `edit` changes it.
fn edit_task(s: &mut ClusterState, id: &str, edit: impl FnOnce(&mut Task)) {
    let mut t = s.tasks[id].clone();
    edit(&mut t);
    let update = Command::UpdateTask {
        id: id.into(),
        expected_version: t.version,
        task: t,
    };
    apply(s, &update).expect("task updated");
}

fn node(id: &str, ip: &str, status: NodeState) -> Node {
    Node {
        id: id.into(),
        version: 0,
        hostname: format!("host-{id}"),
        role: NodeRole::Worker,
        availability: Availability::Active,
        labels: Labels::new(),
        addr: ip.parse().ok(),
        status,
        manager: None,
        tls: Default::default(),
        resources: Default::default(),
        platform: Default::default(),
        wireguard_key: None,
    }
}

fn network(id: &str, vni: u32, subnet: &str) -> Network {
    Network {
        id: id.into(),
        version: 0,
        name: format!("name-{id}"),
        labels: Labels::new(),
        driver: NetworkDriver::Overlay,
        ingress: false,
        attachable: false,
        encryption: crate::model::Encryption::None,
        vni: Some(vni),
        subnet: Some(subnet.into()),
        gateway: None,
        mtu: None,
        internal: false,
    }
}

fn task(id: &str, node: &str, slot: u64, state: TaskState, nets: &[(&str, &str)]) -> Task {
    Task {
        id: id.into(),
        version: 0,
        service_id: "svc".into(),
        slot: Some(slot),
        node_id: Some(node.into()),
        spec: TaskSpec {
            args: vec!["sleep".into(), "100".into()],
            env: vec!["A=1".into()],
            ..TaskSpec::default()
        },
        desired_state: TaskState::Running,
        state,
        networks: nets
            .iter()
            .map(|(n, a)| NetworkAttachment {
                network_id: (*n).into(),
                addresses: vec![(*a).into()],
            })
            .collect(),
        status: TaskStatus::default(),
    }
}

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    let cmds = vec![
        Command::CreateNode(node("n1", "198.18.0.1", NodeState::Ready)),
        Command::CreateNode(node("n2", "198.18.0.2", NodeState::Ready)),
        Command::CreateNode(node("n3", "198.18.0.3", NodeState::Down)),
        Command::CreateNetwork(network("a", 4097, "10.0.1.0/24")),
        Command::CreateNetwork(network("b", 4098, "10.0.2.0/24")),
        Command::CreateService(Service {
            id: "svc".into(),
            version: 0,
            spec: ServiceSpec {
                name: "web".into(),
                labels: Labels::new(),
                mode: ServiceMode::Replicated { replicas: 4 },
                task: TaskSpec::default(),
                endpoint: EndpointSpec::default(),
                networks: vec!["a".into()],
                constraints: Vec::new(),
                restart: RestartPolicy::default(),
                update: Default::default(),
                rollback: Default::default(),
                placement_prefs: Vec::new(),
                network_aliases: Default::default(),
                max_replicas_per_node: 0,
            },
            previous_spec: None,
            update_status: None,
            endpoint: ServiceEndpoint::default(),
        }),
        Command::CreateTask(task(
            "t1",
            "n1",
            1,
            TaskState::Running,
            &[("a", "10.0.1.2/24")],
        )),
        Command::CreateTask(task(
            "t2",
            "n2",
            2,
            TaskState::Starting,
            &[("a", "10.0.1.3/24")],
        )),
        // On a down node: not an endpoint anyone should reach.
        Command::CreateTask(task(
            "t3",
            "n3",
            3,
            TaskState::Running,
            &[("a", "10.0.1.4/24")],
        )),
        // Ended: neither work for n1 nor an endpoint.
        Command::CreateTask(task(
            "t4",
            "n1",
            4,
            TaskState::Failed,
            &[("a", "10.0.1.5/24")],
        )),
        // On a network n1 has no task on.
        Command::CreateTask(task(
            "t5",
            "n2",
            5,
            TaskState::Running,
            &[("b", "10.0.2.2/24")],
        )),
    ];
    for c in &cmds {
        apply(&mut s, c).expect("fixture applies");
    }
    s
}

#[test]
fn a_node_gets_its_live_tasks_their_networks_and_live_endpoints() {
    let s = cluster();
    let a = assignments(&s, "n1");
    assert_eq!(a.version, s.version);
    let ids: Vec<&str> = a.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t1"]);
    assert_eq!(a.tasks[0].name, "web.1");
    assert_eq!(a.tasks[0].service_name, "web");
    assert_eq!(word::<pb::TaskState>(a.tasks[0].desired_state), "running");
    assert_eq!(cidr(&a.tasks[0].addresses[0].addr), "10.0.1.2/24");
    let nets: Vec<(&str, u32)> = a.networks.iter().map(|n| (n.id.as_str(), n.vni)).collect();
    assert_eq!(nets, [("a", 4097)]);
    let eps: Vec<(&str, String, String)> = a
        .endpoints
        .iter()
        .map(|e| (e.task_id.as_str(), ip(e.ip), ip(e.node_addr)))
        .collect();
    let eps: Vec<(&str, &str, &str)> = eps
        .iter()
        .map(|(t, i, n)| (*t, i.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        eps,
        [
            ("t1", "10.0.1.2", "198.18.0.1"),
            ("t2", "10.0.1.3", "198.18.0.2")
        ]
    );
}

#[test]
fn a_node_without_tasks_gets_nothing() {
    let a = assignments(&cluster(), "n9");
    assert!(a.tasks.is_empty() && a.networks.is_empty() && a.endpoints.is_empty());
}

/// `cluster()` with the ingress network, a published port and VIPs on
/// `web`, and t1 on ingress first as the orchestrator attaches it.
fn mesh_cluster() -> ClusterState {
    let mut s = cluster();
    let mut ing = network("ing", 4096, "10.0.0.0/24");
    ing.name = "ingress".into();
    ing.ingress = true;
    apply(&mut s, &Command::CreateNetwork(ing)).expect("ingress");
    let mut svc = s.services["svc"].clone();
    let port = crate::model::PortConfig {
        protocol: crate::model::Protocol::Tcp,
        target_port: 80,
        published_port: Some(8080),
        publish_mode: crate::model::PublishMode::Ingress,
    };
    svc.spec.endpoint.ports = vec![port.clone()];
    svc.endpoint = ServiceEndpoint {
        vips: vec![
            crate::model::VirtualIp {
                network_id: "ing".into(),
                addr: "10.0.0.2/24".into(),
            },
            crate::model::VirtualIp {
                network_id: "a".into(),
                addr: "10.0.1.9/24".into(),
            },
        ],
        ports: vec![port],
    };
    let v = svc.version;
    apply(
        &mut s,
        &Command::UpdateService {
            id: "svc".into(),
            expected_version: v,
            service: svc,
        },
    )
    .expect("service");
    edit_task(&mut s, "t1", |t| {
        t.networks.insert(
            0,
            NetworkAttachment {
                network_id: "ing".into(),
                addresses: vec!["10.0.0.3/24".into()],
            },
        );
    });
    s
}

#[test]
fn every_node_carries_ingress_and_the_whole_mesh() {
    let s = mesh_cluster();
    // Even without a task, a node answers on published ports.
    let a = assignments(&s, "n9");
    assert!(a.tasks.is_empty());
    let nets: Vec<(&str, bool)> = a
        .networks
        .iter()
        .map(|n| (n.id.as_str(), n.ingress))
        .collect();
    assert_eq!(nets, [("ing", true)]);
    let eps: Vec<(&str, String)> = a
        .endpoints
        .iter()
        .map(|e| (e.network_id.as_str(), ip(e.ip)))
        .collect();
    let eps: Vec<(&str, &str)> = eps.iter().map(|(n, i)| (*n, i.as_str())).collect();
    assert_eq!(eps, [("ing", "10.0.0.3")]);
    // Nodes that are up, with their VTEP; n3 is down.
    let nodes: Vec<(&str, String)> = a
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), ip(n.addr)))
        .collect();
    let nodes: Vec<(&str, &str)> = nodes.iter().map(|(n, a)| (*n, a.as_str())).collect();
    assert_eq!(nodes, [("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    assert_eq!(a.mesh.len(), 1);
    let m = &a.mesh[0];
    assert_eq!(
        (
            m.id.as_str(),
            m.name.as_str(),
            pb::EndpointMode::try_from(m.endpoint_mode).map_or("?", Word::word)
        ),
        ("svc", "web", "vip")
    );
    let vips: Vec<(&str, &str, String)> = m
        .vips
        .iter()
        .map(|v| (v.network_id.as_str(), v.network.as_str(), cidr(&v.addr)))
        .collect();
    let vips: Vec<(&str, &str, &str)> = vips.iter().map(|(i, n, a)| (*i, *n, a.as_str())).collect();
    assert_eq!(
        vips,
        [
            ("ing", "ingress", "10.0.0.2/24"),
            ("a", "name-a", "10.0.1.9/24")
        ]
    );
    assert_eq!(m.ports.len(), 1);
    assert_eq!(
        (
            m.ports[0].published_port,
            m.ports[0].target_port,
            pb::Protocol::try_from(m.ports[0].protocol).map_or("?", Word::word),
            pb::PublishMode::try_from(m.ports[0].publish_mode).map_or("?", Word::word)
        ),
        (8080, 80, "tcp", "ingress")
    );
    // RUNNING tasks on nodes that are up, one backend per network address:
    // t2 is starting, t3 on a down node, t4 failed.
    let backends: Vec<(&str, String, &str, String)> = m
        .backends
        .iter()
        .map(|b| {
            (
                b.task_id.as_str(),
                ip(b.node_addr),
                b.network_id.as_str(),
                ip(b.ip),
            )
        })
        .collect();
    let backends: Vec<(&str, &str, &str, &str)> = backends
        .iter()
        .map(|(t, n, w, i)| (*t, n.as_str(), *w, i.as_str()))
        .collect();
    assert_eq!(
        backends,
        [
            ("t1", "198.18.0.1", "ing", "10.0.0.3"),
            ("t1", "198.18.0.1", "a", "10.0.1.2"),
            ("t5", "198.18.0.2", "b", "10.0.2.2"),
        ]
    );
    // A node with a task: its networks plus ingress, its task's addresses
    // ingress first, as attached.
    let a = assignments(&s, "n1");
    let nets: Vec<&str> = a.networks.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(nets, ["a", "ing"]);
    let cidrs: Vec<String> = a.tasks[0].addresses.iter().map(|t| cidr(&t.addr)).collect();
    assert_eq!(cidrs, ["10.0.0.3/24", "10.0.1.2/24"]);
}

fn rep(task: &str, state: &str) -> TaskReport {
    TaskReport {
        task_id: task.into(),
        state: pb::TaskState::from_word(state).map_or(0, Into::into),
        message: "m".into(),
        err: String::new(),
        exit_code: None,
        health: None,
    }
}

#[test]
fn reports_move_tasks_forward_only() {
    let mut s = cluster();
    let cmd = report(&s, "n2", &rep("t2", "running"), 7)
        .expect("valid")
        .expect("forward");
    apply(&mut s, &cmd).expect("applies");
    assert_eq!(s.tasks["t2"].state, TaskState::Running);
    assert_eq!(s.tasks["t2"].status.since_unix, 7);
    // Late or repeated reports change nothing.
    assert_eq!(report(&s, "n2", &rep("t2", "starting"), 8), Ok(None));
    assert_eq!(report(&s, "n2", &rep("t2", "running"), 8), Ok(None));
    let mut failed = rep("t2", "failed");
    failed.exit_code = Some(3);
    let cmd = report(&s, "n2", &failed, 9)
        .expect("valid")
        .expect("forward");
    apply(&mut s, &cmd).expect("applies");
    assert_eq!(s.tasks["t2"].state, TaskState::Failed);
    assert_eq!(s.tasks["t2"].status.exit_code, Some(3));
}

#[test]
fn reports_are_checked() {
    let s = cluster();
    assert_eq!(
        report(&s, "n1", &rep("t2", "running"), 1),
        Err(ReportError::NotYours {
            task: "t2".into(),
            node: "n1".into()
        })
    );
    assert_eq!(
        report(&s, "n1", &rep("nope", "running"), 1),
        Err(ReportError::UnknownTask("nope".into()))
    );
    for bad in ["pending", "assigned", "orphaned", ""] {
        assert_eq!(
            report(&s, "n1", &rep("t1", bad), 1),
            Err(ReportError::BadState(bad.into())),
            "{bad}"
        );
    }
    // A state this build does not know ("RUNNING", "bogus" in the days of
    // words) is named, never read as another.
    let mut unknown = rep("t1", "");
    unknown.state = 99;
    assert_eq!(
        report(&s, "n1", &unknown, 1).map_err(|e| e.to_string()),
        Err("task t1 state: unknown value 99".into())
    );
}

#[test]
fn assignments_carry_the_image_its_digest_and_where_to_fetch_it()
-> Result<(), crate::model::ApplyError> {
    let mut s = cluster();
    let digest = format!("sha256:{}", "d".repeat(64));
    // n2 holds the digest, n3 too but is down, n1 (the task's node) lacks it.
    for n in ["n2", "n3"] {
        apply(
            &mut s,
            &Command::RegisterImages {
                node_id: n.into(),
                images: vec![crate::model::ImageRecord {
                    reference: "docker.io/library/busybox:latest".into(),
                    digest: digest.clone(),
                    size: 1,
                }],
                removed: Vec::new(),
            },
        )?;
    }
    edit_task(&mut s, "t1", |t| {
        t.spec.image = "busybox".into();
        t.spec.image_digest = digest.clone();
        t.spec.resources.limit_memory_bytes = 64 << 20;
    });
    let set = assignments(&s, "n1");
    let t1 = set.tasks.iter().find(|t| t.id == "t1");
    let c = t1.and_then(|t| t.container.clone()).unwrap_or_default();
    assert_eq!(
        (c.image.as_str(), c.image_digest.as_str()),
        ("busybox", digest.as_str())
    );
    assert_eq!(
        t1.and_then(|t| t.resources).map(|r| r.limit_memory_bytes),
        Some(64 << 20)
    );
    let holders = |set: &AssignmentSet| -> Vec<(String, String, String)> {
        set.tasks
            .iter()
            .find(|t| t.id == "t1")
            .map(|t| {
                t.image_holders
                    .iter()
                    .map(|h| (h.node_id.clone(), h.addr.clone(), h.digest.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let n2_holds = [(
        "n2".to_owned(),
        "198.18.0.2:2377".to_owned(),
        digest.clone(),
    )];
    assert_eq!(holders(&set), n2_holds);
    // Unpinned (created before any node had the image): the holders of
    // what the catalogue resolves the reference to at assignment time,
    // with that digest, so the node fetches it rather than asking a
    // registry that may not have it.
    edit_task(&mut s, "t1", |t| t.spec.image_digest = String::new());
    assert_eq!(holders(&assignments(&s, "n1")), n2_holds);
    // A host task has nothing to fetch.
    let t2 = assignments(&s, "n2")
        .tasks
        .into_iter()
        .find(|t| t.id == "t2");
    assert_eq!(
        t2.as_ref()
            .and_then(|t| t.container.as_ref())
            .map(|c| c.image.as_str()),
        Some("host")
    );
    assert!(t2.is_some_and(|t| t.image_holders.is_empty()));
    // A task stored with a rootfs by an older build is sent with no image,
    // which no node runs.
    edit_task(&mut s, "t2", |t| t.spec.legacy_rootfs = "/srv/tree".into());
    let t2 = assignments(&s, "n2")
        .tasks
        .into_iter()
        .find(|t| t.id == "t2");
    assert_eq!(
        t2.and_then(|t| t.container).map(|c| c.image),
        Some(String::new())
    );
    Ok(())
}

/// `cluster()` with secret `db` (data "hunter2") and config `app` (a
/// template) used by t1 (on n1) and t2 (on n2), whose data only they get.
fn files_cluster() -> ClusterState {
    let mut s = cluster();
    let secret = crate::model::Secret {
        id: "sec".into(),
        version: 0,
        name: "db".into(),
        labels: Labels::new(),
        data: crate::model::SecretBytes(b"hunter2".to_vec()),
    };
    let config = crate::model::Config {
        id: "cfg".into(),
        version: 0,
        name: "app".into(),
        labels: Labels::new(),
        data: crate::model::ConfigBytes(b"node={{.Node.ID}} task={{.Task.Name}}".to_vec()),
        template_driver: crate::model::TEMPLATE_DRIVER_GOLANG.into(),
        created_unix: 0,
    };
    apply(&mut s, &Command::CreateSecret(secret)).expect("secret");
    apply(&mut s, &Command::CreateConfig(config)).expect("config");
    let file = |id: &str, name: &str, target: &str| crate::model::FileRef {
        id: id.into(),
        name: name.into(),
        target: target.into(),
        uid: 1000,
        gid: 1000,
        mode: 0o400,
    };
    for id in ["t1", "t2"] {
        edit_task(&mut s, id, |t| {
            t.spec.secrets = vec![file("sec", "db", "db"), file("sec", "db", "/etc/pw")];
            t.spec.configs = vec![file("cfg", "app", "/etc/app.conf")];
            t.spec.env = vec!["NODE={{.Node.ID}}".into(), "SLOT={{.Task.Slot}}".into()];
            t.spec.hostname = "{{.Service.Name}}-{{.Task.Slot}}".into();
        });
    }
    s
}

fn files_of(a: &AssignmentSet) -> Vec<(String, String, Vec<u8>)> {
    a.tasks
        .iter()
        .flat_map(|t| {
            t.files
                .iter()
                .map(|f| (t.id.clone(), f.target.clone(), f.data.clone()))
        })
        .collect()
}

#[test]
fn a_node_gets_the_files_of_its_own_tasks_only() {
    let s = files_cluster();
    let a = assignments(&s, "n1");
    let got = files_of(&a);
    let want: Vec<(String, String, Vec<u8>)> = vec![
        ("t1".into(), "/run/secrets/db".into(), b"hunter2".to_vec()),
        ("t1".into(), "/etc/pw".into(), b"hunter2".to_vec()),
        (
            "t1".into(),
            "/etc/app.conf".into(),
            b"node=n1 task=web.1.t1".to_vec(),
        ),
    ];
    assert_eq!(got, want);
    let f = &a.tasks[0].files[0];
    assert_eq!(
        (
            f.kind(),
            f.id.as_str(),
            f.name.as_str(),
            f.uid,
            f.gid,
            f.mode
        ),
        (pb::TaskFileKind::Secret, "sec", "db", 1000, 1000, 0o400)
    );
    // Templates expanded for this task on this node.
    assert_eq!(a.tasks[0].env, ["NODE=n1", "SLOT=1"]);
    let c = a.tasks[0].container.clone().unwrap_or_default();
    assert_eq!(c.hostname, "web-1");
    // The reference, never the data, in the container spec.
    assert_eq!(c.secrets[0].name, "db");
    // n2's copy is expanded for t2; n3 (a down node whose running task has
    // no files) and n9 (no task) get no file at all.
    let n2 = files_of(&assignments(&s, "n2"));
    assert!(n2.iter().all(|(t, _, _)| t == "t2"), "{n2:?}");
    assert!(n2.iter().any(|(_, _, d)| d == b"node=n2 task=web.2.t2"));
    for node in ["n3", "n9"] {
        let a = assignments(&s, node);
        assert!(files_of(&a).is_empty(), "{node}");
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2"), "{node}");
    }
    // Nothing that may be logged shows the data.
    let shown = format!("{a:?} {:?}", s.tasks["t1"]);
    assert!(
        !shown.contains("hunter2") && !shown.contains("104, 117"),
        "{shown}"
    );
}

#[test]
fn an_ended_task_takes_its_files_with_it() {
    let mut s = files_cluster();
    // Being stopped: it still runs, so it keeps its files.
    edit_task(&mut s, "t1", |t| t.desired_state = TaskState::Shutdown);
    assert_eq!(files_of(&assignments(&s, "n1")).len(), 3);
    edit_task(&mut s, "t1", |t| t.state = TaskState::Shutdown);
    assert!(files_of(&assignments(&s, "n1")).is_empty());
    // A task told to stop before it started never gets them.
    edit_task(&mut s, "t2", |t| {
        t.state = TaskState::Assigned;
        t.desired_state = TaskState::Shutdown;
    });
    let n2 = assignments(&s, "n2");
    assert!(n2.tasks.iter().any(|t| t.id == "t2"));
    assert!(files_of(&n2).iter().all(|(t, _, _)| t != "t2"));
}

#[test]
fn every_node_gets_both_key_rings_and_none_without_a_cluster() {
    let mut s = cluster();
    assert!(assignments(&s, "n1").network_keys.is_empty());
    let keys = crate::keys::NetworkKeys::made();
    s.clusters.insert(
        "c".into(),
        crate::model::Cluster {
            id: "c".into(),
            version: 0,
            name: "default".into(),
            settings: Default::default(),
            join_tokens: Default::default(),
            root_ca: Default::default(),
            removed_nodes: Default::default(),
            unlock_key: Default::default(),
            network_keys: keys.clone(),
        },
    );
    // A node with tasks and one without: the rings are what lets either
    // speak gossip at all.
    for n in ["n1", "n9"] {
        let got = assignments(&s, n).network_keys;
        let rings: Vec<(&str, u64)> = got
            .iter()
            .map(|k| (k.subsystem.as_str(), k.lamport_time))
            .collect();
        assert_eq!(
            rings,
            [
                ("networking:gossip", 1),
                ("networking:gossip", 2),
                ("networking:gossip", 3),
                ("networking:ipsec", 4),
                ("networking:ipsec", 5),
                ("networking:ipsec", 6),
            ],
            "{n}"
        );
        assert_eq!(got[0].key, keys.gossip[0].key.0);
    }
}
