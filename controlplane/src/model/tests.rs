use proptest::prelude::*;

use super::*;

fn cluster(id: &str, name: &str) -> Cluster {
    Cluster {
        id: id.to_owned(),
        version: 0,
        name: name.to_owned(),
        settings: ClusterSettings::default(),
        join_tokens: JoinTokens {
            worker: SecretString("SWMTKN-1-abc-worker".to_owned()),
            manager: SecretString("SWMTKN-1-abc-manager".to_owned()),
        },
        root_ca: RootCaKeys::default(),
        removed_nodes: BTreeSet::new(),
        unlock_key: SecretString::default(),
        network_keys: Default::default(),
    }
}

fn node(id: &str, hostname: &str) -> Node {
    Node {
        id: id.to_owned(),
        version: 0,
        hostname: hostname.to_owned(),
        role: NodeRole::Worker,
        availability: Availability::Active,
        labels: Labels::new(),
        addr: None,
        status: NodeState::Unknown,
        manager: None,
        tls: Default::default(),
        resources: Default::default(),
        platform: Default::default(),
        wireguard_key: None,
    }
}

fn network(id: &str, name: &str) -> Network {
    Network {
        id: id.to_owned(),
        version: 0,
        name: name.to_owned(),
        labels: Labels::new(),
        driver: NetworkDriver::Overlay,
        ingress: false,
        attachable: false,
        encryption: crate::model::Encryption::None,
        vni: None,
        subnet: None,
        gateway: None,
        mtu: None,
        internal: false,
    }
}

fn service(id: &str, name: &str, networks: &[&str], secrets: &[&str]) -> Service {
    Service {
        id: id.to_owned(),
        version: 0,
        spec: ServiceSpec {
            name: name.to_owned(),
            labels: Labels::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec {
                image: "busybox:1.36".to_owned(),
                secrets: secrets
                    .iter()
                    .map(|s| FileRef {
                        id: (*s).to_owned(),
                        name: (*s).to_owned(),
                        target: (*s).to_owned(),
                        uid: 0,
                        gid: 0,
                        mode: 0o444,
                    })
                    .collect(),
                ..TaskSpec::default()
            },
            endpoint: EndpointSpec::default(),
            networks: networks.iter().map(|n| (*n).to_owned()).collect(),
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
        endpoint: Endpoint::default(),
    }
}

fn task(id: &str, service_id: &str, node_id: Option<&str>) -> Task {
    Task {
        id: id.to_owned(),
        version: 0,
        service_id: service_id.to_owned(),
        slot: Some(1),
        node_id: node_id.map(str::to_owned),
        spec: TaskSpec::default(),
        desired_state: TaskState::Running,
        state: TaskState::New,
        networks: Vec::new(),
        status: TaskStatus::default(),
    }
}

fn secret(id: &str, name: &str, data: &[u8]) -> Secret {
    Secret {
        id: id.to_owned(),
        version: 0,
        name: name.to_owned(),
        labels: Labels::new(),
        data: SecretBytes(data.to_vec()),
    }
}

fn config(id: &str, name: &str, data: &[u8]) -> Config {
    Config {
        id: id.to_owned(),
        version: 0,
        name: name.to_owned(),
        labels: Labels::new(),
        data: ConfigBytes(data.to_vec()),
        template_driver: String::new(),
        created_unix: 1,
    }
}

#[test]
fn configs_are_immutable_and_held_by_the_services_that_mount_them() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        &Command::CreateConfig(config("c1", "app", b"x=1")),
    )?;
    let clash = apply(
        &mut state,
        &Command::CreateConfig(config("c2", "app", b"y")),
    );
    assert!(matches!(
        clash,
        Err(ApplyError::NameConflict {
            kind: Kind::Config,
            ..
        })
    ));
    let mut changed = config("c1", "app", b"x=2");
    let refused = apply(
        &mut state,
        &Command::UpdateConfig {
            id: "c1".into(),
            expected_version: 1,
            config: changed.clone(),
        },
    );
    assert_eq!(
        refused,
        Err(ApplyError::Immutable {
            kind: Kind::Config,
            id: "c1".into()
        })
    );
    changed.data = ConfigBytes(b"x=1".to_vec());
    changed.labels.insert("a".into(), "b".into());
    apply(
        &mut state,
        &Command::UpdateConfig {
            id: "c1".into(),
            expected_version: 1,
            config: changed,
        },
    )?;
    let mut svc = service("sv1", "web", &[], &[]);
    svc.spec.task.configs = vec![FileRef {
        id: "c9".into(),
        name: "gone".into(),
        target: "/app".into(),
        uid: 0,
        gid: 0,
        mode: 0o444,
    }];
    let missing = apply(&mut state, &Command::CreateService(svc.clone()));
    assert!(matches!(
        missing,
        Err(ApplyError::MissingReference {
            target_kind: Kind::Config,
            ..
        })
    ));
    svc.spec.task.configs[0].id = "c1".into();
    apply(&mut state, &Command::CreateService(svc))?;
    assert_eq!(
        state
            .config_users("c1")
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["sv1"]
    );
    let in_use = apply(
        &mut state,
        &Command::RemoveConfig {
            id: "c1".into(),
            expected_version: 2,
        },
    );
    assert_eq!(
        in_use,
        Err(ApplyError::InUse {
            kind: Kind::Config,
            id: "c1".into(),
            user_kind: Kind::Service,
            user_id: "sv1".into()
        })
    );
    apply(
        &mut state,
        &Command::RemoveService {
            id: "sv1".into(),
            expected_version: 3,
        },
    )?;
    apply(
        &mut state,
        &Command::RemoveConfig {
            id: "c1".into(),
            expected_version: 2,
        },
    )?;
    assert!(state.configs.is_empty());
    Ok(())
}

