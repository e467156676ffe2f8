//! The container a service's tasks run: its image reference, options,
//! resources and mounts, checked as docker checks them. Each error names
//! the flag it came from and how to fix it.

use std::collections::BTreeSet;

use shoal_api::reference::{self, Reference, ReferenceError};

use crate::model::{HOST_IMAGE, Mount, MountType, TaskSpec};

/// docker's smallest memory limit (`--limit-memory`).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// The capabilities Linux knows (capability.h, through 6.x), without `CAP_`.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Sysctls a container may set without touching the node: those of its
/// own namespaces (docker's list).
const NAMESPACED_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {problem}")]
pub struct ContainerError {
    pub flag: &'static str,
    pub value: String,
    #[source]
    pub problem: ContainerProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerProblem {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("unknown capability; use a name from capabilities(7), such as NET_ADMIN, or ALL")]
    Capability,
    #[error(
        "not a namespaced sysctl: only net.*, kernel.shm*, kernel.msg*, kernel.sem and \
         fs.mqueue.* can be set per container"
    )]
    Sysctl,
    #[error("below docker's minimum of 6MiB; give 6m or more")]
    MemoryTooSmall,
    #[error("is above the limit {limit} ({limit_flag}); reserve at most what the limit allows")]
    ReservationAboveLimit {
        limit: u64,
        limit_flag: &'static str,
    },
    #[error("must be an absolute path")]
    NotAbsolute,
    #[error("a {kind} mount needs an absolute source path on the nodes (source=/srv/data)")]
    BindSource { kind: &'static str },
    #[error("a tmpfs mount has no source; drop source=")]
    TmpfsSource,
    #[error("{option} is only for {kind} mounts")]
    WrongOption {
        option: &'static str,
        kind: &'static str,
    },
    #[error("volume names use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    VolumeName,
    #[error("target {target} is mounted twice; give each mount its own target")]
    DuplicateTarget { target: String },
    #[error("the target cannot be /; mount under a directory")]
    RootTarget,
    #[error("not a valid hostname: letters, digits and '-', dot-separated, up to 63 per label")]
    Hostname,
    #[error(transparent)]
    Ulimit(#[from] shoal_api::container::UlimitError),
    #[error("{0} is given twice; give each ulimit once")]
    UlimitTwice(String),
    #[error(transparent)]
    Host(#[from] shoal_api::container::HostError),
    #[error("unknown signal; give a name such as SIGTERM or SIGINT, or a number")]
    Signal,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
}

fn err(flag: &'static str, value: impl Into<String>, problem: ContainerProblem) -> ContainerError {
    ContainerError {
        flag,
        value: value.into(),
        problem,
    }
}

/// `CAP_NET_ADMIN`, `net_admin` and `NET_ADMIN` are one capability; `ALL`
/// stands for every one. Stored as `CAP_…` (or `ALL`).
fn capability(flag: &'static str, given: &str) -> Result<String, ContainerError> {
    let upper = given.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok("ALL".into());
    }
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(err(flag, given, ContainerProblem::Capability))
    }
}

fn sysctl_namespaced(key: &str) -> bool {
    key.starts_with("net.") || key.starts_with("fs.mqueue.") || NAMESPACED_SYSCTLS.contains(&key)
}

