//! Connecting to `shoald` over its Unix socket, with errors that say what to do.

use std::{
    fmt,
    future::Future,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use hyper_util::rt::TokioIo;
use shoal_api::{
    MAX_MESSAGE_BYTES, cluster::v1::control_client::ControlClient,
    node::v1::node_client::NodeClient,
};
use shoal_ca::{CaCert, CaError, ClientCert, NodeIdentity, NodeRole, RemovedNodes, client_config};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tonic::{
    Code, Status,
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};

/// The daemon's socket serves the local `Node` API and, on a manager, the
/// cluster `Control` API: one connection, one client per service.
pub struct Daemon {
    pub host: String,
    pub node: NodeClient<Channel>,
    pub control: ControlClient<Channel>,
}

/// The daemon refused the request: printed as docker prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error response from daemon: {message}")]
pub struct DaemonError {
    pub message: String,
}

/// Independent failures of one command (`node rm a b`), reported together
/// after the successes, as docker does.
#[derive(Debug, thiserror::Error)]
pub struct Failures(pub Vec<anyhow::Error>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| format!("{e:#}")).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The outcome of a command over several objects: its one failure as is,
/// or all of them.
pub fn finish(mut failed: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => Err(Failures(failed).into()),
    }
}

/// The control client a per-name call gets: tonic clients share one channel
/// and are cheap to clone, so each call owns its own.
pub type Control = ControlClient<Channel>;

/// Calls `rpc` for each name in turn, as docker's verbs that take several
/// names do: the replies that came back with their names, and the failures
/// to report after them ([`finish`]).
pub async fn each_named<T, Fut>(
    d: &Daemon,
    names: Vec<String>,
    mut rpc: impl FnMut(Control, String) -> Fut,
) -> (Vec<(String, T)>, Vec<anyhow::Error>)
where
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let (mut found, mut failed) = (Vec::new(), Vec::new());
    for name in names {
        match call(&d.host, rpc(d.control.clone(), name.clone())).await {
            Ok(v) => found.push((name, v)),
            Err(e) => failed.push(e),
        }
    }
    (found, failed)
}

/// `rm` of several names: each one removed printed as docker prints it, then
/// the failures.
pub async fn remove_named<T, Fut>(
    d: &Daemon,
    names: Vec<String>,
    rpc: impl FnMut(Control, String) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let (removed, failed) = each_named(d, names, rpc).await;
    removed.iter().for_each(|(name, _)| println!("{name}"));
    finish(failed)
}

/// What `shoal` prints on stderr for a failed command: daemon errors with
/// docker's prefix alone, anything else (flags, an unreachable daemon) after
/// `Error:`.
pub fn render_error(e: &anyhow::Error) -> String {
    if let Some(d) = e.downcast_ref::<DaemonError>() {
        return d.to_string();
    }
    if let Some(Failures(all)) = e.downcast_ref::<Failures>() {
        return all.iter().map(render_error).collect::<Vec<_>>().join("\n");
    }
    format!("Error: {e:#}")
}

/// Certificate files for `--host tcp://…` (docker's `--tlscacert`,
/// `--tlscert`, `--tlskey`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// docker's `DOCKER_CERT_PATH`: a directory holding ca.pem, cert.pem and
/// key.pem, used for each of those not given by its own flag.
pub const CERT_PATH_ENV: &str = "SHOAL_CERT_PATH";
/// Where a manager keeps its own certificate files (shoald's default
/// `--state-dir`), when neither a flag nor SHOAL_CERT_PATH says.
const DEFAULT_CERT_DIR: &str = "/var/lib/shoal/swarm";

impl TlsFiles {
    /// Each file from its flag, else from `cert_dir` (SHOAL_CERT_PATH),
    /// else from the manager's own state directory.
    pub fn resolve(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        cert_dir: Option<PathBuf>,
    ) -> Self {
        let dir = cert_dir
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CERT_DIR));
        TlsFiles {
            ca: ca.unwrap_or_else(|| dir.join("ca.pem")),
            cert: cert.unwrap_or_else(|| dir.join("cert.pem")),
            key: key.unwrap_or_else(|| dir.join("key.pem")),
        }
    }
}

