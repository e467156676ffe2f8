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
    let mounts = c
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind =
                decode::<model::MountType>(|| format!("container.mounts[{i}].type"), m.r#type)?
                    .ok_or_else(|| WireError::Missing {
                        field: format!("--mount (container.mounts[{i}].type)"),
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
        .collect::<Result<Vec<_>, WireError>>()?;
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
    })
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
            // Health, container labels, force_update: issue 13's model.
            ..Default::default()
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
