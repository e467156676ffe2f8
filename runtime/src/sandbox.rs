//! Between fork and exec: the task's init and the task itself.
//!
//! The spawner forks with a fresh PID namespace for its children, so the
//! forked process is PID 1 of the task's namespace. In the `pre_exec` hook
//! it becomes the task's **init** and never returns:
//!
//! 1. dies with the spawner thread (`PR_SET_PDEATHSIG`), blocks every signal;
//! 2. unshares mount, UTS and IPC namespaces, joins the prepared network
//!    namespace, sets the hostname;
//! 3. makes every mount a slave (the node's unmounts still reach the task,
//!    nothing the task mounts reaches the node), then either mounts a fresh
//!    `/proc` over the node's or, with a rootfs, bind-mounts it, mounts
//!    `/proc`, a small `/dev` and `/dev/shm` in it and `pivot_root`s there;
//! 4. closes every inherited descriptor but its two pipes;
//! 5. forks the task (PID 2), which resets signals, starts a session and
//!    `execve`s the command;
//! 6. waits in `sigwaitinfo`: forwards every signal but SIGCHLD to the task,
//!    reaps every orphan, and when the task exits reports its status on the
//!    status pipe and exits; the kernel then kills whatever is left in the
//!    PID namespace.
//!
//! A failed step is reported on the report pipe as `(stage, errno)`; a
//! successful exec closes the task's copy of that pipe (close-on-exec), so
//! the parent reads EOF. This is the same protocol `std::process` uses, one
//! level deeper.
//!
//! Why an init rather than the task as PID 1: the kernel delivers to a
//! namespace's init only the signals it has a handler for, so `sleep` as
//! PID 1 would ignore `stop`'s SIGTERM, and a PID 1 that does not reap
//! would collect zombies. Docker's `--init` (tini) exists for the same two
//! reasons.
//!
//! Only async-signal-safe calls are allowed here (the parent has many
//! threads), so everything the child needs (C strings, pointer arrays) is
//! built before the fork, nothing is allocated or dropped after it, and
//! nothing can panic.

use std::ffi::{CStr, CString, c_char, c_int, c_ulong};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use crate::RuntimeError;
use crate::spec::{TaskSpec, exec_candidates};

/// A set-up step of the sandbox, as reported by the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// `PR_SET_PDEATHSIG`, so the task dies with the runtime.
    DeathSignal = 1,
    /// Blocking signals in the init.
    Signals,
    /// `unshare` of the mount, UTS and IPC namespaces.
    Namespaces,
    /// `setns` into the task's network namespace.
    JoinNetns,
    /// `sethostname`.
    Hostname,
    /// Making the mount tree a slave of the node's.
    MountSlave,
    /// Bind-mounting the rootfs onto itself.
    BindRootfs,
    /// Mounting `/proc`.
    MountProc,
    /// Populating `/dev` in the rootfs.
    MountDev,
    /// `pivot_root` into the rootfs and detaching the old root.
    PivotRoot,
    /// `chdir("/")`.
    Chdir,
    /// Closing inherited descriptors.
    CloseFds,
    /// Forking the task from its init.
    Fork,
    /// `execve` of the command.
    Exec,
    /// Bind-mounting the task's resolv.conf over `/etc/resolv.conf`.
    ResolvConf,
}

impl Stage {
    const ALL: [Stage; 15] = [
        Stage::DeathSignal,
        Stage::Signals,
        Stage::Namespaces,
        Stage::JoinNetns,
        Stage::Hostname,
        Stage::MountSlave,
        Stage::BindRootfs,
        Stage::MountProc,
        Stage::MountDev,
        Stage::PivotRoot,
        Stage::Chdir,
        Stage::CloseFds,
        Stage::Fork,
        Stage::Exec,
        Stage::ResolvConf,
    ];

