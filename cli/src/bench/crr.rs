//! New connections per second (TCP_CRR-style, as wrk with `Connection:
//! close`): each connection sends one HTTP request, the server answers and
//! closes first, so the server's side keeps the TIME_WAIT. Run from the
//! caller's side by `conns` concurrent loops on `threads` threads.
//!
//! Two ways to pick the client's source port, so the harness artefact of
//! issue 17 shows in the numbers:
//! - [`Tuples::Kernel`]: the kernel picks an ephemeral port, as wrk does; a
//!   port comes back within TIME_WAIT, and the server (which sees the
//!   client's own address through the mesh) may answer the new SYN from
//!   its TIME_WAIT entry, costing a SYN retransmit (1 s).
//! - [`Tuples::Distinct`]: explicit source ports outside the ephemeral range,
//!   never reused within [`REUSE_AFTER`] towards the same server in the
//!   whole run ([`Budgets`]: the ingress scenarios share one, since the
//!   backend sees the same 4-tuple whichever node the client entered by; a
//!   balancer that terminates the connection is a server of its own). When
//!   a budget runs out a loader waits; the waits are counted, and the rate
//!   is then bounded by the budget.
//!
//! Either way the caller's SYN retransmits and retransmitted segments are
//! counted from its network namespace's /proc/net counters.

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use shoal_bench::{Histogram, netstat};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};

/// Linux keeps TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN, not tunable); one
/// second more for clocks and in-flight FINs.
pub const REUSE_AFTER: Duration = Duration::from_secs(61);
/// A connection slower than this is counted as an error.
const STALL: Duration = Duration::from_secs(5);
/// Errors kept verbatim per run; the rest are only counted.
const KEEP_ERRORS: usize = 3;

pub enum Tuples {
    Kernel,
    Distinct(Arc<Budget>),
}

/// Source (address, port) pairs that no connection of this run used within
/// [`REUSE_AFTER`], handed out in turn.
pub struct Budget {
    inner: Mutex<Ring>,
}

struct Ring {
    tuples: Vec<SocketAddrV4>,
    used: Vec<Option<Instant>>,
    next: usize,
}

