//! The overlay's fast path (common/src/mesh.rs: `PEERS_MAP`,
//! `UPLINKS_MAP`) through BPF_PROG_TEST_RUN on the real object. The test
//! run's device (lo, ifindex 1) plays both the task's veth and its
//! network's VXLAN device. What a redirect does with the frame is the
//! kernel's (proven with real traffic in tests/tests/fast_path_lab.rs);
//! here: which frames are redirected, that the veth's own work (isolation,
//! reverse NAT, return paths) is done first, and that everything else
//! keeps the bridge path untouched.

use shoal_common::mesh::{
    MeshConfig, MeshReason, PROG_TASK_EGRESS, PROG_TASK_INGRESS, PROG_VXLAN_INGRESS, Vtep,
    bridge_mac,
};

use super::*;
use crate::datapath::fastpath::Port;

/// `TC_ACT_REDIRECT`.
const REDIRECT: i32 = 7;
const NET: u32 = 7;
const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const TASK_MAC: [u8; 6] = [0x02, 0x42, 10, 0, 0, 11];
/// Another task on this node, behind veth 99.
const LOCAL_MAC: [u8; 6] = [0x02, 0x42, 10, 0, 0, 13];
/// A task on another node.
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const REMOTE_MAC: [u8; 6] = [0x02, 0x42, 10, 0, 0, 12];
const BROADCAST: [u8; 6] = [0xff; 6];

fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

const PORT: Port = Port {
    veth: 1,
    vxlan: 1,
    mac: TASK_MAC,
};

fn fast() -> Fixture {
    let mut fx = Fixture::new();
    fx.endpoint(NET, &[(NET, TASK)]);
    fx.mesh
        .set_config(MeshConfig {
            node_mac: bridge_mac(u32::from(NODE)),
            ..MeshConfig::default()
        })
        .expect("config");
    fx.mesh.fast_path().add(PORT).expect("the task's port");
    let other = Port {
        veth: 99,
        vxlan: 1,
        mac: LOCAL_MAC,
    };
    fx.mesh.fast_path().add(other).expect("another task's port");
    fx
}

#[test]
fn a_tasks_frames_for_other_nodes_go_straight_to_the_vxlan_device() {
    let mut fx = fast();
    let own = bridge_mac(u32::from(NODE));
    let peer = bridge_mac(u32::from(PEER));
    let syn = Pkt::tcp(TASK, 40000, REMOTE, 80, TCP_SYN).frame();
    let cases = [
        (
            "to a task on another node",
            with_macs(syn.clone(), REMOTE_MAC, TASK_MAC),
            REDIRECT,
            Some(MeshReason::FastPathTx),
        ),
        (
            "to another node's bridge (a reply routed back)",
            with_macs(syn.clone(), peer, TASK_MAC),
            REDIRECT,
            Some(MeshReason::FastPathTx),
        ),
        (
            "to this node's bridge (gateway, VIPs, egress)",
            with_macs(syn.clone(), own, TASK_MAC),
            UNSPEC,
            None,
        ),
        (
            "to another task on this node",
            with_macs(syn.clone(), LOCAL_MAC, TASK_MAC),
            UNSPEC,
            None,
        ),
        (
            "broadcast",
            with_macs(syn.clone(), BROADCAST, TASK_MAC),
            UNSPEC,
            None,
        ),
        (
            "a spoofed source is still dropped first",
            with_macs(
                Pkt::tcp(REMOTE, 40000, TASK, 80, TCP_SYN).frame(),
                REMOTE_MAC,
                TASK_MAC,
            ),
            SHOT,
            Some(MeshReason::SpoofedSource),
        ),
    ];
    for (what, frame, verdict, reason) in cases {
        fx.case(what, PROG_TASK_INGRESS, &frame, verdict, None, reason);
    }
    // ARP keeps the bridge (the VXLAN device's proxy answers it there).
    let mut arp = with_macs(syn.clone(), REMOTE_MAC, TASK_MAC);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    fx.case("ARP", PROG_TASK_INGRESS, &arp, UNSPEC, None, None);

    // Out of the fast path: the bridge carries it again.
    fx.mesh.fast_path().remove(PORT).expect("remove");
    assert_eq!(fx.mesh.fast_path().uplink(1), None);
    fx.case(
        "detached",
        PROG_TASK_INGRESS,
        &with_macs(syn, REMOTE_MAC, TASK_MAC),
        UNSPEC,
        None,
        None,
    );
}

