//! `Dispatcher`: a node's session, each node speaking only for itself.

use shoal_api::cluster::v1::{
    AckAppliedReply, AckAppliedRequest, AppliedVersionsReply, AppliedVersionsRequest,
    AssignmentSet, AssignmentsRequest, HeartbeatReply, HeartbeatRequest, RegisterImagesReply,
    RegisterImagesRequest, RenewCertificateReply, RenewCertificateRequest, ReportTasksReply,
    ReportTasksRequest, dispatcher_server::Dispatcher,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{Api, own_node, require_node};
use crate::manager::{images, sessions};

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
        let resources = req
            .get_ref()
            .resources
            .map(|r| crate::model::NodeResources {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            });
        let platform = req
            .get_ref()
            .platform
            .as_ref()
            .map(|p| crate::model::NodePlatform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
            });
        let wireguard_key = match req.get_ref().wireguard_key.as_slice() {
            [] => None,
            k if k.len() == 32 => {
                use base64::Engine;
                Some(base64::engine::general_purpose::STANDARD.encode(k))
            }
            k => {
                return Err(Status::invalid_argument(format!(
                    "wireguard_key: a WireGuard public key is 32 bytes, got {}",
                    k.len()
                )));
            }
        };
        let report = crate::model::NodeReport {
            tls,
            resources,
            platform,
            wireguard_key,
        };
        Ok(Response::new(
            sessions::heartbeat(&self.0, &node_id, report).await?,
        ))
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
        let rx = sessions::assignments(self.0.clone(), node_id);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok),
        )))
    }

    async fn register_images(
        &self,
        req: Request<RegisterImagesRequest>,
    ) -> Result<Response<RegisterImagesReply>, Status> {
        // The node speaks for itself only: its id comes from its certificate.
        let node_id = require_node(&req)?;
        images::register(&self.0, &node_id, req.into_inner()).await?;
        Ok(Response::new(RegisterImagesReply {}))
    }

    async fn report_tasks(
        &self,
        req: Request<ReportTasksRequest>,
    ) -> Result<Response<ReportTasksReply>, Status> {
        let node_id = own_node(&req, &req.get_ref().node_id)?;
        sessions::report_tasks(&self.0, &node_id, &req.get_ref().reports).await?;
        Ok(Response::new(ReportTasksReply {}))
    }

    async fn ack_applied(
        &self,
        req: Request<AckAppliedRequest>,
    ) -> Result<Response<AckAppliedReply>, Status> {
        // From its certificate: a node acknowledges for itself only.
        let node_id = require_node(&req)?;
        self.0.ack_applied(&node_id, req.get_ref().version);
        Ok(Response::new(AckAppliedReply {}))
    }

    async fn applied_versions(
        &self,
        req: Request<AppliedVersionsRequest>,
    ) -> Result<Response<AppliedVersionsReply>, Status> {
        require_node(&req)?;
        Ok(Response::new(AppliedVersionsReply {
            applied: self.0.applied_versions(),
        }))
    }
}
