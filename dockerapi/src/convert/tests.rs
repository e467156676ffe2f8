use super::*;
use proptest::prelude::*;

/// A create request as the manager echoes it back in a summary.
fn echo(r: &pb::CreateServiceRequest) -> pb::ServiceSummary {
    pb::ServiceSummary {
        id: "svc1".into(),
        name: r.name.clone(),
        mode: r.mode,
        desired: r.replicas,
        args: r.args.clone(),
        networks: r.networks.clone(),
        env: r.env.clone(),
        constraints: r.constraints.clone(),
        restart: r.restart,
        labels: r.labels.clone(),
        version: 7,
        endpoint_mode: r.endpoint_mode,
        ports: r.ports.clone(),
        container: r.container.clone(),
        resources: r.resources,
        update_config: r.update_config,
        rollback_config: r.rollback_config,
        placement_prefs: r.placement_prefs.clone(),
        network_aliases: r.network_aliases.clone(),
        max_replicas_per_node: r.max_replicas_per_node,
        ..Default::default()
    }
}

/// What `docker service create --name web --replicas 3 -p 8080:80 IMAGE`
/// sends (docker 28), defaults and all.
fn cli_create_body() -> Value {
    json!({
        "Name": "web",
        "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "shoal.local/web:v1",
                "Labels": null,
                "Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": false},
                "Init": false,
                "StopGracePeriod": 10000000000i64,
                "DNSConfig": {},
                "Isolation": "default",
            },
            "Resources": {"Limits": {}, "Reservations": {}},
            "RestartPolicy": {"Condition": "any", "Delay": 5000000000i64, "MaxAttempts": 0},
            "Placement": {},
            "Networks": [],
            "ForceUpdate": 0,
            "Runtime": "",
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
        "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]},
    })
}

#[test]
fn the_cli_s_defaults_pass() -> Result<(), ApiError> {
    let r = service_request(&cli_create_body())?;
    assert_eq!(r.name, "web");
    assert_eq!(r.replicas, 3);
    assert_eq!(r.mode, i32::from(pb::ServiceMode::Replicated));
    let c = r.container.clone().unwrap_or_default();
    assert_eq!(c.image, "shoal.local/web:v1");
    assert_eq!(c.stop_grace_period_ns, Some(10_000_000_000));
    assert_eq!(r.restart.as_ref().map(|p| p.delay_secs), Some(5));
    assert_eq!(r.ports.len(), 1);
    assert_eq!(r.ports[0].published_port, 8080);
    assert_eq!(r.ports[0].target_port, 80);
    let u = r.update_config.unwrap_or_default();
    assert_eq!(
        (u.parallelism, u.monitor_ns),
        (Some(1), Some(5_000_000_000))
    );
    Ok(())
}

#[test]
fn unsupported_fields_are_named() {
    let cases = [
        (
            "/TaskTemplate/ContainerSpec/TTY",
            json!(true),
            "TaskTemplate.ContainerSpec.TTY",
        ),
        (
            "/TaskTemplate/ContainerSpec/Isolation",
            json!("hyperv"),
            "TaskTemplate.ContainerSpec.Isolation",
        ),
        (
            "/TaskTemplate/ContainerSpec/DNSConfig",
            json!({"Nameservers": ["1.1.1.1"]}),
            "TaskTemplate.ContainerSpec.DNSConfig",
        ),
        (
            "/TaskTemplate/LogDriver",
            json!({"Name": "syslog"}),
            "TaskTemplate.LogDriver",
        ),
        (
            "/Mode",
            json!({"ReplicatedJob": {"MaxConcurrent": 1}}),
            "Mode.ReplicatedJob",
        ),
        (
            "/TaskTemplate/Resources/Reservations/GenericResources",
            json!([{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}]),
            "TaskTemplate.Resources.Reservations.GenericResources",
        ),
    ];
    for (pointer, value, field) in cases {
        let mut body = cli_create_body();
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = value;
        } else {
            let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
            if let Some(Value::Object(m)) = body.pointer_mut(parent) {
                m.insert(key.to_owned(), value);
            }
        }
        let e = service_request(&body).err();
        assert_eq!(
            e.as_ref().map(|e| e.status().as_u16()),
            Some(400),
            "{field}"
        );
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with(&format!("{field}: not supported")), "{msg}");
    }
}

#[test]
fn bad_values_name_their_field() {
    let mut body = cli_create_body();
    body["EndpointSpec"]["Ports"][0]["Protocol"] = json!("sctp");
    let e = service_request(&body)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with("EndpointSpec.Ports[0].Protocol: unknown value \"sctp\""),
        "{e}"
    );
    let mut body = cli_create_body();
    body["TaskTemplate"]["RestartPolicy"]["Delay"] = json!(1_500_000_000);
    let e = service_request(&body)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("TaskTemplate.RestartPolicy.Delay:"), "{e}");
    let e = service_request(&json!([1]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("body: expected a JSON object"), "{e}");
}

