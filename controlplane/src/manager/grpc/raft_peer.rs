//! `RaftPeer`: openraft's RPCs and the followers' forwarded requests, as
//! JSON payloads between managers.

use shoal_api::cluster::v1::{RaftPayload, raft_peer_server::RaftPeer};
use tonic::{Request, Response, Status};

use super::{Api, require_manager};
use crate::manager::{Forward, ForwardReply, ManagerError};

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
            Err(e) => encode(&Err::<ForwardReply, _>(e.to_string())),
        }
    }
}
