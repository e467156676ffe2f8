//! The cluster's objects, the commands that change them, and the deterministic
//! [`apply`] that every manager runs over the committed Raft log.
//!
//! Every object carries `id` and `version` (swarmkit's `meta.version`): the
//! version is the store-wide change counter at the object's last change, so
//! versions only grow and an update can be a compare-and-set on it. Ids are
//! chosen by the proposer, never by `apply`, which must stay free of clocks
//! and randomness so that every replica reaches the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The kinds of stored objects; used in errors and apply results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cluster,
    Node,
    Network,
    Service,
    Task,
    Secret,
    Config,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Network => "network",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Secret => "secret",
            Kind::Config => "config",
        })
    }
}

/// A string that is never printed by `Debug` (join tokens): commands and
/// states are logged, their secrets must not be.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secret payload bytes: redacted in `Debug`, hex in serde so a snapshot
/// stays compact (a JSON array of numbers is four times larger).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s.serialize_str(&out)
}

fn deserialize_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() % 2 != 0 {
        return Err(serde::de::Error::custom("odd-length hex"));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(serde::de::Error::custom("invalid hex digit")),
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|p| Ok((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex(d).map(SecretBytes)
    }
}

/// A config's payload: not secret (`config inspect` shows it), but up to
/// 1000 KiB, so `Debug` (commands and states are logged) gives its size
/// only, and serde writes hex as for secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigBytes(pub Vec<u8>);

impl fmt::Debug for ConfigBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for ConfigBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for ConfigBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex(d).map(ConfigBytes)
    }
}

pub type Labels = BTreeMap<String, String>;

// ---------------------------------------------------------------- Cluster

/// The cluster object; swarm keeps exactly one, named "default".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub version: u64,
    pub name: String,
    pub settings: ClusterSettings,
    pub join_tokens: JoinTokens,
    /// The root CA every manager signs node certificates with. Like swarm,
    /// the key lives in Raft (encrypted at rest with the rest of the store).
    #[serde(default)]
    pub root_ca: RootCaKeys,
    /// Ids of removed nodes: their still-valid certificates are refused.
    #[serde(default)]
    pub removed_nodes: BTreeSet<String>,
    /// With autolock, the operator's unlock key (`SWMKEY-1-…`), shared by
    /// every manager: each rewraps its own store's data key with it when it
    /// changes. Empty without autolock.
    #[serde(default)]
    pub unlock_key: SecretString,
    /// The network key rings the leader keeps and rotates (see
    /// [`crate::keys`]); empty until the leader first makes them.
    #[serde(default)]
    pub network_keys: crate::keys::NetworkKeys,
}

/// PEM of the root CA certificate and its private key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCaKeys {
    pub cert_pem: String,
    pub key_pem: SecretString,
    /// Set during a root rotation (`swarm ca --rotate`): the next root,
    /// which issues every certificate until every node holds one from it;
    /// then it replaces `cert_pem`/`key_pem` and this is cleared.
    #[serde(default)]
    pub rotation: Option<RootRotation>,
}

/// The root a rotation moves to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRotation {
    pub cert_pem: String,
    pub key_pem: SecretString,
    /// The new root's certificate signed by the current root: appended to
    /// every certificate issued meanwhile, so nodes still trusting only the
    /// current root accept them.
    pub cross_signed_pem: String,
}

/// Cluster-wide settings. `#[serde(default)]` so that fields added later
/// still read older snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// CIDR pools overlay subnets are carved from (swarm `--default-addr-pool`).
    pub default_addr_pool: Vec<String>,
    /// Prefix length of each overlay subnet (swarm `--default-addr-pool-mask-length`).
    pub subnet_size: u8,
    /// VXLAN UDP port (swarm `--data-path-port`).
    pub data_path_port: u16,
    /// Raft log entries between snapshots (swarm `--snapshot-interval`).
    pub snapshot_interval: u64,
    /// Entries kept behind a snapshot for slow followers (swarmkit's default).
    pub log_entries_for_slow_followers: u64,
    /// How often agents heartbeat the dispatcher (swarm `--dispatcher-heartbeat`).
    pub dispatcher_heartbeat_secs: u64,
    /// Finished tasks kept per slot (swarm `--task-history-limit`).
    pub task_history_limit: u64,
    /// Managers need the operator's unlock key after a restart (swarm `--autolock`).
    pub autolock: bool,
    /// Lifetime of node certificates (swarm `--cert-expiry`, 2160h).
    pub node_cert_expiry_secs: u64,
    /// How often the network key rings rotate (swarm: 12 h).
    pub network_key_rotation_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            default_addr_pool: vec!["10.0.0.0/8".to_owned()],
            subnet_size: 24,
            data_path_port: 4789,
            snapshot_interval: crate::raft::DEFAULT_SNAPSHOT_INTERVAL,
            log_entries_for_slow_followers: crate::raft::DEFAULT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
            dispatcher_heartbeat_secs: 5,
            task_history_limit: 5,
            autolock: false,
            node_cert_expiry_secs: 2160 * 3600,
            network_key_rotation_secs: crate::keys::DEFAULT_ROTATION.as_secs(),
        }
    }
}

/// Join tokens (`SWMTKN-1-<ca digest>-<secret>`): whoever holds one can join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    pub worker: SecretString,
    pub manager: SecretString,
}

// ---------------------------------------------------------------- Node

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    #[default]
    Worker,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub version: u64,
    /// Not unique: a machine that leaves and rejoins gets a new node id under
    /// the same hostname, as in swarm.
    pub hostname: String,
    /// The role the operator wants (swarm's desired role): `node promote`
    /// sets `Manager` at once, and the node is a manager in Raft only once
    /// `manager` is set too; see [`Node::promotion_pending`].
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: Labels,
    /// Underlay address, as seen by the manager.
    pub addr: Option<IpAddr>,
    pub status: NodeState,
    /// Set while the node is a manager: its Raft id and 2377 address.
    #[serde(default)]
    pub manager: Option<ManagerInfo>,
    /// Its certificate, as the node last reported it in a heartbeat.
    #[serde(default)]
    pub tls: NodeTls,
    /// What it offers tasks, as it last reported; zero until then.
    #[serde(default)]
    pub resources: NodeResources,
    /// Its OS and architecture, as it last reported; empty until then.
    #[serde(default, skip_serializing_if = "NodePlatform::is_empty")]
    pub platform: NodePlatform,
    /// Its WireGuard public key (base64), as it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_key: Option<String>,
}

