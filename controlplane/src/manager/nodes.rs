//! Nodes as the operator lists and changes them: `node ls`, `inspect`,
//! `update` (availability, labels, promote and demote) and `rm`.

use shoal_api::cluster::v1::{
    NodeDetail, NodePlatform, NodeResources, NodeSummary, RemoveNodeRequest, UpdateNodeRequest,
};

use super::{Manager, ManagerError, cluster_of};
use crate::{
    model::{Availability, ClusterState, Command, Node, NodeRole as ModelRole, NodeState},
    wire,
};

pub(super) async fn list(m: &Manager) -> Result<Vec<NodeSummary>, ManagerError> {
    let state = m.read().await?;
    Ok(state.nodes.values().map(|n| summary(m, n)).collect())
}

pub(super) async fn inspect(m: &Manager, key: &str) -> Result<NodeDetail, ManagerError> {
    let state = m.read().await?;
    let n = find_node(&state, key)?;
    Ok(NodeDetail {
        node: Some(summary(m, n)),
        cert_not_after_unix: n.tls.cert_not_after_unix,
        raft_addr: n
            .manager
            .as_ref()
            .map(|m| m.addr.clone())
            .unwrap_or_default(),
        resources: resources(n),
        platform: platform(n),
        wireguard_key: n.wireguard_key.clone().unwrap_or_default(),
    })
}

/// What the node reported of its platform, unset before its first report.
fn platform(n: &Node) -> Option<NodePlatform> {
    (!n.platform.is_empty()).then(|| NodePlatform {
        os: n.platform.os.clone(),
        architecture: n.platform.architecture.clone(),
    })
}

/// What the node reported, unset before its first report.
fn resources(n: &Node) -> Option<NodeResources> {
    let r = n.resources;
    (r != crate::model::NodeResources::default()).then_some(NodeResources {
        nano_cpus: r.nano_cpus,
        memory_bytes: r.memory_bytes,
    })
}

pub(super) async fn update(m: &Manager, r: UpdateNodeRequest) -> Result<NodeDetail, ManagerError> {
    crate::validate::labels("--label-add", &r.label_add)?;
    for k in &r.label_rm {
        crate::validate::label_key("--label-rm", k)?;
    }
    let mut node = find_node(&*m.read().await?, &r.node)?.clone();
    let (id, version) = (node.id.clone(), node.version);
    let availability: Option<Availability> =
        wire::decode(|| "availability".into(), r.availability)?;
    if let Some(availability) = availability {
        node.availability = availability;
    }
    let role: Option<ModelRole> = wire::decode(|| "role".into(), r.role)?;
    for k in &r.label_rm {
        if node.labels.remove(k).is_none() {
            return Err(ManagerError::Invalid {
                what: format!("label {k:?} is not set on this node"),
            });
        }
    }
    node.labels.extend(r.label_add.clone());
    match role {
        None => {}
        Some(ModelRole::Worker) if node.manager.is_some() => {
            let raft_id = node.manager.as_ref().map(|m| m.raft_id).unwrap_or_default();
            let managers = m
                .read()
                .await?
                .nodes
                .values()
                .filter(|n| n.manager.is_some())
                .count();
            if managers <= 1 {
                return Err(ManagerError::Precondition {
                    what: "attempting to demote the last manager of the swarm".into(),
                });
            }
            m.remove_manager(raft_id).await?;
            node.manager = None;
            node.role = ModelRole::Worker;
        }
        // In place, as swarm does: the node sees its new role in its
        // next heartbeat reply, gets a manager certificate, starts its
        // manager and joins Raft (`add_manager` records it as a voter).
        Some(ModelRole::Manager) if node.manager.is_none() => {
            if node.status != NodeState::Ready {
                return Err(ManagerError::Precondition {
                    what: promote_down(&node),
                });
            }
            node.role = ModelRole::Manager;
        }
        // Called off before the node got into Raft.
        Some(ModelRole::Worker) if node.promotion_pending() => node.role = ModelRole::Worker,
        Some(ModelRole::Worker | ModelRole::Manager) => {}
    }
    let applied = m
        .propose(Command::UpdateNode {
            id: id.clone(),
            expected_version: version,
            node,
        })
        .await?;
    let state = m.after(&applied).await?;
    let n = find_node(&state, &id)?;
    Ok(NodeDetail {
        node: Some(summary(m, n)),
        cert_not_after_unix: 0,
        raft_addr: String::new(),
        resources: resources(n),
        platform: platform(n),
        wireguard_key: n.wireguard_key.clone().unwrap_or_default(),
    })
}

/// Removes a worker (down, or any with `force`) and revokes its certificate.
pub(super) async fn remove(m: &Manager, r: &RemoveNodeRequest) -> Result<String, ManagerError> {
    let (node, cluster) = {
        let state = m.read().await?;
        let node = find_node(&state, &r.node)?.clone();
        let cluster = cluster_of(&state)?.clone();
        (node, cluster)
    };
    if node.manager.is_some() {
        return Err(ManagerError::Precondition {
            what: format!(
                "rpc error: node {} is a cluster manager and is a member of the raft cluster. It \
                 must be demoted to worker before removal",
                node.id
            ),
        });
    }
    if node.status != NodeState::Down && !r.force {
        return Err(ManagerError::Precondition {
            what: format!(
                "node {} is not down and can't be removed; stop it first, or use --force",
                node.id
            ),
        });
    }
    m.propose(Command::RemoveNode {
        id: node.id.clone(),
        expected_version: node.version,
    })
    .await?;
    let mut c = cluster;
    let version = c.version;
    c.removed_nodes.insert(node.id.clone());
    m.propose(Command::UpdateCluster {
        id: c.id.clone(),
        expected_version: version,
        cluster: c,
    })
    .await?;
    m.removed_nodes().insert(node.id.clone());
    Ok(node.id)
}

/// Why a node that does not heartbeat cannot be promoted, and what to do.
fn promote_down(node: &Node) -> String {
    format!(
        "node {} ({}) is {}: a promotion happens over the node's own session, so its shoald must \
         be running and reach a manager; start it and promote again, or `shoal node rm` it and \
         join a new manager with `shoal swarm join-token manager`",
        node.hostname,
        node.id,
        wire::word(node.status),
    )
}

/// Finds a node by id, unique id prefix or hostname, as docker does.
fn find_node<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Node, ManagerError> {
    if let Some(n) = state.nodes.get(key) {
        return Ok(n);
    }
    let matches: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| n.hostname == key || (!key.is_empty() && n.id.starts_with(key)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ManagerError::NotFound {
            what: format!("node {key}"),
        }),
        _ => Err(ManagerError::Invalid {
            what: format!(
                "node {key} is ambiguous ({} matches); use its ID",
                matches.len()
            ),
        }),
    }
}

fn summary(m: &Manager, n: &Node) -> NodeSummary {
    let leader = m.leader();
    let manager_status = match &n.manager {
        None => "",
        Some(m) if Some(m.raft_id) == leader => "Leader",
        Some(_) if n.status == NodeState::Ready => "Reachable",
        Some(_) => "Unreachable",
    };
    NodeSummary {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        status: wire::encode(n.status),
        availability: wire::encode(n.availability),
        manager_status: manager_status.into(),
        role: wire::encode(if n.manager.is_some() || n.role == ModelRole::Manager {
            ModelRole::Manager
        } else {
            ModelRole::Worker
        }),
        addr: n.addr.map(|a| a.to_string()).unwrap_or_default(),
        labels: n.labels.clone().into_iter().collect(),
        version: n.version,
        last_heartbeat_unix: 0,
        self_: n.id == m.node_id(),
    }
}
