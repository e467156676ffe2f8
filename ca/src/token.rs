//! Join tokens in swarm's format:
//! `SWMTKN-1-<CA digest, base36, 50 chars>-<secret, base36, 25 chars>`.
//!
//! The digest lets a joining node authenticate the managers (it pins the CA
//! whose SHA-256 it names); the secret lets managers authenticate the node.
//! The role is not in the token: the cluster keeps one token per role
//! ([`JoinTokens`]) and a presented token's role is whichever secret it
//! matches.

use std::fmt;

use rand::RngCore;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroize;

use crate::base36::{self, DecodeError};
use crate::{CaCert, CaDigest, CaError, NodeRole};

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_CHARS: usize = 50;
const SECRET_CHARS: usize = 25;
const SECRET_BYTES: usize = 16;

/// Why a token was refused. Never carries any part of the token: a
/// malformed token may still hold a real secret, and errors get logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("join token must start with \"{PREFIX}-\"")]
    Prefix,
    #[error("join token must have 4 '-'-separated parts, found {found}")]
    PartCount { found: usize },
    #[error("join token version is not supported (expected \"{VERSION}\")")]
    Version,
    #[error("join token CA digest must be {DIGEST_CHARS} characters, found {found}")]
    DigestLength { found: usize },
    #[error("join token CA digest has a character outside [0-9a-z] at {position}")]
    DigestCharset { position: usize },
    #[error("join token CA digest is larger than 256 bits")]
    DigestRange,
    #[error("join token secret must be {SECRET_CHARS} characters, found {found}")]
    SecretLength { found: usize },
    #[error("join token secret has a character outside [0-9a-z] at {position}")]
    SecretCharset { position: usize },
    #[error("join token secret is larger than 128 bits")]
    SecretRange,
    #[error("join token is for another CA ({presented}, this cluster has {current})")]
    WrongCa {
        presented: CaDigest,
        current: CaDigest,
    },
    #[error("join token secret is not valid for this cluster (rotated or mistyped)")]
    UnknownSecret,
}

/// The token's random part. Zeroed on drop, compared in constant time.
#[derive(Clone)]
struct Secret([u8; SECRET_BYTES]);

impl Secret {
    fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    fn ct_eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Compares without an early exit, so timing does not tell how many leading
/// bytes of a guessed secret were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// One join token: the CA digest it pins and its secret.
#[derive(Clone)]
pub struct JoinToken {
    ca_digest: CaDigest,
    secret: Secret,
}

impl JoinToken {
    /// A token with a fresh 128-bit secret for the CA with this digest.
    pub fn generate(ca_digest: &CaDigest) -> Self {
        Self {
            ca_digest: *ca_digest,
            secret: Secret::generate(),
        }
    }

    /// The same CA digest with a new secret: the old token stops working as
    /// soon as the caller replaces it (`docker swarm join-token --rotate`).
    pub fn rotate(&self) -> Self {
        Self::generate(&self.ca_digest)
    }

    /// Parses the canonical form only (no surrounding whitespace, lowercase
    /// base36, zero-padded), so each token has exactly one spelling.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.split('-');
        if parts.next() != Some(PREFIX) {
            return Err(TokenError::Prefix);
        }
        let rest: Vec<&str> = parts.collect();
        let [version, digest, secret] = rest.as_slice() else {
            return Err(TokenError::PartCount {
                found: rest.len() + 1,
            });
        };
        if *version != VERSION {
            return Err(TokenError::Version);
        }

        let found = digest.chars().count();
        if found != DIGEST_CHARS {
            return Err(TokenError::DigestLength { found });
        }
        let digest = base36::decode::<32>(digest).map_err(|e| match e {
            DecodeError::Charset { position } => TokenError::DigestCharset { position },
            DecodeError::Overflow => TokenError::DigestRange,
        })?;

        let found = secret.chars().count();
        if found != SECRET_CHARS {
            return Err(TokenError::SecretLength { found });
        }
        let secret = base36::decode::<SECRET_BYTES>(secret).map_err(|e| match e {
            DecodeError::Charset { position } => TokenError::SecretCharset { position },
            DecodeError::Overflow => TokenError::SecretRange,
        })?;