/// What a node tells the managers of itself in each heartbeat; `None`:
/// not reported (an older agent, or a join), so the record keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    pub tls: Option<NodeTls>,
    pub resources: Option<NodeResources>,
    pub platform: Option<NodePlatform>,
    /// Base64 of its 32-byte WireGuard public key.
    pub wireguard_key: Option<String>,
}

/// docker's `Description.Platform` (`linux`, `x86_64`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodePlatform {
    pub os: String,
    pub architecture: String,
}

impl NodePlatform {
    pub fn is_empty(&self) -> bool {
        self.os.is_empty() && self.architecture.is_empty()
    }

    /// The platform this process runs on, as the agent reports it.
    pub fn this_node() -> Self {
        NodePlatform {
            os: std::env::consts::OS.to_owned(),
            architecture: std::env::consts::ARCH.to_owned(),
        }
    }
}

/// A node's CPUs and memory (docker's `Description.Resources`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl Node {
    /// Whether the node is a manager, or is to become one: the role its
    /// next certificate gets.
    pub fn wants_manager(&self) -> bool {
        self.manager.is_some() || self.role == NodeRole::Manager
    }

    /// Promoted (`node promote`) but not yet a Raft voter: the node still
    /// has to get its manager certificate and start its manager.
    pub fn promotion_pending(&self) -> bool {
        self.role == NodeRole::Manager && self.manager.is_none()
    }
}

/// What a node reports of its certificate: a root rotation ends once every
/// node's issuer is the new root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTls {
    /// `sha256:<hex>` of the root that signed it; empty = unknown.
    pub cert_issuer: String,
    pub cert_not_after_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub raft_id: u64,
    /// `host:port` other managers and agents dial.
    pub addr: String,
}

// ---------------------------------------------------------------- Network

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    #[default]
    Overlay,
}

/// How a network's VXLAN crosses the underlay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "StoredEncryption")]
pub enum Encryption {
    #[default]
    None,
    /// `--opt encrypted`: ESP per node pair, as swarm.
    Ipsec,
    /// `--opt encrypted=wireguard`: through the nodes' WireGuard devices.
    Wireguard,
}

impl Encryption {
    pub fn is_encrypted(self) -> bool {
        self != Encryption::None
    }

    /// The largest task MTU on a 1500-byte underlay: VXLAN's 50 bytes, and
    /// ESP's 26 or WireGuard's 60.
    pub fn max_mtu(self) -> u32 {
        match self {
            Encryption::None => 1450,
            Encryption::Ipsec => 1424,
            Encryption::Wireguard => 1390,
        }
    }

    /// As the CLI and docker take it (`--opt encrypted=…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::Ipsec => "ipsec",
            Encryption::Wireguard => "wireguard",
        }
    }
}

/// What the `encrypted` field may hold on disk.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredEncryption {
    Bool(bool),
    Mode(EncryptionName),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum EncryptionName {
    None,
    Ipsec,
    Wireguard,
}

