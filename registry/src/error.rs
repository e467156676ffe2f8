//! The crate's error: each variant says what failed and what to do.

use shoal_image::{Digest, ImageError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Docker's exact words (`docker pull` of a missing tag or repository).
    #[error("No such image: {reference}")]
    NotFound { reference: String },

    #[error(
        "{registry}: access denied: the repository does not exist or needs credentials; log in \
         to the registry or pass --with-registry-auth"
    )]
    Unauthorized { registry: String },

    #[error("{url}: unexpected HTTP status {status}: {body_excerpt}")]
    Http {
        url: String,
        status: u16,
        body_excerpt: String,
    },

    #[error(
        "cannot reach registry {registry}: {source}; check the name and the network (a \
         registry served over plain HTTP must be listed as an insecure registry)"
    )]
    Connect {
        registry: String,
        #[source]
        source: BoxError,
    },

    #[error(
        "{url}: content digest mismatch: expected {expected}, received {actual}; the registry \
         served corrupt or altered content"
    )]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{reference}: unsupported media type {media_type:?}; supported are OCI and Docker v2 \
         manifests and indexes (Docker schema 1 is not: rebuild or re-push the image)"
    )]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },

    #[error(
        "{reference}: index {index} has no linux/amd64 manifest; use an image built for this node"
    )]
    NoMatchingPlatform { reference: String, index: Digest },

    #[error("{url}: malformed registry response: {reason}")]
    InvalidResponse { url: String, reason: String },

    #[error("image store: {source}")]
    Store {
        #[from]
        source: ImageError,
    },
}
