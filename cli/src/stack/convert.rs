//! A loaded stack as Shoal's API requests, converted as docker/cli's
//! `cli/compose/convert` converts it for swarm: names scoped
//! `STACK_name`, the stack label on every object, each service reachable
//! on its networks by its short name (an alias), a `STACK_default` network
//! for services that name none. A key Shoal cannot honour yet is either
//! refused (it changes what runs or who can reach it) or warned about
//! (it only changes the container's terminal, logs or DNS options), never
//! dropped silently.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_api::cluster::v1::{
    Aliases, ContainerSpec, CreateConfigRequest, CreateNetworkRequest, CreateSecretRequest,
    CreateServiceRequest, EndpointMode, Entrypoint, FailureAction, FileReference, HealthConfig,
    Mount, MountType, PortConfig, Protocol, PublishMode, Resources, RestartCondition,
    RestartPolicy, ServiceMode, Ulimit, UpdateConfig, UpdateOrder,
};
use shoal_compose::model::{self as compose, Config, Duration};

use super::NAMESPACE_LABEL;

/// docker's overlay MTU option.
const MTU_OPT: &str = "com.docker.network.driver.mtu";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// docker's words where docker refuses the same.
    #[error("service {service:?} references network {network:?}, which is not declared")]
    UndeclaredNetwork { service: String, network: String },
    #[error("service {service:?}: undefined volume {volume:?}")]
    UndefinedVolume { service: String, volume: String },
    #[error("undefined {kind} {name:?}")]
    UndefinedFile { kind: &'static str, name: String },
    #[error("{kind} {name:?}: reading {file}: {message}")]
    ReadFile {
        kind: &'static str,
        name: String,
        file: String,
        message: String,
    },
    #[error("{kind} {name:?} has neither a file nor external: true; give it `file: PATH`")]
    NoFile { kind: &'static str, name: String },
    /// `services.web.deploy.mode: batch` → names the key and the fix.
    #[error("{key}: {problem}")]
    Key { key: String, problem: String },
}

fn key_err(key: impl Into<String>, problem: impl Into<String>) -> ConvertError {
    ConvertError::Key {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A converted service, with the key it had in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    pub key: String,
    pub request: CreateServiceRequest,
}

/// Everything `stack deploy` makes or checks, in docker's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub namespace: String,
    pub networks: Vec<CreateNetworkRequest>,
    pub external_networks: Vec<String>,
    pub secrets: Vec<CreateSecretRequest>,
    pub external_secrets: Vec<String>,
    pub configs: Vec<CreateConfigRequest>,
    pub external_configs: Vec<String>,
    pub services: Vec<PlannedService>,
    /// Keys Shoal does not honour yet, one line per kind, as docker's
    /// "Ignoring unsupported options" lines.
    pub warnings: Vec<String>,
}

fn scope(ns: &str, name: &str) -> String {
    format!("{ns}_{name}")
}

fn with_stack_label(ns: &str, labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = labels.clone().into_iter().collect();
    out.insert(NAMESPACE_LABEL.to_owned(), ns.to_owned());
    out
}

fn nanos(key: &str, d: Duration) -> Result<u64, ConvertError> {
    u64::try_from(d.nanos()).map_err(|_| key_err(key, format!("must not be negative, got {d}")))
}

/// The whole stack, converted; files named by secrets and configs are read
/// here, so nothing is created from a stack that cannot be read whole.
pub fn plan(ns: &str, config: &Config) -> Result<Plan, ConvertError> {
    let mut plan = Plan {
        namespace: ns.to_owned(),
        ..Plan::default()
    };
    let mut unsupported: BTreeSet<String> = BTreeSet::new();
    networks(ns, config, &mut plan, &mut unsupported)?;
    let external = |objects: &BTreeMap<String, compose::FileObject>| -> Vec<String> {
        objects
            .iter()
            .filter(|(_, o)| o.external)
            .map(|(key, o)| o.name.clone().unwrap_or_else(|| key.clone()))
            .collect()
    };
    plan.external_secrets = external(&config.secrets);
    plan.external_configs = external(&config.configs);
    for (key, o) in &config.secrets {
        if o.external {
            continue;
        }
        if o.driver.is_some() {
            return Err(key_err(
                format!("secrets.{key}.driver"),
                "secret store drivers are not supported by Shoal; use `file:`",
            ));
        }
        plan.secrets.push(CreateSecretRequest {
            name: o.name.clone().unwrap_or_else(|| scope(ns, key)),
            labels: with_stack_label(ns, &o.labels),
            data: read_file("secret", key, o)?,
        });
    }
    for (key, o) in &config.configs {
        if o.external {
            continue;
        }
        let template_driver = match o.template_driver.as_deref() {
            None | Some("") => String::new(),
            Some("golang") => "golang".to_owned(),
            Some(other) => {
                return Err(key_err(
                    format!("configs.{key}.template_driver"),
                    format!("unsupported template driver {other:?}; Shoal knows \"golang\""),
                ));
            }
        };
        plan.configs.push(CreateConfigRequest {
            name: o.name.clone().unwrap_or_else(|| scope(ns, key)),
            labels: with_stack_label(ns, &o.labels),
            data: read_file("config", key, o)?,
            template_driver,
        });
    }
    for (key, s) in &config.services {
        let request = service(ns, key, s, config, &mut unsupported)?;
        plan.services.push(PlannedService {
            key: key.clone(),
            request,
        });
    }
    if !unsupported.is_empty() {
        let list: Vec<String> = unsupported.into_iter().collect();
        plan.warnings.push(format!(
            "Ignoring options Shoal does not support yet: {}",
            list.join(", ")
        ));
    }
    Ok(plan)
}

fn read_file(
    kind: &'static str,
    key: &str,
    o: &compose::FileObject,
) -> Result<Vec<u8>, ConvertError> {
    let Some(file) = &o.file else {
        return Err(ConvertError::NoFile {
            kind,
            name: key.to_owned(),
        });
    };
    std::fs::read(file).map_err(|e| ConvertError::ReadFile {
        kind,
        name: key.to_owned(),
        file: file.display().to_string(),
        message: e.to_string(),
    })
}

/// The networks services use (and `default` when one names none): the
/// external ones to check, the others to create.
fn networks(
    ns: &str,
    config: &Config,
    plan: &mut Plan,
    unsupported: &mut BTreeSet<String>,
) -> Result<(), ConvertError> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for (key, s) in &config.services {
        if s.networks.is_empty() {
            used.insert("default");
        }
        for n in s.networks.keys() {
            if n != "default" && !config.networks.contains_key(n) {
                return Err(ConvertError::UndeclaredNetwork {
                    service: key.clone(),
                    network: n.clone(),
                });
            }
            used.insert(n);
        }
    }
    for key in used {
        let Some(n) = config.networks.get(key) else {
            // `default`, not declared: an overlay with the stack's label.
            plan.networks.push(CreateNetworkRequest {
                name: scope(ns, key),
                driver: "overlay".into(),
                labels: with_stack_label(ns, &BTreeMap::new()),
                ..Default::default()
            });
            continue;
        };
        if n.external {
            plan.external_networks
                .push(n.name.clone().unwrap_or_else(|| key.to_owned()));
            continue;
        }
        let at = |k: &str| format!("networks.{key}.{k}");
        match n.driver.as_deref() {
            None | Some("") | Some("overlay") => {}
            Some(other) => {
                return Err(key_err(
                    at("driver"),
                    format!("driver {other:?}: Shoal's swarm networks are overlays; use overlay"),
                ));
            }
        }
        let mut req = CreateNetworkRequest {
            name: n.name.clone().unwrap_or_else(|| scope(ns, key)),
            driver: "overlay".into(),
            attachable: n.attachable,
            internal: n.internal,
            labels: with_stack_label(ns, &n.labels),
            ..Default::default()
        };
        for (k, v) in &n.driver_opts {
            match k.as_str() {
                "encrypted" => {
                    req.encryption = shoal_api::words::encryption_opt(v)
                        .ok_or_else(|| {
                            key_err(
                                at(&format!("driver_opts.{k}")),
                                shoal_api::words::ENCRYPTION_OPT_HELP,
                            )
                        })?
                        .into()
                }
                MTU_OPT => {
                    req.mtu = v.parse().map_err(|_| {
                        key_err(at(&format!("driver_opts.{k}")), "must be a number of bytes")
                    })?
                }
                _ => {
                    unsupported.insert(format!("networks.{key}.driver_opts.{k}"));
                }
            }
        }
        if let Some(d) = n.ipam.driver.as_deref().filter(|d| *d != "default") {
            return Err(key_err(
                at("ipam.driver"),
                format!("IPAM driver {d:?} is not supported; leave it out"),
            ));
        }
        match n.ipam.subnets.as_slice() {
            [] => {}
            [one] => req.subnet = one.clone(),
            _ => {
                return Err(key_err(
                    at("ipam.config"),
                    "Shoal's overlays have one subnet; give one",
                ));
            }
        }
        plan.networks.push(req);
    }
    Ok(())
}

