//! The short volume syntax (docker's `internal/volumespec.Parse`):
//! `[source:]target[:options]`, options `ro`, `rw`, `nocopy` and bind
//! propagation modes, separated by commas. A source starting with `.`, `/`
//! or `~` (or a Windows drive or pipe) makes a bind mount; any other source
//! names a volume; no source is an anonymous volume.

use crate::model::{BindOptions, MountType, ServiceVolume, VolumeOptions};

const PROPAGATIONS: [&str; 6] = [
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

pub fn parse(spec: &str) -> Result<ServiceVolume, String> {
    let mut volume = ServiceVolume::default();
    match spec.chars().count() {
        0 => return Err("invalid empty volume spec".into()),
        1 | 2 => {
            volume.target = spec.to_string();
            volume.kind = MountType::Volume;
            return Ok(volume);
        }
        _ => {}
    }
    let mut source: Option<String> = None;
    let mut target: Option<String> = None;
    let mut buffer = String::new();
    let chars: Vec<char> = spec.chars().collect();
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        let is_drive = c == Some(':')
            && buffer.chars().count() == 1
            && buffer.chars().next().is_some_and(char::is_alphabetic);
        if is_drive {
            buffer.push(':');
            continue;
        }
        if c.is_some() && c != Some(':') {
            if let Some(c) = c {
                buffer.push(c);
            }
            continue;
        }
        let end = c.is_none();
        if buffer.is_empty() {
            return Err(format!(
                "invalid spec: {spec}: empty section between colons"
            ));
        }
        if source.is_none() && end {
            target = Some(std::mem::take(&mut buffer));
        } else if source.is_none() {
            source = Some(std::mem::take(&mut buffer));
        } else if target.is_none() {
            target = Some(std::mem::take(&mut buffer));
        } else if !end {
            return Err(format!("invalid spec: {spec}: too many colons"));
        } else {
            for option in buffer.split(',') {
                match option {
                    "ro" => volume.read_only = true,
                    "rw" => volume.read_only = false,
                    "nocopy" => {
                        volume.volume = Some(VolumeOptions {
                            nocopy: true,
                            subpath: None,
                        });
                    }
                    p if PROPAGATIONS.contains(&p) => {
                        volume.bind = Some(BindOptions {
                            propagation: Some(p.to_string()),
                        });
                    }
                    // Docker ignores options it does not know.
                    _ => {}
                }
            }
            buffer.clear();
        }
    }
    volume.kind = match &source {
        None => MountType::Volume,
        Some(s) if is_file_path(s) => MountType::Bind,
        Some(_) => MountType::Volume,
    };
    volume.source = source;
    volume.target = target.unwrap_or_default();
    Ok(volume)
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(first, '.' | '/' | '~') {
        return true;
    }
    if source.chars().count() == 1 {
        return false;
    }
    if source.starts_with("\\\\") {
        return true;
    }
    first.is_alphabetic() && chars.next() == Some(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_syntax() {
        let v = parse("data:/var/lib/data:ro").expect("ok");
        assert_eq!(v.kind, MountType::Volume);
        assert_eq!(v.source.as_deref(), Some("data"));
        assert_eq!(v.target, "/var/lib/data");
        assert!(v.read_only);
        let b = parse("./src:/src").expect("ok");
        assert_eq!(b.kind, MountType::Bind);
        assert_eq!(b.source.as_deref(), Some("./src"));
        let a = parse("/anonymous").expect("ok");
        assert_eq!(
            (a.kind, a.source, a.target.as_str()),
            (MountType::Volume, None, "/anonymous")
        );
        let n = parse("vol:/d:nocopy,rshared").expect("ok");
        assert_eq!(
            n.volume,
            Some(VolumeOptions {
                nocopy: true,
                subpath: None
            })
        );
        assert_eq!(
            n.bind,
            Some(BindOptions {
                propagation: Some("rshared".into())
            })
        );
        let w = parse("C:\\data:/data").expect("ok");
        assert_eq!(
            (w.kind, w.source.as_deref()),
            (MountType::Bind, Some("C:\\data"))
        );
        // As in docker, a one-letter source is a Windows drive.
        assert_eq!(
            parse("v:/d:ro").expect("ok").source.as_deref(),
            Some("v:/d")
        );
        assert_eq!(
            parse("ab:bc:cd:de").expect_err("must fail"),
            "invalid spec: ab:bc:cd:de: too many colons"
        );
        assert_eq!(
            parse("ab::c").expect_err("must fail"),
            "invalid spec: ab::c: empty section between colons"
        );
        assert_eq!(
            parse("").expect_err("must fail"),
            "invalid empty volume spec"
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }
    }
}
