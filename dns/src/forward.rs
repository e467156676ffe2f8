//! Forwarding names the table does not have to the node's resolvers.
//!
//! Each exchange uses a fresh socket connected to the upstream: a random
//! source port per query, and the kernel drops datagrams from anyone else,
//! which is most of what protects a forwarder from spoofed answers.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire::Message;

/// How long one upstream gets to answer. glibc gives up on a server after
/// 5 s, so two upstreams still fit before the client retries.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `query` to each upstream in turn until one answers within
/// `timeout`. Over TCP (`tcp`), a truncated UDP answer is fetched again
/// over TCP from the same upstream. `None` when none answered.
pub(crate) async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    timeout: Duration,
    tcp: bool,
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        match tokio::time::timeout(timeout, exchange(query, upstream, tcp)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(error)) => tracing::debug!(%upstream, %error, "upstream resolver failed"),
            Err(_) => tracing::debug!(%upstream, "upstream resolver timed out"),
        }
    }
    None
}

async fn exchange(query: &[u8], upstream: SocketAddr, tcp: bool) -> io::Result<Vec<u8>> {
    let reply = exchange_udp(query, upstream).await?;
    let truncated = Message::parse_header(&reply).is_some_and(|h| h.truncated());
    if tcp && truncated {
        return exchange_tcp(query, upstream).await;
    }
    Ok(reply)
}

async fn exchange_udp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let id = Message::parse_header(query).map(|h| h.id);
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything but a response to this query (a stray datagram to the
        // port) is skipped, not passed on.
        if let Some(header) = Message::parse_header(&buf[..n])
            && header.is_response()
            && Some(header.id) == id
        {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

/// Writes one TCP-framed message (RFC 1035 §4.2.2: a two-byte length first).
pub(crate) async fn write_framed<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    msg: &[u8],
) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "DNS message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    w.write_all(&framed).await
}

/// Reads one TCP-framed message.
pub(crate) async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u16().await?;
    let mut msg = vec![0; usize::from(len)];
    r.read_exact(&mut msg).await?;
    Ok(msg)
}
