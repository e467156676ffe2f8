//! A task's secrets and configs: files that exist only in memory, in a
//! tmpfs that belongs to that task alone, and are gone when it stops.
//!
//! How (see [`Staging`]):
//! 1. Before `runc create`, the runtime bind-mounts the staging directory
//!    `<state>/files/<id>` on itself and makes it `MS_PRIVATE`, then mounts
//!    a small tmpfs there (mode 0700, `nosuid,nodev,noexec`, sized to the
//!    files) and makes that private too. The private parent matters: a mount
//!    made under a shared parent (systemd makes `/` shared) is copied into
//!    every peer and slave mount namespace of the node; under a private one
//!    the tmpfs is never copied anywhere by propagation, nor is its unmount.
//! 2. The files are written there with the uid, gid and mode asked: targets
//!    under `/run/secrets` into a `secrets/` tree, bound read-only at
//!    `/run/secrets`; every other target (configs, absolute secret
//!    targets) a read-only bind of its single file.
//! 3. runc copies those binds into the container's mount namespace (its own
//!    copy of the node's tree, where the staging mount is private as well;
//!    runc's default `rslave` root propagation cannot make a private mount
//!    a slave of anything, and the binds are `rprivate`).
//! 4. Once the container exists (`Runtime::start_with` got the shim's
//!    report), the runtime lazily unmounts the staging tmpfs and its bind
//!    and removes the directory: from then on the tmpfs is reachable only
//!    through the container's mounts, and the kernel frees it with the
//!    container's mount namespace when its last process exits. A failure
//!    before that point unmounts and removes it too.
//!
//! Nothing of the data is ever written under the state directory, in
//! `config.json` (which names the staging paths only), in a log or in an
//! error: [`TaskFile`]'s `Debug` shows its size only.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::RuntimeError;
use crate::error::io_err;

/// Where secrets with a relative target go in the task (docker's).
pub const SECRETS_DIR: &str = "/run/secrets";
/// Most bytes of files one task can be given (swarmkit's limits are 500 KiB
/// a secret and 1000 KiB a config; this bounds the tmpfs of a task with
/// many of them).
pub const MAX_FILES_BYTES: u64 = 64 << 20;
/// Most files one task can be given.
pub const MAX_FILES: usize = 1000;
/// Permission bits a file can have: no setuid, setgid or sticky bit.
pub const MAX_MODE: u32 = 0o777;
/// Longest target path (`PATH_MAX` - 1).
const MAX_TARGET_LEN: usize = 4095;
/// tmpfs accounts whole pages.
const PAGE: u64 = 4096;
/// Room beyond the pages of the files and their directories.
const SLACK: u64 = 16 * PAGE;
/// Source name of the staging tmpfs, as `/proc/*/mountinfo` shows it.
pub const TMPFS_SOURCE: &str = "shoal-task-files";

/// One file of a task: a secret or a config, with its data.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TaskFile {
    /// Absolute path in the task; under [`SECRETS_DIR`] it is part of the
    /// task's `/run/secrets` tree, elsewhere a file of its own.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, at most [`MAX_MODE`].
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Never the data: a `Debug` of a spec may end up in a log or an error.
impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile")
            .field("target", &self.target)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// Where one file lies in the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// `secrets/<rel>`, part of the tree bound at [`SECRETS_DIR`].
    Secret(PathBuf),
    /// `single/<n>`, bound alone at its target.
    Single(String),
}

const SECRETS_SUBDIR: &str = "secrets";
const SINGLE_SUBDIR: &str = "single";

/// Where each file goes, in order.
pub(crate) fn placements(files: &[TaskFile]) -> Vec<Placement> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| match secret_relative(&f.target) {
            Some(rel) => Placement::Secret(rel),
            None => Placement::Single(i.to_string()),
        })
        .collect()
}