    fn from_code(code: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == code)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::DeathSignal => "tying the task's life to the runtime (PR_SET_PDEATHSIG)",
            Stage::Signals => "blocking signals in the task's init",
            Stage::Namespaces => "creating mount, UTS and IPC namespaces (needs root)",
            Stage::JoinNetns => "joining the task's network namespace",
            Stage::Hostname => "setting the hostname",
            Stage::MountSlave => "making the task's mounts private to it (mount --make-rslave /)",
            Stage::BindRootfs => "bind-mounting the rootfs (is it on a local filesystem?)",
            Stage::MountProc => {
                "mounting /proc (the rootfs needs a /proc directory or write access)"
            }
            Stage::MountDev => {
                "populating /dev in the rootfs (it needs a /dev directory or write access)"
            }
            Stage::PivotRoot => "pivot_root into the rootfs",
            Stage::Chdir => "changing to /",
            Stage::CloseFds => "closing inherited file descriptors (close_range needs Linux 5.9)",
            Stage::Fork => "forking the task from its init",
            Stage::Exec => "executing the command",
            Stage::ResolvConf => {
                "bind-mounting resolv.conf over /etc/resolv.conf (the node's must exist; a \
                 rootfs' etc and etc/resolv.conf cannot be symlinks)"
            }
        })
    }
}

/// Decodes a report `(stage, errno)` read from the report pipe.
pub(crate) fn decode_report(bytes: &[u8]) -> Option<(Stage, io::Error)> {
    let stage = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let errno = i32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some((
        Stage::from_code(stage)?,
        io::Error::from_raw_os_error(errno),
    ))
}

/// How the task ended, as the init saw it: `(kind, value)` with kind 1 =
/// exited with code `value`, 2 = killed by signal `value`.
const EXITED: u32 = 1;
const SIGNALED: u32 = 2;

/// Decodes the init's status message: `Some((code, signal))`.
pub(crate) fn decode_status(bytes: &[u8]) -> Option<(Option<i32>, Option<i32>)> {
    let kind = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
    let value = i32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
    match kind {
        EXITED => Some((Some(value), None)),
        SIGNALED => Some((None, Some(value))),
        _ => None,
    }
}

fn message(a: u32, b: i32) -> [u8; 8] {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// A NULL-terminated array of C strings, for `execve`.
pub(crate) struct CStrArray {
    _strings: Vec<CString>,
    pointers: Vec<*const c_char>,
}

impl CStrArray {
    fn new(strings: Vec<CString>) -> CStrArray {
        let pointers = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain([ptr::null()])
            .collect();
        CStrArray {
            _strings: strings,
            pointers,
        }
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.pointers.as_ptr()
    }
}

// SAFETY: the pointers point into the heap buffers of `_strings`, owned by
// the same value, never mutated and never moved (moving a Vec<CString> moves
// only the handles), so sharing or sending the whole is like sharing or
// sending the strings.
unsafe impl Send for CStrArray {}
// SAFETY: as above; nothing mutates through the pointers.
unsafe impl Sync for CStrArray {}

/// Device nodes bind-mounted from the node into a rootfs' `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks in a rootfs' `/dev`, as Docker makes them.
const DEV_LINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
];

struct RootfsPlan {
    root: CString,
    proc: CString,
    dev: CString,
    shm: CString,
    /// (node's device, mount point in the rootfs)
    devices: Vec<(CString, CString)>,
    /// (target, link path in the rootfs)
    links: Vec<(CString, CString)>,
}

/// The bind mount of the task's resolv.conf.
struct ResolvPlan {
    /// The file on the node.
    source: CString,
    /// With a rootfs, `<root>/etc`: the file is opened in it without
    /// following symlinks, which would resolve against the node's root.
    rootfs_etc: Option<CString>,
}

/// Everything the child needs, prepared before the fork.
pub(crate) struct ChildPlan {
    hostname: CString,
    netns: OwnedFd,
    rootfs: Option<RootfsPlan>,
    resolv_conf: Option<ResolvPlan>,
    argv: CStrArray,
    envp: CStrArray,
    candidates: Vec<CString>,
    /// Write end of the status pipe: the init writes the task's status.
    status: OwnedFd,
    /// Write end of the report pipe: set-up and exec failures.
    report: OwnedFd,
}

fn c_string(id: &str, field: &'static str, bytes: &[u8]) -> Result<CString, RuntimeError> {
    CString::new(bytes).map_err(|_| RuntimeError::InvalidSpec {
        id: id.to_owned(),
        field,
        value: String::from_utf8_lossy(bytes).into_owned(),
        reason: "cannot contain NUL".into(),
    })
}

/// std's `try_clone` duplicates to the lowest free descriptor >= 3: the
/// child's stdio set-up overwrites 0 to 2, which a process started with a
/// closed stdin could have handed out to our pipes.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() < 3 {
        fd.try_clone()
    } else {
        Ok(fd)
    }
}

