//! The dispatcher's two pure halves: what a node is told to run (its
//! [`assignments`]), and how a node's observation of a task becomes a state
//! change ([`report`]), forward-only as swarm's task states are.

use std::{collections::BTreeSet, net::IpAddr};

use shoal_api::cluster::v1::{
    AssignmentSet, Endpoint, NetworkAssignment, TaskAddress, TaskAssignment, TaskReport,
};

use crate::model::{ClusterState, Command, NodeState, Task, TaskState, TaskStatus};

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `<service>.<slot>` for replicated tasks, `<service>.<node id>` for global
/// ones, as `service ps` shows them; also the task's hostname.
pub fn task_name(state: &ClusterState, t: &Task) -> String {
    let service = state
        .services
        .get(&t.service_id)
        .map_or(t.service_id.as_str(), |s| s.spec.name.as_str());
    match (t.slot, &t.node_id) {
        (Some(slot), _) => format!("{service}.{slot}"),
        (None, Some(n)) => format!("{service}.{n}"),
        (None, None) => service.to_owned(),
    }
}

/// A task whose address is in use on its node: handed to an agent and not
/// ended.
fn holds_address(t: &Task) -> bool {
    t.state >= TaskState::Assigned && t.state < TaskState::Complete
}

/// Everything `node_id` needs to know: its tasks that have not ended, the
/// networks they use, and the live endpoints on those networks across the
/// cluster (on nodes that are up).
pub fn assignments(state: &ClusterState, node_id: &str) -> AssignmentSet {
    let mine: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(node_id) && holds_address(t))
        .collect();
    let network_ids: BTreeSet<&str> = mine
        .iter()
        .flat_map(|t| t.networks.iter().map(|n| n.network_id.as_str()))
        .collect();
    let tasks = mine
        .iter()
        .map(|t| TaskAssignment {
            id: t.id.clone(),
            name: task_name(state, t),
            service_id: t.service_id.clone(),
            service_name: state
                .services
                .get(&t.service_id)
                .map(|s| s.spec.name.clone())
                .unwrap_or_default(),
            desired_state: lower(&t.desired_state),
            state: lower(&t.state),
            args: t.spec.args.clone(),
            env: t.spec.env.clone(),
            rootfs: t.spec.rootfs.clone(),
            addresses: t
                .networks
                .iter()
                .flat_map(|n| {
                    n.addresses.iter().map(|a| TaskAddress {
                        network_id: n.network_id.clone(),
                        cidr: a.clone(),
                    })
                })
                .collect(),
        })
        .collect();
    let networks = network_ids
        .iter()
        .filter_map(|id| state.networks.get(*id))
        .map(|n| NetworkAssignment {
            id: n.id.clone(),
            name: n.name.clone(),
            vni: n.vni.unwrap_or_default(),
            subnet: n.subnet.clone().unwrap_or_default(),
            gateway: n.gateway.map(|g| g.to_string()).unwrap_or_default(),
            mtu: n.mtu.unwrap_or_default(),
            encrypted: n.encrypted,
            ingress: n.ingress,
        })
        .collect();
    let mut endpoints = Vec::new();
    for t in state.tasks.values().filter(|t| holds_address(t)) {
        let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else {
            continue;
        };
        let Some(node_addr) = node.addr.filter(|_| node.status == NodeState::Ready) else {
            continue;
        };
        for n in t
            .networks
            .iter()
            .filter(|n| network_ids.contains(n.network_id.as_str()))
        {
            for a in &n.addresses {
                let ip = a.split('/').next().unwrap_or(a);
                if ip.parse::<IpAddr>().is_err() {
                    continue;
                }
                endpoints.push(Endpoint {
                    network_id: n.network_id.clone(),
                    task_id: t.id.clone(),
                    ip: ip.to_owned(),
                    node_id: node.id.clone(),
                    node_addr: node_addr.to_string(),
                });
            }
        }
    }
    AssignmentSet {
        version: state.version,
        tasks,
        networks,
        endpoints,
        mesh: Vec::new(),
        nodes: Vec::new(),
    }
}

/// Why a node's report was not applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("task {0} does not exist (it may have been removed)")]
    UnknownTask(String),
    #[error("task {task} is not assigned to node {node}")]
    NotYours { task: String, node: String },
    #[error("task state {0:?} is not one an agent reports (accepted … rejected)")]
    BadState(String),
}

/// The command recording `r` from `node_id`, or `None` when it would not
/// move the task forward (a late or repeated report).
pub fn report(
    state: &ClusterState,
    node_id: &str,
    r: &TaskReport,
    now: u64,
) -> Result<Option<Command>, ReportError> {
    let new: TaskState = serde_json::from_value(serde_json::Value::String(r.state.clone()))
        .map_err(|_| ReportError::BadState(r.state.clone()))?;
    if new < TaskState::Accepted || new == TaskState::Orphaned {
        return Err(ReportError::BadState(r.state.clone()));
    }
    let t = state
        .tasks
        .get(&r.task_id)
        .ok_or_else(|| ReportError::UnknownTask(r.task_id.clone()))?;
    if t.node_id.as_deref() != Some(node_id) {
        return Err(ReportError::NotYours {
            task: r.task_id.clone(),
            node: node_id.to_owned(),
        });
    }
    if new <= t.state {
        return Ok(None);
    }
    let mut task = t.clone();
    task.state = new;
    task.status = TaskStatus {
        since_unix: now,
        message: r.message.clone(),
        err: r.err.clone(),
        exit_code: r.exit_code,
    };
    Ok(Some(Command::UpdateTask {
        id: t.id.clone(),
        expected_version: t.version,
        task,
    }))
}

#[cfg(test)]
mod tests;
