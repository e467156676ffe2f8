//! The crate's one error type: each variant names what went wrong and,
//! where there is one, what to do about it.

use std::{io, path::PathBuf};

use crate::reference::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {digest:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest { digest: String },

    /// Docker's exact wording, so scripts that match on it keep working.
    #[error("No such image: {reference}")]
    NotFound { reference: String },

    #[error(
        "{prefix:?} matches more than one image; give more digits of the ID or a full reference"
    )]
    Ambiguous { prefix: String },

    #[error(
        "content digest mismatch: expected {expected}, computed {actual}; the data is corrupt or \
         was altered, fetch or export it again"
    )]
    DigestMismatch { expected: Digest, actual: Digest },

    #[error("layer {layer}: refusing entry {entry:?}: {reason}")]
    UnsafeEntry {
        layer: Digest,
        entry: String,
        reason: String,
    },

    #[error("layer {layer}: unreadable tar stream (truncated or corrupt): {source}")]
    BadLayer {
        layer: Digest,
        #[source]
        source: io::Error,
    },

    #[error(
        "unknown media type {media_type:?}; supported are OCI and Docker v2 manifests, configs \
         and tar, tar+gzip and tar+zstd layers"
    )]
    UnknownMediaType { media_type: String },

    #[error("malformed image archive: {reason}")]
    BadArchive { reason: String },

    #[error("image config {config}: {reason}; the image is malformed, rebuild it")]
    BadImage { config: Digest, reason: String },

    #[error("malformed {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("image index {index} has no linux/amd64 manifest; load an image built for this node")]
    NoMatchingPlatform { index: Digest },

    #[error("blob {digest} is not in the store; write it (write_blob) before registering")]
    BlobMissing { digest: Digest },

    #[error(
        "conflict: unable to delete {reference} (image {manifest} is in use by a task); remove \
         the service or tasks using it first"
    )]
    InUse { reference: String, manifest: Digest },

    #[error("cannot tag with a digest reference {reference}; give name:tag")]
    TagWithDigest { reference: String },

    #[error("building image: {reason}")]
    Build { reason: String },

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `map_err` helper: an I/O error with the operation and path it concerned.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { what, path, source }
}

/// `s` safe to show on a terminal: the tar reader quotes raw header bytes
/// of a corrupt archive in its errors. Control and non-ASCII bytes become
/// `?`, and long text is cut.
pub fn printable(s: &str) -> String {
    const MAX: usize = 600;
    let mut out: String = s
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX)
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn raw_bytes_never_reach_the_terminal() {
        let shown = super::printable("bad \u{1b}[31m\u{0}\u{fffd}field");
        assert_eq!(shown, "bad ?[31m??field");
        assert!(super::printable(&"x".repeat(1000)).chars().count() <= 601);
    }
}
