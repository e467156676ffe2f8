//! IPsec for `--opt encrypted` networks on this node: for every peer node
//! that shares an encrypted network with it, the ESP states and the
//! outbound policy of shoal-xfrm's schedule, kept in line with each
//! assignment set (new peers, gone peers, key rotations).
//!
//! Fail closed: the task programs mark every packet to an encrypted
//! network, and the pair's policy is installed even when its states cannot
//! be (a kernel without ESP): a marked packet with no state is dropped by
//! the kernel, never sent in clear. A peer before the node holds the
//! `networking:ipsec` ring gets a policy naming no state: blocked too.
//! Unencrypted networks are not touched.
//!
//! Once per process, after the first set is installed, Shoal's states and
//! policies that set does not want are swept: an earlier shoald's, for
//! peers that left or keys rotated out while this node was down. The sweep
//! follows the install, so a wanted peer's policy never disappears.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use shoal_api::cluster::v1::{AssignmentSet, Encryption, NetworkKey};
use shoal_xfrm::{Op, Owned, PairState, Policy, Ring, SaId, Xfrm, XfrmError};

/// The ring's subsystem name in the assignment set.
pub const IPSEC_RING: &str = "networking:ipsec";

/// The kernel writes, behind a trait so the reconciler is tested without
/// root (and on kernels with or without ESP).
pub trait XfrmWrite: Send {
    fn write(&mut self, op: &Op) -> Result<(), XfrmError>;
    /// Shoal's states and policies the kernel holds.
    fn owned(&mut self) -> Result<Owned, XfrmError>;
}

impl XfrmWrite for Xfrm {
    fn write(&mut self, op: &Op) -> Result<(), XfrmError> {
        self.apply(op)
    }

    fn owned(&mut self) -> Result<Owned, XfrmError> {
        Xfrm::owned(self)
    }
}

impl XfrmWrite for Box<dyn XfrmWrite> {
    fn write(&mut self, op: &Op) -> Result<(), XfrmError> {
        (**self).write(op)
    }

    fn owned(&mut self) -> Result<Owned, XfrmError> {
        (**self).owned()
    }
}

/// The `networking:ipsec` ring of the set's keys; `None` before the node
/// has one.
pub fn ring(keys: &[NetworkKey]) -> Result<Option<Ring>, XfrmError> {
    let ring: Vec<(u64, &[u8])> = keys
        .iter()
        .filter(|k| k.subsystem == IPSEC_RING)
        .map(|k| (k.lamport_time, k.key.as_slice()))
        .collect();
    if ring.is_empty() {
        return Ok(None);
    }
    Ring::new(ring).map(Some)
}

/// The VTEPs of other nodes with a task on an encrypted network this node
/// carries.
pub fn peers(set: &AssignmentSet, local: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
    let encrypted: BTreeSet<&str> = set
        .networks
        .iter()
        .filter(|n| n.encryption() == Encryption::Ipsec)
        .map(|n| n.id.as_str())
        .collect();
    set.endpoints
        .iter()
        .filter(|e| encrypted.contains(e.network_id.as_str()))
        .map(|e| Ipv4Addr::from(e.node_addr))
        .filter(|a| *a != local && !a.is_unspecified())
        .collect()
}

/// What a peer needs installed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Pair(PairState),
    /// No ring yet: a policy whose template no state matches (SPI 0).
    Blocked(Policy),
}

impl Want {
    fn policy(&self) -> Policy {
        match self {
            Want::Pair(p) => p.policy,
            Want::Blocked(p) => *p,
        }
    }
}

/// What the node's writes did, for `node stats` and `node doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpsecStatus {
    pub peers: u64,
    pub states: u64,
    pub policies: u64,
    pub blocked_without_keys: u64,
    pub rotations: u64,
    /// States and policies an earlier shoald left that were removed.
    pub swept: u64,
    /// Writes the kernel refused (each once per set that asked).
    pub refused: u64,
    /// The last refusal, and whether it was "this kernel has no ESP".
    pub last_error: Option<String>,
    pub unsupported: bool,
}

/// Installed pairs, and the writer.
pub struct Ipsec<W = Box<dyn XfrmWrite>> {
    writer: W,
    port: u16,
    installed: BTreeMap<Ipv4Addr, Want>,
    status: IpsecStatus,
    /// Whether the leftovers of earlier processes were swept.
    swept: bool,
}

/// Answers that mean the kernel already holds what was asked.
fn already(op: &Op, e: &XfrmError) -> bool {
    matches!(
        (op, e.errno()),
        (Op::AddSa(_), Some(libc::EEXIST))
            | (Op::DelSa(_), Some(libc::ESRCH | libc::ENOENT))
            | (Op::DelPolicy(_), Some(libc::ENOENT))
    )
}

impl<W: XfrmWrite> Ipsec<W> {
    pub fn new(writer: W, port: u16) -> Self {
        Ipsec {
            writer,
            port,
            installed: BTreeMap::new(),
            status: IpsecStatus::default(),
            swept: false,
        }
    }

    pub fn status(&self) -> IpsecStatus {
        self.status.clone()
    }