impl From<StoredEncryption> for Encryption {
    fn from(s: StoredEncryption) -> Encryption {
        match s {
            StoredEncryption::Bool(false) | StoredEncryption::Mode(EncryptionName::None) => {
                Encryption::None
            }
            StoredEncryption::Bool(true) | StoredEncryption::Mode(EncryptionName::Ipsec) => {
                Encryption::Ipsec
            }
            StoredEncryption::Mode(EncryptionName::Wireguard) => Encryption::Wireguard,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub version: u64,
    /// Unique, unlike swarm, where duplicate network names are a known trap.
    pub name: String,
    pub labels: Labels,
    pub driver: NetworkDriver,
    /// The routing mesh's network (swarm's `ingress`).
    pub ingress: bool,
    pub attachable: bool,
    /// Stored as `encrypted`: records from before WireGuard hold a bool
    /// there (true: IPsec).
    #[serde(rename = "encrypted")]
    pub encryption: Encryption,
    /// `None` until the allocator picks them.
    pub vni: Option<u32>,
    pub subnet: Option<String>,
    pub gateway: Option<IpAddr>,
    /// `None`: derived per path and encryption mode.
    pub mtu: Option<u32>,
    /// `--internal`: its tasks get no egress (stored before the flag: false).
    #[serde(default)]
    pub internal: bool,
}

// ---------------------------------------------------------------- Service

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    Replicated { replicas: u64 },
    Global,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Published on every node through the routing mesh.
    #[default]
    Ingress,
    /// Published only on the nodes running a task.
    Host,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl fmt::Display for PublishMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: Protocol,
    pub target_port: u16,
    /// `None`: the allocator picks one from the dynamic range.
    pub published_port: Option<u16>,
    pub publish_mode: PublishMode,
}

impl PortConfig {
    /// Whether two published ports cannot coexist in different services:
    /// an ingress port holds its number on every node, so it clashes with
    /// any port of that number; two host-mode ports only clash per node,
    /// which the scheduler keeps apart.
    pub fn clashes_with(&self, other: &PortConfig) -> bool {
        self.protocol == other.protocol
            && self.published_port.is_some()
            && self.published_port == other.published_port
            && (self.publish_mode == PublishMode::Ingress
                || other.publish_mode == PublishMode::Ingress)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
}

/// The reserved image name for the node's own root filesystem, read-only.
pub const HOST_IMAGE: &str = "host";

/// docker's default `--stop-grace-period`.
pub const DEFAULT_STOP_GRACE_NANOS: u64 = 10_000_000_000;

/// What a task runs (docker's ContainerSpec and Resources); copied into each
/// task so a service update does not change tasks already created.
///
/// Stored specs of builds before images carry `rootfs` (a directory tree
/// the tasks pivoted into, empty for the node's filesystem) and no image:
/// they read as image [`HOST_IMAGE`], and a non-empty `rootfs` is kept in
/// [`TaskSpec::legacy_rootfs`] so that nothing runs on a filesystem it was
/// not meant for (see `orchestrator`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredTaskSpec")]
pub struct TaskSpec {
    /// As given (`busybox`, `registry:5000/a/b:1`, `x@sha256:…`) or
    /// [`HOST_IMAGE`].
    pub image: String,
    /// `sha256:<hex>` of the manifest, pinned at create time; empty: not
    /// pinned (unknown to the catalogue) or [`HOST_IMAGE`].
    pub image_digest: String,
    /// `Some`: replaces the image's entrypoint (`Some(vec![])` clears it).
    pub entrypoint: Option<Vec<String>>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: String,
    pub stop_grace_nanos: u64,
    pub read_only: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub resources: Resources,
    pub mounts: Vec<Mount>,
    /// The `--rootfs` directory of a spec stored before images; empty for
    /// every spec made since. Written back only when set.
    #[serde(rename = "rootfs", skip_serializing_if = "String::is_empty")]
    pub legacy_rootfs: String,
    /// `--with-registry-auth`: docker's X-Registry-Auth for the image's
    /// registry, sent to the nodes with their tasks and never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registry_auth: String,
    /// `--secret`: references only, resolved to ids at create time; the
    /// data goes to the task's node in its assignment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    /// `--config`, as `secrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    /// `--health-*` / `--no-healthcheck`; `None`: the image's HEALTHCHECK.
    /// Part of the task spec, so that changing it replaces the tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `--container-label`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_labels: Labels,
    /// docker's ForceUpdate: bumped by `service update --force`, so the
    /// tasks differ from the running ones and are replaced.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub force_update: u64,
    /// `--ulimit NAME=SOFT[:HARD]`, docker's names (`nofile`, `nproc`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--host HOST:IP`, stored as docker stores them: `IP HOST`, one
    /// extra line each of the task's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `--network host`: the task runs in its node's network namespace,
    /// with no attachment and no VIP. Part of the task spec, so changing
    /// it replaces the tasks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network_host: bool,
}

/// One `--ulimit`: an rlimit the task's process starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name, without `RLIMIT_`: `nofile`, `nproc`, `core`, ….
    pub name: String,
    /// -1: unlimited.
    pub soft: i64,
    pub hard: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// docker's HealthConfig as given: a zero duration or retry count is not
/// given, and the node takes the image's HEALTHCHECK value, else docker's
/// default, as dockerd merges them (a `--health-cmd` alone keeps the
/// image's interval).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// `[]`: the image's test; `["NONE"]`: no check; `["CMD", arg…]`;
    /// `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval_nanos: u64,
    pub timeout_nanos: u64,
    pub start_period_nanos: u64,
    pub start_interval_nanos: u64,
    pub retries: u64,
}

/// Where secrets with a relative target are mounted in a task.
pub const SECRETS_DIR: &str = "/run/secrets";
/// docker's default file mode for secrets and configs.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

/// A secret or config a task mounts (swarmkit's SecretReference and
/// ConfigReference with their file target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The secret's or config's id and name.
    pub id: String,
    pub name: String,
    /// As given: a secret's is relative to [`SECRETS_DIR`] or absolute; a
    /// config's is absolute.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl FileRef {
    /// The absolute path of the file in the task: a relative (secret)
    /// target under [`SECRETS_DIR`].
    pub fn path(&self) -> String {
        if self.target.starts_with('/') {
            self.target.clone()
        } else {
            format!("{SECRETS_DIR}/{}", self.target)
        }
    }
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            image: HOST_IMAGE.to_owned(),
            image_digest: String::new(),
            entrypoint: None,
            args: Vec::new(),
            env: Vec::new(),
            workdir: String::new(),
            user: String::new(),
            hostname: String::new(),
            stop_signal: String::new(),
            stop_grace_nanos: DEFAULT_STOP_GRACE_NANOS,
            read_only: false,
            init: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            sysctls: BTreeMap::new(),
            resources: Resources::default(),
            mounts: Vec::new(),
            legacy_rootfs: String::new(),
            registry_auth: String::new(),
            secrets: Vec::new(),
            configs: Vec::new(),
            healthcheck: None,
            container_labels: Labels::new(),
            force_update: 0,
            ulimits: Vec::new(),
            hosts: Vec::new(),
            network_host: false,
        }
    }
}

impl TaskSpec {
    /// The image as docker prints it in `service inspect`: `ref@sha256:…`
    /// once pinned.
    pub fn pinned_image(&self) -> String {
        shoal_api::reference::pinned(&self.image, &self.image_digest)
    }
}

/// Every format a task spec was stored in: the current one, and the one
/// before images (`rootfs`, briefly also read under the name `image`).
#[derive(Deserialize)]
struct StoredTaskSpec {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    rootfs: Option<String>,
    #[serde(default)]
    image_digest: String,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    workdir: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    stop_signal: String,
    #[serde(default)]
    stop_grace_nanos: Option<u64>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    init: bool,
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    sysctls: BTreeMap<String, String>,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default)]
    registry_auth: String,
    #[serde(default)]
    secrets: Vec<FileRef>,
    #[serde(default)]
    configs: Vec<FileRef>,
    #[serde(default)]
    healthcheck: Option<HealthConfig>,
    #[serde(default)]
    container_labels: Labels,
    #[serde(default)]
    force_update: u64,
    #[serde(default)]
    ulimits: Vec<Ulimit>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    network_host: bool,
}

impl From<StoredTaskSpec> for TaskSpec {
    fn from(s: StoredTaskSpec) -> Self {
        // The old build's `image` alias held a directory, never a reference:
        // a path is a legacy rootfs wherever it is found.
        let (image, legacy_rootfs) = match (s.image, s.rootfs) {
            (Some(i), r) if !i.is_empty() && !i.starts_with('/') => (i, r.unwrap_or_default()),
            (Some(i), _) if i.starts_with('/') => (HOST_IMAGE.to_owned(), i),
            (_, r) => (HOST_IMAGE.to_owned(), r.unwrap_or_default()),
        };
        TaskSpec {
            image,
            image_digest: s.image_digest,
            entrypoint: s.entrypoint,
            args: s.args,
            env: s.env,
            workdir: s.workdir,
            user: s.user,
            hostname: s.hostname,
            stop_signal: s.stop_signal,
            stop_grace_nanos: s.stop_grace_nanos.unwrap_or(DEFAULT_STOP_GRACE_NANOS),
            read_only: s.read_only,
            init: s.init,
            cap_add: s.cap_add,
            cap_drop: s.cap_drop,
            sysctls: s.sysctls,
            resources: s.resources,
            mounts: s.mounts,
            legacy_rootfs,
            registry_auth: s.registry_auth,
            secrets: s.secrets,
            configs: s.configs,
            healthcheck: s.healthcheck,
            container_labels: s.container_labels,
            force_update: s.force_update,
            ulimits: s.ulimits,
            hosts: s.hosts,
            network_host: s.network_host,
        }
    }
}