#[test]
fn states_from_before_configs_write_back_as_they_were() -> Result<(), serde_json::Error> {
    // A service as earlier builds stored it: `secrets` in the service spec
    // (always empty), none in the task spec; no configs, no platform.
    let old = r#"{"version":3,"clusters":{},"nodes":{"a":{"id":"a","version":1,"hostname":"n1","role":"worker","availability":"active","labels":{},"addr":null,"status":"ready","manager":null,"tls":{"cert_issuer":"","cert_not_after_unix":0},"resources":{"nano_cpus":0,"memory_bytes":0}}},"networks":{},"services":{"s":{"id":"s","version":2,"spec":{"name":"web","labels":{},"mode":{"replicated":{"replicas":1}},"task":{"image":"busybox","image_digest":"","entrypoint":null,"args":[],"env":[],"workdir":"","user":"","hostname":"","stop_signal":"","stop_grace_nanos":10000000000,"read_only":false,"init":false,"cap_add":[],"cap_drop":[],"sysctls":{},"resources":{"limit_nano_cpus":0,"limit_memory_bytes":0,"limit_pids":0,"reserve_nano_cpus":0,"reserve_memory_bytes":0},"mounts":[]},"endpoint":{"mode":"vip","ports":[]},"networks":[],"secrets":[],"constraints":[],"restart":{"condition":"any","delay_secs":5,"max_attempts":null}},"previous_spec":null,"endpoint":{"vips":[],"ports":[]}}},"tasks":{},"secrets":{},"images":{}}"#;
    let state: ClusterState = serde_json::from_str(old)?;
    assert!(state.services["s"].spec.task.secrets.is_empty());
    let back = serde_json::to_string(&state)?;
    // Everything as it was, less the service spec's empty `secrets`.
    assert_eq!(
        back,
        old.replace(r#""networks":[],"secrets":[],"#, r#""networks":[],"#)
    );
    Ok(())
}

#[test]
fn create_update_remove_bump_versions() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    let created = apply(&mut state, &Command::CreateNetwork(network("n1", "web")))?;
    assert_eq!(
        created,
        Applied {
            kind: Kind::Network,
            id: "n1".into(),
            change: Change::Created,
            version: 1
        }
    );
    let mut updated = network("n1", "web");
    updated.vni = Some(4097);
    let applied = apply(
        &mut state,
        &Command::UpdateNetwork {
            id: "n1".into(),
            expected_version: 1,
            network: updated,
        },
    )?;
    assert_eq!(applied.version, 2);
    let stored = state.get::<Network>("n1").map(|n| (n.version, n.vni));
    assert_eq!(stored, Some((2, Some(4097))));
    let removed = apply(
        &mut state,
        &Command::RemoveNetwork {
            id: "n1".into(),
            expected_version: 2,
        },
    )?;
    assert_eq!(removed.change, Change::Removed);
    assert_eq!(removed.version, 3);
    assert!(state.networks.is_empty());
    Ok(())
}

#[test]
fn stale_update_is_rejected_naming_both_versions() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    apply(&mut state, &Command::CreateNode(node("nd1", "host-a")))?;
    apply(&mut state, &Command::CreateNode(node("nd2", "host-b")))?;
    let before = state.clone();
    let mut drained = node("nd1", "host-a");
    drained.availability = Availability::Drain;
    let err = apply(
        &mut state,
        &Command::UpdateNode {
            id: "nd1".into(),
            expected_version: 2,
            node: drained,
        },
    );
    assert_eq!(
        err,
        Err(ApplyError::VersionMismatch {
            kind: Kind::Node,
            id: "nd1".into(),
            expected: 2,
            current: 1
        })
    );
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("node nd1") && message.contains('1') && message.contains('2'));
    assert_eq!(state, before);
    Ok(())
}

