//! The VM lab's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building the VM image or driving a
/// VM lab.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Bad settings (a flag or builder value); `reason` names it and the fix.
    #[error("{reason}")]
    Config { reason: String },

    /// A file or directory could not be read or written.
    #[error("{path}: {op} failed")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An external tool (debootstrap, qemu, qemu-img, ssh-keygen, …) could
    /// not be started or failed; `output` is the end of what it printed.
    #[error("{tool} failed ({status}){}", tail_of(output))]
    Tool {
        tool: String,
        status: String,
        output: String,
    },

    /// The machine lacks something the lab needs.
    #[error("{what} is missing: {fix}")]
    Missing { what: String, fix: String },

    /// The network-namespace helpers the VM lab shares with the netns lab.
    #[error(transparent)]
    Lab(#[from] shoal_lab::LabError),

    /// A netlink request failed (`what` names the request and the device).
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// No VM lab of that name exists.
    #[error("no VM lab {name:?} (start one with `cargo xtask vm up`)")]
    NoSuchLab { name: String },

    /// The lab has no such node.
    #[error("VM lab {lab} has no node {node} (it has n1..n{nodes})")]
    NoSuchNode {
        lab: String,
        node: String,
        nodes: usize,
    },

    /// A VM's qemu exited while we waited for it.
    #[error("{node}: qemu exited before the VM was ready{}", tail_of(console_tail))]
    VmExited { node: String, console_tail: String },

    /// A VM did not get ready in time.
    #[error("{node}: not {what} after {waited:?}{}", tail_of(detail))]
    Timeout {
        node: String,
        what: &'static str,
        waited: Duration,
        detail: String,
    },

    /// vagrant/provision.sh failed inside a VM.
    #[error("{node}: vagrant/provision.sh {status}{}", tail_of(log_tail))]
    Provision {
        node: String,
        status: String,
        log_tail: String,
    },
}

fn tail_of(text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", text.trim_end())
    }
}

/// An `Io` error maker for `map_err`.
pub(crate) fn io_err(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.into();
    move |source| VmError::Io { path, op, source }
}
