//! The loader's one error type. Every variant that comes from a place in a
//! file names the file, the line and column, and the key path; the text
//! after that is docker CLI 28's own wording where docker has one.

use std::path::PathBuf;

/// A place in a compose file: its name as given, 1-based line and column,
/// and the dotted key path (`services.web.deploy.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub path: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Specify a Compose file (with --compose-file)")]
    NoFiles,

    #[error("{file}:{line}:{col}: invalid YAML: {message}")]
    Yaml {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },

    #[error("{file}: top-level object must be a mapping")]
    NotAMapping { file: String },

    #[error("{file}: unsupported Compose file version: {version}")]
    UnsupportedVersion { file: String, version: String },

    /// Docker's text, with the file that disagrees with the first.
    #[error("{file}: version mismatched between two composefiles : {first} and {second}")]
    VersionMismatch {
        file: String,
        first: String,
        second: String,
    },

    /// Keys docker refuses outright (`extends`, `volumes_from`,
    /// `mem_limit`, …), each with docker's explanation, sorted.
    #[error("{file}: Compose file contains unsupported options:\n\n{}\n", .properties.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n\n"))]
    Forbidden {
        file: String,
        properties: Vec<(String, String)>,
    },

    #[error("{at}: invalid interpolation format for {}: {template:?}; you may need to escape any $ with another $", .at.path)]
    Interpolation { at: Location, template: String },

    #[error("{at}: required variable {name} is missing a value: {message}")]
    RequiredVariable {
        at: Location,
        name: String,
        message: String,
    },

    #[error("{at}: error while interpolating {}: failed to cast to expected type: {reason}", .at.path)]
    Cast { at: Location, reason: String },

    /// A schema violation: an unknown key, a wrong type, a bad format.
    #[error("{at}: {description}{}", .got.as_ref().map(|g| format!(", got {g}")).unwrap_or_default())]
    Schema {
        at: Location,
        description: String,
        got: Option<String>,
    },

    /// A value the schema allows that docker's loader still refuses (a port
    /// spec, a volume spec, a size, conflicting keys, …).
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },

    #[error("{at}: invalid env file ({}): {reason}", .path.display())]
    EnvFile {
        at: Location,
        path: PathBuf,
        reason: String,
    },

    #[error("service {service:?} uses undefined {kind} {name:?}")]
    Undefined {
        service: String,
        kind: &'static str,
        name: String,
    },

    #[error("invalid image reference for service {service}: no image specified")]
    NoImage { service: String },

    #[error("invalid image reference for service {service}: {reason}")]
    InvalidImage { service: String, reason: String },
}
