//! resolv.conf, both ways: the node's, read for its nameservers, and the
//! task's, which points at the embedded resolver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::EMBEDDED_DNS_ADDR;

/// What glibc uses when resolv.conf names no server.
const FALLBACK_UPSTREAM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

fn directives(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with(['#', ';']))
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(key, rest)| (key, rest.trim()))
}

/// The nameservers of a resolv.conf, port 53, in order, as upstreams of the
/// resolver. The resolver forwards from the node's namespace, so loopback
/// servers (systemd-resolved's 127.0.0.53) are reachable and kept; only
/// 127.0.0.11 is skipped, which would be the resolver asking itself. IPv6
/// addresses with a zone (`fe80::1%eth0`) are skipped too. None at all
/// means 127.0.0.1, as in glibc.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let servers: Vec<SocketAddr> = directives(text)
        .filter(|(key, _)| *key == "nameserver")
        .filter_map(|(_, value)| value.split_whitespace().next()?.parse::<IpAddr>().ok())
        .filter(|ip| *ip != IpAddr::V4(*EMBEDDED_DNS_ADDR.ip()))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        vec![FALLBACK_UPSTREAM]
    } else {
        servers
    }
}

/// The resolv.conf of a task on a node whose own is `node`: the embedded
/// resolver as the only server, the node's search domains and options, and
/// `ndots:0` (as swarm writes it), so a bare service name is asked as is
/// before any search domain is appended to it.
pub fn task_resolv_conf(node: &str) -> String {
    let mut out = format!("nameserver {}\n", EMBEDDED_DNS_ADDR.ip());
    let mut options = Vec::new();
    for (key, value) in directives(node) {
        match key {
            "search" | "domain" => out.push_str(&format!("{key} {value}\n")),
            "options" => options.extend(
                value
                    .split_whitespace()
                    .filter(|option| !option.starts_with("ndots:")),
            ),
            _ => {}
        }
    }
    options.push("ndots:0");
    out.push_str(&format!("options {}\n", options.join(" ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_without_the_embedded_one() {
        let conf = "# generated\n\
                    nameserver 127.0.0.53\n\
                    ; nameserver 9.9.9.9\n\
                    nameserver\t10.1.0.2 # office\n\
                    nameserver 127.0.0.11\n\
                    nameserver 2001:db8::1\n\
                    nameserver fe80::1%eth0\n\
                    nameserver not-an-ip\n\
                    search example.com\n";
        assert_eq!(
            parse_resolv_conf(conf),
            vec![
                "127.0.0.53:53".parse().expect("test"),
                "10.1.0.2:53".parse().expect("test"),
                "[2001:db8::1]:53".parse().expect("test"),
            ]
        );
        assert_eq!(parse_resolv_conf("search x\n"), vec![FALLBACK_UPSTREAM]);
    }

    #[test]
    fn a_task_asks_the_embedded_resolver_with_the_nodes_search_and_ndots_0() {
        let node = "nameserver 10.1.0.2\nsearch corp.example\noptions ndots:2 edns0 timeout:1\n";
        assert_eq!(
            task_resolv_conf(node),
            "nameserver 127.0.0.11\nsearch corp.example\noptions edns0 timeout:1 ndots:0\n"
        );
        assert_eq!(
            task_resolv_conf(""),
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
    }
}
