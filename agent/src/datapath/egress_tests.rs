//! Egress SNAT tables (common/src/egress.rs) through BPF_PROG_TEST_RUN on
//! the real object, on isolation's fixture: a task's flow to the outside
//! leaves the data interface with the node's address and a port of the
//! egress range, its replies come back to the task, an unexplained packet
//! to that range is dropped, ports are reclaimed and run out as designed,
//! and `--internal` networks get nothing out. Expected frames are built
//! from scratch (checksums computed here), so a match proves the
//! incremental checksum updates, pseudo-header included.
#![allow(unsafe_code)]

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::HashMap;
use shoal_common::{
    egress::{
        EGRESS_PORT_PROBES, SNAT_CLOSING_TIMEOUT_NS, SNAT_F_CLOSING, SNAT_REV_MAP, SnatRev,
        egress_port, snat_reply,
    },
    mesh::{FlowKey, MeshConfig, MeshReason, PROG_TASK_INGRESS, bridge_mac, flow_hash},
    policy::{NET_F_INGRESS, NET_F_INTERNAL, NET_F_NODE, NetEntry},
};

use super::*;

const NET_A: u32 = 4098;
const NET_C: u32 = 4100;
const INGRESS: u32 = 4096;
const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
const PEER_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 6);
/// A task on the `--internal` network C.
const TASK_C: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 5);
const INGRESS_TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 9);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);

/// Isolation's maps with A, internal C and ingress; the node's MAC (and so
/// its address) configured.
fn egress() -> Fixture {
    let mut fx = Fixture::new();
    let entry = |net, flags| NetEntry { net, flags };
    let nets = BTreeMap::from([
        ((Ipv4Addr::new(10, 0, 1, 0), 24), entry(NET_A, 0)),
        ((Ipv4Addr::new(10, 0, 1, 1), 32), entry(NET_A, NET_F_NODE)),
        (
            (Ipv4Addr::new(10, 0, 3, 0), 24),
            entry(NET_C, NET_F_INTERNAL),
        ),
        (
            (Ipv4Addr::new(10, 255, 0, 0), 16),
            entry(INGRESS, NET_F_INGRESS),
        ),
        ((NODE, 32), entry(0, NET_F_NODE)),
    ]);
    fx.mesh.policy().set_networks(&nets).expect("networks");
    fx.mesh
        .set_config(MeshConfig {
            node_mac: bridge_mac(u32::from(NODE)),
            ..MeshConfig::default()
        })
        .expect("config");
    fx
}

/// The port the program must choose at probe `attempt` (host order).
fn port(p: &Pkt, attempt: u32) -> u16 {
    egress_port(flow_hash(&p.flow(), false), attempt)
}

fn rev_map(fx: &mut Fixture) -> HashMap<&mut aya::maps::MapData, FlowKey, SnatRev> {
    let map = fx.mesh.ebpf_mut().map_mut(SNAT_REV_MAP).expect("SNATR map");
    HashMap::try_from(map).expect("SNATR type")
}

/// The reply key of `p`'s flow on node-side port `port` (host order).
fn reply_key(p: &Pkt, port: u16) -> FlowKey {
    snat_reply(&p.flow(), u32::from(NODE).to_be(), port.to_be())
}

