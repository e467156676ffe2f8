//! The one place where docker's JSON and Shoal's API types convert: a
//! docker `ServiceSpec` becomes a `CreateServiceRequest` (the same request
//! `shoal service create` sends) and a `ServiceSummary` becomes docker's
//! `Service`; nodes, tasks, secrets, configs and networks likewise.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use shoal_api::{
    cluster::v1 as pb,
    words::{self, Word},
};

use crate::{
    error::ApiError,
    json::{Obj, join, rfc3339},
};

/// The label `docker stack deploy` puts on everything of a stack.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

fn word_of<T: Word>(field: &str, given: &str, allowed: &str) -> Result<T, ApiError> {
    T::from_word(given).ok_or_else(|| {
        ApiError::bad(
            field,
            format!("unknown value {given:?}; expected {allowed}"),
        )
    })
}

fn secs_of(field: &str, nanos: u64) -> Result<u64, ApiError> {
    if !nanos.is_multiple_of(1_000_000_000) {
        return Err(ApiError::bad(
            field,
            format!("{nanos}ns: Shoal keeps this delay in whole seconds; give a multiple of 1s"),
        ));
    }
    Ok(nanos / 1_000_000_000)
}

// ---------------------------------------------------------------- services

/// docker's `ServiceSpec` as Shoal's create request (and the `spec` of a
/// whole-spec update).
pub fn service_request(body: &Value) -> Result<pb::CreateServiceRequest, ApiError> {
    let spec = Obj::root(body, "")?;
    let mut r = pb::CreateServiceRequest {
        name: spec.string("Name")?,
        labels: spec.map("Labels")?,
        ..Default::default()
    };
    spec.with("Mode", |m| {
        m.refuse(&["ReplicatedJob", "GlobalJob"])?;
        if m.raw("Global").is_some() {
            r.mode = pb::ServiceMode::Global.into();
        } else {
            r.mode = pb::ServiceMode::Replicated.into();
            // Swarm's default is one replica; an explicit 0 is kept.
            r.replicas = m
                .with("Replicated", |rep| rep.u64("Replicas"))?
                .flatten()
                .unwrap_or(1);
        }
        Ok(())
    })?;
    if r.mode == 0 {
        r.mode = pb::ServiceMode::Replicated.into();
        r.replicas = 1;
    }
    let mut networks = Vec::new();
    spec.with("TaskTemplate", |t| task_template(t, &mut r, &mut networks))?;
    // The deprecated top-level Networks, as dockerd still reads it.
    if networks.is_empty() {
        networks = spec.each("Networks", network_attachment)?;
    }
    for (target, aliases) in networks {
        if !aliases.is_empty() {
            r.network_aliases
                .insert(target.clone(), pb::Aliases { aliases });
        }
        r.networks.push(target);
    }
    spec.with("EndpointSpec", |e| {
        let mode = e.string("Mode")?;
        if !mode.is_empty() {
            r.endpoint_mode =
                word_of::<pb::EndpointMode>(&join(e.path(), "Mode"), &mode, "vip or dnsrr")?.into();
        }
        r.ports = e.each("Ports", port)?;
        Ok(())
    })?;
    r.update_config = spec.with("UpdateConfig", |u| update_config(u, false))?;
    r.rollback_config = spec.with("RollbackConfig", |u| update_config(u, true))?;
    Ok(r)
}

fn network_attachment(n: Obj<'_>) -> Result<(String, Vec<String>), ApiError> {
    n.refuse(&["DriverOpts"])?;
    let target = n.string("Target")?;
    if target.is_empty() {
        return Err(ApiError::bad(
            join(n.path(), "Target"),
            "name the network (its name or id)",
        ));
    }
    Ok((target, n.strs("Aliases")?))
}

