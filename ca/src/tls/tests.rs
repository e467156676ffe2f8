//! Real TLS handshakes over in-memory duplex streams.

use std::io;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::{
    DEFAULT_NODE_CERT_VALIDITY, DEFAULT_ROOT_CA_VALIDITY, JoinTokens, NodeKey, NodeRole, RootCa,
};

const CLUSTER: &str = "c1";
const DAY: Duration = Duration::from_secs(24 * 3600);

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn identity_at(
    ca: &RootCa,
    node_id: &str,
    role: NodeRole,
    now: SystemTime,
) -> Result<NodeIdentity, CaError> {
    let key = NodeKey::generate()?;
    let chain = ca.issue_at(
        &key.csr()?,
        node_id,
        role,
        CLUSTER,
        DEFAULT_NODE_CERT_VALIDITY,
        now,
    )?;
    NodeIdentity::from_pem(&chain, &key.to_pem())
}

fn identity(ca: &RootCa, node_id: &str, role: NodeRole) -> Result<NodeIdentity, CaError> {
    identity_at(ca, node_id, role, SystemTime::now())
}

fn nobody_removed() -> Arc<dyn RevocationCheck> {
    Arc::new(RemovedNodes::new())
}

struct Outcome {
    /// The client certificates the server saw, or why it failed.
    server: io::Result<Option<Vec<CertificateDer<'static>>>>,
    /// The server certificates the client saw, or why it failed.
    client: io::Result<Vec<CertificateDer<'static>>>,
}

impl Outcome {
    fn both_ok(&self) -> bool {
        self.server.is_ok() && self.client.is_ok()
    }

    fn server_peer(&self) -> Result<PeerIdentity, CaError> {
        match &self.server {
            Ok(certs) => PeerIdentity::from_peer_certs(certs.as_deref()),
            Err(_) => Err(CaError::NoPeerCertificate),
        }
    }
}

/// One handshake, then one byte from server to client so that a client
/// certificate the server refuses (after the client's TLS 1.3 handshake has
/// already completed) also fails the client side.
async fn handshake(
    server: ServerConfig,
    client: ClientConfig,
    name: ServerName<'static>,
) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let server_side = async move {
        let mut tls = acceptor.accept(server_io).await?;
        let peer = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec);
        tls.write_all(b"k").await?;
        tls.flush().await?;
        Ok(peer)
    };
    let client_side = async move {
        let mut tls = connector.connect(name, client_io).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(tls
            .get_ref()
            .1
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default())
    };
    let both = async { tokio::join!(server_side, client_side) };
    match tokio::time::timeout(Duration::from_secs(10), both).await {
        Ok((server, client)) => Outcome { server, client },
        Err(elapsed) => Outcome {
            server: Err(io::Error::new(io::ErrorKind::TimedOut, elapsed)),
            client: Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake timed out",
            )),
        },
    }
}

fn tls_error(result: &io::Result<impl Sized>) -> Option<&rustls::Error> {
    result.as_ref().err()?.get_ref()?.downcast_ref()
}

/// A handshake with a client that dials a manager.
async fn to_manager(server: ServerConfig, client: ClientConfig) -> Outcome {
    handshake(server, client, NodeRole::Manager.server_name()).await
}

/// Refused because the peer's chain leads to no trusted root.
fn unknown_issuer<T>(result: &io::Result<T>) -> bool {
    matches!(cert_error(result), Some(CertificateError::UnknownIssuer))
}

fn cert_error<T>(result: &io::Result<T>) -> Option<&CertificateError> {
    match tls_error(result)? {
        rustls::Error::InvalidCertificate(e) => Some(e),
        _ => None,
    }
}

fn node_id(name: &str) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(name.to_owned())
}

#[tokio::test]
async fn manager_and_worker_authenticate_each_other() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let worker = identity(&ca, "wrk1", NodeRole::Worker)?;

    // The worker dials "any manager".
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        client_config(&worker, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(
        outcome.both_ok(),
        "{:?} {:?}",
        outcome.server.err(),
        outcome.client.err()
    );
    let client = outcome.server_peer()?;
    assert_eq!(client.node_id(), "wrk1");
    assert_eq!(client.role(), NodeRole::Worker);
    assert_eq!(client.cluster_id(), CLUSTER);
    let server = PeerIdentity::from_peer_certs(outcome.client.as_deref().ok())?;
    assert_eq!(server.node_id(), "mgr1");
    server.require_role(NodeRole::Manager)?;

    // A manager dials another manager by node id.
    let other = identity(&ca, "mgr2", NodeRole::Manager)?;
    let outcome = handshake(
        server_config(&other, ca.cert(), nobody_removed())?,
        client_config(&manager, ca.cert(), nobody_removed())?,
        node_id("mgr2")?,
    )
    .await;
    assert!(outcome.both_ok());
    outcome.server_peer()?.require_role(NodeRole::Manager)?;
    Ok(())
}

