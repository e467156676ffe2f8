//! `Control`: the operator's API, for managers, operators' client
//! certificates and the local socket (see `authz`).
//! Every RPC has one shape, written once by `control!`: check the caller,
//! then call the domain module with the manager and the request.

use shoal_api::cluster::v1::{
    CaStatusReply, CaStatusRequest, ConfigRef, ConfigSummary, CreateConfigRequest,
    CreateNetworkRequest, CreateSecretRequest, CreateServiceRequest, IssueClientCertReply,
    IssueClientCertRequest, JoinTokenReply, JoinTokenRequest, ListConfigsReply, ListConfigsRequest,
    ListImagesReply, ListImagesRequest, ListNetworksReply, ListNetworksRequest, ListNodesReply,
    ListNodesRequest, ListSecretsReply, ListSecretsRequest, ListServicesReply, ListServicesRequest,
    ListTasksReply, ListTasksRequest, NetworkRef, NetworkSummary, NodeDetail, NodeRef,
    RemoveConfigReply, RemoveNetworkReply, RemoveNodeReply, RemoveNodeRequest, RemoveSecretReply,
    RemoveServiceReply, RotateCaRequest, ScaleServiceRequest, SecretRef, SecretSummary,
    ServiceLogsRequest, ServiceRef, ServiceSummary, UpdateNodeRequest, UpdateServiceRequest,
    UpdateSwarmReply, UpdateSwarmRequest, control_server::Control,
};
use tonic::{Request, Response, Status};

use super::{Api, LogStream, Need, require};
use crate::manager::{cluster, configs, images, logs, networks, nodes, pki, secrets, services};

/// The need of an RPC: `Operator` unless it says otherwise.
macro_rules! need {
    () => {
        Need::Operator
    };
    ($need:ident) => {
        Need::$need
    };
}

/// `rpc(Request) -> Reply [Need] = |m, r| body;` implements `rpc` as: the
/// caller must meet `Need` (`Operator` when omitted: managers, client
/// certificates, the local socket), then `body` with `m` the
/// `Arc<Manager>` and `r` the request.
macro_rules! control {
    ($($rpc:ident($req:ty) -> $reply:ty $([$need:ident])? = |$m:ident, $r:pat_param| $body:expr;)*) => {
        #[tonic::async_trait]
        impl Control for Api {
            type ServiceLogsStream = LogStream;

            $(async fn $rpc(&self, req: Request<$req>) -> Result<Response<$reply>, Status> {
                require(&req, need!($($need)?))?;
                let ($m, $r) = (&self.0, req.into_inner());
                Ok(Response::new($body))
            })*
        }
    };
}

control! {
    list_nodes(ListNodesRequest) -> ListNodesReply =
        |m, _| ListNodesReply { nodes: nodes::list(m).await?, raft_term: m.raft_term() };
    inspect_node(NodeRef) -> NodeDetail = |m, r| nodes::inspect(m, &r.node).await?;
    update_node(UpdateNodeRequest) -> NodeDetail = |m, r| nodes::update(m, r).await?;
    remove_node(RemoveNodeRequest) -> RemoveNodeReply =
        |m, r| RemoveNodeReply { id: nodes::remove(m, &r).await? };
    join_token(JoinTokenRequest) -> JoinTokenReply = |m, r| cluster::join_token(m, r).await?;

    create_secret(CreateSecretRequest) -> SecretSummary = |m, r| secrets::create(m, r).await?;
    list_secrets(ListSecretsRequest) -> ListSecretsReply =
        |m, _| ListSecretsReply { secrets: secrets::list(m).await? };
    inspect_secret(SecretRef) -> SecretSummary = |m, r| secrets::inspect(m, &r).await?;
    remove_secret(SecretRef) -> RemoveSecretReply =
        |m, r| RemoveSecretReply { id: secrets::remove(m, &r).await? };

    create_config(CreateConfigRequest) -> ConfigSummary = |m, r| configs::create(m, r).await?;
    list_configs(ListConfigsRequest) -> ListConfigsReply =
        |m, _| ListConfigsReply { configs: configs::list(m).await? };
    inspect_config(ConfigRef) -> ConfigSummary = |m, r| configs::inspect(m, &r).await?;
    remove_config(ConfigRef) -> RemoveConfigReply =
        |m, r| RemoveConfigReply { id: configs::remove(m, &r).await? };

    create_network(CreateNetworkRequest) -> NetworkSummary =
        |m, r| networks::create(m, r).await?;
    list_networks(ListNetworksRequest) -> ListNetworksReply =
        |m, _| ListNetworksReply { networks: networks::list(m).await? };
    inspect_network(NetworkRef) -> NetworkSummary = |m, r| networks::inspect(m, &r).await?;
    remove_network(NetworkRef) -> RemoveNetworkReply =
        |m, r| RemoveNetworkReply { id: networks::remove(m, &r).await? };

    create_service(CreateServiceRequest) -> ServiceSummary =
        |m, r| services::create(m, r).await?;
    list_services(ListServicesRequest) -> ListServicesReply =
        |m, _| ListServicesReply { services: services::list(m).await? };
    inspect_service(ServiceRef) -> ServiceSummary = |m, r| services::inspect(m, &r).await?;
    scale_service(ScaleServiceRequest) -> ServiceSummary = |m, r| services::scale(m, &r).await?;
    update_service(UpdateServiceRequest) -> ServiceSummary =
        |m, r| services::update(m, &r).await?;
    remove_service(ServiceRef) -> RemoveServiceReply =
        |m, r| RemoveServiceReply { id: services::remove(m, &r).await? };
    list_tasks(ListTasksRequest) -> ListTasksReply =
        |m, r| ListTasksReply { tasks: services::tasks(m, &r).await? };
    service_logs(ServiceLogsRequest) -> LogStream = |m, r| logs::stream(m.clone(), r).await?;

    ca_status(CaStatusRequest) -> CaStatusReply = |m, _| pki::status(&*m.read().await?)?;
    rotate_ca(RotateCaRequest) -> CaStatusReply =
        |m, r| cluster::rotate_ca(m, r.cert_expiry_secs).await?;
    update_swarm(UpdateSwarmRequest) -> UpdateSwarmReply =
        |m, r| cluster::update_swarm(m, r).await?;

    list_images(ListImagesRequest) -> ListImagesReply =
        |m, _| ListImagesReply { images: images::list(&*m.read().await?) };
    issue_client_cert(IssueClientCertRequest) -> IssueClientCertReply [Admin] =
        |m, r| m.issue_client_cert(&r.csr_pem, &r.name).await?;
}
