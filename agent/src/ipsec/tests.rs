use std::{
    io,
    sync::{Arc, Mutex},
};

use shoal_api::cluster::v1::{Endpoint, NetworkAssignment};

use super::*;

const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PLAIN_PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

/// Records writes; refuses state adds with `refuse` (a kernel without ESP).
#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Vec<Op>>>,
    refuse: Option<i32>,
    /// What the kernel holds before this process wrote anything.
    left: Owned,
}

impl XfrmWrite for Fake {
    fn write(&mut self, op: &Op) -> Result<(), XfrmError> {
        self.log.lock().expect("log").push(op.clone());
        match (op, self.refuse) {
            (Op::AddSa(_), Some(errno)) => Err(XfrmError::Kernel {
                what: format!("{op:?}"),
                source: io::Error::from_raw_os_error(errno),
            }),
            _ => Ok(()),
        }
    }

    fn owned(&mut self) -> Result<Owned, XfrmError> {
        Ok(self.left.clone())
    }
}

impl Fake {
    fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

fn keys(tags: &[u64]) -> Vec<NetworkKey> {
    tags.iter()
        .map(|t| NetworkKey {
            subsystem: IPSEC_RING.into(),
            lamport_time: *t,
            key: vec![*t as u8; 16],
        })
        .chain([NetworkKey {
            subsystem: "networking:gossip".into(),
            lamport_time: 99,
            key: vec![0; 16],
        }])
        .collect()
}

fn endpoint(net: &str, node: Ipv4Addr) -> Endpoint {
    Endpoint {
        network_id: net.into(),
        task_id: format!("t-{net}-{node}"),
        node_addr: u32::from(node),
        ..Endpoint::default()
    }
}

/// `enc` (encrypted) with tasks here and on PEER; `plain` with tasks here
/// and on PLAIN_PEER.
fn set(tags: &[u64], peer_on_enc: bool) -> AssignmentSet {
    let net = |id: &str, vni, encrypted: bool| NetworkAssignment {
        id: id.into(),
        vni,
        encryption: if encrypted {
            Encryption::Ipsec.into()
        } else {
            Encryption::None.into()
        },
        ..NetworkAssignment::default()
    };
    let mut endpoints = vec![endpoint("enc", ME), endpoint("plain", PLAIN_PEER)];
    if peer_on_enc {
        endpoints.push(endpoint("enc", PEER));
    }
    AssignmentSet {
        version: 1,
        networks: vec![net("enc", 4097, true), net("plain", 4098, false)],
        endpoints,
        network_keys: keys(tags),
        ..AssignmentSet::default()
    }
}

#[test]
fn only_peers_on_encrypted_networks_get_states_and_a_policy() {
    assert_eq!(peers(&set(&[1, 2, 3], true), ME), BTreeSet::from([PEER]));
    let fake = Fake::default();
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    let ops = fake.take();
    let ring = ring(&keys(&[1, 2, 3])).expect("ring").expect("some");
    assert_eq!(
        ops,
        shoal_xfrm::plan(None, Some(&shoal_xfrm::pair(ME, PEER, 4789, &ring)))
    );
    assert!(ops.iter().all(|op| match op {
        Op::AddSa(s) => s.src != PLAIN_PEER && s.dst != PLAIN_PEER,
        Op::SetPolicy(p) | Op::DelPolicy(p) => p.dst == PEER,
        Op::DelSa(_) => false,
    }));
    let s = ipsec.status();
    assert_eq!((s.peers, s.states, s.policies, s.refused), (1, 4, 1, 0));
    // The same set again writes nothing.
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    assert!(fake.take().is_empty());
}

#[test]
fn a_rotation_and_a_departure_follow_the_schedule() {
    let fake = Fake::default();
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    fake.take();
    ipsec.sync(&set(&[2, 3, 4], true), ME);
    let r = |t: &[u64]| ring(&keys(t)).expect("ring").expect("some");
    let old = shoal_xfrm::pair(ME, PEER, 4789, &r(&[1, 2, 3]));
    let new = shoal_xfrm::pair(ME, PEER, 4789, &r(&[2, 3, 4]));
    assert_eq!(fake.take(), shoal_xfrm::plan(Some(&old), Some(&new)));
    assert_eq!(ipsec.status().rotations, 1);
    // The peer's last task on the encrypted network left: policy first.
    ipsec.sync(&set(&[2, 3, 4], false), ME);
    let ops = fake.take();
    assert_eq!(ops[0], Op::DelPolicy(new.policy));
    assert_eq!(ops.len(), 5);
    assert_eq!(ipsec.status().peers, 0);
}

#[test]
fn without_esp_the_policy_still_blocks_and_the_refusal_is_reported_once() {
    // What this machine's kernel answers (no rfc4106(gcm(aes)) / ESP).
    let fake = Fake {
        refuse: Some(libc::ENOENT),
        ..Fake::default()
    };
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    let ops = fake.take();
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::SetPolicy(p) if p.dst == PEER)),
        "no blocking policy: {ops:?}"
    );
    let s = ipsec.status();
    assert!(s.unsupported && s.refused == 4, "{s:?}");
    assert_eq!(s.states, 0);
    assert!(s.last_error.is_some_and(|e| e.contains("refused")));
    // Not retried on every set.
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    assert!(fake.take().is_empty());
}

