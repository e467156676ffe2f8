//! `shoal swarm …`: init, join, join-token, leave, unlock, unlock-key, ca
//! and update, with docker's flags and docker's words.

use std::{
    io::{BufRead, IsTerminal, Write},
    os::fd::AsFd,
    time::Duration,
};

use clap::{Args, Subcommand, ValueEnum};
use shoal_api::{
    cluster::v1::{
        CaStatusReply, CaStatusRequest, JoinTokenRequest, NodeRef, NodeRole, RotateCaRequest,
        UpdateSwarmRequest,
    },
    node::v1::{
        InfoRequest, SwarmInitRequest, SwarmJoinRequest, SwarmLeaveRequest, SwarmUnlockRequest,
        UnlockKeyRequest,
    },
    words::word,
};

use crate::{
    client::{self, Daemon},
    parse::{
        FlagError, Ipv4Cidr, NetError, Problem, check_ip, check_ip_port, check_token, host_port,
        parse_duration, parse_pool,
    },
};

/// Below this the dispatcher would mark healthy nodes down on a busy host.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// A new key must reach every node before it is sent with.
const MIN_KEY_ROTATION: Duration = Duration::from_secs(2);
/// docker refuses certificates shorter-lived than an hour; Shoal allows
/// 30 s (the CA's minimum), so that renewal can be watched in a lab (nodes
/// renew at three quarters of the lifetime). Keep real swarms at hours.
const MIN_CERT_EXPIRY: Duration = Duration::from_secs(30);
/// swarm's default address pool when `--default-addr-pool` is not given.
const DEFAULT_ADDR_POOL: Ipv4Cidr =
    match Ipv4Cidr::truncate(std::net::Ipv4Addr::new(10, 0, 0, 0), 8) {
        Ok(net) => net,
        Err(_) => panic!("10.0.0.0/8 is a network"),
    };
/// How often `swarm ca --rotate` polls the rotation's progress.
const ROTATION_POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    fn as_api(self) -> NodeRole {
        match self {
            Self::Worker => NodeRole::Worker,
            Self::Manager => NodeRole::Manager,
        }
    }
}

#[derive(Args, Default)]
pub struct InitArgs {
    /// Advertised address (IP[:PORT]); default: the data interface's address.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Listen address for the cluster API.
    #[arg(long, default_value = "0.0.0.0:2377")]
    listen_addr: String,
    /// Address used for data path traffic (VXLAN).
    #[arg(long)]
    data_path_addr: Option<String>,
    /// Port used for data path traffic (VXLAN, UDP).
    #[arg(long, default_value_t = 4789)]
    data_path_port: u32,
    /// Default address pool in CIDR format (repeatable).
    #[arg(long)]
    default_addr_pool: Vec<String>,
    /// Default address pool subnet mask length.
    #[arg(long, default_value_t = 24)]
    default_addr_pool_mask_length: u32,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager).
    #[arg(long)]
    autolock: bool,
    /// Validity period for node certificates (ns|us|ms|s|m|h).
    #[arg(long, default_value = "2160h")]
    cert_expiry: String,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
    #[arg(long, default_value = "5s")]
    dispatcher_heartbeat: String,
    /// Number of log entries between Raft snapshots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval: u64,
    /// Network key ring rotation period (ns|us|ms|s|m|h); for tests.
    #[arg(long, hide = true, default_value = "12h")]
    network_key_rotation: String,
}

