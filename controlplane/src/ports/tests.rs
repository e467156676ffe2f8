use proptest::prelude::*;

use super::*;
use crate::model::{
    Endpoint, EndpointSpec, Labels, RestartPolicy, Service, ServiceMode, ServiceSpec, TaskSpec,
};

fn port(published: Option<u16>, target: u16, protocol: Protocol, mode: PublishMode) -> PortConfig {
    PortConfig {
        protocol,
        target_port: target,
        published_port: published,
        publish_mode: mode,
    }
}

fn ingress(published: Option<u16>, target: u16) -> PortConfig {
    port(published, target, Protocol::Tcp, PublishMode::Ingress)
}

fn service(id: &str, ports: Vec<PortConfig>) -> Service {
    Service {
        id: id.into(),
        version: 1,
        spec: ServiceSpec {
            name: format!("{id}-name"),
            labels: Labels::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec::default(),
            endpoint: EndpointSpec::default(),
            networks: Vec::new(),
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
        endpoint: Endpoint {
            vips: Vec::new(),
            ports,
        },
    }
}

fn state(services: Vec<Service>) -> ClusterState {
    let mut s = ClusterState::default();
    for svc in services {
        s.services.insert(svc.id.clone(), svc);
    }
    s
}

fn added(ports: &[PortConfig]) -> Vec<(String, PortConfig)> {
    ports
        .iter()
        .map(|p| ("--publish".to_owned(), p.clone()))
        .collect()
}

fn alloc(s: &ClusterState, ports: &[PortConfig]) -> Result<Vec<PortConfig>, PortError> {
    allocate(s, "new", EndpointMode::Vip, &[], &added(ports), 4789)
}

#[test]
fn request_fields_are_checked() {
    use shoal_api::{cluster::v1 as pb, words::Word};
    // Words as the CLI reads them; one it does not know is value 99.
    let api = |proto: &str, target: u32, published: u32, mode: &str| ApiPort {
        protocol: pb::Protocol::from_word(proto)
            .map_or(if proto.is_empty() { 0 } else { 99 }, Into::into),
        target_port: target,
        published_port: published,
        publish_mode: pb::PublishMode::from_word(mode)
            .map_or(if mode.is_empty() { 0 } else { 99 }, Into::into),
    };
    assert_eq!(
        parse("--publish", &api("", 80, 0, ""), false),
        Ok(ingress(None, 80))
    );
    assert_eq!(
        parse("--publish", &api("udp", 53, 53, "host"), false),
        Ok(port(Some(53), 53, Protocol::Udp, PublishMode::Host))
    );
    let e = parse("--publish", &api("sctp", 80, 8080, ""), false).err();
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "--publish published=8080,target=80,protocol=unknown(99): protocol: unknown value 99; use \
         tcp or udp"
    );
    for (bad, problem) in [
        (api("", 0, 0, ""), PortProblem::Target(0)),
        (api("", 70000, 0, ""), PortProblem::Target(70000)),
        (api("", 80, 65536, ""), PortProblem::Published(65536)),
        (api("", 80, 0, "bridge"), PortProblem::Mode(99)),
    ] {
        assert_eq!(
            parse("--publish", &bad, false).map_err(|e| e.problem),
            Err(problem)
        );
    }
    assert_eq!(
        parse("--publish-rm", &api("", 0, 8080, ""), true),
        Ok(ingress(Some(8080), 0))
    );
    let endpoint_mode = |v| crate::wire::decode_or(|| "endpoint_mode".into(), v, EndpointMode::Vip);
    assert_eq!(endpoint_mode(0), Ok(EndpointMode::Vip));
    assert_eq!(
        endpoint_mode(pb::EndpointMode::Dnsrr.into()),
        Ok(EndpointMode::Dnsrr)
    );
    assert!(endpoint_mode(99).is_err());
}

#[test]
fn taken_reserved_and_twice_are_refused_with_the_fix() {
    let s = state(vec![service("web", vec![ingress(Some(8080), 80)])]);
    let e = alloc(&s, &[ingress(Some(8080), 80)]).err();
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "--publish published=8080,target=80: port 8080/tcp is already published by service \
         web-name; choose another published port, or leave published out to get a free one"
    );
    // Host mode cannot take a number the mesh holds on every node either.
    let host = port(Some(8080), 80, Protocol::Tcp, PublishMode::Host);
    assert!(matches!(
        alloc(&s, std::slice::from_ref(&host)).map_err(|e| e.problem),
        Err(PortProblem::Taken { port: 8080, .. })
    ));
    // Another protocol is another port.
    let udp = port(Some(8080), 80, Protocol::Udp, PublishMode::Ingress);
    assert_eq!(alloc(&s, std::slice::from_ref(&udp)), Ok(vec![udp]));
    for n in [2377, 7946, 4789] {
        assert!(matches!(
            alloc(&s, &[ingress(Some(n), 80)]).map_err(|e| e.problem),
            Err(PortProblem::Reserved { port, .. }) if port == n
        ));
    }
    // The data-path port is the cluster's setting.
    assert!(
        allocate(
            &s,
            "new",
            EndpointMode::Vip,
            &[],
            &added(&[ingress(Some(4789), 80)]),
            4790
        )
        .is_ok()
    );
    assert!(matches!(
        alloc(&s, &[ingress(Some(9000), 80), ingress(Some(9000), 81)]).map_err(|e| e.problem),
        Err(PortProblem::Twice { port: 9000, .. })
    ));
    assert!(matches!(
        alloc(&s, &[port(None, 80, Protocol::Tcp, PublishMode::Host)]).map_err(|e| e.problem),
        Err(PortProblem::HostNeedsPublished { target: 80 })
    ));
}

