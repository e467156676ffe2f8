//! `shoal service …`: docker's service verbs; create and scale follow the
//! tasks until the service converges, unless `--detach`.

mod inspect;
mod policy;
pub mod progress;
mod ps;
mod update;

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
};

use clap::{Args, Subcommand};
use serde::Serialize;
use shoal_api::{
    cluster::v1::{
        Aliases, ContainerSpec, CreateServiceRequest, EndpointMode, Entrypoint,
        ListServicesRequest, ListTasksRequest, PortConfig, Protocol, PublishMode, Resources,
        RestartCondition, RestartPolicy, ScaleServiceRequest, ServiceMode, ServiceRef,
        ServiceSummary, Ulimit, UpdateServiceRequest,
    },
    container::{parse_extra_host, parse_ulimit},
    words::{Word, word},
};

use self::{
    policy::{HealthFlags, PolicyFlags, nanos, placement_pref},
    update::{UpdateArgs, update_request},
};
use crate::{
    client::{self, finish},
    output::{Format, ListFlags, table},
    parse::{
        FlagError, Problem, parse_cpus, parse_duration, parse_file_ref, parse_label, parse_mount,
        parse_network, parse_publish, parse_size, parse_sysctl, split_words,
    },
};

#[derive(Args)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    name: String,
    /// Number of tasks (replicated mode).
    #[arg(long)]
    replicas: Option<u64>,
    /// Service mode: replicated or global.
    #[arg(long, default_value = "replicated")]
    mode: String,
    /// Network to attach to: NAME, or name=NAME,alias=ALIAS[,alias=…]
    /// (repeatable); `host`: the node's own network (no other network,
    /// ports in mode=host only).
    #[arg(long)]
    network: Vec<String>,
    /// Maximum number of tasks per node (default 0 = unlimited).
    #[arg(long, value_name = "uint", default_value_t = 0)]
    replicas_max_per_node: u64,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    restart_window: Option<String>,
    /// Ulimit options, NAME=SOFT[:HARD], e.g. nofile=1024:2048
    /// (repeatable).
    #[arg(long, value_name = "ulimit")]
    ulimit: Vec<String>,
    /// Add a custom host-to-IP mapping, HOST:IP (repeatable). docker's
    /// `--host`, which Shoal's global `-H/--host` (the daemon) takes.
    #[arg(long = "add-host", value_name = "list")]
    extra_host: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, short)]
    env: Vec<String>,
    /// Placement constraint, e.g. node.role==worker (repeatable).
    #[arg(long)]
    constraint: Vec<String>,
    /// Restart when: any, on-failure, none.
    #[arg(long, default_value = "any")]
    restart_condition: String,
    /// Delay between restart attempts (ns|us|ms|s|m|h).
    #[arg(long, default_value = "5s", allow_hyphen_values = true)]
    restart_delay: String,
    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    restart_max_attempts: u64,
    /// Service labels (key=value).
    #[arg(long)]
    label: Vec<String>,
    /// Overwrite the image's entrypoint ("" clears it).
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// Working directory inside the container.
    #[arg(long, short)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(long, short)]
    user: Option<String>,
    /// Container hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Signal to stop the container.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h).
    #[arg(long, allow_hyphen_values = true)]
    stop_grace_period: Option<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    read_only: bool,
    /// Use an init inside each service container to forward signals and
    /// reap processes.
    #[arg(long)]
    init: bool,
    /// Add Linux capabilities (repeatable).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (repeatable).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Sysctl options, KEY=VALUE (repeatable; namespaced ones only).
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    /// Limit CPUs (e.g. 0.5).
    #[arg(long, value_name = "CPUS")]
    limit_cpu: Option<String>,
    /// Limit memory (e.g. 32M, 1g).
    #[arg(long, value_name = "BYTES")]
    limit_memory: Option<String>,
    /// Limit the number of processes (0 = unlimited).
    #[arg(long, value_name = "N")]
    limit_pids: Option<u64>,
    /// Reserve CPUs: tasks go only to nodes with that much left.
    #[arg(long, value_name = "CPUS")]
    reserve_cpu: Option<String>,
    /// Reserve memory: tasks go only to nodes with that much left.
    #[arg(long, value_name = "BYTES")]
    reserve_memory: Option<String>,
    /// Attach a filesystem mount: type=volume|bind|tmpfs,source=…,target=…
    /// [,readonly][,volume-nocopy][,tmpfs-size=…][,tmpfs-mode=…]
    /// (repeatable).
    #[arg(long, value_name = "MOUNT")]
    mount: Vec<String>,
    /// Give the tasks a secret, at /run/secrets/NAME: NAME, or
    /// source=NAME[,target=ALIAS|/abs/path][,uid=U][,gid=G][,mode=0444]
    /// (repeatable).
    #[arg(long, value_name = "SECRET")]
    secret: Vec<String>,
    /// Give the tasks a config, at /NAME: NAME, or
    /// source=NAME[,target=/abs/path][,uid=U][,gid=G][,mode=0444]
    /// (repeatable).
    #[arg(long, value_name = "CONFIG")]
    config: Vec<String>,
    /// Send this client's credentials for the image's registry (from
    /// docker's config.json, as `docker login` wrote them) to the nodes
    /// that pull it.
    #[arg(long)]
    with_registry_auth: bool,
    /// Publish a port: [PUBLISHED:]TARGET[/tcp|/udp] (8080:80, 53:53/udp,
    /// 80 for a free published port) or
    /// published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]
    /// (repeatable).
    #[arg(long, short, value_name = "SPEC")]
    publish: Vec<String>,
    /// How the service is reached: vip (one virtual IP, balanced) or dnsrr
    /// (DNS round robin over the tasks; no ingress-mode ports).
    #[arg(long, default_value = "vip")]
    endpoint_mode: String,
    /// Add a placement preference, spread=node.labels.KEY (repeatable).
    #[arg(long, value_name = "pref")]
    placement_pref: Vec<String>,
    /// Container labels, key=value (repeatable).
    #[arg(long, value_name = "list")]
    container_label: Vec<String>,
    #[command(flatten)]
    health: HealthFlags,
    #[command(flatten)]
    policy: PolicyFlags,
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(long, short)]
    detach: bool,
    /// Suppress progress output.
    #[arg(long, short)]
    quiet: bool,
    /// The image the tasks run, or `host` for the node's own filesystem
    /// (read-only).
    #[arg(value_name = "IMAGE")]
    image: Option<String>,
    /// The command and its arguments (after IMAGE, everything is theirs).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..
    )]
    command: Vec<String>,
}

