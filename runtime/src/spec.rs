//! What a task is made of, its validation, and the names derived from it.
//! Pure: nothing here touches the system.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::RuntimeError;
use crate::files::{self, SECRETS_DIR, TaskFile};

/// Most networks one task can be attached to.
pub const MAX_ATTACHMENTS: usize = 16;
/// Longest task id: ids name log files and seed veth names.
pub const MAX_ID_LEN: usize = 128;
/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// PATH of a task whose environment sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest interface name (`IFNAMSIZ` - 1).
const MAX_IFNAME_LEN: usize = 15;

/// One task to run. `..Default::default()` gives docker's defaults: the
/// node's filesystem, docker's capabilities, no limits, no extra mounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskSpec {
    /// Unique on the node: `[A-Za-z0-9_.-]`, not starting with `.`, at most
    /// [`MAX_ID_LEN`] bytes.
    pub id: String,
    /// The task's name (`web.1` …): `[A-Za-z0-9_.-]`, at most
    /// [`MAX_HOSTNAME_LEN`] bytes; its hostname unless `hostname` is set.
    pub name: String,
    /// Its filesystem: the node's, read-only and with the node's secrets
    /// hidden, or an unpacked image under a per-task overlay.
    pub root: Root,
    /// Replaces the image's entrypoint and clears its cmd (docker's
    /// `--entrypoint`).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd when not empty. With [`Root::Host`] (no
    /// image defaults) this is the whole command.
    pub args: Vec<String>,
    /// Environment after the image's, a later key winning. `PATH`,
    /// `HOSTNAME` and `HOME` get defaults when nothing sets them.
    pub env: Vec<(String, String)>,
    /// The working directory; the image's, else `/`.
    pub workdir: Option<String>,
    /// `name`, `uid`, `uid:gid`, `name:group`: names resolved in the task's
    /// own `/etc/passwd` and `/etc/group`; the image's, else root.
    pub user: Option<String>,
    /// The task's hostname; its name when unset.
    pub hostname: Option<String>,
    /// The signal `stop` sends first (name or number); the image's, else
    /// SIGTERM.
    pub stop_signal: Option<String>,
    /// The root filesystem read-only (an image's; the node's always is).
    pub read_only: bool,
    /// Run the command under a small init that reaps orphans and forwards
    /// signals (docker's `--init`).
    pub init: bool,
    /// Capabilities added to docker's default set (`NET_ADMIN`,
    /// `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (after the additions, as docker does).
    pub cap_drop: Vec<String>,
    /// Namespaced sysctls only: `net.*`, `kernel.shm*`, `kernel.msg*`,
    /// `kernel.sem`, `fs.mqueue.*`.
    pub sysctls: Vec<(String, String)>,
    pub resources: Resources,
    /// Extra mounts, after the runtime's own.
    pub mounts: Vec<Mount>,
    /// Secrets and configs: in memory only, on a tmpfs of this task's own,
    /// read-only, mounted after `mounts` (see [`crate::files`]).
    pub files: Vec<TaskFile>,
    /// One interface per attached network, `eth0`, `eth1`, … in this order.
    pub attachments: Vec<Attachment>,
    /// Docker's `--network host`: the task runs in the network namespace
    /// of the runtime itself (the node's), so no namespace is made and
    /// `attachments` must be empty.
    pub network_host: bool,
    /// A file on the node copied into the task's `/etc/resolv.conf` (the
    /// agent writes one naming the embedded resolver at 127.0.0.11).
    /// Unset: the node's.
    pub resolv_conf: Option<PathBuf>,
    /// Where the task's log (`<id>.log`) is written.
    pub log_dir: PathBuf,
    /// The process's rlimits (docker's `--ulimit`), in `config.json`'s
    /// `process.rlimits`.
    pub rlimits: Vec<Rlimit>,
    /// Extra `/etc/hosts` lines (`IP NAME [ALIAS…]`, docker's `--host`),
    /// after the defaults and before the task's own addresses.
    pub extra_hosts: Vec<String>,
}

/// One rlimit of the task's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, `RLIMIT_NPROC`, … (the OCI spec's names).
    pub kind: String,
    /// [`RLIM_INFINITY`] for unlimited.
    pub soft: u64,
    pub hard: u64,
}

/// The kernel's "unlimited" (docker's -1).
pub const RLIM_INFINITY: u64 = u64::MAX;

/// The image name that means the node's own filesystem.
pub const HOST_IMAGE: &str = "host";

/// A task's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Root {
    /// The node's `/`, read-only, with the node's state, sockets and keys
    /// hidden (image name [`HOST_IMAGE`]).
    #[default]
    Host,
    /// An unpacked image: `lower` (never written) under a per-task overlay.
    Image {
        lower: PathBuf,
        config: ImageDefaults,
    },
}

