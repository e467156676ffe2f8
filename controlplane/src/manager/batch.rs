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
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
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
        let raft = raft.clone();
        tokio::spawn(async move {
            write_batch(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn write_batch(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { command, reply } = batch.remove(0);
        // The receiver may have given up (timeout); the write stands.
        let _ = reply.send(raft.client_write(command.into()).await.map(|r| r.data));
        return;
    }
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    match raft.client_write(Proposal::Batch(commands)).await {
        Ok(written) => {
            let answers = match written.data {
                Response::Batch(answers) => answers,
                other => vec![other; replies.len()],
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Why a shared leadership confirmation failed.
#[derive(Debug, Clone)]
pub(super) enum ReadError {
    NoQuorum,
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
            Err(e) => return Err(ReadError::Raft(e.to_string())),
        }
    }
}
