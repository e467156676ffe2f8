//! The runc runtime inside a lab node: tasks on a bridge get their own
//! hostname, PID namespace and network, reach each other, have their output
//! logged and their exits reported, stop on request, and leave no
//! namespace, veth, mount or process behind; they cannot read the node's
//! keys, reach shoald's socket or mount anything; memory limits end in an
//! OOM kill that is reported; a task outlives its runtime and is adopted by
//! the next one. Needs root and runc; no `shoald`. The shim (`shoal-shim`)
//! must be built: `cargo build -p shoal-runtime --bins`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::LinkBridge;
use shoal_lab::{Lab, eventually, netns, run_in_netns};
use shoal_runtime::{
    Attachment, Exit, ImageDefaults, LogLine, Resources, Root, RunningTask, Runtime, RuntimeError,
    RuntimeOptions, Signal, Stream, TaskSpec, read_logs,
};

const BRIDGE: &str = "shl-br-9";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);
/// Long enough for a loaded 2-core VM, far below the tasks' `sleep 1000`.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A one-node lab (no daemon) whose node has the bridge `shl-br-9` with the
/// gateway 10.0.9.1/24, and a runtime for that node.
struct Node {
    runtime: Runtime,
    handle: rtnetlink::Handle,
    bridge: u32,
    log_dir: PathBuf,
    lab: Lab,
}

impl Node {
    async fn start(tag: &str) -> anyhow::Result<Node> {
        let lab = Lab::builder(tag).nodes(1).daemons(false).start().await?;
        let node = lab.node(1);
        let handle = netns::netlink(node.netns())?;
        handle
            .link()
            .add(LinkBridge::new(BRIDGE).build())
            .execute()
            .await?;
        let bridge = shoal_lab::link_index(&handle, node.netns(), BRIDGE).await?;
        shoal_lab::address_up(&handle, node.netns(), BRIDGE, GATEWAY, 24).await?;
        // The runtime acts in the namespace it is created in: the node's.
        let runtime = run_in_netns(node.netns(), || Node::runtime(node.state_dir()))??;
        let log_dir = node.state_dir().join("task-logs");
        Ok(Node {
            runtime,
            handle,
            bridge,
            log_dir,
            lab,
        })
    }

    /// A runtime on the node's `runtime` directory, hiding the whole node
    /// directory (as shoald hides its `--state-dir`).
    fn runtime(state_dir: &Path) -> Result<Runtime, RuntimeError> {
        let mut options = RuntimeOptions::new(state_dir.join("runtime"));
        options.hide = vec![state_dir.to_owned()];
        Runtime::with_options(options)
    }

    fn spec(&self, id: &str, host: u8, command: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            name: id.into(),
            args: command.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("GREETING".into(), "hello from env".into())],
            attachments: vec![Attachment {
                bridge: BRIDGE.into(),
                addr: Ipv4Addr::new(10, 0, 9, host),
                prefix: 24,
                gateway: Some(GATEWAY),
                mac: None,
                mtu: None,
            }],
            log_dir: self.log_dir.clone(),
            ..TaskSpec::default()
        }
    }

    async fn run(&self, id: &str, host: u8, command: &[&str]) -> anyhow::Result<RunningTask> {
        self.runtime
            .start(&self.spec(id, host, command))
            .await
            .with_context(|| format!("start {id}"))
    }

    /// Names of the bridge's ports (the tasks' host-side veths).
    async fn bridge_ports(&self) -> anyhow::Result<BTreeSet<String>> {
        let links: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(links
            .iter()
            .filter(|l| {
                l.attributes
                    .contains(&LinkAttribute::Controller(self.bridge))
            })
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    fn logs(&self, id: &str) -> anyhow::Result<Vec<LogLine>> {
        Ok(read_logs(&self.log_dir, id)?)
    }

    /// Waits until the task `id` has logged `line` on stdout.
    async fn logged(&self, id: &str, line: &str) -> anyhow::Result<()> {
        eventually(TIMEOUT, &format!("{id} to print {line:?}"), || {
            let lines = read_logs(&self.log_dir, id)?;
            Ok(lines
                .iter()
                .any(|l| l.stream == Stream::Stdout && l.text == line)
                .then_some(()))
        })
        .await?;
        Ok(())
    }
}

fn stdout(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.as_str())
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failing test may leave tasks running: they outlive the runtime.
        shoal_lab::kill_node_tasks(self.lab.node(1).state_dir());
    }
}

