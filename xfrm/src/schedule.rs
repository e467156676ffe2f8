//! swarm's key schedule for encrypted overlays (libnetwork's overlay
//! driver), as pure functions: what a node pair's ESP states and policy are
//! for a given `networking:ipsec` ring, and the order of the kernel writes
//! that takes one ring's states to the next without dropping a packet.
//!
//! - Cipher `rfc4106(gcm(aes))`, ICV 64 bits; the kernel key is the ring's
//!   16-byte key followed by a 4-byte salt, the SPI in network order.
//! - SPI per direction: FNV-1a 32 over source address, key tag (big
//!   endian, the Lamport time's low 32 bits) and destination address, the
//!   addresses in Go's 16-byte form (`::ffff:a.b.c.d`, what swarm hashes).
//! - Inbound (remote → local) states for every ring key; the outbound state
//!   and the policy's template for the primary key only (the second newest,
//!   swarm's `keys[1]`, as gossip sends with).
//! - Rotation: `-in(old) +in(new) +out(primary) policy→primary -out(old)`.

use std::net::Ipv4Addr;

use crate::XfrmError;

/// The AEAD swarm uses.
pub const AEAD_NAME: &str = "rfc4106(gcm(aes))";
/// ICV length in bits (swarm's 64, the 8 bytes of `ESP_OVERHEAD`).
pub const ICV_BITS: u32 = 64;
/// Bytes of a ring key (AES-128).
pub const KEY_LEN: usize = 16;
/// Bytes of salt appended to the key (RFC 4106).
pub const SALT_LEN: usize = 4;
/// swarm's reqid on every state and template, and the mark its policies
/// select (`0xD0C4E3`); Shoal's eBPF sets this mark on encrypted VNIs'
/// packets.
pub const REQID: u32 = 0x00D0_C4E3;
pub const MARK: u32 = 0x00D0_C4E3;
/// ESP in transport mode adds SPI 4 + sequence 4 + IV 8 + pad length 1 +
/// next header 1 + ICV 8 bytes (padding aside): the MTU an encrypted
/// overlay loses on top of VXLAN's 50.
pub const ESP_OVERHEAD: u32 = 26;

/// One key of the `networking:ipsec` ring. `Debug` shows the tag only.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey {
    pub tag: u64,
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey").field("tag", &self.tag).finish()
    }
}

/// The ring, oldest key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    keys: Vec<RingKey>,
}

impl Ring {
    /// A ring from `(tag, key)` pairs as the assignment set carries them;
    /// a key that is not 16 bytes, or a tag given twice, is refused.
    pub fn new<K: AsRef<[u8]>>(
        keys: impl IntoIterator<Item = (u64, K)>,
    ) -> Result<Ring, XfrmError> {
        let mut out: Vec<RingKey> = Vec::new();
        for (tag, key) in keys {
            let key = key.as_ref();
            let key: [u8; KEY_LEN] = key.try_into().map_err(|_| XfrmError::KeyLength {
                tag,
                len: key.len(),
            })?;
            if out.iter().any(|k| k.tag == tag) {
                return Err(XfrmError::DuplicateTag { tag });
            }
            out.push(RingKey { tag, key });
        }
        if out.is_empty() {
            return Err(XfrmError::EmptyRing);
        }
        out.sort_by_key(|k| k.tag);
        Ok(Ring { keys: out })
    }

    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The key sent with: the second newest (a ring of one: that key), so a
    /// key just added is receive-only until every node holds it.
    pub fn primary(&self) -> &RingKey {
        &self.keys[self.keys.len().saturating_sub(2)]
    }
}

