//! `shoal`: the operator CLI, docker's verbs against a Shoal node.

mod client;
mod output;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: swarm-mode networking with an eBPF data plane"
)]
struct Cli {
    /// Daemon to talk to: unix:///path/to/shoald.sock.
    #[arg(long, short = 'H', global = true, env = shoal_api::HOST_ENV,
          default_value = concat!("unix://", "/run/shoal/shoald.sock"))]
    host: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show what the local daemon is and how its datapath is attached.
    Info {
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCmd),
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Packet counters of the node's data interface, per protocol and direction.
    Stats {
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut node = client::connect(&cli.host).await?;
    match cli.cmd {
        Cmd::Info { format } => {
            let info =
                client::call(&cli.host, node.info(shoal_api::node::v1::InfoRequest {})).await?;
            output::info(&info, format)
        }
        Cmd::Node(NodeCmd::Stats { format }) => {
            let stats =
                client::call(&cli.host, node.stats(shoal_api::node::v1::StatsRequest {})).await?;
            output::stats(&stats, format)
        }
    }
}
