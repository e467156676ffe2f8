//! The scenarios: which path each measures, how, and with which metrics.

use std::{fmt, net::SocketAddrV4, sync::Arc, time::Duration};

use anyhow::{Context, anyhow, bail};
use shoal_bench::{Histogram, Iperf3, Rr, cpustat};

use super::{
    crr, ebpf,
    fixture::{
        ECHO_PORT, Fixture, HAPROXY_ECHO_PORT, HAPROXY_HTTP_PORT, HOST_ECHO_PORT, HOST_HTTP_PORT,
        Layout, Net,
    },
    http, kvxlan, rr,
};
use crate::client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// iperf3 task → iperf3 task on another node, to the task's address.
    Overlay,
    /// The same on a network created `--opt encrypted=wireguard` (made by
    /// the bench for the run).
    OverlayWireguard,
    /// The same on a network created `--opt encrypted` (IPsec ESP): only
    /// where the nodes' kernels have ESP (the VM lab's Debian kernel; not
    /// the namespace lab's), so only when named.
    OverlayIpsec,
    /// The same through the service VIP.
    Vip,
    /// Request/response through the published port, entered on the
    /// server's node.
    IngressLocal,
    /// The same entered on a node without the server.
    IngressRemote,
    /// iperf3 between host-network tasks on two nodes, to the server
    /// node's address: no Shoal in the path, the ceiling.
    Underlay,
    /// Kernel VXLAN and bridges built by hand on the caller's kernel: the
    /// overlay's baseline (namespace lab only).
    KernelVxlan,
    /// Request/response from the caller straight to host-network servers
    /// on the server's node: no balancer at all.
    Direct,
    /// HAProxy in TCP mode on the server's node, in front of the same
    /// host-network servers: ingress-local's baseline.
    HaproxyLocal,
    /// HAProxy on the node without the server: ingress-remote's baseline.
    HaproxyRemote,
}

/// Every scenario, in the order `--help` gives them.
const ALL: [Scenario; 11] = [
    Scenario::Overlay,
    Scenario::OverlayWireguard,
    Scenario::OverlayIpsec,
    Scenario::Vip,
    Scenario::IngressLocal,
    Scenario::IngressRemote,
    Scenario::Underlay,
    Scenario::KernelVxlan,
    Scenario::Direct,
    Scenario::HaproxyLocal,
    Scenario::HaproxyRemote,
];

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Throughput (1 and N streams), retransmits and 1-byte round trips
    /// between two endpoints.
    Stream,
    /// Round trips, new connections and HTTP requests from the caller's
    /// side to an entry point.
    Request,
}

impl Scenario {
    /// The scenario's word on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Overlay => "overlay",
            Self::OverlayWireguard => "overlay-wireguard",
            Self::OverlayIpsec => "overlay-ipsec",
            Self::Vip => "vip",
            Self::IngressLocal => "ingress-local",
            Self::IngressRemote => "ingress-remote",
            Self::Underlay => "underlay",
            Self::KernelVxlan => "kernel-vxlan",
            Self::Direct => "direct",
            Self::HaproxyLocal => "haproxy-local",
            Self::HaproxyRemote => "haproxy-remote",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The positional SCENARIO words; none = all, each once.
pub fn parse_list(words: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if words.is_empty() {
        // An IPsec network fails closed on a kernel without ESP: its
        // scenario runs only when asked for.
        return Ok(ALL
            .into_iter()
            .filter(|s| *s != Scenario::OverlayIpsec)
            .collect());
    }
    let mut out = Vec::new();
    for w in words {
        let Some(s) = ALL.iter().find(|s| s.to_string() == *w) else {
            bail!(
                "SCENARIO {w:?}: unknown; the scenarios are: {}",
                ALL.map(|s| s.to_string()).join(", ")
            );
        };
        if !out.contains(s) {
            out.push(*s);
        }
    }
    Ok(out)
}

const THROUGHPUT: &str = "throughput";
const RETRANSMITS: &str = "retransmits";
/// The same with `--streams` parallel streams (N is in the run's meta).
const THROUGHPUT_N: &str = "throughput N streams";
const RETRANSMITS_N: &str = "retransmits N streams";

/// New connections/s, both ways of picking source ports (see [`crr`]):
/// rate, p50, p99, p99.9, the caller's SYN retransmits and retransmitted
/// segments; the distinct run also counts waits for a free tuple.
const CRR_REUSE: [&str; 6] = [
    "crr rate (port reuse)",
    "crr p50 (port reuse)",
    "crr p99 (port reuse)",
    "crr p99.9 (port reuse)",
    "crr SYN retransmits (port reuse)",
    "crr retransmits (port reuse)",
];
const CRR_DISTINCT: [&str; 6] = [
    "crr rate (distinct tuples)",
    "crr p50 (distinct tuples)",
    "crr p99 (distinct tuples)",
    "crr p99.9 (distinct tuples)",
    "crr SYN retransmits (distinct tuples)",
    "crr retransmits (distinct tuples)",
];
const CRR_WAITS: &str = "crr tuple waits (distinct tuples)";
/// HTTP requests/s on keep-alive connections, their latency, and the
/// answers that were not 2xx (which also flag the run).
const HTTP: [&str; 5] = [
    "http rate",
    "http p50",
    "http p99",
    "http p99.9",
    "http non-2xx",
];

/// CPU-seconds of the whole machine per Gbit received, over each iperf3
/// task's life, when every node shares the caller's kernel.
const CPU_1: &str = "cpu per Gbit/s (1 stream)";
const CPU_N: &str = "cpu per Gbit/s (N streams)";
/// The whole machine's busy CPU time over the round-trip run, per round
/// trip: what the path costs, where the round-trip rate mostly shows how
/// fast two shared vCPUs wake each other.
const CPU_RR: &str = "cpu per round trip";
/// CPUs already busy in the second before (other load on the machine).
const CPU_BEFORE: &str = "cpu busy before (whole machine)";
/// On separate machines: each end's node, sampled by a task beside the
/// iperf3 client over a window a little longer than the run.
const CPU_NODES: [&str; 4] = [
    "cpu per Gbit/s client node (1 stream)",
    "cpu per Gbit/s client node (N streams)",
    "cpu per Gbit/s server node (1 stream)",
    "cpu per Gbit/s server node (N streams)",
];
/// Shoal's eBPF per 1-byte round trip, from the kernel's BPF statistics
/// over an extra round-trip run (shared kernel only): each program's
/// nanoseconds in [`ebpf::PROGRAMS`] order, then the total and the runs.
const EBPF_PROGRAM_NS: [&str; 7] = [
    "ebpf ns per round trip shoal_vxlan_in",
    "ebpf ns per round trip shoal_task_out",
    "ebpf ns per round trip shoal_mesh_out",
    "ebpf ns per round trip shoal_tc_out",
    "ebpf ns per round trip shoal_tc_in",
    "ebpf ns per round trip shoal_mesh_in",
    "ebpf ns per round trip shoal_task_in",
];
const EBPF_NS: &str = "ebpf ns per round trip";
const EBPF_RUNS: &str = "ebpf runs per round trip";
/// Seconds of that extra run.
const EBPF_SECS: u64 = 3;

/// How much longer than the iperf3 run the node samplers' window is: the
/// samplers start just before the client and must outlast it.
const SAMPLE_PAD_SECS: u64 = 2;

/// Where CPU per Gbit/s can be read from.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuScope {
    /// Every node involved runs on the caller's kernel (same boot id): the
    /// caller's /proc/stat is the whole machine, nodes and all.
    SharedKernel,
    /// Separate machines (or asked for): the client's and the server's
    /// nodes each read their own /proc/stat in a sampler task.
    PerNode,
    /// Separate machines; why it is not measured.
    Missing(String),
}