/// The part of `target` below [`SECRETS_DIR`], if it is below it.
fn secret_relative(target: &str) -> Option<PathBuf> {
    let rel = Path::new(target).strip_prefix(SECRETS_DIR).ok()?;
    (!rel.as_os_str().is_empty()).then(|| rel.to_owned())
}

/// The read-only binds a task gets from `staging`: (target in the task,
/// source on the node, whether a directory).
pub(crate) fn binds(files: &[TaskFile], staging: &Path) -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    let places = placements(files);
    if places.iter().any(|p| matches!(p, Placement::Secret(_))) {
        out.push((SECRETS_DIR.to_owned(), staging.join(SECRETS_SUBDIR), true));
    }
    for (file, place) in files.iter().zip(&places) {
        if let Placement::Single(name) = place {
            out.push((
                file.target.clone(),
                staging.join(SINGLE_SUBDIR).join(name),
                false,
            ));
        }
    }
    out
}

/// Checks the files of a task: each target an absolute, normal path (no
/// `.`, `..`, `//`, trailing `/`), not under `/proc`, `/sys` or `/dev`, no
/// target inside another file, the mode and sizes in bounds. The first
/// problem is returned as (target or value, reason).
pub(crate) fn validate(files: &[TaskFile]) -> Result<(), (String, String)> {
    if files.len() > MAX_FILES {
        return Err((
            files.len().to_string(),
            format!("a task can be given at most {MAX_FILES} secrets and configs"),
        ));
    }
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    if total > MAX_FILES_BYTES {
        return Err((
            format!("{total} bytes"),
            format!(
                "a task's secrets and configs hold at most {} MiB in all",
                MAX_FILES_BYTES >> 20
            ),
        ));
    }
    let mut targets = BTreeSet::new();
    for f in files {
        let target = f.target.as_str();
        normal_target(target).map_err(|reason| (target.to_owned(), reason.to_owned()))?;
        if f.mode > MAX_MODE {
            return Err((
                format!("{target} mode {:#o}", f.mode),
                "permission bits only: 0000 to 0777".to_owned(),
            ));
        }
        if !targets.insert(target) {
            return Err((
                target.to_owned(),
                "two secrets or configs on one target; give each its own".to_owned(),
            ));
        }
    }
    // Sorted, a path inside another comes right after it or after its
    // siblings: check each against every later one sharing its prefix.
    let sorted: Vec<&str> = targets.iter().copied().collect();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if !b.starts_with(a) {
                break;
            }
            if inside(b, a) {
                return Err((
                    (*b).to_owned(),
                    format!("inside {a}, which is a file; choose another target"),
                ));
            }
        }
    }
    Ok(())
}

/// `path` strictly below `dir`.
pub(crate) fn inside(path: &str, dir: &str) -> bool {
    Path::new(path) != Path::new(dir) && Path::new(path).starts_with(dir)
}

fn normal_target(target: &str) -> Result<(), &'static str> {
    if !target.starts_with('/') || target.len() > MAX_TARGET_LEN || target.contains('\0') {
        return Err("an absolute path of at most 4095 bytes, without NUL");
    }
    if target.ends_with('/') || target.contains("//") {
        return Err("a file's path: no trailing '/' and no empty component");
    }
    // By hand: `Path::components` drops `.` silently.
    if target[1..].split('/').any(|c| c == "." || c == "..") {
        return Err("no '.' or '..' components");
    }
    if target == "/" || target == SECRETS_DIR {
        return Err("a file's path, not / or /run/secrets itself");
    }
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|d| Path::new(target).starts_with(d))
    {
        return Err("not under /proc, /sys or /dev, which the task gets from the kernel");
    }
    Ok(())
}

/// Bytes of tmpfs the files need: their pages, a page per directory and
/// some slack.
pub(crate) fn tmpfs_size(files: &[TaskFile]) -> u64 {
    let pages: u64 = files
        .iter()
        .map(|f| (f.data.len() as u64).div_ceil(PAGE))
        .sum();
    let dirs: u64 = files
        .iter()
        .filter_map(|f| secret_relative(&f.target))
        .map(|rel| rel.components().count() as u64)
        .sum();
    (pages + dirs + 2) * PAGE + SLACK
}