/// `--limit-*` and `--reserve-*`; 0 = none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub limit_nano_cpus: u64,
    pub limit_memory_bytes: u64,
    pub limit_pids: u64,
    pub reserve_nano_cpus: u64,
    pub reserve_memory_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Volume,
    Bind,
    Tmpfs,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Volume name (empty: anonymous) or a bind's absolute host path;
    /// empty for tmpfs.
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// tmpfs: bytes, 0 = unlimited.
    #[serde(default)]
    pub tmpfs_size_bytes: u64,
    /// tmpfs: permission bits, 0 = 1777.
    #[serde(default)]
    pub tmpfs_mode: u32,
    #[serde(default)]
    pub volume_nocopy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: Labels,
    pub mode: ServiceMode,
    pub task: TaskSpec,
    pub endpoint: EndpointSpec,
    /// Network ids.
    pub networks: Vec<String>,
    // Secrets live in `task` (`TaskSpec::secrets`), so that changing them
    // replaces tasks; the `secrets` list stored here by earlier builds was
    // always empty, and serde ignores it.
    /// Placement constraints, as written (`node.role==worker`); checked by
    /// `crate::constraint` before they are stored.
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--update-*`: how a change of the task spec rolls out. Written only
    /// when not swarm's default, so older states write back as read.
    #[serde(default, skip_serializing_if = "UpdateConfig::is_default")]
    pub update: UpdateConfig,
    /// `--rollback-*`: how a rollback rolls out (failure action pause or
    /// continue only).
    #[serde(default, skip_serializing_if = "UpdateConfig::is_default")]
    pub rollback: UpdateConfig,
    /// `--placement-pref spread=node.labels.KEY`, as written; checked by
    /// `crate::constraint::preference` before they are stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_prefs: Vec<String>,
    /// `--network name=N,alias=A`: network id → the service's extra DNS
    /// names on that network (swarm's per-attachment aliases). Only the
    /// DNS answers change with them, so they live outside the task spec
    /// and changing them restarts nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_aliases: BTreeMap<String, Vec<String>>,
    /// `--replicas-max-per-node`; 0 = unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_replicas_per_node: u64,
}

/// What the updater does when too many new tasks fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    /// Update only: back to the previous spec with the rollback config.
    Rollback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Shut the old task down, then start the new one.
    #[default]
    StopFirst,
    /// Start the new task, shut the old one down once the new one runs.
    StartFirst,
}

/// A ratio in 0..=1. Checked before it is stored, so never NaN, which is
/// what makes `Eq` hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(pub f64);

impl Eq for Ratio {}

/// docker's UpdateConfig (for updates and rollbacks alike); swarm's
/// defaults for what a stored spec lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    /// Slots replaced at once; 0 = all.
    pub parallelism: u64,
    /// Wait after each slot, per worker.
    pub delay_nanos: u64,
    pub failure_action: FailureAction,
    /// How long a new task must keep running not to count as a failure.
    pub monitor_nanos: u64,
    /// Acts when failed / updated slots is strictly greater.
    pub max_failure_ratio: Ratio,
    pub order: UpdateOrder,
}

impl UpdateConfig {
    pub fn is_default(&self) -> bool {
        *self == UpdateConfig::default()
    }
}

/// swarm's default `--update-monitor` / `--rollback-monitor`.
pub const DEFAULT_UPDATE_MONITOR_NANOS: u64 = 5_000_000_000;

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_nanos: 0,
            failure_action: FailureAction::Pause,
            monitor_nanos: DEFAULT_UPDATE_MONITOR_NANOS,
            max_failure_ratio: Ratio(0.0),
            order: UpdateOrder::StopFirst,
        }
    }
}

/// docker's UpdateStatus.State.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// A rollback, running or ended: its config is the rollback config and
    /// it is never rolled back.
    pub fn rolling_back(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted | UpdateState::RollbackPaused
        )
    }
}

/// docker's UpdateStatus, and what the updater must remember between its
/// passes, so that a new leader continues where the last one stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_unix: u64,
    /// 0 while it runs.
    #[serde(default)]
    pub completed_unix: u64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub progress: UpdateProgress,
}

/// The updater's memory (swarmkit keeps it in the updater goroutine; here
/// it is in Raft).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateProgress {
    /// Slots that needed replacing when the update started: the ratio's
    /// denominator.
    pub slots: u64,
    /// The tasks this update created, by id: when each was seen RUNNING
    /// (unix ms; `None` not yet).
    pub tasks: BTreeMap<String, Option<u64>>,
    /// Tasks counted as failures.
    pub failures: BTreeSet<String>,
    /// Unix ms until which a worker sleeps its `delay` after a slot.
    pub delays_until: Vec<u64>,
    /// Unix ms the last slot's worker finished: its task RUNNING (or
    /// ended), and its delay after.
    pub last_done_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Restart whatever the exit (swarm's default).
    #[default]
    Any,
    OnFailure,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Wait between a task's end and its replacement (swarm: 5 s).
    pub delay_secs: u64,
    /// `None`: unlimited.
    pub max_attempts: Option<u64>,
    /// `--restart-window`: only restarts within it count against
    /// `max_attempts`; 0 = every restart counts (swarm's default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub network_id: String,
    /// CIDR, e.g. `10.0.1.2/24`.
    pub addr: String,
}

/// Allocated endpoint: VIPs per network and the ports as published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub vips: Vec<VirtualIp>,
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub version: u64,
    pub spec: ServiceSpec,
    /// The spec before the last update, for `service rollback`.
    pub previous_spec: Option<ServiceSpec>,
    pub endpoint: Endpoint,
    /// Unset before the first update that replaced tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
}

// ---------------------------------------------------------------- Task

/// Swarm's task states, in their order: observed state only moves forward.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_id: String,
    /// CIDRs, e.g. `10.0.1.7/24`.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub version: u64,
    pub service_id: String,
    /// Replica slot of a replicated service; `None` for global services.
    pub slot: Option<u64>,
    /// `None` until the scheduler assigns it.
    pub node_id: Option<String>,
    pub spec: TaskSpec,
    pub desired_state: TaskState,
    pub state: TaskState,
    pub networks: Vec<NetworkAttachment>,
    #[serde(default)]
    pub status: TaskStatus,
}

/// Why a task is in its state, for `service ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Unix seconds of the last state change, set by whoever proposed it.
    pub since_unix: u64,
    /// What happened ("assigned to n2", "no suitable node …").
    pub message: String,
    /// The error, if the task failed or cannot be scheduled.
    pub err: String,
    pub exit_code: Option<i32>,
    /// The healthcheck's state as the node last reported it; `None`: no
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<TaskHealth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

