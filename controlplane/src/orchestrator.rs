//! The leader's reconcilers, as pure functions from the committed state to
//! the commands that move it toward what the services ask for. Every command
//! is compare-and-set, so a plan made from a stale view is refused by
//! `apply` and simply re-made on the next pass.
//!
//! - [`orchestrate`]: services → tasks. Keeps one live task per replicated
//!   slot (or per eligible node for global services), replaces tasks that
//!   ended according to the restart policy, shuts down tasks beyond the
//!   replica count or on nodes that are down, drained or no longer match the
//!   constraints, and trims task history.
//! - [`schedule`]: pending tasks → nodes, spreading a service's tasks over
//!   the eligible nodes with the fewest of them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    constraint,
    ipam::{self, Ipv4Net},
    model::{
        Availability, ClusterState, Command, NetworkAttachment, Node, NodeState, RestartCondition,
        Service, ServiceMode, Task, TaskState, TaskStatus,
    },
};

/// Ended tasks kept per slot for `service ps` (swarm's `--task-history-limit`).
pub const HISTORY: usize = 5;

fn ended(s: TaskState) -> bool {
    s >= TaskState::Complete
}

/// A task that holds its slot: wanted running and not ended.
fn live(t: &Task) -> bool {
    t.desired_state == TaskState::Running && !ended(t.state)
}

/// Why `node` cannot run `service`'s tasks, or `None` if it can.
pub fn ineligible(node: &Node, service: &Service) -> Option<String> {
    if node.status != NodeState::Ready {
        return Some(format!("node {} is {}", node.hostname, lower(&node.status)));
    }
    if node.availability != Availability::Active {
        return Some(format!(
            "node {} is {}",
            node.hostname,
            lower(&node.availability)
        ));
    }
    for c in &service.spec.constraints {
        match constraint::parse(c) {
            Ok(c) if c.matches(node) => {}
            Ok(c) => return Some(format!("node {} fails constraint {c}", node.hostname)),
            Err(e) => return Some(e.to_string()),
        }
    }
    None
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn update(task: &Task, f: impl FnOnce(&mut Task)) -> Command {
    let mut t = task.clone();
    f(&mut t);
    Command::UpdateTask {
        id: task.id.clone(),
        expected_version: task.version,
        task: t,
    }
}

/// Asks a task to stop; one no agent holds yet is simply shut down.
fn shut_down(task: &Task, now: u64, why: &str) -> Command {
    update(task, |t| {
        t.desired_state = TaskState::Shutdown;
        if t.state <= TaskState::Assigned {
            t.state = TaskState::Shutdown;
        }
        t.status = TaskStatus {
            since_unix: now,
            message: why.to_owned(),
            ..t.status.clone()
        };
    })
}

/// Addresses in use on each network: task attachments and service VIPs.
fn used_addresses(state: &ClusterState) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut used: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut add = |net: &str, cidr: &str| {
        if let Some(a) = cidr.split('/').next().and_then(|a| a.parse().ok()) {
            used.entry(net.to_owned()).or_default().insert(a);
        }
    };
    for t in state.tasks.values() {
        for n in &t.networks {
            for a in &n.addresses {
                add(&n.network_id, a);
            }
        }
    }
    for s in state.services.values() {
        for v in &s.endpoint.vips {
            add(&v.network_id, &v.addr);
        }
    }
    used
}

