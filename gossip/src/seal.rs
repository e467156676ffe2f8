//! Sealing of every gossip packet and push with the `networking:gossip`
//! key ring (AES-128-GCM), as swarm's memberlist encryption does.
//!
//! A sealed packet is `version (1) | key tag (8, big endian) | nonce (12) |
//! ciphertext | GCM tag (16)`; the 21-byte header is the AAD, so neither the
//! version nor the key tag can be altered without failing the open. The key
//! tag is the key's Lamport time from the control plane: the receiver looks
//! the key up by tag instead of trying each one.

use std::fmt;

use aes_gcm::{
    Aes128Gcm, KeyInit,
    aead::{Aead, Payload},
};

/// Bytes of a ring key (AES-128).
pub const KEY_LEN: usize = 16;
/// The wire format's version byte.
pub const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
/// Bytes of the header (the AAD).
pub const HEADER_LEN: usize = 1 + 8 + NONCE_LEN;
/// What sealing adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + GCM_TAG_LEN;
/// Keys a ring holds at most (swarm: the primary, the next, the previous).
pub const MAX_KEYS: usize = 3;
/// The version byte of a bench ring's unsealed frames: never opened by a
/// sealing ring (see [`Keyring::unsealed_for_bench`]).
#[cfg(feature = "bench-unsealed")]
const UNSEALED_VERSION: u8 = 0xB0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("gossip key ring is empty: the control plane sends 1 to {MAX_KEYS} keys")]
    Empty,
    #[error("gossip key ring has {0} keys: at most {MAX_KEYS} are kept")]
    TooMany(usize),
    #[error("gossip key {tag} is {len} bytes: ring keys are {KEY_LEN} bytes (AES-128)")]
    KeyLength { tag: u64, len: usize },
    #[error("gossip key tag {0} appears twice: each key needs its own Lamport time")]
    DuplicateTag(u64),
}

/// Why a packet did not open: each is a drop reason counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short or another version: cleartext gossip, or not gossip at all.
    #[error("not a sealed gossip packet (cleartext or another version)")]
    NotSealed,
    #[error("sealed with key {0}, which is not in the ring")]
    UnknownKey(u64),
    /// The key tag is known but the GCM tag does not verify: a wrong key
    /// under a known tag, or the packet was altered.
    #[error("sealed packet failed authentication")]
    Forged,
}

struct RingKey {
    tag: u64,
    cipher: Aes128Gcm,
}

/// A node's copy of the gossip ring, oldest key first.
#[derive(Clone)]
pub struct Keyring {
    keys: std::sync::Arc<Vec<RingKey>>,
    /// A bench ring: frames laid out as sealed ones, not encrypted.
    #[cfg(feature = "bench-unsealed")]
    unsealed: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tags only: the key bytes never reach a log line.
        f.debug_struct("Keyring")
            .field("tags", &self.tags())
            .finish()
    }
}

