//! The writes that take a node's mesh maps to a [`Desired`] content, in the
//! order the programs rely on ([`Tables::apply`]), and what was written, so
//! each pass writes only changes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

use shoal_common::mesh::{
    BACKEND_F_LOCAL, Backend, MAGLEV_SIZE, MAX_BACKENDS, MAX_SERVICES, Service, ServiceKey,
    ServiceStats,
};

use crate::{Desired, GroupKey, MaglevBackend, ids::Ids};

/// The maps the applier writes and the doctor and counters read: the real
/// maps (the agent's aya maps), or a fake in tests.
pub trait MeshMaps {
    type Error: std::error::Error + 'static;
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), Self::Error>;
    fn remove_backend(&mut self, id: u32) -> Result<(), Self::Error>;
    fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), Self::Error>;
    fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), Self::Error>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Self::Error>;
    /// Every frontend in the maps.
    fn frontends(&self) -> Result<Vec<(ServiceKey, Service)>, Self::Error>;
    /// Every backend slot in use.
    fn backends(&self) -> Result<Vec<(u32, Backend)>, Self::Error>;
    /// A group's counters summed over CPUs.
    fn service_stats(&self, service: u32) -> Result<ServiceStats, Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum LbError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Map(#[from] E),
    #[error(transparent)]
    Full(crate::ids::Full),
    #[error("Maglev table of service {service}: {source}")]
    Maglev {
        service: String,
        #[source]
        source: crate::MaglevError,
    },
}

/// What this node wrote into its maps, so each pass writes only changes.
#[derive(Debug)]
pub struct Tables {
    groups: Ids<GroupKey>,
    backends: Ids<(String, Ipv4Addr)>,
    backend_values: HashMap<u32, Backend>,
    /// Group id → the (backend id, task id) its ring was built from.
    rings: HashMap<u32, Vec<(u32, String)>>,
    services: HashMap<ServiceKey, Service>,
    names: BTreeMap<String, String>,
    /// What a previous run left in the pinned maps: ids to give the same
    /// groups and backends again, and backend slots to clear if nothing
    /// claims them.
    restored: Restored,
}

#[derive(Debug, Default)]
struct Restored {
    group_of_frontend: HashMap<ServiceKey, u32>,
    backend_of_addr: HashMap<u32, u32>,
    backends: BTreeSet<u32>,
}

/// The mesh's maps and what this node wrote into them, under one lock.
#[derive(Debug)]
pub struct MeshState<M> {
    pub maps: M,
    pub tables: Tables,
}

/// One group's counters, summed over CPUs.
#[derive(Debug, Clone)]
pub struct GroupStats {
    pub key: GroupKey,
    pub service: String,
    pub backends: u32,
    pub stats: ServiceStats,
}

impl<M: MeshMaps> MeshState<M> {
    /// Takes over the maps, and what a previous run left in them.
    pub fn new(maps: M) -> Self {
        let tables = match (maps.frontends(), maps.backends()) {
            (Ok(s), Ok(b)) => {
                if !s.is_empty() {
                    tracing::info!(
                        frontends = s.len(),
                        backends = b.len(),
                        "routing mesh restored from the pinned maps"
                    );
                }
                Tables::restore(s, b)
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "reading the pinned mesh maps; starting from empty tables");
                Tables::default()
            }
        };
        MeshState { maps, tables }
    }

    /// Counters of every group in the maps now.
    pub fn group_stats(&self) -> Result<Vec<GroupStats>, M::Error> {
        let mut out = Vec::new();
        let mut groups: Vec<(&GroupKey, &u32)> = self.tables.groups.by_key.iter().collect();
        groups.sort();
        for (key, gid) in groups {
            out.push(GroupStats {
                key: key.clone(),
                service: self
                    .tables
                    .names
                    .get(&key.service_id)
                    .cloned()
                    .unwrap_or_default(),
                backends: self.tables.rings.get(gid).map_or(0, |r| r.len() as u32),
                stats: self.maps.service_stats(*gid)?,
            });
        }
        Ok(out)
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            groups: Ids::new(0, MAX_SERVICES),
            backends: Ids::new(1, MAX_BACKENDS),
            backend_values: HashMap::new(),
            rings: HashMap::new(),
            services: HashMap::new(),
            names: BTreeMap::new(),
            restored: Restored::default(),
        }
    }
}

