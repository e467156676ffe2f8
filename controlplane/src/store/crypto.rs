//! Record encryption: XChaCha20-Poly1305 under a data key (DEK), the DEK
//! itself wrapped by the caller's key-encryption key (KEK).
//!
//! A sealed record is `[format][24-byte nonce][ciphertext + tag]`, with the
//! record's name (table and key) as associated data so that a record copied
//! over another one fails to open instead of being read as the wrong thing.
//! Nonces are random: 192 bits make collisions negligible without a counter
//! that would itself need to be stored and recovered.

use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Bumped if the record layout or algorithm ever changes.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const AAD_PREFIX: &[u8] = b"shoal-store/v1/";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    // The AEAD's error type is deliberately opaque, hence no source.
    #[error("cannot encrypt record {record}")]
    Seal { record: String },
    #[error("record {record} does not authenticate: wrong key, tampered or moved")]
    Open { record: String },
    #[error("record {record} is malformed ({len} bytes, format {format})")]
    Malformed {
        record: String,
        len: usize,
        format: u8,
    },
}

/// The key-encryption key the caller opens the store with: read from a file
/// in the state dir, or the operator's unlock key when autolock is on.
pub struct StoreKey(Zeroizing<[u8; StoreKey::LEN]>);

impl StoreKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        StoreKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; Self::LEN]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        StoreKey(bytes)
    }

    /// The raw key, for the caller to persist or show as an unlock key.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Seals a small secret kept beside the store (an autolocked manager's
    /// TLS key) under this key; `record` names it, as for store records.
    pub fn seal(&self, record: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.cipher(), record, plaintext)
    }

    /// Opens what [`StoreKey::seal`] sealed; [`CryptoError::Open`] means
    /// another key (or another record name).
    pub fn open(&self, record: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.cipher(), record, sealed).map(Zeroizing::new)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_slice().into())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// The data key every record is sealed with. The cipher zeroizes its key on
/// drop; the raw bytes are kept (zeroized too) only to rewrap under a new KEK.
pub(crate) struct DataKey {
    raw: Zeroizing<[u8; 32]>,
    cipher: XChaCha20Poly1305,
}

impl DataKey {
    pub(crate) fn generate() -> Self {
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut_slice());
        Self::from_raw(raw)
    }

    fn from_raw(raw: Zeroizing<[u8; 32]>) -> Self {
        let cipher = XChaCha20Poly1305::new(raw.as_slice().into());
        DataKey { raw, cipher }
    }

    /// The DEK sealed under `kek`, to store.
    pub(crate) fn wrap(&self, kek: &StoreKey, record: &str) -> Result<Vec<u8>, CryptoError> {
        seal_with(&kek.cipher(), record, self.raw.as_slice())
    }

    /// Fails with [`CryptoError::Open`] when `kek` is not the key it was wrapped with.
    pub(crate) fn unwrap(kek: &StoreKey, record: &str, sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = Zeroizing::new(open_with(&kek.cipher(), record, sealed)?);
        let raw: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed {
                record: record.to_owned(),
                len: plain.len(),
                format: FORMAT_V1,
            })?;
        Ok(Self::from_raw(Zeroizing::new(raw)))
    }

    pub(crate) fn seal(&self, record: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.cipher, record, plaintext)
    }

    pub(crate) fn open(&self, record: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.cipher, record, sealed)
    }
}

fn aad(record: &str) -> Vec<u8> {
    [AAD_PREFIX, record.as_bytes()].concat()
}

fn seal_with(
    cipher: &XChaCha20Poly1305,
    record: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = aad(record);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Seal {
            record: record.to_owned(),
        })?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_with(
    cipher: &XChaCha20Poly1305,
    record: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let malformed = || CryptoError::Malformed {
        record: record.to_owned(),
        len: sealed.len(),
        format: sealed.first().copied().unwrap_or(0),
    };
    let (&format, rest) = sealed.split_first().ok_or_else(malformed)?;
    if format != FORMAT_V1 || rest.len() < NONCE_LEN {
        return Err(malformed());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let aad = aad(record);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Open {
            record: record.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() -> Result<(), CryptoError> {
        let dek = DataKey::generate();
        let sealed = dek.seal("log/1", b"hello")?;
        assert_eq!(dek.open("log/1", &sealed)?, b"hello");
        // Same plaintext, fresh nonce: ciphertexts differ.
        assert_ne!(sealed, dek.seal("log/1", b"hello")?);
        // Moved to another record name: refused.
        assert!(matches!(
            dek.open("log/2", &sealed),
            Err(CryptoError::Open { .. })
        ));
        // Tampered: refused.
        let mut bad = sealed.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            dek.open("log/1", &bad),
            Err(CryptoError::Open { .. })
        ));
        assert!(matches!(
            dek.open("log/1", &[1, 2]),
            Err(CryptoError::Malformed { .. })
        ));
        Ok(())
    }

    #[test]
    fn wrap_unwrap_needs_the_right_kek() -> Result<(), CryptoError> {
        let kek = StoreKey::generate();
        let dek = DataKey::generate();
        let wrapped = dek.wrap(&kek, "keys/dek")?;
        let back = DataKey::unwrap(&kek, "keys/dek", &wrapped)?;
        assert_eq!(back.open("x", &dek.seal("x", b"v")?)?, b"v");
        let other = StoreKey::generate();
        assert!(matches!(
            DataKey::unwrap(&other, "keys/dek", &wrapped),
            Err(CryptoError::Open { .. })
        ));
        assert_eq!(format!("{kek:?}"), "StoreKey(<redacted>)");
        Ok(())
    }

    #[test]
    fn kek_seals_side_secrets_bound_to_their_name() -> Result<(), CryptoError> {
        let kek = StoreKey::generate();
        let sealed = kek.seal("swarm/key.pem", b"pem")?;
        assert_eq!(kek.open("swarm/key.pem", &sealed)?.as_slice(), b"pem");
        assert!(matches!(
            StoreKey::generate().open("swarm/key.pem", &sealed),
            Err(CryptoError::Open { .. })
        ));
        assert!(matches!(
            kek.open("keys/dek", &sealed),
            Err(CryptoError::Open { .. })
        ));
        Ok(())
    }
}
