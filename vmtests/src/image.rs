//! The VM image: Debian's kernel, its initramfs and a root filesystem made
//! with `debootstrap --variant=minbase`, cached under
//! `/var/cache/shoal-vm/<hash of its inputs>/` so that a machine builds it
//! once and every later lab (and every fresh clone on the same machine)
//! reuses it.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{VmError, io_err};
use crate::tool;

/// Where images are cached, one directory per input hash.
pub const CACHE_DIR: &str = "/var/cache/shoal-vm";
/// Debian release of the guests: the one Vagrant's `debian/bookworm64` boxes carry.
pub const SUITE: &str = "bookworm";
/// Size of the root filesystem (sparse; each VM writes to its own overlay).
const ROOTFS_SIZE: &str = "4G";
/// Bumped when the way the image is built changes without its inputs changing.
const FORMAT: u32 = 2;

/// What a VM is besides what provision.sh asks for: a kernel with modules
/// and a proper initramfs (virtio, 9p, vxlan, esp4, wireguard are modules
/// in Debian's 6.1), systemd, sshd for `vm exec`, tools to look around.
const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "openssh-server",
    "procps",
    "iputils-ping",
    "iproute2",
    "less",
];

/// Files the image carries for the qemu lab: (path in the rootfs, content,
/// mode). Vagrant does their job for its boxes.
const GUEST_FILES: &[(&str, &str, u32)] = &[
    (
        "usr/local/sbin/shoal-vm-net",
        include_str!("../guest/shoal-vm-net.sh"),
        0o755,
    ),
    (
        "usr/local/sbin/shoal-vm-provision",
        include_str!("../guest/shoal-vm-provision.sh"),
        0o755,
    ),
    (
        "etc/systemd/system/shoal-vm-net.service",
        include_str!("../guest/shoal-vm-net.service"),
        0o644,
    ),
    (
        "etc/systemd/system/shoal-vm-provision.service",
        include_str!("../guest/shoal-vm-provision.service"),
        0o644,
    ),
    // Loaded before shoal-vm-net mounts the share; the rest autoload.
    (
        "etc/modules-load.d/shoal-vm.conf",
        "virtio_net\n9p\n9pnet_virtio\n",
        0o644,
    ),
    ("etc/fstab", "/dev/vda / ext4 rw,relatime 0 1\n", 0o644),
];
/// Units enabled in the image.
const UNITS: &[&str] = &["shoal-vm-net.service", "shoal-vm-provision.service"];

/// Everything an image is made from; its hash names the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The Debian mirror this machine's apt uses.
    pub mirror: String,
    pub suite: String,
    /// Sorted, deduplicated.
    pub packages: Vec<String>,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// A raw ext4 image, the read-only backing file of every VM's overlay.
    pub rootfs: PathBuf,
}

impl ImageSpec {
    /// The image for this machine: its apt mirror, and the packages of
    /// `provision.sh --print-packages` on top of the VM's own.
    pub fn for_this_machine(provision: &Path) -> Result<ImageSpec, VmError> {
        let mirror = mirror_of_this_machine()?;
        let out = tool::output(
            Command::new("bash").arg(provision).arg("--print-packages"),
            "provision.sh --print-packages",
        )?;
        let extra = String::from_utf8_lossy(&out);
        Ok(ImageSpec::new(
            mirror,
            BASE_PACKAGES
                .iter()
                .map(|p| (*p).to_owned())
                .chain(extra.split_whitespace().map(str::to_owned)),
        ))
    }

    pub fn new(mirror: String, packages: impl IntoIterator<Item = String>) -> ImageSpec {
        let mut packages: Vec<String> = packages.into_iter().collect();
        packages.sort();
        packages.dedup();
        ImageSpec {
            mirror,
            suite: SUITE.to_owned(),
            packages,
        }
    }

    /// The inputs, one per line: what is hashed, and kept beside the image.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "format {FORMAT}\nmirror {}\nsuite {}\npackages {}\n",
            self.mirror,
            self.suite,
            self.packages.join(" ")
        );
        for (path, content, mode) in GUEST_FILES {
            let digest = hex::encode(Sha256::digest(content.as_bytes()));
            let _infallible = writeln!(text, "file {path} {mode:o} {digest}");
        }
        text
    }

    /// 16 hex digits of the inputs' SHA-256.
    pub fn key(&self) -> String {
        hex::encode(&Sha256::digest(self.describe().as_bytes())[..8])
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(CACHE_DIR).join(self.key())
    }
}

