//! The cluster's root CA: generation, storage as PEM, issuing node
//! certificates from CSRs, and root rotation by cross-signing.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::node::{CLIENT_OU, label_problem, validate_cluster_id, validate_node_id};
use crate::pki::{
    asn1_to_system, cert_to_pem, parse_cert, single_attr, single_cert_from_pem, system_to_offset,
    unix_time,
};
use crate::{CaError, CsrPem, NodeRole, PeerIdentity, base36};

/// Swarm's `--cert-expiry` default: 2160 h (90 days).
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(2160 * 3600);
/// Swarm's root CA lifetime: 20 years.
pub const DEFAULT_ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// The shortest `--cert-expiry`. Swarm refuses anything below one hour; we
/// allow 30 s, so that renewal can be watched (and tested) within a test
/// run: such a certificate is renewed 22.5 s after issue. Short lifetimes
/// are for labs: a node that misses its renewal window (the last quarter
/// of the lifetime) must rejoin.
pub const MIN_CERT_VALIDITY: Duration = Duration::from_secs(30);
/// Certificates start this long before they are issued, so a node whose
/// clock lags the manager's still accepts them (swarm's `CertBackdate`).
pub(crate) const BACKDATE: Duration = Duration::from_secs(3600);

/// SHA-256 of a CA certificate's DER: what a join token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest([u8; 32]);

impl CaDigest {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Swarm's token spelling: base36, zero-padded to 50 characters.
    pub fn to_base36(&self) -> String {
        base36::encode(&self.0, 50)
    }
}

impl fmt::Display for CaDigest {
    /// `sha256:<hex>`, as `docker swarm ca` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A root CA certificate without its key: what every node trusts.
#[derive(Clone)]
pub struct CaCert {
    der: CertificateDer<'static>,
    pem: String,
    digest: CaDigest,
    cluster_id: String,
    not_after: SystemTime,
    /// Built once: webpki's own parse of the anchor is checked at load.
    roots: Arc<RootCertStore>,
}

impl CaCert {
    /// Loads a PEM holding exactly one self-signed CA certificate.
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        Self::from_der(single_cert_from_pem(pem, "CA certificate")?)
    }

    /// Loads a trust bundle: one or more self-signed CA certificates, as a
    /// node stores them during a root rotation (the join tokens' root first).
    pub fn bundle_from_pem(pem: &str) -> Result<Vec<Self>, CaError> {
        crate::pki::certs_from_pem(pem, "CA bundle")?
            .into_iter()
            .map(Self::from_der)
            .collect()
    }

