//! `shoald`: the Shoal node daemon. It loads and attaches the eBPF programs
//! (`datapath`, the only module that touches aya), serves the local node API,
//! runs the manager when the node is one, and follows its assignments
//! (`worker`: overlays, tasks, the mesh's maps) through narrow ports.

mod api;
mod applied;
mod autolock;
mod datapath;
mod docker_api;
mod doctor;
mod drain;
mod endpoints;
#[cfg(test)]
mod fake;
mod health;
mod images;
mod ipsec;
mod link;
mod local;
mod logs;
mod ports;
mod resources;
mod session;
mod swarm;
mod task_files;
mod volumes;
mod wireguard;
mod worker;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use clap::Parser;
use tracing::info;

use shoal_common::mesh::MeshConfig;

use crate::{
    api::{NodeApi, NodeInfo},
    datapath::{
        Datapath,
        mesh::{FastPath, Mesh},
    },
};

#[derive(Parser, Debug)]
#[command(name = "shoald", version, about = "Shoal node daemon")]
struct Args {
    /// Name the cluster shows for this node [default: the system hostname].
    #[arg(long, env = "SHOAL_HOSTNAME")]
    hostname: Option<String>,
    /// Where this node keeps its state.
    #[arg(long, default_value = "/var/lib/shoal")]
    state_dir: PathBuf,
    /// A registry reached over plain HTTP (host:port), as dockerd's
    /// `--insecure-registry`; localhost and 127.0.0.0/8 always are.
    #[arg(
        long = "insecure-registry",
        env = "SHOAL_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Unix socket of the local API (root only), used by `shoal`.
    #[arg(long, default_value = shoal_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Interface carrying overlay and published-port traffic [default: the
    /// only non-loopback interface that is up].
    #[arg(long)]
    data_interface: Option<String>,
    /// Directory on bpffs for the routing mesh's pinned maps and links: what
    /// lets a restarted shoald carry on every tracked connection. One per
    /// node; bpffs is mounted on /sys/fs/bpf if it is not there.
    #[arg(long, default_value = "/sys/fs/bpf/shoal")]
    bpf_dir: PathBuf,
    /// An idle TCP flow through the mesh chooses its backend again after
    /// this long (IPVS's silent 900 s is what swarm users trip on).
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    mesh_tcp_timeout: std::time::Duration,
    /// The same for UDP, which has no end of flow.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    mesh_udp_timeout: std::time::Duration,
    /// The task runtime's state: bundles, task network namespaces, runc's
    /// state. Tasks outlive shoald; the next one takes them back from here
    /// [default: <state-dir>/runtime].
    #[arg(long)]
    runtime_state: Option<PathBuf>,
    /// How often the node's WireGuard key pair is replaced (tests shorten
    /// it; swarm's network keys rotate every 12 h too).
    #[arg(long, default_value = "12h", value_parser = parse_duration, hide = true)]
    wireguard_key_rotation: std::time::Duration,
    /// Whether the routing mesh stops sending new connections to a node's
    /// tasks as soon as gossip suspects the node lost (about half a second
    /// after it stops answering; its connections are kept, and it is taken
    /// back when it answers). `false`: only once gossip declares it down
    /// (about 5 s) and its entries go, for networks that lose probes
    /// often.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mesh_drain_suspected: bool,
    /// How much of the overlay's path skips the kernel's: `full` (the data
    /// interface decapsulates VXLAN for local tasks, tasks' veths
    /// encapsulate their frames for other nodes themselves), `redirect`
    /// (frames go straight to and from the VXLAN devices, which
    /// encapsulate and decapsulate), `off`
    /// (every frame through the bridge: what `tcpdump` on a bridge or a
    /// task's host-side veth needs to see). Applies to tasks started after.
    #[arg(long, env = "SHOAL_FAST_PATH", default_value = "full")]
    fast_path: FastPath,
}

