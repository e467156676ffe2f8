//! Operators' client certificates (OU `shoal-client`, docker's client
//! certs): they reach a manager's `Control` API over `tcp://…:2377` and
//! nothing else. They are a type apart from [`PeerIdentity`], which never
//! parses from one, so every check that wants a node fails closed on them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;

use crate::node::{CLIENT_OU, label_problem, validate_cluster_id};
use crate::pki::{asn1_to_system, certs_from_pem, parse_cert, single_attr};
use crate::tls::{RevocationCheck, tls_client_with_cert};
use crate::{CaCert, CaError, NodeKey, PeerIdentity};

/// Who a client certificate names: the operator's name (CN) and cluster (O).
/// Obtain it only from a verified chain, as [`PeerIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    name: String,
    cluster_id: String,
}

impl ClientIdentity {
    pub(crate) fn from_x509(cert: &X509Certificate<'_>) -> Result<Self, CaError> {
        let subject = cert.subject();
        let name = single_attr(subject.iter_common_name(), "CN")?;
        let ou = single_attr(subject.iter_organizational_unit(), "OU")?;
        let cluster_id = single_attr(subject.iter_organization(), "O")?;
        if ou != CLIENT_OU {
            return Err(CaError::NotAClientCertificate {
                what: "the certificate",
            });
        }
        if let Some(reason) = label_problem(&name) {
            return Err(CaError::InvalidClientName { name, reason });
        }
        validate_cluster_id(&cluster_id)?;
        Ok(Self { name, cluster_id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
}

/// Who a verified certificate of this cluster names: a node or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    Node(PeerIdentity),
    Client(ClientIdentity),
}

impl CertIdentity {
    /// Reads the subject of a DER certificate. Does NOT verify it.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, CaError> {
        let cert = parse_cert(der, "peer certificate")?;
        match PeerIdentity::from_x509(&cert) {
            Ok(node) => Ok(Self::Node(node)),
            Err(CaError::ClientCertificate { .. }) => {
                ClientIdentity::from_x509(&cert).map(Self::Client)
            }
            Err(e) => Err(e),
        }
    }

    /// The identity of a TLS peer from the certificates rustls verified; no
    /// certificate is an error, as in [`PeerIdentity::from_peer_certs`].
    pub fn from_peer_certs(certs: Option<&[CertificateDer<'_>]>) -> Result<Self, CaError> {
        let leaf = certs
            .and_then(<[_]>::first)
            .ok_or(CaError::NoPeerCertificate)?;
        Self::from_cert_der(leaf)
    }
}

/// An operator's client certificate chain and key, as the CLI loads them.
pub struct ClientCert {
    identity: ClientIdentity,
    not_after: SystemTime,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientCert {
    /// Loads a client certificate chain and its key, checking that the key
    /// is the certificate's and that it is a client certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let chain = certs_from_pem(cert_pem, "client certificate")?;
        let key = NodeKey::from_pem(key_pem)?;
        let (identity, not_after) = {
            let leaf_der = chain.first().map(|c| c.as_ref()).unwrap_or_default();
            let leaf = parse_cert(leaf_der, "client certificate")?;
            if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
                return Err(CaError::KeyMismatch { what: "client" });
            }
            (
                ClientIdentity::from_x509(&leaf)?,
                asn1_to_system(leaf.validity().not_after),
            )
        };
        Ok(Self {
            identity,
            not_after,
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_der())),
        })
    }

    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    #[cfg(test)]
    pub(crate) fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }

    /// A TLS client config presenting this certificate and trusting only
    /// managers of `ca` (dial `NodeRole::Manager.server_name()`).
    pub fn tls_config(
        &self,
        ca: &CaCert,
        revoked: Arc<dyn RevocationCheck>,
    ) -> Result<ClientConfig, CaError> {
        tls_client_with_cert(ca, revoked, self.chain.clone(), self.key.clone_key())
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("identity", &self.identity)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::{NodeIdentity, NodeRole, RootCa};

    const HOUR: Duration = Duration::from_secs(3600);

    fn issue(ca: &RootCa, name: &str) -> Result<(String, NodeKey), CaError> {
        let key = NodeKey::generate()?;
        let chain = ca.issue_client(&key.csr()?, name, "c1", HOUR)?;
        Ok((chain, key))
    }

    #[test]
    fn client_certificates_are_a_role_apart_from_nodes() -> Result<(), CaError> {
        let ca = RootCa::generate("c1", HOUR)?;
        let (chain, key) = issue(&ca, "ops-alice")?;
        let client = ClientCert::from_pem(&chain, &key.to_pem())?;
        assert_eq!(client.identity().name(), "ops-alice");
        assert_eq!(client.identity().cluster_id(), "c1");
        // Never a node: every check that wants one fails closed.
        assert!(matches!(
            NodeIdentity::from_pem(&chain, &key.to_pem()),
            Err(CaError::ClientCertificate { name }) if name == "ops-alice"
        ));
        let der = crate::pki::certs_from_pem(&chain, "test")?;
        assert!(matches!(
            PeerIdentity::from_cert_der(&der[0]),
            Err(CaError::ClientCertificate { .. })
        ));
        assert!(matches!(
            CertIdentity::from_cert_der(&der[0])?,
            CertIdentity::Client(c) if c.name() == "ops-alice"
        ));
        // Usage: TLS client only, no DNS name to answer to.
        let leaf = parse_cert(&der[0], "test")?;
        let eku = leaf
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| (e.value.client_auth, e.value.server_auth));
        assert_eq!(eku, Some((true, false)));
        assert!(leaf.subject_alternative_name().ok().flatten().is_none());

        // A node's certificate is a node, and not a client certificate.
        let node_key = NodeKey::generate()?;
        let node = ca.issue(&node_key.csr()?, "n1", NodeRole::Manager, "c1", HOUR)?;
        let der = crate::pki::certs_from_pem(&node, "test")?;
        assert!(matches!(
            CertIdentity::from_cert_der(&der[0])?,
            CertIdentity::Node(p) if p.role() == NodeRole::Manager
        ));
        assert!(matches!(
            ClientCert::from_pem(&node, &node_key.to_pem()),
            Err(CaError::NotAClientCertificate { .. })
        ));
        // Someone else's key is refused.
        assert!(matches!(
            ClientCert::from_pem(&chain, &node_key.to_pem()),
            Err(CaError::KeyMismatch { what: "client" })
        ));
        Ok(())
    }

    #[test]
    fn client_names_are_dns_labels_and_no_role() -> Result<(), CaError> {
        let ca = RootCa::generate("c1", HOUR)?;
        for bad in [
            "",
            "Ops",
            "a/b",
            "-ops",
            "123",
            "shoal-manager",
            "shoal-client",
        ] {
            assert!(
                matches!(issue(&ca, bad), Err(CaError::InvalidClientName { .. })),
                "{bad:?} accepted"
            );
        }
        // And no node may be named like the client role.
        let key = NodeKey::generate()?;
        assert!(matches!(
            ca.issue(&key.csr()?, CLIENT_OU, NodeRole::Worker, "c1", HOUR),
            Err(CaError::InvalidNodeId { .. })
        ));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any name: issued iff it is a valid label, and then read back
        /// from the certificate exactly.
        #[test]
        fn names_round_trip_or_are_refused(name in "[a-z0-9A-Z./_-]{0,70}") {
            let ca = RootCa::generate("c1", HOUR).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match issue(&ca, &name) {
                Ok((chain, key)) => {
                    prop_assert!(label_problem(&name).is_none());
                    let c = ClientCert::from_pem(&chain, &key.to_pem())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(c.identity().name(), name.as_str());
                }
                Err(CaError::InvalidClientName { .. }) => {
                    prop_assert!(label_problem(&name).is_some());
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
        }

        /// Whatever bytes a peer sends as its certificate, reading it is an
        /// error or an identity, never a panic.
        #[test]
        fn arbitrary_certificates_never_panic(der in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CertIdentity::from_cert_der(&der);
        }
    }
}
