//! The dispatcher's two pure halves: what a node is told to run (its
//! [`assignments`]), and how a node's observation of a task becomes a state
//! change ([`report`]), forward-only as swarm's task states are.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use shoal_api::cluster::v1::{
    Aliases, AssignmentSet, Endpoint, ImageHolder, MeshBackend, MeshService, NetworkAssignment,
    NodeAddress, TaskAddress, TaskAssignment, TaskFile, TaskFileKind, TaskReport,
};

use crate::{
    model::{
        ClusterState, Command, FileRef, HOST_IMAGE, Node, NodeState, TEMPLATE_DRIVER_GOLANG, Task,
        TaskSpec, TaskState, TaskStatus,
    },
    template::{self, Context},
    wire::{self, encode, logged},
};

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

/// A task whose node gets its secrets and configs: one the node may be
/// running (until it ended, so a task being stopped keeps them), less one
/// told to stop before it started, which will never mount them.
fn needs_files(t: &Task) -> bool {
    holds_address(t) && (t.desired_state <= TaskState::Running || t.state >= TaskState::Preparing)
}

/// What the placeholders of task `t` on `node_id` stand for.
fn template_context<'a>(state: &'a ClusterState, t: &'a Task, node_id: &'a str) -> Context<'a> {
    let service = state.services.get(&t.service_id);
    let node = state.nodes.get(node_id);
    Context {
        service_name: service.map_or("", |s| s.spec.name.as_str()),
        service_id: &t.service_id,
        service_labels: service.map(|s| &s.spec.labels),
        node_id,
        node_hostname: node.map_or("", |n| n.hostname.as_str()),
        node_os: node.map_or("", |n| n.platform.os.as_str()),
        node_architecture: node.map_or("", |n| n.platform.architecture.as_str()),
        task_id: &t.id,
        task_slot: t.slot.unwrap_or(0),
    }
}

/// `text` expanded for a task. Stored templates were parsed when stored;
/// one that no longer parses (a newer build's) is sent as written, logged.
fn expand(text: &str, ctx: &Context<'_>, what: impl Fn() -> String) -> String {
    template::expand(text, ctx).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "{} not expanded", what());
        text.to_owned()
    })
}

/// The secrets and configs of task `t`, with their data: what only its
/// node may receive. A reference to an object gone meanwhile is left out,
/// and the node starts no task missing a file.
fn task_files(state: &ClusterState, t: &Task, ctx: &Context<'_>) -> Vec<TaskFile> {
    let file = |kind: TaskFileKind, r: &FileRef, data: Vec<u8>| TaskFile {
        kind: kind.into(),
        id: r.id.clone(),
        name: r.name.clone(),
        target: r.path(),
        uid: r.uid,
        gid: r.gid,
        mode: r.mode,
        data,
    };
    let secrets = t.spec.secrets.iter().filter_map(|r| {
        let s = state.secrets.get(&r.id);
        if s.is_none() {
            tracing::warn!(task = %t.id, secret = %r.id, "task refers to a removed secret");
        }
        Some(file(TaskFileKind::Secret, r, s?.data.0.clone()))
    });
    let configs = t.spec.configs.iter().filter_map(|r| {
        let Some(c) = state.configs.get(&r.id) else {
            tracing::warn!(task = %t.id, config = %r.id, "task refers to a removed config");
            return None;
        };
        let data = match std::str::from_utf8(&c.data.0) {
            Ok(text) if c.template_driver == TEMPLATE_DRIVER_GOLANG => {
                expand(text, ctx, || format!("config {}", c.id)).into_bytes()
            }
            _ => c.data.0.clone(),
        };
        Some(file(TaskFileKind::Config, r, data))
    });
    secrets.chain(configs).collect()
}

/// The data-path address of a node that is up, the only nodes traffic is
/// sent to; `None` (logged) for an address the data path cannot use.
fn vtep(node: &Node) -> Option<u32> {
    let addr: IpAddr = node.addr.filter(|_| node.status == NodeState::Ready)?;
    logged(wire::ipv4(|| format!("node {} addr", node.id), addr))
}

/// The node's WireGuard public key as it reported it; empty before.
fn wireguard_key(node: &Node) -> Vec<u8> {
    use base64::Engine;
    node.wireguard_key
        .as_deref()
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .unwrap_or_default()
}

/// A task's stored address (`10.0.1.7/24`) on the wire.
fn task_addr(t: &Task, cidr: &str) -> Option<shoal_api::cluster::v1::Ipv4Prefix> {
    logged(wire::prefix(|| format!("task {} address", t.id), cidr))
}

