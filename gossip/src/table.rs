//! The endpoint table that gossip spreads: which task IP (and MAC) on which
//! overlay network lives behind which node's VTEP. Last writer wins per key,
//! ordered by (version, origin); removals are tombstones so a late copy of
//! an old record can never bring an endpoint back.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    /// Network id.
    pub network: String,
    pub ip: Ipv4Addr,
}

/// A task's interface on an overlay network, as the FDB and neighbour
/// tables need it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The underlay address of the node that hosts it.
    pub vtep: Ipv4Addr,
    /// The node that hosts it (and published it).
    pub node_id: String,
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            network: self.network.clone(),
            ip: self.ip,
        }
    }
}

/// One versioned entry; `endpoint: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: EndpointKey,
    /// Node id of the writer.
    pub origin: String,
    /// The writer's clock (milliseconds, strictly increasing per writer).
    pub version: u64,
    pub endpoint: Option<Endpoint>,
}

impl Record {
    /// Whether `self` replaces `other` (same key assumed). Ties on the
    /// version are broken by origin so every node picks the same winner,
    /// then in favour of the tombstone: a node that dropped a dead member's
    /// endpoint keeps its version, and that tombstone, pushed to a newcomer
    /// in a full-table sync, must win over the live copy whatever arrives
    /// first.
    pub fn supersedes(&self, other: &Record) -> bool {
        (self.version, &self.origin, self.endpoint.is_none())
            > (other.version, &other.origin, other.endpoint.is_none())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    records: BTreeMap<EndpointKey, Record>,
}

impl Table {
    /// Takes `r` if it is newer than what is held; returns whether anything
    /// changed (which is also whether it is worth passing on).
    pub fn merge(&mut self, r: Record) -> bool {
        match self.records.get(&r.key) {
            Some(held) if !r.supersedes(held) => false,
            _ => {
                self.records.insert(r.key.clone(), r);
                true
            }
        }
    }

    /// Live endpoints, in key order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.records.values().filter_map(|r| r.endpoint.as_ref())
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub fn get(&self, key: &EndpointKey) -> Option<&Record> {
        self.records.get(key)
    }

    /// Forgets, locally, the live endpoints of a node declared down. The
    /// tombstone keeps the record's version and origin, so re-deliveries of
    /// the old record are stale; the node itself, back up, publishes newer
    /// versions.
    pub fn drop_node(&mut self, node_id: &str) -> usize {
        self.tombstone_where(|e| e.node_id == node_id)
    }

    /// Anti-entropy against the control plane: forgets, locally, every live
    /// endpoint `known` refuses (a task the managers no longer have), so
    /// gossip can never keep a stale endpoint alive.
    pub fn retain(&mut self, mut known: impl FnMut(&Endpoint) -> bool) -> usize {
        self.tombstone_where(|e| !known(e))
    }

    fn tombstone_where(&mut self, mut f: impl FnMut(&Endpoint) -> bool) -> usize {
        let mut n = 0;
        for r in self.records.values_mut() {
            if r.endpoint.as_ref().is_some_and(&mut f) {
                r.endpoint = None;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ep(net: &str, last: u8, node: &str) -> Endpoint {
        Endpoint {
            network: net.into(),
            ip: Ipv4Addr::new(10, 0, 1, last),
            mac: [2, 0, 0, 0, 0, last],
            vtep: Ipv4Addr::new(198, 18, 0, 1),
            node_id: node.into(),
        }
    }

    fn rec(e: Option<Endpoint>, key: EndpointKey, origin: &str, version: u64) -> Record {
        Record {
            key,
            origin: origin.into(),
            version,
            endpoint: e,
        }
    }

    #[test]
    fn newer_wins_and_tombstones_stick() {
        let e = ep("n", 2, "a");
        let mut t = Table::default();
        assert!(t.merge(rec(Some(e.clone()), e.key(), "a", 1)));
        assert!(!t.merge(rec(Some(e.clone()), e.key(), "a", 1)), "duplicate");
        assert!(t.merge(rec(None, e.key(), "a", 2)));
        assert!(
            !t.merge(rec(Some(e.clone()), e.key(), "a", 1)),
            "old copy revived it"
        );
        assert_eq!(t.endpoints().count(), 0);
        assert!(t.merge(rec(Some(e.clone()), e.key(), "a", 3)));
        assert_eq!(t.drop_node("a"), 1);
        assert!(
            !t.merge(rec(Some(e.clone()), e.key(), "a", 3)),
            "down node's copy revived it"
        );
        assert_eq!(t.endpoints().count(), 0);
    }

    /// Found by `merge_order_does_not_matter`: a local tombstone and the
    /// live record it replaced share version and origin.
    #[test]
    fn a_tombstone_wins_a_tie_in_either_order() {
        let e = ep("n", 3, "o1");
        let live = rec(Some(e.clone()), e.key(), "o1", 2);
        let dead = rec(None, e.key(), "o1", 2);
        let (mut a, mut b) = (Table::default(), Table::default());
        a.merge(live.clone());
        a.merge(dead.clone());
        b.merge(dead);
        b.merge(live);
        assert_eq!(a, b);
        assert_eq!(a.endpoints().count(), 0);
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (0u8..4, 0u8..3, 0u64..5, any::<bool>()).prop_map(|(ip, origin, version, live)| {
            let origin = format!("o{origin}");
            let e = ep("n", ip, &origin);
            let key = e.key();
            rec(live.then_some(e), key, &origin, version)
        })
    }

    proptest! {
        /// Any two nodes that received the same records, in any order and
        /// with duplicates, hold the same table.
        #[test]
        fn merge_order_does_not_matter(
            records in proptest::collection::vec(arb_record(), 0..24),
            seed in any::<u64>(),
        ) {
            let mut a = Table::default();
            for r in &records {
                a.merge(r.clone());
            }
            let mut shuffled = records.clone();
            // A deterministic shuffle from the seed, plus duplicates.
            let n = shuffled.len().max(1);
            for i in 0..shuffled.len() {
                shuffled.swap(i, (seed as usize).wrapping_mul(i + 7) % n);
            }
            shuffled.extend(records.iter().take(3).cloned());
            let mut b = Table::default();
            for r in shuffled {
                b.merge(r);
            }
            prop_assert_eq!(a, b);
        }
    }
}
