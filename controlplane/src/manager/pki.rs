//! The swarm's CA as the managers run it: renewed certificates for nodes,
//! root rotation (`swarm ca --rotate`) and its end, and the roots every
//! manager trusts.
//!
//! A rotation, as swarm does it:
//! 1. `rotate_ca` stores a new root, cross-signed by the current one, as
//!    `root_ca.rotation`. From then on it issues every certificate, and
//!    every node trusts both roots (heartbeat replies say so).
//! 2. Nodes see in their heartbeat reply that another root issues
//!    certificates, and ask for one (`Dispatcher.RenewCertificate`); their
//!    next heartbeat reports the new issuer, which the leader records.
//! 3. Once every node reports the new root, the leader makes it the only
//!    root ([`finish_rotation`]) and moves the join tokens to its digest;
//!    nodes (managers too, through their own session) see the trusted
//!    roots change, renew once more and drop the old root.
//!
//! A manager's TLS trust is its node's: the session installs what
//! `RenewCertificate` returns. Until then, certificates from the new root
//! verify against the old one through their cross-signed root.
//!
//! A node that never reports (down, unreachable) holds the rotation at
//! step 2, as in swarm: remove it (`node rm`) to let the rotation end.

use std::time::Duration;

use shoal_api::cluster::v1::{CaStatusReply, IssueClientCertReply};
use shoal_ca::{CaCert, CsrPem, NodeRole, RootCa};

use super::{Manager, ManagerError, cluster_of};
use crate::model::{Cluster, ClusterState, Command, RootCaKeys, RootRotation, SecretString};

/// What a heartbeat reply tells a node about the roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaRootsView {
    /// `sha256:<hex>` of the root that issues certificates now.
    pub issuer: String,
    /// Digests of the roots to trust, the join tokens' one first.
    pub trusted: Vec<String>,
}

fn stored(what: &str, e: shoal_ca::CaError) -> ManagerError {
    ManagerError::Raft(format!("the stored {what} is unusable: {e}"))
}

/// The root that issues certificates now: the rotation's new root (with
/// its cross-signed certificate) while one runs.
pub(crate) fn issuing_root(c: &Cluster) -> Result<RootCa, ManagerError> {
    match &c.root_ca.rotation {
        Some(r) => RootCa::from_pem(&r.cert_pem, &r.key_pem.0)
            .and_then(|ca| ca.with_cross_signed(&r.cross_signed_pem))
            .map_err(|e| stored("rotation root CA", e)),
        None => RootCa::from_pem(&c.root_ca.cert_pem, &c.root_ca.key_pem.0)
            .map_err(|e| stored("root CA", e)),
    }
}

/// The roots every node trusts now, the join tokens' one first.
pub(crate) fn trust_roots(c: &Cluster) -> Result<Vec<CaCert>, ManagerError> {
    let mut roots = vec![CaCert::from_pem(&c.root_ca.cert_pem).map_err(|e| stored("root CA", e))?];
    if let Some(r) = &c.root_ca.rotation {
        roots.push(CaCert::from_pem(&r.cert_pem).map_err(|e| stored("rotation root CA", e))?);
    }
    Ok(roots)
}

fn issuer_digest(c: &Cluster) -> Result<String, ManagerError> {
    let pem = c
        .root_ca
        .rotation
        .as_ref()
        .map_or(&c.root_ca.cert_pem, |r| &r.cert_pem);
    CaCert::from_pem(pem)
        .map(|ca| ca.digest().to_string())
        .map_err(|e| stored("root CA", e))
}

/// The roots' digests from a cluster object, for heartbeat replies.
pub(crate) fn roots_view(c: &Cluster) -> Result<CaRootsView, ManagerError> {
    Ok(CaRootsView {
        issuer: issuer_digest(c)?,
        trusted: trust_roots(c)?
            .iter()
            .map(|ca| ca.digest().to_string())
            .collect(),
    })
}