fn task_template(
    t: Obj<'_>,
    r: &mut pb::CreateServiceRequest,
    networks: &mut Vec<(String, Vec<String>)>,
) -> Result<(), ApiError> {
    t.refuse(&["PluginSpec", "NetworkAttachmentSpec", "LogDriver"])?;
    t.refuse_unless("Runtime", &["container"])?;
    let mut c = pb::ContainerSpec::default();
    t.with("ContainerSpec", |cs| container_spec(cs, r, &mut c))?;
    c.force_update = t.u64("ForceUpdate")?.unwrap_or_default();
    t.with("Resources", |res| {
        res.refuse(&["SwapBytes", "MemorySwappiness"])?;
        let mut out = pb::Resources::default();
        res.with("Limits", |l| {
            out.limit_nano_cpus = nonneg(l, "NanoCPUs")?;
            out.limit_memory_bytes = nonneg(l, "MemoryBytes")?;
            out.limit_pids = nonneg(l, "Pids")?;
            Ok(())
        })?;
        res.with("Reservations", |l| {
            l.refuse(&["GenericResources"])?;
            out.reserve_nano_cpus = nonneg(l, "NanoCPUs")?;
            out.reserve_memory_bytes = nonneg(l, "MemoryBytes")?;
            Ok(())
        })?;
        r.resources = Some(out);
        Ok(())
    })?;
    t.with("RestartPolicy", |p| {
        let mut out = pb::RestartPolicy::default();
        let condition = p.string("Condition")?;
        if !condition.is_empty() {
            out.condition = word_of::<pb::RestartCondition>(
                &join(p.path(), "Condition"),
                &condition,
                "none, on-failure or any",
            )?
            .into();
        }
        if let Some(d) = p.nanos("Delay")? {
            out.delay_secs = secs_of(&join(p.path(), "Delay"), d)?;
        }
        out.max_attempts = p.u64("MaxAttempts")?.unwrap_or_default();
        out.window_ns = p.nanos("Window")?.unwrap_or_default();
        r.restart = Some(out);
        Ok(())
    })?;
    t.with("Placement", |p| {
        r.constraints = p.strs("Constraints")?;
        r.placement_prefs = p.each("Preferences", |pref| {
            let spread = pref
                .with("Spread", |s| s.string("SpreadDescriptor"))?
                .unwrap_or_default();
            if spread.is_empty() {
                return Err(ApiError::bad(
                    pref.path(),
                    "expected {\"Spread\":{\"SpreadDescriptor\":\"node.labels.KEY\"}} (spread is \
                     docker's only strategy)",
                ));
            }
            Ok(format!("spread={spread}"))
        })?;
        r.max_replicas_per_node = p.u64("MaxReplicas")?.unwrap_or_default();
        // The docker client pins the platforms of the image it resolved;
        // Shoal's nodes run linux/amd64 only, so only that may be asked.
        p.each("Platforms", |pl| {
            let os = pl.string("OS")?;
            let arch = pl.string("Architecture")?;
            let ok_os = os.is_empty() || os == "linux";
            let ok_arch = matches!(arch.as_str(), "" | "amd64" | "x86_64");
            if ok_os && ok_arch {
                Ok(())
            } else {
                Err(ApiError::bad(
                    pl.path(),
                    format!("{os}/{arch}: Shoal's nodes run linux/amd64 only"),
                ))
            }
        })?;
        Ok(())
    })?;
    networks.extend(t.each("Networks", network_attachment)?);
    r.container = Some(c);
    Ok(())
}

fn nonneg(o: Obj<'_>, key: &str) -> Result<u64, ApiError> {
    match o.i64(key)? {
        Some(n) if n < 0 => Err(ApiError::bad(join(o.path(), key), "cannot be negative")),
        n => Ok(n.unwrap_or_default() as u64),
    }
}

fn container_spec(
    cs: Obj<'_>,
    r: &mut pb::CreateServiceRequest,
    c: &mut pb::ContainerSpec,
) -> Result<(), ApiError> {
    cs.refuse(&[
        "TTY",
        "OpenStdin",
        "Groups",
        "Privileges",
        "DNSConfig",
        "Duration",
        "Oomscoreadj",
        "OomScoreAdj",
        "Devices",
        "CapabilityAdd2",
    ])?;
    cs.refuse_unless("Isolation", &["default"])?;
    c.image = cs.string("Image")?;
    c.labels = cs.map("Labels")?;
    let command = cs.strs("Command")?;
    if !command.is_empty() {
        c.entrypoint = Some(pb::Entrypoint { args: command });
    }
    r.args = cs.strs("Args")?;
    r.env = cs.strs("Env")?;
    c.hostname = cs.string("Hostname")?;
    c.workdir = cs.string("Dir")?;
    c.user = cs.string("User")?;
    c.stop_signal = cs.string("StopSignal")?;
    c.stop_grace_period_ns = cs.nanos("StopGracePeriod")?;
    c.read_only = cs.bool("ReadOnly")?.unwrap_or_default();
    c.init = cs.bool("Init")?.unwrap_or_default();
    c.cap_add = cs.strs("CapabilityAdd")?;
    c.cap_drop = cs.strs("CapabilityDrop")?;
    c.sysctls = cs.map("Sysctls")?;
    c.hosts = cs.strs("Hosts")?;
    c.mounts = cs.each("Mounts", mount)?;
    c.secrets = cs.each("Secrets", |s| file_ref(s, "Secret"))?;
    c.configs = cs.each("Configs", |s| {
        s.refuse(&["Runtime"])?;
        file_ref(s, "Config")
    })?;
    c.healthcheck = cs
        .with("Healthcheck", |h| {
            Ok(pb::HealthConfig {
                test: h.strs("Test")?,
                interval_ns: h.nanos("Interval")?.filter(|n| *n != 0),
                timeout_ns: h.nanos("Timeout")?.filter(|n| *n != 0),
                start_period_ns: h.nanos("StartPeriod")?.filter(|n| *n != 0),
                start_interval_ns: h.nanos("StartInterval")?.filter(|n| *n != 0),
                retries: h.u64("Retries")?.filter(|n| *n != 0),
            })
        })?
        // An empty HealthConfig is docker's "inherit the image's", as no
        // HealthConfig is.
        .filter(|h| *h != pb::HealthConfig::default());
    c.ulimits = cs.each("Ulimits", |u| {
        Ok(pb::Ulimit {
            name: u.string("Name")?,
            soft: u.i64("Soft")?.unwrap_or_default(),
            hard: u.i64("Hard")?.unwrap_or_default(),
        })
    })?;
    Ok(())
}

