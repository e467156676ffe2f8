//! Developer tasks: `cargo xtask setup | test | lab … | vm … | bench …`.

mod bench;
mod bench_docs;
mod bench_failover;
mod bench_gossip;
mod bench_memory;
mod bench_mesh;
mod bench_raft;
mod bench_shoal;
mod bench_tasks;
mod bench_update;
mod bench_wireguard;
mod lab;
mod setup;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Shoal developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine needs (apt packages, bpf-linker); idempotent.
    Setup(setup::SetupArgs),
    /// Build every binary, then run the whole test suite.
    Test(setup::TestArgs),
    /// The network-namespace lab: nodes on an underlay bridge, each running shoald.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// The VM lab: qemu VMs with Debian's kernel, provisioned by vagrant/provision.sh.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Benchmarks on a lab of release binaries, against same-run baselines.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// A current-thread tokio runtime for a command that needs root (`why`
/// says what for).
fn root_runtime(why: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    setup::require_root(why)?;
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(args) => setup::run(&args),
        Cmd::Test(args) => setup::test(&args),
        Cmd::Lab(cmd) => lab::run(cmd),
        Cmd::Vm(cmd) => vm::run(cmd),
        Cmd::Bench(cmd) => bench::run(cmd),
    }
}
