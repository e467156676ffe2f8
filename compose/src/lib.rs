//! Compose files for `shoal stack deploy`, loaded exactly as docker CLI 28's
//! `docker stack deploy` loads them (docker/cli `cli/compose/loader`,
//! `interpolation`, `template`, `schema`, `types` and
//! `cli/command/stack/loader`), into a typed, merged, interpolated
//! [`Config`]. This crate talks to nobody: a later step turns the model into
//! Shoal's API requests.
//!
//! Per file, in docker's order: YAML read as yaml.v3 reads it ([`yaml`]),
//! its version checked against the first file's, forbidden keys refused,
//! values interpolated from the caller's environment only (no `.env` file),
//! the file validated against docker's JSON schema for its version, then
//! decoded (env files, paths, short syntaxes). Then the files are merged
//! ([`merge`](crate::merge)) and the whole stack is checked: every service
//! has an image, every network, volume, secret and config it uses is
//! declared.
#![forbid(unsafe_code)]

mod decode;
mod envfile;
mod error;
mod interpolate;
mod merge;
pub mod model;
mod ports;
mod render;
mod schema;
mod template;
mod units;
mod volumespec;
mod yaml;

use std::collections::HashMap;
use std::path::Path;

pub use error::{Error, Location};
pub use model::*;
pub use render::render;
pub use schema::{DEFAULT_VERSION, VERSIONS};

/// One compose file: its name (a path, or `-` for stdin) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The working directory docker uses for a deploy: the directory of the
/// first file (made absolute against `cwd`), or `cwd` itself when that file
/// is stdin (`-`).
pub fn working_dir_for(first_file: &str, cwd: &Path) -> std::path::PathBuf {
    if first_file == "-" {
        return cwd.to_path_buf();
    }
    let abs = decode::abs_path(cwd, first_file);
    Path::new(&abs)
        .parent()
        .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf)
}

/// A loaded stack and the warnings docker would print while loading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Loads, interpolates and merges `sources` in order. Relative paths are
/// resolved against `working_dir`, which docker takes as the first file's
/// directory (the current directory for stdin); `env` is the only source of
/// variables, for interpolation, bare `env_file` keys and valueless
/// `environment` entries.
pub fn load(
    sources: &[Source],
    working_dir: &Path,
    env: &HashMap<String, String>,
) -> Result<Loaded, Error> {
    if sources.is_empty() {
        return Err(Error::NoFiles);
    }
    let mut warnings = Vec::new();
    let mut unset = Vec::new();
    let mut merged: Option<Config> = None;
    let mut stack_version: Option<String> = None;
    let mut unsupported: Vec<&str> = Vec::new();
    let mut deprecated: Vec<(&str, &str)> = Vec::new();
    for source in sources {
        let file = source.name.as_str();
        let mut root = match yaml::parse(&source.text) {
            Ok(Some(root)) if root.as_map().is_some() => root,
            Ok(_) => {
                return Err(Error::NotAMapping {
                    file: file.to_string(),
                });
            }
            Err(e) => {
                return Err(Error::Yaml {
                    file: file.to_string(),
                    line: e.pos.line,
                    col: e.pos.col,
                    message: e.message,
                });
            }
        };
        let version = version_of(&root);
        let first_version = stack_version.get_or_insert_with(|| version.clone()).clone();
        if first_version != version {
            return Err(Error::VersionMismatch {
                file: file.to_string(),
                first: first_version,
                second: version,
            });
        }
        check_forbidden(&root, file)?;
        collect_categories(&root, &mut unsupported, &mut deprecated);
        interpolate::interpolate(&mut root, file, env, &mut unset)?;
        schema::validate(&root, &version).map_err(|e| match e {
            None => Error::UnsupportedVersion {
                file: file.to_string(),
                version: version.clone(),
            },
            Some(e) => Error::Schema {
                at: Location {
                    file: file.to_string(),
                    line: e.pos.line,
                    col: e.pos.col,
                    path: e.field,
                },
                description: e.description,
                got: e.got,
            },
        })?;
        let mut decoder = decode::Decoder::new(file, &version, working_dir, env, &mut warnings);
        let config = decoder.config(&root)?;
        match merged.as_mut() {
            None => merged = Some(config),
            Some(base) => merge::merge(base, config),
        }
    }
    let config = merged.unwrap_or_default();
    validate(&config)?;

    let mut all = Vec::new();
    for name in unset {
        all.push(format!(
            "The {name:?} variable is not set. Defaulting to a blank string."
        ));
    }
    all.extend(warnings);
    if !unsupported.is_empty() {
        unsupported.sort_unstable();
        unsupported.dedup();
        all.push(format!(
            "Ignoring unsupported options: {}",
            unsupported.join(", ")
        ));
    }
    if !deprecated.is_empty() {
        deprecated.sort_unstable();
        deprecated.dedup();
        let lines: Vec<String> = deprecated
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        all.push(format!(
            "Ignoring deprecated options:\n\n{}",
            lines.join("\n\n")
        ));
    }
    Ok(Loaded {
        config,
        warnings: all,
    })
}