fn mount(m: Obj<'_>) -> Result<pb::Mount, ApiError> {
    m.refuse(&[
        "BindOptions",
        "Consistency",
        "ClusterOptions",
        "ImageOptions",
    ])?;
    let ty = m.string("Type")?;
    let mut out = pb::Mount {
        r#type: word_of::<pb::MountType>(&join(m.path(), "Type"), &ty, "volume, bind or tmpfs")?
            .into(),
        source: m.string("Source")?,
        target: m.string("Target")?,
        read_only: m.bool("ReadOnly")?.unwrap_or_default(),
        ..Default::default()
    };
    m.with("VolumeOptions", |v| {
        v.refuse(&["DriverConfig", "Subpath"])?;
        // `docker stack deploy` labels a stack's volumes with its
        // namespace; Shoal's node-local volumes carry no labels, and any
        // other label would be lost, so only that one passes.
        if v.map("Labels")?
            .keys()
            .any(|k| k != "com.docker.stack.namespace")
        {
            return Err(ApiError::Unsupported {
                field: join(v.path(), "Labels"),
            });
        }
        out.volume_nocopy = v.bool("NoCopy")?.unwrap_or_default();
        Ok(())
    })?;
    m.with("TmpfsOptions", |t| {
        t.refuse(&["Options"])?;
        out.tmpfs_size_bytes = nonneg(t, "SizeBytes")?;
        out.tmpfs_mode = t.u64("Mode")?.unwrap_or_default() as u32;
        Ok(())
    })?;
    Ok(out)
}

/// A secret or config reference: docker names the object (`SecretName`) and
/// its id; Shoal's request takes either as `source`.
fn file_ref(s: Obj<'_>, kind: &str) -> Result<pb::FileReference, ApiError> {
    let name = s.string(&format!("{kind}Name"))?;
    let id = s.string(&format!("{kind}ID"))?;
    let mut out = pb::FileReference {
        source: if name.is_empty() { id } else { name },
        ..Default::default()
    };
    if out.source.is_empty() {
        return Err(ApiError::bad(
            join(s.path(), &format!("{kind}Name")),
            format!("name the {} to mount", kind.to_lowercase()),
        ));
    }
    s.with("File", |f| {
        out.target = f.string("Name")?;
        let num = |key: &str| -> Result<u32, ApiError> {
            let v = f.string(key)?;
            if v.is_empty() {
                return Ok(0);
            }
            v.parse().map_err(|_| {
                ApiError::bad(join(f.path(), key), format!("{v:?}: expected a numeric id"))
            })
        };
        out.uid = num("UID")?;
        out.gid = num("GID")?;
        out.mode = f.u64("Mode")?.unwrap_or_default() as u32;
        Ok(())
    })?;
    Ok(out)
}

fn port(p: Obj<'_>) -> Result<pb::PortConfig, ApiError> {
    p.refuse(&["Name"])?;
    let mut out = pb::PortConfig::default();
    let proto = p.string("Protocol")?;
    if !proto.is_empty() {
        out.protocol =
            word_of::<pb::Protocol>(&join(p.path(), "Protocol"), &proto, "tcp or udp")?.into();
    }
    let small = |key: &str| -> Result<u32, ApiError> {
        match p.u64(key)?.unwrap_or_default() {
            n if n <= 65_535 => Ok(n as u32),
            n => Err(ApiError::bad(
                join(p.path(), key),
                format!("{n}: not a port"),
            )),
        }
    };
    out.target_port = small("TargetPort")?;
    out.published_port = small("PublishedPort")?;
    let mode = p.string("PublishMode")?;
    if !mode.is_empty() {
        out.publish_mode =
            word_of::<pb::PublishMode>(&join(p.path(), "PublishMode"), &mode, "ingress or host")?
                .into();
    }
    Ok(out)
}

/// docker's UpdateConfig: present, its fields are what they say (swarm's
/// parallelism 0 is "all at once"); a zero monitor means swarm's default.
fn update_config(u: Obj<'_>, rollback: bool) -> Result<pb::UpdateConfig, ApiError> {
    let action = u.string("FailureAction")?;
    let failure_action = match action.as_str() {
        "" => None,
        "rollback" if rollback => {
            return Err(ApiError::bad(
                join(u.path(), "FailureAction"),
                "a rollback cannot roll back: use pause or continue",
            ));
        }
        w => Some(
            word_of::<pb::FailureAction>(
                &join(u.path(), "FailureAction"),
                w,
                "pause, continue or rollback",
            )?
            .into(),
        ),
    };
    let order = u.string("Order")?;
    let ratio = u.f64("MaxFailureRatio")?.unwrap_or_default();
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ApiError::bad(
            join(u.path(), "MaxFailureRatio"),
            format!("{ratio}: must be between 0 and 1"),
        ));
    }
    Ok(pb::UpdateConfig {
        parallelism: Some(u.u64("Parallelism")?.unwrap_or_default()),
        delay_ns: Some(u.nanos("Delay")?.unwrap_or_default()),
        failure_action,
        monitor_ns: u.nanos("Monitor")?.filter(|n| *n != 0),
        max_failure_ratio: Some(ratio),
        order: match order.as_str() {
            "" => None,
            w => Some(
                word_of::<pb::UpdateOrder>(
                    &join(u.path(), "Order"),
                    w,
                    "stop-first or start-first",
                )?
                .into(),
            ),
        },
    })
}