#[derive(Subcommand)]
pub enum SwarmCmd {
    /// Initialize a swarm: this node becomes its first manager.
    Init(InitArgs),
    /// Join a swarm as a node and/or manager.
    Join {
        /// Token for entry into the swarm.
        #[arg(long)]
        token: String,
        /// Advertised address (IP[:PORT]).
        #[arg(long)]
        advertise_addr: Option<String>,
        /// Listen address for the cluster API (managers).
        #[arg(long, default_value = "0.0.0.0:2377")]
        listen_addr: String,
        /// Address used for data path traffic.
        #[arg(long)]
        data_path_addr: Option<String>,
        /// A manager's HOST[:PORT] (port 2377 if omitted).
        remote: String,
    },
    /// Manage join tokens.
    JoinToken {
        role: Role,
        /// Only display the token.
        #[arg(long, short)]
        quiet: bool,
        /// Rotate the join token: the old one stops working at once.
        #[arg(long)]
        rotate: bool,
    },
    /// Leave the swarm.
    Leave {
        /// Force this node to leave the swarm, ignoring warnings.
        #[arg(long, short)]
        force: bool,
    },
    /// Unlock a restarted autolocked manager; the key is read from stdin.
    Unlock,
    /// Display and rotate the root CA; issue operators' client certificates.
    Ca {
        /// Rotate the swarm CA: a new root, cross-signed by the current one;
        /// every node gets a certificate from it, then the old root is dropped.
        #[arg(long, conflicts_with = "issue_client_cert")]
        rotate: bool,
        /// Issue a client certificate for `--host tcp://MANAGER:2377`: it can
        /// use the cluster verbs, never a node's or Raft's RPCs. The key is
        /// made here; ca.pem, cert.pem and key.pem go to --out.
        #[arg(long, requires = "out")]
        issue_client_cert: bool,
        /// With --issue-client-cert: the directory to write the files to.
        #[arg(long, requires = "issue_client_cert")]
        out: Option<std::path::PathBuf>,
        /// With --issue-client-cert: the certificate's name (a lowercase DNS
        /// label); a generated one when omitted.
        #[arg(long, requires = "issue_client_cert")]
        name: Option<String>,
        /// Validity period for node certificates (ns|us|ms|s|m|h).
        #[arg(long)]
        cert_expiry: Option<String>,
        /// Exit immediately instead of waiting for the root rotation to converge.
        #[arg(long, short)]
        detach: bool,
        /// Suppress progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Update the swarm.
    Update {
        /// Change manager autolocking setting (true|false).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        autolock: Option<bool>,
        /// Validity period for node certificates (ns|us|ms|s|m|h).
        #[arg(long)]
        cert_expiry: Option<String>,
        /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
        #[arg(long)]
        dispatcher_heartbeat: Option<String>,
        /// Network key ring rotation period (ns|us|ms|s|m|h); for tests.
        #[arg(long, hide = true)]
        network_key_rotation: Option<String>,
    },
    /// Manage the unlock key of an autolocked swarm.
    UnlockKey {
        /// Only display the key.
        #[arg(long, short)]
        quiet: bool,
        /// Rotate the unlock key: managers restarted from now on need the new one.
        #[arg(long)]
        rotate: bool,
    },
}

fn unlock_instructions(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
         command and provide the following key:\n\n    {key}\n\n\
         Remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager.\n"
    )
}

/// The unlock key from stdin: on a terminal after a prompt and without
/// echo (as docker), else the first line, so that it can be piped in.
async fn read_unlock_key() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        print!("Enter unlock key: ");
        std::io::stdout().flush()?;
        let echo_off = EchoOff::new(&stdin)?;
        let read = tokio::task::spawn_blocking(read_line);
        // Ctrl-C would kill the process with the terminal still silent:
        // take the signal here, and put the terminal back first.
        let line = tokio::select! {
            line = read => line.map_err(|e| anyhow::anyhow!("reading the unlock key: {e}"))?,
            _ = tokio::signal::ctrl_c() => {
                drop(echo_off);
                println!();
                std::process::exit(130);
            }
        };
        drop(echo_off);
        // The Enter the user typed was not echoed either.
        println!();
        line?
    } else {
        read_line()?
    };
    let key = line.trim();
    if key.is_empty() {
        anyhow::bail!(
            "no unlock key on stdin: type it at the prompt, or pipe it in \
             (echo SWMKEY-1-… | shoal swarm unlock)"
        );
    }
    Ok(key.to_owned())
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("reading the unlock key from stdin: {e}"))?;
    Ok(line)
}

