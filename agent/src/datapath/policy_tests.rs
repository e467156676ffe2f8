//! Isolation decisions, one per row, through BPF_PROG_TEST_RUN on the real
//! object: a task on network A (the test run's device, lo, is its veth)
//! and the underlay, against A, B, the ingress network, the node's own
//! addresses, published ports and the outside.

use std::{collections::BTreeMap, net::Ipv4Addr};

use shoal_common::{
    mesh::{IPPROTO_TCP, MeshReason, PROG_TASK_EGRESS, PROG_TASK_INGRESS, SVC_F_VIP, Service},
    policy::{NET_F_INGRESS, NET_F_NODE, NetEntry, reply_of},
};

use super::*;

const NET_A: u32 = 4098;
const NET_B: u32 = 4099;
const INGRESS: u32 = 4096;
/// The task under test, on A (the fixture's VIP 10.0.1.2 is A's).
const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
const PEER_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 6);
const TASK_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 6);
const VIP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GATEWAY_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const INGRESS_TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 9);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// B's VIP's service id (the fixture uses 1–5).
const B_SVC: u32 = 6;

const FROM_TASK: &str = PROG_TASK_INGRESS;
const TO_TASK: &str = PROG_TASK_EGRESS;

fn isolated() -> Fixture {
    let mut fx = Fixture::new();
    let entry = |net, flags| NetEntry { net, flags };
    let nets = BTreeMap::from([
        ((Ipv4Addr::new(10, 0, 1, 0), 24), entry(NET_A, 0)),
        ((GATEWAY_A, 32), entry(NET_A, NET_F_NODE)),
        ((Ipv4Addr::new(10, 0, 2, 0), 24), entry(NET_B, 0)),
        (
            (Ipv4Addr::new(10, 255, 0, 0), 16),
            entry(INGRESS, NET_F_INGRESS),
        ),
        ((NODE, 32), entry(0, NET_F_NODE)),
    ]);
    fx.mesh.policy().set_networks(&nets).expect("networks");
    assert_eq!(fx.mesh.policy().networks().expect("read"), nets);
    // B's VIP: same ring as the fixture's REDIS, any TCP port.
    fx.set_ring(B_SVC, &[3]);
    fx.mesh
        .set_service(
            shoal_common::mesh::ServiceKey::new(VIP_B.into(), 0, IPPROTO_TCP),
            Service {
                id: B_SVC,
                backend_count: 1,
                target_port: 0,
                flags: SVC_F_VIP,
            },
        )
        .expect("service");
    fx.endpoint(NET_A, &[(NET_A, TASK)]);
    fx
}

