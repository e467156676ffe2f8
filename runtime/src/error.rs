//! The runtime's one error type.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::logs::LogParseError;

/// Everything the exec runtime can fail at. Each message names what failed
/// and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A field of a [`TaskSpec`](crate::TaskSpec) cannot be run as given.
    #[error("task {id}: {field} = {value}: {reason}")]
    InvalidSpec {
        id: String,
        field: &'static str,
        value: String,
        reason: String,
    },

    /// An attachment names a bridge that does not exist in the node's
    /// network namespace.
    #[error("bridge {bridge} not found in the node's network namespace: create the network first")]
    BridgeNotFound { bridge: String },

    /// An attachment names a device that is not a bridge.
    #[error("{bridge} is a {kind} device, not a bridge: attach tasks to the network's bridge")]
    NotABridge { bridge: String, kind: String },

    /// The host end of a task's veth already exists: the same task id is
    /// running on this node (veth names derive from the task id).
    #[error(
        "veth {veth} already exists in the node's network namespace: task {id} (or a task whose \
         id hashes the same) is already running here; stop it first"
    )]
    VethExists { veth: String, id: String },

    /// A netlink request failed.
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// Creating, entering or opening a namespace failed; the runtime needs
    /// root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("{op}: {source} (the exec runtime must run as root)")]
    Namespace {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The process ran out of something (descriptors, threads, memory).
    #[error("{op}: {source}")]
    Resource {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// An image's directory is missing.
    #[error("image directory {path} is not a directory: unpack the image first")]
    RootfsNotDir { path: PathBuf },

    /// A task with this id has a bundle on this node already.
    #[error(
        "task {id} already has a bundle at {path}: it is running here, or its remains were not \
         cleaned (Runtime::adopt cleans them)"
    )]
    TaskExists { id: String, path: PathBuf },

    /// The bundle's config.json could not be built.
    #[error("building the task's config.json: {source}")]
    Bundle {
        #[source]
        source: oci_spec::OciSpecError,
    },

    /// The seccomp profile cannot be used.
    #[error("{reason}")]
    Seccomp { reason: String },

    /// The shim binary was not found.
    #[error(
        "the task shim shoal-shim was not found (looked at {looked}): install it next to shoald \
         or set SHOAL_SHIM"
    )]
    ShimNotFound { looked: String },

    /// The OCI runtime could not create or start the container.
    #[error("task {id}: {message}")]
    Start { id: String, message: String },

    /// A runc command failed.
    #[error("task {id}: runc {op}: {message}")]
    Runc {
        id: String,
        op: &'static str,
        message: String,
    },

    /// A command could not be run inside a task (`runc exec`).
    #[error("task {id}: exec: {message}")]
    Exec { id: String, message: String },

    /// The caller's `before_exec` of [`Runtime::start_with`](crate::Runtime::start_with) failed.
    #[error("task {id}: preparing its namespace before the command starts: {source}")]
    BeforeExec {
        id: String,
        #[source]
        source: crate::BoxError,
    },

    /// `resolv_conf` does not name a file.
    #[error("resolv.conf {path} is not a file: write it before starting the task")]
    ResolvConfNotFile { path: PathBuf },

    /// Called outside a tokio runtime.
    #[error("no tokio runtime: call the exec runtime from inside one")]
    NoRuntime,

    /// Waiting for the task's shim failed.
    #[error("task {id}: waiting for its shim: {source}")]
    Wait {
        id: String,
        #[source]
        source: io::Error,
    },

    /// A line of a task's log file is not a log record.
    #[error("{path}:{line}: {source}")]
    LogRecord {
        path: PathBuf,
        line: usize,
        #[source]
        source: LogParseError,
    },
}

/// Maps an I/O error on `path` to [`RuntimeError::Io`].
pub(crate) fn io_err(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.into();
    move |source| RuntimeError::Io { path, op, source }
}

/// Maps a namespace operation's error to [`RuntimeError::Namespace`].
pub(crate) fn ns_err<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> RuntimeError {
    move |source| RuntimeError::Namespace {
        op,
        source: source.into(),
    }
}

/// Maps a resource error to [`RuntimeError::Resource`].
pub(crate) fn resource_err<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> RuntimeError {
    move |source| RuntimeError::Resource {
        op,
        source: source.into(),
    }
}

/// Maps a netlink error to [`RuntimeError::Netlink`].
pub(crate) fn netlink_err(what: String) -> impl FnOnce(rtnetlink::Error) -> RuntimeError {
    move |source| RuntimeError::Netlink { what, source }
}

/// The errno of a netlink error answer, if it is one.
pub(crate) fn netlink_errno(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(-message.raw_code())),
        _ => None,
    }
}