static TLS_FILES: OnceLock<TlsFiles> = OnceLock::new();

/// Set once by `main` from the global flags.
pub fn set_tls_files(files: TlsFiles) {
    let _first = TLS_FILES.set(files);
}

/// Parses a `unix://` `--host`.
pub fn socket_path(host: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() || !path.starts_with('/') {
            bail!("--host {host:?}: expected unix:///absolute/path/to/shoald.sock");
        }
        return Ok(PathBuf::from(path));
    }
    bail!("--host {host:?}: expected unix:///path/to/shoald.sock or tcp://MANAGER:2377")
}

pub async fn connect(host: &str) -> anyhow::Result<Daemon> {
    if let Some(addr) = host.strip_prefix("tcp://") {
        return connect_tcp(host, addr).await;
    }
    let path = socket_path(host)?;
    // Probe first: tonic's lazy errors would only say "transport error".
    if let Err(e) = UnixStream::connect(&path).await {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is shoald running on this node? Start it, or set SHOAL_HOST / --host"
            }
            std::io::ErrorKind::PermissionDenied => "the socket is root's: run shoal as root",
            _ => "check --host",
        };
        bail!("cannot reach shoald at {host}: {e}; {hint}");
    }
    let channel = shoal_api::unix_channel(path)
        .await
        .with_context(|| format!("connecting to shoald at {host}"))?;
    Ok(Daemon {
        host: host.to_owned(),
        node: NodeClient::new(channel.clone()),
        control: ControlClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
    })
}

/// A manager's cluster API on 2377, over mutual TLS with an operator's
/// client certificate or a manager's: only the cluster (`Control`) verbs
/// work there.
async fn connect_tcp(host: &str, addr: &str) -> anyhow::Result<Daemon> {
    let addr = match addr.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => addr.to_owned(),
        _ => format!("{addr}:{}", shoal_api::CLUSTER_PORT),
    };
    let files = TLS_FILES.get().context("no TLS files given")?;
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| {
            format!(
                "{flag} {}: cannot read it; give the files `shoal swarm ca \
                 --issue-client-cert --out DIR` wrote (or set SHOAL_CERT_PATH=DIR), or a \
                 manager's (under its --state-dir, swarm/ca.pem, cert.pem, key.pem)",
                path.display()
            )
        })
    };
    let (cert, key) = (
        read("--tlscert", &files.cert)?,
        read("--tlskey", &files.key)?,
    );
    let ca = CaCert::from_pem(&read("--tlscacert", &files.ca)?)
        .context("--tlscacert: not the swarm's root CA certificate")?;
    let revoked = Arc::new(RemovedNodes::new());
    // An operator's client certificate, or a manager's own.
    let tls = match NodeIdentity::from_pem(&cert, &key) {
        Ok(node) => client_config(&node, &ca, revoked),
        Err(CaError::ClientCertificate { .. }) => ClientCert::from_pem(&cert, &key)
            .context("--tlscert/--tlskey: not a client certificate and its key")?
            .tls_config(&ca, revoked),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "--tlscert/--tlskey: not a certificate of this swarm and its key (a client \
                 certificate from `shoal swarm ca --issue-client-cert`, or a manager's)",
            ));
        }
    };
    let mut tls = tls.context("building the TLS client")?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let target = addr.clone();
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (addr, connector) = (target.clone(), connector.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector
                    .connect(NodeRole::Manager.server_name(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            anyhow!(
                "cannot reach the manager at {host}: {why}; check the address (a manager's \
                 2377) and that the certificates are this swarm's"
            )
        })?;
    Ok(Daemon {
        host: host.to_owned(),
        node: NodeClient::new(channel.clone()),
        control: ControlClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
    })
}

