//! The autolock unlock key, as the operator sees it: `SWMKEY-1-` and the
//! 32 random bytes in unpadded standard base64 (docker's format). Its bytes
//! are the store's key-encryption key, so the only copy of the key that
//! opens a locked manager is the one the operator keeps.

use std::fmt;

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use zeroize::Zeroizing;

use super::StoreKey;

/// What every unlock key starts with; the `1` is the format version.
pub const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

const LEN: usize = StoreKey::LEN;
/// Unpadded base64 of 32 bytes: ceil(32 * 8 / 6).
const ENCODED_LEN: usize = (LEN * 8).div_ceil(6);
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a string is not an unlock key. Every message starts with "invalid
/// key" (as docker's) and says what to check; none repeats the input, which
/// may be a real key with a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockKeyError {
    #[error(
        "invalid key: an unlock key starts with {UNLOCK_KEY_PREFIX}; give the whole key that \
         `shoal swarm init --autolock` or `shoal swarm unlock-key` printed"
    )]
    Prefix,
    #[error(
        "invalid key: {found} characters after {UNLOCK_KEY_PREFIX}, an unlock key has \
         {ENCODED_LEN}; copy the whole key, on one line"
    )]
    Length { found: usize },
    #[error(
        "invalid key: character {position} after {UNLOCK_KEY_PREFIX} is not base64 \
         (A-Z a-z 0-9 + /); check the key for a typo"
    )]
    Character { position: usize },
    #[error("invalid key: it does not end as an unlock key does; check its last character")]
    NotCanonical,
}

/// An unlock key. Compared in constant time; `Debug` never shows it.
pub struct UnlockKey(Zeroizing<[u8; LEN]>);

