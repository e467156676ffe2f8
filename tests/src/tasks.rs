//! A node's tasks outlive its `shoald` (each is a runc container watched by
//! its own shim, for live restore), so the lab kills them itself when it
//! stops a node or removes a lab: through runc on the node's runtime state
//! (`<state-dir>/runtime`), then every mount left under the node's
//! directory (task netns files, rootfs binds and overlays) is detached.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the shims get to see their container die and exit.
const SHIM_EXIT: Duration = Duration::from_secs(10);

fn runc(root: &Path) -> Command {
    let mut command = Command::new("runc");
    command
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Kills every task of the node whose `--state-dir` is `state_dir`, waits
/// for their shims, and detaches every mount under `state_dir`.
pub fn kill_node_tasks(state_dir: &Path) {
    let runtime = state_dir.join("runtime");
    let root = runtime.join("runc");
    if root.is_dir() {
        let ids = runc(&root).args(["list", "-q"]).output();
        let ids: Vec<String> = match ids {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            Err(e) => {
                eprintln!("lab: runc list in {}: {e}", root.display());
                Vec::new()
            }
        };
        for id in &ids {
            if let Err(e) = runc(&root)
                .args(["kill", id, "KILL"])
                .stdout(Stdio::null())
                .status()
            {
                eprintln!("lab: runc kill {id}: {e}");
            }
        }
        wait_for_shims(&runtime.join("bundles"));
        for id in &ids {
            if let Err(e) = runc(&root)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .status()
            {
                eprintln!("lab: runc delete {id}: {e}");
            }
        }
    }
    unmount_under(state_dir);
}

/// Pids of the shims still alive under `bundles`.
fn live_shims(bundles: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = std::fs::read_to_string(entry.path().join("shim.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let bundle = entry.path();
            let ours = cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == bundle.as_os_str().as_encoded_bytes());
            ours.then_some(pid)
        })
        .collect()
}

fn wait_for_shims(bundles: &Path) {
    let deadline = Instant::now() + SHIM_EXIT;
    loop {
        let alive = live_shims(bundles);
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in alive {
                // ESRCH: it exited in between.
                let _gone = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every mount point of this process's mount namespace.
pub(crate) fn mount_points() -> std::io::Result<std::collections::HashSet<std::path::PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| std::path::PathBuf::from(p.replace("\\040", " ")))
        .collect())
}

/// Mount points under `dir` (deepest first).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = mount_points()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// Detaches every mount under `dir`: the node's directory can then be
/// removed without ever descending into a mount of the node's `/`.
pub fn unmount_under(dir: &Path) {
    for point in mounts_under(dir) {
        match nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => eprintln!("lab: unmounting {point}: {e}"),
        }
    }
}
