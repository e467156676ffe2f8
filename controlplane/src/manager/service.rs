//! The gRPC services a manager serves on 2377, and who may call which:
//! `Join` anyone (the token decides), `Dispatcher` any node, `RaftPeer` and
//! `Control` managers only. Over the local Unix socket (root only) there is
//! no peer certificate and `Control` is open to the operator.

use std::{sync::Arc, time::Duration};

use shoal_api::cluster::v1::{
    AssignmentSet, AssignmentsRequest, CaRoots, CaStatusReply, CaStatusRequest,
    CreateNetworkRequest, CreateSecretRequest, CreateServiceRequest, HeartbeatReply,
    HeartbeatRequest, JoinReply, JoinRequest, JoinTokenReply, JoinTokenRequest, ListNetworksReply,
    ListNetworksRequest, ListNodesReply, ListNodesRequest, ListSecretsReply, ListSecretsRequest,
    ListServicesReply, ListServicesRequest, ListTasksReply, ListTasksRequest, NetworkRef,
    NetworkSummary, NodeDetail, NodeRef, NodeSummary, RaftPayload, RemoveNetworkReply,
    RemoveNodeReply, RemoveNodeRequest, RemoveSecretReply, RemoveServiceReply,
    RenewCertificateReply, RenewCertificateRequest, ReportTasksReply, ReportTasksRequest,
    RotateCaRequest, ScaleServiceRequest, SecretRef, SecretSummary, ServiceRef, ServiceSummary,
    UpdateNodeRequest, UpdateServiceRequest, UpdateSwarmReply, UpdateSwarmRequest,
    control_server::{Control, ControlServer},
    dispatcher_server::{Dispatcher, DispatcherServer},
    join_server::{Join, JoinServer},
    raft_peer_server::{RaftPeer, RaftPeerServer},
};
use shoal_ca::{CsrPem, JoinToken, JoinTokens, NodeRole, generate_node_id, rustls::ServerConfig};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::{Forward, Manager, ManagerError, networks, secrets, services, transport::PeerInfo};
use crate::model::{
    Availability, ClusterState, Command, Labels, Node, NodeRole as ModelRole, NodeState,
    SecretString,
};
use crate::{dispatch, wire};

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
            | ManagerError::NotFound { .. } => Status::not_found(e.to_string()),
            ManagerError::Rejected(crate::model::ApplyError::PortInUse { .. }) => {
                Status::already_exists(e.to_string())
            }
            ManagerError::Rejected(_) => Status::failed_precondition(e.to_string()),
            ManagerError::Invalid { .. } | ManagerError::Validation(_) => {
                Status::invalid_argument(e.to_string())
            }
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
    let incoming = super::transport::tls_incoming(listener, tls);
    let api = Api(m);
    let routes = extra
        .unwrap_or_default()
        .add_service(RaftPeerServer::new(api.clone()))
        .add_service(JoinServer::new(api.clone()))
        .add_service(DispatcherServer::new(api.clone()))
        .add_service(ControlServer::new(api));
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