fn hostname_ok(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

fn signal_ok(s: &str) -> bool {
    if let Ok(n) = s.parse::<u8>() {
        return (1..=64).contains(&n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.contains(&bare) || bare.starts_with("RTMIN") || bare.starts_with("RTMAX")
}

fn no_whitespace(flag: &'static str, v: &str) -> Result<(), ContainerError> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(flag, v, ContainerProblem::Whitespace));
    }
    Ok(())
}

/// A value that may hold swarm's placeholders: they must parse. Its own
/// grammar is then the task's node's to check, on the expanded text.
fn templated(flag: &'static str, v: &str) -> Result<bool, ContainerError> {
    if !crate::template::is_template(v) {
        return Ok(false);
    }
    crate::template::parse(v).map_err(|e| err(flag, v, e.into()))?;
    Ok(true)
}

fn mount(m: &Mount) -> Result<(), ContainerError> {
    const F: &str = "--mount";
    let source_templated = templated(F, &m.source)?;
    let shown = format!("type={},target={}", kind_word(m.kind), m.target);
    if !m.target.starts_with('/') {
        return Err(err(F, shown, ContainerProblem::NotAbsolute));
    }
    if m.target.trim_end_matches('/').is_empty() {
        return Err(err(F, shown, ContainerProblem::RootTarget));
    }
    let wrong = |option, kind| {
        err(
            F,
            shown.clone(),
            ContainerProblem::WrongOption { option, kind },
        )
    };
    let tmpfs_opts = m.tmpfs_size_bytes != 0 || m.tmpfs_mode != 0;
    match m.kind {
        MountType::Bind => {
            if !m.source.starts_with('/') {
                return Err(err(F, shown, ContainerProblem::BindSource { kind: "bind" }));
            }
            if tmpfs_opts {
                return Err(wrong("tmpfs-size/tmpfs-mode", "tmpfs"));
            }
            if m.volume_nocopy {
                return Err(wrong("volume-nocopy", "volume"));
            }
        }
        MountType::Tmpfs => {
            if !m.source.is_empty() {
                return Err(err(F, shown, ContainerProblem::TmpfsSource));
            }
            if m.volume_nocopy {
                return Err(wrong("volume-nocopy", "volume"));
            }
        }
        MountType::Volume => {
            if tmpfs_opts {
                return Err(wrong("tmpfs-size/tmpfs-mode", "tmpfs"));
            }
            let b = m.source.as_bytes();
            let ok = source_templated
                || b.is_empty()
                || (b[0].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')));
            if !ok {
                return Err(err(F, &m.source, ContainerProblem::VolumeName));
            }
        }
    }
    Ok(())
}

fn kind_word(k: MountType) -> &'static str {
    match k {
        MountType::Volume => "volume",
        MountType::Bind => "bind",
        MountType::Tmpfs => "tmpfs",
    }
}

/// Checks a container spec as a request made it, and returns it with its
/// capability names normalised.
pub fn container(mut spec: TaskSpec) -> Result<TaskSpec, ContainerError> {
    if spec.image.is_empty() {
        return Err(err(
            "IMAGE",
            "",
            ContainerProblem::Reference(ReferenceError::Empty),
        ));
    }
    if spec.image != HOST_IMAGE {
        Reference::parse(&spec.image).map_err(|e| err("IMAGE", &spec.image, e.into()))?;
    }
    debug_assert_eq!(HOST_IMAGE, reference::HOST);
    for c in &mut spec.cap_add {
        *c = capability("--cap-add", c)?;
    }
    for c in &mut spec.cap_drop {
        *c = capability("--cap-drop", c)?;
    }
    for k in spec.sysctls.keys() {
        if !sysctl_namespaced(k) {
            return Err(err("--sysctl", k, ContainerProblem::Sysctl));
        }
    }
    let r = &spec.resources;
    if r.limit_memory_bytes != 0 && r.limit_memory_bytes < MIN_MEMORY_BYTES {
        return Err(err(
            "--limit-memory",
            r.limit_memory_bytes.to_string(),
            ContainerProblem::MemoryTooSmall,
        ));
    }
    if r.limit_memory_bytes != 0 && r.reserve_memory_bytes > r.limit_memory_bytes {
        return Err(err(
            "--reserve-memory",
            r.reserve_memory_bytes.to_string(),
            ContainerProblem::ReservationAboveLimit {
                limit: r.limit_memory_bytes,
                limit_flag: "--limit-memory",
            },
        ));
    }
    if r.limit_nano_cpus != 0 && r.reserve_nano_cpus > r.limit_nano_cpus {
        return Err(err(
            "--reserve-cpu",
            r.reserve_nano_cpus.to_string(),
            ContainerProblem::ReservationAboveLimit {
                limit: r.limit_nano_cpus,
                limit_flag: "--limit-cpu (in billionths of a CPU)",
            },
        ));
    }
    let mut targets = BTreeSet::new();
    for m in &spec.mounts {
        mount(m)?;
        if !targets.insert(m.target.trim_end_matches('/')) {
            return Err(err(
                "--mount",
                format!("target={}", m.target),
                ContainerProblem::DuplicateTarget {
                    target: m.target.clone(),
                },
            ));
        }
    }
    if !spec.workdir.is_empty() && !spec.workdir.starts_with('/') {
        return Err(err(
            "--workdir",
            &spec.workdir,
            ContainerProblem::NotAbsolute,
        ));
    }
    no_whitespace("--user", &spec.user)?;
    for e in &spec.env {
        templated("--env", e)?;
    }
    if !spec.hostname.is_empty()
        && !templated("--hostname", &spec.hostname)?
        && !hostname_ok(&spec.hostname)
    {
        return Err(err(
            "--hostname",
            &spec.hostname,
            ContainerProblem::Hostname,
        ));
    }
    if !spec.stop_signal.is_empty() && !signal_ok(&spec.stop_signal) {
        return Err(err(
            "--stop-signal",
            &spec.stop_signal,
            ContainerProblem::Signal,
        ));
    }
    let mut names = BTreeSet::new();
    for u in &spec.ulimits {
        let shown = shoal_api::container::show_ulimit(&u.name, u.soft, u.hard);
        shoal_api::container::check_ulimit(&u.name, u.soft, u.hard)
            .map_err(|e| err("--ulimit", &shown, e.into()))?;
        if !names.insert(u.name.as_str()) {
            return Err(err(
                "--ulimit",
                &shown,
                ContainerProblem::UlimitTwice(u.name.clone()),
            ));
        }
    }
    for h in &spec.hosts {
        shoal_api::container::host_entry(h).map_err(|e| err("--host", h, e.into()))?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn with(f: impl FnOnce(&mut TaskSpec)) -> Result<TaskSpec, String> {
        let mut s = TaskSpec {
            image: "busybox".into(),
            ..TaskSpec::default()
        };
        f(&mut s);
        container(s).map_err(|e| e.to_string())
    }

    fn m(kind: MountType, source: &str, target: &str) -> Mount {
        Mount {
            kind,
            source: source.into(),
            target: target.into(),
            read_only: false,
            tmpfs_size_bytes: 0,
            tmpfs_mode: 0,
            volume_nocopy: false,
        }
    }

    #[test]
    fn ulimits_and_hosts_name_the_flag() {
        let u = |name: &str, soft, hard| crate::model::Ulimit {
            name: name.into(),
            soft,
            hard,
        };
        assert!(
            with(|s| {
                s.ulimits = vec![u("nofile", 1024, 2048), u("core", -1, -1)];
                s.hosts = vec!["10.0.0.5 db".into()];
            })
            .is_ok()
        );
        assert_eq!(
            with(|s| s.ulimits = vec![u("nofile", 2048, 1024)])
                .err()
                .as_deref(),
            Some(
                "--ulimit \"nofile=2048:1024\": ulimit soft limit must be less than or equal to \
                 hard limit: 2048 > 1024"
            )
        );
        assert!(
            with(|s| s.ulimits = vec![u("files", 1, 1)])
                .err()
                .is_some_and(|e| e.starts_with("--ulimit \"files=1:1\": invalid ulimit type"))
        );
        assert!(
            with(|s| s.ulimits = vec![u("nproc", 1, 1), u("nproc", 2, 2)])
                .err()
                .is_some_and(|e| e.contains("given twice"))
        );
        assert!(
            with(|s| s.hosts = vec!["db 10.0.0.5".into()])
                .err()
                .is_some_and(|e| e.starts_with("--host \"db 10.0.0.5\": bad host entry"))
        );
    }

    #[test]
    fn images_caps_and_sysctls() {
        assert!(with(|_| {}).is_ok());
        assert!(with(|s| s.image = "host".into()).is_ok());
        assert_eq!(
            with(|s| s.image = String::new()).err().as_deref(),
            Some("IMAGE \"\": give an image, or `host` for the node's filesystem")
        );
        assert!(
            with(|s| s.image = "Busybox".into())
                .err()
                .is_some_and(|e| e.contains("lowercase"))
        );
        let caps = with(|s| {
            s.cap_add = vec!["net_admin".into(), "CAP_SYS_TIME".into(), "all".into()];
            s.cap_drop = vec!["MKNOD".into()];
        });
        assert_eq!(
            caps.map(|s| (s.cap_add, s.cap_drop)),
            Ok((
                vec!["CAP_NET_ADMIN".into(), "CAP_SYS_TIME".into(), "ALL".into()],
                vec!["CAP_MKNOD".into()]
            ))
        );
        assert!(
            with(|s| s.cap_add = vec!["NET_FLY".into()])
                .err()
                .is_some_and(|e| e.starts_with("--cap-add \"NET_FLY\": unknown capability"))
        );
        for ok in [
            "net.ipv4.ip_forward",
            "kernel.shmmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
        ] {
            assert!(
                with(|s| {
                    s.sysctls.insert(ok.into(), "1".into());
                })
                .is_ok(),
                "{ok}"
            );
        }
        for bad in ["kernel.panic", "vm.swappiness", "fs.file-max"] {
            assert!(
                with(|s| {
                    s.sysctls.insert(bad.into(), "1".into());
                })
                .err()
                .is_some_and(|e| e.contains("not a namespaced sysctl")),
                "{bad}"
            );
        }
    }

    #[test]
    fn resources_follow_docker() {
        let r = |f: fn(&mut Resources)| with(|s| f(&mut s.resources)).err().unwrap_or_default();
        assert_eq!(r(|r| r.limit_memory_bytes = MIN_MEMORY_BYTES), "");
        assert!(r(|r| r.limit_memory_bytes = MIN_MEMORY_BYTES - 1).contains("6MiB"));
        assert!(
            r(|r| {
                r.limit_memory_bytes = 64 << 20;
                r.reserve_memory_bytes = 128 << 20;
            })
            .starts_with("--reserve-memory \"134217728\": is above the limit")
        );
        assert!(
            r(|r| {
                r.limit_nano_cpus = 500_000_000;
                r.reserve_nano_cpus = 1_000_000_000;
            })
            .starts_with("--reserve-cpu")
        );
        // A reservation without a limit is fine.
        assert_eq!(r(|r| r.reserve_memory_bytes = 1 << 30), "");
    }

    #[test]
    fn mounts_name_the_rule() {
        let e = |mounts: Vec<Mount>| with(|s| s.mounts = mounts).err().unwrap_or_default();
        assert_eq!(e(vec![m(MountType::Bind, "/srv", "/data")]), "");
        assert_eq!(e(vec![m(MountType::Volume, "", "/data")]), "");
        assert_eq!(e(vec![m(MountType::Tmpfs, "", "/run/x")]), "");
        assert!(e(vec![m(MountType::Bind, "srv", "/data")]).contains("absolute source"));
        assert!(e(vec![m(MountType::Bind, "", "/data")]).contains("absolute source"));
        assert!(e(vec![m(MountType::Tmpfs, "x", "/data")]).contains("no source"));
        assert!(e(vec![m(MountType::Volume, "v", "data")]).contains("absolute path"));
        assert!(e(vec![m(MountType::Volume, "v", "/")]).contains("cannot be /"));
        assert!(e(vec![m(MountType::Volume, "-v", "/d")]).contains("volume names"));
        let mut t = m(MountType::Volume, "v", "/d");
        t.tmpfs_size_bytes = 1;
        assert!(e(vec![t]).contains("only for tmpfs"));
        let mut b = m(MountType::Bind, "/s", "/d");
        b.volume_nocopy = true;
        assert!(e(vec![b]).contains("only for volume"));
        assert!(
            e(vec![
                m(MountType::Volume, "a", "/d"),
                m(MountType::Tmpfs, "", "/d/")
            ])
            .contains("mounted twice")
        );
    }

    #[test]
    fn other_options() {
        assert!(with(|s| s.workdir = "rel".into()).is_err());
        assert!(with(|s| s.hostname = "web-1.local".into()).is_ok());
        assert!(with(|s| s.hostname = "-x".into()).is_err());
        assert!(with(|s| s.stop_signal = "SIGINT".into()).is_ok());
        assert!(with(|s| s.stop_signal = "usr1".into()).is_ok());
        assert!(with(|s| s.stop_signal = "9".into()).is_ok());
        assert!(with(|s| s.stop_signal = "SIGFOO".into()).is_err());
        assert!(with(|s| s.user = "a b".into()).is_err());
    }

    #[test]
    fn templates_are_checked_where_swarm_expands_them() {
        assert!(with(|s| s.hostname = "{{.Node.Hostname}}-{{.Task.Slot}}".into()).is_ok());
        assert!(with(|s| s.env = vec!["NODE_ID={{.Node.ID}}".into()]).is_ok());
        assert!(
            with(|s| s.mounts = vec![m(MountType::Volume, "data-{{.Task.Slot}}", "/d")]).is_ok()
        );
        let e = with(|s| s.env = vec!["X={{.Node.Nope}}".into()])
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("--env \"X={{.Node.Nope}}\": {{.Node.Nope}} is not a known placeholder"),
            "{e}"
        );
        let e = with(|s| s.hostname = "{{env \"HOME\"}}".into())
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("--hostname") && e.contains("not supported"),
            "{e}"
        );
        let e = with(|s| s.mounts = vec![m(MountType::Bind, "/srv/{{.Task.ID", "/d")])
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("--mount") && e.contains("never closed"),
            "{e}"
        );
    }
}
