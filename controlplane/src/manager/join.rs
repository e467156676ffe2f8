//! A node joins: the token decides its role, the issuing root signs its
//! certificate, and it is stored as a ready worker (`add_manager` makes a
//! manager of it once Raft admits it).

use std::{net::IpAddr, time::Duration};

use shoal_api::cluster::v1::{JoinReply, JoinRequest};
use shoal_ca::{CsrPem, JoinToken, generate_node_id};

use super::{Manager, ManagerError, cluster::stored_tokens, cluster_of, pki};
use crate::model::{Availability, Command, Labels, Node, NodeRole as ModelRole, NodeState};

/// Admits the node asking with `r`; `peer_ip` is where it came from, its
/// address unless it advertises another.
pub(super) async fn join(
    m: &Manager,
    r: JoinRequest,
    peer_ip: Option<IpAddr>,
) -> Result<JoinReply, ManagerError> {
    let token = JoinToken::parse(r.token.trim()).map_err(|e| ManagerError::Invalid {
        what: format!("invalid join token: {e}"),
    })?;
    let cluster = cluster_of(&*m.read().await?)?.clone();
    let tokens = stored_tokens(&cluster)?;
    let role = tokens.authorize(&token).map_err(|_| ManagerError::Denied {
        what: "the join token is not valid for this swarm: it may have been rotated. Get the \
                   current one with `shoal swarm join-token worker|manager` on a manager"
            .into(),
    })?;
    if r.hostname.trim().is_empty() {
        return Err(ManagerError::Invalid {
            what: "hostname must not be empty".into(),
        });
    }
    // During a rotation the new root issues, and the node trusts both.
    let ca = pki::issuing_root(&cluster)?;
    let trusted = pki::trust_roots(&cluster)?;
    let node_id = generate_node_id();
    let validity = Duration::from_secs(cluster.settings.node_cert_expiry_secs);
    let cert_pem = ca
        .issue(
            &CsrPem::new(r.csr_pem),
            &node_id,
            role,
            &cluster.id,
            validity,
        )
        .map_err(|e| ManagerError::Invalid {
            what: format!("certificate request refused: {e}"),
        })?;
    // The address the node advertises, else the one it came from.
    let addr = r
        .advertise_addr
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| r.advertise_addr.parse::<std::net::IpAddr>())
        .ok()
        .or(peer_ip);
    let node = Node {
        id: node_id.clone(),
        version: 0,
        hostname: r.hostname.clone(),
        // Workers until Raft admits them: `add_manager` flips the role.
        role: ModelRole::Worker,
        availability: Availability::Active,
        labels: Labels::new(),
        addr,
        status: NodeState::Ready,
        manager: None,
        tls: Default::default(),
        resources: Default::default(),
        platform: Default::default(),
        wireguard_key: None,
    };
    m.propose(Command::CreateNode(node)).await?;
    m.heartbeat(&node_id, Default::default()).await?;
    tracing::info!(node = %node_id, hostname = %r.hostname, ?role, "node joined");
    Ok(JoinReply {
        node_id,
        role: crate::wire::encode(role),
        cluster_id: cluster.id.clone(),
        cert_pem,
        ca_pem: trusted.iter().map(|c| c.pem()).collect(),
        managers: m.manager_addrs(),
        heartbeat_secs: cluster.settings.dispatcher_heartbeat_secs,
    })
}
