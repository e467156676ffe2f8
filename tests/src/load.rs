//! A steady request loop from the lab's client, for tests that claim no
//! request fails while something changes (rolling updates, health).
//!
//! Each request is a new TCP connection (`GET /` over HTTP/1.0) to the next
//! address in turn, so every request is a fresh routing decision of the
//! mesh on whichever node it lands: exactly what an update may break.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{Lab, LabError, run_in_netns};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Since the loop started.
    pub at: Duration,
    pub addr: SocketAddr,
    pub error: String,
}

/// What the loop saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failures: Vec<Failure>,
    /// Answers by body (trimmed), counted.
    pub bodies: BTreeMap<String, u64>,
    /// (since the start, body) of every answer, in order.
    pub timeline: Vec<(Duration, String)>,
}

impl LoadReport {
    /// The last `n` answers all had `body`.
    pub fn ends_with(&self, body: &str, n: usize) -> bool {
        self.timeline.len() >= n
            && self.timeline[self.timeline.len() - n..]
                .iter()
                .all(|(_, b)| b == body)
    }
}

/// A request loop running on its own thread in the client namespace.
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    thread: Option<JoinHandle<Result<(), LabError>>>,
}

impl RequestLoop {
    /// A snapshot of what the loop saw so far.
    pub fn report(&self) -> LoadReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops the loop and returns everything it saw.
    pub fn finish(mut self) -> Result<LoadReport, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(self.report())
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Lab {
    /// Starts requests from the client to `addrs` in turn, one new
    /// connection each, `pause` apart, until [`RequestLoop::finish`].
    ///
    /// # Panics
    /// If the lab was built without `.client(true)`.
    pub fn request_loop(&self, addrs: Vec<SocketAddr>, pause: Duration) -> RequestLoop {
        let netns = self
            .client_netns()
            .unwrap_or_else(|| panic!("lab {} was built without .client(true)", self.name()));
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let (s, r) = (stop.clone(), report.clone());
        let thread = std::thread::spawn(move || {
            run_in_netns(&netns, move || {
                let start = Instant::now();
                for addr in addrs.iter().cycle() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let answer = get(*addr);
                    let at = start.elapsed();
                    if let Ok(mut rep) = r.lock() {
                        match answer {
                            Ok(body) => {
                                rep.ok += 1;
                                *rep.bodies.entry(body.clone()).or_default() += 1;
                                rep.timeline.push((at, body));
                            }
                            Err(error) => rep.failures.push(Failure {
                                at,
                                addr: *addr,
                                error,
                            }),
                        }
                    }
                    std::thread::sleep(pause);
                }
            })
        });
        RequestLoop {
            stop,
            report,
            thread: Some(thread),
        }
    }
}

/// `GET /` on a new connection; the body when the status is 200.
fn get(addr: SocketAddr) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| c.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    c.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("status: {status}"));
    }
    Ok(body.trim().to_owned())
}
