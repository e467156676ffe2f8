//! gRPC over our own rustls configs: tonic only sees plaintext h2 on an
//! already-authenticated stream, so the verifiers of `shoal-ca` (CA pinning,
//! removed nodes) decide who connects, and handlers read the verified peer.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use shoal_ca::{
    CertIdentity, ClientIdentity, PeerIdentity,
    rustls::{
        ClientConfig, ServerConfig,
        pki_types::{CertificateDer, ServerName},
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};
use tonic::transport::{Channel, Endpoint, Uri, server::Connected};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval of h2 pings on client channels, and how long a reply may take.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What a handler knows about its caller: the node its verified
/// certificate names, or the operator its client certificate names; both
/// `None` for an anonymous (joining) client.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// A node's certificate: never set from a client certificate.
    pub identity: Option<PeerIdentity>,
    /// An operator's client certificate (`swarm ca --issue-client-cert`).
    pub client: Option<ClientIdentity>,
}

impl PeerInfo {
    /// From the certificates the TLS handshake verified.
    pub fn from_verified(addr: SocketAddr, certs: Option<&[CertificateDer<'_>]>) -> Self {
        let (identity, client) = match CertIdentity::from_peer_certs(certs) {
            Ok(CertIdentity::Node(id)) => (Some(id), None),
            Ok(CertIdentity::Client(c)) => (None, Some(c)),
            Err(_) => (None, None),
        };
        PeerInfo {
            addr,
            identity,
            client,
        }
    }
}

/// A server-side TLS stream that hands tonic the verified peer.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and yields the ones whose TLS handshake succeeds.
/// Handshakes run in their own tasks so one slow client can't stall accept.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            // Closed when the server stopped: the listener goes with this
            // task, so the address is free again at once (a node that
            // leaves and rejoins binds it anew).
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Raft messages are small request/response pairs: with Nagle,
            // each waits for the peer's delayed ACK (40 ms on Linux).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%addr, error = %e, "TCP_NODELAY");
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
                let info = PeerInfo::from_verified(addr, tls.get_ref().1.peer_certificates());
                let stream = PeerStream { inner: tls, info };
                // The receiver is gone only when the server stopped.
                let _closed = tx.send(Ok(stream)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A lazily connecting channel to `addr` (host:port) over TLS with `config`,
/// expecting the server certificate to carry `server_name`.
pub fn channel(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = addr.to_owned();
    let connector = TlsConnector::from(config);
    // The URI only names the authority for h2; the connector does the dialling.
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(30))
        // A peer that vanished without closing (link cut, machine gone)
        // would otherwise hold a long-lived stream (a followed log, the
        // assignments) open for ever: h2 pings notice within ~20 s.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let (addr, connector, name) = (addr.clone(), connector.clone(), server_name.clone());
            async move {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        })))
}

/// Dials `addr`, completes a TLS handshake with `config`, then waits up to
/// `wait` for the server to say anything. With TLS 1.3 the server checks
/// the client's certificate after the client considers the handshake done,
/// so a refusal (a removed node, an expired certificate) arrives as an
/// alert on this first read: it comes back as the `rustls::Error` inside
/// the returned `io::Error`. `Ok` means the server accepted and waited for
/// the client to speak. gRPC calls lose that alert (hyper only sees the
/// connection close), hence this probe.
pub async fn probe_tls(
    addr: &str,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    wait: Duration,
) -> io::Result<()> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut tls = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, tls.read(&mut byte)).await {
        Err(_silent) => Ok(()),
        Ok(read) => read.map(drop),
    }
}
