//! Group commit on the leader: proposals that arrive while earlier ones are
//! being committed are written as one log entry (one append and one fsync
//! on each manager, one replication round), and concurrent linearizable
//! reads share one leadership confirmation.
//!
//! openraft 0.9 turns every `client_write` into its own storage append,
//! so without this each write pays a full fsync on a majority.

use std::sync::Arc;
use std::time::Duration;

use openraft::LogId;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::raft::{Proposal, Raft, Response};
use crate::{RaftId, RaftMember, model::Command};

/// Commands written in one entry at most: bounds an entry (and so one
/// AppendEntries payload) to some hundred kilobytes.
const MAX_BATCH: usize = 256;
/// Batches being committed at once. While they are, the next batch fills;
/// more than one keeps the replication pipeline busy, as single writes did.
const IN_FLIGHT: usize = 2;

pub(super) type WriteError = RaftError<RaftId, ClientWriteError<RaftId, RaftMember>>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Response, WriteError>>,
}

/// Queues proposals for the batching task of one Raft node.
pub(super) struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    pub(super) fn spawn(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(raft, rx));
        Proposer { tx }
    }

    /// Commits `command` (alone or with others) and returns its own answer.
    /// `None` if the batching task is gone (the node shut down).
    pub(super) async fn write(&self, command: Command) -> Option<Result<Response, WriteError>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { command, reply }).ok()?;
        answer.await.ok()
    }
}

async fn write_batches(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the earlier batches committed.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let proposal = match <[Command; 1]>::try_from(commands) {
            Ok([one]) => Proposal::One(one),
            Err(many) => Proposal::Batch(many),
        };
        // Submitted here, in queue order, so the log keeps the order in
        // which commands were proposed (a reconciler's plan relies on it);
        // only the wait for the commit runs beside the next batch.
        let submitted = raft.client_write_ff(proposal).await;
        tokio::spawn(async move {
            let written = match submitted {
                Ok(receiver) => match receiver.await {
                    Ok(result) => result.map_err(RaftError::APIError),
                    Err(_) => Err(RaftError::Fatal(Fatal::Stopped)),
                },
                Err(fatal) => Err(RaftError::Fatal(fatal)),
            };
            answer(replies, written.map(|w| w.data));
            drop(permit);
        });
    }
}

/// Hands each proposer its own answer: a batch's answers in order, or the
/// error that befell the whole entry.
fn answer(
    replies: Vec<oneshot::Sender<Result<Response, WriteError>>>,
    written: Result<Response, WriteError>,
) {
    // The receivers may have given up (timeout); the writes stand.
    match written {
        Ok(Response::Batch(answers)) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        other => {
            for reply in replies {
                let _ = reply.send(other.clone());
            }
        }
    }
}

/// Why a shared leadership confirmation failed.
#[derive(Debug, Clone)]
pub(super) enum ReadError {
    NoQuorum,
    /// This manager stopped leading before a quorum confirmed it.
    NotLeader,
    Raft(String),
}

type ReadReply = oneshot::Sender<Result<Option<LogId<RaftId>>, ReadError>>;

/// Shares `ensure_linearizable` among concurrent readers.
pub(super) struct ReadIndex {
    tx: mpsc::UnboundedSender<ReadReply>,
}

impl ReadIndex {
    pub(super) fn spawn(raft: Raft, wait: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(confirm_rounds(raft, rx, wait));
        ReadIndex { tx }
    }

    /// The read index from a confirmation that started after this call.
    pub(super) async fn get(&self) -> Option<Result<Option<LogId<RaftId>>, ReadError>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(reply).ok()?;
        answer.await.ok()
    }
}

async fn confirm_rounds(raft: Raft, mut rx: mpsc::UnboundedReceiver<ReadReply>, wait: Duration) {
    while let Some(first) = rx.recv().await {
        // Only readers already waiting share this round: one that arrives
        // during it needs a confirmation newer than its own request.
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let answer = match tokio::time::timeout(wait, confirm(&raft)).await {
            Err(_) => Err(ReadError::NoQuorum),
            Ok(r) => r,
        };
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }
}

