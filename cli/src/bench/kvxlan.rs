//! `kernel-vxlan`: the path Shoal replaces, built by hand on the caller's
//! kernel in the same run, as the overlay's baseline:
//!
//! ```text
//!  task A ─veth─ br42 ─ vx42 ─eth0─┐  br0 (underlay  ┌─eth0─ vx42 ─ br42 ─veth─ task B
//!  10.99.0.1/24  (MTU−50) VNI 42   └─ namespace) ───┘     dstport 4789         10.99.0.2/24
//! ```
//!
//! Kernel VXLAN through raw rtnetlink (not Shoal's driver): learning off,
//! ARP proxy on, a static FDB entry and a permanent neighbour entry for the
//! peer task, the overlay MTU on the task side: what `shoald` programs,
//! without its agent or eBPF programs. It only means something when every
//! node shares the caller's kernel (the namespace lab), and it needs root.
//!
//! The five namespaces are anonymous: held by open files and by the
//! servers, which die with this process (PR_SET_PDEATHSIG), so nothing is
//! left behind even on SIGKILL.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    os::{fd::AsFd, fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan,
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoVeth},
        neighbour::{NeighbourFlags, NeighbourState},
    },
};
use shoal_common::ports::VXLAN_PORT;

const VNI: u32 = 42;
/// VXLAN over IPv4: outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14.
const VXLAN_OVERHEAD: u32 = 50;
pub const IPERF_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7000;
/// Task B's address: the servers'.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 1 + i as u8)
}
fn task_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 1 + i as u8)
}
fn task_mac(i: usize) -> [u8; 6] {
    [0x02, 0x42, 10, 99, 0, 1 + i as u8]
}

/// A network namespace nobody named: alive while this file (or a process
/// in it) is.
struct Ns(File);

impl Ns {
    fn new() -> anyhow::Result<Ns> {
        // unshare() moves only the calling thread: do it on a throwaway one.
        std::thread::spawn(|| -> anyhow::Result<Ns> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET): needs root")?;
            Ok(Ns(File::open("/proc/thread-self/ns/net")?))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    fn netlink(&self) -> anyhow::Result<Handle> {
        Ok(shoal_netns::netlink(self.0.as_fd())?)
    }

    /// `program` run inside the namespace, killed if this process dies.
    #[allow(unsafe_code)]
    fn command(&self, program: &str) -> anyhow::Result<Command> {
        let fd = self.0.try_clone()?;
        let mut cmd = Command::new(program);
        // SAFETY: setns and prctl are async-signal-safe system calls; the
        // closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }
}

async fn index(h: &Handle, name: &str) -> anyhow::Result<u32> {
    let link = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("link {name}"))?
        .with_context(|| format!("no link {name}"))?;
    Ok(link.header.index)
}

async fn up(h: &Handle, name: &str) -> anyhow::Result<()> {
    h.link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .with_context(|| format!("set {name} up"))
}

/// A veth `port` (a port of `bridge` on `outer`) whose peer is `eth0` in
/// `inner`, with `addr`/24, `mac` if given, `mtu` on both ends.
async fn veth(
    outer: &Handle,
    port: &str,
    bridge: &str,
    inner: &Ns,
    addr: Ipv4Addr,
    mac: Option<[u8; 6]>,
    mtu: u32,
) -> anyhow::Result<()> {
    let mut peer = LinkUnspec::new_with_name("eth0")
        .mtu(mtu)
        .setns_by_fd(inner.0.as_raw_fd());
    if let Some(mac) = mac {
        peer = peer.address(mac.to_vec());
    }
    outer
        .link()
        .add(
            LinkVeth::new(port, "eth0")
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .mtu(mtu)
                .controller(index(outer, bridge).await?)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("veth {port} → eth0"))?;
    let h = inner.netlink()?;
    up(&h, "lo").await?;
    h.address()
        .add(index(&h, "eth0").await?, IpAddr::V4(addr), 24)
        .execute()
        .await
        .with_context(|| format!("{addr}/24 on eth0"))?;
    up(&h, "eth0").await
}

/// The MTU of the caller's link holding `addr` (the node's underlay), or
/// 1500 when it cannot be read.
pub async fn underlay_mtu(addr: Ipv4Addr) -> u32 {
    async fn find(addr: Ipv4Addr) -> Option<u32> {
        let (conn, h, _) = rtnetlink::new_connection().ok()?;
        tokio::spawn(conn);
        let mut addrs = h.address().get().execute();
        let mut index = None;
        while let Ok(Some(a)) = addrs.try_next().await {
            if a.attributes
                .iter()
                .any(|x| matches!(x, AddressAttribute::Address(IpAddr::V4(v)) if *v == addr))
            {
                index = Some(a.header.index);
            }
        }
        let link = h
            .link()
            .get()
            .match_index(index?)
            .execute()
            .try_next()
            .await
            .ok()??;
        shoal_netns::link::mtu(&link)
    }
    find(addr).await.unwrap_or(1500)
}

/// The hand-made path and its servers. Field order is drop order: servers
/// first, then the namespaces.
pub struct Baseline {
    servers: Vec<Child>,
    tasks: [Ns; 2],
    _nodes: [Ns; 2],
    _underlay: Ns,
    pub overlay_mtu: u32,
    iperf3: String,
    lab_echo: String,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        for c in &mut self.servers {
            // Already gone is fine: only the reaping matters here.
            let _already_exited = c.kill();
            let _status = c.wait();
        }
    }
}

/// `name` in a directory of the caller's PATH.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// iperf3 on the caller's PATH: the baseline runs the host's.
fn iperf3() -> anyhow::Result<String> {
    on_path("iperf3").map(|p| p.display().to_string()).context(
        "kernel-vxlan: no iperf3 on the caller's PATH; install it (apt-get install iperf3)",
    )
}

