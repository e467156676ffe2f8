//! Services and tasks over the Control API, and the leader's reconcile pass
//! that runs the orchestrator and the scheduler.

use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use shoal_api::cluster::v1::{
    Aliases, CreateServiceRequest, FileReference, ListTasksRequest, ScaleServiceRequest,
    ServiceRef, ServiceSummary, TaskSummary, UpdateServiceRequest,
};
use shoal_api::reference::Reference;
use shoal_ca::generate_node_id;

use super::{Manager, ManagerError};
use crate::{
    constraint,
    model::{
        ApplyError, ClusterState, Command, Config, DEFAULT_FILE_MODE, Endpoint, EndpointMode,
        EndpointSpec, FileRef, HOST_IMAGE, Kind, Network, PortConfig, RestartCondition,
        RestartPolicy, Secret, Service, ServiceMode, ServiceSpec, TaskSpec, TaskState,
        UpdateConfig, UpdateState, UpdateStatus,
    },
    orchestrator, ports,
    validate::{self, FileKind},
    wire,
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
    let (mode, desired) = match wire::service_mode(&s.spec.mode) {
        (mode, _) if s.spec.mode == ServiceMode::Global => (
            mode,
            state
                .nodes
                .values()
                .filter(|n| orchestrator::ineligible(n, s).is_none())
                .count() as u64,
        ),
        replicated => replicated,
    };
    let (container, resources) = wire::container(&s.spec.task);
    ServiceSummary {
        network_aliases: s
            .spec
            .network_aliases
            .iter()
            .map(|(id, aliases)| {
                let name = state
                    .networks
                    .get(id)
                    .map_or(id.clone(), |n| n.name.clone());
                (
                    name,
                    Aliases {
                        aliases: aliases.clone(),
                    },
                )
            })
            .collect(),
        max_replicas_per_node: s.spec.max_replicas_per_node,
        id: s.id.clone(),
        name: s.spec.name.clone(),
        mode,
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
        restart: Some(wire::restart(&s.spec.restart)),
        labels: s.spec.labels.clone().into_iter().collect(),
        version: s.version,
        endpoint_mode: wire::encode(s.spec.endpoint.mode),
        ports: s.endpoint.ports.iter().map(wire::port).collect(),
        vips: wire::vips(state, &s.endpoint.vips),
        container: Some(container),
        resources: Some(resources),
        legacy_rootfs: s.spec.task.legacy_rootfs.clone(),
        warnings: Vec::new(),
        update_config: Some(wire::update_config(&s.spec.update)),
        rollback_config: Some(wire::update_config(&s.spec.rollback)),
        placement_prefs: s.spec.placement_prefs.clone(),
        update_status: s.update_status.as_ref().map(wire::update_status),
        previous_spec: s.previous_spec.as_ref().map(|p| {
            let previous = Service {
                spec: p.clone(),
                previous_spec: None,
                update_status: None,
                ..s.clone()
            };
            Box::new(summary(state, &previous))
        }),
    }
}

impl From<validate::PolicyError> for ManagerError {
    fn from(e: validate::PolicyError) -> Self {
        ManagerError::Validation(e.into())
    }
}

impl From<constraint::PreferenceError> for ManagerError {
    fn from(e: constraint::PreferenceError) -> Self {
        invalid(e.to_string())
    }
}

/// Checks what `service create` and `service update` share beyond the
/// container: policies, healthcheck, placement preferences.
fn check_policies(spec: &ServiceSpec) -> Result<(), ManagerError> {
    validate::update_config("--update", &spec.update)?;
    validate::update_config("--rollback", &spec.rollback)?;
    if let Some(h) = &spec.task.healthcheck {
        validate::healthcheck(h)?;
    }
    for p in &spec.placement_prefs {
        constraint::preference(p)?;
    }
    Ok(())
}

impl From<validate::HostNetworkError> for ManagerError {
    fn from(e: validate::HostNetworkError) -> Self {
        invalid(e.to_string())
    }
}

impl From<ports::PortError> for ManagerError {
    fn from(e: ports::PortError) -> Self {
        invalid(e.to_string())
    }
}

/// The cluster's VXLAN port, which nothing may publish.
fn data_path_port(state: &ClusterState) -> u16 {
    state
        .clusters
        .values()
        .next()
        .map_or(4789, |c| c.settings.data_path_port)
}

/// Ports of a service as stored: the spec keeps them as asked (published
/// `None` = chosen), the endpoint as allocated, index for index.
struct Published {
    asked: Vec<PortConfig>,
    allocated: Vec<PortConfig>,
}

/// What `service create` stores, and the warning for the operator, if any.
struct Created {
    spec: ServiceSpec,
    published: Published,
    warning: Option<String>,
}

/// Pins the image to the digest the catalogue resolves it to, as swarm
/// records `image@sha256:…` at create time; the warning is swarm's when the
/// image is unknown.
fn pin(
    state: &ClusterState,
    mut task: TaskSpec,
    from_registry: Option<&str>,
) -> (TaskSpec, Option<String>) {
    if task.image == HOST_IMAGE {
        return (task, None);
    }
    let Ok(reference) = Reference::parse(&task.image).map(Reference::with_default_tag) else {
        return (task, None);
    };
    if let Some(digest) = &reference.digest {
        task.image_digest = digest.clone();
        return (task, None);
    }
    match state.resolve_image(&reference.to_string()) {
        Some((digest, _)) => {
            task.image_digest = digest.to_owned();
            (task, None)
        }
        None if from_registry.is_some() => {
            task.image_digest = from_registry.unwrap_or_default().to_owned();
            (task, None)
        }
        None => {
            let image = &task.image;
            let warning = format!(
                "image {image} could not be accessed on a registry to record\nits digest. Each \
                 node will access {image} independently,\npossibly leading to different nodes \
                 running different\nversions of the image.\n"
            );
            (task, Some(warning))
        }
    }
}

/// A `--secret`/`--config` reference resolved against the stored objects
/// (by id, name or id prefix, as docker resolves them), defaults filled:
/// a secret's target is its name (under /run/secrets), a config's
/// `/<name>`; mode 0444, owner root.
fn resolve_file(
    state: &ClusterState,
    kind: FileKind,
    r: &FileReference,
) -> Result<FileRef, ManagerError> {
    let source = r.source.trim();
    if source.is_empty() {
        return Err(invalid(format!(
            "{}: the source is missing; give source=NAME",
            kind.flag()
        )));
    }
    let missing = |e| match e {
        ManagerError::NotFound { .. } => ManagerError::NoSuchFile {
            kind: match kind {
                FileKind::Secret => Kind::Secret,
                FileKind::Config => Kind::Config,
            },
            name: source.to_owned(),
        },
        other => other,
    };
    let (id, name) = match kind {
        FileKind::Secret => super::lookup::<Secret>(state, source)
            .map(|s| (s.id.clone(), s.name.clone()))
            .map_err(missing)?,
        FileKind::Config => super::lookup::<Config>(state, source)
            .map(|c| (c.id.clone(), c.name.clone()))
            .map_err(missing)?,
    };
    let target = match (r.target.is_empty(), kind) {
        (false, _) => r.target.clone(),
        (true, FileKind::Secret) => name.clone(),
        (true, FileKind::Config) => format!("/{name}"),
    };
    Ok(FileRef {
        id,
        name,
        target,
        uid: r.uid,
        gid: r.gid,
        mode: if r.mode == 0 {
            DEFAULT_FILE_MODE
        } else {
            r.mode
        },
    })
}

fn resolve_files(
    state: &ClusterState,
    kind: FileKind,
    refs: &[FileReference],
) -> Result<Vec<FileRef>, ManagerError> {
    refs.iter().map(|r| resolve_file(state, kind, r)).collect()
}