#[test]
fn vxlan_frames_for_a_local_task_get_its_veths_work_and_go_straight_in() {
    let mut fx = fast();
    let peer = bridge_mac(u32::from(PEER));
    // A client's SYN a peer node DNATed: redirected, and its return path
    // remembered as the veth's egress program would have.
    let syn = Pkt::tcp(CLIENT, 40000, TASK, 80, TCP_SYN);
    fx.case(
        "routed by a peer",
        PROG_VXLAN_INGRESS,
        &with_macs(syn.frame(), TASK_MAC, peer),
        REDIRECT,
        None,
        Some(MeshReason::FastPathRx),
    );
    let reply = Pkt::tcp(TASK, 80, CLIENT, 40000, TCP_SYN_ACK);
    let path = fx.mesh.return_path(&reply.flow()).expect("read");
    assert_eq!(path.map(|p| p.mac), Some(peer), "return path");

    // A VIP's reply from a backend on another node gets the VIP back.
    let to_vip = Pkt::tcp(TASK, 41000, VIP, 6379, TCP_SYN);
    let own = bridge_mac(u32::from(NODE));
    let chosen = fx.choice(REDIS, &to_vip, false);
    fx.case(
        "task to VIP (this node's bridge MAC: DNAT, bridge path)",
        PROG_TASK_INGRESS,
        &with_macs(to_vip.frame(), own, TASK_MAC),
        OK,
        Some(&with_macs(
            to_vip.to(addr_of(chosen), 6379).frame(),
            own,
            TASK_MAC,
        )),
        None,
    );
    let from_backend = Pkt::tcp(addr_of(chosen), 6379, TASK, 41000, TCP_SYN_ACK);
    let input = with_macs(from_backend.frame(), TASK_MAC, own);
    let expected = with_macs(from_backend.from(VIP, 6379).frame(), TASK_MAC, own);
    fx.case(
        "VIP reply",
        PROG_VXLAN_INGRESS,
        &input,
        REDIRECT,
        Some(&expected),
        Some(MeshReason::FastPathRx),
    );
    let (_, out) = fx.run(PROG_VXLAN_INGRESS, &input);
    assert_checksums_valid("VIP reply", &out);

    let direct = Pkt::tcp(REMOTE, 5000, TASK, 80, TCP_SYN).frame();
    let cases = [
        (
            "to an address the veth's task does not own",
            with_macs(
                Pkt::tcp(REMOTE, 5000, Ipv4Addr::new(10, 0, 0, 99), 80, TCP_SYN).frame(),
                TASK_MAC,
                REMOTE_MAC,
            ),
        ),
        (
            "to a MAC no local task has",
            with_macs(direct.clone(), [0x02, 0x42, 10, 0, 0, 77], REMOTE_MAC),
        ),
        (
            "to this node's bridge",
            with_macs(direct.clone(), own, REMOTE_MAC),
        ),
        (
            "broadcast",
            with_macs(direct.clone(), BROADCAST, REMOTE_MAC),
        ),
        ("a local task with no isolation entry", {
            with_macs(direct.clone(), LOCAL_MAC, REMOTE_MAC)
        }),
    ];
    for (what, frame) in cases {
        fx.case(what, PROG_VXLAN_INGRESS, &frame, UNSPEC, None, None);
    }
    fx.case(
        "from a task on another node",
        PROG_VXLAN_INGRESS,
        &with_macs(direct.clone(), TASK_MAC, REMOTE_MAC),
        REDIRECT,
        None,
        Some(MeshReason::FastPathRx),
    );
    // The veth's egress program on the bridge path still does the same.
    fx.case(
        "the bridge path",
        PROG_TASK_EGRESS,
        &with_macs(direct.clone(), TASK_MAC, REMOTE_MAC),
        UNSPEC,
        None,
        None,
    );
    // Its task gone (isolation entry removed first, as detach does in
    // reverse): nothing is redirected to its index any more.
    fx.mesh.fast_path().remove(PORT).expect("remove");
    assert!(
        fx.mesh
            .fast_path()
            .peers()
            .expect("peers")
            .iter()
            .all(|(k, _)| k.mac != TASK_MAC)
    );
    fx.case(
        "detached",
        PROG_VXLAN_INGRESS,
        &with_macs(direct, TASK_MAC, REMOTE_MAC),
        UNSPEC,
        None,
        None,
    );
}