fn stderr(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .map(|l| l.text.as_str())
        .collect()
}

/// `task_end`, failing (rather than hanging on a `sleep 1000`) if the task
/// does not end within [`TIMEOUT`].
async fn within<T>(task_end: impl Future<Output = Result<T, RuntimeError>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(TIMEOUT, task_end)
        .await
        .with_context(|| format!("the task did not end within {TIMEOUT:?}"))??)
}

/// The inodes of a running task's network and PID namespaces.
fn namespaces(task: &RunningTask) -> anyhow::Result<(u64, u64)> {
    let ns = |kind: &str| -> anyhow::Result<u64> {
        let path = format!("/proc/{}/ns/{kind}", task.pid());
        Ok(std::fs::metadata(&path)
            .with_context(|| path.clone())?
            .ino())
    };
    Ok((ns("net")?, ns("pid")?))
}

fn proc_pids() -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect())
}

/// Everything that still holds the network namespace `inode`: a thread in
/// it, an open descriptor of it, or a bind mount of it (which is what
/// `ip netns list` would show).
fn netns_holders(inode: u64) -> anyhow::Result<Vec<String>> {
    let mut holders = Vec::new();
    let target = format!("net:[{inode}]");
    for pid in proc_pids()? {
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // exited meanwhile
        };
        for thread in threads.flatten() {
            let path = thread.path().join("ns/net");
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == inode) {
                holders.push(path.display().to_string());
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                holders.push(fd.path().display().to_string());
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    holders.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&target))
            .map(str::to_owned),
    );
    Ok(holders)
}

/// Processes in the PID namespace `inode`.
fn pidns_members(inode: u64) -> anyhow::Result<Vec<String>> {
    Ok(proc_pids()?
        .into_iter()
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == inode)
        })
        .collect())
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> anyhow::Result<Vec<String>> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    Ok(proc_pids()?
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect())
}

/// Asserts the namespaces of an ended task are gone for good.
fn assert_gone(what: &str, (net, pid): (u64, u64)) -> anyhow::Result<()> {
    let holders = netns_holders(net)?;
    ensure!(
        holders.is_empty(),
        "{what}'s netns is still held by {holders:?}"
    );
    let members = pidns_members(pid)?;
    ensure!(
        members.is_empty(),
        "{what}'s PID namespace still has {members:?}"
    );
    Ok(())
}

