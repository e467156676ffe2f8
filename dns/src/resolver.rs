//! [`Resolver`]: the table, the upstreams, and the query path between them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::answer::{self, Transport};
use crate::forward::{self, FORWARD_TIMEOUT};
use crate::table::Table;
use crate::wire::{Message, Rcode};

/// One node's resolver. Cheap to clone: clones share the table, so the
/// agent keeps one and every served socket holds another.
#[derive(Debug, Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: RwLock<Table>,
    upstreams: RwLock<Vec<SocketAddr>>,
    forward_timeout: Duration,
    /// Counts local answers, to rotate multi-address ones.
    rotation: AtomicUsize,
}

impl Resolver {
    /// A resolver with an empty table forwarding to `upstreams` (see
    /// [`parse_resolv_conf`](crate::parse_resolv_conf)).
    pub fn new(upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver::with_forward_timeout(upstreams, FORWARD_TIMEOUT)
    }

    /// As [`new`](Self::new), giving each upstream `timeout` to answer.
    pub fn with_forward_timeout(upstreams: Vec<SocketAddr>, timeout: Duration) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                table: RwLock::default(),
                upstreams: RwLock::new(upstreams),
                forward_timeout: timeout,
                rotation: AtomicUsize::new(0),
            }),
        }
    }

    /// Replaces the names of network `network` (its id): every task
    /// attached to it resolves them from the next query on. See
    /// [`service_names`](crate::service_names) for a service's two names.
    pub fn set_names(&self, network: &str, names: BTreeMap<String, Vec<Ipv4Addr>>) {
        self.write_table().set(network, names);
    }

    /// Forgets the names of `network`.
    pub fn remove_network(&self, network: &str) {
        self.write_table().remove(network);
    }

    /// Replaces the upstream resolvers (the node's resolv.conf changed).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self
            .inner
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner) = upstreams;
    }

    /// The addresses `name` has for a task on `networks`, if it is a table
    /// name (as a query would see them, before rotation).
    pub fn lookup(&self, networks: &[String], name: &str) -> Option<Vec<Ipv4Addr>> {
        self.read_table()
            .lookup(networks, &crate::table::normalize(name))
            .map(<[Ipv4Addr]>::to_vec)
    }

    // A writer panicking mid-`set` leaves a whole map or the old one (the
    // insert is one move), so a poisoned lock still holds a usable table.
    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The reply to `query` from a task on `networks`, or `None` when it
    /// must not be answered (it is itself a response: answering those
    /// would let two resolvers bounce messages forever).
    pub async fn handle(
        &self,
        query: &[u8],
        networks: &[String],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let header = Message::parse_header(query)?;
        if header.is_response() {
            return None;
        }
        let message = match Message::parse(query) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "malformed query");
                return Some(answer::error_reply(header, Rcode::FormErr));
            }
        };
        if header.opcode() != 0 {
            return Some(answer::error_reply(header, Rcode::NotImp));
        }
        let Some(question) = &message.question else {
            return Some(answer::error_reply(header, Rcode::FormErr));
        };
        let limit = answer::size_limit(&message, transport);
        let local = question
            .name
            .lookup_key()
            .filter(|_| answer::is_internet(&message))
            .and_then(|key| self.read_table().lookup(networks, &key).map(<[_]>::to_vec));
        if let Some(addrs) = local {
            let rotation = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
            let reply = answer::local_answer(&message, &addrs, rotation);
            return Some(answer::encode_within(reply, limit));
        }
        let upstreams = self
            .inner
            .upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let tcp = transport == Transport::Tcp;
        match forward::forward(query, &upstreams, self.inner.forward_timeout, tcp).await {
            Some(reply) => Some(reply),
            None => {
                tracing::debug!(name = %question.name, "no upstream answered");
                let reply = answer::empty_reply(&message, Rcode::ServFail);
                Some(answer::encode_within(reply, limit))
            }
        }
    }
}
