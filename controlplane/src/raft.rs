//! openraft type configuration and the Raft settings derived from swarm's.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::{Applied, ApplyError, Command};

/// Heartbeat period (ms). It is also openraft's timeout for each
/// follower's answer when the leader confirms its leadership for a read.
pub const HEARTBEAT_MS: u64 = 200;
/// Election timeout range (ms). openraft 0.9 makes a follower wait its
/// leader lease (the maximum timeout) plus its own random timeout after the
/// last AppendEntries, checked on a tick of 1.5 heartbeats (300 ms), so a
/// follower campaigns after 600–950 ms of silence: three lost heartbeats at
/// least. Measured (`bench raft`, 10 SIGKILLs of the leader, medians):
/// 1–2 s gave 3.8 s, 400–500 ms 1.11 s, 300–400 ms 0.90 and 1.01 s in two
/// runs. `raft_stability` holds the term through a minute of saturated
/// CPUs and a join. Refused earlier: 150 ms heartbeats with 200–350 ms (an
/// election during a join on the loaded lab machine), 80 ms heartbeats
/// (followers' answers to reads outlasted them).
pub const ELECTION_TIMEOUT_MS: (u64, u64) = (250, 350);

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

/// The payload of a normal log entry: one command, or a batch of commands
/// committed together (group commit: one append and one fsync for many
/// client writes).
///
/// A single command is stored exactly as before batching existed (the
/// untagged variant), so existing logs decode unchanged, and only a batch
/// has a new tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// No larger than the bare `Command` entries carried before batching.
#[allow(clippy::large_enum_variant)]
pub enum Proposal {
    /// Applied in order, each as if it were its own entry.
    Batch(Vec<Command>),
    #[serde(untagged)]
    One(Command),
}

impl From<Command> for Proposal {
    fn from(command: Command) -> Self {
        Proposal::One(command)
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
    /// One answer per command of a [`Proposal::Batch`], in order.
    Batch(Vec<Response>),
}

impl Response {
    /// `Ok(None)` for entries that carried no command.
    pub fn into_result(self) -> Result<Option<Applied>, ApplyError> {
        match self {
            Response::Noop => Ok(None),
            Response::Applied(applied) => Ok(Some(applied)),
            Response::Rejected(error) => Err(error),
            // Batches are split by the proposer before they reach callers.
            Response::Batch(_) => Ok(None),
        }
    }
}

openraft::declare_raft_types!(
    /// Shoal's openraft types: commands in, responses out, snapshots as bytes.
    pub TypeConfig:
        D = Proposal,
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

/// Entries per AppendEntries: 32 full batches of commands stay well under
/// [`shoal_api::MAX_MESSAGE_BYTES`].
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

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
        // See HEARTBEAT_MS and ELECTION_TIMEOUT_MS for why these values.
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_interval),
        max_in_snapshot_log_to_keep: DEFAULT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
        // Beyond a snapshot interval behind, a snapshot is cheaper than replay.
        replication_lag_threshold: snapshot_interval,
        // An entry carries up to 256 batched commands (group commit), so
        // openraft's 300 entries per AppendEntries could reach tens of MB.
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
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
        assert_eq!(config.max_payload_entries, MAX_PAYLOAD_ENTRIES);
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

    fn secret(name: &str) -> Command {
        Command::CreateSecret(crate::model::Secret {
            id: format!("id-{name}"),
            version: 0,
            name: name.to_owned(),
            labels: Default::default(),
            data: crate::model::SecretBytes(b"x".to_vec()),
        })
    }

    #[test]
    fn a_single_proposal_is_stored_as_the_bare_command() -> Result<(), serde_json::Error> {
        let cmd = secret("a");
        let one = serde_json::to_string(&Proposal::One(cmd.clone()))?;
        // Byte for byte what a log written before batching holds.
        assert_eq!(one, serde_json::to_string(&cmd)?);
        let old: Proposal = serde_json::from_str(&serde_json::to_string(&cmd)?)?;
        assert_eq!(old, Proposal::One(cmd.clone()));
        let batch = Proposal::Batch(vec![cmd.clone(), secret("b")]);
        let back: Proposal = serde_json::from_str(&serde_json::to_string(&batch)?)?;
        assert_eq!(back, batch);
        Ok(())
    }

    proptest::proptest! {
        /// Whatever bytes arrive in a log record or an AppendEntries
        /// payload, decoding fails cleanly or round-trips.
        #[test]
        fn proposal_decoding_never_panics(s in ".{0,200}") {
            if let Ok(p) = serde_json::from_str::<Proposal>(&s) {
                let again = serde_json::to_string(&p).expect("encodable");
                proptest::prop_assert_eq!(serde_json::from_str::<Proposal>(&again).ok(), Some(p));
            }
        }

        #[test]
        fn batches_round_trip(names in proptest::collection::vec("[a-z]{1,8}", 0..20)) {
            let p = Proposal::Batch(names.iter().map(|n| secret(n)).collect());
            let text = serde_json::to_string(&p).expect("encodable");
            proptest::prop_assert_eq!(serde_json::from_str::<Proposal>(&text).ok(), Some(p));
        }
    }
}
