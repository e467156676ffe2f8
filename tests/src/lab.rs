//! `Lab`: nodes (namespaces on an underlay bridge, each running `shoald`),
//! an optional client namespace, and their removal.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::daemon::{self, DaemonSpec, LOG_TAIL_LINES};
use crate::record::{self, LabRecord, PID_FILE, POLL, ProcId, io_err};
use crate::{LabError, netns, sweep_stale, underlay};

/// Most nodes a lab can have (addresses 198.18.0.1 to .200; .250 is the client).
pub const MAX_NODES: usize = 200;
/// Longest lab name; keeps `/run/shoal-lab/<lab>/nK/shoald.sock` far below
/// the 108-byte limit of a unix socket path.
pub const MAX_NAME_LEN: usize = 40;
/// Environment variable through which the `shoal` CLI finds its daemon.
pub const SHOAL_HOST_ENV: &str = "SHOAL_HOST";
/// How long a daemon gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Configures a lab; see [`Lab::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LabBuilder {
    tag: String,
    name: Option<String>,
    nodes: usize,
    managers: usize,
    client: bool,
    persistent: bool,
    daemons: bool,
    shoald: Option<PathBuf>,
    shoald_args: Vec<String>,
    ready_timeout: Duration,
}

/// A running daemon: our child, or (for a reopened lab) a recorded process.
#[derive(Debug)]
enum Daemon {
    Child(Child),
    Recorded(ProcId),
}

/// One node of a lab: namespace `shoal-<lab>-nK` at 198.18.0.K.
#[derive(Debug)]
pub struct Node {
    index: usize,
    name: String,
    netns: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    daemon: Mutex<Option<Daemon>>,
}

/// A lab of nodes on an underlay bridge.
///
/// A non-persistent lab (tests) is removed when dropped, panic or not: its
/// daemons are killed and reaped, its namespaces deleted, its directory
/// removed; during a panic each node's log tail is printed first. If the
/// process dies without unwinding, the next lab creation (or
/// [`sweep_stale`]) removes it. A persistent lab (`cargo xtask lab`) stays
/// until [`Lab::down`].
#[derive(Debug)]
pub struct Lab {
    record: LabRecord,
    dir: PathBuf,
    nodes: Vec<Node>,
    ready_timeout: Duration,
    /// The daemon the builder was given ([`LabBuilder::shoald`]), which a
    /// restart must run again; `None` = the workspace's build.
    shoald: Option<PathBuf>,
    /// More flags for every daemon ([`LabBuilder::shoald_args`]).
    shoald_args: Vec<String>,
    /// Remove on drop: a non-persistent lab this value created.
    remove_on_drop: bool,
}

fn sanitize_tag(tag: &str) -> String {
    let clean: String = tag
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(12)
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        "lab".to_owned()
    } else {
        clean.to_owned()
    }
}

/// Lab names become namespace and path components: `[a-z0-9-]`, starting
/// with a letter or digit, at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Config {
            reason: format!(
                "lab name {name:?}: use 1 to {MAX_NAME_LEN} of a-z, 0-9 and '-', not starting with '-'"
            ),
        })
    }
}

impl LabBuilder {
    /// Number of nodes, 1 to [`MAX_NODES`] (default 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Number of manager nodes (default 1). Recorded for the control plane;
    /// nodes n1..nM are the managers.
    pub fn managers(mut self, managers: usize) -> Self {
        self.managers = managers;
        self
    }

    /// Also create the client namespace `shoal-<lab>-client` at
    /// 198.18.0.250, on the underlay but not a node (default false).
    pub fn client(mut self, client: bool) -> Self {
        self.client = client;
        self
    }

    /// Keep the lab after this process exits, until [`Lab::down`] (default
    /// false). Persistent daemons are detached (own session) instead of
    /// dying with their parent.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Use exactly this lab name instead of a unique `<tag>-<pid>-<n>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Start a `shoald` on every node (default true). Without, a lab is only
    /// the network, for tests of the wiring itself.
    pub fn daemons(mut self, daemons: bool) -> Self {
        self.daemons = daemons;
        self
    }

    /// The `shoald` binary to run (default: [`shoald_path`](crate::shoald_path)).
    pub fn shoald(mut self, binary: impl Into<PathBuf>) -> Self {
        self.shoald = Some(binary.into());
        self
    }

