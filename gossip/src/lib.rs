//! Gossip among all nodes on 7946, as swarm's networkdb does: SWIM
//! membership and failure detection (foca, over UDP) carrying the overlay
//! endpoint table as custom broadcasts, with a full-table push over TCP to
//! every member that comes up, so a joining node learns all endpoints
//! without asking a manager. When a member is declared down, every node
//! drops that member's endpoints on its own. Before that, a member that
//! stopped answering probes is *suspected* ([`Gossip::suspected`]): the
//! earliest sign of a lost node, which the routing mesh acts on (no new
//! connections to it) and undoes if the member refutes.
//!
//! Sockets are handed in, not opened here, so the caller decides their
//! network namespace (the lab opens them inside a node's namespace).
//!
//! Every UDP packet and TCP push is sealed with the `networking:gossip` key
//! ring the control plane hands each node over its mTLS session (see
//! [`seal`]). Until [`Gossip::set_keyring`] is called a member neither sends
//! nor accepts anything: a node speaks gossip only once the control plane
//! has admitted it, and a host without the ring can neither join nor
//! inject.

pub mod seal;
mod stats;
mod table;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Config, Foca, Invalidates, OwnedNotification, PostcardCodec, State, Timer,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{mpsc, watch},
};

pub use seal::{Keyring, KeyringError, OpenError};
pub use stats::GossipStats;
pub use table::{Endpoint, EndpointKey, Record, Table};

use stats::Counters;

/// swarm's gossip port.
pub use shoal_common::ports::GOSSIP_PORT;
/// A full-table push larger than this is refused (about 50 000 endpoints).
const MAX_SYNC_BYTES: u64 = (8 << 20) + seal::OVERHEAD as u64;

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("gossip socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the gossip task has stopped")]
    Stopped,
    #[error("encoding a gossip record: {0}")]
    Encode(#[source] postcard::Error),
}

/// A member: where it listens and which node it is. `incarnation` lets a
/// restarted node win over its former self at the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub addr: SocketAddr,
    pub node_id: String,
    pub incarnation: u64,
}

impl foca::Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// Timing of failure detection; see [`GossipConfig::lan`].
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub node_id: String,
    /// The address others reach this node's 7946 at.
    pub advertise: SocketAddr,
    /// One member probed per period.
    pub probe_period: Duration,
    /// A probe unanswered within this is retried through other members.
    pub probe_rtt: Duration,
    /// A suspected member is declared down after this.
    pub suspect_to_down: Duration,
    /// Every this often, the whole table is pushed to one random member:
    /// anti-entropy for anything the bounded retransmissions missed.
    pub sync_interval: Duration,
    /// The network namespace new TCP connections must be made in, when the
    /// member does not live in the namespace of the process (the lab runs
    /// several members in one process); `None`: the process's own.
    pub netns: Option<std::path::PathBuf>,
}

/// Probes of a LAN member: one member every [`LAN_PROBE_PERIOD`], an ack
/// expected within [`LAN_PROBE_RTT`] before asking others to probe it.
/// memberlist's LAN timings are 1 s and 500 ms; a LAN's round trip is well
/// under a millisecond, and a suspicion only keeps new connections off the
/// member's backends (it keeps its flows, and refutes in one round trip),
/// so probing faster buys a lost node's removal in about a second at the
/// price of a few more 100-byte packets per second.
pub const LAN_PROBE_PERIOD: Duration = Duration::from_millis(200);
pub const LAN_PROBE_RTT: Duration = Duration::from_millis(100);

