//! The node's image store: docker and OCI archives loaded, verified blob by
//! blob into a content-addressed store, references kept beside them, and
//! each image's layers unpacked once, safely, into a read-only root
//! filesystem an overlay mount can use as its lower directory.
//!
//! `unpack` needs chown, mknod and xattr calls; they come through the safe
//! APIs of std, nix and xattr, so this crate itself has no unsafe code.
#![forbid(unsafe_code)]

mod archive;
pub mod build;
mod error;
pub mod reference;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod unpack;

pub use build::{BuildConfig, ImageBuilder, fixtures};
pub use error::{ImageError, printable};
pub use reference::{Digest, Reference};
pub use store::{Healthcheck, ImageInfo, ImageStore, Loaded};