fn drop_empty(mut m: Map<String, Value>) -> Value {
    m.retain(|_, v| !crate::json::is_default(v));
    Value::Object(m)
}

fn labels(m: &HashMap<String, String>) -> Value {
    // Sorted: stable output, as Go's encoder sorts map keys.
    let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
    json!(sorted)
}

/// The image as swarm shows it: pinned (`image:tag@sha256:…`) once resolved.
pub fn pinned_image(c: &pb::ContainerSpec) -> String {
    shoal_api::reference::pinned(&c.image, &c.image_digest)
}

fn update_config_json(u: &pb::UpdateConfig) -> Value {
    let mut m = Map::new();
    m.insert("Parallelism".into(), json!(u.parallelism.unwrap_or(1)));
    if let Some(d) = u.delay_ns.filter(|d| *d != 0) {
        m.insert("Delay".into(), json!(d));
    }
    m.insert(
        "FailureAction".into(),
        json!(words::word::<pb::FailureAction>(
            u.failure_action.unwrap_or_default()
        )),
    );
    if let Some(mon) = u.monitor_ns.filter(|d| *d != 0) {
        m.insert("Monitor".into(), json!(mon));
    }
    m.insert(
        "MaxFailureRatio".into(),
        json!(u.max_failure_ratio.unwrap_or_default()),
    );
    m.insert(
        "Order".into(),
        json!(words::word::<pb::UpdateOrder>(u.order.unwrap_or_default())),
    );
    Value::Object(m)
}

fn file_ref_json(f: &pb::FileReference, kind: &str) -> Value {
    json!({
        "File": {"Name": f.target, "UID": f.uid.to_string(), "GID": f.gid.to_string(), "Mode": f.mode},
        format!("{kind}ID"): f.id,
        format!("{kind}Name"): if f.name.is_empty() { &f.source } else { &f.name },
    })
}