impl GossipConfig {
    /// Faster probes than memberlist's LAN ([`LAN_PROBE_PERIOD`]); its
    /// suspicion time (suspected → down, which removes the member's
    /// endpoints and their flows) scaled to a cluster of `size` nodes.
    pub fn lan(node_id: String, advertise: SocketAddr, size: u32) -> Self {
        let c = Config::new_lan(NonZeroU32::new(size.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            node_id,
            advertise,
            probe_period: LAN_PROBE_PERIOD,
            probe_rtt: LAN_PROBE_RTT,
            suspect_to_down: c.suspect_to_down_after,
            sync_interval: Duration::from_secs(2),
            netns: None,
        }
    }

    fn foca(&self, size: u32) -> Config {
        let mut c = Config::new_lan(NonZeroU32::new(size.max(1)).unwrap_or(NonZeroU32::MIN));
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down;
        // Room for the seal within the same datagram size.
        c.max_packet_size = NonZeroUsize::new(c.max_packet_size.get() - seal::OVERHEAD)
            .unwrap_or(c.max_packet_size);
        c
    }
}

#[derive(Default)]
struct Shared {
    table: Table,
    members: BTreeMap<String, SocketAddr>,
    /// Active members that missed their probes and have not refuted yet.
    suspected: BTreeSet<String>,
    /// Their gossip addresses.
    suspected_at: BTreeSet<SocketAddr>,
    /// Members declared down and not back since (node ids).
    down: BTreeSet<String>,
    /// Last version this node wrote (so its clock never goes back).
    clock: u64,
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Broadcast key: a record supersedes the older ones of its key still
/// waiting in foca's backlog.
#[derive(Debug, Clone)]
struct Key(Record);

impl Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self.0.key == other.0.key && self.0.supersedes(&other.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable gossip record: {0}")]
struct BadRecord(#[source] postcard::Error);

struct Handler {
    shared: Arc<Mutex<Shared>>,
    changed: watch::Sender<u64>,
}

impl foca::BroadcastHandler<Member> for Handler {
    type Key = Key;
    type Error = BadRecord;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Member>,
    ) -> Result<Option<Key>, BadRecord> {
        let r: Record = postcard::from_bytes(data).map_err(BadRecord)?;
        if lock(&self.shared).table.merge(r.clone()) {
            self.changed.send_modify(|v| *v += 1);
            Ok(Some(Key(r)))
        } else {
            Ok(None)
        }
    }
}

enum Input {
    /// A packet that opened, and the address it came from.
    Data(Bytes, SocketAddr),
    /// Push the table to one random member (anti-entropy).
    Sync,
    Timer(Timer<Member>),
    Announce(SocketAddr),
    Broadcast(Vec<u8>),
    Leave,
}

/// A running gossip member. Dropping it stops the member abruptly (as a
/// crash would); [`Gossip::leave`] says goodbye first.
pub struct Gossip {
    tx: mpsc::UnboundedSender<Input>,
    shared: Arc<Mutex<Shared>>,
    changed: watch::Receiver<u64>,
    notify: watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    node_id: String,
    wire: Wire,
}

/// What every packet in or out goes through: the ring and the counters.
#[derive(Clone, Default)]
struct Wire {
    ring: Arc<RwLock<Option<Keyring>>>,
    counters: Arc<Counters>,
}

impl Wire {
    fn ring(&self) -> Option<Keyring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The payload of a received packet, or `None` (counted) when it does
    /// not open.
    fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let Some(ring) = self.ring() else {
            self.counters.no_ring_in.inc();
            return None;
        };
        match ring.open(packet) {
            Ok(p) => {
                self.counters.opened.inc();
                Some(p)
            }
            Err(e) => {
                self.counters.refused(e);
                None
            }
        }
    }

    /// The sealed packet, or `None` (counted) without a ring.
    fn seal(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let Some(ring) = self.ring() else {
            self.counters.no_ring_out.inc();
            return None;
        };
        self.counters.sealed.inc();
        Some(ring.seal(payload))
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Gossip {
    /// Starts a member on `udp` (SWIM) and `tcp` (full-table pushes), both
    /// bound to the advertised port. `size` is the expected cluster size,
    /// which tunes how long updates are retransmitted.
    pub fn start(
        cfg: GossipConfig,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        size: u32,
    ) -> Result<Self, GossipError> {
        udp.set_nonblocking(true).map_err(GossipError::Socket)?;
        tcp.set_nonblocking(true).map_err(GossipError::Socket)?;
        let udp = Arc::new(UdpSocket::from_std(udp).map_err(GossipError::Socket)?);
        let tcp = TcpListener::from_std(tcp).map_err(GossipError::Socket)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let wire = Wire::default();
        let (changed_tx, changed) = watch::channel(0u64);
        let notify = changed_tx.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let me = Member {
            addr: cfg.advertise,
            node_id: cfg.node_id.clone(),
            incarnation: now_ms(),
        };
        let config = cfg.foca(size);
        let buf_len = config.max_packet_size.get();
        let handler = Handler {
            shared: Arc::clone(&shared),
            changed: changed_tx.clone(),
        };
        let rng: rand::rngs::StdRng = rand::make_rng();
        let mut foca = Foca::with_custom_broadcast(me, config, rng, PostcardCodec, handler);

        let mut tasks = Vec::new();
        // UDP receive loop.
        {
            let (udp, tx, wire) = (Arc::clone(&udp), tx.clone(), wire.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; buf_len + seal::OVERHEAD];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    let Some(payload) = wire.open(&buf[..n]) else {
                        continue;
                    };
                    if tx.send(Input::Data(Bytes::from(payload), from)).is_err() {
                        return;
                    }
                }
            }));
        }
        // Full-table pushes from members that saw this one come up.
        {
            let (shared, changed, wire) = (Arc::clone(&shared), changed_tx.clone(), wire.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, peer)) = tcp.accept().await {
                    let (shared, changed, wire) =
                        (Arc::clone(&shared), changed.clone(), wire.clone());
                    tokio::spawn(async move {
                        match receive_sync(stream, &wire).await {
                            Ok(records) => {
                                let mut s = lock(&shared);
                                let n = records
                                    .into_iter()
                                    .filter(|r| s.table.merge(r.clone()))
                                    .count();
                                drop(s);
                                if n > 0 {
                                    changed.send_modify(|v| *v += 1);
                                }
                            }
                            Err(e) => tracing::debug!(%peer, error = %e, "gossip sync refused"),
                        }
                    });
                }
            }));
        }
        // Anti-entropy ticker.
        {
            let (tx, every) = (tx.clone(), cfg.sync_interval);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if tx.send(Input::Sync).is_err() {
                        return;
                    }
                }
            }));
        }
        let out = Out {
            udp,
            wire: wire.clone(),
            netns: cfg.netns.clone(),
        };
        // The member itself: foca driven by one task.
        {
            let (shared, tx2) = (Arc::clone(&shared), tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut rt = AccumulatingRuntime::new();
                let mut refuting = Refuting::default();
                while let Some(input) = rx.recv().await {
                    let result = match input {
                        Input::Data(d, from) => foca
                            .handle_data(&d, &mut rt)
                            .and_then(|()| refuting.heard(&foca, &shared, from, &mut rt)),
                        Input::Timer(t) => foca.handle_timer(t, &mut rt),
                        Input::Announce(addr) => {
                            // The peer's real identity replaces this one
                            // when it answers (same address, newer).
                            let dst = Member {
                                addr,
                                node_id: String::new(),
                                incarnation: 0,
                            };
                            foca.announce(dst, &mut rt)
                        }
                        Input::Broadcast(data) => foca.add_broadcast(&data).map(drop),
                        Input::Sync => {
                            let members: Vec<SocketAddr> =
                                lock(&shared).members.values().copied().collect();
                            if !members.is_empty() {
                                let to = members[rand::random_range(0..members.len())];
                                let records: Vec<Record> =
                                    lock(&shared).table.records().cloned().collect();
                                let out = out.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = push_sync(to, &records, &out).await {
                                        tracing::debug!(%to, error = %e, "gossip anti-entropy push");
                                    }
                                });
                            }
                            Ok(())
                        }
                        Input::Leave => {
                            let r = foca.leave_cluster(&mut rt);
                            drain(&mut rt, &out, &tx2, &shared, &changed_tx, &mut refuting).await;
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "leaving the gossip cluster");
                            }
                            return;
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "gossip message refused");
                    }
                    drain(&mut rt, &out, &tx2, &shared, &changed_tx, &mut refuting).await;
                    note_suspects(&foca, &shared, &changed_tx);
                }
            }));
        }
        Ok(Self {
            tx,
            shared,
            changed,
            notify,
            tasks,
            node_id: cfg.node_id,
            wire,
        })
    }

    /// Installs (or replaces, on rotation) the ring packets are sealed and
    /// opened with. Before the first call the member is mute and deaf.
    pub fn set_keyring(&self, ring: Keyring) {
        let mut held = self.wire.ring.write().unwrap_or_else(|e| e.into_inner());
        if held.as_ref().map(Keyring::tags) != Some(ring.tags()) {
            tracing::info!(tags = ?ring.tags(), primary = ring.primary_tag(), "gossip key ring installed");
        }
        *held = Some(ring);
    }

    /// Whether a ring is installed (gossip can speak).
    pub fn has_keyring(&self) -> bool {
        self.wire.ring().is_some()
    }

    /// Packet counters: what was sealed, opened, and dropped by reason.
    pub fn stats(&self) -> GossipStats {
        self.wire.counters.snapshot()
    }

    /// Joins the cluster through any of `peers` (their 7946 addresses).
    pub fn join(&self, peers: impl IntoIterator<Item = SocketAddr>) -> Result<(), GossipError> {
        for p in peers {
            self.tx
                .send(Input::Announce(p))
                .map_err(|_| GossipError::Stopped)?;
        }
        Ok(())
    }

    fn write(&self, key: EndpointKey, endpoint: Option<Endpoint>) -> Result<(), GossipError> {
        let version = {
            let mut s = lock(&self.shared);
            s.clock = now_ms().max(s.clock + 1);
            s.clock
        };
        let r = Record {
            key,
            origin: self.node_id.clone(),
            version,
            endpoint,
        };
        let data = postcard::to_allocvec(&r).map_err(GossipError::Encode)?;
        self.tx
            .send(Input::Broadcast(data))
            .map_err(|_| GossipError::Stopped)
    }

    /// Announces an endpoint hosted on this node.
    pub fn publish(&self, endpoint: Endpoint) -> Result<(), GossipError> {
        self.write(endpoint.key(), Some(endpoint))
    }

    /// Announces that an endpoint of this node is gone.
    pub fn withdraw(&self, key: EndpointKey) -> Result<(), GossipError> {
        self.write(key, None)
    }

    /// The live endpoints this node knows.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        lock(&self.shared).table.endpoints().cloned().collect()
    }

    /// Active members other than this one: node id → gossip address.
    pub fn members(&self) -> BTreeMap<String, SocketAddr> {
        lock(&self.shared).members.clone()
    }

    /// Active members (node ids) this one suspects: they missed their
    /// probes, direct and indirect, and have not refuted yet. Each is
    /// either declared down after [`GossipConfig::suspect_to_down`] or back
    /// to alive when it answers.
    pub fn suspected(&self) -> BTreeSet<String> {
        lock(&self.shared).suspected.clone()
    }

    /// Members (node ids) the cluster declared down and that have not come
    /// back since: unlike a node gossip has not heard of yet, these are
    /// known to be gone.
    pub fn declared_down(&self) -> BTreeSet<String> {
        lock(&self.shared).down.clone()
    }

    /// Drops, locally, endpoints the control plane does not know.
    pub fn retain(&self, known: impl FnMut(&Endpoint) -> bool) -> usize {
        let n = lock(&self.shared).table.retain(known);
        if n > 0 {
            self.notify.send_modify(|v| *v += 1);
        }
        n
    }

    /// Changes whenever the endpoint table or the membership changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// Tells the others this node is leaving, then stops.
    pub fn leave(self) {
        let _stopped = self.tx.send(Input::Leave);
    }
}

