//! `docker secret` over the Control API: payloads go into the Raft log
//! (encrypted at rest with the rest of the store) and never come back out
//! through the API; only tasks will receive them.

use shoal_api::cluster::v1::{CreateSecretRequest, SecretRef, SecretSummary};
use shoal_ca::generate_node_id;

use super::{Manager, ManagerError};
use crate::{
    model::{Command, Kind, Secret, SecretBytes},
    validate,
};

fn summary(s: &Secret) -> SecretSummary {
    SecretSummary {
        id: s.id.clone(),
        name: s.name.clone(),
        labels: s.labels.clone().into_iter().collect(),
        version: s.version,
        size: s.data.0.len() as u64,
    }
}

pub(super) async fn create(
    m: &Manager,
    r: CreateSecretRequest,
) -> Result<SecretSummary, ManagerError> {
    validate::name("secret name", &r.name)?;
    validate::labels("--label", &r.labels)?;
    validate::secret_data("secret data", &r.data)?;
    let secret = Secret {
        // Same alphabet and length as node ids: 25 base-36 characters.
        id: generate_node_id(),
        version: 0,
        name: r.name,
        labels: r.labels.into_iter().collect(),
        data: SecretBytes(r.data),
    };
    let id = secret.id.clone();
    let applied = m.propose(Command::CreateSecret(secret)).await?;
    let state = m.after(&applied).await?;
    Ok(summary(super::lookup::<Secret>(&state, &id)?))
}

pub(super) async fn list(m: &Manager) -> Result<Vec<SecretSummary>, ManagerError> {
    super::list_all(m, |_, s| summary(s)).await
}

pub(super) async fn inspect(m: &Manager, r: &SecretRef) -> Result<SecretSummary, ManagerError> {
    super::inspect_one(m, &r.secret, |_, s| summary(s)).await
}

pub(super) async fn remove(m: &Manager, r: &SecretRef) -> Result<String, ManagerError> {
    super::remove_one::<Secret>(m, &r.secret, |state, s| {
        super::refuse_in_use(Kind::Secret, &s.name, state.secret_users(&s.id))
    })
    .await
}