/// The status `swarm ca` shows.
pub(crate) fn status(state: &ClusterState) -> Result<CaStatusReply, ManagerError> {
    let c = cluster_of(state)?;
    let issuer = issuer_digest(c)?;
    let rotated = state
        .nodes
        .values()
        .filter(|n| n.tls.cert_issuer == issuer)
        .count();
    Ok(CaStatusReply {
        root_ca_pem: c.root_ca.cert_pem.clone(),
        rotating: c.root_ca.rotation.is_some(),
        desired_root_ca_pem: c
            .root_ca
            .rotation
            .as_ref()
            .map_or_else(|| c.root_ca.cert_pem.clone(), |r| r.cert_pem.clone()),
        nodes_rotated: rotated as u64,
        nodes_total: state.nodes.len() as u64,
    })
}

impl Manager {
    /// The roots as this manager has applied them (heartbeats need no
    /// linearizable read: a stale answer is corrected one period later).
    pub async fn ca_roots(&self) -> Result<CaRootsView, ManagerError> {
        roots_view(cluster_of(&*self.local_state().await)?)
    }

    /// The node ids the swarm wants as managers, from the applied state
    /// (as a heartbeat reply's `manager_ids`).
    pub async fn wanted_manager_ids(&self) -> Vec<String> {
        super::sessions::manager_ids(&*self.local_state().await)
    }

    /// Heartbeat period the cluster asks for, from the applied state.
    pub async fn heartbeat_period(&self) -> Duration {
        let state = self.local_state().await;
        Duration::from_secs(
            state
                .clusters
                .values()
                .next()
                .map_or(5, |c| c.settings.dispatcher_heartbeat_secs.max(1)),
        )
    }