/// Awaits an RPC and turns its status into a readable error.
pub async fn call<T>(
    host: &str,
    rpc: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> anyhow::Result<T> {
    rpc.await
        .map(tonic::Response::into_inner)
        .map_err(|s| status_error(host, &s))
}

/// A status as [`call`] reports it; also for errors in the middle of a stream.
pub fn status_error(host: &str, s: &Status) -> anyhow::Error {
    // tonic answers an unknown method with an empty Unimplemented.
    if s.code() == Code::Unimplemented && s.message().is_empty() && host.starts_with("tcp://") {
        return anyhow!(
            "a manager's 2377 serves the cluster verbs only; this command acts on a node \
             itself: run it there, against its unix:// socket"
        );
    }
    if s.code() == Code::Unimplemented && s.message().is_empty() {
        return anyhow!(
            "shoald at {host} does not know this request: it is older than this shoal; \
             upgrade shoald on this node"
        );
    }
    // A status with a source was made by the client's transport (connection
    // lost, daemon gone), not sent by the daemon.
    if std::error::Error::source(s).is_some() {
        return anyhow!("shoald at {host}: {}", s.message());
    }
    let message = match s.message() {
        "" => s.code().description().to_owned(),
        m => m.to_owned(),
    };
    DaemonError { message }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_files_come_from_their_flag_then_the_cert_path_then_the_manager() {
        let dir = Some(PathBuf::from("/ops"));
        let f = TlsFiles::resolve(None, Some("/x/c.pem".into()), None, dir);
        assert_eq!(f.ca, PathBuf::from("/ops/ca.pem"));
        assert_eq!(f.cert, PathBuf::from("/x/c.pem"));
        assert_eq!(f.key, PathBuf::from("/ops/key.pem"));
        // Unset or empty SHOAL_CERT_PATH: a manager's own files.
        for dir in [None, Some(PathBuf::new())] {
            let f = TlsFiles::resolve(None, None, None, dir);
            assert_eq!(f.key, PathBuf::from("/var/lib/shoal/swarm/key.pem"));
        }
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            socket_path("unix:///run/shoal/shoald.sock").ok(),
            Some(PathBuf::from("/run/shoal/shoald.sock"))
        );
        for bad in [
            "unix://",
            "unix://relative.sock",
            "http://x",
            "/run/x.sock",
            "",
        ] {
            let e = socket_path(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("--host"), "{bad:?} → {e}");
        }
        let e = socket_path("tcp://10.0.0.1:2377")
            .err()
            .map(|e| e.to_string());
        // tcp:// is connect()'s, never a socket path.
        assert!(e.unwrap_or_default().contains("tcp://MANAGER:2377"));
    }

    #[test]
    fn daemon_errors_read_like_docker() {
        let e = status_error("unix:///x.sock", &Status::not_found("node n9 not found"));
        assert_eq!(
            render_error(&e),
            "Error response from daemon: node n9 not found"
        );
        let e = status_error("unix:///x.sock", &Status::unimplemented(""));
        let shown = render_error(&e);
        assert!(
            shown.starts_with("Error: ") && shown.contains("upgrade shoald"),
            "{shown}"
        );
        let lost = Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        let shown = render_error(&status_error("unix:///x.sock", &lost));
        assert!(
            shown.starts_with("Error: shoald at unix:///x.sock: "),
            "{shown}"
        );
        let flag = render_error(&anyhow!("--availability x: bad"));
        assert_eq!(flag, "Error: --availability x: bad");
    }

    #[test]
    fn failures_are_listed_one_per_line() {
        let all = Failures(vec![
            DaemonError {
                message: "node a not found".into(),
            }
            .into(),
            anyhow!("other"),
        ]);
        assert_eq!(
            render_error(&all.into()),
            "Error response from daemon: node a not found\nError: other"
        );
    }

    #[tokio::test]
    async fn missing_daemon_says_what_to_do() {
        let e = connect("unix:///nonexistent/shoald.sock")
            .await
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("is shoald running"), "{e}");
    }
}