    pub fn from_der(der: CertificateDer<'static>) -> Result<Self, CaError> {
        const WHAT: &str = "CA certificate";
        let cert = parse_cert(&der, WHAT)?;
        if !cert.is_ca() {
            return Err(CaError::NotACa { what: WHAT });
        }
        if cert.subject().as_raw() != cert.issuer().as_raw() || cert.verify_signature(None).is_err()
        {
            return Err(CaError::NotSelfSigned { what: WHAT });
        }
        let cluster_id = single_attr(cert.subject().iter_organization(), "O")?;
        let not_after = asn1_to_system(cert.validity().not_after);
        drop(cert);
        let mut roots = RootCertStore::empty();
        roots
            .add(der.clone())
            .map_err(|source| CaError::TrustAnchor { source })?;
        Ok(Self {
            pem: cert_to_pem(&der),
            digest: CaDigest::of_der(&der),
            der,
            cluster_id,
            not_after,
            roots: Arc::new(roots),
        })
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn digest(&self) -> CaDigest {
        self.digest
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn root_store(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// Verifies a node's chain (leaf first) against this CA at `now`, as the
    /// TLS handshake would, and returns who it names. Useful outside TLS,
    /// e.g. to check a certificate before storing it.
    pub fn verify_node_chain(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<PeerIdentity, CaError> {
        let (leaf, intermediates) = chain.split_first().ok_or(CaError::NoPeerCertificate)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.root_store(), crate::tls::provider())
                .build()
                .map_err(|source| CaError::TlsVerifier {
                    what: "node chain",
                    source,
                })?;
        verifier
            .verify_client_cert(leaf, intermediates, unix_time(now))
            .map_err(|source| CaError::CertificateRejected { source })?;
        PeerIdentity::from_cert_der(leaf)
    }
}

impl fmt::Debug for CaCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCert")
            .field("digest", &self.digest)
            .field("cluster_id", &self.cluster_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The cluster root CA with its signing key. Lives on managers only; the
/// caller stores `cert_pem` in Raft and `key_pem` encrypted.
///
/// During a root rotation (see [`RootCa::rotate`]) it also holds a
/// cross-signed copy of its certificate, issued by the previous root, which
/// [`RootCa::issue`] appends to every node certificate.
pub struct RootCa {
    cert: CaCert,
    key: Zeroizing<KeyPair>,
    cross_signed: Option<CaCrossSigned>,
}

#[derive(Clone)]
struct CaCrossSigned {
    der: CertificateDer<'static>,
    pem: String,
}

impl RootCa {
    /// A new self-signed ECDSA P-256 root for `cluster_id`, valid from now
    /// (backdated an hour) for `validity`.
    pub fn generate(cluster_id: &str, validity: Duration) -> Result<Self, CaError> {
        Self::generate_at(cluster_id, validity, SystemTime::now())
    }

    /// [`RootCa::generate`] with an explicit clock.
    pub fn generate_at(
        cluster_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let (params, key) = new_root(cluster_id, validity, now)?;
        let cert = params
            .self_signed(&*key)
            .map_err(|source| CaError::CertificateGeneration {
                what: "root CA",
                source,
            })?;
        Ok(Self {
            cert: CaCert::from_der(cert.der().clone())?,
            key,
            cross_signed: None,
        })
    }

    /// Loads a root stored as PEM (certificate, and PKCS#8 key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let cert = CaCert::from_pem(cert_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|source| CaError::PrivateKey {
            what: "root CA",
            source,
        })?;
        let parsed = parse_cert(cert.der(), "CA certificate")?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch { what: "root CA" });
        }
        drop(parsed);
        Ok(Self {
            cert,
            key: Zeroizing::new(key),
            cross_signed: None,
        })
    }

    /// Attaches the cross-signed certificate of an unfinished rotation, as
    /// stored from [`RootCa::cross_signed_pem`]. Checks that it certifies
    /// this root's subject and key; it cannot check who signed it (the old
    /// root), so store it with the same care as the root itself.
    pub fn with_cross_signed(mut self, cross_signed_pem: &str) -> Result<Self, CaError> {
        let der = single_cert_from_pem(cross_signed_pem, "cross-signed CA certificate")?;
        let cross = parse_cert(&der, "cross-signed CA certificate")?;
        let root = parse_cert(self.cert.der(), "CA certificate")?;
        if !cross.is_ca()
            || cross.subject().as_raw() != root.subject().as_raw()
            || cross.public_key().raw != root.public_key().raw
        {
            return Err(CaError::CrossSignedMismatch);
        }
        drop((cross, root));
        self.cross_signed = Some(CaCrossSigned {
            pem: cert_to_pem(&der),
            der,
        });
        Ok(self)
    }

    pub fn cert(&self) -> &CaCert {
        &self.cert
    }

    pub fn cert_pem(&self) -> &str {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// SHA-256 of this root's certificate DER.
    pub fn digest(&self) -> CaDigest {
        self.cert.digest()
    }

    pub fn cross_signed_pem(&self) -> Option<&str> {
        self.cross_signed.as_ref().map(|c| c.pem.as_str())
    }

    pub fn cross_signed_der(&self) -> Option<&CertificateDer<'static>> {
        self.cross_signed.as_ref().map(|c| &c.der)
    }

    /// Signs a node's CSR. Only the CSR's public key is used (its signature
    /// proves the requester holds the key); the subject is set here: CN =
    /// `node_id`, OU = role, O = `cluster_id`, DNS SANs = node id and role,
    /// for both TLS client and server auth. The certificate never outlives
    /// the CA. Returns the PEM chain to hand to the node: the certificate,
    /// then the cross-signed root during a rotation.
    pub fn issue(
        &self,
        csr: &CsrPem,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, CaError> {
        self.issue_at(csr, node_id, role, cluster_id, validity, SystemTime::now())
    }

    /// [`RootCa::issue`] with an explicit clock.
    pub fn issue_at(
        &self,
        csr: &CsrPem,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String, CaError> {
        validate_node_id(node_id)?;
        self.sign(
            csr,
            Subject {
                cn: node_id,
                ou: role.ou(),
                sans: vec![node_id.to_owned(), role.ou().to_owned()],
                ekus: vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            },
            cluster_id,
            validity,
            now,
        )
    }

    /// Signs an operator's CSR as a client certificate (`swarm ca
    /// --issue-client-cert`): CN = `name`, OU = `shoal-client`, O =
    /// `cluster_id`, TLS client auth only and no DNS name, so it can never
    /// serve as a manager, and no node role, so node and Raft RPCs refuse
    /// it. Returns the PEM chain, as [`RootCa::issue`].
    pub fn issue_client(
        &self,
        csr: &CsrPem,
        name: &str,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, CaError> {
        self.issue_client_at(csr, name, cluster_id, validity, SystemTime::now())
    }

    /// [`RootCa::issue_client`] with an explicit clock.
    pub fn issue_client_at(
        &self,
        csr: &CsrPem,
        name: &str,
        cluster_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String, CaError> {
        if let Some(reason) = label_problem(name) {
            let name = name.to_owned();
            return Err(CaError::InvalidClientName { name, reason });
        }
        self.sign(
            csr,
            Subject {
                cn: name,
                ou: CLIENT_OU,
                sans: Vec::new(),
                ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            },
            cluster_id,
            validity,
            now,
        )
    }

    /// The checks and signature every leaf certificate gets.
    fn sign(
        &self,
        csr: &CsrPem,
        subject: Subject<'_>,
        cluster_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String, CaError> {
        if cluster_id != self.cert.cluster_id() {
            return Err(CaError::ClusterMismatch {
                requested: cluster_id.to_owned(),
                ca: self.cert.cluster_id().to_owned(),
            });
        }
        if now >= self.cert.not_after() {
            return Err(CaError::CaExpired {
                not_after: self.cert.not_after(),
            });
        }
        let (not_before, not_after) = validity_window(validity, now, Some(self.cert.not_after()))?;

        let request = CertificateSigningRequestParams::from_pem(csr.as_str())
            .map_err(|source| CaError::InvalidCsr { source })?;
        if request.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::UnsupportedCsrKey);
        }

        let generation_error = |source| CaError::CertificateGeneration {
            what: "leaf",
            source,
        };
        let mut params = CertificateParams::new(subject.sans).map_err(generation_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.cn);
        dn.push(DnType::OrganizationalUnitName, subject.ou);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = subject.ekus;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params
            .signed_by(&request.public_key, &self.issuer()?)
            .map_err(generation_error)?;
        let mut chain = cert.pem();
        if let Some(cross) = &self.cross_signed {
            chain.push_str(&cross.pem);
        }
        Ok(chain)
    }

    /// Starts a root rotation (`docker swarm ca --rotate`): a new root with
    /// a new key, plus the same certificate cross-signed by this root.
    ///
    /// How the caller completes it (swarm's procedure):
    /// 1. Store the returned root (cert, key, cross-signed) as the pending
    ///    root, and issue every certificate from it from now on. Each chain
    ///    carries the cross-signed certificate, so nodes still trusting only
    ///    the old root accept it, and nodes keep trusting the old root.
    /// 2. Make every node renew. Old certificates keep working meanwhile.
    /// 3. Once every node holds a certificate from the new root, make the
    ///    new root the one trust anchor everywhere, move the join tokens to
    ///    its digest ([`crate::JoinTokens::set_ca_digest`]), and call
    ///    [`RootCa::finish_rotation`].
    ///
    /// Limits: a node still holding an old-root certificate at step 3 is
    /// refused and must rejoin; there is no CRL, removal is by node id
    /// ([`crate::RemovedNodes`]).
    pub fn rotate(&self, validity: Duration) -> Result<RootCa, CaError> {
        self.rotate_at(validity, SystemTime::now())
    }

    /// [`RootCa::rotate`] with an explicit clock.
    pub fn rotate_at(&self, validity: Duration, now: SystemTime) -> Result<RootCa, CaError> {
        let (params, key) = new_root(self.cert.cluster_id(), validity, now)?;
        let generation_error = |source| CaError::CertificateGeneration {
            what: "rotated root CA",
            source,
        };
        let cert = params.self_signed(&*key).map_err(generation_error)?;

        // The same subject, key and extensions, issued by this root; valid no
        // longer than this root, since it only helps chain to it.
        let mut cross_params = params.clone();
        cross_params.serial_number = Some(random_serial());
        let old_not_after = system_to_offset(self.cert.not_after())
            .ok_or(CaError::ValidityOutOfRange { validity })?;
        cross_params.not_after = cross_params.not_after.min(old_not_after);
        cross_params.use_authority_key_identifier_extension = true;
        let cross = cross_params
            .signed_by(&*key, &self.issuer()?)
            .map_err(generation_error)?;

        Ok(Self {
            cert: CaCert::from_der(cert.der().clone())?,
            key,
            cross_signed: Some(CaCrossSigned {
                pem: cross.pem(),
                der: cross.der().clone(),
            }),
        })
    }

    /// Ends a rotation: certificates issued from now on carry no
    /// cross-signed certificate (see [`RootCa::rotate`], step 3).
    pub fn finish_rotation(mut self) -> Self {
        self.cross_signed = None;
        self
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(self.cert.der(), &*self.key).map_err(|source| {
            CaError::CertificateGeneration {
                what: "root CA issuer",
                source,
            }
        })
    }
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("cert", &self.cert)
            .field("rotating", &self.cross_signed.is_some())
            .finish_non_exhaustive()
    }
}

/// What a leaf certificate names and may be used for.
struct Subject<'a> {
    cn: &'a str,
    ou: &'static str,
    sans: Vec<String>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
}

