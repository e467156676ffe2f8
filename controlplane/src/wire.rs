//! Every conversion between the wire (`shoal_api`'s proto types) and the
//! stored model, in one place (as openraft's examples keep `pb_impl`). The
//! model's serde format is the Raft log's and never changes here; the wire
//! carries enums and typed addresses. A value the wire carries that this
//! build does not know is an error naming the field, never a default.

use std::net::IpAddr;

use shoal_api::{
    cluster::v1 as pb,
    words::{WireError, Word, known},
};

use crate::{manager::ManagerError, model};

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> Self {
        ManagerError::Invalid {
            what: e.to_string(),
        }
    }
}

/// A model enum and the wire enum that carries it.
pub trait Pair: Sized + Copy {
    type Pb: TryFrom<i32> + Into<i32> + Copy;
    /// `None` for the wire's unspecified value.
    fn from_pb(p: Self::Pb) -> Option<Self>;
    fn to_pb(self) -> Self::Pb;
}

macro_rules! pairs {
    ($($m:ty => $p:ty { $($mv:ident = $pv:ident),* $(,)? })*) => {$(
        impl Pair for $m {
            type Pb = $p;

            fn from_pb(p: $p) -> Option<Self> {
                match p {
                    <$p>::Unspecified => None,
                    $(<$p>::$pv => Some(<$m>::$mv),)*
                }
            }

            fn to_pb(self) -> $p {
                match self {
                    $(<$m>::$mv => <$p>::$pv,)*
                }
            }
        }
    )*};
}

pairs! {
    model::NodeRole => pb::NodeRole { Worker = Worker, Manager = Manager }
    shoal_ca::NodeRole => pb::NodeRole { Worker = Worker, Manager = Manager }
    model::Availability => pb::NodeAvailability { Active = Active, Pause = Pause, Drain = Drain }
    model::NodeState => pb::NodeStatus {
        Unknown = Unknown, Down = Down, Ready = Ready, Disconnected = Disconnected,
    }
    model::Protocol => pb::Protocol { Tcp = Tcp, Udp = Udp }
    model::PublishMode => pb::PublishMode { Ingress = Ingress, Host = Host }
    model::EndpointMode => pb::EndpointMode { Vip = Vip, Dnsrr = Dnsrr }
    model::RestartCondition => pb::RestartCondition {
        Any = Any, OnFailure = OnFailure, None = None,
    }
    model::MountType => pb::MountType { Volume = Volume, Bind = Bind, Tmpfs = Tmpfs }
    model::TaskState => pb::TaskState {
        New = New, Pending = Pending, Assigned = Assigned, Accepted = Accepted,
        Preparing = Preparing, Starting = Starting, Running = Running, Complete = Complete,
        Shutdown = Shutdown, Failed = Failed, Rejected = Rejected, Orphaned = Orphaned,
    }
    model::FailureAction => pb::FailureAction {
        Pause = Pause, Continue = Continue, Rollback = Rollback,
    }
    model::UpdateOrder => pb::UpdateOrder { StopFirst = StopFirst, StartFirst = StartFirst }
    model::UpdateState => pb::UpdateState {
        Updating = Updating, Paused = Paused, Completed = Completed,
        RollbackStarted = RollbackStarted, RollbackPaused = RollbackPaused,
        RollbackCompleted = RollbackCompleted,
    }
    model::HealthStatus => pb::HealthStatus {
        Starting = Starting, Healthy = Healthy, Unhealthy = Unhealthy,
    }
}

/// A raw wire enum field as its model value; `None` when unspecified (a
/// default, or "unchanged" in an update).
pub fn decode<M: Pair>(field: impl FnOnce() -> String, value: i32) -> Result<Option<M>, WireError> {
    known::<M::Pb>(field, value).map(M::from_pb)
}

/// As [`decode`], the unspecified value meaning `default`.
pub fn decode_or<M: Pair>(
    field: impl FnOnce() -> String,
    value: i32,
    default: M,
) -> Result<M, WireError> {
    decode(field, value).map(|m| m.unwrap_or(default))
}

/// A model enum as its raw wire value.
pub fn encode<M: Pair>(m: M) -> i32 {
    m.to_pb().into()
}

/// The wire's service mode; the replica count travels beside it.
pub fn service_mode(m: &model::ServiceMode) -> (i32, u64) {
    match m {
        model::ServiceMode::Replicated { replicas } => {
            (pb::ServiceMode::Replicated.into(), *replicas)
        }
        model::ServiceMode::Global => (pb::ServiceMode::Global.into(), 0),
    }
}

