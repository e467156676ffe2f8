//! The gRPC services a manager serves on 2377, and who may call which:
//! `Join` anyone (the token decides), `Dispatcher` any node's own
//! certificate, `RaftPeer` managers' only, `Control` managers, operators'
//! client certificates and the local Unix socket (root only), whose server
//! marks each request with [`LocalCaller`]. The table is in `authz`.
//!
//! The handlers here only authorize the caller and translate errors; what a
//! call does lives in the domain modules beside this one.

mod authz;
mod control;
mod dispatcher;
mod join;
mod raft_peer;

use std::sync::Arc;

use shoal_api::MAX_MESSAGE_BYTES;
use shoal_api::cluster::v1::{
    control_server::ControlServer, dispatcher_server::DispatcherServer, join_server::JoinServer,
    raft_peer_server::RaftPeerServer,
};
use shoal_ca::rustls::ServerConfig;
use tokio::net::TcpListener;
use tonic::{Request, Status};

pub use authz::LocalCaller;
use authz::Need;

use super::{Manager, ManagerError};
use crate::transport::PeerInfo;

impl From<crate::validate::ValidationError> for Status {
    fn from(e: crate::validate::ValidationError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<ManagerError> for Status {
    fn from(e: ManagerError) -> Self {
        match &e {
            ManagerError::NoLeader | ManagerError::NoQuorum { .. } => {
                Status::unavailable(e.to_string())
            }
            ManagerError::Rejected(crate::model::ApplyError::NotFound { .. })
            | ManagerError::NotFound { .. }
            | ManagerError::NoSuchFile { .. } => Status::not_found(e.to_string()),
            ManagerError::Rejected(crate::model::ApplyError::PortInUse { .. }) => {
                Status::already_exists(e.to_string())
            }
            ManagerError::Rejected(_) | ManagerError::Precondition { .. } => {
                Status::failed_precondition(e.to_string())
            }
            ManagerError::Invalid { .. }
            | ManagerError::Validation(_)
            | ManagerError::Container(_) => Status::invalid_argument(e.to_string()),
            ManagerError::Denied { .. } => Status::permission_denied(e.to_string()),
            _ => Status::internal(format!("{e:#}")),
        }
    }
}

/// docker's wording, for a worker asked to act as a manager.
pub fn not_a_manager() -> Status {
    Status::failed_precondition(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster \
         state. Please run this command on a manager node or promote the current node to a manager.",
    )
}

/// Serves every service on `listener` until `stopped` turns true.
pub(super) fn serve(
    m: Arc<Manager>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    extra: Option<tonic::service::Routes>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let incoming = crate::transport::tls_incoming(listener, tls);
    let api = Api(m);
    let routes = extra
        .unwrap_or_default()
        .add_service(RaftPeerServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(JoinServer::new(api.clone()))
        .add_service(DispatcherServer::new(api.clone()))
        .add_service(ControlServer::new(api).max_decoding_message_size(MAX_MESSAGE_BYTES));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cluster API stopped");
        }
    });
}

/// The manager's API; cheap to clone.
#[derive(Clone)]
pub struct Api(pub Arc<Manager>);

/// A stream of log lines, as the `ServiceLogs` and `TaskLogs` RPCs return.
pub type LogStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<shoal_api::cluster::v1::LogLine, Status>> + Send>,
>;

/// The caller's TLS peer, or `None` when it came over the local socket.
fn peer<T>(req: &Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

fn require<T>(req: &Request<T>, need: Need) -> Result<(), Status> {
    authz::authorize(authz::caller(req), need)
}

/// Raft between managers: a manager's own certificate.
fn require_manager<T>(req: &Request<T>) -> Result<(), Status> {
    require(req, Need::Manager)
}

/// A node's session: the calling node's id, from its own certificate.
fn require_node<T>(req: &Request<T>) -> Result<String, Status> {
    require(req, Need::Node)?;
    match authz::caller(req) {
        authz::Caller::Node(id) => Ok(id.node_id().to_owned()),
        _ => Err(Status::permission_denied("a node certificate is required")),
    }
}

/// The calling node's id from its certificate; it may only speak for itself.
fn own_node<T>(req: &Request<T>, claimed: &str) -> Result<String, Status> {
    let node_id = require_node(req)?;
    if !claimed.is_empty() && claimed != node_id {
        return Err(Status::permission_denied(
            "a node may only speak for itself",
        ));
    }
    Ok(node_id)
}
