//! The xfrm netlink messages for [`Op`]s: what `ip xfrm state add … proto
//! esp mode transport aead 'rfc4106(gcm(aes))' … 64` and `ip xfrm policy
//! update … dir out mark … tmpl … proto esp mode transport` send, built
//! with netlink-packet-xfrm's types.

use std::net::Ipv4Addr;

use netlink_packet_core::NetlinkMessage;

use netlink_packet_xfrm::{
    AF_INET, Address, AlgAead, IPPROTO_ESP, Id, LifetimeConfig, Mark, Selector, UserPolicyId,
    UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate, XFRM_INF, XFRM_MODE_TRANSPORT,
    XFRM_POLICY_ALLOW, XFRM_POLICY_OUT, XfrmAttrs, XfrmMessage,
    nlas::alg_aead::XFRM_ALG_AEAD_NAME_LEN,
    policy::{DelGetMessage as PolicyId, ModifyMessage as PolicyModify},
    state::{DelGetMessage as StateId, GetDumpMessage, ModifyMessage as StateModify},
};

use crate::schedule::{AEAD_NAME, ICV_BITS, MARK, Op, Policy, REQID, Sa, SaId};

const IPPROTO_UDP: u8 = 17;
/// Replay protection on inbound states (the legacy 32-packet bitmap).
pub const REPLAY_WINDOW: u8 = 32;

fn addr(a: Ipv4Addr) -> Address {
    Address::from_ipv4(&a)
}

/// No byte or packet limit: a zero limit would expire the state at once.
fn unlimited() -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: XFRM_INF,
        hard_byte_limit: XFRM_INF,
        soft_packet_limit: XFRM_INF,
        hard_packet_limit: XFRM_INF,
        ..LifetimeConfig::default()
    }
}

fn aead(sa: &Sa) -> AlgAead {
    let mut alg_name = [0u8; XFRM_ALG_AEAD_NAME_LEN];
    alg_name[..AEAD_NAME.len()].copy_from_slice(AEAD_NAME.as_bytes());
    AlgAead {
        alg_name,
        alg_key_len: (sa.key.len() * 8) as u32,
        alg_icv_len: ICV_BITS,
        alg_key: sa.key.to_vec(),
    }
}

/// `XFRM_MSG_NEWSA`: an ESP transport-mode state with swarm's AEAD.
pub fn add_sa(sa: &Sa) -> XfrmMessage {
    XfrmMessage::AddSa(StateModify {
        user_sa_info: UserSaInfo {
            id: Id {
                daddr: addr(sa.dst),
                spi: sa.spi,
                proto: IPPROTO_ESP,
            },
            saddr: addr(sa.src),
            lifetime_cfg: unlimited(),
            reqid: REQID,
            family: AF_INET,
            mode: XFRM_MODE_TRANSPORT,
            replay_window: REPLAY_WINDOW,
            ..UserSaInfo::default()
        },
        nlas: vec![XfrmAttrs::EncryptionAlgAead(aead(sa))],
    })
}

/// `XFRM_MSG_DELSA`.
pub fn del_sa(id: SaId) -> XfrmMessage {
    XfrmMessage::DeleteSa(StateId {
        user_sa_id: UserSaId {
            daddr: addr(id.dst),
            spi: id.spi,
            family: AF_INET,
            proto: IPPROTO_ESP,
        },
        nlas: vec![],
    })
}

/// UDP from `src` to `dst`'s VXLAN port, both /32.
fn selector(p: &Policy) -> Selector {
    Selector {
        daddr: addr(p.dst),
        saddr: addr(p.src),
        dport: p.dport,
        dport_mask: u16::MAX,
        family: AF_INET,
        prefixlen_d: 32,
        prefixlen_s: 32,
        proto: IPPROTO_UDP,
        ..Selector::default()
    }
}

/// The policy is keyed by selector, direction and mark: all three in every
/// message about it.
fn mark() -> XfrmAttrs {
    XfrmAttrs::Mark(Mark {
        value: MARK,
        mask: u32::MAX,
    })
}

