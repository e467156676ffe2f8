//! `VmLab`: Shoal nodes as qemu VMs on a bridge in a lab namespace.
//!
//! ```text
//!  VM n1 (eth0 198.18.0.1)   VM n2 (eth0 198.18.0.2)    shoalvm-<lab>-client
//!     virtio-net                 virtio-net              eth0 198.18.0.250
//!        │ tap n1                   │ tap n2                  │ veth client
//!  ──────┴──────────────────────────┴────── br0 ──────────────┴──  shoalvm-<lab>-ul
//! ```
//!
//! Each VM boots Debian's kernel and a copy-on-write overlay of the cached
//! root filesystem ([`crate::image`]), mounts the lab's shared folder on
//! `/vagrant` (9p) and runs `vagrant/provision.sh` from it on first boot,
//! exactly as a Vagrant box does. The host reaches the VMs only from the
//! client namespace (ssh for `exec`, curl for published ports). Files live
//! in `/run/shoal-vm/<lab>/`: `lab.json`, the ssh key, `share/` (the
//! `/vagrant` of every VM), and per VM `nK/{disk.qcow2,console.log,qemu.pid}`.

use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::accel::{self, Accel};
use crate::error::{VmError, io_err};
use crate::image::{self, Image, ImageSpec};
use crate::tool::{self, TAIL_LINES, shell_quote};

/// Per-lab files.
pub const RUN_DIR: &str = "/run/shoal-vm";
/// Namespace names start with this; the netns lab's sweep (`shoal-`) never
/// takes them.
const NS_PREFIX: &str = "shoalvm-";
/// Most VMs in a lab (addresses 198.18.0.1 to .200).
pub const MAX_NODES: usize = 200;
/// Prefix length of the underlay.
pub const PREFIX_LEN: u8 = 24;
/// Binaries copied into the share for provision.sh; the first three are required.
pub const BINARIES: &[&str] = &["shoald", "shoal", "shoal-shim", "lab-http", "lab-echo"];
/// Docker's default seccomp profile as Debian installs it (what Shoal's runtime reads).
const SECCOMP_PROFILE: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
/// The shared folder's tag, mounted on /vagrant as Vagrant mounts its synced folder.
const SHARE_TAG: &str = "vagrant";
const POLL: Duration = Duration::from_millis(500);

/// Underlay address of VM `k`.
pub fn node_addr(k: usize) -> Ipv4Addr {
    shoal_lab::node_addr(k)
}

/// Underlay address of the client namespace.
pub const CLIENT_ADDR: Ipv4Addr = shoal_lab::CLIENT_ADDR;

/// What `lab.json` holds: enough for another process to drive or remove
/// the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    nodes: usize,
    managers: usize,
    persistent: bool,
    /// `<pid> <start time>` of the creator of a non-persistent lab.
    owner: Option<String>,
    image: PathBuf,
    accel: String,
    memory_mb: u32,
    cpus: u32,
}

/// Configures a VM lab; see [`VmLab::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VmLabBuilder {
    tag: String,
    name: Option<String>,
    nodes: usize,
    managers: usize,
    persistent: bool,
    binaries: Option<PathBuf>,
    memory_mb: u32,
    cpus: u32,
    init_args: String,
    shoald_args: String,
    ready_timeout: Duration,
}

/// A lab of VMs. A non-persistent lab (tests) is removed when dropped;
/// one whose creator died is removed by the next lab's sweep. A persistent
/// lab (`cargo xtask vm up`) stays until [`VmLab::down`].
#[derive(Debug)]
pub struct VmLab {
    record: Record,
    dir: PathBuf,
    image: Image,
    accel: Accel,
    remove_on_drop: bool,
}

/// How long each step of `start` took, for the report.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Building the image (`None`: it was cached).
    pub image_build: Option<Duration>,
    /// From the first qemu start until every VM reported provisioned.
    pub provision: Duration,
    /// Whole `start`.
    pub total: Duration,
}