#[test]
fn a_peer_before_the_keys_is_blocked_then_encrypted() {
    let fake = Fake::default();
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    let mut s = set(&[], true);
    s.network_keys.retain(|k| k.subsystem == IPSEC_RING);
    ipsec.sync(&s, ME);
    let blocked = Policy {
        src: ME,
        dst: PEER,
        dport: 4789,
        spi: 0,
    };
    assert_eq!(fake.take(), vec![Op::SetPolicy(blocked)]);
    assert_eq!(ipsec.status().blocked_without_keys, 1);
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    let ops = fake.take();
    assert!(matches!(ops.last(), Some(Op::SetPolicy(p)) if p.spi != 0));
    assert_eq!(ipsec.status().blocked_without_keys, 0);
}

#[test]
fn a_damaged_ring_changes_nothing() {
    let fake = Fake::default();
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    ipsec.sync(&set(&[1, 2, 3], true), ME);
    fake.take();
    let mut bad = set(&[2, 3, 4], true);
    bad.network_keys[0].key.truncate(5);
    ipsec.sync(&bad, ME);
    assert!(fake.take().is_empty());
    assert_eq!(ipsec.status().refused, 1);
    assert_eq!(ipsec.status().peers, 1);
}

#[test]
fn an_earlier_shoalds_leftovers_are_swept_once_after_the_install() {
    let r = |t: &[u64]| ring(&keys(t)).expect("ring").expect("some");
    // Left by the last process: PEER's pair under an older ring (tag 1
    // rotated out while this node was down) and a pair with a node that
    // left the network (GONE).
    const GONE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
    let before = shoal_xfrm::pair(ME, PEER, 4789, &r(&[1, 2, 3]));
    let gone = shoal_xfrm::pair(ME, GONE, 4789, &r(&[1, 2, 3]));
    let ids = |p: &PairState| -> Vec<SaId> {
        p.inbound
            .iter()
            .chain([&p.outbound])
            .map(|s| s.id())
            .collect()
    };
    let fake = Fake {
        left: Owned {
            sas: [ids(&before), ids(&gone)].concat(),
            policies: vec![before.policy, gone.policy],
        },
        ..Fake::default()
    };
    let mut ipsec = Ipsec::new(fake.clone(), 4789);
    ipsec.sync(&set(&[2, 3, 4], true), ME);
    let now = shoal_xfrm::pair(ME, PEER, 4789, &r(&[2, 3, 4]));
    let ops = fake.take();
    let install = shoal_xfrm::plan(None, Some(&now));
    assert_eq!(ops[..install.len()], install[..], "install first");
    let mut swept = ops[install.len()..].to_vec();
    // Policies before states; the gone peer's policy, never PEER's.
    assert_eq!(swept.remove(0), Op::DelPolicy(gone.policy));
    let kept = ids(&now);
    let mut want: Vec<Op> = [ids(&before), ids(&gone)]
        .concat()
        .into_iter()
        .filter(|id| !kept.contains(id))
        .map(Op::DelSa)
        .collect();
    want.dedup();
    assert_eq!(swept, want);
    // Tag 1's inbound state and the old outbound one (primary 2 → 3) for
    // PEER, all four of GONE's.
    assert_eq!(swept.len(), 2 + 4);
    assert_eq!(ipsec.status().swept, 7);
    // Once per process.
    ipsec.sync(&set(&[2, 3, 4], true), ME);
    assert!(fake.take().is_empty());
}
