//! openraft's network over the `RaftPeer` gRPC service, mutual TLS on 2377.

use std::sync::Arc;
use std::time::Duration;

use openraft::{
    RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{Backoff, RPCOption},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use shoal_api::MAX_MESSAGE_BYTES;
use shoal_api::cluster::v1::{RaftPayload, raft_peer_client::RaftPeerClient};
use shoal_ca::{NodeRole, rustls::ClientConfig};
use tonic::transport::Channel;

use crate::{RaftId, RaftMember, TypeConfig, transport};

/// Makes one client per peer; openraft keeps it while the peer is a target.
#[derive(Clone)]
pub struct Network {
    pub(crate) tls: Arc<ClientConfig>,
}

pub struct PeerClient {
    target: RaftId,
    client: Option<RaftPeerClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftId, node: &RaftMember) -> PeerClient {
        // A bad address shows up as Unreachable on every RPC, with the reason logged.
        let client = transport::channel(
            &node.addr,
            self.tls.clone(),
            NodeRole::Manager.server_name(),
        )
        .map_err(|e| tracing::warn!(peer = %node, error = %e, "bad Raft peer address"))
        .ok()
        .map(|ch| RaftPeerClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES));
        PeerClient { target, client }
    }
}

type RpcError<E> = RPCError<RaftId, RaftMember, RaftError<RaftId, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(&mut self, method: Method, req: &Req) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other("no usable address for this peer"),
            )));
        };
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let payload = RaftPayload { json };
        let reply = match method {
            Method::Append => client.append_entries(payload).await,
            Method::Vote => client.vote(payload).await,
            Method::Snapshot => client.install_snapshot(payload).await,
        }
        .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        // The peer answers Ok(response) or Err(its RaftError), as JSON.
        let result: Result<Resp, RaftError<RaftId, E>> =
            serde_json::from_slice(&reply.into_inner().json)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RpcError<openraft::error::Infallible>> {
        self.call(Method::Append, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RpcError<InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc).await
    }

    /// A peer that was down is retried every 200 ms (openraft's default is
    /// 500 ms): a restarted manager hears the leader sooner, and its
    /// [election gate](super::election_gate) opens sooner.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RpcError<openraft::error::Infallible>> {
        self.call(Method::Vote, &rpc).await
    }
}