        Ok(Self {
            ca_digest: CaDigest::from_bytes(digest),
            secret: Secret(secret),
        })
    }

    pub fn ca_digest(&self) -> &CaDigest {
        &self.ca_digest
    }

    /// True if `ca_cert_der` is the CA this token pins.
    pub fn ca_digest_matches(&self, ca_cert_der: &[u8]) -> bool {
        constant_time_eq(
            CaDigest::of_der(ca_cert_der).as_bytes(),
            self.ca_digest.as_bytes(),
        )
    }

    /// Pins a CA certificate obtained over an unauthenticated channel: it is
    /// accepted only if its SHA-256 is the token's digest.
    pub fn pin_ca(&self, ca_cert_pem: &str) -> Result<CaCert, CaError> {
        let ca = CaCert::from_pem(ca_cert_pem)?;
        self.check_ca(ca)
    }

    /// Finds the pinned CA among the certificates a manager presented in a
    /// handshake made with [`crate::bootstrap_client_config`] (its servers
    /// send their root along), so the joining node can store it.
    pub fn ca_from_peer_certs(&self, certs: &[CertificateDer<'_>]) -> Result<CaCert, CaError> {
        let der = certs.iter().find(|der| self.ca_digest_matches(der)).ok_or(
            CaError::PinnedCaNotPresented {
                expected: self.ca_digest,
            },
        )?;
        CaCert::from_der(der.clone().into_owned())
    }

    fn check_ca(&self, ca: CaCert) -> Result<CaCert, CaError> {
        if self.ca_digest_matches(ca.der()) {
            Ok(ca)
        } else {
            Err(CaError::CaDigestMismatch {
                expected: self.ca_digest,
                actual: ca.digest(),
            })
        }
    }

    /// Same CA and same secret, in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        // Evaluate both halves: `&&` would skip the secret when the digest
        // differs, which is harmless but not worth reasoning about.
        let digest = constant_time_eq(self.ca_digest.as_bytes(), other.ca_digest.as_bytes());
        let secret = self.secret.ct_eq(&other.secret);
        digest & secret
    }
}

impl PartialEq for JoinToken {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for JoinToken {}

impl fmt::Display for JoinToken {
    /// The full token, secret included: print it only where an operator
    /// asked for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            self.ca_digest.to_base36(),
            base36::encode(&self.secret.0, SECRET_CHARS)
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl std::str::FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The cluster's current tokens, one per role, as stored in Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokens {
    worker: JoinToken,
    manager: JoinToken,
}

impl JoinTokens {
    pub fn generate(ca_digest: &CaDigest) -> Self {
        Self {
            worker: JoinToken::generate(ca_digest),
            manager: JoinToken::generate(ca_digest),
        }
    }

    /// Rebuilds the pair from stored tokens.
    pub fn from_tokens(worker: JoinToken, manager: JoinToken) -> Self {
        Self { worker, manager }
    }

    pub fn get(&self, role: NodeRole) -> &JoinToken {
        match role {
            NodeRole::Worker => &self.worker,
            NodeRole::Manager => &self.manager,
        }
    }

    /// New secret for one role; the previous token stops working.
    pub fn rotate(&mut self, role: NodeRole) {
        let token = match role {
            NodeRole::Worker => &mut self.worker,
            NodeRole::Manager => &mut self.manager,
        };
        *token = token.rotate();
    }

    /// After a root rotation: same secrets, new CA digest (swarm does the
    /// same, so operators' saved secrets keep their meaning).
    pub fn set_ca_digest(&mut self, ca_digest: &CaDigest) {
        self.worker.ca_digest = *ca_digest;
        self.manager.ca_digest = *ca_digest;
    }

