//! Which assignment set each node has written into its routing mesh.
//!
//! A task leaving the mesh must keep serving until no node routes a new
//! connection to it. Every node acknowledges the set it wrote to every
//! manager it knows; a node about to stop a task asks them all and waits
//! until each node that is up has written the set that took the task out.
//! A fixed wait would be too long when the cluster is idle and too short
//! when a node is loaded.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use shoal_api::cluster::v1::{
    AckAppliedRequest, AppliedVersionsRequest, dispatcher_client::DispatcherClient,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::link::ManagerLink;

/// One call to one manager; a manager that does not answer in time is
/// left out of this round.
const CALL_WAIT: Duration = Duration::from_millis(500);
/// How often a waiting node asks again.
const POLL: Duration = Duration::from_millis(25);
/// Acknowledged again this often: a manager that restarted forgot.
const REACK: Duration = Duration::from_secs(5);

/// The managers, each through one kept channel.
#[derive(Clone)]
pub struct Peers {
    node_id: String,
    managers: Vec<(String, DispatcherClient<Channel>)>,
}

impl Peers {
    pub fn new(link: &ManagerLink) -> Self {
        Peers {
            node_id: link.node_id.clone(),
            managers: link.dispatchers().collect(),
        }
    }

    /// Acknowledges `version` to every manager at once.
    async fn ack(&self, version: u64) {
        let calls = self.managers.iter().map(|(addr, client)| {
            let mut client = client.clone();
            async move {
                let call = client.ack_applied(AckAppliedRequest { version });
                match tokio::time::timeout(CALL_WAIT, call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(s)) => tracing::debug!(%addr, error = %s.message(), "ack applied"),
                    Err(_) => tracing::debug!(%addr, "ack applied: no answer"),
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// What every manager heard, merged: the highest version per node.
    async fn versions(&self) -> HashMap<String, u64> {
        let calls = self.managers.iter().map(|(_, client)| {
            let mut client = client.clone();
            async move {
                let call = client.applied_versions(AppliedVersionsRequest {});
                match tokio::time::timeout(CALL_WAIT, call).await {
                    Ok(Ok(r)) => r.into_inner().applied,
                    _ => HashMap::new(),
                }
            }
        });
        let mut merged = HashMap::new();
        for applied in futures::future::join_all(calls).await {
            merge(&mut merged, applied);
        }
        merged
    }

    /// Waits until this node (`own`) and every other node of `nodes` wrote
    /// a set of `version` or later, at most `max`. Returns how long it
    /// took, or the nodes still behind.
    pub async fn wait(
        &self,
        version: u64,
        nodes: &[String],
        own: &mut watch::Receiver<u64>,
        max: Duration,
    ) -> Result<Duration, Vec<String>> {
        let started = Instant::now();
        loop {
            let mut applied = self.versions().await;
            // Its own progress is known here first hand.
            applied.insert(self.node_id.clone(), *own.borrow_and_update());
            let behind = laggards(&applied, nodes.iter().chain([&self.node_id]), version);
            if behind.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= max {
                return Err(behind);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Acknowledges every set the mesh loop writes, and again every
/// [`REACK`].
pub async fn ack_loop(peers: Peers, mut written: watch::Receiver<u64>) {
    loop {
        let version = *written.borrow_and_update();
        if version > 0 {
            peers.ack(version).await;
        }
        tokio::select! {
            r = written.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(REACK) => {}
        }
    }
}

fn merge(into: &mut HashMap<String, u64>, from: HashMap<String, u64>) {
    for (node, v) in from {
        let e = into.entry(node).or_default();
        *e = (*e).max(v);
    }
}

/// The nodes of `nodes` that have not acknowledged `version` (sorted, each
/// once).
fn laggards<'a>(
    applied: &HashMap<String, u64>,
    nodes: impl Iterator<Item = &'a String>,
    version: u64,
) -> Vec<String> {
    let mut behind: Vec<String> = nodes
        .filter(|n| applied.get(*n).copied().unwrap_or(0) < version)
        .cloned()
        .collect();
    behind.sort();
    behind.dedup();
    behind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_node_is_behind_until_it_acknowledged_the_version_or_a_later_one() {
        let applied = map(&[("a", 7), ("b", 9), ("c", 6)]);
        let nodes: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(laggards(&applied, nodes.iter(), 7), ["c", "d"]);
        assert_eq!(
            laggards(&applied, nodes.iter().take(2), 7),
            Vec::<String>::new()
        );
        assert_eq!(
            laggards(&applied, nodes.iter().take(3), 10),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn managers_answers_merge_to_the_highest_version_per_node() {
        // An ack reached one manager and not yet another.
        let mut merged = HashMap::new();
        merge(&mut merged, map(&[("a", 7), ("b", 3)]));
        merge(&mut merged, map(&[("a", 5), ("b", 8), ("c", 1)]));
        assert_eq!(merged, map(&[("a", 7), ("b", 8), ("c", 1)]));
    }
}
