//! Node side of the PKI: roles, node keys and CSRs, and the identity a
//! node's certificate carries (CN = node id, OU = role, O = cluster id).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use x509_parser::certificate::X509Certificate;
use zeroize::{Zeroize, Zeroizing};

use crate::pki::{asn1_to_system, certs_from_pem, parse_cert, single_attr};
use crate::{CaCert, CaError, base36};

const MANAGER_OU: &str = "shoal-manager";
const WORKER_OU: &str = "shoal-worker";
/// The OU of operators' client certificates (`swarm ca --issue-client-cert`):
/// no node role, so no node or Raft RPC accepts them.
pub(crate) const CLIENT_OU: &str = "shoal-client";

/// A node's role, as its certificate's OU states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Manager,
    Worker,
}

impl NodeRole {
    /// The certificate OU, and a DNS SAN, for this role.
    pub const fn ou(self) -> &'static str {
        match self {
            Self::Manager => MANAGER_OU,
            Self::Worker => WORKER_OU,
        }
    }

    pub fn from_ou(ou: &str) -> Option<Self> {
        match ou {
            MANAGER_OU => Some(Self::Manager),
            WORKER_OU => Some(Self::Worker),
            _ => None,
        }
    }

    /// The TLS server name that any node of this role answers to. Dial
    /// managers with `NodeRole::Manager.server_name()` when any manager will
    /// do: the handshake then fails unless the server's certificate says
    /// manager (swarm's agents dial "swarm-manager" the same way).
    pub fn server_name(self) -> ServerName<'static> {
        // Both OUs are valid DNS names (a unit test checks); were one not,
        // the unspecified address matches no certificate and dialling fails
        // closed.
        ServerName::try_from(self.ou())
            .unwrap_or(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()))
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manager => "manager",
            Self::Worker => "worker",
        })
    }
}

/// A fresh node id in swarm's format: 25 base36 characters (128 random bits).
pub fn generate_node_id() -> String {
    loop {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let id = base36::encode(&bytes, 25);
        // All-digit ids (p ≈ 1e-14) would not be usable as DNS names.
        if validate_node_id(&id).is_ok() {
            return id;
        }
    }
}

/// Node ids go into a DNS SAN, so they must be one lowercase DNS label, with
/// a letter (an all-numeric name is refused by TLS name checks), and must not
/// be a role name, or a node could answer to `shoal-manager`.
pub(crate) fn validate_node_id(node_id: &str) -> Result<(), CaError> {
    label_problem(node_id).map_or(Ok(()), |reason| {
        let node_id = node_id.to_owned();
        Err(CaError::InvalidNodeId { node_id, reason })
    })
}

/// Why `node_id` is not one lowercase DNS label with a letter that names
/// no role; `None` when it is fine. Client names follow the same rule.
pub(crate) fn label_problem(node_id: &str) -> Option<&'static str> {
    if node_id.is_empty() || node_id.len() > 63 {
        Some("must be 1 to 63 characters")
    } else if !node_id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only a-z, 0-9 and '-'")
    } else if node_id.starts_with('-') || node_id.ends_with('-') {
        Some("must not start or end with '-'")
    } else if !node_id.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain a letter")
    } else if NodeRole::from_ou(node_id).is_some() || node_id == CLIENT_OU {
        Some("must not be a role name")
    } else {
        None
    }
}

/// Cluster ids go into the subject O (64 characters at most by X.520).
pub(crate) fn validate_cluster_id(cluster_id: &str) -> Result<(), CaError> {
    let reason = if cluster_id.is_empty() || cluster_id.len() > 64 {
        Some("must be 1 to 64 characters")
    } else if !cluster_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("may contain only A-Z, a-z, 0-9, '-', '_' and '.'")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| {
        let cluster_id = cluster_id.to_owned();
        Err(CaError::InvalidClusterId { cluster_id, reason })
    })
}

/// A node's private key (ECDSA P-256). It never leaves the node: the node
/// sends only [`NodeKey::csr`] to a manager.
pub struct NodeKey {
    key: Zeroizing<KeyPair>,
}

