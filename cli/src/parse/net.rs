//! Addresses and address pools, in the forms shoald accepts: IP addresses
//! (interface names are not resolved yet), IPv4 pools.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use shoal_api::CLUSTER_PORT;
/// An IPv4 network, as `--default-addr-pool` takes it.
pub use shoal_common::net::Ipv4Net as Ipv4Cidr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("missing the prefix length; give a CIDR such as 10.0.0.0/8")]
    NoPrefix,
    #[error("IPv6 pools are not supported; give an IPv4 CIDR such as 10.0.0.0/8")]
    Ipv6Pool,
    #[error("{0:?} is not an IPv4 address; give a CIDR such as 10.0.0.0/8")]
    PoolAddr(String),
    #[error("prefix length must be 0-32")]
    PrefixLength,
    #[error("host bits are set; did you mean {0}?")]
    HostBits(Ipv4Cidr),
    #[error("overlaps --default-addr-pool {0}; give pools that do not overlap")]
    Overlap(Ipv4Cidr),
    #[error("expected an IP address or IP:PORT, e.g. 198.18.0.1:2377{}", iface_hint(*.0))]
    NotIpPort(bool),
    #[error("expected an IP address, e.g. 198.18.0.1{}", iface_hint(*.0))]
    NotIp(bool),
    #[error("port must be 1-65535")]
    Port,
    #[error("expected a manager's HOST[:PORT], e.g. 198.18.0.1:2377")]
    NotHostPort,
}

fn iface_hint(looks_like_name: bool) -> &'static str {
    if looks_like_name {
        " (interface names are not supported; give the interface's address)"
    } else {
        ""
    }
}

/// A value that is not an address but could be an interface name such as
/// `eth0`: docker accepts those, so say why it is refused.
fn looks_like_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// `10.0.0.0/8`: an IPv4 network with no host bits set.
pub fn parse_pool(s: &str) -> Result<Ipv4Cidr, NetError> {
    let (addr, prefix) = s.split_once('/').ok_or(NetError::NoPrefix)?;
    let addr: Ipv4Addr = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a,
        Ok(IpAddr::V6(_)) => return Err(NetError::Ipv6Pool),
        Err(_) => return Err(NetError::PoolAddr(addr.to_owned())),
    };
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or(NetError::PrefixLength)?;
    let net = Ipv4Cidr::truncate(addr, prefix).map_err(|_| NetError::PrefixLength)?;
    if net.network() != addr {
        return Err(NetError::HostBits(net));
    }
    Ok(net)
}

/// `--advertise-addr` and `--listen-addr`: `IP` or `IP:PORT`.
pub fn check_ip_port(s: &str) -> Result<(), NetError> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(NetError::Port),
        Ok(_) => Ok(()),
        Err(_) => Err(NetError::NotIpPort(looks_like_name(s))),
    }
}

/// `--data-path-addr`: an IP, no port (the port is `--data-path-port`).
pub fn check_ip(s: &str) -> Result<(), NetError> {
    s.parse::<IpAddr>()
        .map(drop)
        .map_err(|_| NetError::NotIp(looks_like_name(s)))
}

