//! The thread that forks every task's init.
//!
//! One long-lived thread per [`Runtime`](crate::Runtime), for two reasons:
//! - a new PID namespace applies to the *children* of the thread that
//!   unshares it, and must not leak to threads that fork other things (a
//!   tokio blocking-pool thread is reused for anything);
//! - `PR_SET_PDEATHSIG` fires when the thread that forked the child exits,
//!   so the inits must be forked by a thread that lives exactly as long as
//!   the runtime: dropping the runtime (or the agent dying) kills its tasks.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::mpsc;

use nix::sched::{CloneFlags, setns, unshare};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::RuntimeError;
use crate::error::{ns_err, resource_err};
use crate::sandbox::{self, ChildPlan, Stage};

/// What forking one init produced.
pub(crate) struct Spawned {
    /// The init, or why it could not be started.
    pub child: io::Result<Child>,
    /// The set-up step or exec that failed, as the child reported it.
    pub failure: Option<(Stage, io::Error)>,
}

struct Request {
    plan: ChildPlan,
    /// Read end of the plan's report pipe.
    report: OwnedFd,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<Result<Spawned, RuntimeError>>,
}

#[derive(Debug)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    pub(crate) fn start() -> Result<Spawner, RuntimeError> {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("shoal-spawner".into())
            .spawn(move || serve(incoming))
            .map_err(resource_err("start the spawner thread"))?;
        Ok(Spawner { requests })
    }

    /// Forks the init for `plan` and waits until its task has executed the
    /// command (or failed to).
    pub(crate) async fn spawn(
        &self,
        plan: ChildPlan,
        report: OwnedFd,
        runtime: tokio::runtime::Handle,
    ) -> Result<Spawned, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            plan,
            report,
            runtime,
            reply,
        };
        self.requests
            .send(request)
            .map_err(|_| RuntimeError::SpawnerGone)?;
        answer.await.map_err(|_| RuntimeError::SpawnerGone)?
    }
}

fn serve(incoming: mpsc::Receiver<Request>) {
    // This thread's own PID namespace, to come back to before each fork.
    let own = File::open("/proc/thread-self/ns/pid");
    for request in incoming {
        let result = match &own {
            Ok(own) => spawn_one(own, request.plan, request.report, &request.runtime),
            Err(e) => Err(RuntimeError::Namespace {
                op: "open the runtime's PID namespace",
                source: io::Error::new(e.kind(), e.to_string()),
            }),
        };
        // The requester gave up (its `start` future was dropped): nobody
        // would ever stop this task, so kill it now; tokio reaps the init,
        // and the task's netns, veths and mounts go with it.
        if let Err(Ok(Spawned {
            child: Ok(mut init),
            ..
        })) = request.reply.send(result)
            && let Err(error) = init.start_kill()
        {
            tracing::warn!(%error, "killing a task whose start was abandoned");
        }
    }
}

fn spawn_one(
    own_pidns: &File,
    plan: ChildPlan,
    report: OwnedFd,
    runtime: &tokio::runtime::Handle,
) -> Result<Spawned, RuntimeError> {
    // unshare(CLONE_NEWPID) fails once this thread's children already get a
    // namespace other than its own, so first return to its own (a no-op the
    // first time), then ask for a fresh one for the next fork.
    setns(own_pidns, CloneFlags::CLONE_NEWPID)
        .map_err(ns_err("reset the spawner's PID namespace"))?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(ns_err("create the task's PID namespace"))?;

    // The program is never executed by std: the hook turns the child into
    // the init and does not return.
    let mut command = Command::new("shoal-init");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    sandbox::install(&mut command, plan);
    let child = {
        // tokio registers the child with the runtime's process driver.
        let _entered = runtime.enter();
        command.spawn()
    };
    // Closes this process's copies of the pipes' write ends (and the task's
    // netns descriptor), so the read below ends when the child's do.
    drop(command);

    let mut bytes = Vec::with_capacity(8);
    let read = File::from(report).read_to_end(&mut bytes);
    let failure = match read {
        Ok(_) => sandbox::decode_report(&bytes),
        // Not knowing whether the command runs, the start counts as failed:
        // the caller kills the init, which takes the task with it.
        Err(e) => Some((Stage::Exec, e)),
    };
    Ok(Spawned { child, failure })
}