/// `90s`, `15m`, `6h` or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h, e.g. 90s"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be at least 1s"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();

    let hostname = match args.hostname {
        Some(h) => h,
        None => nix::unistd::gethostname()
            .context("reading the hostname; pass --hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    let iface = match args.data_interface {
        Some(i) => i,
        None => pick_data_interface()?,
    };
    let ifindex = nix::net::if_::if_nametoindex(iface.as_str()).with_context(|| {
        format!("data interface {iface:?} does not exist; pass --data-interface NAME")
    })?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating --state-dir {}", args.state_dir.display()))?;
    routing_sysctls();

    let mut dp = Datapath::load().context("loading the eBPF programs")?;
    let mode = dp
        .attach(&iface)
        .with_context(|| format!("attaching the TC programs to {iface}"))?;
    info!(%iface, mode = mode.name(), "TC programs attached");
    let data_ip = ipv4_of(&iface);
    let data_ipv4 = match data_ip {
        Some(std::net::IpAddr::V4(ip)) => Some(ip),
        _ => None,
    };
    // After the counters, so they see packets as they arrived.
    let mut mesh = Mesh::load(&args.bpf_dir).context("loading the routing mesh's eBPF programs")?;
    mesh.set_fast_path(args.fast_path)
        .context("setting the overlay's fast path")?;
    mesh.attach(&iface)
        .with_context(|| format!("attaching the routing mesh to {iface}"))?;
    if let Some(ip) = data_ipv4 {
        mesh.set_config(MeshConfig {
            tcp_timeout_ns: args.mesh_tcp_timeout.as_nanos() as u64,
            udp_timeout_ns: args.mesh_udp_timeout.as_nanos() as u64,
            node_mac: shoal_common::mesh::bridge_mac(u32::from(ip)),
            _pad: [0; 2],
        })
        .context("configuring the routing mesh")?;
    }
    info!(%iface, "routing mesh attached");
    datapath::release_load_memory();
    let node_info = NodeInfo {
        hostname: hostname.clone(),
        data_interface: iface.clone(),
        data_ifindex: ifindex,
        attach_mode: mode.name(),
        programs: Datapath::programs().iter().map(|p| p.to_string()).collect(),
        state_dir: args.state_dir.clone(),
    };

    let wireguard: worker::SharedWireguard = Arc::default();
    tokio::spawn(wireguard::rotate_every(
        wireguard.clone(),
        args.wireguard_key_rotation,
    ));
    let env = worker::NodeEnv {
        wireguard,
        drain_suspected: args.mesh_drain_suspected,
        secrets: Arc::default(),
        log_readers: Default::default(),
        tasks_dir: args.state_dir.join("tasks"),
        runtime_dir: args
            .runtime_state
            .clone()
            .unwrap_or_else(|| args.state_dir.join("runtime")),
        state_dir: args.state_dir.clone(),
        data_iface: iface.clone(),
        data_ip: data_ipv4,
        mesh: Arc::new(Mutex::new(shoal_mesh::MeshState::new(mesh))),
        view: Arc::default(),
        images: Arc::new(
            images::Images::open(
                &args.state_dir.join("images"),
                shoal_registry::Options {
                    insecure_registries: args.insecure_registries.clone(),
                    // No registry answering (none reachable, no DNS): the
                    // task is rejected soon rather than minutes later.
                    timeout: std::time::Duration::from_secs(10),
                    ..Default::default()
                },
            )
            .context("opening the image store")?,
        ),
        volumes: Arc::new(volumes::Volumes::new(&args.state_dir.join("volumes"))),
    };
    let swarm = Arc::new(swarm::Swarm::new(
        &args.state_dir,
        hostname.clone(),
        data_ip,
        env,
    ));
    swarm.follow_promotions();
    swarm
        .resume()
        .await
        .context("resuming this node's swarm membership")?;

    let listener = api::bind(&args.socket).await?;
    info!(socket = %args.socket.display(), %hostname, "serving the node API");
    let (stop_docker, docker_stopped) = tokio::sync::oneshot::channel::<()>();
    let docker_socket = docker_api::start(&args.state_dir, args.socket.clone(), async {
        let _ = docker_stopped.await;
    })
    .await;
    let api = NodeApi::new(node_info, Arc::new(Mutex::new(dp)), swarm.clone());
    api::serve(listener, api, shutdown_signal()).await?;
    let _ = stop_docker.send(());
    if let Some(path) = docker_socket
        && let Err(e) = std::fs::remove_file(&path)
    {
        tracing::warn!(error = %e, "could not remove the Docker API socket");
    }
    swarm.shutdown().await;
    // Best effort: a leftover socket file is replaced by the next start anyway.
    if let Err(e) = std::fs::remove_file(&args.socket) {
        tracing::warn!(error = %e, "could not remove the API socket");
    }
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop shoald with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}

/// A node routes: published ports DNATed here go out into an overlay, and
/// replies come back in from it. Redirects off, since VIP traffic is routed
/// back out of the bridge it came in by, which is by design, not a shorter
/// path to advertise. Per network namespace, so per lab node.
fn routing_sysctls() {
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/ipv4/conf/all/send_redirects", "0"),
        ("/proc/sys/net/ipv4/conf/default/send_redirects", "0"),
    ] {
        if let Err(e) = std::fs::write(path, value) {
            tracing::warn!(path, error = %e, "routing sysctl; published ports may not answer");
        }
    }
}

/// The first IPv4 address of `iface`: the default advertise address.
fn ipv4_of(iface: &str) -> Option<std::net::IpAddr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        let sin = a.address.as_ref()?.as_sockaddr_in()?;
        (a.interface_name == iface).then(|| std::net::IpAddr::V4(sin.ip()))
    })
}

/// The one non-loopback interface that is up, as a lab node or a single-NIC
/// VM has; anything else needs the operator to choose.
fn pick_data_interface() -> anyhow::Result<String> {
    use nix::net::if_::InterfaceFlags;
    let mut names: Vec<String> = nix::ifaddrs::getifaddrs()
        .context("listing interfaces")?
        .filter(|a| {
            a.flags.contains(InterfaceFlags::IFF_UP)
                && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .map(|a| a.interface_name)
        .collect();
    names.sort();
    names.dedup();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no interface is up besides loopback; pass --data-interface NAME"),
        many => bail!(
            "several interfaces are up ({}); choose one with --data-interface NAME",
            many.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_name_the_fix() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        for bad in ["", "s", "5d", "0s", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
