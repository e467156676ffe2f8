use std::net::Ipv4Addr;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_xfrm::XfrmMessage;
use proptest::prelude::*;

use super::*;
use crate::schedule::{KEY_LEN, Ring, pair, spi};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn bytes(m: &XfrmMessage) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b);
    b
}

fn round_trip(m: &XfrmMessage) -> XfrmMessage {
    XfrmMessage::parse_with_param(&bytes(m)[..], m.message_type()).expect("decodes")
}

fn policy() -> Policy {
    Policy {
        src: LOCAL,
        dst: REMOTE,
        dport: 4789,
        spi: 0x7c6d_d2c9,
    }
}

/// Payloads `ip xfrm` (iproute2 6.x) sent on this machine, captured with
/// strace, for:
/// `ip xfrm policy update src 198.18.0.1/32 dst 198.18.0.2/32 proto udp
///  dport 4789 dir out mark 0xd0c4e3 mask 0xffffffff tmpl src 198.18.0.1
///  dst 198.18.0.2 proto esp spi 0x7c6dd2c9 reqid 0xd0c4e3 mode transport`
const IPROUTE2_POLICY: &[u8] = include_bytes!("iproute2_policy_update.bin");
/// `ip xfrm state add src 198.18.0.2 dst 198.18.0.1 proto esp spi
///  0x34616815 reqid 0xd0c4e3 mode transport replay-window 32 aead
///  "rfc4106(gcm(aes))" 0x05…0534616815 64`
const IPROUTE2_STATE: &[u8] = include_bytes!("iproute2_state_add.bin");

#[test]
fn the_policy_is_byte_for_byte_what_ip_xfrm_sends() {
    assert_eq!(bytes(&set_policy(&policy())), IPROUTE2_POLICY);
}

#[test]
fn the_state_is_byte_for_byte_what_ip_xfrm_sends() {
    let sa = Sa {
        src: REMOTE,
        dst: LOCAL,
        spi: 0x3461_6815,
        key: crate::schedule::aead_key(&[5; KEY_LEN], 0x3461_6815),
    };
    assert_eq!(bytes(&add_sa(&sa)), IPROUTE2_STATE);
}

#[test]
fn every_message_decodes_to_itself() {
    let ring =
        Ring::new([(1, [1u8; KEY_LEN]), (2, [2; KEY_LEN]), (3, [3; KEY_LEN])]).expect("ring");
    let p = pair(LOCAL, REMOTE, 4789, &ring);
    let mut ops = crate::schedule::plan(None, Some(&p));
    ops.extend(crate::schedule::plan(Some(&p), None));
    for op in &ops {
        let m = for_op(op);
        assert_eq!(round_trip(&m), m, "{op:?}");
    }
    let XfrmMessage::AddSa(m) = add_sa(&p.outbound) else {
        panic!("not a state")
    };
    assert_eq!(m.user_sa_info.id.spi, spi(LOCAL, REMOTE, 2));
}

proptest! {
    #[test]
    fn any_pair_round_trips(a in any::<u32>(), b in any::<u32>(), spi in any::<u32>(),
                            key in any::<[u8; 20]>(), port in any::<u16>()) {
        let (src, dst) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
        let sa = Sa { src, dst, spi, key };
        let p = Policy { src, dst, dport: port, spi };
        for m in [add_sa(&sa), del_sa(sa.id()), set_policy(&p), del_policy(&p)] {
            prop_assert_eq!(round_trip(&m), m);
        }
    }

    /// The kernel's answers are network input: any bytes decode to a
    /// message or an error, never a panic.
    #[test]
    fn arbitrary_answers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400),
                                     kind in 16u16..40) {
        // A well-formed netlink header of every xfrm type over any body.
        let mut data = ((body.len() + 16) as u32).to_ne_bytes().to_vec();
        data.extend(kind.to_ne_bytes());
        data.extend([0u8; 10]);
        data.extend(&body);
        let _ = decode(&data);
        let _ = decode(&body);
    }
}