/// What one pass changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub backends: usize,
    pub rings: usize,
    pub frontends: usize,
    pub removed: usize,
}

impl Changes {
    pub fn any(&self) -> bool {
        *self != Changes::default()
    }
}

impl Tables {
    /// Tables that know what the pinned maps hold (Cilium's restore before
    /// reconcile): the frontends and backends a previous run wrote. The
    /// next [`apply`](Self::apply) gives the same groups and backends the
    /// same ids, so tracked flows keep matching, and removes what is no
    /// longer wanted.
    pub fn restore(services: Vec<(ServiceKey, Service)>, backends: Vec<(u32, Backend)>) -> Tables {
        let mut t = Tables::default();
        for (key, svc) in services {
            t.restored.group_of_frontend.insert(key, svc.id);
            t.services.insert(key, svc);
        }
        for (id, b) in backends {
            if b.addr != 0 {
                t.restored.backend_of_addr.insert(b.addr, id);
                t.restored.backends.insert(id);
                t.backend_values.insert(id, b);
            }
        }
        t
    }

    /// Writes the maps until they hold `want`: backends first, then the
    /// rings naming them, then the frontends using the rings; removals in
    /// the reverse order. A failed write leaves what is recorded as written
    /// consistent with the maps, so the next pass retries the rest.
    pub fn apply<M: MeshMaps>(
        &mut self,
        want: &Desired,
        maps: &mut M,
    ) -> Result<Changes, LbError<M::Error>> {
        self.names.clone_from(&want.names);
        let mut changes = Changes::default();
        let mut ring_of: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
        let mut live_backends = BTreeSet::new();
        for (key, backends) in &want.groups {
            let hint = want
                .frontends
                .iter()
                .filter(|(_, f)| f.group == *key)
                .find_map(|((addr, port, proto), _)| {
                    let k = ServiceKey::new(u32::from(*addr), *port, *proto);
                    self.restored.group_of_frontend.get(&k).copied()
                });
            let gid = self
                .groups
                .get_or_assign(key, hint, "load-balanced services")
                .map_err(LbError::Full)?;
            let mut ring = Vec::new();
            let draining = want.draining.get(key).map_or(&[][..], Vec::as_slice);
            for (b, in_ring) in backends
                .iter()
                .map(|b| (b, true))
                .chain(draining.iter().map(|b| (b, false)))
            {
                let hint = self
                    .restored
                    .backend_of_addr
                    .get(&u32::from(b.addr).to_be())
                    .copied();
                let bid = self
                    .backends
                    .get_or_assign(&(b.task_id.clone(), b.addr), hint, "backends")
                    .map_err(LbError::Full)?;
                let value = Backend {
                    addr: u32::from(b.addr).to_be(),
                    vtep: u32::from(b.vtep).to_be(),
                    flags: if b.local { BACKEND_F_LOCAL } else { 0 },
                };
                if self.backend_values.get(&bid) != Some(&value) {
                    maps.set_backend(bid, value)?;
                    self.backend_values.insert(bid, value);
                    changes.backends += 1;
                }
                live_backends.insert(bid);
                if in_ring {
                    ring.push((bid, b.task_id.clone()));
                }
            }
            ring_of.insert(gid, ring);
        }
        for (gid, ring) in &ring_of {
            if self.rings.get(gid) == Some(ring) {
                continue;
            }
            let members: Vec<MaglevBackend<'_>> = ring
                .iter()
                .map(|(id, key)| MaglevBackend {
                    id: *id,
                    key: key.as_bytes(),
                })
                .collect();
            let table = crate::table(&members).map_err(|source| LbError::Maglev {
                service: gid.to_string(),
                source,
            })?;
            maps.set_ring(*gid, &table)?;
            self.rings.insert(*gid, ring.clone());
            changes.rings += 1;
        }
        let mut wanted_services = HashMap::new();
        for ((addr, port, proto), f) in &want.frontends {
            let Some(gid) = self.groups.by_key.get(&f.group).copied() else {
                continue;
            };
            let key = ServiceKey::new(u32::from(*addr), *port, *proto);
            let value = Service {
                id: gid,
                backend_count: ring_of.get(&gid).map_or(0, |r| r.len() as u32),
                target_port: f.target_port.to_be(),
                flags: f.flags,
            };
            wanted_services.insert(key, value);
        }
        for (key, value) in &wanted_services {
            if self.services.get(key) != Some(value) {
                maps.set_service(*key, *value)?;
                self.services.insert(*key, *value);
                changes.frontends += 1;
            }
        }
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !wanted_services.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            maps.remove_service(&key)?;
            self.services.remove(&key);
            changes.removed += 1;
        }
        let stale_groups: Vec<GroupKey> = self
            .groups
            .by_key
            .keys()
            .filter(|k| !want.groups.contains_key(*k))
            .cloned()
            .collect();
        for key in stale_groups {
            if let Some(gid) = self.groups.by_key.get(&key).copied() {
                // Emptied before the id is reused, so a new group never
                // starts with another's backends.
                maps.set_ring(gid, &vec![crate::BACKEND_NONE; MAGLEV_SIZE as usize])?;
                self.rings.remove(&gid);
                self.groups.release(&key);
                changes.removed += 1;
            }
        }
        let stale_backends: Vec<(String, Ipv4Addr)> = self
            .backends
            .by_key
            .iter()
            .filter(|(_, id)| !live_backends.contains(*id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale_backends {
            if let Some(bid) = self.backends.by_key.get(&key).copied() {
                // Zeroed: flows still tracked to it choose again.
                maps.remove_backend(bid)?;
                self.backend_values.remove(&bid);
                self.backends.release(&key);
                changes.removed += 1;
            }
        }
        // A previous run's backends that nothing claimed this time.
        let unclaimed: Vec<u32> = std::mem::take(&mut self.restored.backends)
            .into_iter()
            .filter(|id| !live_backends.contains(id))
            .collect();
        for bid in unclaimed {
            maps.remove_backend(bid)?;
            self.backend_values.remove(&bid);
            changes.removed += 1;
        }
        self.restored = Restored::default();
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use shoal_common::mesh::IPPROTO_TCP;

    use super::*;
    use crate::{
        desired,
        desired::tests::{ME, local, set},
    };

    #[test]
    fn draining_backends_keep_their_slot_but_leave_the_ring() {
        let mut t = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        let key = ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP);
        let gid = maps.services[&key].id;
        let t2_id = |maps: &Fake| {
            maps.backends
                .iter()
                .find(|(_, b)| b.addr == u32::from(Ipv4Addr::new(10, 0, 0, 4)).to_be())
                .map(|(id, _)| *id)
        };
        let before = t2_id(&maps).expect("t2 is a backend");

        // t2 is being stopped: still running, no longer wanted.
        let mut s = set();
        let (gone, kept): (Vec<_>, Vec<_>) = s.mesh[0]
            .backends
            .drain(..)
            .partition(|b| b.task_id == "t2");
        s.mesh[0].backends = kept;
        s.mesh[0].draining = gone;
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(t2_id(&maps), Some(before), "its flows still find it");
        assert!(
            !maps.rings[&gid].contains(&before),
            "no new flow may pick it"
        );
        assert_eq!(maps.services[&key].backend_count, 1);

        // Every task stopping at once: the frontend stays, with an empty
        // ring, and both keep their flows.
        let mut all = set();
        let stopping = std::mem::take(&mut all.mesh[0].backends);
        all.mesh[0].draining = stopping;
        let d = desired(&all, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(maps.services[&key].backend_count, 0);
        assert_eq!(maps.services[&key].id, gid);
        assert!(maps.rings[&gid].iter().all(|id| *id == 0));
        assert_eq!(t2_id(&maps), Some(before));

        // Stopped: gone from the backend table too.
        s.mesh[0].draining.clear();
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        assert_eq!(t2_id(&maps), None);
    }

    #[test]
    fn restored_tables_keep_the_ids_and_drop_what_is_gone() {
        let mut first = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing", "app"]));
        first.apply(&d, &mut maps).expect("apply");
        // A frontend and a backend nobody wants any more, left in the maps.
        let stale = ServiceKey::new(u32::from(ME), 7777, IPPROTO_TCP);
        maps.services.insert(stale, Service::default());
        maps.backends.insert(
            999,
            Backend {
                addr: 1,
                ..Backend::default()
            },
        );
        let services: Vec<_> = maps.services.iter().map(|(k, v)| (*k, *v)).collect();
        let backends: Vec<_> = maps.backends.iter().map(|(k, v)| (*k, *v)).collect();
        let before = (maps.services.clone(), maps.backends.clone());

        let mut restarted = Tables::restore(services, backends);
        maps.log.clear();
        restarted.apply(&d, &mut maps).expect("apply");
        assert!(!maps.services.contains_key(&stale));
        assert!(!maps.backends.contains_key(&999));
        let mut want_services = before.0;
        want_services.remove(&stale);
        let mut want_backends = before.1;
        want_backends.remove(&999);
        assert_eq!(maps.services, want_services, "same frontends, same ids");
        assert_eq!(maps.backends, want_backends, "same backends, same ids");
        assert!(
            maps.log
                .iter()
                .all(|l| !l.starts_with("backend ") && !l.starts_with("service ")),
            "nothing rewritten but rings: {:?}",
            maps.log
        );
    }

    /// Records every write, in order.
    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        backends: HashMap<u32, Backend>,
        rings: HashMap<u32, Vec<u32>>,
        services: HashMap<ServiceKey, Service>,
    }

    impl MeshMaps for Fake {
        type Error = std::convert::Infallible;
        fn set_backend(&mut self, id: u32, b: Backend) -> Result<(), Self::Error> {
            self.log.push(format!("backend {id}"));
            self.backends.insert(id, b);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), Self::Error> {
            self.log.push(format!("-backend {id}"));
            self.backends.remove(&id);
            Ok(())
        }
        fn set_ring(&mut self, service: u32, table: &[u32]) -> Result<(), Self::Error> {
            self.log.push(format!("ring {service}"));
            self.rings.insert(service, table.to_vec());
            Ok(())
        }
        fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), Self::Error> {
            self.log.push(format!("service {}", u16::from_be(key.port)));
            self.services.insert(key, svc);
            Ok(())
        }
        fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Self::Error> {
            self.log
                .push(format!("-service {}", u16::from_be(key.port)));
            self.services.remove(key);
            Ok(())
        }
        fn frontends(&self) -> Result<Vec<(ServiceKey, Service)>, Self::Error> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn backends(&self) -> Result<Vec<(u32, Backend)>, Self::Error> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn service_stats(&self, _: u32) -> Result<ServiceStats, Self::Error> {
            Ok(ServiceStats::default())
        }
    }

