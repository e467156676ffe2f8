//! What a lab leaves on disk under `/run/shoal-lab/<lab>/`, so that another
//! process (`cargo xtask lab …`, or the sweep after a SIGKILLed test) can
//! find it: `lab.json`, `owner` (absent for persistent labs) and, per node,
//! `nK/shoald.pid`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::{LabError, netns};

/// Root of all lab directories.
pub const RUN_DIR: &str = "/run/shoal-lab";
/// Where lab daemons pin their eBPF maps and links (bpffs), one directory
/// per node mirroring its state directory under [`RUN_DIR`].
pub const BPF_RUN_DIR: &str = "/sys/fs/bpf/shoal-lab";

/// The pin directory of the node whose state directory is `node_dir`.
pub(crate) fn bpf_dir(node_dir: &Path) -> PathBuf {
    let rel = node_dir.strip_prefix(RUN_DIR).unwrap_or(node_dir);
    Path::new(BPF_RUN_DIR).join(rel.strip_prefix("/").unwrap_or(rel))
}

/// File name of a lab's description.
pub(crate) const LAB_JSON: &str = "lab.json";
/// File name of a non-persistent lab's owner (`ProcId`).
pub(crate) const OWNER: &str = "owner";
/// File name, in a node directory, of its daemon's `ProcId`.
pub(crate) const PID_FILE: &str = "shoald.pid";
/// Prefix of directories that are still being filled (then renamed).
const TMP_PREFIX: &str = ".tmp-";

/// A lab's description, written once at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LabRecord {
    pub name: String,
    pub nodes: usize,
    pub managers: usize,
    pub client: bool,
    pub persistent: bool,
}

pub(crate) fn lab_dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> LabError {
    let path = path.to_owned();
    move |source| LabError::Io { path, op, source }
}

/// A process identified by pid and start time, so a recycled pid is not
/// mistaken for the process that was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// State letter and start time (in clock ticks since boot) of `pid`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of stat; `state` was field 3.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    pub fn of(pid: u32) -> Option<ProcId> {
        let pid = i32::try_from(pid).ok()?;
        proc_stat(pid).map(|(_, start)| ProcId { pid, start })
    }

    pub fn current() -> Option<ProcId> {
        ProcId::of(std::process::id())
    }

    /// Still running (a zombie counts as dead: it only awaits reaping).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start && state != 'Z')
    }

    fn parse(text: &str) -> Option<ProcId> {
        let mut it = text.split_whitespace();
        Some(ProcId {
            pid: it.next()?.parse().ok()?,
            start: it.next()?.parse().ok()?,
        })
    }

    pub fn read(path: &Path) -> Result<Option<ProcId>, LabError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(ProcId::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path, "read")(e)),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), LabError> {
        std::fs::write(path, format!("{} {}\n", self.pid, self.start))
            .map_err(io_err(path, "write"))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is dead.
    /// For processes that are not our children (we cannot reap them).
    pub fn terminate(&self, grace: Duration) -> Result<(), LabError> {
        for (signal, wait) in [(Signal::SIGTERM, grace), (Signal::SIGKILL, KILL_WAIT)] {
            if !self.alive() {
                return Ok(());
            }
            // ESRCH: it died between the check and the signal.
            let _already_gone = kill(Pid::from_raw(self.pid), signal);
            let deadline = Instant::now() + wait;
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        if self.alive() {
            return Err(LabError::Unkillable { pid: self.pid });
        }
        Ok(())
    }
}

/// Poll interval of every wait in the lab.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long a SIGKILLed process may take to disappear.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

impl LabRecord {
    pub fn read(name: &str) -> Result<LabRecord, LabError> {
        let path = lab_dir(name).join(LAB_JSON);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LabError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        serde_json::from_str(&text).map_err(|source| LabError::Record { path, source })
    }

    /// Creates the lab directory with `lab.json` and, unless persistent, the
    /// `owner` file, atomically: the directory is filled under a temporary
    /// name and renamed, so a sweep never sees a lab without its owner.
    pub fn create_dir(&self) -> Result<PathBuf, LabError> {
        let root = Path::new(RUN_DIR);
        std::fs::create_dir_all(root).map_err(io_err(root, "create"))?;
        let dir = lab_dir(&self.name);
        if dir.exists() {
            return Err(LabError::Exists {
                name: self.name.clone(),
            });
        }
        let me = ProcId::current().ok_or_else(|| {
            io_err(Path::new("/proc/self/stat"), "read")(io::ErrorKind::NotFound.into())
        })?;
        let tmp = root.join(format!("{TMP_PREFIX}{}-{}-{}", me.pid, me.start, self.name));
        std::fs::create_dir(&tmp).map_err(io_err(&tmp, "create"))?;
        let filled = (|| {
            let json = serde_json::to_string_pretty(self).map_err(|source| LabError::Record {
                path: tmp.join(LAB_JSON),
                source,
            })?;
            let path = tmp.join(LAB_JSON);
            std::fs::write(&path, json).map_err(io_err(&path, "write"))?;
            if !self.persistent {
                me.write(&tmp.join(OWNER))?;
            }
            // rename(2) of a directory fails if the target exists and is not
            // empty, which is how a concurrent creator of the same name loses.
            std::fs::rename(&tmp, &dir).map_err(|e| match e.kind() {
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                    LabError::Exists {
                        name: self.name.clone(),
                    }
                }
                _ => io_err(&dir, "rename into place")(e),
            })
        })();
        if filled.is_err() {
            let _ignored_cleanup = std::fs::remove_dir_all(&tmp);
        }
        filled.map(|()| dir)
    }
}

