//! [`Runtime`] starts tasks; [`RunningTask`] waits for, signals, stops and
//! cleans up one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, pipe2};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::error::{io_err, ns_err, resource_err};
use crate::logs::{self, Stream};
use crate::net::{self, HostVeth};
use crate::sandbox::{self, ChildPlan, Stage};
use crate::spawner::{Spawned, Spawner};
use crate::{BoxError, RuntimeError, TaskSpec};

/// How long the log copiers may take to reach the end of the task's output
/// once its last process is gone. They finish at once unless a descriptor
/// of the pipes leaked somewhere; then the task's end must not hang on it.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// Starts tasks in the network namespace it was created in.
///
/// Dropping the runtime kills every task it started (their inits die with
/// its spawner thread), so it must live as long as they should.
#[derive(Debug)]
pub struct Runtime {
    node_netns: Arc<File>,
    spawner: Spawner,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, if the task exited.
    pub code: Option<i32>,
    /// The signal that killed the task, if one did.
    pub signal: Option<i32>,
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

    /// From the init's status message if it sent one, else from the init's
    /// own status (it was killed: SIGKILL by [`RunningTask::stop`] or a
    /// drop).
    fn from_init(message: &[u8], init: ExitStatus) -> Exit {
        match sandbox::decode_status(message) {
            Some((code, signal)) => Exit { code, signal },
            None => Exit {
                code: init.code(),
                signal: init.signal(),
            },
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal.map(Signal::try_from)) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(Ok(signal))) => write!(f, "killed by {signal}"),
            (None, Some(Err(_))) => write!(f, "killed by signal {}", self.signal.unwrap_or(0)),
            (None, None) => f.write_str("unknown exit"),
        }
    }
}

/// A task's interface on one network, as made.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A started task. Wait for it ([`wait`](Self::wait) or
/// [`stop`](Self::stop)) to collect its exit and remove its veths at once;
/// dropping it unwaited kills it, and the kernel removes the rest.
#[derive(Debug)]
pub struct RunningTask {
    id: String,
    pid: u32,
    interfaces: Vec<TaskInterface>,
    log: PathBuf,
    init: Child,
    /// Read end of the init's status pipe.
    status: File,
    copiers: Vec<JoinHandle<io::Result<()>>>,
    node_netns: Arc<File>,
    veths: Vec<HostVeth>,
    exit: Option<Exit>,
    unplugged: bool,
}

/// What [`Runtime::launch`] hands back.
struct Launched {
    init: Child,
    status: File,
    macs: Vec<[u8; 6]>,
    copiers: Vec<JoinHandle<io::Result<()>>>,
}

fn start_copiers(init: &mut Child, log: &Arc<File>) -> Vec<JoinHandle<io::Result<()>>> {
    let mut copiers = Vec::with_capacity(2);
    if let Some(out) = init.stdout.take() {
        copiers.push(tokio::spawn(logs::copy_stream(
            out,
            Stream::Stdout,
            log.clone(),
        )));
    }
    if let Some(err) = init.stderr.take() {
        copiers.push(tokio::spawn(logs::copy_stream(
            err,
            Stream::Stderr,
            log.clone(),
        )));
    }
    copiers
}

async fn drain(id: &str, copiers: Vec<JoinHandle<io::Result<()>>>) {
    for mut copier in copiers {
        match tokio::time::timeout(LOG_DRAIN, &mut copier).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(task = id, %error, "writing the task's log"),
            Ok(Err(error)) => tracing::warn!(task = id, %error, "the task's log copier failed"),
            Err(_) => {
                tracing::warn!(
                    task = id,
                    "the task's output was still open {LOG_DRAIN:?} after it ended; log cut"
                );
                copier.abort();
            }
        }
    }
}