#[tokio::test]
async fn worker_where_a_manager_is_required_is_detected() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let worker = identity(&ca, "wrk1", NodeRole::Worker)?;

    // As a client of a manager-only service (the Raft peer service): the
    // handshake is fine, the per-RPC role check refuses.
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        client_config(&worker, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(outcome.both_ok());
    assert!(matches!(
        outcome.server_peer()?.require_role(NodeRole::Manager),
        Err(CaError::RoleNotAllowed {
            role: NodeRole::Worker,
            required: NodeRole::Manager,
            ..
        })
    ));

    // As a server posing as "any manager": refused at the handshake.
    let outcome = to_manager(
        server_config(&worker, ca.cert(), nobody_removed())?,
        client_config(&manager, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(matches!(
        cert_error(&outcome.client),
        Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
    ));
    assert!(outcome.server.is_err());
    Ok(())
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let rogue = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let impostor = identity(&rogue, "wrk1", NodeRole::Worker)?;

    // A client with a foreign certificate (trusting our CA, to get that far).
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        client_config(&impostor, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(unknown_issuer(&outcome.server));
    assert!(outcome.client.is_err());

    // A server with a foreign certificate.
    let rogue_manager = identity(&rogue, "mgr9", NodeRole::Manager)?;
    let worker = identity(&ca, "wrk2", NodeRole::Worker)?;
    let outcome = to_manager(
        server_config(&rogue_manager, ca.cert(), nobody_removed())?,
        client_config(&worker, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(unknown_issuer(&outcome.client));
    Ok(())
}

#[tokio::test]
async fn removed_nodes_are_refused_at_the_handshake() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let worker = identity(&ca, "wrk1", NodeRole::Worker)?;
    let removed = RemovedNodes::new();
    let server = server_config(&manager, ca.cert(), Arc::new(removed.clone()))?;

    let connect =
        || -> Result<ClientConfig, CaError> { client_config(&worker, ca.cert(), nobody_removed()) };
    let name = NodeRole::server_name;
    assert!(
        handshake(server.clone(), connect()?, name(NodeRole::Manager))
            .await
            .both_ok()
    );

    // `node rm` commits: the same, still valid, certificate is now refused
    // by the config already in use.
    removed.insert("wrk1");
    let outcome = handshake(server.clone(), connect()?, name(NodeRole::Manager)).await;
    assert!(matches!(
        cert_error(&outcome.server),
        Some(CertificateError::Revoked)
    ));
    assert!(outcome.client.is_err());

    assert!(removed.remove("wrk1"));
    assert!(
        handshake(server, connect()?, name(NodeRole::Manager))
            .await
            .both_ok()
    );

    // Clients refuse a removed server too.
    let client = client_config(&worker, ca.cert(), Arc::new(RemovedNodes::new()))?;
    let gone = RemovedNodes::new();
    gone.replace(["mgr1".to_owned()]);
    let client_refusing = client_config(&worker, ca.cert(), Arc::new(gone))?;
    let server = server_config(&manager, ca.cert(), nobody_removed())?;
    assert!(
        handshake(server.clone(), client, name(NodeRole::Manager))
            .await
            .both_ok()
    );
    let outcome = handshake(server, client_refusing, name(NodeRole::Manager)).await;
    assert!(matches!(
        cert_error(&outcome.client),
        Some(CertificateError::Revoked)
    ));
    Ok(())
}

#[tokio::test]
async fn expired_certificates_are_refused() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let long_ago = SystemTime::now() - 200 * DAY;
    let expired_worker = identity_at(&ca, "wrk1", NodeRole::Worker, long_ago)?;
    assert!(expired_worker.is_expired(SystemTime::now()));
    let worker = identity(&ca, "wrk2", NodeRole::Worker)?;
    let expired_manager = identity_at(&ca, "mgr2", NodeRole::Manager, long_ago)?;

    let is_expired = |e: Option<&CertificateError>| {
        matches!(
            e,
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        )
    };
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        client_config(&expired_worker, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(is_expired(cert_error(&outcome.server)));

    let outcome = to_manager(
        server_config(&expired_manager, ca.cert(), nobody_removed())?,
        client_config(&worker, ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(is_expired(cert_error(&outcome.client)));
    Ok(())
}

#[tokio::test]
async fn anonymous_clients_only_where_joining_is_allowed() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let tokens = JoinTokens::generate(&ca.digest());
    let token = tokens.get(NodeRole::Worker);

    let strict = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        bootstrap_client_config(token)?,
    )
    .await;
    assert!(matches!(
        tls_error(&strict.server),
        Some(rustls::Error::NoCertificatesPresented)
    ));

    let join = to_manager(
        server_config_allowing_join(&manager, ca.cert(), nobody_removed())?,
        bootstrap_client_config(token)?,
    )
    .await;
    assert!(join.both_ok());
    // Anonymous: every RPC but the join must refuse it.
    assert!(matches!(
        join.server_peer(),
        Err(CaError::NoPeerCertificate)
    ));
    // The joining node now holds the CA it pinned.
    let pinned = token.ca_from_peer_certs(join.client.as_deref().unwrap_or_default())?;
    assert_eq!(pinned.digest(), ca.digest());
    assert_eq!(pinned.der(), ca.cert().der());
    Ok(())
}

#[tokio::test]
async fn join_refuses_a_server_whose_ca_is_not_the_tokens() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let rogue = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let token = JoinToken::generate(&ca.digest());
    let rogue_manager = identity(&rogue, "mgr1", NodeRole::Manager)?;

    let outcome = to_manager(
        server_config_allowing_join(&rogue_manager, rogue.cert(), nobody_removed())?,
        bootstrap_client_config(&token)?,
    )
    .await;
    let Some(CertificateError::Other(OtherError(reason))) = cert_error(&outcome.client) else {
        return Err(format!("expected a pinning error, got {:?}", outcome.client.err()).into());
    };
    assert!(matches!(
        reason.downcast_ref::<CaError>(),
        Some(CaError::PinnedCaNotPresented { .. })
    ));

    // A rogue server that also sends our CA (public) still cannot chain
    // its own certificate to it.
    let mut replay = server_config_allowing_join(&rogue_manager, rogue.cert(), nobody_removed())?;
    let chain = vec![rogue_manager.chain()[0].clone(), ca.cert().der().clone()];
    replay.cert_resolver = Arc::new(StaticCert(Arc::new(rustls::sign::CertifiedKey::from_der(
        chain,
        rogue_manager.private_key(),
        &provider(),
    )?)));
    let outcome = to_manager(replay, bootstrap_client_config(&token)?).await;
    assert!(matches!(
        cert_error(&outcome.client),
        Some(CertificateError::UnknownIssuer | CertificateError::BadSignature)
    ));

    // Pinning a fetched CA certificate checks the digest the same way.
    assert_eq!(token.pin_ca(ca.cert_pem())?.digest(), ca.digest());
    assert!(matches!(
        token.pin_ca(rogue.cert_pem()),
        Err(CaError::CaDigestMismatch { .. })
    ));
    assert!(token.ca_digest_matches(ca.cert().der()));
    assert!(!token.ca_digest_matches(rogue.cert().der()));
    Ok(())
}

#[derive(Debug)]
struct StaticCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for StaticCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn a_pinned_ca_config_trusts_only_that_ca() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let rogue = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let token = JoinToken::generate(&ca.digest());
    let pinned = token.pin_ca(ca.cert_pem())?;

    let ok = to_manager(
        server_config_allowing_join(&manager, ca.cert(), nobody_removed())?,
        client_config_pinned(&pinned)?,
    )
    .await;
    assert!(ok.both_ok());
    let refused = to_manager(
        server_config_allowing_join(&manager, ca.cert(), nobody_removed())?,
        client_config_pinned(rogue.cert())?,
    )
    .await;
    assert!(unknown_issuer(&refused.client));
    Ok(())
}

#[tokio::test]
async fn root_rotation_keeps_every_pair_of_nodes_talking() -> TestResult {
    let old = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let old_manager = identity(&old, "mgr1", NodeRole::Manager)?;
    let old_worker = identity(&old, "wrk1", NodeRole::Worker)?;
    let next = old.rotate(DEFAULT_ROOT_CA_VALIDITY)?;
    let new_manager = identity(&next, "mgr2", NodeRole::Manager)?;
    let new_worker = identity(&next, "wrk2", NodeRole::Worker)?;

    // During the rotation everyone trusts the old root; any mix works.
    for (server, client) in [
        (&old_manager, &new_worker),
        (&new_manager, &old_worker),
        (&new_manager, &new_worker),
    ] {
        let outcome = to_manager(
            server_config(server, old.cert(), nobody_removed())?,
            client_config(client, old.cert(), nobody_removed())?,
        )
        .await;
        assert!(
            outcome.both_ok(),
            "{} <- {}",
            server.node_id(),
            client.node_id()
        );
    }

    // A node joining mid-rotation with the old token pins the old root.
    let tokens = JoinTokens::generate(&old.digest());
    let join = to_manager(
        server_config_allowing_join(&new_manager, old.cert(), nobody_removed())?,
        bootstrap_client_config(tokens.get(NodeRole::Worker))?,
    )
    .await;
    assert!(join.both_ok());

    // Once everyone renewed, trust moves to the new root: renewed nodes
    // still talk, a straggler with an old certificate is refused.
    let outcome = to_manager(
        server_config(&new_manager, next.cert(), nobody_removed())?,
        client_config(&new_worker, next.cert(), nobody_removed())?,
    )
    .await;
    assert!(outcome.both_ok());
    let outcome = to_manager(
        server_config(&new_manager, next.cert(), nobody_removed())?,
        client_config(&old_worker, next.cert(), nobody_removed())?,
    )
    .await;
    assert!(unknown_issuer(&outcome.server));

    // Tokens move to the new digest and keep their secrets.
    let mut moved = tokens.clone();
    moved.set_ca_digest(&next.digest());
    let join = to_manager(
        server_config_allowing_join(&new_manager, next.cert(), nobody_removed())?,
        bootstrap_client_config(moved.get(NodeRole::Worker))?,
    )
    .await;
    assert!(join.both_ok());
    Ok(())
}

#[test]
fn removed_nodes_is_shared_between_clones() {
    let removed = RemovedNodes::new();
    let view = removed.clone();
    removed.insert("n1");
    assert!(view.is_removed("n1"));
    view.replace(["n2".to_owned()]);
    assert!(!removed.contains("n1"));
    assert!(removed.contains("n2"));
    assert!(!removed.remove("n1"));
}

/// A whole root rotation through live credentials: the configs are built
/// once, and every handshake uses what the credentials hold at that moment.
#[tokio::test]
async fn live_credentials_carry_a_root_rotation() -> TestResult {
    use crate::{Credentials, live_client_config, live_server_config};
    let old = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let mgr_key = NodeKey::generate()?;
    let issue = |ca: &RootCa, key: &NodeKey, id: &str, role| -> Result<NodeIdentity, CaError> {
        let chain = ca.issue(&key.csr()?, id, role, CLUSTER, DEFAULT_NODE_CERT_VALIDITY)?;
        NodeIdentity::from_pem(&chain, &key.to_pem())
    };
    let manager = Credentials::new(
        issue(&old, &mgr_key, "mgr1", NodeRole::Manager)?,
        vec![old.cert().clone()],
    )?;
    let worker_key = NodeKey::generate()?;
    let worker = Credentials::new(
        issue(&old, &worker_key, "wrk1", NodeRole::Worker)?,
        vec![old.cert().clone()],
    )?;
    assert_eq!(manager.issuer(), Some(old.digest()));
    let server = || live_server_config(&manager, nobody_removed(), true);
    let client = || live_client_config(&worker, nobody_removed());
    let mgr_name = NodeRole::Manager.server_name();
    assert!(
        handshake(server()?, client()?, mgr_name.clone())
            .await
            .both_ok()
    );

    // Rotation starts: the manager trusts both roots and renews first.
    let next = old.rotate(DEFAULT_ROOT_CA_VALIDITY)?;
    let both = vec![old.cert().clone(), next.cert().clone()];
    manager.update(
        Some(issue(&next, &mgr_key, "mgr1", NodeRole::Manager)?),
        Some(both.clone()),
    )?;
    assert_eq!(manager.issuer(), Some(next.digest()));
    // The worker, still on the old root only, accepts the renewed manager
    // (cross-signed chain) and is accepted with its old certificate.
    let o = handshake(server()?, client()?, mgr_name.clone()).await;
    assert!(o.both_ok(), "{:?} {:?}", o.server.err(), o.client.err());
    assert_eq!(o.server_peer()?.node_id(), "wrk1");

    // The worker renews; then the old root is dropped everywhere.
    worker.update(
        Some(issue(&next, &worker_key, "wrk1", NodeRole::Worker)?),
        Some(both),
    )?;
    assert!(
        handshake(server()?, client()?, mgr_name.clone())
            .await
            .both_ok()
    );
    manager.update(None, Some(vec![next.cert().clone()]))?;
    worker.update(None, Some(vec![next.cert().clone()]))?;
    assert!(
        handshake(server()?, client()?, mgr_name.clone())
            .await
            .both_ok()
    );

    // A node left on the old root is refused from now on…
    let straggler = Credentials::new(
        issue(&old, &NodeKey::generate()?, "late1", NodeRole::Worker)?,
        vec![old.cert().clone()],
    )?;
    let o = handshake(
        server()?,
        live_client_config(&straggler, nobody_removed())?,
        mgr_name,
    )
    .await;
    assert!(o.server.is_err());
    // …and credentials refuse an identity their own roots do not accept.
    assert!(matches!(
        worker.update(
            Some(issue(&old, &worker_key, "wrk1", NodeRole::Worker)?),
            None
        ),
        Err(CaError::CertificateRejected { .. })
    ));
    assert!(matches!(
        Credentials::new(issue(&next, &worker_key, "wrk1", NodeRole::Worker)?, vec![]),
        Err(CaError::NoTrustRoots)
    ));
    Ok(())
}

/// The same configs for every connection, as a node's session uses them: a
/// node removed after its first handshake must not get back in by resuming
/// that session (a resumed TLS 1.3 session verifies no certificate).
#[tokio::test]
async fn a_removed_node_cannot_resume_its_session() -> TestResult {
    use crate::{Credentials, live_client_config, live_server_config};
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let trust = vec![ca.cert().clone()];
    let manager = Credentials::new(identity(&ca, "mgr1", NodeRole::Manager)?, trust.clone())?;
    let worker = Credentials::new(identity(&ca, "wrk1", NodeRole::Worker)?, trust)?;
    let removed = RemovedNodes::new();
    let server = live_server_config(&manager, Arc::new(removed.clone()), false)?;
    let client = live_client_config(&worker, nobody_removed())?;
    let name = NodeRole::Manager.server_name();
    for _ in 0..2 {
        let o = handshake(server.clone(), client.clone(), name.clone()).await;
        assert!(o.both_ok());
    }
    removed.insert("wrk1");
    let o = handshake(server.clone(), client.clone(), name).await;
    assert!(matches!(
        tls_error(&o.server),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
    Ok(())
}

fn client_cert(ca: &RootCa, name: &str) -> Result<crate::ClientCert, CaError> {
    let key = NodeKey::generate()?;
    let chain = ca.issue_client(&key.csr()?, name, CLUSTER, DEFAULT_NODE_CERT_VALIDITY)?;
    crate::ClientCert::from_pem(&chain, &key.to_pem())
}

#[tokio::test]
async fn a_client_certificate_reaches_managers_as_a_client_only() -> TestResult {
    let ca = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let manager = identity(&ca, "mgr1", NodeRole::Manager)?;
    let ops = client_cert(&ca, "ops")?;

    // As a client: the handshake passes, and the server sees an operator,
    // which never reads as a node.
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        ops.tls_config(ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(outcome.both_ok(), "{:?}", outcome.server.err());
    assert!(matches!(
        outcome.server_peer(),
        Err(CaError::ClientCertificate { name }) if name == "ops"
    ));
    let seen = outcome.server.as_ref().ok().and_then(Option::as_deref);
    match crate::CertIdentity::from_peer_certs(seen)? {
        crate::CertIdentity::Client(c) => {
            assert_eq!((c.name(), c.cluster_id()), ("ops", CLUSTER));
        }
        other => panic!("a client certificate read as {other:?}"),
    }

    // As a server posing as a manager (an attacker's own rustls config with
    // the client certificate): nodes refuse it, it has no server usage.
    let (chain, key) = ops.chain_and_key();
    let rogue = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let outcome = to_manager(rogue, client_config(&manager, ca.cert(), nobody_removed())?).await;
    assert!(outcome.client.is_err());
    assert!(
        cert_error(&outcome.client).is_some(),
        "{:?}",
        outcome.client
    );

    // One from another swarm's CA is refused at the handshake.
    let other = RootCa::generate(CLUSTER, DEFAULT_ROOT_CA_VALIDITY)?;
    let outcome = to_manager(
        server_config(&manager, ca.cert(), nobody_removed())?,
        client_cert(&other, "ops")?.tls_config(ca.cert(), nobody_removed())?,
    )
    .await;
    assert!(
        unknown_issuer(&outcome.server),
        "{:?}",
        outcome.server.err()
    );
    Ok(())
}
