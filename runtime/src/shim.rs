//! `shoal-shim`: one per task, outside the container, in its own session so
//! that it outlives shoald (live restore).
//!
//! `shoal-shim run --runc R --root D --bundle B --id ID --log L`:
//! 1. becomes a session leader and a child subreaper, so the container's
//!    init (forked by `runc create`, which then exits) is re-parented to it;
//! 2. `runc create` with the container's stdout and stderr as pipes it
//!    holds, copied into the CRI log `L` by two threads;
//! 3. `runc start`; reports `{"pid": N}` (or `{"error": "…"}`) as one line
//!    on its stdout, which the runtime reads;
//! 4. waits for the container's init, reads the cgroup's OOM-kill counter,
//!    writes `B/exit.json`, `runc delete`s and exits. The runtime waits for
//!    the shim's own exit (a pidfd), then reads `exit.json`.
//!
//! `shoal-shim init -- CMD…`: a minimal init for tasks asked with `init`:
//! runs CMD as its child, forwards signals to it, reaps every orphan, exits
//! with CMD's status (128 + signal when it was killed, as tini does).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2, setsid};
use serde::{Deserialize, Serialize};

use crate::Exit;
use crate::logs::{Stream, copy_stream};

/// How long the log copiers may take to reach the end of the output once
/// the container is gone: they end at once unless a process that inherited
/// the pipes is still alive somewhere.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// Files of a bundle directory.
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const SHIM_PID_FILE: &str = "shim.pid";
pub(crate) const CONTAINER_PID_FILE: &str = "container.pid";
pub(crate) const RUNC_LOG: &str = "runc.log";

/// What the shim reports on its stdout once the container runs (or not).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Report {
    Started { pid: u32 },
    Failed { error: String },
}

struct RunArgs {
    runc: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
    id: String,
    log: PathBuf,
}

/// The shim's entry point: `shoal-shim run …` or `shoal-shim init -- …`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => match parse_run(&args[1..]) {
            Ok(run_args) => run(&run_args),
            Err(e) => {
                eprintln!("shoal-shim: {e}");
                ExitCode::from(2)
            }
        },
        Some("init") => {
            let cmd: Vec<String> = args[1..]
                .iter()
                .skip_while(|a| *a == "--")
                .cloned()
                .collect();
            init(&cmd)
        }
        _ => {
            eprintln!(
                "usage: shoal-shim run --runc R --root D --bundle B --id ID --log L | init -- CMD…"
            );
            ExitCode::from(2)
        }
    }
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("missing {flag}"))
    };
    Ok(RunArgs {
        runc: get("--runc")?.into(),
        root: get("--root")?.into(),
        bundle: get("--bundle")?.into(),
        id: get("--id")?,
        log: get("--log")?.into(),
    })
}

fn report(report: &Report) {
    let mut line = serde_json::to_string(report).unwrap_or_default();
    line.push('\n');
    // Nobody reads it when the runtime gave up waiting: nothing to do then.
    if let Err(e) = io::stdout()
        .write_all(line.as_bytes())
        .and_then(|()| io::stdout().flush())
    {
        eprintln!("shoal-shim: reporting to the runtime: {e}");
    }
}

fn runc(args: &RunArgs) -> Command {
    let mut command = Command::new(&args.runc);
    command
        .arg("--root")
        .arg(&args.root)
        .arg("--log")
        .arg(args.bundle.join(RUNC_LOG))
        .arg("--log-format")
        .arg("json");
    command
}

/// The last error runc logged, else `fallback`.
fn runc_error(bundle: &Path, fallback: String) -> String {
    let Ok(log) = std::fs::read_to_string(bundle.join(RUNC_LOG)) else {
        return fallback;
    };
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_owned))
        .unwrap_or(fallback)
}

