//! `cargo xtask setup` (what a fresh machine needs) and `cargo xtask test`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};

/// Packages every step needs; the LLVM ones are added once rustc-web tells
/// which LLVM it was built with.
const APT_BASE: &[&str] = &[
    // rustc with a prebuilt `core` for bpfel-unknown-none (rustup has no rust-src here).
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    // bpf-linker links against these.
    "zlib1g-dev",
    "libzstd-dev",
    // What tests and the lab use for real traffic and for people poking around.
    "iproute2",
    "iputils-ping",
    "iperf3",
    "curl",
    // Underlay captures of the encryption and stack labs (what goes on the
    // wire in clear).
    "tcpdump",
    // Containers: the OCI runtime, the busybox the image fixtures are built
    // from, docker's default seccomp profile, and a registry for pull tests.
    "runc",
    "busybox-static",
    "golang-github-docker-docker-dev",
    "docker-registry",
    // The VM lab (`cargo xtask vm`, the VM smoke test of `cargo xtask test`):
    // a root filesystem from the apt mirror, overlay disks, ssh into the
    // VMs, debug info stripped from the binaries shared into them.
    "debootstrap",
    "e2fsprogs",
    "openssh-client",
    "binutils",
    // `shoal bench` plots lay out their text with a TTF font.
    "fonts-dejavu-core",
    // `shoal bench`'s HAProxy baselines run the nodes' own haproxy (the
    // bench lab runs haproxy-remote).
    "haproxy",
];
/// qemu, whose `qemu-utils` must be the same release: this machine kind
/// comes with a backported qemu-utils that Debian's qemu-system-x86
/// refuses (qemu-system-common < 8.0 breaks it), so both are installed at
/// the version of the qemu-system-x86 apt offers.
const QEMU: &str = "qemu-system-x86";
const QEMU_UTILS: &str = "qemu-utils";
const BPF_RUSTC: &str = "/usr/bin/rustc";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM majors bpf-linker 0.13 has a feature for.
const BPF_LINKER_LLVM: &[u32] = &[21, 22, 23];

#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only report what is missing; install nothing.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

pub fn run(args: &SetupArgs) -> anyhow::Result<()> {
    let t = Instant::now();
    ensure(args.check)?;
    println!("setup: done in {:.0?}", t.elapsed());
    Ok(())
}

/// Builds every binary, then runs the whole suite. Tests make network
/// namespaces, so this needs root, as the lab does. The suite includes the
/// 2-VM smoke test (`vmtests/tests/smoke.rs`), which shares the debug
/// binaries built here into qemu VMs (building the VM image first if this
/// machine has none); `SHOAL_VM_FULL=1` adds the rest of the cross-VM suite.
pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    ensure(false)?;
    require_root("the tests create network namespaces")?;
    cargo(&["build", "--workspace", "--bins"])?;
    // Every test binary runs even after a failure, so one run names every
    // failing test.
    let mut test = vec!["test", "--workspace"];
    if !args.cargo_test_args.iter().any(|a| a == "--no-fail-fast") {
        test.push("--no-fail-fast");
    }
    test.extend(args.cargo_test_args.iter().map(String::as_str));
    let mut command = Command::new(cargo_bin());
    command.current_dir(workspace_root()).args(&test);
    // CI shows a failure's last lines: a backtrace there (RUST_BACKTRACE=1
    // is common in CI's environment) pushes the test's own message out of
    // them. SHOAL_TEST_BACKTRACE=1 keeps the caller's setting.
    if std::env::var_os("SHOAL_TEST_BACKTRACE").is_none() {
        command
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
    }
    run_cmd(&mut command).with_context(|| format!("cargo {}", test.join(" ")))
}

