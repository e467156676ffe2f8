//! bpffs, where pinned maps and links live.

use std::path::Path;

use nix::errno::Errno;

/// Where bpffs is mounted by convention.
pub const ROOT: &str = "/sys/fs/bpf";

/// bpffs's magic (linux/magic.h `BPF_FS_MAGIC`).
const MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == MAGIC)
}

/// Mounts bpffs on [`ROOT`] (needs root; the caller checks it is not
/// mounted already, or a second bpffs would hide the first's pins).
pub fn mount_root() -> Result<(), Errno> {
    nix::mount::mount(
        Some("bpf"),
        ROOT,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
}
