//! A small client of the OCI distribution API (the Docker Registry HTTP
//! API v2): resolve a reference to a manifest digest, pull an image into
//! the node's [`ImageStore`], push one from it.
//!
//! Written on hyper's own HTTP/1 client and rustls (ring) rather than on a
//! registry crate: those bring reqwest and aws-lc, which needs cmake. One
//! connection per request, no pool: a pull is a handful of requests, each
//! of them large or rare.
#![forbid(unsafe_code)]

mod auth;
mod client;
mod error;
mod location;
mod manifest;
mod transport;

use std::{fmt, path::PathBuf, time::Duration};

pub use client::Client;
pub use error::RegistryError;
pub use shoal_image::{Digest, ImageStore, Reference};

/// Where TLS roots come from unless `Options::ca_bundle` says otherwise:
/// Debian's bundle of the system's trusted CAs.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Credentials for a registry, as `docker login` keeps them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    // Never the password: errors and traces print these.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the client reaches registries.
#[derive(Clone, Debug)]
pub struct Options {
    /// `host[:port]` of registries reached over plain HTTP, as dockerd's
    /// `--insecure-registry`. `localhost`, 127.0.0.0/8 and `[::1]` always are.
    pub insecure_registries: Vec<String>,
    /// Bound on connecting, on waiting for a response's head, and on each
    /// wait for more of a body (not on a whole transfer). Default 30 s.
    pub timeout: Duration,
    /// PEM bundle of the CAs trusted for HTTPS registries.
    pub ca_bundle: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure_registries: Vec::new(),
            timeout: Duration::from_secs(30),
            ca_bundle: PathBuf::from(DEFAULT_CA_BUNDLE),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The agent spawns these: they must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(c: &Client, r: &Reference, s: &Arc<ImageStore>, d: &Digest) {
        fn send<T: Send>(_: T) {}
        let auth = Credentials::new("u", "p");
        send(c.resolve(r, Some(&auth)));
        send(c.pull(r, Some(&auth), s));
        send(c.push(s, d, r, Some(&auth)));
        send(c.tags(r, Some(&auth), None));
    }

    #[test]
    fn credentials_hide_the_password() {
        let c = Credentials::new("alice", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let r = Reference::parse("busybox:1").expect("reference");
        let not_found = RegistryError::NotFound {
            reference: r.familiar(),
        };
        assert_eq!(not_found.to_string(), "No such image: busybox:1");
        let denied = RegistryError::Unauthorized {
            registry: "docker.io".into(),
        };
        assert!(denied.to_string().contains("--with-registry-auth"));
    }
}
