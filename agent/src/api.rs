//! The local node API (`shoal.node.v1.Node`) served on a root-only Unix socket.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use shoal_api::{
    cluster::v1::control_server::ControlServer,
    node::v1::{
        CountedProtocol, Direction, DoctorReply, DoctorRequest, ImageDetail, ImageListReply,
        ImageListRequest, ImageLoadChunk, ImageLoadReply, ImageRef, ImageRemoveReply,
        ImageRemoveRequest, ImageTagRequest, InfoReply, InfoRequest, MeshCounter, ProtoCounter,
        ReasonCounter, StatsReply, StatsRequest, SwarmInitReply, SwarmInitRequest, SwarmJoinReply,
        SwarmJoinRequest, SwarmLeaveReply, SwarmLeaveRequest, SwarmUnlockReply, SwarmUnlockRequest,
        UnlockKeyReply, UnlockKeyRequest, VolumeDetail, VolumeListReply, VolumeListRequest,
        VolumeRef, VolumeRemoveReply,
        node_server::{Node, NodeServer},
    },
};
use shoal_controlplane::manager::{Api, LocalCaller};

/// The contract's counter direction on the wire.
fn direction(d: shoal_common::stats::Direction) -> Direction {
    match d {
        shoal_common::stats::Direction::Ingress => Direction::Ingress,
        shoal_common::stats::Direction::Egress => Direction::Egress,
    }
}

/// The contract's protocol class on the wire.
fn counted(p: shoal_common::stats::Proto) -> CountedProtocol {
    use shoal_common::stats::Proto;
    match p {
        Proto::Tcp => CountedProtocol::Tcp,
        Proto::Udp => CountedProtocol::Udp,
        Proto::Icmp => CountedProtocol::Icmp,
        Proto::Ipv4Other => CountedProtocol::Ipv4Other,
        Proto::Ipv6 => CountedProtocol::Ipv6,
        Proto::Arp => CountedProtocol::Arp,
        Proto::Other => CountedProtocol::Other,
    }
}
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{
    Request, Response, Status,
    codegen::{BoxFuture, Context, Poll, Service, http},
    server::NamedService,
};

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

/// The cluster `Control` API on the local socket, handed at each call to
/// this node's manager (a node becomes one, or stops being one, while the
/// socket lives), or refused with docker's words on a worker or a locked
/// manager. Every Control RPC passes through unchanged, so none is written
/// twice.
#[derive(Clone)]
pub struct LocalControl {
    swarm: Arc<Swarm>,
}

impl NamedService for LocalControl {
    const NAME: &'static str = <ControlServer<Api> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for LocalControl
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let swarm = self.swarm.clone();
        Box::pin(async move {
            match swarm.manager().await {
                Ok(m) => {
                    // The caller is root on this node: it acts with the
                    // node's own role, said explicitly, as the manager's
                    // checks refuse a request that names no one.
                    let role = m.credentials().identity().role();
                    req.extensions_mut().insert(LocalCaller { role });
                    ControlServer::new(Api(m)).call(req).await
                }
                Err(e) => Ok(Status::from(e).into_http()),
            }
        })
    }
}

