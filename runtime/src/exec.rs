//! Running a command inside a running task, as `docker exec` does (and as
//! docker's healthchecks do): `runc exec` with a process taken from the
//! task's own `config.json` (its user, environment, working directory,
//! capabilities, `noNewPrivileges`, seccomp through the container), with
//! the arguments replaced and no terminal.
//!
//! Choices, and why:
//! - **The task's process, not a new one built from the spec**: what the
//!   command runs as is exactly what the task runs as, including what the
//!   image's config resolved (user, working directory, environment).
//! - **One pipe for stdout and stderr**: docker's probes capture both in
//!   one buffer; only the first [`MAX_OUTPUT`] bytes are kept, the rest is
//!   read and dropped so the command never blocks on a full pipe.
//! - **The timeout kills the command, not runc**: runc forwards signals
//!   but cannot forward SIGKILL; the command's pid (`--pid-file`) is
//!   killed directly, and runc exits with it. The pid cannot be reused
//!   meanwhile: runc is its parent and reaps it only when it has ended.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use tokio::io::AsyncReadExt;

use crate::RuntimeError;
use crate::task::Paths;

/// docker keeps the first 4096 bytes of a probe's output.
pub const MAX_OUTPUT: usize = 4096;

/// How long runc gets to exit once its command was killed, and the output
/// reader to drain what the command wrote, before they are cut off (a
/// background child of the command may hold the pipe open).
const AFTER_END: Duration = Duration::from_secs(2);

/// Distinct process files for concurrent execs in one task.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// The command's exit code (128 + the signal if a signal ended it, as
    /// runc reports it).
    Exited(i32),
    /// The command outlived the timeout and was killed.
    TimedOut,
}

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub end: ExecEnd,
    /// stdout and stderr as written, interleaved; at most [`MAX_OUTPUT`]
    /// bytes.
    pub output: Vec<u8>,
    /// The command wrote more than [`MAX_OUTPUT`] bytes.
    pub truncated: bool,
}

/// Runs commands in one task; cheap to clone, usable while another holder
/// waits for the task.
#[derive(Debug, Clone)]
pub struct Exec {
    id: String,
    paths: Arc<Paths>,
}

impl Exec {
    pub(crate) fn new(id: String, paths: Arc<Paths>) -> Exec {
        Exec { id, paths }
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `args` in the task, killed after `timeout`. An error means the
    /// command could not be run at all (the task is not running, runc
    /// failed); a command that ran and failed is an [`ExecEnd::Exited`].
    pub async fn run(
        &self,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let err = |message: String| RuntimeError::Exec {
            id: self.id.clone(),
            message,
        };
        if args.is_empty() || args[0].is_empty() {
            return Err(err("no command given".into()));
        }
        let bundle = self.paths.bundle(&self.id);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let files = ExecFiles {
            process: bundle.join(format!("exec-{}-{n}.json", std::process::id())),
            pid: bundle.join(format!("exec-{}-{n}.pid", std::process::id())),
        };
        let process = process_json(&bundle, args).map_err(err)?;
        std::fs::write(&files.process, process)
            .map_err(|e| err(format!("writing {}: {e}", files.process.display())))?;
        let (read, write) =
            nix::unistd::pipe().map_err(|e| err(format!("making the output pipe: {e}")))?;
        let write2: OwnedFd = write
            .try_clone()
            .map_err(|e| err(format!("duplicating the output pipe: {e}")))?;
        let mut command = tokio::process::Command::new(&self.paths.runc);
        command
            .arg("--root")
            .arg(self.paths.runc_root())
            .arg("exec")
            .arg("--process")
            .arg(&files.process)
            .arg("--pid-file")
            .arg(&files.pid)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| err(format!("running {}: {e}", self.paths.runc.display())))?;
        // The child has its copies; ours would keep the reader from EOF.
        drop(command);
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
            .map_err(|e| err(format!("reading the output pipe: {e}")))?;
        let collected = Arc::new(Mutex::new(Collected::default()));
        let mut collect = tokio::spawn(read_limited(reader, collected.clone()));

        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Some(status.map_err(|e| err(format!("waiting for runc: {e}")))?),
            Err(_) => {
                match read_pid(&files.pid) {
                    Some(pid) => {
                        if let Err(e) = kill(pid, Signal::SIGKILL) {
                            tracing::debug!(task = self.id, error = %e, "killing a timed-out exec");
                        }
                    }
                    // Not started yet: runc itself goes.
                    None => {
                        if let Err(e) = child.start_kill() {
                            tracing::debug!(task = self.id, error = %e, "killing runc exec");
                        }
                    }
                }
                if tokio::time::timeout(AFTER_END, child.wait()).await.is_err()
                    && let Err(e) = child.start_kill()
                {
                    tracing::debug!(task = self.id, error = %e, "killing runc exec");
                }
                None
            }
        };
        match tokio::time::timeout(AFTER_END, &mut collect).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(err(format!("reading the command's output: {e}"))),
            Ok(Err(e)) => return Err(err(format!("reading the command's output: {e}"))),
            // A background child of the command holds the pipe open: what
            // was read so far is the output.
            Err(_) => collect.abort(),
        }
        let Collected { output, truncated } = std::mem::take(&mut *lock(&collected));
        let started = files.pid.exists();
        drop(files);
        let end = match status {
            None => ExecEnd::TimedOut,
            Some(status) => match (status.code(), started) {
                (Some(code), true) => ExecEnd::Exited(code),
                // runc failed before the command ran: its message is the
                // output.
                (_, false) => {
                    return Err(err(String::from_utf8_lossy(&output).trim().to_owned()));
                }
                (None, true) => ExecEnd::Exited(-1),
            },
        };
        Ok(ExecOutput {
            end,
            output,
            truncated,
        })
    }
}

