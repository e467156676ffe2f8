//! Task namespaces: a fresh network namespace standing in for one task's
//! sandbox, removed when its [`TaskNs`] is dropped (panic or not).
//!
//! Names are `shoal-task-<pid>-<start>-<n>` (the creating process's pid and
//! start time), unique across concurrent test processes; the next
//! [`TaskNs::create`] removes those whose process is gone, so even a
//! SIGKILLed test leaves nothing behind for long. They never match the lab
//! member shape (`shoal-<lab>-{ul,client,nK}`), so no lab's sweep removes
//! them from under a running test.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::record::ProcId;
use crate::underlay::set_link_up;
use crate::{LabError, daemon, netns};

/// Prefix of every task namespace name.
pub const TASK_NETNS_PREFIX: &str = "shoal-task-";

/// A task's network namespace, with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct TaskNs {
    name: String,
}

impl TaskNs {
    /// Sweeps stale task namespaces, then creates a new one and brings its
    /// loopback up. Needs a tokio runtime (for netlink).
    pub async fn create() -> Result<TaskNs, LabError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        sweep_stale_tasks()?;
        let me = ProcId::current().ok_or_else(|| LabError::Io {
            path: "/proc/self/stat".into(),
            op: "read",
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let name = format!(
            "{TASK_NETNS_PREFIX}{}-{}-{}",
            me.pid,
            me.start,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        netns::create(&name)?;
        // From here on, a failure drops the guard, which deletes the namespace.
        let task = TaskNs { name };
        let handle = task.netlink()?;
        set_link_up(&handle, &task.name, "lo", true).await?;
        Ok(task)
    }

    /// The namespace's name (in `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        netns::netns_path(&self.name)
    }

    /// A netlink handle inside the namespace (see [`netns::netlink`]). Drop
    /// it before the namespace: an open socket keeps the namespace alive.
    pub fn netlink(&self) -> Result<rtnetlink::Handle, LabError> {
        netns::netlink(&self.name)
    }

    /// A command that runs `program` inside the namespace (hostname `task`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        daemon::command_in(&self.name, "task", program.as_ref())
    }
}

impl Drop for TaskNs {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.name) {
            eprintln!("shoal-lab: removing task namespace {}: {e}", self.name);
        }
    }
}

/// The creator of a task namespace, from its name.
fn creator(name: &str) -> Option<ProcId> {
    let mut fields = name.strip_prefix(TASK_NETNS_PREFIX)?.split('-');
    let pid = fields.next()?.parse().ok()?;
    let start = fields.next()?.parse().ok()?;
    fields.next()?.parse::<u32>().ok()?;
    fields.next().is_none().then_some(ProcId { pid, start })
}

/// Deletes the task namespaces whose creating process is gone, and returns
/// their names.
pub fn sweep_stale_tasks() -> Result<Vec<String>, LabError> {
    let mut swept = Vec::new();
    for name in netns::list()? {
        if creator(&name).is_some_and(|p| !p.alive()) {
            netns::delete(&name)?;
            swept.push(name);
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creators_are_read_from_task_names_only() {
        assert_eq!(
            creator("shoal-task-42-9001-3"),
            Some(ProcId {
                pid: 42,
                start: 9001
            })
        );
        for other in [
            "shoal-task-42-9001",
            "shoal-task-42-9001-3-x",
            "shoal-task-x-9001-3",
            "shoal-lab-1-n1",
            "task-42-9001-3",
        ] {
            assert_eq!(creator(other), None, "{other}");
        }
    }
}