/// Where packets and pushes go out.
#[derive(Clone)]
struct Out {
    udp: Arc<UdpSocket>,
    wire: Wire,
    netns: Option<std::path::PathBuf>,
}

/// Keeps [`Shared::suspected`] to foca's view (foca has no notification
/// for a suspicion, nor for its refutation), signalling a change.
fn note_suspects(
    foca: &Foca<Member, PostcardCodec, rand::rngs::StdRng, Handler>,
    shared: &Mutex<Shared>,
    changed: &watch::Sender<u64>,
) {
    let suspects = || {
        foca.iter_membership_state()
            .filter(|m| m.state() == State::Suspect && !m.id().node_id.is_empty())
    };
    let now: BTreeSet<String> = suspects().map(|m| m.id().node_id.clone()).collect();
    let mut s = lock(shared);
    s.suspected_at = suspects().map(|m| m.id().addr).collect();
    if s.suspected != now {
        let (new, cleared): (Vec<&String>, Vec<&String>) = (
            now.difference(&s.suspected).collect(),
            s.suspected.difference(&now).collect(),
        );
        tracing::info!(?new, ?cleared, "gossip suspicion changed");
        s.suspected = now;
        drop(s);
        changed.send_modify(|v| *v += 1);
    }
}

/// foca refutes a suspicion only when the suspected member hears of it,
/// and it sends each update a bounded number of times: a member cut off
/// for a second misses them all, and stays suspected until it is declared
/// down (its endpoints and flows dropped everywhere) though it is back. So
/// when a member this one suspects talks to it again, this one tells it,
/// in an ordinary foca message carrying that single update (once per
/// suspicion): it refutes at once, and its next packets clear it
/// everywhere. Packets are sealed, so only a holder of the gossip ring can
/// cause this, and all it causes is a refutation.
#[derive(Default)]
struct Refuting {
    /// This member's incarnation, as its last packet out carried it.
    own: foca::Incarnation,
    /// Suspected members already told.
    told: BTreeSet<SocketAddr>,
}