/// docker's State.Health: the status, the failing streak and the last
/// results, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHealth {
    pub status: HealthStatus,
    #[serde(default)]
    pub failing_streak: u64,
    #[serde(default)]
    pub log: Vec<HealthResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// -1: timed out or could not run.
    pub exit_code: i32,
    pub output: String,
}

/// docker keeps the last five results.
pub const HEALTH_LOG_LEN: usize = 5;

// ---------------------------------------------------------------- Secret

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub version: u64,
    pub name: String,
    pub labels: Labels,
    pub data: SecretBytes,
}

// ---------------------------------------------------------------- Config

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub version: u64,
    pub name: String,
    pub labels: Labels,
    pub data: ConfigBytes,
    /// "" or "golang": swarm's placeholders in `data` are expanded per task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_driver: String,
    /// Unix seconds, chosen by the proposer.
    pub created_unix: u64,
}

/// The one template driver swarm knows.
pub const TEMPLATE_DRIVER_GOLANG: &str = "golang";

// ---------------------------------------------------------------- State

/// Everything the Raft state machine holds. `BTreeMap`s keep iteration and
/// serialization order identical on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterState {
    /// The version given to the last change; 0 for an empty store.
    pub version: u64,
    pub clusters: BTreeMap<String, Cluster>,
    pub nodes: BTreeMap<String, Node>,
    pub networks: BTreeMap<String, Network>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub secrets: BTreeMap<String, Secret>,
    /// Written only when there is one, so a state from before configs
    /// writes back as it was read.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, Config>,
    /// The image catalogue: normalised reference → the digests nodes hold
    /// under it.
    pub images: BTreeMap<String, BTreeMap<String, ImageHolding>>,
    /// Derived from the tables above: not stored, not compared.
    #[serde(skip)]
    names: NameIndex,
}

/// Name → id for each kind whose names are unique, so that a create checks
/// its name without a scan: a scan made each create O(table), and `bench
/// raft`'s tens of thousands of secrets spent a core in it on every replica.
///
/// The tables are written only through [`apply`], which keeps this in step;
/// a state read from disk, or built by hand in a test, starts with an index
/// whose size disagrees with its tables, and that is rebuilt before use.
#[derive(Debug, Clone, Default)]
struct NameIndex(BTreeMap<Kind, HashMap<String, String>>);

impl PartialEq for NameIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for NameIndex {}

impl NameIndex {
    fn of(&self, kind: Kind) -> Option<&HashMap<String, String>> {
        self.0.get(&kind)
    }

    /// Whether the index of `T` covers its table: every named object is in
    /// it once, as names are unique.
    fn covers<T: StoredObject>(&self, state: &ClusterState) -> bool {
        self.of(T::KIND).map_or(0, HashMap::len) == T::table(state).len()
    }

    fn rebuild<T: StoredObject>(table: &BTreeMap<String, T>) -> HashMap<String, String> {
        table
            .values()
            .filter_map(|o| Some((o.name()?.to_owned(), o.id().to_owned())))
            .collect()
    }
}

/// One digest of a reference in the catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageHolding {
    pub size: u64,
    /// Ids of the nodes holding it.
    pub nodes: BTreeSet<String>,
    /// Store version of the latest registration of this digest: the newest
    /// one is what a reference resolves to.
    pub registered: u64,
}

/// An image a node reports holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub size: u64,
}

impl ClusterState {
    /// The digest a reference resolves to: the one registered last, among
    /// those some node still holds.
    pub fn resolve_image(&self, reference: &str) -> Option<(&str, &ImageHolding)> {
        self.images
            .get(reference)?
            .iter()
            .filter(|(_, h)| !h.nodes.is_empty())
            .max_by_key(|(d, h)| (h.registered, std::cmp::Reverse(d.as_str())))
            .map(|(d, h)| (d.as_str(), h))
    }

    /// The nodes holding `digest` (under any reference).
    pub fn image_holders(&self, digest: &str) -> BTreeSet<&str> {
        self.images
            .values()
            .filter_map(|by_digest| by_digest.get(digest))
            .flat_map(|h| h.nodes.iter().map(String::as_str))
            .collect()
    }
}

impl ClusterState {
    pub fn get<T: StoredObject>(&self, id: &str) -> Option<&T> {
        T::table(self).get(id)
    }

    /// The object of kind `T` with this name, for the kinds whose names are unique.
    pub fn find_by_name<T: StoredObject>(&self, name: &str) -> Option<&T> {
        if self.names.covers::<T>(self) {
            let id = self.names.of(T::KIND)?.get(name)?;
            return T::table(self).get(id).filter(|o| o.name() == Some(name));
        }
        T::table(self).values().find(|o| o.name() == Some(name))
    }

    /// Makes the name index of a named kind cover its table again (after a
    /// load); a no-op when it does.
    fn index_names<T: StoredObject>(&mut self) {
        if !self.names.covers::<T>(self) {
            let index = NameIndex::rebuild(T::table(self));
            self.names.0.insert(T::KIND, index);
        }
    }

    /// Writes `object` to its table and its name to the index, which
    /// [`store`] made cover the table first.
    fn put<T: StoredObject>(&mut self, object: T) {
        let id = object.id().to_owned();
        let name = object.name().map(str::to_owned);
        let old = T::table_mut(self).insert(id.clone(), object);
        let Some(name) = name else { return };
        let index = self.names.0.entry(T::KIND).or_default();
        if let Some(old_name) = old.as_ref().and_then(|o| o.name())
            && old_name != name
        {
            index.remove(old_name);
        }
        index.insert(name, id);
    }

    /// Removes object `id` from its table and its name from the index.
    fn take<T: StoredObject>(&mut self, id: &str) {
        let Some(old) = T::table_mut(self).remove(id) else {
            return;
        };
        let Some(name) = old.name() else { return };
        if let Some(index) = self.names.0.get_mut(&T::KIND) {
            index.remove(name);
        }
        self.index_names::<T>();
    }

