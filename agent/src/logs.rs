//! This node's task logs, served to managers (`TaskLogs.Read`): the files
//! the task runtime writes under `<state-dir>/tasks`, one CRI-format file
//! per task (see `shoal_runtime::logs`).
//!
//! A manager serves them on its 2377 listener, as extra routes of the
//! cluster API ([`routes`]); a worker on a listener of its own with its
//! node certificate ([`spawn_worker_server`]). Either way only a manager may
//! read them: a log holds whatever a task printed, secrets included.
//!
//! Following polls the files rather than watching them with inotify: a poll
//! is one small read per task every [`POLL`], and it behaves the same for a
//! file that does not exist yet (a task still starting) or was replaced.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use shoal_api::cluster::v1::{
    LogLine as WireLine, ReadLogsRequest,
    task_logs_server::{TaskLogs, TaskLogsServer},
};
use shoal_ca::{Credentials, NodeRole, RemovedNodes, live_server_config};
use shoal_controlplane::{manager::LogStream, transport};
use shoal_runtime::{
    LogLine, MAX_ID_LEN,
    logs::{LineJoiner, log_path, parse_record},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::{Request, Response, Status};

/// How often a follower looks for new records.
const POLL: Duration = Duration::from_millis(200);
/// Lines queued per request before reading waits for the caller.
const BUFFER: usize = 256;
/// How long a worker waits before binding its listener again.
const BIND_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("{id:?} is not a task id")]
    InvalidTaskId { id: String },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("TLS configuration of the task log server")]
    Tls(#[from] shoal_ca::CaError),
}

impl From<LogsError> for Status {
    fn from(e: LogsError) -> Self {
        let msg = crate::swarm::chain(&e);
        match e {
            LogsError::InvalidTaskId { .. } => Status::invalid_argument(msg),
            LogsError::Read { .. } | LogsError::Tls(_) => Status::internal(msg),
        }
    }
}

/// The node ids task logs are served to: the managers the swarm wants now,
/// as this node's last heartbeat said. A manager certificate of a node
/// demoted or removed since still verifies (it has not expired, and a
/// worker learns of no removals): this list is what refuses it. Unknown
/// before the first heartbeat, and then nobody is served. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct LogReaders(Arc<RwLock<Option<HashSet<String>>>>);

impl LogReaders {
    pub fn set(&self, node_ids: impl IntoIterator<Item = String>) {
        let ids = node_ids.into_iter().collect();
        // A poisoned lock still holds a whole set: it is only ever replaced.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(ids);
    }

    fn allows(&self, node_id: &str) -> Result<(), Status> {
        match &*self.0.read().unwrap_or_else(PoisonError::into_inner) {
            Some(ids) if ids.contains(node_id) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "task logs are served to the swarm's managers only: node {node_id} is not one now (demoted or removed)"
            ))),
            None => Err(Status::unavailable(
                "this node has not heard from its managers yet; retry",
            )),
        }
    }
}

/// The `TaskLogs` service over the logs in one directory.
#[derive(Clone, Debug)]
pub struct NodeLogs {
    dir: PathBuf,
    readers: LogReaders,
}

impl NodeLogs {
    pub fn new(dir: PathBuf, readers: LogReaders) -> Self {
        NodeLogs { dir, readers }
    }
}

/// The node's own services on 2377, which a manager adds to its cluster
/// API: task logs (to managers) and image blobs (to any node).
pub fn routes(
    dir: PathBuf,
    images: &crate::images::Images,
    readers: LogReaders,
) -> tonic::service::Routes {
    crate::images::BlobServer::routes(images)
        .add_service(TaskLogsServer::new(NodeLogs::new(dir, readers)))
}

#[tonic::async_trait]
impl TaskLogs for NodeLogs {
    type ReadStream = LogStream;

