//! The local node API (`shoal.node.v1.Node`) served on a root-only Unix socket.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use shoal_api::{
    cluster::v1::{
        CreateNetworkRequest, CreateSecretRequest, CreateServiceRequest, JoinTokenReply,
        JoinTokenRequest, ListNetworksReply, ListNetworksRequest, ListNodesReply, ListNodesRequest,
        ListSecretsReply, ListSecretsRequest, ListServicesReply, ListServicesRequest,
        ListTasksReply, ListTasksRequest, NetworkRef, NetworkSummary, NodeDetail, NodeRef,
        RemoveNetworkReply, RemoveNodeReply, RemoveNodeRequest, RemoveSecretReply,
        RemoveServiceReply, ScaleServiceRequest, SecretRef, SecretSummary, ServiceRef,
        ServiceSummary, UpdateNodeRequest,
        control_server::{Control, ControlServer},
    },
    node::v1::{
        InfoReply, InfoRequest, ProtoCounter, ReasonCounter, StatsReply, StatsRequest,
        SwarmInitReply, SwarmInitRequest, SwarmJoinReply, SwarmJoinRequest, SwarmLeaveReply,
        SwarmLeaveRequest, SwarmUnlockReply, SwarmUnlockRequest, UnlockKeyReply, UnlockKeyRequest,
        node_server::{Node, NodeServer},
    },
};
use shoal_controlplane::manager::Api;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::{
    datapath::{DatapathError, StatsSource},
    swarm::Swarm,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("another shoald is already listening on {path}; stop it or pass a different --socket")]
    InUse { path: PathBuf },
    #[error("cannot prepare socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API server failed")]
    Serve(#[source] tonic::transport::Error),
}

impl From<DatapathError> for Status {
    fn from(e: DatapathError) -> Self {
        // The chain says which map or program; the CLI prints it verbatim.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Status::internal(msg)
    }
}

/// What `Info` reports; fixed once the datapath is attached.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub hostname: String,
    pub data_interface: String,
    pub data_ifindex: u32,
    pub attach_mode: &'static str,
    pub programs: Vec<String>,
    pub state_dir: PathBuf,
}

pub struct NodeApi<S> {
    info: NodeInfo,
    started: Instant,
    stats: Arc<S>,
    swarm: Arc<Swarm>,
}

impl<S: StatsSource> NodeApi<S> {
    pub fn new(info: NodeInfo, stats: Arc<S>, swarm: Arc<Swarm>) -> Self {
        Self {
            info,
            started: Instant::now(),
            stats,
            swarm,
        }
    }
}

/// The cluster `Control` API on the local socket: served by this node's
/// manager, or refused with docker's words on a worker or a locked manager.
#[derive(Clone)]
pub struct LocalControl {
    swarm: Arc<Swarm>,
}

impl LocalControl {
    async fn api(&self) -> Result<Api, Status> {
        Ok(Api(self.swarm.manager().await?))
    }
}

#[tonic::async_trait]
impl Control for LocalControl {
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesReply>, Status> {
        self.api().await?.list_nodes(req).await
    }