/// Makes sure the eBPF toolchain and runtime tools are here, installing what
/// is missing. Quiet and fast when all is in place.
pub fn ensure(check_only: bool) -> anyhow::Result<()> {
    let mut missing: Vec<String> = APT_BASE
        .iter()
        .filter(|p| !dpkg_installed(p))
        .map(|p| p.to_string())
        .collect();
    install_missing(&missing, check_only)?;
    ensure_qemu(check_only)?;

    let llvm = rustc_llvm_major(BPF_RUSTC)?;
    if !BPF_LINKER_LLVM.contains(&llvm) {
        bail!(
            "{BPF_RUSTC} uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} supports only \
             {BPF_LINKER_LLVM:?}; install a matching rustc-web or another bpf-linker"
        );
    }
    missing = [format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev")]
        .into_iter()
        .filter(|p| !dpkg_installed(p))
        .collect();
    install_missing(&missing, check_only)?;

    if bpf_linker_version().as_deref() != Some(BPF_LINKER_VERSION) {
        if check_only {
            bail!("bpf-linker {BPF_LINKER_VERSION} is not installed; run `cargo xtask setup`");
        }
        install_bpf_linker(llvm)?;
    }
    if !check_only {
        ensure_bpffs()?;
    }
    if check_only {
        println!("setup: everything is in place (rustc-web LLVM {llvm}, bpf-linker)");
    }
    Ok(())
}

/// The routing mesh pins its maps on bpffs. Mounted here, once, before any
/// daemon or test starts: daemons starting together would otherwise race to
/// mount it (shoald mounts it too when alone).
fn ensure_bpffs() -> anyhow::Result<()> {
    let mounted = shoal_netns::bpffs::is_bpffs(Path::new(shoal_netns::bpffs::ROOT));
    if mounted || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    shoal_netns::bpffs::mount_root().context("mounting bpffs on /sys/fs/bpf")?;
    println!("setup: mounted bpffs on /sys/fs/bpf");
    Ok(())
}

/// qemu-system-x86 and a qemu-utils of the same version (see [`QEMU`]).
fn ensure_qemu(check_only: bool) -> anyhow::Result<()> {
    let version = |pkg: &str, field: &str| -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["policy", pkg])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix(field).map(|v| v.trim().to_owned()))
            .filter(|v| v != "(none)")
    };
    if dpkg_installed(QEMU) && dpkg_installed(QEMU_UTILS) {
        return Ok(());
    }
    if check_only {
        bail!("missing apt packages: {QEMU} {QEMU_UTILS}; run `cargo xtask setup`");
    }
    let candidate = match version(QEMU, "Candidate:") {
        Some(v) => v,
        // A fresh machine may not have apt's lists yet.
        None => {
            run_cmd(
                Command::new("apt-get")
                    .args(["update", "-q"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
            .context("apt-get update")?;
            version(QEMU, "Candidate:")
                .with_context(|| format!("apt offers no {QEMU}: is a Debian mirror configured?"))?
        }
    };
    let utils = format!("{QEMU_UTILS}={candidate}");
    if version(QEMU_UTILS, "Installed:").is_some_and(|v| v != candidate) {
        println!("setup: {QEMU_UTILS} goes to {candidate}, the version {QEMU} needs");
    }
    apt_install(&[QEMU.to_owned(), utils], &["--allow-downgrades"])
}

/// Installs the `missing` apt packages, or with `check_only` names them.
fn install_missing(missing: &[String], check_only: bool) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if check_only {
        bail!(
            "missing apt packages: {}; run `cargo xtask setup`",
            missing.join(" ")
        );
    }
    apt_install(missing, &[])
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn apt_install(pkgs: &[String], flags: &[&str]) -> anyhow::Result<()> {
    require_root("apt-get installs packages")?;
    let t = Instant::now();
    println!("setup: apt-get install {}", pkgs.join(" "));
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(flags)
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {}", pkgs.join(" ")))?;
    println!("setup: apt packages installed in {:.0?}", t.elapsed());
    Ok(())
}

/// The LLVM major `rustc -vV` reports; bpf-linker must read its bitcode.
fn rustc_llvm_major(rustc: &str) -> anyhow::Result<u32> {
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {rustc} -vV (is rustc-web installed?)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("{rustc} -vV printed no LLVM version:\n{text}"))
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn install_bpf_linker(llvm: u32) -> anyhow::Result<()> {
    let t = Instant::now();
    let prefix = format!("/usr/lib/llvm-{llvm}");
    println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} ({prefix})");
    let path = std::env::var("PATH").unwrap_or_default();
    run_cmd(
        Command::new(cargo_bin())
            .args(["install", "--locked", "--no-default-features", "--features"])
            .arg(format!("llvm-{llvm}"))
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            // Its build script looks for llvm-config on PATH or under LLVM_PREFIX.
            .env("LLVM_PREFIX", &prefix)
            .env("PATH", format!("{prefix}/bin:{path}")),
    )
    .context("installing bpf-linker")?;
    if bpf_linker_version().is_none() {
        bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
    }
    println!("setup: bpf-linker installed in {:.0?}", t.elapsed());
    Ok(())
}

pub fn require_root(why: &str) -> anyhow::Result<()> {
    if !nix_is_root() {
        bail!("{why}: run as root (e.g. `sudo -E cargo xtask …`)");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // /proc/self/status "Uid:" line; avoids a libc dependency for one call.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .is_some_and(|euid| euid == "0")
    })
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs cargo in the workspace root with the given arguments.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run_cmd(
        Command::new(cargo_bin())
            .current_dir(workspace_root())
            .args(args),
    )
    .with_context(|| format!("cargo {}", args.join(" ")))
}

/// Setup plus a build of every binary; what `lab up` needs before it starts.
pub fn prepare_binaries() -> anyhow::Result<PathBuf> {
    ensure(false)?;
    cargo(&["build", "--workspace", "--bins"])?;
    Ok(workspace_root().join("target").join("debug"))
}

/// Release binaries, for benchmarks: debug builds would measure the
/// compiler's checks, not Shoal.
pub fn prepare_release_binaries() -> anyhow::Result<PathBuf> {
    ensure(false)?;
    cargo(&["build", "--release", "--workspace", "--bins"])?;
    Ok(workspace_root().join("target").join("release"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}