#[test]
fn names_are_unique_per_kind_but_hostnames_are_not() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        &Command::CreateSecret(secret("s1", "db-pass", b"x")),
    )?;
    let dup = apply(
        &mut state,
        &Command::CreateSecret(secret("s2", "db-pass", b"y")),
    );
    assert_eq!(
        dup,
        Err(ApplyError::NameConflict {
            kind: Kind::Secret,
            name: "db-pass".into(),
            existing_id: "s1".into()
        })
    );
    // Another kind may use the same name.
    apply(
        &mut state,
        &Command::CreateNetwork(network("n1", "db-pass")),
    )?;
    // A rejoined machine keeps its hostname under a new node id.
    apply(&mut state, &Command::CreateNode(node("nd1", "host-a")))?;
    apply(&mut state, &Command::CreateNode(node("nd2", "host-a")))?;
    // Renaming onto a taken name is refused too.
    apply(&mut state, &Command::CreateNetwork(network("n2", "back")))?;
    let rename = apply(
        &mut state,
        &Command::UpdateNetwork {
            id: "n2".into(),
            expected_version: 5,
            network: network("n2", "db-pass"),
        },
    );
    assert!(matches!(rename, Err(ApplyError::NameConflict { .. })));
    assert_eq!(
        apply(&mut state, &Command::CreateNetwork(network("n1", "other"))),
        Err(ApplyError::AlreadyExists {
            kind: Kind::Network,
            id: "n1".into()
        })
    );
    Ok(())
}

#[test]
fn references_must_exist_and_block_removal() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    let missing = apply(
        &mut state,
        &Command::CreateService(service("sv1", "web", &["n1"], &[])),
    );
    assert_eq!(
        missing,
        Err(ApplyError::MissingReference {
            kind: Kind::Service,
            id: "sv1".into(),
            target_kind: Kind::Network,
            target_id: "n1".into()
        })
    );
    apply(&mut state, &Command::CreateNetwork(network("n1", "front")))?;
    apply(
        &mut state,
        &Command::CreateSecret(secret("s1", "key", b"k")),
    )?;
    apply(
        &mut state,
        &Command::CreateService(service("sv1", "web", &["n1"], &["s1"])),
    )?;
    let in_use = apply(
        &mut state,
        &Command::RemoveNetwork {
            id: "n1".into(),
            expected_version: 1,
        },
    );
    assert_eq!(
        in_use,
        Err(ApplyError::InUse {
            kind: Kind::Network,
            id: "n1".into(),
            user_kind: Kind::Service,
            user_id: "sv1".into()
        })
    );
    let in_use = apply(
        &mut state,
        &Command::RemoveSecret {
            id: "s1".into(),
            expected_version: 2,
        },
    );
    assert!(matches!(
        in_use,
        Err(ApplyError::InUse {
            kind: Kind::Secret,
            ..
        })
    ));
    let orphan = apply(
        &mut state,
        &Command::CreateTask(task("t1", "sv1", Some("nd9"))),
    );
    assert!(matches!(
        orphan,
        Err(ApplyError::MissingReference {
            target_kind: Kind::Node,
            ..
        })
    ));
    apply(&mut state, &Command::CreateTask(task("t1", "sv1", None)))?;
    apply(
        &mut state,
        &Command::RemoveService {
            id: "sv1".into(),
            expected_version: 3,
        },
    )?;
    apply(
        &mut state,
        &Command::RemoveNetwork {
            id: "n1".into(),
            expected_version: 1,
        },
    )?;
    Ok(())
}

#[test]
fn published_ports_are_unique_across_services() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    let mut web = service("sv1", "web", &[], &[]);
    web.endpoint.ports = vec![
        port(8080, Protocol::Tcp, false),
        port(9000, Protocol::Tcp, true),
    ];
    apply(&mut state, &Command::CreateService(web))?;
    let before = state.clone();
    let mut api = service("sv2", "api", &[], &[]);
    // Same number, other protocol: fine. Host mode clashes with ingress.
    api.endpoint.ports = vec![
        port(8080, Protocol::Udp, false),
        port(8080, Protocol::Tcp, true),
    ];
    let refused = apply(&mut state, &Command::CreateService(api.clone()));
    assert_eq!(
        refused,
        Err(ApplyError::PortInUse {
            id: "sv2".into(),
            port: 8080,
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
            other_id: "sv1".into(),
            other_name: "web".into(),
        })
    );
    let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("port 8080/tcp is already published by service web"),
        "{text}"
    );
    assert_eq!(state, before, "a refused create changes nothing");
    // Two host-mode ports only clash per node: the scheduler's business.
    api.endpoint.ports = vec![
        port(8080, Protocol::Udp, false),
        port(9000, Protocol::Tcp, true),
    ];
    apply(&mut state, &Command::CreateService(api.clone()))?;
    // An update that takes another service's ingress port is refused too.
    let v = state.services["sv2"].version;
    api.endpoint.ports.push(port(8080, Protocol::Tcp, false));
    let before = state.clone();
    assert!(matches!(
        apply(
            &mut state,
            &Command::UpdateService {
                id: "sv2".into(),
                expected_version: v,
                service: api
            }
        ),
        Err(ApplyError::PortInUse { port: 8080, .. })
    ));
    assert_eq!(state, before);
    Ok(())
}

