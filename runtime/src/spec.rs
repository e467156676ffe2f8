//! What a task is made of, its validation, and the names derived from it.
//! Pure: nothing here touches the system.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::RuntimeError;

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

/// One task to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Unique on the node: `[A-Za-z0-9_.-]`, not starting with `.`, at most
    /// [`MAX_ID_LEN`] bytes.
    pub id: String,
    /// The task's hostname (`web.1` …): `[A-Za-z0-9_.-]`, at most
    /// [`MAX_HOSTNAME_LEN`] bytes.
    pub name: String,
    /// Program and arguments. The program is looked up on the task's PATH
    /// (from `env`, else [`DEFAULT_PATH`]) unless it contains a `/`.
    pub command: Vec<String>,
    /// Environment, in order. Nothing is inherited from the node; `PATH`,
    /// `HOSTNAME` and `HOME` get defaults when not given.
    pub env: Vec<(String, String)>,
    /// One interface per attached network, `eth0`, `eth1`, … in this order.
    pub attachments: Vec<Attachment>,
    /// Run inside this directory tree (pivoted into, used in place) instead
    /// of the node's filesystem.
    pub rootfs: Option<PathBuf>,
    /// A file on the node bind-mounted over the task's `/etc/resolv.conf`
    /// (the agent writes one naming the embedded resolver at 127.0.0.11).
    /// With a rootfs, `<rootfs>/etc/resolv.conf` is created if missing; its
    /// `etc` and the file itself cannot be symlinks, which would resolve on
    /// the node. Unset: the task sees the node's (or the rootfs') own.
    pub resolv_conf: Option<PathBuf>,
    /// Where the task's log (`<id>.log`) is written.
    pub log_dir: PathBuf,
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
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(invalid(
                id,
                "command",
                &self.command,
                "give a program to run",
            ));
        }
        if let Some(arg) = self.command.iter().find(|a| a.contains('\0')) {
            return Err(invalid(id, "command", arg, "arguments cannot contain NUL"));
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
        if let Some(root) = &self.rootfs {
            if !root.is_absolute() {
                return Err(invalid(id, "rootfs", root, "give an absolute path"));
            }
            if root.parent().is_none() {
                return Err(invalid(
                    id,
                    "rootfs",
                    root,
                    "pivoting into / is not isolation: leave rootfs unset to use the node's filesystem",
                ));
            }
        }
        if let Some(conf) = &self.resolv_conf
            && !conf.is_absolute()
        {
            return Err(invalid(id, "resolv_conf", conf, "give an absolute path"));
        }
        Ok(())
    }

    /// The environment the task gets: `env` with defaults for `PATH`,
    /// `HOSTNAME` and `HOME` where it sets none.
    pub fn effective_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        let has = |env: &[(String, String)], key: &str| env.iter().any(|(k, _)| k == key);
        if !has(&env, "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        if !has(&env, "HOSTNAME") {
            env.push(("HOSTNAME".into(), self.name.clone()));
        }
        if !has(&env, "HOME") {
            env.push(("HOME".into(), "/root".into()));
        }
        env
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

/// The paths `execve` is tried on, in order, as `execvp` would: the program
/// itself if it has a `/`, else each PATH entry joined with it (empty
/// entries, meaning the working directory, are skipped).
pub(crate) fn exec_candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .collect()
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
            command: vec!["sleep".into(), "1".into()],
            env: vec![],
            attachments: vec![attachment()],
            rootfs: None,
            resolv_conf: None,
            log_dir: "/tmp/logs".into(),
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
            (|s| s.command = vec![], "command"),
            (|s| s.command = vec!["a\0b".into()], "command"),
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
            (|s| s.rootfs = Some("relative".into()), "rootfs"),
            (|s| s.rootfs = Some("/".into()), "rootfs"),
            (
                |s| s.resolv_conf = Some("resolv.conf".into()),
                "resolv_conf",
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
    fn defaults_fill_only_what_env_leaves_unset() {
        let mut s = spec();
        s.env = vec![("PATH".into(), "/opt/bin".into()), ("A".into(), "1".into())];
        let env = s.effective_env();
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/opt/bin".into()),
                ("A".into(), "1".into()),
                ("HOSTNAME".into(), "web.1".into()),
                ("HOME".into(), "/root".into()),
            ]
        );
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
    fn candidates_follow_path_like_execvp() {
        assert_eq!(exec_candidates("/bin/sh", "/x"), vec!["/bin/sh"]);
        assert_eq!(exec_candidates("./run", "/x"), vec!["./run"]);
        assert_eq!(
            exec_candidates("sh", "/usr/bin/::/bin"),
            vec!["/usr/bin/sh", "/bin/sh"]
        );
        assert!(exec_candidates("sh", "").is_empty());
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