    impl Fake {
        /// Where the first write starting with `what` is in the log.
        fn first(&self, what: &str) -> usize {
            self.log
                .iter()
                .position(|l| l.starts_with(what))
                .unwrap_or_else(|| panic!("no {what} write: {:?}", self.log))
        }

        /// Where the last write starting with `what` is in the log.
        fn last(&self, what: &str) -> usize {
            self.log
                .iter()
                .rposition(|l| l.starts_with(what))
                .unwrap_or_else(|| panic!("no {what} write: {:?}", self.log))
        }

        /// Every frontend's ring names only backends that exist.
        fn consistent(&self) -> bool {
            self.services.values().all(|s| {
                self.rings.get(&s.id).is_some_and(|r| {
                    r.iter()
                        .all(|id| *id == 0 || self.backends.get(id).is_some_and(|b| b.addr != 0))
                })
            })
        }
    }

    #[test]
    fn writes_in_order_only_changes_and_cleans_up() {
        let mut t = Tables::default();
        let mut maps = Fake::default();
        let d = desired(&set(), "me", ME, &local(&["ing"]));
        let c = t.apply(&d, &mut maps).expect("apply");
        assert!(c.any());
        let first_ring = maps.first("ring");
        let last_backend = maps.last("backend");
        let first_service = maps.first("service");
        assert!(last_backend < first_ring && first_ring < first_service);
        assert!(maps.consistent());

        // The same set again writes nothing.
        maps.log.clear();
        let c = t.apply(&d, &mut maps).expect("apply");
        assert!(!c.any(), "{c:?} {:?}", maps.log);

        // t2 stops: its backend leaves after the rings stop naming it.
        let mut s = set();
        s.mesh[0].backends.retain(|b| b.task_id != "t2");
        let d = desired(&s, "me", ME, &local(&["ing"]));
        t.apply(&d, &mut maps).expect("apply");
        let ring = maps.first("ring");
        let removed = maps.first("-backend");
        assert!(ring < removed, "{:?}", maps.log);
        assert!(maps.consistent());
        let svc = maps.services[&ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP)];
        assert_eq!(svc.backend_count, 1);

