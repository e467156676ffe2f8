//! The lab's one error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while building, driving or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace operation (create, enter, delete) failed.
    #[error("network namespace {name}: {op} failed")]
    Netns {
        name: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A netlink request failed (`what` names the request and the device).
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// A file or directory of the lab could not be read or written.
    #[error("{path}: {op} failed")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `lab.json` is unreadable.
    #[error("{path}: invalid lab record")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The lab functions that speak netlink must run inside a tokio runtime.
    #[error("the lab must be driven from inside a tokio runtime (with IO and time enabled)")]
    NoRuntime,

    /// No `shoald` binary was found.
    #[error(
        "shoald binary not found (looked at {}); run `cargo build -p shoal-agent` \
         or set SHOALD_BIN",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DaemonBinary { searched: Vec<PathBuf> },

    /// A `shoal` command on a node failed where it should have succeeded.
    #[error("n{node}: shoal {args} failed ({status}): {stderr}")]
    ShoalFailed {
        node: usize,
        args: String,
        status: ExitStatus,
        stderr: String,
    },

    /// A `shoal` command on a node succeeded where it should have failed.
    #[error("n{node}: shoal {args} should have failed; it printed: {stdout}")]
    ShoalSucceeded {
        node: usize,
        args: String,
        stdout: String,
    },

    /// A condition polled by [`crate::eventually`] did not hold in time.
    #[error("{what}: not within {within:?} (last error: {last})")]
    Timeout {
        what: String,
        within: Duration,
        last: String,
    },

    /// `shoald` could not be started at all.
    #[error("node {node}: cannot start {binary}")]
    Spawn {
        node: String,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `shoald` exited before its socket accepted a connection.
    #[error("node {node}: shoald exited ({status}) before it was ready; log tail:\n{log_tail}")]
    Daemon {
        node: String,
        status: ExitStatus,
        log_tail: String,
    },

    /// `shoald` did not accept a connection on its socket in time.
    #[error("node {node}: shoald not ready after {waited:?}; log tail:\n{log_tail}")]
    DaemonTimeout {
        node: String,
        waited: Duration,
        log_tail: String,
    },

    /// A process (daemon) did not die after SIGKILL.
    #[error("process {pid} still alive after SIGKILL")]
    Unkillable { pid: i32 },

    /// A lab with this name already exists.
    #[error("lab {name} already exists")]
    Exists { name: String },

    /// No lab with this name exists.
    #[error("no lab named {name}")]
    NotFound { name: String },

    /// A node index or name that the lab does not have.
    #[error("lab {lab} has no node {node}")]
    NoSuchNode { lab: String, node: String },

    /// The builder was given values the lab cannot honour.
    #[error("invalid lab configuration: {reason}")]
    Config { reason: String },

    /// Synthetic nodes (see [`crate::synthetic`]) could not join or start.
    #[error("synthetic nodes in {netns}: {what}")]
    Synthetic { netns: String, what: String },
}
