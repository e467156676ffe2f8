//! Shoal's cluster PKI, as Docker swarm mode does it: a root CA kept by the
//! managers, node certificates naming node id (CN), role (OU) and cluster
//! (O), join tokens that pin the CA and carry a per-role secret, and the
//! rustls configurations for mutual TLS on TCP 2377.
//!
//! Joining, end to end:
//! 1. The node parses its token ([`JoinToken::parse`]), makes a key and CSR
//!    ([`NodeKey::generate`], [`NodeKey::csr`]) and dials a manager with
//!    [`bootstrap_client_config`], which trusts only the CA the token pins.
//! 2. The manager checks the token ([`JoinTokens::authorize`]) and signs the
//!    CSR ([`RootCa::issue`]) with the role the token grants.
//! 3. The node loads its [`NodeIdentity`] and from then on uses
//!    [`client_config`] / [`server_config`], renewing when
//!    [`NodeIdentity::needs_renewal`] says so.
#![forbid(unsafe_code)]

mod base36;
mod client;
mod error;
mod live;
mod node;
mod pki;
mod root;
mod tls;
mod token;

pub use client::{CertIdentity, ClientCert, ClientIdentity};
pub use error::CaError;
pub use live::{Credentials, live_client_config, live_server_config};
pub use node::{CsrPem, NodeIdentity, NodeKey, NodeRole, PeerIdentity, generate_node_id};
pub use root::{
    CaCert, CaDigest, DEFAULT_NODE_CERT_VALIDITY, DEFAULT_ROOT_CA_VALIDITY, MIN_CERT_VALIDITY,
    RootCa,
};
pub use tls::{
    RemovedNodes, RevocationCheck, bootstrap_client_config, client_config, client_config_pinned,
    server_config, server_config_allowing_join,
};
pub use token::{JoinToken, JoinTokens, TokenError};

/// The rustls these configurations are built with, so callers use the same
/// version.
pub use rustls;
