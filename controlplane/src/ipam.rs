//! Address management for overlay networks: subnets carved from the
//! cluster's default pools, VNIs, and task addresses within a subnet. Pure
//! functions over what the Raft state already holds, so an allocation is
//! remembered exactly as long as the object that owns it, across manager
//! restarts and leader changes.

use std::{collections::BTreeSet, net::Ipv4Addr};

pub use shoal_common::net::Ipv4Net;

/// swarm's first overlay VNI; below it Docker reserves nothing, but keeping
/// its numbering makes captures look familiar to swarm operators.
pub const FIRST_VNI: u32 = 4096;
/// VXLAN's 24-bit VNI space.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// A stored subnet, as written by this module (`a.b.c.d/p`, host bits clear).
pub fn parse_net(s: &str) -> Option<Ipv4Net> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    Ipv4Net::truncate(addr, prefix.parse().ok()?).ok()
}

/// The first `/size` subnet, in pool order, that overlaps none of `taken`.
pub fn next_subnet(pools: &[Ipv4Net], size: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    for pool in pools
        .iter()
        .filter(|p| p.prefix_len() <= size && size <= 32)
    {
        let step = 1u64 << (32 - u32::from(size));
        let start = u64::from(u32::from(pool.network()));
        let end = start + (1u64 << (32 - u32::from(pool.prefix_len())));
        let mut at = start;
        while at < end {
            let candidate = Ipv4Net::new(Ipv4Addr::from(u32::try_from(at).ok()?), size).ok()?;
            match taken.iter().find(|t| t.overlaps(&candidate)) {
                None => return Some(candidate),
                // Skip past the whole taken block when it is the larger one.
                Some(t) if t.prefix_len() < size => {
                    at = u64::from(u32::from(t.network()))
                        + (1u64 << (32 - u32::from(t.prefix_len())));
                }
                Some(_) => at += step,
            }
        }
    }
    None
}

/// The lowest free VNI from [`FIRST_VNI`].
pub fn next_vni(taken: &BTreeSet<u32>) -> Option<u32> {
    (FIRST_VNI..=MAX_VNI).find(|v| !taken.contains(v))
}

/// The conventional gateway: the subnet's first host address.
pub fn gateway(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    host(subnet, 1)
}

/// Host `n` of the subnet (0 = the network address); `None` past the
/// broadcast address.
fn host(subnet: Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    if u64::from(n) + 1 >= size {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(subnet.network()) + n))
}

/// The lowest address of `subnet` that is not the network, the broadcast,
/// the gateway or in `taken`.
pub fn next_address(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    (1..)
        .map_while(|n| host(subnet, n))
        .find(|a| *a != gateway && !taken.contains(a))
}

/// Whether `addr` lies inside `net`.
pub fn contains(net: Ipv4Net, addr: Ipv4Addr) -> bool {
    net.contains(addr)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        parse_net(s).unwrap_or_else(|| panic!("{s}"))
    }

    fn trunc(a: u32, prefix: u8) -> Ipv4Net {
        Ipv4Net::truncate(Ipv4Addr::from(a), prefix).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn carves_24s_out_of_swarms_pool() {
        let pools = [net("10.0.0.0/8")];
        assert_eq!(next_subnet(&pools, 24, &[]), Some(net("10.0.0.0/24")));
        let taken = [net("10.0.0.0/24"), net("10.0.1.0/24")];
        assert_eq!(next_subnet(&pools, 24, &taken), Some(net("10.0.2.0/24")));
        // A user-given /16 is skipped whole.
        let taken = [net("10.0.0.0/16")];
        assert_eq!(next_subnet(&pools, 24, &taken), Some(net("10.1.0.0/24")));
        // Pools are used in order; a full pool falls through to the next.
        let pools = [net("192.168.0.0/23"), net("172.16.0.0/16")];
        let taken = [net("192.168.0.0/24"), net("192.168.1.0/24")];
        assert_eq!(next_subnet(&pools, 24, &taken), Some(net("172.16.0.0/24")));
        assert_eq!(next_subnet(&[net("10.0.0.0/24")], 16, &[]), None);
    }

    #[test]
    fn addresses_skip_gateway_network_and_broadcast() {
        let s = net("10.0.9.0/30");
        let gw = gateway(s).unwrap_or(Ipv4Addr::UNSPECIFIED);
        assert_eq!(gw, Ipv4Addr::new(10, 0, 9, 1));
        let mut taken = BTreeSet::new();
        assert_eq!(
            next_address(s, gw, &taken),
            Some(Ipv4Addr::new(10, 0, 9, 2))
        );
        taken.insert(Ipv4Addr::new(10, 0, 9, 2));
        assert_eq!(
            next_address(s, gw, &taken),
            None,
            "10.0.9.3 is the broadcast"
        );
        assert_eq!(next_vni(&BTreeSet::from([4096, 4097])), Some(4098));
    }

    proptest! {
        /// Allocating until a pool runs out: every subnet is inside the pool,
        /// aligned, and overlaps nothing handed out before it.
        #[test]
        fn subnets_are_never_handed_out_twice(
            pool_addr in any::<u32>(),
            pool_prefix in 8u8..=20,
            extra in 0u8..=6,
            pre in proptest::collection::vec((any::<u32>(), 8u8..=28), 0..4),
        ) {
            let size = pool_prefix + extra;
            let pool = trunc(pool_addr, pool_prefix);
            let mut taken: Vec<Ipv4Net> = pre.iter()
                .map(|(a, p)| trunc(*a, *p))
                .collect();
            let mut handed = 0u64;
            while let Some(s) = next_subnet(&[pool], size, &taken) {
                prop_assert_eq!(s.prefix_len(), size);
                prop_assert!(pool.overlaps(&s) && pool.prefix_len() <= s.prefix_len());
                prop_assert!(taken.iter().all(|t| !t.overlaps(&s)), "{s} overlaps");
                taken.push(s);
                handed += 1;
                prop_assert!(handed <= 1 << extra);
            }
            if pre.is_empty() {
                prop_assert_eq!(handed, 1u64 << extra, "the pool was not used up");
            }
        }

        /// Same for task addresses in a subnet: distinct, inside, never the
        /// gateway, the network or the broadcast address.
        #[test]
        fn addresses_are_never_handed_out_twice(a in any::<u32>(), prefix in 22u8..=30) {
            let s = trunc(a, prefix);
            let gw = gateway(s);
            prop_assert!(gw.is_some());
            let gw = gw.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let mut taken = BTreeSet::new();
            while let Some(addr) = next_address(s, gw, &taken) {
                prop_assert!(contains(s, addr) && addr != gw && addr != s.network());
                prop_assert!(taken.insert(addr), "{addr} handed out twice");
            }
            // All hosts but the gateway: 2^(32-p) - network - broadcast - gateway.
            prop_assert_eq!(taken.len() as u64, (1u64 << (32 - prefix)) - 3);
        }

        #[test]
        fn stored_subnets_parse_back(a in any::<u32>(), prefix in 0u8..=32) {
            let n = trunc(a, prefix);
            prop_assert_eq!(parse_net(&n.to_string()), Some(n));
        }
    }
}