/// CLOCK_MONOTONIC, the clock bpf_ktime_get_ns reads.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn flows_to_the_outside_leave_with_the_node_address_and_replies_come_back() {
    let mut fx = egress();
    use MeshReason::*;
    for (what, p) in [
        ("tcp", Pkt::tcp(TASK, 40000, OUTSIDE, 80, TCP_SYN)),
        ("udp", Pkt::udp(TASK, 40001, OUTSIDE, 53)),
    ] {
        let nat = port(&p, 0);
        let out = p.from(NODE, nat);
        fx.case(
            &format!("{what}: first packet"),
            OUT,
            &p.frame(),
            OK,
            Some(&out.frame()),
            Some(EgressTranslated),
        );
        // Its next packets keep the port and count nothing new.
        let next = p.clone().with_flags(TCP_PSH_ACK);
        fx.case(
            &format!("{what}: next packet"),
            OUT,
            &next.frame(),
            OK,
            Some(&next.from(NODE, nat).frame()),
            None,
        );
        // The reply, as the outside sends it, goes back to the task.
        let reply = Pkt {
            src: OUTSIDE,
            sport: p.dport,
            dst: NODE,
            dport: nat,
            ..p.clone()
        }
        .with_flags(TCP_SYN_ACK);
        fx.case(
            &format!("{what}: reply"),
            IN,
            &reply.frame(),
            OK,
            Some(&reply.to(TASK, p.sport).frame()),
            None,
        );
        // Another port of the range, or another peer port: nobody's flow.
        let forged = reply.to(NODE, if nat == 65535 { 61000 } else { nat + 1 });
        fx.case(
            &format!("{what}: forged reply to an unused port"),
            IN,
            &forged.frame(),
            SHOT,
            None,
            Some(EgressNoFlow),
        );
        let other_peer = reply.from(OUTSIDE, p.dport + 1);
        fx.case(
            &format!("{what}: the used port from another peer port"),
            IN,
            &other_peer.frame(),
            SHOT,
            None,
            Some(EgressNoFlow),
        );
    }
    // Below the range, the node's own ports are the stack's business.
    let ssh = Pkt::tcp(OUTSIDE, 40000, NODE, 22, TCP_SYN);
    fx.case("node's 22", IN, &ssh.frame(), UNSPEC, None, None);
}

#[test]
fn only_task_flows_to_the_outside_are_translated() {
    let mut fx = egress();
    for (what, p) in [
        // Overlay to overlay (routed between bridges): not egress.
        ("task to task", Pkt::tcp(TASK, 40000, PEER_A, 80, TCP_SYN)),
        // The node's own connections keep their address.
        ("the node's", Pkt::tcp(NODE, 40000, OUTSIDE, 80, TCP_SYN)),
        // The ingress network opens nothing to the outside.
        (
            "an ingress address",
            Pkt::tcp(INGRESS_TASK, 80, OUTSIDE, 40000, TCP_SYN_ACK),
        ),
    ] {
        fx.case(what, OUT, &p.frame(), UNSPEC, None, None);
    }
}

#[test]
fn internal_networks_get_no_egress() {
    let mut fx = egress();
    fx.endpoint(NET_C, &[(NET_C, TASK_C)]);
    let p = Pkt::tcp(TASK_C, 40000, OUTSIDE, 80, TCP_SYN);
    let why = Some(MeshReason::EgressInternal);
    fx.case(
        "from the task",
        PROG_TASK_INGRESS,
        &p.frame(),
        SHOT,
        None,
        why,
    );
    fx.case(
        "udp",
        PROG_TASK_INGRESS,
        &Pkt::udp(TASK_C, 1, OUTSIDE, 53).frame(),
        SHOT,
        None,
        why,
    );
    // Past the veth anyway (a task program missing): not translated.
    fx.case("at the data interface", OUT, &p.frame(), SHOT, None, why);
    // Its own network still passes.
    let own = Pkt::tcp(TASK_C, 40000, Ipv4Addr::new(10, 0, 3, 6), 80, TCP_SYN);
    fx.case(
        "its own network",
        PROG_TASK_INGRESS,
        &own.frame(),
        UNSPEC,
        None,
        None,
    );
    // A task on a normal network reaches the outside from its veth.
    fx.endpoint(NET_A, &[(NET_A, TASK)]);
    let a = Pkt::tcp(TASK, 40000, OUTSIDE, 80, TCP_SYN);
    fx.case(
        "a normal network",
        PROG_TASK_INGRESS,
        &a.frame(),
        UNSPEC,
        None,
        None,
    );
}

