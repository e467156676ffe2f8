//! The cluster object's settings as the operator changes them: join tokens,
//! certificate lifetime, heartbeat period, autolock, root rotation.

use shoal_api::cluster::v1::{
    CaStatusReply, JoinTokenReply, JoinTokenRequest, UpdateSwarmReply, UpdateSwarmRequest,
};
use shoal_ca::{JoinToken, JoinTokens, NodeRole};

use super::{Manager, ManagerError, cluster_of, pki};
use crate::model::{Cluster, Command, SecretString};

/// The cluster's join tokens as stored.
pub(super) fn stored_tokens(cluster: &Cluster) -> Result<JoinTokens, ManagerError> {
    Ok(JoinTokens::from_tokens(
        parse_stored(&cluster.join_tokens.worker)?,
        parse_stored(&cluster.join_tokens.manager)?,
    ))
}

fn parse_stored(t: &SecretString) -> Result<JoinToken, ManagerError> {
    JoinToken::parse(&t.0).map_err(|e| ManagerError::Internal {
        what: format!("stored join token: {e}"),
    })
}

/// The join token for a role, rotated first if asked.
pub(super) async fn join_token(
    m: &Manager,
    r: JoinTokenRequest,
) -> Result<JoinTokenReply, ManagerError> {
    let role = crate::wire::decode::<NodeRole>(|| "role".into(), r.role)?.ok_or_else(|| {
        ManagerError::Invalid {
            what: "role: expected worker or manager".into(),
        }
    })?;
    let mut cluster = cluster_of(&*m.read().await?)?.clone();
    if r.rotate {
        let mut tokens = stored_tokens(&cluster)?;
        tokens.rotate(role);
        let fresh = tokens.get(role).to_string();
        match role {
            NodeRole::Worker => cluster.join_tokens.worker = SecretString(fresh),
            NodeRole::Manager => cluster.join_tokens.manager = SecretString(fresh),
        }
        let version = cluster.version;
        m.propose(Command::UpdateCluster {
            id: cluster.id.clone(),
            expected_version: version,
            cluster: cluster.clone(),
        })
        .await?;
    }
    let token = match role {
        NodeRole::Worker => cluster.join_tokens.worker.0,
        NodeRole::Manager => cluster.join_tokens.manager.0,
    };
    Ok(JoinTokenReply {
        role: r.role,
        token,
    })
}

/// Starts a root rotation (`cert_expiry_secs` 0: keep the lifetime).
pub(super) async fn rotate_ca(
    m: &Manager,
    cert_expiry_secs: u64,
) -> Result<CaStatusReply, ManagerError> {
    let secs = cert_expiry_secs;
    let expiry = (secs != 0)
        .then(|| cert_expiry("--cert-expiry", secs))
        .transpose()?;
    m.rotate_ca(expiry).await?;
    pki::status(&*m.read().await?)
}

pub(super) async fn update_swarm(
    m: &Manager,
    r: UpdateSwarmRequest,
) -> Result<UpdateSwarmReply, ManagerError> {
    let mut c = cluster_of(&*m.read().await?)?.clone();
    let version = c.version;
    if let Some(secs) = r.cert_expiry_secs {
        c.settings.node_cert_expiry_secs = cert_expiry("--cert-expiry", secs)?;
    }
    if let Some(secs) = r.dispatcher_heartbeat_secs {
        if secs == 0 {
            return Err(ManagerError::Invalid {
                what: "--dispatcher-heartbeat: must be at least 1s".into(),
            });
        }
        c.settings.dispatcher_heartbeat_secs = secs;
    }
    if let Some(secs) = r.network_key_rotation_secs {
        c.settings.network_key_rotation_secs =
            crate::keys::rotation_period("--network-key-rotation", secs)
                .map_err(|what| ManagerError::Invalid { what })?;
    }
    let mut unlock_key = String::new();
    match r.autolock {
        // Every manager follows the replicated key: each rewraps its own
        // store and seals its TLS key under it (or undoes that).
        Some(true) if c.unlock_key.0.is_empty() => {
            unlock_key = crate::store::UnlockKey::generate().format();
            c.unlock_key = SecretString(unlock_key.clone());
            c.settings.autolock = true;
        }
        Some(false) => {
            c.unlock_key = SecretString::default();
            c.settings.autolock = false;
        }
        Some(true) | None => {}
    }
    m.propose(Command::UpdateCluster {
        id: c.id.clone(),
        expected_version: version,
        cluster: c,
    })
    .await?;
    Ok(UpdateSwarmReply { unlock_key })
}

/// A node certificate lifetime, checked against what the CA can issue.
fn cert_expiry(flag: &str, secs: u64) -> Result<u64, ManagerError> {
    let min = shoal_ca::MIN_CERT_VALIDITY.as_secs();
    if secs < min {
        return Err(ManagerError::Invalid {
            what: format!("{flag} {secs}s: must be at least {min}s"),
        });
    }
    Ok(secs)
}
