//! A restarted manager holds its elections back until it has heard from a
//! leader, or for [`GRACE`] if none speaks.
//!
//! openraft 0.9 has no pre-vote. A manager that restarts starts its
//! election timer at once; if it fires before the leader's replication
//! reaches it (the leader retries a dead peer every 500 ms, then TLS is set
//! up again), it campaigns at a higher term: the others refuse the vote
//! under their leader lease, but the leader sees the higher term in the
//! next reply and steps down, an election for nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::raft::Raft;

/// Longest a restarted manager waits for a leader before it may campaign:
/// several of the leader's retry periods, and short enough that a whole
/// cluster restarted at once still elects within a few seconds.
pub(super) const GRACE: Duration = Duration::from_secs(2);

pub(super) struct ElectionGate {
    heard: Arc<Notify>,
}

impl ElectionGate {
    /// Closes the gate if this manager restarts into a membership with
    /// other voters (a fresh or sole manager has nobody to wait for).
    pub(super) fn start(raft: &Raft) -> Self {
        let heard = Arc::new(Notify::new());
        let voters = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if voters > 1 {
            raft.runtime_config().elect(false);
            let (raft, heard) = (raft.clone(), heard.clone());
            tokio::spawn(async move {
                let heard = tokio::time::timeout(GRACE, heard.notified()).await.is_ok();
                tracing::info!(heard_leader = heard, "Raft elections enabled");
                raft.runtime_config().elect(true);
            });
        }
        ElectionGate { heard }
    }

    /// A leader's AppendEntries was accepted: it is alive and reaches us.
    pub(super) fn leader_heard(&self) {
        self.heard.notify_one();
    }
}