/// `--secret-rm`/`--config-rm`: each of `rm` (name, id or target) must
/// match a reference of the service; all that match go.
fn remove_files(
    kind: FileKind,
    refs: &mut Vec<FileRef>,
    rm: &[String],
) -> Result<(), ManagerError> {
    for key in rm {
        let before = refs.len();
        refs.retain(|r| r.name != *key && r.id != *key && r.target != *key && r.path() != *key);
        if refs.len() == before {
            return Err(invalid(format!(
                "{}-rm {key}: the service has no {} {key} (it has: {}); give a name, id or \
                 target it uses",
                kind.flag(),
                kind.word(),
                if before == 0 {
                    "none".to_owned()
                } else {
                    refs.iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
fn spec(state: &ClusterState, r: &CreateServiceRequest) -> Result<Created, ManagerError> {
    spec_with(state, r, None, None)
}

/// [`spec`], with the digest the image's registry gave for it, if asked.
///
/// `owner`: the service whose spec this replaces (a whole-spec update),
/// whose published ports it keeps where they still match.
fn spec_with(
    state: &ClusterState,
    r: &CreateServiceRequest,
    from_registry: Option<&str>,
    owner: Option<&Service>,
) -> Result<Created, ManagerError> {
    validate::name("service name", &r.name)?;
    validate::labels("--label", &r.labels)?;
    let mut task = wire::task_spec(&r.args, &r.env, r.container.as_ref(), r.resources.as_ref())?;
    if let Some(c) = &r.container {
        task.secrets = resolve_files(state, FileKind::Secret, &c.secrets)?;
        task.configs = resolve_files(state, FileKind::Config, &c.configs)?;
    }
    validate::file_refs(&task.secrets, &task.configs)?;
    let (task, warning) = pin(state, validate::container(task)?, from_registry);
    if task.image == HOST_IMAGE
        && r.args.first().is_none_or(String::is_empty)
        && task.entrypoint.as_ref().is_none_or(|e| e.is_empty())
    {
        return Err(invalid(
            "IMAGE host: the node's filesystem has no default command; give one after it, e.g. \
             `shoal service create --name web host /usr/bin/python3 -m http.server 80`"
                .into(),
        ));
    }
    let mode = wire::decode_service_mode(r.mode, r.replicas)?;
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
            condition: wire::decode_or(
                || "restart.condition".into(),
                p.condition,
                RestartCondition::Any,
            )?,
            delay_secs: p.delay_secs,
            max_attempts: (p.max_attempts != 0).then_some(p.max_attempts),
            window_ns: p.window_ns,
        },
    };
    let network_aliases = aliases(state, &networks, &r.network_aliases, "--network")?;
    if r.max_replicas_per_node != 0 && mode == ServiceMode::Global {
        return Err(invalid(
            "--replicas-max-per-node can only be used with replicated mode".into(),
        ));
    }
    let endpoint_mode = wire::decode_or(
        || "endpoint_mode".into(),
        r.endpoint_mode,
        EndpointMode::Vip,
    )?;
    let asked = r
        .ports
        .iter()
        .map(|p| ports::parse("--publish", p, false).map(|c| ("--publish".to_owned(), c)))
        .collect::<Result<Vec<_>, _>>()?;
    let owner_id = owner.map_or("", |s| s.id.as_str());
    // Checked as new ports (each request is checked whole), then, for a
    // replaced spec, given back the numbers the service already holds.
    let fresh = ports::allocate(
        state,
        owner_id,
        endpoint_mode,
        &[],
        &asked,
        data_path_port(state),
    )?;
    let asked: Vec<PortConfig> = asked.into_iter().map(|(_, p)| p).collect();
    let allocated = match owner {
        None => fresh,
        Some(s) => ports::reallocate(
            state,
            &s.id,
            endpoint_mode,
            &asked,
            &s.endpoint.ports,
            data_path_port(state),
        )?,
    };
    let mut update = UpdateConfig::default();
    if let Some(u) = &r.update_config {
        wire::apply_update_config(&mut update, u, "--update")?;
    }
    let mut rollback = UpdateConfig::default();
    if let Some(u) = &r.rollback_config {
        wire::apply_update_config(&mut rollback, u, "--rollback")?;
    }
    let spec = ServiceSpec {
        name: r.name.clone(),
        labels: r.labels.clone().into_iter().collect(),
        mode,
        task,
        endpoint: EndpointSpec {
            mode: endpoint_mode,
            ports: asked.clone(),
        },
        networks,
        constraints: r.constraints.clone(),
        restart,
        update,
        rollback,
        placement_prefs: r.placement_prefs.clone(),
        network_aliases,
        max_replicas_per_node: r.max_replicas_per_node,
    };
    check_policies(&spec)?;
    validate::host_network(&spec, &r.networks)?;
    Ok(Created {
        spec,
        published: Published { asked, allocated },
        warning,
    })
}

/// The network a request names (id or name).
fn network_named<'a>(state: &'a ClusterState, n: &str) -> Option<&'a Network> {
    state
        .networks
        .get(n)
        .or_else(|| state.networks.values().find(|x| x.name == *n))
}

/// `--network name=N,alias=A`'s aliases keyed by network id; each network
/// must be one the service attaches to (`networks`, ids), each alias a DNS
/// name.
fn aliases(
    state: &ClusterState,
    networks: &[String],
    given: &std::collections::HashMap<String, Aliases>,
    flag: &str,
) -> Result<BTreeMap<String, Vec<String>>, ManagerError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, a) in given {
        if a.aliases.is_empty() {
            continue;
        }
        let id = network_named(state, n)
            .map(|net| net.id.clone())
            .filter(|id| networks.contains(id))
            .ok_or_else(|| {
                invalid(format!(
                    "{flag} name={n},alias=…: the service is not attached to network {n}; \
                     give the alias with the network it attaches to"
                ))
            })?;
        let list = out.entry(id).or_default();
        for alias in &a.aliases {
            let alias = alias.trim();
            if !alias_ok(alias) {
                return Err(invalid(format!(
                    "{flag} name={n},alias={alias}: an alias is a DNS name: letters, digits, \
                     '-', '_' and '.', up to 253 characters"
                )));
            }
            if !list.iter().any(|x| x == alias) {
                list.push(alias.to_owned());
            }
        }
    }
    Ok(out)
}

fn alias_ok(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 253
        && !a.starts_with('.')
        && !a.ends_with('.')
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A service as created: no previous spec, its VIPs still to come.
fn new_service(id: String, spec: ServiceSpec, ports: Vec<PortConfig>) -> Service {
    Service {
        id,
        version: 0,
        spec,
        previous_spec: None,
        endpoint: Endpoint {
            vips: Vec::new(),
            ports,
        },
        update_status: None,
    }
}

pub(super) async fn create(
    m: &Manager,
    r: CreateServiceRequest,
) -> Result<ServiceSummary, ManagerError> {
    let id = generate_node_id();
    let from_registry = match &r.container {
        Some(c) => registry_digest(m, &c.image, &c.registry_auth).await?,
        None => None,
    };
    let mut attempt = 0;
    let (applied, warning) = loop {
        attempt += 1;
        let created = spec_with(&*m.read().await?, &r, from_registry.as_deref(), None)?;
        match m
            .propose(Command::CreateService(new_service(
                id.clone(),
                created.spec,
                created.published.allocated,
            )))
            .await
        {
            Ok(applied) => break (applied, created.warning),
            // Another service took a port after we read the state: checking
            // again from the newer state names it (or picks another free one).
            Err(ManagerError::Rejected(ApplyError::PortInUse { .. })) if attempt < CAS_ATTEMPTS => {
            }
            Err(e) => return Err(e),
        }
    };
    let state = m.after(&applied).await?;
    let mut reply = summary(&state, super::lookup::<Service>(&state, &id)?);
    reply.warnings.extend(warning);
    Ok(reply)
}

/// The digest the image's registry gives now, when the catalogue does not
/// know the image (none for `host`, a pinned reference, or no resolver).
async fn registry_digest(
    m: &Manager,
    image: &str,
    registry_auth: &str,
) -> Result<Option<String>, ManagerError> {
    let Some(resolve) = &m.resolve_image else {
        return Ok(None);
    };
    let image = image.trim();
    if image == HOST_IMAGE || image.is_empty() {
        return Ok(None);
    }
    let Ok(reference) = Reference::parse(image).map(Reference::with_default_tag) else {
        return Ok(None);
    };
    if reference.digest.is_some()
        || m.read()
            .await?
            .resolve_image(&reference.to_string())
            .is_some()
    {
        return Ok(None);
    }
    Ok(resolve(reference.to_string(), registry_auth.to_owned()).await)
}

/// The service with `r`'s changes, checked as `service create` checks.
#[cfg(test)]
fn updated(state: &ClusterState, r: &UpdateServiceRequest) -> Result<Service, ManagerError> {
    updated_at(state, r, None, 0)
}

/// [`updated`], with the digest the image's registry gave for a new
/// `--image`, and the time a rollback starts at.
fn updated_at(
    state: &ClusterState,
    r: &UpdateServiceRequest,
    from_registry: Option<&str>,
    now: u64,
) -> Result<Service, ManagerError> {
    let mut s = super::lookup::<Service>(state, &r.service)?.clone();
    if r.version != 0 && r.version != s.version {
        return Err(ManagerError::Precondition {
            what: format!(
                "update out of sequence: service {} is at version {}, not {}; it changed since \
                 it was read: inspect it again and retry",
                s.spec.name, s.version, r.version
            ),
        });
    }
    if r.rollback {
        return rolled_back(state, s, r, now);
    }
    if let Some(spec) = &r.spec {
        return replaced(state, s, r, spec, from_registry);
    }
    let mut current = Published {
        asked: s.spec.endpoint.ports.clone(),
        allocated: s.endpoint.ports.clone(),
    };
    // Older stores, or a spec edited without its allocation: start afresh
    // from what was allocated, which is what runs.
    if current.asked.len() != current.allocated.len() {
        current.asked = current.allocated.clone();
    }
    for rm in &r.publish_rm {
        let wanted = ports::parse("--publish-rm", rm, true)?;
        let before = current.allocated.len();
        let mut i = 0;
        while i < current.allocated.len() {
            if ports::matches_removal(&current.allocated[i], &wanted) {
                current.allocated.remove(i);
                current.asked.remove(i);
            } else {
                i += 1;
            }
        }
        if current.allocated.len() == before {
            return Err(ports::PortError {
                flag: match wanted.published_port {
                    Some(n) => format!("--publish-rm {n}/{}", wanted.protocol),
                    None => format!("--publish-rm {}", ports::Shown(&wanted)),
                },
                problem: ports::PortProblem::NotPublished {
                    published: s.endpoint.ports.clone(),
                },
            }
            .into());
        }
    }
    let mut added = Vec::new();
    for p in &r.publish_add {
        let p = ports::parse("--publish-add", p, false)?;
        // docker's --publish-add of a published port the service already
        // has replaces it (a new target, protocol kept).
        if let Some(n) = p.published_port {
            while let Some(i) = current
                .allocated
                .iter()
                .position(|a| a.published_port == Some(n) && a.protocol == p.protocol)
            {
                current.allocated.remove(i);
                current.asked.remove(i);
            }
        }
        added.push(("--publish-add".to_owned(), p));
    }
    let allocated = ports::allocate(
        state,
        &s.id,
        s.spec.endpoint.mode,
        &current.allocated,
        &added,
        data_path_port(state),
    )?;
    s.previous_spec = Some(s.spec.clone());
    current.asked.extend(added.into_iter().map(|(_, p)| p));
    current.allocated.extend(allocated);
    s.spec.endpoint.ports = current.asked;
    s.endpoint.ports = current.allocated;
    // Removals first, so that `--secret-rm old --secret-add
    // source=new,target=same` rotates a secret in one update.
    let task = &mut s.spec.task;
    remove_files(FileKind::Secret, &mut task.secrets, &r.secret_rm)?;
    remove_files(FileKind::Config, &mut task.configs, &r.config_rm)?;
    task.secrets
        .extend(resolve_files(state, FileKind::Secret, &r.secret_add)?);
    task.configs
        .extend(resolve_files(state, FileKind::Config, &r.config_add)?);
    validate::file_refs(&task.secrets, &task.configs)?;
    spec_delta(state, &mut s.spec, r)?;
    if r.image.is_some() {
        let (task, _) = pin(state, s.spec.task.clone(), from_registry);
        s.spec.task = task;
    }
    check_policies(&s.spec)?;
    let names: Vec<String> = (s.spec.networks.iter())
        .map(|id| {
            state
                .networks
                .get(id)
                .map_or(id.clone(), |n| n.name.clone())
        })
        .collect();
    validate::host_network(&s.spec, &names)?;
    // docker: any update clears the status, which also restarts a paused
    // update.
    s.update_status = None;
    Ok(s)
}

/// A whole-spec update (`stack deploy`, the Engine API): `new` checked as
/// `service create` checks it, in place of the service's spec. What docker
/// keeps is kept: the name and mode (changing them is refused), the
/// published ports that still match, the registry credentials when none
/// are given, the force-update counter unless given, and the pinned digest
/// of an unchanged image no registry could resolve now. So an identical
/// spec leaves the task spec as it was, and no task is replaced.
fn replaced(
    state: &ClusterState,
    mut s: Service,
    r: &UpdateServiceRequest,
    new: &CreateServiceRequest,
    from_registry: Option<&str>,
) -> Result<Service, ManagerError> {
    let alone = UpdateServiceRequest {
        service: r.service.clone(),
        version: r.version,
        force: r.force,
        spec: r.spec.clone(),
        ..UpdateServiceRequest::default()
    };
    if *r != alone {
        return Err(invalid(
            "spec: a whole-spec update replaces the service's spec; give no other change with \
             it (only version and force), or send the changes alone"
                .into(),
        ));
    }
    if new.name != s.spec.name {
        return Err(invalid(format!(
            "spec.name {:?}: renaming services is not supported; the spec must keep the name \
             {:?} (create a new service, then remove this one)",
            new.name, s.spec.name
        )));
    }
    let created = spec_with(state, new, from_registry, Some(&s))?;
    let mut spec = created.spec;
    if std::mem::discriminant(&spec.mode) != std::mem::discriminant(&s.spec.mode) {
        return Err(invalid(format!(
            "spec.mode: service mode change is not allowed (service {} is {}); remove the \
             service and create it again in the other mode",
            s.spec.name,
            match s.spec.mode {
                ServiceMode::Global => "global",
                ServiceMode::Replicated { .. } => "replicated",
            }
        )));
    }
    let old = &s.spec.task;
    let task = &mut spec.task;
    if task.registry_auth.is_empty() {
        task.registry_auth = old.registry_auth.clone();
    }
    if task.image_digest.is_empty() && task.image == old.image {
        task.image_digest = old.image_digest.clone();
    }
    task.force_update = match new.container.as_ref().map_or(0, |c| c.force_update) {
        0 => old.force_update,
        given => given,
    };
    if r.force {
        task.force_update = task.force_update.wrapping_add(1);
    }
    s.previous_spec = Some(std::mem::replace(&mut s.spec, spec));
    s.endpoint.ports = created.published.allocated;
    s.update_status = None;
    Ok(s)
}

/// `service rollback`: the previous spec comes back and the current one
/// becomes the previous (docker's swap), rolled out with the rollback
/// config.
fn rolled_back(
    state: &ClusterState,
    mut s: Service,
    r: &UpdateServiceRequest,
    now: u64,
) -> Result<Service, ManagerError> {
    let alone = UpdateServiceRequest {
        service: r.service.clone(),
        version: r.version,
        rollback: true,
        ..UpdateServiceRequest::default()
    };
    if *r != alone {
        return Err(invalid(
            "--rollback: nothing else may be changed with a rollback; roll back first, then \
             update"
                .into(),
        ));
    }
    let Some(previous) = s.previous_spec.take() else {
        return Err(ManagerError::Precondition {
            what: format!("service {} does not have a previous spec", s.id),
        });
    };
    let ports = ports::reallocate(
        state,
        &s.id,
        previous.endpoint.mode,
        &previous.endpoint.ports,
        &s.endpoint.ports,
        data_path_port(state),
    )?;
    s.previous_spec = Some(std::mem::replace(&mut s.spec, previous));
    s.endpoint.ports = ports;
    s.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_unix: now,
        completed_unix: 0,
        message: "manually requested rollback".into(),
        progress: Default::default(),
    });
    Ok(s)
}

