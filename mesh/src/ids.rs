//! Small integer ids (group and backend slots in the maps) for keys.

use std::collections::{HashMap, HashSet};

/// No id is left in the range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("more than {limit} {what} on this node")]
pub struct Full {
    pub what: &'static str,
    pub limit: u32,
}

/// Small integer ids handed out from a range and reused once freed.
#[derive(Debug)]
pub(crate) struct Ids<K> {
    pub(crate) by_key: HashMap<K, u32>,
    used: HashSet<u32>,
    free: Vec<u32>,
    next: u32,
    limit: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Ids<K> {
    pub(crate) fn new(first: u32, limit: u32) -> Self {
        Ids {
            by_key: HashMap::new(),
            used: HashSet::new(),
            free: Vec::new(),
            next: first,
            limit,
        }
    }

    /// `key`'s id; a new key takes `hint` when it is free (the id a previous
    /// run gave it), else the next free one.
    pub(crate) fn get_or_assign(
        &mut self,
        key: &K,
        hint: Option<u32>,
        what: &'static str,
    ) -> Result<u32, Full> {
        if let Some(id) = self.by_key.get(key) {
            return Ok(*id);
        }
        let hinted = hint.filter(|h| *h < self.limit && !self.used.contains(h));
        let id = match hinted.or_else(|| self.fresh()) {
            Some(id) => id,
            None => {
                return Err(Full {
                    what,
                    limit: self.limit,
                });
            }
        };
        self.used.insert(id);
        self.by_key.insert(key.clone(), id);
        Ok(id)
    }

    fn fresh(&mut self) -> Option<u32> {
        while let Some(id) = self.free.pop() {
            if !self.used.contains(&id) {
                return Some(id);
            }
        }
        while self.next < self.limit {
            let id = self.next;
            self.next += 1;
            if !self.used.contains(&id) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn release(&mut self, key: &K) -> Option<u32> {
        let id = self.by_key.remove(key)?;
        self.used.remove(&id);
        self.free.push(id);
        Some(id)
    }
}