/// A task's staging tmpfs on the node, from before `runc create` until the
/// container holds its own mounts of it. Dropping it unmounts and removes
/// it (best effort); [`remove`](Self::remove) does so and reports.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: Option<PathBuf>,
}

impl Staging {
    /// No files: nothing is mounted.
    pub(crate) fn none() -> Staging {
        Staging { dir: None }
    }

    /// Mounts the staging tmpfs at `dir` (made, and left empty on the node's
    /// side) and writes `files` into it.
    pub(crate) fn new(dir: PathBuf, files: &[TaskFile]) -> Result<Staging, RuntimeError> {
        if files.is_empty() {
            return Ok(Staging::none());
        }
        if let Some(parent) = dir.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent, "create"))?;
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir, "create"))?;
        // From here on, a failure unmounts and removes through Drop.
        let staging = Staging {
            dir: Some(dir.clone()),
        };
        let mount_err = |op| {
            let dir = dir.clone();
            move |e: Errno| RuntimeError::Io {
                path: dir,
                op,
                source: e.into(),
            }
        };
        let private = |what| {
            mount(
                None::<&str>,
                &dir,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(mount_err(what))
        };
        // The private parent: see the module's comment.
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err("bind-mount on itself"))?;
        private("make private")?;
        let options = format!(
            "mode=0700,size={},nr_inodes={}",
            tmpfs_size(files),
            files.len() * 2 + 16
        );
        mount(
            Some(TMPFS_SOURCE),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .map_err(mount_err("mount a tmpfs on"))?;
        private("make the tmpfs private")?;
        for (file, place) in files.iter().zip(placements(files)) {
            let path = match place {
                Placement::Secret(rel) => dir.join(SECRETS_SUBDIR).join(rel),
                Placement::Single(name) => dir.join(SINGLE_SUBDIR).join(name),
            };
            if let Some(parent) = path.parent() {
                make_dirs(parent, &dir)?;
            }
            write_file(&path, file)?;
        }
        Ok(staging)
    }

    /// The staging directory, while mounted.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Unmounts the staging tmpfs from the node (the container keeps its
    /// own mounts of it) and removes the directory.
    pub(crate) fn remove(mut self) -> Result<(), RuntimeError> {
        match self.dir.take() {
            Some(dir) => remove_staging(&dir),
            None => Ok(()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take()
            && let Err(error) = remove_staging(&dir)
        {
            tracing::warn!(%error, "removing a task's staged files");
        }
    }
}

/// Makes `dir` and its parents below `root`, each 0755 (a task's users
/// must reach their files; each file's own mode guards it).
fn make_dirs(dir: &Path, root: &Path) -> Result<(), RuntimeError> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent, root)?;
    }
    DirBuilder::new()
        .mode(0o755)
        .create(dir)
        .map_err(io_err(dir, "create"))?;
    // The daemon's umask must not narrow it.
    std::fs::set_permissions(dir, Permissions::from_mode(0o755)).map_err(io_err(dir, "chmod"))
}

fn write_file(path: &Path, file: &TaskFile) -> Result<(), RuntimeError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path, "create"))?;
    out.write_all(&file.data).map_err(io_err(path, "write"))?;
    // Owner first: chown clears set-id bits, chmod then sets the mode asked.
    std::os::unix::fs::fchown(&out, Some(file.uid), Some(file.gid))
        .map_err(io_err(path, "chown"))?;
    out.set_permissions(Permissions::from_mode(file.mode))
        .map_err(io_err(path, "chmod"))
}