#[test]
fn secret_data_is_immutable_and_ids_must_match() -> Result<(), ApplyError> {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        &Command::CreateSecret(secret("s1", "key", b"old")),
    )?;
    let changed = apply(
        &mut state,
        &Command::UpdateSecret {
            id: "s1".into(),
            expected_version: 1,
            secret: secret("s1", "key", b"new"),
        },
    );
    assert_eq!(
        changed,
        Err(ApplyError::Immutable {
            kind: Kind::Secret,
            id: "s1".into()
        })
    );
    let mut labelled = secret("s1", "key", b"old");
    labelled.labels.insert("team".into(), "a".into());
    apply(
        &mut state,
        &Command::UpdateSecret {
            id: "s1".into(),
            expected_version: 1,
            secret: labelled,
        },
    )?;
    let mismatch = apply(
        &mut state,
        &Command::UpdateSecret {
            id: "s1".into(),
            expected_version: 2,
            secret: secret("s2", "key", b"old"),
        },
    );
    assert!(matches!(mismatch, Err(ApplyError::IdMismatch { .. })));
    assert_eq!(
        apply(&mut state, &Command::CreateCluster(cluster("", "default"))),
        Err(ApplyError::EmptyId {
            kind: Kind::Cluster
        })
    );
    Ok(())
}

#[test]
fn secrets_are_redacted_in_debug_and_hex_in_json() -> Result<(), serde_json::Error> {
    let s = secret("s1", "key", b"\x00s3cr3t\xff");
    let debug = format!("{s:?}");
    assert!(!debug.contains("s3cr3t") && debug.contains("redacted 8 bytes"));
    let json = serde_json::to_string(&s)?;
    assert!(json.contains("\"00733363723374ff\""));
    assert_eq!(serde_json::from_str::<Secret>(&json)?, s);
    assert!(serde_json::from_str::<SecretBytes>("\"0g\"").is_err());
    assert!(serde_json::from_str::<SecretBytes>("\"abc\"").is_err());
    let c = cluster("c1", "default");
    assert!(!format!("{c:?}").contains("SWMTKN"));
    Ok(())
}

// ---------------------------------------------------------------- properties

// Small pools so that generated commands collide: same ids, same names,
// references that sometimes exist.
#[test]
fn a_promotion_is_pending_until_raft_admits_the_node() {
    let mut n = node("a", "n2");
    assert!(!n.wants_manager() && !n.promotion_pending());
    // `node promote`: the desired role first.
    n.role = NodeRole::Manager;
    assert!(n.wants_manager() && n.promotion_pending());
    // `add_manager`: a voter now.
    n.manager = Some(ManagerInfo {
        raft_id: 7,
        addr: "198.18.0.2:2377".into(),
    });
    assert!(n.wants_manager() && !n.promotion_pending());
}