/// docker's word for a model enum, for messages.
pub fn word<M: Pair>(m: M) -> &'static str
where
    M::Pb: Word,
{
    m.to_pb().word()
}

/// The model's service mode from a request: unspecified is replicated.
pub fn decode_service_mode(value: i32, replicas: u64) -> Result<model::ServiceMode, ManagerError> {
    match known::<pb::ServiceMode>(|| "mode".into(), value)? {
        pb::ServiceMode::Unspecified | pb::ServiceMode::Replicated => {
            Ok(model::ServiceMode::Replicated { replicas })
        }
        pb::ServiceMode::Global if replicas == 0 => Ok(model::ServiceMode::Global),
        pb::ServiceMode::Global => Err(ManagerError::Invalid {
            what: "--replicas can only be used with replicated mode".into(),
        }),
    }
}

/// A stored CIDR (`10.0.1.7/24`, as the allocator writes them) on the wire.
pub fn prefix(field: impl FnOnce() -> String, cidr: &str) -> Result<pb::Ipv4Prefix, WireError> {
    cidr.split_once('/')
        .and_then(|(a, l)| Some(pb::Ipv4Prefix::new(a.parse().ok()?, l.parse().ok()?)))
        .filter(|p| p.prefix_len <= 32)
        .ok_or_else(|| WireError::Invalid {
            field: field(),
            reason: format!("{cidr:?} is not an IPv4 address with a prefix length"),
        })
}

/// A stored address that travels as a `fixed32`: IPv4 only.
pub fn ipv4(field: impl FnOnce() -> String, addr: IpAddr) -> Result<u32, WireError> {
    match addr {
        IpAddr::V4(a) => Ok(u32::from(a)),
        IpAddr::V6(_) => Err(WireError::Invalid {
            field: field(),
            reason: format!("{addr} is not an IPv4 address"),
        }),
    }
}

/// An allocated port as the API shows it.
pub fn port(p: &model::PortConfig) -> pb::PortConfig {
    pb::PortConfig {
        protocol: encode(p.protocol),
        target_port: u32::from(p.target_port),
        published_port: u32::from(p.published_port.unwrap_or_default()),
        publish_mode: encode(p.publish_mode),
    }
}

/// A service's VIP as the API shows it, with its network's name (the id
/// when the network is gone).
pub fn vip(state: &model::ClusterState, v: &model::VirtualIp) -> Result<pb::VirtualIp, WireError> {
    Ok(pb::VirtualIp {
        network_id: v.network_id.clone(),
        network: state
            .networks
            .get(&v.network_id)
            .map_or(v.network_id.clone(), |n| n.name.clone()),
        addr: Some(prefix(|| format!("vips[{}].addr", v.network_id), &v.addr)?),
    })
}

/// A stored value the wire cannot carry is left out of a reply, and said
/// so: the allocator only writes IPv4 CIDRs, so this is a bug or a
/// hand-edited state, never a normal case.
pub fn logged<T>(r: Result<T, WireError>) -> Option<T> {
    r.map_err(|e| tracing::warn!("left out of a reply: {e}"))
        .ok()
}

/// A service's VIPs as the API shows them.
pub fn vips(state: &model::ClusterState, vips: &[model::VirtualIp]) -> Vec<pb::VirtualIp> {
    vips.iter().filter_map(|v| logged(vip(state, v))).collect()
}

/// A restart policy as the API shows it.
pub fn restart(p: &model::RestartPolicy) -> pb::RestartPolicy {
    pb::RestartPolicy {
        condition: encode(p.condition),
        delay_secs: p.delay_secs,
        max_attempts: p.max_attempts.unwrap_or_default(),
        window_ns: p.window_ns,
    }
}