impl ChildPlan {
    /// Prepares the child of `spec` (which must be valid): it joins `netns`
    /// and reports on `status` and `report` (write ends).
    pub(crate) fn new(
        spec: &TaskSpec,
        netns: OwnedFd,
        status: OwnedFd,
        report: OwnedFd,
    ) -> Result<ChildPlan, RuntimeError> {
        let id = spec.id.as_str();
        let env = spec.effective_env();
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        let program = spec.command.first().map_or("", String::as_str);
        let argv = spec
            .command
            .iter()
            .map(|arg| c_string(id, "command", arg.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| c_string(id, "env", format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?;
        let candidates = exec_candidates(program, path)
            .iter()
            .map(|c| c_string(id, "command", c.as_bytes()))
            .collect::<Result<_, _>>()?;
        let rootfs = spec
            .rootfs
            .as_deref()
            .map(|root| RootfsPlan::new(id, root))
            .transpose()?;
        let resolv_conf = spec
            .resolv_conf
            .as_deref()
            .map(|conf| {
                Ok::<_, RuntimeError>(ResolvPlan {
                    source: c_string(id, "resolv_conf", conf.as_os_str().as_bytes())?,
                    rootfs_etc: spec
                        .rootfs
                        .as_deref()
                        .map(|root| c_string(id, "rootfs", root.join("etc").as_os_str().as_bytes()))
                        .transpose()?,
                })
            })
            .transpose()?;
        let fd_err = |op| move |source| RuntimeError::Resource { op, source };
        Ok(ChildPlan {
            hostname: c_string(id, "name", spec.name.as_bytes())?,
            netns: above_stdio(netns).map_err(fd_err("duplicate the netns descriptor"))?,
            rootfs,
            resolv_conf,
            argv: CStrArray::new(argv),
            envp: CStrArray::new(envp),
            candidates,
            status: above_stdio(status).map_err(fd_err("duplicate the status pipe"))?,
            report: above_stdio(report).map_err(fd_err("duplicate the report pipe"))?,
        })
    }
}

impl RootfsPlan {
    fn new(id: &str, root: &Path) -> Result<RootfsPlan, RuntimeError> {
        let path = |p: &Path| c_string(id, "rootfs", p.as_os_str().as_bytes());
        let dev = root.join("dev");
        Ok(RootfsPlan {
            root: path(root)?,
            proc: path(&root.join("proc"))?,
            shm: path(&dev.join("shm"))?,
            devices: DEVICES
                .iter()
                .map(|d| Ok((path(&Path::new("/dev").join(d))?, path(&dev.join(d))?)))
                .collect::<Result<_, RuntimeError>>()?,
            links: DEV_LINKS
                .iter()
                .map(|(target, link)| Ok((path(Path::new(target))?, path(&dev.join(link))?)))
                .collect::<Result<_, RuntimeError>>()?,
            dev: path(&dev)?,
        })
    }
}

/// Makes the child of `command` the task's init (see the module docs). The
/// command's own program is never executed: the hook does not return.
pub(crate) fn install(command: &mut tokio::process::Command, plan: ChildPlan) {
    // SAFETY: the hook runs in the forked child, where the parent's other
    // threads are gone: it makes only async-signal-safe system calls, reads
    // only `plan` (built before the fork), allocates and drops nothing, and
    // either returns an error before any descriptor it does not own is
    // touched or never returns (exec or _exit).
    unsafe {
        command.pre_exec(move || Child::new(&plan).run_init());
    }
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> c_int {
    // SAFETY: every pointer is null or a NUL-terminated string that outlives
    // the call.
    unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    }
}

/// `/proc/self/fd/<fd>` in `buf`, without allocating: mounting onto that
/// magic link mounts onto the file `fd` is open on (as runc does), so no
/// path is resolved twice.
fn fd_path(fd: RawFd, buf: &mut [u8; 32]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        buf[PREFIX.len() + i] = *digit;
    }
    buf[PREFIX.len() + len] = 0;
    CStr::from_bytes_until_nul(buf).unwrap_or(c"/proc/self/fd/")
}

fn mkdir(path: &CStr, mode: libc::mode_t) -> c_int {
    // SAFETY: `path` is a NUL-terminated string.
    unsafe { libc::mkdir(path.as_ptr(), mode) }
}

fn chdir(path: &CStr) -> c_int {
    // SAFETY: `path` is a NUL-terminated string.
    unsafe { libc::chdir(path.as_ptr()) }
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns; nothing uses it after.
    unsafe { libc::close(fd) };
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length. A failed or short
    // write (EPIPE: the reader is gone) loses only a report nobody reads.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn exit(code: c_int) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or destructors, which belong to the parent's state.
    unsafe { libc::_exit(code) }
}

fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset initialises it fully.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: as in full_sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

fn set_sigmask(set: &libc::sigset_t) -> c_int {
    // SAFETY: `set` is an initialised signal set; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, ptr::null_mut()) }
}

/// Closes every descriptor from 3 up except the two in `keep`.
fn close_all_but(keep: [RawFd; 2]) -> libc::c_long {
    let (low, high) = (keep[0].min(keep[1]), keep[0].max(keep[1]));
    let mut first: libc::c_uint = 3;
    for kept in [low, high] {
        // Both are >= 3 (see above_stdio), so the conversion cannot fail.
        let kept = libc::c_uint::try_from(kept).unwrap_or(0);
        if kept > first {
            // SAFETY: closes descriptors this process owns and no longer
            // needs; nothing refers to them after the fork.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, first, kept - 1, 0) };
            if rc < 0 {
                return rc;
            }
        }
        first = first.max(kept.saturating_add(1));
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) }
}

/// The forked child, running the plan.
struct Child<'a> {
    plan: &'a ChildPlan,
    report: RawFd,
    status: RawFd,
}