    /// Brings the kernel's states and policies in line with `set`.
    pub fn sync(&mut self, set: &AssignmentSet, local: Ipv4Addr) {
        let ring = match ring(&set.network_keys) {
            Ok(r) => r,
            Err(e) => {
                // A damaged ring keeps what is installed: the peers stay
                // encrypted (or blocked) with the keys they had.
                self.refused(&e);
                return;
            }
        };
        let want: BTreeMap<Ipv4Addr, Want> = peers(set, local)
            .into_iter()
            .map(|peer| {
                let w = match &ring {
                    Some(r) => Want::Pair(shoal_xfrm::pair(local, peer, self.port, r)),
                    None => Want::Blocked(Policy {
                        src: local,
                        dst: peer,
                        dport: self.port,
                        spi: 0,
                    }),
                };
                (peer, w)
            })
            .collect();
        let all: BTreeSet<Ipv4Addr> = want.keys().chain(self.installed.keys()).copied().collect();
        for peer in all {
            let old = self.installed.get(&peer).cloned();
            let new = want.get(&peer).cloned();
            if old == new {
                continue;
            }
            if matches!((&old, &new), (Some(Want::Pair(_)), Some(Want::Pair(_)))) {
                self.status.rotations += 1;
            }
            let ops = ops(old.as_ref(), new.as_ref());
            let mut ok = true;
            for op in &ops {
                if let Err(e) = self.writer.write(op) {
                    if already(op, &e) {
                        continue;
                    }
                    ok = false;
                    self.refused(&e);
                }
            }
            match new {
                // A kernel without ESP will not take the states on a retry:
                // keep the pair as planned (its policy holds, blocking),
                // so the refusal is reported once per change, not per set.
                Some(w) if ok || self.status.unsupported => {
                    self.installed.insert(peer, w);
                }
                // Anything else is retried from scratch with the next set.
                Some(_) => {
                    self.installed.remove(&peer);
                }
                None => {
                    self.installed.remove(&peer);
                }
            }
        }
        if !self.swept {
            self.sweep(&want);
        }
        self.count();
    }

    /// Removes Shoal's states and policies that neither this set nor what
    /// is installed wants (a peer whose write failed keeps its blocking
    /// policy): policies first, so no packet is sent through a state about
    /// to go, then states. A failed dump is retried with the next set.
    fn sweep(&mut self, want: &BTreeMap<Ipv4Addr, Want>) {
        let owned = match self.writer.owned() {
            Ok(o) => o,
            Err(e) => {
                self.refused(&e);
                return;
            }
        };
        self.swept = true;
        let mut policies = BTreeSet::new();
        let mut sas = BTreeSet::new();
        for w in self.installed.values().chain(want.values()) {
            policies.insert(w.policy().dst);
            if let Want::Pair(p) = w {
                sas.extend(p.inbound.iter().chain([&p.outbound]).map(|s| s.id()));
            }
        }
        let stale = owned
            .policies
            .into_iter()
            .filter(|p| !policies.contains(&p.dst))
            .map(Op::DelPolicy)
            .chain(
                owned
                    .sas
                    .into_iter()
                    .filter(|id: &SaId| !sas.contains(id))
                    .map(Op::DelSa),
            );
        for op in stale {
            match self.writer.write(&op) {
                Ok(()) => self.status.swept += 1,
                Err(e) if already(&op, &e) => {}
                Err(e) => self.refused(&e),
            }
        }
        if self.status.swept > 0 {
            tracing::info!(
                removed = self.status.swept,
                "IPsec: removed states and policies an earlier shoald left"
            );
        }
    }

    fn refused(&mut self, e: &XfrmError) {
        self.status.refused += 1;
        let unsupported = e.unsupported();
        if unsupported && !self.status.unsupported {
            tracing::error!(
                error = %e,
                "IPsec: this kernel cannot install ESP states (no esp4 / rfc4106(gcm(aes))); \
                 encrypted networks' traffic to other nodes is blocked, not sent in clear"
            );
        } else if !unsupported {
            tracing::warn!(error = %e, "IPsec: an xfrm write was refused; retrying with the next set");
        }
        self.status.unsupported |= unsupported;
        self.status.last_error = Some(e.to_string());
    }

    fn count(&mut self) {
        let s = &mut self.status;
        s.peers = self.installed.len() as u64;
        s.policies = s.peers;
        s.blocked_without_keys = self
            .installed
            .values()
            .filter(|w| matches!(w, Want::Blocked(_)))
            .count() as u64;
        s.states = self
            .installed
            .values()
            .map(|w| match w {
                Want::Pair(p) if !s.unsupported => p.inbound.len() as u64 + 1,
                _ => 0,
            })
            .sum();
    }
}

/// The writes from `old` to `new`: the schedule's plan between pairs; a
/// blocked peer only has its policy.
fn ops(old: Option<&Want>, new: Option<&Want>) -> Vec<Op> {
    match (old, new) {
        (Some(Want::Pair(o)), Some(Want::Pair(n))) => shoal_xfrm::plan(Some(o), Some(n)),
        (Some(Want::Pair(o)), None) => shoal_xfrm::plan(Some(o), None),
        (None | Some(Want::Blocked(_)), Some(Want::Pair(n))) => shoal_xfrm::plan(None, Some(n)),
        (Some(Want::Pair(o)), Some(Want::Blocked(b))) => {
            // Keys gone (never expected): block first, then drop states.
            let mut v = vec![Op::SetPolicy(*b)];
            v.extend(
                shoal_xfrm::plan(Some(o), None)
                    .into_iter()
                    .filter(|op| !matches!(op, Op::DelPolicy(_))),
            );
            v
        }
        (_, Some(Want::Blocked(b))) => vec![Op::SetPolicy(*b)],
        (Some(w), None) => vec![Op::DelPolicy(w.policy())],
        (None, None) => vec![],
    }
}

#[cfg(test)]
mod tests;
