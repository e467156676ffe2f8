//! Acting inside another network namespace without moving any thread but a
//! dedicated one, and small kernel helpers several crates share.
//!
//! `setns` moves only the calling thread, and a socket belongs for life to
//! the namespace of the thread that created it, wherever it is used later.
//! So the work is done on a fresh std thread that joins the namespace and
//! ends there: no tokio worker ever changes namespace. (Entering a namespace
//! in a child before exec, `pre_exec`, is another matter and lives with the
//! code that spawns.)

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

pub mod bpffs;
#[cfg(feature = "netlink")]
pub mod link;

/// What entering a namespace can fail at.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `setns` refused (no CAP_SYS_ADMIN, or not a network namespace).
    #[error("enter network namespace: {source}")]
    Enter {
        #[source]
        source: Errno,
    },
    /// The worker thread could not be started or vanished.
    #[error("thread for the network namespace: {source}")]
    Thread {
        #[source]
        source: io::Error,
    },
    /// No tokio runtime to register a socket with.
    #[error("no tokio runtime: call from inside one")]
    NoRuntime,
    /// The netlink socket could not be opened inside the namespace.
    #[error("open a netlink socket: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
}

impl From<NetnsError> for io::Error {
    /// The underlying OS error, for callers whose errors carry an
    /// `io::Error`.
    fn from(error: NetnsError) -> io::Error {
        match error {
            NetnsError::Open { source, .. }
            | NetnsError::Thread { source }
            | NetnsError::Socket { source } => source,
            NetnsError::Enter { source } => source.into(),
            NetnsError::NoRuntime => io::Error::other(error),
        }
    }
}

/// Opens the namespace file at `path` (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`).
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })
}

/// Runs `f` on a fresh thread that has entered the namespace `netns`, and
/// returns its result. A panic in `f` is resumed on the caller.
pub fn run_in<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { source })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// As [`run_in`], for the namespace at `path`.
pub fn run_in_path<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    run_in(open(path)?.as_fd(), f)
}

/// As [`run_in_path`], from async code: the thread is not joined but
/// awaited, so no tokio worker blocks while `f` runs (a connect with a
/// timeout, say).
pub async fn spawn_in<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".to_owned())
        .spawn(move || {
            // The receiver is gone only if the caller was cancelled.
            let _cancelled = tx.send(run_in_path(&path, f));
        })
        .map_err(|source| NetnsError::Thread { source })?;
    rx.await.map_err(|_| NetnsError::Thread {
        source: io::Error::other("the namespace thread panicked"),
    })?
}

/// A netlink handle whose socket lives in the namespace `netns`. Its
/// connection runs as a task on `runtime`, and ends when the last clone of
/// the handle is dropped.
#[cfg(feature = "netlink")]
pub fn netlink_in(
    netns: BorrowedFd<'_>,
    runtime: &tokio::runtime::Handle,
) -> Result<rtnetlink::Handle, NetnsError> {
    let (connection, handle, _messages) = run_in(netns, || {
        // Registers the socket with the runtime's reactor.
        let _entered = runtime.enter();
        rtnetlink::new_connection()
    })?
    .map_err(|source| NetnsError::Socket { source })?;
    runtime.spawn(connection);
    Ok(handle)
}

/// As [`netlink_in`], on the current tokio runtime.
#[cfg(feature = "netlink")]
pub fn netlink(netns: BorrowedFd<'_>) -> Result<rtnetlink::Handle, NetnsError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetnsError::NoRuntime)?;
    netlink_in(netns, &runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_names_its_path() {
        let e = run_in_path(Path::new("/nonexistent/netns"), || ()).err();
        assert!(
            matches!(&e, Some(NetnsError::Open { path, .. }) if path == Path::new("/nonexistent/netns")),
            "{e:?}"
        );
    }

    #[test]
    fn runs_in_its_own_namespace() {
        // Entering the namespace one is already in needs CAP_SYS_ADMIN only.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tid = run_in_path(Path::new("/proc/self/ns/net"), nix::unistd::gettid);
        assert!(matches!(tid, Ok(t) if t != nix::unistd::gettid()));
    }
}
