//! Fixture tables for the routing mesh, run through BPF_PROG_TEST_RUN on the
//! real object: input frame → verdict, output frame and the counters it
//! bumps. Expected frames are built from scratch with checksums computed
//! here, so a match also proves the program's incremental checksum updates;
//! every output is checked independently for valid checksums too. Needs root
//! (loads programs), as the suite does.

use std::net::Ipv4Addr;

use shoal_common::mesh::{
    BACKEND_F_LOCAL, Backend, FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MAGLEV_SIZE,
    MeshConfig, MeshReason, PROG_MESH_EGRESS, PROG_MESH_INGRESS, SVC_F_AFFINITY, SVC_F_INGRESS,
    SVC_F_VIP, Service, ServiceKey, ServiceStats, flow_hash,
};
use shoal_mesh::MaglevBackend;

use super::{Datapath, mesh::Mesh, test_run};

const OK: i32 = 0;
const SHOT: i32 = 2;
const UNSPEC: i32 = -1;

const IN: &str = PROG_MESH_INGRESS;
const OUT: &str = PROG_MESH_EGRESS;

const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_PSH_ACK: u8 = 0x18;
const TCP_SYN_ACK: u8 = 0x12;

/// A frame to build: Ethernet, IPv4 (with options), TCP, UDP or ICMP echo,
/// payload. ICMP: `tcp_flags` holds the type, and the identifier is
/// `sport` of a request and `dport` of a reply (the mesh's FlowKey).
#[derive(Clone, Debug)]
struct Pkt {
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    ip_opts: Vec<u8>,
    /// The IPv4 flags + fragment offset field, host order.
    frag: u16,
    payload: Vec<u8>,
    /// UDP only: false sends checksum 0 ("none").
    udp_csum: bool,
}