/// A request's container as the stored task spec, unchecked (see
/// `validate::container`). The digest is the manager's to pin, never the
/// caller's.
pub fn task_spec(
    args: &[String],
    env: &[String],
    c: Option<&pb::ContainerSpec>,
    r: Option<&pb::Resources>,
) -> Result<model::TaskSpec, WireError> {
    let default = pb::ContainerSpec::default();
    let c = c.unwrap_or(&default);
    let r = r.cloned().unwrap_or_default();
    let mounts = mounts("container.mounts", &c.mounts)?;
    Ok(model::TaskSpec {
        image: c.image.trim().to_owned(),
        image_digest: String::new(),
        entrypoint: c.entrypoint.as_ref().map(|e| e.args.clone()),
        args: args.to_vec(),
        env: env.to_vec(),
        workdir: c.workdir.clone(),
        user: c.user.clone(),
        hostname: c.hostname.clone(),
        stop_signal: c.stop_signal.clone(),
        stop_grace_nanos: c
            .stop_grace_period_ns
            .unwrap_or(model::DEFAULT_STOP_GRACE_NANOS),
        read_only: c.read_only,
        init: c.init,
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        sysctls: c.sysctls.clone().into_iter().collect(),
        resources: model::Resources {
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory_bytes: r.limit_memory_bytes,
            limit_pids: r.limit_pids,
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory_bytes: r.reserve_memory_bytes,
        },
        mounts,
        legacy_rootfs: String::new(),
        registry_auth: c.registry_auth.clone(),
        // Resolved against the stored secrets and configs by the manager.
        secrets: Vec::new(),
        configs: Vec::new(),
        healthcheck: c.healthcheck.as_ref().map(|h| {
            let mut out = model::HealthConfig::default();
            apply_health(&mut out, h);
            out
        }),
        container_labels: c.labels.clone().into_iter().collect(),
        // Only `service update --force` bumps it.
        force_update: 0,
        ulimits: c.ulimits.iter().map(decode_ulimit).collect(),
        hosts: c.hosts.iter().map(|h| h.trim().to_owned()).collect(),
        network_host: c.network_host,
    })
}

/// Mounts as a request carries them (`field`: where, for errors).
pub fn mounts(field: &str, mounts: &[pb::Mount]) -> Result<Vec<model::Mount>, WireError> {
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind = decode::<model::MountType>(|| format!("{field}[{i}].type"), m.r#type)?
                .ok_or_else(|| WireError::Missing {
                    field: format!("--mount ({field}[{i}].type)"),
                })?;
            Ok(model::Mount {
                kind,
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                tmpfs_size_bytes: m.tmpfs_size_bytes,
                tmpfs_mode: m.tmpfs_mode,
                volume_nocopy: m.volume_nocopy,
            })
        })
        .collect()
}

/// Sets what `h` gives over `into` (nothing at create; the stored config
/// at update). A test given replaces the test; none keeps it. Zeros are
/// kept as zeros: "not given", resolved on the node against the image.
pub fn apply_health(into: &mut model::HealthConfig, h: &pb::HealthConfig) {
    if !h.test.is_empty() {
        into.test = h.test.clone();
    }
    let fields = [
        (h.interval_ns, &mut into.interval_nanos),
        (h.timeout_ns, &mut into.timeout_nanos),
        (h.start_period_ns, &mut into.start_period_nanos),
        (h.start_interval_ns, &mut into.start_interval_nanos),
        (h.retries, &mut into.retries),
    ];
    for (given, field) in fields {
        if let Some(v) = given {
            *field = v;
        }
    }
}

/// A stored healthcheck as the wire carries it (zeros: not given).
pub fn health_config(h: &model::HealthConfig) -> pb::HealthConfig {
    pb::HealthConfig {
        test: h.test.clone(),
        interval_ns: Some(h.interval_nanos),
        timeout_ns: Some(h.timeout_nanos),
        start_period_ns: Some(h.start_period_nanos),
        start_interval_ns: Some(h.start_interval_nanos),
        retries: Some(h.retries),
    }
}

/// Sets what `u` gives over `into` (swarm's defaults at create; the
/// stored config at update). `field` names the flag family for errors
/// (`--update` or `--rollback`).
pub fn apply_update_config(
    into: &mut model::UpdateConfig,
    u: &pb::UpdateConfig,
    field: &str,
) -> Result<(), WireError> {
    if let Some(v) = u.parallelism {
        into.parallelism = v;
    }
    if let Some(v) = u.delay_ns {
        into.delay_nanos = v;
    }
    if let Some(v) = u.failure_action {
        into.failure_action = decode_or(
            || format!("{field}-failure-action"),
            v,
            model::FailureAction::Pause,
        )?;
    }
    if let Some(v) = u.monitor_ns {
        into.monitor_nanos = v;
    }
    if let Some(v) = u.max_failure_ratio {
        into.max_failure_ratio = model::Ratio(v);
    }
    if let Some(v) = u.order {
        into.order = decode_or(
            || format!("{field}-order"),
            v,
            model::UpdateOrder::StopFirst,
        )?;
    }
    Ok(())
}

