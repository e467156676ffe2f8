//! KVM when it actually runs, TCG otherwise. `/dev/kvm` can exist and
//! still hang (nested KVM on this machine kind never leaves the BIOS), so
//! the test is a boot against a deadline, done once per host boot.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{VmError, io_err};

/// The verdict, cached until the host reboots (`/run` is a tmpfs).
const VERDICT: &str = "/run/shoal-vm/accel";
/// Overrides the probe: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "SHOAL_VM_ACCEL";
/// The kernel prints its banner within a second or two, even under TCG.
const PROBE_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s.trim() {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }

    /// qemu's accelerator and CPU model flags.
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            // One translation thread per vCPU.
            Accel::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// The accelerator to run VMs with: `$SHOAL_VM_ACCEL`, else the cached
/// verdict, else a probe boot of `kernel` under KVM.
pub fn detect(kernel: &Path) -> Result<Accel, VmError> {
    if let Ok(forced) = std::env::var(ACCEL_ENV) {
        return Accel::parse(&forced).ok_or_else(|| VmError::Config {
            reason: format!("{ACCEL_ENV}={forced:?}: use kvm or tcg (or unset it to probe)"),
        });
    }
    if let Some(cached) = std::fs::read_to_string(VERDICT)
        .ok()
        .and_then(|s| Accel::parse(&s))
    {
        return Ok(cached);
    }
    let accel = if probe_kvm(kernel) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let dir = Path::new(VERDICT).parent().unwrap_or(Path::new("/run"));
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
    std::fs::write(VERDICT, accel.name()).map_err(io_err(VERDICT, "write"))?;
    Ok(accel)
}

/// Whether a KVM guest gets as far as the kernel's banner in time.
fn probe_kvm(kernel: &Path) -> bool {
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    if rw.is_err() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args(Accel::Kvm.qemu_args())
        .args(["-m", "256", "-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        // No root: the kernel panics after its banner and qemu exits.
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let seen = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("Linux version"));
            let _receiver_gone = tx.send(seen);
        });
    }
    let booted = rx.recv_timeout(PROBE_DEADLINE).unwrap_or(false);
    // Exited already (panic=-1) or hung: either way, gone and reaped.
    let _already_exited = child.kill();
    let _reaped = child.wait();
    booted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(Accel::parse(a.name()), Some(a));
        }
        assert_eq!(Accel::parse("KVM"), None);
    }
}