/// The routing mesh: every service with its VIPs and ports, and as
/// backends its tasks RUNNING (observed and desired) on nodes that are up,
/// one per task and network address.
fn mesh(state: &ClusterState) -> Vec<MeshService> {
    // Every session builds this on every applied entry: one walk over the
    // tasks, not two per service (at 1,000 services × 10 tasks that was 20
    // million comparisons per node per entry, enough to starve heartbeats).
    let mut running: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running)
    {
        running.entry(t.service_id.as_str()).or_default().push(t);
    }
    state
        .services
        .values()
        .map(|s| (s, running.get(s.id.as_str()).map_or(&[][..], Vec::as_slice)))
        .map(|(s, tasks)| MeshService {
            id: s.id.clone(),
            name: s.spec.name.clone(),
            endpoint_mode: encode(s.spec.endpoint.mode),
            vips: wire::vips(state, &s.endpoint.vips),
            // A host-network task listens on the node's port itself: there
            // is nothing for the mesh to DNAT.
            ports: match s.spec.task.network_host {
                true => Vec::new(),
                false => s.endpoint.ports.iter().map(wire::port).collect(),
            },
            backends: backends(state, tasks, |t| t.desired_state == TaskState::Running),
            draining: backends(state, tasks, |t| t.desired_state > TaskState::Running),
            network_aliases: s
                .spec
                .network_aliases
                .iter()
                .map(|(net, aliases)| {
                    (
                        net.clone(),
                        Aliases {
                            aliases: aliases.clone(),
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

/// Of a service's tasks observed RUNNING, those on nodes that are up and
/// passing `wanted`, one backend per task and network address.
fn backends(
    state: &ClusterState,
    running: &[&Task],
    wanted: impl Fn(&Task) -> bool,
) -> Vec<MeshBackend> {
    running
        .iter()
        .copied()
        .filter(|t| wanted(t))
        .filter_map(|t| {
            let node = state.nodes.get(t.node_id.as_deref()?)?;
            Some((t, node, vtep(node)?))
        })
        .flat_map(|(t, node, addr)| {
            t.networks.iter().flat_map(move |n| {
                n.addresses.iter().filter_map(move |a| {
                    Some(MeshBackend {
                        task_id: t.id.clone(),
                        node_id: node.id.clone(),
                        node_addr: addr,
                        network_id: n.network_id.clone(),
                        ip: task_addr(t, a)?.addr,
                    })
                })
            })
        })
        .collect()
}

/// `host:port` of a node's 2377: a manager's is recorded; a worker listens
/// on the cluster port of the address it joined with.
pub fn cluster_addr(n: &Node) -> Option<String> {
    match &n.manager {
        Some(m) => Some(m.addr.clone()),
        None => n
            .addr
            .map(|ip| std::net::SocketAddr::new(ip, shoal_api::CLUSTER_PORT).to_string()),
    }
}

/// The other nodes that hold a task's image (its pinned digest, or under
/// its reference when unpinned), where a node lacking it can fetch it.
fn image_holders(state: &ClusterState, spec: &TaskSpec, me: &str) -> Vec<ImageHolder> {
    if spec.image == HOST_IMAGE {
        return Vec::new();
    }
    let (digest, holders): (&str, BTreeSet<&str>) = if spec.image_digest.is_empty() {
        // Unpinned (the catalogue did not know the image at create time):
        // what it resolves the reference to now, so that a task placed
        // after the image was loaded somewhere still finds it.
        shoal_api::reference::Reference::parse(&spec.image)
            .ok()
            .and_then(|r| state.resolve_image(&r.with_default_tag().to_string()))
            .map(|(d, h)| (d, h.nodes.iter().map(String::as_str).collect()))
            .unwrap_or_default()
    } else {
        (&spec.image_digest, state.image_holders(&spec.image_digest))
    };
    holders
        .into_iter()
        .filter(|n| *n != me)
        .filter_map(|n| state.nodes.get(n))
        .filter(|n| n.status == NodeState::Ready)
        .filter_map(|n| {
            Some(ImageHolder {
                node_id: n.id.clone(),
                addr: cluster_addr(n)?,
                digest: digest.to_owned(),
            })
        })
        .collect()
}

/// Everything `node_id` needs to know: its tasks that have not ended, the
/// networks they use (and always the ingress network, which every node
/// carries for the routing mesh), the live endpoints on those networks
/// across the cluster (on nodes that are up), the mesh, and the nodes.
pub fn assignments(state: &ClusterState, node_id: &str) -> AssignmentSet {
    let mine: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(node_id) && holds_address(t))
        .collect();
    let network_ids: BTreeSet<&str> = mine
        .iter()
        .flat_map(|t| t.networks.iter().map(|n| n.network_id.as_str()))
        .chain(
            state
                .networks
                .values()
                .filter(|n| n.ingress)
                .map(|n| n.id.as_str()),
        )
        .collect();
    let tasks = mine
        .iter()
        .map(|t| {
            let (mut container, resources) = wire::container_for_node(&t.spec);
            let ctx = template_context(state, t, node_id);
            container.hostname = expand(&container.hostname, &ctx, || {
                format!("task {} hostname", t.id)
            });
            for m in &mut container.mounts {
                m.source = expand(&m.source, &ctx, || format!("task {} mount source", t.id));
            }
            // A task stored with `--rootfs` by an older build must not run
            // from the node's filesystem in the moment before the
            // orchestrator stops it: with no image, the node rejects it.
            if !t.spec.legacy_rootfs.is_empty() {
                container.image.clear();
            }
            TaskAssignment {
                id: t.id.clone(),
                name: task_name(state, t),
                service_id: t.service_id.clone(),
                service_name: state
                    .services
                    .get(&t.service_id)
                    .map(|s| s.spec.name.clone())
                    .unwrap_or_default(),
                desired_state: encode(t.desired_state),
                state: encode(t.state),
                args: t.spec.args.clone(),
                env: t
                    .spec
                    .env
                    .iter()
                    .map(|e| expand(e, &ctx, || format!("task {} env", t.id)))
                    .collect(),
                container: Some(container),
                resources: Some(resources),
                image_holders: image_holders(state, &t.spec, node_id),
                files: if needs_files(t) {
                    task_files(state, t, &ctx)
                } else {
                    Vec::new()
                },
                addresses: t
                    .networks
                    .iter()
                    .flat_map(|n| {
                        n.addresses.iter().filter_map(|a| {
                            Some(TaskAddress {
                                network_id: n.network_id.clone(),
                                addr: Some(task_addr(t, a)?),
                            })
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    let networks = network_ids
        .iter()
        .filter_map(|id| state.networks.get(*id))
        .map(|n| NetworkAssignment {
            id: n.id.clone(),
            name: n.name.clone(),
            vni: n.vni.unwrap_or_default(),
            subnet: n
                .subnet
                .as_deref()
                .and_then(|s| logged(wire::prefix(|| format!("network {} subnet", n.id), s))),
            gateway: n
                .gateway
                .and_then(|g| logged(wire::ipv4(|| format!("network {} gateway", n.id), g)))
                .unwrap_or_default(),
            mtu: n.mtu.unwrap_or_default(),
            encryption: wire::encode_encryption(n.encryption),
            ingress: n.ingress,
            internal: n.internal,
        })
        .collect();
    let mut endpoints = Vec::new();
    for t in state.tasks.values().filter(|t| holds_address(t)) {
        let Some(node) = t.node_id.as_ref().and_then(|n| state.nodes.get(n)) else {
            continue;
        };
        let Some(node_addr) = vtep(node) else {
            continue;
        };
        for n in t
            .networks
            .iter()
            .filter(|n| network_ids.contains(n.network_id.as_str()))
        {
            for a in &n.addresses {
                let Some(ip) = task_addr(t, a) else { continue };
                endpoints.push(Endpoint {
                    network_id: n.network_id.clone(),
                    task_id: t.id.clone(),
                    ip: ip.addr,
                    node_id: node.id.clone(),
                    node_addr,
                });
            }
        }
    }
    AssignmentSet {
        version: state.version,
        tasks,
        networks,
        endpoints,
        mesh: mesh(state),
        nodes: state
            .nodes
            .values()
            .filter_map(|n| {
                Some(NodeAddress {
                    id: n.id.clone(),
                    addr: vtep(n)?,
                    wireguard_key: wireguard_key(n),
                })
            })
            .collect(),
        // Every node in the cluster: the rings are what lets it speak
        // gossip at all (and, later, read encrypted overlays).
        network_keys: state
            .cluster()
            .map(|c| c.network_keys.to_wire())
            .unwrap_or_default(),
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
    #[error(transparent)]
    Wire(#[from] shoal_api::words::WireError),
}

/// The command recording `r` from `node_id`, or `None` when it would not
/// move the task forward (a late or repeated report).
pub fn report(
    state: &ClusterState,
    node_id: &str,
    r: &TaskReport,
    now: u64,
) -> Result<Option<Command>, ReportError> {
    let bad = || {
        ReportError::BadState(
            shoal_api::words::word::<shoal_api::cluster::v1::TaskState>(r.state).into_owned(),
        )
    };
    let new: TaskState =
        wire::decode(|| format!("task {} state", r.task_id), r.state)?.ok_or_else(bad)?;
    if new < TaskState::Accepted || new == TaskState::Orphaned {
        return Err(bad());
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
    let health = match &r.health {
        Some(h) => wire::decode_health(h, &r.task_id)?,
        None => None,
    };
    // A health change alone (healthy while RUNNING) is recorded too.
    if new < t.state || (new == t.state && health == t.status.health) {
        return Ok(None);
    }
    let mut task = t.clone();
    if new == t.state {
        task.status.health = health;
        return Ok(Some(Command::UpdateTask {
            id: t.id.clone(),
            expected_version: t.version,
            task,
        }));
    }
    task.state = new;
    task.status = TaskStatus {
        since_unix: now,
        message: r.message.clone(),
        err: r.err.clone(),
        exit_code: r.exit_code,
        health,
    };
    Ok(Some(Command::UpdateTask {
        id: t.id.clone(),
        expected_version: t.version,
        task,
    }))
}

#[cfg(test)]
mod tests;