/// A stored update config as the wire carries it, every field set.
pub fn update_config(u: &model::UpdateConfig) -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: Some(u.parallelism),
        delay_ns: Some(u.delay_nanos),
        failure_action: Some(encode(u.failure_action)),
        monitor_ns: Some(u.monitor_nanos),
        max_failure_ratio: Some(u.max_failure_ratio.0),
        order: Some(encode(u.order)),
    }
}

pub fn update_status(s: &model::UpdateStatus) -> pb::UpdateStatus {
    pb::UpdateStatus {
        state: encode(s.state),
        started_unix: s.started_unix,
        completed_unix: s.completed_unix,
        message: s.message.clone(),
    }
}

/// A node's health report as stored; `None` when the task has no check.
/// Only the last [`model::HEALTH_LOG_LEN`] results are kept.
pub fn decode_health(
    h: &pb::TaskHealth,
    task: &str,
) -> Result<Option<model::TaskHealth>, WireError> {
    let Some(status) = decode(|| format!("task {task} health.status"), h.status)? else {
        return Ok(None);
    };
    let skip = h.log.len().saturating_sub(model::HEALTH_LOG_LEN);
    Ok(Some(model::TaskHealth {
        status,
        failing_streak: h.failing_streak,
        log: h
            .log
            .iter()
            .skip(skip)
            .map(|r| model::HealthResult {
                start_unix_ns: r.start_unix_ns,
                end_unix_ns: r.end_unix_ns,
                exit_code: r.exit_code,
                // docker keeps 4096 bytes of output; cut on a char boundary.
                output: {
                    let mut end = r.output.len().min(4096);
                    while !r.output.is_char_boundary(end) {
                        end -= 1;
                    }
                    r.output[..end].to_owned()
                },
            })
            .collect(),
    }))
}

pub fn health(h: &model::TaskHealth) -> pb::TaskHealth {
    pb::TaskHealth {
        status: encode(h.status),
        failing_streak: h.failing_streak,
        log: h
            .log
            .iter()
            .map(|r| pb::HealthResult {
                start_unix_ns: r.start_unix_ns,
                end_unix_ns: r.end_unix_ns,
                exit_code: r.exit_code,
                output: r.output.clone(),
            })
            .collect(),
    }
}

/// A stored ulimit as the wire carries it.
pub fn ulimit(u: &model::Ulimit) -> pb::Ulimit {
    pb::Ulimit {
        name: u.name.clone(),
        soft: u.soft,
        hard: u.hard,
    }
}

/// A request's ulimit, unchecked (see `validate::ulimits`).
pub fn decode_ulimit(u: &pb::Ulimit) -> model::Ulimit {
    model::Ulimit {
        name: u.name.trim().to_owned(),
        soft: u.soft,
        hard: u.hard,
    }
}

/// A stored reference as `service inspect` shows it: never any data.
pub fn file_ref(r: &model::FileRef) -> pb::FileReference {
    pb::FileReference {
        source: r.name.clone(),
        id: r.id.clone(),
        name: r.name.clone(),
        target: r.target.clone(),
        uid: r.uid,
        gid: r.gid,
        mode: r.mode,
    }
}

/// A stored task spec's container and resources as the wire carries them,
/// registry credentials left out (only a task's own node gets them:
/// [`container_for_node`]).
pub fn container(t: &model::TaskSpec) -> (pb::ContainerSpec, pb::Resources) {
    let r = &t.resources;
    (
        pb::ContainerSpec {
            ulimits: t.ulimits.iter().map(ulimit).collect(),
            hosts: t.hosts.clone(),
            network_host: t.network_host,
            image: t.image.clone(),
            image_digest: t.image_digest.clone(),
            entrypoint: t
                .entrypoint
                .as_ref()
                .map(|args| pb::Entrypoint { args: args.clone() }),
            workdir: t.workdir.clone(),
            user: t.user.clone(),
            hostname: t.hostname.clone(),
            stop_signal: t.stop_signal.clone(),
            stop_grace_period_ns: Some(t.stop_grace_nanos),
            read_only: t.read_only,
            init: t.init,
            cap_add: t.cap_add.clone(),
            cap_drop: t.cap_drop.clone(),
            sysctls: t.sysctls.clone().into_iter().collect(),
            mounts: t
                .mounts
                .iter()
                .map(|m| pb::Mount {
                    r#type: encode(m.kind),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    read_only: m.read_only,
                    tmpfs_size_bytes: m.tmpfs_size_bytes,
                    tmpfs_mode: m.tmpfs_mode,
                    volume_nocopy: m.volume_nocopy,
                })
                .collect(),
            registry_auth: String::new(),
            secrets: t.secrets.iter().map(file_ref).collect(),
            configs: t.configs.iter().map(file_ref).collect(),
            healthcheck: t.healthcheck.as_ref().map(health_config),
            labels: t.container_labels.clone().into_iter().collect(),
            force_update: t.force_update,
        },
        pb::Resources {
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory_bytes: r.limit_memory_bytes,
            limit_pids: r.limit_pids,
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory_bytes: r.reserve_memory_bytes,
        },
    )
}

