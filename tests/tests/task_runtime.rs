//! The exec runtime inside a lab node: tasks on a bridge get their own
//! hostname, PID namespace and network, reach each other, have their output
//! logged and their exits reported, stop on request, and leave no
//! namespace, veth, mount or process behind. Needs root; no `shoald`.

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
    Attachment, Exit, LogLine, RunningTask, Runtime, RuntimeError, Signal, Stream, TaskSpec,
    read_logs,
};

const BRIDGE: &str = "shl-br-9";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);
/// Long enough for a loaded 2-core VM, far below the tasks' `sleep 1000`.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A one-node lab (no daemon) whose node has the bridge `shl-br-9` with the
/// gateway 10.0.9.1/24, and a runtime for that node.
struct Node {
    // Dropped first: kills whatever task a failing test left running.
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
        let runtime = run_in_netns(node.netns(), Runtime::new)??;
        let log_dir = node.state_dir().join("task-logs");
        Ok(Node {
            runtime,
            handle,
            bridge,
            log_dir,
            lab,
        })
    }

    fn spec(&self, id: &str, host: u8, command: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            name: id.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("GREETING".into(), "hello from env".into())],
            attachments: vec![Attachment {
                bridge: BRIDGE.into(),
                addr: Ipv4Addr::new(10, 0, 9, host),
                prefix: 24,
                gateway: Some(GATEWAY),
                mac: None,
                mtu: None,
            }],
            rootfs: None,
            resolv_conf: None,
            log_dir: self.log_dir.clone(),
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
    let mut b = node.run("task-b", 3, &["sleep", "1000"]).await?;
    let mut a_spec = node.spec(
        "task-a",
        2,
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; read init < /proc/1/comm; echo init=$init; \
             echo \"$GREETING\"; cat /proc/net/route; \
             ping -c1 -W5 10.0.9.3 >/dev/null && echo reached-b; \
             ping -c1 -W5 10.0.9.1 >/dev/null && echo reached-gateway; \
             echo to-stderr >&2; echo done; exec sleep 1000",
        ],
    );
    let mac = [0x02, 0x42, 0x0a, 0x00, 0x09, 0x02];
    a_spec.attachments[0].mac = Some(mac);
    let mut a = node.runtime.start(&a_spec).await.context("start task-a")?;
    node.logged("task-a", "done").await?;

    // What the task saw, from its log.
    let logs = node.logs("task-a")?;
    let out = stdout(&logs);
    ensure!(
        out.first() == Some(&"pid=2"),
        "the command is PID 2, under its init: {out:?}"
    );
    ensure!(
        out.contains(&"task-a"),
        "hostname is the task name: {out:?}"
    );
    ensure!(
        out.contains(&"init=shoal-init"),
        "PID 1 is the init: {out:?}"
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

    // `stop` ends `sleep` with SIGTERM, forwarded by the init, within the grace.
    let grace = Duration::from_secs(15);
    for (name, task) in [("task-a", &mut a), ("task-b", &mut b)] {
        let begun = Instant::now();
        let exit = within(task.stop(grace)).await?;
        ensure!(
            exit == Exit {
                code: None,
                signal: Some(libc::SIGTERM)
            },
            "{name}: {exit}"
        );
        ensure!(begun.elapsed() < grace, "{name} took {:?}", begun.elapsed());
    }

    let ports = node.bridge_ports().await?;
    ensure!(ports.is_empty(), "veths left on the bridge: {ports:?}");
    assert_gone("task-a", a_ns)?;
    assert_gone("task-b", b_ns)?;
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
            signal: None
        },
        "{exit}"
    );
    ensure!(within(three.wait()).await? == exit, "wait is idempotent");

    // Killed from inside: the init reports the signal, not its own exit.
    let mut suicide = node
        .run("self-kill", 3, &["sh", "-c", "kill -KILL $$"])
        .await?;
    let exit = within(suicide.wait()).await?;
    ensure!(
        exit == Exit {
            code: None,
            signal: Some(libc::SIGKILL)
        },
        "{exit}"
    );

    // Killed from outside: the init forwards the signal.
    let mut usr1 = node.run("usr1", 4, &["sleep", "1000"]).await?;
    usr1.signal(Signal::SIGUSR1)?;
    let exit = within(usr1.wait()).await?;
    ensure!(
        exit == Exit {
            code: None,
            signal: Some(libc::SIGUSR1)
        },
        "{exit}"
    );

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
            code: None,
            signal: Some(libc::SIGKILL)
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
            Some(RuntimeError::Exec { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            _ => bail!("unexpected error: {e:#}"),
        },
        Ok(_) => bail!("a missing command started"),
    }
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