/// docker's `schema.Version`: the `version:` value printed as Go's `%v`
/// would, "3" and "" meaning the latest 3.x, no key meaning 3.13 too.
fn version_of(root: &yaml::Node) -> String {
    let Some(v) = root.get("version") else {
        return schema::DEFAULT_VERSION.to_string();
    };
    let text = match &v.value {
        yaml::Value::Str(s) => s.clone(),
        yaml::Value::Int(i) => i.to_string(),
        yaml::Value::Float(f) => yaml::go_float(*f),
        yaml::Value::Bool(b) => b.to_string(),
        yaml::Value::Null => "<nil>".to_string(),
        _ => "<invalid>".to_string(),
    };
    match text.as_str() {
        "" | "3" => schema::DEFAULT_VERSION.to_string(),
        _ => text,
    }
}

fn services_of(root: &yaml::Node) -> impl Iterator<Item = &yaml::Entry> {
    root.get("services")
        .and_then(yaml::Node::as_map)
        .unwrap_or_default()
        .iter()
}

fn check_forbidden(root: &yaml::Node, file: &str) -> Result<(), Error> {
    let mut found: Vec<(String, String)> = Vec::new();
    for svc in services_of(root) {
        for (key, why) in decode::FORBIDDEN {
            if svc.value.get(key).is_some() && !found.iter().any(|(k, _)| k == key) {
                found.push((key.to_string(), why.to_string()));
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(Error::Forbidden {
        file: file.to_string(),
        properties: found,
    })
}

fn collect_categories(
    root: &yaml::Node,
    unsupported: &mut Vec<&'static str>,
    deprecated: &mut Vec<(&'static str, &'static str)>,
) {
    for svc in services_of(root) {
        for key in decode::UNSUPPORTED {
            if svc.value.get(key).is_some() {
                unsupported.push(key);
            }
        }
        for (key, why) in decode::DEPRECATED {
            if svc.value.get(key).is_some() {
                deprecated.push((key, why));
            }
        }
    }
}

/// The checks docker makes on the whole stack before it deploys anything:
/// an image per service, and every reference declared at the top level.
fn validate(config: &Config) -> Result<(), Error> {
    for (name, svc) in &config.services {
        if svc.image.is_empty() {
            return Err(Error::NoImage {
                service: name.clone(),
            });
        }
        if let Err(reason) = check_image(&svc.image) {
            return Err(Error::InvalidImage {
                service: name.clone(),
                reason,
            });
        }
        let undefined = |kind: &'static str, n: &str| Error::Undefined {
            service: name.clone(),
            kind,
            name: n.to_string(),
        };
        for net in svc.networks.keys() {
            // "default" is the stack's implicit network.
            if net != "default" && !config.networks.contains_key(net) {
                return Err(undefined("network", net));
            }
        }
        for s in &svc.secrets {
            if !config.secrets.contains_key(&s.source) {
                return Err(undefined("secret", &s.source));
            }
        }
        for c in &svc.configs {
            if !config.configs.contains_key(&c.source) {
                return Err(undefined("config", &c.source));
            }
        }
        for v in &svc.volumes {
            if v.kind != MountType::Volume {
                continue;
            }
            if let Some(src) = v.source.as_deref().filter(|s| !s.is_empty())
                && !config.volumes.contains_key(src)
            {
                return Err(undefined("volume", src));
            }
        }
    }
    Ok(())
}

/// A light form of distribution/reference's grammar: `[host[:port]/]path
/// [:tag][@digest]`, path components lowercase, or a 64-hex image id.
fn check_image(image: &str) -> Result<(), String> {
    let bad = || "invalid reference format".to_string();
    if image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
        if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(bad());
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        parts.remove(0);
    }
    for p in &parts {
        let component_ok = !p.is_empty()
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !component_ok {
            if p.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "invalid reference format: repository name ({name}) must be lowercase"
                ));
            }
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_dir_is_the_first_files_directory() {
        let cwd = Path::new("/home/me");
        assert_eq!(working_dir_for("-", cwd), Path::new("/home/me"));
        assert_eq!(
            working_dir_for("stack/compose.yml", cwd),
            Path::new("/home/me/stack")
        );
        assert_eq!(working_dir_for("../x/c.yml", cwd), Path::new("/home/x"));
        assert_eq!(working_dir_for("/srv/c.yml", cwd), Path::new("/srv"));
    }

    #[test]
    fn image_references() {
        for ok in [
            "nginx",
            "nginx:1.25",
            "library/nginx:latest",
            "registry:5000/a/b:v1",
            "localhost/x",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_image("Nginx"),
            Err("invalid reference format: repository name (Nginx) must be lowercase".into())
        );
        assert!(check_image("nginx:").is_err());
        assert!(check_image("a//b").is_err());
    }
}
