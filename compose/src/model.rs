//! The typed stack: what `docker stack deploy` works from after loading,
//! merging and interpolating its compose files (docker/cli's
//! `cli/compose/types`), minus the keys docker ignores for swarm with a
//! warning. Free-form values that docker only checks when it converts the
//! stack (deploy mode, port mode, restart condition, mount type names) stay
//! strings or open enums here, so loading refuses exactly what docker's
//! loader refuses.
//!
//! Maps are `BTreeMap`s: docker prints and merges them sorted by key.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::units::Duration;

/// A whole stack.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The schema version the files were read with ("3.13" when they name
    /// none).
    pub version: String,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

/// One service. Empty strings and lists mean "not set", as in docker.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `command:` as a string is split as a shell would (google/shlex).
    pub command: Vec<String>,
    pub configs: Vec<FileReference>,
    pub credential_spec: Option<CredentialSpec>,
    /// Loaded for completeness; swarm ignores it, as docker does.
    pub depends_on: Vec<String>,
    pub deploy: Deploy,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub entrypoint: Vec<String>,
    /// After `env_file:` and the caller's environment are applied; `None`
    /// for a variable named without a value that the caller does not set.
    pub environment: BTreeMap<String, Option<String>>,
    /// As written; already read into `environment`.
    pub env_file: Vec<String>,
    /// `host:ip` entries (`=` and `[ipv6]` forms normalised as docker does).
    pub extra_hosts: Vec<String>,
    pub hostname: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub image: String,
    pub init: Option<bool>,
    pub isolation: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub logging: Option<Logging>,
    /// Networks by name; `None` when listed without options.
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    pub ports: Vec<Port>,
    pub read_only: bool,
    /// Warned about as unsupported by docker, yet docker still uses it for
    /// the restart policy when `deploy.restart_policy` is absent.
    pub restart: Option<String>,
    pub secrets: Vec<FileReference>,
    pub stdin_open: bool,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    /// Loaded for completeness; docker does not pass it to swarm.
    pub tmpfs: Vec<String>,
    pub tty: bool,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub user: Option<String>,
    pub volumes: Vec<ServiceVolume>,
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CredentialSpec {
    pub config: Option<String>,
    pub file: Option<String>,
    pub registry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deploy {
    /// `replicated` (the default), `global`, `replicated-job`, `global-job`.
    pub mode: Option<String>,
    pub replicas: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub placement: Placement,
    /// `vip` (the default) or `dnsrr`.
    pub endpoint_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateConfig {
    /// `None` means docker's default of 1.
    pub parallelism: Option<u64>,
    pub delay: Duration,
    /// `continue`, `rollback` or `pause`.
    pub failure_action: Option<String>,
    pub monitor: Duration,
    pub max_failure_ratio: f32,
    pub order: Option<UpdateOrder>,
}

/// `order:` — the only deploy value docker's schema restricts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOrder {
    StartFirst,
    StopFirst,
}

impl UpdateOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StartFirst => "start-first",
            UpdateOrder::StopFirst => "stop-first",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub limits: Option<Limits>,
    pub reservations: Option<Reservations>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    /// CPUs in billionths (`"0.5"` is 500 000 000), parsed as docker's
    /// `ParseCPUs` does.
    pub nano_cpus: Option<i64>,
    /// Bytes (`"50M"` is 52 428 800).
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reservations {
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub generic_resources: Vec<GenericResource>,
}

/// `discrete_resource_spec: {kind, value}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenericResource {
    pub kind: String,
    pub value: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// The `spread:` descriptor of each preference.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Healthcheck {
    /// As docker stores it: a string `test:` becomes `["CMD-SHELL", s]`.
    pub test: Vec<String>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub disable: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Logging {
    pub driver: Option<String>,
    /// `None` when `options:` is absent (docker's merge tells the two apart).
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

/// A port, short syntax already expanded (one entry per port of a range).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Port {
    /// `ingress` (short syntax) or what the long syntax says; `None` when the
    /// long syntax leaves it out (swarm then uses ingress).
    pub mode: Option<String>,
    pub target: u32,
    /// `None`: not published, swarm picks a port.
    pub published: Option<u32>,
    /// `tcp`, `udp`, `sctp`; `None` when the long syntax leaves it out.
    pub protocol: Option<String>,
}

/// A secret or config given to a service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileReference {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// File mode; YAML `0440` is octal, 288.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ulimit {
    Single(i64),
    SoftHard { soft: i64, hard: i64 },
}

/// A mount type. Docker's loader takes any name and its converter refuses
/// the unknown ones; `Other` keeps such a name for that later check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MountType {
    #[default]
    Volume,
    Bind,
    Tmpfs,
    Npipe,
    Cluster,
    Image,
    Other(String),
}

impl MountType {
    pub fn parse(s: &str) -> MountType {
        match s {
            "volume" => MountType::Volume,
            "bind" => MountType::Bind,
            "tmpfs" => MountType::Tmpfs,
            "npipe" => MountType::Npipe,
            "cluster" => MountType::Cluster,
            "image" => MountType::Image,
            other => MountType::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            MountType::Volume => "volume",
            MountType::Bind => "bind",
            MountType::Tmpfs => "tmpfs",
            MountType::Npipe => "npipe",
            MountType::Cluster => "cluster",
            MountType::Image => "image",
            MountType::Other(s) => s,
        }
    }
}

/// A mount of a service. Bind sources are absolute after loading
/// (relative ones resolved against the first file's directory).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceVolume {
    pub kind: MountType,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub consistency: Option<String>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BindOptions {
    pub propagation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeOptions {
    pub nocopy: bool,
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TmpfsOptions {
    /// Bytes.
    pub size: Option<i64>,
}

/// A top-level network.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    /// The real name; for an external network it defaults to the key
    /// (`external: {name: x}` is moved here, as docker does).
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipam: Ipam,
    pub external: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ipam {
    pub driver: Option<String>,
    /// The `subnet:` of each pool.
    pub subnets: Vec<String>,
}

/// A top-level volume.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Volume {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileObject {
    pub name: Option<String>,
    /// Absolute after loading.
    pub file: Option<PathBuf>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    /// Secrets only: a secret-store driver.
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    /// `golang` makes swarm expand templates in the data.
    pub template_driver: Option<String>,
}
