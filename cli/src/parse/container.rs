//! The container flags of `service create`, in docker's syntax: sizes
//! (`--limit-memory 32M`), CPUs (`--limit-cpu 0.5`), `--mount`'s CSV,
//! `--sysctl key=value` and `--entrypoint`.

use std::collections::HashMap;

use shoal_api::cluster::v1::{Mount, MountType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "expected a size: a number and an optional unit b, k, m, g, t or p (binary multiples), \
         e.g. 512m or 1.5g"
    )]
    Size,
    #[error("size too large")]
    SizeOverflow,
    #[error("expected a number of CPUs, e.g. 0.5 or 2")]
    Cpus,
    #[error("value is too precise: at most 9 decimal places (a billionth of a CPU)")]
    CpusTooPrecise,
    #[error("expected KEY=VALUE, e.g. net.core.somaxconn=1024")]
    Sysctl,
    #[error("unbalanced quotes in the CSV")]
    Quotes,
    #[error("invalid field {field:?}: must be a key=value pair, e.g. target=/data")]
    NotAPair { field: String },
    #[error(
        "unknown key {key:?}; use type, source (src), target (dst, destination), readonly (ro), \
         volume-nocopy, tmpfs-size or tmpfs-mode"
    )]
    UnknownKey { key: String },
    #[error("type {value:?}: use volume, bind or tmpfs")]
    Type { value: String },
    #[error("{key}={value}: expected true or false")]
    Bool { key: String, value: String },
    #[error("tmpfs-mode={value}: expected octal permission bits, e.g. 1777 or 0700")]
    Mode { value: String },
    #[error("tmpfs-size={value}: {problem}")]
    TmpfsSize {
        value: String,
        problem: Box<ContainerError>,
    },
    #[error("target is required, e.g. target=/data")]
    NoTarget,
    #[error("target {target:?} must be an absolute path")]
    RelativeTarget { target: String },
    #[error("a bind mount needs source=, the absolute path of a directory on the nodes")]
    BindNoSource,
    #[error("bind source {path:?} must be an absolute path on the nodes")]
    BindRelative { path: String },
    #[error("a tmpfs mount has no source; drop source={path}")]
    TmpfsSource { path: String },
    #[error("{option} is only for {kind} mounts")]
    WrongType {
        option: &'static str,
        kind: &'static str,
    },
}

const KI: u64 = 1024;

/// docker's `RAMInBytes`: `\d+(\.\d+)?` then an optional unit (b, k, m, g,
/// t, p; any case; `kb`/`kib` too), binary multiples.
pub fn parse_size(s: &str) -> Result<u64, ContainerError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult = match unit {
        "" => 1,
        "k" => KI,
        "m" => KI.pow(2),
        "g" => KI.pow(3),
        "t" => KI.pow(4),
        "p" => KI.pow(5),
        _ => return Err(ContainerError::Size),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || (num.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(ContainerError::Size);
    }
    let whole: u64 = int.parse().map_err(|_| ContainerError::SizeOverflow)?;
    let mut bytes = whole
        .checked_mul(mult)
        .ok_or(ContainerError::SizeOverflow)?;
    // The fraction, exactly enough for any unit (at most 2^50 per unit).
    if !frac.is_empty() {
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits.parse().map_err(|_| ContainerError::Size)?;
        let scale = 10u128.pow(digits.len() as u32);
        let extra = u64::try_from(f * u128::from(mult) / scale)
            .map_err(|_| ContainerError::SizeOverflow)?;
        bytes = bytes
            .checked_add(extra)
            .ok_or(ContainerError::SizeOverflow)?;
    }
    Ok(bytes)
}

/// docker's `NanoCPUs`: a decimal number of CPUs, exact to a billionth.
pub fn parse_cpus(s: &str) -> Result<u64, ContainerError> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(ContainerError::Cpus);
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(ContainerError::CpusTooPrecise);
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| ContainerError::Cpus)?
    };
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| ContainerError::Cpus)?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos))
        .ok_or(ContainerError::Cpus)
}

/// `--sysctl key=value`.
pub fn parse_sysctl(s: &str) -> Result<(String, String), ContainerError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(ContainerError::Sysctl),
    }
}

/// One CSV record, as Go's `encoding/csv` reads `--mount`'s value: fields
/// split on commas, a field in double quotes may hold commas (`""` is a
/// quote).
fn csv_fields(s: &str) -> Result<Vec<String>, ContainerError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            c => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(ContainerError::Quotes);
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, ContainerError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(ContainerError::Bool {
            key: key.to_owned(),
            value: value.unwrap_or_default().to_owned(),
        }),
    }
}

