//! The short port syntax, as docker's loader reads it (go-connections
//! `nat.ParsePortSpec`, then swarmopts `ConvertPortToPortConfig`):
//! `[ip:][published[-end]:]target[-end][/proto]`. A range maps one to one;
//! a published range with a single target publishes each port of the range
//! to that target. A host IP is accepted and ignored with docker's warning,
//! since swarm publishes on every address.

use std::net::IpAddr;

/// One mapping of a short spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_ip: String,
    /// The published port, or a range when the target is a single port.
    pub host_port: String,
    pub target: u16,
    pub protocol: String,
}

/// `nat.ParsePortRange`: `80` or `8000-8010`.
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    if s.is_empty() {
        return Err("empty string specified for ports".into());
    }
    let Some((a, b)) = s.split_once('-') else {
        let p = s
            .parse::<u16>()
            .map_err(|_| format!("invalid port {s:?}"))?;
        return Ok((p, p));
    };
    // Go splits on every '-' and reads the first two parts.
    let b = b.split('-').next().unwrap_or(b);
    let start = a
        .parse::<u16>()
        .map_err(|_| format!("invalid port {a:?}"))?;
    let end = b
        .parse::<u16>()
        .map_err(|_| format!("invalid port {b:?}"))?;
    if end < start {
        return Err(format!("invalid range specified for port: {s}"));
    }
    Ok((start, end))
}

/// `nat.ParsePortSpec`.
pub fn parse_spec(raw: &str) -> Result<Vec<Mapping>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host_port, container) = match parts.len() {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        3 => (parts[0].to_string(), parts[1], parts[2]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (container, proto) = match container.split_once('/') {
        Some((port, proto)) => (port, if proto.is_empty() { "tcp" } else { proto }),
        None => (container, "tcp"),
    };
    // Go's SplitProtoPort gives no protocol at all for an empty port.
    let proto = if container.is_empty() { "" } else { proto };
    let proto = proto.to_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let mut ip = ip;
    if let Some(inner) = ip.strip_prefix('[') {
        match inner.strip_suffix(']') {
            Some(inner) => ip = inner.to_string(),
            None => return Err(format!("invalid IP address {ip}")),
        }
    }
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    let (start, end) =
        parse_range(container).map_err(|_| format!("invalid containerPort: {container}"))?;
    let mut host = None;
    if !host_port.is_empty() {
        let (hs, he) =
            parse_range(host_port).map_err(|_| format!("invalid hostPort: {host_port}"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container} and {host_port}"
            ));
        }
        host = Some((hs, he));
    }
    let count = u32::from(end - start) + 1;
    Ok((0..count)
        .map(|i| {
            let target = start + i as u16;
            let host_port = match host {
                None => String::new(),
                Some((hs, he)) if count == 1 && hs != he => format!("{hs}-{he}"),
                Some((hs, _)) => (hs + i as u16).to_string(),
            };
            Mapping {
                host_ip: ip.clone(),
                host_port,
                target,
                protocol: proto.clone(),
            }
        })
        .collect())
}

/// One published port as docker's loader makes it from a short spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    pub target: u16,
    /// 0 when not published (swarm picks one).
    pub published: u16,
    pub protocol: String,
}

/// A short spec as the port configs docker's loader produces, sorted the way
/// it sorts them (by the text `port/proto` of each target), and the warnings
/// for host IPs it ignores.
pub fn expand(raw: &str) -> Result<(Vec<Short>, Vec<String>), String> {
    let mappings = parse_spec(raw)?;
    let mut keys: Vec<String> = Vec::new();
    for m in &mappings {
        let key = format!("{}/{}", m.target, m.protocol);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for key in keys {
        for m in mappings
            .iter()
            .filter(|m| format!("{}/{}", m.target, m.protocol) == key)
        {
            if let Ok(addr) = m.host_ip.parse::<IpAddr>()
                && !addr.is_unspecified()
            {
                {
                    let host = if addr.is_ipv6() {
                        format!("[{}]:{}", m.host_ip, m.host_port)
                    } else {
                        format!("{}:{}", m.host_ip, m.host_port)
                    };
                    warnings.push(format!(
                        "ignoring IP-address ({host}:{key}) service will listen on '0.0.0.0'"
                    ));
                }
            }
            let (hs, he) = if m.host_port.is_empty() {
                (0, 0)
            } else {
                parse_range(&m.host_port).map_err(|_| {
                    format!(
                        "invalid hostport binding ({}) for port ({})",
                        m.host_port, m.target
                    )
                })?
            };
            for p in hs..=he {
                out.push(Short {
                    target: m.target,
                    published: p,
                    protocol: m.protocol.clone(),
                });
            }
        }
    }
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn short(target: u16, published: u16, protocol: &str) -> Short {
        Short {
            target,
            published,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn short_syntax() {
        assert_eq!(expand("8080:80").expect("ok").0, [short(80, 8080, "tcp")]);
        assert_eq!(
            expand("8080:80/udp").expect("ok").0,
            [short(80, 8080, "udp")]
        );
        assert_eq!(expand("80").expect("ok").0, [short(80, 0, "tcp")]);
        assert_eq!(
            expand("3000-3002:4000-4002").expect("ok").0,
            [
                short(4000, 3000, "tcp"),
                short(4001, 3001, "tcp"),
                short(4002, 3002, "tcp")
            ]
        );
        assert_eq!(
            expand("9000-9002:80").expect("ok").0,
            [
                short(80, 9000, "tcp"),
                short(80, 9001, "tcp"),
                short(80, 9002, "tcp")
            ]
        );
        // Docker sorts targets as text: "10000/tcp" before "9999/tcp".
        assert_eq!(
            expand("9999-10000").expect("ok").0,
            [short(10000, 0, "tcp"), short(9999, 0, "tcp")]
        );
    }

    #[test]
    fn host_ip_is_ignored_with_dockers_warning() {
        let (ports, warnings) = expand("127.0.0.1:8081:81/udp").expect("ok");
        assert_eq!(ports, [short(81, 8081, "udp")]);
        assert_eq!(
            warnings,
            ["ignoring IP-address (127.0.0.1:8081:81/udp) service will listen on '0.0.0.0'"]
        );
        let (_, warnings) = expand("0.0.0.0:8081:81").expect("ok");
        assert!(warnings.is_empty());
        let (ports, warnings) = expand("[::1]:53:53/udp").expect("ok");
        assert_eq!(ports, [short(53, 53, "udp")]);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand("80/xyz").expect_err("must fail"),
            "invalid proto: xyz"
        );
        assert_eq!(
            expand("a:80").expect_err("must fail"),
            "invalid hostPort: a"
        );
        assert_eq!(
            expand("70000").expect_err("must fail"),
            "invalid containerPort: 70000"
        );
        assert_eq!(
            expand("1.2.3:80:80").expect_err("must fail"),
            "invalid IP address: 1.2.3"
        );
        assert!(
            expand("3000-3001:4000-4002")
                .expect_err("must fail")
                .starts_with("invalid ranges")
        );
        assert_eq!(expand("8080:").expect_err("must fail"), "invalid proto: ");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = expand(&s);
        }

        #[test]
        fn published_target_pairs(p in 1u16.., t in 1u16.., udp in any::<bool>()) {
            let proto = if udp { "udp" } else { "tcp" };
            let (ports, _) = expand(&format!("{p}:{t}/{proto}")).expect("valid");
            prop_assert_eq!(ports, vec![short(t, p, proto)]);
        }
    }
}