#[tokio::test]
async fn tasks_on_a_bridge_are_isolated_talk_and_leave_nothing_behind() -> anyhow::Result<()> {
    let node = Node::start("rt-net").await?;
    // B only has to be there to answer pings.
    let mut b_spec = node.spec("task-b", 3, &["sleep", "1000"]);
    b_spec.init = true;
    let mut b = node.runtime.start(&b_spec).await.context("start task-b")?;
    let mut a_spec = node.spec(
        "task-a",
        2,
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; read init < /proc/1/comm; echo init=$init; \
             echo \"$GREETING\"; cat /proc/net/route; \
             echo procs=$(ls /proc | grep -c '^[0-9]'); \
             ping -c1 -W5 10.0.9.3 >/dev/null && echo reached-b; \
             ping -c1 -W5 10.0.9.1 >/dev/null && echo reached-gateway; \
             echo to-stderr >&2; echo done; exec sleep 1000",
        ],
    );
    a_spec.init = true;
    let mac = [0x02, 0x42, 0x0a, 0x00, 0x09, 0x02];
    a_spec.attachments[0].mac = Some(mac);
    let mut a = node.runtime.start(&a_spec).await.context("start task-a")?;
    node.logged("task-a", "done").await?;

    // What the task saw, from its log.
    let logs = node.logs("task-a")?;
    let out = stdout(&logs);
    ensure!(
        out.first()
            .and_then(|l| l.strip_prefix("pid="))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p > 1),
        "the command runs under its init, not as PID 1: {out:?}"
    );
    ensure!(
        out.contains(&"task-a"),
        "hostname is the task name: {out:?}"
    );
    ensure!(
        out.contains(&"init=shoal-init"),
        "PID 1 is the init: {out:?}"
    );
    // init, sh, ls and grep at most: nothing of the node or of task-b.
    ensure!(
        out.iter().any(|l| l
            .strip_prefix("procs=")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 5)),
        "the task sees only its own processes: {out:?}"
    );
    ensure!(
        out.contains(&"hello from env"),
        "env reaches the task: {out:?}"
    );
    ensure!(out.contains(&"reached-b"), "task-a pings task-b: {out:?}");
    ensure!(
        out.contains(&"reached-gateway"),
        "task-a pings the gateway: {out:?}"
    );
    // /proc/net/route: Iface Destination Gateway … in little-endian hex.
    ensure!(
        out.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(..3) == Some(&["eth0", "00000000", "0109000A"][..])
        }),
        "default route via 10.0.9.1 on eth0: {out:?}"
    );
    ensure!(
        stderr(&logs) == ["to-stderr"],
        "stderr is kept apart: {logs:?}"
    );

    // What the runtime reports, and what the node sees while both run.
    ensure!(a.interfaces()[0].mac == mac, "{:?}", a.interfaces());
    let b_mac = b.interfaces()[0].mac;
    ensure!(
        b_mac[0] & 1 == 0 && b_mac != [0; 6],
        "kernel-chosen MAC {b_mac:?}"
    );
    let ports = node.bridge_ports().await?;
    let expected: BTreeSet<String> = [&a, &b]
        .iter()
        .map(|t| t.interfaces()[0].host_veth.clone())
        .collect();
    ensure!(
        ports == expected,
        "bridge ports {ports:?}, tasks' veths {expected:?}"
    );
    let (a_ns, b_ns) = (namespaces(&a)?, namespaces(&b)?);
    ensure!(a_ns != b_ns, "each task has its own namespaces");
    ensure!(
        run_in_netns(node.lab.node(1).netns(), || std::fs::metadata(
            "/proc/thread-self/ns/net"
        ))??
        .ino()
            != a_ns.0,
        "the task is not in the node's netns"
    );

    // `stop` ends `sleep` with SIGTERM, forwarded by the init, within the
    // grace; the init exits as a shell shows a killed command.
    let grace = Duration::from_secs(15);
    for (name, task) in [("task-a", &mut a), ("task-b", &mut b)] {
        let begun = Instant::now();
        let exit = within(task.stop(grace)).await?;
        ensure!(exit.shell_code() == 128 + libc::SIGTERM, "{name}: {exit}");
        ensure!(begun.elapsed() < grace, "{name} took {:?}", begun.elapsed());
    }

    let ports = node.bridge_ports().await?;
    ensure!(ports.is_empty(), "veths left on the bridge: {ports:?}");
    assert_gone("task-a", a_ns)?;
    assert_gone("task-b", b_ns)?;
    let runtime_dir = node.lab.node(1).state_dir().join("runtime");
    for dir in ["bundles/task-a", "netns/task-a"] {
        ensure!(!runtime_dir.join(dir).exists(), "{dir} left behind");
    }
    Ok(())
}