/// The exec's files in the bundle, removed when dropped.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for path in [&self.process, &self.pid] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "removing an exec file")
                }
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

/// The task's process with `args` and no terminal, as runc's `--process`
/// JSON.
pub(crate) fn process_json(bundle: &Path, args: &[String]) -> Result<Vec<u8>, String> {
    let path = bundle.join("config.json");
    let spec = Spec::load(&path).map_err(|e| {
        format!(
            "reading {}: {e} (is the task running on this node?)",
            path.display()
        )
    })?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| format!("{} has no process", path.display()))?;
    process.set_args(Some(args.to_vec()));
    process.set_terminal(Some(false));
    process.set_console_size(None);
    serde_json::to_vec(&process).map_err(|e| format!("writing the exec's process: {e}"))
}

/// What the reader has kept so far.
#[derive(Debug, Default)]
struct Collected {
    output: Vec<u8>,
    truncated: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads to EOF into `into`, keeping the first [`MAX_OUTPUT`] bytes.
async fn read_limited(
    mut reader: tokio::net::unix::pipe::Receiver,
    into: Arc<Mutex<Collected>>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut c = lock(&into);
        let room = MAX_OUTPUT - c.output.len();
        c.output.extend_from_slice(&buf[..n.min(room)]);
        c.truncated |= n > room;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_runs_as_the_task_with_new_args_and_no_terminal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = Spec::default();
        let mut process = spec.process().clone().expect("default process");
        process.set_terminal(Some(true));
        process.set_env(Some(vec!["A=1".into()]));
        process.set_cwd("/srv".into());
        process.set_no_new_privileges(Some(true));
        spec.set_process(Some(process));
        spec.save(dir.path().join("config.json")).expect("save");
        let json = process_json(dir.path(), &["true".into()]).expect("process");
        let p: oci_spec::runtime::Process = serde_json::from_slice(&json).expect("parse");
        assert_eq!(p.args().as_deref(), Some(&["true".to_owned()][..]));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.env().as_deref(), Some(&["A=1".to_owned()][..]));
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!(p.no_new_privileges(), Some(true));
        let missing = process_json(&dir.path().join("gone"), &["true".into()]);
        assert!(missing.is_err_and(|e| e.contains("is the task running")));
    }

    #[tokio::test]
    async fn output_beyond_the_limit_is_read_and_dropped() {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read).expect("receiver");
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::File::from(write);
            std::io::Write::write_all(&mut file, &vec![b'x'; 3 * MAX_OUTPUT]).expect("write");
        });
        let collected = Arc::new(Mutex::new(Collected::default()));
        read_limited(reader, collected.clone()).await.expect("read");
        writer.join().expect("writer");
        let c = lock(&collected);
        assert_eq!(c.output.len(), MAX_OUTPUT);
        assert!(c.truncated);
    }
}
