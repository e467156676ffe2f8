//! Counters of sealed gossip traffic, by drop reason.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::seal::OpenError;

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sealed: Counter,
    pub(crate) opened: Counter,
    pub(crate) not_sealed: Counter,
    pub(crate) unknown_key: Counter,
    pub(crate) forged: Counter,
    pub(crate) no_ring_in: Counter,
    pub(crate) no_ring_out: Counter,
}

impl Counters {
    pub(crate) fn refused(&self, e: OpenError) {
        match e {
            OpenError::NotSealed => self.not_sealed.inc(),
            OpenError::UnknownKey(_) => self.unknown_key.inc(),
            OpenError::Forged => self.forged.inc(),
        }
    }

    pub(crate) fn snapshot(&self) -> GossipStats {
        GossipStats {
            sealed: self.sealed.get(),
            opened: self.opened.get(),
            dropped_cleartext: self.not_sealed.get(),
            dropped_unknown_key: self.unknown_key.get(),
            dropped_forged: self.forged.get(),
            dropped_no_ring: self.no_ring_in.get(),
            unsent_no_ring: self.no_ring_out.get(),
        }
    }
}

/// What a member's packets and pushes did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Packets and pushes sealed and sent.
    pub sealed: u64,
    /// Packets and pushes that opened.
    pub opened: u64,
    /// Dropped: cleartext, another version, or too short.
    pub dropped_cleartext: u64,
    /// Dropped: sealed with a key tag not in the ring.
    pub dropped_unknown_key: u64,
    /// Dropped: a known key tag whose GCM tag did not verify.
    pub dropped_forged: u64,
    /// Dropped on arrival before this node had the ring.
    pub dropped_no_ring: u64,
    /// Not sent: this node had no ring yet.
    pub unsent_no_ring: u64,
}