/// Runs `f` on a fresh thread in a new, empty network namespace of its
/// own, which goes away with the thread: nothing touches the host's tables.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Installs the policy through the kernel, reads it back, replaces it
/// (a rotation) and deletes it. Needs root.
#[test]
fn a_real_policy_installs_reads_back_and_goes() {
    in_fresh_netns(|| {
        let mut x = crate::Xfrm::new().expect("socket");
        let p = policy();
        x.apply(&Op::SetPolicy(p)).expect("install");
        let got = x.get(get_policy(&p), "get policy").expect("read back");
        let XfrmMessage::AddPolicy(got) = got else {
            panic!("answer {got:?}")
        };
        let XfrmMessage::UpdatePolicy(sent) = set_policy(&p) else {
            unreachable!()
        };
        assert_eq!(
            got.user_policy_info.selector,
            sent.user_policy_info.selector
        );
        assert_eq!(got.user_policy_info.direction, XFRM_POLICY_OUT);
        assert!(got.nlas.contains(&mark()), "{:?}", got.nlas);
        assert!(got.nlas.iter().any(|a| matches!(a,
            XfrmAttrs::Template(t) if t[0].id.spi == p.spi && t[0].reqid == REQID)));
        // A rotation points the same policy at the next state.
        let next = Policy {
            spi: 0x1234_5678,
            ..p
        };
        x.apply(&Op::SetPolicy(next)).expect("replace");
        let Ok(XfrmMessage::AddPolicy(got)) = x.get(get_policy(&p), "get policy") else {
            panic!("policy gone after replace")
        };
        assert!(got.nlas.iter().any(|a| matches!(a,
            XfrmAttrs::Template(t) if t[0].id.spi == 0x1234_5678)));
        x.apply(&Op::DelPolicy(p)).expect("delete");
        let gone = x.get(get_policy(&p), "get policy").expect_err("deleted");
        assert_eq!(gone.errno(), Some(libc::ENOENT), "{gone}");
    });
}

/// A state add reaches the kernel; on a kernel without ESP or the AEAD it
/// is refused as unsupported (this machine), elsewhere it installs.
#[test]
fn a_real_state_add_installs_or_is_refused_as_unsupported() {
    in_fresh_netns(|| {
        let mut x = crate::Xfrm::new().expect("socket");
        let sa = Sa {
            src: REMOTE,
            dst: LOCAL,
            spi: 0x3461_6815,
            key: [5; 20],
        };
        match x.apply(&Op::AddSa(sa.clone())) {
            Ok(()) => x.apply(&Op::DelSa(sa.id())).expect("delete"),
            Err(e) => assert!(e.unsupported(), "refused for another reason: {e}"),
        }
    });
}

/// The kernel answers dumps with NEWSA / NEWPOLICY entries: what `add_sa`
/// and `set_policy` (as NEWPOLICY) encode, decoded.
#[test]
fn owned_keeps_shoal_states_and_marked_outbound_policies_only() {
    let ring = Ring::new(vec![(1u64, &[1u8; 16][..]), (2, &[2u8; 16][..])]).expect("ring");
    let p = pair(LOCAL, REMOTE, 4789, &ring);
    let newpolicy = |pol: &Policy| {
        let XfrmMessage::UpdatePolicy(m) = set_policy(pol) else {
            unreachable!()
        };
        XfrmMessage::AddPolicy(m)
    };
    let mut answers: Vec<XfrmMessage> = p
        .inbound
        .iter()
        .chain([&p.outbound])
        .map(|s| round_trip(&add_sa(s)))
        .collect();
    answers.push(round_trip(&newpolicy(&p.policy)));
    // Someone else's: another reqid, another mark, the inbound direction.
    let XfrmMessage::AddSa(mut other_sa) = add_sa(&p.outbound) else {
        unreachable!()
    };
    other_sa.user_sa_info.reqid = 7;
    answers.push(XfrmMessage::AddSa(other_sa));
    let XfrmMessage::AddPolicy(mut other_mark) = newpolicy(&p.policy) else {
        unreachable!()
    };
    other_mark.nlas = vec![XfrmAttrs::Mark(netlink_packet_xfrm::Mark {
        value: 1,
        mask: u32::MAX,
    })];
    answers.push(XfrmMessage::AddPolicy(other_mark));
    let XfrmMessage::AddPolicy(mut inbound) = newpolicy(&p.policy) else {
        unreachable!()
    };
    inbound.user_policy_info.direction = netlink_packet_xfrm::XFRM_POLICY_IN;
    answers.push(XfrmMessage::AddPolicy(inbound));

    let o = owned(&answers);
    let want: Vec<SaId> = p.inbound.iter().chain([&p.outbound]).map(Sa::id).collect();
    assert_eq!(o.sas, want);
    assert_eq!(o.policies, vec![p.policy]);
}

/// A dump through the kernel lists the policy Shoal installed and not
/// another program's. Needs root.
#[test]
fn a_real_dump_lists_shoal_policies() {
    in_fresh_netns(|| {
        let mut x = crate::Xfrm::new().expect("socket");
        assert_eq!(x.owned().expect("dump"), Owned::default());
        let p = policy();
        x.apply(&Op::SetPolicy(p)).expect("install");
        let o = x.owned().expect("dump");
        assert_eq!(o.policies, vec![p], "{o:?}");
        x.apply(&Op::DelPolicy(p)).expect("delete");
        assert_eq!(x.owned().expect("dump").policies, vec![]);
    });
}