impl VmLabBuilder {
    /// Number of VMs, 1 to [`MAX_NODES`] (default 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }
    /// n1..nM are managers (default 1).
    pub fn managers(mut self, managers: usize) -> Self {
        self.managers = managers;
        self
    }
    /// Keep the lab after this process exits (default false).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }
    /// Exactly this name instead of a unique `<tag>-<pid>-<n>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// The directory with shoald, shoal, shoal-shim (and the lab tools)
    /// shared into the VMs (default: the directory of the running
    /// executable or its parent, as for the netns lab's shoald).
    pub fn binaries(mut self, dir: impl Into<PathBuf>) -> Self {
        self.binaries = Some(dir.into());
        self
    }
    /// Memory per VM in MiB (default 1024).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }
    /// vCPUs per VM (default 2).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }
    /// Extra `shoal swarm init` flags for n1 (default: 5 s dispatcher heartbeats).
    pub fn init_args(mut self, args: impl Into<String>) -> Self {
        self.init_args = args.into();
        self
    }
    /// Extra shoald flags.
    pub fn shoald_args(mut self, args: impl Into<String>) -> Self {
        self.shoald_args = args.into();
        self
    }
    /// How long the VMs may take to boot and provision (default 15 min:
    /// under TCG the CPU is emulated).
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
                self.tag,
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn validate(&self, name: &str) -> Result<PathBuf, VmError> {
        shoal_lab::validate_name(name)?;
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(VmError::Config {
                reason: format!("--nodes {}: a VM lab has 1 to {MAX_NODES}", self.nodes),
            });
        }
        if !(1..=self.nodes).contains(&self.managers) {
            return Err(VmError::Config {
                reason: format!(
                    "--managers {}: give 1 to the number of nodes ({})",
                    self.managers, self.nodes
                ),
            });
        }
        if self.memory_mb < 256 || self.cpus == 0 {
            return Err(VmError::Config {
                reason: format!(
                    "{} MiB and {} vCPUs per VM: give at least 256 MiB and 1 vCPU",
                    self.memory_mb, self.cpus
                ),
            });
        }
        let bins = match &self.binaries {
            Some(dir) => dir.clone(),
            None => default_binaries()?,
        };
        for b in &BINARIES[..3] {
            if !bins.join(b).is_file() {
                return Err(VmError::Missing {
                    what: bins.join(b).display().to_string(),
                    fix: "build it with `cargo build --release --workspace` (or pass the directory that has it)".into(),
                });
            }
        }
        for tool in [
            "qemu-system-x86_64",
            "qemu-img",
            "debootstrap",
            "ssh",
            "ssh-keygen",
            "mkfs.ext4",
        ] {
            if !on_path(tool) {
                return Err(VmError::Missing {
                    what: tool.into(),
                    fix: "run `cargo xtask setup` (it installs the VM lab's packages)".into(),
                });
            }
        }
        Ok(bins)
    }

    /// Sweeps stale labs, builds the image if this machine has none, then
    /// starts every VM and waits until each has run provision.sh. On
    /// failure whatever was made is removed again.
    pub async fn start(self) -> Result<(VmLab, Timings), VmError> {
        let started = Instant::now();
        let name = self.lab_name();
        let bins = self.validate(&name)?;
        sweep_stale()?;
        if lab_dir(&name).exists() {
            return Err(VmError::Config {
                reason: format!(
                    "a VM lab {name:?} exists already: `cargo xtask vm down --name {name}` first"
                ),
            });
        }
        let provision = provision_script();
        let spec = ImageSpec::for_this_machine(&provision)?;
        let (image, image_build) = image::ensure(&spec)?;
        let accel = accel::detect(&image.kernel)?;
        let record = Record {
            name: name.clone(),
            nodes: self.nodes,
            managers: self.managers,
            persistent: self.persistent,
            owner: (!self.persistent)
                .then(|| owner_of(std::process::id()))
                .flatten(),
            image: image.dir.clone(),
            accel: accel.name().to_owned(),
            memory_mb: self.memory_mb,
            cpus: self.cpus,
        };
        let lab = VmLab {
            dir: lab_dir(&name),
            record,
            image,
            accel,
            remove_on_drop: false,
        };
        let t_vms = Instant::now();
        match lab.build(&bins, &provision, &self).await {
            Ok(()) => {
                let mut lab = lab;
                lab.remove_on_drop = !self.persistent;
                let timings = Timings {
                    image_build,
                    provision: t_vms.elapsed(),
                    total: started.elapsed(),
                };
                Ok((lab, timings))
            }
            Err(e) => {
                if let Err(cleanup) = lab.remove() {
                    eprintln!("vm: cleanup of {name} after a failed start: {cleanup}");
                }
                Err(e)
            }
        }
    }
}