impl Refuting {
    fn heard(
        &mut self,
        foca: &Foca<Member, PostcardCodec, rand::rngs::StdRng, Handler>,
        shared: &Mutex<Shared>,
        from: SocketAddr,
        rt: &mut AccumulatingRuntime<Member>,
    ) -> Result<(), foca::Error> {
        {
            let s = lock(shared);
            self.told.retain(|a| s.suspected_at.contains(a));
            if !s.suspected_at.contains(&from) || self.told.contains(&from) {
                return Ok(());
            }
        }
        let Some(suspect) = foca
            .iter_membership_state()
            .find(|m| m.state() == State::Suspect && m.id().addr == from)
            .cloned()
        else {
            return Ok(());
        };
        self.told.insert(from);
        tracing::debug!(%from, node = %suspect.id().node_id, "a suspected member talks again: telling it");
        let header = foca::Header {
            src: foca.identity().clone(),
            src_incarnation: self.own,
            dst: suspect.id().clone(),
            message: foca::Message::Gossip,
        };
        let mut codec = PostcardCodec;
        let mut buf = Vec::new();
        {
            use bytes::BufMut;
            use foca::Codec;
            let encode = |e: postcard::Error| foca::Error::Encode(Box::new(e));
            codec.encode_header(&header, &mut buf).map_err(encode)?;
            buf.put_u16(1);
            codec.encode_member(&suspect, &mut buf).map_err(encode)?;
        }
        foca::Runtime::send_to(rt, suspect.id().clone(), &buf);
        Ok(())
    }