#[test]
fn dnsrr_refuses_ingress_ports() {
    let s = state(Vec::new());
    let e = allocate(
        &s,
        "new",
        EndpointMode::Dnsrr,
        &[],
        &added(&[ingress(Some(80), 80)]),
        4789,
    );
    assert_eq!(
        e.err().map(|e| e.to_string()).unwrap_or_default(),
        "--endpoint-mode dnsrr: a port published in ingress mode needs a VIP; use mode=host or \
         --endpoint-mode vip"
    );
    let host = port(Some(80), 80, Protocol::Tcp, PublishMode::Host);
    let ok = allocate(
        &s,
        "new",
        EndpointMode::Dnsrr,
        &[],
        &added(std::slice::from_ref(&host)),
        4789,
    );
    assert_eq!(ok, Ok(vec![host]));
}

#[test]
fn free_ports_are_the_lowest_of_the_dynamic_range() {
    let s = state(vec![service(
        "web",
        vec![
            ingress(Some(30000), 80),
            port(Some(30002), 80, Protocol::Tcp, PublishMode::Host),
        ],
    )]);
    // Explicit ports are placed first: 30001 asked for, so the free one
    // after 30000 and 30002 (any mode) is 30003.
    let got = alloc(&s, &[ingress(None, 80), ingress(Some(30001), 81)]);
    assert_eq!(
        got,
        Ok(vec![ingress(Some(30003), 80), ingress(Some(30001), 81)])
    );
    // Ports the service keeps are its own.
    let kept = [ingress(Some(30003), 80)];
    let got = allocate(
        &s,
        "new",
        EndpointMode::Vip,
        &kept,
        &added(&[ingress(None, 81)]),
        4789,
    );
    assert_eq!(got, Ok(vec![ingress(Some(30001), 81)]));
}

#[test]
fn removal_matches_by_published_then_target() {
    let p = ingress(Some(8080), 80);
    assert!(matches_removal(&p, &ingress(Some(8080), 0)));
    assert!(!matches_removal(
        &p,
        &port(Some(8080), 0, Protocol::Udp, PublishMode::Ingress)
    ));
    assert!(matches_removal(&p, &ingress(None, 80)));
    assert!(!matches_removal(&p, &ingress(None, 81)));
}

proptest! {
    /// Whatever the services already publish and whatever is asked: the
    /// result never clashes with another service, never repeats a number,
    /// keeps explicit ports as given, and picks dynamic ones in range.
    #[test]
    fn allocation_never_clashes(
        existing in proptest::collection::vec(proptest::collection::vec((30000u16..30006, any::<bool>(), any::<bool>()), 0..4), 0..4),
        asked in proptest::collection::vec((prop::option::of(30000u16..30008), any::<bool>(), any::<bool>()), 0..6),
    ) {
        let mk = |n: Option<u16>, udp: bool, host: bool| port(
            n, 80,
            if udp { Protocol::Udp } else { Protocol::Tcp },
            if host { PublishMode::Host } else { PublishMode::Ingress },
        );
        let services: Vec<Service> = existing.iter().enumerate().map(|(i, ports)| {
            service(&format!("s{i}"), ports.iter().map(|(n, u, h)| mk(Some(*n), *u, *h)).collect())
        }).collect();
        let s = state(services);
        let asked: Vec<PortConfig> = asked.iter().map(|(n, u, h)| mk(*n, *u, *h)).collect();
        if let Ok(got) = alloc(&s, &asked) {
            prop_assert_eq!(got.len(), asked.len());
            let mut seen = BTreeSet::new();
            for (g, a) in got.iter().zip(&asked) {
                let n = g.published_port;
                prop_assert!(n.is_some());
                if a.published_port.is_some() {
                    prop_assert_eq!(n, a.published_port);
                } else {
                    prop_assert!(n.is_some_and(|n| DYNAMIC.contains(&n)));
                }
                prop_assert!(seen.insert((n, g.protocol)), "{:?} twice", n);
                for other in s.services.values() {
                    prop_assert!(!other.endpoint.ports.iter().any(|o| g.clashes_with(o)));
                }
            }
        }
    }
}
