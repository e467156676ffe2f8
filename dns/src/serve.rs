//! Serving a [`Resolver`] on sockets: one UDP socket and one TCP listener
//! per task, each told which networks its task is on.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::answer::Transport;
use crate::forward::{read_framed, write_framed};
use crate::netns::{bind_in_netns_fd, listen_in_netns_fd};
use crate::{DnsError, EMBEDDED_DNS_ADDR, Resolver};

/// Queries of one socket being answered at once; more are dropped (the
/// client retries). Bounds what a task flooding its resolver can cost.
pub const MAX_IN_FLIGHT: usize = 128;
/// TCP connections of one task served at once.
pub const MAX_TCP_CONNECTIONS: usize = 16;
/// A TCP connection with no query for this long is closed (RFC 7766 §6.2.3
/// suggests seconds).
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Pause after a socket error that is not one query's: such errors (EMFILE,
/// ENOBUFS) last a while, and retrying at once would spin (mini-redis backs
/// off its accept loop for the same reason).
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

type Networks = Arc<[String]>;

fn runtime() -> Result<tokio::runtime::Handle, DnsError> {
    tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)
}

fn socket_err(op: &'static str) -> impl FnOnce(io::Error) -> DnsError {
    move |source| DnsError::Socket { op, source }
}

/// Errors on a UDP socket that belong to one earlier datagram (an ICMP
/// error for a reply), not to the socket.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Resolver {
    /// Answers queries on `socket` for a task on `networks` (network ids,
    /// in attachment order), until the handle is aborted.
    pub fn serve_udp(
        &self,
        socket: std::net::UdpSocket,
        networks: Vec<String>,
    ) -> Result<JoinHandle<()>, DnsError> {
        let runtime = runtime()?;
        socket
            .set_nonblocking(true)
            .map_err(socket_err("make the UDP socket non-blocking"))?;
        let _entered = runtime.enter();
        let socket = tokio::net::UdpSocket::from_std(socket)
            .map_err(socket_err("register the UDP socket with tokio"))?;
        Ok(runtime.spawn(serve_udp(self.clone(), Arc::new(socket), networks.into())))
    }

    /// Answers TCP queries on `listener` for a task on `networks`.
    pub fn serve_tcp(
        &self,
        listener: std::net::TcpListener,
        networks: Vec<String>,
    ) -> Result<JoinHandle<()>, DnsError> {
        let runtime = runtime()?;
        listener
            .set_nonblocking(true)
            .map_err(socket_err("make the TCP listener non-blocking"))?;
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(socket_err("register the TCP listener with tokio"))?;
        Ok(runtime.spawn(serve_tcp(self.clone(), listener, networks.into())))
    }

    /// Serves 127.0.0.11:53 (UDP and TCP) inside the task's network
    /// namespace at `netns` (`/proc/<init pid>/ns/net`), for a task on
    /// `networks`. Serving stops when the returned value is dropped.
    pub fn serve_task(&self, netns: &Path, networks: Vec<String>) -> Result<TaskDns, DnsError> {
        let file = std::fs::File::open(netns).map_err(|source| DnsError::Netns {
            netns: netns.display().to_string(),
            op: "open",
            source,
        })?;
        self.serve_task_fd(
            std::os::fd::AsFd::as_fd(&file),
            &netns.display().to_string(),
            networks,
        )
    }

    /// As [`serve_task`](Self::serve_task), for an open namespace; `name`
    /// only labels errors.
    pub fn serve_task_fd(
        &self,
        netns: BorrowedFd<'_>,
        name: &str,
        networks: Vec<String>,
    ) -> Result<TaskDns, DnsError> {
        self.serve_task_at(netns, name, EMBEDDED_DNS_ADDR, networks)
    }

    /// As [`serve_task_fd`](Self::serve_task_fd), on `addr` (tests use
    /// another port).
    pub fn serve_task_at(
        &self,
        netns: BorrowedFd<'_>,
        name: &str,
        addr: SocketAddrV4,
        networks: Vec<String>,
    ) -> Result<TaskDns, DnsError> {
        let udp = bind_in_netns_fd(netns, name, addr)?;
        let tcp = listen_in_netns_fd(netns, name, addr)?;
        let udp = self.serve_udp(udp, networks.clone())?;
        // Built before the TCP side can fail, so a failure aborts the UDP
        // side on the way out.
        let mut served = TaskDns { handles: vec![udp] };
        served.handles.push(self.serve_tcp(tcp, networks)?);
        Ok(served)
    }
}

/// One task's resolver sockets being served; dropping it stops them (and
/// closes the sockets, freeing the task's namespace).
#[derive(Debug)]
pub struct TaskDns {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for TaskDns {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

async fn serve_udp(resolver: Resolver, socket: Arc<tokio::net::UdpSocket>, networks: Networks) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) if transient(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "receiving DNS queries");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many queries in flight: dropped one");
            continue;
        };
        let query = buf[..n].to_vec();
        let (resolver, socket, networks) = (resolver.clone(), socket.clone(), networks.clone());
        tokio::spawn(async move {
            if let Some(reply) = resolver.handle(&query, &networks, Transport::Udp).await
                && let Err(error) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(%peer, %error, "sending a DNS reply");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(resolver: Resolver, listener: tokio::net::TcpListener, networks: Networks) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting DNS connections");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS connections: closed one");
            continue;
        };
        let (resolver, networks) = (resolver.clone(), networks.clone());
        tokio::spawn(async move {
            if let Err(error) = serve_connection(&resolver, stream, &networks).await {
                tracing::debug!(%peer, %error, "DNS connection ended");
            }
            drop(permit);
        });
    }
}

/// Answers the queries of one connection in order until it closes or
/// idles for [`TCP_IDLE`].
async fn serve_connection(
    resolver: &Resolver,
    mut stream: tokio::net::TcpStream,
    networks: &[String],
) -> io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(read) => read?,
        };
        match resolver.handle(&query, networks, Transport::Tcp).await {
            Some(reply) => write_framed(&mut stream, &reply).await?,
            None => return Ok(()),
        }
    }
}
