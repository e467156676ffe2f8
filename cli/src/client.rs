//! Connecting to `shoald` over its Unix socket, with errors that say what to do.

use std::{future::Future, path::PathBuf};

use anyhow::{Context, anyhow, bail};
use hyper_util::rt::TokioIo;
use shoal_api::node::v1::node_client::NodeClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Parses `--host`: only `unix://` until the control plane serves tcp://…:2377.
pub fn socket_path(host: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() || !path.starts_with('/') {
            bail!("--host {host:?}: expected unix:///absolute/path/to/shoald.sock");
        }
        return Ok(PathBuf::from(path));
    }
    if host.starts_with("tcp://") {
        bail!(
            "--host {host:?}: remote managers over tcp:// arrive with the control plane; \
             for now run shoal on the node, against unix:///run/shoal/shoald.sock"
        );
    }
    bail!("--host {host:?}: expected unix:///path/to/shoald.sock")
}

pub async fn connect(host: &str) -> anyhow::Result<NodeClient<Channel>> {
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
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://shoald.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| format!("connecting to shoald at {host}"))?;
    Ok(NodeClient::new(channel))
}

/// Awaits an RPC and turns its status into a readable error.
pub async fn call<T>(
    host: &str,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    rpc.await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("shoald at {host}: {}", s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(e.unwrap_or_default().contains("control plane"));
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