/// The name a service's network has in the cluster.
fn network_name(ns: &str, key: &str, config: &Config) -> String {
    match config.networks.get(key) {
        Some(n) if n.external || n.name.is_some() => n.name.clone().unwrap_or_else(|| key.into()),
        _ => scope(ns, key),
    }
}

fn service(
    ns: &str,
    key: &str,
    s: &compose::Service,
    config: &Config,
    unsupported: &mut BTreeSet<String>,
) -> Result<CreateServiceRequest, ConvertError> {
    let at = |k: &str| format!("services.{key}.{k}");
    if s.image.is_empty() {
        return Err(key_err(
            at("image"),
            "a stack's services need an image (build: is not supported by stack deploy)",
        ));
    }
    let d = &s.deploy;
    let (mode, replicas) = match d.mode.as_deref() {
        None | Some("") | Some("replicated") => (ServiceMode::Replicated, d.replicas.unwrap_or(1)),
        Some("global") => {
            if d.replicas.is_some() {
                return Err(key_err(
                    at("deploy.replicas"),
                    "replicas can only be used with replicated or replicated-job mode",
                ));
            }
            (ServiceMode::Global, 0)
        }
        Some(m @ ("replicated-job" | "global-job")) => {
            return Err(key_err(
                at("deploy.mode"),
                format!("{m}: jobs are not supported by Shoal yet; use replicated or global"),
            ));
        }
        Some(other) => {
            return Err(key_err(
                at("deploy.mode"),
                format!("unsupported mode: {other}"),
            ));
        }
    };
    let endpoint_mode = match d.endpoint_mode.as_deref() {
        None | Some("") | Some("vip") => EndpointMode::Vip,
        Some("dnsrr") => EndpointMode::Dnsrr,
        Some(other) => {
            return Err(key_err(
                at("deploy.endpoint_mode"),
                format!("unknown endpoint mode {other:?}; use vip or dnsrr"),
            ));
        }
    };

    // Networks: each attachment is also reachable by the service's short
    // name (docker's alias), so `redis` resolves inside the stack.
    let mut networks = Vec::new();
    let mut network_aliases = HashMap::new();
    let mut attached: Vec<(&str, Option<&compose::ServiceNetwork>)> = s
        .networks
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_ref()))
        .collect();
    if attached.is_empty() {
        attached.push(("default", None));
    }
    for (net, opts) in attached {
        let name = network_name(ns, net, config);
        let mut aliases: Vec<String> = opts.map(|o| o.aliases.clone()).unwrap_or_default();
        aliases.push(key.to_owned());
        if let Some(o) = opts {
            if o.ipv4_address.is_some() || o.ipv6_address.is_some() {
                unsupported.insert(format!("services.{key}.networks.{net}.ipv4_address"));
            }
            if !o.driver_opts.is_empty() {
                unsupported.insert(format!("services.{key}.networks.{net}.driver_opts"));
            }
        }
        network_aliases.insert(name.clone(), Aliases { aliases });
        networks.push(name);
    }

    let mut env: Vec<String> = s
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    env.sort();

    let ports = s
        .ports
        .iter()
        .map(|p| port(&at("ports"), p))
        .collect::<Result<Vec<_>, _>>()?;

    let mut mounts = Vec::new();
    for v in &s.volumes {
        mounts.push(mount(ns, key, v, config)?);
    }

    let file_ref = |kind: &'static str,
                    r: &compose::FileReference,
                    objects: &BTreeMap<String, compose::FileObject>|
     -> Result<FileReference, ConvertError> {
        let obj = objects
            .get(&r.source)
            .ok_or_else(|| ConvertError::UndefinedFile {
                kind,
                name: r.source.clone(),
            })?;
        let source = match &obj.name {
            Some(n) => n.clone(),
            None if obj.external => r.source.clone(),
            None => scope(ns, &r.source),
        };
        let target = match (&r.target, kind) {
            (Some(t), _) if !t.is_empty() => t.clone(),
            // A config without a target lands at /<key>, a secret at
            // /run/secrets/<key>.
            (_, "config") => format!("/{}", r.source),
            _ => r.source.clone(),
        };
        let id = |field: &str, v: &Option<String>| -> Result<u32, ConvertError> {
            match v.as_deref() {
                None | Some("") => Ok(0),
                Some(x) => x.parse().map_err(|_| {
                    key_err(
                        format!("services.{key}.{kind}s.{}.{field}", r.source),
                        format!("{x:?}: must be a numeric id"),
                    )
                }),
            }
        };
        Ok(FileReference {
            source,
            target,
            uid: id("uid", &r.uid)?,
            gid: id("gid", &r.gid)?,
            mode: r.mode.unwrap_or(0o444),
            ..Default::default()
        })
    };
    let secrets = s
        .secrets
        .iter()
        .map(|r| file_ref("secret", r, &config.secrets))
        .collect::<Result<Vec<_>, _>>()?;
    let configs = s
        .configs
        .iter()
        .map(|r| file_ref("config", r, &config.configs))
        .collect::<Result<Vec<_>, _>>()?;

    let healthcheck = match &s.healthcheck {
        None => None,
        Some(h) => Some(health(&at("healthcheck"), h)?),
    };

    let mut ulimits: Vec<Ulimit> = s
        .ulimits
        .iter()
        .map(|(name, u)| {
            let (soft, hard) = match *u {
                compose::Ulimit::Single(v) => (v, v),
                compose::Ulimit::SoftHard { soft, hard } => (soft, hard),
            };
            Ulimit {
                name: name.clone(),
                soft,
                hard,
            }
        })
        .collect();
    ulimits.sort_by(|a, b| a.name.cmp(&b.name));

    // docker's `host:ip` → the "IP host" form swarm stores.
    let hosts = s
        .extra_hosts
        .iter()
        .map(|h| match h.rsplit_once(':') {
            Some((host, ip)) => Ok(format!("{ip} {host}")),
            None => Err(key_err(
                at("extra_hosts"),
                format!("{h:?}: expected HOST:IP"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;

    for (set, name) in [
        (!s.dns.is_empty(), "dns"),
        (!s.dns_search.is_empty(), "dns_search"),
        (s.tty, "tty"),
        (s.stdin_open, "stdin_open"),
        (s.logging.is_some(), "logging"),
        (s.credential_spec.is_some(), "credential_spec"),
        (s.isolation.is_some(), "isolation"),
    ] {
        if set {
            unsupported.insert(format!("services.{key}.{name}"));
        }
    }
    if d.resources
        .reservations
        .as_ref()
        .is_some_and(|r| !r.generic_resources.is_empty())
    {
        return Err(key_err(
            at("deploy.resources.reservations.generic_resources"),
            "generic resources are not supported by Shoal; leave them out",
        ));
    }

    let container = ContainerSpec {
        image: s.image.clone(),
        entrypoint: (!s.entrypoint.is_empty()).then(|| Entrypoint {
            args: s.entrypoint.clone(),
        }),
        workdir: s.working_dir.clone().unwrap_or_default(),
        user: s.user.clone().unwrap_or_default(),
        hostname: s.hostname.clone().unwrap_or_default(),
        stop_signal: s.stop_signal.clone().unwrap_or_default(),
        stop_grace_period_ns: s
            .stop_grace_period
            .map(|g| nanos(&at("stop_grace_period"), g))
            .transpose()?,
        read_only: s.read_only,
        init: s.init.unwrap_or(false),
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        sysctls: s.sysctls.clone().into_iter().collect(),
        mounts,
        secrets,
        configs,
        healthcheck,
        labels: with_stack_label(ns, &s.labels),
        ulimits,
        hosts,
        ..Default::default()
    };

    let resources = {
        let l = d.resources.limits.clone().unwrap_or_default();
        let r = d.resources.reservations.clone().unwrap_or_default();
        let u = |k: &str, v: Option<i64>| -> Result<u64, ConvertError> {
            v.map_or(Ok(0), |v| {
                u64::try_from(v).map_err(|_| key_err(at(k), "must not be negative"))
            })
        };
        Resources {
            limit_nano_cpus: u("deploy.resources.limits.cpus", l.nano_cpus)?,
            limit_memory_bytes: u("deploy.resources.limits.memory", l.memory_bytes)?,
            limit_pids: u("deploy.resources.limits.pids", l.pids)?,
            reserve_nano_cpus: u("deploy.resources.reservations.cpus", r.nano_cpus)?,
            reserve_memory_bytes: u("deploy.resources.reservations.memory", r.memory_bytes)?,
        }
    };

    Ok(CreateServiceRequest {
        name: scope(ns, key),
        mode: mode.into(),
        replicas,
        networks,
        network_aliases,
        env,
        constraints: d.placement.constraints.clone(),
        restart: Some(restart(&at("deploy.restart_policy"), s)?),
        args: s.command.clone(),
        labels: with_stack_label(ns, &d.labels),
        endpoint_mode: endpoint_mode.into(),
        ports,
        container: Some(container),
        resources: Some(resources),
        update_config: d
            .update_config
            .as_ref()
            .map(|u| update(&at("deploy.update_config"), u, true))
            .transpose()?,
        rollback_config: d
            .rollback_config
            .as_ref()
            .map(|u| update(&at("deploy.rollback_config"), u, false))
            .transpose()?,
        placement_prefs: d
            .placement
            .preferences
            .iter()
            .map(|p| format!("spread={p}"))
            .collect(),
        max_replicas_per_node: d.placement.max_replicas_per_node.unwrap_or(0),
    })
}

fn port(at: &str, p: &compose::Port) -> Result<PortConfig, ConvertError> {
    let protocol = match p.protocol.as_deref() {
        None | Some("") | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(other) => {
            return Err(key_err(
                at,
                format!("protocol {other:?} is not supported; use tcp or udp"),
            ));
        }
    };
    let publish_mode = match p.mode.as_deref() {
        None | Some("") | Some("ingress") => PublishMode::Ingress,
        Some("host") => PublishMode::Host,
        Some(other) => {
            return Err(key_err(at, format!("mode {other:?}: use ingress or host")));
        }
    };
    Ok(PortConfig {
        protocol: protocol.into(),
        target_port: p.target,
        published_port: p.published.unwrap_or(0),
        publish_mode: publish_mode.into(),
    })
}

fn mount(
    ns: &str,
    key: &str,
    v: &compose::ServiceVolume,
    config: &Config,
) -> Result<Mount, ConvertError> {
    let at = format!("services.{key}.volumes");
    let mut m = Mount {
        target: v.target.clone(),
        read_only: v.read_only,
        ..Default::default()
    };
    match &v.kind {
        compose::MountType::Volume => {
            m.r#type = MountType::Volume.into();
            if let Some(src) = v.source.as_deref().filter(|s| !s.is_empty()) {
                let vol = config
                    .volumes
                    .get(src)
                    .ok_or_else(|| ConvertError::UndefinedVolume {
                        service: key.to_owned(),
                        volume: src.to_owned(),
                    })?;
                if let Some(d) = vol.driver.as_deref().filter(|d| *d != "local") {
                    return Err(key_err(
                        format!("volumes.{src}.driver"),
                        format!("volume driver {d:?} is not supported; Shoal's are node-local"),
                    ));
                }
                m.source = match &vol.name {
                    Some(n) => n.clone(),
                    None if vol.external => src.to_owned(),
                    None => scope(ns, src),
                };
            }
            m.volume_nocopy = v.volume.as_ref().is_some_and(|o| o.nocopy);
        }
        compose::MountType::Bind => {
            m.r#type = MountType::Bind.into();
            m.source = v.source.clone().unwrap_or_default();
        }
        compose::MountType::Tmpfs => {
            m.r#type = MountType::Tmpfs.into();
            if v.source.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(key_err(at, "invalid tmpfs source, source must be empty"));
            }
            let size = v.tmpfs.as_ref().and_then(|t| t.size).unwrap_or(0);
            m.tmpfs_size_bytes = u64::try_from(size)
                .map_err(|_| key_err(format!("{at}.tmpfs.size"), "must not be negative"))?;
        }
        other => {
            return Err(key_err(
                at,
                format!(
                    "volume type {:?} is not supported; use volume, bind or tmpfs",
                    other.as_str()
                ),
            ));
        }
    }
    Ok(m)
}

fn health(at: &str, h: &compose::Healthcheck) -> Result<HealthConfig, ConvertError> {
    let ns = |k: &str, d: Option<Duration>| -> Result<Option<u64>, ConvertError> {
        d.map(|d| nanos(&format!("{at}.{k}"), d)).transpose()
    };
    if h.disable {
        if !h.test.is_empty()
            || h.interval.is_some()
            || h.timeout.is_some()
            || h.retries.is_some()
            || h.start_period.is_some()
            || h.start_interval.is_some()
        {
            return Err(key_err(
                at,
                "test and disable can't be set at the same time",
            ));
        }
        return Ok(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    Ok(HealthConfig {
        test: h.test.clone(),
        interval_ns: ns("interval", h.interval)?,
        timeout_ns: ns("timeout", h.timeout)?,
        start_period_ns: ns("start_period", h.start_period)?,
        start_interval_ns: ns("start_interval", h.start_interval)?,
        retries: h.retries,
    })
}

/// docker's convertRestartPolicy: `deploy.restart_policy`, or else the
/// service's `restart:` (docker warns it is unsupported, then uses it).
fn restart(at: &str, s: &compose::Service) -> Result<RestartPolicy, ConvertError> {
    let Some(p) = &s.deploy.restart_policy else {
        let (condition, max_attempts) = match s.restart.as_deref() {
            None | Some("") => (RestartCondition::Any, 0),
            Some("no") => (RestartCondition::None, 0),
            Some("always" | "unless-stopped") => (RestartCondition::Any, 0),
            Some(r) => match r.strip_prefix("on-failure") {
                Some("") => (RestartCondition::OnFailure, 0),
                Some(n) => match n.strip_prefix(':').and_then(|n| n.parse().ok()) {
                    Some(n) => (RestartCondition::OnFailure, n),
                    None => {
                        return Err(key_err(
                            at.replace("deploy.restart_policy", "restart"),
                            format!("unknown restart policy: {r}"),
                        ));
                    }
                },
                None => {
                    return Err(key_err(
                        at.replace("deploy.restart_policy", "restart"),
                        format!("unknown restart policy: {r}"),
                    ));
                }
            },
        };
        return Ok(RestartPolicy {
            condition: condition.into(),
            delay_secs: 5,
            max_attempts,
            window_ns: 0,
        });
    };
    let condition = match p.condition.as_deref() {
        None | Some("") | Some("any") => RestartCondition::Any,
        Some("on-failure") => RestartCondition::OnFailure,
        Some("none") => RestartCondition::None,
        Some(other) => {
            return Err(key_err(
                format!("{at}.condition"),
                format!("{other:?}: use none, on-failure or any"),
            ));
        }
    };
    let delay = match p.delay {
        None => 5,
        Some(d) => {
            let n = nanos(&format!("{at}.delay"), d)?;
            if n % 1_000_000_000 != 0 {
                return Err(key_err(
                    format!("{at}.delay"),
                    format!("{d}: Shoal takes whole seconds here, e.g. 5s"),
                ));
            }
            n / 1_000_000_000
        }
    };
    Ok(RestartPolicy {
        condition: condition.into(),
        delay_secs: delay,
        max_attempts: p.max_attempts.unwrap_or(0),
        window_ns: p
            .window
            .map(|w| nanos(&format!("{at}.window"), w))
            .transpose()?
            .unwrap_or(0),
    })
}

fn update(
    at: &str,
    u: &compose::UpdateConfig,
    is_update: bool,
) -> Result<UpdateConfig, ConvertError> {
    let failure_action = match u.failure_action.as_deref() {
        None | Some("") => None,
        Some("pause") => Some(FailureAction::Pause),
        Some("continue") => Some(FailureAction::Continue),
        Some("rollback") if is_update => Some(FailureAction::Rollback),
        Some(other) => {
            return Err(key_err(
                format!("{at}.failure_action"),
                if is_update {
                    format!("{other:?}: use pause, continue or rollback")
                } else {
                    format!("{other:?}: use pause or continue")
                },
            ));
        }
    };
    Ok(UpdateConfig {
        parallelism: Some(u.parallelism.unwrap_or(1)),
        delay_ns: Some(nanos(&format!("{at}.delay"), u.delay)?),
        failure_action: failure_action.map(Into::into),
        monitor_ns: (u.monitor.nanos() != 0)
            .then(|| nanos(&format!("{at}.monitor"), u.monitor))
            .transpose()?,
        max_failure_ratio: Some(f64::from(u.max_failure_ratio)),
        order: u.order.map(|o| match o {
            compose::UpdateOrder::StartFirst => UpdateOrder::StartFirst.into(),
            compose::UpdateOrder::StopFirst => UpdateOrder::StopFirst.into(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(text: &str, dir: &std::path::Path) -> Config {
        let env = HashMap::from([("TAG".to_owned(), "7".to_owned())]);
        shoal_compose::load(&[shoal_compose::Source::new("stack.yml", text)], dir, &env)
            .expect("the file loads")
            .config
    }

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "shoal-convert-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).expect("a temp dir");
        d
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }

    const VOTE: &str = r#"
version: "3.8"
services:
  redis:
    image: redis:alpine
    networks: [frontend]
    deploy:
      replicas: 2
      update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback}
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 120s}
  db:
    image: postgres:${TAG}
    environment:
      POSTGRES_USER: postgres
      EMPTY:
    volumes:
      - db-data:/var/lib/postgresql/data
    networks:
      backend:
        aliases: [database]
    secrets:
      - source: pw
        target: db_pw
        uid: "999"
        mode: 0400
    configs: [conf]
    deploy:
      placement:
        constraints: [node.role == manager]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 1
      endpoint_mode: dnsrr
  vote:
    image: vote
    ports: ["5000:80", {target: 9000, published: 9001, protocol: udp, mode: host}]
    restart: on-failure:4
    healthcheck:
      test: wget -q -O- localhost
      interval: 2s
    extra_hosts: ["somehost:162.242.195.82"]
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 65535}
    stop_grace_period: 1m30s
    deploy:
      mode: global
      resources: {limits: {cpus: "0.5", memory: 50M}}
networks:
  frontend:
  backend:
    driver_opts: {encrypted: ""}
volumes:
  db-data:
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {external: true}
"#;

    #[test]
    fn the_voting_app_converts_as_docker_converts_it() {
        let dir = tmp();
        std::fs::write(dir.join("pw.txt"), "hunter2").expect("the secret file");
        let p = plan("vote", &load(VOTE, &dir)).expect("it converts");
        let label = |m: &HashMap<String, String>| m.get(NAMESPACE_LABEL).cloned();

        let nets: Vec<(&str, bool)> = p
            .networks
            .iter()
            .map(|n| (n.name.as_str(), n.encryption != 0))
            .collect();
        // vote names no network: it gets the stack's default.
        assert_eq!(
            nets,
            [
                ("vote_backend", true),
                ("vote_default", false),
                ("vote_frontend", false)
            ]
        );
        assert!(
            p.networks
                .iter()
                .all(|n| label(&n.labels).as_deref() == Some("vote"))
        );
        assert_eq!(p.secrets.len(), 1);
        assert_eq!(p.secrets[0].name, "vote_pw");
        assert_eq!(p.secrets[0].data, b"hunter2");
        assert_eq!(p.external_configs, ["conf"]);
        assert!(p.configs.is_empty());

        let svc = |k: &str| {
            &p.services
                .iter()
                .find(|s| s.key == k)
                .expect("the service")
                .request
        };
        let redis = svc("redis");
        assert_eq!(redis.name, "vote_redis");
        assert_eq!(redis.replicas, 2);
        assert_eq!(redis.networks, ["vote_frontend"]);
        assert_eq!(
            redis.network_aliases["vote_frontend"].aliases,
            ["redis"],
            "each service answers to its short name"
        );
        let u = redis.update_config.as_ref().expect("update config");
        assert_eq!(u.parallelism, Some(2));
        assert_eq!(u.delay_ns, Some(10_000_000_000));
        assert_eq!(u.order, Some(UpdateOrder::StartFirst.into()));
        assert_eq!(u.failure_action, Some(FailureAction::Rollback.into()));
        let r = redis.restart.as_ref().expect("restart");
        assert_eq!(
            (r.condition, r.delay_secs, r.max_attempts, r.window_ns),
            (RestartCondition::OnFailure.into(), 5, 3, 120_000_000_000)
        );

        let db = svc("db");
        let c = db.container.as_ref().expect("container");
        assert_eq!(c.image, "postgres:7");
        assert_eq!(db.env, ["POSTGRES_USER=postgres"]);
        assert_eq!(
            db.network_aliases["vote_backend"].aliases,
            ["database", "db"]
        );
        assert_eq!(db.endpoint_mode, i32::from(EndpointMode::Dnsrr));
        assert_eq!(db.placement_prefs, ["spread=node.labels.zone"]);
        assert_eq!(db.max_replicas_per_node, 1);
        assert_eq!(c.mounts[0].source, "vote_db-data");
        assert_eq!(c.mounts[0].target, "/var/lib/postgresql/data");
        let s = &c.secrets[0];
        assert_eq!(
            (s.source.as_str(), s.target.as_str(), s.uid, s.mode),
            ("vote_pw", "db_pw", 999, 0o400)
        );
        let cf = &c.configs[0];
        assert_eq!((cf.source.as_str(), cf.target.as_str()), ("conf", "/conf"));
        assert_eq!(label(&db.labels).as_deref(), Some("vote"));
        assert_eq!(label(&c.labels).as_deref(), Some("vote"));

        let vote = svc("vote");
        assert_eq!(vote.mode, i32::from(ServiceMode::Global));
        assert_eq!(vote.networks, ["vote_default"]);
        let ports: Vec<(u32, u32, i32, i32)> = vote
            .ports
            .iter()
            .map(|p| (p.published_port, p.target_port, p.protocol, p.publish_mode))
            .collect();
        assert_eq!(
            ports,
            [
                (5000, 80, Protocol::Tcp.into(), PublishMode::Ingress.into()),
                (9001, 9000, Protocol::Udp.into(), PublishMode::Host.into())
            ]
        );
        let r = vote.restart.as_ref().expect("restart");
        assert_eq!(
            (r.condition, r.max_attempts),
            (RestartCondition::OnFailure.into(), 4)
        );
        let c = vote.container.as_ref().expect("container");
        let h = c.healthcheck.as_ref().expect("healthcheck");
        assert_eq!(h.test, ["CMD-SHELL", "wget -q -O- localhost"]);
        assert_eq!(h.interval_ns, Some(2_000_000_000));
        assert_eq!(c.hosts, ["162.242.195.82 somehost"]);
        let limits: Vec<(&str, i64, i64)> = c
            .ulimits
            .iter()
            .map(|u| (u.name.as_str(), u.soft, u.hard))
            .collect();
        assert_eq!(limits, [("nofile", 1024, 2048), ("nproc", 65535, 65535)]);
        assert_eq!(c.stop_grace_period_ns, Some(90_000_000_000));
        let res = vote.resources.as_ref().expect("resources");
        assert_eq!(res.limit_nano_cpus, 500_000_000);
        assert_eq!(res.limit_memory_bytes, 50 * 1024 * 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_shoal_cannot_do_is_refused_or_warned_never_dropped() {
        let dir = tmp();
        let refused = [
            (
                "services:\n  a:\n    image: x\n    deploy:\n      mode: replicated-job\n",
                "services.a.deploy.mode",
            ),
            (
                "services:\n  a:\n    image: x\n    deploy:\n      mode: global\n      replicas: 2\n",
                "replicas can only be used with replicated",
            ),
            (
                "services:\n  a:\n    image: x\n    restart: sometimes\n",
                "unknown restart policy: sometimes",
            ),
            (
                "services:\n  a:\n    image: x\n    networks: [n]\nnetworks:\n  n:\n    driver: bridge\n",
                "networks.n.driver",
            ),
            (
                "services:\n  a:\n    image: x\n    secrets: [s]\nsecrets:\n  s:\n    file: ./nowhere.txt\n",
                "nowhere.txt",
            ),
            (
                "services:\n  a:\n    image: x\n    deploy:\n      restart_policy:\n        delay: 500ms\n",
                "services.a.deploy.restart_policy.delay",
            ),
        ];
        for (text, wanted) in refused {
            let e = plan("s", &load(text, &dir)).expect_err(text).to_string();
            assert!(e.contains(wanted), "{text}: {e}");
        }
        let p = plan(
            "s",
            &load(
                "services:\n  a:\n    image: x\n    tty: true\n    dns: [1.1.1.1]\n",
                &dir,
            ),
        )
        .expect("converts");
        assert_eq!(
            p.warnings,
            ["Ignoring options Shoal does not support yet: services.a.dns, services.a.tty"]
        );
        // An internal network is made so, not warned about.
        let p = plan(
            "s",
            &load(
                "services:\n  a:\n    image: x\n    networks: [n]\nnetworks:\n  n:\n    internal: true\n",
                &dir,
            ),
        )
        .expect("converts");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.networks.iter().any(|n| n.name == "s_n" && n.internal));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