/// What an image's config says about running it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    /// Paths that get an anonymous volume each.
    pub volumes: Vec<String>,
}

/// Limits and reservations, docker's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPUs × 10⁹ (`--limit-cpu 1.5` is 1_500_000_000): a CFS quota.
    pub cpu_nanos_limit: Option<u64>,
    /// Bytes.
    pub memory_limit: Option<u64>,
    pub pids_limit: Option<i64>,
    /// CPUs × 10⁹: CPU shares (1024 per CPU).
    pub cpu_nanos_reservation: Option<u64>,
    /// Bytes: the memory soft limit.
    pub memory_reservation: Option<u64>,
}

/// An extra mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A node path (which must exist).
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        /// Bytes; the kernel's default (half the RAM) when unset.
        size: Option<u64>,
    },
    /// A named volume, resolved by the agent to a directory.
    Volume {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Volume { target, .. } => target,
        }
    }
}

/// The task's interface on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network's bridge in the node's network namespace.
    pub bridge: String,
    /// The task's address on the network.
    pub addr: Ipv4Addr,
    /// Prefix length of the network's subnet.
    pub prefix: u8,
    /// Default route via this address. Only the first attachment with a
    /// gateway gets the default route; the others' are ignored.
    pub gateway: Option<Ipv4Addr>,
    /// The interface's MAC; the kernel picks a random one when unset.
    pub mac: Option<[u8; 6]>,
    /// The interface's MTU; the bridge's MTU when unset, so tasks match
    /// what the network can carry.
    pub mtu: Option<u32>,
}

fn invalid(
    spec_id: &str,
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: &str,
) -> RuntimeError {
    RuntimeError::InvalidSpec {
        id: spec_id.to_owned(),
        field,
        value: format!("{value:?}"),
        reason: reason.to_owned(),
    }
}

