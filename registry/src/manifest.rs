//! Manifests and indexes as registries serve them: what kind a body is, the
//! blobs a manifest names, and the linux/amd64 entry of an index.

use serde::Deserialize;
use shoal_image::Digest;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest request accepts: every kind we can use.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// docker's bound on a manifest's size: more is not a manifest.
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Manifest,
    Index,
}

/// How a body failed to be a manifest we can use.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unusable {
    MediaType(String),
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// The kind of a manifest body: from its `mediaType`, else the response's
/// `Content-Type`, else its shape (OCI allows leaving the type out).
pub(crate) fn kind(content_type: Option<&str>, body: &[u8]) -> Result<Kind, Unusable> {
    let head: Head =
        serde_json::from_slice(body).map_err(|e| Unusable::Malformed(e.to_string()))?;
    if head.schema_version == Some(1) {
        return Err(Unusable::MediaType(
            "application/vnd.docker.distribution.manifest.v1+json".into(),
        ));
    }
    let header = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| {
            // Servers that know no better say JSON; the body then decides.
            !matches!(
                c.as_str(),
                "" | "application/json" | "application/octet-stream" | "text/plain"
            )
        });
    match head.media_type.or(header).as_deref() {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(Kind::Manifest),
        Some(OCI_INDEX | DOCKER_LIST) => Ok(Kind::Index),
        Some(other) => Err(Unusable::MediaType(other.to_owned())),
        None if head.manifests.is_some() => Ok(Kind::Index),
        None if head.config.is_some() => Ok(Kind::Manifest),
        None => Err(Unusable::Malformed(
            "neither a manifest (config) nor an index (manifests)".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn digest(d: &Descriptor) -> Result<Digest, Unusable> {
    Digest::parse(&d.digest).map_err(|e| Unusable::Malformed(e.to_string()))
}

/// The digest of an index's first linux/amd64 manifest, `None` if it has
/// none.
pub(crate) fn choose_platform(body: &[u8]) -> Result<Option<Digest>, Unusable> {
    let index: Index =
        serde_json::from_slice(body).map_err(|e| Unusable::Malformed(e.to_string()))?;
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .map(digest)
        .transpose()
}

/// The config and then the layers a manifest names, with their sizes.
pub(crate) fn blobs(body: &[u8]) -> Result<Vec<(Digest, Option<u64>)>, Unusable> {
    let m: Manifest =
        serde_json::from_slice(body).map_err(|e| Unusable::Malformed(e.to_string()))?;
    std::iter::once(&m.config)
        .chain(&m.layers)
        .map(|d| Ok((digest(d)?, d.size)))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn kinds() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{D1}"}},"layers":[]}}"#
        );
        assert_eq!(kind(None, docker.as_bytes()), Ok(Kind::Manifest));
        let bare = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}"}}}}"#);
        assert_eq!(kind(None, bare.as_bytes()), Ok(Kind::Manifest));
        assert_eq!(
            kind(
                Some(&format!("{OCI_INDEX}; charset=utf-8")),
                bare.as_bytes()
            ),
            Ok(Kind::Index)
        );
        assert_eq!(
            kind(Some("application/json"), br#"{"manifests":[]}"#),
            Ok(Kind::Index)
        );
        assert_eq!(
            kind(None, br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Err(Unusable::MediaType(
                "application/vnd.docker.distribution.manifest.v1+json".into()
            ))
        );
        assert_eq!(
            kind(None, br#"{"mediaType":"application/x-helm"}"#),
            Err(Unusable::MediaType("application/x-helm".into()))
        );
        assert!(matches!(
            kind(None, b"not json"),
            Err(Unusable::Malformed(_))
        ));
        assert!(matches!(kind(None, b"{}"), Err(Unusable::Malformed(_))));
    }

    #[test]
    fn index_platform_choice() {
        let index = format!(
            r#"{{"manifests":[
                {{"digest":"{D1}","platform":{{"architecture":"arm64","os":"linux"}}}},
                {{"digest":"{D1}"}},
                {{"digest":"{D2}","platform":{{"architecture":"amd64","os":"linux","variant":"v3"}}}}
            ]}}"#
        );
        assert_eq!(
            choose_platform(index.as_bytes()),
            Ok(Some(Digest::parse(D2).expect("digest")))
        );
        assert_eq!(choose_platform(br#"{"manifests":[]}"#), Ok(None));
        let bad = r#"{"manifests":[{"digest":"md5:x","platform":{"architecture":"amd64","os":"linux"}}]}"#;
        assert!(matches!(
            choose_platform(bad.as_bytes()),
            Err(Unusable::Malformed(_))
        ));
    }

    #[test]
    fn manifest_blobs() {
        let m = format!(
            r#"{{"config":{{"digest":"{D1}","size":1}},"layers":[{{"digest":"{D2}"}},{{"digest":"{D1}"}}]}}"#
        );
        let d = |s| Digest::parse(s).expect("digest");
        assert_eq!(
            blobs(m.as_bytes()),
            Ok(vec![(d(D1), Some(1)), (d(D2), None), (d(D1), None)])
        );
        assert!(blobs(br#"{"layers":[]}"#).is_err());
        assert!(blobs(br#"{"config":{"digest":"sha256:00"}}"#).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..300), ct in "\\PC{0,40}") {
            let _ = kind(Some(&ct), &b);
            let _ = choose_platform(&b);
            let _ = blobs(&b);
        }

        #[test]
        fn json_like_garbage_never_panics(s in r#"[{}\[\]":,a-z0-9 ]{0,120}"#) {
            let _ = kind(None, s.as_bytes());
            let _ = choose_platform(s.as_bytes());
            let _ = blobs(s.as_bytes());
        }
    }
}
