//! rustls configurations for mutual TLS on 2377, and the join bootstrap.
//!
//! Every config uses the ring provider explicitly (never the process-wide
//! default, which panics when two crates enable different providers) and
//! TLS 1.3 only: both ends are always Shoal.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::{CaCert, CaDigest, CaError, CertIdentity, JoinToken, NodeIdentity, PeerIdentity};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A TLS 1.3 server config builder; `what` names it in the error.
pub(crate) fn tls13_server(
    provider: Arc<CryptoProvider>,
    what: &'static str,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, CaError> {
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|source| CaError::TlsConfig { what, source })
}

/// A TLS 1.3 client config builder; `what` names it in the error.
pub(crate) fn tls13_client(
    provider: Arc<CryptoProvider>,
    what: &'static str,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, CaError> {
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|source| CaError::TlsConfig { what, source })
}

/// No session resumption, either side: a resumed TLS 1.3 session skips
/// certificate verification, so a removed node (or one left on a root a
/// rotation dropped) would keep getting in on the strength of its first
/// handshake. Connections are long-lived; a full handshake costs little.
pub(crate) fn no_resumption_server(mut config: ServerConfig) -> ServerConfig {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config
}

pub(crate) fn no_resumption_client(mut config: ClientConfig) -> ClientConfig {
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// Asked during every handshake, after the chain verified: has this node
/// been removed? A removed node's certificate stays cryptographically valid
/// until it expires, so this check is what locks it out (swarm does the
/// same with its removed-node list instead of CRLs).
pub trait RevocationCheck: Send + Sync + fmt::Debug {
    fn is_removed(&self, node_id: &str) -> bool;
}

/// The removed node ids, shared between the Raft state machine (which
/// updates it as `node rm` commits) and every TLS config built with it.
/// Clones share one set.
#[derive(Debug, Clone, Default)]
pub struct RemovedNodes {
    ids: Arc<RwLock<HashSet<String>>>,
}

impl RemovedNodes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, node_id: impl Into<String>) {
        self.write().insert(node_id.into());
    }

    /// Returns whether it was there.
    pub fn remove(&self, node_id: &str) -> bool {
        self.write().remove(node_id)
    }

    /// Replaces the whole set, e.g. after a Raft snapshot is installed.
    pub fn replace(&self, node_ids: impl IntoIterator<Item = String>) {
        *self.write() = node_ids.into_iter().collect();
    }

    pub fn contains(&self, node_id: &str) -> bool {
        // A panic while holding the lock cannot leave a half-updated
        // HashSet visible, so a poisoned lock is still a valid set.
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(node_id)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.ids.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RevocationCheck for RemovedNodes {
    fn is_removed(&self, node_id: &str) -> bool {
        self.contains(node_id)
    }
}

fn other_error(error: CaError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// After a client's chain verified: the subject must be a well-formed
/// Shoal identity, a node's (not a removed one) or an operator's client
/// certificate; the handlers decide what each may call.
pub(crate) fn check_client_peer(
    end_entity: &CertificateDer<'_>,
    revoked: &dyn RevocationCheck,
) -> Result<(), rustls::Error> {
    match CertIdentity::from_cert_der(end_entity).map_err(other_error)? {
        CertIdentity::Node(peer) => check_not_removed(&peer, revoked),
        CertIdentity::Client(_) => Ok(()),
    }
}

/// After a server's chain verified: it must be a node, not a removed one.
/// (A client certificate has no server-auth usage, so webpki refuses it
/// first; this says so again.)
pub(crate) fn check_server_peer(
    end_entity: &CertificateDer<'_>,
    revoked: &dyn RevocationCheck,
) -> Result<(), rustls::Error> {
    let peer = PeerIdentity::from_cert_der(end_entity).map_err(other_error)?;
    check_not_removed(&peer, revoked)
}

fn check_not_removed(
    peer: &PeerIdentity,
    revoked: &dyn RevocationCheck,
) -> Result<(), rustls::Error> {
    if revoked.is_removed(peer.node_id()) {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
    }
    Ok(())
}

/// Where a [`NodeClientVerifier`] finds the webpki verifier of the roots
/// it trusts: one built for fixed roots, or live credentials' current one.
pub(crate) trait ClientRoots: Send + Sync + fmt::Debug {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier>;
    fn mandatory(&self) -> bool;
    fn hints(&self) -> &[DistinguishedName];
}

impl ClientRoots for Arc<dyn ClientCertVerifier> {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.clone()
    }

    fn mandatory(&self) -> bool {
        self.client_auth_mandatory()
    }

    fn hints(&self) -> &[DistinguishedName] {
        self.root_hint_subjects()
    }
}

/// What [`ClientRoots`] is to a [`NodeServerVerifier`].
pub(crate) trait ServerRoots: Send + Sync + fmt::Debug {
    fn verifier(&self) -> Arc<WebPkiServerVerifier>;
}

impl ServerRoots for Arc<WebPkiServerVerifier> {
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.clone()
    }
}

/// The signature checks of a verifier over `self.roots`: webpki's, as for
/// the chain.
macro_rules! delegate_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.roots
                .verifier()
                .verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.roots
                .verifier()
                .verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.roots.verifier().supported_verify_schemes()
        }
    };
}

/// webpki client verification plus the identity and removal checks.
#[derive(Debug)]
pub(crate) struct NodeClientVerifier<R> {
    pub(crate) roots: R,
    pub(crate) revoked: Arc<dyn RevocationCheck>,
}