/// The `lab-echo` the baseline's round trips run: the one beside this
/// `shoal` (a build's target directory, the lab's binaries), else on PATH.
/// The same client and server the overlay's tasks run, as processes of
/// their own: in-process threads (this file until 2026-12-06) woke each
/// other more cheaply than two processes do, which favoured the baseline.
pub fn lab_echo() -> anyhow::Result<String> {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("lab-echo"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("lab-echo"))
        .map(|p| p.display().to_string())
        .context(
            "no lab-echo beside shoal or on PATH: the round trips run the overlay tasks' \
             client and server; build it (cargo build -p shoal-lab --bin lab-echo) or put it on PATH",
        )
}

impl Baseline {
    /// Builds the path with `underlay_mtu` on the underlay links and starts
    /// the iperf3 and echo servers in task B.
    pub async fn build(underlay_mtu: u32) -> anyhow::Result<Baseline> {
        if !nix::unistd::geteuid().is_root() {
            bail!("kernel-vxlan builds namespaces and needs root; run shoal bench as root");
        }
        let overlay_mtu = underlay_mtu - VXLAN_OVERHEAD;
        let mut b = Baseline {
            servers: Vec::new(),
            tasks: [Ns::new()?, Ns::new()?],
            _nodes: [Ns::new()?, Ns::new()?],
            _underlay: Ns::new()?,
            overlay_mtu,
            iperf3: iperf3()?,
            lab_echo: lab_echo()?,
        };
        let ulh = b._underlay.netlink()?;
        ulh.link()
            .add(LinkBridge::new("br0").mtu(underlay_mtu).up().build())
            .execute()
            .await
            .context("underlay bridge")?;
        for i in 0..2 {
            let node = &b._nodes[i];
            let h = node.netlink()?;
            let port = format!("n{i}");
            veth(&ulh, &port, "br0", node, vtep(i), None, underlay_mtu).await?;
            h.link()
                .add(LinkBridge::new("br42").mtu(overlay_mtu).up().build())
                .execute()
                .await
                .context("overlay bridge")?;
            h.link()
                .add(
                    LinkVxlan::new("vx42", VNI)
                        .dev(index(&h, "eth0").await?)
                        .local(vtep(i))
                        .port(VXLAN_PORT)
                        .learning(false)
                        .proxy(true)
                        .mtu(overlay_mtu)
                        .controller(index(&h, "br42").await?)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .context("vxlan device")?;
            let task = &b.tasks[i];
            veth(
                &h,
                "tsk",
                "br42",
                task,
                task_ip(i),
                Some(task_mac(i)),
                overlay_mtu,
            )
            .await?;
            // The peer task: its MAC behind the peer VTEP (NTF_SELF, the
            // VXLAN device's own FDB), its address answered by the ARP
            // proxy, so nothing is flooded or learned.
            let (peer, vx) = (1 - i, index(&h, "vx42").await?);
            h.neighbours()
                .add_bridge(vx, &task_mac(peer))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(IpAddr::V4(vtep(peer)))
                .execute()
                .await
                .context("fdb entry")?;
            h.neighbours()
                .add(vx, IpAddr::V4(task_ip(peer)))
                .link_layer_address(&task_mac(peer))
                .state(NeighbourState::Permanent)
                .execute()
                .await
                .context("neighbour entry")?;
        }
        let server = b.tasks[1]
            .command(&b.iperf3)?
            .args(["-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s in task B")?;
        b.servers.push(server);
        // lab-echo rr retries its connection while the server starts.
        let echo = b.tasks[1]
            .command(&b.lab_echo)?
            .args(["serve", &ECHO_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lab-echo serve in task B")?;
        b.servers.push(echo);
        Ok(b)
    }

    /// `iperf3 -c` in task A to task B; its `--json` output.
    pub async fn iperf(&self, secs: u64, streams: u32) -> anyhow::Result<String> {
        let mut cmd = self.tasks[0].command(&self.iperf3)?;
        cmd.args(iperf_args(secs, streams));
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .context("running iperf3 -c in task A")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lab-echo rr` in task A to task B's `lab-echo serve`, as the
    /// overlay's client task runs it: its output (the round trips and the
    /// machine's CPU over them).
    pub async fn rr(&self, secs: u64) -> anyhow::Result<String> {
        let mut cmd = self.tasks[0].command(&self.lab_echo)?;
        cmd.args(self.rr_args(secs));
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .context("running lab-echo rr in task A")?;
        if !out.status.success() {
            bail!(
                "lab-echo rr in task A: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn rr_args(&self, secs: u64) -> [String; 3] {
        [
            "rr".to_owned(),
            SocketAddrV4::new(SERVER, ECHO_PORT).to_string(),
            secs.to_string(),
        ]
    }

    /// The round trips' command line, as the bench records it.
    pub fn rr_command_line(&self, secs: u64) -> String {
        format!(
            "kernel-vxlan task A: {} {}",
            self.lab_echo,
            self.rr_args(secs).join(" ")
        )
    }

    pub fn command_lines(&self, secs: u64, streams: u32) -> String {
        format!(
            "kernel-vxlan task A: {} {}",
            self.iperf3,
            iperf_args(secs, streams).join(" ")
        )
    }
}

fn iperf_args(secs: u64, streams: u32) -> Vec<String> {
    let mut a = vec![
        "-c".to_owned(),
        SERVER.to_string(),
        "-p".into(),
        IPERF_PORT.to_string(),
        "-t".into(),
        secs.to_string(),
    ];
    if streams > 1 {
        a.extend(["-P".into(), streams.to_string()]);
    }
    a.push("--json".into());
    a
}
