//! One HTTP/1.1 exchange per connection, over TCP or rustls (ring), with
//! timeouts: the whole of what the client needs from the network.

use std::{fs::File, io, io::BufReader, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::timeout,
};
use tokio_rustls::TlsConnector;

use crate::error::BoxError;

/// Request bodies: empty, in memory, or streamed from a blob file.
pub(crate) type Body = BoxBody<Bytes, io::Error>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Transport {
    /// `Err` if the CA bundle could not be read: plain HTTP still works,
    /// and an HTTPS request says why it cannot.
    tls: Result<Arc<ClientConfig>, String>,
    timeout: Duration,
}

impl Transport {
    pub(crate) fn new(ca_bundle: &Path, timeout: Duration) -> Transport {
        Transport {
            tls: tls_config(ca_bundle),
            timeout,
        }
    }

    /// Sends `req` (absolute URI) on a new connection; the response's body
    /// keeps the connection alive until read or dropped.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, BoxError> {
        let uri = req.uri().clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported URL scheme {other:?} in {uri}").into()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("no host in {uri}"))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = timeout(self.timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| timed_out("connecting"))??;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = if https {
            let config = self.tls.clone().map_err(|e| -> BoxError { e.into() })?;
            let name = ServerName::try_from(host.to_owned())?;
            let tls = timeout(self.timeout, TlsConnector::from(config).connect(name, tcp))
                .await
                .map_err(|_| timed_out("the TLS handshake"))??;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "registry connection ended with an error");
            }
        });
        // HTTP/1.1 origin form: the path here, the authority in Host.
        let origin: Uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
        *req.uri_mut() = origin;
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
        let resp = timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| timed_out("waiting for the response"))??;
        Ok(resp)
    }

    /// The next chunk of `body`, waiting at most the timeout for it.
    pub(crate) async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>, BoxError> {
        loop {
            let frame = timeout(self.timeout, body.frame())
                .await
                .map_err(|_| timed_out("reading the response body"))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                // Trailers carry nothing we use.
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The body, up to `limit` bytes (more is an error).
    pub(crate) async fn read_body(
        &self,
        body: &mut Incoming,
        limit: usize,
    ) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(body).await? {
            if out.len() + chunk.len() > limit {
                return Err(format!("response body larger than {limit} bytes").into());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// At most `limit` bytes of the body, for error messages; never fails.
    pub(crate) async fn excerpt(&self, body: &mut Incoming, limit: usize) -> String {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.next_chunk(body).await {
                Ok(Some(chunk)) => out.extend_from_slice(&chunk),
                _ => break,
            }
        }
        out.truncate(limit);
        String::from_utf8_lossy(&out).trim().to_owned()
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

/// A client config trusting the PEM bundle's CAs, TLS 1.2 and 1.3 by ring.
fn tls_config(ca_bundle: &Path) -> Result<Arc<ClientConfig>, String> {
    let file = File::open(ca_bundle)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca_bundle.display()))?;
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_reader_iter(BufReader::new(file))
        .filter_map(Result::ok)
        .collect();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "no usable CA certificate in {}",
            ca_bundle.display()
        ));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Request bodies.
pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from `file` in 64 KiB chunks.
pub(crate) fn from_file(file: tokio::fs::File) -> Body {
    use tokio::io::AsyncReadExt as _;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(hyper::body::Frame::data(Bytes::from(buf))), Some(file)))
            }
            // Ends the stream after the error.
            Err(e) => Some((Err(e), None)),
        }
    });
    http_body_util::StreamBody::new(chunks).boxed()
}
