//! `cargo xtask vm …`: Shoal nodes as qemu VMs with Debian's own kernel,
//! provisioned by vagrant/provision.sh (see `shoal_vmlab`). The lab
//! outlives the command (qemu daemonized) until `vm down`.

use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use shoal_vmlab::{VmLab, node_addr};

/// How long a VM gets to power off before its qemu is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// Booting until shoald answers, under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct VmName {
    /// Lab name (namespaces are shoalvm-<name>-{ul,client}).
    #[arg(long, env = "SHOAL_VM_LAB", default_value = "vm")]
    name: String,
}

#[derive(clap::Subcommand)]
pub enum VmCmd {
    /// Build the VM image if this machine has none (cached in
    /// /var/cache/shoal-vm/), boot the VMs and provision them with
    /// vagrant/provision.sh: n1 runs `swarm init`, the others join.
    Up {
        /// Number of VMs (n1..nN at 198.18.0.1..N).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// n1..nM are managers.
        #[arg(long, default_value_t = 1)]
        managers: usize,
        /// Share target/debug's binaries instead of target/release's.
        #[arg(long)]
        debug: bool,
        /// Use the binaries as they are: skip setup and `cargo build`.
        #[arg(long)]
        no_build: bool,
        /// Memory per VM, MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// vCPUs per VM.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        #[command(flatten)]
        lab: VmName,
    },
    /// Show the VMs, their addresses and qemu processes.
    Status {
        #[command(flatten)]
        lab: VmName,
    },
    /// Remove the lab: every qemu, tap, bridge, namespace and file. Also
    /// sweeps labs of dead test processes.
    Down {
        #[command(flatten)]
        lab: VmName,
    },
    /// Run a command in VM nK over ssh (e.g. `vm exec n1 -- shoal node ls`).
    Exec {
        /// VM, as nK or K.
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        lab: VmName,
    },
    /// An interactive shell in VM nK.
    Ssh {
        node: String,
        #[command(flatten)]
        lab: VmName,
    },
    /// Run a command in the client namespace (198.18.0.250, not a VM).
    Client {
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
        #[command(flatten)]
        lab: VmName,
    },
    /// Power VM nK off cleanly (its qemu is killed after 60 s).
    Stop {
        node: String,
        #[command(flatten)]
        lab: VmName,
    },
    /// Boot VM nK again from its own disk and wait for its shoald.
    Start {
        node: String,
        #[command(flatten)]
        lab: VmName,
    },
    /// Kill VM nK's qemu at once, as a machine losing power.
    Kill {
        node: String,
        #[command(flatten)]
        lab: VmName,
    },
    /// Reboot VM nK from inside and wait until its shoald answers.
    Reboot {
        node: String,
        #[command(flatten)]
        lab: VmName,
    },
    /// Load the lab tools image (`shoal.local/lab-tools:latest`: iperf3,
    /// lab-echo, lab-http) on VM nK, which `shoal bench` runs from; the
    /// other nodes fetch it from there.
    LabTools {
        #[arg(default_value = "n1")]
        node: String,
        /// Take lab-echo and lab-http from target/debug (as `up --debug`).
        #[arg(long)]
        debug: bool,
        #[command(flatten)]
        lab: VmName,
    },
}

/// The lab tools image (the VMs run the host's Debian, so its binaries
/// and libraries fit), piped into `shoal image load` on VM `k`.
fn load_lab_tools(vm: &VmLab, k: usize, bin: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let archive = crate::bench::lab_tools_archive(bin)?;
    let mut cmd = vm.ssh_command(k, &["shoal", "image", "load"], false);
    cmd.stdin(std::process::Stdio::piped());
    let status = vm.in_client(move || -> std::io::Result<ExitStatus> {
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&archive)?;
        }
        child.wait()
    })??;
    if !status.success() {
        bail!("n{k}: shoal image load: {status}");
    }
    println!(
        "vm: {} loaded on n{k}",
        shoal_image::fixtures::LAB_TOOLS_REFERENCE
    );
    Ok(())
}

pub fn run(cmd: VmCmd) -> anyhow::Result<()> {
    crate::root_runtime("the VM lab creates network namespaces and taps")?.block_on(dispatch(cmd))
}

