//! The crate's error type.

use std::io;
use std::net::SocketAddr;

/// What setting up or serving the resolver can fail at.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Opening or entering a task's network namespace failed (needs root:
    /// CAP_SYS_ADMIN).
    #[error("{op} the network namespace {netns}: {source}")]
    Netns {
        netns: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// Binding a socket inside the namespace failed. EADDRNOTAVAIL: `lo` is
    /// down there; EADDRINUSE: something in the task already serves port 53.
    #[error("bind {proto} {addr} in {netns}: {source}")]
    Bind {
        netns: String,
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// Handing a socket to tokio failed.
    #[error("{op}: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// A serve call was made outside a tokio runtime.
    #[error("the resolver serves on a tokio runtime: call it from within one")]
    NoRuntime,
}