    /// More flags for every `shoald` (hidden test knobs such as a short key
    /// rotation); kept for restarts.
    pub fn shoald_args(mut self, args: &[&str]) -> Self {
        self.shoald_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// How long each daemon may take to accept on its socket (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn lab_name(&self) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        match &self.name {
            Some(name) => name.clone(),
            None => format!(
                "{}-{}-{}",
                sanitize_tag(&self.tag),
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// Sweeps stale labs, then creates the lab and waits until every daemon
    /// is ready. On failure, whatever was created is removed again.
    ///
    /// Must run inside a tokio runtime with IO and time enabled. Test daemons
    /// get SIGKILL when the thread that started them exits, so call this from
    /// the test's runtime, not from `spawn_blocking`.
    pub async fn start(self) -> Result<Lab, LabError> {
        let name = self.lab_name();
        validate_name(&name)?;
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(LabError::Config {
                reason: format!("{} nodes: a lab has 1 to {MAX_NODES}", self.nodes),
            });
        }
        if self.managers > self.nodes {
            return Err(LabError::Config {
                reason: format!("{} managers but only {} nodes", self.managers, self.nodes),
            });
        }
        // Fail before creating anything if the daemon cannot be found.
        let shoald = match (self.daemons, self.shoald) {
            (false, _) => None,
            (true, Some(binary)) if binary.is_file() => Some(binary),
            (true, Some(binary)) => {
                return Err(LabError::DaemonBinary {
                    searched: vec![binary],
                });
            }
            (true, None) => Some(daemon::shoald_path()?),
        };
        sweep_stale()?;
        let record = LabRecord {
            name,
            nodes: self.nodes,
            managers: self.managers,
            client: self.client,
            persistent: self.persistent,
        };
        let dir = record.create_dir()?;
        let mut lab = Lab::from_record(record, dir, self.ready_timeout, !self.persistent);
        lab.shoald = shoald.clone();
        lab.shoald_args = self.shoald_args;
        match lab.build(shoald.as_deref()).await {
            Ok(()) => Ok(lab),
            Err(e) => {
                let mut lab = lab;
                lab.remove_on_drop = false;
                if let Err(cleanup) = lab.remove() {
                    eprintln!(
                        "shoal-lab: cleanup of {} after a failed start: {cleanup}",
                        lab.name()
                    );
                }
                Err(e)
            }
        }
    }
}

impl Node {
    /// `nK`: the node's name, its hostname inside its UTS namespace, and the
    /// underlay-side veth's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// K (1-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The named network namespace, `shoal-<lab>-nK`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Underlay address of `eth0`, 198.18.0.K.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `SHOAL_HOST` value for the CLI to talk to this node's daemon.
    pub fn shoal_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The daemon's stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The daemon's `--state-dir`, `/run/shoal-lab/<lab>/nK`.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    fn daemon(&self) -> MutexGuard<'_, Option<Daemon>> {
        self.daemon
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pid of the daemon, if it is running.
    pub fn pid(&self) -> Option<u32> {
        let mut daemon = self.daemon();
        let running = match daemon.as_mut()? {
            Daemon::Child(child) => matches!(child.try_wait(), Ok(None)).then(|| child.id()),
            Daemon::Recorded(proc) => proc.alive().then(|| proc.pid.unsigned_abs()),
        };
        if running.is_none() {
            *daemon = None;
        }
        running
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            // ESRCH: it exited meanwhile, which is what we want anyway.
            let _already_gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after `grace`) and the
    /// node's tasks, blocking.
    fn kill(&self, grace: Duration) -> Result<(), LabError> {
        self.stop_daemon(grace)?;
        // Its tasks outlive it (live restore); a stopped lab node has none.
        crate::tasks::kill_node_tasks(&self.dir);
        Ok(())
    }