impl Keyring {
    /// A ring of `(Lamport tag, key)` pairs in any order.
    pub fn new(keys: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<Self, KeyringError> {
        let mut ring = Vec::new();
        for (tag, key) in keys {
            if key.len() != KEY_LEN {
                return Err(KeyringError::KeyLength {
                    tag,
                    len: key.len(),
                });
            }
            if ring.iter().any(|k: &RingKey| k.tag == tag) {
                return Err(KeyringError::DuplicateTag(tag));
            }
            let cipher = Aes128Gcm::new_from_slice(&key).map_err(|_| KeyringError::KeyLength {
                tag,
                len: key.len(),
            })?;
            ring.push(RingKey { tag, cipher });
        }
        match ring.len() {
            0 => return Err(KeyringError::Empty),
            n if n > MAX_KEYS => return Err(KeyringError::TooMany(n)),
            _ => {}
        }
        ring.sort_by_key(|k| k.tag);
        Ok(Keyring {
            keys: std::sync::Arc::new(ring),
            #[cfg(feature = "bench-unsealed")]
            unsealed: false,
        })
    }

    /// `bench gossip`'s same-run baseline: a ring whose frames have the
    /// sealed layout and size (header, payload, 16 zero bytes) but no
    /// encryption, so the two runs differ only in the AES-GCM work. Its
    /// frames carry their own version byte: a sealing ring refuses them
    /// as [`OpenError::NotSealed`], and it opens nothing sealed. Behind a
    /// feature only the bench tool turns on; `shoald` never makes one.
    #[cfg(feature = "bench-unsealed")]
    pub fn unsealed_for_bench() -> Self {
        let mut ring = Keyring::random([1]).unwrap_or_else(|_| unreachable!("one 16-byte key"));
        ring.unsealed = true;
        ring
    }

    /// A ring of fresh random keys under `tags` (labs and benches; nodes
    /// get theirs from the control plane).
    pub fn random(tags: impl IntoIterator<Item = u64>) -> Result<Self, KeyringError> {
        Keyring::new(
            tags.into_iter()
                .map(|t| (t, rand::random::<[u8; KEY_LEN]>().to_vec())),
        )
    }

    /// Tags held, oldest first.
    pub fn tags(&self) -> Vec<u64> {
        self.keys.iter().map(|k| k.tag).collect()
    }

    /// The key packets are sealed with: the second newest (swarm's
    /// `keys[1]` of three), so a key just added is receive-only for one
    /// rotation period and every node has it before anyone sends with it.
    /// A ring of one key sends with that key.
    pub fn primary_tag(&self) -> u64 {
        self.primary().tag
    }

    fn primary(&self) -> &RingKey {
        let n = self.keys.len();
        &self.keys[n.saturating_sub(2)]
    }

    /// Seals `payload` with the primary key under a fresh random nonce.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let key = self.primary();
        #[cfg(feature = "bench-unsealed")]
        if self.unsealed {
            let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
            out.push(UNSEALED_VERSION);
            out.extend_from_slice(&key.tag.to_be_bytes());
            out.extend_from_slice(&[0; NONCE_LEN]);
            out.extend_from_slice(payload);
            out.extend_from_slice(&[0; GCM_TAG_LEN]);
            return out;
        }
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&key.tag.to_be_bytes());
        out.extend_from_slice(&nonce);
        let sealed = key.cipher.encrypt(
            (&nonce).into(),
            Payload {
                msg: payload,
                aad: &out[..HEADER_LEN],
            },
        );
        // AES-GCM fails only on inputs beyond 64 GiB, which no caller has.
        out.extend_from_slice(&sealed.unwrap_or_default());
        out
    }

    /// Opens a packet sealed with any key of the ring.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        #[cfg(feature = "bench-unsealed")]
        if self.unsealed {
            return match packet {
                [UNSEALED_VERSION, ..] if packet.len() >= OVERHEAD => {
                    Ok(packet[HEADER_LEN..packet.len() - GCM_TAG_LEN].to_vec())
                }
                _ => Err(OpenError::NotSealed),
            };
        }
        let header = parse_header(packet)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.tag == header.tag)
            .ok_or(OpenError::UnknownKey(header.tag))?;
        key.cipher
            .decrypt(
                (&header.nonce).into(),
                Payload {
                    msg: &packet[HEADER_LEN..],
                    aad: &packet[..HEADER_LEN],
                },
            )
            .map_err(|_| OpenError::Forged)
    }
}

struct Header {
    tag: u64,
    nonce: [u8; NONCE_LEN],
}