fn container_spec_json(s: &pb::ServiceSummary, c: &pb::ContainerSpec) -> Value {
    let mut m = Map::new();
    m.insert("Image".into(), json!(pinned_image(c)));
    if let Some(e) = &c.entrypoint {
        m.insert("Command".into(), json!(e.args));
    }
    m.insert("Args".into(), json!(s.args));
    m.insert("Hostname".into(), json!(c.hostname));
    m.insert("Env".into(), json!(s.env));
    m.insert("Dir".into(), json!(c.workdir));
    m.insert("User".into(), json!(c.user));
    m.insert(
        "Mounts".into(),
        json!(
            c.mounts
                .iter()
                .map(|mnt| {
                    let mut o = Map::new();
                    o.insert(
                        "Type".into(),
                        json!(words::word::<pb::MountType>(mnt.r#type)),
                    );
                    o.insert("Source".into(), json!(mnt.source));
                    o.insert("Target".into(), json!(mnt.target));
                    o.insert("ReadOnly".into(), json!(mnt.read_only));
                    if mnt.volume_nocopy {
                        o.insert("VolumeOptions".into(), json!({"NoCopy": true}));
                    }
                    if mnt.tmpfs_size_bytes != 0 || mnt.tmpfs_mode != 0 {
                        o.insert(
                            "TmpfsOptions".into(),
                            drop_empty(
                                json!({"SizeBytes": mnt.tmpfs_size_bytes, "Mode": mnt.tmpfs_mode})
                                    .as_object()
                                    .cloned()
                                    .unwrap_or_default(),
                            ),
                        );
                    }
                    drop_empty(o)
                })
                .collect::<Vec<_>>()
        ),
    );
    m.insert("StopSignal".into(), json!(c.stop_signal));
    if let Some(g) = c.stop_grace_period_ns {
        m.insert("StopGracePeriod".into(), json!(g));
    }
    m.insert("ReadOnly".into(), json!(c.read_only));
    if c.init {
        m.insert("Init".into(), json!(true));
    }
    m.insert("CapabilityAdd".into(), json!(c.cap_add));
    m.insert("CapabilityDrop".into(), json!(c.cap_drop));
    m.insert("Hosts".into(), json!(c.hosts));
    m.insert(
        "Secrets".into(),
        json!(
            c.secrets
                .iter()
                .map(|f| file_ref_json(f, "Secret"))
                .collect::<Vec<_>>()
        ),
    );
    m.insert(
        "Configs".into(),
        json!(
            c.configs
                .iter()
                .map(|f| file_ref_json(f, "Config"))
                .collect::<Vec<_>>()
        ),
    );
    if let Some(h) = &c.healthcheck {
        m.insert(
            "Healthcheck".into(),
            drop_empty(
                json!({
                    "Test": h.test,
                    "Interval": h.interval_ns,
                    "Timeout": h.timeout_ns,
                    "StartPeriod": h.start_period_ns,
                    "StartInterval": h.start_interval_ns,
                    "Retries": h.retries,
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ),
        );
    }
    m.insert(
        "Ulimits".into(),
        json!(
            c.ulimits
                .iter()
                .map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard}))
                .collect::<Vec<_>>()
        ),
    );
    // Go's omitempty: what is empty is left out, as dockerd shows a spec.
    let mut m = match drop_empty(m) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("Image".into(), json!(pinned_image(c)));
    // Maps keep labels with empty values: only an empty map is left out.
    if !c.labels.is_empty() {
        m.insert("Labels".into(), labels(&c.labels));
    }
    if !c.sysctls.is_empty() {
        m.insert("Sysctls".into(), labels(&c.sysctls));
    }
    // Isolation is always written by dockerd.
    m.insert("Isolation".into(), json!("default"));
    Value::Object(m)
}

/// docker's `ServiceSpec` of a service.
pub fn service_spec(s: &pb::ServiceSummary) -> Value {
    let c = s.container.clone().unwrap_or_default();
    let r = s.resources.unwrap_or_default();
    let restart = s.restart.unwrap_or_default();
    let mode = if s.mode == i32::from(pb::ServiceMode::Global) {
        json!({"Global": {}})
    } else {
        json!({"Replicated": {"Replicas": s.desired}})
    };
    let networks: Vec<Value> = s
        .networks
        .iter()
        .map(|n| {
            let aliases = s
                .network_aliases
                .get(n)
                .map(|a| a.aliases.clone())
                .unwrap_or_default();
            drop_empty(
                json!({"Target": n, "Aliases": aliases})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut restart_json = Map::new();
    restart_json.insert(
        "Condition".into(),
        json!(
            match words::word::<pb::RestartCondition>(restart.condition).as_ref() {
                "" => "any".to_owned(),
                w => w.to_owned(),
            }
        ),
    );
    restart_json.insert("Delay".into(), json!(restart.delay_secs * 1_000_000_000));
    restart_json.insert("MaxAttempts".into(), json!(restart.max_attempts));
    if restart.window_ns != 0 {
        restart_json.insert("Window".into(), json!(restart.window_ns));
    }
    let placement = drop_empty(
        json!({
            "Constraints": s.constraints,
            "Preferences": s.placement_prefs.iter().map(|p| {
                let d = p.strip_prefix("spread=").unwrap_or(p);
                json!({"Spread": {"SpreadDescriptor": d}})
            }).collect::<Vec<_>>(),
            "MaxReplicas": s.max_replicas_per_node,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    let mut task = Map::new();
    task.insert("ContainerSpec".into(), container_spec_json(s, &c));
    task.insert(
        "Resources".into(),
        json!({
            "Limits": drop_empty(json!({"NanoCPUs": r.limit_nano_cpus, "MemoryBytes": r.limit_memory_bytes, "Pids": r.limit_pids}).as_object().cloned().unwrap_or_default()),
            "Reservations": drop_empty(json!({"NanoCPUs": r.reserve_nano_cpus, "MemoryBytes": r.reserve_memory_bytes}).as_object().cloned().unwrap_or_default()),
        }),
    );
    task.insert("RestartPolicy".into(), Value::Object(restart_json));
    task.insert("Placement".into(), placement);
    if !networks.is_empty() {
        task.insert("Networks".into(), json!(networks));
    }
    task.insert("ForceUpdate".into(), json!(c.force_update));
    task.insert("Runtime".into(), json!("container"));
    let mut spec = Map::new();
    spec.insert("Name".into(), json!(s.name));
    spec.insert("Labels".into(), labels(&s.labels));
    spec.insert("TaskTemplate".into(), Value::Object(task));
    spec.insert("Mode".into(), mode);
    if let Some(u) = &s.update_config {
        spec.insert("UpdateConfig".into(), update_config_json(u));
    }
    if let Some(u) = &s.rollback_config {
        spec.insert("RollbackConfig".into(), update_config_json(u));
    }
    spec.insert("EndpointSpec".into(), endpoint_spec(s, false));
    Value::Object(spec)
}

fn port_json(p: &pb::PortConfig, with_published: bool) -> Value {
    let mut m = Map::new();
    m.insert(
        "Protocol".into(),
        json!(match words::word::<pb::Protocol>(p.protocol).as_ref() {
            "" => "tcp".to_owned(),
            w => w.to_owned(),
        }),
    );
    m.insert("TargetPort".into(), json!(p.target_port));
    if with_published || p.published_port != 0 {
        m.insert("PublishedPort".into(), json!(p.published_port));
    }
    m.insert(
        "PublishMode".into(),
        json!(
            match words::word::<pb::PublishMode>(p.publish_mode).as_ref() {
                "" => "ingress".to_owned(),
                w => w.to_owned(),
            }
        ),
    );
    Value::Object(m)
}

fn endpoint_spec(s: &pb::ServiceSummary, allocated: bool) -> Value {
    let mode = match words::word::<pb::EndpointMode>(s.endpoint_mode).as_ref() {
        "" => "vip".to_owned(),
        w => w.to_owned(),
    };
    let mut m = Map::new();
    m.insert("Mode".into(), json!(mode));
    if !s.ports.is_empty() {
        m.insert(
            "Ports".into(),
            json!(
                s.ports
                    .iter()
                    .map(|p| port_json(p, allocated))
                    .collect::<Vec<_>>()
            ),
        );
    }
    Value::Object(m)
}

/// docker's `Service`: `status` adds `ServiceStatus` (`?status=true`).
pub fn service(s: &pb::ServiceSummary, status: bool) -> Value {
    let mut m = Map::new();
    m.insert("ID".into(), json!(s.id));
    m.insert("Version".into(), json!({"Index": s.version}));
    m.insert("CreatedAt".into(), json!(rfc3339(0)));
    m.insert("UpdatedAt".into(), json!(rfc3339(0)));
    m.insert("Spec".into(), service_spec(s));
    if let Some(p) = &s.previous_spec {
        m.insert("PreviousSpec".into(), service_spec(p));
    }
    let mut endpoint = Map::new();
    endpoint.insert("Spec".into(), endpoint_spec(s, false));
    if !s.ports.is_empty() {
        endpoint.insert(
            "Ports".into(),
            json!(
                s.ports
                    .iter()
                    .map(|p| port_json(p, true))
                    .collect::<Vec<_>>()
            ),
        );
    }
    if !s.vips.is_empty() {
        endpoint.insert(
            "VirtualIPs".into(),
            json!(
                s.vips
                    .iter()
                    .map(|v| json!({"NetworkID": v.network_id, "Addr": prefix(v.addr.as_ref())}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    m.insert("Endpoint".into(), Value::Object(endpoint));
    if let Some(u) = &s.update_status {
        m.insert(
            "UpdateStatus".into(),
            json!({
                "State": words::word::<pb::UpdateState>(u.state),
                "StartedAt": rfc3339(u.started_unix),
                "CompletedAt": rfc3339(u.completed_unix),
                "Message": u.message,
            }),
        );
    }
    if status {
        m.insert(
            "ServiceStatus".into(),
            json!({"RunningTasks": s.running, "DesiredTasks": s.desired, "CompletedTasks": 0}),
        );
    }
    Value::Object(m)
}

pub fn prefix(p: Option<&pb::Ipv4Prefix>) -> String {
    p.map(|p| format!("{}/{}", std::net::Ipv4Addr::from(p.addr), p.prefix_len))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- tasks

/// docker's task states are Shoal's words; the unspecified one is "new".
fn state_word(s: i32) -> String {
    match words::word::<pb::TaskState>(s).as_ref() {
        "" => "new".to_owned(),
        w => w.to_owned(),
    }
}

/// docker's `Task`. `service` is the task's service (for its id, labels
/// and spec, which a task carries in docker) when it still exists.
pub fn task(
    t: &pb::TaskSummary,
    service: Option<&pb::ServiceSummary>,
    network_ids: &HashMap<String, String>,
) -> Value {
    let service_id = service.map_or(t.service.clone(), |s| s.id.clone());
    let mut spec = service.map_or_else(|| json!({}), |s| service_spec(s)["TaskTemplate"].clone());
    if !t.image.is_empty() {
        spec["ContainerSpec"]["Image"] = json!(t.image);
    }
    let mut status = Map::new();
    status.insert("Timestamp".into(), json!(rfc3339(t.since_unix)));
    status.insert("State".into(), json!(state_word(t.state)));
    status.insert("Message".into(), json!(t.message));
    if !t.err.is_empty() {
        status.insert("Err".into(), json!(t.err));
    }
    let mut cs = Map::new();
    cs.insert("ContainerID".into(), json!(t.id));
    if let Some(code) = t.exit_code {
        cs.insert("ExitCode".into(), json!(code));
    }
    status.insert("ContainerStatus".into(), Value::Object(cs));
    status.insert("PortStatus".into(), json!({}));
    // Task addresses come as CIDRs without their network; the service's
    // VIPs name the networks in the same order as its attachments.
    let attachments: Vec<Value> = t
        .addresses
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let net = service
                .and_then(|s| s.networks.get(i))
                .cloned()
                .unwrap_or_default();
            let id = network_ids.get(&net).cloned().unwrap_or(net.clone());
            json!({"Network": {"ID": id, "Spec": {"Name": net}}, "Addresses": [addr]})
        })
        .collect();
    let mut m = Map::new();
    m.insert("ID".into(), json!(t.id));
    m.insert("Version".into(), json!({"Index": 0}));
    m.insert("CreatedAt".into(), json!(rfc3339(t.since_unix)));
    m.insert("UpdatedAt".into(), json!(rfc3339(t.since_unix)));
    m.insert("Labels".into(), json!({}));
    m.insert("Spec".into(), spec);
    m.insert("ServiceID".into(), json!(service_id));
    if t.slot != 0 {
        m.insert("Slot".into(), json!(t.slot));
    }
    if !t.node_id.is_empty() {
        m.insert("NodeID".into(), json!(t.node_id));
    }
    m.insert("Status".into(), Value::Object(status));
    m.insert("DesiredState".into(), json!(state_word(t.desired_state)));
    if !attachments.is_empty() {
        m.insert("NetworksAttachments".into(), json!(attachments));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------- nodes

pub fn node(d: &pb::NodeDetail) -> Value {
    let n = d.node.clone().unwrap_or_default();
    let role = words::word::<pb::NodeRole>(n.role);
    let platform = d.platform.clone().unwrap_or_default();
    let res = d.resources.unwrap_or_default();
    let mut m = Map::new();
    m.insert("ID".into(), json!(n.id));
    m.insert("Version".into(), json!({"Index": n.version}));
    m.insert("CreatedAt".into(), json!(rfc3339(0)));
    m.insert("UpdatedAt".into(), json!(rfc3339(n.last_heartbeat_unix)));
    m.insert(
        "Spec".into(),
        json!({
            "Labels": labels(&n.labels),
            "Role": role,
            "Availability": words::word::<pb::NodeAvailability>(n.availability),
        }),
    );
    m.insert(
        "Description".into(),
        json!({
            "Hostname": n.hostname,
            "Platform": {
                // Go's names, as dockerd reports them.
                "Architecture": match platform.architecture.as_str() { "amd64" => "x86_64", a => a },
                "OS": platform.os,
            },
            "Resources": {"NanoCPUs": res.nano_cpus, "MemoryBytes": res.memory_bytes},
            "Engine": {"EngineVersion": crate::VERSION},
        }),
    );
    let ip = n.addr.rsplit_once(':').map_or(n.addr.as_str(), |(h, _)| h);
    m.insert(
        "Status".into(),
        json!({
            "State": words::word::<pb::NodeStatus>(n.status),
            "Addr": ip,
        }),
    );
    if n.role == i32::from(pb::NodeRole::Manager) {
        let reach = match n.manager_status.as_str() {
            "Leader" | "Reachable" => "reachable",
            "Unreachable" => "unreachable",
            _ => "unknown",
        };
        m.insert(
            "ManagerStatus".into(),
            json!({
                "Leader": n.manager_status == "Leader",
                "Reachability": reach,
                "Addr": if d.raft_addr.is_empty() { n.addr.clone() } else { d.raft_addr.clone() },
            }),
        );
    }
    Value::Object(m)
}

/// docker's `NodeSpec` against the node as it is: what changed.
pub fn node_update(
    current: &pb::NodeSummary,
    body: &Value,
) -> Result<pb::UpdateNodeRequest, ApiError> {
    let spec = Obj::root(body, "")?;
    let mut r = pb::UpdateNodeRequest {
        node: current.id.clone(),
        ..Default::default()
    };
    let role = spec.string("Role")?;
    if !role.is_empty() {
        let role: pb::NodeRole = word_of("Role", &role, "worker or manager")?;
        if i32::from(role) != current.role {
            r.role = role.into();
        }
    }
    let avail = spec.string("Availability")?;
    if !avail.is_empty() {
        let a: pb::NodeAvailability = word_of("Availability", &avail, "active, pause or drain")?;
        if i32::from(a) != current.availability {
            r.availability = a.into();
        }
    }
    spec.refuse_unless("Name", &[current.hostname.as_str()])?;
    let want = spec.map("Labels")?;
    r.label_rm = current
        .labels
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    r.label_add = want
        .into_iter()
        .filter(|(k, v)| current.labels.get(k) != Some(v))
        .collect();
    Ok(r)
}

// ---------------------------------------------------------------- secrets and configs

fn data_of(spec: Obj<'_>) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    let data = spec.string("Data")?;
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| ApiError::bad("Data", format!("not base64: {e}")))
}

pub fn secret_request(body: &Value) -> Result<pb::CreateSecretRequest, ApiError> {
    let spec = Obj::root(body, "")?;
    spec.refuse(&["Driver", "Templating"])?;
    Ok(pb::CreateSecretRequest {
        name: spec.string("Name")?,
        labels: spec.map("Labels")?,
        data: data_of(spec)?,
    })
}

pub fn config_request(body: &Value) -> Result<pb::CreateConfigRequest, ApiError> {
    let spec = Obj::root(body, "")?;
    let driver = spec
        .with("Templating", |t| t.string("Name"))?
        .unwrap_or_default();
    if !matches!(driver.as_str(), "" | "golang") {
        return Err(ApiError::bad(
            "Templating.Name",
            format!("{driver:?}: Shoal's configs template with golang only"),
        ));
    }
    Ok(pb::CreateConfigRequest {
        name: spec.string("Name")?,
        labels: spec.map("Labels")?,
        data: data_of(spec)?,
        template_driver: driver,
    })
}

pub fn secret(s: &pb::SecretSummary) -> Value {
    json!({
        "ID": s.id,
        "Version": {"Index": s.version},
        "CreatedAt": rfc3339(0),
        "UpdatedAt": rfc3339(0),
        "Spec": {"Name": s.name, "Labels": labels(&s.labels)},
    })
}

pub fn config(c: &pb::ConfigSummary) -> Value {
    use base64::Engine;
    let mut spec = json!({
        "Name": c.name,
        "Labels": labels(&c.labels),
        "Data": base64::engine::general_purpose::STANDARD.encode(&c.data),
    });
    if !c.template_driver.is_empty() {
        spec["Templating"] = json!({"Name": c.template_driver});
    }
    json!({
        "ID": c.id,
        "Version": {"Index": c.version},
        "CreatedAt": rfc3339(c.created_unix),
        "UpdatedAt": rfc3339(c.created_unix),
        "Spec": spec,
    })
}

// ---------------------------------------------------------------- networks

pub fn network_request(body: &Value) -> Result<pb::CreateNetworkRequest, ApiError> {
    let b = Obj::root(body, "")?;
    b.refuse(&["Ingress", "ConfigOnly", "ConfigFrom", "EnableIPv6"])?;
    let driver = b.string("Driver")?;
    if !matches!(driver.as_str(), "" | "overlay") {
        return Err(ApiError::bad(
            "Driver",
            format!("{driver:?}: Shoal's networks are swarm overlays; create it with -d overlay"),
        ));
    }
    b.refuse_unless("Scope", &["swarm"])?;
    let mut r = pb::CreateNetworkRequest {
        name: b.string("Name")?,
        driver: "overlay".into(),
        attachable: b.bool("Attachable")?.unwrap_or_default(),
        internal: b.bool("Internal")?.unwrap_or_default(),
        labels: b.map("Labels")?,
        ..Default::default()
    };
    let options = b.map("Options")?;
    for (k, v) in &options {
        match k.as_str() {
            "encrypted" => {
                r.encryption = shoal_api::words::encryption_opt(v)
                    .ok_or_else(|| {
                        ApiError::bad(
                            format!("Options[{k:?}]"),
                            format!("{v:?}: {}", shoal_api::words::ENCRYPTION_OPT_HELP),
                        )
                    })?
                    .into()
            }
            "com.docker.network.driver.mtu" => {
                r.mtu = v.parse().map_err(|_| {
                    ApiError::bad(
                        format!("Options[{k:?}]"),
                        format!("{v:?}: expected a number"),
                    )
                })?;
            }
            _ => {
                return Err(ApiError::Unsupported {
                    field: format!("Options[{k:?}]"),
                });
            }
        }
    }
    b.with("IPAM", |ipam| {
        ipam.refuse_unless("Driver", &["default"])?;
        ipam.refuse(&["Options"])?;
        let configs = ipam.each("Config", |c| {
            c.refuse(&["IPRange", "AuxiliaryAddresses"])?;
            Ok((c.string("Subnet")?, c.string("Gateway")?))
        })?;
        match configs.as_slice() {
            [] => {}
            [(subnet, gateway)] => {
                r.subnet = subnet.clone();
                r.gateway = gateway.clone();
            }
            _ => {
                return Err(ApiError::bad(
                    "IPAM.Config",
                    "Shoal's overlay networks have one IPv4 subnet",
                ));
            }
        }
        Ok(())
    })?;
    Ok(r)
}

pub fn network(n: &pb::NetworkSummary) -> Value {
    let mut options = Map::new();
    options.insert(
        "com.docker.network.driver.overlay.vxlanid_list".into(),
        json!(n.vni.to_string()),
    );
    // As swarm shows IPsec (an empty value); WireGuard by its name.
    match pb::Encryption::try_from(n.encryption) {
        Ok(pb::Encryption::Ipsec) => {
            options.insert("encrypted".into(), json!(""));
        }
        Ok(pb::Encryption::Wireguard) => {
            options.insert("encrypted".into(), json!("wireguard"));
        }
        _ => {}
    }
    if n.mtu != 0 {
        options.insert(
            "com.docker.network.driver.mtu".into(),
            json!(n.mtu.to_string()),
        );
    }
    let mut ipam = Map::new();
    if !n.subnet.is_empty() {
        ipam.insert("Subnet".into(), json!(n.subnet));
    }
    if !n.gateway.is_empty() {
        ipam.insert("Gateway".into(), json!(n.gateway));
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(0),
        "Scope": "swarm",
        "Driver": if n.driver.is_empty() { "overlay" } else { n.driver.as_str() },
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [Value::Object(ipam)]},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": n.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": Value::Object(options),
        "Labels": labels(&n.labels),
    })
}

#[cfg(test)]
mod tests;
