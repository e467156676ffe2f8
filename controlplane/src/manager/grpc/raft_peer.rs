//! `RaftPeer`: openraft's RPCs and the followers' forwarded requests, as
//! JSON payloads between managers.

use openraft::raft::AppendEntriesResponse;
use shoal_api::cluster::v1::{RaftPayload, raft_peer_server::RaftPeer};
use tonic::{Request, Response, Status};

use super::{Api, require_manager};
use crate::manager::{Forward, ForwardReply, ManagerError};

/// The payload of a manager's request.
fn decode<T: serde::de::DeserializeOwned>(req: &Request<RaftPayload>) -> Result<T, Status> {
    require_manager(req)?;
    serde_json::from_slice(&req.get_ref().json)
        .map_err(|e| Status::invalid_argument(format!("payload: {e}")))
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
        let reply = self.0.raft.append_entries(decode(&req)?).await;
        if let Ok(r) = &reply
            && !matches!(r, AppendEntriesResponse::HigherVote(_))
        {
            self.0.leader_heard();
        }
        encode(&reply)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        encode(&self.0.raft.vote(decode(&req)?).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        encode(&self.0.raft.install_snapshot(decode(&req)?).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let fwd: Forward = decode(&req)?;
        match self.0.handle_forward(fwd).await {
            Ok(reply) => encode(&Ok::<_, String>(reply)),
            Err(ManagerError::NoLeader) => Err(ManagerError::NoLeader.into()),
            Err(e) => encode(&Err::<ForwardReply, _>(e.to_string())),
        }
    }
}