#[tokio::test]
async fn exits_and_signals_are_reported_and_stop_escalates() -> anyhow::Result<()> {
    let node = Node::start("rt-exit").await?;

    let mut three = node.run("exit-3", 2, &["sh", "-c", "exit 3"]).await?;
    let exit = within(three.wait()).await?;
    ensure!(
        exit == Exit {
            code: Some(3),
            ..Exit::default()
        },
        "{exit}"
    );
    ensure!(within(three.wait()).await? == exit, "wait is idempotent");

    // A signal from outside reaches the command through the init.
    let mut spec = node.spec("usr1", 4, &["sh", "-c", "echo ready; exec sleep 1000"]);
    spec.init = true;
    let mut usr1 = node.runtime.start(&spec).await?;
    // Until the init has blocked signals, one it has no handler for is
    // dropped (PID 1); it has once the command runs.
    node.logged("usr1", "ready").await?;
    usr1.signal(Signal::SIGUSR1)?;
    let exit = within(usr1.wait()).await?;
    ensure!(exit.shell_code() == 128 + libc::SIGUSR1, "{exit}");

    // A background process of a task dies with the task.
    let marker = ["sleep", "987654"];
    let mut parent = node
        .run("parent", 5, &["sh", "-c", "sleep 987654 & echo started"])
        .await?;
    ensure!(within(parent.wait()).await?.success());
    ensure!(stdout(&node.logs("parent")?) == ["started"]);
    let left = processes_running(&marker)?;
    ensure!(
        left.is_empty(),
        "background process outlived its task: {left:?}"
    );

    // A task that ignores SIGTERM is killed when the grace runs out.
    let mut stubborn = node
        .run(
            "stubborn",
            6,
            &["sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"],
        )
        .await?;
    node.logged("stubborn", "ready").await?;
    let stubborn_ns = namespaces(&stubborn)?;
    let grace = Duration::from_millis(500);
    let begun = Instant::now();
    let exit = within(stubborn.stop(grace)).await?;
    let took = begun.elapsed();
    ensure!(
        exit == Exit {
            signal: Some(libc::SIGKILL),
            ..Exit::default()
        },
        "{exit}"
    );
    ensure!(
        took >= grace && took < grace + TIMEOUT,
        "stop took {took:?}"
    );
    assert_gone("stubborn", stubborn_ns)?;

    // A command that does not exist fails the start, and leaves nothing.
    match node.run("missing", 7, &["/nonexistent/command"]).await {
        Err(e) => match e.downcast_ref::<RuntimeError>() {
            Some(RuntimeError::Start { message, .. })
                if message.contains("/nonexistent/command") => {}
            _ => bail!("unexpected error: {e:#}"),
        },
        Ok(_) => bail!("a missing command started"),
    }
    ensure!(
        !node
            .lab
            .node(1)
            .state_dir()
            .join("runtime/bundles/missing")
            .exists(),
        "the failed task's bundle is removed"
    );
    // So does a network that does not exist.
    let mut spec = node.spec("nobridge", 8, &["true"]);
    spec.attachments[0].bridge = "shl-br-404".into();
    match node.runtime.start(&spec).await {
        Err(RuntimeError::BridgeNotFound { bridge }) => ensure!(bridge == "shl-br-404"),
        other => bail!("expected BridgeNotFound, got {other:?}"),
    }

    let ports = node.bridge_ports().await?;
    ensure!(ports.is_empty(), "veths left on the bridge: {ports:?}");
    Ok(())
}

#[tokio::test]
async fn a_host_task_cannot_reach_the_nodes_secrets_socket_or_mounts() -> anyhow::Result<()> {
    let node = Node::start("rt-contain").await?;
    let state = node.lab.node(1).state_dir();
    let key = state.join("swarm/key.pem");
    std::fs::create_dir_all(key.parent().context("no parent")?)?;
    std::fs::write(&key, "fake key\n")?;
    let probe = format!(
        "cat {key} 2>/dev/null && echo read-key; \
         ls -d /run/shoal* 2>/dev/null && echo sees-run-shoal; \
         grep CapEff /proc/self/status; \
         mount -t tmpfs x /mnt 2>/dev/null && echo mounted; \
         unshare -m true 2>/dev/null && echo unshared; \
         touch /written 2>/dev/null && echo wrote-root; \
         echo tmp > /tmp/x && echo tmp-writable; \
         ls /sys/fs/bpf | grep -q . && echo sees-bpffs; \
         /usr/bin/python3 -c 'import ctypes; c = ctypes.CDLL(None, use_errno=True); \
         c.syscall(321, 0, 0, 0); print(\"bpf-errno\", ctypes.get_errno())'; \
         echo done",
        key = key.display()
    );
    let mut task = node.run("probe", 2, &["sh", "-c", &probe]).await?;
    let exit = within(task.wait()).await?;
    let logs = node.logs("probe")?;
    ensure!(exit.success(), "{exit}: {logs:?}");
    ensure!(
        stdout(&logs)
            == [
                "CapEff:\t00000000a80425fb",
                "tmp-writable",
                // bpf(2) refused with EPERM (seccomp, and no CAP_BPF).
                "bpf-errno 1",
                "done"
            ],
        "{logs:?}"
    );
    ensure!(!Path::new("/written").exists());
    Ok(())
}