    async fn inspect_node(&self, req: Request<NodeRef>) -> Result<Response<NodeDetail>, Status> {
        self.api().await?.inspect_node(req).await
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        self.api().await?.update_node(req).await
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeReply>, Status> {
        self.api().await?.remove_node(req).await
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenReply>, Status> {
        self.api().await?.join_token(req).await
    }

    async fn create_secret(
        &self,
        req: Request<CreateSecretRequest>,
    ) -> Result<Response<SecretSummary>, Status> {
        self.api().await?.create_secret(req).await
    }

    async fn list_secrets(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsReply>, Status> {
        self.api().await?.list_secrets(req).await
    }

    async fn inspect_secret(
        &self,
        req: Request<SecretRef>,
    ) -> Result<Response<SecretSummary>, Status> {
        self.api().await?.inspect_secret(req).await
    }

    async fn remove_secret(
        &self,
        req: Request<SecretRef>,
    ) -> Result<Response<RemoveSecretReply>, Status> {
        self.api().await?.remove_secret(req).await
    }

    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<NetworkSummary>, Status> {
        self.api().await?.create_network(req).await
    }

    async fn list_networks(
        &self,
        req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksReply>, Status> {
        self.api().await?.list_networks(req).await
    }

    async fn inspect_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<NetworkSummary>, Status> {
        self.api().await?.inspect_network(req).await
    }

    async fn remove_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<RemoveNetworkReply>, Status> {
        self.api().await?.remove_network(req).await
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceSummary>, Status> {
        self.api().await?.create_service(req).await
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        self.api().await?.list_services(req).await
    }

    async fn inspect_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceSummary>, Status> {
        self.api().await?.inspect_service(req).await
    }

    async fn scale_service(
        &self,
        req: Request<ScaleServiceRequest>,
    ) -> Result<Response<ServiceSummary>, Status> {
        self.api().await?.scale_service(req).await
    }

    async fn remove_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<RemoveServiceReply>, Status> {
        self.api().await?.remove_service(req).await
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksReply>, Status> {
        self.api().await?.list_tasks(req).await
    }

    type ServiceLogsStream = shoal_controlplane::manager::LogStream;

    async fn service_logs(
        &self,
        req: Request<shoal_api::cluster::v1::ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        self.api().await?.service_logs(req).await
    }

    async fn ca_status(
        &self,
        req: Request<shoal_api::cluster::v1::CaStatusRequest>,
    ) -> Result<Response<shoal_api::cluster::v1::CaStatusReply>, Status> {
        self.api().await?.ca_status(req).await
    }

    async fn rotate_ca(
        &self,
        req: Request<shoal_api::cluster::v1::RotateCaRequest>,
    ) -> Result<Response<shoal_api::cluster::v1::CaStatusReply>, Status> {
        self.api().await?.rotate_ca(req).await
    }

    async fn update_swarm(
        &self,
        req: Request<shoal_api::cluster::v1::UpdateSwarmRequest>,
    ) -> Result<Response<shoal_api::cluster::v1::UpdateSwarmReply>, Status> {
        self.api().await?.update_swarm(req).await
    }
}

#[tonic::async_trait]
impl<S: StatsSource> Node for NodeApi<S> {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoReply>, Status> {
        let i = &self.info;
        Ok(Response::new(InfoReply {
            hostname: i.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            data_interface: i.data_interface.clone(),
            data_ifindex: i.data_ifindex,
            attach_mode: i.attach_mode.into(),
            programs: i.programs.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            state_dir: i.state_dir.display().to_string(),
            swarm: Some(self.swarm.info().await),
        }))
    }

    async fn swarm_init(
        &self,
        req: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitReply>, Status> {
        Ok(Response::new(self.swarm.init(req.into_inner()).await?))
    }

    async fn swarm_join(
        &self,
        req: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmJoinReply>, Status> {
        Ok(Response::new(self.swarm.join(req.into_inner()).await?))
    }

    async fn swarm_leave(
        &self,
        req: Request<SwarmLeaveRequest>,
    ) -> Result<Response<SwarmLeaveReply>, Status> {
        self.swarm.leave(req.into_inner().force).await?;
        Ok(Response::new(SwarmLeaveReply {}))
    }

    async fn swarm_unlock(
        &self,
        req: Request<SwarmUnlockRequest>,
    ) -> Result<Response<SwarmUnlockReply>, Status> {
        self.swarm.unlock(&req.into_inner().key).await?;
        Ok(Response::new(SwarmUnlockReply {}))
    }

    async fn unlock_key(
        &self,
        req: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyReply>, Status> {
        let key = self.swarm.unlock_key(req.into_inner().rotate).await?;
        Ok(Response::new(UnlockKeyReply { key }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let s = self.stats.stats()?;
        Ok(Response::new(StatsReply {
            hostname: self.info.hostname.clone(),
            data_interface: self.info.data_interface.clone(),
            counters: s
                .counters
                .iter()
                .map(|(dir, proto, c)| ProtoCounter {
                    direction: dir.name().into(),
                    protocol: proto.name().into(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect(),
            reasons: s
                .reasons
                .iter()
                .map(|(r, n)| ReasonCounter {
                    reason: r.name().into(),
                    count: *n,
                })
                .collect(),
        }))
    }
}

/// Binds `path` (mode 0600: the API is root's, as dockerd's socket is), replacing
/// a stale socket file but refusing to steal one a live daemon still serves.
pub async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let io = |source| ApiError::Socket {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ApiError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve<S: StatsSource>(
    listener: UnixListener,
    api: NodeApi<S>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ApiError> {
    let control = LocalControl {
        swarm: api.swarm.clone(),
    };
    tonic::transport::Server::builder()
        .add_service(NodeServer::new(api))
        .add_service(ControlServer::new(control))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ApiError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Stats;
    use shoal_common::stats::{Counter, Direction, Proto, Reason};

    struct Fake;
    impl StatsSource for Fake {
        fn stats(&self) -> Result<Stats, DatapathError> {
            Ok(Stats {
                counters: vec![(
                    Direction::Egress,
                    Proto::Udp,
                    Counter {
                        packets: 3,
                        bytes: 300,
                    },
                )],
                reasons: vec![(Reason::TruncatedIpv4, 2)],
            })
        }
    }

    fn api() -> NodeApi<Fake> {
        NodeApi::new(
            NodeInfo {
                hostname: "n1".into(),
                data_interface: "eth0".into(),
                data_ifindex: 2,
                attach_mode: "tcx",
                programs: vec!["p".into()],
                state_dir: "/tmp/x".into(),
            },
            Arc::new(Fake),
            Arc::new(Swarm::new(
                std::path::Path::new("/nonexistent"),
                "n1".into(),
                None,
            )),
        )
    }

    #[tokio::test]
    async fn stats_maps_names_from_the_contract() -> Result<(), Status> {
        let r = api()
            .stats(Request::new(StatsRequest {}))
            .await?
            .into_inner();
        assert_eq!(r.counters.len(), 1);
        assert_eq!(r.counters[0].direction, "egress");
        assert_eq!(r.counters[0].protocol, "udp");
        assert_eq!((r.counters[0].packets, r.counters[0].bytes), (3, 300));
        assert_eq!(r.reasons[0].reason, "truncated-ipv4");
        assert_eq!(r.reasons[0].count, 2);
        Ok(())
    }

    #[tokio::test]
    async fn bind_refuses_a_live_socket_and_replaces_a_stale_one() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("shoald-api-test-{}", std::process::id()));
        let path = dir.join("s.sock");
        let live = bind(&path).await?;
        assert!(matches!(bind(&path).await, Err(ApiError::InUse { .. })));
        drop(live);
        // The file is still there but nobody listens: a crashed daemon's leftover.
        assert!(path.exists());
        let again = bind(&path).await?;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(again);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
