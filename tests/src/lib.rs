//! The Shoal netns lab: Shoal "nodes" as network namespaces on an underlay
//! bridge, each running its own `shoald`, for integration tests and for
//! `cargo xtask lab`. Needs root.
//!
//! ```text
//!  shoal-<lab>-n1      shoal-<lab>-n2   …   shoal-<lab>-client
//!  eth0 198.18.0.1     eth0 198.18.0.2      eth0 198.18.0.250
//!       │                   │                    │
//!  ─────n1──────────────────n2──── br0 ─────────client──  shoal-<lab>-ul
//! ```
//!
//! Nothing touches the host's network: the bridge lives in its own
//! namespace. Namespaces are bind mounts in `/run/netns` (so `ip netns`
//! sees them), all wiring is done by netlink, and per-lab files live in
//! `/run/shoal-lab/<lab>/` (`lab.json`, `owner`, `nK/shoald.{log,sock,pid}`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_lab::LabError> {
//! use shoal_lab::Lab;
//! let lab = Lab::builder("demo").nodes(3).client(true).start().await?;
//! let status = lab.command(2, "shoal").arg("node").arg("ls").status();
//! lab.cut(3).await?;
//! # Ok(()) }
//! ```

mod daemon;
mod error;
pub mod images;
mod lab;
pub mod load;
pub mod netns;
pub mod nodeloss;
pub mod probe;
mod record;
mod shoal;
pub mod synthetic;
pub mod taskns;
mod tasks;
mod underlay;

pub use daemon::{SHOALD_BIN_ENV, log_tail, shoald_path, use_binaries_from};
pub use error::LabError;
pub use lab::{Lab, LabBuilder, MAX_NAME_LEN, MAX_NODES, Node, SHOAL_HOST_ENV, validate_name};
pub use netns::run_in_netns;
pub use record::{RUN_DIR, sweep_stale};
pub use shoal::{
    BoxError, FAST_HEARTBEAT, Formation, NodeRow, TaskRow, eventually, shoal_path, task_pid,
};
pub use tasks::{kill_node_tasks, unmount_under};
pub use underlay::{
    BRIDGE, CLIENT_ADDR, DATA_IFACE, MTU, address_up, attach, create_bridge, link, link_index,
    node_addr, set_link_up,
};

/// Every file under `dir`, recursively (what a node left on disk). Mount
/// points are skipped: a running task's rootfs is a mount of the node's `/`
/// and its netns file a mount of nsfs, neither of them the node's state.
pub fn files_under(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mounts = tasks::mount_points()?;
    let mut out = Vec::new();
    files_under_skipping(dir, &mounts, &mut out)?;
    Ok(out)
}

fn files_under_skipping(
    dir: &std::path::Path,
    mounts: &std::collections::HashSet<std::path::PathBuf>,
    out: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if mounts.contains(&path) {
            continue;
        }
        if path.is_dir() {
            files_under_skipping(&path, mounts, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