fn safe_name_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn netmask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl TaskSpec {
    /// Checks every field; the first problem is returned, naming the field
    /// and the fix.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let id = self.id.as_str();
        if id.is_empty() || id.len() > MAX_ID_LEN || !safe_name_chars(id) || id.starts_with('.') {
            return Err(invalid(
                id,
                "id",
                id,
                "use 1 to 128 of A-Z a-z 0-9 _ . - (it names the log file), not starting with '.'",
            ));
        }
        if self.name.is_empty()
            || self.name.len() > MAX_HOSTNAME_LEN
            || !safe_name_chars(&self.name)
        {
            return Err(invalid(
                id,
                "name",
                &self.name,
                "a hostname: use 1 to 64 of A-Z a-z 0-9 _ . -",
            ));
        }
        if let Some(hostname) = &self.hostname
            && (hostname.is_empty()
                || hostname.len() > MAX_HOSTNAME_LEN
                || !safe_name_chars(hostname))
        {
            return Err(invalid(
                id,
                "hostname",
                hostname,
                "use 1 to 64 of A-Z a-z 0-9 _ . -",
            ));
        }
        let words = self.args.iter().chain(self.entrypoint.iter().flatten());
        if let Some(arg) = words.clone().find(|a| a.contains('\0')) {
            return Err(invalid(id, "args", arg, "arguments cannot contain NUL"));
        }
        for (key, value) in &self.env {
            validate_env(key, value).map_err(|reason| invalid(id, "env", key, reason))?;
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(invalid(
                id,
                "attachments",
                self.attachments.len(),
                "a task can be attached to at most 16 networks",
            ));
        }
        if self.network_host && !self.attachments.is_empty() {
            return Err(invalid(
                id,
                "attachments",
                self.attachments.len(),
                "a task on the host network has no interface of its own; attach no network",
            ));
        }
        let mut bridges = HashSet::new();
        for attachment in &self.attachments {
            attachment.validate(id)?;
            if !bridges.insert(attachment.bridge.as_str()) {
                return Err(invalid(
                    id,
                    "attachments",
                    &attachment.bridge,
                    "the same network is attached twice; attach it once",
                ));
            }
        }
        if let Root::Image { lower, .. } = &self.root {
            let text = lower.to_string_lossy();
            if !lower.is_absolute() || text.contains([',', ':', '\0']) {
                return Err(invalid(
                    id,
                    "root",
                    lower,
                    "an image directory is an absolute path without ',' or ':' (overlayfs \
                     options cannot carry them)",
                ));
            }
        }
        for (key, value) in &self.sysctls {
            if !namespaced_sysctl(key) || value.contains('\0') {
                return Err(invalid(
                    id,
                    "sysctls",
                    key,
                    "only namespaced sysctls can be set for a task: net.*, kernel.shm*, \
                     kernel.msg*, kernel.sem, fs.mqueue.*",
                ));
            }
            // The namespace is the node's: a net.* sysctl would change it.
            if self.network_host && key.starts_with("net.") {
                return Err(invalid(
                    id,
                    "sysctls",
                    key,
                    "a task on the host network shares the node's network namespace: net.* \
                     sysctls would change the node's; set them on the node",
                ));
            }
        }
        let mut kinds = HashSet::new();
        for r in &self.rlimits {
            let known = oci_spec::runtime::PosixRlimitType::from_str(&r.kind).is_ok();
            if !known || !kinds.insert(r.kind.as_str()) {
                return Err(invalid(
                    id,
                    "rlimits",
                    &r.kind,
                    "one of each RLIMIT_ name of getrlimit(2), e.g. RLIMIT_NOFILE",
                ));
            }
            if r.soft > r.hard {
                return Err(invalid(
                    id,
                    "rlimits",
                    &r.kind,
                    "the soft limit must not be above the hard limit",
                ));
            }
        }
        for line in &self.extra_hosts {
            let mut fields = line.split_whitespace();
            let addr_ok = fields
                .next()
                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok());
            if !addr_ok || fields.next().is_none() || line.contains(['\n', '\r', '\0']) {
                return Err(invalid(
                    id,
                    "extra_hosts",
                    line,
                    "one /etc/hosts line: an IP address, then the names (\"10.0.0.5 db\")",
                ));
            }
        }
        let mut targets = HashSet::new();
        for mount in &self.mounts {
            let target = mount.target();
            if !target.starts_with('/') || target == "/" || target.contains('\0') {
                return Err(invalid(
                    id,
                    "mounts",
                    target,
                    "a mount target is an absolute path other than /",
                ));
            }
            if !targets.insert(target) {
                return Err(invalid(id, "mounts", target, "two mounts on one target"));
            }
            if let Mount::Bind { source, .. } | Mount::Volume { source, .. } = mount
                && !source.is_absolute()
            {
                return Err(invalid(
                    id,
                    "mounts",
                    source,
                    "give an absolute source path",
                ));
            }
        }
        if let Some(conf) = &self.resolv_conf
            && !conf.is_absolute()
        {
            return Err(invalid(id, "resolv_conf", conf, "give an absolute path"));
        }
        files::validate(&self.files)
            .map_err(|(value, reason)| invalid(id, "files", value, &reason))?;
        let bound: Vec<String> = files::binds(&self.files, std::path::Path::new("/"))
            .into_iter()
            .map(|(target, _, _)| target)
            .collect();
        for mount in &self.mounts {
            let target = mount.target();
            // Files are mounted after the mounts: one of these would be hidden.
            if let Some(file) = bound
                .iter()
                .find(|f| *f == target || files::inside(target, f))
            {
                let what = match file.as_str() {
                    SECRETS_DIR => "the task's secrets are mounted there",
                    _ => "a secret or config is mounted there",
                };
                return Err(invalid(
                    id,
                    "mounts",
                    target,
                    &format!("{what} ({file}); mount elsewhere"),
                ));
            }
        }
        Ok(())
    }
}

impl Attachment {
    fn validate(&self, id: &str) -> Result<(), RuntimeError> {
        if self.bridge.is_empty()
            || self.bridge.len() > MAX_IFNAME_LEN
            || self.bridge.contains(['/', ':', '\0'])
            || self.bridge.contains(char::is_whitespace)
        {
            return Err(invalid(
                id,
                "bridge",
                &self.bridge,
                "an interface name: 1 to 15 bytes, no '/', ':' or whitespace",
            ));
        }
        if self.prefix == 0 || self.prefix > 32 {
            return Err(invalid(id, "prefix", self.prefix, "use 1 to 32"));
        }
        let mask = netmask(self.prefix);
        let addr = u32::from(self.addr);
        if self.prefix <= 30 && (addr & !mask == 0 || addr & !mask == !mask) {
            return Err(invalid(
                id,
                "addr",
                self.addr,
                "the subnet's network or broadcast address; allocate a host address",
            ));
        }
        if let Some(gateway) = self.gateway {
            let gw = u32::from(gateway);
            if gw & mask != addr & mask || gw == addr {
                return Err(invalid(
                    id,
                    "gateway",
                    gateway,
                    "must be another address in the task's subnet",
                ));
            }
        }
        if let Some(mac) = self.mac
            && (mac[0] & 1 == 1 || mac == [0; 6])
        {
            return Err(invalid(
                id,
                "mac",
                mac,
                "must be a unicast, non-zero address",
            ));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(invalid(id, "mtu", mtu, "use 68 to 65535 (IPv4 needs 68)"));
        }
        Ok(())
    }
}

