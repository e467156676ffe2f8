//! On the leader: makes the network key rings and rotates them when due
//! (see [`crate::keys`]). A version conflict with another cluster update
//! is simply retried on the next pass.

use super::{Manager, ManagerError, cluster_of, services::now_unix};
use crate::{keys::fresh_key, model::Command};

pub(super) async fn rotate(m: &Manager) {
    if let Err(e) = try_rotate(m).await {
        tracing::warn!(error = %e, "rotating the network key rings");
    }
}

async fn try_rotate(m: &Manager) -> Result<(), ManagerError> {
    let c = {
        let state = m.local_state().await;
        let Ok(c) = cluster_of(&state) else {
            return Ok(());
        };
        c.clone()
    };
    let Some(keys) =
        c.network_keys
            .due(now_unix(), c.settings.network_key_rotation_secs, fresh_key)
    else {
        return Ok(());
    };
    let tags: Vec<u64> = keys.gossip.iter().map(|k| k.lamport_time).collect();
    let mut next = c.clone();
    next.network_keys = keys;
    m.propose(Command::UpdateCluster {
        id: c.id.clone(),
        expected_version: c.version,
        cluster: next,
    })
    .await?;
    tracing::info!(gossip = ?tags, "network key rings rotated");
    Ok(())
}