    /// Notes the incarnation a packet out carries (foca does not tell it).
    fn sent(&mut self, data: &[u8]) {
        use foca::Codec;
        if let Ok(h) = PostcardCodec.decode_header(data) {
            let h: foca::Header<Member> = h;
            self.own = h.src_incarnation;
        }
    }
}

/// Carries out what foca asked for: packets, timers, notifications.
async fn drain(
    rt: &mut AccumulatingRuntime<Member>,
    out: &Out,
    tx: &mpsc::UnboundedSender<Input>,
    shared: &Arc<Mutex<Shared>>,
    changed: &watch::Sender<u64>,
    refuting: &mut Refuting,
) {
    while let Some((to, data)) = rt.to_send() {
        refuting.sent(&data);
        let Some(sealed) = out.wire.seal(&data) else {
            continue;
        };
        if let Err(e) = out.udp.send_to(&sealed, to.addr).await {
            tracing::debug!(to = %to.addr, error = %e, "gossip send");
        }
    }
    while let Some((after, timer)) = rt.to_schedule() {
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _stopped = tx.send(Input::Timer(timer));
        });
    }
    while let Some(n) = rt.to_notify() {
        match n {
            OwnedNotification::MemberUp(m) => {
                {
                    let mut s = lock(shared);
                    s.members.insert(m.node_id.clone(), m.addr);
                    s.down.remove(&m.node_id);
                }
                changed.send_modify(|v| *v += 1);
                // Push the whole table: the newcomer learns every endpoint
                // at once instead of waiting for retransmissions.
                let records: Vec<Record> = lock(shared).table.records().cloned().collect();
                let out = out.clone();
                tokio::spawn(async move {
                    if let Err(e) = push_sync(m.addr, &records, &out).await {
                        tracing::debug!(to = %m.addr, error = %e, "gossip sync push");
                    }
                });
            }
            OwnedNotification::MemberDown(m) => {
                let dropped = {
                    let mut s = lock(shared);
                    s.members.remove(&m.node_id);
                    s.down.insert(m.node_id.clone());
                    s.table.drop_node(&m.node_id)
                };
                tracing::info!(node = %m.node_id, dropped, "gossip member down");
                changed.send_modify(|v| *v += 1);
            }
            OwnedNotification::Rename(old, new) => {
                let mut s = lock(shared);
                if s.members.remove(&old.node_id).is_some() {
                    s.members.insert(new.node_id.clone(), new.addr);
                }
            }
            _ => {}
        }
    }
}

