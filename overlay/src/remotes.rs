//! What a node has programmed for one network, as read back from the kernel.

use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::{MacAddr, RemoteEndpoint};

/// A static FDB entry on the VXLAN device: frames for `mac` go to `vtep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub vtep: Ipv4Addr,
}

/// A neighbour entry on the VXLAN device: `ip` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// The FDB and neighbour entries of a network's VXLAN device, paired up.
///
/// A complete remote endpoint needs both entries; the halves without a
/// partner are listed apart, so that a reconciler (or a test) sees entries
/// left over by an interrupted add or remove, and anything it did not
/// program, such as an all-zeros flood entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remotes {
    /// Endpoints with both an FDB and a neighbour entry, sorted.
    pub endpoints: Vec<RemoteEndpoint>,
    /// FDB entries whose MAC no neighbour entry uses, sorted.
    pub fdb_only: Vec<FdbEntry>,
    /// Neighbour entries whose MAC no FDB entry sends anywhere, sorted.
    pub neighbours_only: Vec<NeighbourEntry>,
}

impl Remotes {
    /// Pairs entries by MAC. A MAC with two FDB destinations (which the
    /// driver never programs) yields one endpoint per destination.
    pub fn pair(mut fdb: Vec<FdbEntry>, mut neighbours: Vec<NeighbourEntry>) -> Remotes {
        fdb.sort();
        fdb.dedup();
        neighbours.sort();
        neighbours.dedup();
        let mut endpoints: Vec<RemoteEndpoint> = neighbours
            .iter()
            .flat_map(|n| {
                fdb.iter()
                    .filter(move |f| f.mac == n.mac)
                    .map(move |f| RemoteEndpoint {
                        ip: n.ip,
                        mac: n.mac,
                        vtep: f.vtep,
                    })
            })
            .collect();
        endpoints.sort();
        let fdb_only = fdb
            .iter()
            .filter(|f| !neighbours.iter().any(|n| n.mac == f.mac))
            .copied()
            .collect();
        let neighbours_only = neighbours
            .iter()
            .filter(|n| !fdb.iter().any(|f| f.mac == n.mac))
            .copied()
            .collect();
        Remotes {
            endpoints,
            fdb_only,
            neighbours_only,
        }
    }

    /// Where the FDB sends each unicast MAC that has exactly one
    /// destination: what a mirror of it may act on. The all-zero (flood)
    /// entry, multicast MACs and a MAC with two destinations are left to
    /// the device.
    pub fn unicast_destinations(&self) -> BTreeMap<MacAddr, Ipv4Addr> {
        let mut out: BTreeMap<MacAddr, Option<Ipv4Addr>> = BTreeMap::new();
        let all = self
            .endpoints
            .iter()
            .map(|e| (e.mac, e.vtep))
            .chain(self.fdb_only.iter().map(|f| (f.mac, f.vtep)));
        for (mac, vtep) in all {
            let o = mac.octets();
            if o == [0; 6] || o[0] & 1 != 0 || vtep.is_unspecified() || vtep.is_multicast() {
                continue;
            }
            out.entry(mac)
                .and_modify(|v| {
                    if *v != Some(vtep) {
                        *v = None;
                    }
                })
                .or_insert(Some(vtep));
        }
        out.into_iter()
            .filter_map(|(mac, vtep)| Some((mac, vtep?)))
            .collect()
    }

    /// Every entry belongs to a complete endpoint.
    pub fn is_consistent(&self) -> bool {
        self.fdb_only.is_empty() && self.neighbours_only.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0x42, 10, 0, 9, last])
    }

    #[test]
    fn unicast_destinations_leave_flood_multicast_and_doubled_macs_to_the_device() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3));
        let node = MacAddr([0x02, 0x53, 198, 18, 0, 3]);
        let fdb = vec![
            FdbEntry {
                mac: mac(1),
                vtep: a,
            },
            FdbEntry {
                mac: mac(2),
                vtep: a,
            },
            FdbEntry {
                mac: mac(2),
                vtep: b,
            },
            FdbEntry { mac: node, vtep: b },
            FdbEntry {
                mac: MacAddr([0; 6]),
                vtep: a,
            },
            FdbEntry {
                mac: MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                vtep: a,
            },
            FdbEntry {
                mac: mac(3),
                vtep: Ipv4Addr::UNSPECIFIED,
            },
        ];
        let neighbours = vec![
            NeighbourEntry {
                ip: Ipv4Addr::new(10, 0, 9, 1),
                mac: mac(1),
            },
            NeighbourEntry {
                ip: Ipv4Addr::new(10, 0, 9, 2),
                mac: mac(2),
            },
        ];
        let got = Remotes::pair(fdb, neighbours).unicast_destinations();
        assert_eq!(got, BTreeMap::from([(mac(1), a), (node, b)]));
    }

    #[test]
    fn pairs_by_mac_and_keeps_the_halves() {
        let vtep = Ipv4Addr::new(198, 18, 0, 2);
        let fdb = vec![
            FdbEntry { mac: mac(3), vtep },
            FdbEntry {
                mac: MacAddr::ZERO,
                vtep,
            },
        ];
        let neighbours = vec![
            NeighbourEntry {
                ip: Ipv4Addr::new(10, 0, 9, 3),
                mac: mac(3),
            },
            NeighbourEntry {
                ip: Ipv4Addr::new(10, 0, 9, 4),
                mac: mac(4),
            },
        ];
        let r = Remotes::pair(fdb, neighbours);
        assert_eq!(
            r.endpoints,
            vec![RemoteEndpoint {
                ip: Ipv4Addr::new(10, 0, 9, 3),
                mac: mac(3),
                vtep
            }]
        );
        assert_eq!(
            r.fdb_only,
            vec![FdbEntry {
                mac: MacAddr::ZERO,
                vtep
            }]
        );
        assert_eq!(
            r.neighbours_only,
            vec![NeighbourEntry {
                ip: Ipv4Addr::new(10, 0, 9, 4),
                mac: mac(4)
            }]
        );
        assert!(!r.is_consistent());
        assert!(Remotes::pair(Vec::new(), Vec::new()).is_consistent());
    }

    proptest! {
        #[test]
        fn pairing_what_was_programmed_gives_it_back(
            hosts in proptest::collection::btree_set(1u8..=254, 0..20),
            node in 1u8..=200,
        ) {
            let programmed: Vec<RemoteEndpoint> = hosts
                .iter()
                .map(|&h| RemoteEndpoint {
                    ip: Ipv4Addr::new(10, 0, 9, h),
                    mac: mac(h),
                    vtep: Ipv4Addr::new(198, 18, 0, node),
                })
                .collect();
            let fdb = programmed.iter().map(|r| FdbEntry { mac: r.mac, vtep: r.vtep }).collect();
            // Reversed: the kernel's dump order is not the programming order.
            let neighbours = programmed
                .iter()
                .rev()
                .map(|r| NeighbourEntry { ip: r.ip, mac: r.mac })
                .collect();
            let r = Remotes::pair(fdb, neighbours);
            prop_assert!(r.is_consistent());
            prop_assert_eq!(r.endpoints, programmed);
        }
    }
}