impl Budget {
    /// Every port outside `ephemeral` (the kernel's own range, which the
    /// port-reuse runs draw from) from 1024 up, on every source address.
    pub fn new(sources: &[Ipv4Addr], ephemeral: (u16, u16)) -> Self {
        let ports: Vec<u16> = (1024..=u16::MAX)
            .filter(|p| *p < ephemeral.0 || *p > ephemeral.1)
            .collect();
        // Addresses interleaved, so each port rests as long as possible.
        let tuples: Vec<SocketAddrV4> = ports
            .iter()
            .flat_map(|p| sources.iter().map(move |a| SocketAddrV4::new(*a, *p)))
            .collect();
        let used = vec![None; tuples.len()];
        Self {
            inner: Mutex::new(Ring {
                tuples,
                used,
                next: 0,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |r| r.tuples.len())
    }

    /// The next tuple and when it may be used (now, or once its last use
    /// is [`REUSE_AFTER`] old). It is marked used at that time. `None` when
    /// a loader panicked holding the lock.
    fn take(&self) -> Option<(SocketAddrV4, Instant)> {
        let mut r = self.inner.lock().ok()?;
        let i = r.next;
        r.next = (i + 1) % r.tuples.len().max(1);
        let now = Instant::now();
        let at = r.used[i].map_or(now, |t| (t + REUSE_AFTER).max(now));
        r.used[i] = Some(at);
        Some((r.tuples[i], at))
    }
}

/// One [`Budget`] per server that keeps the TIME_WAIT (the end that closes
/// first), made on first use: tuples only clash at the same server, so
/// scenarios ending at different ones do not eat into each other's.
pub struct Budgets {
    sources: Vec<Ipv4Addr>,
    ephemeral: (u16, u16),
    by_server: Mutex<HashMap<&'static str, Arc<Budget>>>,
}

impl Budgets {
    pub fn new(sources: &[Ipv4Addr], ephemeral: (u16, u16)) -> Self {
        Self {
            sources: sources.to_vec(),
            ephemeral,
            by_server: Mutex::default(),
        }
    }

    /// The budget of the connections that end at `server`.
    pub fn for_server(&self, server: &'static str) -> Arc<Budget> {
        let mut m = self
            .by_server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(server)
            .or_insert_with(|| Arc::new(Budget::new(&self.sources, self.ephemeral)))
            .clone()
    }

    /// Tuples in each server's budget.
    pub fn len_each(&self) -> usize {
        let ports = (1024..=u16::MAX)
            .filter(|p| *p < self.ephemeral.0 || *p > self.ephemeral.1)
            .count();
        ports * self.sources.len()
    }
}

/// The kernel's ephemeral port range (ip_local_port_range).
pub fn ephemeral_range() -> anyhow::Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut w = text.split_whitespace().map(str::parse::<u16>);
    match (w.next(), w.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => Err(anyhow!("{path}: {text:?} is not `LOW HIGH`")),
    }
}

/// One run's figures.
pub struct Crr {
    pub per_second: f64,
    pub hist: Histogram,
    /// Connections that failed (refused, reset, timed out, non-2xx).
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// Connections that waited for a tuple to leave TIME_WAIT.
    pub waits: u64,
    /// Deltas of the caller's TcpExt.TCPSynRetrans and Tcp.RetransSegs.
    pub syn_retrans: i64,
    pub retrans_segs: i64,
}

/// The caller's TCP counters (its network namespace).
fn counters() -> anyhow::Result<netstat::Counters> {
    let mut text = String::new();
    for path in ["/proc/net/netstat", "/proc/net/snmp"] {
        text.push_str(&std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?);
    }
    Ok(netstat::parse(&text)?)
}

const SYN_RETRANS: &str = "TcpExt.TCPSynRetrans";
const RETRANS_SEGS: &str = "Tcp.RetransSegs";

/// `measure` of new connections to `target` from `conns` concurrent loops
/// on their own runtime of `threads` threads (the CLI's own runtime is
/// single-threaded).
pub async fn run(
    target: SocketAddrV4,
    measure: Duration,
    threads: usize,
    conns: usize,
    tuples: &Tuples,
) -> anyhow::Result<Crr> {
    let budget = match tuples {
        Tuples::Kernel => None,
        Tuples::Distinct(b) => Some(b.clone()),
    };
    let before = counters()?;
    let (elapsed, parts) =
        on_threads(threads, move || load(target, measure, conns, budget)).await?;
    let after = counters()?;
    let mut out = Crr {
        per_second: 0.0,
        hist: Histogram::default(),
        errors: 0,
        first_errors: Vec::new(),
        waits: 0,
        syn_retrans: netstat::delta(&before, &after, SYN_RETRANS)
            .ok_or_else(|| anyhow!("no {SYN_RETRANS} in /proc/net/netstat"))?,
        retrans_segs: netstat::delta(&before, &after, RETRANS_SEGS)
            .ok_or_else(|| anyhow!("no {RETRANS_SEGS} in /proc/net/snmp"))?,
    };
    for p in parts {
        out.hist.merge(&p.hist);
        out.errors += p.errors;
        out.waits += p.waits;
        for e in p.first_errors {
            if out.first_errors.len() < KEEP_ERRORS {
                out.first_errors.push(e);
            }
        }
    }
    out.per_second = out.hist.count as f64 / elapsed.as_secs_f64();
    Ok(out)
}

#[derive(Default)]
struct Part {
    hist: Histogram,
    errors: u64,
    first_errors: Vec<String>,
    waits: u64,
}

/// Runs the future `make` gives on a runtime of its own with `threads`
/// workers, and waits for it without blocking the caller's runtime.
pub async fn on_threads<F, T>(
    threads: usize,
    make: impl FnOnce() -> F + Send + 'static,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (done, joined) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-loaders".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()
                .context("a runtime for the loaders")
                .and_then(|rt| rt.block_on(make()));
            // The receiver is gone only when the bench was interrupted.
            let _ = done.send(r);
        })
        .context("starting the loader thread")?;
    joined.await.context("the loader thread died")?
}

async fn load(
    target: SocketAddrV4,
    measure: Duration,
    conns: usize,
    budget: Option<Arc<Budget>>,
) -> anyhow::Result<(Duration, Vec<Part>)> {
    let start = Instant::now();
    let end = start + measure;
    let tasks: Vec<_> = (0..conns.max(1))
        .map(|_| tokio::spawn(loader(target, end, budget.clone())))
        .collect();
    let mut parts = Vec::with_capacity(conns);
    for t in tasks {
        parts.push(t.await.context("a loader task panicked")?);
    }
    Ok((start.elapsed(), parts))
}

