//! Services and tasks over the Control API, and the leader's reconcile pass
//! that runs the orchestrator and the scheduler.

use std::time::{SystemTime, UNIX_EPOCH};

use shoal_api::cluster::v1::{
    CreateServiceRequest, ListTasksRequest, RestartPolicy as ApiRestart, ScaleServiceRequest,
    ServiceRef, ServiceSummary, TaskSummary,
};
use shoal_ca::generate_node_id;

use super::{Manager, ManagerError};
use crate::{
    constraint,
    model::{
        ClusterState, Command, Endpoint, EndpointSpec, RestartCondition, RestartPolicy, Service,
        ServiceMode, ServiceSpec, TaskSpec, TaskState,
    },
    orchestrator, validate,
};

/// Attempts of a compare-and-set update that lost to a concurrent one.
const CAS_ATTEMPTS: usize = 10;

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn invalid(what: String) -> ManagerError {
    ManagerError::Invalid { what }
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn restart_api(p: &RestartPolicy) -> ApiRestart {
    ApiRestart {
        condition: lower(&p.condition),
        delay_secs: p.delay_secs,
        max_attempts: p.max_attempts.unwrap_or_default(),
    }
}

fn summary(state: &ClusterState, s: &Service) -> ServiceSummary {
    let running = state
        .tasks
        .values()
        .filter(|t| {
            t.service_id == s.id
                && t.state == TaskState::Running
                && t.desired_state == TaskState::Running
        })
        .count() as u64;
    let (mode, desired) = match s.spec.mode {
        ServiceMode::Replicated { replicas } => ("replicated", replicas),
        ServiceMode::Global => (
            "global",
            state
                .nodes
                .values()
                .filter(|n| orchestrator::ineligible(n, s).is_none())
                .count() as u64,
        ),
    };
    ServiceSummary {
        id: s.id.clone(),
        name: s.spec.name.clone(),
        mode: mode.into(),
        running,
        desired,
        args: s.spec.task.args.clone(),
        networks: s
            .spec
            .networks
            .iter()
            .map(|id| {
                state
                    .networks
                    .get(id)
                    .map_or(id.clone(), |n| n.name.clone())
            })
            .collect(),
        env: s.spec.task.env.clone(),
        constraints: s.spec.constraints.clone(),
        restart: Some(restart_api(&s.spec.restart)),
        labels: s.spec.labels.clone().into_iter().collect(),
        version: s.version,
        rootfs: s.spec.task.rootfs.clone(),
        endpoint_mode: String::new(),
        ports: Vec::new(),
        vips: Vec::new(),
    }
}

fn spec(state: &ClusterState, r: &CreateServiceRequest) -> Result<ServiceSpec, ManagerError> {
    validate::name("service name", &r.name)?;
    validate::labels("--label", &r.labels)?;
    if r.args.is_empty() || r.args[0].is_empty() {
        return Err(invalid(
            "no command given: put it after the options, e.g. `shoal service create --name web \
             -- python3 -m http.server 80`"
                .into(),
        ));
    }
    let mode = match r.mode.as_str() {
        "" | "replicated" => ServiceMode::Replicated {
            replicas: r.replicas,
        },
        "global" if r.replicas == 0 => ServiceMode::Global,
        "global" => {
            return Err(invalid(
                "--replicas can only be used with replicated mode".into(),
            ));
        }
        other => {
            return Err(invalid(format!(
                "--mode {other:?}: expected replicated or global"
            )));
        }
    };
    for e in &r.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
            _ => return Err(invalid(format!("--env {e:?}: expected KEY=VALUE"))),
        }
    }
    for c in &r.constraints {
        constraint::parse(c).map_err(|e| invalid(e.to_string()))?;
    }
    let mut networks = Vec::new();
    for n in &r.networks {
        let net = state
            .networks
            .get(n)
            .or_else(|| state.networks.values().find(|x| x.name == *n))
            .ok_or_else(|| ManagerError::NotFound {
                what: format!("--network {n}: network {n}; create it with 'shoal network create'"),
            })?;
        if net.ingress {
            return Err(invalid(format!(
                "--network {n}: the ingress network is the routing mesh's; attach to an overlay \
                 network you created"
            )));
        }
        if !networks.contains(&net.id) {
            networks.push(net.id.clone());
        }
    }
    let restart = match &r.restart {
        None => RestartPolicy {
            delay_secs: 5,
            ..RestartPolicy::default()
        },
        Some(p) => RestartPolicy {
            condition: match p.condition.as_str() {
                "" | "any" => RestartCondition::Any,
                "on-failure" => RestartCondition::OnFailure,
                "none" => RestartCondition::None,
                other => {
                    return Err(invalid(format!(
                        "--restart-condition {other:?}: expected any, on-failure or none"
                    )));
                }
            },
            delay_secs: p.delay_secs,
            max_attempts: (p.max_attempts != 0).then_some(p.max_attempts),
        },
    };
    Ok(ServiceSpec {
        name: r.name.clone(),
        labels: r.labels.clone().into_iter().collect(),
        mode,
        task: TaskSpec {
            rootfs: rootfs(&r.rootfs)?,
            args: r.args.clone(),
            env: r.env.clone(),
        },
        endpoint: EndpointSpec::default(),
        networks,
        secrets: Vec::new(),
        constraints: r.constraints.clone(),
        restart,
    })
}

