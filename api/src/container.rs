//! Container options the CLI parses and the managers check again, in
//! docker's grammar: `--ulimit NAME=SOFT[:HARD]` (go-units' `ParseUlimit`)
//! and `--host HOST:IP` (docker/cli's `ValidateExtraHost`, stored in
//! swarmkit's `IP HOST` form).

use std::net::IpAddr;

/// docker's ulimit names (go-units), each with the `RLIMIT_` it sets.
pub const ULIMITS: [(&str, &str); 15] = [
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// The `RLIMIT_` name of a docker ulimit name.
pub fn rlimit(name: &str) -> Option<&'static str> {
    ULIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// One parsed `--ulimit`; -1 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit<'a> {
    pub name: &'a str,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("invalid ulimit argument: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048")]
    Format,
    #[error(
        "invalid ulimit type {0:?}: one of core, cpu, data, fsize, locks, memlock, msgqueue, \
         nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack"
    )]
    Name(String),
    #[error("invalid ulimit value {0:?}: a whole number, or -1 for unlimited")]
    Value(String),
    #[error("too many limit value arguments - {0}, can only have up to two, `soft[:hard]`")]
    TooMany(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard { soft: i64, hard: i64 },
}

/// Checks a ulimit as docker does: a known name, and soft <= hard unless
/// hard is unlimited (-1).
pub fn check_ulimit(name: &str, soft: i64, hard: i64) -> Result<(), UlimitError> {
    if rlimit(name).is_none() {
        return Err(UlimitError::Name(name.to_owned()));
    }
    for v in [soft, hard] {
        if v < -1 {
            return Err(UlimitError::Value(v.to_string()));
        }
    }
    if hard != -1 && soft > hard {
        return Err(UlimitError::SoftAboveHard { soft, hard });
    }
    Ok(())
}

/// `NAME=SOFT[:HARD]`; the hard limit is the soft one when not given.
pub fn parse_ulimit(text: &str) -> Result<Ulimit<'_>, UlimitError> {
    let (name, values) = text.split_once('=').ok_or(UlimitError::Format)?;
    if rlimit(name).is_none() {
        return Err(UlimitError::Name(name.to_owned()));
    }
    let number = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| UlimitError::Value(v.to_owned()))
    };
    let (soft, hard) = match values.split(':').collect::<Vec<_>>()[..] {
        [soft] => (number(soft)?, number(soft)?),
        [soft, hard] => (number(soft)?, number(hard)?),
        _ => return Err(UlimitError::TooMany(values.to_owned())),
    };
    check_ulimit(name, soft, hard)?;
    Ok(Ulimit { name, soft, hard })
}

/// Prints a ulimit as `--ulimit` takes it (`nofile=1024:2048`).
pub fn show_ulimit(name: &str, soft: i64, hard: i64) -> String {
    format!("{name}={soft}:{hard}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("bad format for add-host: {0:?}; expected HOST:IP, e.g. db:10.0.0.5")]
    Format(String),
    #[error("invalid IP address in add-host: {0:?}")]
    Address(String),
    #[error("bad host entry {0:?}: expected \"IP HOST [ALIAS...]\"")]
    Entry(String),
}

fn host_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(':')
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
}

/// `HOST:IP` or `HOST=IP` (the address may be in brackets, an IPv6 one
/// split on the first ':') → swarmkit's `IP HOST` line.
pub fn parse_extra_host(text: &str) -> Result<String, HostError> {
    let (host, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| HostError::Format(text.to_owned()))?;
    if !host_name_ok(host) {
        return Err(HostError::Format(text.to_owned()));
    }
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    let addr: IpAddr = ip.parse().map_err(|_| HostError::Address(ip.to_owned()))?;
    Ok(format!("{addr} {host}"))
}

/// A stored `IP HOST [ALIAS…]` line, checked: an address, then names.
pub fn host_entry(line: &str) -> Result<(IpAddr, Vec<&str>), HostError> {
    let mut fields = line.split_whitespace();
    let bad = || HostError::Entry(line.to_owned());
    let addr: IpAddr = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let names: Vec<&str> = fields.collect();
    if names.is_empty() || !names.iter().all(|n| host_name_ok(n)) {
        return Err(bad());
    }
    Ok((addr, names))
}

/// docker's `--host-rm HOST[:IP]`: the stored lines without `HOST` (only
/// on lines of `IP` when given); a line left without names goes.
pub fn remove_host(lines: &[String], rm: &str) -> Vec<String> {
    let (host, ip) = match rm.split_once(':') {
        Some((h, i)) => (h, Some(i.trim_matches(|c| c == '[' || c == ']'))),
        None => (rm, None),
    };
    let ip: Option<IpAddr> = ip.and_then(|i| i.parse().ok());
    lines
        .iter()
        .filter_map(|line| {
            let Ok((addr, names)) = host_entry(line) else {
                return Some(line.clone());
            };
            if ip.is_some_and(|ip| ip != addr) {
                return Some(line.clone());
            }
            let kept: Vec<&str> = names.into_iter().filter(|n| *n != host).collect();
            (!kept.is_empty()).then(|| format!("{addr} {}", kept.join(" ")))
        })
        .collect()
}

