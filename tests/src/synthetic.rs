//! Synthetic nodes: many swarm members in one process that never run a
//! task, for measuring the control plane at a scale the machine could not
//! hold as real `shoald`s.
//!
//! Each joins through the real path (join token + CSR of a fresh key →
//! certificate, over the token-pinned TLS), then keeps a real session: it
//! heartbeats at the period the managers ask for, and holds its
//! `Assignments` stream open, recording when each service's tasks first
//! reached it. It never reports task states, so its tasks stay ASSIGNED.
//!
//! All of them run on one thread that entered a lab namespace (the client's),
//! on a current-thread runtime: every socket they open is in that
//! namespace, and no tokio worker of the caller ever switches namespace.

use std::{
    collections::HashMap,
    os::fd::AsFd,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use shoal_api::cluster::v1::{
    AssignmentSet, AssignmentsRequest, HeartbeatRequest, JoinRequest, NodeResources,
    dispatcher_client::DispatcherClient, join_client::JoinClient,
};
use shoal_ca::{
    CaCert, Credentials, JoinToken, NodeIdentity, NodeKey, NodeRole, RemovedNodes,
    bootstrap_client_config, live_client_config,
};
use shoal_controlplane::transport;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

use crate::LabError;

/// How many joins are in flight at once: each costs the leader a
/// certificate signature and a Raft commit.
const JOIN_CONCURRENCY: usize = 8;
/// Between tries of a failed heartbeat or a broken stream.
const RETRY: Duration = Duration::from_millis(500);

/// What to start.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// The lab namespace the nodes' sockets live in.
    pub netns: String,
    /// `host:port` of managers; node i joins and keeps its session through
    /// `managers[i % len]`.
    pub managers: Vec<String>,
    /// A worker join token.
    pub token: String,
    pub count: usize,
    /// Hostnames are `<prefix>-<i>`, i from 1.
    pub prefix: String,
    /// What the nodes advertise (the namespace's address).
    pub advertise: std::net::Ipv4Addr,
}

/// What one node's assignment stream delivered.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Sets received so far.
    pub sets: u64,
    /// Tasks in the latest set.
    pub tasks: usize,
    /// Encoded bytes of the latest set.
    pub bytes: usize,
    /// When a task of each service (by name) first reached the node.
    pub first_seen: HashMap<String, Instant>,
}

/// Running synthetic nodes; dropping this ends their sessions (the
/// managers then mark them down).
pub struct SyntheticNodes {
    ids: Vec<String>,
    joins: Vec<Duration>,
    received: Vec<Arc<Mutex<Received>>>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyntheticNodes {
    /// Joins `spec.count` nodes and starts their sessions; returns once all
    /// have joined and opened their assignment streams.
    pub async fn start(spec: SyntheticSpec) -> Result<SyntheticNodes, LabError> {
        if spec.managers.is_empty() || spec.count == 0 {
            return Err(LabError::Config {
                reason: "synthetic nodes need at least one manager address and a count > 0".into(),
            });
        }
        let ns = crate::netns::open(&spec.netns)?;
        let received: Vec<_> = (0..spec.count)
            .map(|_| Arc::new(Mutex::new(Received::default())))
            .collect();
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = received.clone();
        let netns = spec.netns.clone();
        let thread = std::thread::Builder::new()
            .name("synthetic-nodes".into())
            .spawn(move || {
                let run = || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("a runtime: {e}")));
                            return;
                        }
                    };
                    rt.block_on(run_all(spec, shared, ready_tx, stopped));
                };
                // The library has no logger: stderr is where a test or a
                // bench shows this.
                if let Err(e) = shoal_netns::run_in(ns.as_fd(), run) {
                    eprintln!("synthetic nodes: {e}");
                }
            })
            .map_err(|source| LabError::Io {
                path: "synthetic-nodes thread".into(),
                op: "spawn",
                source,
            })?;
        let mut nodes = SyntheticNodes {
            ids: Vec::new(),
            joins: Vec::new(),
            received,
            stop: Some(stop),
            thread: Some(thread),
        };
        match ready_rx.await {
            Ok(Ok(joined)) => {
                (nodes.ids, nodes.joins) = joined.into_iter().unzip();
                Ok(nodes)
            }
            Ok(Err(what)) => Err(LabError::Synthetic { netns, what }),
            Err(_) => Err(LabError::Synthetic {
                netns,
                what: "the nodes' thread ended before they joined".into(),
            }),
        }
    }

    /// Node ids, in hostname order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// How long each join took (request to certificate), in hostname order.
    pub fn join_times(&self) -> &[Duration] {
        &self.joins
    }

    /// A copy of what each node received so far, in hostname order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .iter()
            .map(|r| r.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }

    /// When each node first received a task of `service`; None for a node
    /// that has not yet.
    pub fn first_seen(&self, service: &str) -> Vec<Option<Instant>> {
        self.received
            .iter()
            .map(|r| {
                r.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .first_seen
                    .get(service)
                    .copied()
            })
            .collect()
    }
}