    async fn read(&self, req: Request<ReadLogsRequest>) -> Result<Response<LogStream>, Status> {
        let node_id = require_manager(&req)?;
        self.readers.allows(&node_id)?;
        let r = req.into_inner();
        for id in &r.task_ids {
            check_task_id(id)?;
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(stream_logs(self.dir.clone(), r, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The caller's node id, when its certificate says manager.
fn require_manager<T>(req: &Request<T>) -> Result<String, Status> {
    match req.extensions().get::<transport::PeerInfo>() {
        Some(transport::PeerInfo {
            identity: Some(id), ..
        }) if id.role() == NodeRole::Manager => Ok(id.node_id().to_owned()),
        _ => Err(Status::permission_denied(
            "task logs are served to managers only: a manager certificate is required",
        )),
    }
}

/// Task ids name files: the runtime's rule for them, which leaves no way
/// out of the log directory (no `/`, no leading `.`).
fn check_task_id(id: &str) -> Result<(), LogsError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogsError::InvalidTaskId { id: id.to_owned() })
    }
}

type Sender = mpsc::Sender<Result<WireLine, Status>>;

/// Sends the logs `r` asks for, then (following) new lines as they are
/// written, until the caller goes away.
async fn stream_logs(dir: PathBuf, r: ReadLogsRequest, tx: Sender) {
    let mut logs: Vec<TaskLog> = r.task_ids.iter().map(|id| TaskLog::new(&dir, id)).collect();
    let mut tail = r.tail;
    loop {
        // File reads block; a first read may be a large file.
        let round = tokio::task::spawn_blocking(move || {
            let lines = read_round(&mut logs, tail);
            (logs, lines)
        })
        .await;
        let lines = match round {
            Ok((back, Ok(lines))) => {
                logs = back;
                lines
            }
            Ok((_, Err(e))) => return fail(&tx, e.into()).await,
            Err(e) => {
                let status = Status::internal(format!("reading task logs: {e}"));
                return fail(&tx, status).await;
            }
        };
        for line in lines {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if !r.follow {
            return;
        }
        // After the first round, every line is new.
        tail = None;
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn fail(tx: &Sender, status: Status) {
    // The caller may be gone already; there is no one else to tell.
    let _gone = tx.send(Err(status)).await;
}

/// The lines every task completed since the last round, each task's cut to
/// its last `tail` when given, in time order.
fn read_round(logs: &mut [TaskLog], tail: Option<u64>) -> Result<Vec<WireLine>, LogsError> {
    let mut out = Vec::new();
    for log in logs {
        let lines = log.read_new()?;
        let keep = tail.map_or(lines.len(), |n| {
            usize::try_from(n).map_or(lines.len(), |n| n.min(lines.len()))
        });
        let skip = lines.len() - keep;
        out.extend(lines.into_iter().skip(skip).map(|l| wire(&log.id, l)));
    }
    // Stable: lines of one task with equal times keep their order.
    out.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(out)
}

fn wire(task_id: &str, line: LogLine) -> WireLine {
    WireLine {
        task_id: task_id.to_owned(),
        time: timestamp(line.time),
        stream: line.stream.as_str().to_owned(),
        line: line.text.into_bytes(),
        task_name: String::new(),
        node: String::new(),
    }
}

/// RFC 3339 in UTC with all nine digits of nanoseconds, as docker's
/// `--timestamps` prints them: the fixed width keeps columns aligned and
/// makes the text order the time order (managers merge on it).
pub fn timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// One task's log file, read as it grows.
#[derive(Debug)]
struct TaskLog {
    id: String,
    path: PathBuf,
    /// Bytes of the file read so far.
    offset: u64,
    /// The start of a record still being written (no newline yet).
    unfinished: Vec<u8>,
    joiner: LineJoiner,
}

impl TaskLog {
    fn new(dir: &Path, id: &str) -> Self {
        TaskLog {
            id: id.to_owned(),
            path: log_path(dir, id),
            offset: 0,
            unfinished: Vec::new(),
            joiner: LineJoiner::default(),
        }
    }

    /// The lines completed since the last call. A missing file is an empty
    /// log: the task has not started yet, or its log was removed.
    fn read_new(&mut self) -> Result<Vec<LogLine>, LogsError> {
        let err = |source| LogsError::Read {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let len = file.metadata().map_err(err)?.len();
        if len < self.offset {
            // Shorter than what was read: a new file under the same name.
            self.offset = 0;
            self.unfinished.clear();
            self.joiner = LineJoiner::default();
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut data = std::mem::take(&mut self.unfinished);
        let read = file.read_to_end(&mut data).map_err(err)?;
        self.offset += read as u64;
        let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
            self.unfinished = data;
            return Ok(Vec::new());
        };
        self.unfinished = data[end + 1..].to_vec();
        let mut lines = Vec::new();
        for raw in data[..end].split(|&b| b == b'\n') {
            match parse_record(raw) {
                Ok(record) => lines.extend(self.joiner.push(record)),
                // One bad record (a disk that filled mid-write) must not
                // hide the rest of the log.
                Err(e) => tracing::warn!(
                    path = %self.path.display(), error = %e, "skipping a malformed log record"
                ),
            }
        }
        Ok(lines)
    }
}

/// A worker's task log server on `listen` (its 2377), with its node
/// certificate, until the handle is aborted. Binding is retried: the
/// address may still be held by the listener of a membership just left.
pub fn spawn_worker_server(
    listen: SocketAddr,
    creds: &Credentials,
    dir: PathBuf,
    images: Arc<crate::images::Images>,
    readers: LogReaders,
) -> Result<JoinHandle<()>, LogsError> {
    // Workers learn of no removed nodes: the handshake takes any node of
    // the swarm, and `readers` decides who gets task logs.
    let mut tls = live_server_config(creds, Arc::new(RemovedNodes::new()), false)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = Arc::new(tls);
    Ok(tokio::spawn(async move {
        let listener = loop {
            match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "binding the task log server; retrying");
                    tokio::time::sleep(BIND_RETRY).await;
                }
            }
        };
        tracing::info!(%listen, "serving task logs to managers and image blobs to nodes");
        if let Err(e) = serve(listener, tls, dir, &images, readers).await {
            tracing::error!(error = %crate::swarm::chain(&e), "task log server stopped");
        }
    }))
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<shoal_ca::rustls::ServerConfig>,
    dir: PathBuf,
    images: &crate::images::Images,
    readers: LogReaders,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_routes(routes(dir, images, readers))
        .serve_with_incoming(transport::tls_incoming(listener, tls))
        .await
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use shoal_ca::{NodeIdentity, server_config};

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("test");
        f.write_all(text.as_bytes()).expect("test");
    }

    fn texts(lines: &[WireLine]) -> Vec<(&str, &str, String)> {
        lines
            .iter()
            .map(|l| {
                (
                    l.task_id.as_str(),
                    l.stream.as_str(),
                    String::from_utf8_lossy(&l.line).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn timestamps_are_fixed_width_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_793_614_272_500);
        assert_eq!(timestamp(t), "2026-11-02T10:11:12.500000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_793_614_272_000_000_007);
        assert_eq!(timestamp(t), "2026-11-02T10:11:12.000000007Z");
    }

    #[test]
    fn task_ids_cannot_leave_the_directory() {
        for good in ["x7k2m9q4", "a.b-c_d"] {
            assert!(check_task_id(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "..",
            ".hidden",
            "../etc/passwd",
            "a/b",
            "a b",
            long.as_str(),
        ] {
            assert!(
                matches!(check_task_id(bad), Err(LogsError::InvalidTaskId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn tail_keeps_the_last_lines_of_each_task_merged_by_time() -> Result<(), LogsError> {
        let dir = tempfile::tempdir().expect("test");
        append(
            &log_path(dir.path(), "a"),
            "2026-11-02T10:00:01Z stdout F a1\n\
             2026-11-02T10:00:03Z stdout F a2\n\
             2026-11-02T10:00:05Z stderr F a3\n",
        );
        append(
            &log_path(dir.path(), "b"),
            "2026-11-02T10:00:02Z stdout F b1\n\
             2026-11-02T10:00:04Z stdout F b2\n",
        );
        let fresh = || vec![TaskLog::new(dir.path(), "a"), TaskLog::new(dir.path(), "b")];
        let all = read_round(&mut fresh(), None)?;
        let order: Vec<String> = texts(&all).into_iter().map(|t| t.2).collect();
        assert_eq!(order, ["a1", "b1", "a2", "b2", "a3"]);
        assert_eq!(all[0].time, "2026-11-02T10:00:01.000000000Z");
        assert_eq!(all[4].stream, "stderr");

        let last = read_round(&mut fresh(), Some(1))?;
        assert_eq!(
            texts(&last),
            [("b", "stdout", "b2".into()), ("a", "stderr", "a3".into())]
        );
        assert!(read_round(&mut fresh(), Some(0))?.is_empty());
        let more = read_round(&mut fresh(), Some(10))?;
        assert_eq!(more.len(), 5);
        Ok(())
    }

    #[test]
    fn following_sees_appends_unfinished_records_and_pieces() -> Result<(), LogsError> {
        let dir = tempfile::tempdir().expect("test");
        let path = log_path(dir.path(), "t");
        let mut logs = vec![TaskLog::new(dir.path(), "t")];
        // Not started yet: no file is an empty log.
        assert!(read_round(&mut logs, Some(5))?.is_empty());

        append(
            &path,
            "2026-11-02T10:00:01Z stdout F one\n2026-11-02T10:00:02Z std",
        );
        assert_eq!(
            texts(&read_round(&mut logs, None)?),
            [("t", "stdout", "one".into())]
        );
        // The record finishes in a later write; a long line comes in pieces,
        // with a record of the other stream between them.
        append(
            &path,
            "out P two \n2026-11-02T10:00:03Z stderr F oops\n2026-11-02T10:00:04Z stdout F halves\n",
        );
        assert_eq!(
            texts(&read_round(&mut logs, None)?),
            [
                ("t", "stdout", "two halves".into()),
                ("t", "stderr", "oops".into())
            ]
        );
        assert!(read_round(&mut logs, None)?.is_empty());

        // A malformed record is skipped, not the rest.
        append(&path, "garbage\n2026-11-02T10:00:05Z stdout F after\n");
        assert_eq!(
            texts(&read_round(&mut logs, None)?),
            [("t", "stdout", "after".into())]
        );

        // Replaced by a shorter file: read from its start.
        std::fs::write(&path, "2026-11-02T11:00:00Z stdout F new\n").expect("test");
        assert_eq!(
            texts(&read_round(&mut logs, None)?),
            [("t", "stdout", "new".into())]
        );
        Ok(())
    }

    async fn next(rx: &mut mpsc::Receiver<Result<WireLine, Status>>) -> String {
        let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a line within 5 s")
            .expect("stream open")
            .expect("a line, not an error");
        String::from_utf8_lossy(&line.line).into_owned()
    }

    #[tokio::test]
    async fn a_follower_streams_new_lines_until_the_caller_goes_away() {
        let dir = tempfile::tempdir().expect("test");
        let path = log_path(dir.path(), "t");
        append(
            &path,
            "2026-11-02T10:00:01Z stdout F old\n2026-11-02T10:00:02Z stdout F last\n",
        );
        let (tx, mut rx) = mpsc::channel(BUFFER);
        let reader = tokio::spawn(stream_logs(
            dir.path().to_owned(),
            ReadLogsRequest {
                task_ids: vec!["t".into()],
                follow: true,
                tail: Some(1),
            },
            tx,
        ));
        assert_eq!(next(&mut rx).await, "last");
        append(&path, "2026-11-02T10:00:03Z stdout F fresh\n");
        assert_eq!(next(&mut rx).await, "fresh");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the follower ends once the caller is gone")
            .expect("test");
    }

    /// A node certificate of `role` from `ca`.
    fn identity(ca: &shoal_ca::RootCa, node_id: &str, role: NodeRole) -> NodeIdentity {
        let key = shoal_ca::NodeKey::generate().expect("test");
        let csr = key.csr().expect("test");
        let validity = Duration::from_secs(3600);
        let cert = ca
            .issue(&csr, node_id, role, ca.cert().cluster_id(), validity)
            .expect("test");
        NodeIdentity::from_pem(&cert, &key.to_pem()).expect("test")
    }

    #[tokio::test]
    async fn a_worker_serves_its_logs_over_tls_to_managers_only() {
        let dir = tempfile::tempdir().expect("test");
        append(
            &log_path(dir.path(), "t1"),
            "2026-11-02T10:00:01Z stdout F hello\n",
        );
        let ca = shoal_ca::RootCa::generate("c1", Duration::from_secs(3600)).expect("test");
        let worker = identity(&ca, "worker1", NodeRole::Worker);
        let mut tls =
            server_config(&worker, ca.cert(), Arc::new(RemovedNodes::new())).expect("test");
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test");
        let addr = listener.local_addr().expect("test").to_string();
        let images = crate::images::Images::open(&dir.path().join("images"), Default::default())
            .expect("test");
        let logs_dir = dir.path().to_owned();
        let readers = LogReaders::default();
        let served = readers.clone();
        let server =
            tokio::spawn(
                async move { serve(listener, Arc::new(tls), logs_dir, &images, served).await },
            );

        let read = |caller: Caller| {
            let addr = addr.clone();
            let ca = ca.cert().clone();
            async move {
                let revoked = Arc::new(RemovedNodes::new());
                let mut tls = match caller {
                    Caller::Node(id) => shoal_ca::client_config(&id, &ca, revoked),
                    Caller::Client(c) => c.tls_config(&ca, revoked),
                }
                .expect("test");
                tls.alpn_protocols = vec![b"h2".to_vec()];
                // Dialled by node id: the manager checks it reached that node.
                let name =
                    shoal_ca::rustls::pki_types::ServerName::try_from("worker1").expect("test");
                let channel = transport::channel(&addr, Arc::new(tls), name).expect("test");
                let mut client =
                    shoal_api::cluster::v1::task_logs_client::TaskLogsClient::new(channel);
                let mut stream = client
                    .read(ReadLogsRequest {
                        task_ids: vec!["t1".into()],
                        follow: false,
                        tail: None,
                    })
                    .await?
                    .into_inner();
                let mut lines = Vec::new();
                while let Some(l) = stream.message().await? {
                    lines.push(String::from_utf8_lossy(&l.line).into_owned());
                }
                Ok::<_, Status>(lines)
            }
        };
        let code = |r: Result<Vec<String>, Status>| r.err().map(|s| s.code());
        let manager = |id| Caller::Node(identity(&ca, id, NodeRole::Manager));
        // Before the first heartbeat, nobody.
        let early = read(manager("manager1")).await;
        assert_eq!(code(early), Some(tonic::Code::Unavailable));
        readers.set(["manager1".to_owned()]);
        let lines = read(manager("manager1")).await;
        assert_eq!(lines.expect("a manager reads"), ["hello"]);
        // A manager certificate the swarm no longer backs (demoted, removed):
        // it verifies, yet it is refused.
        let former = read(manager("manager2")).await;
        assert_eq!(code(former), Some(tonic::Code::PermissionDenied));
        let worker = read(Caller::Node(identity(&ca, "worker2", NodeRole::Worker))).await;
        assert_eq!(code(worker), Some(tonic::Code::PermissionDenied));
        // An operator's client certificate is no node at all.
        let key = shoal_ca::NodeKey::generate().expect("test");
        let cert = ca
            .issue_client(
                &key.csr().expect("test"),
                "ops",
                "c1",
                Duration::from_secs(3600),
            )
            .expect("test");
        let client = shoal_ca::ClientCert::from_pem(&cert, &key.to_pem()).expect("test");
        let client = read(Caller::Client(client)).await;
        assert_eq!(code(client), Some(tonic::Code::PermissionDenied));
        server.abort();
    }

    enum Caller {
        Node(NodeIdentity),
        Client(shoal_ca::ClientCert),
    }

    #[tokio::test]
    async fn only_managers_may_read() {
        let readers = LogReaders::default();
        readers.set(["m1".to_owned()]);
        let logs = NodeLogs::new(PathBuf::from("/nonexistent"), readers);
        let req = || ReadLogsRequest {
            task_ids: vec!["t".into()],
            follow: false,
            tail: None,
        };
        // No certificate at all (not over TLS).
        let status = logs.read(Request::new(req())).await.err().expect("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let mut anonymous = Request::new(req());
        anonymous.extensions_mut().insert(transport::PeerInfo {
            addr: SocketAddr::from(([198, 18, 0, 2], 40000)),
            identity: None,
            client: None,
        });
        let status = logs.read(anonymous).await.err().expect("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }
}
