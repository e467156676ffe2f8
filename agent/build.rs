//! Builds the eBPF object (ebpf/, target bpfel-unknown-none) into OUT_DIR so
//! `shoald` embeds it and a plain `cargo build` works once set-up has run.
//!
//! rustup's toolchains here have no `rust-src` (no `-Z build-std`), so the
//! programs are compiled by Debian's `rustc-web`, which ships a prebuilt
//! `core` for the BPF targets, and linked by `bpf-linker` built against the
//! same LLVM major as that rustc. `cargo xtask setup` installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

const TARGET: &str = "bpfel-unknown-none";
/// Each bin of ebpf/ is one object; agent/src/datapath.rs embeds them by name.
const PROGRAMS: &[&str] = &["shoal-tc", "shoal-mesh"];
const SETUP_HINT: &str = "run `cargo xtask setup` (installs rustc-web, libstd-rust-web-dev-bpf, \
                          llvm-22-dev and bpf-linker), or point SHOAL_BPF_RUSTC at a rustc \
                          with a core library for bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("agent/ has no parent")?
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for p in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=SHOAL_BPF_RUSTC");
    println!("cargo:rerun-if-env-changed=SHOAL_BPF_LINKER");

    let rustc = env::var("SHOAL_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    check_toolchain(&rustc)?;

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("ebpf-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "shoal-ebpf",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        // aya-ebpf uses `asm_experimental_arch`; rustc-web is a stable build.
        .env("RUSTC_BOOTSTRAP", "1");
    if let Ok(linker) = env::var("SHOAL_BPF_LINKER") {
        cmd.env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", linker);
    }
    // The outer build's wrappers (clippy-driver), flags and target must not
    // leak into the BPF build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_JOBS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "RUSTDOCFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().with_context(|| format!("running {cargo}"))?;
    if !output.status.success() {
        bail!(
            "building the eBPF programs failed ({}):\n{}\nIf the toolchain is missing: {SETUP_HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for prog in PROGRAMS {
        let built = target_dir.join(TARGET).join("release").join(prog);
        let dest = out.join(format!("{prog}.o"));
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    }
    Ok(())
}

fn check_toolchain(rustc: &str) -> anyhow::Result<()> {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .with_context(|| format!("eBPF compiler `{rustc}` not found: {SETUP_HINT}"))?;
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    let has_core = std::fs::read_dir(&libdir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
        .unwrap_or(false);
    if !has_core {
        bail!("`{rustc}` has no core library for {TARGET} (looked in {libdir:?}): {SETUP_HINT}");
    }
    let linker = env::var("SHOAL_BPF_LINKER").unwrap_or_else(|_| "bpf-linker".into());
    if !on_path(&linker) {
        bail!("`{linker}` not found on PATH: {SETUP_HINT}");
    }
    Ok(())
}

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).is_file();
    }
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}
