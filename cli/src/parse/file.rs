//! `--secret`/`--config` (and their `-add` forms): docker's short form
//! `NAME`, or its CSV long form
//! `source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0400]`.

use shoal_api::cluster::v1::FileReference;

/// The keys the long form takes, for messages.
const ACCEPTED: &str = "source (or src), target, uid, gid, mode";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    #[error("give a name, or source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0400]")]
    Empty,
    #[error("{field:?} is not key=value; the keys are: {ACCEPTED}")]
    NotKeyValue { field: String },
    #[error("unknown key {key:?}; the keys are: {ACCEPTED}")]
    UnknownKey { key: String },
    #[error("{key} is given twice")]
    Duplicate { key: &'static str },
    #[error("source= is missing: name the secret or config (source=NAME)")]
    NoSource,
    #[error("{key}={value}: give a numeric id, 0 to 4294967295")]
    Id { key: &'static str, value: String },
    #[error("mode={value}: give octal permission bits, 0 to 0777, such as mode=0400")]
    Mode { value: String },
}

/// Octal permission bits: `0400`, `400`, `0o400`.
fn mode(v: &str) -> Result<u32, FileRefError> {
    let bad = || FileRefError::Mode {
        value: v.to_owned(),
    };
    let digits = v.strip_prefix("0o").unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let m = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if m > 0o777 {
        return Err(bad());
    }
    Ok(m)
}

fn id(key: &'static str, v: &str) -> Result<u32, FileRefError> {
    // Digits only: `u32::from_str` would take "+1".
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FileRefError::Id {
            key,
            value: v.to_owned(),
        });
    }
    v.parse().map_err(|_| FileRefError::Id {
        key,
        value: v.to_owned(),
    })
}

/// One `--secret`/`--config` value. An unset target stays empty (the
/// manager fills the default: the name under /run/secrets for a secret,
/// `/<name>` for a config), as does an unset mode (0444).
pub fn parse_file_ref(v: &str) -> Result<FileReference, FileRefError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(FileRefError::Empty);
    }
    if !v.contains('=') {
        if v.contains(',') {
            return Err(FileRefError::NotKeyValue {
                field: v.split(',').next().unwrap_or_default().to_owned(),
            });
        }
        return Ok(FileReference {
            source: v.to_owned(),
            ..FileReference::default()
        });
    }
    let mut r = FileReference::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for field in v.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| FileRefError::NotKeyValue {
                field: field.to_owned(),
            })?;
        let key: &'static str = match key.trim().to_ascii_lowercase().as_str() {
            "source" | "src" => "source",
            "target" => "target",
            "uid" => "uid",
            "gid" => "gid",
            "mode" => "mode",
            _ => {
                return Err(FileRefError::UnknownKey {
                    key: key.to_owned(),
                });
            }
        };
        if seen.contains(&key) {
            return Err(FileRefError::Duplicate { key });
        }
        seen.push(key);
        let value = value.trim();
        match key {
            "source" => r.source = value.to_owned(),
            "target" => r.target = value.to_owned(),
            "uid" => r.uid = id("uid", value)?,
            "gid" => r.gid = id("gid", value)?,
            _ => r.mode = mode(value)?,
        }
    }
    if r.source.is_empty() {
        return Err(FileRefError::NoSource);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_and_long_forms() {
        assert_eq!(
            parse_file_ref("db_pass"),
            Ok(FileReference {
                source: "db_pass".into(),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_file_ref("source=db_pass,target=pw,uid=1000,gid=1001,mode=0400"),
            Ok(FileReference {
                source: "db_pass".into(),
                target: "pw".into(),
                uid: 1000,
                gid: 1001,
                mode: 0o400,
                ..Default::default()
            })
        );
        assert_eq!(
            parse_file_ref("src=app,target=/etc/app.conf,mode=440").map(|r| (r.target, r.mode)),
            Ok(("/etc/app.conf".into(), 0o440))
        );
        let e = |v| {
            parse_file_ref(v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            e("source=a,owner=1"),
            "unknown key \"owner\"; the keys are: source (or src), target, uid, gid, mode"
        );
        assert!(e("source=a,mode=0800").starts_with("mode=0800: give octal"));
        assert!(e("source=a,mode=01000").starts_with("mode=01000"));
        assert!(e("source=a,uid=root").starts_with("uid=root: give a numeric id"));
        assert!(e("source=a,gid=-1").starts_with("gid=-1"));
        assert!(e("target=/x").starts_with("source= is missing"));
        assert!(e("source=a,source=b").contains("given twice"));
        assert!(e("source=a,readonly").contains("\"readonly\" is not key=value"));
        assert!(e("a,b").contains("is not key=value"));
        assert!(e("").starts_with("give a name"));
    }

    proptest! {
        #[test]
        fn never_panics(v in any::<String>()) {
            let _ = parse_file_ref(&v);
        }

        /// Whatever the long form says, the reference carries it back.
        #[test]
        fn long_form_round_trips(
            source in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}",
            target in "(/?[a-z0-9._-]{1,10}){1,3}",
            uid in any::<u32>(),
            gid in any::<u32>(),
            mode in 0u32..=0o777,
        ) {
            let text = format!("source={source},target={target},uid={uid},gid={gid},mode={mode:04o}");
            let r = parse_file_ref(&text);
            prop_assert_eq!(r, Ok(FileReference {
                source, target, uid, gid, mode, ..Default::default()
            }));
        }

        /// A mode above 0777 is refused, naming mode.
        #[test]
        fn modes_out_of_range_are_refused(mode in 0o1000u32..0o100000) {
            let r = parse_file_ref(&format!("source=a,mode={mode:o}"));
            let is_mode_error = matches!(r, Err(FileRefError::Mode { .. }));
            prop_assert!(is_mode_error);
        }
    }
}