impl Drop for SyntheticNodes {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Joined = Vec<(String, Duration)>;

async fn run_all(
    spec: SyntheticSpec,
    received: Vec<Arc<Mutex<Received>>>,
    ready: oneshot::Sender<Result<Joined, String>>,
    stopped: watch::Receiver<bool>,
) {
    let token = match JoinToken::parse(spec.token.trim()) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(format!("the join token: {e}")));
            return;
        }
    };
    let mut sessions = Vec::with_capacity(spec.count);
    let mut joined = Vec::with_capacity(spec.count);
    let indices: Vec<usize> = (0..spec.count).collect();
    for chunk in indices.chunks(JOIN_CONCURRENCY) {
        let results = futures::future::join_all(chunk.iter().map(|&i| {
            let manager = spec.managers[i % spec.managers.len()].clone();
            let hostname = format!("{}-{}", spec.prefix, i + 1);
            join_one(&token, &spec.token, manager, hostname, spec.advertise)
        }))
        .await;
        for (r, &i) in results.into_iter().zip(chunk) {
            match r {
                Ok(node) => {
                    joined.push((node.id.clone(), node.took));
                    sessions.push((node, received[i].clone()));
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("{}-{}: {e}", spec.prefix, i + 1)));
                    return;
                }
            }
        }
    }
    // Streams open before the caller goes on: a change it makes next must
    // reach every node through the stream, not as its first picture.
    let mut opened = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (node, rx) in sessions {
        let (tx_open, rx_open) = oneshot::channel();
        opened.push(rx_open);
        tasks.spawn(heartbeats(node.clone(), stopped.clone()));
        tasks.spawn(stream(node, rx, tx_open, stopped.clone()));
    }
    for o in opened {
        let _ = o.await;
    }
    let _ = ready.send(Ok(joined));
    let mut stopped = stopped;
    let _ = stopped.wait_for(|s| *s).await;
    tasks.abort_all();
}

#[derive(Clone)]
struct Member {
    id: String,
    took: Duration,
    channel: Channel,
}

async fn join_one(
    token: &JoinToken,
    token_text: &str,
    manager: String,
    hostname: String,
    advertise: std::net::Ipv4Addr,
) -> Result<Member, String> {
    let key = NodeKey::generate().map_err(|e| format!("a key: {e}"))?;
    let mut tls = bootstrap_client_config(token).map_err(|e| format!("TLS: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let ch = transport::channel(&manager, Arc::new(tls), NodeRole::Manager.server_name())
        .map_err(|e| format!("{manager}: {e}"))?;
    let csr = key.csr().map_err(|e| format!("a CSR: {e}"))?;
    let t = Instant::now();
    let reply = JoinClient::new(ch)
        .join(JoinRequest {
            token: token_text.trim().to_owned(),
            csr_pem: csr.into_string(),
            hostname,
            advertise_addr: format!("{advertise}:{}", shoal_common::ports::CLUSTER_PORT),
            data_path_addr: String::new(),
        })
        .await
        .map_err(|s| format!("join through {manager}: {}", s.message()))?
        .into_inner();
    let took = t.elapsed();
    let identity = NodeIdentity::from_pem(&reply.cert_pem, &key.to_pem())
        .map_err(|e| format!("the issued certificate: {e}"))?;
    let trust = CaCert::bundle_from_pem(&reply.ca_pem).map_err(|e| format!("the CA: {e}"))?;
    let creds = Credentials::new(identity, trust).map_err(|e| format!("credentials: {e}"))?;
    let mut tls = live_client_config(&creds, Arc::new(RemovedNodes::new()))
        .map_err(|e| format!("mTLS: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let channel = transport::channel(&manager, Arc::new(tls), NodeRole::Manager.server_name())
        .map_err(|e| format!("{manager}: {e}"))?;
    Ok(Member {
        id: reply.node_id,
        took,
        channel,
    })
}

/// Heartbeats at the period the manager names, as an agent does.
async fn heartbeats(node: Member, mut stopped: watch::Receiver<bool>) {
    let mut client = DispatcherClient::new(node.channel);
    loop {
        let req = HeartbeatRequest {
            node_id: node.id.clone(),
            tls: None,
            // Resources as a small real node would report, so that the
            // scheduler treats these like any other.
            resources: Some(NodeResources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 4 << 30,
            }),
            platform: None,
            wireguard_key: Vec::new(),
        };
        let period = match client.heartbeat(req).await {
            Ok(r) => Duration::from_millis(r.into_inner().period_ms.max(500)),
            Err(_) => RETRY,
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Holds the node's assignment stream, recording what arrives.
async fn stream(
    node: Member,
    received: Arc<Mutex<Received>>,
    opened: oneshot::Sender<()>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut client = DispatcherClient::new(node.channel);
    let mut opened = Some(opened);
    loop {
        let req = AssignmentsRequest {
            node_id: node.id.clone(),
        };
        if let Ok(r) = client.assignments(req).await {
            let mut s = r.into_inner();
            if let Some(o) = opened.take() {
                let _ = o.send(());
            }
            loop {
                let msg = tokio::select! {
                    m = s.message() => m,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                match msg {
                    Ok(Some(set)) => record(&received, &set),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

fn record(received: &Mutex<Received>, set: &AssignmentSet) {
    let now = Instant::now();
    let mut r = received.lock().unwrap_or_else(PoisonError::into_inner);
    r.sets += 1;
    r.tasks = set.tasks.len();
    r.bytes = prost::Message::encoded_len(set);
    for t in &set.tasks {
        r.first_seen.entry(t.service_name.clone()).or_insert(now);
    }
}