/// Copies `binary` and the shared libraries it loads (as `ldd` lists them)
/// into `root`, at the same paths.
fn install_binary(root: &Path, binary: &Path, at: &str) -> anyhow::Result<()> {
    let ldd = std::process::Command::new("ldd").arg(binary).output()?;
    ensure!(ldd.status.success(), "ldd {}: {ldd:?}", binary.display());
    let libs = String::from_utf8(ldd.stdout)?
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    for source in libs.iter().map(PathBuf::as_path).chain([binary]) {
        let target = match source == binary {
            true => root.join(at.trim_start_matches('/')),
            false => root.join(source.strip_prefix("/")?),
        };
        std::fs::create_dir_all(target.parent().context("no parent")?)?;
        std::fs::copy(source, &target)
            .with_context(|| format!("copy {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_task_pivots_into_its_rootfs() -> anyhow::Result<()> {
    let node = Node::start("rt-rootfs").await?;
    let root = node.lab.node(1).state_dir().join("rootfs");
    install_binary(&root, Path::new("/bin/sh"), "/bin/sh")?;
    install_binary(&root, Path::new("/usr/bin/sleep"), "/bin/sleep")?;
    std::fs::write(root.join("marker"), b"")?;

    let mut spec = node.spec(
        "rooted",
        2,
        &[
            "sh",
            "-c",
            "echo pid=$$; read h < /proc/sys/kernel/hostname; echo host=$h; \
             read c < /proc/1/comm; echo init=$c; \
             [ -e /marker ] && echo in-rootfs; [ -e /usr/bin/ldd ] || echo node-fs-hidden; \
             echo x > /dev/null && echo dev-null-ok; echo done; exec sleep 1000",
        ],
    );
    spec.rootfs = Some(root.clone());
    let mut task = node.runtime.start(&spec).await.context("start rooted")?;
    node.logged("rooted", "done").await?;
    let ns = namespaces(&task)?;
    let exit = within(task.stop(Duration::from_secs(10))).await?;
    let logs = node.logs("rooted")?;
    ensure!(exit.signal == Some(libc::SIGTERM), "{exit}: {logs:?}");
    ensure!(
        stdout(&logs)
            == [
                "pid=2",
                "host=rooted",
                "init=shoal-init",
                "in-rootfs",
                "node-fs-hidden",
                "dev-null-ok",
                "done"
            ],
        "{logs:?}"
    );

    // The task's mounts (/proc, /dev, the bind of the rootfs) were its own.
    let root = root.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    ensure!(
        leaked.is_empty(),
        "mounts left under the rootfs: {leaked:?}"
    );
    assert_gone("rooted", ns)?;
    ensure!(node.bridge_ports().await?.is_empty());
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

    // On the node's filesystem.
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

    // In a rootfs without an etc: the file is made for the mount.
    let root = state.join("rootfs");
    install_binary(&root, Path::new("/bin/sh"), "/bin/sh")?;
    let mut spec = node.spec("resolv-root", 3, &print);
    spec.rootfs = Some(root.clone());
    spec.resolv_conf = Some(conf.clone());
    let mut task = node.runtime.start(&spec).await.context("start rooted")?;
    let exit = within(task.wait()).await?;
    let logs = node.logs("resolv-root")?;
    ensure!(exit.success(), "{exit}: {logs:?}");
    ensure!(
        stdout(&logs) == ["nameserver 127.0.0.11", "options ndots:0"],
        "{logs:?}"
    );
    ensure!(
        std::fs::read(root.join("etc/resolv.conf"))?.is_empty(),
        "the mount was the task's; the rootfs keeps an empty mount point"
    );

    // A symlink would resolve on the node: refused, nothing written there.
    let outside = state.join("outside");
    std::fs::remove_file(root.join("etc/resolv.conf"))?;
    std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf"))?;
    let mut spec = node.spec("resolv-link", 4, &print);
    spec.rootfs = Some(root);
    spec.resolv_conf = Some(conf);
    match node.runtime.start(&spec).await {
        Err(RuntimeError::Setup {
            stage: shoal_runtime::Stage::ResolvConf,
            ..
        }) => {}
        other => bail!("a symlinked resolv.conf was followed: {other:?}"),
    }
    ensure!(!outside.exists(), "nothing was created through the symlink");
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