impl<R: ClientRoots> ClientCertVerifier for NodeClientVerifier<R> {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.roots.mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.roots.hints()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .roots
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        check_client_peer(end_entity, self.revoked.as_ref())?;
        Ok(verified)
    }

    delegate_signatures!();
}

/// webpki server verification (chain and server name) plus the identity
/// and removal checks, so a removed manager is not trusted either.
#[derive(Debug)]
pub(crate) struct NodeServerVerifier<R> {
    pub(crate) roots: R,
    pub(crate) revoked: Arc<dyn RevocationCheck>,
}

impl<R: ServerRoots> ServerCertVerifier for NodeServerVerifier<R> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.roots.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_server_peer(end_entity, self.revoked.as_ref())?;
        Ok(verified)
    }

    delegate_signatures!();
}

/// Trusts exactly one CA: the one among the certificates the server sent
/// whose SHA-256 is the join token's digest. No trust on first use: a
/// server that cannot produce that CA, or whose chain does not verify
/// against it, is refused.
#[derive(Debug)]
struct PinnedCaVerifier {
    digest: CaDigest,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .position(|der| CaDigest::of_der(der) == self.digest)
            .ok_or_else(|| {
                other_error(CaError::PinnedCaNotPresented {
                    expected: self.digest,
                })
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(intermediates[pinned].clone().into_owned())?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != pinned)
            .map(|(_, der)| der.clone())
            .collect();
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side of 2377: every client must present a certificate chaining
/// to `ca`, naming a node that is not removed. Authorise by role per RPC
/// with [`PeerIdentity::from_peer_certs`] and [`PeerIdentity::require_role`].
///
/// The server sends `ca` after its own chain so that joining nodes can pin
/// it (see [`bootstrap_client_config`]).
pub fn server_config(
    identity: &NodeIdentity,
    ca: &CaCert,
    revoked: Arc<dyn RevocationCheck>,
) -> Result<ServerConfig, CaError> {
    build_server_config(identity, ca, revoked, false)
}

/// Like [`server_config`], but a client may also come without a
/// certificate: nodes joining with a token have none yet (swarm's
/// `VerifyClientCertIfGiven`). A certificate that is presented is checked
/// just as strictly; [`PeerIdentity::from_peer_certs`] then reports the
/// anonymous ones as [`CaError::NoPeerCertificate`], so every RPC but the
/// join must require a peer identity.
pub fn server_config_allowing_join(
    identity: &NodeIdentity,
    ca: &CaCert,
    revoked: Arc<dyn RevocationCheck>,
) -> Result<ServerConfig, CaError> {
    build_server_config(identity, ca, revoked, true)
}

fn build_server_config(
    identity: &NodeIdentity,
    ca: &CaCert,
    revoked: Arc<dyn RevocationCheck>,
    allow_anonymous: bool,
) -> Result<ServerConfig, CaError> {
    let provider = provider();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(ca.root_store(), provider.clone());
    if allow_anonymous {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|source| CaError::TlsVerifier {
        what: "client",
        source,
    })?;
    let verifier = Arc::new(NodeClientVerifier {
        roots: inner,
        revoked,
    });

    let mut chain = identity.chain().to_vec();
    if !chain.contains(ca.der()) {
        chain.push(ca.der().clone());
    }
    tls13_server(provider, "server")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, identity.private_key())
        .map(no_resumption_server)
        .map_err(|source| CaError::TlsConfig {
            what: "server",
            source,
        })
}

/// Client side of 2377: presents `identity`, and trusts a server only if
/// its chain reaches `ca`, its certificate is valid for the server name
/// dialled (a node id, or [`crate::NodeRole::server_name`] for "any
/// manager"), and it is not a removed node.
pub fn client_config(
    identity: &NodeIdentity,
    ca: &CaCert,
    revoked: Arc<dyn RevocationCheck>,
) -> Result<ClientConfig, CaError> {
    tls_client_with_cert(
        ca,
        revoked,
        identity.chain().to_vec(),
        identity.private_key(),
    )
}

/// A client config presenting `chain` and trusting the nodes of `ca`.
pub(crate) fn tls_client_with_cert(
    ca: &CaCert,
    revoked: Arc<dyn RevocationCheck>,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<ClientConfig, CaError> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(ca.root_store(), provider.clone())
        .build()
        .map_err(|source| CaError::TlsVerifier {
            what: "server",
            source,
        })?;
    tls13_client(provider, "client")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier {
            roots: inner,
            revoked,
        }))
        .with_client_auth_cert(chain, key)
        .map(no_resumption_client)
        .map_err(|source| CaError::TlsConfig {
            what: "client",
            source,
        })
}

/// Client config for joining: no client certificate, and the server is
/// trusted only if it presents the CA whose SHA-256 the token names and its
/// chain verifies against that CA for the name dialled (dial
/// `NodeRole::Manager.server_name()`). Servers built with
/// [`server_config_allowing_join`] send their CA. After the handshake,
/// [`JoinToken::ca_from_peer_certs`] on the peer certificates yields the
/// CA to store.
///
/// For a CA certificate fetched by other means, use [`JoinToken::pin_ca`]
/// and then [`client_config_pinned`].
pub fn bootstrap_client_config(token: &JoinToken) -> Result<ClientConfig, CaError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        digest: *token.ca_digest(),
        provider: provider.clone(),
    });
    Ok(tls13_client(provider, "bootstrap client")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Client config without a client certificate that trusts only `ca`, for a
/// CA already pinned with [`JoinToken::pin_ca`].
pub fn client_config_pinned(ca: &CaCert) -> Result<ClientConfig, CaError> {
    Ok(tls13_client(provider(), "pinned client")?
        .with_root_certificates(ca.root_store())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests;