/// How hard the loaders push, from the command line.
#[derive(Clone)]
pub struct Opts {
    /// iperf3 -P of the multi-stream measurement.
    pub streams: u32,
    /// Threads of the caller-side loaders: the caller's CPUs.
    pub loaders: usize,
    /// Concurrent connections of the connection-rate and HTTP loaders.
    pub conns: usize,
    /// Source tuples of the distinct-tuples connection-rate runs, one
    /// budget per server, shared by every repeat of the run.
    pub budgets: Arc<crr::Budgets>,
    pub cpu: CpuScope,
}
const RR_RATE: &str = "rr rate";
const RR_P50: &str = "rr p50";
const RR_P99: &str = "rr p99";
const RR_P999: &str = "rr p99.9";

/// One measurement's values, in [`Scenario::metric_names`] order, the
/// latencies it recorded (merged over the repeats for the CDFs), and the
/// errors of a measurement that still gave figures (failed connections),
/// which flag those metrics.
#[derive(Default)]
pub struct Measured {
    pub values: Vec<(&'static str, f64)>,
    pub latency: Vec<(&'static str, Histogram)>,
    pub errors: Vec<(&'static str, String)>,
}

/// One iperf3 client run's figures; the per-node CPU (client's node,
/// server's node) only when sampled, each or its sampler's error.
struct IperfRun {
    gbps: f64,
    retransmits: f64,
    cpu_machine: f64,
    cpu_nodes: Option<[Result<f64, String>; 2]>,
}

/// Busy CPU-seconds from a sampler task's output, or why there are none.
fn node_cpu(out: anyhow::Result<String>) -> Result<f64, String> {
    let out = out.map_err(|e| format!("the CPU sampler: {e:#}"))?;
    cpustat::Sample::parse(&out)
        .map(|s| s.busy_seconds())
        .map_err(|e| e.to_string())
}

/// The caller's machine's CPU times.
pub(super) fn cpu_times() -> anyhow::Result<cpustat::CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(cpustat::parse(&text)?)
}

/// p50, p99 and p99.9 of `h` in microseconds, as metric values.
fn percentiles(
    h: &Histogram,
    names: [&'static str; 3],
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    names
        .into_iter()
        .zip([50.0, 99.0, 99.9])
        .map(|(name, p)| {
            h.percentile_ns(p)
                .map(|ns| (name, ns / 1e3))
                .ok_or_else(|| anyhow::anyhow!("{name}: no latency recorded"))
        })
        .collect()
}

/// Percentiles when something completed; otherwise no value and an error
/// on each, with `why`, so the other figures of the repeat are kept.
fn percentiles_or(
    m: &mut Measured,
    h: &Histogram,
    names: [&'static str; 3],
    why: impl Fn() -> String,
) {
    match percentiles(h, names) {
        Ok(v) => m.values.extend(v),
        Err(_) => {
            let e = format!("nothing completed: {}", why());
            m.errors.extend(names.iter().map(|n| (*n, e.clone())));
        }
    }
}

impl CpuScope {
    fn note(&self) -> String {
        match self {
            Self::SharedKernel => format!(
                "CPU per Gbit/s: every node shares the caller's kernel (same boot id), so it \
                 is the WHOLE machine's CPU-seconds (/proc/stat, other load included: see \
                 `cpu busy before`) over each iperf3 task's life, per Gbit received; CPU \
                 per round trip: the same machine's busy CPU-us over exactly the measured \
                 round trips (the client reads /proc/stat around them), per round trip; eBPF ns \
                 per round trip: each Shoal TC program's run time (the kernel's BPF \
                 statistics, on only for this) over an extra {EBPF_SECS} s of 1-byte round \
                 trips, summed over every node's copy, divided by the round trips"
            ),
            Self::PerNode => format!(
                "CPU per Gbit/s: per node, a `lab-echo cpu` task on the client's and on the \
                 server's node reads that node's /proc/stat over the iperf3 run plus \
                 {SAMPLE_PAD_SECS} s (started just before the client; the node's other load \
                 included), busy CPU-seconds per Gbit received"
            ),
            Self::Missing(why) => format!("CPU per Gbit/s: not measured ({why})"),
        }
    }
}

impl Scenario {
    pub fn kind(self) -> Kind {
        match self {
            Self::Overlay
            | Self::OverlayWireguard
            | Self::OverlayIpsec
            | Self::Vip
            | Self::Underlay
            | Self::KernelVxlan => Kind::Stream,
            Self::IngressLocal
            | Self::IngressRemote
            | Self::Direct
            | Self::HaproxyLocal
            | Self::HaproxyRemote => Kind::Request,
        }
    }

    pub fn metric_names(self, o: &Opts) -> Vec<&'static str> {
        match self.kind() {
            Kind::Stream => {
                let mut names = vec![
                    THROUGHPUT,
                    RETRANSMITS,
                    THROUGHPUT_N,
                    RETRANSMITS_N,
                    RR_RATE,
                    RR_P50,
                    RR_P99,
                ];
                match o.cpu {
                    CpuScope::SharedKernel => {
                        names.extend([CPU_1, CPU_N, CPU_RR, CPU_BEFORE]);
                        names.extend(EBPF_PROGRAM_NS);
                        names.extend([EBPF_NS, EBPF_RUNS]);
                    }
                    CpuScope::PerNode => names.extend(CPU_NODES),
                    CpuScope::Missing(_) => {}
                }
                names
            }
            Kind::Request => {
                let mut names = vec![RR_RATE, RR_P50, RR_P99, RR_P999];
                names.extend(CRR_REUSE);
                names.extend(CRR_DISTINCT);
                names.push(CRR_WAITS);
                names.extend(HTTP);
                names
            }
        }
    }

    pub fn unit(self, metric: &str) -> &'static str {
        match metric {
            CRR_WAITS => return "connections",
            CPU_1 | CPU_N => return "CPU-s/Gbit",
            m if CPU_NODES.contains(&m) => return "CPU-s/Gbit",
            CPU_BEFORE => return "CPUs",
            CPU_RR => return "CPU-us",
            EBPF_RUNS => return "runs",
            m if m == EBPF_NS || EBPF_PROGRAM_NS.contains(&m) => return "ns",
            m if m == HTTP[0] => return "requests/s",
            m if m == HTTP[4] => return "answers",
            m if HTTP.contains(&m) => return "us",
            _ => {}
        }
        for names in [CRR_REUSE, CRR_DISTINCT] {
            match names.iter().position(|n| *n == metric) {
                Some(0) => return "connections/s",
                Some(4) => return "SYNs",
                Some(5) => return "segments",
                Some(_) => return "us",
                None => {}
            }
        }
        match metric {
            THROUGHPUT | THROUGHPUT_N => "Gbit/s",
            RETRANSMITS | RETRANSMITS_N => "segments",
            RR_RATE => "round trips/s",
            _ => "us",
        }
    }

    /// Retransmits are a count of rare events: 2 in one run and 138 in the
    /// next is normal, and no reason to distrust the throughput.
    pub fn spread_threshold(self, metric: &str) -> Option<f64> {
        let counts = [
            RETRANSMITS,
            RETRANSMITS_N,
            CRR_REUSE[4],
            CRR_REUSE[5],
            CRR_DISTINCT[4],
            CRR_DISTINCT[5],
            CRR_WAITS,
            HTTP[4],
            CPU_BEFORE,
        ];
        // A program that barely runs on a path (the mesh's on a plain
        // overlay flow) spreads in relative terms without meaning anything.
        let ebpf = metric == EBPF_NS || metric == EBPF_RUNS || EBPF_PROGRAM_NS.contains(&metric);
        (!counts.contains(&metric) && !ebpf).then_some(shoal_bench::stats::DEFAULT_SPREAD)
    }

    /// How it was measured, for the output and the result file.
    pub fn note(self, l: &Layout, o: &Opts) -> String {
        let streams = format!(
            "1 stream, then {} streams (-P); 1-byte round trips by lab-echo rr on one \
             connection; {}",
            o.streams,
            o.cpu.note()
        );
        match self {
            Self::Overlay => format!(
                "overlay: client tasks on {} -> server tasks on {} at their addresses ({} \
                 iperf3, {} echo); {streams}",
                l.client.hostname, l.server.hostname, l.iperf_task, l.echo_task
            ),
            Self::OverlayWireguard => format!(
                "overlay-wireguard: as overlay, on a network created --opt \
                 encrypted=wireguard (boringtun in each shoald, MTU 1390): client tasks on {} \
                 -> server tasks on {} ({} iperf3, {} echo); {streams}",
                l.client.hostname, l.server.hostname, l.iperf_wg, l.echo_wg
            ),
            Self::OverlayIpsec => format!(
                "overlay-ipsec: as overlay, on a network created --opt encrypted (IPsec \
                 ESP transport mode between the nodes, MTU 1424): client tasks on {} -> \
                 server tasks on {} ({} iperf3, {} echo); {streams}",
                l.client.hostname, l.server.hostname, l.iperf_ipsec, l.echo_ipsec
            ),
            Self::Vip => format!(
                "vip: client tasks on {} -> service VIPs {} (iperf3) and {} (echo), server \
                 tasks on {}; {streams}",
                l.client.hostname, l.iperf_vip, l.echo_vip, l.server.hostname
            ),
            Self::Underlay => format!(
                "underlay: client tasks on {}'s host network -> host-network servers on {} at \
                 the node's address {} (no Shoal in the path: the ceiling); {streams}",
                l.client.hostname, l.server.hostname, l.iperf_underlay
            ),
            Self::KernelVxlan => format!(
                "kernel-vxlan: built by hand by shoal bench on the caller's kernel (which \
                 every node shares): two namespaces joined by kernel VXLAN (raw rtnetlink, \
                 learning off, static FDB and neighbour entries, MTU {}) through bridges, no \
                 Shoal; iperf3, and lab-echo's server and rr client (the tasks' own binary, \
                 as processes of their own), from task A to task B; {streams}",
                l.kvxlan_mtu
            ),
            Self::IngressLocal
            | Self::IngressRemote
            | Self::Direct
            | Self::HaproxyLocal
            | Self::HaproxyRemote => {
                let (entry, what) = match self {
                    Self::IngressLocal | Self::IngressRemote => (
                        self.entry(l),
                        format!(
                            "the mesh: published ports (echo {}, lab-http {}) -> server tasks \
                             on the overlay on {}",
                            l.echo_published, l.http_published, l.server.hostname
                        ),
                    ),
                    Self::Direct => (
                        &l.server,
                        format!(
                            "no balancer: host-network servers on {} (echo {}, lab-http {})",
                            l.server.hostname, HOST_ECHO_PORT, HOST_HTTP_PORT
                        ),
                    ),
                    _ => (
                        self.entry(l),
                        format!(
                            "HAProxy {} in TCP mode with {} threads (as many as the caller's \
                             loaders), a host-network task on {} (echo {}, lab-http {}) -> the \
                             host-network servers on {}; the mesh's path also crosses the \
                             task's veth (and VXLAN when remote), HAProxy's does not",
                            l.haproxy_image,
                            o.loaders,
                            self.entry(l).hostname,
                            HAPROXY_ECHO_PORT,
                            HAPROXY_HTTP_PORT,
                            l.server.hostname
                        ),
                    ),
                };
                format!(
                    "{self}: run by shoal bench itself on the caller's side ({}) -> {} (entry \
                     node {}): TCP_RR (1-byte echo, one connection); new connections/s, {} at \
                     a time on {} threads, one `GET / Connection: close` each, twice: \
                     kernel-picked source ports (port reuse, as wrk) and distinct tuples; SYN \
                     retransmits are the caller's namespace's TcpExt.TCPSynRetrans delta (the \
                     nodes' own counters are not read); HTTP requests/s on {} keep-alive \
                     connections{}",
                    l.caller.hostname,
                    what,
                    entry.hostname,
                    o.conns,
                    o.loaders,
                    o.conns,
                    if entry.id == l.caller.id {
                        "; the entry node is the caller's own: fewer than 3 nodes"
                    } else {
                        ""
                    }
                )
            }
        }
    }

    fn entry(self, l: &Layout) -> &super::fixture::Node {
        match self {
            Self::IngressLocal | Self::Direct | Self::HaproxyLocal => &l.server,
            _ => &l.remote,
        }
    }

    /// Where a request scenario's echo and HTTP loaders connect.
    fn targets(self, l: &Layout) -> (SocketAddrV4, SocketAddrV4) {
        let at = |port_echo, port_http| {
            let ip = self.entry(l).addr;
            (
                SocketAddrV4::new(ip, port_echo),
                SocketAddrV4::new(ip, port_http),
            )
        };
        match self {
            Self::Direct => at(HOST_ECHO_PORT, HOST_HTTP_PORT),
            Self::HaproxyLocal | Self::HaproxyRemote => at(HAPROXY_ECHO_PORT, HAPROXY_HTTP_PORT),
            _ => at(l.echo_published, l.http_published),
        }
    }

    /// Which server keeps the TIME_WAIT of this scenario's connections (it
    /// closes first): the backend task for the published ports, whichever
    /// node the client entered by, as the mesh keeps the client's address;
    /// each balancer or host server for the others, as they terminate it.
    fn time_wait_server(self) -> &'static str {
        match self {
            Self::IngressLocal | Self::IngressRemote => "ingress backend",
            other => other.name(),
        }
    }

    /// A stream scenario's iperf3 and echo targets.
    fn stream_targets(self, l: &Layout) -> (SocketAddrV4, SocketAddrV4) {
        match self {
            Self::Vip => (
                SocketAddrV4::new(l.iperf_vip, 5201),
                SocketAddrV4::new(l.echo_vip, ECHO_PORT),
            ),
            Self::Underlay => (
                l.iperf_underlay,
                SocketAddrV4::new(*l.iperf_underlay.ip(), HOST_ECHO_PORT),
            ),
            Self::KernelVxlan => (
                SocketAddrV4::new(kvxlan::SERVER, kvxlan::IPERF_PORT),
                SocketAddrV4::new(kvxlan::SERVER, kvxlan::ECHO_PORT),
            ),
            Self::OverlayWireguard => (
                SocketAddrV4::new(l.iperf_wg, 5201),
                SocketAddrV4::new(l.echo_wg, ECHO_PORT),
            ),
            Self::OverlayIpsec => (
                SocketAddrV4::new(l.iperf_ipsec, 5201),
                SocketAddrV4::new(l.echo_ipsec, ECHO_PORT),
            ),
            _ => (
                SocketAddrV4::new(l.iperf_task, 5201),
                SocketAddrV4::new(l.echo_task, ECHO_PORT),
            ),
        }
    }

    fn iperf_args(self, l: &Layout, secs: u64, streams: u32) -> Vec<String> {
        let target = self.stream_targets(l).0;
        let mut args = vec![
            "/bin/iperf3".into(),
            "-c".into(),
            target.ip().to_string(),
            "-t".into(),
            secs.to_string(),
        ];
        if target.port() != 5201 {
            args.extend(["-p".into(), target.port().to_string()]);
        }
        if streams > 1 {
            args.extend(["-P".into(), streams.to_string()]);
        }
        args.push("--json".into());
        args
    }

    /// One iperf3 client run: Gbit/s received, retransmits, and the CPU
    /// it cost: the whole machine's CPU-seconds per Gbit received over the
    /// client's life (start and stop included: a slight overcount), read
    /// from the caller's /proc/stat; with [`CpuScope::PerNode`] also each
    /// end's node's, from sampler tasks beside the client.
    async fn iperf(
        self,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        streams: u32,
        cpu: &CpuScope,
    ) -> anyhow::Result<IperfRun> {
        let sample_secs = (secs + SAMPLE_PAD_SECS).to_string();
        let sampler = ["/bin/lab-echo", "cpu", &sample_secs];
        let samplers = if *cpu == CpuScope::PerNode {
            // Host network: a sampler needs none, and no veth is made on
            // the node it measures.
            let c = fx.start_task(&l.client, Net::Host, &sampler).await?;
            let s = fx.start_task(&l.server, Net::Host, &sampler).await?;
            Some((c, s))
        } else {
            None
        };
        let (before, t) = (cpu_times()?, std::time::Instant::now());
        let out = match (self, &l.kvxlan) {
            (Self::KernelVxlan, Some(b)) => b.iperf(secs, streams).await,
            (Self::KernelVxlan, None) => Err(anyhow!("kernel-vxlan: the baseline was not built")),
            _ => {
                let args = self.iperf_args(l, secs, streams);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let within = Duration::from_secs(secs) + super::TASK_SLACK;
                fx.run_task(&l.client, self.net(), &args, within).await
            }
        };
        let (after, wall) = (cpu_times()?, t.elapsed().as_secs_f64());
        // Collected whatever the client did, so their services go too.
        let nodes = match samplers {
            Some((c, s)) => {
                let within = Duration::from_secs(secs + SAMPLE_PAD_SECS) + super::TASK_SLACK;
                let c = fx.collect_task(c, within).await;
                let s = fx.collect_task(s, within).await;
                Some((node_cpu(c), node_cpu(s)))
            }
            None => None,
        };
        let r = Iperf3::parse(&out?)
            .with_context(|| format!("the iperf3 client's output ({streams} stream(s))"))?;
        let cpus = shoal_bench::meta::cpu().1;
        let cpu_s = cpustat::busy_cpus(before, after, cpus).unwrap_or(0.0) * wall;
        let gbit = r.bytes_received * 8.0 / 1e9;
        let per_gbit = |cpu_s: f64| if gbit > 0.0 { cpu_s / gbit } else { f64::NAN };
        Ok(IperfRun {
            gbps: r.bits_per_second / 1e9,
            retransmits: r.retransmits as f64,
            cpu_machine: per_gbit(cpu_s),
            cpu_nodes: nodes.map(|(c, s)| [c.map(per_gbit), s.map(per_gbit)]),
        })
    }

    /// Shoal's eBPF time per round trip over an extra [`EBPF_SECS`] of
    /// round trips with the kernel's BPF statistics on (see [`ebpf`]).
    async fn ebpf_cost(self, fx: &mut Fixture, l: &Layout) -> anyhow::Result<(Vec<f64>, f64, f64)> {
        let on = ebpf::stats_on().map_err(|e| anyhow!(e))?;
        let before = ebpf::snapshot().map_err(|e| anyhow!(e))?;
        let (rate, ..) = self.stream_rr(fx, l, EBPF_SECS).await?;
        let after = ebpf::snapshot().map_err(|e| anyhow!(e))?;
        drop(on);
        let round_trips = rate * EBPF_SECS as f64;
        ebpf::per_round_trip(&ebpf::delta(&before, &after), round_trips).map_err(|e| anyhow!(e))
    }

    /// 1-byte round trips on one connection: rate, p50 and p99 (µs), and
    /// the machine's busy CPU-µs per round trip over the measured window
    /// (`None` when the client could not read it).
    async fn stream_rr(
        self,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
    ) -> anyhow::Result<(f64, f64, f64, Option<f64>)> {
        let per_round_trip = |busy_cpus: f64, rate: f64| busy_cpus * 1e6 / rate;
        let within = Duration::from_secs(secs) + super::TASK_SLACK;
        let out = if self == Self::KernelVxlan {
            let b = l
                .kvxlan
                .as_ref()
                .context("kernel-vxlan: the baseline was not built")?;
            tokio::time::timeout(within, b.rr(secs))
                .await
                .context("kernel-vxlan: lab-echo rr did not end in time")??
        } else {
            let target = self.stream_targets(l).1.to_string();
            let secs_s = secs.to_string();
            let args = ["/bin/lab-echo", "rr", &target, &secs_s];
            fx.run_task(&l.client, self.net(), &args, within).await?
        };
        let r = Rr::parse(&out).context("the lab-echo rr client's output")?;
        let cpu = cpustat::Sample::parse(&out)
            .ok()
            .and_then(|s| cpustat::busy_cpus(s.before, s.after, s.cpus))
            .map(|c| per_round_trip(c, r.per_second));
        Ok((r.per_second, r.p50_us, r.p99_us, cpu))
    }

    /// Where the scenario's client task runs.
    fn net(self) -> Net {
        match self {
            Self::Underlay => Net::Host,
            Self::OverlayWireguard => Net::Wireguard,
            Self::OverlayIpsec => Net::Ipsec,
            _ => Net::Overlay,
        }
    }

    /// One unmeasured run, retried: the first packets of a new path wait on
    /// the overlay entries reaching the client's node, which is not what the
    /// bench measures.
    pub async fn warm_up(
        self,
        _d: &mut client::Daemon,
        fx: &mut Fixture,
        l: &Layout,
        o: &Opts,
        commands: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            let r = match self.kind() {
                Kind::Stream => {
                    let unsampled = CpuScope::Missing("a warm-up".into());
                    self.iperf(fx, l, 1, 1, &unsampled).await.map(drop)
                }
                Kind::Request => {
                    let (echo, _) = self.targets(l);
                    match rr::run(echo, Duration::from_secs(1)).await {
                        Ok(_) => self.warm_http(l).await,
                        Err(e) => Err(e),
                    }
                }
            };
            match r {
                Ok(()) => {
                    commands.push(format!(
                        "{self} warm-up (not counted): {}",
                        self.command(
                            l,
                            1,
                            &Opts {
                                streams: 1,
                                ..o.clone()
                            }
                        )[0]
                    ));
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("{self} warm-up: {e:#}; retrying");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
            .context(format!(
                "{self}: the path never worked in 5 warm-up attempts"
            )))
    }

    /// One second of new connections to lab-http, all of which must work.
    async fn warm_http(self, l: &Layout) -> anyhow::Result<()> {
        let (_, http) = self.targets(l);
        let r = crr::run(http, Duration::from_secs(1), 1, 1, &crr::Tuples::Kernel).await?;
        match (r.errors, r.hist.count) {
            (0, 1..) => Ok(()),
            (errors, _) => Err(anyhow::anyhow!(
                "{http}: {errors} failed connection(s): {}",
                r.first_errors.join("; ")
            )),
        }
    }

    fn command(self, l: &Layout, secs: u64, o: &Opts) -> Vec<String> {
        match self.kind() {
            Kind::Stream => {
                let mut lines: Vec<String> = [1, o.streams]
                    .iter()
                    .map(|p| match &l.kvxlan {
                        Some(b) if self == Self::KernelVxlan => b.command_lines(secs, *p),
                        _ => format!(
                            "task on {}: {}",
                            l.client.hostname,
                            self.iperf_args(l, secs, *p).join(" ")
                        ),
                    })
                    .collect();
                lines.push(match self {
                    Self::KernelVxlan => l.kvxlan.as_ref().map_or_else(
                        || "kernel-vxlan: not built".to_owned(),
                        |b| b.rr_command_line(secs),
                    ),
                    _ => format!(
                        "task on {}: /bin/lab-echo rr {} {secs}",
                        l.client.hostname,
                        self.stream_targets(l).1
                    ),
                });
                lines
            }
            Kind::Request => {
                let (echo, http) = self.targets(l);
                vec![
                    format!(
                        "shoal bench (caller {}): TCP_RR to {echo} for {secs} s after 1 s \
                         unmeasured",
                        l.caller.hostname,
                    ),
                    format!(
                        "shoal bench (caller {}): {} connections at a time on {} threads, one \
                         `GET / Connection: close` per connection to {http} for {secs} s, \
                         kernel-picked source ports",
                        l.caller.hostname, o.conns, o.loaders
                    ),
                    format!(
                        "shoal bench (caller {}): the same with explicit source ports, none \
                         reused towards the same server within {} s ({} tuples per server for \
                         the run)",
                        l.caller.hostname,
                        crr::REUSE_AFTER.as_secs(),
                        o.budgets.len_each()
                    ),
                    format!(
                        "shoal bench (caller {}): {} keep-alive connections on {} threads, \
                         `GET /` back to back on each, to {http} for {secs} s",
                        l.caller.hostname, o.conns, o.loaders
                    ),
                ]
            }
        }
    }

    /// One measurement: the metric values, in [`Self::metric_names`] order.
    pub async fn measure(
        self,
        _d: &mut client::Daemon,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        o: &Opts,
        commands: &mut Vec<String>,
    ) -> anyhow::Result<Measured> {
        for line in self.command(l, secs, o) {
            if !commands.contains(&line) {
                commands.push(line);
            }
        }
        match self.kind() {
            Kind::Stream => self.measure_stream(fx, l, secs, o).await,
            Kind::Request => self.measure_requests(l, secs, o).await,
        }
    }

    async fn measure_stream(
        self,
        fx: &mut Fixture,
        l: &Layout,
        secs: u64,
        o: &Opts,
    ) -> anyhow::Result<Measured> {
        let idle = cpu_times()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpus = shoal_bench::meta::cpu().1;
        let busy_before = cpustat::busy_cpus(idle, cpu_times()?, cpus);
        let one = self.iperf(fx, l, secs, 1, &o.cpu).await?;
        let n = self.iperf(fx, l, secs, o.streams, &o.cpu).await?;
        let (rate, p50, p99, rr_cpu) = self.stream_rr(fx, l, secs).await?;
        let mut m = Measured {
            values: vec![
                (THROUGHPUT, one.gbps),
                (RETRANSMITS, one.retransmits),
                (THROUGHPUT_N, n.gbps),
                (RETRANSMITS_N, n.retransmits),
                (RR_RATE, rate),
                (RR_P50, p50),
                (RR_P99, p99),
            ],
            ..Default::default()
        };
        match o.cpu {
            CpuScope::SharedKernel => {
                m.values.extend([
                    (CPU_1, one.cpu_machine),
                    (CPU_N, n.cpu_machine),
                    (CPU_BEFORE, busy_before.unwrap_or(f64::NAN)),
                ]);
                match rr_cpu {
                    Some(v) => m.values.push((CPU_RR, v)),
                    None => m
                        .errors
                        .push((CPU_RR, "the rr client printed no CPU sample".into())),
                }
                match self.ebpf_cost(fx, l).await {
                    Ok((each, total, runs)) => {
                        m.values.extend(EBPF_PROGRAM_NS.into_iter().zip(each));
                        m.values.extend([(EBPF_NS, total), (EBPF_RUNS, runs)]);
                    }
                    Err(e) => {
                        let names = EBPF_PROGRAM_NS.into_iter().chain([EBPF_NS, EBPF_RUNS]);
                        m.errors.extend(names.map(|n| (n, format!("{e:#}"))));
                    }
                }
            }
            CpuScope::PerNode => {
                let (one, n) = (one.cpu_nodes, n.cpu_nodes);
                // client 1, client N, server 1, server N: CPU_NODES' order.
                let figures = [
                    one.as_ref().map(|x| &x[0]),
                    n.as_ref().map(|x| &x[0]),
                    one.as_ref().map(|x| &x[1]),
                    n.as_ref().map(|x| &x[1]),
                ];
                for (name, f) in CPU_NODES.into_iter().zip(figures) {
                    match f {
                        Some(Ok(v)) => m.values.push((name, *v)),
                        Some(Err(e)) => m.errors.push((name, e.clone())),
                        None => m.errors.push((name, "no sampler ran".into())),
                    }
                }
            }
            CpuScope::Missing(_) => {}
        }
        Ok(m)
    }

    async fn measure_requests(self, l: &Layout, secs: u64, o: &Opts) -> anyhow::Result<Measured> {
        let (echo, http) = self.targets(l);
        let (rate, h) = rr::run(echo, Duration::from_secs(secs)).await?;
        let mut m = Measured::default();
        m.values.push((RR_RATE, rate));
        m.values.extend(percentiles(&h, [RR_P50, RR_P99, RR_P999])?);
        m.latency.push(("rr", h));
        let measure = Duration::from_secs(secs);
        let reuse = crr::Tuples::Kernel;
        let budget = o.budgets.for_server(self.time_wait_server());
        let distinct = crr::Tuples::Distinct(budget.clone());
        for (tuples, names, hist) in [
            (&reuse, CRR_REUSE, "crr port reuse"),
            (&distinct, CRR_DISTINCT, "crr distinct tuples"),
        ] {
            let r = crr::run(http, measure, o.loaders, o.conns, tuples).await?;
            m.values.push((names[0], r.per_second));
            percentiles_or(&mut m, &r.hist, [names[1], names[2], names[3]], || {
                format!(
                    "{} error(s) ({}), {} wait(s) for a tuple out of TIME_WAIT",
                    r.errors,
                    r.first_errors.join("; "),
                    r.waits
                )
            });
            m.values.push((names[4], r.syn_retrans as f64));
            m.values.push((names[5], r.retrans_segs as f64));
            if r.errors > 0 {
                let e = format!(
                    "{} of {} connections failed: {}",
                    r.errors,
                    r.errors + r.hist.count,
                    r.first_errors.join("; ")
                );
                m.errors.extend(names.iter().map(|n| (*n, e.clone())));
            }
            if matches!(tuples, crr::Tuples::Distinct(_)) {
                m.values.push((CRR_WAITS, r.waits as f64));
                // Then the budget, not the path, set the pace.
                if r.waits > 0 {
                    m.errors.push((
                        names[0],
                        format!(
                            "{} connection(s) waited for a tuple out of TIME_WAIT: the rate is \
                             bounded by the {} tuples; add --source addresses",
                            r.waits,
                            budget.len()
                        ),
                    ));
                }
            }
            m.latency.push((hist, r.hist));
        }
        let r = http::run(http, measure, o.loaders, o.conns).await?;
        m.values.push((HTTP[0], r.per_second));
        percentiles_or(&mut m, &r.hist, [HTTP[1], HTTP[2], HTTP[3]], || {
            format!("{} error(s): {}", r.errors, r.first_errors.join("; "))
        });
        m.values.push((HTTP[4], r.non_2xx as f64));
        let mut problems = Vec::new();
        if r.non_2xx > 0 {
            problems.push(format!("{} answer(s) not 2xx", r.non_2xx));
        }
        if r.errors > 0 {
            problems.push(format!(
                "{} request(s) failed: {}",
                r.errors,
                r.first_errors.join("; ")
            ));
        }
        if !problems.is_empty() {
            let e = problems.join("; ");
            m.errors.extend(HTTP.iter().map(|n| (*n, e.clone())));
        }
        m.latency.push(("http", r.hist));
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cpu: CpuScope) -> Opts {
        Opts {
            streams: 2,
            loaders: 2,
            conns: 50,
            budgets: Arc::new(crr::Budgets::new(
                &[std::net::Ipv4Addr::UNSPECIFIED],
                (32768, 60999),
            )),
            cpu,
        }
    }

    #[test]
    fn baselines_report_what_their_paths_report() {
        // A ratio needs the same metric on both sides.
        let o = opts(CpuScope::SharedKernel);
        for (path, baseline) in [
            (Scenario::Overlay, Scenario::KernelVxlan),
            (Scenario::Overlay, Scenario::Underlay),
            (Scenario::OverlayWireguard, Scenario::Overlay),
            (Scenario::OverlayIpsec, Scenario::Overlay),
            (Scenario::IngressLocal, Scenario::HaproxyLocal),
            (Scenario::IngressRemote, Scenario::HaproxyRemote),
            (Scenario::IngressLocal, Scenario::Direct),
        ] {
            assert_eq!(path.kind(), baseline.kind(), "{path} vs {baseline}");
            assert_eq!(path.metric_names(&o), baseline.metric_names(&o));
        }
        for (path, baseline, metric) in shoal_bench::ratio::PAIRS {
            let find = |w: &str| ALL.into_iter().find(|s| s.to_string() == w);
            let (Some(p), Some(b)) = (find(path), find(baseline)) else {
                panic!("ratio {path}/{baseline}: not a scenario");
            };
            assert!(p.metric_names(&o).contains(&metric), "{path} {metric}");
            assert!(b.metric_names(&o).contains(&metric), "{baseline} {metric}");
        }
        // Without a shared kernel there is no CPU figure to report.
        let missing = opts(CpuScope::Missing("separate machines".into()));
        assert!(
            !Scenario::KernelVxlan
                .metric_names(&missing)
                .contains(&CPU_1)
        );
        // Per node: each end's figures instead of the machine's, each with
        // a unit.
        let nodes = Scenario::Overlay.metric_names(&opts(CpuScope::PerNode));
        assert!(CPU_NODES.iter().all(|m| nodes.contains(m)));
        assert!(!nodes.contains(&CPU_1) && !nodes.contains(&CPU_BEFORE));
        assert!(
            CPU_NODES
                .iter()
                .all(|m| Scenario::Overlay.unit(m) == "CPU-s/Gbit")
        );
    }

    #[test]
    fn ebpf_metrics_follow_the_programs() {
        // The per-program figures are zipped with ebpf::PROGRAMS' order.
        for (metric, program) in EBPF_PROGRAM_NS.iter().zip(ebpf::PROGRAMS) {
            assert_eq!(*metric, format!("{EBPF_NS} {program}"));
        }
        assert_eq!(EBPF_PROGRAM_NS.len(), ebpf::PROGRAMS.len());
    }

    #[test]
    fn scenario_words() {
        let all = parse_list(&[]).ok();
        let mut expected = ALL.to_vec();
        expected.retain(|s| *s != Scenario::OverlayIpsec);
        assert_eq!(all, Some(expected));
        let ipsec = parse_list(&["overlay-ipsec".into()]).ok();
        assert_eq!(ipsec, Some(vec![Scenario::OverlayIpsec]));
        let two = parse_list(&["overlay".into(), "ingress-remote".into(), "overlay".into()]).ok();
        assert_eq!(two, Some(vec![Scenario::Overlay, Scenario::IngressRemote]));
        let e = parse_list(&["ceiling".into()]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "SCENARIO \"ceiling\": unknown; the scenarios are: overlay, overlay-wireguard, \
                 overlay-ipsec, vip, ingress-local, ingress-remote, underlay, kernel-vxlan, direct, haproxy-local, haproxy-remote"
            )
        );
    }
}