/// One address per network of the service, or `None` if a network is full
/// or gone (the task is then not created, and the next pass retries).
fn attach(
    state: &ClusterState,
    service: &Service,
    used: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Option<Vec<NetworkAttachment>> {
    let mut out = Vec::new();
    for net_id in &service.spec.networks {
        let net = state.networks.get(net_id)?;
        let subnet: Ipv4Net = ipam::parse_net(net.subnet.as_deref()?)?;
        let gateway = match net.gateway {
            Some(std::net::IpAddr::V4(g)) => g,
            _ => ipam::gateway(subnet)?,
        };
        let taken = used.entry(net_id.clone()).or_default();
        let addr = ipam::next_address(subnet, gateway, taken)?;
        taken.insert(addr);
        out.push(NetworkAttachment {
            network_id: net_id.clone(),
            addresses: vec![format!("{addr}/{}", subnet.prefix)],
        });
    }
    Some(out)
}

fn new_task(
    service: &Service,
    slot: Option<u64>,
    node_id: Option<String>,
    networks: Vec<NetworkAttachment>,
    id: String,
    now: u64,
) -> Command {
    Command::CreateTask(Task {
        id,
        version: 0,
        service_id: service.id.clone(),
        slot,
        node_id,
        spec: service.spec.task.clone(),
        desired_state: TaskState::Running,
        state: TaskState::Pending,
        networks,
        status: TaskStatus {
            since_unix: now,
            message: "pending task scheduling".into(),
            ..TaskStatus::default()
        },
    })
}

/// Whether the restart policy wants a replacement for `ended` now, given
/// how many tasks of its slot already ended.
fn restart_due(service: &Service, ended: &Task, attempts: usize, now: u64) -> RestartDecision {
    let p = &service.spec.restart;
    let wanted = match p.condition {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => {
            matches!(ended.state, TaskState::Failed | TaskState::Rejected)
        }
        RestartCondition::None => false,
    };
    // A task shut down on purpose (drain, scale, node down) is always
    // replaced: the policy is about tasks that exited on their own.
    let on_purpose = ended.desired_state != TaskState::Running;
    if !on_purpose && !wanted {
        return RestartDecision::Never;
    }
    if !on_purpose && p.max_attempts.is_some_and(|max| attempts as u64 > max) {
        return RestartDecision::Never;
    }
    if !on_purpose && now < ended.status.since_unix + p.delay_secs {
        return RestartDecision::Later;
    }
    RestartDecision::Now
}

#[derive(Debug, PartialEq, Eq)]
enum RestartDecision {
    Now,
    Later,
    Never,
}

/// The commands that bring tasks in line with the services.
pub fn orchestrate(
    state: &ClusterState,
    now: u64,
    new_id: &mut impl FnMut() -> String,
) -> Vec<Command> {
    let mut out = Vec::new();
    let mut used = used_addresses(state);
    let nodes: Vec<&Node> = state.nodes.values().collect();
    for service in state.services.values() {
        let tasks: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id)
            .collect();
        // Live tasks on nodes that can no longer run them are stopped; the
        // slot is then refilled below.
        let mut stopping = BTreeSet::new();
        for t in tasks.iter().filter(|t| live(t)) {
            let Some(node_id) = &t.node_id else { continue };
            match state.nodes.get(node_id) {
                // Orphaned below; the slot is free now.
                None => {
                    stopping.insert(t.id.clone());
                }
                Some(n) => {
                    if let Some(why) = ineligible(n, service) {
                        out.push(shut_down(t, now, &why));
                        stopping.insert(t.id.clone());
                    }
                }
            }
        }
        let holding = |t: &&&Task| live(t) && !stopping.contains(&t.id);
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                for slot in 1..=replicas {
                    let in_slot: Vec<&&Task> =
                        tasks.iter().filter(|t| t.slot == Some(slot)).collect();
                    if in_slot.iter().any(holding) {
                        continue;
                    }
                    let last_ended = in_slot
                        .iter()
                        .filter(|t| ended(t.state))
                        .max_by_key(|t| (t.status.since_unix, t.version));
                    let attempts = in_slot
                        .iter()
                        .filter(|t| ended(t.state) && t.desired_state == TaskState::Running)
                        .count();
                    let decision = match last_ended {
                        Some(t) => restart_due(service, t, attempts, now),
                        None => RestartDecision::Now,
                    };
                    if decision == RestartDecision::Now
                        && let Some(networks) = attach(state, service, &mut used)
                    {
                        out.push(new_task(service, Some(slot), None, networks, new_id(), now));
                    }
                }
                for t in tasks.iter().filter(|t| holding(t)) {
                    if t.slot.is_some_and(|s| s > replicas) {
                        out.push(shut_down(t, now, "service scaled down"));
                    }
                }
            }
            ServiceMode::Global => {
                for node in nodes.iter().filter(|n| ineligible(n, service).is_none()) {
                    let on_node: Vec<&&Task> = tasks
                        .iter()
                        .filter(|t| t.node_id.as_deref() == Some(node.id.as_str()))
                        .collect();
                    if on_node.iter().any(holding) {
                        continue;
                    }
                    let attempts = on_node
                        .iter()
                        .filter(|t| ended(t.state) && t.desired_state == TaskState::Running)
                        .count();
                    let last_ended = on_node
                        .iter()
                        .filter(|t| ended(t.state))
                        .max_by_key(|t| (t.status.since_unix, t.version));
                    let decision = match last_ended {
                        Some(t) => restart_due(service, t, attempts, now),
                        None => RestartDecision::Now,
                    };
                    if decision == RestartDecision::Now
                        && let Some(networks) = attach(state, service, &mut used)
                    {
                        out.push(new_task(
                            service,
                            None,
                            Some(node.id.clone()),
                            networks,
                            new_id(),
                            now,
                        ));
                    }
                }
            }
        }
        out.extend(trim_history(&tasks));
    }
    // Tasks on a node removed from the swarm: no agent will ever report
    // them again, so they end here and their addresses go back to the pool.
    for t in state.tasks.values() {
        if !ended(t.state)
            && state.services.contains_key(&t.service_id)
            && t.node_id
                .as_ref()
                .is_some_and(|n| !state.nodes.contains_key(n))
        {
            out.push(update(t, |t| {
                t.desired_state = TaskState::Shutdown;
                t.state = TaskState::Orphaned;
                t.status = TaskStatus {
                    since_unix: now,
                    message: "node removed from the swarm".into(),
                    ..t.status.clone()
                };
            }));
        }
    }
    // Tasks whose service is gone.
    for t in state.tasks.values() {
        if !state.services.contains_key(&t.service_id) {
            out.push(Command::RemoveTask {
                id: t.id.clone(),
                expected_version: t.version,
            });
        }
    }
    out
}