fn delete(args: &RunArgs) {
    match runc(args)
        .args(["delete", "--force", &args.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("shoal-shim: runc delete {}: {status}", args.id),
        Err(e) => eprintln!("shoal-shim: runc delete {}: {e}", args.id),
    }
}

fn fail(args: &RunArgs, error: String) -> ExitCode {
    delete(args);
    report(&Report::Failed { error });
    ExitCode::from(1)
}

fn run(args: &RunArgs) -> ExitCode {
    // Its own session: no signal for shoald's process group or terminal
    // reaches it. It fails only for a group leader, which the shim is not.
    if let Err(e) = setsid() {
        eprintln!("shoal-shim: setsid: {e}");
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(args, format!("becoming a child subreaper: {e}"));
    }
    let pid_file = args.bundle.join(SHIM_PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        return fail(args, format!("writing {}: {e}", pid_file.display()));
    }
    // Made 0600 by the runtime before the shim starts; 0600 here too, so no
    // path ever creates a log others can read.
    let log = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::logs::LOG_FILE_MODE)
        .open(&args.log)
    {
        Ok(log) => log,
        Err(e) => return fail(args, format!("opening the log {}: {e}", args.log.display())),
    };
    let pipes = pipe2(OFlag::O_CLOEXEC).and_then(|out| Ok((out, pipe2(OFlag::O_CLOEXEC)?)));
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(args, format!("creating the output pipes: {e}")),
    };
    // Room for bursts while a busy stream's copier waits out its
    // coalescing interval (logs::COALESCE); the default is 64 KiB.
    for pipe in [&out_r, &err_r] {
        let _best_effort = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    }
    let created = runc(args)
        .arg("create")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(args.bundle.join(CONTAINER_PID_FILE))
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status();
    // The write ends are the container's alone now (the Command is gone).
    let (done_tx, done_rx) = mpsc::channel();
    for (pipe, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        let log = match log.try_clone() {
            Ok(log) => log,
            Err(e) => return fail(args, format!("duplicating the log descriptor: {e}")),
        };
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let result = copy_stream(File::from(pipe), stream, &log);
            // The receiver is gone only once the shim stopped waiting.
            let _ignored = done.send(result);
        });
    }
    drop(done_tx);
    match created {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return fail(
                args,
                runc_error(&args.bundle, format!("runc create: {status}")),
            );
        }
        Err(e) => return fail(args, format!("running {}: {e}", args.runc.display())),
    }
    let started = runc(args)
        .args(["start", &args.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match started {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return fail(
                args,
                runc_error(&args.bundle, format!("runc start: {status}")),
            );
        }
        Err(e) => return fail(args, format!("running {}: {e}", args.runc.display())),
    }
    let pid_path = args.bundle.join(CONTAINER_PID_FILE);
    let pid = match std::fs::read_to_string(&pid_path).map(|p| p.trim().parse::<i32>()) {
        Ok(Ok(pid)) if pid > 0 => pid,
        other => return fail(args, format!("reading {}: {other:?}", pid_path.display())),
    };
    report(&Report::Started {
        pid: pid.unsigned_abs(),
    });

    let mut exit = wait_for(Pid::from_raw(pid));
    exit.oom_killed = oom_killed(&args.id);
    for _ in 0..2 {
        match done_rx.recv_timeout(LOG_DRAIN) {
            Ok(Ok(())) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Ok(Err(e)) => eprintln!("shoal-shim: writing the log: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "shoal-shim: output still open {LOG_DRAIN:?} after the task ended; log cut"
                );
                break;
            }
        }
    }
    if let Err(e) = write_exit(&args.bundle, &exit) {
        eprintln!("shoal-shim: writing the exit: {e}");
    }
    delete(args);
    ExitCode::SUCCESS
}

/// Waits for `pid` (our child once re-parented), reaping every other child.
fn wait_for(pid: Pid) -> Exit {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                return Exit {
                    code: Some(code),
                    signal: None,
                    oom_killed: false,
                };
            }
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                return Exit {
                    code: None,
                    signal: Some(signal as i32),
                    oom_killed: false,
                };
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                // Not our child after all (ECHILD): watch it until it is gone.
                while kill(pid, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Exit::default();
            }
        }
    }
}

/// Whether the kernel's OOM killer killed a process of the task's cgroup
/// (`/shoal/<id>`), on cgroup v2 or v1. Read before `runc delete` removes it.
fn oom_killed(id: &str) -> bool {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = match v2 {
        true => format!("/sys/fs/cgroup/shoal/{id}/memory.events"),
        false => format!("/sys/fs/cgroup/memory/shoal/{id}/memory.oom_control"),
    };
    std::fs::read_to_string(path).is_ok_and(|text| oom_count(&text) > 0)
}

/// The `oom_kill N` counter of `memory.events` or `memory.oom_control`.
pub(crate) fn oom_count(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

fn write_exit(bundle: &Path, exit: &Exit) -> io::Result<()> {
    let tmp = bundle.join("exit.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(exit)?)?;
    std::fs::rename(tmp, bundle.join(EXIT_FILE))
}

/// Reads the shim's one-line report from its stdout.
pub(crate) fn read_report(out: impl io::Read) -> Result<Report, String> {
    let mut line = String::new();
    io::BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| format!("reading the shim's report: {e}"))?;
    if line.is_empty() {
        return Err("the shim exited without reporting (see shim.log in the bundle)".into());
    }
    serde_json::from_str(&line).map_err(|e| format!("the shim's report {line:?}: {e}"))
}

/// The init: CMD as a child, signals forwarded, orphans reaped.
fn init(cmd: &[String]) -> ExitCode {
    let Some((program, rest)) = cmd.split_first() else {
        eprintln!("shoal-shim init: no command");
        return ExitCode::from(2);
    };
    let all = SigSet::all();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None) {
        eprintln!("shoal-shim init: blocking signals: {e}");
        return ExitCode::from(126);
    }
    let mut command = Command::new(program);
    command.args(rest);
    unblock_signals_in_child(&mut command);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("shoal-shim init: {program}: {e}");
            return ExitCode::from(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let child = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    loop {
        let signal = match all.wait() {
            Ok(signal) => signal,
            Err(_) => continue,
        };
        if signal != Signal::SIGCHLD {
            // ESRCH: the child is a zombie not reaped yet.
            let _gone = kill(child, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == child => {
                    return ExitCode::from(u8::try_from(code).unwrap_or(255));
                }
                Ok(WaitStatus::Signaled(p, signal, _)) if p == child => {
                    return ExitCode::from(u8::try_from(128 + signal as i32).unwrap_or(255));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The command must not inherit the init's blocked signals (std keeps the
/// mask across spawn).
#[allow(unsafe_code)]
fn unblock_signals_in_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec; sigprocmask is
    // async-signal-safe and the hook allocates nothing.
    unsafe {
        command.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_read_from_v1_and_v2_files() {
        assert_eq!(
            oom_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_count("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_count("oom 0\n"), 0);
    }

    #[test]
    fn reports_round_trip_as_one_line() {
        let line = serde_json::to_string(&Report::Started { pid: 42 }).expect("test");
        assert!(matches!(
            read_report(format!("{line}\n").as_bytes()),
            Ok(Report::Started { pid: 42 })
        ));
        assert!(read_report(&b""[..]).is_err());
    }
}