#[tonic::async_trait]
impl<S: StatsSource> Node for NodeApi<S> {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoReply>, Status> {
        let i = &self.info;
        Ok(Response::new(InfoReply {
            hostname: i.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: shoal_buildinfo::COMMIT.into(),
            data_interface: i.data_interface.clone(),
            data_ifindex: i.data_ifindex,
            attach_mode: i.attach_mode.into(),
            programs: i.programs.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            state_dir: i.state_dir.display().to_string(),
            swarm: Some(self.swarm.info().await),
            secrets_received: self.swarm.env().secrets.received_ids(),
            secrets_held: self.swarm.env().secrets.held_ids(),
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

    async fn image_load(
        &self,
        req: Request<tonic::Streaming<ImageLoadChunk>>,
    ) -> Result<Response<ImageLoadReply>, Status> {
        let images = &self.swarm.env().images;
        let loaded = images.load(req.into_inner()).await?;
        Ok(Response::new(ImageLoadReply { loaded }))
    }

    async fn image_list(
        &self,
        _: Request<ImageListRequest>,
    ) -> Result<Response<ImageListReply>, Status> {
        let images = self.swarm.env().images.list().await?;
        Ok(Response::new(ImageListReply { images }))
    }

    async fn image_inspect(&self, req: Request<ImageRef>) -> Result<Response<ImageDetail>, Status> {
        let detail = self
            .swarm
            .env()
            .images
            .inspect(req.into_inner().image)
            .await?;
        Ok(Response::new(detail))
    }

    async fn image_remove(
        &self,
        req: Request<ImageRemoveRequest>,
    ) -> Result<Response<ImageRemoveReply>, Status> {
        let r = self
            .swarm
            .env()
            .images
            .remove(req.into_inner().image)
            .await?;
        Ok(Response::new(r))
    }

    async fn image_tag(
        &self,
        req: Request<ImageTagRequest>,
    ) -> Result<Response<ImageDetail>, Status> {
        let r = req.into_inner();
        let detail = self.swarm.env().images.tag(r.source, r.target).await?;
        Ok(Response::new(detail))
    }

    async fn volume_create(
        &self,
        req: Request<VolumeRef>,
    ) -> Result<Response<VolumeDetail>, Status> {
        let volumes = &self.swarm.env().volumes;
        let name = req.into_inner().name;
        volumes.create(&name)?;
        Ok(Response::new(volumes.inspect(&name)?))
    }

    async fn volume_list(
        &self,
        _: Request<VolumeListRequest>,
    ) -> Result<Response<VolumeListReply>, Status> {
        let volumes = self.swarm.env().volumes.list()?;
        Ok(Response::new(VolumeListReply { volumes }))
    }

    async fn volume_inspect(
        &self,
        req: Request<VolumeRef>,
    ) -> Result<Response<VolumeDetail>, Status> {
        Ok(Response::new(
            self.swarm.env().volumes.inspect(&req.into_inner().name)?,
        ))
    }

    async fn volume_remove(
        &self,
        req: Request<VolumeRef>,
    ) -> Result<Response<VolumeRemoveReply>, Status> {
        self.swarm.env().volumes.remove(&req.into_inner().name)?;
        Ok(Response::new(VolumeRemoveReply {}))
    }

    async fn doctor(&self, _: Request<DoctorRequest>) -> Result<Response<DoctorReply>, Status> {
        Ok(Response::new(DoctorReply {
            hostname: self.info.hostname.clone(),
            checks: crate::doctor::run(self.swarm.env()).await,
        }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let s = self.stats.stats()?;
        let (mesh_reasons, groups) = {
            let mesh = self.swarm.mesh().lock().unwrap_or_else(|e| e.into_inner());
            (mesh.maps.reasons()?, mesh.group_stats()?)
        };
        Ok(Response::new(StatsReply {
            mesh_reasons: mesh_reasons
                .iter()
                .map(|(r, n)| ReasonCounter {
                    reason: r.name().into(),
                    count: *n,
                })
                .collect(),
            mesh: groups
                .into_iter()
                .map(|g| MeshCounter {
                    service_id: g.key.service_id.clone(),
                    service: g.service,
                    scope: match &g.key.scope {
                        shoal_mesh::Scope::Network(n) => format!("network {n}"),
                        shoal_mesh::Scope::Host => "host".into(),
                    },
                    backends: g.backends,
                    packets: g.stats.packets,
                    bytes: g.stats.bytes,
                    reply_packets: g.stats.reply_packets,
                    reply_bytes: g.stats.reply_bytes,
                    new_flows: g.stats.new_flows,
                    remote: g.stats.remote,
                    drops: g.stats.drops,
                })
                .collect(),
            hostname: self.info.hostname.clone(),
            data_interface: self.info.data_interface.clone(),
            counters: s
                .counters
                .iter()
                .map(|(dir, proto, c)| ProtoCounter {
                    direction: direction(*dir).into(),
                    protocol: counted(*proto).into(),
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
            gossip: gossip_counters(&self.swarm.env().view),
            ipsec: ipsec_counters(&self.swarm.env().view),
            wireguard: self
                .swarm
                .env()
                .wireguard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters()
                .into_iter()
                .map(|(reason, count)| ReasonCounter {
                    reason: reason.into(),
                    count,
                })
                .collect(),
        }))
    }
}

/// Sealed gossip's counters, and the endpoint records it ignored; none
/// while gossip does not run.
fn gossip_counters(view: &std::sync::Mutex<crate::worker::NodeView>) -> Vec<ReasonCounter> {
    let (gossip, disagreed) = {
        let v = view.lock().unwrap_or_else(|e| e.into_inner());
        (v.gossip.clone(), v.gossip_disagreed.clone())
    };
    let Some(g) = gossip else {
        return Vec::new();
    };
    let s = g.stats();
    let disagreed = disagreed.map_or(0, |d| d.load(std::sync::atomic::Ordering::Relaxed));
    [
        ("sealed", s.sealed),
        ("opened", s.opened),
        ("dropped cleartext", s.dropped_cleartext),
        ("dropped unknown key", s.dropped_unknown_key),
        ("dropped forged", s.dropped_forged),
        ("dropped before key ring", s.dropped_no_ring),
        ("unsent before key ring", s.unsent_no_ring),
        ("endpoint disagrees with control plane", disagreed),
    ]
    .into_iter()
    .map(|(reason, count)| ReasonCounter {
        reason: reason.into(),
        count,
    })
    .collect()
}

/// IPsec's counters; none while the node has no xfrm socket.
fn ipsec_counters(view: &std::sync::Mutex<crate::worker::NodeView>) -> Vec<ReasonCounter> {
    let ipsec = view.lock().unwrap_or_else(|e| e.into_inner()).ipsec.clone();
    let Some(ipsec) = ipsec else {
        return Vec::new();
    };
    let s = ipsec.lock().unwrap_or_else(|e| e.into_inner()).status();
    [
        ("peers", s.peers),
        ("policies", s.policies),
        ("states", s.states),
        ("peers blocked before the key ring", s.blocked_without_keys),
        ("key rotations", s.rotations),
        ("left by an earlier shoald, removed", s.swept),
        ("xfrm writes refused", s.refused),
        ("kernel without ESP", u64::from(s.unsupported)),
    ]
    .into_iter()
    .map(|(reason, count)| ReasonCounter {
        reason: reason.into(),
        count,
    })
    .collect()
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
        .add_service(control)
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
        // Kept for the test process's life: the store is not used here.
        let images_dir = tempfile::tempdir().expect("tempdir").keep();
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
                crate::worker::NodeEnv {
                    wireguard: Arc::default(),
                    drain_suspected: true,
                    secrets: Arc::default(),
                    log_readers: Default::default(),
                    images: Arc::new(
                        crate::images::Images::open(&images_dir.join("images"), Default::default())
                            .expect("image store"),
                    ),
                    volumes: Arc::new(crate::volumes::Volumes::new(&images_dir.join("volumes"))),
                    tasks_dir: "/nonexistent/tasks".into(),
                    runtime_dir: "/nonexistent/runtime".into(),
                    state_dir: "/nonexistent".into(),
                    data_iface: "eth0".into(),
                    data_ip: None,
                    // Loads a real object: the suite runs as root anyway.
                    view: Arc::default(),
                    mesh: Arc::new(std::sync::Mutex::new(shoal_mesh::MeshState::new({
                        // The pins go at once; the loaded maps stay.
                        let pins = crate::datapath::mesh::TestPins::new();
                        crate::datapath::mesh::Mesh::load(pins.path())
                            .expect("load the mesh (needs root)")
                    }))),
                },
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
        use shoal_api::{node::v1 as pb, words::word};
        assert_eq!(word::<pb::Direction>(r.counters[0].direction), "egress");
        assert_eq!(word::<pb::CountedProtocol>(r.counters[0].protocol), "udp");
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