    /// The role a presented token grants. Both secrets are always compared,
    /// so timing does not tell which role a near-miss was close to.
    pub fn authorize(&self, presented: &JoinToken) -> Result<NodeRole, TokenError> {
        if !constant_time_eq(
            presented.ca_digest.as_bytes(),
            self.worker.ca_digest.as_bytes(),
        ) {
            return Err(TokenError::WrongCa {
                presented: presented.ca_digest,
                current: self.worker.ca_digest,
            });
        }
        let worker = presented.secret.ct_eq(&self.worker.secret);
        let manager = presented.secret.ct_eq(&self.manager.secret);
        match (worker, manager) {
            (_, true) => Ok(NodeRole::Manager),
            (true, false) => Ok(NodeRole::Worker),
            (false, false) => Err(TokenError::UnknownSecret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(seed: u8) -> CaDigest {
        CaDigest::of_der(&[seed; 8])
    }

    #[test]
    fn format_matches_swarm() {
        let token = JoinToken::generate(&digest(1));
        let text = token.to_string();
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "SWMTKN");
        assert_eq!(parts[1], "1");
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
        assert_eq!(parts[2], digest(1).to_base36());
        assert_eq!(JoinToken::parse(&text), Ok(token));
    }

    #[test]
    fn parses_a_known_swarm_shaped_token() -> Result<(), TokenError> {
        // Zero digest, secret 35 (`z`): padding is all zeros.
        let text = format!("SWMTKN-1-{}-{}z", "0".repeat(50), "0".repeat(24));
        let token = JoinToken::parse(&text)?;
        assert_eq!(token.ca_digest(), &CaDigest::from_bytes([0; 32]));
        assert_eq!(token.secret.0[15], 35);
        assert_eq!(token.to_string(), text);
        Ok(())
    }

    #[test]
    fn each_malformation_has_its_error() {
        let good = JoinToken::generate(&digest(2)).to_string();
        let parts: Vec<&str> = good.split('-').collect();
        let (d, s) = (parts[2], parts[3]);
        let max_digest = "z".repeat(50);
        let max_secret = "z".repeat(25);
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Prefix),
            (format!("swmtkn-1-{d}-{s}"), TokenError::Prefix),
            (format!("SWMTKN-2-{d}-{s}"), TokenError::Version),
            (format!("SWMTKN-1-{d}"), TokenError::PartCount { found: 3 }),
            (
                format!("SWMTKN-1-{d}-{s}-x"),
                TokenError::PartCount { found: 5 },
            ),
            (
                format!("SWMTKN-1-{d}0-{s}"),
                TokenError::DigestLength { found: 51 },
            ),
            (
                format!("SWMTKN-1-{}A-{s}", &d[..49]),
                TokenError::DigestCharset { position: 49 },
            ),
            (
                format!("SWMTKN-1-{max_digest}-{s}"),
                TokenError::DigestRange,
            ),
            (
                format!("SWMTKN-1-{d}-{}", &s[..24]),
                TokenError::SecretLength { found: 24 },
            ),
            (
                format!("SWMTKN-1-{d}-_{}", &s[1..]),
                TokenError::SecretCharset { position: 0 },
            ),
            (
                format!("SWMTKN-1-{d}-{max_secret}"),
                TokenError::SecretRange,
            ),
            (format!(" {good}"), TokenError::Prefix),
        ];
        for (text, expected) in cases {
            assert_eq!(JoinToken::parse(&text).err(), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn trailing_newline_is_a_length_error() {
        let good = JoinToken::generate(&digest(3)).to_string();
        assert_eq!(
            JoinToken::parse(&format!("{good}\n")).err(),
            Some(TokenError::SecretLength { found: 26 })
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let token = JoinToken::generate(&digest(4));
        let text = token.to_string();
        let secret = &text[text.len() - 25..];
        assert!(!format!("{token:?}").contains(secret));
        let err = JoinToken::parse(&format!("SWMTKN-9-{}", &text[9..])).err();
        assert_eq!(err, Some(TokenError::Version));
        let shown = format!(
            "{err:?} {}",
            err.as_ref().map(ToString::to_string).unwrap_or_default()
        );
        assert!(!shown.contains(secret));
    }

    #[test]
    fn rotate_changes_only_the_secret() {
        let token = JoinToken::generate(&digest(5));
        let rotated = token.rotate();
        assert_eq!(token.ca_digest(), rotated.ca_digest());
        assert_ne!(token, rotated);
    }

    #[test]
    fn authorize_picks_the_role_and_refuses_the_rest() {
        let mut tokens = JoinTokens::generate(&digest(6));
        let worker = tokens.get(NodeRole::Worker).clone();
        let manager = tokens.get(NodeRole::Manager).clone();
        assert_eq!(tokens.authorize(&worker), Ok(NodeRole::Worker));
        assert_eq!(tokens.authorize(&manager), Ok(NodeRole::Manager));

        let stranger = JoinToken::generate(&digest(6));
        assert_eq!(tokens.authorize(&stranger), Err(TokenError::UnknownSecret));
        let other_ca = JoinToken::generate(&digest(7));
        assert!(matches!(
            tokens.authorize(&other_ca),
            Err(TokenError::WrongCa { .. })
        ));

        tokens.rotate(NodeRole::Worker);
        assert_eq!(tokens.authorize(&worker), Err(TokenError::UnknownSecret));
        assert_eq!(tokens.authorize(&manager), Ok(NodeRole::Manager));

        tokens.set_ca_digest(&digest(8));
        assert!(matches!(
            tokens.authorize(&manager),
            Err(TokenError::WrongCa { .. })
        ));
        let mut moved = manager.clone();
        moved.ca_digest = digest(8);
        assert_eq!(tokens.authorize(&moved), Ok(NodeRole::Manager));
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn arb_token() -> impl Strategy<Value = JoinToken> {
        (
            prop::array::uniform32(any::<u8>()),
            prop::array::uniform16(any::<u8>()),
        )
            .prop_map(|(d, s)| JoinToken {
                ca_digest: CaDigest::from_bytes(d),
                secret: Secret(s),
            })
    }

    proptest! {
        // Cheap cases: run more than the default 256.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _outcome = JoinToken::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_near_tokens(
            digest in "[0-9a-zA-Z\u{e9}-]{45,55}",
            secret in "[0-9a-zA-Z\u{e9}-]{20,30}",
        ) {
            let _outcome = JoinToken::parse(&format!("SWMTKN-1-{digest}-{secret}"));
        }

        #[test]
        fn format_then_parse_round_trips(token in arb_token()) {
            let text = token.to_string();
            let parsed = JoinToken::parse(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&token));
            prop_assert_eq!(parsed.map(|t| t.to_string()), Ok(text));
        }

        /// Substituting, inserting or deleting one character never yields
        /// the same token: the format is canonical.
        #[test]
        fn single_character_mutations_never_parse_to_the_same_token(
            token in arb_token(),
            index in any::<prop::sample::Index>(),
            replacement in any::<char>(),
            kind in 0u8..3,
        ) {
            let mut chars: Vec<char> = token.to_string().chars().collect();
            let at = index.index(chars.len());
            match kind {
                0 => {
                    prop_assume!(chars[at] != replacement);
                    chars[at] = replacement;
                }
                1 => chars.insert(at, replacement),
                _ => {
                    chars.remove(at);
                }
            }
            let mutated: String = chars.into_iter().collect();
            if let Ok(parsed) = JoinToken::parse(&mutated) {
                prop_assert_ne!(parsed, token);
            }
        }

        /// The same with replacements drawn from the token alphabet, which
        /// reach the parser's value checks far more often than any char.
        #[test]
        fn alphabet_substitutions_parse_to_a_different_token(
            token in arb_token(),
            index in any::<prop::sample::Index>(),
            replacement in prop::sample::select(
                "0123456789abcdefghijklmnopqrstuvwxyzA-".chars().collect::<Vec<_>>()
            ),
        ) {
            let mut chars: Vec<char> = token.to_string().chars().collect();
            let at = index.index(chars.len());
            prop_assume!(chars[at] != replacement);
            chars[at] = replacement;
            let mutated: String = chars.into_iter().collect();
            if let Ok(parsed) = JoinToken::parse(&mutated) {
                prop_assert_ne!(parsed, token);
            }
        }
    }
}