    /// Signs a new certificate for `node_id` (who the caller's certificate
    /// names) from the root that issues them now. The role comes from the
    /// cluster state alone, which only an operator changes (`node promote`,
    /// `node demote`): a worker cannot mint itself a manager certificate,
    /// and a promoted one gets its manager certificate this way. Returns
    /// the PEM chain and the PEM of every root to trust.
    pub async fn renew_certificate(
        &self,
        node_id: &str,
        csr: &str,
    ) -> Result<(String, Vec<String>), ManagerError> {
        let state = self.read().await?;
        let c = cluster_of(&state)?;
        if c.removed_nodes.contains(node_id) {
            return Err(ManagerError::Denied {
                what: format!("node {node_id} was removed from the swarm"),
            });
        }
        let node = state
            .nodes
            .get(node_id)
            .ok_or_else(|| ManagerError::NotFound {
                what: format!("node {node_id}"),
            })?;
        let role = if node.wants_manager() {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        let root = issuing_root(c)?;
        let validity = Duration::from_secs(c.settings.node_cert_expiry_secs);
        let chain = root
            .issue(&CsrPem::new(csr), node_id, role, &c.id, validity)
            .map_err(|e| ManagerError::Invalid {
                what: format!("certificate request refused: {e}"),
            })?;
        let trusted = trust_roots(c)?
            .iter()
            .map(|ca| ca.pem().to_owned())
            .collect();
        tracing::info!(node = %node_id, %role, issuer = %root.digest(), "certificate issued");
        Ok((chain, trusted))
    }

    /// `swarm ca --issue-client-cert`: signs an operator's CSR as a client
    /// certificate (named `name`, or a fresh id) from the issuing root,
    /// valid as long as node certificates. Nothing of it is stored: the
    /// key never left the operator, and the certificate is theirs to keep.
    pub async fn issue_client_cert(
        &self,
        csr: &str,
        name: &str,
    ) -> Result<IssueClientCertReply, ManagerError> {
        let state = self.read().await?;
        let c = cluster_of(&state)?;
        let name = if name.is_empty() {
            format!("client-{}", &shoal_ca::generate_node_id()[..12])
        } else {
            name.to_owned()
        };
        let root = issuing_root(c)?;
        let validity = Duration::from_secs(c.settings.node_cert_expiry_secs);
        let cert_pem = root
            .issue_client(&CsrPem::new(csr), &name, &c.id, validity)
            .map_err(|e| ManagerError::Invalid {
                what: format!("client certificate request refused: {e}"),
            })?;
        tracing::info!(client = %name, issuer = %root.digest(), "client certificate issued");
        Ok(IssueClientCertReply {
            cert_pem,
            ca_pem: c.root_ca.cert_pem.clone(),
            name,
        })
    }

    /// `swarm ca --rotate`: a new root, cross-signed by the current one.
    /// During a rotation, a second one replaces the pending root (nodes
    /// already moved to it renew again).
    pub async fn rotate_ca(&self, cert_expiry_secs: Option<u64>) -> Result<(), ManagerError> {
        let mut c = cluster_of(&*self.read().await?)?.clone();
        let current = RootCa::from_pem(&c.root_ca.cert_pem, &c.root_ca.key_pem.0)
            .map_err(|e| stored("root CA", e))?;
        let next = current
            .rotate(shoal_ca::DEFAULT_ROOT_CA_VALIDITY)
            .map_err(|e| ManagerError::Raft(format!("generating the new root CA: {e}")))?;
        let cross_signed_pem = next.cross_signed_pem().unwrap_or_default().to_owned();
        c.root_ca.rotation = Some(RootRotation {
            cert_pem: next.cert_pem().to_owned(),
            key_pem: SecretString(next.key_pem().to_string()),
            cross_signed_pem,
        });
        if let Some(secs) = cert_expiry_secs {
            c.settings.node_cert_expiry_secs = secs;
        }
        let version = c.version;
        tracing::info!(from = %current.digest(), to = %next.digest(), "root CA rotation started");
        self.propose(Command::UpdateCluster {
            id: c.id.clone(),
            expected_version: version,
            cluster: c,
        })
        .await
        .map(drop)
    }
}

/// On the leader: ends a rotation once every node reports a certificate
/// from the new root.
pub(super) async fn finish_rotation(m: &Manager) {
    if let Err(e) = try_finish_rotation(m).await {
        tracing::warn!(error = %e, "finishing the root CA rotation");
    }
}

async fn try_finish_rotation(m: &Manager) -> Result<(), ManagerError> {
    let c = {
        let state = m.local_state().await;
        let Ok(c) = cluster_of(&state) else {
            return Ok(());
        };
        let Some(rotation) = &c.root_ca.rotation else {
            return Ok(());
        };
        let new = CaCert::from_pem(&rotation.cert_pem)
            .map_err(|e| stored("rotation root CA", e))?
            .digest()
            .to_string();
        if state.nodes.values().any(|n| n.tls.cert_issuer != new) {
            return Ok(());
        }
        c.clone()
    };
    let Some(rotation) = c.root_ca.rotation.clone() else {
        return Ok(());
    };
    let new = CaCert::from_pem(&rotation.cert_pem).map_err(|e| stored("rotation root CA", e))?;
    let mut tokens = super::cluster::stored_tokens(&c)?;
    tokens.set_ca_digest(&new.digest());
    let mut next = c.clone();
    next.join_tokens.worker = SecretString(tokens.get(NodeRole::Worker).to_string());
    next.join_tokens.manager = SecretString(tokens.get(NodeRole::Manager).to_string());
    next.root_ca = RootCaKeys {
        cert_pem: rotation.cert_pem,
        key_pem: rotation.key_pem,
        rotation: None,
    };
    m.propose(Command::UpdateCluster {
        id: c.id.clone(),
        expected_version: c.version,
        cluster: next,
    })
    .await?;
    tracing::info!(root = %new.digest(), "root CA rotation finished: the old root is no longer trusted");
    Ok(())
}
