//! The Docker Engine API on `<state>/docker.sock` (mode 0600, root's, as
//! dockerd's socket is), served by `shoal-dockerapi` over this daemon's own
//! node socket.

use std::path::{Path, PathBuf};

use tracing::{error, info};

/// Binds the docker socket and serves it in the background until
/// `shutdown` resolves; a failure to bind is logged, never fatal: the
/// node's own API and its tasks do not depend on it.
pub async fn start(
    state_dir: &Path,
    node_socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<PathBuf> {
    let path = state_dir.join(shoal_dockerapi::SOCKET_NAME);
    let listener = match crate::api::bind(&path).await {
        Ok(l) => l,
        Err(e) => {
            error!(socket = %path.display(), error = %e, "the Docker API is not served");
            return None;
        }
    };
    info!(socket = %path.display(), "serving the Docker Engine API");
    let backend = shoal_dockerapi::Backend::unix(node_socket);
    tokio::spawn(shoal_dockerapi::serve(listener, backend, shutdown));
    Some(path)
}
