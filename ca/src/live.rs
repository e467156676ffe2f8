//! TLS credentials that change under running servers and clients: a node's
//! certificate (renewal) and the roots it trusts (root CA rotation).
//!
//! The rustls configurations built here ([`live_server_config`],
//! [`live_client_config`]) never change themselves; their certificate
//! resolvers and verifiers read the current [`Credentials`] at every
//! handshake. Connections already established keep the session they
//! negotiated, which is why a rotation keeps the old root trusted until
//! every node holds a certificate from the new one.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use crate::tls::{
    ClientRoots, NodeClientVerifier, NodeServerVerifier, ServerRoots, no_resumption_client,
    no_resumption_server, provider, tls13_client, tls13_server,
};
use crate::{CaCert, CaDigest, CaError, NodeIdentity, RevocationCheck};

/// A node's current identity and trust roots, shared by every TLS config
/// built from it. Clones share one state.
#[derive(Clone)]
pub struct Credentials {
    current: Arc<RwLock<Arc<Current>>>,
    provider: Arc<CryptoProvider>,
}

struct Current {
    identity: Arc<NodeIdentity>,
    /// The first is the root join tokens pin; a rotation adds the next one.
    trust: Vec<CaCert>,
    /// The node's chain with every trust root after it: servers send their
    /// CA so that joining nodes can pin it.
    server_key: Arc<CertifiedKey>,
    client_key: Arc<CertifiedKey>,
    /// Built once per change of trust; `None` only if no root is usable,
    /// which [`Credentials::new`] refuses.
    client_verifier: Arc<dyn ClientCertVerifier>,
    anonymous_client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
}

impl Credentials {
    /// `trust` must hold at least one root, and `identity` must verify
    /// against it.
    pub fn new(identity: NodeIdentity, trust: Vec<CaCert>) -> Result<Self, CaError> {
        let provider = provider();
        let current = build(&provider, Arc::new(identity), trust)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(current))),
            provider,
        })
    }

    fn get(&self) -> Arc<Current> {
        // Writers replace the Arc whole: a poisoned lock still holds a
        // consistent value.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn identity(&self) -> Arc<NodeIdentity> {
        self.get().identity.clone()
    }

    /// The trusted roots, the join tokens' one first.
    pub fn trust(&self) -> Vec<CaCert> {
        self.get().trust.clone()
    }

    /// Digests of the trusted roots, in order.
    pub fn trust_digests(&self) -> Vec<CaDigest> {
        self.get().trust.iter().map(CaCert::digest).collect()
    }

    /// The trusted root that signed this node's certificate, if any.
    pub fn issuer(&self) -> Option<CaDigest> {
        let current = self.get();
        current
            .trust
            .iter()
            .find(|ca| current.identity.issued_by(ca))
            .map(CaCert::digest)
    }

    /// Installs a renewed certificate and/or new trust roots. The new
    /// identity must verify against the roots that will be trusted.
    pub fn update(
        &self,
        identity: Option<NodeIdentity>,
        trust: Option<Vec<CaCert>>,
    ) -> Result<(), CaError> {
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let identity = identity.map_or_else(|| slot.identity.clone(), Arc::new);
        let trust = trust.unwrap_or_else(|| slot.trust.clone());
        *slot = Arc::new(build(&self.provider, identity, trust)?);
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.get();
        f.debug_struct("Credentials")
            .field("identity", &current.identity)
            .field("trust", &current.trust)
            .finish()
    }
}

fn build(
    provider: &Arc<CryptoProvider>,
    identity: Arc<NodeIdentity>,
    trust: Vec<CaCert>,
) -> Result<Current, CaError> {
    if trust.is_empty() {
        return Err(CaError::NoTrustRoots);
    }
    let mut roots = RootCertStore::empty();
    for ca in &trust {
        roots
            .add(ca.der().clone())
            .map_err(|source| CaError::TrustAnchor { source })?;
    }
    let roots = Arc::new(roots);
    let client_verifier = |anonymous: bool| {
        let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        if anonymous {
            b = b.allow_unauthenticated();
        }
        b.build().map_err(|source| CaError::TlsVerifier {
            what: "client",
            source,
        })
    };
    let client_verifier_strict = client_verifier(false)?;
    let anonymous_client_verifier = client_verifier(true)?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|source| CaError::TlsVerifier {
            what: "server",
            source,
        })?;

    // A certificate the node's own peers would refuse must not be served.
    let now = rustls::pki_types::UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let (leaf, intermediates) = identity
        .chain()
        .split_first()
        .ok_or(CaError::NoPeerCertificate)?;
    if !identity.is_expired(SystemTime::now()) {
        client_verifier_strict
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|source| CaError::CertificateRejected { source })?;
    }

    let key = |chain: Vec<CertificateDer<'static>>| {
        CertifiedKey::from_der(chain, identity.private_key(), provider)
            .map(Arc::new)
            .map_err(|source| CaError::TlsConfig {
                what: "certified key",
                source,
            })
    };
    let mut server_chain = identity.chain().to_vec();
    for ca in &trust {
        if !server_chain.contains(ca.der()) {
            server_chain.push(ca.der().clone());
        }
    }
    Ok(Current {
        server_key: key(server_chain)?,
        client_key: key(identity.chain().to_vec())?,
        identity,
        trust,
        client_verifier: client_verifier_strict,
        anonymous_client_verifier,
        server_verifier,
    })
}

#[derive(Debug)]
struct Resolver(Credentials);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().server_key.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().client_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The current roots of live credentials, for client verification;
/// `allow_anonymous` as in [`crate::server_config_allowing_join`].
#[derive(Debug)]
struct LiveClientRoots {
    creds: Credentials,
    allow_anonymous: bool,
}

impl ClientRoots for LiveClientRoots {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let current = self.creds.get();
        if self.allow_anonymous {
            current.anonymous_client_verifier.clone()
        } else {
            current.client_verifier.clone()
        }
    }

    fn mandatory(&self) -> bool {
        !self.allow_anonymous
    }

    fn hints(&self) -> &[DistinguishedName] {
        // Hints are optional, and a node has exactly one certificate to send.
        &[]
    }
}

impl ServerRoots for Credentials {
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.get().server_verifier.clone()
    }
}

/// [`crate::server_config`] (or, with `allow_join`,
/// [`crate::server_config_allowing_join`]) over credentials that may
/// change: each handshake uses the certificate and roots of that moment.
pub fn live_server_config(
    creds: &Credentials,
    revoked: Arc<dyn RevocationCheck>,
    allow_join: bool,
) -> Result<ServerConfig, CaError> {
    let verifier = Arc::new(NodeClientVerifier {
        roots: LiveClientRoots {
            creds: creds.clone(),
            allow_anonymous: allow_join,
        },
        revoked,
    });
    let config = tls13_server(creds.provider.clone(), "server")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(creds.clone())));
    Ok(no_resumption_server(config))
}

/// [`crate::client_config`] over credentials that may change.
pub fn live_client_config(
    creds: &Credentials,
    revoked: Arc<dyn RevocationCheck>,
) -> Result<ClientConfig, CaError> {
    let config = tls13_client(creds.provider.clone(), "client")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier {
            roots: creds.clone(),
            revoked,
        }))
        .with_client_cert_resolver(Arc::new(Resolver(creds.clone())));
    Ok(no_resumption_client(config))
}