async fn dispatch(cmd: VmCmd) -> anyhow::Result<()> {
    match cmd {
        VmCmd::Up {
            nodes,
            managers,
            debug,
            no_build,
            memory,
            cpus,
            lab,
        } => {
            let bins = match (no_build, debug) {
                (false, false) => crate::setup::prepare_release_binaries()?,
                (false, true) => crate::setup::prepare_binaries()?,
                (true, release) => crate::setup::workspace_root()
                    .join("target")
                    .join(if release { "debug" } else { "release" }),
            };
            println!(
                "vm: starting {nodes} VMs ({managers} managers) with {}",
                bins.display()
            );
            let (vm, timings) = VmLab::builder("vm")
                .name(&lab.name)
                .nodes(nodes)
                .managers(managers)
                .persistent(true)
                .binaries(bins)
                .memory_mb(memory)
                .cpus(cpus)
                .start()
                .await?;
            match timings.image_build {
                Some(t) => println!("vm: image built in {t:.0?} (cold cache)"),
                None => println!("vm: image from the cache (warm)"),
            }
            println!(
                "vm: {nodes} VMs booted and provisioned in {:.0?} under {}; `vm up` took {:.0?}",
                timings.provision,
                vm.accel().name(),
                timings.total
            );
            status(&vm)
        }
        VmCmd::Status { lab } => status(&VmLab::open(&lab.name)?),
        VmCmd::Down { lab } => {
            let t = Instant::now();
            match VmLab::open(&lab.name) {
                Ok(vm) => vm.down()?,
                // A half-made lab without lab.json: remove what is there.
                Err(shoal_vmlab::VmError::NoSuchLab { .. }) => {
                    shoal_vmlab::remove_lab(&lab.name)?;
                }
                Err(e) => return Err(e.into()),
            }
            let swept = shoal_vmlab::sweep_stale()?;
            if !swept.is_empty() {
                println!("vm: also removed stale labs {}", swept.join(", "));
            }
            println!("vm: lab {} removed in {:.1?}", lab.name, t.elapsed());
            Ok(())
        }
        VmCmd::Exec { node, command, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            exit_with(vm.exec_interactive(k, &command, false)?)
        }
        VmCmd::LabTools { node, debug, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            let bin = crate::setup::workspace_root()
                .join("target")
                .join(if debug { "debug" } else { "release" });
            load_lab_tools(&vm, k, &bin)
        }
        VmCmd::Ssh { node, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            exit_with(vm.exec_interactive::<&str>(k, &[], true)?)
        }
        VmCmd::Client { command, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let (program, args) = command.split_first().context("no command given after --")?;
            let mut cmd = std::process::Command::new(program);
            cmd.args(args);
            let status = vm
                .in_client(move || cmd.status())?
                .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
            exit_with(status)
        }
        VmCmd::Stop { node, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            let t = Instant::now();
            vm.stop(k, STOP_GRACE).await?;
            println!("vm: n{k} stopped in {:.1?}", t.elapsed());
            Ok(())
        }
        VmCmd::Start { node, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            let t = Instant::now();
            vm.start(k, BOOT_TIMEOUT).await?;
            println!("vm: n{k} booted, shoald answering, in {:.1?}", t.elapsed());
            Ok(())
        }
        VmCmd::Kill { node, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            vm.kill(k).await?;
            println!("vm: n{k} killed");
            Ok(())
        }
        VmCmd::Reboot { node, lab } => {
            let vm = VmLab::open(&lab.name)?;
            let k = vm.node_index(&node)?;
            let t = Instant::now();
            vm.reboot(k, BOOT_TIMEOUT).await?;
            println!(
                "vm: n{k} rebooted, shoald answering, in {:.1?}",
                t.elapsed()
            );
            Ok(())
        }
    }
}

fn status(vm: &VmLab) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["node", "address", "qemu pid", "console"]);
    for k in 1..=vm.nodes() {
        let role = if k <= vm.managers() { " (manager)" } else { "" };
        table.add_row([
            format!("n{k}{role}"),
            node_addr(k).to_string(),
            vm.pid(k)
                .map_or("- (not running)".into(), |p| p.to_string()),
            vm.console(k).display().to_string(),
        ]);
    }
    table.add_row([
        "client".to_owned(),
        shoal_vmlab::CLIENT_ADDR.to_string(),
        "-".into(),
        vm.client_netns(),
    ]);
    println!(
        "VM lab {} ({}, {}; underlay {} in {}):\n{table}",
        vm.name(),
        if vm.persistent() {
            "persistent"
        } else {
            "test"
        },
        vm.accel().name(),
        shoal_lab::BRIDGE,
        vm.underlay_netns()
    );
    println!(
        "shared folder (/vagrant in every VM): {}",
        vm.share().display()
    );
    Ok(())
}

fn exit_with(status: ExitStatus) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    if code == 255 {
        bail!("ssh failed (exit 255): is the VM up? see `cargo xtask vm status`");
    }
    std::process::exit(code)
}