impl UnlockKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; LEN]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        UnlockKey(bytes)
    }

    /// Reads `SWMKEY-1-<base64>`; surrounding whitespace (a pasted newline)
    /// is ignored.
    pub fn parse(text: &str) -> Result<Self, UnlockKeyError> {
        let body = text
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or(UnlockKeyError::Prefix)?;
        let found = body.chars().count();
        if found != ENCODED_LEN {
            return Err(UnlockKeyError::Length { found });
        }
        let mut bytes = Zeroizing::new([0u8; LEN]);
        // Bits are appended six at a time and drained eight at a time.
        let (mut acc, mut bits, mut out) = (0u32, 0u32, 0usize);
        for (i, c) in body.chars().enumerate() {
            let v = sextet(c).ok_or(UnlockKeyError::Character { position: i + 1 })?;
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                if let Some(b) = bytes.get_mut(out) {
                    *b = (acc >> bits) as u8;
                }
                out += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // The last character carries two bits past the 32nd byte: nonzero,
        // two different strings would be the same key.
        if acc != 0 {
            return Err(UnlockKeyError::NotCanonical);
        }
        Ok(UnlockKey(bytes))
    }

    /// The key as the operator types it.
    pub fn format(&self) -> String {
        let mut out = String::with_capacity(UNLOCK_KEY_PREFIX.len() + ENCODED_LEN);
        out.push_str(UNLOCK_KEY_PREFIX);
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut push = |v: u32| out.push(char::from(ALPHABET[(v & 0x3f) as usize]));
        for &b in self.0.iter() {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 6 {
                bits -= 6;
                push(acc >> bits);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            push(acc << (6 - bits));
        }
        out
    }

    /// The store's key-encryption key. docker uses the key's bytes as the
    /// KEK too; every record sealed with it names its purpose as associated
    /// data, so one key can seal both the store's data key and the node's
    /// TLS key.
    pub fn kek(&self) -> StoreKey {
        StoreKey::from_bytes(*self.0)
    }
}

fn sextet(c: char) -> Option<u8> {
    let b = u8::try_from(c).ok()?;
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

impl PartialEq for UnlockKey {
    fn eq(&self, other: &Self) -> bool {
        // No early exit: how long a comparison takes says nothing about
        // where a guess went wrong.
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
    }
}

impl Eq for UnlockKey {}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(bytes: [u8; LEN]) -> UnlockKey {
        UnlockKey(Zeroizing::new(bytes))
    }

    #[test]
    fn known_encoding() -> Result<(), UnlockKeyError> {
        // RFC 4648 base64 of 0x00..0x1f, unpadded.
        let mut bytes = [0u8; LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let text = key(bytes).format();
        assert_eq!(text, "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(*UnlockKey::parse(&text)?.0, bytes);
        assert_eq!(*UnlockKey::parse(&format!("  {text}\n"))?.0, bytes);
        assert_eq!(format!("{:?}", key(bytes)), "UnlockKey(<redacted>)");
        Ok(())
    }

    #[test]
    fn garbage_is_refused_with_the_fix() {
        let good = key([7; LEN]).format();
        let body = &good[UNLOCK_KEY_PREFIX.len()..];
        let cases: Vec<(String, UnlockKeyError)> = vec![
            (String::new(), UnlockKeyError::Prefix),
            ("hunter2".into(), UnlockKeyError::Prefix),
            (format!("SWMTKN-1-{body}"), UnlockKeyError::Prefix),
            (
                format!("{UNLOCK_KEY_PREFIX}{}", &body[1..]),
                UnlockKeyError::Length { found: 42 },
            ),
            (format!("{good}A"), UnlockKeyError::Length { found: 44 }),
            (
                format!("{UNLOCK_KEY_PREFIX}{}", "-".repeat(ENCODED_LEN)),
                UnlockKeyError::Character { position: 1 },
            ),
            (
                format!("{UNLOCK_KEY_PREFIX}{}=", &body[..ENCODED_LEN - 1]),
                UnlockKeyError::Character {
                    position: ENCODED_LEN,
                },
            ),
            (
                format!("{UNLOCK_KEY_PREFIX}{}é", &body[..ENCODED_LEN - 1]),
                UnlockKeyError::Character {
                    position: ENCODED_LEN,
                },
            ),
            // 'B' sets one of the two bits past the last byte.
            (
                format!("{UNLOCK_KEY_PREFIX}{}B", &"A".repeat(ENCODED_LEN - 1)),
                UnlockKeyError::NotCanonical,
            ),
        ];
        for (text, want) in cases {
            let got = UnlockKey::parse(&text).err();
            assert_eq!(got.as_ref(), Some(&want), "{text:?}");
            let msg = want.to_string();
            assert!(msg.starts_with("invalid key: "), "{msg}");
            assert!(!msg.contains(body), "the message echoes the key: {msg}");
        }
    }

    #[test]
    fn equality_and_kek() {
        let (a, b) = (UnlockKey::generate(), UnlockKey::generate());
        assert_ne!(a, b);
        assert_eq!(a.kek().as_bytes(), &*a.0);
    }

    proptest! {
        #[test]
        fn round_trip(bytes in any::<[u8; LEN]>()) {
            let text = key(bytes).format();
            prop_assert!(text.starts_with(UNLOCK_KEY_PREFIX));
            prop_assert_eq!(text.len(), UNLOCK_KEY_PREFIX.len() + ENCODED_LEN);
            let back = UnlockKey::parse(&text);
            prop_assert_eq!(back.as_ref().map(|k| *k.0).ok(), Some(bytes));
        }

        #[test]
        fn any_string_parses_or_is_refused_without_panicking(
            text in prop_oneof![".{0,80}", "\\s*SWMKEY-1-[A-Za-z0-9+/=_é-]{40,46}\\s*"],
        ) {
            if let Ok(k) = UnlockKey::parse(&text) {
                // Anything accepted is exactly one key's spelling.
                prop_assert_eq!(k.format(), text.trim());
            }
        }

        #[test]
        fn one_changed_character_is_another_key_or_refused(
            bytes in any::<[u8; LEN]>(),
            pos in 0..ENCODED_LEN,
            c in prop::sample::select(ALPHABET.to_vec()),
        ) {
            let text = key(bytes).format();
            let mut changed = text.clone().into_bytes();
            changed[UNLOCK_KEY_PREFIX.len() + pos] = c;
            let changed = String::from_utf8(changed).unwrap_or_default();
            prop_assume!(changed != text);
            match UnlockKey::parse(&changed) {
                Ok(k) => prop_assert!(k != key(bytes)),
                Err(e) => prop_assert_eq!(e, UnlockKeyError::NotCanonical),
            }
        }
    }
}