impl<'a> Child<'a> {
    fn new(plan: &'a ChildPlan) -> Child<'a> {
        Child {
            plan,
            report: plan.report.as_raw_fd(),
            status: plan.status.as_raw_fd(),
        }
    }

    /// Turns a failed call into a report to the parent and an error for
    /// std's own channel (which `Command::spawn` returns).
    fn check(&self, rc: impl Into<i64>, stage: Stage) -> io::Result<()> {
        if rc.into() >= 0 {
            return Ok(());
        }
        let errno = errno();
        write_all(self.report, &message(stage as u32, errno));
        Err(io::Error::from_raw_os_error(errno))
    }

    fn run_init(&self) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only. The name is cosmetic
        // (`ps` in the task shows "shoal-init"), so its failure is ignored.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c"shoal-init".as_ptr(), 0, 0, 0);
        }
        // The spawner thread is the parent: when the runtime is dropped or
        // the node's agent dies, every task dies with it, instead of living
        // on unmanaged with its address still allocated.
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        self.check(rc, Stage::DeathSignal)?;
        // The init is a copy of the runtime's memory: keep the task from
        // reading it through /proc/1/mem without CAP_SYS_PTRACE.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        // Blocked signals are queued for sigwaitinfo, even to a namespace
        // init (the kernel drops only unblocked, unhandled ones).
        self.check(set_sigmask(&full_sigset()), Stage::Signals)?;
        // SAFETY: resets a disposition inherited from the runtime; with the
        // signal blocked no handler can run meanwhile.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };

        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        // SAFETY: unshare takes integer flags; this process is single-threaded.
        self.check(unsafe { libc::unshare(flags) }, Stage::Namespaces)?;
        let netns = self.plan.netns.as_raw_fd();
        // SAFETY: `netns` is an open network-namespace descriptor.
        self.check(
            unsafe { libc::setns(netns, libc::CLONE_NEWNET) },
            Stage::JoinNetns,
        )?;
        let name = self.plan.hostname.as_bytes();
        // SAFETY: `name` is valid for reads of its length.
        let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        self.check(rc, Stage::Hostname)?;
        let rc = mount(None, c"/", None, libc::MS_REC | libc::MS_SLAVE, None);
        self.check(rc, Stage::MountSlave)?;
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        match &self.plan.rootfs {
            Some(rootfs) => self.enter_rootfs(rootfs)?,
            None => {
                // The node's /proc would show the node's processes.
                self.check(
                    mount(Some(c"proc"), c"/proc", Some(c"proc"), proc_flags, None),
                    Stage::MountProc,
                )?;
                if let Some(conf) = &self.plan.resolv_conf {
                    self.mount_resolv_conf(conf)?;
                }
            }
        }
        self.check(chdir(c"/"), Stage::Chdir)?;
        // The init never execs, so close-on-exec does not apply to it: drop
        // the runtime's sockets and files by hand, or each init would hold
        // them (a listening socket, a netlink socket) for the task's life.
        self.check(close_all_but([self.report, self.status]), Stage::CloseFds)?;

