//! openraft type configuration and the Raft settings derived from swarm's.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::{Applied, ApplyError, Command};

/// Entries between snapshots, as swarm's `--snapshot-interval`.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;
/// Entries kept behind the last snapshot so a slightly lagging follower
/// catches up from the log instead of a full snapshot (swarmkit's
/// `LogEntriesForSlowFollowers`).
pub const DEFAULT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS: u64 = 500;

/// Raft ids are random u64s distinct from node ids, as in swarmkit.
pub type RaftId = u64;

/// A Raft peer as recorded in the membership log entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMember {
    /// The swarm node id of the manager.
    pub node_id: String,
    /// `host:port` of its Raft endpoint (2377).
    pub addr: String,
}

impl fmt::Display for RaftMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

/// The state machine's answer for one log entry, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry: nothing in the cluster state changed.
    Noop,
    Applied(Applied),
    /// The command was committed but refused by `apply`; the state is unchanged.
    Rejected(ApplyError),
}

impl Response {
    /// `Ok(None)` for entries that carried no command.
    pub fn into_result(self) -> Result<Option<Applied>, ApplyError> {
        match self {
            Response::Noop => Ok(None),
            Response::Applied(applied) => Ok(Some(applied)),
            Response::Rejected(error) => Err(error),
        }
    }
}

openraft::declare_raft_types!(
    /// Shoal's openraft types: commands in, responses out, snapshots as bytes.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = RaftId,
        Node = RaftMember,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;

#[derive(Debug, thiserror::Error)]
pub enum RaftConfigError {
    #[error("snapshot interval must be at least 1 entry")]
    ZeroSnapshotInterval,
    #[error("invalid Raft configuration")]
    Invalid {
        // Boxed: openraft's error is large and this one travels in `Result`s.
        #[source]
        source: Box<openraft::ConfigError>,
    },
}

/// Raft settings for a manager: a snapshot every `snapshot_interval` applied
/// entries, after which the log is compacted down to the last
/// [`DEFAULT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS`] entries.
pub fn raft_config(
    cluster_name: &str,
    snapshot_interval: u64,
) -> Result<openraft::Config, RaftConfigError> {
    if snapshot_interval == 0 {
        return Err(RaftConfigError::ZeroSnapshotInterval);
    }
    openraft::Config {
        cluster_name: cluster_name.to_owned(),
        // Managers share small VMs with the data plane: timeouts well above
        // openraft's LAN defaults (50 ms / 150-300 ms) avoid elections under
        // load, while still failing over within a few seconds (swarm: ~10 s).
        // A follower also refuses votes while its leader lease (the maximum
        // election timeout) lasts, so failover takes one to two timeouts.
        heartbeat_interval: 200,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_interval),
        max_in_snapshot_log_to_keep: DEFAULT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
        // Beyond a snapshot interval behind, a snapshot is cheaper than replay.
        replication_lag_threshold: snapshot_interval,
        ..Default::default()
    }
    .validate()
    .map_err(|source| RaftConfigError::Invalid {
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sets_snapshot_policy_and_log_compaction() -> Result<(), RaftConfigError> {
        let config = raft_config("shoal", DEFAULT_SNAPSHOT_INTERVAL)?;
        assert_eq!(
            config.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(10_000)
        );
        assert_eq!(config.max_in_snapshot_log_to_keep, 500);
        assert!(matches!(
            raft_config("shoal", 0),
            Err(RaftConfigError::ZeroSnapshotInterval)
        ));
        Ok(())
    }

    #[test]
    fn response_into_result() {
        assert_eq!(Response::Noop.into_result(), Ok(None));
    }
}
