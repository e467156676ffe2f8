//! Sockets made inside a task's network namespace.
//!
//! `setns` moves only the calling thread, and a socket belongs for life to
//! the namespace of the thread that created it, wherever it is used later.
//! So each socket is made on a throwaway std thread that joins the
//! namespace and ends there; no tokio worker ever changes namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::DnsError;

/// Runs `make` on a fresh thread inside the namespace `netns`.
fn in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    name: &str,
    make: impl FnOnce() -> Result<T, DnsError> + Send,
) -> Result<T, DnsError> {
    shoal_netns::run_in(netns, make).map_err(|e| DnsError::Netns {
        netns: name.to_owned(),
        op: "enter",
        source: e.into(),
    })?
}

fn open(netns: &Path) -> Result<File, DnsError> {
    shoal_netns::open(netns).map_err(|e| DnsError::Netns {
        netns: netns.display().to_string(),
        op: "open",
        source: e.into(),
    })
}

/// `bind(addr)` on a fresh thread inside `netns`.
fn bind_in<T: Send>(
    netns: BorrowedFd<'_>,
    name: &str,
    proto: &'static str,
    addr: SocketAddrV4,
    bind: fn(SocketAddrV4) -> io::Result<T>,
) -> Result<T, DnsError> {
    in_netns(netns, name, || {
        bind(addr).map_err(|source| DnsError::Bind {
            netns: name.to_owned(),
            proto,
            addr: SocketAddr::V4(addr),
            source,
        })
    })
}

/// A UDP socket bound to `addr` inside the network namespace at `netns`
/// (`/proc/<task pid>/ns/net`, or a `/run/netns/<name>` bind mount).
pub fn bind_in_netns(netns: &Path, addr: SocketAddrV4) -> Result<UdpSocket, DnsError> {
    bind_in_netns_fd(open(netns)?.as_fd(), &netns.display().to_string(), addr)
}

/// As [`bind_in_netns`], for an open namespace; `name` only labels errors.
pub fn bind_in_netns_fd(
    netns: BorrowedFd<'_>,
    name: &str,
    addr: SocketAddrV4,
) -> Result<UdpSocket, DnsError> {
    bind_in(netns, name, "udp", addr, UdpSocket::bind)
}

/// A TCP listener on `addr` inside the network namespace at `netns`.
pub fn listen_in_netns(netns: &Path, addr: SocketAddrV4) -> Result<TcpListener, DnsError> {
    listen_in_netns_fd(open(netns)?.as_fd(), &netns.display().to_string(), addr)
}

/// As [`listen_in_netns`], for an open namespace.
pub fn listen_in_netns_fd(
    netns: BorrowedFd<'_>,
    name: &str,
    addr: SocketAddrV4,
) -> Result<TcpListener, DnsError> {
    bind_in(netns, name, "tcp", addr, TcpListener::bind)
}