/// The terminal's echo turned off for as long as this lives: restored on
/// drop, so on every return and `?` path.
struct EchoOff {
    fd: std::os::fd::OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> anyhow::Result<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let fd = stdin.as_fd().try_clone_to_owned()?;
        let saved =
            tcgetattr(&fd).map_err(|e| anyhow::anyhow!("reading the terminal mode: {e}"))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        // Still echo the newline, so that the next output starts on a line
        // of its own even if we cannot print one.
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(&fd, SetArg::TCSANOW, &quiet)
            .map_err(|e| anyhow::anyhow!("turning the terminal echo off: {e}"))?;
        Ok(Self { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        if let Err(e) = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved) {
            eprintln!("warning: could not turn the terminal echo back on ({e}); run `stty echo`");
        }
    }
}

fn whole_seconds(flag: &'static str, value: &str, min: Duration) -> Result<u64, FlagError> {
    let d = parse_duration(value).map_err(|e| FlagError::new(flag, value, e))?;
    if d < min {
        let min = match min.as_secs() {
            3600 => "1h",
            30 => "30s",
            2 => "2s",
            _ => "1s",
        };
        return Err(FlagError::new(flag, value, Problem::TooSmall { min }));
    }
    if d.subsec_nanos() != 0 {
        let suggest = format!("{}s", d.as_secs().max(1));
        return Err(FlagError::new(flag, value, Problem::SubSecond { suggest }));
    }
    Ok(d.as_secs())
}

fn opt_check(
    flag: &'static str,
    v: &Option<String>,
    check: fn(&str) -> Result<(), NetError>,
) -> Result<String, FlagError> {
    match v {
        None => Ok(String::new()),
        Some(v) => check(v)
            .map(|()| v.clone())
            .map_err(|e| FlagError::new(flag, v, e)),
    }
}

/// Every `swarm init` flag checked, then turned into the daemon's request.
fn init_request(a: &InitArgs) -> Result<SwarmInitRequest, FlagError> {
    let advertise_addr = opt_check("--advertise-addr", &a.advertise_addr, check_ip_port)?;
    check_ip_port(&a.listen_addr)
        .map_err(|e| FlagError::new("--listen-addr", &a.listen_addr, e))?;
    let data_path_addr = opt_check("--data-path-addr", &a.data_path_addr, check_ip)?;
    // docker's range: below 1024 is privileged, above 49151 ephemeral.
    if !(1024..=49151).contains(&a.data_path_port) {
        return Err(FlagError::new(
            "--data-path-port",
            a.data_path_port,
            Problem::Range {
                min: 1024,
                max: 49151,
            },
        ));
    }
    let mut pools: Vec<Ipv4Cidr> = Vec::new();
    for p in &a.default_addr_pool {
        let cidr = parse_pool(p).map_err(|e| FlagError::new("--default-addr-pool", p, e))?;
        if let Some(other) = pools.iter().find(|o| o.overlaps(&cidr)) {
            return Err(FlagError::new(
                "--default-addr-pool",
                p,
                NetError::Overlap(*other),
            ));
        }
        pools.push(cidr);
    }
    let mask = a.default_addr_pool_mask_length;
    if !(1..=29).contains(&mask) {
        return Err(FlagError::new(
            "--default-addr-pool-mask-length",
            mask,
            Problem::Range { min: 1, max: 29 },
        ));
    }
    let default_pool = DEFAULT_ADDR_POOL;
    let effective = if pools.is_empty() {
        vec![default_pool]
    } else {
        pools.clone()
    };
    if let Some(pool) = effective.iter().find(|p| u32::from(p.prefix_len()) > mask) {
        return Err(FlagError::new(
            "--default-addr-pool-mask-length",
            mask,
            Problem::MaskShorterThanPool { pool: *pool },
        ));
    }
    if a.snapshot_interval == 0 {
        return Err(FlagError::new(
            "--snapshot-interval",
            0,
            Problem::TooSmall { min: "1" },
        ));
    }
    Ok(SwarmInitRequest {
        advertise_addr,
        listen_addr: a.listen_addr.clone(),
        data_path_addr,
        data_path_port: a.data_path_port,
        default_addr_pool: pools.iter().map(ToString::to_string).collect(),
        default_addr_pool_mask_length: mask,
        autolock: a.autolock,
        cert_expiry_secs: whole_seconds("--cert-expiry", &a.cert_expiry, MIN_CERT_EXPIRY)?,
        dispatcher_heartbeat_secs: whole_seconds(
            "--dispatcher-heartbeat",
            &a.dispatcher_heartbeat,
            MIN_HEARTBEAT,
        )?,
        snapshot_interval: a.snapshot_interval,
        network_key_rotation_secs: whole_seconds(
            "--network-key-rotation",
            &a.network_key_rotation,
            MIN_KEY_ROTATION,
        )?,
    })
}