impl Image {
    pub(crate) fn at(dir: PathBuf) -> Image {
        Image {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            rootfs: dir.join("rootfs.img"),
            dir,
        }
    }
}

/// The cached image for `spec`, built first if this machine has none
/// (minutes: debootstrap from the mirror). Returns it and the build time,
/// `None` when the cache had it. Concurrent callers wait for one build.
pub fn ensure(spec: &ImageSpec) -> Result<(Image, Option<Duration>), VmError> {
    let dir = spec.dir();
    let image = Image::at(dir.clone());
    if image.complete() {
        return Ok((image, None));
    }
    fs::create_dir_all(CACHE_DIR).map_err(io_err(CACHE_DIR, "create"))?;
    let lock_path = Path::new(CACHE_DIR).join(".lock");
    let lock = File::create(&lock_path).map_err(io_err(&lock_path, "create"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(&lock_path, "lock")(e.into()))?;
    if image.complete() {
        return Ok((image, None));
    }
    let started = Instant::now();
    let tmp = Path::new(CACHE_DIR).join(format!(".build-{}", spec.key()));
    // A build that died half-way left this; we hold the lock, so it is stale.
    remove_tree(&tmp)?;
    fs::create_dir_all(&tmp).map_err(io_err(&tmp, "create"))?;
    // The half-built tree stays for a look until the next build removes it.
    if let Err(e) = build(spec, &tmp) {
        return Err(VmError::Tool {
            tool: format!("building the VM image in {}", tmp.display()),
            status: e.to_string(),
            output: tool::tail(&tmp.join("build.log"), 30),
        });
    }
    if dir.exists() {
        remove_tree(&dir)?;
    }
    fs::rename(&tmp, &dir).map_err(io_err(&dir, "rename build into place"))?;
    Ok((image, Some(started.elapsed())))
}

impl Image {
    fn complete(&self) -> bool {
        self.dir.join("complete").is_file()
    }
}

fn remove_tree(dir: &Path) -> Result<(), VmError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(dir, "remove")(e)),
        _ => Ok(()),
    }
}

fn build(spec: &ImageSpec, tmp: &Path) -> Result<(), VmError> {
    let log_path = tmp.join("build.log");
    let root = tmp.join("root");
    println!(
        "vm: building the VM image {} (debootstrap {} from {}; a few minutes, once per machine)",
        spec.key(),
        spec.suite,
        spec.mirror
    );
    tool::logged(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", spec.packages.join(",")))
            .arg(&spec.suite)
            .arg(&root)
            .arg(&spec.mirror),
        "debootstrap",
        &log_path,
    )?;
    for (path, content, mode) in GUEST_FILES {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent, "create"))?;
        }
        fs::write(&target, content).map_err(io_err(&target, "write"))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
            .map_err(io_err(&target, "chmod"))?;
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(io_err(&wants, "create"))?;
    for unit in UNITS {
        let link = wants.join(unit);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
            .map_err(io_err(&link, "symlink"))?;
    }
    // Every VM must make its own machine id at first boot: systemd derives
    // the MACs of new links (VXLAN devices, bridges) from it, and clones
    // sharing one get the same MACs on every node.
    let machine_id = root.join("etc/machine-id");
    fs::write(&machine_id, "").map_err(io_err(&machine_id, "truncate"))?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    match fs::remove_file(&dbus_id) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&dbus_id, "remove")(e));
        }
        _ => {}
    }
    // Downloaded packages are not needed in the image.
    let archives = root.join("var/cache/apt/archives");
    for entry in fs::read_dir(&archives)
        .map_err(io_err(&archives, "list"))?
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "deb") {
            fs::remove_file(entry.path()).map_err(io_err(entry.path(), "remove"))?;
        }
    }
    let boot = root.join("boot");
    let kernel = find_prefixed(&boot, "vmlinuz-")?;
    let initrd = find_prefixed(&boot, "initrd.img-")?;
    fs::copy(&kernel, tmp.join("vmlinuz")).map_err(io_err(&kernel, "copy"))?;
    fs::copy(&initrd, tmp.join("initrd.img")).map_err(io_err(&initrd, "copy"))?;
    // No mount, no loop device: mke2fs fills the filesystem from the tree.
    tool::logged(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "shoal-root", "-d"])
            .arg(&root)
            .arg(tmp.join("rootfs.img"))
            .arg(ROOTFS_SIZE),
        "mkfs.ext4",
        &log_path,
    )?;
    remove_tree(&root)?;
    let inputs = tmp.join("inputs");
    fs::write(&inputs, spec.describe()).map_err(io_err(&inputs, "write"))?;
    let complete = tmp.join("complete");
    fs::write(&complete, "").map_err(io_err(&complete, "write"))
}

