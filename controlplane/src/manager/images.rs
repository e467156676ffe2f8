//! The cluster's image catalogue: which node holds which image, as nodes
//! register them after `shoal image load` / `image rm`; `service create`
//! pins references against it, and `image ls --cluster` lists it.

use shoal_api::{
    cluster::v1::{ImageSummary, RegisterImagesRequest},
    reference::Reference,
};

use super::{Manager, ManagerError};
use crate::model::{ClusterState, Command, ImageRecord};

fn invalid(what: String) -> ManagerError {
    ManagerError::Invalid { what }
}

/// A reference as the catalogue keys it: normalised, with its tag.
fn normalised(field: &str, reference: &str) -> Result<String, ManagerError> {
    Reference::parse(reference)
        .map(|r| r.with_default_tag().to_string())
        .map_err(|e| invalid(format!("{field} {reference:?}: {e}")))
}

/// The command a node's registration makes, checked.
pub fn command(node_id: &str, r: &RegisterImagesRequest) -> Result<Command, ManagerError> {
    let mut images = Vec::new();
    for (i, image) in r.images.iter().enumerate() {
        let field = format!("images[{i}]");
        let digest_ok = image.digest.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        });
        if !digest_ok {
            return Err(invalid(format!(
                "{field}.digest {:?}: expected sha256: and 64 lowercase hex digits",
                image.digest
            )));
        }
        images.push(ImageRecord {
            reference: normalised(&format!("{field}.reference"), &image.reference)?,
            digest: image.digest.clone(),
            size: image.size,
        });
    }
    let removed = r
        .removed
        .iter()
        .enumerate()
        .map(|(i, x)| normalised(&format!("removed[{i}]"), x))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::RegisterImages {
        node_id: node_id.to_owned(),
        images,
        removed,
    })
}

pub(super) async fn register(
    m: &Manager,
    node_id: &str,
    r: RegisterImagesRequest,
) -> Result<(), ManagerError> {
    m.propose(command(node_id, &r)?).await?;
    Ok(())
}

impl Manager {
    /// What `Dispatcher.RegisterImages` does, for a manager's own node,
    /// which reaches its manager in-process (as its heartbeats do). Any
    /// manager takes it: the proposal is forwarded to the leader.
    pub async fn register_images(
        &self,
        node_id: &str,
        r: RegisterImagesRequest,
    ) -> Result<(), ManagerError> {
        register(self, node_id, r).await
    }
}

/// Every reference and digest some node holds, for `image ls --cluster`.
pub(super) fn list(state: &ClusterState) -> Vec<ImageSummary> {
    let mut out = Vec::new();
    for (reference, by_digest) in &state.images {
        for (digest, h) in by_digest {
            out.push(ImageSummary {
                reference: reference.clone(),
                digest: digest.clone(),
                size: h.size,
                node_ids: h.nodes.iter().cloned().collect(),
                nodes: h
                    .nodes
                    .iter()
                    .map(|n| state.nodes.get(n).map_or(n.clone(), |n| n.hostname.clone()))
                    .collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::ImageRecord as PbImage;

    use super::*;

    #[test]
    fn registrations_are_normalised_and_checked() {
        let digest = format!("sha256:{}", "c".repeat(64));
        let r = RegisterImagesRequest {
            images: vec![PbImage {
                reference: "busybox".into(),
                digest: digest.clone(),
                size: 5,
            }],
            removed: vec!["team/app:1".into()],
        };
        let Ok(Command::RegisterImages {
            node_id,
            images,
            removed,
        }) = command("n1", &r)
        else {
            panic!("refused");
        };
        assert_eq!(node_id, "n1");
        assert_eq!(images[0].reference, "docker.io/library/busybox:latest");
        assert_eq!(removed, ["docker.io/team/app:1"]);
        let mut bad = r.clone();
        bad.images[0].digest = "sha256:xyz".into();
        let e = command("n1", &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("images[0].digest \"sha256:xyz\""), "{e}");
        let mut bad = r;
        bad.removed = vec!["Bad".into()];
        let e = command("n1", &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("removed[0] \"Bad\": repository name must be lowercase"),
            "{e}"
        );
    }
}
