//! A task's OCI bundle: the `config.json` runc runs, from a [`TaskSpec`]
//! and what the runtime prepared (rootfs, netns, files). Pure: every input
//! is given, nothing here touches the system, so all of it is tested
//! without root.
//!
//! Docker's defaults throughout: its capability set, `noNewPrivileges`, its
//! seccomp profile, masked and read-only paths, runc's `/dev`.

pub mod caps;
pub mod seccomp;
pub mod user;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount as OciMount, MountBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::spec::{DEFAULT_PATH, Mount, Root, TaskSpec};
use crate::{Attachment, RuntimeError};

/// Where an init asked with `init: true` is bind-mounted in the task:
/// runc's `/dev` is a tmpfs of the task's own, so the mount point is made
/// there and never in the image or the node's `/`.
pub const INIT_PATH: &str = "/dev/shoal-init";

/// Paths docker masks (bind of /dev/null, or an empty tmpfs for a dir).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths docker makes read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Node paths a [`Root::Host`] task must not see: shoald's sockets (under
/// `/run`), its state, the node's BPF objects, root's home, the node's
/// configuration. Each that exists gets an empty tmpfs over it; the
/// runtime's own state directory is added to these.
pub const HOST_HIDDEN: [&str; 5] = [
    "/run",
    "/var/lib/shoal",
    "/sys/fs/bpf",
    "/root",
    "/etc/shoal",
];

/// CFS period used for `cpu_nanos_limit` (docker's).
const CPU_PERIOD: u64 = 100_000;

/// Everything besides the spec that goes into `config.json`.
#[derive(Debug, Clone)]
pub struct BundleInputs<'a> {
    /// `<bundle>/rootfs`: the overlay, or the bind of the node's `/`.
    pub rootfs: &'a Path,
    /// The task's network namespace, bind-mounted by the runtime; `None`:
    /// the runtime's own (`--network host`), as runc does when the config
    /// names no network namespace.
    pub netns: Option<&'a Path>,
    /// Files written in the bundle for `/etc/resolv.conf`, `/etc/hosts`
    /// and `/etc/hostname`.
    pub resolv_conf: &'a Path,
    pub hosts: &'a Path,
    pub hostname_file: &'a Path,
    /// Which of `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname` to leave
    /// out: those missing from a read-only root (a mount point cannot be
    /// made there).
    pub skip_files: &'a [&'a str],
    /// For [`Root::Host`]: node paths to cover with an empty tmpfs (those of
    /// [`HOST_HIDDEN`] that exist, and the runtime's state directory).
    pub hidden: &'a [PathBuf],
    /// (target, directory) of the image's anonymous volumes.
    pub volumes: &'a [(String, PathBuf)],
    /// The task's `/etc/passwd` and `/etc/group` (empty when missing).
    pub passwd: &'a str,
    pub group: &'a str,
    pub seccomp: &'a seccomp::Profile,
    pub platform: seccomp::Platform,
    /// The init binary on the node, bound at [`INIT_PATH`] when `init`.
    pub init: Option<&'a Path>,
    /// The staging directory of the spec's `files` (see
    /// [`crate::files`]); required when it has any.
    pub files: Option<&'a Path>,
}