#[test]
fn a_port_taken_over_by_another_veth_is_not_removed_with_the_old_one() {
    let mut fx = fast();
    let newer = Port { veth: 42, ..PORT };
    fx.mesh.fast_path().add(newer).expect("add");
    fx.mesh.fast_path().remove(PORT).expect("remove the old");
    let peers = fx.mesh.fast_path().peers().expect("peers");
    assert!(peers.iter().any(|(k, v)| k.mac == TASK_MAC && *v == 42));
    assert_eq!(fx.mesh.fast_path().uplink(42), Some(1));
}

const VNI: u32 = 4097;
const PORT_4789: u16 = 4789;

/// VXLAN from `PEER`'s VTEP to `to`, VNI `vni` on UDP `port` with VXLAN
/// flags `flags`, carrying `inner`.
fn vxlan(to: Ipv4Addr, port: u16, flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![flags, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    Pkt {
        payload,
        udp_csum: false,
        ..Pkt::udp(PEER, 50000, to, port)
    }
    .frame()
}

fn decap() -> Fixture {
    let mut fx = fast();
    fx.mesh
        .fast_path()
        .set_vxlan(
            VNI,
            shoal_common::mesh::VxlanDev {
                ifindex: 1,
                port: PORT_4789,
                _pad: 0,
            },
        )
        .expect("the overlay's device");
    fx
}

/// The data interface decapsulates VXLAN for a local task itself: the
/// output is exactly the inner frame, redirected into the task; anything
/// not for a local task of a known overlay at this node's VTEP passes to
/// the stack untouched.
#[test]
fn vxlan_for_a_local_task_is_decapsulated_on_the_data_interface() {
    let mut fx = decap();
    let peer = bridge_mac(u32::from(PEER));
    let syn = Pkt::tcp(CLIENT, 40000, TASK, 80, TCP_SYN);
    let inner = with_macs(syn.frame(), TASK_MAC, peer);
    fx.case(
        "for a local task",
        IN,
        &vxlan(NODE, PORT_4789, 0x08, VNI, &inner),
        REDIRECT,
        Some(&inner),
        Some(MeshReason::FastPathDecap),
    );
    // The veth's work was done: the return path to the peer is known.
    let reply = Pkt::tcp(TASK, 80, CLIENT, 40000, TCP_SYN_ACK);
    let path = fx.mesh.return_path(&reply.flow()).expect("read");
    assert_eq!(path.map(|p| p.mac), Some(peer), "return path");

    let mut arp = inner.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let not_owned = with_macs(
        Pkt::tcp(CLIENT, 40000, Ipv4Addr::new(10, 0, 0, 99), 80, TCP_SYN).frame(),
        TASK_MAC,
        peer,
    );
    let cases = [
        (
            "to another VTEP",
            vxlan(Ipv4Addr::new(198, 18, 0, 9), PORT_4789, 0x08, VNI, &inner),
        ),
        ("another UDP port", vxlan(NODE, 4790, 0x08, VNI, &inner)),
        ("no VNI flag", vxlan(NODE, PORT_4789, 0, VNI, &inner)),
        (
            "an overlay without a device here",
            vxlan(NODE, PORT_4789, 0x08, VNI + 1, &inner),
        ),
        ("ARP inside", vxlan(NODE, PORT_4789, 0x08, VNI, &arp)),
        (
            "to a MAC no local task has",
            vxlan(
                NODE,
                PORT_4789,
                0x08,
                VNI,
                &with_macs(syn.frame(), REMOTE_MAC, peer),
            ),
        ),
        (
            "to an address the task does not own",
            vxlan(NODE, PORT_4789, 0x08, VNI, &not_owned),
        ),
    ];
    for (what, frame) in cases {
        fx.case(what, IN, &frame, UNSPEC, None, None);
    }
}

/// The device's view of `REMOTE_MAC`: behind `PEER`, on the task's network.
fn mirrored(vni: u32) -> std::collections::BTreeMap<shoal_common::mesh::PeerKey, Vtep> {
    let vtep = Vtep {
        remote: u32::from(PEER).to_be(),
        local: u32::from(NODE).to_be(),
        underlay: 1,
        vni,
        port: PORT_4789,
        _pad: 0,
    };
    std::collections::BTreeMap::from([(shoal_common::mesh::PeerKey::new(1, REMOTE_MAC), vtep)])
}

/// A task's frame for a MAC the FDB mirror has is encapsulated by the
/// veth's program exactly as the VXLAN device would (outer addresses, port
/// and VNI of the device, the inner frame whole after them) and handed to
/// the underlay. One without an entry, or whose entry names another
/// network (a reused device index), goes to the VXLAN device unchanged.
#[test]
fn a_tasks_frames_for_mirrored_macs_are_encapsulated_here() {
    let mut fx = fast();
    fx.mesh
        .fast_path()
        .set_vteps(None, &mirrored(NET))
        .expect("mirror");
    let inner = with_macs(
        Pkt::tcp(TASK, 40000, REMOTE, 80, TCP_SYN).frame(),
        REMOTE_MAC,
        TASK_MAC,
    );
    let before = fx.reasons();
    let (rc, out) = fx.run(PROG_TASK_INGRESS, &inner);
    assert_eq!(rc, REDIRECT, "verdict");
    let after = fx.reasons();
    for ((r, b), (_, a)) in before.iter().zip(&after) {
        let want = u64::from(*r == MeshReason::FastPathEncap);
        assert_eq!(a - b, want, "reason {r:?}");
    }
    assert_eq!(out.len(), inner.len() + 50, "outer headers");
    assert_eq!(
        out[..12],
        inner[..12],
        "outer MACs (the neighbour output's)"
    );
    assert_eq!(out[12..14], [0x08, 0x00]);
    let ip = &out[14..34];
    let tot = inner.len() - 14 + 50;
    assert_eq!(
        ip[..4],
        [0x45, 0, (tot >> 8) as u8, tot as u8],
        "IPv4 header"
    );
    assert_eq!(ip[6..10], [0, 0, 64, 17], "no DF, TTL 64, UDP");
    assert_eq!(ip[12..16], NODE.octets(), "the device's source");
    assert_eq!(ip[16..20], PEER.octets(), "the remote VTEP");
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff, "IPv4 checksum");
    let udp = &out[34..42];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!((32768..=60999).contains(&sport), "source port {sport}");
    let ulen = (tot - 20) as u16;
    assert_eq!(udp[2..], [0x12, 0xb5, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    assert_eq!(out[42..50], [0x08, 0, 0, 0, 0, 0, NET as u8, 0], "VXLAN");
    assert_eq!(hex(&out[50..]), hex(&inner), "the inner frame");
    // The same flow, the same outer tuple.
    let (_, again) = fx.run(PROG_TASK_INGRESS, &inner);
    assert_eq!(again[34..36], out[34..36], "source port of one flow");

    let peer = bridge_mac(u32::from(PEER));
    fx.case(
        "a MAC the mirror has not",
        PROG_TASK_INGRESS,
        &with_macs(inner.clone(), peer, TASK_MAC),
        REDIRECT,
        None,
        Some(MeshReason::FastPathTx),
    );
    fx.mesh
        .fast_path()
        .set_vteps(None, &mirrored(NET + 1))
        .expect("mirror");
    fx.case(
        "an entry of another network",
        PROG_TASK_INGRESS,
        &inner,
        REDIRECT,
        None,
        Some(MeshReason::FastPathTx),
    );
}

/// A frame that would not fit the underlay's MTU once encapsulated is left
/// to the VXLAN device, whose transmit answers it with ICMP "fragmentation
/// needed" (the underlay's MTU shrank under a running task); one that fits
/// to the byte is encapsulated. A GSO frame is judged by its segments. The
/// underlay is the loopback of a namespace of the test's own, at MTU 1500.
#[test]
fn frames_too_big_for_the_underlay_are_left_to_the_vxlan_device() {
    use MeshReason::{FastPathEncap, FastPathMtu, FastPathTx};
    use nix::sched::{CloneFlags, unshare};

    // unshare() moves only the calling thread; the namespace dies with it.
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        loopback_mtu(1500).expect("lo's MTU");
        let mut fx = fast();
        fx.mesh
            .fast_path()
            .set_vteps(None, &mirrored(NET))
            .expect("mirror");
        // A task's TCP segment of `payload` bytes: 40 bytes of IPv4 and TCP
        // headers before it.
        let frame = |payload: usize| {
            let mut p = Pkt::tcp(TASK, 40000, REMOTE, 80, TCP_ACK);
            p.payload = vec![0x5a; payload];
            with_macs(p.frame(), REMOTE_MAC, TASK_MAC)
        };
        let counted = |fx: &Fixture, before: &[(MeshReason, u64)], r: MeshReason| {
            let after = fx.reasons();
            after[r as usize].1 - before[r as usize].1
        };

        // 40 + 1410 + the 50 bytes of VXLAN = 1500.
        let before = fx.reasons();
        let (rc, out) = fx.run(PROG_TASK_INGRESS, &frame(1410));
        assert_eq!(rc, REDIRECT, "fits: verdict");
        assert_eq!(out.len(), frame(1410).len() + 50, "fits: encapsulated");
        assert_eq!(
            counted(&fx, &before, FastPathEncap),
            1,
            "fits: fast-path-encap"
        );
        assert_eq!(counted(&fx, &before, FastPathMtu), 0, "fits: fast-path-mtu");

        let before = fx.reasons();
        let big = frame(1411);
        let (rc, out) = fx.run(PROG_TASK_INGRESS, &big);
        assert_eq!(rc, REDIRECT, "one byte over: verdict");
        assert_eq!(hex(&out), hex(&big), "one byte over: the frame unchanged");
        assert_eq!(
            counted(&fx, &before, FastPathMtu),
            1,
            "one byte over: fast-path-mtu"
        );
        assert_eq!(
            counted(&fx, &before, FastPathTx),
            1,
            "one byte over: to the device"
        );
        assert_eq!(
            counted(&fx, &before, FastPathEncap),
            0,
            "one byte over: not encapsulated"
        );

        // Two segments' worth in one GSO frame (a test run takes at most a
        // page): its segments decide, not its length. (The test run's skb has no GSO type, so the kernel
        // refuses to grow it either way and it goes to the device; only
        // whether the MTU check passed is this test's.)
        for (size, over) in [(1410, 0), (1411, 1)] {
            let before = fx.reasons();
            let (rc, _) = fx.run_gso(PROG_TASK_INGRESS, &frame(2 * 1410), 2, size);
            assert_eq!(rc, REDIRECT, "GSO segments of {size}: verdict");
            assert_eq!(
                counted(&fx, &before, FastPathMtu),
                over,
                "GSO segments of {size}: fast-path-mtu"
            );
        }
    })
    .join()
    .expect("the test's thread");
}