#[test]
fn unknown_fields_are_ignored() -> Result<(), ApiError> {
    let mut body = cli_create_body();
    body["SomethingNew"] = json!({"x": 1});
    body["TaskTemplate"]["ContainerSpec"]["FutureField"] = json!(true);
    assert_eq!(
        service_request(&body)?,
        service_request(&cli_create_body())?
    );
    Ok(())
}

#[test]
fn stack_networks_and_aliases_map() -> Result<(), ApiError> {
    let mut body = cli_create_body();
    body["TaskTemplate"]["Networks"] = json!([{"Target": "app_default", "Aliases": ["web"]}]);
    body["Labels"] = json!({STACK_NAMESPACE: "app", "com.docker.stack.image": "nginx"});
    let r = service_request(&body)?;
    assert_eq!(r.networks, ["app_default"]);
    assert_eq!(
        r.network_aliases
            .get("app_default")
            .map(|a| a.aliases.clone()),
        Some(vec!["web".to_owned()])
    );
    let back = service_spec(&echo(&r));
    assert_eq!(
        back["TaskTemplate"]["Networks"],
        body["TaskTemplate"]["Networks"]
    );
    assert_eq!(back["Labels"], body["Labels"]);
    Ok(())
}

#[test]
fn node_updates_carry_only_changes() -> Result<(), ApiError> {
    let current = pb::NodeSummary {
        id: "n1".into(),
        hostname: "n1".into(),
        role: pb::NodeRole::Worker.into(),
        availability: pb::NodeAvailability::Active.into(),
        labels: [
            ("zone".to_owned(), "a".to_owned()),
            ("old".to_owned(), "x".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let r = node_update(
        &current,
        &json!({"Role": "worker", "Availability": "drain", "Labels": {"zone": "b"}}),
    )?;
    assert_eq!(r.role, 0);
    assert_eq!(r.availability, i32::from(pb::NodeAvailability::Drain));
    assert_eq!(r.label_add.get("zone").map(String::as_str), Some("b"));
    assert_eq!(r.label_rm, ["old"]);
    let e = node_update(&current, &json!({"Role": "boss"}))
        .err()
        .map(|e| e.to_string());
    assert!(e.unwrap_or_default().starts_with("Role: unknown value"));
    Ok(())
}

#[test]
fn networks_are_overlays_only() -> Result<(), ApiError> {
    let r = network_request(
        &json!({"Name": "appnet", "Driver": "overlay", "Attachable": true,
        "Options": {"encrypted": ""}, "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}]}}),
    )?;
    assert!(r.attachable && r.encryption() == pb::Encryption::Ipsec);
    assert_eq!(r.subnet, "10.9.0.0/24");
    // The option's value counts: a mode is read, a typo refused by name.
    let mode = |v: &str| {
        network_request(&json!({"Name": "n", "Options": {"encrypted": v}}))
            .map(|r| r.encryption())
            .map_err(|e| e.to_string())
    };
    assert_eq!(mode("wireguard"), Ok(pb::Encryption::Wireguard));
    assert_eq!(mode("false"), Ok(pb::Encryption::None));
    let e = mode("ipsek").err().unwrap_or_default();
    assert!(
        e.contains("Options[\"encrypted\"]") && e.contains("encrypted=wireguard"),
        "{e}"
    );
    let e = network_request(&json!({"Name": "x", "Driver": "bridge"}))
        .err()
        .map(|e| e.to_string());
    assert!(e.unwrap_or_default().starts_with("Driver: \"bridge\""));
    let back = network(&pb::NetworkSummary {
        name: "appnet".into(),
        vni: 4097,
        encryption: pb::Encryption::Ipsec.into(),
        subnet: "10.9.0.0/24".into(),
        ..Default::default()
    });
    assert_eq!(back["Options"]["encrypted"], "");
    let wg = network(&pb::NetworkSummary {
        encryption: pb::Encryption::Wireguard.into(),
        ..Default::default()
    });
    assert_eq!(wg["Options"]["encrypted"], "wireguard");
    assert_eq!(back["Scope"], "swarm");
    assert_eq!(back["Internal"], false);
    // `Internal` (no egress) is stored and shown back.
    let r = network_request(&json!({"Name": "priv", "Internal": true}))?;
    assert!(r.internal);
    let back = network(&pb::NetworkSummary {
        internal: true,
        ..Default::default()
    });
    assert_eq!(back["Internal"], true);
    Ok(())
}

#[test]
fn secrets_and_configs_decode_their_data() -> Result<(), ApiError> {
    let s = secret_request(&json!({"Name": "pw", "Data": "aHVudGVyMg==", "Labels": {"a": "b"}}))?;
    assert_eq!(s.data, b"hunter2");
    let e = secret_request(&json!({"Name": "pw", "Data": "***"}))
        .err()
        .map(|e| e.to_string());
    assert!(e.unwrap_or_default().starts_with("Data: not base64"));
    let c =
        config_request(&json!({"Name": "c", "Data": "eA==", "Templating": {"Name": "golang"}}))?;
    assert_eq!(c.template_driver, "golang");
    let back = config(&pb::ConfigSummary {
        name: "c".into(),
        data: b"x".to_vec(),
        template_driver: "golang".into(),
        ..Default::default()
    });
    assert_eq!(config_request(&back["Spec"])?, c);
    Ok(())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}"
}

fn words() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[a-zA-Z0-9=/._-]{1,10}", 0..3)
}

fn string_map() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map("[a-z.]{1,8}", "[a-z0-9]{0,6}", 0..3)
}

fn update() -> impl Strategy<Value = Option<pb::UpdateConfig>> {
    proptest::option::of(
        (
            0u64..5,
            0u64..9_000_000_000,
            1i32..=2,
            1u64..9_000_000_000,
            0u32..=100,
            1i32..=2,
        )
            .prop_map(
                |(par, delay, action, monitor, ratio, order)| pb::UpdateConfig {
                    parallelism: Some(par),
                    delay_ns: Some(delay),
                    failure_action: Some(action),
                    monitor_ns: Some(monitor),
                    max_failure_ratio: Some(f64::from(ratio) / 100.0),
                    order: Some(order),
                },
            ),
    )
}

fn file_refs() -> impl Strategy<Value = Vec<pb::FileReference>> {
    proptest::collection::vec(
        (
            name(),
            "(/[a-z]{1,6}){0,2}",
            0u32..2000,
            0u32..2000,
            0u32..0o777,
        )
            .prop_map(|(source, target, uid, gid, mode)| pb::FileReference {
                source,
                target,
                uid,
                gid,
                mode,
                ..Default::default()
            }),
        0..3,
    )
}

fn container() -> impl Strategy<Value = pb::ContainerSpec> {
    let a = (
        "[a-z]{1,8}(:[a-z0-9]{1,5})?",
        string_map(),
        proptest::option::of(proptest::collection::vec("[a-z/]{1,8}", 1..3)),
        "[a-z]{0,6}",
        "(/[a-z]{1,5}){0,2}",
        "[a-z0-9]{0,5}",
        "(SIG[A-Z]{3,4})?",
        proptest::option::of(0u64..60_000_000_000),
        any::<bool>(),
        any::<bool>(),
    );
    let b = (
        words(),
        words(),
        string_map(),
        proptest::collection::vec(
            (
                1i32..=3,
                "(/[a-z]{1,5})?",
                "/[a-z]{1,6}",
                any::<bool>(),
                any::<bool>(),
                0u64..1_000_000,
                0u32..0o1777,
            )
                .prop_map(|(ty, source, target, read_only, nocopy, size, mode)| {
                    pb::Mount {
                        r#type: ty,
                        source,
                        target,
                        read_only,
                        volume_nocopy: ty == 1 && nocopy,
                        tmpfs_size_bytes: if ty == 3 { size } else { 0 },
                        tmpfs_mode: if ty == 3 { mode } else { 0 },
                    }
                }),
            0..3,
        ),
        file_refs(),
        file_refs(),
        proptest::option::of(
            (
                words(),
                proptest::option::of(1u64..9_000_000_000),
                proptest::option::of(1u64..9_000_000_000),
                proptest::option::of(1u64..10),
            )
                .prop_map(|(test, interval_ns, timeout_ns, retries)| {
                    pb::HealthConfig {
                        test,
                        interval_ns,
                        timeout_ns,
                        retries,
                        ..Default::default()
                    }
                }),
        ),
        proptest::collection::vec(
            ("[a-z]{1,6}", 0i64..100_000, 0i64..100_000)
                .prop_map(|(name, soft, hard)| pb::Ulimit { name, soft, hard }),
            0..2,
        ),
        proptest::collection::vec("[0-9.]{1,8} [a-z]{1,6}", 0..2),
        0u64..5,
    );
    (a, b).prop_map(|(a, b)| pb::ContainerSpec {
        image: a.0,
        labels: a.1,
        entrypoint: a.2.map(|args| pb::Entrypoint { args }),
        hostname: a.3,
        workdir: a.4,
        user: a.5,
        stop_signal: a.6,
        stop_grace_period_ns: a.7,
        read_only: a.8,
        init: a.9,
        cap_add: b.0,
        cap_drop: b.1,
        sysctls: b.2,
        mounts: b.3,
        secrets: b.4,
        configs: b.5,
        // An empty one is no healthcheck (docker's "inherit").
        healthcheck: b.6.filter(|h| *h != pb::HealthConfig::default()),
        ulimits: b.7,
        hosts: b.8,
        force_update: b.9,
        ..Default::default()
    })
}

fn request() -> impl Strategy<Value = pb::CreateServiceRequest> {
    let a = (
        name(),
        any::<bool>(),
        0u64..10,
        proptest::collection::btree_set(name(), 0..3),
        words(),
        words(),
        (1i32..=3, 0u64..100, 0u64..5, 0u64..9_000_000_000),
        words(),
        string_map(),
        1i32..=2,
    );
    let b = (
        proptest::collection::vec(
            (1i32..=2, 1u32..65_535, 0u32..65_535, 1i32..=2).prop_map(
                |(protocol, target_port, published_port, publish_mode)| pb::PortConfig {
                    protocol,
                    target_port,
                    published_port,
                    publish_mode,
                },
            ),
            0..3,
        ),
        container(),
        (
            0u64..4_000_000_000,
            0u64..1 << 30,
            0u64..100,
            0u64..4_000_000_000,
            0u64..1 << 30,
        ),
        update(),
        update(),
        proptest::collection::vec("node\\.labels\\.[a-z]{1,5}", 0..2),
        proptest::collection::vec(name(), 0..2),
        0u64..4,
    );
    (a, b).prop_map(|(a, b)| {
        let networks: Vec<String> = a.3.into_iter().collect();
        let network_aliases = networks
            .iter()
            .zip(b.6.iter())
            .map(|(n, alias)| {
                (
                    n.clone(),
                    pb::Aliases {
                        aliases: vec![alias.clone()],
                    },
                )
            })
            .collect();
        let global = a.1;
        pb::CreateServiceRequest {
            name: a.0,
            mode: if global {
                pb::ServiceMode::Global.into()
            } else {
                pb::ServiceMode::Replicated.into()
            },
            replicas: if global { 0 } else { a.2 },
            networks,
            env: a.4,
            constraints: a.5,
            restart: Some(pb::RestartPolicy {
                condition: a.6.0,
                delay_secs: a.6.1,
                max_attempts: a.6.2,
                window_ns: a.6.3,
            }),
            args: a.7,
            labels: a.8,
            endpoint_mode: a.9,
            ports: b.0,
            container: Some(b.1),
            resources: Some(pb::Resources {
                limit_nano_cpus: b.2.0,
                limit_memory_bytes: b.2.1,
                limit_pids: b.2.2,
                reserve_nano_cpus: b.2.3,
                reserve_memory_bytes: b.2.4,
            }),
            update_config: b.3,
            rollback_config: b.4.map(|mut u| {
                // A rollback cannot roll back.
                u.failure_action = Some(1);
                u
            }),
            placement_prefs: b.5.into_iter().map(|d| format!("spread={d}")).collect(),
            network_aliases,
            max_replicas_per_node: b.7,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // docker JSON → Shoal request → (the manager's echo) → docker JSON →
    // Shoal request: what Shoal supports survives both wire formats.
    #[test]
    fn service_specs_round_trip(r in request()) {
        let spec = service_spec(&echo(&r));
        let back = service_request(&spec);
        prop_assert!(back.is_ok(), "{:?}", back.err().map(|e| e.to_string()));
        let back = back.ok().unwrap_or_default();
        prop_assert_eq!(&back, &r);
        // And through the JSON text, as it crosses the socket.
        let text = serde_json::to_string(&spec).unwrap_or_default();
        let again: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        prop_assert_eq!(service_spec(&echo(&back)), again);
    }

    // Any JSON at all gets a request or a 400, never a panic.
    #[test]
    fn any_body_is_read_or_refused(raw in proptest::arbitrary::any::<String>(), n in any::<i64>()) {
        for body in [json!(raw), json!({"Name": raw, "Mode": {"Replicated": {"Replicas": n}}}),
                     json!({"TaskTemplate": {"ContainerSpec": {"Image": raw, "StopGracePeriod": n}}})] {
            if let Err(e) = service_request(&body) {
                prop_assert_eq!(e.status().as_u16(), 400);
            }
        }
    }
}
