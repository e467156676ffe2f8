//! `cargo xtask lab …`: a persistent netns lab to poke at by hand. The lab
//! outlives the command (daemons detached in their own sessions) until
//! `lab down`.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitStatus;

use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use shoal_lab::{Formation, Lab, LabError, sweep_stale};

/// Name of the lab the commands act on.
#[derive(clap::Args)]
pub struct LabName {
    /// Lab name (namespaces are shoal-<name>-nK).
    #[arg(long, env = "SHOAL_LAB", default_value = "lab")]
    name: String,
}

#[derive(clap::Subcommand)]
pub enum LabCmd {
    /// Create the lab and start shoald on every node, then return.
    Up {
        /// Number of nodes (n1..nN at 198.18.0.1..N).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Number of managers: n1 runs `swarm init`, n2..nM join as
        /// managers and the rest as workers.
        #[arg(long, default_value_t = 1)]
        managers: usize,
        /// Only start the daemons; leave `swarm init`/`join` to you.
        #[arg(long)]
        no_swarm: bool,
        /// Use the binaries as they are: skip setup and `cargo build`.
        #[arg(long)]
        no_build: bool,
        #[command(flatten)]
        lab: LabName,
    },
    /// Show nodes, namespaces, addresses and daemons.
    Status {
        #[command(flatten)]
        lab: LabName,
    },
    /// Remove the lab: daemons, namespaces, files. Also sweeps labs of dead
    /// test processes.
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Run a command inside node nK, with SHOAL_HOST set to its daemon
    /// (e.g. `lab exec n1 -- shoal info`).
    Exec {
        /// Node, as nK or K.
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
        #[command(flatten)]
        lab: LabName,
    },
    /// Build the lab images here (busybox from Debian's busybox-static, and
    /// the lab tools: lab-http, lab-echo, iperf3) and `shoal image load`
    /// them into node nK; other nodes fetch them from it over 2377.
    Images {
        /// Node, as nK or K.
        #[arg(default_value = "n1")]
        node: String,
        #[command(flatten)]
        lab: LabName,
    },
    /// Run a command in the client namespace (198.18.0.250, not a node).
    Client {
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
        #[command(flatten)]
        lab: LabName,
    },
    /// Stop node nK's shoald; its tasks keep running (live restore) and
    /// `lab start` takes them back.
    Stop {
        node: String,
        #[command(flatten)]
        lab: LabName,
    },
    /// Start node nK's shoald (again).
    Start {
        node: String,
        #[command(flatten)]
        lab: LabName,
    },
    /// Cut node nK off the underlay (its bridge port goes down).
    Cut {
        node: String,
        #[command(flatten)]
        lab: LabName,
    },
    /// Reconnect node nK to the underlay.
    Heal {
        node: String,
        #[command(flatten)]
        lab: LabName,
    },
}

pub fn run(cmd: LabCmd) -> anyhow::Result<()> {
    crate::root_runtime("the lab creates network namespaces")?.block_on(dispatch(cmd))
}

async fn dispatch(cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up {
            nodes,
            managers,
            no_swarm,
            no_build,
            lab,
        } => up(&lab.name, nodes, managers, no_swarm, no_build).await,
        LabCmd::Status { lab } => status(&open(&lab.name)?),
        LabCmd::Down { lab } => down(&lab.name),
        LabCmd::Exec { node, command, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            let (program, args) = split(&command)?;
            let mut command = lab.command(k, program);
            exit_with(
                command.args(args).env("PATH", path_with_target()?).status(),
                program,
            )
        }
        LabCmd::Images { node, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            for archive in [
                shoal_lab::images::busybox_archive()?,
                shoal_lab::images::lab_tools_archive()?,
            ] {
                print!("{}", lab.load_image(k, archive)?);
            }
            Ok(())
        }
        LabCmd::Client { command, lab } => {
            let lab = open(&lab.name)?;
            if lab.client_netns().is_none() {
                bail!("lab {} has no client namespace", lab.name());
            }
            let (program, args) = split(&command)?;
            let mut command = lab.client_command(program);
            exit_with(
                command.args(args).env("PATH", path_with_target()?).status(),
                program,
            )
        }
        LabCmd::Stop { node, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            lab.stop_daemon(k).await?;
            println!("{}: shoald stopped", lab.node(k).name());
            Ok(())
        }
        LabCmd::Start { node, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            lab.start(k).await?;
            let node = lab.node(k);
            println!("{}: shoald running (pid {})", node.name(), pid(node));
            Ok(())
        }
        LabCmd::Cut { node, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            lab.cut(k).await?;
            println!("{}: cut off the underlay", lab.node(k).name());
            Ok(())
        }
        LabCmd::Heal { node, lab } => {
            let lab = open(&lab.name)?;
            let k = node_index(&lab, &node)?;
            lab.heal(k).await?;
            println!("{}: back on the underlay", lab.node(k).name());
            Ok(())
        }
    }
}