fn join_instructions(role: NodeRole, token: &str, addr: &str) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    \
         shoal swarm join --token {token} {addr}\n"
    )
}

/// This manager's cluster address, as others should dial it.
async fn own_addr(d: &mut Daemon) -> anyhow::Result<String> {
    let info = client::call(&d.host, d.node.info(InfoRequest {})).await?;
    let Some(swarm) = info.swarm.filter(|s| !s.node_id.is_empty()) else {
        return Ok(String::new());
    };
    let detail = client::call(
        &d.host,
        d.control.inspect_node(NodeRef {
            node: swarm.node_id,
        }),
    )
    .await?;
    Ok(detail.raft_addr)
}

pub async fn run(host: &str, cmd: SwarmCmd) -> anyhow::Result<()> {
    match cmd {
        SwarmCmd::Init(args) => {
            let req = init_request(&args)?;
            let mut d = client::connect(host).await?;
            let r = client::call(host, d.node.swarm_init(req)).await?;
            println!(
                "Swarm initialized: current node ({}) is now a manager.\n",
                r.node_id
            );
            print!(
                "{}",
                join_instructions(NodeRole::Worker, &r.worker_token, &r.advertise_addr)
            );
            println!(
                "\nTo add a manager to this swarm, run 'shoal swarm join-token manager' and \
                 follow the instructions."
            );
            if !r.unlock_key.is_empty() {
                print!("\n{}", unlock_instructions(&r.unlock_key));
            }
            Ok(())
        }
        SwarmCmd::Join {
            token,
            advertise_addr,
            listen_addr,
            data_path_addr,
            remote,
        } => {
            let token = check_token(&token)
                .map_err(|e| FlagError::secret("--token", e))?
                .to_owned();
            let remote_addr =
                host_port(&remote).map_err(|e| FlagError::new("HOST:PORT", &remote, e))?;
            let advertise_addr = opt_check("--advertise-addr", &advertise_addr, check_ip_port)?;
            check_ip_port(&listen_addr)
                .map_err(|e| FlagError::new("--listen-addr", &listen_addr, e))?;
            let data_path_addr = opt_check("--data-path-addr", &data_path_addr, check_ip)?;
            let mut d = client::connect(host).await?;
            let r = client::call(
                host,
                d.node.swarm_join(SwarmJoinRequest {
                    token,
                    remote_addr,
                    advertise_addr,
                    listen_addr,
                    data_path_addr,
                }),
            )
            .await?;
            println!(
                "This node joined a swarm as a {}.",
                word::<NodeRole>(r.role)
            );
            Ok(())
        }
        SwarmCmd::JoinToken {
            role,
            quiet,
            rotate,
        } => {
            let mut d = client::connect(host).await?;
            let r = client::call(
                host,
                d.control.join_token(JoinTokenRequest {
                    role: role.as_api().into(),
                    rotate,
                }),
            )
            .await?;
            if quiet {
                println!("{}", r.token);
                return Ok(());
            }
            if rotate {
                println!("Successfully rotated {} join token.\n", role.as_api());
            }
            let addr = own_addr(&mut d).await?;
            print!("{}", join_instructions(role.as_api(), &r.token, &addr));
            Ok(())
        }
        SwarmCmd::Leave { force } => {
            let mut d = client::connect(host).await?;
            client::call(host, d.node.swarm_leave(SwarmLeaveRequest { force })).await?;
            println!("Node left the swarm.");
            Ok(())
        }
        SwarmCmd::Unlock => {
            // Dial first: no point typing a key for a daemon that is not there.
            let mut d = client::connect(host).await?;
            let key = read_unlock_key().await?;
            client::call(host, d.node.swarm_unlock(SwarmUnlockRequest { key })).await?;
            Ok(())
        }
        SwarmCmd::Ca {
            issue_client_cert: true,
            out: Some(out),
            name,
            ..
        } => crate::client_cert::issue(host, &out, name.as_deref().unwrap_or_default()).await,
        SwarmCmd::Ca {
            rotate,
            cert_expiry,
            detach,
            quiet,
            ..
        } => {
            let expiry = cert_expiry
                .as_deref()
                .map(|v| whole_seconds("--cert-expiry", v, MIN_CERT_EXPIRY))
                .transpose()?;
            let mut d = client::connect(host).await?;
            if !rotate {
                if let Some(secs) = expiry {
                    let req = UpdateSwarmRequest {
                        cert_expiry_secs: Some(secs),
                        ..Default::default()
                    };
                    client::call(host, d.control.update_swarm(req)).await?;
                }
                let status = client::call(host, d.control.ca_status(CaStatusRequest {})).await?;
                print!("{}", status.root_ca_pem);
                return Ok(());
            }
            let req = RotateCaRequest {
                cert_expiry_secs: expiry.unwrap_or(0),
            };
            let mut status = client::call(host, d.control.rotate_ca(req)).await?;
            if detach {
                return Ok(());
            }
            let mut shown = None;
            loop {
                let progress = rotation_progress(&status);
                if !quiet && shown.as_ref() != Some(&progress) {
                    println!("{progress}");
                    std::io::stdout().flush()?;
                    shown = Some(progress);
                }
                if !status.rotating {
                    break;
                }
                tokio::time::sleep(ROTATION_POLL).await;
                status = client::call(host, d.control.ca_status(CaStatusRequest {})).await?;
            }
            print!("{}", status.root_ca_pem);
            Ok(())
        }
        SwarmCmd::Update {
            autolock,
            cert_expiry,
            dispatcher_heartbeat,
            network_key_rotation,
        } => {
            let req = UpdateSwarmRequest {
                autolock,
                cert_expiry_secs: cert_expiry
                    .as_deref()
                    .map(|v| whole_seconds("--cert-expiry", v, MIN_CERT_EXPIRY))
                    .transpose()?,
                dispatcher_heartbeat_secs: dispatcher_heartbeat
                    .as_deref()
                    .map(|v| whole_seconds("--dispatcher-heartbeat", v, MIN_HEARTBEAT))
                    .transpose()?,
                network_key_rotation_secs: network_key_rotation
                    .as_deref()
                    .map(|v| whole_seconds("--network-key-rotation", v, MIN_KEY_ROTATION))
                    .transpose()?,
            };
            let mut d = client::connect(host).await?;
            let r = client::call(host, d.control.update_swarm(req)).await?;
            println!("Swarm updated.");
            if !r.unlock_key.is_empty() {
                print!("{}", unlock_instructions(&r.unlock_key));
            }
            Ok(())
        }
        SwarmCmd::UnlockKey { quiet, rotate } => {
            let mut d = client::connect(host).await?;
            let r = client::call(host, d.node.unlock_key(UnlockKeyRequest { rotate })).await?;
            if quiet {
                println!("{}", r.key);
                return Ok(());
            }
            if rotate {
                println!("Successfully rotated manager unlock key.\n");
            }
            print!("{}", unlock_instructions(&r.key));
            Ok(())
        }
    }
}

