//! [`Runtime`] starts tasks through runc, each under its own shim;
//! [`RunningTask`] waits for, signals, stops and cleans up one, whether this
//! runtime started it or [`Runtime::adopt`] found it after a restart.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::error::{io_err, ns_err};
use crate::files::{self, Staging};
use crate::logs;
use crate::net::{self, HostVeth};
use crate::oci::{self, BundleInputs, HOST_HIDDEN, seccomp};
use crate::shim::{self, CONTAINER_PID_FILE, EXIT_FILE, Report, SHIM_PID_FILE};
use crate::spec::Root;
use crate::{BoxError, RuntimeError, TaskSpec};

/// Default OCI runtime binary.
pub const DEFAULT_RUNC: &str = "runc";
/// The environment variable naming the shim binary.
pub const SHIM_ENV: &str = "SHOAL_SHIM";
const META_FILE: &str = "meta.json";

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Bundles, netns files and runc's own state live here.
    pub state_dir: PathBuf,
    /// Node paths no task may see besides the runtime's (shoald passes
    /// its `--state-dir`, which holds the node's keys).
    pub hide: Vec<PathBuf>,
    /// The shim; default `SHOAL_SHIM`, else `shoal-shim` next to the
    /// current executable (or its parent directory, for test binaries).
    pub shim: Option<PathBuf>,
    /// The OCI runtime (`runc`, found on PATH by default).
    pub runc: PathBuf,
    /// Seccomp profile in docker's format.
    pub seccomp_profile: PathBuf,
}

impl RuntimeOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> RuntimeOptions {
        RuntimeOptions {
            state_dir: state_dir.into(),
            hide: Vec::new(),
            shim: None,
            runc: DEFAULT_RUNC.into(),
            seccomp_profile: seccomp::DOCKER_PROFILE.into(),
        }
    }
}

/// Paths of a runtime's state.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    state: PathBuf,
    pub(crate) runc: PathBuf,
    shim: PathBuf,
    hide: Vec<PathBuf>,
    seccomp_profile: PathBuf,
}

impl Paths {
    pub(crate) fn bundle(&self, id: &str) -> PathBuf {
        self.state.join("bundles").join(id)
    }
    fn netns(&self, id: &str) -> PathBuf {
        self.state.join("netns").join(id)
    }
    /// Where a task's secrets and configs are staged while it starts.
    fn files(&self, id: &str) -> PathBuf {
        self.state.join("files").join(id)
    }
    pub(crate) fn runc_root(&self) -> PathBuf {
        self.state.join("runc")
    }
    fn runc(&self) -> Command {
        let mut command = Command::new(&self.runc);
        command.arg("--root").arg(self.runc_root());
        command
    }
}

/// Starts tasks in the network namespace it was created in.
///
/// Tasks outlive the runtime (and shoald): each is watched by its shim, and
/// a new runtime on the same state directory takes them back with
/// [`adopt`](Self::adopt).
#[derive(Debug)]
pub struct Runtime {
    node_netns: Arc<File>,
    paths: Arc<Paths>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, if the task exited.
    pub code: Option<i32>,
    /// The signal that killed the task, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the task.
    #[serde(default)]
    pub oom_killed: bool,
}

impl Exit {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The code as a shell (and `docker ps`) shows it: 128 + the signal for
    /// a killed task.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal.map(Signal::try_from)) {
            (Some(code), _) => write!(f, "exit code {code}")?,
            (None, Some(Ok(signal))) => write!(f, "killed by {signal}")?,
            (None, Some(Err(_))) => write!(f, "killed by signal {}", self.signal.unwrap_or(0))?,
            (None, None) => f.write_str("unknown exit")?,
        }
        if self.oom_killed {
            f.write_str(" (out of memory)")?;
        }
        Ok(())
    }
}

/// A task's interface on one network, as made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInterface {
    /// The network's bridge.
    pub bridge: String,
    /// The host end of the veth, a port of `bridge`.
    pub host_veth: String,
    /// The interface inside the task (`eth0`, …).
    pub ifname: String,
    /// Its MAC address (the spec's, or the kernel's pick).
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// What the runtime keeps in the bundle to take a task back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    log: PathBuf,
    stop_signal: i32,
    interfaces: Vec<TaskInterface>,
    veths: Vec<HostVeth>,
}

