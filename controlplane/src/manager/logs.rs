//! `service logs`: the manager asks every node running the service's tasks
//! for their logs (`TaskLogs.Read` on the node's 2377, dialled with this
//! manager's certificate and expecting that node's own), names each line's
//! task and node, and merges the streams: in time order for a snapshot, as
//! lines come when following.
//!
//! A node that cannot be reached is never a silent gap. A snapshot sends
//! what the other nodes had, then ends with docker's "incomplete log stream"
//! error naming the node; a follower sends a `warning` line and keeps
//! trying that node, resuming where its stream broke.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use shoal_api::cluster::v1::{
    LogLine, ReadLogsRequest, ServiceLogsRequest, task_logs_client::TaskLogsClient,
};
use shoal_ca::rustls::pki_types::ServerName;
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{Status, Streaming};

use super::{LogStream, Manager, ManagerError, lookup};
use crate::model::{ClusterState, Service, Task};
use crate::{dispatch::task_name, transport};

/// Lines queued per request before the readers wait for the caller.
const BUFFER: usize = 256;
/// A snapshot gives up on a node silent for this long.
const IDLE: Duration = Duration::from_secs(30);
/// How long a follower waits before dialling an unreachable node again.
const RETRY: Duration = Duration::from_secs(2);
/// How often a follower of a service looks for tasks it does not follow yet.
const WATCH: Duration = Duration::from_secs(1);

/// What `service logs` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Service(String),
    Task(String),
}

/// A node to read logs from, and the tasks whose logs it has.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLogs {
    node_id: String,
    hostname: String,
    /// `host:port` of its 2377; `None` if the node never said.
    addr: Option<String>,
    /// Task id → task name (`web.1`).
    tasks: BTreeMap<String, String>,
}

