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
//!   It also gives each vip-mode service its VIPs, and replaces, one slot
//!   at a time, tasks whose network attachments a service update changed.
//! - [`schedule`]: pending tasks → nodes, spreading a service's tasks over
//!   the eligible nodes with the fewest of them, never two tasks that
//!   publish the same host-mode port on one node.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    constraint,
    ipam::{self, Ipv4Net},
    model::{
        Availability, ClusterState, Command, EndpointMode, NetworkAttachment, Node, NodeState,
        Protocol, Resources, RestartCondition, Service, ServiceMode, Task, TaskSpec, TaskState,
        TaskStatus, VirtualIp,
    },
    ports,
};

/// Ended tasks kept per slot for `service ps` (swarm's `--task-history-limit`).
pub const HISTORY: usize = 5;

mod update;
pub use update::next_wake;

fn ended(s: TaskState) -> bool {
    s >= TaskState::Complete
}

/// A task that holds its slot: wanted running and not ended.
fn live(t: &Task) -> bool {
    t.desired_state == TaskState::Running && !ended(t.state)
}

/// Why `node` cannot run `service`'s tasks, or `None` if it can.
pub fn ineligible(node: &Node, service: &Service) -> Option<String> {
    if let Some(why) = legacy(service) {
        return Some(why);
    }
    if node.status != NodeState::Ready {
        return Some(format!(
            "node {} is {}",
            node.hostname,
            crate::wire::word(node.status)
        ));
    }
    if node.availability != Availability::Active {
        return Some(format!(
            "node {} is {}",
            node.hostname,
            crate::wire::word(node.availability)
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

/// A service stored by a build with `--rootfs`: its tasks pivoted into a
/// directory tree, which this build cannot run. Running them from the
/// node's filesystem instead would run something else under its name, so
/// they are stopped and not placed, and the reason shows in `service ps`.
fn legacy(service: &Service) -> Option<String> {
    let tree = &service.spec.task.legacy_rootfs;
    (!tree.is_empty()).then(|| {
        format!(
            "service {} runs in directory tree {tree} (--rootfs), which this version no longer \
             supports; recreate it with an image, or `host` for the node's filesystem",
            service.spec.name
        )
    })
}

/// What a node has left for reservations: what it reported, less what its
/// tasks reserve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Free {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// Whether a task reserving `r` fits in `free` (swarmkit's resource
/// filter: reservations only; limits are not scheduled on).
pub fn fits(r: &Resources, free: Free) -> bool {
    r.reserve_nano_cpus <= free.nano_cpus && r.reserve_memory_bytes <= free.memory_bytes
}

/// Each node's resources less the reservations of the tasks it holds
/// (assigned and not ended, including tasks being stopped).
pub fn free_resources(state: &ClusterState) -> BTreeMap<&str, Free> {
    let mut free: BTreeMap<&str, Free> = state
        .nodes
        .values()
        .map(|n| {
            let f = Free {
                nano_cpus: n.resources.nano_cpus,
                memory_bytes: n.resources.memory_bytes,
            };
            (n.id.as_str(), f)
        })
        .collect();
    for t in state.tasks.values() {
        if let Some(n) = t.node_id.as_deref()
            && t.state >= TaskState::Assigned
            && !ended(t.state)
            && let Some(f) = free.get_mut(n)
        {
            take(f, &t.spec.resources);
        }
    }
    free
}

fn take(f: &mut Free, r: &Resources) {
    f.nano_cpus = f.nano_cpus.saturating_sub(r.reserve_nano_cpus);
    f.memory_bytes = f.memory_bytes.saturating_sub(r.reserve_memory_bytes);
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

/// The routing mesh's network, once the leader has made it.
fn ingress_id(state: &ClusterState) -> Option<&str> {
    state
        .networks
        .values()
        .find(|n| n.ingress)
        .map(|n| n.id.as_str())
}

/// The networks a service's tasks attach to, in order: `ingress` first
/// when it publishes ingress-mode ports, since the runtime routes by
/// default through the first attachment, and replies to outside clients
/// must leave through the mesh. `None` while that network does not exist.
pub fn task_networks(state: &ClusterState, service: &Service) -> Option<Vec<String>> {
    let mut out = Vec::new();
    // On the node's own network: no attachment, so no address and no VIP.
    if service.spec.task.network_host {
        return Some(out);
    }
    // A host-mode port needs an address to DNAT to: a task on no network of
    // its own gets one on ingress, as a docker task gets its bridge.
    let host_only = !service.endpoint.ports.is_empty() && service.spec.networks.is_empty();
    if ports::has_ingress(&service.endpoint.ports) || host_only {
        out.push(ingress_id(state)?.to_owned());
    }
    for n in &service.spec.networks {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Some(out)
}

/// The networks a service has a VIP on: those its tasks attach to, in
/// vip mode; none with dnsrr (names resolve to the tasks themselves).
fn vip_networks(state: &ClusterState, service: &Service) -> Vec<String> {
    match service.spec.endpoint.mode {
        EndpointMode::Dnsrr => Vec::new(),
        EndpointMode::Vip => {
            task_networks(state, service).unwrap_or_else(|| service.spec.networks.clone())
        }
    }
}

/// A network's subnet and gateway, if it has been allocated.
fn subnet_of(state: &ClusterState, net_id: &str) -> Option<(Ipv4Net, Ipv4Addr)> {
    let net = state.networks.get(net_id)?;
    let subnet: Ipv4Net = ipam::parse_net(net.subnet.as_deref()?)?;
    let gateway = match net.gateway {
        Some(std::net::IpAddr::V4(g)) => g,
        _ => ipam::gateway(subnet)?,
    };
    Some((subnet, gateway))
}

/// The lowest free address of a network, taken from `used`.
fn take_address(
    state: &ClusterState,
    net_id: &str,
    used: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Option<String> {
    let (subnet, gateway) = subnet_of(state, net_id)?;
    let taken = used.entry(net_id.to_owned()).or_default();
    let addr = ipam::next_address(subnet, gateway, taken)?;
    taken.insert(addr);
    Some(format!("{addr}/{}", subnet.prefix_len()))
}

/// One address per network the service's tasks need, or `None` if a
/// network is full or missing (the task is then not created, and the next
/// pass retries).
fn attach(
    state: &ClusterState,
    service: &Service,
    used: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Option<Vec<NetworkAttachment>> {
    let mut out = Vec::new();
    for net_id in task_networks(state, service)? {
        let addr = take_address(state, &net_id, used)?;
        out.push(NetworkAttachment {
            network_id: net_id,
            addresses: vec![addr],
        });
    }
    Some(out)
}

/// The service with the VIPs it needs, if they changed: VIPs it keeps (still wanted and
/// inside their network's subnet) and new ones for networks it lacks. VIPs
/// come out of `used` like task addresses, so neither is ever handed out
/// as the other.
fn allocate_vips(
    state: &ClusterState,
    service: &Service,
    used: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Option<Service> {
    let mut vips = Vec::new();
    for net_id in vip_networks(state, service) {
        let kept = service.endpoint.vips.iter().find(|v| {
            v.network_id == net_id
                && subnet_of(state, &net_id).is_some_and(|(subnet, _)| {
                    v.addr
                        .split('/')
                        .next()
                        .and_then(|a| a.parse().ok())
                        .is_some_and(|a| ipam::contains(subnet, a))
                })
        });
        if let Some(v) = kept {
            vips.push(v.clone());
        } else if let Some(addr) = take_address(state, &net_id, used) {
            vips.push(VirtualIp {
                network_id: net_id,
                addr,
            });
        }
        // A full network gets its VIP on a later pass.
    }
    if vips == service.endpoint.vips {
        return None;
    }
    let mut s = service.clone();
    s.endpoint.vips = vips;
    Some(s)
}

/// Whether a task's attachments are what its service needs now.
fn attached_as(t: &Task, networks: &[String]) -> bool {
    t.networks.len() == networks.len()
        && t.networks
            .iter()
            .zip(networks)
            .all(|(a, n)| a.network_id == *n)
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

/// Whether a slot (or a global service's node) with no live task gets a
/// new one now: at once if nothing ended there, else as the restart policy
/// says for its latest end.
fn slot_restart(service: &Service, in_slot: &[&&Task], now: u64) -> RestartDecision {
    let last_ended = in_slot
        .iter()
        .filter(|t| ended(t.state))
        .max_by_key(|t| (t.status.since_unix, t.version));
    let Some(last) = last_ended else {
        return RestartDecision::Now;
    };
    let p = &service.spec.restart;
    // swarmkit's restart supervisor decides when a task ends, counting the
    // restarts made within `window` before that moment; deciding from the
    // ended task's time keeps that answer on every later pass, so a slot
    // that used its attempts stays empty, as in swarm, instead of
    // restarting once the window has slid past.
    let window_start = (p.window_ns != 0).then(|| {
        last.status
            .since_unix
            .saturating_sub(p.window_ns.div_ceil(NANOS_PER_SEC))
    });
    let attempts = in_slot
        .iter()
        .filter(|t| ended(t.state) && t.desired_state == TaskState::Running)
        .filter(|t| {
            // An earlier end was restarted `delay` later: that restart is
            // what the window counts. The last end is always counted.
            (t.id == last.id && t.version == last.version)
                || window_start.is_none_or(|w| t.status.since_unix + p.delay_secs >= w)
        })
        .count();
    restart_due(service, last, attempts, now)
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

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

/// What the updater needs from the pass that runs it.
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a ClusterState,
    pub(crate) now_ms: u64,
    used: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    pub(crate) new_id: &'a mut dyn FnMut() -> String,
    pub(crate) data_path_port: u16,
}

impl Ctx<'_> {
    fn attach(&mut self, service: &Service) -> Option<Vec<NetworkAttachment>> {
        attach(self.state, service, &mut self.used)
    }

    fn stale_networks(&self, service: &Service, t: &Task) -> bool {
        task_networks(self.state, service).is_some_and(|n| !attached_as(t, &n))
    }
}

/// The commands that bring tasks in line with the services, `now` in unix
/// seconds (see [`orchestrate_at`]).
pub fn orchestrate(
    state: &ClusterState,
    now: u64,
    new_id: &mut impl FnMut() -> String,
) -> Vec<Command> {
    orchestrate_at(state, now.saturating_mul(1000), new_id)
}

/// The commands that bring tasks in line with the services, `now_ms` in
/// unix milliseconds (update delays are in milliseconds).
pub fn orchestrate_at(
    state: &ClusterState,
    now_ms: u64,
    new_id: &mut impl FnMut() -> String,
) -> Vec<Command> {
    let now = now_ms / 1000;
    let mut out = Vec::new();
    let nodes: Vec<&Node> = state.nodes.values().collect();
    let mut ctx = Ctx {
        state,
        now_ms,
        used: used_addresses(state),
        new_id,
        data_path_port: state
            .clusters
            .values()
            .next()
            .map_or(4789, |c| c.settings.data_path_port),
    };
    // One walk over the tasks, not one per service: at 1,000 services ×
    // 10 replicas the per-service filter was 10 million comparisons a pass.
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    // VIPs first: a VIP is never handed to a task created in this pass.
    let mut changed: BTreeMap<&str, Service> = BTreeMap::new();
    for service in state.services.values() {
        if let Some(s) = allocate_vips(state, service, &mut ctx.used) {
            changed.insert(service.id.as_str(), s);
        }
    }
    for stored in state.services.values() {
        // One service command per pass (VIPs and the updater's progress
        // together): two on one version would refuse the second.
        let mut svc = changed
            .remove(stored.id.as_str())
            .unwrap_or_else(|| stored.clone());
        let mut task_cmds = Vec::new();
        let service = stored;
        let needed = task_networks(state, service);
        let stale_networks = |t: &Task| needed.as_deref().is_some_and(|n| !attached_as(t, n));
        // Any change of the task spec (image, env, secrets, configs, …)
        // replaces the tasks, as swarm's updater does.
        let stale_spec = |t: &Task| {
            if t.spec == service.spec.task {
                return false;
            }
            // swarmkit's IsTaskDirty: once a task has its image (started,
            // not failed), new pull credentials alone are no change, so
            // `--with-registry-auth` on an unchanged spec restarts nothing.
            let pulled = t.desired_state <= TaskState::Running
                && (TaskState::Starting..=TaskState::Running).contains(&t.state);
            !(pulled
                && TaskSpec {
                    registry_auth: service.spec.task.registry_auth.clone(),
                    ..t.spec.clone()
                } == service.spec.task)
        };
        let stale = |t: &Task| stale_networks(t) || stale_spec(t);
        let tasks = by_service.remove(service.id.as_str()).unwrap_or_default();
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
                        task_cmds.push(shut_down(t, now, &why));
                        stopping.insert(t.id.clone());
                    }
                }
            }
        }
        let holding = |t: &&&Task| live(t) && !stopping.contains(&t.id);
        // The slots the service keeps, with the tasks holding them: the
        // updater replaces those whose tasks are stale.
        let mut slots: BTreeMap<update::SlotKey, Vec<&Task>> = BTreeMap::new();
        for t in tasks.iter().filter(|t| holding(t)) {
            let kept = match (&service.spec.mode, t.slot, &t.node_id) {
                (ServiceMode::Replicated { replicas }, Some(slot), _) => slot <= *replicas,
                (ServiceMode::Global, None, Some(n)) => state
                    .nodes
                    .get(n)
                    .is_some_and(|n| ineligible(n, service).is_none()),
                _ => false,
            };
            if kept {
                slots.entry(update::key(t)).or_default().push(t);
            }
        }
        update::step(&mut ctx, &mut svc, &slots, &stale, &mut task_cmds);
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                for slot in 1..=replicas {
                    let in_slot: Vec<&&Task> =
                        tasks.iter().filter(|t| t.slot == Some(slot)).collect();
                    if in_slot.iter().any(&holding) {
                        continue;
                    }
                    if slot_restart(service, &in_slot, now) == RestartDecision::Now
                        && let Some(networks) = ctx.attach(service)
                    {
                        task_cmds.push(new_task(
                            service,
                            Some(slot),
                            None,
                            networks,
                            (ctx.new_id)(),
                            now,
                        ));
                    }
                }
                for t in tasks.iter().filter(|t| holding(t)) {
                    if t.slot.is_some_and(|s| s > replicas) {
                        task_cmds.push(shut_down(t, now, "service scaled down"));
                    }
                }
            }
            ServiceMode::Global => {
                for node in nodes.iter().filter(|n| ineligible(n, service).is_none()) {
                    let on_node: Vec<&&Task> = tasks
                        .iter()
                        .filter(|t| t.node_id.as_deref() == Some(node.id.as_str()))
                        .collect();
                    if on_node.iter().any(&holding) {
                        continue;
                    }
                    // The node's task is started (again) when due.
                    if slot_restart(service, &on_node, now) == RestartDecision::Now
                        && let Some(networks) = ctx.attach(service)
                    {
                        task_cmds.push(new_task(
                            service,
                            None,
                            Some(node.id.clone()),
                            networks,
                            (ctx.new_id)(),
                            now,
                        ));
                    }
                }
            }
        }
        // The service first: the updater's record of the tasks it starts
        // lands before them.
        if svc != *stored {
            out.push(Command::UpdateService {
                id: stored.id.clone(),
                expected_version: stored.version,
                service: svc,
            });
        }
        out.extend(task_cmds);
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

/// Assigns pending tasks to nodes: eligible nodes only, none where a
/// host-mode port the task publishes is already bound, fewest tasks of the
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
    let host_ports = |service_id: &str| -> Vec<(u16, Protocol)> {
        state
            .services
            .get(service_id)
            .map(|s| ports::host_ports(&s.endpoint.ports).collect())
            .unwrap_or_default()
    };
    // A task being stopped still holds its ports until it has ended.
    let mut bound: BTreeMap<&str, BTreeSet<(u16, Protocol)>> = BTreeMap::new();
    for t in state.tasks.values() {
        if let Some(n) = t.node_id.as_deref()
            && t.state >= TaskState::Assigned
            && !ended(t.state)
        {
            bound
                .entry(n)
                .or_default()
                .extend(host_ports(&t.service_id));
        }
    }
    let mut free = free_resources(state);
    let mut out = Vec::new();
    for t in state
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Pending && t.desired_state == TaskState::Running)
    {
        let Some(service) = state.services.get(&t.service_id) else {
            continue;
        };
        let wants = host_ports(&service.id);
        // `--placement-pref spread=…`: the service's tasks per value of each
        // preference's key (nodes without one are a group of their own).
        let prefs: Vec<constraint::SpreadKey> = service
            .spec
            .placement_prefs
            .iter()
            .filter_map(|p| constraint::preference(p).ok())
            .collect();
        let groups: Vec<BTreeMap<Option<&str>, usize>> = prefs
            .iter()
            .map(|k| {
                let mut g: BTreeMap<Option<&str>, usize> = BTreeMap::new();
                for n in state.nodes.values() {
                    let c = per_service
                        .get(&(service.id.as_str(), n.id.as_str()))
                        .copied()
                        .unwrap_or(0);
                    *g.entry(k.value(n)).or_default() += c;
                }
                g
            })
            .collect();
        let mut refused = Vec::new();
        let mut busy: BTreeMap<(u16, Protocol), usize> = BTreeMap::new();
        let mut insufficient = 0usize;
        let mut maxed = 0usize;
        let mut best: Option<(Vec<usize>, usize, usize, &str, &str)> = None;
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
            if !fits(
                &t.spec.resources,
                free.get(n.id.as_str()).copied().unwrap_or_default(),
            ) {
                insufficient += 1;
                continue;
            }
            let on_node = bound.get(n.id.as_str());
            let clashing: Vec<&(u16, Protocol)> = wants
                .iter()
                .filter(|p| on_node.is_some_and(|b| b.contains(p)))
                .collect();
            if !clashing.is_empty() {
                for p in clashing {
                    *busy.entry(*p).or_default() += 1;
                }
                continue;
            }
            let here = per_service
                .get(&(service.id.as_str(), n.id.as_str()))
                .copied()
                .unwrap_or(0);
            // `--replicas-max-per-node`: swarmkit's last filter.
            let max = service.spec.max_replicas_per_node;
            if max != 0 && here as u64 >= max {
                maxed += 1;
                continue;
            }
            let spread: Vec<usize> = prefs
                .iter()
                .zip(&groups)
                .map(|(k, g)| g.get(&k.value(n)).copied().unwrap_or(0))
                .collect();
            let key = (
                spread,
                per_service
                    .get(&(service.id.as_str(), n.id.as_str()))
                    .copied()
                    .unwrap_or(0),
                per_node.get(n.id.as_str()).copied().unwrap_or(0),
                n.hostname.as_str(),
                n.id.as_str(),
            );
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, _, hostname, node_id)) => {
                *per_service
                    .entry((service.id.as_str(), node_id))
                    .or_default() += 1;
                *per_node.entry(node_id).or_default() += 1;
                bound
                    .entry(node_id)
                    .or_default()
                    .extend(wants.iter().copied());
                if let Some(f) = free.get_mut(node_id) {
                    take(f, &t.spec.resources);
                }
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
                refused.dedup();
                // swarmkit's words, its filters' order: resources, then ports.
                let mut reasons: Vec<String> = Vec::new();
                if insufficient > 0 {
                    reasons.push(format!(
                        "insufficient resources on {insufficient} node{}",
                        if insufficient == 1 { "" } else { "s" }
                    ));
                }
                reasons.extend(busy.iter().map(|((port, proto), nodes)| {
                    format!(
                        "host-mode port {port}/{proto} in use on {nodes} node{}",
                        if *nodes == 1 { "" } else { "s" }
                    )
                }));
                if maxed > 0 {
                    reasons.push("max replicas per node limit exceed".to_owned());
                }
                reasons.extend(refused);
                let err = if reasons.is_empty() {
                    "no suitable node: the swarm has no nodes".to_owned()
                } else {
                    format!("no suitable node ({})", reasons.join("; "))
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
