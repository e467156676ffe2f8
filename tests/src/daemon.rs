//! Starting programs inside a node: the node's `shoald`, and any command.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::sethostname;

use crate::netns::netns_path;
use crate::record::{POLL, io_err};
use crate::{LabError, underlay};

/// Environment variable naming the `shoald` binary to run.
pub const SHOALD_BIN_ENV: &str = "SHOALD_BIN";

/// Lines of a daemon log shown in errors and on a panicking test.
pub(crate) const LOG_TAIL_LINES: usize = 120;

/// Finds `shoald`: `$SHOALD_BIN`, else next to the current executable or in
/// its parent directory (test binaries run from `target/<profile>/deps/`).
/// A directory of binaries ([`use_binaries_from`]) that wins over the
/// environment and the test's own build.
static BINARIES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every lab of this process run `shoald` and `shoal` from `dir`
/// (a bench's release build); false if a directory was already chosen.
pub fn use_binaries_from(dir: PathBuf) -> bool {
    BINARIES.set(dir).is_ok()
}

pub fn shoald_path() -> Result<PathBuf, LabError> {
    if let Some(dir) = BINARIES.get() {
        return Ok(dir.join("shoald"));
    }
    if let Some(path) = std::env::var_os(SHOALD_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LabError::DaemonBinary {
                searched: vec![path],
            })
        };
    }
    let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe"), "read"))?;
    let searched: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("shoald"))
        .collect();
    match searched.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(LabError::DaemonBinary { searched }),
    }
}

/// How the child is set up between fork and exec.
pub(crate) struct Enter {
    /// Named namespace to join.
    pub netns: String,
    /// Give the child its own UTS namespace with this hostname.
    pub hostname: Option<String>,
    /// Die with the thread that spawned it (test labs).
    pub die_with_parent: bool,
    /// Start a new session, detached from the terminal (persistent labs).
    pub new_session: bool,
}

/// Makes `command` enter the namespace (and the rest of `enter`) in the child
/// before exec. Errors surface from `Command::spawn`.
#[allow(unsafe_code)]
pub(crate) fn enter_in_child(command: &mut Command, enter: Enter) {
    // Everything the child needs is allocated here, before the fork.
    // Lab names are validated ([a-z0-9-]); were there a NUL, the empty path
    // would make open() fail with ENOENT at spawn.
    let path =
        CString::new(netns_path(&enter.netns).into_os_string().into_vec()).unwrap_or_default();
    let hostname = enter.hostname.map(OsString::from);
    let Enter {
        die_with_parent,
        new_session,
        ..
    } = enter;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It allocates nothing: it only
    // makes raw syscalls (open, setns, unshare, sethostname, prctl, setsid)
    // on data prepared above, and the errors it returns are plain errnos.
    unsafe {
        command.pre_exec(move || {
            let ns = open(
                path.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            setns(&ns, CloneFlags::CLONE_NEWNET)?;
            drop(ns);
            if let Some(hostname) = &hostname {
                unshare(CloneFlags::CLONE_NEWUTS)?;
                sethostname(hostname)?;
            }
            if die_with_parent {
                // The "parent" is the spawning thread, which blocks in
                // spawn() until exec, so it cannot exit before this runs.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            }
            if new_session {
                nix::unistd::setsid()?;
            }
            Ok(())
        });
    }
}

/// What a node needs to run its daemon.
pub(crate) struct DaemonSpec<'a> {
    /// Flags after the lab's own.
    pub args: &'a [String],
    pub node: &'a str,
    pub netns: &'a str,
    pub dir: &'a Path,
    pub socket: &'a Path,
    pub log: &'a Path,
    pub persistent: bool,
}

/// Starts `shoald` for one node, its output appended to the node's log.
pub(crate) fn spawn(binary: &Path, spec: &DaemonSpec<'_>) -> Result<Child, LabError> {
    // A socket left by a previous daemon would make readiness pass at once.
    match std::fs::remove_file(spec.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(spec.socket, "remove stale socket")(e));
        }
        _ => {}
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log)
        .map_err(io_err(spec.log, "open"))?;
    let log_err = log.try_clone().map_err(io_err(spec.log, "dup"))?;
    let mut command = Command::new(binary);
    command
        .arg("--hostname")
        .arg(spec.node)
        .arg("--state-dir")
        .arg(spec.dir)
        .arg("--socket")
        .arg(spec.socket)
        .arg("--data-interface")
        .arg(underlay::DATA_IFACE)
        .arg("--bpf-dir")
        .arg(crate::record::bpf_dir(spec.dir))
        // The lab's registries run on the client, over plain HTTP.
        .arg("--insecure-registry")
        .arg(crate::images::lab_registry())
        .arg("--insecure-registry")
        .arg(crate::images::lab_auth_registry())
        .args(spec.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    enter_in_child(
        &mut command,
        Enter {
            netns: spec.netns.to_owned(),
            hostname: Some(spec.node.to_owned()),
            die_with_parent: !spec.persistent,
            new_session: spec.persistent,
        },
    );
    command.spawn().map_err(|source| LabError::Spawn {
        node: spec.node.to_owned(),
        binary: binary.to_owned(),
        source,
    })
}

/// SIGTERM, SIGKILL after `grace`, and reap.
pub(crate) fn terminate_child(child: &mut Child, grace: Duration) -> Result<(), LabError> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let gone = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)) | Err(_));
    if gone(child) {
        return Ok(());
    }
    // ESRCH: exited in between; try_wait below reaps it.
    let _already_gone = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone(child) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    // kill() fails only if the child was already reaped; wait() then
    // returns the cached status.
    let _already_reaped = child.kill();
    child
        .wait()
        .map(drop)
        .map_err(|_| LabError::Unkillable { pid: pid.as_raw() })
}

/// The last `lines` lines of a log file (a note if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// A command that runs `program` inside the named namespace `netns`, with
/// its own UTS namespace named `hostname`.
pub(crate) fn command_in(netns: &str, hostname: &str, program: &OsStr) -> Command {
    let mut command = Command::new(program);
    enter_in_child(
        &mut command,
        Enter {
            netns: netns.to_owned(),
            hostname: Some(hostname.to_owned()),
            die_with_parent: false,
            new_session: false,
        },
    );
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("shoal-lab-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write temp file");
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
        std::fs::remove_file(&path).expect("remove temp file");
    }
}
