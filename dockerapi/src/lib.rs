//! The swarm part of the Docker Engine API, on every node's
//! `<state>/docker.sock`: the `docker` CLI, `docker stack deploy` and the
//! tools built on the API drive Shoal unchanged.
//!
//! Each endpoint is served by calling the node's own gRPC APIs over its
//! local socket (the `Node` API, and the `Control` API a manager serves
//! there), exactly as `shoal` does: one model, two wire formats. Docker's
//! JSON and Shoal's types convert in one module ([`convert`]).

#![forbid(unsafe_code)]

pub mod convert;
pub mod error;
pub mod filters;
pub mod json;
mod logs;
mod routes;
pub mod server;

use std::path::PathBuf;

use shoal_api::{cluster::v1::control_client::ControlClient, node::v1::node_client::NodeClient};
use tonic::transport::{Channel, Endpoint};

pub use error::ApiError;
pub use server::{API_VERSION, MIN_API_VERSION, serve};

/// The socket's file name in shoald's state directory.
pub const SOCKET_NAME: &str = "docker.sock";

/// Shoal's version, shown as the engine's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The node's own APIs, over one channel to its shoald socket.
#[derive(Clone)]
pub struct Backend {
    node: NodeClient<Channel>,
    control: ControlClient<Channel>,
}

impl Backend {
    pub fn new(channel: Channel) -> Self {
        Self {
            node: NodeClient::new(channel.clone()),
            control: ControlClient::new(channel)
                .max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES),
        }
    }

    /// A channel to shoald's socket that connects at first use (the docker
    /// API may start before the node API listens) and again after a loss.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://shoald.local").connect_with_connector_lazy(
            tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }),
        );
        Self::new(channel)
    }

    pub(crate) fn node(&self) -> NodeClient<Channel> {
        self.node.clone()
    }

    pub(crate) fn control(&self) -> ControlClient<Channel> {
        self.control.clone()
    }
}