/// `--rootfs`: an absolute directory path on the nodes (checked there).
fn rootfs(given: &str) -> Result<String, ManagerError> {
    let given = given.trim();
    if given.is_empty() {
        return Ok(String::new());
    }
    if !given.starts_with('/') || given.contains('\0') || given == "/" {
        return Err(invalid(format!(
            "--rootfs {given:?}: give the absolute path of a directory tree on the nodes \
             (not /; leave it out to use the node's filesystem)"
        )));
    }
    Ok(given.to_owned())
}

pub(super) async fn create(
    m: &Manager,
    r: CreateServiceRequest,
) -> Result<ServiceSummary, ManagerError> {
    let spec = spec(&*m.read().await?, &r)?;
    let id = generate_node_id();
    m.propose(Command::CreateService(Service {
        id: id.clone(),
        version: 0,
        spec,
        previous_spec: None,
        endpoint: Endpoint::default(),
    }))
    .await?;
    let state = m.read().await?;
    Ok(summary(&state, super::lookup::<Service>(&state, &id)?))
}

pub(super) async fn list(m: &Manager) -> Result<Vec<ServiceSummary>, ManagerError> {
    let state = m.read().await?;
    Ok(state
        .services
        .values()
        .map(|s| summary(&state, s))
        .collect())
}

pub(super) async fn inspect(m: &Manager, r: &ServiceRef) -> Result<ServiceSummary, ManagerError> {
    let state = m.read().await?;
    Ok(summary(
        &state,
        super::lookup::<Service>(&state, &r.service)?,
    ))
}

pub(super) async fn scale(
    m: &Manager,
    r: &ScaleServiceRequest,
) -> Result<ServiceSummary, ManagerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut s = super::lookup::<Service>(&*m.read().await?, &r.service)?.clone();
        if s.spec.mode == ServiceMode::Global {
            return Err(invalid(format!(
                "service {} is global: scale can only be used with replicated mode",
                s.spec.name
            )));
        }
        s.previous_spec = Some(s.spec.clone());
        s.spec.mode = ServiceMode::Replicated {
            replicas: r.replicas,
        };
        let (id, version) = (s.id.clone(), s.version);
        match m
            .propose(Command::UpdateService {
                id: id.clone(),
                expected_version: version,
                service: s,
            })
            .await
        {
            Ok(_) => {
                let state = m.read().await?;
                return Ok(summary(&state, super::lookup::<Service>(&state, &id)?));
            }
            Err(ManagerError::Rejected(crate::model::ApplyError::VersionMismatch { .. }))
                if attempt < CAS_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

/// Removes the service; its tasks go with it (the orchestrator removes
/// tasks of a missing service, and agents stop what they no longer hold).
pub(super) async fn remove(m: &Manager, r: &ServiceRef) -> Result<String, ManagerError> {
    let (id, version) = {
        let state = m.read().await?;
        let s = super::lookup::<Service>(&state, &r.service)?;
        (s.id.clone(), s.version)
    };
    m.propose(Command::RemoveService {
        id: id.clone(),
        expected_version: version,
    })
    .await?;
    Ok(id)
}

pub(super) async fn tasks(
    m: &Manager,
    r: &ListTasksRequest,
) -> Result<Vec<TaskSummary>, ManagerError> {
    let state = m.read().await?;
    let only = match r.service.as_str() {
        "" => None,
        key => Some(super::lookup::<Service>(&state, key)?.id.clone()),
    };
    Ok(state
        .tasks
        .values()
        .filter(|t| only.as_ref().is_none_or(|id| *id == t.service_id))
        .map(|t| {
            let service = state
                .services
                .get(&t.service_id)
                .map_or(t.service_id.clone(), |s| s.spec.name.clone());
            let node = t.node_id.as_ref().and_then(|n| state.nodes.get(n));
            let name = crate::dispatch::task_name(&state, t);
            // A task that ended on its own is not wanted any more either.
            let desired = if t.state >= TaskState::Complete {
                TaskState::Shutdown
            } else {
                t.desired_state
            };
            TaskSummary {
                id: t.id.clone(),
                name,
                service,
                slot: t.slot.unwrap_or_default(),
                node_id: t.node_id.clone().unwrap_or_default(),
                node: node.map(|n| n.hostname.clone()).unwrap_or_default(),
                desired_state: lower(&desired),
                state: lower(&t.state),
                since_unix: t.status.since_unix,
                message: t.status.message.clone(),
                err: t.status.err.clone(),
                addresses: t
                    .networks
                    .iter()
                    .flat_map(|n| n.addresses.clone())
                    .collect(),
            }
        })
        .collect())
}

/// One pass of the leader's reconcilers. Commands refused because the state
/// moved on are dropped: the next pass plans again from the newer state.
pub(super) async fn reconcile(m: &Manager) {
    let now = now_unix();
    let plan = orchestrator::orchestrate(&*m.local_state().await, now, &mut generate_node_id);
    for cmd in plan {
        if let Err(e) = m.propose(cmd).await {
            tracing::debug!(error = %e, "orchestrator command refused");
        }
    }
    let plan = orchestrator::schedule(&*m.local_state().await, now);
    for cmd in plan {
        if let Err(e) = m.propose(cmd).await {
            tracing::debug!(error = %e, "scheduler command refused");
        }
    }
}