/// Resolves `key` as docker does: a service (id, name, id prefix), else a
/// task (id, id prefix).
fn resolve(state: &ClusterState, key: &str) -> Result<Target, ManagerError> {
    match lookup::<Service>(state, key) {
        Ok(s) => return Ok(Target::Service(s.id.clone())),
        Err(ManagerError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    match lookup::<Task>(state, key) {
        Ok(t) => Ok(Target::Task(t.id.clone())),
        Err(ManagerError::NotFound { .. }) => Err(ManagerError::NotFound {
            what: format!("task or service {key}"),
        }),
        Err(e) => Err(e),
    }
}

/// Where the logs of the target's tasks are, by node. Every task placed on
/// a node counts, ended ones too: their logs stay until they are removed.
fn plan(state: &ClusterState, target: &Target) -> BTreeMap<String, NodeLogs> {
    let mut nodes: BTreeMap<String, NodeLogs> = BTreeMap::new();
    let tasks = state.tasks.values().filter(|t| match target {
        Target::Service(id) => t.service_id == *id,
        Target::Task(id) => t.id == *id,
    });
    for t in tasks {
        let Some(node_id) = &t.node_id else { continue };
        let entry = nodes.entry(node_id.clone()).or_insert_with(|| {
            let node = state.nodes.get(node_id);
            NodeLogs {
                node_id: node_id.clone(),
                hostname: node.map_or_else(|| node_id.clone(), |n| n.hostname.clone()),
                // A manager's 2377 is recorded; a worker listens on the
                // cluster port of the address it joined with.
                addr: node.and_then(crate::dispatch::cluster_addr),
                tasks: BTreeMap::new(),
            }
        });
        entry.tasks.insert(t.id.clone(), task_name(state, t));
    }
    nodes
}

/// The `ServiceLogs` stream for `r`.
pub(super) async fn stream(
    m: Arc<Manager>,
    r: ServiceLogsRequest,
) -> Result<LogStream, ManagerError> {
    let (target, nodes) = {
        let state = m.read().await?;
        let target = resolve(&state, r.service.trim())?;
        let nodes = plan(&state, &target);
        (target, nodes)
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    if r.follow {
        tokio::spawn(follow(m, target, nodes, r.tail, tx));
    } else {
        tokio::spawn(snapshot(m, nodes, r.tail, tx));
    }
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

type Sender = mpsc::Sender<Result<LogLine, Status>>;

/// What went wrong with a status, its transport causes included.
fn reason(s: &Status) -> String {
    let mut text = match s.message() {
        "" => s.code().description().to_owned(),
        m => m.to_owned(),
    };
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Opens `TaskLogs.Read` on `node` for `tasks`.
async fn open(
    m: &Manager,
    node: &NodeLogs,
    tasks: Vec<String>,
    follow: bool,
    tail: Option<u64>,
) -> Result<Streaming<LogLine>, String> {
    let addr = node
        .addr
        .as_deref()
        .ok_or("the cluster does not know its address")?;
    // Its certificate names its node id: this is the node that runs them.
    let name = ServerName::try_from(node.node_id.clone())
        .map_err(|e| format!("node id {:?}: {e}", node.node_id))?;
    let channel =
        transport::channel(addr, m.peer_tls.clone(), name).map_err(|e| format!("{addr}: {e}"))?;
    let req = ReadLogsRequest {
        task_ids: tasks,
        follow,
        tail,
    };
    TaskLogsClient::new(channel)
        .read(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{addr}: {}", reason(&s)))
}

/// Fills in what the node does not know: the task's name and the node's.
fn label(node: &NodeLogs, mut line: LogLine) -> LogLine {
    line.task_name = node
        .tasks
        .get(&line.task_id)
        .cloned()
        .unwrap_or_else(|| line.task_id.clone());
    line.node = node.hostname.clone();
    line
}

/// A snapshot: every node's lines merged in time order (each node sends
/// its own in order), then the nodes that failed.
async fn snapshot(
    m: Arc<Manager>,
    nodes: BTreeMap<String, NodeLogs>,
    tail: Option<u64>,
    tx: Sender,
) {
    let opened = futures::future::join_all(nodes.values().map(|node| {
        let tasks = node.tasks.keys().cloned().collect();
        open(&m, node, tasks, false, tail)
    }))
    .await;
    let mut failed = Vec::new();
    let mut sources = Vec::new();
    for (node, result) in nodes.values().zip(opened) {
        match result {
            Ok(stream) => sources.push(Source {
                node,
                stream: Some(stream),
                head: None,
            }),
            Err(why) => failed.push(unavailable(node, &why)),
        }
    }
    loop {
        for s in &mut sources {
            if let Err(why) = s.fill().await {
                failed.push(unavailable(s.node, &why));
            }
        }
        let Some(next) = sources
            .iter_mut()
            .filter(|s| s.head.is_some())
            .min_by(|a, b| by_time(&a.head, &b.head))
        else {
            break;
        };
        let Some(line) = next.head.take() else { break };
        if tx.send(Ok(label(next.node, line))).await.is_err() {
            return;
        }
    }
    if !failed.is_empty() {
        // docker's words, so scripts that look for them still work.
        let status = Status::unavailable(format!(
            "warning: incomplete log stream. some logs could not be retrieved for the following \
             reasons: {}",
            failed.join(", ")
        ));
        let _gone = tx.send(Err(status)).await;
    }
}

fn unavailable(node: &NodeLogs, why: &str) -> String {
    format!("node {} is not available: {why}", node.hostname)
}

fn by_time(a: &Option<LogLine>, b: &Option<LogLine>) -> Ordering {
    let time = |l: &Option<LogLine>| l.as_ref().map(|l| l.time.clone());
    time(a).cmp(&time(b))
}

/// One node's stream in a snapshot, with its next line.
struct Source<'a> {
    node: &'a NodeLogs,
    /// `None` once it ended.
    stream: Option<Streaming<LogLine>>,
    head: Option<LogLine>,
}

impl Source<'_> {
    /// Reads the next line unless one is waiting or the stream ended.
    async fn fill(&mut self) -> Result<(), String> {
        if self.head.is_some() {
            return Ok(());
        }
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        match tokio::time::timeout(IDLE, stream.message()).await {
            Ok(Ok(Some(line))) => {
                self.head = Some(line);
                Ok(())
            }
            Ok(Ok(None)) => {
                self.stream = None;
                Ok(())
            }
            Ok(Err(s)) => {
                self.stream = None;
                Err(reason(&s))
            }
            Err(_) => {
                self.stream = None;
                Err(format!("nothing received for {IDLE:?}"))
            }
        }
    }
}

/// Following: one reader per node, and for a service, more as its tasks
/// land on nodes (a scale-up, a restarted task) until the caller goes away.
async fn follow(
    m: Arc<Manager>,
    target: Target,
    nodes: BTreeMap<String, NodeLogs>,
    tail: Option<u64>,
    tx: Sender,
) {
    // Dropped when the caller goes: that stops every reader.
    let mut readers = JoinSet::new();
    let mut followed: BTreeSet<String> = BTreeSet::new();
    for node in nodes.into_values() {
        followed.extend(node.tasks.keys().cloned());
        readers.spawn(follow_node(m.clone(), node, tail, tx.clone()));
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(WATCH) => {}
        }
        // Reap finished readers so the set does not grow.
        while readers.try_join_next().is_some() {}
        if matches!(target, Target::Task(_)) {
            continue;
        }
        let mut fresh = plan(&*m.local_state().await, &target);
        for node in fresh.values_mut() {
            node.tasks.retain(|id, _| !followed.contains(id));
        }
        for node in fresh.into_values().filter(|n| !n.tasks.is_empty()) {
            followed.extend(node.tasks.keys().cloned());
            // New tasks: all of their lines are new.
            readers.spawn(follow_node(m.clone(), node, None, tx.clone()));
        }
    }
}

/// Follows `node`'s tasks, dialling it again whenever its stream breaks.
async fn follow_node(m: Arc<Manager>, node: NodeLogs, tail: Option<u64>, tx: Sender) {
    let tasks: Vec<String> = node.tasks.keys().cloned().collect();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut connected_once = false;
    let mut warned = false;
    loop {
        // Until a stream has worked, every attempt is the first; after
        // that the whole log is read again and what was sent is skipped.
        let tail = if connected_once { None } else { tail };
        let why = match open(&m, &node, tasks.clone(), true, tail).await {
            Ok(mut stream) => {
                if warned {
                    let notice = format!("node {}: log stream resumed", node.hostname);
                    if tx.send(Ok(warning(&node, notice))).await.is_err() {
                        return;
                    }
                    warned = false;
                }
                if connected_once {
                    seen.values_mut().for_each(Seen::replay);
                }
                connected_once = true;
                loop {
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        next = stream.message() => next,
                    };
                    match next {
                        Ok(Some(line)) => {
                            let entry = seen.entry(line.task_id.clone()).or_default();
                            if entry.admit(&line.time)
                                && tx.send(Ok(label(&node, line))).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break "the node ended the stream".to_owned(),
                        Err(s) => break reason(&s),
                    }
                }
            }
            Err(why) => why,
        };
        if !warned {
            let text = format!("{}; retrying", unavailable(&node, &why));
            if tx.send(Ok(warning(&node, text))).await.is_err() {
                return;
            }
            warned = true;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// A notice about the stream itself, in the stream (see `LogLine.stream`).
fn warning(node: &NodeLogs, text: String) -> LogLine {
    LogLine {
        task_id: String::new(),
        time: String::new(),
        stream: "warning".into(),
        line: text.into_bytes(),
        task_name: String::new(),
        node: node.hostname.clone(),
    }
}

/// What a follower passed on for one task, so that a stream opened again
/// (which reads the whole log) repeats nothing. Times are fixed-width
/// RFC 3339 (see `LogLine.time`), so their text order is their time order.
#[derive(Debug, Default)]
struct Seen {
    /// The latest time passed on.
    last: String,
    /// Lines passed on with that time.
    at_last: usize,
    /// While replaying, lines met with that time.
    replayed: usize,
    replaying: bool,
}

impl Seen {
    /// A new stream begins: its lines up to `last` were passed on.
    fn replay(&mut self) {
        self.replaying = true;
        self.replayed = 0;
    }

    /// Whether to pass on a line written at `time`.
    fn admit(&mut self, time: &str) -> bool {
        match (time.cmp(self.last.as_str()), self.replaying) {
            (Ordering::Greater, _) => {
                self.last = time.to_owned();
                self.at_last = 1;
                self.replaying = false;
                true
            }
            (Ordering::Equal, true) => {
                self.replayed += 1;
                if self.replayed > self.at_last {
                    self.at_last += 1;
                    true
                } else {
                    false
                }
            }
            (Ordering::Equal, false) => {
                self.at_last += 1;
                true
            }
            // Live, a line may be a little older than one before it (the
            // two output streams are copied apart); replayed, it was sent.
            (Ordering::Less, replaying) => !replaying,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Availability, Labels, ManagerInfo, Node, NodeRole, NodeState, ServiceMode, ServiceSpec,
        TaskState,
    };

    fn node(id: &str, hostname: &str, ip: [u8; 4], manager: bool) -> Node {
        Node {
            id: id.into(),
            version: 1,
            hostname: hostname.into(),
            role: if manager {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            },
            availability: Availability::Active,
            labels: Labels::new(),
            addr: Some(ip.into()),
            status: NodeState::Ready,
            manager: manager.then(|| ManagerInfo {
                raft_id: 1,
                addr: format!("{}.{}.{}.{}:4000", ip[0], ip[1], ip[2], ip[3]),
            }),
            tls: Default::default(),
            resources: Default::default(),
            platform: Default::default(),
            wireguard_key: None,
        }
    }

    fn state() -> ClusterState {
        let mut state = ClusterState::default();
        state
            .nodes
            .insert("n1id".into(), node("n1id", "n1", [198, 18, 0, 1], true));
        state
            .nodes
            .insert("n2id".into(), node("n2id", "n2", [198, 18, 0, 2], false));
        for (id, name) in [("svcweb", "web"), ("svcdb", "db")] {
            let spec = ServiceSpec {
                name: name.into(),
                labels: Labels::new(),
                mode: ServiceMode::Replicated { replicas: 3 },
                task: Default::default(),
                endpoint: Default::default(),
                networks: Vec::new(),
                constraints: Vec::new(),
                restart: Default::default(),
                update: Default::default(),
                rollback: Default::default(),
                placement_prefs: Vec::new(),
                network_aliases: Default::default(),
                max_replicas_per_node: 0,
            };
            state.services.insert(
                id.into(),
                Service {
                    id: id.into(),
                    version: 1,
                    spec,
                    previous_spec: None,
                    update_status: None,
                    endpoint: Default::default(),
                },
            );
        }
        let task = |id: &str, service: &str, slot: Option<u64>, node: Option<&str>| Task {
            id: id.into(),
            version: 1,
            service_id: service.into(),
            slot,
            node_id: node.map(Into::into),
            spec: Default::default(),
            desired_state: TaskState::Running,
            state: TaskState::Running,
            networks: vec![],
            status: Default::default(),
        };
        for t in [
            task("t1aaa", "svcweb", Some(1), Some("n1id")),
            task("t2bbb", "svcweb", Some(2), Some("n2id")),
            task("t3ccc", "svcweb", Some(3), Some("n2id")),
            // Not placed yet: no log anywhere.
            task("t4ddd", "svcweb", Some(4), None),
            task("t5eee", "svcdb", None, Some("n2id")),
        ] {
            state.tasks.insert(t.id.clone(), t);
        }
        state
    }

    #[test]
    fn targets_resolve_as_services_then_tasks() {
        let s = state();
        let ok = |key| resolve(&s, key).ok();
        assert_eq!(ok("web"), Some(Target::Service("svcweb".into())));
        assert_eq!(ok("svcd"), Some(Target::Service("svcdb".into())));
        assert_eq!(ok("t2bbb"), Some(Target::Task("t2bbb".into())));
        assert_eq!(ok("t3"), Some(Target::Task("t3ccc".into())));
        assert!(matches!(
            resolve(&s, "nope"),
            Err(ManagerError::NotFound { what }) if what == "task or service nope"
        ));
        assert!(matches!(
            resolve(&s, "t"),
            Err(ManagerError::Invalid { .. })
        ));
    }

    #[test]
    fn plans_group_placed_tasks_by_node_with_names_and_addresses() {
        let s = state();
        let web = plan(&s, &Target::Service("svcweb".into()));
        assert_eq!(web.len(), 2);
        let n1 = &web["n1id"];
        assert_eq!(n1.hostname, "n1");
        // A manager: its recorded 2377 address.
        assert_eq!(n1.addr.as_deref(), Some("198.18.0.1:4000"));
        assert_eq!(
            n1.tasks,
            BTreeMap::from([("t1aaa".to_owned(), "web.1".to_owned())])
        );
        let n2 = &web["n2id"];
        assert_eq!(n2.addr.as_deref(), Some("198.18.0.2:2377"));
        assert_eq!(n2.tasks.values().collect::<Vec<_>>(), ["web.2", "web.3"]);
        let db = plan(&s, &Target::Service("svcdb".into()));
        assert_eq!(db["n2id"].tasks["t5eee"], "db.n2id");
        let one = plan(&s, &Target::Task("t3ccc".into()));
        assert_eq!(one.len(), 1);
        assert_eq!(one["n2id"].tasks.len(), 1);
    }

    #[test]
    fn labels_name_task_and_node() {
        let s = state();
        let web = plan(&s, &Target::Service("svcweb".into()));
        let line = label(
            &web["n2id"],
            LogLine {
                task_id: "t3ccc".into(),
                ..LogLine::default()
            },
        );
        assert_eq!(
            (line.task_name.as_str(), line.node.as_str()),
            ("web.3", "n2")
        );
    }

    #[test]
    fn a_replayed_stream_repeats_nothing() {
        let mut seen = Seen::default();
        let t = |s: u8| format!("2026-11-02T10:00:0{s}.000000000Z");
        let live = [t(1), t(2), t(2), t(1), t(3), t(3)];
        assert!(
            live.iter().all(|time| seen.admit(time)),
            "live lines all pass"
        );
        // The stream broke after those; the node sends the whole log again,
        // with what was written meanwhile.
        seen.replay();
        let again = [t(1), t(2), t(2), t(1), t(3), t(3), t(3), t(4)];
        let passed: Vec<bool> = again.iter().map(|time| seen.admit(time)).collect();
        assert_eq!(
            passed,
            [false, false, false, false, false, false, true, true]
        );
        // Live again: an older line passes.
        assert!(seen.admit(&t(3)));
    }

    #[test]
    fn a_fresh_task_replays_everything() {
        let mut seen = Seen::default();
        seen.replay();
        assert!(seen.admit("2026-11-02T10:00:01.000000000Z"));
    }
}
