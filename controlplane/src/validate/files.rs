//! The secrets and configs a task mounts: where (targets), as whom and with
//! what mode, checked once references are resolved and defaults filled.

use std::collections::BTreeSet;

use super::ValidationError;
use crate::model::FileRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn flag(self) -> &'static str {
        match self {
            FileKind::Secret => "--secret",
            FileKind::Config => "--config",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error(
        "target: '..' is not allowed; give a file name (put under /run/secrets) or a clean absolute path"
    )]
    DotDot,
    #[error("target: a config's target must be an absolute path, such as /etc/app.conf")]
    ConfigNotAbsolute,
    #[error("target: must name a file, not / or a directory (no trailing /)")]
    NotAFile,
    #[error("target: must not contain control characters")]
    Control,
    #[error("mode {mode:#o} is out of range: give 0 to 0777 (octal, such as mode=0400)")]
    Mode { mode: u32 },
    #[error("two files would be at {path}; give each secret and config its own target")]
    DuplicateTarget { path: String },
}

fn shown(r: &FileRef) -> String {
    format!("source={},target={}", r.name, r.target)
}

fn one(kind: FileKind, r: &FileRef) -> Result<(), FileProblem> {
    if r.target.chars().any(char::is_control) {
        return Err(FileProblem::Control);
    }
    if r.target.split('/').any(|c| c == "..") {
        return Err(FileProblem::DotDot);
    }
    if kind == FileKind::Config && !r.target.starts_with('/') {
        return Err(FileProblem::ConfigNotAbsolute);
    }
    if r.target.is_empty() || r.target.ends_with('/') {
        return Err(FileProblem::NotAFile);
    }
    if r.mode > 0o777 {
        return Err(FileProblem::Mode { mode: r.mode });
    }
    Ok(())
}

/// Every reference of a task, then their paths: no two files of a task at
/// one place (a relative secret target counted under /run/secrets).
pub fn file_refs(secrets: &[FileRef], configs: &[FileRef]) -> Result<(), ValidationError> {
    let all = || {
        secrets
            .iter()
            .map(|r| (FileKind::Secret, r))
            .chain(configs.iter().map(|r| (FileKind::Config, r)))
    };
    for (kind, r) in all() {
        one(kind, r).map_err(|problem| ValidationError::File {
            flag: kind.flag(),
            shown: shown(r),
            problem,
        })?;
    }
    let mut paths = BTreeSet::new();
    for (kind, r) in all() {
        // "//a" and "/a" are one file.
        let path = r
            .path()
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .fold(String::new(), |mut p, c| {
                p.push('/');
                p.push_str(c);
                p
            });
        if !paths.insert(path.clone()) {
            return Err(ValidationError::File {
                flag: kind.flag(),
                shown: shown(r),
                problem: FileProblem::DuplicateTarget { path },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(target: &str, mode: u32) -> FileRef {
        FileRef {
            id: "id".into(),
            name: "db".into(),
            target: target.into(),
            uid: 0,
            gid: 0,
            mode,
        }
    }

    fn err(secrets: &[FileRef], configs: &[FileRef]) -> String {
        file_refs(secrets, configs)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn targets_and_modes() {
        assert_eq!(
            err(&[r("db", 0o444), r("/etc/db", 0o400)], &[r("/app.conf", 0)]),
            ""
        );
        assert_eq!(err(&[r("sub/db", 0o777)], &[]), "");
        assert!(err(&[r("../etc/passwd", 0o444)], &[]).contains("'..' is not allowed"));
        assert!(err(&[r("/run/../x", 0o444)], &[]).contains("'..'"));
        assert!(err(&[], &[r("app.conf", 0o444)]).contains("must be an absolute path"));
        assert!(err(&[], &[r("/", 0o444)]).contains("not / or a directory"));
        assert!(err(&[r("a\nb", 0o444)], &[]).contains("control"));
        let mode = err(&[r("db", 0o1000)], &[]);
        assert_eq!(
            mode,
            "--secret source=db,target=db: mode 0o1000 is out of range: give 0 to 0777 (octal, \
             such as mode=0400)"
        );
        // A relative secret target and its absolute path are one file.
        let dup = err(&[r("db", 0o444), r("/run/secrets/db", 0o444)], &[]);
        assert!(
            dup.contains("two files would be at /run/secrets/db"),
            "{dup}"
        );
        let dup = err(&[r("/etc/x", 0o444)], &[r("//etc/x", 0o444)]);
        assert!(dup.starts_with("--config"), "{dup}");
    }
}
