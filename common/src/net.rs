//! IPv4 networks, one type for every crate: the CLI's address pools, the
//! control plane's subnets and IPAM, the overlay driver's specs and the
//! wire's `Ipv4Prefix`. `core::net` only, so the eBPF side could use it too.

use core::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 network: an address with no host bits set and a prefix length
/// of at most 32 (both checked by every constructor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

/// Why a network is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv4NetError {
    /// Not `a.b.c.d/len` (the text is the caller's, so it is not kept here).
    Syntax,
    PrefixLen {
        prefix_len: u8,
    },
    HostBits {
        addr: Ipv4Addr,
        prefix_len: u8,
        network: Ipv4Addr,
    },
}

impl fmt::Display for Ipv4NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => f.write_str("not a subnet: write it as a.b.c.d/len"),
            Self::PrefixLen { prefix_len } => {
                write!(f, "prefix length {prefix_len} is larger than 32")
            }
            Self::HostBits {
                addr,
                prefix_len,
                network,
            } => write!(
                f,
                "{addr}/{prefix_len} has host bits set; the subnet is {network}/{prefix_len}"
            ),
        }
    }
}

impl core::error::Error for Ipv4NetError {}

impl Ipv4Net {
    /// The network `network/prefix_len`; `network` must have no host bits.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, Ipv4NetError> {
        let net = Self::truncate(network, prefix_len)?;
        if net.network != network {
            return Err(Ipv4NetError::HostBits {
                addr: network,
                prefix_len,
                network: net.network,
            });
        }
        Ok(net)
    }

    /// The network `addr` is in: its host bits cleared.
    pub const fn truncate(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, Ipv4NetError> {
        if prefix_len > 32 {
            return Err(Ipv4NetError::PrefixLen { prefix_len });
        }
        Ok(Ipv4Net {
            network: Ipv4Addr::from_bits(addr.to_bits() & Self::mask(prefix_len)),
            prefix_len,
        })
    }

    /// The netmask of a prefix length, as a number (prefix lengths above 32
    /// are taken as 32).
    pub const fn mask(prefix_len: u8) -> u32 {
        let len = if prefix_len > 32 {
            32
        } else {
            prefix_len as u32
        };
        // checked_shl: a shift by 32 (prefix 0) would overflow.
        match u32::MAX.checked_shl(32 - len) {
            Some(m) => m,
            None => 0,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The highest address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix_len))
    }

    /// Whether `addr` is inside the network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask(self.prefix_len) == u32::from(self.network)
    }

    /// Two networks overlap exactly when one contains the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        let mask = Self::mask(self.prefix_len.min(other.prefix_len));
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Strict `a.b.c.d/len`: decimal length, host bits clear.
impl FromStr for Ipv4Net {
    type Err = Ipv4NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or(Ipv4NetError::Syntax)?;
        // u8::from_str would accept "+24".
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Ipv4NetError::Syntax);
        }
        let prefix_len = len.parse().map_err(|_| Ipv4NetError::Syntax)?;
        Ipv4Net::new(addr.parse().map_err(|_| Ipv4NetError::Syntax)?, prefix_len)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::ToString, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn subnets_parse_strictly() {
        let n = net("10.0.9.0/24");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 0, 9, 255));
        assert!(n.contains(Ipv4Addr::new(10, 0, 9, 3)));
        assert!(!n.contains(Ipv4Addr::new(10, 0, 10, 3)));
        assert_eq!(net("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
        assert!(matches!(
            "10.0.9.1/24".parse::<Ipv4Net>(),
            Err(Ipv4NetError::HostBits { .. })
        ));
        for bad in [
            "10.0.9.0",
            "10.0.9.0/",
            "10.0.9.0/+4",
            "10.0.9.0/33",
            "x/24",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap() {
        let cidr =
            |a: [u8; 4], p| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap_or_else(|e| panic!("{e}"));
        let a = cidr([10, 0, 0, 0], 8);
        assert!(a.overlaps(&cidr([10, 20, 0, 0], 16)));
        assert!(cidr([10, 20, 0, 0], 16).overlaps(&a));
        assert!(!a.overlaps(&cidr([192, 168, 0, 0], 16)));
        assert!(cidr([0, 0, 0, 0], 0).overlaps(&a));
        assert!(!cidr([10, 0, 0, 0], 32).overlaps(&cidr([10, 0, 0, 1], 32)));
    }

    proptest! {
        #[test]
        fn subnet_display_then_parse_is_identity(addr in any::<u32>(), len in 0u8..=32) {
            let network = Ipv4Addr::from(addr & Ipv4Net::mask(len));
            let n = Ipv4Net::new(network, len);
            prop_assert!(n.is_ok());
            if let Ok(n) = n {
                prop_assert_eq!(n.to_string().parse::<Ipv4Net>(), Ok(n));
                prop_assert!(n.contains(n.network()) && n.contains(n.broadcast()));
            }
        }

        #[test]
        fn contains_agrees_with_the_address_range(addr in any::<u32>(), len in 0u8..=32, probe in any::<u32>()) {
            let n = Ipv4Net::new(Ipv4Addr::from(addr & Ipv4Net::mask(len)), len);
            prop_assert!(n.is_ok());
            if let Ok(n) = n {
                let inside = (u32::from(n.network())..=u32::from(n.broadcast())).contains(&probe);
                prop_assert_eq!(n.contains(Ipv4Addr::from(probe)), inside);
            }
        }

        #[test]
        fn subnet_parse_never_panics(s in "\\PC{0,24}") {
            let _result = s.parse::<Ipv4Net>();
        }

        #[test]
        fn overlap_is_containment(a in any::<u32>(), pa in 8u8..=29, b in any::<u32>(), pb in 8u8..=29) {
            let n = |x: u32, p: u8| Ipv4Net::truncate(Ipv4Addr::from(x), p);
            let (Ok(x), Ok(y)) = (n(a, pa), n(b, pb)) else { return Err(TestCaseError::fail("prefix")) };
            let contains = |outer: Ipv4Net, inner: Ipv4Net| outer.prefix_len() <= inner.prefix_len()
                && u32::from(inner.network()) & Ipv4Net::mask(outer.prefix_len()) == u32::from(outer.network());
            prop_assert_eq!(x.overlaps(&y), contains(x, y) || contains(y, x));
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
        }

        #[test]
        fn truncate_clears_host_bits(addrs in proptest::collection::vec(any::<u32>(), 1..4), len in 0u8..=32) {
            let nets: Vec<Ipv4Net> = addrs.iter().filter_map(|a| Ipv4Net::truncate(Ipv4Addr::from(*a), len).ok()).collect();
            for (n, a) in nets.iter().zip(&addrs) {
                prop_assert!(n.contains(Ipv4Addr::from(*a)));
                prop_assert_eq!(Ipv4Net::new(n.network(), len), Ok(*n));
            }
        }
    }
}