impl VmLab {
    /// Starts configuring a lab named `<tag>-<pid>-<n>`.
    pub fn builder(tag: &str) -> VmLabBuilder {
        VmLabBuilder {
            tag: tag.to_owned(),
            name: None,
            nodes: 3,
            managers: 1,
            persistent: false,
            binaries: None,
            memory_mb: 1024,
            cpus: 2,
            init_args: DEFAULT_INIT_ARGS.to_owned(),
            shoald_args: String::new(),
            ready_timeout: Duration::from_secs(900),
        }
    }

    /// Reattaches to a lab another process made (dropping it removes nothing).
    pub fn open(name: &str) -> Result<VmLab, VmError> {
        shoal_lab::validate_name(name)?;
        let path = lab_dir(name).join("lab.json");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VmError::NoSuchLab { name: name.into() });
            }
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        let record: Record = serde_json::from_str(&text).map_err(|e| VmError::Config {
            reason: format!(
                "{}: {e}; remove the lab with `cargo xtask vm down --name {name}`",
                path.display()
            ),
        })?;
        let accel = Accel::parse(&record.accel).unwrap_or(Accel::Tcg);
        let image = Image::at(record.image.clone());
        Ok(VmLab {
            dir: lab_dir(name),
            record,
            image,
            accel,
            remove_on_drop: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }
    pub fn nodes(&self) -> usize {
        self.record.nodes
    }
    pub fn managers(&self) -> usize {
        self.record.managers
    }
    pub fn accel(&self) -> Accel {
        self.accel
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn persistent(&self) -> bool {
        self.record.persistent
    }
    /// The folder every VM mounts on /vagrant.
    pub fn share(&self) -> PathBuf {
        self.dir.join("share")
    }
    /// `shoalvm-<lab>-ul`: holds the bridge and the taps.
    pub fn underlay_netns(&self) -> String {
        format!("{NS_PREFIX}{}-ul", self.name())
    }
    /// `shoalvm-<lab>-client`: the host's way in, 198.18.0.250.
    pub fn client_netns(&self) -> String {
        format!("{NS_PREFIX}{}-client", self.name())
    }
    /// VM `k`'s serial console log.
    pub fn console(&self, k: usize) -> PathBuf {
        self.node_dir(k).join("console.log")
    }
    fn node_dir(&self, k: usize) -> PathBuf {
        self.dir.join(format!("n{k}"))
    }
    fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    fn status_file(&self, k: usize) -> PathBuf {
        self.share().join(".vm").join(format!("n{k}.status"))
    }
    /// What provision.sh printed in VM `k`.
    pub fn provision_log(&self, k: usize) -> PathBuf {
        self.share().join(".vm").join(format!("n{k}.provision.log"))
    }

    /// `k` from `nK` or `K`, checked against the lab.
    pub fn node_index(&self, node: &str) -> Result<usize, VmError> {
        let k = node
            .strip_prefix('n')
            .unwrap_or(node)
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=self.nodes()).contains(k));
        k.ok_or_else(|| VmError::NoSuchNode {
            lab: self.name().into(),
            node: node.into(),
            nodes: self.nodes(),
        })
    }

    fn check(&self, k: usize) -> Result<(), VmError> {
        if (1..=self.nodes()).contains(&k) {
            Ok(())
        } else {
            Err(VmError::NoSuchNode {
                lab: self.name().into(),
                node: format!("n{k}"),
                nodes: self.nodes(),
            })
        }
    }

    async fn build(
        &self,
        bins: &Path,
        provision: &Path,
        cfg: &VmLabBuilder,
    ) -> Result<(), VmError> {
        let vm_dir = self.share().join(".vm");
        fs::create_dir_all(&vm_dir).map_err(io_err(&vm_dir, "create"))?;
        let json = serde_json::to_string_pretty(&self.record).map_err(|e| VmError::Config {
            reason: format!("lab record: {e}"),
        })?;
        let record = self.dir.join("lab.json");
        fs::write(&record, json).map_err(io_err(&record, "write"))?;
        self.prepare_share(bins, provision, cfg)?;

        let ul = self.underlay_netns();
        let client = self.client_netns();
        shoal_lab::netns::create(&ul)?;
        let ul_handle = shoal_lab::netns::netlink(&ul)?;
        shoal_lab::create_bridge(&ul_handle, &ul).await?;
        shoal_lab::netns::create(&client)?;
        shoal_lab::attach(&ul_handle, &ul, "client", &client, CLIENT_ADDR).await?;

        for k in 1..=self.nodes() {
            let dir = self.node_dir(k);
            fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
            tool::output(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                    .arg(&self.image.rootfs)
                    .arg(dir.join("disk.qcow2")),
                "qemu-img create (the VM's overlay disk)",
            )?;
            self.spawn_vm(k, &ul_handle).await?;
        }
        for k in 1..=self.nodes() {
            self.wait_provisioned(k, cfg.ready_timeout).await?;
        }
        Ok(())
    }

    fn prepare_share(
        &self,
        bins: &Path,
        provision: &Path,
        cfg: &VmLabBuilder,
    ) -> Result<(), VmError> {
        let share = self.share();
        let bin_dir = share.join("bin");
        fs::create_dir_all(&bin_dir).map_err(io_err(&bin_dir, "create"))?;
        for b in BINARIES {
            let src = bins.join(b);
            if !src.is_file() {
                continue;
            }
            // Debug info is most of a debug build and useless in the VM.
            tool::output(
                Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(bin_dir.join(b))
                    .arg(&src),
                "strip (copying a binary into the share)",
            )?;
        }
        // Docker's seccomp profile from this machine's Debian package: the
        // VMs have no network to install it from (see provision.sh).
        let seccomp = Path::new(SECCOMP_PROFILE);
        if seccomp.is_file() {
            fs::copy(seccomp, bin_dir.join("seccomp.json")).map_err(io_err(seccomp, "copy"))?;
        }
        let script = share.join("provision.sh");
        fs::copy(provision, &script).map_err(io_err(provision, "copy"))?;
        let key = self.key();
        tool::output(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("shoal-vm-{}", self.name()))
                .arg("-f")
                .arg(&key),
            "ssh-keygen (the lab's key)",
        )?;
        let public = key.with_extension("pub");
        let authorized = share.join(".vm").join("authorized_keys");
        fs::copy(&public, &authorized).map_err(io_err(&public, "copy"))?;
        let env = format!(
            "SHOAL_MANAGERS={}\nSHOAL_INIT_ARGS={}\nSHOALD_ARGS={}\n",
            self.managers(),
            shell_quote(&cfg.init_args),
            shell_quote(&cfg.shoald_args)
        );
        let env_path = share.join(".vm").join("env");
        fs::write(&env_path, env).map_err(io_err(&env_path, "write"))
    }

    /// Starts VM `k`'s qemu (detached, inside the underlay namespace so
    /// its tap is made there) and plugs the tap into the bridge.
    async fn spawn_vm(&self, k: usize, ul_handle: &rtnetlink::Handle) -> Result<(), VmError> {
        let dir = self.node_dir(k);
        let pid_file = dir.join("qemu.pid");
        let tap = format!("n{k}");
        let append = format!(
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 shoal.node=n{k} shoal.addr={} shoal.prefix={PREFIX_LEN}",
            node_addr(k)
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(self.accel.qemu_args())
            .args(["-name", &format!("shoal-vm-{}-n{k}", self.name())])
            .args(["-smp", &self.record.cpus.to_string()])
            .args(["-m", &self.record.memory_mb.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initrd)
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                dir.join("disk.qcow2").display()
            ))
            .arg("-netdev")
            .arg(format!("tap,id=ul,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=ul,mac=52:54:00:c6:12:{k:02x}"
            ))
            .arg("-fsdev")
            .arg(format!(
                "local,id=share,path={},security_model=none",
                self.share().display()
            ))
            .arg("-device")
            .arg(format!("virtio-9p-pci,fsdev=share,mount_tag={SHARE_TAG}"))
            .args(["-device", "virtio-rng-pci"])
            .arg("-chardev")
            .arg(format!(
                "file,id=con,path={},append=on",
                self.console(k).display()
            ))
            .args(["-serial", "chardev:con"])
            .arg("-pidfile")
            .arg(&pid_file)
            .arg("-daemonize");
        let ul = self.underlay_netns();
        // The thread that forks qemu is in the underlay namespace, so qemu
        // (and the tap it opens) is too; -daemonize returns once it runs.
        shoal_lab::run_in_netns(&ul, move || tool::output(&mut cmd, "qemu-system-x86_64"))??;
        let bridge = shoal_lab::link_index(ul_handle, &ul, shoal_lab::BRIDGE).await?;
        let msg = rtnetlink::LinkUnspec::new_with_name(&tap)
            .controller(bridge)
            .mtu(shoal_lab::MTU)
            .up()
            .build();
        ul_handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| VmError::Netlink {
                what: format!("plug tap {tap} into {} in {ul}", shoal_lab::BRIDGE),
                source,
            })
    }

    /// VM `k`'s qemu pid, if it runs.
    pub fn pid(&self, k: usize) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.node_dir(k).join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // A recycled pid is not our qemu.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = format!("shoal-vm-{}-n{k}", self.name());
        String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == ours)
            .then_some(pid)
    }

    async fn wait_provisioned(&self, k: usize, timeout: Duration) -> Result<(), VmError> {
        let started = Instant::now();
        let status = self.status_file(k);
        loop {
            if let Ok(text) = fs::read_to_string(&status) {
                let text = text.trim();
                if text == "provisioned" {
                    return Ok(());
                }
                if !text.is_empty() {
                    return Err(VmError::Provision {
                        node: format!("n{k}"),
                        status: text.to_owned(),
                        log_tail: tool::tail(&self.provision_log(k), TAIL_LINES),
                    });
                }
            }
            if self.pid(k).is_none() {
                return Err(VmError::VmExited {
                    node: format!("n{k}"),
                    console_tail: tool::tail(&self.console(k), TAIL_LINES),
                });
            }
            if started.elapsed() > timeout {
                return Err(VmError::Timeout {
                    node: format!("n{k}"),
                    what: "provisioned",
                    waited: timeout,
                    detail: format!(
                        "console:\n{}\nprovision.log:\n{}",
                        tool::tail(&self.console(k), TAIL_LINES),
                        tool::tail(&self.provision_log(k), 10)
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `f` on a thread inside the client namespace: commands it spawns
    /// and sockets it opens are the client's (198.18.0.250).
    pub fn in_client<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, VmError> {
        Ok(shoal_lab::run_in_netns(&self.client_netns(), f)?)
    }

    /// An ssh command to VM `k` running `remote` (each word quoted for the
    /// remote shell). Spawn it inside [`VmLab::in_client`].
    pub fn ssh_command<S: AsRef<str>>(&self, k: usize, remote: &[S], tty: bool) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.key())
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15"])
            .arg(if tty { "-t" } else { "-T" })
            .arg(format!("root@{}", node_addr(k)));
        if !remote.is_empty() {
            let words: Vec<String> = remote.iter().map(|w| shell_quote(w.as_ref())).collect();
            cmd.arg("--").arg(words.join(" "));
        }
        cmd
    }

    /// Runs `remote` in VM `k` over ssh and returns what it printed; a
    /// non-zero exit is an error with its stderr.
    pub fn exec<S: AsRef<str>>(&self, k: usize, remote: &[S]) -> Result<String, VmError> {
        let out = self.exec_output(k, remote)?;
        if !out.status.success() {
            let words: Vec<&str> = remote.iter().map(AsRef::as_ref).collect();
            return Err(VmError::Tool {
                tool: format!("n{k}: {}", words.join(" ")),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// As [`VmLab::exec`], with the whole output and status.
    pub fn exec_output<S: AsRef<str>>(&self, k: usize, remote: &[S]) -> Result<Output, VmError> {
        self.check(k)?;
        let mut cmd = self.ssh_command(k, remote, false);
        cmd.stdin(Stdio::null());
        self.in_client(move || cmd.output())?
            .map_err(|e| VmError::Tool {
                tool: "ssh".into(),
                status: format!("cannot start: {e}"),
                output: String::new(),
            })
    }

    /// Runs `remote` in VM `k` with this terminal (`vm exec`, `vm ssh`).
    pub fn exec_interactive<S: AsRef<str>>(
        &self,
        k: usize,
        remote: &[S],
        tty: bool,
    ) -> Result<ExitStatus, VmError> {
        self.check(k)?;
        let mut cmd = self.ssh_command(k, remote, tty);
        self.in_client(move || cmd.status())?
            .map_err(|e| VmError::Tool {
                tool: "ssh".into(),
                status: format!("cannot start: {e}"),
                output: String::new(),
            })
    }

    /// Runs `program` in the client namespace and returns its output.
    pub fn client_output(
        &self,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> Result<Output, VmError> {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args).stdin(Stdio::null());
        let what = program.as_ref().to_string_lossy().into_owned();
        self.in_client(move || cmd.output())?
            .map_err(|e| VmError::Tool {
                tool: what,
                status: format!("cannot start: {e}"),
                output: String::new(),
            })
    }

    /// Waits until `remote` succeeds in VM `k` (ssh up, daemon answering…).
    pub async fn wait_for<S: AsRef<str>>(
        &self,
        k: usize,
        remote: &[S],
        what: &'static str,
        timeout: Duration,
    ) -> Result<(), VmError> {
        let started = Instant::now();
        loop {
            let last = self.exec_output(k, remote)?;
            if last.status.success() {
                return Ok(());
            }
            if self.pid(k).is_none() {
                return Err(VmError::VmExited {
                    node: format!("n{k}"),
                    console_tail: tool::tail(&self.console(k), TAIL_LINES),
                });
            }
            if started.elapsed() > timeout {
                return Err(VmError::Timeout {
                    node: format!("n{k}"),
                    what,
                    waited: timeout,
                    detail: format!(
                        "{}{}console:\n{}",
                        String::from_utf8_lossy(&last.stdout),
                        String::from_utf8_lossy(&last.stderr),
                        tool::tail(&self.console(k), 15)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Shuts VM `k` down cleanly (`systemctl poweroff`), pulling the plug
    /// after `grace`.
    pub async fn stop(&self, k: usize, grace: Duration) -> Result<(), VmError> {
        self.check(k)?;
        if self.pid(k).is_none() {
            return Ok(());
        }
        // The connection drops as the VM goes down: its status means nothing.
        let _goes_down = self.exec_output(k, &["systemctl", "poweroff"]);
        let started = Instant::now();
        while self.pid(k).is_some() && started.elapsed() < grace {
            tokio::time::sleep(POLL).await;
        }
        self.kill(k).await
    }

    /// Kills VM `k`'s qemu at once: a machine that loses power.
    pub async fn kill(&self, k: usize) -> Result<(), VmError> {
        self.check(k)?;
        kill_qemu(self.pid(k), Signal::SIGKILL).await;
        Ok(())
    }

    /// Boots VM `k` again from its own disk (a stopped or killed VM) and
    /// waits until its shoald answers; a running VM is left alone.
    pub async fn start(&self, k: usize, timeout: Duration) -> Result<(), VmError> {
        self.check(k)?;
        if self.pid(k).is_none() {
            let ul = self.underlay_netns();
            let handle = shoal_lab::netns::netlink(&ul)?;
            self.spawn_vm(k, &handle).await?;
        }
        self.wait_for(k, &["shoal", "info"], "answering `shoal info`", timeout)
            .await
    }

    /// Reboots VM `k` from inside (`systemctl reboot`) and waits until it
    /// is back with shoald answering.
    pub async fn reboot(&self, k: usize, timeout: Duration) -> Result<(), VmError> {
        let boot_id = ["cat", "/proc/sys/kernel/random/boot_id"];
        let before = self.exec(k, &boot_id)?;
        let _goes_down = self.exec_output(k, &["systemctl", "reboot"]);
        let started = Instant::now();
        loop {
            let now = self.exec_output(k, &boot_id)?;
            if now.status.success() && String::from_utf8_lossy(&now.stdout) != before {
                break;
            }
            if started.elapsed() > timeout {
                return Err(VmError::Timeout {
                    node: format!("n{k}"),
                    what: "rebooted",
                    waited: timeout,
                    detail: tool::tail(&self.console(k), TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let left = timeout.saturating_sub(started.elapsed());
        self.wait_for(k, &["shoal", "info"], "answering `shoal info`", left)
            .await
    }

    /// Removes the lab: every qemu, the namespaces (with the bridge; taps
    /// go with their qemu), the files.
    pub fn down(mut self) -> Result<(), VmError> {
        self.remove_on_drop = false;
        self.remove()
    }

    fn remove(&self) -> Result<(), VmError> {
        remove_lab(self.name())
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        if std::thread::panicking() {
            for k in 1..=self.nodes() {
                eprintln!(
                    "---- VM lab {}: n{k} console (last {TAIL_LINES} lines) ----\n{}\n---- n{k} provision.log ----\n{}",
                    self.name(),
                    tool::tail(&self.console(k), TAIL_LINES),
                    tool::tail(&self.provision_log(k), 15),
                );
            }
        }
        if let Err(e) = self.remove() {
            eprintln!("vm: removing lab {}: {e}", self.name());
        }
    }
}

/// `swarm init` flags of the VM lab: swarm's 5 s default heartbeat. Under
/// TCG a node's heartbeat can be a second late; the netns lab's 1 s
/// would mark nodes down that are only slow.
pub const DEFAULT_INIT_ARGS: &str = "--dispatcher-heartbeat 5s";

/// `/run/shoal-vm/<lab>`.
pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// vagrant/provision.sh of this source tree.
pub fn provision_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("vagrant")
        .join("provision.sh")
}

/// Where the running executable's build keeps its binaries: its own
/// directory or the parent (test binaries run from `target/<profile>/deps`).
fn default_binaries() -> Result<PathBuf, VmError> {
    let exe = std::env::current_exe().map_err(io_err("/proc/self/exe", "read"))?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect();
    candidates
        .iter()
        .find(|d| d.join("shoald").is_file())
        .cloned()
        .ok_or_else(|| VmError::Missing {
            what: format!("shoald next to {}", exe.display()),
            fix: "build the workspace's binaries first (`cargo build --workspace --bins`)".into(),
        })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

/// `<pid> <start time>`: a pid alone could be reused by the time we look.
fn owner_of(pid: u32) -> Option<String> {
    Some(format!("{pid} {}", start_time(pid)?))
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces, so count after ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn owner_alive(owner: &str) -> bool {
    let mut words = owner.split_whitespace();
    let (Some(pid), Some(start)) = (words.next(), words.next()) else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .and_then(start_time)
        .is_some_and(|t| t.to_string() == start)
}

async fn kill_qemu(pid: Option<i32>, signal: Signal) {
    let Some(pid) = pid else { return };
    // ESRCH: gone already, which is what we want.
    let _gone = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes lab `name` from any process: kills its qemus, deletes its
/// namespaces and its directory. Each step tolerates a concurrent remover.
pub fn remove_lab(name: &str) -> Result<(), VmError> {
    let dir = lab_dir(name);
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let pid_file = entry.path().join("qemu.pid");
            let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let ours = fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("shoal-vm-{name}-")));
            if ours {
                let _gone = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    for suffix in ["client", "ul"] {
        shoal_lab::netns::delete(&format!("{NS_PREFIX}{name}-{suffix}"))?;
    }
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir, "remove")(e)),
        _ => Ok(()),
    }
}

/// Names of the VM labs on this machine.
pub fn list_labs() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(RUN_DIR)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("lab.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Removes labs whose creating process is gone (non-persistent ones), and
/// VM-lab namespaces with no lab directory. Returns the names removed.
pub fn sweep_stale() -> Result<Vec<String>, VmError> {
    let mut swept = Vec::new();
    for name in list_labs() {
        let Ok(lab) = VmLab::open(&name) else {
            continue;
        };
        if let Some(owner) = &lab.record.owner
            && !lab.record.persistent
            && !owner_alive(owner)
        {
            remove_lab(&name)?;
            swept.push(name);
        }
    }
    for ns in shoal_lab::netns::list()? {
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some((lab, _)) = rest.rsplit_once('-') else {
            continue;
        };
        if !lab_dir(lab).exists() {
            shoal_lab::netns::delete(&ns)?;
            swept.push(lab.to_owned());
        }
    }
    swept.dedup();
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_bad_settings_naming_the_flag() {
        let err = |b: VmLabBuilder| b.validate("x").map(drop).map_err(|e| e.to_string());
        let e = err(VmLab::builder("t").nodes(0)).expect_err("refused");
        assert!(e.contains("--nodes 0"), "{e}");
        let e = err(VmLab::builder("t").nodes(2).managers(3)).expect_err("refused");
        assert!(e.contains("--managers 3"), "{e}");
        let e = err(VmLab::builder("t").memory_mb(64)).expect_err("refused");
        assert!(e.contains("256 MiB"), "{e}");
    }

    #[test]
    fn owner_is_this_process_while_it_lives() {
        let me = owner_of(std::process::id()).expect("own /proc entry");
        assert!(owner_alive(&me));
        assert!(!owner_alive("1 0"), "pid 1 did not start at tick 0");
        assert!(!owner_alive("garbage"));
    }
}