fn invalid(
    spec: &TaskSpec,
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> RuntimeError {
    RuntimeError::InvalidSpec {
        id: spec.id.clone(),
        field,
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

fn defaults(spec: &TaskSpec) -> Option<&crate::spec::ImageDefaults> {
    match &spec.root {
        Root::Host => None,
        Root::Image { config, .. } => Some(config),
    }
}

/// The command, by docker's rules: `entrypoint` replaces the image's
/// entrypoint and clears its cmd; non-empty `args` replace the cmd.
pub fn command(spec: &TaskSpec) -> Result<Vec<String>, RuntimeError> {
    let image = defaults(spec);
    let entrypoint = match &spec.entrypoint {
        Some(e) => e.clone(),
        None => image.map(|i| i.entrypoint.clone()).unwrap_or_default(),
    };
    let cmd = if !spec.args.is_empty() {
        spec.args.clone()
    } else if spec.entrypoint.is_some() {
        Vec::new()
    } else {
        image.map(|i| i.cmd.clone()).unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.first().is_none_or(String::is_empty) {
        return Err(invalid(
            spec,
            "args",
            &spec.args,
            "no command: give args, or an image with an entrypoint or cmd",
        ));
    }
    Ok(argv)
}

/// The environment: the image's, then the spec's (a later key replaces an
/// earlier one in place), then `PATH`, `HOSTNAME` and `HOME` where unset.
pub fn environment(spec: &TaskSpec, hostname: &str, home: Option<&str>) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let image = defaults(spec).map(|i| i.env.as_slice()).unwrap_or_default();
    for (key, value) in image.iter().chain(&spec.env) {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    let mut set_default = |key: &str, value: &str| {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.to_owned(), value.to_owned()));
        }
    };
    set_default("PATH", DEFAULT_PATH);
    set_default("HOSTNAME", hostname);
    set_default("HOME", home.unwrap_or("/root"));
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `SIGTERM`, `TERM`, `15`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = match upper.starts_with("SIG") {
        true => upper,
        false => format!("SIG{upper}"),
    };
    Signal::from_str(&name).ok()
}

/// The signal `stop` sends first: the spec's, the image's, else SIGTERM.
pub fn stop_signal(spec: &TaskSpec) -> Result<Signal, RuntimeError> {
    let text = spec
        .stop_signal
        .as_deref()
        .or_else(|| defaults(spec).and_then(|i| i.stop_signal.as_deref()));
    match text {
        None => Ok(Signal::SIGTERM),
        Some(t) => parse_signal(t).ok_or_else(|| {
            invalid(
                spec,
                "stop_signal",
                t,
                "a signal name (SIGTERM, TERM) or number",
            )
        }),
    }
}

/// The task's hostname.
pub fn hostname(spec: &TaskSpec) -> &str {
    spec.hostname.as_deref().unwrap_or(&spec.name)
}

/// `/etc/hosts` of the task: localhost, the extra lines (`--host`), then
/// its own addresses, in docker's order.
pub fn hosts_file(hostname: &str, extra: &[String], attachments: &[Attachment]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for line in extra {
        let mut fields = line.split_whitespace();
        if let Some(addr) = fields.next() {
            out.push_str(&format!(
                "{addr}\t{}\n",
                fields.collect::<Vec<_>>().join(" ")
            ));
        }
    }
    for a in attachments {
        out.push_str(&format!("{}\t{hostname}\n", a.addr));
    }
    out
}

/// `process.rlimits` of the spec's rlimits (checked by
/// [`TaskSpec::validate`]; named again here if not).
pub fn rlimits(spec: &TaskSpec) -> Result<Vec<PosixRlimit>, RuntimeError> {
    spec.rlimits
        .iter()
        .map(|r| {
            let typ = PosixRlimitType::from_str(&r.kind).map_err(|_| {
                invalid(
                    spec,
                    "rlimits",
                    &r.kind,
                    "an RLIMIT_ name such as RLIMIT_NOFILE",
                )
            })?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(r.soft)
                .hard(r.hard)
                .build()
                .map_err(bundle_err)
        })
        .collect()
}

/// Effective capabilities of the task (`CAP_…` names).
pub fn capabilities(spec: &TaskSpec) -> Result<BTreeSet<&'static str>, RuntimeError> {
    caps::effective(&spec.cap_add, &spec.cap_drop).map_err(|name| {
        let field = match spec.cap_add.contains(&name) {
            true => "cap_add",
            false => "cap_drop",
        };
        invalid(
            spec,
            field,
            name,
            "not a Linux capability (CAP_NET_ADMIN, NET_ADMIN, ALL)",
        )
    })
}

fn mount(
    destination: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<OciMount, RuntimeError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(bundle_err)
}

fn bind(destination: &str, source: &Path, readonly: bool) -> Result<OciMount, RuntimeError> {
    let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
    if readonly {
        options.push("ro");
    }
    mount(destination, "bind", source, &options)
}