/// The shim of a task: its pid, a pidfd on it, and the child handle when
/// this runtime started it (to reap it).
#[derive(Debug)]
struct Shim {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    child: Option<Child>,
}

/// A task. Wait for it ([`wait`](Self::wait) or [`stop`](Self::stop)) to
/// collect its exit and remove its remains; dropping it leaves the task
/// running (a new runtime can adopt it).
#[derive(Debug)]
pub struct RunningTask {
    meta: Meta,
    pid: u32,
    shim: Shim,
    paths: Arc<Paths>,
    node_netns: Arc<File>,
    exit: Option<Exit>,
    cleaned: bool,
}

/// What [`Runtime::adopt`] found.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Tasks whose shim is alive.
    pub running: Vec<RunningTask>,
    /// Tasks that ended while nobody watched, with their recorded exit
    /// (None when none was recorded); their remains are removed.
    pub ended: Vec<(String, Option<Exit>)>,
}

#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; nothing is read from or written to our memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd made pollable by the tokio reactor (readable once the process
/// has exited).
#[allow(unsafe_code)]
fn watch(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open for as long
    // as it is registered and is closed only after deregistration (drop).
    unsafe { AsyncFd::register(pidfd) }.map_err(io::Error::from)
}

/// The shim binary: `SHOAL_SHIM`, else `shoal-shim` next to the current
/// executable or one directory up (test binaries live in `deps/`).
fn find_shim() -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os(SHIM_ENV) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(io_err("/proc/self/exe", "read"))?;
    let mut looked = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("shoal-shim");
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    Err(RuntimeError::ShimNotFound {
        looked: looked.join(", "),
    })
}