fn find_prefixed(dir: &Path, prefix: &str) -> Result<PathBuf, VmError> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir, "list"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| VmError::Missing {
        what: format!("{}/{prefix}*", dir.display()),
        fix: "linux-image-amd64 and initramfs-tools must install in the chroot; see build.log"
            .into(),
    })
}

/// The Debian mirror apt on this machine uses for the guests' release.
pub fn mirror_of_this_machine() -> Result<String, VmError> {
    let mut texts = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if let Ok(text) = fs::read_to_string(main) {
        texts.push(text);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
                && let Ok(text) = fs::read_to_string(&path)
            {
                texts.push(text);
            }
        }
    }
    texts
        .iter()
        .find_map(|t| debian_mirror(t, SUITE))
        .ok_or_else(|| VmError::Missing {
            what: format!("an apt source for Debian {SUITE} in /etc/apt/sources.list*"),
            fix: format!("add the mirror apt should use, e.g. `deb http://deb.debian.org/debian {SUITE} main`"),
        })
}

/// The first source in `text` (one-line `deb URI SUITE …` or deb822
/// stanzas) that serves `suite` itself (not `-updates`/`-security`).
pub fn debian_mirror(text: &str, suite: &str) -> Option<String> {
    // One-line format.
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        // Options in brackets: `deb [arch=amd64 signed-by=…] URI SUITE …`.
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        if let [uri, s, ..] = rest.as_slice()
            && *s == suite
            && is_url(uri)
        {
            return Some((*uri).trim_end_matches('/').to_owned());
        }
    }
    // deb822: stanzas separated by blank lines.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
            })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|w| w == "deb"));
        let serves = field("Suites").is_some_and(|s| s.split_whitespace().any(|w| w == suite));
        if is_deb
            && serves
            && let Some(uri) = field("URIs")
                .and_then(|u| u.split_whitespace().find(|u| is_url(u)).map(str::to_owned))
        {
            return Some(uri.trim_end_matches('/').to_owned());
        }
    }
    None
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEB822: &str = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
        Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
        Components: main\n";

    #[test]
    fn finds_the_mirror_of_this_machine_kind() {
        assert_eq!(
            debian_mirror(DEB822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        // Only the security suite: not a mirror of bookworm itself.
        assert_eq!(debian_mirror(DEB822, "trixie"), None);
    }

    #[test]
    fn one_line_sources_with_options() {
        let text = "# comment\ndeb-src http://x/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            debian_mirror(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_mirror(
                "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main",
                "bookworm"
            ),
            None
        );
    }

    #[test]
    fn key_changes_with_every_input() {
        let a = ImageSpec::new("http://m/debian".into(), ["runc".to_owned()]);
        let b = ImageSpec::new("http://m/debian".into(), ["runc".to_owned(), "curl".into()]);
        let c = ImageSpec::new("http://n/debian".into(), ["runc".to_owned()]);
        assert_eq!(a.key().len(), 16);
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        // Order and duplicates do not matter.
        let d = ImageSpec::new("http://m/debian".into(), ["runc".to_owned(), "runc".into()]);
        assert_eq!(a.key(), d.key());
    }

    proptest! {
        #[test]
        fn never_panics_and_returns_a_url(text in "(deb|Types: deb|URIs: |Suites: |\\[a=b\\]| |bookworm|http://m|\n|:|x){0,40}") {
            if let Some(m) = debian_mirror(&text, "bookworm") {
                prop_assert!(is_url(&m));
            }
        }

        #[test]
        fn one_line_round_trip(host in "[a-z]{1,10}", path in "(/[a-z]{1,8}){0,3}") {
            let uri = format!("http://{host}{path}");
            let text = format!("deb {uri} bookworm main contrib\n");
            prop_assert_eq!(debian_mirror(&text, "bookworm"), Some(uri));
        }
    }
}