/// swarm's SPI for packets from `src` to `dst` under the key tagged `tag`.
pub fn spi(src: Ipv4Addr, dst: Ipv4Addr, tag: u64) -> u32 {
    // FNV-1a, 32 bits.
    let mut h: u32 = 0x811c_9dc5;
    let tag = (tag as u32).to_be_bytes();
    for b in src
        .to_ipv6_mapped()
        .octets()
        .iter()
        .chain(&tag)
        .chain(&dst.to_ipv6_mapped().octets())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The kernel's AEAD key material: the ring key, then the SPI as salt.
pub fn aead_key(key: &[u8; KEY_LEN], spi: u32) -> [u8; KEY_LEN + SALT_LEN] {
    let mut out = [0u8; KEY_LEN + SALT_LEN];
    out[..KEY_LEN].copy_from_slice(key);
    out[KEY_LEN..].copy_from_slice(&spi.to_be_bytes());
    out
}

/// One ESP security association (transport mode, [`AEAD_NAME`]). `Debug`
/// hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: [u8; KEY_LEN + SALT_LEN],
}

impl std::fmt::Debug for Sa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sa({} -> {} spi {:#010x})", self.src, self.dst, self.spi)
    }
}

impl Sa {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, k: &RingKey) -> Sa {
        let spi = spi(src, dst, k.tag);
        Sa {
            src,
            dst,
            spi,
            key: aead_key(&k.key, spi),
        }
    }

    /// What identifies the state in the kernel.
    pub fn id(&self) -> SaId {
        SaId {
            dst: self.dst,
            spi: self.spi,
        }
    }
}

/// The kernel's key for a state: destination, SPI (protocol ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SaId {
    pub dst: Ipv4Addr,
    pub spi: u32,
}

/// The outbound policy: UDP to the VXLAN port from `src` to `dst`, packets
/// with [`MARK`], through the ESP state `spi` (transport mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub spi: u32,
}

/// Everything one node pair needs on the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairState {
    /// remote → local, one per ring key, oldest first.
    pub inbound: Vec<Sa>,
    /// local → remote under the primary key.
    pub outbound: Sa,
    pub policy: Policy,
}

/// The states and policy between `local` and `remote` for `ring`, VXLAN on
/// `port`.
pub fn pair(local: Ipv4Addr, remote: Ipv4Addr, port: u16, ring: &Ring) -> PairState {
    let outbound = Sa::new(local, remote, ring.primary());
    PairState {
        inbound: ring
            .keys()
            .iter()
            .map(|k| Sa::new(remote, local, k))
            .collect(),
        policy: Policy {
            src: local,
            dst: remote,
            dport: port,
            spi: outbound.spi,
        },
        outbound,
    }
}

/// One kernel write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddSa(Sa),
    DelSa(SaId),
    /// Add or replace the pair's outbound policy.
    SetPolicy(Policy),
    DelPolicy(Policy),
}

/// The writes from `old` to `new` (`None`: nothing installed / nothing
/// wanted), in swarm's rotation order: inbound states for a new key exist
/// before any peer can send with it, the new outbound state exists before
/// the policy points at it, and the old outbound state goes only after.
pub fn plan(old: Option<&PairState>, new: Option<&PairState>) -> Vec<Op> {
    let mut ops = Vec::new();
    let Some(new) = new else {
        // Teardown: the policy first, so nothing is sent through a state
        // that is about to go.
        if let Some(old) = old {
            ops.push(Op::DelPolicy(old.policy));
            ops.push(Op::DelSa(old.outbound.id()));
            ops.extend(old.inbound.iter().map(|s| Op::DelSa(s.id())));
        }
        return ops;
    };
    let empty = Vec::new();
    let old_in = old.map_or(&empty, |o| &o.inbound);
    for s in old_in {
        if !new.inbound.iter().any(|n| n == s) {
            ops.push(Op::DelSa(s.id()));
        }
    }
    for s in &new.inbound {
        if !old_in.contains(s) {
            ops.push(Op::AddSa(s.clone()));
        }
    }
    let old_out = old.map(|o| &o.outbound);
    if old_out != Some(&new.outbound) {
        ops.push(Op::AddSa(new.outbound.clone()));
    }
    if old.map(|o| o.policy) != Some(new.policy) {
        ops.push(Op::SetPolicy(new.policy));
    }
    if let Some(o) = old_out
        && o.id() != new.outbound.id()
    {
        ops.push(Op::DelSa(o.id()));
    }
    ops
}

#[cfg(test)]
mod tests;
