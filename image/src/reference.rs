//! Image references and digests, normalised as docker does
//! (`redis:alpine` is `docker.io/library/redis:alpine`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// Where an image without a registry comes from.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The namespace of docker's official images (`redis` is `library/redis`).
const OFFICIAL_NAMESPACE: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// docker's limit on the length of a name (registry and repository).
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A sha256 content digest, `sha256:<64 lowercase hex>`: the only algorithm
/// docker and the OCI registries use for images.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ImageError> {
        let invalid = || ImageError::InvalidDigest {
            digest: s.to_owned(),
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(invalid)?;
        if !is_hex64(hex) {
            return Err(invalid());
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    pub fn from_sha256(sum: [u8; 32]) -> Digest {
        Digest {
            hex: hex::encode(sum),
        }
    }

    /// The 64 hex digits, without `sha256:` (blob file names, docker's IDs).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// docker's short IMAGE ID: the first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // Always valid: oci-spec accepts any sha256 with 64 hex digits.
        oci_spec::image::Digest::from_str(&self.to_string())
            .unwrap_or_else(|_| unreachable!("a validated sha256 digest"))
    }

    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest, ImageError> {
        Digest::parse(d.as_ref())
    }
}

pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// A fully qualified image reference: `registry/repository[:tag][@digest]`.
/// A name with neither tag nor digest gets `:latest`, as docker does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        if is_hex64(s) {
            return Err(bad("cannot specify 64-byte hexadecimal strings as a name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|_| bad("invalid digest"))?),
            ),
            None => (s, None),
        };
        // A tag's `:` comes after the last `/`; an earlier one is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(bad(
                "invalid tag: use up to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        if name.len() > NAME_MAX {
            return Err(bad(
                "repository name must not be longer than 255 characters",
            ));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first, path.to_owned())
            }
            _ => (DEFAULT_REGISTRY, name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        if !valid_registry(registry) {
            return Err(bad("invalid registry host[:port]"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository components are [a-z0-9] separated by '.', '_', '__' or '-' and joined by '/'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// docker's short form: `redis:alpine`, `myreg:5000/a/b:1`.
    pub fn familiar(&self) -> String {
        let first = self.repository.split('/').next().unwrap_or_default();
        // Unlike docker, keep `docker.io/` when dropping it would make the
        // first component read as a registry (`docker.io/a.b/c`).
        let looks_like_registry = first.contains('.') || first == "localhost";
        let mut out = if self.registry == DEFAULT_REGISTRY && !looks_like_registry {
            match self.repository.strip_prefix(OFFICIAL_NAMESPACE) {
                Some(short) if !short.contains('/') => short.to_owned(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.push_suffix(&mut out);
        out
    }

    /// The same name with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+` runs joined by one `.`, one `_`, `__`, or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`, host being DNS labels joined by dots (or `localhost`).
fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl TryFrom<String> for Reference {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Reference::parse(&s)
    }
}

impl From<Reference> for String {
    fn from(r: Reference) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "redis:alpine",
                "docker.io/library/redis:alpine",
                "redis:alpine",
            ),
            (
                "library/redis",
                "docker.io/library/redis:latest",
                "redis:latest",
            ),
            ("docker.io/redis:7", "docker.io/library/redis:7", "redis:7"),
            (
                "index.docker.io/redis",
                "docker.io/library/redis:latest",
                "redis:latest",
            ),
            (
                "bitnami/redis:7.2",
                "docker.io/bitnami/redis:7.2",
                "bitnami/redis:7.2",
            ),
            (
                "library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            ("myreg:5000/a/b:1", "myreg:5000/a/b:1", "myreg:5000/a/b:1"),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x:y",
                "localhost:5000/x:y",
                "localhost:5000/x:y",
            ),
            (
                "quay.io/coreos/etcd",
                "quay.io/coreos/etcd:latest",
                "quay.io/coreos/etcd:latest",
            ),
            (
                "shoal.local/lab-tools",
                "shoal.local/lab-tools:latest",
                "shoal.local/lab-tools:latest",
            ),
            (
                "a__b/c.d-e--f",
                "docker.io/a__b/c.d-e--f:latest",
                "a__b/c.d-e--f:latest",
            ),
            ("Foo.io/bar", "Foo.io/bar:latest", "Foo.io/bar:latest"),
        ];
        for (input, full, short) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *full, "{input}");
            assert_eq!(r.familiar(), *short, "{input}");
        }
        let r = Reference::parse(&format!("myreg:5000/a/b@{D}")).expect("digest ref");
        assert_eq!(r.registry, "myreg:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag, None);
        assert_eq!(
            r.digest.as_ref().map(ToString::to_string).as_deref(),
            Some(D)
        );
        let r = Reference::parse(&format!("busybox:1@{D}")).expect("tag and digest");
        assert_eq!(r.familiar(), format!("busybox:1@{D}"));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
    }

    #[test]
    fn refused_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "-a",
            "a-",
            "myreg:port/x",
            "busybox:a/b",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "UPPER.io/Lower",
        ] {
            assert!(
                matches!(
                    Reference::parse(bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad:?} should be refused"
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&format!("x:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn digests() {
        let d = Digest::parse(D).expect("valid");
        assert_eq!(d.to_string(), D);
        assert_eq!(d.short(), "0123456789ab");
        assert_eq!(Digest::from_oci(&d.to_oci()).expect("round trip"), d);
        for bad in ["sha256:", "sha512:00", "0123", &D.to_uppercase(), &D[..70]] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}(([._]|__|-+)[a-z0-9]{1,5}){0,2}"
    }

    fn reference() -> impl Strategy<Value = Reference> {
        (
            prop_oneof![
                Just("docker.io".to_owned()),
                Just("localhost".to_owned()),
                "[a-z]{1,6}\\.[a-z]{2,3}(:[0-9]{1,5})?",
            ],
            prop::collection::vec(component(), 1..4),
            prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            prop::option::of(prop::array::uniform32(any::<u8>())),
        )
            .prop_map(|(registry, parts, tag, digest)| {
                let mut repository = parts.join("/");
                if registry == DEFAULT_REGISTRY && parts.len() == 1 {
                    repository = format!("library/{repository}");
                }
                let digest = digest.map(Digest::from_sha256);
                let tag = if tag.is_none() && digest.is_none() {
                    Some("latest".into())
                } else {
                    tag
                };
                Reference {
                    registry,
                    repository,
                    tag,
                    digest,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn display_round_trips(r in reference()) {
            prop_assert_eq!(Reference::parse(&r.to_string()).expect("parses"), r.clone());
            prop_assert_eq!(Reference::parse(&r.familiar()).expect("short parses"), r);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = Reference::parse(&s);
            let _ = Digest::parse(&s);
        }

        #[test]
        fn ref_like_garbage_never_panics(s in "[a-zA-Z0-9:/@._-]{0,60}") {
            if let Ok(r) = Reference::parse(&s) {
                prop_assert_eq!(Reference::parse(&r.to_string()).expect("reparses"), r);
            }
        }
    }
}