#[test]
fn a_task_reaches_its_network_published_ports_and_the_outside_only() {
    let mut fx = isolated();
    let pass = |fx: &mut Fixture, what, p: &Pkt| {
        fx.case(what, FROM_TASK, &p.frame(), UNSPEC, None, None);
    };
    let drop = |fx: &mut Fixture, what, p: &Pkt, why| {
        fx.case(what, FROM_TASK, &p.frame(), SHOT, None, Some(why));
    };
    pass(
        &mut fx,
        "a task on A",
        &Pkt::tcp(TASK, 40000, PEER_A, 80, TCP_SYN),
    );
    pass(&mut fx, "udp on A", &Pkt::udp(TASK, 40000, PEER_A, 53));
    pass(
        &mut fx,
        "the outside",
        &Pkt::tcp(TASK, 40000, OUTSIDE, 443, TCP_SYN),
    );
    use MeshReason::*;
    drop(
        &mut fx,
        "a task on B",
        &Pkt::tcp(TASK, 40000, TASK_B, 80, TCP_SYN),
        IsolationNetwork,
    );
    drop(
        &mut fx,
        "udp to B",
        &Pkt::udp(TASK, 40000, TASK_B, 53),
        IsolationNetwork,
    );
    drop(
        &mut fx,
        "B's VIP",
        &Pkt::tcp(TASK, 40000, VIP_B, 6379, TCP_SYN),
        IsolationNetwork,
    );
    drop(
        &mut fx,
        "node's 7946",
        &Pkt::tcp(TASK, 40000, NODE, 7946, TCP_SYN),
        IsolationNode,
    );
    drop(
        &mut fx,
        "node's 2377",
        &Pkt::tcp(TASK, 40000, NODE, 2377, TCP_SYN),
        IsolationNode,
    );
    drop(
        &mut fx,
        "A's gateway",
        &Pkt::udp(TASK, 40000, GATEWAY_A, 53),
        IsolationNode,
    );
    drop(
        &mut fx,
        "an ingress task directly",
        &Pkt::tcp(TASK, 40000, INGRESS_TASK, 80, TCP_SYN),
        IsolationIngress,
    );
    drop(
        &mut fx,
        "a source not its own",
        &Pkt::tcp(Ipv4Addr::new(10, 0, 1, 99), 40000, PEER_A, 80, TCP_SYN),
        SpoofedSource,
    );
    // A later fragment has no ports: still its destination is checked.
    let mut frag = Pkt::udp(TASK, 40000, TASK_B, 53);
    frag.frag = 0x0010;
    drop(&mut fx, "a fragment to B", &frag, IsolationNetwork);

    // A's VIP is balanced; a published port on the node too.
    let vip = Pkt::tcp(TASK, 41000, VIP, 6379, TCP_SYN);
    let chosen = fx.choice(REDIS, &vip, false);
    fx.case(
        "A's VIP",
        FROM_TASK,
        &vip.frame(),
        OK,
        Some(&vip.to(addr_of(chosen), 6379).frame()),
        None,
    );
    let published = Pkt::tcp(TASK, 41001, NODE, 8080, TCP_SYN);
    let chosen = fx.choice(WEB, &published, false);
    fx.case(
        "a published port",
        FROM_TASK,
        &published.frame(),
        OK,
        Some(&published.to(addr_of(chosen), 80).frame()),
        None,
    );
}

#[test]
fn replies_of_flows_the_mesh_brought_pass_and_nothing_else() {
    let mut fx = isolated();
    // A task on B called a published port and the mesh brought the flow
    // here: it arrives with its own source (the mesh keeps clients').
    let call = Pkt::tcp(TASK_B, 40000, TASK, 80, TCP_SYN);
    fx.case(
        "B's call arrives",
        TO_TASK,
        &call.frame(),
        UNSPEC,
        None,
        None,
    );
    assert!(
        fx.mesh
            .policy()
            .permitted(&reply_of(&call.flow()))
            .expect("read")
    );
    let reply = Pkt::tcp(TASK, 80, TASK_B, 40000, TCP_SYN_ACK);
    fx.case("its reply", FROM_TASK, &reply.frame(), UNSPEC, None, None);
    let other = Pkt::tcp(TASK, 80, TASK_B, 40001, TCP_SYN_ACK);
    fx.case(
        "to another port of B",
        FROM_TASK,
        &other.frame(),
        SHOT,
        None,
        Some(MeshReason::IsolationNetwork),
    );
    // Through the ingress network (a published port's client on ingress).
    let via_ingress = Pkt::tcp(INGRESS_TASK, 5000, TASK, 80, TCP_SYN);
    fx.case(
        "via ingress",
        TO_TASK,
        &via_ingress.frame(),
        UNSPEC,
        None,
        None,
    );
    let back = Pkt::tcp(TASK, 80, INGRESS_TASK, 5000, TCP_SYN_ACK);
    fx.case("its reply", FROM_TASK, &back.frame(), UNSPEC, None, None);
    // The node itself called the task (node doctor's probes bind its data
    // address): the replies go back; the task still cannot call the node.
    let probe = Pkt::tcp(NODE, 45000, TASK, 80, TCP_SYN);
    fx.case(
        "the node's probe",
        TO_TASK,
        &probe.frame(),
        UNSPEC,
        None,
        None,
    );
    let answer = Pkt::tcp(TASK, 80, NODE, 45000, TCP_SYN_ACK);
    fx.case("its answer", FROM_TASK, &answer.frame(), UNSPEC, None, None);
    fx.case(
        "the task calling the node",
        FROM_TASK,
        &Pkt::tcp(TASK, 80, NODE, 45001, TCP_SYN).frame(),
        SHOT,
        None,
        Some(MeshReason::IsolationNode),
    );
    // Its own network's packets need no permit.
    let own = Pkt::tcp(PEER_A, 5000, TASK, 80, TCP_SYN);
    fx.case("from A", TO_TASK, &own.frame(), UNSPEC, None, None);
    assert!(
        !fx.mesh
            .policy()
            .permitted(&reply_of(&own.flow()))
            .expect("read")
    );
}