async fn loader(target: SocketAddrV4, end: Instant, budget: Option<Arc<Budget>>) -> Part {
    let mut part = Part::default();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUser-Agent: shoal-bench\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::with_capacity(512);
    while Instant::now() < end {
        let source = match &budget {
            None => None,
            Some(b) => {
                let Some((tuple, at)) = b.take() else {
                    fail(&mut part, "the tuple budget is unusable".into());
                    break;
                };
                if at > Instant::now() {
                    part.waits += 1;
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                Some(tuple)
            }
        };
        let t = Instant::now();
        buf.clear();
        match tokio::time::timeout(STALL, once(target, source, &request, &mut buf)).await {
            Ok(Ok(())) => part
                .hist
                .record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)),
            // The port is taken on this machine (another socket holds it):
            // skipped, not a failure of the path.
            Ok(Err(Once::Bind(e))) if e.kind() == ErrorKind::AddrInUse => {}
            Ok(Err(e)) => fail(&mut part, format!("{e}")),
            Err(_) => fail(&mut part, format!("no answer within {STALL:?}")),
        }
    }
    part
}

fn fail(part: &mut Part, e: String) {
    part.errors += 1;
    if part.first_errors.len() < KEEP_ERRORS {
        part.first_errors.push(e);
    }
}

#[derive(Debug, thiserror::Error)]
enum Once {
    #[error("bind {0}")]
    Bind(#[source] std::io::Error),
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("exchange: {0}")]
    Io(#[source] std::io::Error),
    #[error("answer {0:?}: not 2xx")]
    Status(String),
}

/// One connection: request, the whole answer up to the server's close.
async fn once(
    target: SocketAddrV4,
    source: Option<SocketAddrV4>,
    request: &str,
    buf: &mut Vec<u8>,
) -> Result<(), Once> {
    let sock = TcpSocket::new_v4().map_err(Once::Connect)?;
    if let Some(s) = source {
        sock.bind(s.into()).map_err(Once::Bind)?;
    }
    let mut conn = sock.connect(target.into()).await.map_err(Once::Connect)?;
    conn.set_nodelay(true).map_err(Once::Io)?;
    conn.write_all(request.as_bytes()).await.map_err(Once::Io)?;
    conn.read_to_end(buf).await.map_err(Once::Io)?;
    let status = buf
        .split(|b| *b == b'\r')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        _ => Err(Once::Status(status.chars().take(60).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_never_repeats_a_tuple_within_time_wait() {
        let b = Budget::new(&[Ipv4Addr::new(10, 0, 0, 1)], (1100, u16::MAX));
        assert_eq!(b.len(), 76);
        let first: Vec<(SocketAddrV4, Instant)> = (0..76).filter_map(|_| b.take()).collect();
        assert_eq!(first.len(), 76);
        let now = Instant::now();
        assert!(first.iter().all(|(_, at)| *at <= now));
        assert!(first.iter().all(|(t, _)| t.port() < 1100));
        // The 77th is the first again, only after REUSE_AFTER.
        let (again, at) = b.take().expect("not poisoned");
        assert_eq!(again, first[0].0);
        assert!(at >= first[0].1 + REUSE_AFTER);
    }

    #[test]
    fn sources_interleave() {
        let a = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let b = Budget::new(&a, (2000, u16::MAX));
        assert_eq!(b.len(), 2 * 976);
        let (x, y) = (b.take().expect("ok").0, b.take().expect("ok").0);
        assert_eq!((x.ip(), y.ip(), x.port()), (&a[0], &a[1], y.port()));
    }

    #[test]
    fn servers_have_budgets_of_their_own() {
        let all = Budgets::new(&[Ipv4Addr::new(10, 0, 0, 1)], (1100, u16::MAX));
        assert_eq!(all.len_each(), 76);
        let ingress = all.for_server("ingress");
        let used: Vec<_> = (0..76).filter_map(|_| ingress.take()).collect();
        assert_eq!(used.len(), 76);
        // The same server's budget is spent: its next tuple waits...
        let (_, at) = all.for_server("ingress").take().expect("ok");
        assert!(at >= used[0].1 + REUSE_AFTER);
        // ...another server's is whole.
        let (t, at) = all.for_server("haproxy-remote").take().expect("ok");
        assert_eq!(t, used[0].0);
        assert!(at <= Instant::now());
    }
}