/// Only full mode mirrors: `redirect` and `off` empty the mirror, and a
/// mirror write outside full mode keeps it empty.
#[test]
fn the_fdb_mirror_is_full_modes_alone() {
    let mut fx = fast();
    fx.mesh.set_vteps(None, &mirrored(NET)).expect("full");
    assert_eq!(fx.mesh.fast_path().vteps(), mirrored(NET));
    fx.mesh
        .set_vteps(None, &Default::default())
        .expect("emptied");
    assert!(fx.mesh.fast_path().vteps().is_empty());

    // One device's write leaves the other devices' entries.
    let mut two = mirrored(NET);
    let (key, vtep) = two.first_key_value().map(|(k, v)| (*k, *v)).expect("one");
    let other = shoal_common::mesh::PeerKey { dev: 2, ..key };
    two.insert(other, vtep);
    fx.mesh.set_vteps(None, &two).expect("two devices");
    fx.mesh
        .set_vteps(Some(1), &Default::default())
        .expect("device 1 emptied");
    assert_eq!(
        fx.mesh.fast_path().vteps().into_keys().collect::<Vec<_>>(),
        vec![other],
        "device 2's entry stays"
    );

    fx.mesh.set_vteps(None, &mirrored(NET)).expect("full");
    fx.mesh
        .set_fast_path(crate::datapath::mesh::FastPath::Redirect)
        .expect("redirect");
    assert!(fx.mesh.fast_path().vteps().is_empty());
    fx.mesh
        .set_vteps(None, &mirrored(NET))
        .expect("redirect mode");
    assert!(fx.mesh.fast_path().vteps().is_empty());
}