/// Removes from `list` the items `key` matches with any of `rm`.
fn remove_by<T>(list: &mut Vec<T>, rm: &[String], key: impl Fn(&T) -> &str) {
    list.retain(|x| !rm.iter().any(|r| r == key(x)));
}

/// The rest of `service update`'s delta: the task template, labels,
/// placement, mode, restart and update policies. Removals before
/// additions, as docker.
fn spec_delta(
    state: &ClusterState,
    spec: &mut ServiceSpec,
    r: &UpdateServiceRequest,
) -> Result<(), ManagerError> {
    let task = &mut spec.task;
    if let Some(image) = &r.image {
        task.image = image.trim().to_owned();
        task.image_digest.clear();
    }
    if let Some(a) = &r.args {
        task.args = a.args.clone();
    }
    if let Some(e) = &r.entrypoint {
        task.entrypoint = Some(e.args.clone());
    }
    let env_key = |e: &String| e.split_once('=').map_or(e.clone(), |(k, _)| k.to_owned());
    task.env
        .retain(|e| !r.env_rm.contains(&env_key(e)) && !r.env_rm.contains(e));
    for e in &r.env_add {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
            _ => return Err(invalid(format!("--env-add {e:?}: expected KEY=VALUE"))),
        }
        let key = env_key(e);
        task.env.retain(|x| env_key(x) != key);
        task.env.push(e.clone());
    }
    for k in &r.container_label_rm {
        task.container_labels.remove(k);
    }
    validate::labels("--container-label-add", &r.container_label_add)?;
    task.container_labels.extend(r.container_label_add.clone());
    if !r.mount_rm.is_empty() {
        let rm: Vec<String> = r
            .mount_rm
            .iter()
            .map(|t| t.trim_end_matches('/').to_owned())
            .collect();
        task.mounts
            .retain(|m| !rm.contains(&m.target.trim_end_matches('/').to_owned()));
    }
    for m in wire::mounts("mount_add", &r.mount_add)? {
        // docker: a mount at a target already used replaces it.
        let target = m.target.trim_end_matches('/').to_owned();
        task.mounts
            .retain(|x| x.target.trim_end_matches('/') != target);
        task.mounts.push(m);
    }
    if let Some(res) = &r.resources {
        let t = &mut task.resources;
        for (into, v) in [
            (&mut t.limit_nano_cpus, res.limit_nano_cpus),
            (&mut t.limit_memory_bytes, res.limit_memory_bytes),
            (&mut t.limit_pids, res.limit_pids),
            (&mut t.reserve_nano_cpus, res.reserve_nano_cpus),
            (&mut t.reserve_memory_bytes, res.reserve_memory_bytes),
        ] {
            if let Some(v) = v {
                *into = v;
            }
        }
    }
    if let Some(h) = &r.healthcheck {
        let mut hc = task.healthcheck.clone().unwrap_or_default();
        wire::apply_health(&mut hc, h);
        task.healthcheck = Some(hc);
    }
    if let Some(v) = &r.workdir {
        task.workdir = v.clone();
    }
    if let Some(v) = &r.user {
        task.user = v.clone();
    }
    if let Some(v) = &r.hostname {
        task.hostname = v.clone();
    }
    if let Some(v) = &r.stop_signal {
        task.stop_signal = v.clone();
    }
    if let Some(v) = r.stop_grace_period_ns {
        task.stop_grace_nanos = v;
    }
    if let Some(v) = r.read_only {
        task.read_only = v;
    }
    if let Some(v) = r.init {
        task.init = v;
    }
    // docker: --cap-add takes a capability out of the dropped ones, and
    // --cap-drop out of the added ones.
    let norm = |c: &str| {
        let c = c.trim().to_ascii_uppercase();
        if c.starts_with("CAP_") || c == "ALL" {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    for c in &r.cap_add {
        task.cap_drop.retain(|d| norm(d) != norm(c));
        if !task.cap_add.iter().any(|a| norm(a) == norm(c)) {
            task.cap_add.push(c.clone());
        }
    }
    for c in &r.cap_drop {
        task.cap_add.retain(|a| norm(a) != norm(c));
        if !task.cap_drop.iter().any(|d| norm(d) == norm(c)) {
            task.cap_drop.push(c.clone());
        }
    }
    if r.force {
        task.force_update = task.force_update.wrapping_add(1);
    }
    // docker: removals by name, then additions replacing the same name.
    task.ulimits.retain(|u| !r.ulimit_rm.contains(&u.name));
    for u in &r.ulimit_add {
        let u = wire::decode_ulimit(u);
        task.ulimits.retain(|x| x.name != u.name);
        task.ulimits.push(u);
    }
    for h in &r.host_rm {
        task.hosts = shoal_api::container::remove_host(&task.hosts, h.trim());
    }
    for h in &r.host_add {
        let line = shoal_api::container::parse_extra_host(h.trim())
            .map_err(|e| invalid(format!("--host-add {h}: {e}")))?;
        if !task.hosts.contains(&line) {
            task.hosts.push(line);
        }
    }
    *task = validate::container(std::mem::take(task))?;
    for k in &r.label_rm {
        spec.labels.remove(k);
    }
    validate::labels("--label-add", &r.label_add)?;
    spec.labels.extend(r.label_add.clone());
    remove_by(&mut spec.constraints, &r.constraint_rm, |c| c.as_str());
    for c in &r.constraint_add {
        constraint::parse(c).map_err(|e| invalid(e.to_string()))?;
        if !spec.constraints.contains(c) {
            spec.constraints.push(c.clone());
        }
    }
    remove_by(&mut spec.placement_prefs, &r.placement_pref_rm, |p| {
        p.as_str()
    });
    for p in &r.placement_pref_add {
        constraint::preference(p)?;
        spec.placement_prefs.push(p.clone());
    }
    if let Some(n) = r.replicas {
        match spec.mode {
            ServiceMode::Global => {
                return Err(invalid(
                    "--replicas can only be used with replicated mode".into(),
                ));
            }
            ServiceMode::Replicated { .. } => spec.mode = ServiceMode::Replicated { replicas: n },
        }
    }
    for n in &r.network_rm {
        let id = state
            .networks
            .get(n)
            .or_else(|| state.networks.values().find(|x| x.name == *n))
            .map_or(n.clone(), |net| net.id.clone());
        spec.networks.retain(|x| *x != id);
    }
    for n in &r.network_add {
        let net = state
            .networks
            .get(n)
            .or_else(|| state.networks.values().find(|x| x.name == *n))
            .ok_or_else(|| ManagerError::NotFound {
                what: format!(
                    "--network-add {n}: network {n}; create it with 'shoal network create'"
                ),
            })?;
        if net.ingress {
            return Err(invalid(format!(
                "--network-add {n}: the ingress network is the routing mesh's; attach to an \
                 overlay network you created"
            )));
        }
        if !spec.networks.contains(&net.id) {
            spec.networks.push(net.id.clone());
        }
    }
    // Aliases go with their attachment; given again for a network, they
    // replace the ones it had.
    spec.network_aliases
        .retain(|id, _| spec.networks.contains(id));
    let added = aliases(
        state,
        &spec.networks,
        &r.network_add_aliases,
        "--network-add",
    )?;
    spec.network_aliases.extend(added);
    if let Some(n) = r.max_replicas_per_node {
        if spec.mode == ServiceMode::Global && n != 0 {
            return Err(invalid(
                "--replicas-max-per-node can only be used with replicated mode".into(),
            ));
        }
        spec.max_replicas_per_node = n;
    }
    if let Some(p) = &r.restart {
        if let Some(w) = p.window_ns {
            spec.restart.window_ns = w;
        }
        if let Some(c) = p.condition {
            spec.restart.condition =
                wire::decode_or(|| "--restart-condition".into(), c, RestartCondition::Any)?;
        }
        if let Some(d) = p.delay_secs {
            spec.restart.delay_secs = d;
        }
        if let Some(m) = p.max_attempts {
            spec.restart.max_attempts = (m != 0).then_some(m);
        }
    }
    if let Some(u) = &r.update_config {
        wire::apply_update_config(&mut spec.update, u, "--update")?;
    }
    if let Some(u) = &r.rollback_config {
        wire::apply_update_config(&mut spec.rollback, u, "--rollback")?;
    }
    Ok(())
}

/// `service update`: CAS on the service version, retried when something
/// else changed it meanwhile; a refused update changes nothing.
pub(super) async fn update(
    m: &Manager,
    r: &UpdateServiceRequest,
) -> Result<ServiceSummary, ManagerError> {
    // A port taken meanwhile is retried too: the next attempt either picks
    // another free one or reports the owner.
    let whole = r.spec.as_ref().and_then(|s| s.container.as_ref());
    let from_registry = match whole.map(|c| &c.image).or(r.image.as_ref()) {
        Some(image) => {
            let auth = match whole.map(|c| &c.registry_auth) {
                Some(given) if !given.is_empty() => given.clone(),
                _ => super::lookup::<Service>(&*m.read().await?, &r.service)?
                    .spec
                    .task
                    .registry_auth
                    .clone(),
            };
            registry_digest(m, image, &auth).await?
        }
        None => None,
    };
    update_with(m, true, |state| {
        updated_at(state, r, from_registry.as_deref(), now_unix())
    })
    .await
}

/// Proposes the service `change` makes from the current state, again from a
/// newer state while it loses a race (a version mismatch; with
/// `retry_ports`, also a port published meanwhile), up to [`CAS_ATTEMPTS`].
async fn update_with(
    m: &Manager,
    retry_ports: bool,
    change: impl Fn(&ClusterState) -> Result<Service, ManagerError>,
) -> Result<ServiceSummary, ManagerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let s = change(&*m.read().await?)?;
        let (id, version) = (s.id.clone(), s.version);
        match m
            .propose(Command::UpdateService {
                id: id.clone(),
                expected_version: version,
                service: s,
            })
            .await
        {
            Ok(applied) => {
                let state = m.after(&applied).await?;
                return Ok(summary(&state, super::lookup::<Service>(&state, &id)?));
            }
            Err(ManagerError::Rejected(ApplyError::VersionMismatch { .. }))
                if attempt < CAS_ATTEMPTS => {}
            Err(ManagerError::Rejected(ApplyError::PortInUse { .. }))
                if retry_ports && attempt < CAS_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn list(m: &Manager) -> Result<Vec<ServiceSummary>, ManagerError> {
    super::list_all(m, summary).await
}

pub(super) async fn inspect(m: &Manager, r: &ServiceRef) -> Result<ServiceSummary, ManagerError> {
    super::inspect_one(m, &r.service, summary).await
}

pub(super) async fn scale(
    m: &Manager,
    r: &ScaleServiceRequest,
) -> Result<ServiceSummary, ManagerError> {
    update_with(m, false, |state| {
        let mut s = super::lookup::<Service>(state, &r.service)?.clone();
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
        s.update_status = None;
        Ok(s)
    })
    .await
}

/// Removes the service; its tasks go with it (the orchestrator removes
/// tasks of a missing service, and agents stop what they no longer hold).
pub(super) async fn remove(m: &Manager, r: &ServiceRef) -> Result<String, ManagerError> {
    super::remove_one::<Service>(m, &r.service, |_, _| Ok(())).await
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
                desired_state: wire::encode(desired),
                state: wire::encode(t.state),
                since_unix: t.status.since_unix,
                message: t.status.message.clone(),
                err: t.status.err.clone(),
                addresses: t
                    .networks
                    .iter()
                    .flat_map(|n| n.addresses.clone())
                    .collect(),
                exit_code: t.status.exit_code,
                image: t.spec.pinned_image(),
                health: t.status.health.as_ref().map(wire::health),
            }
        })
        .collect())
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// One pass of the leader's reconcilers. Commands refused because the state
/// moved on are dropped: the next pass plans again from the newer state.
/// Returns when (unix ms) an update's delay or monitor window ends, which
/// no commit announces, so the caller wakes the next pass then.
pub(super) async fn reconcile(m: &Manager) -> Option<u64> {
    let now_ms = now_unix_ms();
    let now = now_ms / 1000;
    let plan = orchestrator::orchestrate_at(&*m.local_state().await, now_ms, &mut generate_node_id);
    propose_plan(m, plan, "orchestrator").await;
    let plan = orchestrator::schedule(&*m.local_state().await, now);
    propose_plan(m, plan, "scheduler").await;
    orchestrator::next_wake(&*m.local_state().await, now_unix_ms())
}

