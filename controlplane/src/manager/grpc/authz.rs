//! Who may call what on a manager, decided from the caller alone:
//!
//! | caller                              | Control | IssueClientCert | RaftPeer | Dispatcher |
//! | ----------------------------------- | ------- | --------------- | -------- | ---------- |
//! | local socket (`LocalCaller` manager) | yes     | yes             | no       | no         |
//! | manager certificate                 | yes     | yes             | yes      | yes        |
//! | worker certificate                  | no      | no              | no       | yes        |
//! | client certificate                  | yes     | no              | no       | no         |
//! | nothing (anonymous, or no marker)   | no      | no              | no       | no         |
//!
//! No identity means no access: the local socket's server marks its
//! requests with [`LocalCaller`] rather than relying on a missing peer.

use shoal_ca::{ClientIdentity, NodeRole, PeerIdentity};
use tonic::{Request, Status};

use crate::transport::PeerInfo;

/// Set by the server of the node's root-only Unix socket on each request
/// it hands to the manager: the caller is root on this node, acting with
/// the node's own role. Extensions never come from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalCaller {
    pub role: NodeRole,
}

/// Who is calling, as the transport established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller<'a> {
    Local(NodeRole),
    Node(&'a PeerIdentity),
    Client(&'a ClientIdentity),
    Anonymous,
}

/// What an RPC asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The operator's API: managers, the local socket, client certificates.
    Operator,
    /// Minting credentials: managers and the local socket, never a client.
    Admin,
    /// Raft between managers: a manager's own certificate only.
    Manager,
    /// A node's session: any node's own certificate.
    Node,
}

/// The caller of `req`. A TLS peer takes precedence over a local marker:
/// requests over 2377 always carry [`PeerInfo`].
pub(crate) fn caller<T>(req: &Request<T>) -> Caller<'_> {
    let ext = req.extensions();
    match (ext.get::<PeerInfo>(), ext.get::<LocalCaller>()) {
        (
            Some(PeerInfo {
                identity: Some(id), ..
            }),
            _,
        ) => Caller::Node(id),
        (
            Some(PeerInfo {
                client: Some(c), ..
            }),
            _,
        ) => Caller::Client(c),
        (Some(_), _) => Caller::Anonymous,
        (None, Some(local)) => Caller::Local(local.role),
        (None, None) => Caller::Anonymous,
    }
}

/// Whether `caller` may make a call that needs `need`.
pub(crate) fn authorize(caller: Caller<'_>, need: Need) -> Result<(), Status> {
    let manager = |role| role == NodeRole::Manager;
    let allowed = match (caller, need) {
        (Caller::Anonymous, _) => {
            return Err(Status::unauthenticated(
                "no identity: a certificate of this swarm (or the node's local socket) is required",
            ));
        }
        (Caller::Local(role), Need::Operator | Need::Admin) => manager(role),
        (Caller::Local(_), Need::Manager | Need::Node) => false,
        (Caller::Node(_), Need::Node) => true,
        (Caller::Node(id), _) => manager(id.role()),
        (Caller::Client(_), Need::Operator) => true,
        (Caller::Client(_), _) => false,
    };
    if allowed {
        return Ok(());
    }
    Err(Status::permission_denied(match (caller, need) {
        (Caller::Client(c), _) => format!(
            "client certificate {:?} may call the Control API only; this needs a {}",
            c.name(),
            need.what()
        ),
        _ => format!("a {} is required", need.what()),
    }))
}

impl Need {
    fn what(self) -> &'static str {
        match self {
            Need::Operator => "manager certificate, a client certificate or the local socket",
            Need::Admin => "manager certificate or the local socket",
            Need::Manager => "manager certificate",
            Need::Node => "node certificate",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_ca::{
        CertIdentity, NodeKey, RootCa,
        rustls::pki_types::{CertificateDer, pem::PemObject},
    };
    use tonic::Code;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn cert_identity(ca: &RootCa, name: &str, role: Option<NodeRole>) -> CertIdentity {
        let key = NodeKey::generate().expect("key");
        let csr = key.csr().expect("csr");
        let pem = match role {
            Some(role) => ca.issue(&csr, name, role, "c1", HOUR),
            None => ca.issue_client(&csr, name, "c1", HOUR),
        }
        .expect("issue");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        CertIdentity::from_cert_der(&der).expect("identity")
    }

    /// A request as the TLS transport hands it over.
    fn over_tls(id: Option<CertIdentity>) -> Request<()> {
        let (identity, client) = match id {
            Some(CertIdentity::Node(n)) => (Some(n), None),
            Some(CertIdentity::Client(c)) => (None, Some(c)),
            None => (None, None),
        };
        let mut req = Request::new(());
        req.extensions_mut().insert(PeerInfo {
            addr: ([198, 18, 0, 9], 40000).into(),
            identity,
            client,
        });
        req
    }

    fn local(role: NodeRole) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(LocalCaller { role });
        req
    }

    fn decide(req: &Request<()>, need: Need) -> Result<(), Code> {
        authorize(caller(req), need).map_err(|s| s.code())
    }

    #[test]
    fn each_caller_reaches_exactly_its_services() {
        let ca = RootCa::generate("c1", HOUR).expect("ca");
        let manager = over_tls(Some(cert_identity(&ca, "m1", Some(NodeRole::Manager))));
        let worker = over_tls(Some(cert_identity(&ca, "w1", Some(NodeRole::Worker))));
        let client = over_tls(Some(cert_identity(&ca, "ops", None)));
        let anonymous = over_tls(None);
        let nothing = Request::new(());
        let ok = Ok(());
        let denied = Err(Code::PermissionDenied);
        let unauthenticated = Err(Code::Unauthenticated);
        use Need::*;
        let table = [
            // (caller, [Operator, Admin, Manager, Node])
            ("manager cert", &manager, [ok, ok, ok, ok]),
            ("worker cert", &worker, [denied, denied, denied, ok]),
            ("client cert", &client, [ok, denied, denied, denied]),
            (
                "local manager",
                &local(NodeRole::Manager),
                [ok, ok, denied, denied],
            ),
            (
                "local worker",
                &local(NodeRole::Worker),
                [denied, denied, denied, denied],
            ),
            ("anonymous TLS", &anonymous, [unauthenticated; 4]),
            // No peer and no marker: closed, whatever path it came by.
            ("nothing", &nothing, [unauthenticated; 4]),
        ];
        for (who, req, want) in table {
            for (need, want) in [Operator, Admin, Manager, Node].into_iter().zip(want) {
                assert_eq!(decide(req, need), want, "{who} calling a {need:?} RPC");
            }
        }
    }

    #[test]
    fn a_tls_peer_outranks_a_local_marker() {
        let ca = RootCa::generate("c1", HOUR).expect("ca");
        let mut req = over_tls(Some(cert_identity(&ca, "ops", None)));
        req.extensions_mut().insert(LocalCaller {
            role: NodeRole::Manager,
        });
        assert!(matches!(caller(&req), Caller::Client(_)));
        assert_eq!(decide(&req, Need::Manager), Err(Code::PermissionDenied));
    }

    #[test]
    fn a_refused_client_is_told_what_it_may_call() {
        let ca = RootCa::generate("c1", HOUR).expect("ca");
        let req = over_tls(Some(cert_identity(&ca, "ops", None)));
        let status = authorize(caller(&req), Need::Manager).expect_err("refused");
        assert!(
            status
                .message()
                .contains("\"ops\" may call the Control API only")
        );
    }
}