/// One leadership confirmation, retried while a round only missed its
/// quorum: openraft gives each follower's answer one heartbeat period, which
/// a loaded machine can exceed without anything being wrong. Every retry is
/// a new round, started after all of its waiters asked.
async fn confirm(raft: &Raft) -> Result<Option<LogId<RaftId>>, ReadError> {
    loop {
        match raft.ensure_linearizable().await {
            Ok(index) => return Ok(index),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                return Err(ReadError::NotLeader);
            }
            Err(e) => return Err(ReadError::Raft(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io;

    use openraft::error::{InstallSnapshotError, RPCError, Unreachable};
    use openraft::network::RPCOption;
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{RaftNetwork, RaftNetworkFactory};

    use super::*;
    use crate::model::{Labels, Secret, SecretBytes};
    use crate::{RaftMember, Store, StoreKey, TypeConfig};

    /// A one-manager cluster never sends an RPC.
    struct Alone;

    type Rpc<T, E = openraft::error::Infallible> =
        Result<T, RPCError<RaftId, RaftMember, RaftError<RaftId, E>>>;

    fn unreachable() -> Unreachable {
        Unreachable::new(&io::Error::from(io::ErrorKind::NotConnected))
    }

    impl RaftNetworkFactory<TypeConfig> for Alone {
        type Network = Alone;
        async fn new_client(&mut self, _: RaftId, _: &RaftMember) -> Alone {
            Alone
        }
    }

    impl RaftNetwork<TypeConfig> for Alone {
        async fn append_entries(
            &mut self,
            _: AppendEntriesRequest<TypeConfig>,
            _: RPCOption,
        ) -> Rpc<AppendEntriesResponse<RaftId>> {
            Err(unreachable().into())
        }
        async fn install_snapshot(
            &mut self,
            _: InstallSnapshotRequest<TypeConfig>,
            _: RPCOption,
        ) -> Rpc<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
            Err(unreachable().into())
        }
        async fn vote(
            &mut self,
            _: VoteRequest<RaftId>,
            _: RPCOption,
        ) -> Rpc<VoteResponse<RaftId>> {
            Err(unreachable().into())
        }
    }

    /// More commands than fit in `IN_FLIGHT` entries, proposed at once (as
    /// a reconciler's plan is): every one is applied, and in the order
    /// proposed, since each applied command takes the next state version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_proposals_commits_in_order_across_batches()
    -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), &StoreKey::generate())?;
        let config = Arc::new(crate::raft_config("test", 1000)?.validate()?);
        let sm = store.state_machine()?;
        let raft = Raft::new(1, config, Alone, store.log_store(), sm).await?;
        let me = RaftMember {
            node_id: "n1".into(),
            addr: "m1:2377".into(),
        };
        raft.initialize(BTreeMap::from([(1, me)])).await?;
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leader")
            .await?;
        let proposer = Proposer::spawn(raft.clone());
        let count = MAX_BATCH * (IN_FLIGHT + 1) + 7;
        let writes = (0..count).map(|i| {
            proposer.write(Command::CreateSecret(Secret {
                id: format!("s{i}"),
                version: 0,
                name: format!("secret-{i}"),
                labels: Labels::new(),
                data: SecretBytes(vec![1]),
            }))
        });
        let mut versions = Vec::new();
        for answer in futures::future::join_all(writes).await {
            match answer.ok_or("the batching task is gone")?? {
                Response::Applied(a) => versions.push(a.version),
                other => return Err(format!("not applied: {other:?}").into()),
            }
        }
        assert_eq!(versions.len(), count);
        assert!(
            versions.windows(2).all(|w| w[1] == w[0] + 1),
            "applied out of order: {versions:?}"
        );
        raft.shutdown().await?;
        Ok(())
    }
}
