//! `shoal`: the operator CLI, docker's verbs against a Shoal node.

mod bench;
mod client;
mod client_cert;
mod config;
mod container;
mod image;
mod logs;
mod network;
mod node;
mod output;
mod parse;
mod registry_auth;
mod secret;
mod service;
mod stack;
mod swarm;
mod volume;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: swarm-mode networking with an eBPF data plane"
)]
struct Cli {
    /// Daemon to talk to: unix:///path/to/shoald.sock, or a manager's
    /// tcp://ADDR:2377 with a client certificate (`swarm ca
    /// --issue-client-cert`) or a manager's (cluster verbs only).
    #[arg(long, short = 'H', global = true, env = shoal_api::HOST_ENV,
          default_value = concat!("unix://", "/run/shoal/shoald.sock"))]
    host: String,
    /// With tcp://: the swarm's root CA certificate [default: ca.pem in
    /// SHOAL_CERT_PATH or /var/lib/shoal/swarm].
    #[arg(long, global = true, env = "SHOAL_TLSCACERT")]
    tlscacert: Option<std::path::PathBuf>,
    /// With tcp://: a client certificate, or a manager's [default: cert.pem
    /// in SHOAL_CERT_PATH or /var/lib/shoal/swarm].
    #[arg(long, global = true, env = "SHOAL_TLSCERT")]
    tlscert: Option<std::path::PathBuf>,
    /// With tcp://: that certificate's key [default: key.pem in
    /// SHOAL_CERT_PATH or /var/lib/shoal/swarm].
    #[arg(long, global = true, env = "SHOAL_TLSKEY")]
    tlskey: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show what the local daemon is, its swarm and how its datapath is attached.
    Info {
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Manage images on this node.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Manage secrets.
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// Manage stacks: compose files deployed as services.
    #[command(subcommand)]
    Stack(stack::StackCmd),
    /// Manage configs.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Manage volumes on this node.
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Measure the cluster's paths (overlay, VIP, ingress) with short-lived
    /// services, and remove them afterwards.
    Bench(bench::BenchArgs),
    /// Manage the swarm: init, join, join-token, leave, unlock, unlock-key, ca, update.
    #[command(subcommand)]
    Swarm(swarm::SwarmCmd),
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    client::set_tls_files(client::TlsFiles::resolve(
        cli.tlscacert.clone(),
        cli.tlscert.clone(),
        cli.tlskey.clone(),
        // docker's DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem in one place.
        std::env::var_os(client::CERT_PATH_ENV).map(Into::into),
    ));
    if let Err(e) = run(cli).await {
        eprintln!("{}", client::render_error(&e));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Flags are checked before dialling: a typo is reported as such even
    // when the daemon is down.
    match cli.cmd {
        Cmd::Info { format } => {
            let mut d = client::connect(&cli.host).await?;
            let info =
                client::call(&d.host, d.node.info(shoal_api::node::v1::InfoRequest {})).await?;
            output::info(&info, format)
        }
        Cmd::Image(cmd) => image::run(&cli.host, cmd).await,
        Cmd::Node(cmd) => node::run(&cli.host, cmd).await,
        Cmd::Network(cmd) => network::run(&cli.host, cmd).await,
        Cmd::Service(cmd) => service::run(&cli.host, cmd).await,
        Cmd::Secret(cmd) => secret::run(&cli.host, cmd).await,
        Cmd::Stack(cmd) => stack::run(&cli.host, cmd).await,
        Cmd::Config(cmd) => config::run(&cli.host, cmd).await,
        Cmd::Swarm(cmd) => swarm::run(&cli.host, cmd).await,
        Cmd::Volume(cmd) => volume::run(&cli.host, cmd).await,
        Cmd::Bench(a) => bench::run(&cli.host, a).await,
    }
}