impl Pkt {
    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Pkt {
            src,
            sport,
            dst,
            dport,
            proto: IPPROTO_TCP,
            tcp_flags: flags,
            ip_opts: Vec::new(),
            frag: 0x4000, // DF
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            udp_csum: true,
        }
    }

    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Pkt {
            proto: IPPROTO_UDP,
            tcp_flags: 0,
            frag: 0,
            payload: b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec(),
            ..Pkt::tcp(src, sport, dst, dport, 0)
        }
    }

    /// An echo request (`id` as sport) or reply (`id` as dport).
    fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Self {
        let (sport, dport, kind) = if request { (id, 0, 8) } else { (0, id, 0) };
        Pkt {
            proto: IPPROTO_ICMP,
            tcp_flags: kind,
            frag: 0x4000,
            payload: b"shoal-ping-0123456789".to_vec(),
            ..Pkt::tcp(src, sport, dst, dport, 0)
        }
    }

    fn to(&self, dst: Ipv4Addr, dport: u16) -> Self {
        Pkt {
            dst,
            dport,
            ..self.clone()
        }
    }

    fn from(&self, src: Ipv4Addr, sport: u16) -> Self {
        Pkt {
            src,
            sport,
            ..self.clone()
        }
    }

    fn with_flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    fn flow(&self) -> FlowKey {
        FlowKey::new(
            self.src.into(),
            self.sport,
            self.dst.into(),
            self.dport,
            self.proto,
        )
    }

    fn icmp(&self) -> Vec<u8> {
        let id = if self.tcp_flags == 8 {
            self.sport
        } else {
            self.dport
        };
        let mut l4 = vec![self.tcp_flags, 0, 0, 0];
        l4.extend_from_slice(&id.to_be_bytes());
        l4.extend_from_slice(&7u16.to_be_bytes()); // sequence
        l4.extend_from_slice(&self.payload);
        let c = !ones_sum(0, &l4);
        l4[2..4].copy_from_slice(&c.to_be_bytes());
        l4
    }

    fn tcp_udp(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        let csum_at = if self.proto == IPPROTO_TCP {
            l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes()); // ack
            l4.extend_from_slice(&[5 << 4, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
            16
        } else {
            let len = (8 + self.payload.len()) as u16;
            l4.extend_from_slice(&len.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            6
        };
        l4.extend_from_slice(&self.payload);
        if self.proto == IPPROTO_TCP || self.udp_csum {
            let mut c = l4_checksum(self.src, self.dst, self.proto, &l4);
            if c == 0 && self.proto == IPPROTO_UDP {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        l4
    }

    fn frame(&self) -> Vec<u8> {
        assert_eq!(self.ip_opts.len() % 4, 0);
        let l4 = if self.proto == IPPROTO_ICMP {
            self.icmp()
        } else {
            self.tcp_udp()
        };

        let ihl = 20 + self.ip_opts.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.ip_opts);
        let c = !ones_sum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = eth(0x0800);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// One's-complement sum of 16-bit words, folded.
fn ones_sum(init: u32, data: &[u8]) -> u16 {
    let mut sum = init;
    for w in data.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        let lo = w.get(1).map_or(0, |b| u32::from(*b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    u32::from(ones_sum(0, &p))
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    !ones_sum(pseudo_sum(src, dst, proto, l4.len()), l4)
}

/// Checks an IPv4 TCP/UDP/ICMP frame's checksums from the bytes alone.
fn assert_checksums_valid(what: &str, f: &[u8]) {
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    assert_eq!(ones_sum(0, &ip[..ihl]), 0xffff, "{what}: IPv4 checksum");
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let (src, dst, proto) = (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ip[9],
    );
    let l4 = &ip[ihl..tot];
    if proto == IPPROTO_UDP && l4[6..8] == [0, 0] {
        return;
    }
    if proto == IPPROTO_ICMP {
        assert_eq!(ones_sum(0, l4), 0xffff, "{what}: ICMP checksum");
        return;
    }
    let sum = ones_sum(pseudo_sum(src, dst, proto, l4.len()), l4);
    assert_eq!(sum, 0xffff, "{what}: L4 checksum");
}

/// Backends of the fixture: (id, task key, address, local).
const BACKENDS: [(u32, &str, Ipv4Addr, bool); 3] = [
    (1, "task-a", Ipv4Addr::new(10, 0, 0, 11), true),
    (2, "task-b", Ipv4Addr::new(10, 0, 0, 12), true),
    (3, "task-c", Ipv4Addr::new(10, 0, 0, 13), false),
];

fn addr_of(id: u32) -> Ipv4Addr {
    BACKENDS
        .iter()
        .find(|b| b.0 == id)
        .map(|b| b.2)
        .expect("fixture backend")
}

/// Frontends of the fixture: (key, service, backend ids).
struct Frontend {
    key: ServiceKey,
    svc: Service,
    backends: &'static [u32],
}

const WEB: u32 = 1;
const DNS: u32 = 2;
const REDIS: u32 = 3;
const EMPTY: u32 = 4;
const STICKY: u32 = 5;

fn frontends() -> Vec<Frontend> {
    let svc = |id, backend_count, target_port: u16, flags| Service {
        id,
        backend_count,
        target_port: target_port.to_be(),
        flags,
    };
    vec![
        // Published 8080/tcp → tasks' port 80, on every node.
        Frontend {
            key: ServiceKey::new(NODE.into(), 8080, IPPROTO_TCP),
            svc: svc(WEB, 3, 80, SVC_F_INGRESS),
            backends: &[1, 2, 3],
        },
        // Published 5353/udp → 53.
        Frontend {
            key: ServiceKey::new(NODE.into(), 5353, IPPROTO_UDP),
            svc: svc(DNS, 2, 53, SVC_F_INGRESS),
            backends: &[1, 2],
        },
        // A VIP: any TCP port, kept; its one task is on another node.
        Frontend {
            key: ServiceKey::new(VIP.into(), 0, IPPROTO_TCP),
            svc: svc(REDIS, 1, 0, SVC_F_VIP),
            backends: &[3],
        },
        // Published, scaled to 0.
        Frontend {
            key: ServiceKey::new(NODE.into(), 9000, IPPROTO_TCP),
            svc: svc(EMPTY, 0, 90, SVC_F_INGRESS),
            backends: &[],
        },
        // Client affinity.
        Frontend {
            key: ServiceKey::new(NODE.into(), 7000, IPPROTO_TCP),
            svc: svc(STICKY, 3, 70, SVC_F_INGRESS | SVC_F_AFFINITY),
            backends: &[1, 2, 3],
        },
    ]
}

fn ring(ids: &[u32]) -> Vec<u32> {
    let bs: Vec<MaglevBackend<'_>> = BACKENDS
        .iter()
        .filter(|b| ids.contains(&b.0))
        .map(|b| MaglevBackend {
            id: b.0,
            key: b.1.as_bytes(),
        })
        .collect();
    shoal_mesh::table(&bs).expect("maglev table")
}

struct Fixture {
    mesh: Mesh,
    _pins: super::mesh::TestPins,
    /// Each service's table as written.
    rings: std::collections::HashMap<u32, Vec<u32>>,
}

impl Fixture {
    fn new() -> Self {
        let pins = super::mesh::TestPins::new();
        let mut mesh = Mesh::load(pins.path()).expect("load the mesh object (needs root)");
        // In the order the program relies on: backends, rings, frontends.
        for (id, _, addr, local) in BACKENDS {
            let backend = Backend {
                addr: u32::from(addr).to_be(),
                vtep: u32::from(if local { NODE } else { PEER }).to_be(),
                flags: if local { BACKEND_F_LOCAL } else { 0 },
            };
            mesh.set_backend(id, backend).expect("backend");
        }
        let mut rings = std::collections::HashMap::new();
        for fe in frontends() {
            let r = ring(fe.backends);
            mesh.set_ring(fe.svc.id, &r).expect("ring");
            rings.insert(fe.svc.id, r);
        }
        for fe in frontends() {
            mesh.set_service(fe.key, fe.svc).expect("service");
        }
        Fixture {
            mesh,
            _pins: pins,
            rings,
        }
    }

    fn set_ring(&mut self, service: u32, ids: &[u32]) {
        let r = ring(ids);
        self.mesh.set_ring(service, &r).expect("ring");
        self.rings.insert(service, r);
    }

    /// The backend the Maglev table gives a new flow, as the program must.
    fn choice(&self, service: u32, p: &Pkt, affinity: bool) -> u32 {
        let h = flow_hash(&p.flow(), affinity);
        self.rings[&service][(h % MAGLEV_SIZE) as usize]
    }

    fn run(&mut self, prog: &'static str, frame: &[u8]) -> (i32, Vec<u8>) {
        let prog = Datapath::classifier(self.mesh.ebpf_mut(), prog).expect("program");
        test_run::run(prog, frame)
    }

    /// [`Self::run`] over `frame` made a GSO skb (see test_run::run_gso).
    fn run_gso(
        &mut self,
        prog: &'static str,
        frame: &[u8],
        segs: u32,
        size: u32,
    ) -> (i32, Vec<u8>) {
        let prog = Datapath::classifier(self.mesh.ebpf_mut(), prog).expect("program");
        test_run::run_gso(prog, frame, segs, size)
    }

    /// The isolation entry of the test run's device (lo, ifindex 1): the
    /// task veth the task programs see.
    fn endpoint(&mut self, own: u32, attachments: &[(u32, Ipv4Addr)]) {
        let ep = super::policy::endpoint(own, attachments).expect("endpoint");
        self.mesh.policy().set_endpoint(1, &ep).expect("endpoint");
    }

    fn reasons(&self) -> Vec<(MeshReason, u64)> {
        self.mesh.reasons().expect("reasons")
    }

    fn stats(&self, service: u32) -> ServiceStats {
        self.mesh.service_stats(service).expect("stats")
    }

    /// Runs one case: verdict, output frame (None: unchanged), and which
    /// reason counter moved (at most one, by one).
    /// `input` on the ingress program passes untouched, counting `reason`.
    fn passed_counting(&mut self, what: &str, input: &[u8], reason: MeshReason) {
        self.case(what, IN, input, UNSPEC, None, Some(reason));
    }

    fn case(
        &mut self,
        what: &str,
        prog: &'static str,
        input: &[u8],
        verdict: i32,
        output: Option<&[u8]>,
        reason: Option<MeshReason>,
    ) {
        let before = self.reasons();
        let (rc, out) = self.run(prog, input);
        assert_eq!(rc, verdict, "{what}: verdict");
        let expected = output.unwrap_or(input);
        assert_eq!(
            hex(&out),
            hex(expected),
            "{what}: output frame (got, expected)"
        );
        if rc == OK {
            assert_checksums_valid(what, &out);
        }
        let after = self.reasons();
        for ((r, b), (_, a)) in before.iter().zip(&after) {
            assert_eq!(a - b, u64::from(reason == Some(*r)), "{what}: reason {r:?}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn dnat_sticky_flows_and_reverse_nat() {
    let mut fx = Fixture::new();

    // A TCP SYN to a published port: DNAT to the Maglev choice, port 80.
    let syn = Pkt::tcp(CLIENT, 40000, NODE, 8080, TCP_SYN);
    let b = fx.choice(WEB, &syn, false);
    let be = addr_of(b);
    fx.case(
        "tcp syn to 8080",
        IN,
        &syn.frame(),
        OK,
        Some(&syn.to(be, 80).frame()),
        None,
    );
    let conn = fx
        .mesh
        .conn(&syn.flow())
        .expect("ct")
        .expect("flow tracked");
    assert_eq!(conn.backend, b);
    assert_eq!(conn.service, WEB);
    assert_eq!(u16::from_be(conn.backend_port), 80);
    let reply = Pkt::tcp(be, 80, CLIENT, 40000, TCP_SYN_ACK);
    let rev = fx
        .mesh
        .revnat(&reply.flow())
        .expect("revnat")
        .expect("reply tracked");
    assert_eq!(
        (u32::from_be(rev.addr), u16::from_be(rev.port)),
        (NODE.into(), 8080)
    );

    // The reply from the backend leaves as if from the published port.
    fx.case(
        "syn-ack reverse NAT",
        OUT,
        &reply.frame(),
        OK,
        Some(&reply.from(NODE, 8080).frame()),
        None,
    );

    // The flow sticks to its backend though the ring now says otherwise.
    let other: Vec<u32> = [1, 2, 3].into_iter().filter(|x| *x != b).collect();
    fx.set_ring(WEB, &other);
    let ack = syn.clone().with_flags(TCP_PSH_ACK);
    fx.case(
        "same flow, ring changed",
        IN,
        &ack.frame(),
        OK,
        Some(&ack.to(be, 80).frame()),
        None,
    );
    // A new connection on the same 5-tuple takes the ring's current choice.
    let b2 = fx.choice(WEB, &syn, false);
    assert_ne!(b2, b);
    fx.case(
        "new syn on an old 5-tuple",
        IN,
        &syn.frame(),
        OK,
        Some(&syn.to(addr_of(b2), 80).frame()),
        None,
    );

    let s = fx.stats(WEB);
    assert_eq!((s.packets, s.new_flows, s.reply_packets), (3, 2, 1));
    assert_eq!(
        s.remote,
        [b, b, b2].iter().filter(|x| **x == 3).count() as u64
    );
}

#[test]
fn udp_vip_and_remote_backends() {
    let mut fx = Fixture::new();

    let q = Pkt::udp(CLIENT, 53000, NODE, 5353);
    let be = addr_of(fx.choice(DNS, &q, false));
    fx.case(
        "udp to 5353",
        IN,
        &q.frame(),
        OK,
        Some(&q.to(be, 53).frame()),
        None,
    );
    let r = Pkt::udp(be, 53, CLIENT, 53000);
    fx.case(
        "udp reply",
        OUT,
        &r.frame(),
        OK,
        Some(&r.from(NODE, 5353).frame()),
        None,
    );

    // Checksum 0 means none: it stays 0 through the rewrite.
    let mut q0 = Pkt::udp(CLIENT, 53001, NODE, 5353);
    q0.udp_csum = false;
    let be0 = addr_of(fx.choice(DNS, &q0, false));
    fx.case(
        "udp without checksum",
        IN,
        &q0.frame(),
        OK,
        Some(&q0.to(be0, 53).frame()),
        None,
    );

    // Any port of a VIP, port kept; the only task is remote. VIPs are
    // reached from tasks (the underlay is refused them: policy_tests).
    let client = Ipv4Addr::new(10, 0, 1, 9);
    fx.endpoint(7, &[(7, client)]);
    let task_in = shoal_common::mesh::PROG_TASK_INGRESS;
    let v = Pkt::tcp(client, 41000, VIP, 6379, TCP_SYN);
    fx.case(
        "vip any port",
        task_in,
        &v.frame(),
        OK,
        Some(&v.to(addr_of(3), 6379).frame()),
        None,
    );
    let s = fx.stats(REDIS);
    assert_eq!((s.packets, s.remote), (1, 1));
    // A VIP has no UDP entry here: passes untouched.
    let vu = Pkt::udp(Ipv4Addr::new(10, 0, 1, 9), 41000, VIP, 6379);
    fx.case(
        "vip udp, no entry",
        task_in,
        &vu.frame(),
        UNSPEC,
        None,
        None,
    );
}

#[test]
fn passes_what_is_not_a_frontend_and_counts_the_malformed() {
    let mut fx = Fixture::new();
    let syn = Pkt::tcp(CLIENT, 40000, NODE, 8080, TCP_SYN);

    let with_opts = Pkt {
        // Router alert, one word: the L4 header starts 4 bytes later.
        ip_opts: vec![0x94, 0x04, 0x00, 0x00],
        ..syn.clone()
    };
    let be = addr_of(fx.choice(WEB, &with_opts, false));
    fx.case(
        "ip options",
        IN,
        &with_opts.frame(),
        OK,
        Some(&with_opts.to(be, 80).frame()),
        None,
    );

    let ssh = Pkt::tcp(CLIENT, 40001, NODE, 22, TCP_SYN);
    fx.case("unknown port", IN, &ssh.frame(), UNSPEC, None, None);
    let other_host = Pkt::tcp(CLIENT, 40001, PEER, 8080, TCP_SYN);
    fx.case("other address", IN, &other_host.frame(), UNSPEC, None, None);
    let no_flow = Pkt::tcp(addr_of(1), 80, CLIENT, 39999, TCP_ACK);
    fx.case(
        "reply of no flow",
        OUT,
        &no_flow.frame(),
        UNSPEC,
        None,
        None,
    );

    let mut ipv6 = eth(0x86dd);
    ipv6.extend_from_slice(&[0x60; 60]);
    fx.case("ipv6", IN, &ipv6, UNSPEC, None, None);
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0; 28]);
    fx.case("arp", IN, &arp, UNSPEC, None, None);
    let mut icmp = syn.frame();
    icmp[14 + 9] = 1;
    fx.case("icmp", IN, &icmp, UNSPEC, None, None);

    // Fragments are not balanced: the first is counted, later ones carry
    // no ports and are not even attributed.
    let first = Pkt {
        frag: 0x2000,
        ..syn.clone()
    };
    fx.passed_counting("first fragment", &first.frame(), MeshReason::Fragment);
    let later = Pkt {
        frag: 0x0010,
        ..syn.clone()
    };
    fx.case("later fragment", IN, &later.frame(), UNSPEC, None, None);

    // The kernel refuses to test-run a frame shorter than an IPv4 header, so
    // truncation is shown by headers longer than what follows them.
    let mut long_ihl = syn.frame();
    long_ihl[14] = 0x4f;
    long_ihl.truncate(14 + 40);
    fx.passed_counting("options past the end", &long_ihl, MeshReason::TruncatedIpv4);
    let mut short_tcp = syn.frame();
    short_tcp.truncate(14 + 20 + 10);
    fx.passed_counting("tcp header cut", &short_tcp, MeshReason::TruncatedL4);
    let mut short_udp = Pkt::udp(CLIENT, 1, NODE, 5353).frame();
    short_udp.truncate(14 + 20 + 6);
    fx.passed_counting("udp header cut", &short_udp, MeshReason::TruncatedL4);
    let mut v6_in_v4 = syn.frame();
    v6_in_v4[14] = 0x65;
    fx.passed_counting(
        "ip version 6 in an ipv4 frame",
        &v6_in_v4,
        MeshReason::BadIpv4Header,
    );
    let mut ihl3 = syn.frame();
    ihl3[14] = 0x43;
    fx.passed_counting("ihl 3", &ihl3, MeshReason::BadIpv4Header);
    assert_eq!(
        fx.stats(WEB).packets,
        1,
        "only the options case was balanced"
    );
}

#[test]
fn no_backend_drops_and_removed_backends_are_never_used() {
    let mut fx = Fixture::new();

    let p = Pkt::tcp(CLIENT, 40000, NODE, 9000, TCP_SYN);
    fx.case(
        "service with no tasks",
        IN,
        &p.frame(),
        SHOT,
        None,
        Some(MeshReason::NoBackend),
    );
    assert_eq!(fx.stats(EMPTY).drops, 1);

    // Find a flow on a backend, then take that backend away the way
    // userspace must: new ring first, then the backend entry.
    let syn = Pkt::tcp(CLIENT, 40100, NODE, 8080, TCP_SYN);
    let b = fx.choice(WEB, &syn, false);
    fx.case(
        "flow",
        IN,
        &syn.frame(),
        OK,
        Some(&syn.to(addr_of(b), 80).frame()),
        None,
    );
    let rest: Vec<u32> = [1, 2, 3].into_iter().filter(|x| *x != b).collect();
    fx.set_ring(WEB, &rest);
    fx.mesh.remove_backend(b).expect("remove");
    let ack = syn.clone().with_flags(TCP_ACK);
    let nb = fx.choice(WEB, &ack, false);
    assert_ne!(nb, b);
    fx.case(
        "tracked flow, backend gone",
        IN,
        &ack.frame(),
        OK,
        Some(&ack.to(addr_of(nb), 80).frame()),
        None,
    );
    assert_eq!(
        fx.mesh.conn(&syn.flow()).expect("ct").map(|c| c.backend),
        Some(nb)
    );

    // A ring naming a backend without an entry: the order was violated,
    // and the packet is dropped rather than sent anywhere.
    fx.set_ring(WEB, &[b]);
    let p2 = Pkt::tcp(CLIENT, 40200, NODE, 8080, TCP_SYN);
    fx.case(
        "ring names a removed backend",
        IN,
        &p2.frame(),
        SHOT,
        None,
        Some(MeshReason::MissingBackend),
    );
}

#[test]
fn affinity_and_idle_timeout() {
    let mut fx = Fixture::new();

    // With affinity, every connection of a client lands on one backend.
    let first = Pkt::tcp(CLIENT, 40000, NODE, 7000, TCP_SYN);
    let b = fx.choice(STICKY, &first, true);
    for port in [40000, 40001, 52000, 61000] {
        let p = Pkt::tcp(CLIENT, port, NODE, 7000, TCP_SYN);
        fx.case(
            "affinity",
            IN,
            &p.frame(),
            OK,
            Some(&p.to(addr_of(b), 70).frame()),
            None,
        );
    }

    // An idle UDP flow past its timeout chooses again.
    let q = Pkt::udp(CLIENT, 53000, NODE, 5353);
    let b1 = fx.choice(DNS, &q, false);
    fx.case(
        "udp flow",
        IN,
        &q.frame(),
        OK,
        Some(&q.to(addr_of(b1), 53).frame()),
        None,
    );
    let other = if b1 == 1 { 2 } else { 1 };
    fx.set_ring(DNS, &[other]);
    fx.case(
        "udp flow within timeout",
        IN,
        &q.frame(),
        OK,
        Some(&q.to(addr_of(b1), 53).frame()),
        None,
    );
    fx.mesh
        .set_config(MeshConfig {
            tcp_timeout_ns: 0,
            udp_timeout_ns: 1,
            ..MeshConfig::default()
        })
        .expect("config");
    fx.case(
        "udp flow past timeout",
        IN,
        &q.frame(),
        OK,
        Some(&q.to(addr_of(other), 53).frame()),
        None,
    );
    assert_eq!(fx.stats(DNS).new_flows, 2);
}

/// Brings `lo` of the calling thread's network namespace up (SIOCSIFFLAGS).
#[allow(unsafe_code)]
fn loopback_up() -> std::io::Result<()> {
    loopback_ioctl(|sock, ifr| {
        // SAFETY: ifr lives across both calls and names an interface.
        unsafe {
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut *ifr) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &*ifr) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// Sets `lo`'s MTU (in a namespace of the test's own).
#[allow(unsafe_code)]
fn loopback_mtu(mtu: i32) -> std::io::Result<()> {
    loopback_ioctl(|sock, ifr| {
        ifr.ifr_ifru.ifru_mtu = mtu;
        // SAFETY: ifr names an interface and lives across the call.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFMTU, &*ifr) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Runs `f` with an interface-ioctl socket and an ifreq naming `lo`.
#[allow(unsafe_code)]
fn loopback_ioctl(
    f: impl FnOnce(libc::c_int, &mut libc::ifreq) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    f(sock.as_raw_fd(), &mut ifr)
}

/// A connection of the node's own from `source` (bound before connecting)
/// to `peer`, with data from the peer read through it: the handshake's
/// and the data's replies came back. Both ends, the node's first.
fn node_connection(
    source: (Ipv4Addr, u16),
    peer: &std::net::TcpListener,
) -> (std::net::TcpStream, std::net::TcpStream) {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&std::net::SocketAddr::from(source).into())
        .expect("bind the source port");
    sock.connect_timeout(&peer.local_addr().expect("addr").into(), timeout)
        .unwrap_or_else(|e| panic!("the node's own connection from {source:?}: {e}"));
    let mut own: std::net::TcpStream = sock.into();
    own.set_read_timeout(Some(timeout)).expect("timeout");
    let (mut far, _) = peer.accept().expect("accept");
    far.write_all(b"from the peer").expect("write");
    let mut got = [0u8; 13];
    own.read_exact(&mut got)
        .expect("data reaches the node's socket");
    assert_eq!(&got, b"from the peer");
    (own, far)
}

/// The counters and the mesh on one interface (TCX, mesh after the
/// counters), with real sockets in a namespace of its own: a UDP and a TCP client
/// calls a frontend, the backend sees the client's own address, and the
/// reply comes back from the frontend (the client's socket is connected to
/// it, so the kernel would drop a reply from anywhere else). On `lo` both
/// directions cross egress then ingress, which is where the two programs sit.
#[test]
fn balances_real_traffic_beside_the_counters() {
    use std::{net::UdpSocket, time::Duration};

    use nix::sched::{CloneFlags, unshare};
    use shoal_common::stats::{Direction, Proto};

    // unshare() moves only the calling thread; the namespace dies with it.
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        loopback_up().expect("lo up");
        let mut counters = Datapath::load().expect("load counters");
        counters.attach("lo").expect("attach counters");
        let pins = super::mesh::TestPins::new();
        let mut mesh = Mesh::load(pins.path()).expect("load mesh");
        assert_eq!(
            mesh.attach("lo").expect("attach mesh"),
            super::AttachMode::Tcx
        );

        let frontend = Ipv4Addr::new(127, 0, 0, 2);
        let backend = UdpSocket::bind("127.0.0.1:0").expect("backend socket");
        let backend_port = backend.local_addr().expect("addr").port();
        mesh.set_backend(
            1,
            Backend {
                addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
                vtep: 0,
                flags: BACKEND_F_LOCAL,
            },
        )
        .expect("backend");
        let table = shoal_mesh::table(&[MaglevBackend {
            id: 1,
            key: b"task-lo",
        }])
        .expect("table");
        mesh.set_ring(7, &table).expect("ring");
        mesh.set_service(
            ServiceKey::new(frontend.into(), 5353, IPPROTO_UDP),
            Service {
                id: 7,
                backend_count: 1,
                target_port: backend_port.to_be(),
                flags: SVC_F_INGRESS,
            },
        )
        .expect("service");

        let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        client.connect((frontend, 5353)).expect("connect");
        for s in [&client, &backend] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        client.send(b"ping").expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = backend.recv_from(&mut buf).expect("the backend receives");
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(
            from,
            client.local_addr().expect("addr"),
            "client address kept"
        );
        backend.send_to(b"pong", from).expect("reply");
        let n = client.recv(&mut buf).expect("the reply reaches the client");
        assert_eq!(&buf[..n], b"pong");

        let s = mesh.service_stats(7).expect("stats");
        assert_eq!((s.packets, s.reply_packets, s.new_flows), (1, 1, 1));

        // TCP: a whole connection (handshake, data both ways, close) on
        // one tracked flow.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        mesh.set_service(
            ServiceKey::new(frontend.into(), 8080, IPPROTO_TCP),
            Service {
                id: 8,
                backend_count: 1,
                target_port: port.to_be(),
                flags: SVC_F_INGRESS,
            },
        )
        .expect("service");
        mesh.set_ring(8, &table).expect("ring");
        let mut conn =
            std::net::TcpStream::connect_timeout(&(frontend, 8080).into(), Duration::from_secs(5))
                .expect("connect through the frontend");
        assert_eq!(conn.peer_addr().expect("peer"), (frontend, 8080).into());
        let (mut accepted, peer) = listener.accept().expect("accept");
        assert_eq!(
            peer,
            conn.local_addr().expect("addr"),
            "client address kept"
        );
        use std::io::{Read, Write};
        conn.write_all(&[7u8; 100_000]).expect("write");
        let mut got = vec![0u8; 100_000];
        accepted.read_exact(&mut got).expect("read");
        accepted.write_all(b"done").expect("reply");
        drop(accepted);
        let mut end = Vec::new();
        conn.read_to_end(&mut end).expect("read to end");
        assert_eq!(end, b"done");
        let s = mesh.service_stats(8).expect("stats");
        assert_eq!(s.new_flows, 1, "one connection, one backend choice");
        assert!(s.packets >= 3 && s.reply_packets >= 3);

        // The node's own connection whose source is the published address
        // and port (a client binding it): its replies arrive addressed to
        // the frontend without a tracked flow, and must reach the node's
        // socket untranslated, handshake and data alike.
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let (mut own, mut far) = node_connection((frontend, 8080), &other);
        own.write_all(b"ok").expect("write");
        drop(own);
        let mut end = Vec::new();
        far.read_to_end(&mut end).expect("read to end");
        assert_eq!(end, b"ok");
        let s = mesh.service_stats(8).expect("stats");
        assert_eq!(s.new_flows, 1, "the node's own connection was not balanced");

        // The same from a port of the egress range on the node's address,
        // where replies no translated flow explains are dropped: a socket
        // of the node's own explains them (TCP and connected UDP).
        mesh.set_config(MeshConfig {
            node_mac: shoal_common::mesh::bridge_mac(u32::from(frontend)),
            ..MeshConfig::default()
        })
        .expect("config");
        node_connection((frontend, 61500), &other);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
        let mine = UdpSocket::bind((frontend, 61501)).expect("bind an egress port");
        mine.connect(peer.local_addr().expect("addr"))
            .expect("connect");
        mine.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        mine.send(b"q").expect("send");
        let (_, from) = peer.recv_from(&mut buf).expect("the peer receives");
        peer.send_to(b"a", from).expect("answer");
        let n = mine
            .recv(&mut buf)
            .expect("the answer reaches the node's socket");
        assert_eq!(&buf[..n], b"a");
        assert!(
            !mesh
                .reasons()
                .expect("reasons")
                .iter()
                .any(|(r, n)| *r == MeshReason::EgressNoFlow && *n > 0),
            "a reply to the node's own socket was dropped"
        );
        // A datagram to that port for no socket of the node's is still
        // dropped (the forged-reply guard stands).
        drop(mine);
        let forger = UdpSocket::bind("127.0.0.1:0").expect("socket");
        forger.send_to(b"x", (frontend, 61501)).expect("send");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !mesh
            .reasons()
            .expect("reasons")
            .iter()
            .any(|(r, n)| *r == MeshReason::EgressNoFlow && *n > 0)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the forged datagram passed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let c = counters.stats().expect("counters");
        let udp = |d| {
            c.counters
                .iter()
                .find(|x| x.0 == d && x.1 == Proto::Udp)
                .map(|x| x.2.packets)
                .unwrap_or_default()
        };
        assert!(udp(Direction::Ingress) >= 2 && udp(Direction::Egress) >= 2);
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Task veths: a task's packets to a VIP are DNATed as a client's are and
/// their replies reverse-NATed on the way back to it; a flow another node
/// routed here is remembered by that node's bridge MAC, and the task's
/// replies are addressed back to that MAC, untouched otherwise.
#[test]
fn task_veths_balance_vips_and_send_replies_back_through_the_ingress_node() {
    use shoal_common::mesh::{PROG_TASK_EGRESS, PROG_TASK_INGRESS, bridge_mac};
    let mut fx = Fixture::new();
    const TASK: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
    // The task's veth is the test run's device (lo), on a network this
    // node's isolation map does not hold: every destination is outside.
    fx.endpoint(7, &[(7, TASK)]);
    let own = bridge_mac(u32::from(NODE));
    let peer = bridge_mac(u32::from(PEER));
    fx.mesh
        .set_config(MeshConfig {
            node_mac: own,
            ..MeshConfig::default()
        })
        .expect("config");
    let with_macs = |mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]| {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    };
    let task_mac = [0x02, 0x42, 10, 0, 0, 11];

    // A client's SYN DNATed by the peer node arrives from the peer's bridge.
    let syn = Pkt::tcp(CLIENT, 40000, TASK, 80, TCP_SYN);
    let arrived = with_macs(syn.frame(), task_mac, peer);
    fx.case(
        "routed by a peer",
        PROG_TASK_EGRESS,
        &arrived,
        UNSPEC,
        None,
        None,
    );
    let reply = Pkt::tcp(TASK, 80, CLIENT, 40000, TCP_SYN_ACK);
    let key = reply.flow();
    let path = fx
        .mesh
        .return_path(&key)
        .expect("read")
        .expect("remembered");
    assert_eq!(path.mac, peer);

    // The task's reply goes to the peer's bridge instead of its gateway.
    let sent = with_macs(reply.frame(), own, task_mac);
    let back = with_macs(reply.frame(), peer, task_mac);
    fx.case(
        "reply to a peer's flow",
        PROG_TASK_INGRESS,
        &sent,
        OK,
        Some(&back),
        None,
    );

    // Routed by this node itself: nothing to remember.
    let local = Pkt::tcp(CLIENT, 40001, TASK, 80, TCP_SYN);
    fx.case(
        "routed here",
        PROG_TASK_EGRESS,
        &with_macs(local.frame(), task_mac, own),
        UNSPEC,
        None,
        None,
    );
    let local_reply = Pkt::tcp(TASK, 80, CLIENT, 40001, TCP_SYN_ACK);
    assert!(
        fx.mesh
            .return_path(&local_reply.flow())
            .expect("read")
            .is_none()
    );
    fx.case(
        "reply to a local flow",
        PROG_TASK_INGRESS,
        &with_macs(local_reply.frame(), own, task_mac),
        UNSPEC,
        None,
        None,
    );
    // The client reuses the peer's flow's port towards this node's address:
    // the same 4-tuple at the task, but routed here. The peer's return path
    // goes, and the replies stay on this node (seen in a capture: SYN-ACKs
    // sent to the peer, which reverse-NATed them to its own address, and
    // the client reset them).
    fx.case(
        "same 4-tuple, routed here now",
        PROG_TASK_EGRESS,
        &with_macs(syn.frame(), task_mac, own),
        UNSPEC,
        None,
        None,
    );
    assert!(fx.mesh.return_path(&key).expect("read").is_none());
    fx.case(
        "reply to the reused 4-tuple",
        PROG_TASK_INGRESS,
        &with_macs(reply.frame(), own, task_mac),
        UNSPEC,
        None,
        None,
    );
    // Straight from another task: not a bridge MAC.
    let direct = Pkt::tcp(Ipv4Addr::new(10, 0, 0, 50), 5000, TASK, 80, TCP_SYN);
    fx.case(
        "from a task",
        PROG_TASK_EGRESS,
        &with_macs(direct.frame(), task_mac, [0x02, 0x42, 10, 0, 0, 50]),
        UNSPEC,
        None,
        None,
    );
    let direct_reply = Pkt::tcp(TASK, 80, Ipv4Addr::new(10, 0, 0, 50), 5000, TCP_SYN_ACK);
    assert!(
        fx.mesh
            .return_path(&direct_reply.flow())
            .expect("read")
            .is_none()
    );

    // A task connecting to a VIP (its ARP gave this node's bridge MAC) is
    // balanced, and the reply gets the VIP back.
    let to_vip = Pkt::tcp(TASK, 41000, VIP, 6379, TCP_SYN);
    let chosen = fx.choice(REDIS, &to_vip, false);
    let dnated = to_vip.to(addr_of(chosen), 6379);
    fx.case(
        "task to VIP",
        PROG_TASK_INGRESS,
        &with_macs(to_vip.frame(), own, task_mac),
        OK,
        Some(&with_macs(dnated.frame(), own, task_mac)),
        None,
    );
    // Frontends are only reached through this node's bridge: the same
    // packet to another MAC is task to task, left to isolation (here the
    // VIP is outside every network the map holds: egress).
    fx.case(
        "task to VIP, to another MAC",
        PROG_TASK_INGRESS,
        &with_macs(to_vip.frame(), [0x02, 0x42, 10, 0, 0, 50], task_mac),
        UNSPEC,
        None,
        None,
    );
    let from_backend = Pkt::tcp(addr_of(chosen), 6379, TASK, 41000, TCP_SYN_ACK);
    fx.case(
        "VIP reply to the task",
        PROG_TASK_EGRESS,
        &from_backend.frame(),
        OK,
        Some(&from_backend.from(VIP, 6379).frame()),
        None,
    );
}

/// Isolation's fixture tables (common/src/policy.rs) on the same object.
#[path = "policy_tests.rs"]
mod policy_tests;

/// Egress SNAT's fixture tables (common/src/egress.rs) on the same object.
#[path = "egress_tests.rs"]
mod egress_tests;

#[path = "ipsec_tests.rs"]
mod ipsec_tests;

#[path = "fastpath_tests.rs"]
mod fastpath_tests;