fn new_key(what: &'static str) -> Result<Zeroizing<KeyPair>, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map(Zeroizing::new)
        .map_err(|source| CaError::KeyGeneration { what, source })
}

/// Parameters and key for a new self-signed root.
fn new_root(
    cluster_id: &str,
    validity: Duration,
    now: SystemTime,
) -> Result<(CertificateParams, Zeroizing<KeyPair>), CaError> {
    validate_cluster_id(cluster_id)?;
    let (not_before, not_after) = validity_window(validity, now, None)?;
    let key = new_key("root CA")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A unique CN per root, so old and new roots are told apart by name
    // during a rotation instead of only by key.
    let mut tag = [0u8; 8];
    rand::rng().fill_bytes(&mut tag);
    dn.push(
        DnType::CommonName,
        format!("shoal-ca-{}", base36::encode(&tag, 13)),
    );
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    // Path length 1: room for the cross-signed root during a rotation.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    Ok((params, key))
}

/// `[now - BACKDATE, min(now + validity, cap)]`, as certificate dates.
fn validity_window(
    validity: Duration,
    now: SystemTime,
    cap: Option<SystemTime>,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CaError> {
    if validity < MIN_CERT_VALIDITY {
        return Err(CaError::ValidityTooShort {
            validity,
            minimum: MIN_CERT_VALIDITY,
        });
    }
    let not_before = now.checked_sub(BACKDATE).and_then(system_to_offset);
    let not_after = now
        .checked_add(validity)
        .map(|t| cap.map_or(t, |cap| t.min(cap)))
        .and_then(system_to_offset);
    not_before
        .zip(not_after)
        .ok_or(CaError::ValidityOutOfRange { validity })
}

/// 128 random bits, positive (RFC 5280 wants serials unique per issuer and
/// positive; random ones need no counter in Raft).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so DER keeps all 16
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeIdentity, NodeKey};

    const CLUSTER: &str = "c1";
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn identity_at(
        ca: &RootCa,
        node_id: &str,
        role: NodeRole,
        validity: Duration,
        now: SystemTime,
    ) -> Result<NodeIdentity, CaError> {
        let key = NodeKey::generate()?;
        let chain = ca.issue_at(&key.csr()?, node_id, role, CLUSTER, validity, now)?;
        NodeIdentity::from_pem(&chain, &key.to_pem())
    }

    fn identity(ca: &RootCa, node_id: &str, role: NodeRole) -> Result<NodeIdentity, CaError> {
        identity_at(
            ca,
            node_id,
            role,
            DEFAULT_NODE_CERT_VALIDITY,
            SystemTime::now(),
        )
    }

    #[test]
    fn root_is_a_self_signed_p256_ca_and_round_trips_through_pem() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        assert_eq!(ca.digest(), CaDigest::of_der(ca.cert().der()));
        assert_eq!(ca.cert().cluster_id(), CLUSTER);
        let parsed = parse_cert(ca.cert().der(), "test")?;
        assert!(parsed.is_ca());
        assert_eq!(
            parsed.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );

        let loaded = RootCa::from_pem(ca.cert_pem(), &ca.key_pem())?;
        assert_eq!(loaded.digest(), ca.digest());
        assert_eq!(CaCert::from_pem(ca.cert_pem())?.digest(), ca.digest());
        // The loaded root issues certificates that chain to the stored one.
        let node = identity(&loaded, "node1", NodeRole::Worker)?;
        node.verify(ca.cert(), SystemTime::now())?;
        Ok(())
    }

    #[test]
    fn loading_refuses_a_foreign_key_or_a_leaf() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let other = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        assert!(matches!(
            RootCa::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(CaError::KeyMismatch { .. })
        ));
        let node = identity(&ca, "node1", NodeRole::Manager)?;
        assert!(matches!(
            CaCert::from_pem(node.cert_pem()),
            Err(CaError::NotACa { .. })
        ));
        let two = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert!(matches!(
            CaCert::from_pem(&two),
            Err(CaError::PemBlocks { found: 2, .. })
        ));
        assert!(matches!(
            CaCert::from_pem("not pem"),
            Err(CaError::PemBlocks { found: 0, .. })
        ));
        assert!(matches!(
            CaCert::from_pem("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"),
            Err(CaError::Pem { .. })
        ));
        Ok(())
    }

    #[test]
    fn issued_certificate_names_node_role_and_cluster() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let now = SystemTime::now();
        let node = identity_at(
            &ca,
            "mgr1",
            NodeRole::Manager,
            DEFAULT_NODE_CERT_VALIDITY,
            now,
        )?;
        assert_eq!(node.node_id(), "mgr1");
        assert_eq!(node.role(), NodeRole::Manager);
        assert_eq!(node.cluster_id(), CLUSTER);
        assert_eq!(node.chain().len(), 1);

        let cert = parse_cert(&node.chain()[0], "test")?;
        let subject = cert.subject();
        assert_eq!(single_attr(subject.iter_common_name(), "CN")?, "mgr1");
        assert_eq!(
            single_attr(subject.iter_organizational_unit(), "OU")?,
            "shoal-manager"
        );
        assert_eq!(single_attr(subject.iter_organization(), "O")?, CLUSTER);
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(sans, ["DNSName(mgr1)", "DNSName(shoal-manager)"]);
        let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value);
        assert!(eku.is_some_and(|e| e.server_auth && e.client_auth));
        assert!(!cert.is_ca());

        // Validity: backdated an hour, 90 days long, to the second.
        let secs = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        };
        assert_eq!(secs(node.not_before()), secs(now) - 3600);
        assert_eq!(secs(node.not_after()), secs(now) + 2160 * 3600);
        Ok(())
    }

    #[test]
    fn certificates_never_outlive_the_ca() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, 10 * DAY)?;
        let node = identity(&ca, "node1", NodeRole::Worker)?;
        assert_eq!(node.not_after(), ca.cert().not_after());
        Ok(())
    }

    #[test]
    fn issue_refuses_bad_requests() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let csr = NodeKey::generate()?.csr()?;
        let v = DEFAULT_NODE_CERT_VALIDITY;
        let w = NodeRole::Worker;
        assert!(matches!(
            ca.issue(&csr, "Bad_Id", w, CLUSTER, v),
            Err(CaError::InvalidNodeId { .. })
        ));
        assert!(matches!(
            ca.issue(&csr, "shoal-manager", w, CLUSTER, v),
            Err(CaError::InvalidNodeId { .. })
        ));
        assert!(matches!(
            ca.issue(&csr, "n1", w, "other", v),
            Err(CaError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            ca.issue(&csr, "n1", w, CLUSTER, Duration::from_secs(29)),
            Err(CaError::ValidityTooShort { .. })
        ));
        assert!(matches!(
            ca.issue(&csr, "n1", w, CLUSTER, Duration::MAX),
            Err(CaError::ValidityOutOfRange { .. })
        ));
        assert!(matches!(
            ca.issue(&CsrPem::new("garbage"), "n1", w, CLUSTER, v),
            Err(CaError::InvalidCsr { .. })
        ));
        let after_ca = ca.cert().not_after() + DAY;
        assert!(matches!(
            ca.issue_at(&csr, "n1", w, CLUSTER, v, after_ca),
            Err(CaError::CaExpired { .. })
        ));

        // A CSR whose signature does not match its key proves nothing.
        let mut der = pem::parse(csr.as_str())
            .map(pem::Pem::into_contents)
            .unwrap_or_default();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = CsrPem::new(pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)));
        assert!(matches!(
            ca.issue(&tampered, "n1", w, CLUSTER, v),
            Err(CaError::InvalidCsr { .. })
        ));

        // Only P-256 node keys.
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .and_then(|k| CertificateParams::default().serialize_request(&k))
            .and_then(|csr| csr.pem())
            .map_err(|source| CaError::InvalidCsr { source })?;
        assert!(matches!(
            ca.issue(&CsrPem::new(ed), "n1", w, CLUSTER, v),
            Err(CaError::UnsupportedCsrKey)
        ));
        Ok(())
    }

    #[test]
    fn identity_refuses_someone_elses_key() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let node = identity(&ca, "node1", NodeRole::Worker)?;
        let stranger = NodeKey::generate()?;
        assert!(matches!(
            NodeIdentity::from_pem(node.cert_pem(), &stranger.to_pem()),
            Err(CaError::KeyMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn renewal_is_due_after_three_quarters_of_the_useful_lifetime() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let now = SystemTime::now();
        // 80 h from issue (the 1 h backdate is not counted): renew at 60 h.
        let node = identity_at(&ca, "node1", NodeRole::Worker, 80 * 3600 * SECOND, now)?;
        let renew_at = node.not_before() + BACKDATE + 60 * 3600 * SECOND;
        assert_eq!(node.renew_at(), renew_at);
        assert!(!node.needs_renewal(now));
        assert!(!node.needs_renewal(renew_at - SECOND));
        assert!(node.needs_renewal(renew_at));
        assert!(!node.is_expired(renew_at));
        assert!(node.is_expired(node.not_after()));
        assert!(node.needs_renewal(node.not_after() + DAY));

        // A short expiry: 60 s, renewed 45 s after issue, not at once.
        let short = identity_at(&ca, "node2", NodeRole::Worker, 60 * SECOND, now)?;
        assert!(!short.needs_renewal(now + 44 * SECOND));
        assert!(short.needs_renewal(now + 45 * SECOND));
        Ok(())
    }

    #[test]
    fn trust_bundles_and_issuers() -> Result<(), CaError> {
        let old = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let next = old.rotate(DEFAULT_ROOT_CA_VALIDITY)?;
        let bundle = CaCert::bundle_from_pem(&format!("{}{}", old.cert_pem(), next.cert_pem()))?;
        assert_eq!(
            bundle.iter().map(CaCert::digest).collect::<Vec<_>>(),
            [old.digest(), next.digest()]
        );
        let before = identity(&old, "early", NodeRole::Worker)?;
        let after = identity(&next, "late", NodeRole::Worker)?;
        assert!(before.issued_by(old.cert()) && !before.issued_by(next.cert()));
        // Through the cross-signed certificate it chains to the old root,
        // but the new root issued it.
        assert!(after.issued_by(next.cert()) && !after.issued_by(old.cert()));
        assert!(CaCert::bundle_from_pem("").is_err());
        Ok(())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn chains_verify_only_against_their_ca_and_only_while_valid() -> Result<(), CaError> {
        let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let other = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let node = identity(&ca, "node1", NodeRole::Worker)?;
        let now = SystemTime::now();
        let peer = ca.cert().verify_node_chain(node.chain(), now)?;
        assert_eq!(peer.node_id(), "node1");
        assert!(matches!(
            node.verify(other.cert(), now),
            Err(CaError::CertificateRejected { .. })
        ));
        assert!(matches!(
            node.verify(ca.cert(), node.not_after() + SECOND),
            Err(CaError::CertificateRejected { .. })
        ));
        Ok(())
    }

    #[test]
    fn rotation_cross_signs_so_old_and_new_trust_both_accept() -> Result<(), CaError> {
        let old = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
        let before = identity(&old, "early", NodeRole::Worker)?;
        let next = old.rotate(DEFAULT_ROOT_CA_VALIDITY)?;
        assert_ne!(next.digest(), old.digest());
        assert!(next.cross_signed_pem().is_some());

        let renewed = identity(&next, "late", NodeRole::Worker)?;
        assert_eq!(renewed.chain().len(), 2);
        let now = SystemTime::now();
        // Nodes still trusting the old root accept renewed certificates…
        renewed.verify(old.cert(), now)?;
        // …nodes already trusting the new root too…
        renewed.verify(next.cert(), now)?;
        // …and old certificates keep working until trust moves.
        before.verify(old.cert(), now)?;
        assert!(before.verify(next.cert(), now).is_err());

        // Without the cross-signed certificate a renewed leaf would not
        // chain to the old root: it is what makes the transition work.
        let leaf_only =
            NodeIdentity::from_pem(&cert_to_pem(&renewed.chain()[0]), renewed.key_pem())?;
        assert!(leaf_only.verify(old.cert(), now).is_err());

        // The pending root survives storage, cross-signed certificate included.
        let stored = RootCa::from_pem(next.cert_pem(), &next.key_pem())?
            .with_cross_signed(next.cross_signed_pem().unwrap_or_default())?;
        identity(&stored, "later", NodeRole::Manager)?.verify(old.cert(), now)?;
        assert!(matches!(
            RootCa::from_pem(next.cert_pem(), &next.key_pem())?.with_cross_signed(old.cert_pem()),
            Err(CaError::CrossSignedMismatch)
        ));

        let done = next.finish_rotation();
        assert!(done.cross_signed_pem().is_none());
        assert_eq!(identity(&done, "last", NodeRole::Worker)?.chain().len(), 1);
        Ok(())
    }

    #[test]
    fn digest_prints_like_docker() {
        let d = CaDigest::from_bytes([0xab; 32]);
        assert_eq!(d.to_string(), format!("sha256:{}", "ab".repeat(32)));
    }
}