/// A stored line as `--host` takes it back: `HOST:IP` per name.
pub fn show_host(line: &str) -> Vec<String> {
    match host_entry(line) {
        Ok((addr, names)) => names.iter().map(|n| format!("{n}:{addr}")).collect(),
        Err(_) => vec![line.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ulimits_as_docker_parses_them() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok(Ulimit {
                name: "nofile",
                soft: 1024,
                hard: 2048
            })
        );
        assert_eq!(
            parse_ulimit("nproc=512"),
            Ok(Ulimit {
                name: "nproc",
                soft: 512,
                hard: 512
            })
        );
        assert!(parse_ulimit("core=-1:-1").is_ok());
        assert!(parse_ulimit("core=100:-1").is_ok());
        assert_eq!(parse_ulimit("nofile"), Err(UlimitError::Format));
        assert_eq!(
            parse_ulimit("files=1"),
            Err(UlimitError::Name("files".into()))
        );
        assert_eq!(
            parse_ulimit("nofile=2048:1024").map_err(|e| e.to_string()),
            Err("ulimit soft limit must be less than or equal to hard limit: 2048 > 1024".into())
        );
        assert_eq!(
            parse_ulimit("nofile=1:2:3"),
            Err(UlimitError::TooMany("1:2:3".into()))
        );
        assert_eq!(
            parse_ulimit("nofile=a"),
            Err(UlimitError::Value("a".into()))
        );
        assert_eq!(rlimit("nofile"), Some("RLIMIT_NOFILE"));
    }

    #[test]
    fn extra_hosts_as_docker_converts_them() {
        assert_eq!(parse_extra_host("db:10.0.0.5"), Ok("10.0.0.5 db".into()));
        assert_eq!(parse_extra_host("db=10.0.0.5"), Ok("10.0.0.5 db".into()));
        assert_eq!(parse_extra_host("v6:fd00::1"), Ok("fd00::1 v6".into()));
        assert_eq!(parse_extra_host("v6=[fd00::1]"), Ok("fd00::1 v6".into()));
        assert_eq!(parse_extra_host("db"), Err(HostError::Format("db".into())));
        assert_eq!(
            parse_extra_host(":10.0.0.5"),
            Err(HostError::Format(":10.0.0.5".into()))
        );
        assert_eq!(
            parse_extra_host("db:nope"),
            Err(HostError::Address("nope".into()))
        );
        assert!(host_entry("10.0.0.5 db cache").is_ok());
        assert!(host_entry("10.0.0.5").is_err());
        assert!(host_entry("db 10.0.0.5").is_err());
        assert_eq!(
            show_host("10.0.0.5 db cache"),
            ["db:10.0.0.5", "cache:10.0.0.5"]
        );
    }

    #[test]
    fn host_rm_takes_a_name_off_its_lines() {
        let lines = vec!["10.0.0.5 db cache".to_owned(), "10.0.0.6 db".to_owned()];
        assert_eq!(remove_host(&lines, "db"), ["10.0.0.5 cache"]);
        assert_eq!(remove_host(&lines, "db:10.0.0.6"), ["10.0.0.5 db cache"]);
        assert_eq!(remove_host(&lines, "other"), lines);
    }

    proptest! {
        #[test]
        fn ulimit_parser_never_panics_and_round_trips(text in ".{0,40}") {
            if let Ok(u) = parse_ulimit(&text) {
                let shown = show_ulimit(u.name, u.soft, u.hard);
                prop_assert_eq!(parse_ulimit(&shown), Ok(u));
            }
        }

        #[test]
        fn valid_ulimits_parse(i in 0usize..15, soft in -1i64..1 << 40, extra in 0i64..1 << 20) {
            let name = ULIMITS[i].0;
            let hard = if soft == -1 { -1 } else { soft + extra };
            let text = format!("{name}={soft}:{hard}");
            prop_assert_eq!(parse_ulimit(&text), Ok(Ulimit { name, soft, hard }));
        }

        #[test]
        fn extra_host_parser_never_panics_and_stores_a_valid_entry(text in ".{0,40}") {
            if let Ok(line) = parse_extra_host(&text) {
                prop_assert!(host_entry(&line).is_ok(), "{}", line);
            }
        }

        #[test]
        fn extra_hosts_of_any_v4_address(a: [u8; 4], host in "[a-z][a-z0-9.-]{0,20}") {
            let ip = std::net::Ipv4Addr::from(a);
            prop_assert_eq!(parse_extra_host(&format!("{host}:{ip}")), Ok(format!("{ip} {host}")));
        }
    }
}