async fn push_sync(to: SocketAddr, records: &[Record], out: &Out) -> std::io::Result<()> {
    let data = postcard::to_allocvec(records).map_err(std::io::Error::other)?;
    let data = out
        .wire
        .seal(&data)
        .ok_or_else(|| std::io::Error::other("no gossip key ring yet"))?;
    let s = match out.netns.clone() {
        None => tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(to))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??,
        Some(ns) => TcpStream::from_std(connect_in(ns, to).await?)?,
    };
    let mut s = s;
    s.write_all(&data).await?;
    s.shutdown().await
}

/// Connects from inside the namespace `ns`, on a thread of its own (a
/// socket belongs to the namespace of the thread that makes it).
async fn connect_in(
    ns: std::path::PathBuf,
    to: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    shoal_netns::spawn_in(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?
}

async fn receive_sync(s: TcpStream, wire: &Wire) -> std::io::Result<Vec<Record>> {
    let mut data = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        s.take(MAX_SYNC_BYTES + 1).read_to_end(&mut data),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read"))??;
    if data.len() as u64 > MAX_SYNC_BYTES {
        return Err(std::io::Error::other("full-table push too large"));
    }
    // A bare connect (`node doctor`'s 7946 probe) carries nothing to open.
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let data = wire
        .open(&data)
        .ok_or_else(|| std::io::Error::other("full-table push did not open"))?;
    postcard::from_bytes(&data).map_err(std::io::Error::other)
}
