//! The node's image store: docker and OCI archives loaded, verified blob by
//! blob into a content-addressed store, references kept beside them, and
//! each image's layers unpacked once, safely, into a read-only root
//! filesystem an overlay mount can use as its lower directory.
#![forbid(unsafe_code)]

mod error;
pub mod reference;

pub use error::ImageError;
pub use reference::{Digest, Reference};