/// `service create` without an image, in docker's words.
#[derive(Debug, thiserror::Error)]
#[error(
    "\"shoal service create\" requires at least 1 argument.\nSee 'shoal service create --help'.\n\n\
     Usage:  shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nCreate a new service"
)]
pub struct MissingImage;

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Create a new service.
    Create(Box<CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls(ListFlags),
    /// List the tasks of one or more services, with each slot's history.
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        /// Filter output based on conditions provided: desired-state=running|
        /// shutdown|accepted, id=, name=, node= (repeatable).
        #[arg(long, short, value_name = "filter")]
        filter: Vec<String>,
        /// Only display task IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Display detailed information on one or more services.
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// JSON, as docker inspect prints by default.
        #[arg(long, short, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Update a service: a change of its tasks' spec replaces them as its
    /// update policy says (--update-*), a failure pausing, continuing or
    /// rolling back.
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration (back to its previous
    /// spec).
    Rollback {
        service: String,
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(long, short)]
        detach: bool,
        /// Suppress progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Scale one or more replicated services: SERVICE=REPLICAS.
    Scale {
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(long, short)]
        detach: bool,
    },
    /// Fetch the logs of a service or task.
    Logs(crate::logs::LogsArgs),
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

/// The container flags as the wire carries them, checked.
fn container(a: &CreateArgs) -> Result<(ContainerSpec, Resources), FlagError> {
    let cpus = |flag, v: &Option<String>| {
        v.as_deref().map_or(Ok(0), |v| {
            parse_cpus(v).map_err(|e| FlagError::new(flag, v, e))
        })
    };
    let size = |flag, v: &Option<String>| {
        v.as_deref().map_or(Ok(0), |v| {
            parse_size(v).map_err(|e| FlagError::new(flag, v, e))
        })
    };
    let resources = Resources {
        limit_nano_cpus: cpus("--limit-cpu", &a.limit_cpu)?,
        limit_memory_bytes: size("--limit-memory", &a.limit_memory)?,
        limit_pids: a.limit_pids.unwrap_or_default(),
        reserve_nano_cpus: cpus("--reserve-cpu", &a.reserve_cpu)?,
        reserve_memory_bytes: size("--reserve-memory", &a.reserve_memory)?,
    };
    let mut sysctls = std::collections::HashMap::new();
    for s in &a.sysctl {
        let (k, v) = parse_sysctl(s).map_err(|e| FlagError::new("--sysctl", s, e))?;
        sysctls.insert(k, v);
    }
    let mounts = a
        .mount
        .iter()
        .map(|m| parse_mount(m).map_err(|e| FlagError::new("--mount", m, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let stop_grace_period_ns = match &a.stop_grace_period {
        None => None,
        Some(v) => {
            let d = parse_duration(v).map_err(|e| FlagError::new("--stop-grace-period", v, e))?;
            Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }
    };
    let spec = ContainerSpec {
        // Set from `--network` by the caller.
        network_host: false,
        ulimits: ulimits("--ulimit", &a.ulimit)?,
        hosts: a
            .extra_host
            .iter()
            .map(|h| parse_extra_host(h).map_err(|e| FlagError::new("--add-host", h, e)))
            .collect::<Result<_, _>>()?,
        image: a.image.clone().unwrap_or_default(),
        image_digest: String::new(),
        entrypoint: a
            .entrypoint
            .as_deref()
            .map(|e| {
                split_words(e)
                    .map(|args| Entrypoint { args })
                    .map_err(|err| FlagError::new("--entrypoint", e, err))
            })
            .transpose()?,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_grace_period_ns,
        read_only: a.read_only,
        init: a.init,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        sysctls,
        mounts,
        registry_auth: String::new(),
        secrets: file_refs("--secret", &a.secret)?,
        configs: file_refs("--config", &a.config)?,
        healthcheck: a.health.config()?,
        labels: a
            .container_label
            .iter()
            .map(|l| parse_label(l).map_err(|e| FlagError::new("--container-label", l, e)))
            .collect::<Result<_, _>>()?,
        force_update: 0,
    };
    Ok((spec, resources))
}

fn file_refs(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<shoal_api::cluster::v1::FileReference>, FlagError> {
    values
        .iter()
        .map(|v| parse_file_ref(v).map_err(|e| FlagError::new(flag, v, e)))
        .collect()
}

/// `service update`'s secret and config flags.
#[derive(Args, Default, Debug, Clone)]
pub struct FileUpdates {
    /// Add a secret, as --secret takes it (repeatable).
    #[arg(long, value_name = "SECRET")]
    secret_add: Vec<String>,
    /// Remove a secret: its name, id or target (repeatable; removals come
    /// before additions, so --secret-rm old --secret-add
    /// source=new,target=old rotates it).
    #[arg(long, value_name = "SECRET")]
    secret_rm: Vec<String>,
    /// Add a config, as --config takes it (repeatable).
    #[arg(long, value_name = "CONFIG")]
    config_add: Vec<String>,
    /// Remove a config: its name, id or target (repeatable).
    #[arg(long, value_name = "CONFIG")]
    config_rm: Vec<String>,
}

fn request(a: &CreateArgs) -> anyhow::Result<CreateServiceRequest> {
    let Some(image) = &a.image else {
        return Err(MissingImage.into());
    };
    let mut r = flags_request(a)?;
    if a.with_registry_auth
        && let Some(c) = r.container.as_mut()
    {
        c.registry_auth = crate::registry_auth::for_image(image)?;
    }
    Ok(r)
}

fn flags_request(a: &CreateArgs) -> Result<CreateServiceRequest, FlagError> {
    let (mut container, resources) = container(a)?;
    let delay = parse_duration(&a.restart_delay)
        .map_err(|e| FlagError::new("--restart-delay", &a.restart_delay, e))?;
    if delay.subsec_nanos() != 0 {
        let suggest = format!("{}s", delay.as_secs().max(1));
        return Err(FlagError::new(
            "--restart-delay",
            &a.restart_delay,
            Problem::SubSecond { suggest },
        ));
    }
    let mut labels = std::collections::HashMap::new();
    for l in &a.label {
        let (k, v) = parse_label(l).map_err(|e| FlagError::new("--label", l, e))?;
        labels.insert(k, v);
    }
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.push(
            parse_publish(p)
                .map_err(|e| FlagError::new("--publish", p, e))?
                .to_api(),
        );
    }
    let endpoint_mode = EndpointMode::from_word(&a.endpoint_mode).ok_or_else(|| {
        FlagError::new("--endpoint-mode", &a.endpoint_mode, Problem::EndpointMode)
    })?;
    let mode = ServiceMode::from_word(&a.mode)
        .ok_or_else(|| FlagError::new("--mode", &a.mode, Problem::ServiceMode))?;
    let condition = RestartCondition::from_word(&a.restart_condition).ok_or_else(|| {
        FlagError::new(
            "--restart-condition",
            &a.restart_condition,
            Problem::RestartCondition,
        )
    })?;
    let replicas = match (mode, a.replicas) {
        (ServiceMode::Global, Some(_)) => {
            return Err(FlagError::new(
                "--replicas",
                a.replicas.unwrap_or_default(),
                Problem::ReplicasWithGlobal,
            ));
        }
        (_, Some(r)) => r,
        (ServiceMode::Global, None) => 0,
        (_, None) => 1,
    };
    if mode == ServiceMode::Global && a.replicas_max_per_node != 0 {
        return Err(FlagError::new(
            "--replicas-max-per-node",
            a.replicas_max_per_node,
            Problem::MaxReplicasWithGlobal,
        ));
    }
    let (mut networks, network_aliases) = networks("--network", &a.network)?;
    // docker's `--network host` names no network object: the node's own
    // namespace. The manager refuses it together with other networks.
    container.network_host = networks.iter().any(|n| n == HOST_NETWORK);
    networks.retain(|n| n != HOST_NETWORK);
    let window_ns = a
        .restart_window
        .as_deref()
        .map(|v| nanos("--restart-window", v))
        .transpose()?
        .unwrap_or(0);
    Ok(CreateServiceRequest {
        network_aliases,
        max_replicas_per_node: a.replicas_max_per_node,
        name: a.name.clone(),
        mode: mode.into(),
        replicas,
        networks,
        env: a.env.clone(),
        constraints: a.constraint.clone(),
        restart: Some(RestartPolicy {
            condition: condition.into(),
            delay_secs: delay.as_secs(),
            max_attempts: a.restart_max_attempts,
            window_ns,
        }),
        args: a.command.clone(),
        labels,
        endpoint_mode: endpoint_mode.into(),
        ports,
        container: Some(container),
        resources: Some(resources),
        update_config: a.policy.update_config()?,
        rollback_config: a.policy.rollback_config()?,
        placement_prefs: a
            .placement_pref
            .iter()
            .map(|p| placement_pref("--placement-pref", p))
            .collect::<Result<_, _>>()?,
    })
}

/// `--ulimit`/`--ulimit-add` values as the wire carries them.
pub fn ulimits(flag: &'static str, values: &[String]) -> Result<Vec<Ulimit>, FlagError> {
    values
        .iter()
        .map(|v| {
            parse_ulimit(v)
                .map(|u| Ulimit {
                    name: u.name.to_owned(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .map_err(|e| FlagError::new(flag, v, e))
        })
        .collect()
}

/// `--network host`: the task shares its node's network namespace.
pub const HOST_NETWORK: &str = "host";

/// `--network`/`--network-add` values: the networks, and the aliases of
/// those given in the long form.
pub fn networks(
    flag: &'static str,
    values: &[String],
) -> Result<(Vec<String>, HashMap<String, Aliases>), FlagError> {
    let mut names = Vec::new();
    let mut aliases: HashMap<String, Aliases> = HashMap::new();
    for v in values {
        let a = parse_network(v).map_err(|e| FlagError::new(flag, v, e))?;
        if !a.aliases.is_empty() {
            aliases
                .entry(a.network.clone())
                .or_default()
                .aliases
                .extend(a.aliases);
        }
        names.push(a.network);
    }
    Ok((names, aliases))
}

/// docker's PORTS column: the ingress ports, which answer on every node
/// (`service ls` leaves host-mode ports to `service inspect`, as docker).
pub fn ports_column(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .filter(|p| p.publish_mode != PublishMode::Host as i32)
        .map(|p| {
            let protocol = word::<Protocol>(p.protocol);
            format!("*:{}->{}/{protocol}", p.published_port, p.target_port)
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_scale(s: &str) -> Result<(String, u64), FlagError> {
    match s.split_once('=') {
        Some((name, n)) if !name.is_empty() => n
            .parse()
            .map(|n| (name.to_owned(), n))
            .map_err(|_| FlagError::new("SERVICE=REPLICAS", s, Problem::ScaleForm)),
        _ => Err(FlagError::new("SERVICE=REPLICAS", s, Problem::ScaleForm)),
    }
}

#[derive(Serialize)]
struct ServiceJson<'a> {
    id: &'a str,
    name: &'a str,
    mode: Cow<'static, str>,
    running: u64,
    desired: u64,
    command: &'a [String],
    networks: &'a [String],
    env: &'a [String],
    constraints: &'a [String],
    restart_condition: Cow<'static, str>,
    restart_delay_secs: u64,
    restart_max_attempts: u64,
    /// `--restart-window`, in nanoseconds as docker's JSON; left out when
    /// unset, so older services print as they did.
    #[serde(skip_serializing_if = "crate::container::empty")]
    restart_window_ns: u64,
    /// network → the service's aliases there.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    network_aliases: BTreeMap<&'a str, &'a [String]>,
    /// `--replicas-max-per-node`; left out when 0 (unlimited).
    #[serde(skip_serializing_if = "crate::container::empty")]
    max_replicas_per_node: u64,
    /// The image docker-style: `busybox@sha256:…` once pinned, or `host`.
    image: String,
    /// Set only for a service stored with `--rootfs` by an older build.
    rootfs: Option<&'a str>,
    labels: BTreeMap<&'a str, &'a str>,
    endpoint_mode: Cow<'static, str>,
    ports: Vec<PortJson>,
    vips: Vec<VipJson<'a>>,
    /// docker's `Spec`: TaskTemplate, UpdateConfig, RollbackConfig.
    #[serde(rename = "Spec", skip_serializing_if = "Option::is_none")]
    spec: Option<SpecJson<'a>>,
    /// The spec `service rollback` returns to, as docker's `PreviousSpec`.
    #[serde(rename = "PreviousSpec", skip_serializing_if = "Option::is_none")]
    previous_spec: Option<SpecJson<'a>>,
    #[serde(rename = "UpdateStatus", skip_serializing_if = "Option::is_none")]
    update_status: Option<inspect::UpdateStatusJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SpecJson<'a> {
    name: &'a str,
    task_template: crate::container::TaskTemplateJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_config: Option<inspect::UpdateConfigJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_config: Option<inspect::UpdateConfigJson>,
}

fn spec_json(s: &ServiceSummary) -> Option<SpecJson<'_>> {
    crate::container::task_template(s).map(|task_template| SpecJson {
        name: &s.name,
        task_template,
        update_config: s.update_config.as_ref().map(inspect::update_config_json),
        rollback_config: s.rollback_config.as_ref().map(inspect::update_config_json),
    })
}

#[derive(Serialize)]
struct PortJson {
    protocol: Cow<'static, str>,
    target_port: u32,
    published_port: u32,
    publish_mode: Cow<'static, str>,
}

#[derive(Serialize)]
struct VipJson<'a> {
    network_id: &'a str,
    network: &'a str,
    addr: String,
}

fn service_json(s: &ServiceSummary) -> ServiceJson<'_> {
    let r = s.restart.as_ref();
    ServiceJson {
        id: &s.id,
        name: &s.name,
        mode: word::<ServiceMode>(s.mode),
        running: s.running,
        desired: s.desired,
        command: &s.args,
        networks: &s.networks,
        env: &s.env,
        constraints: &s.constraints,
        restart_condition: r.map_or("".into(), |r| word::<RestartCondition>(r.condition)),
        restart_delay_secs: r.map_or(0, |r| r.delay_secs),
        restart_max_attempts: r.map_or(0, |r| r.max_attempts),
        restart_window_ns: r.map_or(0, |r| r.window_ns),
        network_aliases: s
            .network_aliases
            .iter()
            .map(|(n, a)| (n.as_str(), a.aliases.as_slice()))
            .collect(),
        max_replicas_per_node: s.max_replicas_per_node,
        image: s
            .container
            .as_ref()
            .map(crate::container::pinned)
            .unwrap_or_default(),
        rootfs: (!s.legacy_rootfs.is_empty()).then_some(s.legacy_rootfs.as_str()),
        spec: spec_json(s),
        previous_spec: s.previous_spec.as_deref().and_then(spec_json),
        update_status: s.update_status.as_ref().map(inspect::update_status_json),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        endpoint_mode: word::<EndpointMode>(s.endpoint_mode),
        ports: s
            .ports
            .iter()
            .map(|p| PortJson {
                protocol: word::<Protocol>(p.protocol),
                target_port: p.target_port,
                published_port: p.published_port,
                publish_mode: word::<PublishMode>(p.publish_mode),
            })
            .collect(),
        vips: s
            .vips
            .iter()
            .map(|v| VipJson {
                network_id: &v.network_id,
                network: &v.network,
                addr: v.addr.map(|a| a.to_string()).unwrap_or_default(),
            })
            .collect(),
    }
}

/// `service inspect --pretty`, in docker's layout.
fn service_text(s: &ServiceSummary) -> String {
    let mut out = format!(
        "ID:		{}
Name:		{}
",
        s.id, s.name
    );
    if !s.labels.is_empty() {
        out.push_str(
            "Labels:
",
        );
        let labels: BTreeMap<_, _> = s.labels.iter().collect();
        for (k, v) in labels {
            out.push_str(&format!(
                " {k}={v}
"
            ));
        }
    }
    out.push_str(&format!(
        "Service Mode:	{}
",
        crate::output::pretty(&word::<ServiceMode>(s.mode))
    ));
    if s.mode == ServiceMode::Replicated as i32 {
        out.push_str(&format!(
            " Replicas:	{}
",
            s.desired
        ));
    }
    if let Some(u) = &s.update_status {
        out.push_str(&inspect::update_status_text(u));
    }
    out.push_str("Placement:\n");
    if !s.constraints.is_empty() {
        out.push_str(&format!(" Constraints:\t[{}]\n", s.constraints.join(" ")));
    }
    if s.max_replicas_per_node != 0 {
        out.push_str(&format!(
            " Max Replicas Per Node:   {}\n",
            s.max_replicas_per_node
        ));
    }
    if !s.placement_prefs.is_empty() {
        // docker prints each as Spread=DESCRIPTOR.
        let prefs: Vec<String> = s
            .placement_prefs
            .iter()
            .map(|p| format!("Spread={}", p.strip_prefix("spread=").unwrap_or(p)))
            .collect();
        out.push_str(&format!(" Preferences:   [{}]\n", prefs.join(" ")));
    }
    if let Some(c) = &s.update_config {
        out.push_str(&inspect::config_text("UpdateConfig", "Update order", c));
    }
    if let Some(c) = &s.rollback_config {
        out.push_str(&inspect::config_text("RollbackConfig", "Rollback order", c));
    }
    if let Some(r) = &s.restart {
        out.push_str(&format!(
            "RestartPolicy:
 Condition:	{}
 Delay:		{}s
 Max attempts:	{}
",
            word::<RestartCondition>(r.condition),
            r.delay_secs,
            r.max_attempts
        ));
        if r.window_ns != 0 {
            out.push_str(&format!(
                " Window:\t\t{}\n",
                crate::parse::go_string(r.window_ns)
            ));
        }
    }
    out.push_str(&crate::container::pretty(s));
    if !s.legacy_rootfs.is_empty() {
        out.push_str(&format!(
            " Rootfs:\t{} (not run any more: recreate the service)\n",
            s.legacy_rootfs
        ));
    }
    if s.container.as_ref().is_some_and(|c| c.network_host) {
        out.push_str(&format!("Networks:\t{HOST_NETWORK}\n"));
    }
    if !s.networks.is_empty() {
        out.push_str(&format!(
            "Networks:	{}
",
            s.networks.join(" ")
        ));
        let aliases: BTreeMap<_, _> = s.network_aliases.iter().collect();
        for (net, a) in aliases {
            out.push_str(&format!(" {net} aliases:\t{}\n", a.aliases.join(", ")));
        }
    }
    out.push_str(&format!(
        "Endpoint Mode:	{}
",
        word::<EndpointMode>(s.endpoint_mode)
    ));
    if !s.ports.is_empty() {
        out.push_str(
            "Ports:
",
        );
        for p in &s.ports {
            out.push_str(&format!(
                " PublishedPort = {}
  Protocol = {}
  TargetPort = {}
  PublishMode = {}
",
                p.published_port,
                word::<Protocol>(p.protocol),
                p.target_port,
                word::<PublishMode>(p.publish_mode)
            ));
        }
    }
    if !s.vips.is_empty() {
        out.push_str(
            "Virtual IPs:
",
        );
        for v in &s.vips {
            out.push_str(&format!(
                " {}:	{}
",
                v.network,
                v.addr.map(|a| a.to_string()).unwrap_or_default()
            ));
        }
    }
    out
}

/// Sends an update (or rollback) and, unless detached, follows it as
/// docker does.
async fn update(
    host: &str,
    req: UpdateServiceRequest,
    service: &str,
    detach: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut d = client::connect(host).await?;
    let s = client::call(host, d.control.update_service(req)).await?;
    for w in &s.warnings {
        eprint!("{w}");
    }
    println!("{service}");
    if detach {
        return Ok(());
    }
    progress::follow(&mut d, &s.id, service, quiet).await
}

/// `service ls` (and `stack services`): ids, a table, or JSON.
pub fn print_list(all: &[ServiceSummary], quiet: bool, format: Format) -> anyhow::Result<()> {
    if quiet {
        all.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    match format {
        Format::Json => {
            let v: Vec<_> = all.iter().map(service_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let mut t = table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
            for s in all {
                t.add_row(vec![
                    s.id.get(..12).unwrap_or(&s.id).to_owned(),
                    s.name.clone(),
                    word::<ServiceMode>(s.mode).into_owned(),
                    format!("{}/{}", s.running, s.desired),
                    crate::container::ls_image(s),
                    ports_column(&s.ports),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

/// `service ps` (and `stack ps`) of tasks already fetched and filtered.
pub fn print_tasks(
    all: Vec<shoal_api::cluster::v1::TaskSummary>,
    quiet: bool,
    no_trunc: bool,
    format: Format,
) -> anyhow::Result<()> {
    let all = ps::history(all);
    let trunc = !no_trunc;
    if quiet {
        print!("{}", ps::quiet_text(&all, trunc));
    } else if format == Format::Json {
        let v: Vec<_> = all.iter().map(ps::task_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", ps::table_text(&all, trunc));
    }
    Ok(())
}

pub async fn run(host: &str, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create(a) => {
            let req = request(&a)?;
            let mut d = client::connect(host).await?;
            let s = client::call(host, d.control.create_service(req)).await?;
            for w in &s.warnings {
                eprint!("{w}");
            }
            println!("{}", s.id);
            if a.detach {
                return Ok(());
            }
            progress::follow(&mut d, &s.id, &s.id, a.quiet).await
        }
        ServiceCmd::Ls(ListFlags { quiet, format }) => {
            let mut d = client::connect(host).await?;
            let mut all = client::call(host, d.control.list_services(ListServicesRequest {}))
                .await?
                .services;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            print_list(&all, quiet, format)
        }
        ServiceCmd::Ps {
            services,
            filter,
            quiet,
            no_trunc,
            format,
        } => {
            let filters = filter
                .iter()
                .map(|f| ps::parse_filter(f))
                .collect::<Result<Vec<_>, _>>()?;
            let mut d = client::connect(host).await?;
            let (mut all, mut failed) = (Vec::new(), Vec::new());
            for service in services {
                match client::call(host, d.control.list_tasks(ListTasksRequest { service })).await {
                    Ok(r) => all.extend(r.tasks.into_iter().filter(|t| ps::keep(&filters, t))),
                    Err(e) => failed.push(e),
                }
            }
            print_tasks(all, quiet, no_trunc, format)?;
            finish(failed)
        }
        ServiceCmd::Inspect {
            services,
            pretty,
            format,
        } => {
            let d = client::connect(host).await?;
            let inspect = |mut c: client::Control, service| async move {
                c.inspect_service(ServiceRef { service }).await
            };
            let (found, failed) = client::each_named(&d, services, inspect).await;
            let found: Vec<_> = found.into_iter().map(|(_, s)| s).collect();
            if pretty || format == Format::Table {
                let texts: Vec<String> = found.iter().map(service_text).collect();
                print!("{}", texts.join("\n"));
            } else {
                let v: Vec<_> = found.iter().map(service_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            finish(failed)
        }
        ServiceCmd::Update(a) => {
            let req = update_request(&a)?;
            update(host, req, &a.service, a.detach, a.quiet).await
        }
        ServiceCmd::Rollback {
            service,
            detach,
            quiet,
        } => {
            let req = UpdateServiceRequest {
                service: service.clone(),
                rollback: true,
                ..Default::default()
            };
            update(host, req, &service, detach, quiet).await
        }
        ServiceCmd::Scale { scales, detach } => {
            let wanted = scales
                .iter()
                .map(|s| parse_scale(s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut d = client::connect(host).await?;
            let mut failed = Vec::new();
            for (service, replicas) in wanted {
                let r = d.control.scale_service(ScaleServiceRequest {
                    service: service.clone(),
                    replicas,
                });
                match client::call(host, r).await {
                    Ok(s) => {
                        println!("{service} scaled to {replicas}");
                        if !detach
                            && let Err(e) = progress::follow(&mut d, &s.id, &service, false).await
                        {
                            failed.push(e);
                        }
                    }
                    Err(e) => failed.push(e),
                }
            }
            finish(failed)
        }
        ServiceCmd::Logs(a) => crate::logs::run(host, a).await,
        ServiceCmd::Rm { services } => {
            let d = client::connect(host).await?;
            let remove = |mut c: client::Control, service| async move {
                c.remove_service(ServiceRef { service }).await
            };
            client::remove_named(&d, services, remove).await
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The word of a wire value, `?` for one that is not its enum's.
    fn w<T: Word>(v: i32) -> &'static str {
        T::try_from(v).ok().map_or("?", T::word)
    }

    #[test]
    fn scale_arguments() {
        assert_eq!(parse_scale("web=3").ok(), Some(("web".into(), 3)));
        for bad in ["web", "=3", "web=-1", "web=x"] {
            let e = parse_scale(bad)
                .err()
                .map(|e| format!("{:#}", anyhow::Error::from(e)));
            assert!(e.unwrap_or_default().contains("SERVICE=REPLICAS"), "{bad}");
        }
    }

    #[test]
    fn secrets_and_configs_take_docker_forms() -> anyhow::Result<()> {
        let a = create_args(&[
            "--secret",
            "db_pass",
            "--secret",
            "source=db_pass,target=/etc/pw,uid=1000,gid=1000,mode=0400",
            "--config",
            "src=app,target=/etc/app.conf,mode=0440",
        ])?;
        let c = request(&a)?.container.unwrap_or_default();
        let secrets: Vec<(&str, &str, u32, u32)> = c
            .secrets
            .iter()
            .map(|r| (r.source.as_str(), r.target.as_str(), r.uid, r.mode))
            .collect();
        assert_eq!(
            secrets,
            [("db_pass", "", 0, 0), ("db_pass", "/etc/pw", 1000, 0o400)]
        );
        assert_eq!(
            (
                c.configs[0].source.as_str(),
                c.configs[0].target.as_str(),
                c.configs[0].mode
            ),
            ("app", "/etc/app.conf", 0o440)
        );
        let a = create_args(&["--secret", "source=db,mode=0777,colour=red"])?;
        assert_eq!(
            request(&a).err().map(chain).unwrap_or_default(),
            "--secret source=db,mode=0777,colour=red: unknown key \"colour\"; the keys are: \
             source (or src), target, uid, gid, mode"
        );
        Ok(())
    }

    fn create_args(extra: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut argv = vec!["shoal", "--name", "web"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["host", "sleep", "1"]);
        parse_argv(&argv)
    }

    fn parse_argv(argv: &[&str]) -> Result<CreateArgs, clap::Error> {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: CreateArgs,
        }
        let m = <Cli as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches(&m).map(|c| c.a)
    }

    fn chain(e: impl Into<anyhow::Error>) -> String {
        format!("{:#}", e.into())
    }

    #[test]
    fn image_then_command_as_docker() -> anyhow::Result<()> {
        // Everything after IMAGE is the command's, flags included.
        let a = parse_argv(&[
            "shoal",
            "--name",
            "web",
            "-p",
            "80",
            "host",
            "/lab-http",
            "serve",
            "--port",
            "80",
        ])?;
        let r = request(&a)?;
        assert_eq!(r.container.as_ref().map(|c| c.image.as_str()), Some("host"));
        assert_eq!(r.args, ["/lab-http", "serve", "--port", "80"]);
        assert_eq!(r.ports.len(), 1);
        // An image alone: its own command.
        let a = parse_argv(&["shoal", "--name", "web", "busybox:1.36"])?;
        let r = request(&a)?;
        assert_eq!(
            r.container.as_ref().map(|c| c.image.as_str()),
            Some("busybox:1.36")
        );
        assert!(r.args.is_empty());
        // No image: docker's usage error.
        let a = parse_argv(&["shoal", "--name", "web"])?;
        let e = request(&a).err().map(chain).unwrap_or_default();
        assert!(
            e.starts_with("\"shoal service create\" requires at least 1 argument."),
            "{e}"
        );
        assert!(e.contains("Usage:  shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]"));
        // The old `--` form and --rootfs are gone.
        assert!(parse_argv(&["shoal", "--name", "w", "--rootfs", "/x", "host", "true"]).is_err());
        Ok(())
    }

    #[test]
    fn container_flags_reach_the_request() -> anyhow::Result<()> {
        let a = create_args(&[
            "--entrypoint",
            "/bin/sh -c",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "--hostname",
            "web-1",
            "--stop-signal",
            "SIGINT",
            "--stop-grace-period",
            "30s",
            "--read-only",
            "--init",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "MKNOD",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--limit-cpu",
            "0.5",
            "--limit-memory",
            "64M",
            "--limit-pids",
            "100",
            "--reserve-cpu",
            ".25",
            "--reserve-memory",
            "32m",
            "--mount",
            "type=bind,source=/srv,target=/data,readonly",
            "--mount",
            "type=tmpfs,target=/run/t,tmpfs-size=1g",
        ])?;
        let r = request(&a)?;
        let c = r.container.unwrap_or_default();
        assert_eq!(
            c.entrypoint.map(|e| e.args),
            Some(vec!["/bin/sh".into(), "-c".into()])
        );
        assert_eq!((c.workdir.as_str(), c.user.as_str()), ("/srv", "1000:1000"));
        assert_eq!(
            (c.hostname.as_str(), c.stop_signal.as_str()),
            ("web-1", "SIGINT")
        );
        assert_eq!(c.stop_grace_period_ns, Some(30_000_000_000));
        assert!(c.read_only && c.init);
        assert_eq!(
            (c.cap_add, c.cap_drop),
            (vec!["NET_ADMIN".into()], vec!["MKNOD".into()])
        );
        assert_eq!(
            c.sysctls.get("net.core.somaxconn").map(String::as_str),
            Some("1024")
        );
        assert_eq!(c.mounts.len(), 2);
        assert!(c.mounts[0].read_only);
        assert_eq!(c.mounts[1].tmpfs_size_bytes, 1 << 30);
        let res = r.resources.unwrap_or_default();
        assert_eq!(
            (res.limit_nano_cpus, res.limit_memory_bytes, res.limit_pids),
            (500_000_000, 64 << 20, 100)
        );
        assert_eq!(
            (res.reserve_nano_cpus, res.reserve_memory_bytes),
            (250_000_000, 32 << 20)
        );
        // Not given: unset, so the manager applies docker's defaults.
        let r = request(&create_args(&[])?)?;
        let c = r.container.unwrap_or_default();
        assert_eq!((c.entrypoint, c.stop_grace_period_ns), (None, None));
        // `--entrypoint ""` clears the image's.
        let r = request(&create_args(&["--entrypoint", ""])?)?;
        assert_eq!(
            r.container.and_then(|c| c.entrypoint).map(|e| e.args),
            Some(vec![])
        );
        // Each bad value names its flag.
        let bad: &[(&[&str], &str)] = &[
            (
                &["--limit-memory", "lots"],
                "--limit-memory lots: expected a size",
            ),
            (
                &["--reserve-memory", "1x"],
                "--reserve-memory 1x: expected a size",
            ),
            (
                &["--limit-cpu", "half"],
                "--limit-cpu half: expected a number of CPUs",
            ),
            (
                &["--reserve-cpu", "0.0000000001"],
                "--reserve-cpu 0.0000000001: value is too precise",
            ),
            (&["--sysctl", "x"], "--sysctl x: expected KEY=VALUE"),
            (
                &["--mount", "type=bind,target=/t"],
                "--mount type=bind,target=/t: a bind mount needs source=",
            ),
            (
                &["--mount", "source=v"],
                "--mount source=v: target is required",
            ),
            (
                &["--stop-grace-period", "1d"],
                "--stop-grace-period 1d: unknown unit",
            ),
        ];
        for (flags, want) in bad {
            let e = request(&create_args(flags)?)
                .err()
                .map(chain)
                .unwrap_or_default();
            assert!(e.starts_with(want), "{flags:?}: {e}");
        }
        Ok(())
    }

    #[test]
    fn inspect_shows_the_container_as_docker() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let s = ServiceSummary {
            name: "web".into(),
            args: vec!["sleep".into(), "1".into()],
            container: Some(ContainerSpec {
                image: "busybox".into(),
                image_digest: digest.clone(),
                init: true,
                mounts: vec![parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap_or_default()],
                ..Default::default()
            }),
            resources: Some(Resources {
                reserve_memory_bytes: 32 << 20,
                limit_nano_cpus: 500_000_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(crate::container::ls_image(&s), "busybox:latest");
        let json = serde_json::to_value(service_json(&s)).unwrap_or_default();
        let spec = &json["Spec"]["TaskTemplate"];
        assert_eq!(
            spec["ContainerSpec"]["Image"],
            format!("busybox:latest@{digest}")
        );
        assert_eq!(json["image"], format!("busybox:latest@{digest}"));
        assert_eq!(spec["ContainerSpec"]["Args"][1], "1");
        assert_eq!(spec["ContainerSpec"]["Init"], true);
        assert_eq!(spec["ContainerSpec"]["Mounts"][0]["Type"], "tmpfs");
        assert_eq!(
            spec["ContainerSpec"]["Mounts"][0]["TmpfsOptions"]["SizeBytes"],
            1 << 20
        );
        assert_eq!(spec["Resources"]["Reservations"]["MemoryBytes"], 32 << 20);
        assert_eq!(spec["Resources"]["Limits"]["NanoCPUs"], 500_000_000);
        assert!(spec["Resources"]["Limits"].get("MemoryBytes").is_none());
        let text = service_text(&s);
        assert!(
            text.contains(&format!(
                "ContainerSpec:\n Image:\t\tbusybox:latest@{digest}\n Args:\t\tsleep 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "Resources:\n Reservations:\n  Memory:\t32MiB\n Limits:\n  CPU:\t\t0.5\n"
            ),
            "{text}"
        );
        assert!(text.contains("Mounts:\n Target:\t/t\n"), "{text}");
        assert!(spec["ContainerSpec"].get("Secrets").is_none());
        let with_files = ServiceSummary {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                secrets: vec![shoal_api::cluster::v1::FileReference {
                    source: "db_pass".into(),
                    id: "sid".into(),
                    name: "db_pass".into(),
                    target: "db_pass".into(),
                    uid: 0,
                    gid: 0,
                    mode: 0o444,
                }],
                configs: vec![shoal_api::cluster::v1::FileReference {
                    id: "cid".into(),
                    name: "app".into(),
                    target: "/etc/app.conf".into(),
                    uid: 1,
                    gid: 2,
                    mode: 0o440,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(service_json(&with_files)).unwrap_or_default();
        let c = &json["Spec"]["TaskTemplate"]["ContainerSpec"];
        assert_eq!(
            c["Secrets"][0],
            serde_json::json!({"File": {"Name": "db_pass", "UID": "0", "GID": "0", "Mode": 292},
                "SecretID": "sid", "SecretName": "db_pass"})
        );
        assert_eq!(c["Configs"][0]["File"]["Name"], "/etc/app.conf");
        assert_eq!(c["Configs"][0]["File"]["GID"], "2");
        assert_eq!(c["Configs"][0]["ConfigName"], "app");
        let text = service_text(&with_files);
        assert!(
            text.contains("Secrets:\n Target:\tdb_pass\n  Source:\tdb_pass\nConfigs:\n Target:\t/etc/app.conf\n  Source:\tapp\n"),
            "{text}"
        );
        let host = ServiceSummary {
            container: Some(ContainerSpec {
                image: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(crate::container::ls_image(&host), "host");
    }

    #[test]
    fn publish_flags_reach_the_request() -> anyhow::Result<()> {
        let a = create_args(&[
            "-p",
            "8080:80",
            "--publish",
            "published=53,target=53,protocol=udp,mode=host",
            "-p",
            "81",
        ])?;
        let r = request(&a)?;
        let got: Vec<(u32, u32, &str, &str)> = r
            .ports
            .iter()
            .map(|p| {
                (
                    p.published_port,
                    p.target_port,
                    w::<Protocol>(p.protocol),
                    w::<PublishMode>(p.publish_mode),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (8080, 80, "tcp", "ingress"),
                (53, 53, "udp", "host"),
                (0, 81, "tcp", "ingress")
            ]
        );
        assert_eq!(w::<EndpointMode>(r.endpoint_mode), "vip");
        let a = create_args(&["-p", "8080:80/sctp"])?;
        assert_eq!(
            request(&a).err().map(chain).unwrap_or_default(),
            "--publish 8080:80/sctp: protocol \"sctp\" is not supported: use tcp or udp"
        );
        let a = create_args(&["--endpoint-mode", "rr"])?;
        assert_eq!(
            request(&a).err().map(chain).unwrap_or_default(),
            "--endpoint-mode rr: expected vip or dnsrr"
        );
        let ports = |add: &[&str], rm: &[&str], files: &FileUpdates| {
            update_request(&UpdateArgs {
                service: "web".into(),
                publish_add: add.iter().map(|s| s.to_string()).collect(),
                publish_rm: rm.iter().map(|s| s.to_string()).collect(),
                files: files.clone(),
                ..Default::default()
            })
        };
        let r = ports(&["9090:90"], &["8080", "53/udp"], &FileUpdates::default())?;
        assert_eq!(r.publish_add[0].published_port, 9090);
        let rm: Vec<(u32, &str)> = r
            .publish_rm
            .iter()
            .map(|p| (p.published_port, w::<Protocol>(p.protocol)))
            .collect();
        assert_eq!(rm, [(8080, "tcp"), (53, "udp")]);
        let files = FileUpdates {
            secret_add: vec!["source=new_pw,target=db_pw,mode=0400".into()],
            secret_rm: vec!["old_pw".into()],
            config_add: vec!["app".into()],
            config_rm: vec!["/etc/old.conf".into()],
        };
        let r = ports(&[], &[], &files)?;
        assert_eq!(
            (
                r.secret_add[0].source.as_str(),
                r.secret_add[0].target.as_str()
            ),
            ("new_pw", "db_pw")
        );
        assert_eq!(r.secret_add[0].mode, 0o400);
        assert_eq!(
            (r.secret_rm, r.config_rm),
            (vec!["old_pw".into()], vec!["/etc/old.conf".into()])
        );
        assert_eq!(r.config_add[0].source, "app");
        let bad = FileUpdates {
            config_add: vec!["source=app,mode=999".into()],
            ..FileUpdates::default()
        };
        let e = ports(&[], &[], &bad).err().map(chain);
        assert!(
            e.unwrap_or_default()
                .starts_with("--config-add source=app,mode=999: mode=999")
        );
        let e = ports(&[], &["x"], &FileUpdates::default()).err().map(chain);
        assert!(
            e.unwrap_or_default()
                .starts_with("--publish-rm x: published port \"x\"")
        );
        Ok(())
    }

    fn port(published: u32, target: u32, protocol: &str, mode: &str) -> PortConfig {
        PortConfig {
            protocol: Protocol::from_word(protocol).map_or(0, Into::into),
            target_port: target,
            published_port: published,
            publish_mode: PublishMode::from_word(mode).map_or(0, Into::into),
        }
    }

    #[test]
    fn ports_column_and_inspect_read_like_docker() {
        let ports = vec![
            port(8080, 80, "tcp", "ingress"),
            port(30000, 53, "udp", "ingress"),
            port(9000, 90, "tcp", "host"),
        ];
        assert_eq!(ports_column(&ports), "*:8080->80/tcp,*:30000->53/udp");
        let s = ServiceSummary {
            id: "abc".into(),
            name: "web".into(),
            mode: ServiceMode::Replicated.into(),
            desired: 2,
            endpoint_mode: EndpointMode::Vip.into(),
            ports,
            vips: vec![shoal_api::cluster::v1::VirtualIp {
                network_id: "n1".into(),
                network: "ingress".into(),
                addr: Some(shoal_api::cluster::v1::Ipv4Prefix::new(
                    std::net::Ipv4Addr::new(10, 0, 0, 2),
                    24,
                )),
            }],
            ..Default::default()
        };
        let text = service_text(&s);
        assert!(text.contains("Endpoint Mode:\tvip\n"), "{text}");
        assert!(text.contains("Ports:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress\n"), "{text}");
        assert!(
            text.contains(
                " PublishedPort = 9000\n  Protocol = tcp\n  TargetPort = 90\n  PublishMode = host\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Virtual IPs:\n ingress:\t10.0.0.2/24\n"),
            "{text}"
        );
        let json = serde_json::to_value(service_json(&s)).unwrap_or_default();
        assert_eq!(json["endpoint_mode"], "vip");
        assert_eq!(json["ports"][2]["publish_mode"], "host");
        assert_eq!(json["ports"][1]["published_port"], 30000);
        assert_eq!(json["vips"][0]["network"], "ingress");
        assert_eq!(json["vips"][0]["addr"], "10.0.0.2/24");
    }

    proptest! {
        #[test]
        fn scale_parser_never_panics(s in any::<String>()) {
            let _ = parse_scale(&s);
        }
    }

    #[test]
    fn network_host_is_the_nodes_namespace_not_a_network() -> anyhow::Result<()> {
        let r = flags_request(&create_args(&["--network", "host"])?)?;
        assert!(r.networks.is_empty());
        assert_eq!(r.container.map(|c| c.network_host), Some(true));
        // Kept with another network, for the manager to refuse with both
        // named.
        let r = flags_request(&create_args(&["--network", "host", "--network", "appnet"])?)?;
        assert_eq!(r.networks, ["appnet"]);
        let r = flags_request(&create_args(&["--network", "appnet"])?)?;
        assert_eq!(r.container.map(|c| c.network_host), Some(false));
        Ok(())
    }

    #[test]
    fn stack_fields_on_create() -> anyhow::Result<()> {
        let a = create_args(&[
            "--network",
            "name=appnet,alias=web,alias=www",
            "--network",
            "backnet",
            "--replicas-max-per-node",
            "2",
            "--restart-window",
            "2m",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=100",
            "--add-host",
            "db:10.0.0.5",
        ])?;
        let r = flags_request(&a)?;
        assert_eq!(r.networks, ["appnet", "backnet"]);
        assert_eq!(r.network_aliases["appnet"].aliases, ["web", "www"]);
        assert_eq!(r.network_aliases.len(), 1);
        assert_eq!(r.max_replicas_per_node, 2);
        assert_eq!(r.restart.map(|p| p.window_ns), Some(120_000_000_000));
        let c = r.container.unwrap_or_default();
        let u: Vec<(&str, i64, i64)> = c
            .ulimits
            .iter()
            .map(|u| (u.name.as_str(), u.soft, u.hard))
            .collect();
        assert_eq!(u, [("nofile", 1024, 2048), ("nproc", 100, 100)]);
        assert_eq!(c.hosts, ["10.0.0.5 db"]);
        let bad = |extra: &[&str]| -> anyhow::Result<String> {
            Ok(flags_request(&create_args(extra)?)
                .err()
                .map(chain)
                .unwrap_or_default())
        };
        assert_eq!(
            bad(&["--ulimit", "nofile=2:1"])?,
            "--ulimit nofile=2:1: ulimit soft limit must be less than or equal to hard limit: 2 > 1"
        );
        assert!(bad(&["--add-host", "db"])?.starts_with("--add-host db: bad format for add-host"));
        assert!(bad(&["--network", "alias=x"])?.contains("give name=NETWORK"));
        assert!(
            bad(&["--mode", "global", "--replicas-max-per-node", "1"])?
                .contains("drop --replicas-max-per-node")
        );
        Ok(())
    }
}