fn runc_output(
    paths: &Paths,
    id: &str,
    op: &'static str,
    args: &[&str],
) -> Result<(), RuntimeError> {
    let output = paths
        .runc()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RuntimeError::Runc {
            id: id.to_owned(),
            op,
            message: format!("running {}: {e}", paths.runc.display()),
        })?;
    match output.status.success() {
        true => Ok(()),
        false => Err(RuntimeError::Runc {
            id: id.to_owned(),
            op,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}

/// Unmounts the task's rootfs (overlay or bind), if mounted.
fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    match umount2(&rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(error) => {
            tracing::warn!(path = %rootfs.display(), %error, "unmounting a task's rootfs")
        }
    }
}

/// Removes everything of task `id` but its log: container (if runc still
/// has it), rootfs mount, netns, bundle. Veths go with the netns.
fn remove_remains(paths: &Paths, id: &str) {
    if let Err(error) = runc_output(paths, id, "delete", &["delete", "--force", id]) {
        tracing::debug!(task = id, %error, "runc delete of an ended task");
    }
    let bundle = paths.bundle(id);
    unmount_rootfs(&bundle);
    // Left only by a start that was cut short (the daemon died in it).
    if let Err(error) = files::remove_staging(&paths.files(id)) {
        tracing::warn!(task = id, %error, "removing a task's staged files");
    }
    net::remove_netns(&paths.netns(id));
    if let Err(error) = remove_bundle(&bundle) {
        tracing::warn!(task = id, %error, "removing a task's bundle");
    }
}

/// Removes a bundle directory. Never recursively through `rootfs`, which
/// may still be a mount of the node's `/` or of an image if its unmount
/// failed: it is removed only if empty; the rest are the runtime's files.
fn remove_bundle(bundle: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(bundle) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == "rootfs" {
            std::fs::remove_dir(&path)?;
        } else if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::remove_dir(bundle)
}

/// A host task's `/` is the node's, read-only: a file can be mounted only
/// where a mount point exists, or on the task's own `/run` and `/tmp`.
fn host_file_targets(spec: &TaskSpec) -> Result<(), RuntimeError> {
    for (target, _, _) in files::binds(&spec.files, Path::new("/")) {
        let on_tmpfs = ["/run", "/tmp"]
            .iter()
            .any(|dir| files::inside(&target, dir));
        if !on_tmpfs && std::fs::metadata(&target).is_err() {
            return Err(RuntimeError::InvalidSpec {
                id: spec.id.clone(),
                field: "files",
                value: target,
                reason: "a host task's / is the node's, read-only, and has no such path to                          mount it on: choose a target under /run or /tmp, or one that exists                          on the node"
                    .into(),
            });
        }
    }
    Ok(())
}

fn read_exit(bundle: &Path) -> Option<Exit> {
    let text = std::fs::read(bundle.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether `pid` is the shim of `bundle` (and not a process that reused
/// its pid).
fn is_shim_of(pid: u32, bundle: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let bundle = bundle.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == bundle)
}

impl Runtime {
    /// A runtime keeping its state in `state_dir`, for the calling thread's
    /// network namespace (the node's): bridges are looked up and veths made
    /// there.
    pub fn new(state_dir: impl Into<PathBuf>) -> Result<Runtime, RuntimeError> {
        Runtime::with_options(RuntimeOptions::new(state_dir))
    }

    pub fn with_options(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let node_netns =
            File::open(net::THREAD_NETNS).map_err(ns_err("open the node's network namespace"))?;
        let shim = match options.shim {
            Some(shim) => shim,
            None => find_shim()?,
        };
        std::fs::create_dir_all(&options.state_dir)
            .map_err(io_err(&options.state_dir, "create"))?;
        let state = options
            .state_dir
            .canonicalize()
            .map_err(io_err(&options.state_dir, "resolve"))?;
        Ok(Runtime {
            node_netns: Arc::new(node_netns),
            paths: Arc::new(Paths {
                state,
                runc: options.runc,
                shim,
                hide: options.hide,
                seccomp_profile: options.seccomp_profile,
            }),
        })
    }

    /// The runtime's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.paths.state
    }

    /// Starts `spec`: returns once the command runs, with its network
    /// configured, or with why it could not start (then nothing of it is
    /// left but its log file).
    pub async fn start(&self, spec: &TaskSpec) -> Result<RunningTask, RuntimeError> {
        self.start_with(spec, |_| Ok(())).await
    }

    /// As [`start`](Self::start), calling `before_exec` with the task's
    /// network namespace once its network is configured (`lo` up included)
    /// and before its command starts: what the task needs from the node
    /// inside its namespace, such as the embedded resolver's sockets, is
    /// then there from the command's first instruction. Its error fails the
    /// start. Not called for a task on the host network, which has no
    /// namespace of its own.
    ///
    /// Not cancel-safe: a start dropped half-way may leave a task (or its
    /// remains) behind, which [`adopt`](Self::adopt) takes back or cleans.
    pub async fn start_with<F>(
        &self,
        spec: &TaskSpec,
        before_exec: F,
    ) -> Result<RunningTask, RuntimeError>
    where
        F: FnOnce(BorrowedFd<'_>) -> Result<(), BoxError> + Send,
    {
        spec.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoRuntime)?;
        if let Root::Image { lower, .. } = &spec.root
            && !lower.is_dir()
        {
            return Err(RuntimeError::RootfsNotDir {
                path: lower.clone(),
            });
        }
        if let Some(conf) = &spec.resolv_conf
            && !conf.is_file()
        {
            return Err(RuntimeError::ResolvConfNotFile { path: conf.clone() });
        }
        for m in &spec.mounts {
            if let crate::Mount::Bind { source, .. } | crate::Mount::Volume { source, .. } = m
                && !source.exists()
            {
                return Err(RuntimeError::InvalidSpec {
                    id: spec.id.clone(),
                    field: "mounts",
                    value: source.display().to_string(),
                    reason: "the mount's source does not exist on the node".into(),
                });
            }
        }
        if spec.root == Root::Host {
            host_file_targets(spec)?;
        }
        let stop_signal = oci::stop_signal(spec)?;
        let bundle = self.paths.bundle(&spec.id);
        if bundle.exists() {
            return Err(RuntimeError::TaskExists {
                id: spec.id.clone(),
                path: bundle,
            });
        }
        std::fs::create_dir_all(&bundle).map_err(io_err(&bundle, "create"))?;
        let (log, _created) = logs::open_log(&spec.log_dir, &spec.id)?;
        let node = net::netlink_in(&self.node_netns, &runtime)?;
        let mut veths = Vec::new();
        let started = self
            .launch(spec, &runtime, &node, &mut veths, before_exec, &bundle)
            .await;
        match started {
            Ok((pid, shim, interfaces, staging)) => {
                let meta = Meta {
                    id: spec.id.clone(),
                    log,
                    stop_signal: stop_signal as i32,
                    interfaces,
                    veths,
                };
                let meta_path = bundle.join(META_FILE);
                // The container holds its own mounts of the files now: off
                // the node they go, before anything else.
                let finished = staging.remove().and_then(|()| {
                    serde_json::to_vec(&meta)
                        .map_err(io::Error::other)
                        .and_then(|json| std::fs::write(&meta_path, json))
                        .map_err(io_err(&meta_path, "write"))
                });
                let mut task = RunningTask {
                    meta,
                    pid,
                    shim,
                    paths: self.paths.clone(),
                    node_netns: self.node_netns.clone(),
                    exit: None,
                    cleaned: false,
                };
                if let Err(e) = finished {
                    if let Err(error) = task.stop(Duration::ZERO).await {
                        tracing::warn!(task = spec.id, %error, "stopping a task whose start failed");
                    }
                    return Err(e);
                }
                Ok(task)
            }
            Err(e) => {
                if let Err(cleanup) = net::unplug(&node, &veths).await {
                    tracing::warn!(task = spec.id, error = %cleanup, "removing veths of a failed start");
                }
                remove_remains(&self.paths, &spec.id);
                Err(e)
            }
        }
    }

    async fn launch(
        &self,
        spec: &TaskSpec,
        runtime: &tokio::runtime::Handle,
        node: &rtnetlink::Handle,
        veths: &mut Vec<HostVeth>,
        before_exec: impl FnOnce(BorrowedFd<'_>) -> Result<(), BoxError>,
        bundle: &Path,
    ) -> Result<(u32, Shim, Vec<TaskInterface>, Staging), RuntimeError> {
        let netns_path = self.paths.netns(&spec.id);
        if spec.network_host {
            // The node's namespace as it is: nothing to make or configure,
            // and `before_exec` has no namespace of the task's own to act in.
            let staging = Staging::new(self.paths.files(&spec.id), &spec.files)?;
            self.write_bundle(spec, bundle, None, staging.dir())?;
            let (pid, shim) = self.spawn_shim(spec, bundle).await?;
            return Ok((pid, shim, Vec::new(), staging));
        }
        let (task_netns, task) = net::new_netns(runtime, &netns_path)?;
        for (i, attachment) in spec.attachments.iter().enumerate() {
            veths.push(net::plug(node, &task_netns, spec, i, attachment).await?);
        }
        let macs = net::configure_task(&task, &spec.id, &spec.attachments).await?;
        drop(task);
        before_exec(task_netns.as_fd()).map_err(|source| RuntimeError::BeforeExec {
            id: spec.id.clone(),
            source,
        })?;
        drop(task_netns);
        let interfaces = spec
            .attachments
            .iter()
            .zip(veths.iter())
            .zip(macs)
            .enumerate()
            .map(|(i, ((attachment, veth), mac))| TaskInterface {
                bridge: attachment.bridge.clone(),
                host_veth: veth.name.clone(),
                ifname: crate::spec::task_ifname(i),
                mac,
                addr: attachment.addr,
                prefix: attachment.prefix,
            })
            .collect();

        // Last before the container: the files are on the node for as short
        // a time as can be. Dropped on any failure, which unmounts them.
        let staging = Staging::new(self.paths.files(&spec.id), &spec.files)?;
        self.write_bundle(spec, bundle, Some(&netns_path), staging.dir())?;
        let (pid, shim) = self.spawn_shim(spec, bundle).await?;
        Ok((pid, shim, interfaces, staging))
    }

    /// Mounts the rootfs and writes config.json and the task's files.
    fn write_bundle(
        &self,
        spec: &TaskSpec,
        bundle: &Path,
        netns: Option<&Path>,
        files: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err(&rootfs, "create"))?;
        let mount_err = |op| {
            let rootfs = rootfs.clone();
            move |e: Errno| RuntimeError::Io {
                path: rootfs,
                op,
                source: e.into(),
            }
        };
        match &spec.root {
            Root::Host => {
                // Not recursive: the node's root filesystem alone, none of
                // the node's other mounts (bpffs, /run, other tasks' roots).
                mount(
                    Some("/"),
                    &rootfs,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(mount_err("bind-mount / on"))?;
                // Read-only on the node's side too: nothing done through this
                // path (a cleanup gone wrong included) can write the node's /.
                let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                mount(None::<&str>, &rootfs, None::<&str>, ro, None::<&str>)
                    .map_err(mount_err("remount read-only"))?;
                mount(
                    None::<&str>,
                    &rootfs,
                    None::<&str>,
                    MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(mount_err("make private"))?;
            }
            Root::Image { lower, .. } => {
                let (upper, work) = (bundle.join("upper"), bundle.join("work"));
                for dir in [&upper, &work] {
                    std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
                }
                let options = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    upper.display(),
                    work.display()
                );
                mount(
                    Some("overlay"),
                    &rootfs,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(options.as_str()),
                )
                .map_err(mount_err("mount overlay on"))?;
            }
        }
        let hostname = oci::hostname(spec);
        let resolv = bundle.join("resolv.conf");
        let resolv_source = spec
            .resolv_conf
            .clone()
            .unwrap_or_else(|| "/etc/resolv.conf".into());
        let resolv_text = std::fs::read(&resolv_source).unwrap_or_default();
        let hosts = bundle.join("hosts");
        let hostname_file = bundle.join("hostname");
        for (path, content) in [
            (&resolv, resolv_text),
            (
                &hosts,
                oci::hosts_file(hostname, &spec.extra_hosts, &spec.attachments).into_bytes(),
            ),
            (&hostname_file, format!("{hostname}\n").into_bytes()),
        ] {
            std::fs::write(path, content).map_err(io_err(path, "write"))?;
        }
        let mut hidden: Vec<PathBuf> = HOST_HIDDEN
            .iter()
            .map(PathBuf::from)
            .chain(self.paths.hide.iter().cloned())
            .chain([self.paths.state.clone()])
            .filter(|p| p.is_dir())
            .collect();
        hidden.sort();
        hidden.dedup();
        let mut volumes = Vec::new();
        if let Root::Image { config, .. } = &spec.root {
            for (i, target) in config.volumes.iter().enumerate() {
                if spec.mounts.iter().any(|m| m.target() == target) {
                    continue; // the service mounts something there itself
                }
                let dir = bundle.join("volumes").join(i.to_string());
                std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
                volumes.push((target.clone(), dir));
            }
        }
        let read_etc =
            |name: &str| std::fs::read_to_string(rootfs.join("etc").join(name)).unwrap_or_default();
        let (passwd, group) = (read_etc("passwd"), read_etc("group"));
        let profile = seccomp::Profile::load(&self.paths.seccomp_profile).map_err(|e| {
            RuntimeError::Seccomp {
                reason: e.to_string(),
            }
        })?;
        // The node's / is read-only: a missing file cannot get a mount point.
        let skip_files: Vec<&str> = match spec.root {
            Root::Host => ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]
                .into_iter()
                .filter(|f| std::fs::symlink_metadata(f).is_err())
                .collect(),
            Root::Image { .. } => Vec::new(),
        };
        let inputs = BundleInputs {
            skip_files: &skip_files,
            rootfs: &rootfs,
            netns,
            resolv_conf: &resolv,
            hosts: &hosts,
            hostname_file: &hostname_file,
            hidden: &hidden,
            volumes: &volumes,
            passwd: &passwd,
            group: &group,
            seccomp: &profile,
            platform: seccomp::Platform::current(),
            init: Some(&self.paths.shim),
            files,
        };
        let config = oci::config(spec, &inputs)?;
        let config_path = bundle.join("config.json");
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| io_err(&config_path, "write")(io::Error::other(e)))?;
        std::fs::write(&config_path, json).map_err(io_err(&config_path, "write"))?;
        Ok(())
    }

    async fn spawn_shim(
        &self,
        spec: &TaskSpec,
        bundle: &Path,
    ) -> Result<(u32, Shim), RuntimeError> {
        let shim_log = bundle.join("shim.log");
        let stderr = File::create(&shim_log).map_err(io_err(&shim_log, "create"))?;
        let log = logs::log_path(&spec.log_dir, &spec.id);
        let mut child = Command::new(&self.paths.shim)
            .arg("run")
            .arg("--runc")
            .arg(&self.paths.runc)
            .arg("--root")
            .arg(self.paths.runc_root())
            .arg("--bundle")
            .arg(bundle)
            .arg("--id")
            .arg(&spec.id)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| RuntimeError::Start {
                id: spec.id.clone(),
                message: format!("starting the shim {}: {e}", self.paths.shim.display()),
            })?;
        let out = child.stdout.take();
        let report = tokio::task::spawn_blocking(move || match out {
            Some(out) => shim::read_report(out),
            None => Err("the shim's stdout is gone".to_owned()),
        })
        .await
        .unwrap_or_else(|e| Err(format!("reading the shim's report: {e}")));
        let fail = |message: String, mut child: Child| {
            // The shim exits by itself after a failure; reap it.
            if let Err(error) = child.kill().and_then(|()| child.wait().map(drop)) {
                tracing::debug!(task = spec.id, %error, "reaping a failed shim");
            }
            Err(RuntimeError::Start {
                id: spec.id.clone(),
                message,
            })
        };
        let pid = match report {
            Ok(Report::Started { pid }) => pid,
            Ok(Report::Failed { error }) => return fail(error, child),
            Err(error) => return fail(error, child),
        };
        let shim = match pidfd_open(child.id()).and_then(watch) {
            Ok(pidfd) => Shim {
                pid: child.id(),
                pidfd,
                child: Some(child),
            },
            Err(e) => return fail(format!("watching the shim: {e}"), child),
        };
        Ok((pid, shim))
    }

    /// Takes back the tasks of this state directory: those whose shim is
    /// alive are returned running; the others' exits are read and their
    /// remains (netns, rootfs, bundle) removed.
    pub async fn adopt(&self) -> Result<Adopted, RuntimeError> {
        let mut adopted = Adopted::default();
        let bundles = self.paths.state.join("bundles");
        let entries = match std::fs::read_dir(&bundles) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(adopted),
            Err(e) => return Err(io_err(&bundles, "read")(e)),
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let bundle = entry.path();
            match self.adopt_one(&id, &bundle) {
                Some(task) => adopted.running.push(task),
                None => {
                    let exit = read_exit(&bundle);
                    if exit.is_none() {
                        // No shim and no exit: kill whatever runc still has.
                        if let Err(error) =
                            runc_output(&self.paths, &id, "kill", &["kill", &id, "KILL"])
                        {
                            tracing::debug!(task = id, %error, "killing an unwatched task");
                        }
                    }
                    let meta: Option<Meta> = std::fs::read(bundle.join(META_FILE))
                        .ok()
                        .and_then(|m| serde_json::from_slice(&m).ok());
                    remove_remains(&self.paths, &id);
                    // The kernel frees the veths with the namespace, in the
                    // background; now is better for a restart that reuses them.
                    if let Some(meta) = meta {
                        self.unplug(&meta.veths).await;
                    }
                    adopted.ended.push((id, exit));
                }
            }
        }
        Ok(adopted)
    }

    async fn unplug(&self, veths: &[HostVeth]) {
        let unplugged = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => match net::netlink_in(&self.node_netns, &runtime) {
                Ok(node) => net::unplug(&node, veths).await,
                Err(e) => Err(e),
            },
            Err(_) => Err(RuntimeError::NoRuntime),
        };
        if let Err(error) = unplugged {
            tracing::warn!(%error, "removing the veths of an ended task");
        }
    }

    fn adopt_one(&self, id: &str, bundle: &Path) -> Option<RunningTask> {
        let meta: Meta =
            serde_json::from_slice(&std::fs::read(bundle.join(META_FILE)).ok()?).ok()?;
        let shim_pid: u32 = std::fs::read_to_string(bundle.join(SHIM_PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pid: u32 = std::fs::read_to_string(bundle.join(CONTAINER_PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pidfd = pidfd_open(shim_pid).ok()?;
        // Checked after the pidfd is open: a pid reused later cannot fool it.
        if !is_shim_of(shim_pid, bundle) || meta.id != id {
            return None;
        }
        Some(RunningTask {
            meta,
            pid,
            shim: Shim {
                pid: shim_pid,
                pidfd: watch(pidfd).ok()?,
                child: None,
            },
            paths: self.paths.clone(),
            node_netns: self.node_netns.clone(),
            exit: None,
            cleaned: false,
        })
    }

    /// Kills every task of this state directory and removes their remains
    /// (for tests, `lab down`, `swarm leave`). Returns their ids.
    pub async fn kill_all(&self) -> Result<Vec<String>, RuntimeError> {
        let adopted = self.adopt().await?;
        let mut ids: Vec<String> = adopted.ended.into_iter().map(|(id, _)| id).collect();
        for mut task in adopted.running {
            task.stop(Duration::ZERO).await?;
            ids.push(task.meta.id.clone());
        }
        Ok(ids)
    }
}

impl RunningTask {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// Pid of the task's first process (PID 1 of its namespace) in the
    /// node's PID namespace: `nsenter -t <pid> -a` enters the task.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Pid of the task's shim.
    pub fn shim_pid(&self) -> u32 {
        self.shim.pid
    }

    /// The task's interfaces, one per attachment, in order.
    pub fn interfaces(&self) -> &[TaskInterface] {
        &self.meta.interfaces
    }

    /// The task's log file (see [`read_logs`](crate::read_logs)).
    pub fn log_path(&self) -> &Path {
        &self.meta.log
    }

    /// The task's network namespace (`<state>/netns/<id>`), until it ends.
    pub fn netns_path(&self) -> PathBuf {
        self.paths.netns(&self.meta.id)
    }

    /// Runs commands inside the task (`docker exec`), for as long as it
    /// runs: see [`Exec`](crate::Exec).
    pub fn exec(&self) -> crate::Exec {
        crate::Exec::new(self.meta.id.clone(), self.paths.clone())
    }

    /// How the task ended, if that is known yet.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Sends `signal` to the task's first process (`runc kill`). Nothing
    /// happens once the task has ended.
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        if self.exit.is_some() {
            return Ok(());
        }
        let id = self.meta.id.as_str();
        match runc_output(&self.paths, id, "kill", &["kill", id, signal.as_str()]) {
            Ok(()) => Ok(()),
            // Already stopped or deleted: the shim is about to report it.
            Err(RuntimeError::Runc { message, .. })
                if message.contains("not running") || message.contains("does not exist") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn shim_exited(&mut self) -> Result<(), RuntimeError> {
        let id = self.meta.id.clone();
        let mut guard = self
            .shim
            .pidfd
            .readable()
            .await
            .map_err(|source| RuntimeError::Wait {
                id: id.clone(),
                source,
            })?;
        guard.retain_ready();
        if let Some(mut child) = self.shim.child.take() {
            child
                .wait()
                .map_err(|source| RuntimeError::Wait { id, source })?;
        }
        Ok(())
    }

    /// Waits for the task to end, then removes its veths, netns, rootfs
    /// and bundle. Idempotent: once the task has ended it returns the same
    /// exit (and retries a cleanup that failed).
    pub async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        let exit = match self.exit {
            Some(exit) => exit,
            None => {
                self.shim_exited().await?;
                let bundle = self.paths.bundle(&self.meta.id);
                let exit = read_exit(&bundle).unwrap_or_else(|| {
                    tracing::warn!(
                        task = self.meta.id,
                        "the task's shim ended without recording its exit"
                    );
                    Exit::default()
                });
                self.exit = Some(exit);
                exit
            }
        };
        if !self.cleaned {
            remove_remains(&self.paths, &self.meta.id);
            // The kernel frees the namespace (and the veths in it) in the
            // background; deleting the host ends makes it so now.
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoRuntime)?;
            let node = net::netlink_in(&self.node_netns, &runtime)?;
            net::unplug(&node, &self.meta.veths).await?;
            self.cleaned = true;
        }
        Ok(exit)
    }

    /// Stops the task: its stop signal, and SIGKILL if it has not ended
    /// after `grace`; then as [`wait`](Self::wait).
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit, RuntimeError> {
        if self.exit.is_none() {
            let first = Signal::try_from(self.meta.stop_signal).unwrap_or(Signal::SIGTERM);
            if !grace.is_zero() {
                self.signal(first)?;
            }
            if grace.is_zero()
                || tokio::time::timeout(grace, self.shim.pidfd.readable())
                    .await
                    .is_err()
            {
                self.signal(Signal::SIGKILL)?;
            }
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_shell_would_show_them() {
        let killed = Exit {
            code: None,
            signal: Some(9),
            oom_killed: true,
        };
        assert_eq!(killed.shell_code(), 137);
        assert_eq!(killed.to_string(), "killed by SIGKILL (out of memory)");
        let three = Exit {
            code: Some(3),
            ..Exit::default()
        };
        assert_eq!(three.shell_code(), 3);
        assert!(!three.success());
        assert_eq!(three.to_string(), "exit code 3");
    }

    #[test]
    fn exits_round_trip_through_exit_json() {
        let exit = Exit {
            code: None,
            signal: Some(15),
            oom_killed: false,
        };
        let json = serde_json::to_vec(&exit).expect("test");
        assert_eq!(serde_json::from_slice::<Exit>(&json).expect("test"), exit);
    }
}
