//! A node's session with the managers: its heartbeats, the stream of its
//! assignments, and the task states it reports.

use std::{sync::Arc, time::Duration};

use shoal_api::cluster::v1::{AssignmentSet, CaRoots, HeartbeatReply, TaskReport};
use tokio::sync::mpsc;

use super::{Manager, ManagerError, services};
use crate::{
    dispatch,
    model::{NodeReport, NodeRole as ModelRole},
    wire,
};

/// How often an assignment stream re-checks the state without a wake-up.
const ASSIGNMENT_REFRESH: Duration = Duration::from_secs(10);

/// Records a heartbeat and tells the node its period, managers, roots and
/// role.
pub(super) async fn heartbeat(
    m: &Manager,
    node_id: &str,
    report: NodeReport,
) -> Result<HeartbeatReply, ManagerError> {
    m.heartbeat(node_id, report).await?;
    let period = m.heartbeat_period().await;
    let roots = m.ca_roots().await?;
    // Applied state, as for the roots: a promotion seen one period late
    // costs nothing.
    let (role, manager_ids) = {
        let state = m.local_state().await;
        let role = match state.nodes.get(node_id) {
            Some(n) if n.wants_manager() => wire::encode(ModelRole::Manager),
            Some(_) => wire::encode(ModelRole::Worker),
            None => 0,
        };
        (role, manager_ids(&state))
    };
    Ok(HeartbeatReply {
        period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        managers: m.manager_addrs(),
        ca: Some(CaRoots {
            issuer: roots.issuer,
            trusted: roots.trusted,
        }),
        role,
        manager_ids,
    })
}

/// The nodes the swarm wants as managers: whom a node serves its task logs
/// to. A demoted or removed manager's certificate still verifies; this
/// list is what refuses it.
pub(super) fn manager_ids(state: &crate::model::ClusterState) -> Vec<String> {
    let removed = state.clusters.values().next().map(|c| &c.removed_nodes);
    state
        .nodes
        .values()
        .filter(|n| n.wants_manager() && !removed.is_some_and(|r| r.contains(&n.id)))
        .map(|n| n.id.clone())
        .collect()
}

/// The node's assignments, sent again whenever its picture changes, until
/// the receiver is dropped.
pub(super) fn assignments(m: Arc<Manager>, node_id: String) -> mpsc::Receiver<AssignmentSet> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut metrics = m.raft.metrics();
        let mut applied = None;
        let mut last: Option<AssignmentSet> = None;
        loop {
            let set = dispatch::assignments(&*m.local_state().await, &node_id);
            // The version moves with every change anywhere; only a change
            // to this node's picture is worth sending.
            let same = last.as_ref().is_some_and(|l| {
                l.tasks == set.tasks
                    && l.networks == set.networks
                    && l.endpoints == set.endpoints
                    && l.mesh == set.mesh
                    && l.nodes == set.nodes
                    && l.network_keys == set.network_keys
            });
            if !same {
                if tx.send(set.clone()).await.is_err() {
                    return;
                }
                last = Some(set);
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = metrics.changed() => if changed.is_err() { return },
                    // A periodic resend guards against a missed wake-up.
                    _ = tokio::time::sleep(ASSIGNMENT_REFRESH) => break,
                }
                let now = metrics.borrow().last_applied;
                if now != applied {
                    applied = now;
                    break;
                }
            }
        }
    });
    rx
}

/// Records the task states a node reports. The reports are recorded side
/// by side, so their reads share a leadership confirmation and their
/// writes a log entry (a node starting 20 tasks reports 60 changes); the
/// first error is returned once all were tried.
pub(super) async fn report_tasks(
    m: &Manager,
    node_id: &str,
    reports: &[TaskReport],
) -> Result<(), ManagerError> {
    futures::future::join_all(reports.iter().map(|r| report_task(m, node_id, r)))
        .await
        .into_iter()
        .collect()
}

/// Records one report, planned again from the newer state when another
/// change to the task landed first.
async fn report_task(m: &Manager, node_id: &str, r: &TaskReport) -> Result<(), ManagerError> {
    for attempt in 0.. {
        let cmd = {
            let state = m.read().await?;
            dispatch::report(&state, node_id, r, services::now_unix())
        };
        let cmd = match cmd {
            Ok(Some(c)) => c,
            Ok(None) => break,
            // A task removed meanwhile (service rm): nothing to record.
            Err(dispatch::ReportError::UnknownTask(_)) => break,
            Err(e) => {
                return Err(ManagerError::Invalid {
                    what: e.to_string(),
                });
            }
        };
        match m.propose(cmd).await {
            Ok(_) => break,
            Err(ManagerError::Rejected(crate::model::ApplyError::VersionMismatch { .. }))
                if attempt < 10 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