    /// The services whose task spec mounts secret `id`.
    pub fn secret_users<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.spec.task.secrets.iter().any(|r| r.id == id))
    }

    /// The services whose task spec mounts config `id`.
    pub fn config_users<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.spec.task.configs.iter().any(|r| r.id == id))
    }

    /// The cluster object; there is one once the swarm is initialised.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }
}

/// Common access to the stored kinds, so that create/update/remove are
/// written once.
pub trait StoredObject: Clone + fmt::Debug + Sized {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
    /// The name that must be unique within the kind, if the kind has one.
    fn name(&self) -> Option<&str>;
    fn table(state: &ClusterState) -> &BTreeMap<String, Self>;
    fn table_mut(state: &mut ClusterState) -> &mut BTreeMap<String, Self>;

    /// Objects this one refers to must exist.
    fn check_references(&self, _state: &ClusterState) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Rules on what an update may change.
    fn check_update(&self, _current: &Self) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Nothing that still refers to the object may outlive it.
    fn check_unused(_id: &str, _state: &ClusterState) -> Result<(), ApplyError> {
        Ok(())
    }
}

macro_rules! stored_object {
    ($ty:ident, $kind:expr, $field:ident, |$o:ident| $name:expr) => {
        impl StoredObject for $ty {
            const KIND: Kind = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn version(&self) -> u64 {
                self.version
            }
            fn set_version(&mut self, version: u64) {
                self.version = version;
            }
            fn name(&self) -> Option<&str> {
                let $o = self;
                $name
            }
            fn table(state: &ClusterState) -> &BTreeMap<String, Self> {
                &state.$field
            }
            fn table_mut(state: &mut ClusterState) -> &mut BTreeMap<String, Self> {
                &mut state.$field
            }
            stored_object!(@extra $ty);
        }
    };
    (@extra Service) => {
        fn check_references(&self, state: &ClusterState) -> Result<(), ApplyError> {
            for network_id in &self.spec.networks {
                require::<Network>(state, Kind::Service, &self.id, network_id)?;
            }
            for secret in &self.spec.task.secrets {
                require::<Secret>(state, Kind::Service, &self.id, &secret.id)?;
            }
            for config in &self.spec.task.configs {
                require::<Config>(state, Kind::Service, &self.id, &config.id)?;
            }
            // Ports are allocated before proposal, so two managers (or two
            // quick creates) could pick the same one; the log order decides.
            port_conflicts(self, state)
        }
    };
    (@extra Task) => {
        fn check_references(&self, state: &ClusterState) -> Result<(), ApplyError> {
            require::<Service>(state, Kind::Task, &self.id, &self.service_id)?;
            // An ended task may outlive its node (`node rm`): it keeps the
            // name for `service ps`, and no agent will act on it.
            if let Some(node_id) = &self.node_id
                && self.state < TaskState::Complete
            {
                require::<Node>(state, Kind::Task, &self.id, node_id)?;
            }
            for attachment in &self.networks {
                require::<Network>(state, Kind::Task, &self.id, &attachment.network_id)?;
            }
            Ok(())
        }
    };
    (@extra Network) => {
        // Allocation happens before proposal, so two managers could race to
        // the same subnet or VNI; the committed order decides, here.
        fn check_references(&self, state: &ClusterState) -> Result<(), ApplyError> {
            network_conflicts(self, state)
        }
        fn check_unused(id: &str, state: &ClusterState) -> Result<(), ApplyError> {
            let user = state.services.values().find(|s| s.spec.networks.iter().any(|n| n == id));
            in_use(Kind::Network, id, user)
        }
    };
    (@extra Secret) => {
        fn check_update(&self, current: &Self) -> Result<(), ApplyError> {
            // As in swarm: a secret's data never changes; rotate by creating
            // a new secret and updating the services that use it.
            if self.data != current.data || self.name != current.name {
                return Err(ApplyError::Immutable { kind: Kind::Secret, id: self.id.clone() });
            }
            Ok(())
        }
        fn check_unused(id: &str, state: &ClusterState) -> Result<(), ApplyError> {
            let user = state.secret_users(id).next();
            in_use(Kind::Secret, id, user)
        }
    };
    (@extra Config) => {
        fn check_update(&self, current: &Self) -> Result<(), ApplyError> {
            // Immutable as secrets are, and for the same reason.
            if self.data != current.data
                || self.name != current.name
                || self.template_driver != current.template_driver
            {
                return Err(ApplyError::Immutable { kind: Kind::Config, id: self.id.clone() });
            }
            Ok(())
        }
        fn check_unused(id: &str, state: &ClusterState) -> Result<(), ApplyError> {
            let user = state.config_users(id).next();
            in_use(Kind::Config, id, user)
        }
    };
    (@extra $other:ident) => {};
}

// The macro's `@extra` arms match on the type's name, so each type is named
// by its bare identifier here.
mod impls {
    use super::*;
    stored_object!(Cluster, Kind::Cluster, clusters, |o| Some(o.name.as_str()));
    stored_object!(Node, Kind::Node, nodes, |_o| None);
    stored_object!(Network, Kind::Network, networks, |o| Some(o.name.as_str()));
    stored_object!(Service, Kind::Service, services, |o| Some(
        o.spec.name.as_str()
    ));
    // Tasks are named `<service>.<slot>.<id>`, unique by construction.
    stored_object!(Task, Kind::Task, tasks, |_o| None);
    stored_object!(Secret, Kind::Secret, secrets, |o| Some(o.name.as_str()));
    stored_object!(Config, Kind::Config, configs, |o| Some(o.name.as_str()));
}

fn require<T: StoredObject>(
    state: &ClusterState,
    kind: Kind,
    id: &str,
    target_id: &str,
) -> Result<(), ApplyError> {
    if T::table(state).contains_key(target_id) {
        Ok(())
    } else {
        Err(ApplyError::MissingReference {
            kind,
            id: id.to_owned(),
            target_kind: T::KIND,
            target_id: target_id.to_owned(),
        })
    }
}