/// [`container`] with the registry credentials, for the node that runs
/// the task and may have to pull its image.
pub fn container_for_node(t: &model::TaskSpec) -> (pb::ContainerSpec, pb::Resources) {
    let (mut c, r) = container(t);
    c.registry_auth = t.registry_auth.clone();
    (c, r)
}

/// A network's encryption on the wire. Its zero is `none`, not
/// "unspecified": the field was a bool, and false meant no encryption.
pub fn encode_encryption(e: model::Encryption) -> i32 {
    match e {
        model::Encryption::None => pb::Encryption::None,
        model::Encryption::Ipsec => pb::Encryption::Ipsec,
        model::Encryption::Wireguard => pb::Encryption::Wireguard,
    }
    .into()
}

pub fn decode_encryption(value: i32) -> Result<model::Encryption, ManagerError> {
    match pb::Encryption::try_from(value) {
        Ok(pb::Encryption::None) => Ok(model::Encryption::None),
        Ok(pb::Encryption::Ipsec) => Ok(model::Encryption::Ipsec),
        Ok(pb::Encryption::Wireguard) => Ok(model::Encryption::Wireguard),
        Err(_) => Err(ManagerError::Invalid {
            what: format!(
                "encryption {value}: not a mode this manager knows; give none, ipsec or \
                 wireguard (`--opt encrypted=wireguard`)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_unknown_values_name_the_field() {
        for s in [
            model::TaskState::New,
            model::TaskState::Running,
            model::TaskState::Orphaned,
        ] {
            assert_eq!(decode(|| "state".into(), encode(s)), Ok(Some(s)));
        }
        assert_eq!(decode::<model::NodeRole>(|| "role".into(), 0), Ok(None));
        assert_eq!(
            decode::<model::Protocol>(|| "ports[0].protocol".into(), 7).map_err(|e| e.to_string()),
            Err("ports[0].protocol: unknown value 7".into())
        );
        assert_eq!(
            decode_or(|| "p".into(), 0, model::Protocol::Tcp),
            Ok(model::Protocol::Tcp)
        );
    }

    #[test]
    fn container_specs_round_trip() {
        let spec = model::TaskSpec {
            image: "busybox".into(),
            entrypoint: Some(Vec::new()),
            args: vec!["sh".into()],
            mounts: vec![model::Mount {
                kind: model::MountType::Tmpfs,
                source: String::new(),
                target: "/t".into(),
                read_only: true,
                tmpfs_size_bytes: 1 << 20,
                tmpfs_mode: 0o700,
                volume_nocopy: false,
            }],
            resources: model::Resources {
                reserve_memory_bytes: 1 << 30,
                ..Default::default()
            },
            ..Default::default()
        };
        let (c, r) = container(&spec);
        let back = task_spec(&spec.args, &spec.env, Some(&c), Some(&r));
        assert_eq!(back, Ok(spec));
        let mut bad = c.clone();
        bad.mounts[0].r#type = 9;
        assert_eq!(
            task_spec(&[], &[], Some(&bad), None).map_err(|e| e.to_string()),
            Err("container.mounts[0].type: unknown value 9".into())
        );
    }

    #[test]
    fn stored_cidrs_become_typed_prefixes() {
        let p = prefix(|| "addr".into(), "10.0.1.7/24").map(|p| p.to_string());
        assert_eq!(p, Ok("10.0.1.7/24".into()));
        assert!(prefix(|| "addr".into(), "10.0.1.7").is_err());
        assert!(prefix(|| "addr".into(), "10.0.1.7/33").is_err());
        let v6: IpAddr = "fd00::1"
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        assert!(ipv4(|| "addr".into(), v6).is_err());
    }
}