    /// Stops the daemon only (SIGTERM, then SIGKILL after `grace`); its
    /// tasks keep running.
    fn stop_daemon(&self, grace: Duration) -> Result<(), LabError> {
        let taken = self.daemon().take();
        match taken {
            Some(Daemon::Child(mut child)) => daemon::terminate_child(&mut child, grace)?,
            Some(Daemon::Recorded(proc)) => proc.terminate(grace)?,
            None => {}
        }
        let pid_file = self.dir.join(PID_FILE);
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(&pid_file, "remove")(e))
            }
            _ => Ok(()),
        }
    }

    fn spawn(&self, shoald: &Path, persistent: bool, args: &[String]) -> Result<(), LabError> {
        let child = daemon::spawn(
            shoald,
            &DaemonSpec {
                args,
                node: &self.name,
                netns: &self.netns,
                dir: &self.dir,
                socket: &self.socket,
                log: &self.log,
                persistent,
            },
        )?;
        // Recorded before readiness, so a sweep finds it even if we die now.
        let recorded = ProcId::of(child.id()).map(|proc| proc.write(&self.dir.join(PID_FILE)));
        *self.daemon() = Some(Daemon::Child(child));
        recorded.unwrap_or(Ok(()))
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            // The guard is dropped before the await below.
            let exited = match self.daemon().as_mut() {
                Some(Daemon::Child(child)) => child.try_wait().ok().flatten(),
                _ => None,
            };
            if let Some(status) = exited {
                return Err(LabError::Daemon {
                    node: self.name.clone(),
                    status,
                    log_tail: daemon::log_tail(&self.log, LOG_TAIL_LINES),
                });
            }
            if started.elapsed() > timeout {
                return Err(LabError::DaemonTimeout {
                    node: self.name.clone(),
                    waited: timeout,
                    log_tail: daemon::log_tail(&self.log, LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Lab {
    /// Starts configuring a lab whose name will be `<tag>-<pid>-<n>`.
    pub fn builder(tag: &str) -> LabBuilder {
        LabBuilder {
            tag: tag.to_owned(),
            name: None,
            nodes: 3,
            managers: 1,
            client: false,
            persistent: false,
            daemons: true,
            shoald: None,
            shoald_args: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// Reattaches to an existing lab from its `lab.json` (e.g. a persistent
    /// lab made by `cargo xtask lab up`, or a test's lab to look at). The
    /// value does not own the lab: dropping it removes nothing.
    pub fn open(name: &str) -> Result<Lab, LabError> {
        validate_name(name)?;
        let record = LabRecord::read(name)?;
        let dir = record::lab_dir(name);
        let lab = Lab::from_record(record, dir, Duration::from_secs(30), false);
        for node in &lab.nodes {
            if let Some(proc) = ProcId::read(&node.dir.join(PID_FILE))?
                && proc.alive()
            {
                *node.daemon() = Some(Daemon::Recorded(proc));
            }
        }
        Ok(lab)
    }

    /// Whether a lab named `name` exists (has a directory).
    pub fn exists(name: &str) -> bool {
        record::lab_dir(name).exists()
    }

    fn from_record(record: LabRecord, dir: PathBuf, ready_timeout: Duration, owned: bool) -> Lab {
        let nodes = (1..=record.nodes)
            .map(|k| {
                let node_dir = dir.join(format!("n{k}"));
                Node {
                    index: k,
                    name: format!("n{k}"),
                    netns: format!("shoal-{}-n{k}", record.name),
                    addr: underlay::node_addr(k),
                    socket: node_dir.join("shoald.sock"),
                    log: node_dir.join("shoald.log"),
                    dir: node_dir,
                    daemon: Mutex::new(None),
                }
            })
            .collect();
        Lab {
            record,
            dir,
            nodes,
            ready_timeout,
            shoald: None,
            shoald_args: Vec::new(),
            remove_on_drop: owned,
        }
    }

    async fn build(&self, shoald: Option<&Path>) -> Result<(), LabError> {
        let ul = self.underlay_netns();
        netns::create(&ul)?;
        let ul_handle = netns::netlink(&ul)?;
        underlay::create_bridge(&ul_handle, &ul).await?;
        for node in &self.nodes {
            netns::create(&node.netns)?;
            std::fs::create_dir_all(&node.dir).map_err(io_err(&node.dir, "create"))?;
            underlay::attach(&ul_handle, &ul, &node.name, &node.netns, node.addr).await?;
        }
        if let Some(client) = self.client_netns() {
            netns::create(&client)?;
            underlay::attach(&ul_handle, &ul, "client", &client, underlay::CLIENT_ADDR).await?;
        }
        if let Some(shoald) = shoald {
            // All daemons start together; then each is waited for in turn.
            for node in &self.nodes {
                node.spawn(shoald, self.record.persistent, &self.shoald_args)?;
            }
            for node in &self.nodes {
                node.wait_ready(self.ready_timeout).await?;
            }
        }
        Ok(())
    }

    /// The lab's name (the `<lab>` in namespace names and paths).
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// `/run/shoal-lab/<lab>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the lab outlives its creator.
    pub fn persistent(&self) -> bool {
        self.record.persistent
    }

    /// Number of manager nodes requested (n1..nM).
    pub fn managers(&self) -> usize {
        self.record.managers
    }

    /// All nodes, n1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `k` (1-based), if the lab has it.
    pub fn get(&self, k: usize) -> Option<&Node> {
        k.checked_sub(1).and_then(|i| self.nodes.get(i))
    }

    /// Node `k` (1-based).
    ///
    /// # Panics
    /// If the lab has no node `k`.
    pub fn node(&self, k: usize) -> &Node {
        match self.get(k) {
            Some(node) => node,
            None => panic!(
                "lab {} has no node {k} (it has {})",
                self.name(),
                self.nodes.len()
            ),
        }
    }

    fn try_node(&self, k: usize) -> Result<&Node, LabError> {
        self.get(k).ok_or_else(|| LabError::NoSuchNode {
            lab: self.name().to_owned(),
            node: format!("n{k}"),
        })
    }

    /// The namespace that holds the bridge, `shoal-<lab>-ul`.
    pub fn underlay_netns(&self) -> String {
        format!("shoal-{}-ul", self.name())
    }

    /// The client namespace, `shoal-<lab>-client`, if the lab has one.
    pub fn client_netns(&self) -> Option<String> {
        self.record
            .client
            .then(|| format!("shoal-{}-client", self.name()))
    }

    /// The client's underlay address.
    pub fn client_addr(&self) -> Ipv4Addr {
        underlay::CLIENT_ADDR
    }

    /// A command that runs `program` inside node `k`'s namespace (hostname
    /// `nK`), with `SHOAL_HOST` set so the `shoal` CLI talks to node `k`'s
    /// daemon.
    ///
    /// # Panics
    /// If the lab has no node `k`.
    pub fn command(&self, k: usize, program: impl AsRef<OsStr>) -> Command {
        let node = self.node(k);
        let mut command = daemon::command_in(&node.netns, &node.name, program.as_ref());
        command.env(SHOAL_HOST_ENV, node.shoal_host());
        command
    }

    /// A command that runs `program` inside the client namespace (hostname
    /// `client`).
    ///
    /// # Panics
    /// If the lab was built without `.client(true)`.
    pub fn client_command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.client_netns() {
            Some(netns) => daemon::command_in(&netns, "client", program.as_ref()),
            None => panic!("lab {} was built without .client(true)", self.name()),
        }
    }

    /// Stops node `k`'s daemon (SIGTERM, SIGKILL after 2 s); a stopped
    /// daemon is not an error.
    pub async fn stop(&self, k: usize) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        node.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while node.pid().is_some() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        // SIGKILLs a daemon that ignored SIGTERM, reaps, forgets its pid file.
        node.kill(Duration::ZERO)
    }

    /// Restarts node `k`'s daemon (SIGTERM, then a new one, ready) and
    /// leaves its tasks running: the new daemon takes them back.
    pub async fn restart(&self, k: usize) -> Result<(), LabError> {
        self.stop_daemon(k).await?;
        self.start(k).await
    }

    /// Stops node `k`'s daemon only (SIGTERM, SIGKILL after 2 s): its
    /// tasks keep running, as docker's live restore keeps containers, and
    /// the next [`Lab::start`] takes them back.
    pub async fn stop_daemon(&self, k: usize) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        node.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while node.pid().is_some() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        node.stop_daemon(Duration::ZERO)
    }

    /// Kills node `k`'s daemon with SIGKILL at once: a crash, with no chance
    /// to flush or say goodbye.
    pub async fn kill(&self, k: usize) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        node.signal(Signal::SIGKILL);
        // Reaps it and forgets its pid file.
        node.kill(Duration::ZERO)
    }

    /// Starts node `k`'s daemon and waits until it is ready; an already
    /// running daemon is left alone.
    pub async fn start(&self, k: usize) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        if node.pid().is_some() {
            return Ok(());
        }
        // The builder's binary again: a bench of release daemons must not
        // come back as the workspace's debug build.
        let shoald = match &self.shoald {
            Some(binary) => binary.clone(),
            None => daemon::shoald_path()?,
        };
        node.spawn(&shoald, self.record.persistent, &self.shoald_args)?;
        if let Err(e) = node.wait_ready(self.ready_timeout).await {
            let _already_reported = node.kill(Duration::ZERO);
            return Err(e);
        }
        Ok(())
    }

    /// Cuts node `k` off the underlay: its bridge port `nK` goes down.
    pub async fn cut(&self, k: usize) -> Result<(), LabError> {
        self.set_port(k, false).await
    }

    /// Gives node `k`'s `eth0` one more underlay address (in 198.18.0.0/24,
    /// not a node's): a second source for a caller that needs more 4-tuples
    /// than one address holds, as `shoal bench --source` does.
    pub async fn add_address(&self, k: usize, addr: Ipv4Addr) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        let handle = netns::netlink(&node.netns)?;
        underlay::address_up(
            &handle,
            &node.netns,
            underlay::DATA_IFACE,
            addr,
            underlay::PREFIX_LEN,
        )
        .await
    }

    /// Reconnects node `k` after [`Lab::cut`].
    pub async fn heal(&self, k: usize) -> Result<(), LabError> {
        self.set_port(k, true).await
    }

    async fn set_port(&self, k: usize, up: bool) -> Result<(), LabError> {
        let node = self.try_node(k)?;
        let ul = self.underlay_netns();
        let handle = netns::netlink(&ul)?;
        underlay::set_link_up(&handle, &ul, &node.name, up).await
    }

    /// Removes the lab (persistent or not): daemons, namespaces, directory.
    pub fn down(mut self) -> Result<(), LabError> {
        self.remove_on_drop = false;
        self.remove()
    }

    fn remove(&self) -> Result<(), LabError> {
        // Stopped in parallel: each may take the whole grace period.
        let stopped: Vec<Result<(), LabError>> = std::thread::scope(|scope| {
            let waiters: Vec<_> = self
                .nodes
                .iter()
                .map(|node| scope.spawn(move || node.kill(STOP_GRACE)))
                .collect();
            waiters
                .into_iter()
                .map(|w| w.join().unwrap_or(Ok(())))
                .collect()
        });
        // Also removes daemons started by other processes (recorded only).
        let removed = record::remove_lab(self.name(), STOP_GRACE);
        stopped.into_iter().chain([removed]).collect()
    }

    /// The end of every node's log, on stderr (also on a panicking test).
    /// What a failed traffic check needs: every node's mesh counters (why
    /// packets were dropped, flows per service) and the end of its log.
    pub fn print_diagnostics(&self) {
        for k in 1..=self.nodes.len() {
            match self.shoal(k, &["node", "stats"]) {
                Ok(out) => eprintln!("---- lab {}: n{k} node stats ----\n{out}", self.name()),
                Err(e) => eprintln!("---- lab {}: n{k} node stats: {e}", self.name()),
            }
        }
        self.print_log_tails();
    }

    pub fn print_log_tails(&self) {
        for node in &self.nodes {
            if node.log.exists() {
                eprintln!(
                    "---- lab {}: {} shoald.log (last {LOG_TAIL_LINES} lines) ----\n{}",
                    self.name(),
                    node.name,
                    daemon::log_tail(&node.log, LOG_TAIL_LINES)
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        if std::thread::panicking() {
            self.print_log_tails();
        }
        if let Err(e) = self.remove() {
            eprintln!("shoal-lab: removing lab {}: {e}", self.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_valid_unique_names() {
        assert_eq!(sanitize_tag("Basic_Test"), "basic-test");
        assert_eq!(sanitize_tag("--"), "lab");
        let name = Lab::builder("lab_basic/three nodes").lab_name();
        validate_name(&name).expect("generated names are valid");
        assert_ne!(name, Lab::builder("lab_basic/three nodes").lab_name());
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "-x", "UP", "a/b", "a b", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        validate_name("lab").expect("default xtask name");
    }
}