fn bundle_err(source: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::Bundle { source }
}

/// The mounts, in the order runc makes them: the kernel filesystems, the
/// tmpfs over the node's hidden paths (`/run` among them, so that
/// `/run/secrets` can be made on it), the files of the bundle, the
/// anonymous volumes, the spec's own mounts, the secrets and configs (last,
/// so no mount hides them), the init.
pub fn mounts(spec: &TaskSpec, inputs: &BundleInputs<'_>) -> Result<Vec<OciMount>, RuntimeError> {
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];
    if spec.root == Root::Host {
        // The node's /tmp is the node's: a private one, as an image has.
        out.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        )?);
        for hidden in inputs.hidden {
            let target = hidden.to_string_lossy();
            // /sys is a fresh sysfs already: nothing of the node's bpffs
            // shows; under /tmp or another hidden path, it is covered.
            let covered = inputs
                .hidden
                .iter()
                .map(PathBuf::as_path)
                .chain([Path::new("/tmp"), Path::new("/sys")])
                .any(|other| other != hidden.as_path() && hidden.starts_with(other));
            if covered || hidden.as_path() == Path::new("/tmp") {
                continue;
            }
            out.push(mount(
                &target,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "noexec", "mode=755", "size=64k"],
            )?);
        }
    }
    let files_ro = spec.read_only || spec.root == Root::Host;
    for (target, source) in [
        ("/etc/resolv.conf", inputs.resolv_conf),
        ("/etc/hosts", inputs.hosts),
        ("/etc/hostname", inputs.hostname_file),
    ] {
        if !inputs.skip_files.contains(&target) {
            out.push(bind(target, source, files_ro)?);
        }
    }
    for (target, dir) in inputs.volumes {
        out.push(bind(target, dir, false)?);
    }
    for m in &spec.mounts {
        out.push(match m {
            Mount::Bind {
                source,
                target,
                readonly,
            }
            | Mount::Volume {
                source,
                target,
                readonly,
            } => bind(target, source, *readonly)?,
            Mount::Tmpfs { target, size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(size) = &size {
                    options.push(size);
                }
                mount(target, "tmpfs", "tmpfs", &options)?
            }
        });
    }
    if !spec.files.is_empty() {
        let Some(staging) = inputs.files else {
            return Err(invalid(
                spec,
                "files",
                spec.files.len(),
                "the runtime staged no directory for the task's files",
            ));
        };
        for (target, source, dir) in crate::files::binds(&spec.files, staging) {
            // Read-only and never executable; rprivate: no mount or unmount
            // on the node reaches the task's copy, nor the reverse.
            let kind = if dir { "rbind" } else { "bind" };
            out.push(mount(
                &target,
                "bind",
                source,
                &[kind, "rprivate", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
    }
    if let (true, Some(init)) = (spec.init, inputs.init) {
        out.push(mount(
            INIT_PATH,
            "bind",
            init,
            &["bind", "ro", "nosuid", "nodev"],
        )?);
    }
    Ok(out)
}

fn oci_caps(caps: &BTreeSet<&str>) -> Result<std::collections::HashSet<Capability>, RuntimeError> {
    caps.iter()
        .map(|c| {
            let bare = c.trim_start_matches("CAP_");
            Capability::from_str(bare).map_err(|_| RuntimeError::Bundle {
                source: oci_spec::OciSpecError::Other(format!(
                    "capability {c} unknown to oci-spec"
                )),
            })
        })
        .collect()
}

/// The `config.json` of `spec` (which must be valid).
pub fn config(spec: &TaskSpec, inputs: &BundleInputs<'_>) -> Result<Spec, RuntimeError> {
    let image = defaults(spec);
    let hostname = hostname(spec);
    let user_text = spec
        .user
        .as_deref()
        .or_else(|| image.and_then(|i| i.user.as_deref()))
        .unwrap_or("");
    let user = user::resolve(user_text, inputs.passwd, inputs.group)
        .map_err(|reason| invalid(spec, "user", user_text, reason))?;
    let mut argv = command(spec)?;
    if spec.init {
        if inputs.init.is_none() {
            return Err(invalid(
                spec,
                "init",
                true,
                "no init binary (shoal-shim) found on the node",
            ));
        }
        argv.splice(
            0..0,
            [INIT_PATH.to_owned(), "init".to_owned(), "--".to_owned()],
        );
    }
    let effective = capabilities(spec)?;
    let cap_set = oci_caps(&effective)?;
    let cwd = spec
        .workdir
        .as_deref()
        .or_else(|| image.and_then(|i| i.working_dir.as_deref()))
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(invalid(spec, "workdir", cwd, "give an absolute path"));
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(bundle_err)?,
        )
        .args(argv)
        .env(environment(spec, hostname, user.home.as_deref()))
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(cap_set.clone())
                .effective(cap_set.clone())
                .permitted(cap_set)
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .map_err(bundle_err)?,
        )
        .no_new_privileges(true)
        .rlimits(rlimits(spec)?)
        .build()
        .map_err(bundle_err)?;

    let namespace = |typ, path: Option<&Path>| {
        let mut ns = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(path) = path {
            ns = ns.path(path);
        }
        ns.build().map_err(bundle_err)
    };
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Uts, None)?,
        namespace(LinuxNamespaceType::Ipc, None)?,
    ];
    if let Some(netns) = inputs.netns {
        namespaces.insert(0, namespace(LinuxNamespaceType::Network, Some(netns))?);
    }
    let seccomp = seccomp::translate(inputs.seccomp, &effective, inputs.platform).map_err(|e| {
        RuntimeError::Seccomp {
            reason: e.to_string(),
        }
    })?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(spec)?)
        .cgroups_path(PathBuf::from(format!("/shoal/{}", spec.id)))
        .sysctl(spec.sysctls.iter().cloned().collect::<HashMap<_, _>>())
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .seccomp(seccomp)
        .build()
        .map_err(bundle_err)?;
    let root = RootBuilder::default()
        .path(inputs.rootfs)
        .readonly(spec.read_only || spec.root == Root::Host)
        .build()
        .map_err(bundle_err)?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .mounts(mounts(spec, inputs)?)
        .process(process)
        .hostname(hostname)
        .linux(linux)
        .build()
        .map_err(bundle_err)
}