/// Proposes a pass's commands all at once, in order: group commit writes
/// them as a few entries instead of one commit round each, which at
/// 10,000 tasks was minutes of commits, each waking every node's
/// assignment stream. Each command still succeeds or is refused alone.
async fn propose_plan(m: &Manager, plan: Vec<Command>, who: &str) {
    // `join_all` polls the futures in order, and each queues its command
    // on its first poll, so the log keeps the plan's order.
    for refused in futures::future::join_all(plan.into_iter().map(|c| m.propose(c)))
        .await
        .into_iter()
        .filter_map(Result::err)
    {
        tracing::debug!(error = %refused, "{who} command refused");
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::PortConfig as ApiPort;
    use shoal_api::{cluster::v1 as pb, words::Word};

    use super::*;
    use crate::model::{Protocol, PublishMode, apply};

    /// A port as a request carries it, the words as the CLI reads them
    /// (empty: not given).
    fn api(published: u32, target: u32, protocol: &str, mode: &str) -> ApiPort {
        ApiPort {
            protocol: pb::Protocol::from_word(protocol).map_or(0, Into::into),
            target_port: target,
            published_port: published,
            publish_mode: pb::PublishMode::from_word(mode).map_or(0, Into::into),
        }
    }

    fn request(name: &str, ports: Vec<ApiPort>) -> CreateServiceRequest {
        CreateServiceRequest {
            name: name.into(),
            replicas: 1,
            args: vec!["sleep".into(), "1000".into()],
            ports,
            container: Some(pb::ContainerSpec {
                image: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates through `spec` and `apply`, as `create` does.
    fn create(state: &mut ClusterState, r: &CreateServiceRequest) -> Result<(), ManagerError> {
        let c = spec(state, r)?;
        apply(
            state,
            &Command::CreateService(new_service(
                format!("id-{}", r.name),
                c.spec,
                c.published.allocated,
            )),
        )?;
        Ok(())
    }

    fn update(state: &mut ClusterState, r: &UpdateServiceRequest) -> Result<(), ManagerError> {
        let s = updated(state, r)?;
        apply(
            state,
            &Command::UpdateService {
                id: s.id.clone(),
                expected_version: s.version,
                service: s,
            },
        )?;
        Ok(())
    }

    fn message(r: Result<(), ManagerError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn create_allocates_and_refuses_with_the_flag_and_the_fix() {
        let mut s = ClusterState::default();
        assert!(
            create(
                &mut s,
                &request("web", vec![api(8080, 80, "", ""), api(0, 81, "", "")])
            )
            .is_ok()
        );
        let web = &s.services["id-web"];
        assert_eq!(
            web.spec.endpoint.ports[1].published_port, None,
            "the spec keeps what was asked"
        );
        let published: Vec<Option<u16>> = web
            .endpoint
            .ports
            .iter()
            .map(|p| p.published_port)
            .collect();
        assert_eq!(published, [Some(8080), Some(30000)]);
        assert_eq!(
            message(create(&mut s, &request("api", vec![api(8080, 80, "", "")]))),
            "--publish published=8080,target=80: port 8080/tcp is already published by service \
             web; choose another published port, or leave published out to get a free one"
        );
        let mut dnsrr = request("dns", vec![api(53, 53, "udp", "")]);
        dnsrr.endpoint_mode = wire::encode(EndpointMode::Dnsrr);
        assert_eq!(
            message(create(&mut s, &dnsrr)),
            "--endpoint-mode dnsrr: a port published in ingress mode needs a VIP; use mode=host \
             or --endpoint-mode vip"
        );
        dnsrr.ports[0].publish_mode = wire::encode(PublishMode::Host);
        assert!(create(&mut s, &dnsrr).is_ok());
        assert_eq!(s.services["id-dns"].spec.endpoint.mode, EndpointMode::Dnsrr);
        assert!(
            message(create(&mut s, &request("x", vec![api(7946, 80, "", "")]))).contains("gossip")
        );
        assert!(
            message(create(&mut s, &request("x", vec![api(0, 80, "", "host")])))
                .contains("needs an explicit published port")
        );
    }

    fn with_image(name: &str, image: &str) -> CreateServiceRequest {
        let mut r = request(name, Vec::new());
        r.container = Some(pb::ContainerSpec {
            image: image.into(),
            ..Default::default()
        });
        r.args = Vec::new();
        r
    }

    #[test]
    fn images_are_pinned_against_the_catalogue_once() -> Result<(), ManagerError> {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let mut s = ClusterState::default();
        let node = crate::model::Node {
            id: "n1".into(),
            version: 0,
            hostname: "n1".into(),
            role: crate::model::NodeRole::Worker,
            availability: crate::model::Availability::Active,
            labels: Default::default(),
            addr: None,
            status: crate::model::NodeState::Ready,
            manager: None,
            tls: Default::default(),
            resources: Default::default(),
            platform: Default::default(),
            wireguard_key: None,
        };
        apply(&mut s, &Command::CreateNode(node))?;
        apply(
            &mut s,
            &Command::RegisterImages {
                node_id: "n1".into(),
                images: vec![crate::model::ImageRecord {
                    reference: "docker.io/library/busybox:latest".into(),
                    digest: a.clone(),
                    size: 1,
                }],
                removed: Vec::new(),
            },
        )?;
        // Known: pinned to the catalogue's digest, no warning.
        let known = spec(&s, &with_image("a", "busybox"))?;
        assert_eq!(known.spec.task.image, "busybox");
        assert_eq!(known.spec.task.image_digest, a);
        assert_eq!(
            known.spec.task.pinned_image(),
            format!("busybox:latest@{a}")
        );
        assert_eq!(known.warning, None);
        // A digest in the reference is kept as given.
        let given = spec(&s, &with_image("b", &format!("busybox@{b}")))?;
        assert_eq!(given.spec.task.image_digest, b);
        assert_eq!(given.warning, None);
        // Unknown: stored unpinned, with swarm's warning.
        let unknown = spec(&s, &with_image("c", "nginx:1.27"))?;
        assert_eq!(unknown.spec.task.image_digest, "");
        let w = unknown.warning.unwrap_or_default();
        assert!(
            w.starts_with(
                "image nginx:1.27 could not be accessed on a registry to record\nits digest."
            ),
            "{w}"
        );
        // host is never pinned, and needs a command.
        let host = spec(&s, &request("d", Vec::new()))?;
        assert_eq!(
            (host.spec.task.image.as_str(), host.warning),
            ("host", None)
        );
        let e = spec(&s, &with_image("e", "host"))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.unwrap_or_default()
                .starts_with("IMAGE host: the node's filesystem has no default command"),
        );
        // No image at all, or a bad one: refused naming it.
        let e = spec(&s, &with_image("f", "")).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("IMAGE \"\": give an image, or `host` for the node's filesystem")
        );
        let e = spec(&s, &with_image("g", "a:b:c"))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().starts_with("IMAGE \"a:b:c\""));
        Ok(())
    }

    #[test]
    fn update_adds_removes_and_a_refused_one_changes_nothing() {
        let mut s = ClusterState::default();
        assert!(create(&mut s, &request("web", vec![api(8080, 80, "", "")])).is_ok());
        assert!(create(&mut s, &request("db", vec![api(5432, 5432, "", "")])).is_ok());
        let add = |p: ApiPort| UpdateServiceRequest {
            service: "web".into(),
            publish_add: vec![p],
            ..UpdateServiceRequest::default()
        };
        let before = s.clone();
        assert_eq!(
            message(update(&mut s, &add(api(5432, 80, "", "")))),
            "--publish-add published=5432,target=80: port 5432/tcp is already published by \
             service db; choose another published port, or leave published out to get a free one"
        );
        assert_eq!(s, before);
        assert!(update(&mut s, &add(api(0, 53, "udp", ""))).is_ok());
        let web = &s.services["id-web"];
        assert_eq!(web.endpoint.ports.len(), 2);
        assert_eq!(web.endpoint.ports[1].published_port, Some(30000));
        assert_eq!(web.endpoint.ports[1].protocol, Protocol::Udp);
        assert_eq!(
            web.previous_spec.as_ref().map(|p| p.endpoint.ports.len()),
            Some(1)
        );
        // Removal by published port and protocol.
        let rm = |p: ApiPort| UpdateServiceRequest {
            service: "web".into(),
            publish_rm: vec![p],
            ..UpdateServiceRequest::default()
        };
        let e = message(update(&mut s, &rm(api(30000, 0, "", ""))));
        assert!(
            e.starts_with("--publish-rm 30000/tcp: the service publishes no such port; it publishes published=8080,target=80, published=30000,target=53,protocol=udp"),
            "{e}"
        );
        assert!(update(&mut s, &rm(api(30000, 0, "udp", ""))).is_ok());
        assert!(update(&mut s, &rm(api(8080, 0, "", ""))).is_ok());
        let web = &s.services["id-web"];
        assert!(web.endpoint.ports.is_empty() && web.spec.endpoint.ports.is_empty());
        // Re-adding a published port replaces it.
        assert!(update(&mut s, &add(api(8080, 80, "", ""))).is_ok());
        assert!(update(&mut s, &add(api(8080, 81, "", "host"))).is_ok());
        let web = &s.services["id-web"];
        assert_eq!(web.endpoint.ports.len(), 1);
        assert_eq!(web.endpoint.ports[0].publish_mode, PublishMode::Host);
    }

    fn store_files(s: &mut ClusterState) {
        for (id, name) in [("sid1", "db_pass"), ("sid2", "db_pass_v2")] {
            let secret = crate::model::Secret {
                id: id.into(),
                version: 0,
                name: name.into(),
                labels: Default::default(),
                data: crate::model::SecretBytes(b"pw".to_vec()),
            };
            assert!(apply(s, &Command::CreateSecret(secret)).is_ok());
        }
        let config = crate::model::Config {
            id: "cid1".into(),
            version: 0,
            name: "app".into(),
            labels: Default::default(),
            data: crate::model::ConfigBytes(b"x".to_vec()),
            template_driver: String::new(),
            created_unix: 0,
        };
        assert!(apply(s, &Command::CreateConfig(config)).is_ok());
    }

    fn file(source: &str, target: &str) -> pb::FileReference {
        pb::FileReference {
            source: source.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_resolves_secrets_and_configs_with_their_defaults() {
        let mut s = ClusterState::default();
        store_files(&mut s);
        let mut r = request("web", Vec::new());
        let c = r.container.get_or_insert_with(Default::default);
        c.secrets = vec![file("db_pass", ""), file("sid2", "/etc/pw")];
        c.configs = vec![file("app", "")];
        assert_eq!(message(create(&mut s, &r)), "");
        let task = &s.services["id-web"].spec.task;
        let secrets: Vec<(&str, &str, &str, u32)> = task
            .secrets
            .iter()
            .map(|f| (f.id.as_str(), f.name.as_str(), f.target.as_str(), f.mode))
            .collect();
        assert_eq!(
            secrets,
            [
                ("sid1", "db_pass", "db_pass", 0o444),
                ("sid2", "db_pass_v2", "/etc/pw", 0o444)
            ]
        );
        assert_eq!(task.configs[0].target, "/app");
        // `service inspect` shows the references only.
        let shown = summary(&s, &s.services["id-web"])
            .container
            .unwrap_or_default();
        assert_eq!(shown.secrets[0].name, "db_pass");
        // Refused, naming what to fix; nothing is created.
        let bad = |f: &dyn Fn(&mut pb::ContainerSpec)| {
            let mut r = request("bad", Vec::new());
            f(r.container.get_or_insert_with(Default::default));
            let e = message(create(&mut s.clone(), &r));
            assert!(!s.services.contains_key("id-bad"));
            e
        };
        assert_eq!(
            bad(&|c| c.secrets = vec![file("nope", "")]),
            "secret \"nope\" not found: create it first with shoal secret create"
        );
        assert_eq!(
            bad(&|c| c.configs = vec![file("nope", "")]),
            "config \"nope\" not found: create it first with shoal config create"
        );
        assert!(
            bad(&|c| c.secrets = vec![file("db_pass", "x"), file("db_pass_v2", "x")])
                .contains("two files would be at /run/secrets/x")
        );
        assert!(bad(&|c| c.configs = vec![file("app", "rel")]).contains("absolute path"));
        assert!(bad(&|c| c.secrets = vec![file("db_pass", "../../etc/shadow")]).contains("'..'"));
        assert!(
            bad(&|c| {
                let mut f = file("db_pass", "");
                f.mode = 0o4755;
                c.secrets = vec![f];
            })
            .contains("mode 0o4755 is out of range: give 0 to 0777")
        );
        assert!(bad(&|c| c.hostname = "{{.Node.Name}}".into()).contains("not a known placeholder"));
    }

    #[test]
    fn update_adds_and_removes_secrets_and_a_refused_update_changes_nothing() {
        let mut s = ClusterState::default();
        store_files(&mut s);
        let mut r = request("web", Vec::new());
        r.container.get_or_insert_with(Default::default).secrets = vec![file("db_pass", "pw")];
        assert!(create(&mut s, &r).is_ok());
        let req = |f: &dyn Fn(&mut UpdateServiceRequest)| {
            let mut r = UpdateServiceRequest {
                service: "web".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        // Rotation: the old one out, the new one in at the same target.
        let rotate = req(&|r| {
            r.secret_rm = vec!["db_pass".into()];
            r.secret_add = vec![file("db_pass_v2", "pw")];
        });
        assert_eq!(message(update(&mut s, &rotate)), "");
        let task = &s.services["id-web"].spec.task;
        assert_eq!(
            task.secrets
                .iter()
                .map(|f| (f.id.as_str(), f.target.as_str()))
                .collect::<Vec<_>>(),
            [("sid2", "pw")]
        );
        let before = s.clone();
        // Adding at a target in use, removing one not there, a missing one.
        let e = message(update(
            &mut s,
            &req(&|r| r.secret_add = vec![file("db_pass", "pw")]),
        ));
        assert!(e.contains("two files would be at /run/secrets/pw"), "{e}");
        let e = message(update(
            &mut s,
            &req(&|r| r.secret_rm = vec!["db_pass".into()]),
        ));
        assert!(
            e.starts_with(
                "--secret-rm db_pass: the service has no secret db_pass (it has: db_pass_v2)"
            ),
            "{e}"
        );
        let e = message(update(
            &mut s,
            &req(&|r| r.config_add = vec![file("nope", "")]),
        ));
        assert!(e.starts_with("config \"nope\" not found"), "{e}");
        assert_eq!(s, before, "a refused update changes nothing");
        // Removal by target, and configs likewise.
        assert!(
            update(
                &mut s,
                &req(&|r| r.secret_rm = vec!["/run/secrets/pw".into()])
            )
            .is_ok()
        );
        assert!(
            update(
                &mut s,
                &req(&|r| r.config_add = vec![file("app", "/etc/app.conf")])
            )
            .is_ok()
        );
        assert!(
            update(
                &mut s,
                &req(&|r| r.config_rm = vec!["/etc/app.conf".into()])
            )
            .is_ok()
        );
        let task = &s.services["id-web"].spec.task;
        assert!(task.secrets.is_empty() && task.configs.is_empty());
    }

    #[test]
    fn update_applies_the_whole_delta_and_a_refused_one_changes_nothing() {
        let mut s = ClusterState::default();
        let mut r = request("web", Vec::new());
        r.env = vec!["A=1".into(), "B=2".into()];
        assert_eq!(message(create(&mut s, &r)), "");
        let req = |f: &dyn Fn(&mut UpdateServiceRequest)| {
            let mut r = UpdateServiceRequest {
                service: "web".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let ok = req(&|r| {
            r.env_rm = vec!["A".into()];
            r.env_add = vec!["B=3".into(), "C=4".into()];
            r.container_label_add = [("x".to_owned(), "y".to_owned())].into();
            r.placement_pref_add = vec!["spread=node.labels.zone".into()];
            r.update_config = Some(pb::UpdateConfig {
                parallelism: Some(2),
                order: Some(pb::UpdateOrder::StartFirst.into()),
                ..Default::default()
            });
            r.healthcheck = Some(pb::HealthConfig {
                test: vec!["CMD-SHELL".into(), "true".into()],
                retries: Some(5),
                ..Default::default()
            });
            r.force = true;
        });
        assert_eq!(message(update(&mut s, &ok)), "");
        let web = &s.services["id-web"];
        assert_eq!(web.spec.task.env, ["B=3", "C=4"]);
        assert_eq!(web.spec.task.container_labels["x"], "y");
        assert_eq!(web.spec.placement_prefs, ["spread=node.labels.zone"]);
        assert_eq!(web.spec.update.parallelism, 2);
        assert_eq!(web.spec.update.order, crate::model::UpdateOrder::StartFirst);
        // Unset fields keep swarm's defaults.
        assert_eq!(web.spec.update.monitor_nanos, 5_000_000_000);
        // A health interval not given stays 0: the node takes the image's.
        let h = web.spec.task.healthcheck.clone().unwrap_or_default();
        assert_eq!((h.retries, h.interval_nanos), (5, 0));
        assert_eq!(web.spec.task.force_update, 1);
        // The summary carries the policies, every field set.
        let shown = summary(&s, web);
        let u = shown.update_config.unwrap_or_default();
        assert_eq!((u.parallelism, u.delay_ns), (Some(2), Some(0)));
        assert!(shown.previous_spec.is_some());

        let before = s.clone();
        for (bad, want) in [
            (
                req(&|r| {
                    r.env_add = vec!["D=5".into()];
                    r.update_config = Some(pb::UpdateConfig {
                        max_failure_ratio: Some(1.5),
                        ..Default::default()
                    });
                }),
                "--update-max-failure-ratio 1.5: must be between 0 and 1",
            ),
            (
                req(&|r| {
                    r.rollback_config = Some(pb::UpdateConfig {
                        failure_action: Some(pb::FailureAction::Rollback.into()),
                        ..Default::default()
                    })
                }),
                "--rollback-failure-action rollback",
            ),
            (
                req(&|r| {
                    r.healthcheck = Some(pb::HealthConfig {
                        test: vec!["CMD-SHELL".into()],
                        ..Default::default()
                    })
                }),
                "--health-cmd",
            ),
            (
                req(&|r| r.placement_pref_add = vec!["binpack=node.id".into()]),
                "only spread is supported",
            ),
            (req(&|r| r.env_add = vec!["=x".into()]), "--env-add"),
            (req(&|r| r.image = Some("a:b:c".into())), "IMAGE \"a:b:c\""),
            (req(&|r| r.version = 1), "update out of sequence"),
            (
                req(&|r| {
                    r.rollback = true;
                    r.replicas = Some(3);
                }),
                "--rollback: nothing else may be changed",
            ),
        ] {
            let e = message(update(&mut s, &bad));
            assert!(e.contains(want), "{want}: {e}");
            assert_eq!(s, before, "{want}: a refused update changes nothing");
        }
    }

    #[test]
    fn rollback_swaps_in_the_previous_spec() {
        let mut s = ClusterState::default();
        let mut r = request("web", Vec::new());
        r.replicas = 2;
        assert_eq!(message(create(&mut s, &r)), "");
        let rollback = UpdateServiceRequest {
            service: "web".into(),
            rollback: true,
            ..Default::default()
        };
        assert_eq!(
            message(update(&mut s, &rollback)),
            "service id-web does not have a previous spec"
        );
        let change = UpdateServiceRequest {
            service: "web".into(),
            env_add: vec!["V=2".into()],
            ..Default::default()
        };
        assert_eq!(message(update(&mut s, &change)), "");
        let web = &s.services["id-web"];
        let version = web.version;
        // A stale version is refused; the current one is accepted.
        let mut pinned = change.clone();
        pinned.version = version - 1;
        assert!(message(update(&mut s, &pinned)).contains("retry"));
        let s2 = updated_at(&s, &rollback, None, 77).map(|w| {
            (
                w.spec.task.env.clone(),
                w.previous_spec.map(|p| p.task.env),
                w.update_status
                    .map(|u| (u.state, u.message, u.started_unix)),
            )
        });
        assert_eq!(
            s2.ok(),
            Some((
                Vec::<String>::new(),
                Some(vec!["V=2".to_owned()]),
                Some((
                    UpdateState::RollbackStarted,
                    "manually requested rollback".to_owned(),
                    77
                ))
            ))
        );
    }

    fn lab() -> ClusterState {
        use crate::model::{Availability, Network, NetworkDriver, Node, NodeRole, NodeState};
        let mut s = ClusterState::default();
        let net = Network {
            id: "net-id".into(),
            version: 0,
            name: "appnet".into(),
            labels: Default::default(),
            driver: NetworkDriver::Overlay,
            ingress: false,
            attachable: false,
            encryption: crate::model::Encryption::None,
            vni: Some(4097),
            subnet: Some("10.0.1.0/24".into()),
            gateway: None,
            mtu: None,
            internal: false,
        };
        let ingress = Network {
            id: "ingress-id".into(),
            name: "ingress".into(),
            ingress: true,
            vni: Some(4096),
            subnet: Some("10.0.0.0/24".into()),
            ..net.clone()
        };
        assert!(apply(&mut s, &Command::CreateNetwork(net)).is_ok());
        assert!(apply(&mut s, &Command::CreateNetwork(ingress)).is_ok());
        for id in ["n1", "n2"] {
            let node = Node {
                id: id.into(),
                version: 0,
                hostname: id.into(),
                role: NodeRole::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                addr: None,
                status: NodeState::Ready,
                manager: None,
                tls: Default::default(),
                resources: Default::default(),
                platform: Default::default(),
                wireguard_key: None,
            };
            assert!(apply(&mut s, &Command::CreateNode(node)).is_ok());
        }
        s
    }

    /// Runs the orchestrator and scheduler to their fixpoint; tasks they
    /// assign are reported RUNNING at once.
    fn converge(s: &mut ClusterState, ids: &mut u64) {
        for _ in 0..30 {
            let mut next = || {
                *ids += 1;
                format!("t{ids:04}")
            };
            let mut cmds = orchestrator::orchestrate(s, 100, &mut next);
            cmds.extend(orchestrator::schedule(s, 100));
            if cmds.is_empty() {
                return;
            }
            for c in &cmds {
                let _ = apply(s, c);
            }
            let assigned: Vec<crate::model::Task> = s
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Assigned)
                .cloned()
                .collect();
            for mut t in assigned {
                let v = t.version;
                t.state = TaskState::Running;
                let _ = apply(
                    s,
                    &Command::UpdateTask {
                        id: t.id.clone(),
                        expected_version: v,
                        task: t,
                    },
                );
            }
        }
        panic!("no fixpoint");
    }

    fn running(s: &ClusterState) -> BTreeMap<String, Option<u64>> {
        s.tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Running && t.state == TaskState::Running)
            .map(|t| (t.id.clone(), t.slot))
            .collect()
    }

    fn stack_request(image: &str, replicas: u64) -> CreateServiceRequest {
        CreateServiceRequest {
            name: "vote_web".into(),
            replicas,
            args: vec!["sleep".into(), "1000".into()],
            ports: vec![api(8080, 80, "", ""), api(0, 81, "", "")],
            networks: vec!["appnet".into()],
            network_aliases: [(
                "appnet".to_owned(),
                pb::Aliases {
                    aliases: vec!["web".into()],
                },
            )]
            .into(),
            max_replicas_per_node: 1,
            container: Some(pb::ContainerSpec {
                image: image.into(),
                ulimits: vec![pb::Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048,
                }],
                hosts: vec!["10.9.9.9 db".into()],
                ..Default::default()
            }),
            restart: Some(pb::RestartPolicy {
                delay_secs: 5,
                max_attempts: 3,
                window_ns: 120_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn replace(spec: CreateServiceRequest) -> UpdateServiceRequest {
        UpdateServiceRequest {
            service: "vote_web".into(),
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn whole_spec_update_replaces_only_what_changed() {
        let mut s = lab();
        let mut ids = 0;
        assert!(create(&mut s, &stack_request("busybox:1", 2)).is_ok());
        converge(&mut s, &mut ids);
        let before = running(&s);
        assert_eq!(before.len(), 2);
        let web = s.services["id-vote_web"].clone();
        assert_eq!(web.spec.network_aliases["net-id"], ["web"]);
        assert_eq!(web.spec.max_replicas_per_node, 1);
        assert_eq!(web.spec.restart.window_ns, 120_000_000_000);
        assert_eq!(web.spec.task.hosts, ["10.9.9.9 db"]);
        let shown = summary(&s, &web);
        assert_eq!(shown.network_aliases["appnet"].aliases, ["web"]);
        assert_eq!(shown.max_replicas_per_node, 1);
        assert_eq!(shown.restart.map(|r| r.window_ns), Some(120_000_000_000));

        // The same spec again (a re-deploy): a new version, nothing restarted,
        // the chosen port kept.
        assert!(update(&mut s, &replace(stack_request("busybox:1", 2))).is_ok());
        let again = s.services["id-vote_web"].clone();
        assert!(again.version > web.version);
        assert_eq!(again.spec, web.spec);
        assert_eq!(again.endpoint.ports, web.endpoint.ports);
        assert_eq!(again.previous_spec.as_ref(), Some(&web.spec));
        converge(&mut s, &mut ids);
        assert_eq!(running(&s), before, "an identical spec restarted tasks");

        // Scaling through the spec adds a slot and replaces nothing.
        assert!(update(&mut s, &replace(stack_request("busybox:1", 3))).is_ok());
        let n3 = crate::model::Node {
            id: "n3".into(),
            hostname: "n3".into(),
            ..s.nodes["n1"].clone()
        };
        let _ = apply(&mut s, &Command::CreateNode(n3));
        converge(&mut s, &mut ids);
        let scaled = running(&s);
        assert_eq!(scaled.len(), 3);
        assert!(before.keys().all(|id| scaled.contains_key(id)));

        // A changed image replaces the tasks.
        assert!(update(&mut s, &replace(stack_request("busybox:2", 3))).is_ok());
        converge(&mut s, &mut ids);
        let after = running(&s);
        assert_eq!(after.len(), 3);
        assert!(after.keys().all(|id| !scaled.contains_key(id)), "{after:?}");
        assert!(
            s.tasks
                .values()
                .filter(|t| after.contains_key(&t.id))
                .all(|t| t.spec.image == "busybox:2")
        );
    }

    #[test]
    fn whole_spec_update_refuses_a_rename_a_mode_change_and_extra_changes() {
        let mut s = lab();
        assert!(create(&mut s, &stack_request("busybox:1", 1)).is_ok());
        let kept = s.clone();
        let mut renamed = stack_request("busybox:2", 1);
        renamed.name = "vote_www".into();
        assert!(
            message(update(&mut s, &replace(renamed)))
                .starts_with("spec.name \"vote_www\": renaming services is not supported")
        );
        let mut global = stack_request("busybox:1", 0);
        global.mode = pb::ServiceMode::Global.into();
        global.max_replicas_per_node = 0;
        assert!(
            message(update(&mut s, &replace(global)))
                .starts_with("spec.mode: service mode change is not allowed")
        );
        let mut extra = replace(stack_request("busybox:2", 1));
        extra.env_add = vec!["A=1".into()];
        assert!(message(update(&mut s, &extra)).contains("give no other change with it"));
        let mut stale = replace(stack_request("busybox:2", 1));
        stale.version = 99;
        assert!(message(update(&mut s, &stale)).starts_with("update out of sequence"));
        let mut bad = stack_request("busybox:2", 1);
        if let Some(c) = bad.container.as_mut() {
            c.ulimits[0].soft = 4096;
        }
        assert!(
            message(update(&mut s, &replace(bad))).starts_with("--ulimit \"nofile=4096:2048\"")
        );
        let mut alias = stack_request("busybox:2", 1);
        alias.network_aliases = [(
            "othernet".to_owned(),
            pb::Aliases {
                aliases: vec!["x".into()],
            },
        )]
        .into();
        assert!(
            message(update(&mut s, &replace(alias))).contains("not attached to network othernet")
        );
        assert_eq!(s, kept, "a refused update changed the state");
        // version and force are allowed: force bumps the counter.
        let mut forced = replace(stack_request("busybox:1", 1));
        forced.force = true;
        forced.version = s.services["id-vote_web"].version;
        assert!(update(&mut s, &forced).is_ok());
        assert_eq!(s.services["id-vote_web"].spec.task.force_update, 1);
    }

    #[test]
    fn host_network_tasks_get_no_address_no_vip_and_no_mesh_port() {
        let mut s = lab();
        let mut r = request("iperf", vec![api(5201, 5201, "", "host")]);
        if let Some(c) = r.container.as_mut() {
            c.network_host = true;
        }
        assert_eq!(message(create(&mut s, &r)), "");
        let mut ids = 0;
        converge(&mut s, &mut ids);
        let tasks: Vec<&crate::model::Task> = s.tasks.values().collect();
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].networks.is_empty(), "{:?}", tasks[0].networks);
        assert!(s.services["id-iperf"].endpoint.vips.is_empty());
        // The other networks and ingress ports are refused, at create and
        // at update, naming the flag.
        r.name = "web".into();
        r.networks = vec!["appnet".into()];
        assert!(message(create(&mut s, &r)).starts_with("--network host: "));
        r.networks.clear();
        r.ports = vec![api(0, 80, "", "")];
        assert!(message(create(&mut s, &r)).starts_with("--publish target=80: "));
        let add = UpdateServiceRequest {
            service: "iperf".into(),
            network_add: vec!["appnet".into()],
            ..Default::default()
        };
        assert_eq!(
            message(update(&mut s, &add)),
            "--network host: the task shares its node's network and cannot also join network \
             appnet; drop --network appnet, or drop --network host"
        );
    }

    #[test]
    fn update_flags_for_the_stack_fields() {
        let mut s = lab();
        assert!(create(&mut s, &stack_request("busybox:1", 1)).is_ok());
        let r = UpdateServiceRequest {
            service: "vote_web".into(),
            ulimit_add: vec![
                pb::Ulimit {
                    name: "nofile".into(),
                    soft: 10,
                    hard: 20,
                },
                pb::Ulimit {
                    name: "nproc".into(),
                    soft: 5,
                    hard: 5,
                },
            ],
            host_add: vec!["cache:10.9.9.8".into()],
            host_rm: vec!["db".into()],
            max_replicas_per_node: Some(2),
            restart: Some(pb::RestartPolicyUpdate {
                window_ns: Some(5_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(update(&mut s, &r).is_ok());
        let spec = &s.services["id-vote_web"].spec;
        let shown: Vec<(String, i64, i64)> = spec
            .task
            .ulimits
            .iter()
            .map(|u| (u.name.clone(), u.soft, u.hard))
            .collect();
        assert_eq!(shown, [("nofile".into(), 10, 20), ("nproc".into(), 5, 5)]);
        assert_eq!(spec.task.hosts, ["10.9.9.8 cache"]);
        assert_eq!(spec.max_replicas_per_node, 2);
        assert_eq!(spec.restart.window_ns, 5_000_000_000);
        let r = UpdateServiceRequest {
            service: "vote_web".into(),
            ulimit_rm: vec!["nproc".into()],
            host_add: vec!["bad".into()],
            ..Default::default()
        };
        assert!(message(update(&mut s, &r)).starts_with("--host-add bad: bad format for add-host"));
        let r = UpdateServiceRequest {
            service: "vote_web".into(),
            network_rm: vec!["appnet".into()],
            ..Default::default()
        };
        assert!(update(&mut s, &r).is_ok());
        assert!(s.services["id-vote_web"].spec.network_aliases.is_empty());
        let r = UpdateServiceRequest {
            service: "vote_web".into(),
            network_add: vec!["appnet".into()],
            network_add_aliases: [(
                "appnet".to_owned(),
                pb::Aliases {
                    aliases: vec!["w".into(), "w2".into()],
                },
            )]
            .into(),
            ..Default::default()
        };
        assert!(update(&mut s, &r).is_ok());
        assert_eq!(
            s.services["id-vote_web"].spec.network_aliases["net-id"],
            ["w", "w2"]
        );
    }
}