#[test]
fn a_veth_without_an_entry_drops_what_its_task_sends() {
    let mut fx = isolated();
    fx.mesh.policy().remove_endpoint(1).expect("remove");
    fx.case(
        "no entry",
        FROM_TASK,
        &Pkt::tcp(TASK, 40000, PEER_A, 80, TCP_SYN).frame(),
        SHOT,
        None,
        Some(MeshReason::UnknownEndpoint),
    );
    // Not IPv4 (ARP): not isolation's.
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0; 28]);
    fx.case("arp", FROM_TASK, &arp, UNSPEC, None, None);
}

#[test]
fn the_underlay_reaches_published_ports_never_overlay_addresses() {
    let mut fx = isolated();
    use MeshReason::UnderlayToOverlay;
    for (what, p) in [
        (
            "a task's address",
            Pkt::tcp(CLIENT, 40000, TASK, 80, TCP_SYN),
        ),
        (
            "an ingress address",
            Pkt::tcp(CLIENT, 40000, INGRESS_TASK, 80, TCP_SYN),
        ),
        ("a VIP", Pkt::tcp(CLIENT, 40000, VIP, 6379, TCP_SYN)),
        ("a gateway", Pkt::udp(CLIENT, 40000, GATEWAY_A, 53)),
    ] {
        fx.case(what, IN, &p.frame(), SHOT, None, Some(UnderlayToOverlay));
    }
    // Cut short after the IPv4 header: the mesh cannot parse it, the
    // destination still decides.
    let mut short = Pkt::tcp(CLIENT, 40000, TASK, 80, TCP_SYN).frame();
    short.truncate(14 + 20 + 10);
    fx.case("truncated", IN, &short, SHOT, None, Some(UnderlayToOverlay));
    // The node's own ports are the stack's; published ports are DNATed.
    let ssh = Pkt::tcp(CLIENT, 40000, NODE, 22, TCP_SYN);
    fx.case("node's 22", IN, &ssh.frame(), UNSPEC, None, None);
    let published = Pkt::tcp(CLIENT, 40000, NODE, 8080, TCP_SYN);
    let chosen = fx.choice(WEB, &published, false);
    fx.case(
        "published",
        IN,
        &published.frame(),
        OK,
        Some(&published.to(addr_of(chosen), 80).frame()),
        None,
    );
}

#[test]
fn pings_follow_the_same_rules_with_their_identifier_as_port() {
    let mut fx = isolated();
    fx.case(
        "to a task on B",
        FROM_TASK,
        &Pkt::icmp_echo(TASK, TASK_B, 7, true).frame(),
        SHOT,
        None,
        Some(MeshReason::IsolationNetwork),
    );
    fx.case(
        "to the node",
        FROM_TASK,
        &Pkt::icmp_echo(TASK, NODE, 7, true).frame(),
        SHOT,
        None,
        Some(MeshReason::IsolationNode),
    );
    fx.case(
        "to its own network",
        FROM_TASK,
        &Pkt::icmp_echo(TASK, PEER_A, 7, true).frame(),
        UNSPEC,
        None,
        None,
    );
    // The node pings its task (as `node doctor` could): the reply goes
    // back, to that identifier only.
    let ping = Pkt::icmp_echo(NODE, TASK, 9, true);
    fx.case(
        "the node's ping",
        TO_TASK,
        &ping.frame(),
        UNSPEC,
        None,
        None,
    );
    fx.case(
        "its reply",
        FROM_TASK,
        &Pkt::icmp_echo(TASK, NODE, 9, false).frame(),
        UNSPEC,
        None,
        None,
    );
    fx.case(
        "a reply nobody asked for",
        FROM_TASK,
        &Pkt::icmp_echo(TASK, NODE, 10, false).frame(),
        SHOT,
        None,
        Some(MeshReason::IsolationNode),
    );
}