fn resources(spec: &TaskSpec) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
    let r = &spec.resources;
    let to_i64 = |field, v: u64| i64::try_from(v).map_err(|_| invalid(spec, field, v, "too large"));
    let mut out = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; runc adds its default allow list (null, zero,
        // full, tty, random, urandom, pts) after this.
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(bundle_err)?,
    ]);
    if r.memory_limit.is_some() || r.memory_reservation.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = r.memory_limit {
            memory = memory.limit(to_i64("resources.memory_limit", limit)?);
        }
        if let Some(soft) = r.memory_reservation {
            memory = memory.reservation(to_i64("resources.memory_reservation", soft)?);
        }
        out = out.memory(memory.build().map_err(bundle_err)?);
    }
    if r.cpu_nanos_limit.is_some() || r.cpu_nanos_reservation.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(nanos) = r.cpu_nanos_limit {
            // quota / period = CPUs.
            let quota = nanos.saturating_mul(CPU_PERIOD) / 1_000_000_000;
            if quota < 1000 {
                return Err(invalid(
                    spec,
                    "resources.cpu_nanos_limit",
                    nanos,
                    "at least 0.01 CPU",
                ));
            }
            cpu = cpu
                .period(CPU_PERIOD)
                .quota(to_i64("resources.cpu_nanos_limit", quota)?);
        }
        if let Some(nanos) = r.cpu_nanos_reservation {
            cpu = cpu.shares((nanos.saturating_mul(1024) / 1_000_000_000).max(2));
        }
        out = out.cpu(cpu.build().map_err(bundle_err)?);
    }
    if let Some(limit) = r.pids_limit {
        out = out.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(bundle_err)?,
        );
    }
    out.build().map_err(bundle_err)
}

#[cfg(test)]
mod tests;