/// A root filesystem of busybox (static) and the named applets.
fn busybox_root(root: &Path, applets: &[&str]) -> anyhow::Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("busybox-static is needed")?;
    for applet in applets {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n")?;
    std::fs::write(root.join("marker"), b"")?;
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    Ok(())
}

#[tokio::test]
async fn an_image_task_runs_in_its_own_overlay() -> anyhow::Result<()> {
    let node = Node::start("rt-image").await?;
    let lower = node.lab.node(1).state_dir().join("image");
    busybox_root(&lower, &["sh", "cat", "echo", "id", "touch", "ls", "sleep"])?;
    let volume = node.lab.node(1).state_dir().join("volume");
    std::fs::create_dir_all(&volume)?;
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut spec = node.spec("imaged", 2, &[]);
    spec.args = vec![];
    spec.user = Some("app".into());
    spec.mounts = vec![
        shoal_runtime::Mount::Volume {
            source: volume.clone(),
            target: "/data".into(),
            readonly: false,
        },
        shoal_runtime::Mount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
        },
    ];
    spec.root = Root::Image {
        lower: lower.clone(),
        config: ImageDefaults {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec![
                "echo uid=$(id -u) home=$HOME; [ -e /marker ] && echo in-image; \
                 [ -e /usr/bin/ldd ] || echo node-fs-hidden; read h < /etc/hostname; echo host=$h; \
                 touch /tmp/new && echo upper-writable; echo kept > /data/file; \
                 touch /scratch/x && echo scratch-writable; echo done"
                    .into(),
            ],
            ..ImageDefaults::default()
        },
    };
    let mut task = node.runtime.start(&spec).await.context("start imaged")?;
    let exit = within(task.wait()).await?;
    let logs = node.logs("imaged")?;
    ensure!(exit.success(), "{exit}: {logs:?}");
    ensure!(
        stdout(&logs)
            == [
                "uid=1000 home=/home/app",
                "in-image",
                "node-fs-hidden",
                "host=imaged",
                "upper-writable",
                "scratch-writable",
                "done"
            ],
        "{logs:?}"
    );
    ensure!(
        !lower.join("tmp/new").exists(),
        "the image is never written"
    );
    ensure!(
        std::fs::read_to_string(volume.join("file"))? == "kept\n",
        "the volume keeps its data"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let runtime = node
        .lab
        .node(1)
        .state_dir()
        .join("runtime")
        .display()
        .to_string();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&runtime)).collect();
    ensure!(leaked.is_empty(), "mounts left: {leaked:?}");

    // A bind whose source is missing is refused before anything starts.
    spec.id = "nosource".into();
    spec.mounts = vec![shoal_runtime::Mount::Bind {
        source: "/nonexistent/source".into(),
        target: "/x".into(),
        readonly: true,
    }];
    match node.runtime.start(&spec).await {
        Err(RuntimeError::InvalidSpec {
            field: "mounts", ..
        }) => {}
        other => bail!("expected a mounts error, got {other:?}"),
    }
    spec.mounts = vec![];

    // A user the image does not have is named.
    spec.id = "nouser".into();
    spec.user = Some("ghost".into());
    match node.runtime.start(&spec).await {
        Err(RuntimeError::InvalidSpec {
            field: "user",
            reason,
            ..
        }) => {
            ensure!(reason.contains("ghost"), "{reason}")
        }
        other => bail!("expected a user error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_oom_killed_and_reported() -> anyhow::Result<()> {
    let node = Node::start("rt-oom").await?;
    let mut spec = node.spec("hog", 2, &["sh", "-c", "head -c 64M /dev/zero | tail"]);
    spec.resources = Resources {
        memory_limit: Some(32 << 20),
        ..Resources::default()
    };
    let mut task = node.runtime.start(&spec).await.context("start hog")?;
    let exit = within(task.wait()).await?;
    ensure!(exit.oom_killed, "{exit}: {:?}", node.logs("hog")?);
    Ok(())
}

#[tokio::test]
async fn a_task_outlives_its_runtime_and_is_adopted() -> anyhow::Result<()> {
    let mut node = Node::start("rt-adopt").await?;
    let mut spec = node.spec(
        "lasting",
        2,
        &[
            "sh",
            "-c",
            "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    spec.init = true;
    let task = node.runtime.start(&spec).await.context("start lasting")?;
    let (pid, interfaces) = (task.pid(), task.interfaces().to_vec());
    // One that ends while nobody watches: its exit is kept for the next.
    let brief = node
        .run("brief", 3, &["sh", "-c", "read x < /etc/hostname; exit 7"])
        .await?;
    let brief_shim = brief.shim_pid();
    node.logged("lasting", "tick 1").await?;
    // shoald dies: its runtime and handles are gone, the task is not.
    drop(task);
    drop(brief);
    // Gone, or a zombie of this process (shoald's death would re-parent it).
    eventually(TIMEOUT, "brief's shim to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{brief_shim}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        Ok(matches!(state, None | Some("Z")).then_some(()))
    })
    .await?;
    let netns = node.lab.node(1).netns().to_owned();
    let state = node.lab.node(1).state_dir().to_owned();
    node.runtime = run_in_netns(&netns, || Node::runtime(&state))??;
    let ticks = node.logs("lasting")?.len();

    let adopted = node.runtime.adopt().await?;
    ensure!(
        adopted.ended
            == [(
                "brief".to_owned(),
                Some(Exit {
                    code: Some(7),
                    ..Exit::default()
                })
            )],
        "{:?}",
        adopted.ended
    );
    let [mut task] = <[RunningTask; 1]>::try_from(adopted.running)
        .map_err(|t| anyhow::anyhow!("adopted {} tasks", t.len()))?;
    ensure!(task.id() == "lasting" && task.pid() == pid);
    ensure!(task.interfaces() == interfaces, "{:?}", task.interfaces());
    ensure!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "still running"
    );
    let more = format!("tick {}", ticks + 5);
    node.logged("lasting", &more).await?;
    let exit = within(task.stop(Duration::from_secs(10))).await?;
    ensure!(exit.shell_code() == 128 + libc::SIGTERM, "{exit}");
    ensure!(node.bridge_ports().await?.is_empty());
    let adopted = node.runtime.adopt().await?;
    ensure!(adopted.running.is_empty() && adopted.ended.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_task_reads_the_resolv_conf_it_is_given() -> anyhow::Result<()> {
    let node = Node::start("rt-resolv").await?;
    let state = node.lab.node(1).state_dir();
    let conf = state.join("task-resolv.conf");
    std::fs::write(&conf, "nameserver 127.0.0.11\noptions ndots:0\n")?;
    let node_before = std::fs::read("/etc/resolv.conf")?;
    let print = [
        "sh",
        "-c",
        "while read l; do echo \"$l\"; done < /etc/resolv.conf",
    ];
    let mut spec = node.spec("resolv-node", 2, &print);
    spec.resolv_conf = Some(conf.clone());
    let mut task = node.runtime.start(&spec).await.context("start")?;
    let exit = within(task.wait()).await?;
    let logs = node.logs("resolv-node")?;
    ensure!(exit.success(), "{exit}: {logs:?}");
    ensure!(
        stdout(&logs) == ["nameserver 127.0.0.11", "options ndots:0"],
        "{logs:?}"
    );
    ensure!(
        std::fs::read("/etc/resolv.conf")? == node_before,
        "the node's resolv.conf is untouched"
    );
    ensure!(node.bridge_ports().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_task_resolves_services_through_127_0_0_11_from_its_first_instruction()
-> anyhow::Result<()> {
    let node = Node::start("rt-dns").await?;
    // No upstreams: names not in the table get SERVFAIL, and nothing
    // leaves the node.
    let resolver = shoal_dns::Resolver::new(vec![]);
    let vip = Ipv4Addr::new(10, 0, 9, 50);
    let tasks = [Ipv4Addr::new(10, 0, 9, 51), Ipv4Addr::new(10, 0, 9, 52)];
    let names = shoal_dns::service_names("web", Some(vip), &tasks);
    resolver.set_names("net-9", names.into_iter().collect());
    let conf = node.lab.node(1).state_dir().join("dns-resolv.conf");
    std::fs::write(&conf, shoal_dns::task_resolv_conf(""))?;

    // The command resolves at once: the resolver must already be there.
    let mut spec = node.spec(
        "resolver",
        2,
        &[
            "sh",
            "-c",
            "getent ahostsv4 web; getent ahostsv4 tasks.web; \
             getent ahostsv4 elsewhere.invalid || echo unresolved",
        ],
    );
    spec.resolv_conf = Some(conf);
    let mut served = None;
    let mut task = node
        .runtime
        .start_with(&spec, |netns| {
            served = Some(resolver.serve_task_fd(netns, "resolver", vec!["net-9".into()])?);
            Ok(())
        })
        .await
        .context("start")?;
    let exit = within(task.wait()).await?;
    drop(served);
    let logs = node.logs("resolver")?;
    ensure!(exit.success(), "{exit}: {logs:?}");
    // getent prints one line per socket type and address.
    let addrs: BTreeSet<&str> = stdout(&logs)
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        addrs == BTreeSet::from(["10.0.9.50", "10.0.9.51", "10.0.9.52", "unresolved"]),
        "{logs:?}"
    );
    Ok(())
}

/// `sha256sum`'s hex digest of `data`, from the node's own `sha256sum`.
fn sha256_hex(data: &[u8]) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .context("no digest")?
        .to_owned())
}

/// Mountinfo lines of the staging tmpfs (by its source name) in `pid`'s
/// mount namespace.
fn task_files_mounts(pid: &str) -> anyhow::Result<Vec<String>> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let marker = format!(" - tmpfs {} ", shoal_runtime::files::TMPFS_SOURCE);
    Ok(info
        .lines()
        .filter(|l| l.contains(&marker))
        .map(str::to_owned)
        .collect())
}

/// `nsenter` into the task's mount and PID namespaces as `uid:gid`.
fn in_task(task: &RunningTask, uid: u32, gid: u32, script: &str) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &task.pid().to_string(), "-m", "-p"])
        .args(["-S", &uid.to_string(), "-G", &gid.to_string()])
        .args(["--", "sh", "-c", script])
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn a_tasks_secrets_live_on_its_own_tmpfs_only_and_go_with_it() -> anyhow::Result<()> {
    use shoal_runtime::TaskFile;
    let node = Node::start("rt-files").await?;
    let secret = b"correct horse battery staple".to_vec();
    let config = b"listen = 80\n".to_vec();
    // The task reads its files only once the test says the staging is gone.
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; \
                  sha256sum /run/secrets/db_pass /run/secrets/alias /run/app.conf; \
                  stat -c '%n %a %u:%g' /run/secrets /run/secrets/db_pass /run/secrets/alias \
                  /run/app.conf; \
                  echo done; exec sleep 1000";
    let mut spec = node.spec("holder", 2, &["sh", "-c", script]);
    spec.files = vec![
        TaskFile {
            target: "/run/secrets/db_pass".into(),
            uid: 1000,
            gid: 1001,
            mode: 0o400,
            data: secret.clone(),
        },
        TaskFile {
            target: "/run/secrets/alias".into(),
            uid: 0,
            gid: 0,
            mode: 0o444,
            data: secret.clone(),
        },
        TaskFile {
            target: "/run/app.conf".into(),
            uid: 0,
            gid: 1001,
            mode: 0o440,
            data: config.clone(),
        },
    ];
    let mut holder = node.runtime.start(&spec).await.context("start holder")?;
    // Started: the staging is off the node, the tmpfs only in the task.
    let runtime_dir = node.runtime.state_dir().to_owned();
    let staging = runtime_dir.join("files").join("holder");
    ensure!(!staging.exists(), "{} is still there", staging.display());
    ensure!(
        task_files_mounts("self")?.is_empty(),
        "staging mounted on the node"
    );
    let in_holder = task_files_mounts(&holder.pid().to_string())?;
    ensure!(in_holder.len() == 2, "the task's mounts: {in_holder:?}");
    let (ok, _) = in_task(&holder, 0, 0, "touch /tmp/go")?;
    ensure!(ok, "could not signal the task");
    node.logged("holder", "done").await?;
    let logs = node.logs("holder")?;
    let (s, c) = (sha256_hex(&secret)?, sha256_hex(&config)?);
    ensure!(
        stdout(&logs)
            == [
                format!("{s}  /run/secrets/db_pass").as_str(),
                &format!("{s}  /run/secrets/alias"),
                &format!("{c}  /run/app.conf"),
                "/run/secrets 755 0:0",
                "/run/secrets/db_pass 400 1000:1001",
                "/run/secrets/alias 444 0:0",
                "/run/app.conf 440 0:1001",
                "done",
            ],
        "{logs:?}"
    );
    // The mode means what it says: uid 1000 reads its secret, 1002 cannot,
    // and nobody can write or add files.
    let (ok, out) = in_task(&holder, 1000, 1001, "cat /run/secrets/db_pass")?;
    ensure!(
        ok && out.as_bytes() == secret,
        "uid 1000 could not read: {out}"
    );
    let (ok, _) = in_task(&holder, 1002, 1002, "cat /run/secrets/db_pass")?;
    ensure!(!ok, "uid 1002 read a 0400 secret of uid 1000");
    let (ok, _) = in_task(
        &holder,
        0,
        0,
        "echo x > /run/secrets/new || echo x >> /run/app.conf",
    )?;
    ensure!(!ok, "root in the task wrote to its read-only files");
    // Nothing of the data on the node's disk: not in the bundle, not in
    // the log.
    let config_json = std::fs::read(runtime_dir.join("bundles/holder/config.json"))?;
    let log = std::fs::read(node.log_dir.join("holder.log"))?;
    for (what, bytes) in [("config.json", &config_json), ("the log", &log)] {
        ensure!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "the secret is in {what}"
        );
    }
    // Another task on the node sees none of it.
    let probe = format!(
        "cat /run/secrets/db_pass 2>/dev/null && echo read-secret; \
         ls /run/secrets 2>/dev/null && echo sees-secrets; \
         ls {} 2>/dev/null | grep -q . && echo sees-staging; \
         grep -q {} /proc/self/mountinfo && echo sees-tmpfs; echo done",
        runtime_dir.join("files").display(),
        shoal_runtime::files::TMPFS_SOURCE,
    );
    let mut other = node.run("other", 3, &["sh", "-c", &probe]).await?;
    let exit = within(other.wait()).await?;
    let logs = node.logs("other")?;
    ensure!(
        exit.success() && stdout(&logs) == ["done"],
        "{exit}: {logs:?}"
    );
    // Stopped: no mount of its tmpfs is left anywhere this test can see.
    within(holder.stop(Duration::from_secs(5))).await?;
    ensure!(task_files_mounts("self")?.is_empty());
    ensure!(!staging.exists());
    Ok(())
}