/// `XFRM_MSG_UPDPOLICY` (add or replace): marked UDP to the VXLAN port goes
/// through ESP state `p.spi` in transport mode.
pub fn set_policy(p: &Policy) -> XfrmMessage {
    XfrmMessage::UpdatePolicy(PolicyModify {
        user_policy_info: UserPolicyInfo {
            selector: selector(p),
            lifetime_cfg: unlimited(),
            direction: XFRM_POLICY_OUT,
            action: XFRM_POLICY_ALLOW,
            ..UserPolicyInfo::default()
        },
        nlas: vec![
            XfrmAttrs::Template(vec![UserTemplate {
                id: Id {
                    daddr: addr(p.dst),
                    spi: p.spi,
                    proto: IPPROTO_ESP,
                },
                family: AF_INET,
                saddr: addr(p.src),
                reqid: REQID,
                mode: XFRM_MODE_TRANSPORT,
                // Any algorithm, as `ip xfrm` writes it.
                aalgos: u32::MAX,
                ealgos: u32::MAX,
                calgos: u32::MAX,
                ..UserTemplate::default()
            }]),
            mark(),
        ],
    })
}

fn policy_id(p: &Policy) -> PolicyId {
    PolicyId {
        user_policy_id: UserPolicyId {
            selector: selector(p),
            index: 0,
            direction: XFRM_POLICY_OUT,
        },
        nlas: vec![mark()],
    }
}

/// `XFRM_MSG_DELPOLICY`.
pub fn del_policy(p: &Policy) -> XfrmMessage {
    XfrmMessage::DeletePolicy(policy_id(p))
}

/// `XFRM_MSG_GETPOLICY`: the kernel answers with the policy as stored.
pub fn get_policy(p: &Policy) -> XfrmMessage {
    XfrmMessage::GetPolicy(policy_id(p))
}

/// `XFRM_MSG_GETSA` as a dump request (every state).
pub fn dump_sas() -> XfrmMessage {
    XfrmMessage::GetDumpSa(GetDumpMessage::default())
}

/// `XFRM_MSG_GETPOLICY` as a dump request (every policy).
pub fn dump_policies() -> XfrmMessage {
    XfrmMessage::GetPolicy(PolicyId::default())
}

/// Shoal's objects among a dump's answers: ESP states with [`REQID`], and
/// outbound IPv4 policies selecting [`MARK`] exactly. Anything else in the
/// kernel (another IPsec daemon's) is not Shoal's to remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owned {
    pub sas: Vec<SaId>,
    pub policies: Vec<Policy>,
}

/// The [`Owned`] objects among dump answers (`XFRM_MSG_NEWSA` and
/// `XFRM_MSG_NEWPOLICY`, as the kernel sends each entry).
pub fn owned(answers: &[XfrmMessage]) -> Owned {
    let mut o = Owned::default();
    for m in answers {
        match m {
            XfrmMessage::AddSa(s) => {
                let i = &s.user_sa_info;
                if i.reqid == REQID && i.id.proto == IPPROTO_ESP && i.family == AF_INET {
                    o.sas.push(SaId {
                        dst: i.id.daddr.to_ipv4(),
                        spi: i.id.spi,
                    });
                }
            }
            XfrmMessage::AddPolicy(p) | XfrmMessage::UpdatePolicy(p) => {
                let i = &p.user_policy_info;
                let ours = p.nlas.iter().any(
                    |a| matches!(a, XfrmAttrs::Mark(m) if m.value == MARK && m.mask == u32::MAX),
                );
                if !ours || i.direction != XFRM_POLICY_OUT || i.selector.family != AF_INET {
                    continue;
                }
                let spi = p
                    .nlas
                    .iter()
                    .find_map(|a| match a {
                        XfrmAttrs::Template(t) => t.first().map(|t| t.id.spi),
                        _ => None,
                    })
                    .unwrap_or(0);
                o.policies.push(Policy {
                    src: i.selector.saddr.to_ipv4(),
                    dst: i.selector.daddr.to_ipv4(),
                    dport: i.selector.dport,
                    spi,
                });
            }
            _ => {}
        }
    }
    o
}

/// One netlink message from the kernel (an answer, an acknowledgement or
/// an error). netlink-packet-xfrm 0.5 slices fixed-size headers without
/// checking the length (a panic on a short message, found by this module's
/// proptest), so a panic in its parser is caught and reported as a decode
/// error instead of taking the agent down.
pub fn decode(data: &[u8]) -> Result<NetlinkMessage<XfrmMessage>, String> {
    std::panic::catch_unwind(|| NetlinkMessage::<XfrmMessage>::deserialize(data))
        .map_err(|_| format!("malformed xfrm message ({} bytes)", data.len()))?
        .map_err(|e| e.to_string())
}

/// The message for one planned write.
pub fn for_op(op: &Op) -> XfrmMessage {
    match op {
        Op::AddSa(sa) => add_sa(sa),
        Op::DelSa(id) => del_sa(*id),
        Op::SetPolicy(p) => set_policy(p),
        Op::DelPolicy(p) => del_policy(p),
    }
}

#[cfg(test)]
mod tests;