fn parse_header(packet: &[u8]) -> Result<Header, OpenError> {
    if packet.len() < OVERHEAD || packet[0] != VERSION {
        return Err(OpenError::NotSealed);
    }
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&packet[1..9]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&packet[9..HEADER_LEN]);
    Ok(Header {
        tag: u64::from_be_bytes(tag),
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring(tags: &[u64]) -> Keyring {
        Keyring::new(tags.iter().map(|&t| (t, vec![t as u8; KEY_LEN]))).expect("a ring")
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_payload() {
        let r = ring(&[1, 2, 3]);
        let payload = b"swim ping from node1".to_vec();
        let sealed = r.seal(&payload);
        assert_eq!(sealed.len(), payload.len() + OVERHEAD);
        assert!(!sealed.windows(payload.len()).any(|w| w == payload));
        assert_eq!(r.open(&sealed), Ok(payload.clone()));
        // A fresh nonce each time: the same payload never seals alike.
        assert_ne!(r.seal(&payload), sealed);
    }

    #[test]
    fn sends_with_the_second_newest_key() {
        // Given in any order, sorted by Lamport time.
        let r = ring(&[7, 3, 5]);
        assert_eq!(r.tags(), [3, 5, 7]);
        assert_eq!(r.primary_tag(), 5);
        assert_eq!(r.seal(b"x")[1..9], 5u64.to_be_bytes());
        assert_eq!(ring(&[4, 9]).primary_tag(), 4);
        assert_eq!(ring(&[4]).primary_tag(), 4);
    }

    #[test]
    fn every_key_of_the_ring_is_accepted_on_receive() {
        let all = ring(&[1, 2, 3]);
        for t in [1, 2, 3] {
            // A sender whose primary is `t`.
            let sender = ring(&[t]);
            assert_eq!(all.open(&sender.seal(b"hi")), Ok(b"hi".to_vec()), "key {t}");
        }
    }

    #[test]
    fn rotation_keeps_the_sender_readable_by_old_and_new_rings() {
        // The leader drops the oldest key and adds a newer one. A node that
        // has the new ring sends with key 3, which every node on the old
        // ring holds; a node still on the old ring sends with key 2, which
        // the new ring still holds.
        let (old, new) = (ring(&[1, 2, 3]), ring(&[2, 3, 4]));
        assert_eq!(old.primary_tag(), 2);
        assert_eq!(new.primary_tag(), 3);
        assert_eq!(old.open(&new.seal(b"a")), Ok(b"a".to_vec()));
        assert_eq!(new.open(&old.seal(b"b")), Ok(b"b".to_vec()));
        // The newest key is receive-only: nobody sends with 4 yet.
        assert_ne!(new.primary_tag(), 4);
    }

    #[test]
    fn cleartext_unknown_keys_forgeries_and_tampering_are_refused() {
        let r = ring(&[1, 2, 3]);
        assert_eq!(r.open(b"plain swim bytes"), Err(OpenError::NotSealed));
        assert_eq!(r.open(&[]), Err(OpenError::NotSealed));
        let mut v2 = r.seal(b"x");
        v2[0] = 2;
        assert_eq!(r.open(&v2), Err(OpenError::NotSealed));
        // A key the ring does not hold.
        assert_eq!(
            r.open(&ring(&[9]).seal(b"x")),
            Err(OpenError::UnknownKey(9))
        );
        // A wrong key under a tag the ring knows.
        let wrong = Keyring::new([(2, vec![0xee; KEY_LEN])]).expect("a ring");
        assert_eq!(r.open(&wrong.seal(b"x")), Err(OpenError::Forged));
        // Any flipped bit, header (AAD) or body, fails.
        let sealed = r.seal(b"payload");
        for i in [0, 9, HEADER_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(r.open(&bad).is_err(), "byte {i} flipped");
        }
        // The key tag moved to another key of the ring.
        let mut moved = sealed.clone();
        moved[1..9].copy_from_slice(&3u64.to_be_bytes());
        assert_eq!(r.open(&moved), Err(OpenError::Forged));
    }

    #[test]
    fn bad_rings_are_refused_with_the_reason() {
        assert_eq!(
            Keyring::new(std::iter::empty()).err(),
            Some(KeyringError::Empty)
        );
        assert_eq!(
            Keyring::new([(1, vec![0; 8])]).err(),
            Some(KeyringError::KeyLength { tag: 1, len: 8 })
        );
        assert_eq!(
            Keyring::new([(1, vec![0; 16]), (1, vec![1; 16])]).err(),
            Some(KeyringError::DuplicateTag(1))
        );
        assert_eq!(
            Keyring::new((1..=4).map(|t| (t, vec![0; 16]))).err(),
            Some(KeyringError::TooMany(4))
        );
        assert!(!format!("{:?}", ring(&[1])).contains("[1, 1"));
    }

    #[cfg(feature = "bench-unsealed")]
    #[test]
    fn bench_frames_match_sealed_size_and_never_cross_with_a_real_ring() {
        let (bench, real) = (Keyring::unsealed_for_bench(), ring(&[1, 2, 3]));
        let payload = b"swim ping".to_vec();
        let plain = bench.seal(&payload);
        assert_eq!(plain.len(), real.seal(&payload).len());
        assert_eq!(bench.open(&plain), Ok(payload.clone()));
        // Neither opens the other's frames: a real node never takes
        // cleartext, and the bench baseline never decrypts.
        assert_eq!(real.open(&plain), Err(OpenError::NotSealed));
        assert_eq!(bench.open(&real.seal(&payload)), Err(OpenError::NotSealed));
        assert_eq!(
            bench.open(&plain[..OVERHEAD - 1]),
            Err(OpenError::NotSealed)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let r = ring(&[1, 2, 3]);
            prop_assert!(r.open(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_under_a_known_header_never_open(
            tag in 1u64..=3,
            rest in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let r = ring(&[1, 2, 3]);
            let mut p = vec![VERSION];
            p.extend_from_slice(&tag.to_be_bytes());
            p.extend_from_slice(&rest);
            prop_assert!(r.open(&p).is_err());
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let r = ring(&[1, 2, 3]);
            prop_assert_eq!(r.open(&r.seal(&payload)), Ok(payload));
        }
    }
}