        // SAFETY: this process is single-threaded, and the first fork by
        // std's spawn left the C library's state consistent.
        let task = unsafe { libc::fork() };
        self.check(task, Stage::Fork)?;
        if task == 0 {
            self.exec_task();
        }
        close(self.report);
        self.supervise(task)
    }

    fn enter_rootfs(&self, rootfs: &RootfsPlan) -> io::Result<()> {
        // pivot_root wants the new root to be a mount point.
        let rc = mount(
            Some(&rootfs.root),
            &rootfs.root,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        );
        self.check(rc, Stage::BindRootfs)?;
        // mkdir errors (EEXIST, read-only) surface in the mount after it.
        mkdir(&rootfs.proc, 0o555);
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let rc = mount(Some(c"proc"), &rootfs.proc, Some(c"proc"), proc_flags, None);
        self.check(rc, Stage::MountProc)?;
        mkdir(&rootfs.dev, 0o755);
        let rc = mount(
            Some(c"tmpfs"),
            &rootfs.dev,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some(c"mode=755,size=64k"),
        );
        self.check(rc, Stage::MountDev)?;
        for (node_device, target) in &rootfs.devices {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
            // SAFETY: `target` is a NUL-terminated string.
            let fd = unsafe { libc::open(target.as_ptr(), flags, 0o666) };
            self.check(fd, Stage::MountDev)?;
            close(fd);
            let rc = mount(Some(node_device), target, None, libc::MS_BIND, None);
            self.check(rc, Stage::MountDev)?;
        }
        for (target, link) in &rootfs.links {
            // SAFETY: both are NUL-terminated strings.
            let rc = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
            self.check(rc, Stage::MountDev)?;
        }
        mkdir(&rootfs.shm, 0o1777);
        let shm_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let rc = mount(
            Some(c"shm"),
            &rootfs.shm,
            Some(c"tmpfs"),
            shm_flags,
            Some(c"mode=1777,size=65536k"),
        );
        self.check(rc, Stage::MountDev)?;
        if let Some(conf) = &self.plan.resolv_conf {
            self.mount_resolv_conf(conf)?;
        }
        // pivot_root(".", ".") stacks the old root on the new one, and the
        // detach unmounts it: no put_old directory needed in the rootfs
        // (runc does the same).
        self.check(chdir(&rootfs.root), Stage::PivotRoot)?;
        // SAFETY: both arguments are NUL-terminated strings.
        let rc = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
        self.check(rc, Stage::PivotRoot)?;
        // SAFETY: the argument is a NUL-terminated string.
        let rc = unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) };
        self.check(rc, Stage::PivotRoot)
    }

    /// Bind-mounts the task's resolv.conf over `/etc/resolv.conf`, or with a
    /// rootfs (before the pivot) over `<root>/etc/resolv.conf`, created if
    /// missing. The mount is in the task's mount namespace only.
    fn mount_resolv_conf(&self, conf: &ResolvPlan) -> io::Result<()> {
        let Some(etc) = &conf.rootfs_etc else {
            let target = c"/etc/resolv.conf";
            let rc = mount(Some(&conf.source), target, None, libc::MS_BIND, None);
            return self.check(rc, Stage::ResolvConf);
        };
        // mkdir errors (EEXIST, read-only) surface in the open after it.
        mkdir(etc, 0o755);
        let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `etc` is a NUL-terminated string.
        let dir = unsafe { libc::open(etc.as_ptr(), dir_flags) };
        self.check(dir, Stage::ResolvConf)?;
        // Read-only with O_CREAT: creates a missing file, and opens an
        // existing one even on a read-only rootfs.
        let file_flags = libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `dir` is an open directory, the name a NUL-terminated string.
        let file = unsafe { libc::openat(dir, c"resolv.conf".as_ptr(), file_flags, 0o644) };
        // Checked before the close, which could overwrite errno.
        let opened = self.check(file, Stage::ResolvConf);
        close(dir);
        opened?;
        let mut buf = [0; 32];
        let rc = mount(
            Some(&conf.source),
            fd_path(file, &mut buf),
            None,
            libc::MS_BIND,
            None,
        );
        let mounted = self.check(rc, Stage::ResolvConf);
        close(file);
        mounted
    }

    /// In the task (PID 2): a clean signal state, its own session, exec.
    fn exec_task(&self) -> ! {
        set_sigmask(&empty_sigset());
        // Handlers are reset by exec anyway; ignored signals are not, and
        // the task should not inherit the runtime's choices.
        // 1 to 64: every signal number Linux has (_NSIG is 65).
        for signal in 1..65 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                // SAFETY: resetting a disposition; invalid numbers fail
                // harmlessly with EINVAL.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
            }
        }
        close(self.status);
        // SAFETY: setsid takes no arguments; it cannot fail in a fresh
        // child, which is no process-group leader.
        unsafe { libc::setsid() };
        // As execvp: try every candidate; EACCES is remembered but the
        // search goes on; any other error but "not there" ends it.
        let mut failure = libc::ENOENT;
        for path in &self.plan.candidates {
            // SAFETY: `path` is a NUL-terminated string; argv and envp are
            // NULL-terminated arrays of them, alive until exec replaces us.
            unsafe {
                libc::execve(
                    path.as_ptr(),
                    self.plan.argv.as_ptr(),
                    self.plan.envp.as_ptr(),
                )
            };
            match errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => failure = libc::EACCES,
                other => {
                    failure = other;
                    break;
                }
            }
        }
        write_all(self.report, &message(Stage::Exec as u32, failure));
        exit(127)
    }

    /// The init's loop: forward signals to the task, reap every child, and
    /// exit with the task.
    fn supervise(&self, task: libc::pid_t) -> ! {
        let all = full_sigset();
        loop {
            // SAFETY: `all` is an initialised set; the info is not wanted.
            let signal = unsafe { libc::sigwaitinfo(&all, ptr::null_mut()) };
            if signal < 0 {
                continue; // EINTR
            }
            if signal != libc::SIGCHLD {
                // SAFETY: kill takes integers. ESRCH (the task is a zombie
                // not yet reaped) is harmless.
                unsafe { libc::kill(task, signal) };
                continue;
            }
            // One SIGCHLD may stand for many exits: reap until none is left.
            loop {
                let mut status: c_int = 0;
                // SAFETY: `status` is a valid out-pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid != task {
                    continue; // an orphan re-parented to us
                }
                let (kind, value, code) = if libc::WIFSIGNALED(status) {
                    let signal = libc::WTERMSIG(status);
                    (SIGNALED, signal, 128 + signal)
                } else {
                    let code = libc::WEXITSTATUS(status);
                    (EXITED, code, code)
                };
                // A namespace init cannot kill itself with a signal, so the
                // exact status goes through the pipe; the exit code is the
                // shell convention for whoever looks only at it.
                write_all(self.status, &message(kind, value));
                exit(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_statuses_decode_what_the_child_encodes() {
        for stage in Stage::ALL {
            let (got, err) = decode_report(&message(stage as u32, libc::ENOENT)).expect("test");
            assert_eq!(got, stage);
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        }
        assert!(decode_report(&message(0, 1)).is_none());
        assert!(decode_report(&[1, 0, 0]).is_none());
        assert_eq!(decode_status(&message(EXITED, 3)), Some((Some(3), None)));
        assert_eq!(decode_status(&message(SIGNALED, 9)), Some((None, Some(9))));
        assert_eq!(decode_status(&message(7, 9)), None);
        assert_eq!(decode_status(&[]), None);
    }

    #[test]
    fn stage_codes_are_distinct_and_round_trip() {
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage as u32 as usize, i + 1);
            assert_eq!(Stage::from_code(stage as u32), Some(stage));
        }
    }

    #[test]
    fn fd_paths_name_the_descriptor() {
        let mut buf = [0xff; 32];
        assert_eq!(fd_path(7, &mut buf), c"/proc/self/fd/7");
        assert_eq!(fd_path(0, &mut buf), c"/proc/self/fd/0");
        assert_eq!(fd_path(i32::MAX, &mut buf), c"/proc/self/fd/2147483647");
    }

    #[test]
    fn exec_arrays_are_null_terminated() {
        let array = CStrArray::new(vec![c"a".to_owned(), c"bc".to_owned()]);
        assert_eq!(array.pointers.len(), 3);
        assert!(array.pointers[2].is_null());
        // SAFETY: the pointer is into the array's own strings.
        let second = unsafe { CStr::from_ptr(array.pointers[1]) };
        assert_eq!(second, c"bc");
    }
}