#[test]
fn ports_are_owned_by_reply_entries_reclaimed_when_closed_and_run_out() {
    let mut fx = egress();
    let p = Pkt::tcp(TASK, 40000, OUTSIDE, 443, TCP_SYN);
    let first = port(&p, 0);
    fx.case(
        "first",
        OUT,
        &p.frame(),
        OK,
        Some(&p.from(NODE, first).frame()),
        Some(MeshReason::EgressTranslated),
    );
    // Another flow took the port over (its owner went stale): the flow's
    // next packet finds it gone and chooses the next free one.
    let thief = SnatRev {
        addr: u32::from(PEER_A).to_be(),
        port: 7u16.to_be(),
        last_seen_ns: now_ns(),
        ..SnatRev::default()
    };
    rev_map(&mut fx)
        .insert(reply_key(&p, first), thief, 0)
        .expect("take over");
    let next = p.clone().with_flags(TCP_PSH_ACK);
    fx.case(
        "after a take-over",
        OUT,
        &next.frame(),
        OK,
        Some(&next.from(NODE, port(&p, 1)).frame()),
        Some(MeshReason::EgressTranslated),
    );

    // Every port a new flow probes is held by a live flow: refused.
    let q = Pkt::tcp(TASK, 40100, OUTSIDE, 8443, TCP_SYN);
    let now = now_ns();
    for i in 0..EGRESS_PORT_PROBES {
        rev_map(&mut fx)
            .insert(
                reply_key(&q, port(&q, i)),
                SnatRev {
                    last_seen_ns: now,
                    ..thief
                },
                0,
            )
            .expect("hold");
    }
    fx.case(
        "exhausted",
        OUT,
        &q.frame(),
        SHOT,
        None,
        Some(MeshReason::EgressPortsExhausted),
    );
    // One holder closed (FIN seen) long enough ago: its port is free again.
    let closed = SnatRev {
        flags: SNAT_F_CLOSING,
        last_seen_ns: now - SNAT_CLOSING_TIMEOUT_NS - 1_000_000_000,
        ..thief
    };
    rev_map(&mut fx)
        .insert(reply_key(&q, port(&q, 3)), closed, 0)
        .expect("closed");
    fx.case(
        "a closed port reclaimed",
        OUT,
        &q.frame(),
        OK,
        Some(&q.from(NODE, port(&q, 3)).frame()),
        Some(MeshReason::EgressTranslated),
    );
    let owner = rev_map(&mut fx)
        .get(&reply_key(&q, port(&q, 3)), 0)
        .expect("owner");
    assert_eq!(
        (owner.addr, owner.port, owner.flags),
        (u32::from(TASK).to_be(), 40100u16.to_be(), 0)
    );
}

#[test]
fn pings_to_the_outside_are_translated_by_their_identifier() {
    let mut fx = egress();
    let p = Pkt::icmp_echo(TASK, OUTSIDE, 0x1234, true);
    let nat = port(&p, 0);
    fx.case(
        "echo request",
        OUT,
        &p.frame(),
        OK,
        Some(&Pkt::icmp_echo(NODE, OUTSIDE, nat, true).frame()),
        Some(MeshReason::EgressTranslated),
    );
    fx.case(
        "echo reply",
        IN,
        &Pkt::icmp_echo(OUTSIDE, NODE, nat, false).frame(),
        OK,
        Some(&Pkt::icmp_echo(OUTSIDE, TASK, 0x1234, false).frame()),
        None,
    );
    // An echo reply no translated flow explains is the node's own ping's.
    let other = if nat == 65535 { 61000 } else { nat + 1 };
    let own = Pkt::icmp_echo(OUTSIDE, NODE, other, false);
    fx.case("the node's own ping", IN, &own.frame(), UNSPEC, None, None);
    // Other ICMP (here destination unreachable) is no flow: untouched.
    let unreachable = Pkt {
        tcp_flags: 3,
        ..Pkt::icmp_echo(TASK, OUTSIDE, 0x1234, false)
    };
    fx.case(
        "an ICMP error",
        OUT,
        &unreachable.frame(),
        UNSPEC,
        None,
        None,
    );
    // `--internal`: no ping out either.
    fx.case(
        "internal",
        OUT,
        &Pkt::icmp_echo(TASK_C, OUTSIDE, 9, true).frame(),
        SHOT,
        None,
        Some(MeshReason::EgressInternal),
    );
}
