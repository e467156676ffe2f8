//! `Join`: open to anyone; the join token decides.

use shoal_api::cluster::v1::{JoinReply, JoinRequest, join_server::Join};
use tonic::{Request, Response, Status};

use super::{Api, peer};

#[tonic::async_trait]
impl Join for Api {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let peer_ip = peer(&req).map(|p| p.addr.ip());
        let reply = crate::manager::join::join(&self.0, req.into_inner(), peer_ip).await?;
        Ok(Response::new(reply))
    }
}
