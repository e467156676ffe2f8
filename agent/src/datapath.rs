//! The only module that touches aya: loads the embedded eBPF object, attaches
//! the TC programs to the data interface and reads their maps.

#[cfg(test)]
mod contract_tests;
pub mod fastpath;
pub mod mesh;
#[cfg(test)]
mod mesh_tests;
pub mod policy;
#[cfg(test)]
mod test_run;

use aya::{
    Ebpf, include_bytes_aligned,
    maps::{MapError, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use shoal_common::stats::{
    Counter, Direction, PROG_TC_EGRESS, PROG_TC_INGRESS, Proto, REASONS_MAP, Reason, STATS_MAP,
    counter_index,
};

static TC_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shoal-tc.o"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("program {name}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("adding the clsact qdisc to {iface} failed")]
    Clsact {
        iface: String,
        #[source]
        source: tc::TcError,
    },
    #[error("reading map {name} failed")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("writing map {name} failed")]
    MapUpdate {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "a task on {count} networks: its veth's isolation entry holds {max}; attach it to fewer networks"
    )]
    TooManyNetworks { count: usize, max: usize },
    #[error("task veth {veth} not found: {source}")]
    Veth {
        veth: String,
        #[source]
        source: nix::Error,
    },
    #[error("a Maglev table for service {service} has {len} slots or the id is out of range")]
    Ring { service: u32, len: usize },
    #[error("the pin directory {path}: {source}; it must be on a BPF filesystem (bpffs)")]
    PinDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinned link {path}: {source}")]
    PinLink {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "mounting bpffs on {path}: {source}; mount it (mount -t bpf bpf {path}) or pass another --bpf-dir"
    )]
    MountBpffs {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Gives the heap that loading the eBPF objects freed back to the kernel.
/// aya parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, ~5 MiB) for each
/// object it loads; glibc keeps the freed pages, ~19 MiB measured on an
/// idle node, in the daemon's resident set for good (`cargo xtask bench
/// memory`). Call once after the loads.
pub fn release_load_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of
    // glibc's arenas to the kernel, with the allocator's own locking.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes sure `dir` is on bpffs: mounts one on /sys/fs/bpf when it is not
/// there yet (as the kernel docs and Cilium do), since pins need it.
pub fn ensure_bpffs(dir: &std::path::Path) -> Result<(), DatapathError> {
    // Two callers mounting at once would stack two bpffs, hiding what the
    // first pinned under the second.
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(shoal_netns::bpffs::ROOT);
    let on_bpffs = shoal_netns::bpffs::is_bpffs;
    if dir.ancestors().any(|a| a.exists() && on_bpffs(a)) {
        return Ok(());
    }
    if dir.starts_with(root) && !on_bpffs(root) {
        shoal_netns::bpffs::mount_root().map_err(|source| DatapathError::MountBpffs {
            path: root.to_owned(),
            source,
        })?;
        tracing::info!("mounted bpffs on /sys/fs/bpf");
    }
    Ok(())
}

/// How the classifiers hang on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (kernel ≥ 6.6): detached automatically when shoald exits.
    Tcx,
    /// A clsact qdisc with direct-action filters (older kernels).
    Netlink,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Netlink => "netlink",
        }
    }
}

/// Counter snapshot summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// (direction, protocol, counter) for every pair, in contract order.
    pub counters: Vec<(Direction, Proto, Counter)>,
    pub reasons: Vec<(Reason, u64)>,
}

/// Where packet counters come from: the real maps, or a fake in unit tests.
pub trait StatsSource: Send + Sync + 'static {
    fn stats(&self) -> Result<Stats, DatapathError>;
}

pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the object and its programs into the kernel, attached nowhere yet.
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = Ebpf::load(TC_OBJECT).map_err(DatapathError::Load)?;
        Self::load_classifiers(&mut ebpf, &Self::programs())?;
        Ok(Self { ebpf })
    }

    /// Loads the classifiers `names` of an object into the kernel.
    fn load_classifiers(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), DatapathError> {
        for &name in names {
            Self::classifier(ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    name,
                    action: "load",
                    source,
                })?;
        }
        Ok(())
    }

    /// Attaches the classifiers to `iface`'s ingress and egress.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, DatapathError> {
        attach_classifiers(
            &mut self.ebpf,
            iface,
            &[
                (PROG_TC_INGRESS, TcAttachType::Ingress),
                (PROG_TC_EGRESS, TcAttachType::Egress),
            ],
        )
    }

    fn classifier<'a>(
        ebpf: &'a mut Ebpf,
        name: &'static str,
    ) -> Result<&'a mut SchedClassifier, DatapathError> {
        ebpf.program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name,
                action: "type check",
                source,
            })
    }

    pub fn programs() -> [&'static str; 2] {
        [PROG_TC_INGRESS, PROG_TC_EGRESS]
    }

    pub fn stats(&self) -> Result<Stats, DatapathError> {
        let map = |name| {
            self.ebpf
                .map(name)
                .ok_or(DatapathError::MissingMap { name })
        };
        let counters: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(map(STATS_MAP)?).map_err(|source| DatapathError::Map {
                name: STATS_MAP,
                source,
            })?;
        let reasons: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map(REASONS_MAP)?).map_err(|source| DatapathError::Map {
                name: REASONS_MAP,
                source,
            })?;

        let mut out = Stats::default();
        for dir in Direction::ALL {
            for proto in Proto::ALL {
                let per_cpu = counters
                    .get(&counter_index(dir, proto), 0)
                    .map_err(|source| DatapathError::Map {
                        name: STATS_MAP,
                        source,
                    })?;
                let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                });
                out.counters.push((dir, proto, sum));
            }
        }
        for reason in Reason::ALL {
            let per_cpu =
                reasons
                    .get(&(reason as u32), 0)
                    .map_err(|source| DatapathError::Map {
                        name: REASONS_MAP,
                        source,
                    })?;
            out.reasons.push((reason, per_cpu.iter().sum()));
        }
        Ok(out)
    }
}

