//! Image references in docker's grammar (distribution's `reference`
//! package): `[registry[:port]/]path[:tag][@sha256:<hex>]`, the reserved
//! name `host` (the node's own root filesystem), their normalised form
//! (`docker.io/library/busybox:latest`, what image stores and the cluster's
//! catalogue key on) and the familiar form docker prints (`busybox:latest`).

use std::fmt;

/// The reserved image name: the node's root filesystem, read-only.
pub const HOST: &str = "host";
/// The registry of names without one.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host[:port]; [`DEFAULT_DOMAIN`] when none was given.
    pub domain: String,
    /// Repository path (`library/busybox` on docker.io).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("give an image, or `host` for the node's filesystem")]
    Empty,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error(
        "invalid reference format: path components are lowercase letters and digits, \
         separated by '.', '_', '__' or dashes (registry:5000/team/app:1.0)"
    )]
    Path,
    #[error("invalid registry host {0:?}: letters, digits, '-' and '.', then an optional :port")]
    Domain(String),
    #[error(
        "invalid tag {0:?}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' \
         or '-'"
    )]
    Tag(String),
    #[error("invalid digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    Digest(String),
    #[error("repository name is longer than 255 characters")]
    TooLong,
}

fn alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+ (([_.]|__|-+) [a-z0-9]+)*`
fn path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !alnum(char::from(b[0])) || !alnum(char::from(b[b.len() - 1])) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = char::from(b[i]);
        if alnum(c) {
            i += 1;
            continue;
        }
        // A separator run, then an alphanumeric must follow.
        let start = i;
        while i < b.len() && !alnum(char::from(b[i])) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]`, host = dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`.
fn domain_ok(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

impl Reference {
    /// Parses `s` as docker does; `host` is not a reference (check it first).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if digest_ok(d) => (r, Some(d.to_owned())),
            Some((_, d)) => return Err(ReferenceError::Digest(d.to_owned())),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                let t = &t[1..];
                if !tag_ok(t) {
                    return Err(ReferenceError::Tag(t.to_owned()));
                }
                (n, Some(t.to_owned()))
            }
            None => (rest, None),
        };
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong);
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first != first.to_lowercase() =>
            {
                if !domain_ok(first) {
                    return Err(ReferenceError::Domain(first.to_owned()));
                }
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
        };
        if path.is_empty() || !path.split('/').all(path_component) {
            return Err(if path != path.to_lowercase() {
                ReferenceError::Uppercase
            } else {
                ReferenceError::Path
            });
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// With `latest` when neither a tag nor a digest was given, as docker
    /// pulls.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_owned());
        }
        self
    }

    /// `domain/path`, the repository.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// docker's short form: no `docker.io/`, no `library/`.
    pub fn familiar(&self) -> String {
        let name = if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_PREFIX)
                .unwrap_or(&self.path)
                .to_owned()
        } else {
            self.name()
        };
        Suffixed(&name, self).to_string()
    }
}

struct Suffixed<'a>(&'a str, &'a Reference);

impl fmt::Display for Suffixed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        if let Some(t) = &self.1.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.1.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The normalised form: `docker.io/library/busybox:latest`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Suffixed(&self.name(), self).fmt(f)
    }
}

/// How docker prints an image in `service ls`: the familiar form with its
/// tag (`busybox:latest`), without a pinned digest; `host` as it is.
pub fn familiar(image: &str) -> String {
    if image == HOST {
        return HOST.to_owned();
    }
    match Reference::parse(image) {
        Ok(r) => {
            let r = Reference {
                digest: None,
                ..r.with_default_tag()
            };
            r.familiar()
        }
        Err(_) => image.to_owned(),
    }
}

/// How `service inspect` prints a pinned image, as swarm does:
/// `busybox:latest@sha256:…` (familiar form, tag kept, digest appended).
pub fn pinned(image: &str, digest: &str) -> String {
    if digest.is_empty() || image == HOST || image.contains('@') {
        return image.to_owned();
    }
    format!("{}@{digest}", familiar(image))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_images_keep_their_tag_as_swarm_prints_them() {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        assert_eq!(super::pinned("busybox", &d), format!("busybox:latest@{d}"));
        assert_eq!(
            super::pinned("reg:5000/a/b:1", &d),
            format!("reg:5000/a/b:1@{d}")
        );
        assert_eq!(super::pinned("host", ""), "host");
        assert_eq!(super::pinned("busybox", ""), "busybox");
    }

    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_normalise_as_docker() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("team/app", "docker.io/team/app:latest", "team/app:latest"),
            (
                "registry:5000/a/b:1",
                "registry:5000/a/b:1",
                "registry:5000/a/b:1",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "team/a-b__c.d",
                "docker.io/team/a-b__c.d:latest",
                "team/a-b__c.d:latest",
            ),
        ];
        for (given, normal, fam) in cases {
            let r = Reference::parse(given).map(Reference::with_default_tag);
            assert_eq!(
                r.as_ref().map(ToString::to_string).ok().as_deref(),
                Some(normal),
                "{given}"
            );
            assert_eq!(familiar(given), fam, "{given}");
        }
        let pinned = format!("busybox@{D}");
        let r = Reference::parse(&pinned).map(Reference::with_default_tag);
        assert_eq!(
            r.map(|r| r.to_string()).ok(),
            Some(format!("docker.io/library/busybox@{D}"))
        );
        assert_eq!(familiar("host"), "host");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        type Check = fn(&ReferenceError) -> bool;
        let bad: &[(&str, Check)] = &[
            ("", |e| *e == ReferenceError::Empty),
            ("BusyBox", |e| *e == ReferenceError::Uppercase),
            ("a//b", |e| *e == ReferenceError::Path),
            ("a-/b", |e| *e == ReferenceError::Path),
            ("-a", |e| *e == ReferenceError::Path),
            ("a:.x", |e| matches!(e, ReferenceError::Tag(_))),
            ("a@sha256:12", |e| matches!(e, ReferenceError::Digest(_))),
            ("a@md5:12", |e| matches!(e, ReferenceError::Digest(_))),
            ("reg-:80/a", |e| matches!(e, ReferenceError::Domain(_))),
            ("reg:x/a", |e| matches!(e, ReferenceError::Domain(_))),
        ];
        for (s, want) in bad {
            let e = Reference::parse(s).err();
            assert!(e.as_ref().is_some_and(want), "{s}: {e:?}");
        }
        let long_tag = format!("a:{}", "x".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        assert!(Reference::parse(&format!("a:{}", "x".repeat(128))).is_ok());
    }
}