/// `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly][,…]`, as
/// docker's `MountOpt`; the type defaults to volume.
pub fn parse_mount(s: &str) -> Result<Mount, ContainerError> {
    let mut m = Mount {
        r#type: MountType::Volume.into(),
        ..Mount::default()
    };
    let mut seen: HashMap<&'static str, ()> = HashMap::new();
    for field in csv_fields(s)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_owned())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: Option<String>| {
            v.ok_or_else(|| ContainerError::NotAPair {
                field: field.clone(),
            })
        };
        match key.as_str() {
            "type" => {
                let v = need(value)?;
                let t = match v.to_ascii_lowercase().as_str() {
                    "volume" => MountType::Volume,
                    "bind" => MountType::Bind,
                    "tmpfs" => MountType::Tmpfs,
                    _ => return Err(ContainerError::Type { value: v }),
                };
                m.r#type = t.into();
            }
            "source" | "src" => m.source = need(value)?,
            "target" | "dst" | "destination" => m.target = need(value)?,
            "readonly" | "ro" => m.read_only = parse_bool(&key, value.as_deref())?,
            "volume-nocopy" => {
                m.volume_nocopy = parse_bool(&key, value.as_deref())?;
                seen.insert("volume-nocopy", ());
            }
            "tmpfs-size" => {
                let v = need(value)?;
                m.tmpfs_size_bytes = parse_size(&v).map_err(|e| ContainerError::TmpfsSize {
                    value: v.clone(),
                    problem: Box::new(e),
                })?;
                seen.insert("tmpfs-size", ());
            }
            "tmpfs-mode" => {
                let v = need(value)?;
                m.tmpfs_mode = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or(ContainerError::Mode { value: v })?;
                seen.insert("tmpfs-mode", ());
            }
            _ => return Err(ContainerError::UnknownKey { key }),
        }
    }
    let kind = MountType::try_from(m.r#type).unwrap_or(MountType::Volume);
    if m.target.is_empty() {
        return Err(ContainerError::NoTarget);
    }
    if !m.target.starts_with('/') {
        return Err(ContainerError::RelativeTarget {
            target: m.target.clone(),
        });
    }
    let tmpfs_opt = ["tmpfs-size", "tmpfs-mode"]
        .into_iter()
        .find(|k| seen.contains_key(k));
    match kind {
        MountType::Bind => {
            if m.source.is_empty() {
                return Err(ContainerError::BindNoSource);
            }
            if !m.source.starts_with('/') {
                return Err(ContainerError::BindRelative {
                    path: m.source.clone(),
                });
            }
        }
        MountType::Tmpfs if !m.source.is_empty() => {
            return Err(ContainerError::TmpfsSource {
                path: m.source.clone(),
            });
        }
        _ => {}
    }
    if let Some(option) = tmpfs_opt.filter(|_| kind != MountType::Tmpfs) {
        return Err(ContainerError::WrongType {
            option,
            kind: "tmpfs",
        });
    }
    if seen.contains_key("volume-nocopy") && kind != MountType::Volume {
        return Err(ContainerError::WrongType {
            option: "volume-nocopy",
            kind: "volume",
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_in_dockers_units() {
        let table: &[(&str, Result<u64, ContainerError>)] = &[
            ("100", Ok(100)),
            ("100b", Ok(100)),
            ("32M", Ok(32 << 20)),
            ("32m", Ok(32 << 20)),
            ("32mb", Ok(32 << 20)),
            ("32MiB", Ok(32 << 20)),
            ("1g", Ok(1 << 30)),
            ("1G", Ok(1 << 30)),
            ("1.5g", Ok(3 << 29)),
            ("4k", Ok(4096)),
            ("2t", Ok(2 << 40)),
            ("1p", Ok(1 << 50)),
            ("6m", Ok(6 << 20)),
            ("", Err(ContainerError::Size)),
            ("m", Err(ContainerError::Size)),
            ("1x", Err(ContainerError::Size)),
            ("1.g", Err(ContainerError::Size)),
            ("1.2.3m", Err(ContainerError::Size)),
            ("-1m", Err(ContainerError::Size)),
            ("99999999999p", Err(ContainerError::SizeOverflow)),
        ];
        for (given, want) in table {
            assert_eq!(&parse_size(given), want, "{given}");
        }
    }

    #[test]
    fn cpus_exact_to_a_billionth() {
        let table: &[(&str, Result<u64, ContainerError>)] = &[
            ("0.5", Ok(500_000_000)),
            ("2", Ok(2_000_000_000)),
            (".25", Ok(250_000_000)),
            ("1.000000001", Ok(1_000_000_001)),
            ("1.0000000010", Ok(1_000_000_001)),
            ("1.0000000001", Err(ContainerError::CpusTooPrecise)),
            ("", Err(ContainerError::Cpus)),
            (".", Err(ContainerError::Cpus)),
            ("-1", Err(ContainerError::Cpus)),
            ("1e3", Err(ContainerError::Cpus)),
            ("half", Err(ContainerError::Cpus)),
        ];
        for (given, want) in table {
            assert_eq!(&parse_cpus(given), want, "{given}");
        }
    }

    fn mount(kind: MountType, source: &str, target: &str) -> Mount {
        Mount {
            r#type: kind.into(),
            source: source.into(),
            target: target.into(),
            ..Mount::default()
        }
    }

    #[test]
    fn mounts_in_dockers_csv() {
        let ok: &[(&str, Mount)] = &[
            (
                "type=bind,source=/srv,target=/data",
                mount(MountType::Bind, "/srv", "/data"),
            ),
            (
                "type=bind,src=/srv,dst=/data,readonly",
                Mount {
                    read_only: true,
                    ..mount(MountType::Bind, "/srv", "/data")
                },
            ),
            (
                "src=cache,destination=/c,ro=false",
                mount(MountType::Volume, "cache", "/c"),
            ),
            ("target=/anon", mount(MountType::Volume, "", "/anon")),
            (
                "type=volume,source=v,target=/v,volume-nocopy",
                Mount {
                    volume_nocopy: true,
                    ..mount(MountType::Volume, "v", "/v")
                },
            ),
            (
                "type=tmpfs,target=/run/t,tmpfs-size=64m,tmpfs-mode=1770",
                Mount {
                    tmpfs_size_bytes: 64 << 20,
                    tmpfs_mode: 0o1770,
                    ..mount(MountType::Tmpfs, "", "/run/t")
                },
            ),
            (
                "type=bind,\"source=/a,b\",target=/ab",
                mount(MountType::Bind, "/a,b", "/ab"),
            ),
            (
                "TYPE=BIND,Source=/s,Target=/t,RO=1",
                Mount {
                    read_only: true,
                    ..mount(MountType::Bind, "/s", "/t")
                },
            ),
        ];
        for (given, want) in ok {
            assert_eq!(parse_mount(given).as_ref(), Ok(want), "{given}");
        }
        let bad: &[(&str, &str)] = &[
            (
                "type=bind,source=/s",
                "target is required, e.g. target=/data",
            ),
            ("target=data", "target \"data\" must be an absolute path"),
            ("type=bind,target=/t", "a bind mount needs source="),
            (
                "type=bind,source=s,target=/t",
                "bind source \"s\" must be an absolute path",
            ),
            (
                "type=tmpfs,source=x,target=/t",
                "a tmpfs mount has no source; drop source=x",
            ),
            (
                "type=nfs,target=/t",
                "type \"nfs\": use volume, bind or tmpfs",
            ),
            (
                "type,target=/t",
                "invalid field \"type\": must be a key=value pair",
            ),
            ("target=/t,colour=red", "unknown key \"colour\""),
            (
                "target=/t,readonly=yes",
                "readonly=yes: expected true or false",
            ),
            (
                "type=tmpfs,target=/t,tmpfs-mode=999",
                "tmpfs-mode=999: expected octal",
            ),
            (
                "type=tmpfs,target=/t,tmpfs-size=lots",
                "tmpfs-size=lots: expected a size",
            ),
            (
                "target=/t,tmpfs-size=1m",
                "tmpfs-size is only for tmpfs mounts",
            ),
            (
                "type=bind,source=/s,target=/t,volume-nocopy",
                "volume-nocopy is only for volume mounts",
            ),
            ("type=bind,\"source=/s,target=/t", "unbalanced quotes"),
        ];
        for (given, want) in bad {
            let e = parse_mount(given)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(want), "{given}: {e}");
        }
    }

    #[test]
    fn sysctls_and_entrypoints() {
        assert_eq!(
            parse_sysctl("net.core.somaxconn=1024"),
            Ok(("net.core.somaxconn".into(), "1024".into()))
        );
        assert_eq!(parse_sysctl("=1"), Err(ContainerError::Sysctl));
        assert_eq!(parse_sysctl("x"), Err(ContainerError::Sysctl));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>()) {
            let _ = parse_size(&s);
            let _ = parse_cpus(&s);
            let _ = parse_mount(&s);
        }

        #[test]
        fn whole_sizes_scale_exactly(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, mult) = [("b", 1), ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)][unit];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n * mult));
        }
    }
}