        // The service goes: nothing of it is left.
        let empty = Desired::default();
        t.apply(&empty, &mut maps).expect("apply");
        assert!(maps.services.is_empty());
        assert!(maps.backends.is_empty());
        assert!(maps.rings.values().all(|r| r.iter().all(|id| *id == 0)));
        assert!(t.groups.by_key.is_empty() && t.backends.by_key.is_empty());
    }

    #[test]
    fn every_node_builds_the_same_ring() {
        // Two nodes list the backends in different orders and give them
        // different ids: the slots still name the same tasks.
        let d1 = desired(&set(), "me", ME, &local(&["ing"]));
        let mut reversed = set();
        reversed.mesh[0].backends.reverse();
        let d2 = desired(
            &reversed,
            "n2",
            Ipv4Addr::new(198, 18, 0, 2),
            &local(&["ing"]),
        );
        let (mut t1, mut t2) = (Tables::default(), Tables::default());
        let (mut m1, mut m2) = (Fake::default(), Fake::default());
        // Skew n2's ids.
        t2.backends
            .get_or_assign(&("x".into(), ME), None, "b")
            .expect("id");
        t1.apply(&d1, &mut m1).expect("apply");
        t2.apply(&d2, &mut m2).expect("apply");
        let task_of = |t: &Tables, id: u32| {
            t.backends
                .by_key
                .iter()
                .find(|(_, v)| **v == id)
                .map(|(k, _)| k.0.clone())
        };
        let s1 = m1.services[&ServiceKey::new(u32::from(ME), 8080, IPPROTO_TCP)];
        let s2 = m2.services
            [&ServiceKey::new(u32::from(Ipv4Addr::new(198, 18, 0, 2)), 8080, IPPROTO_TCP)];
        let r1: Vec<_> = m1.rings[&s1.id]
            .iter()
            .map(|id| task_of(&t1, *id))
            .collect();
        let r2: Vec<_> = m2.rings[&s2.id]
            .iter()
            .map(|id| task_of(&t2, *id))
            .collect();
        assert_eq!(r1, r2);
    }
}
