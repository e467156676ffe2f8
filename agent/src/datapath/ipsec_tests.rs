//! Encrypted networks in the datapath, through BPF_PROG_TEST_RUN on the
//! real object: a task's packets to an encrypted network leave its veth
//! with the IPsec mark (the xfrm policy selects it), others without; and
//! VXLAN of an encrypted VNI in clear on the data interface is dropped,
//! arriving (as an injecting host on the underlay would send it) or
//! leaving (a leak past the tunnel).

use std::collections::BTreeMap;

use shoal_common::{
    mesh::{IPPROTO_UDP, MeshReason, PROG_TASK_INGRESS},
    policy::{IPSEC_MARK, IPSEC_REQID, NET_F_ENCRYPTED, NetEntry},
};

use super::*;

const ENC: u32 = 4098;
const PLAIN: u32 = 4099;
/// On ENC (10.0.1.0/24, where the fixture's VIP is) and on PLAIN.
const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
const TASK_PLAIN: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 5);
const PEER_ENC: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 6);
const PEER_PLAIN: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 6);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const VXLAN_PORT: u16 = 4789;

fn encrypted() -> Fixture {
    assert_eq!(IPSEC_MARK, shoal_xfrm::MARK, "the mark the policies select");
    assert_eq!(IPSEC_REQID, shoal_xfrm::REQID, "the reqid the states carry");
    let mut fx = Fixture::new();
    let nets = BTreeMap::from([
        (
            (Ipv4Addr::new(10, 0, 1, 0), 24),
            NetEntry {
                net: ENC,
                flags: NET_F_ENCRYPTED,
            },
        ),
        (
            (Ipv4Addr::new(10, 0, 2, 0), 24),
            NetEntry {
                net: PLAIN,
                flags: 0,
            },
        ),
    ]);
    fx.mesh.policy().set_networks(&nets).expect("networks");
    let vnis = BTreeMap::from([(ENC, u32::from(VXLAN_PORT))]);
    fx.mesh.policy().set_encrypted_vnis(&vnis).expect("vnis");
    fx.endpoint(ENC, &[(ENC, TASK), (PLAIN, TASK_PLAIN)]);
    fx
}

fn run_mark(fx: &mut Fixture, frame: &[u8]) -> (i32, u32) {
    let prog = Datapath::classifier(fx.mesh.ebpf_mut(), PROG_TASK_INGRESS).expect("program");
    test_run::run_mark(prog, frame)
}

#[test]
fn a_tasks_packets_to_an_encrypted_network_carry_the_ipsec_mark() {
    let mut fx = encrypted();
    let cases = [
        (
            "tcp to a task on the encrypted network",
            Pkt::tcp(TASK, 40000, PEER_ENC, 80, TCP_SYN),
            UNSPEC,
            IPSEC_MARK,
        ),
        (
            "udp to a task on the encrypted network",
            Pkt::udp(TASK, 40000, PEER_ENC, 53),
            UNSPEC,
            IPSEC_MARK,
        ),
        (
            // Marked by where it goes after DNAT: the fixture's backend
            // (10.0.0.13) is on no encrypted network.
            "to the encrypted network's VIP, DNATed to a plain backend",
            Pkt::tcp(TASK, 41000, VIP, 6379, TCP_SYN),
            OK,
            0,
        ),
        (
            "to a task on the plain network",
            Pkt::tcp(TASK_PLAIN, 40000, PEER_PLAIN, 80, TCP_SYN),
            UNSPEC,
            0,
        ),
        (
            "to the outside",
            Pkt::tcp(TASK, 40000, OUTSIDE, 443, TCP_SYN),
            UNSPEC,
            0,
        ),
    ];
    for (what, pkt, verdict, mark) in cases {
        assert_eq!(run_mark(&mut fx, &pkt.frame()), (verdict, mark), "{what}");
    }
    // The backend's network encrypted too: the same flow is marked.
    let mut nets = fx.mesh.policy().networks().expect("read");
    nets.insert(
        (Ipv4Addr::new(10, 0, 0, 0), 24),
        NetEntry {
            net: ENC + 10,
            flags: NET_F_ENCRYPTED,
        },
    );
    fx.mesh.policy().set_networks(&nets).expect("networks");
    let to_vip = Pkt::tcp(TASK, 41000, VIP, 6379, TCP_SYN);
    assert_eq!(
        run_mark(&mut fx, &to_vip.frame()),
        (OK, IPSEC_MARK),
        "VIP, encrypted backend"
    );
    // A packet the mesh cannot parse still passes (the stack decides), and
    // still goes encrypted: marking fails closed.
    let mut cut = Pkt::tcp(TASK, 40000, PEER_ENC, 80, TCP_SYN).frame();
    cut.truncate(14 + 20 + 4);
    assert_eq!(run_mark(&mut fx, &cut), (UNSPEC, IPSEC_MARK), "truncated");
}

/// VXLAN from `PEER`'s address to this node, VNI `vni`, on `port`.
fn vxlan(vni: u32, port: u16) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    // The inner frame: a task's packet on the overlay.
    payload.extend(Pkt::tcp(PEER_ENC, 40000, TASK, 80, TCP_SYN).frame());
    Pkt {
        payload,
        udp_csum: false,
        ..Pkt::udp(PEER, 50000, NODE, port)
    }
    .frame()
}

#[test]
fn cleartext_vxlan_of_an_encrypted_vni_is_dropped_on_the_data_interface() {
    let mut fx = encrypted();
    assert_eq!(vxlan(ENC, VXLAN_PORT)[14 + 9], IPPROTO_UDP);
    fx.case(
        "an encrypted VNI in clear",
        IN,
        &vxlan(ENC, VXLAN_PORT),
        SHOT,
        None,
        Some(MeshReason::CleartextEncrypted),
    );
    fx.case(
        "a plain VNI",
        IN,
        &vxlan(PLAIN, VXLAN_PORT),
        UNSPEC,
        None,
        None,
    );
    fx.case(
        "the encrypted VNI's number on another UDP port: not its VXLAN",
        IN,
        &vxlan(ENC, 4790),
        UNSPEC,
        None,
        None,
    );
    // Leaving the node: never in clear either (it leaves as ESP or inside
    // WireGuard's UDP), while a plain VNI's goes.
    fx.case(
        "an encrypted VNI leaving in clear",
        OUT,
        &vxlan(ENC, VXLAN_PORT),
        SHOT,
        None,
        Some(MeshReason::CleartextEncrypted),
    );
    fx.case(
        "a plain VNI leaving",
        OUT,
        &vxlan(PLAIN, VXLAN_PORT),
        UNSPEC,
        None,
        None,
    );
    // The network no longer encrypted: its VXLAN passes again.
    fx.mesh
        .policy()
        .set_encrypted_vnis(&BTreeMap::new())
        .expect("vnis");
    fx.case(
        "after the network is gone",
        IN,
        &vxlan(ENC, VXLAN_PORT),
        UNSPEC,
        None,
        None,
    );
}