impl NodeKey {
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CaError::KeyGeneration {
                what: "node",
                source,
            }
        })?;
        Ok(Self {
            key: Zeroizing::new(key),
        })
    }

    /// Loads a PKCS#8 PEM key, as [`NodeKey::to_pem`] writes it.
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(pem).map_err(|source| CaError::PrivateKey {
            what: "node",
            source,
        })?;
        Ok(Self {
            key: Zeroizing::new(key),
        })
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    pub(crate) fn public_key_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    pub(crate) fn to_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// A CSR proving possession of this key. Its subject is left empty: the
    /// CA decides node id, role and cluster, never the requester.
    pub fn csr(&self) -> Result<CsrPem, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let pem = params
            .serialize_request(&*self.key)
            .and_then(|csr| csr.pem())
            .map_err(|source| CaError::CertificateGeneration {
                what: "signing request",
                source,
            })?;
        Ok(CsrPem(pem))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

/// A PEM certificate signing request, as sent to a manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrPem(String);

impl CsrPem {
    pub fn new(pem: impl Into<String>) -> Self {
        Self(pem.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Who a certificate says its holder is. Obtain it only from a chain that
/// was verified against the cluster CA: by the TLS handshake (see
/// [`PeerIdentity::from_peer_certs`]) or by [`CaCert::verify_node_chain`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    node_id: String,
    role: NodeRole,
    cluster_id: String,
}

impl PeerIdentity {
    /// Reads CN, OU and O from a DER certificate. Does NOT verify it.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, CaError> {
        Self::from_x509(&parse_cert(der, "peer certificate")?)
    }

    /// The identity of a TLS peer, from the certificates rustls verified
    /// (`conn.peer_certificates()`, or tonic's `request.peer_certs()`).
    /// `None` or an empty list means an anonymous peer, which is an error:
    /// authorisation fails closed.
    pub fn from_peer_certs(certs: Option<&[CertificateDer<'_>]>) -> Result<Self, CaError> {
        let leaf = certs
            .and_then(<[_]>::first)
            .ok_or(CaError::NoPeerCertificate)?;
        Self::from_cert_der(leaf)
    }

    pub(crate) fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, CaError> {
        let subject = cert.subject();
        let node_id = single_attr(subject.iter_common_name(), "CN")?;
        let ou = single_attr(subject.iter_organizational_unit(), "OU")?;
        let cluster_id = single_attr(subject.iter_organization(), "O")?;
        if ou == CLIENT_OU {
            return Err(CaError::ClientCertificate { name: node_id });
        }
        let role = NodeRole::from_ou(&ou).ok_or(CaError::UnknownRole { ou })?;
        validate_node_id(&node_id)?;
        validate_cluster_id(&cluster_id)?;
        Ok(Self {
            node_id,
            role,
            cluster_id,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn role(&self) -> NodeRole {
        self.role
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// For per-RPC authorisation, e.g. only managers may call the Raft peer
    /// service or the control API.
    pub fn require_role(&self, required: NodeRole) -> Result<(), CaError> {
        if self.role == required {
            Ok(())
        } else {
            Err(CaError::RoleNotAllowed {
                node_id: self.node_id.clone(),
                role: self.role,
                required,
            })
        }
    }
}

/// A node's TLS identity: its certificate chain (leaf first, then any
/// cross-signed intermediate) and private key.
pub struct NodeIdentity {
    peer: PeerIdentity,
    not_before: SystemTime,
    not_after: SystemTime,
    chain: Vec<CertificateDer<'static>>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    key: PrivateKeyDer<'static>,
}

impl NodeIdentity {
    /// Loads a certificate chain and its key, checking that the key is the
    /// certificate's. Expired certificates load (the node must still know
    /// it has to renew); TLS refuses them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let chain = certs_from_pem(cert_pem, "node certificate")?;
        let key = NodeKey::from_pem(key_pem)?;
        let (peer, not_before, not_after) = {
            // certs_from_pem returns at least one certificate.
            let leaf_der = chain.first().map(|c| c.as_ref()).unwrap_or_default();
            let leaf = parse_cert(leaf_der, "node certificate")?;
            if key.key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
                return Err(CaError::KeyMismatch { what: "node" });
            }
            let validity = leaf.validity();
            (
                PeerIdentity::from_x509(&leaf)?,
                asn1_to_system(validity.not_before),
                asn1_to_system(validity.not_after),
            )
        };
        Ok(Self {
            peer,
            not_before,
            not_after,
            chain,
            cert_pem: cert_pem.to_owned(),
            key_pem: Zeroizing::new(key_pem.to_owned()),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key.serialize_der())),
        })
    }

    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    pub fn node_id(&self) -> &str {
        self.peer.node_id()
    }

    pub fn role(&self) -> NodeRole {
        self.peer.role()
    }

    pub fn cluster_id(&self) -> &str {
        self.peer.cluster_id()
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain as loaded, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// When the certificate was issued: `not_before` is backdated by
    /// [`crate::root`]'s fixed backdate, which is not part of its useful
    /// life.
    fn issued_at(&self) -> SystemTime {
        self.not_before
            .checked_add(crate::root::BACKDATE)
            .unwrap_or(self.not_before)
            .min(self.not_after)
    }

    /// When to ask for a new certificate: once three quarters of the time
    /// between issue and expiry have passed (so 22.5 days before the end of
    /// a 90-day certificate, 7.5 s before the end of a 30 s one). Swarm
    /// renews at a random point between 50 % and 80 %; a fixed point is
    /// easier to reason about, and the session adds jitter to when it
    /// checks.
    pub fn renew_at(&self) -> SystemTime {
        let issued = self.issued_at();
        let lifetime = self
            .not_after
            .duration_since(issued)
            .unwrap_or(Duration::ZERO);
        issued
            .checked_add(lifetime - lifetime / 4)
            .unwrap_or(issued)
    }

    /// True from [`NodeIdentity::renew_at`] on, and once expired.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// Whether `ca` signed this node's certificate itself (not through a
    /// cross-signed intermediate): which root a node has moved to.
    pub fn issued_by(&self, ca: &CaCert) -> bool {
        let Some(leaf) = self.chain.first() else {
            return false;
        };
        let (Ok(leaf), Ok(root)) = (
            parse_cert(leaf, "node certificate"),
            parse_cert(ca.der(), "CA certificate"),
        ) else {
            return false;
        };
        leaf.issuer().as_raw() == root.subject().as_raw()
            && leaf.verify_signature(Some(root.public_key())).is_ok()
    }

    /// Checks the chain against `ca` at `now`, e.g. on a certificate just
    /// received from a manager, before storing it.
    pub fn verify(&self, ca: &CaCert, now: SystemTime) -> Result<(), CaError> {
        ca.verify_node_chain(&self.chain, now).map(drop)
    }
}

impl Drop for NodeIdentity {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer", &self.peer)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rules() {
        assert!(validate_node_id("abc123").is_ok());
        assert!(validate_node_id(&generate_node_id()).is_ok());
        for bad in [
            "",
            "ABC",
            "a.b",
            "-abc",
            "abc-",
            "12345",
            "shoal-manager",
            "shoal-worker",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(validate_node_id(bad), Err(CaError::InvalidNodeId { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn generated_node_ids_are_swarm_shaped() {
        let id = generate_node_id();
        assert_eq!(id.len(), 25);
        assert_ne!(id, generate_node_id());
    }

    #[test]
    fn cluster_id_rules() {
        assert!(validate_cluster_id("c1-prod_2.x").is_ok());
        for bad in ["", "a b", "a/b", "é", &"c".repeat(65)] {
            assert!(validate_cluster_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn roles_round_trip_through_ou() {
        for role in [NodeRole::Manager, NodeRole::Worker] {
            assert_eq!(NodeRole::from_ou(role.ou()), Some(role));
            assert!(matches!(role.server_name(), ServerName::DnsName(_)));
            assert_eq!(role.server_name().to_str(), role.ou());
        }
        assert_eq!(NodeRole::from_ou("swarm-manager"), None);
    }

    #[test]
    fn node_key_pem_round_trips_and_debug_is_redacted() -> Result<(), CaError> {
        let key = NodeKey::generate()?;
        let again = NodeKey::from_pem(&key.to_pem())?;
        assert_eq!(key.key.public_key_raw(), again.key.public_key_raw());
        assert_eq!(format!("{key:?}"), "NodeKey(<redacted>)");
        assert!(key.csr()?.as_str().contains("CERTIFICATE REQUEST"));
        Ok(())
    }

    #[test]
    fn anonymous_peer_is_refused() {
        assert!(matches!(
            PeerIdentity::from_peer_certs(None),
            Err(CaError::NoPeerCertificate)
        ));
        assert!(matches!(
            PeerIdentity::from_peer_certs(Some(&[])),
            Err(CaError::NoPeerCertificate)
        ));
    }
}