/// Reads the init's status message, if it wrote one. Non-blocking: an init
/// killed before writing leaves the pipe empty.
fn read_status(mut pipe: &File) -> Vec<u8> {
    let mut message = [0u8; 8];
    let mut read = 0;
    while read < message.len() {
        match pipe.read(&mut message[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // WouldBlock: nothing was written
        }
    }
    message[..read].to_vec()
}

fn start_error(spec: &TaskSpec, stage: Stage, source: io::Error) -> RuntimeError {
    match stage {
        Stage::Exec => RuntimeError::Exec {
            id: spec.id.clone(),
            command: spec.command.join(" "),
            source,
        },
        stage => RuntimeError::Setup {
            id: spec.id.clone(),
            stage,
            source,
        },
    }
}

impl Runtime {
    /// A runtime for the calling thread's network namespace (the node's):
    /// bridges are looked up and veths made there.
    pub fn new() -> Result<Runtime, RuntimeError> {
        let node_netns =
            File::open(net::THREAD_NETNS).map_err(ns_err("open the node's network namespace"))?;
        Ok(Runtime {
            node_netns: Arc::new(node_netns),
            spawner: Spawner::start()?,
        })
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
    /// start.
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
        if let Some(root) = &spec.rootfs
            && !root.is_dir()
        {
            return Err(RuntimeError::RootfsNotDir { path: root.clone() });
        }
        if let Some(conf) = &spec.resolv_conf
            && !conf.is_file()
        {
            return Err(RuntimeError::ResolvConfNotFile { path: conf.clone() });
        }
        std::fs::create_dir_all(&spec.log_dir).map_err(io_err(&spec.log_dir, "create"))?;
        let log_path = logs::log_path(&spec.log_dir, &spec.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path, "open"))?;
        let node = net::netlink_in(&self.node_netns, &runtime)?;

        let mut veths = Vec::new();
        let launched = self
            .launch(
                spec,
                &runtime,
                &node,
                &mut veths,
                Arc::new(log),
                before_exec,
            )
            .await;
        let launched = match launched {
            Ok(launched) => launched,
            Err(e) => {
                // The namespace is gone with its last descriptor, which takes
                // the veths along; deleting them here just does it now.
                if let Err(cleanup) = net::unplug(&node, &veths).await {
                    tracing::warn!(task = spec.id, error = %cleanup, "removing veths of a failed start");
                }
                return Err(e);
            }
        };
        let interfaces = spec
            .attachments
            .iter()
            .zip(&veths)
            .zip(launched.macs)
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
        Ok(RunningTask {
            id: spec.id.clone(),
            // A child not yet waited for always has its pid.
            pid: launched.init.id().unwrap_or(0),
            interfaces,
            log: log_path,
            init: launched.init,
            status: launched.status,
            copiers: launched.copiers,
            node_netns: self.node_netns.clone(),
            veths,
            exit: None,
            unplugged: false,
        })
    }

    async fn launch(
        &self,
        spec: &TaskSpec,
        runtime: &tokio::runtime::Handle,
        node: &rtnetlink::Handle,
        veths: &mut Vec<HostVeth>,
        log: Arc<File>,
        before_exec: impl FnOnce(BorrowedFd<'_>) -> Result<(), BoxError>,
    ) -> Result<Launched, RuntimeError> {
        let (task_netns, task) = net::new_netns(runtime)?;
        for (i, attachment) in spec.attachments.iter().enumerate() {
            veths.push(net::plug(node, &task_netns, spec, i, attachment).await?);
        }
        let macs = net::configure_task(&task, &spec.id, &spec.attachments).await?;
        // Its socket would keep the namespace alive after the task.
        drop(task);
        before_exec(task_netns.as_fd()).map_err(|source| RuntimeError::BeforeExec {
            id: spec.id.clone(),
            source,
        })?;

        let (status, status_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(resource_err("create the task's status pipe"))?;
        let (report, report_w) =
            pipe2(OFlag::O_CLOEXEC).map_err(resource_err("create the task's report pipe"))?;
        let plan = ChildPlan::new(spec, task_netns.into(), status_w, report_w)?;
        let Spawned { child, failure } = self.spawner.spawn(plan, report, runtime.clone()).await?;
        let mut init = match child {
            Ok(init) => init,
            Err(source) => {
                return Err(match failure {
                    Some((stage, source)) => start_error(spec, stage, source),
                    None => RuntimeError::Spawn {
                        id: spec.id.clone(),
                        source,
                    },
                });
            }
        };
        let copiers = start_copiers(&mut init, &log);
        if let Some((stage, source)) = failure {
            // The init exits by itself after a failed exec; the kill covers
            // a failure to read the report. Reap it, keep what it wrote.
            if let Err(error) = init.start_kill() {
                tracing::debug!(task = spec.id, %error, "killing a failed task's init");
            }
            let reaped = init.wait().await;
            drain(&spec.id, copiers).await;
            reaped.map_err(|source| RuntimeError::Wait {
                id: spec.id.clone(),
                source,
            })?;
            return Err(start_error(spec, stage, source));
        }
        Ok(Launched {
            init,
            status: File::from(status),
            macs,
            copiers,
        })
    }
}

impl RunningTask {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Pid of the task's init (PID 1 of its namespace) in the node's PID
    /// namespace: `nsenter -t <pid> -a` enters the task.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The task's interfaces, one per attachment, in order.
    pub fn interfaces(&self) -> &[TaskInterface] {
        &self.interfaces
    }

    /// The task's log file (see [`read_logs`](crate::read_logs)).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// How the task ended, if that is known yet.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Sends `signal` to the task: SIGKILL to its init, which ends every
    /// process of the task at once; any other signal is forwarded by the
    /// init to the command's process (SIGSTOP would stop only the init: use
    /// SIGTSTP). Nothing happens once the task has been waited for.
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        // The init is our unreaped child until `wait`, so its pid cannot
        // have been reused.
        let Some(pid) = self.init.id() else {
            return Ok(());
        };
        let Ok(raw) = i32::try_from(pid) else {
            return Ok(());
        };
        match kill(Pid::from_raw(raw), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(RuntimeError::Signal {
                id: self.id.clone(),
                pid,
                signal,
                source,
            }),
        }
    }

    /// Waits for the task to end, then removes its veths. Idempotent: once
    /// the task has ended it returns the same exit (and retries a cleanup
    /// that failed).
    pub async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        let exit = match self.exit {
            Some(exit) => exit,
            None => {
                let status = self
                    .init
                    .wait()
                    .await
                    .map_err(|source| RuntimeError::Wait {
                        id: self.id.clone(),
                        source,
                    })?;
                let exit = Exit::from_init(&read_status(&self.status), status);
                drain(&self.id, std::mem::take(&mut self.copiers)).await;
                self.exit = Some(exit);
                exit
            }
        };
        if !self.unplugged {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoRuntime)?;
            let node = net::netlink_in(&self.node_netns, &runtime)?;
            net::unplug(&node, &self.veths).await?;
            self.unplugged = true;
        }
        Ok(exit)
    }

    /// Stops the task: SIGTERM, and SIGKILL if it has not ended after
    /// `grace`; then as [`wait`](Self::wait).
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit, RuntimeError> {
        if self.exit.is_none() {
            self.signal(Signal::SIGTERM)?;
            if tokio::time::timeout(grace, self.init.wait()).await.is_err() {
                self.signal(Signal::SIGKILL)?;
            }
        }
        self.wait().await
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        // The last resort. The kernel kills a PID namespace with its init,
        // the network namespace goes with its last process and takes the
        // veths with it, the mounts go with the mount namespace; tokio reaps
        // the init in the background and the copiers end with the output.
        if let Err(error) = self.init.start_kill() {
            tracing::warn!(task = self.id, %error, "killing a dropped task");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_message_wins_over_its_own_status() {
        let killed = ExitStatus::from_raw(9);
        let exited_143 = ExitStatus::from_raw(143 << 8);
        let signaled = [2u32.to_ne_bytes(), 15i32.to_ne_bytes()].concat();
        assert_eq!(
            Exit::from_init(&signaled, exited_143),
            Exit {
                code: None,
                signal: Some(15)
            }
        );
        assert_eq!(
            Exit::from_init(&[], killed),
            Exit {
                code: None,
                signal: Some(9)
            }
        );
        assert_eq!(
            Exit::from_init(&[], exited_143),
            Exit {
                code: Some(143),
                signal: None
            }
        );
    }

    #[test]
    fn exits_read_as_a_shell_would_show_them() {
        let killed = Exit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(killed.shell_code(), 137);
        assert_eq!(killed.to_string(), "killed by SIGKILL");
        let three = Exit {
            code: Some(3),
            signal: None,
        };
        assert_eq!(three.shell_code(), 3);
        assert!(!three.success());
        assert_eq!(three.to_string(), "exit code 3");
    }
}