fn network_conflicts(n: &Network, state: &ClusterState) -> Result<(), ApplyError> {
    let subnet = n.subnet.as_deref().and_then(crate::ipam::parse_net);
    for other in state.networks.values().filter(|o| o.id != n.id) {
        if let (Some(vni), Some(theirs)) = (n.vni, other.vni)
            && vni == theirs
        {
            return Err(ApplyError::VniInUse {
                id: n.id.clone(),
                vni,
                other_id: other.id.clone(),
            });
        }
        let theirs = other.subnet.as_deref().and_then(crate::ipam::parse_net);
        if let (Some(mine), Some(theirs)) = (subnet, theirs)
            && mine.overlaps(&theirs)
        {
            return Err(ApplyError::SubnetOverlap {
                id: n.id.clone(),
                subnet: mine.to_string(),
                other_name: other.name.clone(),
                other_subnet: theirs.to_string(),
            });
        }
    }
    Ok(())
}

fn port_conflicts(s: &Service, state: &ClusterState) -> Result<(), ApplyError> {
    for other in state.services.values().filter(|o| o.id != s.id) {
        for mine in &s.endpoint.ports {
            if let Some(theirs) = other.endpoint.ports.iter().find(|p| mine.clashes_with(p)) {
                return Err(ApplyError::PortInUse {
                    id: s.id.clone(),
                    port: theirs.published_port.unwrap_or_default(),
                    protocol: theirs.protocol,
                    mode: theirs.publish_mode,
                    other_id: other.id.clone(),
                    other_name: other.spec.name.clone(),
                });
            }
        }
    }
    Ok(())
}

fn in_use(kind: Kind, id: &str, user: Option<&Service>) -> Result<(), ApplyError> {
    match user {
        None => Ok(()),
        Some(service) => Err(ApplyError::InUse {
            kind,
            id: id.to_owned(),
            user_kind: Kind::Service,
            user_id: service.id.clone(),
        }),
    }
}

// ---------------------------------------------------------------- Commands

/// A change proposed through Raft. Updates and removals are compare-and-set
/// on `expected_version`; the object in an update replaces the stored one
/// whole (its `version` field is ignored and set by `apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateCluster(Cluster),
    UpdateCluster {
        id: String,
        expected_version: u64,
        cluster: Cluster,
    },
    CreateNode(Node),
    UpdateNode {
        id: String,
        expected_version: u64,
        node: Node,
    },
    RemoveNode {
        id: String,
        expected_version: u64,
    },
    CreateNetwork(Network),
    UpdateNetwork {
        id: String,
        expected_version: u64,
        network: Network,
    },
    RemoveNetwork {
        id: String,
        expected_version: u64,
    },
    CreateService(Service),
    UpdateService {
        id: String,
        expected_version: u64,
        service: Service,
    },
    RemoveService {
        id: String,
        expected_version: u64,
    },
    CreateTask(Task),
    UpdateTask {
        id: String,
        expected_version: u64,
        task: Task,
    },
    RemoveTask {
        id: String,
        expected_version: u64,
    },
    CreateSecret(Secret),
    UpdateSecret {
        id: String,
        expected_version: u64,
        secret: Secret,
    },
    RemoveSecret {
        id: String,
        expected_version: u64,
    },
    CreateConfig(Config),
    UpdateConfig {
        id: String,
        expected_version: u64,
        config: Config,
    },
    RemoveConfig {
        id: String,
        expected_version: u64,
    },
    /// A node's images changed: `images` are held (added, or refreshed),
    /// `removed` references are not any more.
    RegisterImages {
        node_id: String,
        images: Vec<ImageRecord>,
        removed: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Updated,
    Removed,
}

/// What a successful command did; `version` is the store version it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: Kind,
    pub id: String,
    pub change: Change,
    pub version: u64,
}

/// Why a committed command was rejected. Rejection is itself deterministic:
/// every replica rejects the same command and none changes its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("{kind} id must not be empty")]
    EmptyId { kind: Kind },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    #[error("{kind} name {name:?} is already used by {kind} {existing_id}")]
    NameConflict {
        kind: Kind,
        name: String,
        existing_id: String,
    },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} {id} is at version {current}, not {expected}: it changed since it was read")]
    VersionMismatch {
        kind: Kind,
        id: String,
        expected: u64,
        current: u64,
    },
    #[error("update of {kind} {id} carries an object with id {object_id}")]
    IdMismatch {
        kind: Kind,
        id: String,
        object_id: String,
    },
    #[error("{kind} {id} refers to {target_kind} {target_id}, which does not exist")]
    MissingReference {
        kind: Kind,
        id: String,
        target_kind: Kind,
        target_id: String,
    },
    #[error("{kind} {id} is in use by {user_kind} {user_id}")]
    InUse {
        kind: Kind,
        id: String,
        user_kind: Kind,
        user_id: String,
    },
    #[error("{kind} {id}: only labels can be updated")]
    Immutable { kind: Kind, id: String },
    #[error(
        "network {id}: subnet {subnet} overlaps network {other_name} ({other_subnet}); pick \
         another --subnet, or leave it out to get a free one"
    )]
    SubnetOverlap {
        id: String,
        subnet: String,
        other_name: String,
        other_subnet: String,
    },
    #[error(
        "service {id}: port {port}/{protocol} is already published by service {other_name} \
         ({mode} mode); choose another published port, or leave published out to get a free one"
    )]
    PortInUse {
        id: String,
        port: u16,
        protocol: Protocol,
        mode: PublishMode,
        other_id: String,
        other_name: String,
    },
    #[error("network {id}: VNI {vni} is already used by network {other_id}")]
    VniInUse {
        id: String,
        vni: u32,
        other_id: String,
    },
}