/// Removes ended tasks beyond [`HISTORY`] per slot (or node). Tasks that
/// ended on their own keep `desired_state` Running: that is how the restart
/// policy counts attempts (so `--restart-max-attempts` above the history
/// limit is counted within the history only).
fn trim_history(tasks: &[&Task]) -> Vec<Command> {
    let mut by_slot: BTreeMap<(Option<u64>, Option<&str>), Vec<&Task>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| ended(t.state)) {
        let key = match t.slot {
            Some(s) => (Some(s), None),
            None => (None, t.node_id.as_deref()),
        };
        by_slot.entry(key).or_default().push(t);
    }
    let mut out = Vec::new();
    for (_, mut old) in by_slot {
        old.sort_by_key(|t| std::cmp::Reverse((t.status.since_unix, t.version)));
        for t in old.into_iter().skip(HISTORY) {
            out.push(Command::RemoveTask {
                id: t.id.clone(),
                expected_version: t.version,
            });
        }
    }
    out
}

/// Assigns pending tasks to nodes: eligible nodes only, fewest tasks of the
/// same service first, then fewest tasks overall, then by hostname.
pub fn schedule(state: &ClusterState, now: u64) -> Vec<Command> {
    let mut per_service: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for t in state.tasks.values().filter(|t| live(t)) {
        if let Some(n) = t.node_id.as_deref()
            && t.state >= TaskState::Assigned
        {
            *per_service.entry((t.service_id.as_str(), n)).or_default() += 1;
            *per_node.entry(n).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for t in state
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Pending && t.desired_state == TaskState::Running)
    {
        let Some(service) = state.services.get(&t.service_id) else {
            continue;
        };
        let mut refused = Vec::new();
        let mut best: Option<(usize, usize, &str, &str)> = None;
        for n in state.nodes.values() {
            if let Some(pinned) = &t.node_id
                && *pinned != n.id
            {
                continue;
            }
            if let Some(why) = ineligible(n, service) {
                refused.push(why);
                continue;
            }
            let key = (
                per_service
                    .get(&(service.id.as_str(), n.id.as_str()))
                    .copied()
                    .unwrap_or(0),
                per_node.get(n.id.as_str()).copied().unwrap_or(0),
                n.hostname.as_str(),
                n.id.as_str(),
            );
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, hostname, node_id)) => {
                *per_service
                    .entry((service.id.as_str(), node_id))
                    .or_default() += 1;
                *per_node.entry(node_id).or_default() += 1;
                let (node_id, hostname) = (node_id.to_owned(), hostname.to_owned());
                out.push(update(t, |t| {
                    t.node_id = Some(node_id);
                    t.state = TaskState::Assigned;
                    t.status = TaskStatus {
                        since_unix: now,
                        message: format!("assigned to {hostname}"),
                        ..TaskStatus::default()
                    };
                }));
            }
            None => {
                refused.sort();
                let err = if refused.is_empty() {
                    "no suitable node: the swarm has no nodes".to_owned()
                } else {
                    format!("no suitable node ({})", refused.join("; "))
                };
                if t.status.err != err {
                    out.push(update(t, |t| {
                        t.status.err = err;
                        t.status.since_unix = now;
                    }));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