/// Whether `ns` is one of the namespaces of lab `lab`: `shoal-<lab>-ul`,
/// `shoal-<lab>-client` or `shoal-<lab>-n<digits>` (so that lab `a` never
/// claims lab `a-b`'s namespaces).
pub(crate) fn is_lab_netns(lab: &str, ns: &str) -> bool {
    ns.strip_prefix("shoal-")
        .and_then(|rest| rest.strip_prefix(lab))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(is_member_suffix)
}

fn is_member_suffix(suffix: &str) -> bool {
    suffix == "ul"
        || suffix == "client"
        || suffix
            .strip_prefix('n')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The lab a namespace name belongs to, if it has the shape of a lab member.
fn lab_of_netns(ns: &str) -> Option<&str> {
    let rest = ns.strip_prefix("shoal-")?;
    let (lab, suffix) = rest.rsplit_once('-')?;
    (is_member_suffix(suffix) && !lab.is_empty()).then_some(lab)
}

/// Deletes every namespace of lab `name`.
pub(crate) fn delete_lab_netns(name: &str) -> Result<(), LabError> {
    for ns in netns::list()? {
        if is_lab_netns(name, &ns) {
            netns::delete(&ns)?;
        }
    }
    Ok(())
}

/// Daemon `ProcId`s recorded in the node directories of lab `name`.
pub(crate) fn recorded_daemons(name: &str) -> Vec<ProcId> {
    let Ok(entries) = std::fs::read_dir(lab_dir(name)) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| ProcId::read(&entry.ok()?.path().join(PID_FILE)).ok()?)
        .collect()
}

/// Removes lab `name` from another process: kills its recorded daemons,
/// deletes its namespaces, removes its directory. Every step tolerates a
/// concurrent remover.
pub(crate) fn remove_lab(name: &str, grace: Duration) -> Result<(), LabError> {
    for daemon in recorded_daemons(name) {
        daemon.terminate(grace)?;
    }
    if let Ok(nodes) = std::fs::read_dir(lab_dir(name)) {
        for node in nodes.flatten() {
            crate::tasks::kill_node_tasks(&node.path());
        }
    }
    // Whatever else is mounted under the lab (never removed through a mount).
    crate::tasks::unmount_under(&lab_dir(name));
    delete_lab_netns(name)?;
    // Pinned maps and links would outlive the lab (and its namespaces).
    let pins = Path::new(BPF_RUN_DIR).join(name);
    match std::fs::remove_dir_all(&pins) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&pins, "remove")(e)),
        _ => {}
    }
    let dir = lab_dir(name);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&dir, "remove")(e)),
        _ => Ok(()),
    }
}

/// Removes what labs of dead processes left behind, and returns their names.
///
/// A non-persistent lab whose owner (pid + start time in `owner`) is no
/// longer running is removed: its daemons are killed, its namespaces
/// deleted, its directory removed. So are lab-shaped namespaces
/// (`shoal-<lab>-{ul,client,nK}`) whose lab directory is gone, and
/// half-created directories of dead processes. Persistent labs are left to
/// `cargo xtask lab down`. Runs on every lab creation.
pub fn sweep_stale() -> Result<Vec<String>, LabError> {
    let mut swept = Vec::new();
    let root = Path::new(RUN_DIR);
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries.filter_map(Result::ok).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(root, "list")(e)),
    };
    for entry in entries {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_dir {
            continue;
        }
        if let Some(tmp) = name.strip_prefix(TMP_PREFIX) {
            // .tmp-<pid>-<start>-<lab>: holds no namespace yet, only files.
            let creator = ProcId::parse(&tmp.replacen('-', " ", 2));
            if creator.is_some_and(|p| !p.alive()) {
                let _raced_with_another_sweep = std::fs::remove_dir_all(entry.path());
            }
            continue;
        }
        match ProcId::read(&entry.path().join(OWNER))? {
            Some(owner) if !owner.alive() => {
                remove_lab(&name, Duration::ZERO)?;
                swept.push(name);
            }
            // Alive owner, or persistent (no owner file).
            _ => {}
        }
    }
    // Namespaces are created after their lab directory and deleted before it,
    // so a lab-shaped namespace without a directory is an orphan.
    for ns in netns::list()? {
        if let Some(lab) = lab_of_netns(&ns)
            && !lab_dir(lab).exists()
        {
            netns::delete(&ns)?;
            if !swept.iter().any(|s| s == lab) {
                swept.push(lab.to_owned());
            }
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_netns_names_do_not_leak_across_labs() {
        assert!(is_lab_netns("a", "shoal-a-n1"));
        assert!(is_lab_netns("a", "shoal-a-n12"));
        assert!(is_lab_netns("a", "shoal-a-ul"));
        assert!(is_lab_netns("a", "shoal-a-client"));
        assert!(!is_lab_netns("a", "shoal-a-b-n1"));
        assert!(!is_lab_netns("a", "shoal-a-n"));
        assert!(!is_lab_netns("a", "shoal-a-x1"));
        assert!(!is_lab_netns("a", "shoal-ab-n1"));
        assert_eq!(lab_of_netns("shoal-a-b-n3"), Some("a-b"));
        assert_eq!(lab_of_netns("shoal-a-ul"), Some("a"));
        assert_eq!(lab_of_netns("shoal-task-1234"), None);
        assert_eq!(lab_of_netns("shoal--n1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = ProcId::current().expect("own /proc entry");
        assert!(me.alive());
        let recycled = ProcId {
            start: me.start + 1,
            ..me
        };
        assert!(!recycled.alive());
        assert_eq!(
            ProcId::parse("12 345\n"),
            Some(ProcId {
                pid: 12,
                start: 345
            })
        );
    }
}
