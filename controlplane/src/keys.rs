//! The network key rings, swarm's keymanager: `networking:gossip` (seals
//! 7946) and `networking:ipsec` (encrypted overlays), three 128-bit keys
//! each, tagged with a Lamport time. The leader makes them, rotates them
//! (drop the oldest, add a newer one) every rotation period, and stores
//! them in the cluster object, so they are replicated by Raft and sealed at
//! rest with the rest of the store. Nodes get them only in their
//! assignment set over the mTLS dispatcher session; `Debug` never shows a
//! key.
//!
//! Nodes send with the second-newest key (swarm's `keys[1]`): a key just
//! added is receive-only for one period, by which time every node has it,
//! so a rotation needs no coordination.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_api::cluster::v1 as pb;

use crate::model::SecretBytes;

pub const GOSSIP: &str = "networking:gossip";
pub const IPSEC: &str = "networking:ipsec";
/// Keys per ring.
pub const RING_SIZE: usize = 3;
/// Bytes per key (AES-128).
pub const KEY_LEN: usize = 16;
/// swarm's rotation period.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(12 * 3600);
/// The shortest rotation period `--network-key-rotation` accepts: a key
/// must reach every node before it becomes the one sent with.
pub const MIN_ROTATION: Duration = Duration::from_secs(2);

/// One key of a ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkKey {
    pub lamport_time: u64,
    pub key: SecretBytes,
}

/// Both rings, with the clock that tags their keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkKeys {
    /// The Lamport clock: the time of the newest key of either ring.
    pub clock: u64,
    pub gossip: Vec<NetworkKey>,
    pub ipsec: Vec<NetworkKey>,
    /// Unix seconds of the last rotation (or of the rings' making).
    pub rotated_at: u64,
}

impl NetworkKeys {
    /// Full rings of fresh keys, as a new cluster gets them.
    pub fn made() -> NetworkKeys {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        NetworkKeys::default()
            .due(now, 0, fresh_key)
            .unwrap_or_default()
    }

    /// What the leader stores now, or `None` when nothing is due: full
    /// rings when one is missing or short (a new cluster, or one from
    /// before key rings), one new key per ring when `period` seconds have
    /// passed since the last rotation. `fresh` makes a random key.
    pub fn due(
        &self,
        now: u64,
        period: u64,
        mut fresh: impl FnMut() -> [u8; KEY_LEN],
    ) -> Option<NetworkKeys> {
        let mut next = self.clone();
        let short = self.gossip.len() < RING_SIZE || self.ipsec.len() < RING_SIZE;
        let rotate = now.saturating_sub(self.rotated_at) >= period.max(MIN_ROTATION.as_secs());
        if !short && !rotate {
            return None;
        }
        let NetworkKeys {
            clock,
            gossip,
            ipsec,
            ..
        } = &mut next;
        for ring in [gossip, ipsec] {
            // A short ring is filled, never emptied: the keys nodes hold
            // stay valid.
            let add = if short {
                RING_SIZE.saturating_sub(ring.len())
            } else {
                1
            };
            for _ in 0..add {
                *clock += 1;
                ring.push(NetworkKey {
                    lamport_time: *clock,
                    key: SecretBytes(fresh().to_vec()),
                });
            }
            ring.sort_by_key(|k| k.lamport_time);
            let extra = ring.len().saturating_sub(RING_SIZE);
            ring.drain(..extra);
        }
        next.rotated_at = now;
        Some(next)
    }

    /// Both rings as the assignment set carries them.
    pub fn to_wire(&self) -> Vec<pb::NetworkKey> {
        [(GOSSIP, &self.gossip), (IPSEC, &self.ipsec)]
            .into_iter()
            .flat_map(|(subsystem, ring)| {
                ring.iter().map(move |k| pb::NetworkKey {
                    subsystem: subsystem.to_owned(),
                    lamport_time: k.lamport_time,
                    key: k.key.0.clone(),
                })
            })
            .collect()
    }
}

/// A random key from the OS.
pub fn fresh_key() -> [u8; KEY_LEN] {
    use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
    let mut k = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut k);
    k
}

/// A rotation period given by the operator, checked.
pub fn rotation_period(flag: &str, secs: u64) -> Result<u64, String> {
    if secs < MIN_ROTATION.as_secs() {
        return Err(format!(
            "{flag} {secs}s: must be at least {}s, so a new key reaches every node before \
             it is sent with",
            MIN_ROTATION.as_secs()
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> [u8; KEY_LEN] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; KEY_LEN]
        }
    }

    fn times(ring: &[NetworkKey]) -> Vec<u64> {
        ring.iter().map(|k| k.lamport_time).collect()
    }

    #[test]
    fn rings_are_made_full_then_rotated_oldest_out_when_due() {
        let mut fresh = counter();
        let k = NetworkKeys::default()
            .due(1000, 60, &mut fresh)
            .expect("rings made");
        assert_eq!(k.gossip.len(), RING_SIZE);
        assert_eq!(k.ipsec.len(), RING_SIZE);
        assert_eq!(k.rotated_at, 1000);
        // One clock over both rings: every tag distinct.
        assert_eq!(times(&k.gossip), [1, 2, 3]);
        assert_eq!(times(&k.ipsec), [4, 5, 6]);
        // Not yet due.
        assert_eq!(k.due(1059, 60, &mut fresh), None);
        let r = k.due(1060, 60, &mut fresh).expect("rotated");
        assert_eq!(times(&r.gossip), [2, 3, 7]);
        assert_eq!(times(&r.ipsec), [5, 6, 8]);
        assert_eq!(r.rotated_at, 1060);
        // The keys that stay are the same keys; the new one is new.
        assert_eq!(r.gossip[..2], k.gossip[1..]);
        assert!(k.gossip.iter().all(|o| o.key != r.gossip[2].key));
        // The period has a floor.
        assert_eq!(r.due(1061, 0, &mut fresh), None);
    }

    #[test]
    fn a_short_ring_is_refilled() {
        let mut k = NetworkKeys::default()
            .due(0, 60, counter())
            .expect("rings made");
        k.ipsec.clear();
        let r = k.due(1, 60, counter()).expect("refilled");
        assert_eq!(times(&r.ipsec), [7, 8, 9]);
        // The full ring is left as it was.
        assert_eq!(r.gossip, k.gossip);
    }

    #[test]
    fn keys_are_sent_tagged_and_never_printed() {
        let k = NetworkKeys::default()
            .due(0, 60, || [0xab; KEY_LEN])
            .expect("rings made");
        let wire = k.to_wire();
        assert_eq!(wire.len(), 2 * RING_SIZE);
        assert!(wire[..3].iter().all(|w| w.subsystem == GOSSIP));
        assert!(wire[3..].iter().all(|w| w.subsystem == IPSEC));
        assert_eq!(wire[0].key, vec![0xab; KEY_LEN]);
        let shown = format!("{k:?} {wire:?}");
        assert!(!shown.contains("171") && !shown.contains("abab"), "{shown}");
    }

    #[test]
    fn too_short_a_period_is_refused_naming_the_flag() {
        let e = rotation_period("--network-key-rotation", 1).expect_err("refused");
        assert!(e.contains("--network-key-rotation") && e.contains("at least 2s"));
        assert_eq!(rotation_period("--network-key-rotation", 2), Ok(2));
    }
}