/// A manager's `HOST[:PORT]`, returned with the port made explicit (2377),
/// so a bare IPv6 address is never mistaken for `host:port`.
pub fn host_port(s: &str) -> Result<String, NetError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return if a.port() == 0 {
            Err(NetError::Port)
        } else {
            Ok(a.to_string())
        };
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, CLUSTER_PORT).to_string());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(NetError::Port)?;
            (host, port)
        }
        None => (s, CLUSTER_PORT),
    };
    if !is_dns_name(host) {
        return Err(NetError::NotHostPort);
    }
    Ok(format!("{host}:{port}"))
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner
/// hyphens, at most 63 bytes each and 253 in all; a trailing dot is allowed.
/// An all-digit last label is refused: that is a mistyped IPv4 address.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(a: [u8; 4], prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr::new(Ipv4Addr::from(a), prefix).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pools() {
        assert_eq!(parse_pool("10.0.0.0/8"), Ok(cidr([10, 0, 0, 0], 8)));
        assert_eq!(parse_pool("0.0.0.0/0"), Ok(cidr([0, 0, 0, 0], 0)));
        assert_eq!(parse_pool("10.1.2.3/32"), Ok(cidr([10, 1, 2, 3], 32)));
        assert_eq!(parse_pool("10.0.0.0/33"), Err(NetError::PrefixLength));
        assert_eq!(parse_pool("10.0.0.0/-1"), Err(NetError::PrefixLength));
        assert_eq!(parse_pool("10.0.0.0/"), Err(NetError::PrefixLength));
        assert_eq!(parse_pool("10.0.0.0"), Err(NetError::NoPrefix));
        assert_eq!(parse_pool("fd00::/8"), Err(NetError::Ipv6Pool));
        assert_eq!(
            parse_pool("10.0.0.300/8"),
            Err(NetError::PoolAddr("10.0.0.300".into()))
        );
        assert_eq!(
            parse_pool("10.1.0.0/8"),
            Err(NetError::HostBits(cidr([10, 0, 0, 0], 8)))
        );
        let e = NetError::HostBits(cidr([10, 0, 0, 0], 8)).to_string();
        assert_eq!(e, "host bits are set; did you mean 10.0.0.0/8?");
    }

    #[test]
    fn addresses() {
        for ok in [
            "198.18.0.1",
            "198.18.0.1:2377",
            "::1",
            "[fd00::1]:2377",
            "0.0.0.0:4000",
        ] {
            assert_eq!(check_ip_port(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_ip_port("198.18.0.1:0"), Err(NetError::Port));
        assert_eq!(check_ip_port("eth0"), Err(NetError::NotIpPort(true)));
        assert_eq!(
            check_ip_port("1.2.3.4:99999"),
            Err(NetError::NotIpPort(false))
        );
        assert!(
            NetError::NotIpPort(true)
                .to_string()
                .contains("interface names")
        );
        assert_eq!(check_ip("10.0.0.1"), Ok(()));
        assert_eq!(check_ip("10.0.0.1:4789"), Err(NetError::NotIp(false)));
        assert_eq!(check_ip("eth1"), Err(NetError::NotIp(true)));
    }

    #[test]
    fn manager_addresses_get_a_port() {
        let ok = |s: &str| host_port(s).ok();
        assert_eq!(ok("198.18.0.1"), Some("198.18.0.1:2377".into()));
        assert_eq!(ok("198.18.0.1:4000"), Some("198.18.0.1:4000".into()));
        assert_eq!(ok("fd00::1"), Some("[fd00::1]:2377".into()));
        assert_eq!(ok("[fd00::1]"), Some("[fd00::1]:2377".into()));
        assert_eq!(ok("[fd00::1]:4000"), Some("[fd00::1]:4000".into()));
        assert_eq!(
            ok("mgr-1.example.com"),
            Some("mgr-1.example.com:2377".into())
        );
        assert_eq!(ok("mgr1:2377"), Some("mgr1:2377".into()));
        assert_eq!(host_port("mgr1:0"), Err(NetError::Port));
        assert_eq!(host_port("mgr1:x"), Err(NetError::Port));
        assert_eq!(host_port(""), Err(NetError::NotHostPort));
        assert_eq!(host_port(":2377"), Err(NetError::NotHostPort));
        assert_eq!(host_port("-bad-:2377"), Err(NetError::NotHostPort));
        assert_eq!(host_port("a b"), Err(NetError::NotHostPort));
        assert_eq!(host_port("10.0.0.256"), Err(NetError::NotHostPort));
        assert_eq!(host_port("tcp://1.2.3.4:2377"), Err(NetError::NotHostPort));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _outcome = parse_pool(&s);
            let _outcome = check_ip_port(&s);
            let _outcome = check_ip(&s);
            let _outcome = host_port(&s);
        }

        #[test]
        fn networks_round_trip(addr: u32, prefix in 0u8..=32) {
            let c = Ipv4Cidr::truncate(Ipv4Addr::from(addr), prefix);
            prop_assert!(c.is_ok());
            let Ok(c) = c else { return Ok(()) };
            prop_assert_eq!(parse_pool(&c.to_string()), Ok(c));
        }

        #[test]
        fn prefix_over_32_is_refused(addr: u32, prefix in 33u32..1000) {
            let s = format!("{}/{prefix}", Ipv4Addr::from(addr));
            prop_assert_eq!(parse_pool(&s), Err(NetError::PrefixLength));
        }
    }
}