/// docker's two progress lines for a root rotation: nodes with a
/// certificate from the new root, then the switch of the trusted root.
fn rotation_progress(s: &CaStatusReply) -> String {
    let nodes = if s.rotating {
        s.nodes_rotated
    } else {
        s.nodes_total
    };
    format!(
        "  rotated TLS certificates: {nodes}/{} nodes\n  rotated CA certificates:  {}/1",
        s.nodes_total,
        u8::from(!s.rotating)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_progress_reads_like_docker() {
        let mut s = CaStatusReply {
            rotating: true,
            nodes_rotated: 1,
            nodes_total: 3,
            ..Default::default()
        };
        assert_eq!(
            rotation_progress(&s),
            "  rotated TLS certificates: 1/3 nodes\n  rotated CA certificates:  0/1"
        );
        s.rotating = false;
        assert_eq!(
            rotation_progress(&s),
            "  rotated TLS certificates: 3/3 nodes\n  rotated CA certificates:  1/1"
        );
    }

    fn init(f: impl FnOnce(&mut InitArgs)) -> Result<SwarmInitRequest, String> {
        let mut a = InitArgs {
            listen_addr: "0.0.0.0:2377".into(),
            data_path_port: 4789,
            default_addr_pool_mask_length: 24,
            cert_expiry: "2160h".into(),
            dispatcher_heartbeat: "5s".into(),
            snapshot_interval: 10_000,
            network_key_rotation: "12h".into(),
            ..Default::default()
        };
        f(&mut a);
        init_request(&a).map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }

    #[test]
    fn network_key_rotation_is_whole_seconds_of_at_least_two() {
        assert_eq!(
            init(|_| {}).map(|r| r.network_key_rotation_secs),
            Ok(12 * 3600)
        );
        let r = init(|a| a.network_key_rotation = "3s".into()).expect("3s");
        assert_eq!(r.network_key_rotation_secs, 3);
        let e = init(|a| a.network_key_rotation = "1s".into()).expect_err("1s");
        assert!(
            e.contains("--network-key-rotation") && e.contains("2s"),
            "{e}"
        );
    }

    #[test]
    fn unlock_instructions_read_like_docker() {
        let text = unlock_instructions("SWMKEY-1-abc");
        assert!(text.starts_with(
            "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
             command and provide the following key:\n\n    SWMKEY-1-abc\n\n"
        ));
        assert!(text.contains("password manager"), "{text}");
    }

    #[test]
    fn defaults_become_the_documented_request() {
        let r = init(|_| {}).unwrap_or_default();
        assert_eq!(r.cert_expiry_secs, 2160 * 3600);
        assert_eq!(r.dispatcher_heartbeat_secs, 5);
        assert_eq!(r.data_path_port, 4789);
        assert!(r.default_addr_pool.is_empty());
        assert_eq!(r.snapshot_interval, 10_000);
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        type Case = (fn(&mut InitArgs), &'static str);
        let cases: [Case; 8] = [
            (
                |a| a.cert_expiry = "90d".into(),
                "--cert-expiry 90d: unknown unit \"d\"",
            ),
            (
                |a| a.cert_expiry = "20s".into(),
                "--cert-expiry 20s: must be at least 30s",
            ),
            (
                |a| a.dispatcher_heartbeat = "1.5s".into(),
                "--dispatcher-heartbeat 1.5s: must be a whole number",
            ),
            (
                |a| a.data_path_port = 80,
                "--data-path-port 80: must be 1024-49151",
            ),
            (
                |a| a.advertise_addr = Some("eth0".into()),
                "interface names are not supported",
            ),
            (
                |a| a.default_addr_pool = vec!["10.1.0.0/16".into(), "10.0.0.0/8".into()],
                "overlaps --default-addr-pool 10.1.0.0/16",
            ),
            (
                |a| {
                    a.default_addr_pool = vec!["10.1.0.0/16".into()];
                    a.default_addr_pool_mask_length = 12
                },
                "is shorter than --default-addr-pool 10.1.0.0/16",
            ),
            (
                |a| a.snapshot_interval = 0,
                "--snapshot-interval 0: must be at least 1",
            ),
        ];
        for (set, want) in cases {
            let e = init(set).err().unwrap_or_default();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
    }
}