/// Unmounts whatever is stacked on a staging directory (the tmpfs, then
/// its private bind) and removes it. Never recursive: once unmounted, the
/// directory on the node is empty, and if it is not, something else is
/// there that must not be deleted blindly.
pub(crate) fn remove_staging(dir: &Path) -> Result<(), RuntimeError> {
    // Two mounts are stacked; more would be a bug, but must not loop.
    for _ in 0..4 {
        match umount2(dir, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(io_err(dir, "unmount")(e.into())),
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(dir, "remove")(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    fn file(target: &str) -> TaskFile {
        TaskFile {
            target: target.into(),
            mode: 0o444,
            data: b"hunter2".to_vec(),
            ..TaskFile::default()
        }
    }

    #[test]
    fn a_task_file_never_prints_its_data() {
        let shown = format!("{:?} {:#?}", file("/run/secrets/a"), file("/x"));
        assert!(
            !shown.contains("hunter2") && !shown.contains("104, 117"),
            "{shown}"
        );
        assert!(
            shown.contains("<7 bytes>") && shown.contains("0o444"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_share_one_tree_and_other_targets_are_bound_alone() {
        let files = [
            file("/run/secrets/db_pass"),
            file("/etc/app.conf"),
            file("/run/secrets/sub/alias"),
            file("/run/secretsx"),
        ];
        assert_eq!(
            placements(&files),
            vec![
                Placement::Secret("db_pass".into()),
                Placement::Single("1".into()),
                Placement::Secret("sub/alias".into()),
                Placement::Single("3".into()),
            ]
        );
        let staging = Path::new("/s");
        assert_eq!(
            binds(&files, staging),
            vec![
                ("/run/secrets".into(), "/s/secrets".into(), true),
                ("/etc/app.conf".into(), "/s/single/1".into(), false),
                ("/run/secretsx".into(), "/s/single/3".into(), false),
            ]
        );
        assert_eq!(binds(&[file("/a.conf")], staging).len(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_target_named() {
        let cases: Vec<(Vec<TaskFile>, &str)> = vec![
            (vec![file("relative")], "relative"),
            (vec![file("/")], "/"),
            (vec![file("/run/secrets")], "/run/secrets"),
            (vec![file("/run/secrets/")], "/run/secrets/"),
            (vec![file("/a//b")], "/a//b"),
            (vec![file("/a/../etc/shadow")], "/a/../etc/shadow"),
            (vec![file("/a/./b")], "/a/./b"),
            (vec![file("/proc/1/x")], "/proc/1/x"),
            (vec![file("/dev/x")], "/dev/x"),
            (vec![file("/a\0b")], "/a\0b"),
            (vec![file("/x"), file("/x")], "/x"),
            (
                vec![file("/run/secrets/a"), file("/run/secrets/a/b")],
                "/run/secrets/a/b",
            ),
            (
                vec![file("/etc/app"), file("/etc/app.d"), file("/etc/app/x")],
                "/etc/app/x",
            ),
        ];
        for (files, named) in cases {
            let got = validate(&files).map_err(|(value, _)| value);
            assert_eq!(got, Err(named.to_owned()), "{files:?}");
        }
        let mut setuid = file("/x");
        setuid.mode = 0o4755;
        assert!(validate(&[setuid]).is_err());
        let big = TaskFile {
            data: vec![0; (MAX_FILES_BYTES + 1) as usize],
            ..file("/x")
        };
        assert!(validate(&[big]).is_err());
        assert!(
            validate(&[
                file("/run/secrets/a"),
                file("/run/secrets/ab"),
                file("/etc/a.conf")
            ])
            .is_ok()
        );
    }

    #[test]
    fn the_tmpfs_fits_the_files_with_little_to_spare() {
        let mut a = file("/run/secrets/a/b");
        a.data = vec![1; 5000];
        let size = tmpfs_size(&[a, file("/x")]);
        // Two pages of data, one of data, two directories, root: six pages.
        assert_eq!(size, (2 + 1 + 2 + 2) * PAGE + SLACK);
        assert!(size < 1 << 20);
    }

    /// The mountinfo lines of mounts at `dir`.
    fn mounts_at(dir: &Path) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir = dir.to_string_lossy();
        info.lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*dir))
            .map(str::to_owned)
            .collect()
    }

    /// Needs root (mount, chown), as the runtime does.
    #[test]
    fn staging_writes_files_with_their_owner_and_mode_on_a_private_tmpfs_then_leaves_nothing()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("files").join("t1");
        let files = [
            TaskFile {
                uid: 1000,
                gid: 1001,
                mode: 0o400,
                ..file("/run/secrets/db_pass")
            },
            TaskFile {
                mode: 0o440,
                data: b"port = 80\n".to_vec(),
                ..file("/etc/app.conf")
            },
            file("/run/secrets/deep/alias"),
        ];
        let staging = Staging::new(dir.clone(), &files)?;
        let check = |rel: &str, data: &[u8], uid, gid, mode| -> std::io::Result<()> {
            let path = dir.join(rel);
            let meta = std::fs::metadata(&path)?;
            assert_eq!(std::fs::read(&path)?, data, "{rel}");
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (uid, gid, mode),
                "{rel}"
            );
            Ok(())
        };
        check("secrets/db_pass", b"hunter2", 1000, 1001, 0o400)?;
        check("single/1", b"port = 80\n", 0, 0, 0o440)?;
        check("secrets/deep/alias", b"hunter2", 0, 0, 0o444)?;
        assert_eq!(
            std::fs::metadata(dir.join("secrets"))?.mode() & 0o777,
            0o755
        );
        assert_eq!(std::fs::metadata(&dir)?.mode() & 0o777, 0o700);
        // The bind, then the tmpfs on it: neither shared with anything.
        let mounts = mounts_at(&dir);
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        let tmpfs = mounts.last().expect("two mounts");
        assert!(
            tmpfs.contains(&format!(" - tmpfs {TMPFS_SOURCE} ")),
            "{tmpfs}"
        );
        for m in &mounts {
            assert!(!m.contains("shared:") && !m.contains("master:"), "{m}");
        }
        for o in ["nosuid", "nodev", "noexec"] {
            assert!(
                tmpfs.split(' ').nth(5).is_some_and(|f| f.contains(o)),
                "{o}: {tmpfs}"
            );
        }
        staging.remove()?;
        assert!(mounts_at(&dir).is_empty());
        assert!(!dir.exists());
        // Dropped without `remove` (a start that failed after staging): the
        // same.
        let dropped = Staging::new(dir.clone(), &files[..1])?;
        drop(dropped);
        assert!(mounts_at(&dir).is_empty() && !dir.exists());
        // No files: nothing mounted, nothing made.
        assert!(Staging::new(dir.clone(), &[])?.dir().is_none());
        assert!(!dir.exists());
        Ok(())
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_.-]{1,8}",
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(String::new()),
        ]
    }

    proptest! {
        /// Whatever validation accepts stays inside the staging directory
        /// and is placed exactly once.
        #[test]
        fn accepted_targets_never_escape_their_staging_directory(
            parts in proptest::collection::vec(component(), 1..5),
            under_secrets in any::<bool>(),
        ) {
            let prefix = if under_secrets { SECRETS_DIR } else { "" };
            let target = format!("{prefix}/{}", parts.join("/"));
            let files = [file(&target)];
            if validate(&files).is_ok() {
                let staging = Path::new("/staging");
                let bound = binds(&files, staging);
                prop_assert_eq!(bound.len(), 1);
                let placed = match &placements(&files)[0] {
                    Placement::Secret(rel) => staging.join(SECRETS_SUBDIR).join(rel),
                    Placement::Single(n) => staging.join(SINGLE_SUBDIR).join(n),
                };
                let normal = placed.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
                prop_assert!(normal && placed.starts_with(staging), "{}", placed.display());
                prop_assert!(!parts.iter().any(|p| p == "." || p == ".." || p.is_empty()));
            }
        }
    }
}
