//! `Control`: the operator's API, for managers (and the local socket) only.

use shoal_api::cluster::v1::{
    CaStatusReply, CaStatusRequest, CreateNetworkRequest, CreateSecretRequest,
    CreateServiceRequest, JoinTokenReply, JoinTokenRequest, ListNetworksReply, ListNetworksRequest,
    ListNodesReply, ListNodesRequest, ListSecretsReply, ListSecretsRequest, ListServicesReply,
    ListServicesRequest, ListTasksReply, ListTasksRequest, NetworkRef, NetworkSummary, NodeDetail,
    NodeRef, RemoveNetworkReply, RemoveNodeReply, RemoveNodeRequest, RemoveSecretReply,
    RemoveServiceReply, RotateCaRequest, ScaleServiceRequest, SecretRef, SecretSummary,
    ServiceLogsRequest, ServiceRef, ServiceSummary, UpdateNodeRequest, UpdateServiceRequest,
    UpdateSwarmReply, UpdateSwarmRequest, control_server::Control,
};
use tonic::{Request, Response, Status};

use super::{Api, LogStream, require_manager};
use crate::manager::{cluster, logs, networks, nodes, pki, secrets, services};

#[tonic::async_trait]
impl Control for Api {
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesReply>, Status> {
        require_manager(&req)?;
        let nodes = nodes::list(&self.0).await?;
        Ok(Response::new(ListNodesReply { nodes }))
    }

    async fn inspect_node(&self, req: Request<NodeRef>) -> Result<Response<NodeDetail>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            nodes::inspect(&self.0, &req.get_ref().node).await?,
        ))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            nodes::update(&self.0, req.into_inner()).await?,
        ))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeReply>, Status> {
        require_manager(&req)?;
        let id = nodes::remove(&self.0, req.get_ref()).await?;
        Ok(Response::new(RemoveNodeReply { id }))
    }

    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenReply>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            cluster::join_token(&self.0, req.into_inner()).await?,
        ))
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
        Ok(Response::new(pki::status(&*self.0.read().await?)?))
    }

    async fn rotate_ca(
        &self,
        req: Request<RotateCaRequest>,
    ) -> Result<Response<CaStatusReply>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            cluster::rotate_ca(&self.0, req.get_ref().cert_expiry_secs).await?,
        ))
    }

    async fn update_swarm(
        &self,
        req: Request<UpdateSwarmRequest>,
    ) -> Result<Response<UpdateSwarmReply>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            cluster::update_swarm(&self.0, req.into_inner()).await?,
        ))
    }

    type ServiceLogsStream = LogStream;

    async fn service_logs(
        &self,
        req: Request<ServiceLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        require_manager(&req)?;
        Ok(Response::new(
            logs::stream(self.0.clone(), req.into_inner()).await?,
        ))
    }
}