fn validate_env(key: &str, value: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        Err("a variable name is non-empty, without '=' or NUL")
    } else if value.contains('\0') {
        Err("a value cannot contain NUL")
    } else {
        Ok(())
    }
}

/// Parses one `KEY=VALUE` (as `docker service create --env` takes it): the
/// key is everything before the first `=`; the value may be empty or hold
/// more `=`.
pub fn parse_env(item: &str) -> Result<(String, String), RuntimeError> {
    let bad = |reason: &str| RuntimeError::InvalidSpec {
        id: String::new(),
        field: "env",
        value: format!("{item:?}"),
        reason: reason.to_owned(),
    };
    let (key, value) = item.split_once('=').ok_or_else(|| bad("write KEY=VALUE"))?;
    validate_env(key, value).map_err(bad)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// FNV-1a: stable across builds and processes (unlike `DefaultHasher`), so
/// a task's veth names are the same every time.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Host-side name of the task's veth on attachment `index`:
/// `shlv<hash of id><index>`, at most 14 bytes. Derived from the id, not
/// the id itself, as ids are longer than an interface name may be.
pub(crate) fn host_veth_name(id: &str, index: usize) -> String {
    format!("shlv{:08x}{index:02}", fnv1a(id.as_bytes()))
}

/// Name of the task's interface on attachment `index`, inside its netns.
pub(crate) fn task_ifname(index: usize) -> String {
    format!("eth{index}")
}

/// Whether the kernel keeps `key` per namespace (docker's list): the
/// others would change the node.
pub fn namespaced_sysctl(key: &str) -> bool {
    key.starts_with("net.")
        || key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attachment() -> Attachment {
        Attachment {
            bridge: "shl-br-4097".into(),
            addr: Ipv4Addr::new(10, 0, 9, 2),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 9, 1)),
            mac: None,
            mtu: None,
        }
    }

    fn spec() -> TaskSpec {
        TaskSpec {
            id: "x7k2m9q4".into(),
            name: "web.1".into(),
            args: vec!["sleep".into(), "1".into()],
            env: vec![],
            attachments: vec![attachment()],
            log_dir: "/tmp/logs".into(),
            ..TaskSpec::default()
        }
    }

    fn field_of(result: Result<(), RuntimeError>) -> Option<&'static str> {
        match result {
            Err(RuntimeError::InvalidSpec { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaker = fn(&mut TaskSpec);
        let cases: Vec<(Breaker, &str)> = vec![
            (|s| s.id = String::new(), "id"),
            (|s| s.id = "../etc".into(), "id"),
            (|s| s.id = ".hidden".into(), "id"),
            (|s| s.name = "a b".into(), "name"),
            (|s| s.name = "x".repeat(65), "name"),
            (|s| s.args = vec!["a\0b".into()], "args"),
            (|s| s.hostname = Some("a b".into()), "hostname"),
            (|s| s.env = vec![("A=B".into(), "c".into())], "env"),
            (|s| s.env = vec![(String::new(), "c".into())], "env"),
            (|s| s.attachments[0].bridge = "b".repeat(16), "bridge"),
            (|s| s.attachments[0].prefix = 33, "prefix"),
            (
                |s| s.attachments[0].addr = Ipv4Addr::new(10, 0, 9, 0),
                "addr",
            ),
            (
                |s| s.attachments[0].addr = Ipv4Addr::new(10, 0, 9, 255),
                "addr",
            ),
            (
                |s| s.attachments[0].gateway = Some(Ipv4Addr::new(10, 0, 8, 1)),
                "gateway",
            ),
            (
                |s| s.attachments[0].gateway = Some(Ipv4Addr::new(10, 0, 9, 2)),
                "gateway",
            ),
            (|s| s.attachments[0].mac = Some([1, 0, 0, 0, 0, 1]), "mac"),
            (|s| s.attachments[0].mtu = Some(67), "mtu"),
            (|s| s.attachments.push(attachment()), "attachments"),
            (
                |s| {
                    s.root = Root::Image {
                        lower: "relative".into(),
                        config: ImageDefaults::default(),
                    }
                },
                "root",
            ),
            (
                |s| {
                    s.root = Root::Image {
                        lower: "/a,upperdir=/x".into(),
                        config: ImageDefaults::default(),
                    }
                },
                "root",
            ),
            (
                |s| s.sysctls = vec![("kernel.domainname".into(), "x".into())],
                "sysctls",
            ),
            (
                |s| s.sysctls = vec![("vm.swappiness".into(), "1".into())],
                "sysctls",
            ),
            (
                |s| {
                    s.mounts = vec![Mount::Tmpfs {
                        target: "relative".into(),
                        size: None,
                    }]
                },
                "mounts",
            ),
            (
                |s| {
                    s.mounts = vec![Mount::Bind {
                        source: "relative".into(),
                        target: "/x".into(),
                        readonly: false,
                    }]
                },
                "mounts",
            ),
            (
                |s| s.resolv_conf = Some("resolv.conf".into()),
                "resolv_conf",
            ),
            (
                |s| {
                    s.rlimits = vec![Rlimit {
                        kind: "RLIMIT_FILES".into(),
                        soft: 1,
                        hard: 1,
                    }]
                },
                "rlimits",
            ),
            (
                |s| {
                    s.rlimits = vec![Rlimit {
                        kind: "RLIMIT_NOFILE".into(),
                        soft: 2,
                        hard: 1,
                    }]
                },
                "rlimits",
            ),
            (
                |s| s.extra_hosts = vec!["db 10.0.0.5".into()],
                "extra_hosts",
            ),
            (
                |s| s.extra_hosts = vec!["10.0.0.5 db\n1.2.3.4 evil".into()],
                "extra_hosts",
            ),
        ];
        for (break_it, field) in cases {
            let mut s = spec();
            break_it(&mut s);
            assert_eq!(field_of(s.validate()), Some(field), "{s:?}");
        }
    }

    #[test]
    fn point_to_point_subnets_have_no_network_address() {
        let mut s = spec();
        s.attachments[0].prefix = 31;
        s.attachments[0].addr = Ipv4Addr::new(10, 0, 9, 0);
        s.attachments[0].gateway = Some(Ipv4Addr::new(10, 0, 9, 1));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn namespaced_sysctls_are_accepted() {
        let mut s = spec();
        s.sysctls = vec![
            ("net.ipv4.ip_forward".into(), "1".into()),
            ("kernel.shmmax".into(), "1".into()),
            ("kernel.msgmax".into(), "1".into()),
            ("kernel.sem".into(), "1 2 3 4".into()),
            ("fs.mqueue.msg_max".into(), "1".into()),
        ];
        assert!(s.validate().is_ok());
    }

    #[test]
    fn veth_names_fit_an_interface_name_and_differ_per_task_and_index() {
        let a0 = host_veth_name("task-a", 0);
        assert!(a0.len() <= MAX_IFNAME_LEN);
        assert!(a0.starts_with("shlv"));
        assert_eq!(a0, host_veth_name("task-a", 0), "stable");
        assert_ne!(a0, host_veth_name("task-b", 0));
        assert_ne!(a0, host_veth_name("task-a", 1));
        assert_eq!(
            host_veth_name(&"z".repeat(MAX_ID_LEN), MAX_ATTACHMENTS - 1).len(),
            14
        );
    }

    #[test]
    fn env_items_without_equals_are_refused() {
        assert!(parse_env("NOEQUALS").is_err());
        assert!(parse_env("=value").is_err());
        assert_eq!(parse_env("A=").ok(), Some(("A".into(), String::new())));
    }

    proptest! {
        #[test]
        fn env_parse_splits_at_the_first_equals(key in "[A-Za-z_][A-Za-z0-9_]{0,20}", value in "[^\0]{0,40}") {
            let item = format!("{key}={value}");
            let (k, v) = parse_env(&item).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(k, key);
            prop_assert_eq!(v, value);
        }

        #[test]
        fn env_parse_never_accepts_what_validation_refuses(item in "[^\0]{0,40}\0?[^\0]{0,5}") {
            if let Ok((k, v)) = parse_env(&item) {
                prop_assert!(validate_env(&k, &v).is_ok());
                prop_assert_eq!(format!("{k}={v}"), item);
            }
        }

        #[test]
        fn gateways_are_accepted_exactly_inside_the_subnet(
            addr in any::<u32>(), gw in any::<u32>(), prefix in 1u8..=32,
        ) {
            let mut s = spec();
            s.attachments[0].addr = Ipv4Addr::from(addr);
            s.attachments[0].prefix = prefix;
            s.attachments[0].gateway = Some(Ipv4Addr::from(gw));
            let host = addr & !netmask(prefix);
            let edge = prefix <= 30 && (host == 0 || host == !netmask(prefix));
            let same_subnet = (addr ^ gw) & netmask(prefix) == 0 && addr != gw;
            prop_assert_eq!(s.validate().is_ok(), !edge && same_subnet);
        }
    }
}