#[test]
fn task_specs_stored_before_images_still_load() -> Result<(), serde_json::Error> {
    // As the builds with `--rootfs` wrote them.
    let host: TaskSpec = serde_json::from_str(r#"{"rootfs":"","args":["sleep","1"],"env":[]}"#)?;
    assert_eq!(host.image, HOST_IMAGE);
    assert_eq!(host.legacy_rootfs, "");
    assert_eq!(host.args, ["sleep", "1"]);
    assert_eq!(host.stop_grace_nanos, DEFAULT_STOP_GRACE_NANOS);
    // No rootfs key at all, or the `image` alias with a directory.
    let bare: TaskSpec = serde_json::from_str(r#"{"args":["x"],"env":[]}"#)?;
    assert_eq!(bare.image, HOST_IMAGE);
    let tree: TaskSpec = serde_json::from_str(r#"{"rootfs":"/srv/tree","args":["x"],"env":[]}"#)?;
    assert_eq!(
        (tree.image.as_str(), tree.legacy_rootfs.as_str()),
        (HOST_IMAGE, "/srv/tree")
    );
    let alias: TaskSpec = serde_json::from_str(r#"{"image":"/srv/tree","args":[],"env":[]}"#)?;
    assert_eq!(
        (alias.image.as_str(), alias.legacy_rootfs.as_str()),
        (HOST_IMAGE, "/srv/tree")
    );
    // The current format round-trips, and writes no rootfs for new specs.
    let new = TaskSpec {
        image: "busybox".into(),
        image_digest: format!("sha256:{}", "a".repeat(64)),
        entrypoint: Some(Vec::new()),
        ..TaskSpec::default()
    };
    let json = serde_json::to_string(&new)?;
    assert!(!json.contains("rootfs"), "{json}");
    assert_eq!(serde_json::from_str::<TaskSpec>(&json)?, new);
    let json = serde_json::to_string(&tree)?;
    assert_eq!(serde_json::from_str::<TaskSpec>(&json)?, tree);
    Ok(())
}

fn record(reference: &str, digest: char, size: u64) -> ImageRecord {
    ImageRecord {
        reference: reference.to_owned(),
        digest: format!("sha256:{}", digest.to_string().repeat(64)),
        size,
    }
}

fn register(
    state: &mut ClusterState,
    node: &str,
    images: Vec<ImageRecord>,
    removed: &[&str],
) -> Result<Applied, ApplyError> {
    apply(
        state,
        &Command::RegisterImages {
            node_id: node.to_owned(),
            images,
            removed: removed.iter().map(|r| (*r).to_owned()).collect(),
        },
    )
}

#[test]
fn the_image_catalogue_follows_what_nodes_hold() -> Result<(), ApplyError> {
    const BUSYBOX: &str = "docker.io/library/busybox:latest";
    let mut s = ClusterState::default();
    apply(&mut s, &Command::CreateNode(node("n1", "h1")))?;
    apply(&mut s, &Command::CreateNode(node("n2", "h2")))?;
    assert!(matches!(
        register(&mut s, "ghost", vec![record(BUSYBOX, 'a', 1)], &[]),
        Err(ApplyError::NotFound {
            kind: Kind::Node,
            ..
        })
    ));
    assert!(s.images.is_empty());
    let v = s.version;
    register(&mut s, "n1", vec![record(BUSYBOX, 'a', 10)], &[])?;
    assert_eq!(s.version, v + 1);
    register(&mut s, "n2", vec![record(BUSYBOX, 'a', 10)], &[])?;
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    assert_eq!(s.resolve_image(BUSYBOX).map(|(d, _)| d), Some(a.as_str()));
    assert_eq!(
        s.image_holders(&a).into_iter().collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    // A newer load under the same tag on n2: the reference resolves to it,
    // and n2 no longer counts as holding the old one under that tag.
    register(&mut s, "n2", vec![record(BUSYBOX, 'b', 12)], &[])?;
    assert_eq!(s.resolve_image(BUSYBOX).map(|(d, _)| d), Some(b.as_str()));
    assert_eq!(s.image_holders(&a).into_iter().collect::<Vec<_>>(), ["n1"]);
    // Removed on n2: back to the digest n1 holds.
    register(&mut s, "n2", Vec::new(), &[BUSYBOX])?;
    assert_eq!(s.resolve_image(BUSYBOX).map(|(d, _)| d), Some(a.as_str()));
    assert!(s.image_holders(&b).is_empty());
    // A removed node holds nothing; an empty reference disappears.
    let n1 = s.nodes["n1"].version;
    apply(
        &mut s,
        &Command::RemoveNode {
            id: "n1".into(),
            expected_version: n1,
        },
    )?;
    assert!(s.images.is_empty(), "{:?}", s.images);
    assert_eq!(s.resolve_image(BUSYBOX), None);
    Ok(())
}

#[test]
fn nodes_stored_before_promotion_still_load() -> Result<(), serde_json::Error> {
    // A node object as older managers wrote it: no `manager`, no `tls`.
    let old = r#"{"id":"a","version":3,"hostname":"n2","role":"worker",
        "availability":"active","labels":{},"addr":null,"status":"ready"}"#;
    let n: Node = serde_json::from_str(old)?;
    assert!(!n.wants_manager() && !n.promotion_pending());
    Ok(())
}

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_owned)
}
fn id() -> impl Strategy<Value = String> {
    pick(&["a", "b", "c"])
}
fn name() -> impl Strategy<Value = String> {
    pick(&["x", "y", "z"])
}
fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(name(), name(), 0..2)
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (id(), name(), any::<bool>()).prop_map(|(id, name, autolock)| {
        let mut c = cluster(&id, &name);
        c.settings.autolock = autolock;
        c
    })
}
fn arb_node() -> impl Strategy<Value = Node> {
    (id(), name(), any::<bool>(), labels()).prop_map(|(id, host, manager, labels)| {
        let mut n = node(&id, &host);
        n.role = if manager {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        n.labels = labels;
        n
    })
}
fn arb_network() -> impl Strategy<Value = Network> {
    (id(), name(), prop::option::of(4096u32..4100)).prop_map(|(id, name, vni)| {
        let mut n = network(&id, &name);
        n.vni = vni;
        n
    })
}
fn arb_service() -> impl Strategy<Value = Service> {
    (
        id(),
        name(),
        prop::collection::vec(id(), 0..2),
        prop::collection::vec(id(), 0..2),
        prop::collection::vec(arb_port(), 0..3),
    )
        .prop_map(|(id, name, nets, secrets, ports)| {
            let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let mut s = service(&id, &name, &nets, &secrets);
            s.endpoint.ports = ports;
            s
        })
}
/// Few numbers, so that services often clash.
fn arb_port() -> impl Strategy<Value = PortConfig> {
    (80u16..83, any::<bool>(), any::<bool>())
        .prop_map(|(n, udp, host)| port(n, if udp { Protocol::Udp } else { Protocol::Tcp }, host))
}
fn port(n: u16, protocol: Protocol, host: bool) -> PortConfig {
    PortConfig {
        protocol,
        target_port: 80,
        published_port: Some(n),
        publish_mode: if host {
            PublishMode::Host
        } else {
            PublishMode::Ingress
        },
    }
}
fn arb_task() -> impl Strategy<Value = Task> {
    (id(), id(), prop::option::of(id())).prop_map(|(id, sv, nd)| task(&id, &sv, nd.as_deref()))
}
fn arb_secret() -> impl Strategy<Value = Secret> {
    // Name and data follow the id, which is immutable anyway, so that label
    // updates succeed; other kinds exercise name conflicts.
    (id(), labels()).prop_map(|(id, labels)| {
        let mut s = secret(&id, &format!("secret-{id}"), id.as_bytes());
        s.labels = labels;
        s
    })
}

fn arb_config() -> impl Strategy<Value = Config> {
    (id(), labels()).prop_map(|(id, labels)| {
        let mut c = config(&id, &format!("config-{id}"), id.as_bytes());
        c.labels = labels;
        c
    })
}

fn arb_command() -> impl Strategy<Value = Command> {
    let v = || 0u64..4;
    prop_oneof![
        arb_cluster().prop_map(Command::CreateCluster),
        (v(), arb_cluster()).prop_map(|(v, c)| Command::UpdateCluster {
            id: c.id.clone(),
            expected_version: v,
            cluster: c
        }),
        arb_node().prop_map(Command::CreateNode),
        (v(), arb_node()).prop_map(|(v, n)| Command::UpdateNode {
            id: n.id.clone(),
            expected_version: v,
            node: n
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveNode {
            id,
            expected_version: v
        }),
        arb_network().prop_map(Command::CreateNetwork),
        (v(), arb_network()).prop_map(|(v, n)| Command::UpdateNetwork {
            id: n.id.clone(),
            expected_version: v,
            network: n
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveNetwork {
            id,
            expected_version: v
        }),
        arb_service().prop_map(Command::CreateService),
        (v(), arb_service()).prop_map(|(v, s)| Command::UpdateService {
            id: s.id.clone(),
            expected_version: v,
            service: s
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveService {
            id,
            expected_version: v
        }),
        arb_task().prop_map(Command::CreateTask),
        (v(), arb_task()).prop_map(|(v, t)| Command::UpdateTask {
            id: t.id.clone(),
            expected_version: v,
            task: t
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveTask {
            id,
            expected_version: v
        }),
        arb_secret().prop_map(Command::CreateSecret),
        (v(), arb_secret()).prop_map(|(v, s)| Command::UpdateSecret {
            id: s.id.clone(),
            expected_version: v,
            secret: s
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveSecret {
            id,
            expected_version: v
        }),
        arb_config().prop_map(Command::CreateConfig),
        (v(), arb_config()).prop_map(|(v, c)| Command::UpdateConfig {
            id: c.id.clone(),
            expected_version: v,
            config: c
        }),
        (id(), v()).prop_map(|(id, v)| Command::RemoveConfig {
            id,
            expected_version: v
        }),
    ]
}

/// A command, and whether to point its expected version at the object's
/// current one when it runs, so that compare-and-set succeeds often
/// enough to build up interesting states.
fn arb_ops() -> impl Strategy<Value = Vec<(Command, bool)>> {
    prop::collection::vec((arb_command(), any::<bool>()), 0..60)
}

fn target(command: &mut Command) -> Option<(Kind, String, &mut u64)> {
    use Command as C;
    let (kind, id, v) = match command {
        C::UpdateCluster {
            id,
            expected_version,
            ..
        } => (Kind::Cluster, id, expected_version),
        C::UpdateNode {
            id,
            expected_version,
            ..
        }
        | C::RemoveNode {
            id,
            expected_version,
        } => (Kind::Node, id, expected_version),
        C::UpdateNetwork {
            id,
            expected_version,
            ..
        }
        | C::RemoveNetwork {
            id,
            expected_version,
        } => (Kind::Network, id, expected_version),
        C::UpdateService {
            id,
            expected_version,
            ..
        }
        | C::RemoveService {
            id,
            expected_version,
        } => (Kind::Service, id, expected_version),
        C::UpdateTask {
            id,
            expected_version,
            ..
        }
        | C::RemoveTask {
            id,
            expected_version,
        } => (Kind::Task, id, expected_version),
        C::UpdateSecret {
            id,
            expected_version,
            ..
        }
        | C::RemoveSecret {
            id,
            expected_version,
        } => (Kind::Secret, id, expected_version),
        C::UpdateConfig {
            id,
            expected_version,
            ..
        }
        | C::RemoveConfig {
            id,
            expected_version,
        } => (Kind::Config, id, expected_version),
        _ => return None,
    };
    Some((kind, id.clone(), v))
}

fn version_of(state: &ClusterState, kind: Kind, id: &str) -> Option<u64> {
    match kind {
        Kind::Cluster => state.get::<Cluster>(id).map(StoredObject::version),
        Kind::Node => state.get::<Node>(id).map(StoredObject::version),
        Kind::Network => state.get::<Network>(id).map(StoredObject::version),
        Kind::Service => state.get::<Service>(id).map(StoredObject::version),
        Kind::Task => state.get::<Task>(id).map(StoredObject::version),
        Kind::Secret => state.get::<Secret>(id).map(StoredObject::version),
        Kind::Config => state.get::<Config>(id).map(StoredObject::version),
    }
}

fn all_versions(state: &ClusterState) -> Vec<u64> {
    let mut v = Vec::new();
    v.extend(state.clusters.values().map(|o| o.version));
    v.extend(state.nodes.values().map(|o| o.version));
    v.extend(state.networks.values().map(|o| o.version));
    v.extend(state.services.values().map(|o| o.version));
    v.extend(state.tasks.values().map(|o| o.version));
    v.extend(state.secrets.values().map(|o| o.version));
    v.extend(state.configs.values().map(|o| o.version));
    v
}

fn resolve(command: &mut Command, fresh: bool, state: &ClusterState) {
    if !fresh {
        return;
    }
    if let Some((kind, id, expected)) = target(command)
        && let Some(current) = version_of(state, kind, &id)
    {
        *expected = current;
    }
}

/// Resolves each op against the state as it runs; returns the commands as
/// applied and their results.
fn run(ops: Vec<(Command, bool)>, state: &mut ClusterState) -> Vec<(Command, ApplyResult)> {
    ops.into_iter()
        .map(|(mut command, fresh)| {
            resolve(&mut command, fresh, state);
            let result = apply(state, &command);
            (command, result)
        })
        .collect()
}

type ApplyResult = Result<Applied, ApplyError>;

fn by_name<T: StoredObject>(state: &ClusterState, name: &str) -> Option<String> {
    state.find_by_name::<T>(name).map(|o| o.id().to_owned())
}

fn scan<T: StoredObject>(state: &ClusterState, name: &str) -> Option<String> {
    T::table(state)
        .values()
        .find(|o| o.name() == Some(name))
        .map(|o| o.id().to_owned())
}

proptest! {
    #[test]
    fn apply_is_deterministic(ops in arb_ops()) {
        let mut first = ClusterState::default();
        let log = run(ops, &mut first);
        let mut second = ClusterState::default();
        for (command, result) in &log {
            prop_assert_eq!(&apply(&mut second, command), result);
        }
        prop_assert_eq!(&first, &second);
        // What a snapshot stores reads back as the same state.
        let json = serde_json::to_vec(&first).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: ClusterState =
            serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(first, back);
    }

    #[test]
    fn versions_strictly_increase(ops in arb_ops()) {
        let mut state = ClusterState::default();
        for (mut command, fresh) in ops {
            resolve(&mut command, fresh, &state);
            let before = state.version;
            let target_before = target(&mut command.clone())
                .and_then(|(kind, id, _)| version_of(&state, kind, &id));
            if let Ok(applied) = apply(&mut state, &command) {
                prop_assert!(applied.version > before);
                prop_assert_eq!(applied.version, state.version);
                let now = version_of(&state, applied.kind, &applied.id);
                match applied.change {
                    Change::Removed => prop_assert_eq!(now, None),
                    Change::Created | Change::Updated => {
                        prop_assert_eq!(now, Some(applied.version));
                        if let Some(old) = target_before {
                            prop_assert!(applied.version > old);
                        }
                    }
                }
            }
            prop_assert!(all_versions(&state).iter().all(|v| *v <= state.version));
        }
    }

    /// Whatever the order of creates and updates, no two stored services
    /// ever publish clashing ports.
    #[test]
    fn published_ports_never_clash(ops in arb_ops()) {
        let mut state = ClusterState::default();
        run(ops, &mut state);
        for a in state.services.values() {
            for b in state.services.values().filter(|b| b.id != a.id) {
                for p in &a.endpoint.ports {
                    prop_assert!(!b.endpoint.ports.iter().any(|q| p.clashes_with(q)), "{:?}", p);
                }
            }
        }
    }

    /// The name index answers as a scan of the tables would, whether every
    /// apply kept it up or it was rebuilt after the state was read back.
    #[test]
    fn names_resolve_as_a_scan_would(ops in arb_ops(), reload_at in 0usize..60) {
        let mut state = ClusterState::default();
        for (i, (mut command, fresh)) in ops.into_iter().enumerate() {
            if i == reload_at {
                let json = serde_json::to_vec(&state)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                state = serde_json::from_slice(&json)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            resolve(&mut command, fresh, &state);
            let _ = apply(&mut state, &command);
            for name in ["x", "y", "z", "secret-a", "secret-b", "config-c"] {
                prop_assert_eq!(by_name::<Cluster>(&state, name), scan::<Cluster>(&state, name));
                prop_assert_eq!(by_name::<Network>(&state, name), scan::<Network>(&state, name));
                prop_assert_eq!(by_name::<Service>(&state, name), scan::<Service>(&state, name));
                prop_assert_eq!(by_name::<Secret>(&state, name), scan::<Secret>(&state, name));
                prop_assert_eq!(by_name::<Config>(&state, name), scan::<Config>(&state, name));
            }
        }
    }

    #[test]
    fn rejected_commands_change_nothing(ops in arb_ops()) {
        let mut state = ClusterState::default();
        for (mut command, fresh) in ops {
            resolve(&mut command, fresh, &state);
            let before = state.clone();
            if apply(&mut state, &command).is_err() {
                prop_assert_eq!(&state, &before);
            }
        }
    }
}

#[test]
fn services_and_tasks_stored_before_updates_and_health_still_load() {
    // A service and a task as the build before issue 13 wrote them.
    let service = r#"{"id":"s","version":2,"spec":{"name":"web","labels":{},"mode":{"replicated":{"replicas":1}},"task":{"image":"busybox","image_digest":"","entrypoint":null,"args":[],"env":[],"workdir":"","user":"","hostname":"","stop_signal":"","stop_grace_nanos":10000000000,"read_only":false,"init":false,"cap_add":[],"cap_drop":[],"sysctls":{},"resources":{"limit_nano_cpus":0,"limit_memory_bytes":0,"limit_pids":0,"reserve_nano_cpus":0,"reserve_memory_bytes":0},"mounts":[]},"endpoint":{"mode":"vip","ports":[]},"networks":[],"constraints":[],"restart":{"condition":"any","delay_secs":5,"max_attempts":null}},"previous_spec":null,"endpoint":{"vips":[],"ports":[]}}"#;
    let s: Result<Service, _> = serde_json::from_str(service);
    let s = s.map_err(|e| e.to_string());
    let Ok(s) = s else {
        panic!("{s:?}");
    };
    assert_eq!(s.spec.update, crate::model::UpdateConfig::default());
    assert_eq!(s.spec.rollback.parallelism, 1);
    assert_eq!(s.spec.task.healthcheck, None);
    assert_eq!(s.spec.task.force_update, 0);
    assert_eq!(s.update_status, None);
    assert_eq!(serde_json::to_string(&s).ok().as_deref(), Some(service));
    let status = r#"{"since_unix":5,"message":"started","err":"","exit_code":null}"#;
    let st: Result<crate::model::TaskStatus, _> = serde_json::from_str(status);
    assert_eq!(st.map(|s| s.health).ok(), Some(None));
}

#[test]
fn encryption_reads_the_old_bool_and_the_new_modes() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct N {
        #[serde(rename = "encrypted")]
        encryption: Encryption,
    }
    let read = |v: &str| {
        serde_json::from_str::<N>(&format!("{{\"encrypted\": {v}}}")).map(|n| n.encryption)
    };
    assert_eq!(read("false").ok(), Some(Encryption::None));
    assert_eq!(read("true").ok(), Some(Encryption::Ipsec));
    assert_eq!(read("\"wireguard\"").ok(), Some(Encryption::Wireguard));
    assert!(read("\"ipsek\"").is_err());
    for e in [Encryption::None, Encryption::Ipsec, Encryption::Wireguard] {
        let text = serde_json::to_string(&N { encryption: e }).expect("encodes");
        assert_eq!(
            serde_json::from_str::<N>(&text).map(|n| n.encryption).ok(),
            Some(e)
        );
    }
}