async fn up(
    name: &str,
    nodes: usize,
    managers: usize,
    no_swarm: bool,
    no_build: bool,
) -> anyhow::Result<()> {
    // Refuse early, before a build, if the lab is already up.
    if Lab::exists(name) {
        bail!(already_up(name));
    }
    if managers == 0 || managers > nodes {
        bail!("--managers {managers}: give 1 to --nodes ({nodes})");
    }
    let mut builder = Lab::builder("lab");
    let shoald = if !no_build && std::env::var_os(shoal_lab::SHOALD_BIN_ENV).is_none() {
        let shoald = crate::setup::prepare_binaries()?.join("shoald");
        builder = builder.shoald(shoald.clone());
        shoald
    } else {
        shoal_lab::shoald_path()?
    };
    let started = builder
        .name(name)
        .nodes(nodes)
        .managers(managers)
        .client(true)
        .persistent(true)
        .start()
        .await;
    let lab = match started {
        Ok(lab) => lab,
        Err(LabError::Exists { name }) => bail!(already_up(&name)),
        Err(e) => return Err(e.into()),
    };
    if !no_swarm {
        form(&lab, &shoald.with_file_name("shoal"))?;
    }
    status(&lab)?;
    let flag = if name == "lab" {
        String::new()
    } else {
        format!(" --name {name}")
    };
    println!(
        "\nTry: cargo xtask lab exec{flag} n1 -- shoal info\n     \
         cargo xtask lab client{flag} -- ping -c1 198.18.0.1\n     \
         cargo xtask lab down{flag}"
    );
    Ok(())
}

/// Runs `shoal ARGS` on node `k`, echoing it, and returns its stdout.
fn shoal(lab: &Lab, k: usize, shoal: &Path, args: &[&str]) -> anyhow::Result<String> {
    let shown: Vec<&str> = args
        .iter()
        .map(|a| {
            if a.starts_with("SWMTKN-") {
                "<token>"
            } else {
                a
            }
        })
        .collect();
    println!("n{k}$ shoal {}", shown.join(" "));
    let out = lab
        .command(k, shoal)
        .args(args)
        .output()
        .with_context(|| format!("running {}", shoal.display()))?;
    if !out.status.success() {
        bail!(
            "n{k}: shoal {} failed: {}(the lab is up; look around with `cargo xtask lab exec n{k} -- shoal info`)",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cluster the lab stands for: n1 inits, then managers, then workers join.
fn form(lab: &Lab, bin: &Path) -> anyhow::Result<()> {
    let swarm = Formation::plain(lab.managers(), lab.nodes().len());
    lab.form_swarm_with(swarm, |k, args| shoal(lab, k, bin, args))?;
    print!("{}", shoal(lab, 1, bin, &["node", "ls"])?);
    Ok(())
}

fn already_up(name: &str) -> String {
    format!(
        "lab {name} is already up (see `cargo xtask lab status --name {name}`); \
         run `cargo xtask lab down --name {name}` first"
    )
}

fn down(name: &str) -> anyhow::Result<()> {
    for swept in sweep_stale()? {
        println!("swept stale lab {swept}");
    }
    match Lab::open(name) {
        Ok(lab) => {
            lab.down()?;
            println!("lab {name} removed");
            Ok(())
        }
        Err(LabError::NotFound { .. }) => {
            println!("no lab named {name}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn open(name: &str) -> anyhow::Result<Lab> {
    Lab::open(name).map_err(|e| match e {
        LabError::NotFound { name } => {
            anyhow::anyhow!("no lab named {name}; create it with `cargo xtask lab up`")
        }
        e => e.into(),
    })
}

fn pid(node: &shoal_lab::Node) -> String {
    node.pid()
        .map_or_else(|| "-".to_owned(), |pid| pid.to_string())
}

fn status(lab: &Lab) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["node", "netns", "address", "daemon pid", "running"]);
    for node in lab.nodes() {
        let role = if node.index() <= lab.managers() {
            " (manager)"
        } else {
            ""
        };
        let pid = pid(node);
        let running = if pid == "-" { "no" } else { "yes" };
        table.add_row([
            format!("{}{role}", node.name()),
            node.netns().to_owned(),
            node.addr().to_string(),
            pid,
            running.to_owned(),
        ]);
    }
    if let Some(client) = lab.client_netns() {
        table.add_row([
            "client".to_owned(),
            client,
            lab.client_addr().to_string(),
            "-".to_owned(),
            "-".to_owned(),
        ]);
    }
    println!(
        "lab {} ({}, underlay {} in {}):\n{table}",
        lab.name(),
        if lab.persistent() {
            "persistent"
        } else {
            "test"
        },
        shoal_lab::BRIDGE,
        lab.underlay_netns()
    );
    println!("logs and state: {}/nK/", lab.dir().display());
    Ok(())
}

/// `n2` or `2` → 2, checked against the lab.
fn node_index(lab: &Lab, node: &str) -> anyhow::Result<usize> {
    let k: usize = node
        .strip_prefix('n')
        .unwrap_or(node)
        .parse()
        .with_context(|| format!("{node:?} is not a node name (n1, n2, …)"))?;
    if lab.get(k).is_none() {
        bail!(
            "lab {} has no node {node} (it has n1..n{})",
            lab.name(),
            lab.nodes().len()
        );
    }
    Ok(k)
}

/// $PATH with this build's target dir (where `shoal` and `shoald` are) first.
fn path_with_target() -> anyhow::Result<OsString> {
    let exe = std::env::current_exe()?;
    let target = exe.parent().context("xtask has no parent directory")?;
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(target.to_path_buf()).chain(std::env::split_paths(&rest));
    Ok(std::env::join_paths(dirs)?)
}

fn split(command: &[OsString]) -> anyhow::Result<(&OsString, &[OsString])> {
    command.split_first().context("no command given after --")
}

/// Exits with the command's status, as a shell would (128 + signal).
fn exit_with(status: std::io::Result<ExitStatus>, program: &OsString) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let status = status.with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    std::process::exit(code)
}