/// The caller's certificate, or `None` when it came over the local socket.
fn peer<T>(req: &Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

fn require_manager<T>(req: &Request<T>) -> Result<(), Status> {
    match peer(req) {
        None => Ok(()),
        Some(PeerInfo {
            identity: Some(id), ..
        }) if id.role() == NodeRole::Manager => Ok(()),
        Some(_) => Err(Status::permission_denied(
            "a manager certificate is required",
        )),
    }
}

fn require_node<T>(req: &Request<T>) -> Result<String, Status> {
    match peer(req) {
        Some(PeerInfo {
            identity: Some(id), ..
        }) => Ok(id.node_id().to_owned()),
        _ => Err(Status::unauthenticated("a node certificate is required")),
    }
}

fn decode<T: serde::de::DeserializeOwned>(p: &RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&p.json).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(v)
        .map(|json| Response::new(RaftPayload { json }))
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl RaftPeer for Api {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require_manager(&req)?;
        encode(&self.0.raft.append_entries(decode(req.get_ref())?).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        require_manager(&req)?;
        encode(&self.0.raft.vote(decode(req.get_ref())?).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require_manager(&req)?;
        encode(&self.0.raft.install_snapshot(decode(req.get_ref())?).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        require_manager(&req)?;
        let fwd: Forward = decode(req.get_ref())?;
        match self.0.handle_forward(fwd).await {
            Ok(reply) => encode(&Ok::<_, String>(reply)),
            Err(ManagerError::NoLeader) => Err(ManagerError::NoLeader.into()),
            Err(e) => encode(&Err::<super::ForwardReply, _>(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl Join for Api {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let peer_ip = peer(&req).map(|p| p.addr.ip());
        let r = req.into_inner();
        let token = JoinToken::parse(r.token.trim())
            .map_err(|e| Status::invalid_argument(format!("invalid join token: {e}")))?;
        let cluster = self
            .0
            .read()
            .await?
            .clusters
            .values()
            .next()
            .cloned()
            .ok_or(ManagerError::NoCluster)?;
        let tokens = JoinTokens::from_tokens(
            parse_stored(&cluster.join_tokens.worker)?,
            parse_stored(&cluster.join_tokens.manager)?,
        );
        let role = tokens.authorize(&token).map_err(|_| {
            Status::permission_denied(
                "the join token is not valid for this swarm: it may have been rotated. Get the \
                 current one with `shoal swarm join-token worker|manager` on a manager",
            )
        })?;
        if r.hostname.trim().is_empty() {
            return Err(Status::invalid_argument("hostname must not be empty"));
        }
        // During a rotation the new root issues, and the node trusts both.
        let ca = super::pki::issuing_root(&cluster)?;
        let trusted = super::pki::trust_roots(&cluster)?;
        let node_id = generate_node_id();
        let validity = Duration::from_secs(cluster.settings.node_cert_expiry_secs);
        let cert_pem = ca
            .issue(
                &CsrPem::new(r.csr_pem),
                &node_id,
                role,
                &cluster.id,
                validity,
            )
            .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
        // The address the node advertises, else the one it came from.
        let addr = r
            .advertise_addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| r.advertise_addr.parse::<std::net::IpAddr>())
            .ok()
            .or(peer_ip);
        let node = Node {
            id: node_id.clone(),
            version: 0,
            hostname: r.hostname.clone(),
            // Workers until Raft admits them: `add_manager` flips the role.
            role: ModelRole::Worker,
            availability: Availability::Active,
            labels: Labels::new(),
            addr,
            status: NodeState::Ready,
            manager: None,
            tls: Default::default(),
        };
        self.0.propose(Command::CreateNode(node)).await?;
        self.0.heartbeat(&node_id, None).await?;
        tracing::info!(node = %node_id, hostname = %r.hostname, ?role, "node joined");
        Ok(Response::new(JoinReply {
            node_id,
            role: wire::encode(role),
            cluster_id: cluster.id.clone(),
            cert_pem,
            ca_pem: trusted.iter().map(|c| c.pem()).collect(),
            managers: self.0.manager_addrs(),
            heartbeat_secs: cluster.settings.dispatcher_heartbeat_secs,
        }))
    }
}

fn parse_stored(t: &SecretString) -> Result<JoinToken, Status> {
    JoinToken::parse(&t.0).map_err(|e| Status::internal(format!("stored join token: {e}")))
}

#[tonic::async_trait]
impl Dispatcher for Api {
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let node_id = require_node(&req)?;
        if !req.get_ref().node_id.is_empty() && req.get_ref().node_id != node_id {
            return Err(Status::permission_denied(
                "a node may only heartbeat for itself",
            ));
        }
        let tls = req.get_ref().tls.as_ref().map(|t| crate::model::NodeTls {
            cert_issuer: t.cert_issuer.clone(),
            cert_not_after_unix: t.cert_not_after_unix,
        });
        self.0.heartbeat(&node_id, tls).await?;
        let period = self.0.heartbeat_period().await;
        let roots = self.0.ca_roots().await?;
        // Applied state, as for the roots: a promotion seen one period late
        // costs nothing.
        let role = match self.0.local_state().await.nodes.get(&node_id) {
            Some(n) if n.wants_manager() => wire::encode(ModelRole::Manager),
            Some(_) => wire::encode(ModelRole::Worker),
            None => 0,
        };
        Ok(Response::new(HeartbeatReply {
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            managers: self.0.manager_addrs(),
            ca: Some(CaRoots {
                issuer: roots.issuer,
                trusted: roots.trusted,
            }),
            role,
        }))
    }

    async fn renew_certificate(
        &self,
        req: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateReply>, Status> {
        let node_id = require_node(&req)?;
        let (cert_pem, trusted_roots_pem) = self
            .0
            .renew_certificate(&node_id, &req.get_ref().csr_pem)
            .await?;
        Ok(Response::new(RenewCertificateReply {
            cert_pem,
            trusted_roots_pem,
        }))
    }

    type AssignmentsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<AssignmentSet, Status>> + Send>>;

    async fn assignments(
        &self,
        req: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let node_id = own_node(&req, &req.get_ref().node_id)?;
        let m = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut metrics = m.raft.metrics();
            let mut applied = None;
            let mut last: Option<AssignmentSet> = None;
            loop {
                let set = dispatch::assignments(&*m.local_state().await, &node_id);
                // The version moves with every change anywhere; only a change
                // to this node's picture is worth sending.
                let same = last.as_ref().is_some_and(|l| {
                    l.tasks == set.tasks
                        && l.networks == set.networks
                        && l.endpoints == set.endpoints
                        && l.mesh == set.mesh
                        && l.nodes == set.nodes
                });
                if !same {
                    if tx.send(Ok(set.clone())).await.is_err() {
                        return;
                    }
                    last = Some(set);
                }
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        changed = metrics.changed() => if changed.is_err() { return },
                        // A periodic resend guards against a missed wake-up.
                        _ = tokio::time::sleep(ASSIGNMENT_REFRESH) => break,
                    }
                    let now = metrics.borrow().last_applied;
                    if now != applied {
                        applied = now;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_tasks(
        &self,
        req: Request<ReportTasksRequest>,
    ) -> Result<Response<ReportTasksReply>, Status> {
        let node_id = own_node(&req, &req.get_ref().node_id)?;
        for r in &req.get_ref().reports {
            for attempt in 0.. {
                let cmd = {
                    let state = self.0.read().await?;
                    dispatch::report(&state, &node_id, r, services::now_unix())
                };
                let cmd = match cmd {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    // A task removed meanwhile (service rm): nothing to record.
                    Err(dispatch::ReportError::UnknownTask(_)) => break,
                    Err(e) => return Err(Status::invalid_argument(e.to_string())),
                };
                match self.0.propose(cmd).await {
                    Ok(_) => break,
                    Err(ManagerError::Rejected(crate::model::ApplyError::VersionMismatch {
                        ..
                    })) if attempt < 10 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Response::new(ReportTasksReply {}))
    }
}

/// How often an assignment stream re-checks the state without a wake-up.
const ASSIGNMENT_REFRESH: Duration = Duration::from_secs(10);

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

/// Why a node that does not heartbeat cannot be promoted, and what to do.
fn promote_down(node: &Node) -> String {
    format!(
        "node {} ({}) is {}: a promotion happens over the node's own session, so its shoald must \
         be running and reach a manager; start it and promote again, or `shoal node rm` it and \
         join a new manager with `shoal swarm join-token manager`",
        node.hostname,
        node.id,
        wire::word(node.status),
    )
}

/// A node certificate lifetime, checked against what the CA can issue.
fn cert_expiry(flag: &str, secs: u64) -> Result<u64, Status> {
    let min = shoal_ca::MIN_CERT_VALIDITY.as_secs();
    if secs < min {
        return Err(Status::invalid_argument(format!(
            "{flag} {secs}s: must be at least {min}s"
        )));
    }
    Ok(secs)
}

/// Finds a node by id, unique id prefix or hostname, as docker does.
fn find_node<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Node, ManagerError> {
    if let Some(n) = state.nodes.get(key) {
        return Ok(n);
    }
    let matches: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| n.hostname == key || (!key.is_empty() && n.id.starts_with(key)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ManagerError::NotFound {
            what: format!("node {key}"),
        }),
        _ => Err(ManagerError::Invalid {
            what: format!(
                "node {key} is ambiguous ({} matches); use its ID",
                matches.len()
            ),
        }),
    }
}

impl Api {
    fn summary(&self, n: &Node) -> NodeSummary {
        let leader = self.0.leader();
        let manager_status = match &n.manager {
            None => "",
            Some(m) if Some(m.raft_id) == leader => "Leader",
            Some(_) if n.status == NodeState::Ready => "Reachable",
            Some(_) => "Unreachable",
        };
        NodeSummary {
            id: n.id.clone(),
            hostname: n.hostname.clone(),
            status: wire::encode(n.status),
            availability: wire::encode(n.availability),
            manager_status: manager_status.into(),
            role: wire::encode(if n.manager.is_some() || n.role == ModelRole::Manager {
                ModelRole::Manager
            } else {
                ModelRole::Worker
            }),
            addr: n.addr.map(|a| a.to_string()).unwrap_or_default(),
            labels: n.labels.clone().into_iter().collect(),
            version: n.version,
            last_heartbeat_unix: 0,
            self_: n.id == self.0.node_id(),
        }
    }
}

#[tonic::async_trait]
impl Control for Api {
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesReply>, Status> {
        require_manager(&req)?;
        let state = self.0.read().await?;
        let nodes = state.nodes.values().map(|n| self.summary(n)).collect();
        Ok(Response::new(ListNodesReply { nodes }))
    }

    async fn inspect_node(&self, req: Request<NodeRef>) -> Result<Response<NodeDetail>, Status> {
        require_manager(&req)?;
        let state = self.0.read().await?;
        let n = find_node(&state, &req.get_ref().node)?;
        Ok(Response::new(NodeDetail {
            node: Some(self.summary(n)),
            cert_not_after_unix: n.tls.cert_not_after_unix,
            raft_addr: n
                .manager
                .as_ref()
                .map(|m| m.addr.clone())
                .unwrap_or_default(),
        }))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        require_manager(&req)?;
        let r = req.into_inner();
        crate::validate::labels("--label-add", &r.label_add)?;
        for k in &r.label_rm {
            crate::validate::label_key("--label-rm", k)?;
        }
        let mut node = find_node(&*self.0.read().await?, &r.node)?.clone();
        let (id, version) = (node.id.clone(), node.version);
        let availability: Option<Availability> =
            wire::decode(|| "availability".into(), r.availability).map_err(ManagerError::from)?;
        if let Some(availability) = availability {
            node.availability = availability;
        }
        let role: Option<ModelRole> =
            wire::decode(|| "role".into(), r.role).map_err(ManagerError::from)?;
        for k in &r.label_rm {
            if node.labels.remove(k).is_none() {
                return Err(Status::invalid_argument(format!(
                    "label {k:?} is not set on this node"
                )));
            }
        }
        node.labels.extend(r.label_add.clone());
        match role {
            None => {}
            Some(ModelRole::Worker) if node.manager.is_some() => {
                let raft_id = node.manager.as_ref().map(|m| m.raft_id).unwrap_or_default();
                let managers = self
                    .0
                    .read()
                    .await?
                    .nodes
                    .values()
                    .filter(|n| n.manager.is_some())
                    .count();
                if managers <= 1 {
                    return Err(Status::failed_precondition(
                        "attempting to demote the last manager of the swarm",
                    ));
                }
                self.0.remove_manager(raft_id).await?;
                node.manager = None;
                node.role = ModelRole::Worker;
            }
            // In place, as swarm does: the node sees its new role in its
            // next heartbeat reply, gets a manager certificate, starts its
            // manager and joins Raft (`add_manager` records it as a voter).
            Some(ModelRole::Manager) if node.manager.is_none() => {
                if node.status != NodeState::Ready {
                    return Err(Status::failed_precondition(promote_down(&node)));
                }
                node.role = ModelRole::Manager;
            }
            // Called off before the node got into Raft.
            Some(ModelRole::Worker) if node.promotion_pending() => node.role = ModelRole::Worker,
            Some(ModelRole::Worker | ModelRole::Manager) => {}
        }
        self.0
            .propose(Command::UpdateNode {
                id: id.clone(),
                expected_version: version,
                node,
            })
            .await?;
        let state = self.0.read().await?;
        let n = find_node(&state, &id)?;
        Ok(Response::new(NodeDetail {
            node: Some(self.summary(n)),
            cert_not_after_unix: 0,
            raft_addr: String::new(),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeReply>, Status> {
        require_manager(&req)?;
        let r = req.into_inner();
        let (node, cluster) = {
            let state = self.0.read().await?;
            let node = find_node(&state, &r.node)?.clone();
            let cluster = state
                .clusters
                .values()
                .next()
                .cloned()
                .ok_or(ManagerError::NoCluster)?;
            (node, cluster)
        };
        if node.manager.is_some() {
            return Err(Status::failed_precondition(format!(
                "rpc error: node {} is a cluster manager and is a member of the raft cluster. It \
                 must be demoted to worker before removal",
                node.id
            )));
        }
        if node.status != NodeState::Down && !r.force {
            return Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed; stop it first, or use --force",
                node.id
            )));
        }
        self.0
            .propose(Command::RemoveNode {
                id: node.id.clone(),
                expected_version: node.version,
            })
            .await?;
        let mut c = cluster;
        let version = c.version;
        c.removed_nodes.insert(node.id.clone());
        self.0
            .propose(Command::UpdateCluster {
                id: c.id.clone(),
                expected_version: version,
                cluster: c,
            })
            .await?;
        self.0.removed_nodes().insert(node.id.clone());
        Ok(Response::new(RemoveNodeReply { id: node.id }))
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenReply>, Status> {
        require_manager(&req)?;
        let r = req.into_inner();
        let role = wire::decode::<NodeRole>(|| "role".into(), r.role)
            .map_err(ManagerError::from)?
            .ok_or_else(|| Status::invalid_argument("role: expected worker or manager"))?;
        let mut cluster = self
            .0
            .read()
            .await?
            .clusters
            .values()
            .next()
            .cloned()
            .ok_or(ManagerError::NoCluster)?;
        if r.rotate {
            let mut tokens = JoinTokens::from_tokens(
                parse_stored(&cluster.join_tokens.worker)?,
                parse_stored(&cluster.join_tokens.manager)?,
            );
            tokens.rotate(role);
            let fresh = tokens.get(role).to_string();
            match role {
                NodeRole::Worker => cluster.join_tokens.worker = SecretString(fresh),
                NodeRole::Manager => cluster.join_tokens.manager = SecretString(fresh),
            }
            let version = cluster.version;
            self.0
                .propose(Command::UpdateCluster {
                    id: cluster.id.clone(),
                    expected_version: version,
                    cluster: cluster.clone(),
                })
                .await?;
        }
        let token = match role {
            NodeRole::Worker => cluster.join_tokens.worker.0,
            NodeRole::Manager => cluster.join_tokens.manager.0,
        };
        Ok(Response::new(JoinTokenReply {
            role: r.role,
            token,
        }))
    }

    async fn create_secret(
        &self,
        req: Request<CreateSecretRequest>,
    ) -> Result<Response<SecretSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            secrets::create(&self.0, req.into_inner()).await?,
        ))
    }

    async fn list_secrets(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsReply>, Status> {
        require_manager(&req)?;
        let secrets = secrets::list(&self.0).await?;
        Ok(Response::new(ListSecretsReply { secrets }))
    }

    async fn inspect_secret(
        &self,
        req: Request<SecretRef>,
    ) -> Result<Response<SecretSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            secrets::inspect(&self.0, req.get_ref()).await?,
        ))
    }

    async fn remove_secret(
        &self,
        req: Request<SecretRef>,
    ) -> Result<Response<RemoveSecretReply>, Status> {
        require_manager(&req)?;
        let id = secrets::remove(&self.0, req.get_ref()).await?;
        Ok(Response::new(RemoveSecretReply { id }))
    }

    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<NetworkSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            networks::create(&self.0, req.into_inner()).await?,
        ))
    }

    async fn list_networks(
        &self,
        req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksReply>, Status> {
        require_manager(&req)?;
        let networks = networks::list(&self.0).await?;
        Ok(Response::new(ListNetworksReply { networks }))
    }

    async fn inspect_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<NetworkSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            networks::inspect(&self.0, req.get_ref()).await?,
        ))
    }

    async fn remove_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<RemoveNetworkReply>, Status> {
        require_manager(&req)?;
        let id = networks::remove(&self.0, req.get_ref()).await?;
        Ok(Response::new(RemoveNetworkReply { id }))
    }

    async fn create_service(
        &self,
        req: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            services::create(&self.0, req.into_inner()).await?,
        ))
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        require_manager(&req)?;
        let services = services::list(&self.0).await?;
        Ok(Response::new(ListServicesReply { services }))
    }

    async fn inspect_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            services::inspect(&self.0, req.get_ref()).await?,
        ))
    }

    async fn scale_service(
        &self,
        req: Request<ScaleServiceRequest>,
    ) -> Result<Response<ServiceSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            services::scale(&self.0, req.get_ref()).await?,
        ))
    }

    async fn update_service(
        &self,
        req: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceSummary>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            services::update(&self.0, req.get_ref()).await?,
        ))
    }

    async fn remove_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<RemoveServiceReply>, Status> {
        require_manager(&req)?;
        let id = services::remove(&self.0, req.get_ref()).await?;
        Ok(Response::new(RemoveServiceReply { id }))
    }

    async fn list_tasks(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksReply>, Status> {
        require_manager(&req)?;
        let tasks = services::tasks(&self.0, req.get_ref()).await?;
        Ok(Response::new(ListTasksReply { tasks }))
    }

    async fn ca_status(
        &self,
        req: Request<CaStatusRequest>,
    ) -> Result<Response<CaStatusReply>, Status> {
        require_manager(&req)?;
        Ok(Response::new(super::pki::status(&*self.0.read().await?)?))
    }

    async fn rotate_ca(
        &self,
        req: Request<RotateCaRequest>,
    ) -> Result<Response<CaStatusReply>, Status> {
        require_manager(&req)?;
        let secs = req.get_ref().cert_expiry_secs;
        let expiry = (secs != 0)
            .then(|| cert_expiry("--cert-expiry", secs))
            .transpose()?;
        self.0.rotate_ca(expiry).await?;
        Ok(Response::new(super::pki::status(&*self.0.read().await?)?))
    }

    async fn update_swarm(
        &self,
        req: Request<UpdateSwarmRequest>,
    ) -> Result<Response<UpdateSwarmReply>, Status> {
        require_manager(&req)?;
        let r = req.into_inner();
        let mut c = self
            .0
            .read()
            .await?
            .clusters
            .values()
            .next()
            .cloned()
            .ok_or(ManagerError::NoCluster)?;
        let version = c.version;
        if let Some(secs) = r.cert_expiry_secs {
            c.settings.node_cert_expiry_secs = cert_expiry("--cert-expiry", secs)?;
        }
        if let Some(secs) = r.dispatcher_heartbeat_secs {
            if secs == 0 {
                return Err(Status::invalid_argument(
                    "--dispatcher-heartbeat: must be at least 1s",
                ));
            }
            c.settings.dispatcher_heartbeat_secs = secs;
        }
        let mut unlock_key = String::new();
        match r.autolock {
            // Every manager follows the replicated key: each rewraps its own
            // store and seals its TLS key under it (or undoes that).
            Some(true) if c.unlock_key.0.is_empty() => {
                unlock_key = crate::store::UnlockKey::generate().format();
                c.unlock_key = SecretString(unlock_key.clone());
                c.settings.autolock = true;
            }
            Some(false) => {
                c.unlock_key = SecretString::default();
                c.settings.autolock = false;
            }
            Some(true) | None => {}
        }
        self.0
            .propose(Command::UpdateCluster {
                id: c.id.clone(),
                expected_version: version,
                cluster: c,
            })
            .await?;
        Ok(Response::new(UpdateSwarmReply { unlock_key }))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        req: Request<shoal_api::cluster::v1::ServiceLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            super::logs::stream(self.0.clone(), req.into_inner()).await?,
        ))
    }
}

/// A stream of log lines, as the `ServiceLogs` and `TaskLogs` RPCs return.
pub type LogStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<shoal_api::cluster::v1::LogLine, Status>> + Send>,
>;