/// Attaches each loaded classifier of `ebpf` to its hook of `iface`, after
/// those already there.
fn attach_classifiers(
    ebpf: &mut Ebpf,
    iface: &str,
    progs: &[(&'static str, TcAttachType)],
) -> Result<AttachMode, DatapathError> {
    // Mirrors aya's own choice in SchedClassifier::attach, so we know which
    // one it made.
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let mode = if tcx {
        AttachMode::Tcx
    } else {
        add_clsact(iface)?;
        // Unlike TCX links, netlink filters outlive the process that added
        // them: a shoald killed without its shutdown left its programs on
        // the hook, which would now run twice (counting every packet twice).
        for &(name, hook) in progs {
            match tc::qdisc_detach_program(iface, hook, name) {
                Ok(()) => tracing::info!(iface, program = name, "removed a previous run's filter"),
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(iface, program = name, error = %e, "removing a previous run's filter")
                }
            }
        }
        AttachMode::Netlink
    };
    for &(name, hook) in progs {
        // The link is owned by the program and lives as long as `ebpf`.
        Datapath::classifier(ebpf, name)?
            .attach(iface, hook)
            .map_err(|source| DatapathError::Program {
                name,
                action: "attach",
                source,
            })?;
    }
    Ok(mode)
}

/// Adds the clsact qdisc to `iface` unless it is there (kernels before 6.6).
fn add_clsact(iface: &str) -> Result<(), DatapathError> {
    {
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => {}
            // Another agent run (or tc by hand) added it already; aya reports
            // that as the kernel's EEXIST (6.1 says "Exclusivity flag on").
            Err(tc::TcError::AlreadyAttached) => {}
            Err(tc::TcError::NetlinkError(e))
                if e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) => {}
            Err(source) => {
                return Err(DatapathError::Clsact {
                    iface: iface.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

impl StatsSource for std::sync::Mutex<Datapath> {
    fn stats(&self) -> Result<Stats, DatapathError> {
        // A poisoned lock only means a reader panicked; the maps are intact.
        let dp = self.lock().unwrap_or_else(|e| e.into_inner());
        dp.stats()
    }
}

/// Fixture tables run through BPF_PROG_TEST_RUN: input frame → verdict and
/// the counter it must bump. Needs root (loads programs), as the suite does.
#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `name` once over `frame`; returns the program's return value.
    fn test_run(dp: &mut Datapath, name: &'static str, frame: &[u8]) -> i32 {
        let prog = Datapath::classifier(&mut dp.ebpf, name).expect("program");
        let (retval, out) = super::test_run::run(prog, frame);
        assert_eq!(out, frame, "a counter must not edit packets");
        retval
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, l4_len: usize) -> Vec<u8> {
        let total = (20 + l4_len) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        h.extend(std::iter::repeat_n(0u8, l4_len));
        h
    }

    fn counter(s: &Stats, dir: Direction, proto: Proto) -> Counter {
        s.counters
            .iter()
            .find(|(d, p, _)| *d == dir && *p == proto)
            .map(|c| c.2)
            .unwrap_or_default()
    }

    fn reason(s: &Stats, r: Reason) -> u64 {
        s.reasons
            .iter()
            .find(|(x, _)| *x == r)
            .map(|x| x.1)
            .unwrap_or_default()
    }

    #[test]
    fn classifies_counts_and_never_changes_a_verdict() {
        let mut dp = Datapath::load().expect("load the eBPF object (needs root)");
        // TC_ACT_UNSPEC: leave the decision to whoever is next.
        const PASS: i32 = -1;
        // The kernel refuses to test-run an IPv4 frame shorter than an IPv4
        // header, so truncation is shown by a header longer than the frame
        // (the lab test sends really short frames on the wire).
        let long_ihl = eth(0x0800, &{
            let mut h = ipv4(6, 0);
            h[0] = 0x4f;
            h
        });
        let bad_version = eth(0x0800, &{
            let mut h = ipv4(6, 20);
            h[0] = 0x65;
            h
        });
        let bad_ihl = eth(0x0800, &{
            let mut h = ipv4(6, 20);
            h[0] = 0x43;
            h
        });
        use Direction::{Egress as Out, Ingress as In};
        let (i, o) = (PROG_TC_INGRESS, PROG_TC_EGRESS);
        // name, frame, program, direction, protocol it counts as, reason it bumps
        let table = [
            ("tcp", eth(0x0800, &ipv4(6, 20)), i, In, Proto::Tcp, None),
            ("udp", eth(0x0800, &ipv4(17, 108)), i, In, Proto::Udp, None),
            ("icmp", eth(0x0800, &ipv4(1, 8)), o, Out, Proto::Icmp, None),
            (
                "esp",
                eth(0x0800, &ipv4(50, 40)),
                o,
                Out,
                Proto::Ipv4Other,
                None,
            ),
            ("ipv6", eth(0x86dd, &[0x60; 40]), i, In, Proto::Ipv6, None),
            ("arp", eth(0x0806, &[0; 28]), o, Out, Proto::Arp, None),
            ("lldp", eth(0x88cc, &[0; 30]), i, In, Proto::Other, None),
            (
                "ihl 15 in 20 bytes",
                long_ihl,
                i,
                In,
                Proto::Other,
                Some(Reason::TruncatedIpv4),
            ),
            (
                "version 6 in ipv4",
                bad_version,
                o,
                Out,
                Proto::Other,
                Some(Reason::BadIpv4Header),
            ),
            (
                "ihl 3",
                bad_ihl,
                i,
                In,
                Proto::Other,
                Some(Reason::BadIpv4Header),
            ),
        ];
        for (what, frame, prog, dir, proto, why) in table {
            let before = dp.stats().expect("stats");
            assert_eq!(test_run(&mut dp, prog, &frame), PASS, "{what}: verdict");
            let after = dp.stats().expect("stats");
            let (b, a) = (counter(&before, dir, proto), counter(&after, dir, proto));
            assert_eq!(a.packets - b.packets, 1, "{what}: one packet as {proto:?}");
            assert_eq!(a.bytes - b.bytes, frame.len() as u64, "{what}: its bytes");
            let total = |s: &Stats| s.counters.iter().map(|c| c.2.packets).sum::<u64>();
            assert_eq!(
                total(&after) - total(&before),
                1,
                "{what}: counted once only"
            );
            for r in Reason::ALL {
                let delta = reason(&after, r) - reason(&before, r);
                assert_eq!(delta, u64::from(why == Some(r)), "{what}: reason {r:?}");
            }
        }
    }
}
