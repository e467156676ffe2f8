//! The kernel's TCP counters as /proc/net/netstat and /proc/net/snmp give
//! them: pairs of lines, `Prefix: Name1 Name2 …` then `Prefix: 1 2 …`. The
//! bench reads them before and after a connection-rate run to count the
//! SYNs it had to send again (`TcpExt.TCPSynRetrans`) and all retransmitted
//! segments (`Tcp.RetransSegs`), rather than guessing why a tail is long.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetstatError {
    #[error(
        "/proc/net counters: line {line} ({prefix:?}) has {names} names but {values} values; is this a Linux /proc/net/netstat or snmp file?"
    )]
    Shape {
        line: usize,
        prefix: String,
        names: usize,
        values: usize,
    },
    #[error(
        "/proc/net counters: line {line}: header {header:?} is not followed by its values line"
    )]
    Unpaired { line: usize, header: String },
    #[error("/proc/net counters: {prefix}.{name} = {value:?} is not an integer")]
    Value {
        prefix: String,
        name: String,
        value: String,
    },
}

/// `Prefix.Name` → value (signed: snmp's `Tcp.MaxConn` is -1).
pub type Counters = BTreeMap<String, i64>;

/// Every counter of one or more /proc/net/{netstat,snmp} texts.
pub fn parse(text: &str) -> Result<Counters, NetstatError> {
    let mut out = Counters::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut i = 0;
    while i < lines.len() {
        let header = lines[i];
        let (prefix, names) = split(header);
        let values_line = lines
            .get(i + 1)
            .filter(|l| split(l).0 == prefix)
            .ok_or_else(|| NetstatError::Unpaired {
                line: i + 1,
                header: header.chars().take(80).collect(),
            })?;
        let (_, values) = split(values_line);
        if names.len() != values.len() {
            return Err(NetstatError::Shape {
                line: i + 2,
                prefix: prefix.to_owned(),
                names: names.len(),
                values: values.len(),
            });
        }
        for (name, value) in names.iter().zip(&values) {
            let v = value.parse::<i64>().map_err(|_| NetstatError::Value {
                prefix: prefix.to_owned(),
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })?;
            out.insert(format!("{prefix}.{name}"), v);
        }
        i += 2;
    }
    Ok(out)
}

/// `after − before` of one counter; `None` when either lacks it (an old
/// kernel without TCPSynRetrans).
pub fn delta(before: &Counters, after: &Counters, key: &str) -> Option<i64> {
    Some(after.get(key)? - before.get(key)?)
}

fn split(line: &str) -> (&str, Vec<&str>) {
    match line.split_once(':') {
        Some((p, rest)) => (p.trim(), rest.split_whitespace().collect()),
        None => ("", line.split_whitespace().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent TCPSynRetrans TCPTimeouts\nTcpExt: 0 17 3\nIpExt: InNoRoutes\nIpExt: 0\n";
    const SNMP: &str = "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 250\n";

    #[test]
    fn netstat_and_snmp() {
        let c = parse(&format!("{NETSTAT}{SNMP}")).expect("valid");
        assert_eq!(c.get("TcpExt.TCPSynRetrans"), Some(&17));
        assert_eq!(c.get("Tcp.RetransSegs"), Some(&250));
        assert_eq!(c.get("Tcp.MaxConn"), Some(&-1));
        let mut after = c.clone();
        after.insert("TcpExt.TCPSynRetrans".into(), 20);
        assert_eq!(delta(&c, &after, "TcpExt.TCPSynRetrans"), Some(3));
        assert_eq!(delta(&c, &after, "TcpExt.Nope"), None);
    }

    #[test]
    fn cut_and_damaged_files() {
        assert!(matches!(
            parse("TcpExt: A B\n"),
            Err(NetstatError::Unpaired { line: 1, .. })
        ));
        assert!(matches!(
            parse("TcpExt: A B\nTcpExt: 1\n"),
            Err(NetstatError::Shape {
                names: 2,
                values: 1,
                ..
            })
        ));
        assert!(matches!(
            parse("TcpExt: A\nTcpExt: x\n"),
            Err(NetstatError::Value { .. })
        ));
        assert!(matches!(
            parse("TcpExt: A\nIpExt: 1\n"),
            Err(NetstatError::Unpaired { .. })
        ));
        assert_eq!(parse(""), Ok(Counters::new()));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn any_truncation_parses_or_errors(cut in 0usize..NETSTAT.len()) {
            // A cut inside a values line may still parse (fewer digits), but
            // never into a counter that is not in the file.
            if let Ok(c) = parse(&NETSTAT[..cut]) {
                prop_assert!(c.keys().all(|k| k.starts_with("TcpExt.") || k.starts_with("IpExt.")));
            }
        }

        #[test]
        fn round_trips(v in proptest::collection::btree_map("[A-Z][A-Za-z]{0,12}", any::<i64>(), 1..20)) {
            let names: Vec<&str> = v.keys().map(String::as_str).collect();
            let values: Vec<String> = v.values().map(i64::to_string).collect();
            let text = format!("TcpExt: {}\nTcpExt: {}\n", names.join(" "), values.join(" "));
            let c = parse(&text).expect("well formed");
            for (k, x) in &v {
                prop_assert_eq!(c.get(&format!("TcpExt.{k}")), Some(x));
            }
        }
    }
}
