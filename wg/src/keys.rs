use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use boringtun::x25519::{PublicKey as DalekPublic, StaticSecret};
use rand::RngCore;

use crate::WgError;

/// A node's public key, as published in its node record.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_slice(b: &[u8]) -> Result<PublicKey, WgError> {
        <[u8; 32]>::try_from(b)
            .map(PublicKey)
            .map_err(|_| WgError::KeyLength(b.len()))
    }

    /// WireGuard's usual text form (`wg show`): base64.
    pub fn parse(s: &str) -> Result<PublicKey, WgError> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| WgError::KeyText(s.to_owned()))?;
        PublicKey::from_slice(&bytes).map_err(|_| WgError::KeyText(s.to_owned()))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A node's key pair. `Debug` shows the public half only.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = StaticSecret::from(bytes);
        bytes.fill(0);
        let public = PublicKey(DalekPublic::from(&secret).to_bytes());
        KeyPair { secret, public }
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private key as the UAPI takes it (hex); only ever written to the
    /// device's socket.
    pub(crate) fn secret_hex(&self) -> String {
        hex::encode(self.secret.to_bytes())
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_fresh_and_debug_hides_the_secret() {
        let (a, b) = (KeyPair::generate(), KeyPair::generate());
        assert_ne!(a.public(), b.public());
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.secret_hex()), "{shown}");
        assert!(shown.contains(&a.public().to_string()));
    }

    #[test]
    fn public_keys_read_back_and_wrong_sizes_are_named() {
        let k = KeyPair::generate().public();
        assert_eq!(PublicKey::parse(&k.to_string()).ok(), Some(k));
        assert!(matches!(
            PublicKey::from_slice(&[0; 31]),
            Err(WgError::KeyLength(31))
        ));
        assert!(PublicKey::parse("not base64!").is_err());
        assert!(PublicKey::parse(&STANDARD.encode([1u8; 16])).is_err());
    }
}
