//! The crate's error type for everything but token parsing (see
//! [`crate::TokenError`]).

use std::time::{Duration, SystemTime};

use crate::{CaDigest, NodeRole};

/// What went wrong with keys, certificates or TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("generating a {what} key pair failed")]
    KeyGeneration {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the {what} certificate failed")]
    CertificateGeneration {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what} is not valid PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: pem::PemError,
    },
    #[error("{what}: expected {expected} PEM block(s) tagged {tag:?}, found {found}")]
    PemBlocks {
        what: &'static str,
        tag: &'static str,
        expected: &'static str,
        found: usize,
    },
    #[error("{what} is not a valid X.509 certificate")]
    X509 {
        what: &'static str,
        #[source]
        source: x509_parser::error::X509Error,
    },
    #[error("{what} private key is not a valid PKCS#8 ECDSA key")]
    PrivateKey {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what} private key does not match its certificate")]
    KeyMismatch { what: &'static str },
    #[error("certificate signing request rejected")]
    InvalidCsr {
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate signing request uses an unsupported key type (only ECDSA P-256)")]
    UnsupportedCsrKey,
    #[error("node id {node_id:?} is invalid: {reason}")]
    InvalidNodeId {
        node_id: String,
        reason: &'static str,
    },
    #[error("cluster id {cluster_id:?} is invalid: {reason}")]
    InvalidClusterId {
        cluster_id: String,
        reason: &'static str,
    },
    #[error("cluster id {requested:?} does not match this CA's cluster {ca:?}")]
    ClusterMismatch { requested: String, ca: String },
    #[error("validity {validity:?} is shorter than the minimum {minimum:?}")]
    ValidityTooShort {
        validity: Duration,
        minimum: Duration,
    },
    #[error("validity {validity:?} overflows the certificate date range")]
    ValidityOutOfRange { validity: Duration },
    #[error("the root CA expired at {not_after:?}; rotate it before issuing")]
    CaExpired { not_after: SystemTime },
    #[error("{what} is not a CA certificate")]
    NotACa { what: &'static str },
    #[error("the CA certificate is not usable as a TLS trust anchor")]
    TrustAnchor {
        #[source]
        source: rustls::Error,
    },
    #[error("no trusted root CA: a node needs at least one (ca.pem is empty)")]
    NoTrustRoots,
    #[error("{what} is not self-signed")]
    NotSelfSigned { what: &'static str },
    #[error("the cross-signed certificate does not certify this root's key and subject")]
    CrossSignedMismatch,
    #[error("certificate subject has no {field}")]
    MissingSubjectField { field: &'static str },
    #[error("certificate subject has more than one {field}")]
    AmbiguousSubjectField { field: &'static str },
    #[error("certificate subject {field} is not valid UTF-8 text")]
    SubjectFieldEncoding {
        field: &'static str,
        #[source]
        source: x509_parser::error::X509Error,
    },
    #[error("certificate OU {ou:?} names no Shoal role")]
    UnknownRole { ou: String },
    #[error("{name:?} holds a client certificate (operator), not a node certificate")]
    ClientCertificate { name: String },
    #[error("{what} holds a node certificate, not a client certificate")]
    NotAClientCertificate { what: &'static str },
    #[error("client name {name:?} is invalid: {reason}")]
    InvalidClientName { name: String, reason: &'static str },
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("node {node_id} is a {role}, but this needs a {required}")]
    RoleNotAllowed {
        node_id: String,
        role: NodeRole,
        required: NodeRole,
    },
    #[error("node {node_id} has been removed from the cluster")]
    NodeRemoved { node_id: String },
    #[error("CA certificate digest {actual} does not match the join token's {expected}")]
    CaDigestMismatch {
        expected: CaDigest,
        actual: CaDigest,
    },
    #[error("the server did not present the CA {expected} that the join token pins")]
    PinnedCaNotPresented { expected: CaDigest },
    #[error("the certificate chain does not verify against the CA")]
    CertificateRejected {
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS {what} configuration failed")]
    TlsConfig {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS {what} certificate verifier failed")]
    TlsVerifier {
        what: &'static str,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}