/// Applies one committed command. On error `state` is left exactly as it was.
pub fn apply(state: &mut ClusterState, command: &Command) -> Result<Applied, ApplyError> {
    use Command as C;
    match command {
        C::CreateCluster(o) => create(state, o),
        C::UpdateCluster {
            id,
            expected_version,
            cluster,
        } => update(state, id, *expected_version, cluster),
        C::CreateNode(o) => create(state, o),
        C::UpdateNode {
            id,
            expected_version,
            node,
        } => update(state, id, *expected_version, node),
        C::RemoveNode {
            id,
            expected_version,
        } => {
            let applied = remove::<Node>(state, id, *expected_version)?;
            // A removed node holds nothing any more.
            forget_holder(state, id, |_| true);
            Ok(applied)
        }
        C::CreateNetwork(o) => create(state, o),
        C::UpdateNetwork {
            id,
            expected_version,
            network,
        } => update(state, id, *expected_version, network),
        C::RemoveNetwork {
            id,
            expected_version,
        } => remove::<Network>(state, id, *expected_version),
        C::CreateService(o) => create(state, o),
        C::UpdateService {
            id,
            expected_version,
            service,
        } => update(state, id, *expected_version, service),
        C::RemoveService {
            id,
            expected_version,
        } => remove::<Service>(state, id, *expected_version),
        C::CreateTask(o) => create(state, o),
        C::UpdateTask {
            id,
            expected_version,
            task,
        } => update(state, id, *expected_version, task),
        C::RemoveTask {
            id,
            expected_version,
        } => remove::<Task>(state, id, *expected_version),
        C::CreateSecret(o) => create(state, o),
        C::UpdateSecret {
            id,
            expected_version,
            secret,
        } => update(state, id, *expected_version, secret),
        C::RemoveSecret {
            id,
            expected_version,
        } => remove::<Secret>(state, id, *expected_version),
        C::CreateConfig(o) => create(state, o),
        C::UpdateConfig {
            id,
            expected_version,
            config,
        } => update(state, id, *expected_version, config),
        C::RemoveConfig {
            id,
            expected_version,
        } => remove::<Config>(state, id, *expected_version),
        C::RegisterImages {
            node_id,
            images,
            removed,
        } => register_images(state, node_id, images, removed),
    }
}

fn register_images(
    state: &mut ClusterState,
    node_id: &str,
    images: &[ImageRecord],
    removed: &[String],
) -> Result<Applied, ApplyError> {
    if !state.nodes.contains_key(node_id) {
        return Err(ApplyError::NotFound {
            kind: Kind::Node,
            id: node_id.to_owned(),
        });
    }
    let version = state.version + 1;
    for reference in removed {
        if let Some(by_digest) = state.images.get_mut(reference) {
            for h in by_digest.values_mut() {
                h.nodes.remove(node_id);
            }
        }
    }
    for i in images {
        // A reference moved to another digest on this node (a newer load
        // under the same tag): it holds the old one under it no more.
        if let Some(by_digest) = state.images.get_mut(&i.reference) {
            for (d, h) in by_digest.iter_mut() {
                if *d != i.digest {
                    h.nodes.remove(node_id);
                }
            }
        }
        let h = state
            .images
            .entry(i.reference.clone())
            .or_default()
            .entry(i.digest.clone())
            .or_default();
        h.size = i.size;
        if h.nodes.insert(node_id.to_owned()) {
            h.registered = version;
        }
    }
    forget_holder(state, node_id, |_| false);
    state.version = version;
    Ok(Applied {
        kind: Kind::Node,
        id: node_id.to_owned(),
        change: Change::Updated,
        version,
    })
}

/// Drops `node_id` from the holdings `drop` selects by reference, then
/// every holding and reference that no node holds.
fn forget_holder(state: &mut ClusterState, node_id: &str, drop: impl Fn(&str) -> bool) {
    for (reference, by_digest) in state.images.iter_mut() {
        if drop(reference) {
            for h in by_digest.values_mut() {
                h.nodes.remove(node_id);
            }
        }
        by_digest.retain(|_, h| !h.nodes.is_empty());
    }
    state.images.retain(|_, by_digest| !by_digest.is_empty());
}

// Each of these checks everything before its single mutation, which is what
// makes a rejected command leave the state untouched.

fn create<T: StoredObject>(state: &mut ClusterState, object: &T) -> Result<Applied, ApplyError> {
    let id = object.id();
    if id.is_empty() {
        return Err(ApplyError::EmptyId { kind: T::KIND });
    }
    if T::table(state).contains_key(id) {
        return Err(ApplyError::AlreadyExists {
            kind: T::KIND,
            id: id.to_owned(),
        });
    }
    store(state, object, Change::Created)
}

fn update<T: StoredObject>(
    state: &mut ClusterState,
    id: &str,
    expected_version: u64,
    object: &T,
) -> Result<Applied, ApplyError> {
    if object.id() != id {
        return Err(ApplyError::IdMismatch {
            kind: T::KIND,
            id: id.to_owned(),
            object_id: object.id().to_owned(),
        });
    }
    let current = current::<T>(state, id, expected_version)?;
    object.check_update(current)?;
    store(state, object, Change::Updated)
}

/// Checks the names and references of an object created or updated, then
/// writes it at the next version.
fn store<T: StoredObject>(
    state: &mut ClusterState,
    object: &T,
    change: Change,
) -> Result<Applied, ApplyError> {
    if object.name().is_some() {
        state.index_names::<T>();
    }
    check_name(state, object)?;
    object.check_references(state)?;
    let id = object.id();
    let version = state.version + 1;
    let mut stored = object.clone();
    stored.set_version(version);
    state.put(stored);
    state.version = version;
    Ok(Applied {
        kind: T::KIND,
        id: id.to_owned(),
        change,
        version,
    })
}

fn remove<T: StoredObject>(
    state: &mut ClusterState,
    id: &str,
    expected_version: u64,
) -> Result<Applied, ApplyError> {
    current::<T>(state, id, expected_version)?;
    T::check_unused(id, state)?;
    state.take::<T>(id);
    state.version += 1;
    Ok(Applied {
        kind: T::KIND,
        id: id.to_owned(),
        change: Change::Removed,
        version: state.version,
    })
}

fn current<'s, T: StoredObject>(
    state: &'s ClusterState,
    id: &str,
    expected_version: u64,
) -> Result<&'s T, ApplyError> {
    let current = T::table(state)
        .get(id)
        .ok_or_else(|| ApplyError::NotFound {
            kind: T::KIND,
            id: id.to_owned(),
        })?;
    if current.version() != expected_version {
        return Err(ApplyError::VersionMismatch {
            kind: T::KIND,
            id: id.to_owned(),
            expected: expected_version,
            current: current.version(),
        });
    }
    Ok(current)
}

fn check_name<T: StoredObject>(state: &ClusterState, object: &T) -> Result<(), ApplyError> {
    let Some(name) = object.name() else {
        return Ok(());
    };
    match state.find_by_name::<T>(name) {
        Some(other) if other.id() != object.id() => Err(ApplyError::NameConflict {
            kind: T::KIND,
            name: name.to_owned(),
            existing_id: other.id().to_owned(),
        }),
        _ => Ok(()),
    }
}
