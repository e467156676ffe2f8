//! Applies one layer (a tar, plain, gzip or zstd) onto a directory, the way
//! docker does, without ever writing outside it.
//!
//! Every path is resolved here component by component with `lstat`: `..` is
//! refused, a leading `/` means the root, and an entry whose parent is a
//! symlink is refused rather than followed. Files are created with
//! `O_EXCL` after whatever was at their path is removed, so the final
//! component is never followed either. Symlink targets are stored as given:
//! nothing is ever written through them.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fs::{self, FileTimes, OpenOptions},
    io::{self, BufRead, BufReader, Read},
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use nix::sys::{
    stat::{Mode, SFlag, lutimes, makedev, mknod},
    time::TimeVal,
};
use oci_spec::image::MediaType;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::{Digest, ImageError, error::io_err};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// overlayfs reads its own state from these; an image must not forge it in
/// a directory that becomes a lowerdir.
/// (`user.overlay.` in overlayfs' userxattr mode.)
const FORBIDDEN_XATTR_PREFIXES: &[&str] = &["trusted.overlay.", "user.overlay."];
/// 9999-12-31T23:59:59Z.
const MAX_MTIME: u64 = 253_402_300_799;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the first bytes of a blob: what legacy `docker save` layers,
    /// which have no media type, need.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn oci_media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// The compression a layer media type declares; anything that is not a
/// layer is refused.
pub fn layer_compression(media_type: &MediaType) -> Result<Compression, ImageError> {
    Ok(match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
        MediaType::Other(m) if m == DOCKER_LAYER_GZIP || m == DOCKER_FOREIGN_LAYER_GZIP => {
            Compression::Gzip
        }
        MediaType::Other(m) if m == DOCKER_LAYER_TAR => Compression::None,
        other => {
            return Err(ImageError::UnknownMediaType {
                media_type: other.to_string(),
            });
        }
    })
}

/// Applies the layer blob `blob` (digest `layer`, of `media_type`) onto
/// `root`. On error `root` is left part-applied: callers unpack into a
/// scratch directory and throw it away.
pub fn apply_layer(
    root: &Path,
    layer: &Digest,
    media_type: &MediaType,
    blob: impl Read,
) -> Result<(), ImageError> {
    apply_layer_checked(root, layer, media_type, None, blob)
}

/// As [`apply_layer`], also checking the uncompressed tar against the
/// config's diff ID for this layer, as docker does.
pub fn apply_layer_checked(
    root: &Path,
    layer: &Digest,
    media_type: &MediaType,
    diff_id: Option<&Digest>,
    blob: impl Read,
) -> Result<(), ImageError> {
    let declared = layer_compression(media_type)?;
    let mut input = BufReader::new(blob);
    let bad = |source| ImageError::BadLayer {
        layer: layer.clone(),
        source,
    };
    let head = input.fill_buf().map_err(bad)?;
    // A plain-tar media type over compressed bytes happens (docker's own
    // "diff.tar" from old tools); the bytes decide. A compressed type over
    // other bytes is corrupt and the decoder says so.
    let compression = match declared {
        Compression::None => Compression::sniff(head),
        c => c,
    };
    let tar: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(bad)?)
        }
    };
    let hashed = apply_stream(
        root,
        layer,
        Hashing {
            inner: tar,
            hasher: Sha256::new(),
        },
    )?;
    let actual = Digest::from_sha256(hashed.hasher.finalize().into());
    match diff_id {
        Some(expected) if *expected != actual => Err(ImageError::DigestMismatch {
            expected: expected.clone(),
            actual,
        }),
        _ => Ok(()),
    }
}

/// Applies an uncompressed layer tar onto `root`.
pub fn apply_tar(root: &Path, layer: &Digest, tar: impl Read) -> Result<(), ImageError> {
    apply_stream(root, layer, tar).map(drop)
}

/// Applies a tar stream, reads it to its end, and gives it back.
fn apply_stream<R: Read>(root: &Path, layer: &Digest, tar: R) -> Result<R, ImageError> {
    let mut archive = tar::Archive::new(tar);
    let mut unpacker = Unpacker {
        root,
        layer,
        written: HashSet::new(),
        dir_times: Vec::new(),
    };
    let entries = archive.entries().map_err(|source| unpacker.bad(source))?;
    for entry in entries {
        let entry = entry.map_err(|source| unpacker.bad(source))?;
        unpacker.entry(entry)?;
    }
    // Read to the end so a truncated or corrupt compressed stream is caught
    // even when the tar's own end marker was lost (and the diff ID covers
    // every byte).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| unpacker.bad(source))?;
    // Children change a directory's mtime, so directories get theirs last.
    for (path, mtime) in unpacker.dir_times.iter().rev() {
        set_mtime_nofollow(path, *mtime).map_err(io_err("setting the mtime of", path))?;
    }
    Ok(rest)
}

/// sha256 of what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct Unpacker<'a> {
    root: &'a Path,
    layer: &'a Digest,
    /// Paths (relative) this layer created, which its own opaque markers
    /// must not clear.
    written: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, u64)>,
}

/// What to do with whatever already sits at an entry's path.
enum Kind {
    Dir,
    Other,
}

impl Unpacker<'_> {
    fn bad(&self, source: io::Error) -> ImageError {
        ImageError::BadLayer {
            layer: self.layer.clone(),
            source,
        }
    }

    fn refuse(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let components = normalise(&raw).map_err(|reason| self.refuse(&raw, reason))?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| self.bad(e))? & 0o7777;
        // Blank numeric fields are 0, as Go's archive/tar (docker's) reads them.
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        // Base-256 mtimes reach 2^63; past year 9999 is clamped (SystemTime
        // and utimes overflow long before).
        let mtime = header.mtime().unwrap_or(0).min(MAX_MTIME);

        let Some((name, parents)) = components.split_last() else {
            // "./": the root itself; only its metadata can apply.
            if kind == EntryType::Directory {
                self.metadata(self.root, uid, gid, Some(mode), &[])?;
                self.dir_times.push((self.root.to_path_buf(), mtime));
            }
            return Ok(());
        };
        let parent = self.parents(&raw, parents, true)?;
        let rel: PathBuf = components.iter().collect();

        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&raw, &parent, parents, hidden);
        }
        let path = parent.join(name);
        let xattrs = self.xattrs(&mut entry, &raw)?;

        match kind {
            EntryType::Directory => {
                self.clear(&path, Kind::Dir)?;
                if fs::symlink_metadata(&path).is_err() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(io_err("creating directory", &path))?;
                }
                self.metadata(&path, uid, gid, Some(mode), &xattrs)?;
                self.dir_times.push((path, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                self.clear(&path, Kind::Other)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err("creating file", &path))?;
                let size = entry.size();
                let copied = io::copy(&mut entry, &mut file).map_err(|e| self.bad(e))?;
                // tar stops quietly at the end of its input: a short copy
                // is a truncated layer.
                if copied != size {
                    return Err(self.bad(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} ends after {copied} of {size} bytes",
                            String::from_utf8_lossy(&raw)
                        ),
                    )));
                }
                // chown before chmod: chown clears setuid and setgid.
                chown_tolerant(std::os::unix::fs::fchown(
                    &file,
                    Some(uid_u32(uid)),
                    Some(uid_u32(gid)),
                ))
                .map_err(io_err("changing the owner of", &path))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err("changing the mode of", &path))?;
                self.set_xattrs(&path, &xattrs);
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
                file.set_times(FileTimes::new().set_modified(t).set_accessed(t))
                    .map_err(io_err("setting the mtime of", &path))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                self.clear(&path, Kind::Other)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err("creating symlink", &path))?;
                self.metadata(&path, uid, gid, None, &xattrs)?;
                set_mtime_nofollow(&path, mtime).map_err(io_err("setting the mtime of", &path))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "hardlink without a target"))?
                    .into_owned();
                let source = self.hardlink_source(&raw, &target)?;
                self.clear(&path, Kind::Other)?;
                fs::hard_link(&source, &path).map_err(io_err("creating hardlink", &path))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.clear(&path, Kind::Other)?;
                // A fifo has no device numbers, and some tars leave them blank.
                let number = |n: io::Result<Option<u32>>| match n {
                    Ok(n) => Ok(n.unwrap_or(0)),
                    Err(_) if kind == EntryType::Fifo => Ok(0),
                    Err(e) => Err(self.bad(e)),
                };
                let major = number(header.device_major())?;
                let minor = number(header.device_minor())?;
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = makedev(major.into(), minor.into());
                if let Err(errno) = mknod(&path, sflag, Mode::from_bits_truncate(mode), dev) {
                    // Unprivileged or nodev filesystems refuse device nodes;
                    // the runtime gives containers their /dev anyway.
                    tracing::warn!(layer = %self.layer, entry = %String::from_utf8_lossy(&raw), %errno, "skipping special file");
                    return Ok(());
                }
                self.metadata(&path, uid, gid, Some(mode), &xattrs)?;
                set_mtime_nofollow(&path, mtime).map_err(io_err("setting the mtime of", &path))?;
            }
            other => {
                tracing::warn!(layer = %self.layer, entry = %String::from_utf8_lossy(&raw), kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.written.insert(rel);
        Ok(())
    }

    /// Walks (and, if `create`, makes) the parent directories of an entry,
    /// refusing symlinks and non-directories on the way.
    fn parents(
        &mut self,
        raw: &[u8],
        parents: &[&OsStr],
        create: bool,
    ) -> Result<PathBuf, ImageError> {
        let mut path = self.root.to_path_buf();
        let mut rel = PathBuf::new();
        for component in parents {
            path.push(component);
            rel.push(component);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "its parent {} is a symlink; nothing is written through one",
                            rel.display()
                        ),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.refuse(
                        raw,
                        format!("its parent {} is not a directory", rel.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    // Missing parents are made as docker does: root-owned 0755.
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(io_err("creating directory", &path))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("changing the mode of", &path))?;
                    self.written.insert(rel.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(self.refuse(raw, format!("{} does not exist", rel.display())));
                }
                Err(e) => return Err(io_err("inspecting", path)(e)),
            }
        }
        Ok(path)
    }

    /// The existing file a hardlink entry points at, which must be inside
    /// the root, already unpacked and not a directory.
    fn hardlink_source(&mut self, raw: &[u8], target: &[u8]) -> Result<PathBuf, ImageError> {
        if target.starts_with(b"/") {
            return Err(self.refuse(
                raw,
                format!(
                    "absolute hardlink target {:?}",
                    String::from_utf8_lossy(target)
                ),
            ));
        }
        let components = normalise(target).map_err(|reason| {
            self.refuse(
                raw,
                format!(
                    "hardlink target {:?}: {reason}",
                    String::from_utf8_lossy(target)
                ),
            )
        })?;
        let Some((name, parents)) = components.split_last() else {
            return Err(self.refuse(raw, "hardlink to the root directory"));
        };
        let source = self.parents(raw, parents, false)?.join(name);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => Err(self.refuse(raw, "hardlink to a directory")),
            Ok(_) => Ok(source),
            Err(_) => Err(self.refuse(
                raw,
                format!(
                    "hardlink target {:?} is not in an earlier entry",
                    String::from_utf8_lossy(target)
                ),
            )),
        }
    }

    fn whiteout(
        &mut self,
        raw: &[u8],
        parent: &Path,
        parents: &[&OsStr],
        hidden: &[u8],
    ) -> Result<(), ImageError> {
        if hidden
            == OPAQUE_MARKER
                .as_bytes()
                .strip_prefix(WHITEOUT_PREFIX.as_bytes())
                .unwrap_or_default()
        {
            // Opaque: what lower layers had in this directory goes; what
            // this layer already put there stays.
            let dir_rel: PathBuf = parents.iter().collect();
            let children = fs::read_dir(parent).map_err(io_err("reading directory", parent))?;
            for child in children {
                let child = child.map_err(io_err("reading directory", parent))?;
                if !self.written.contains(&dir_rel.join(child.file_name())) {
                    remove_any(&child.path())?;
                }
            }
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.refuse(raw, "whiteout of no name"));
        }
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other AUFS metadata (.wh..wh.plnk and the like) means nothing here.
            return Ok(());
        }
        remove_any(&parent.join(OsStr::from_bytes(hidden)))
    }

    /// Removes what is at `path` unless it is a directory and a directory
    /// is coming (docker merges directories across layers).
    fn clear(&self, path: &Path, kind: Kind) -> Result<(), ImageError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() && matches!(kind, Kind::Dir) => Ok(()),
            Ok(_) => remove_any(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("inspecting", path)(e)),
        }
    }

    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
        let mut out = Vec::new();
        let Some(extensions) = entry.pax_extensions().map_err(|e| self.bad(e))? else {
            return Ok(out);
        };
        for ext in extensions {
            let ext = ext.map_err(|e| self.bad(e))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if FORBIDDEN_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    tracing::warn!(layer = %self.layer, entry = %String::from_utf8_lossy(raw), xattr = name, "dropping overlayfs xattr");
                    continue;
                }
                out.push((name.to_owned(), ext.value_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    /// Owner, then mode (never on symlinks), then xattrs.
    fn metadata(
        &self,
        path: &Path,
        uid: u64,
        gid: u64,
        mode: Option<u32>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ImageError> {
        chown_tolerant(std::os::unix::fs::lchown(
            path,
            Some(uid_u32(uid)),
            Some(uid_u32(gid)),
        ))
        .map_err(io_err("changing the owner of", path))?;
        if let Some(mode) = mode {
            // `path` was just checked or made by us and is not a symlink.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io_err("changing the mode of", path))?;
        }
        self.set_xattrs(path, xattrs);
        Ok(())
    }

    fn set_xattrs(&self, path: &Path, xattrs: &[(String, Vec<u8>)]) {
        for (name, value) in xattrs {
            // `xattr::set` is lsetxattr: it does not follow a symlink.
            if let Err(e) = xattr::set(path, name, value) {
                // Many filesystems (tmpfs for user.*, overlay) refuse some
                // namespaces; the image still runs without them.
                tracing::debug!(path = %path.display(), xattr = name, error = %e, "xattr not kept");
            }
        }
    }
}

/// Tar path bytes to components: empty and `.` dropped (so a leading `/`
/// means the root), `..` refused.
fn normalise(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c if c.contains(&0) => return Err("path has a NUL byte"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        // remove_dir_all does not follow symlinks inside the tree.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err("removing", path))
}

/// Tar ids are up to 64 bits wide in GNU base-256; Linux ids are 32.
fn uid_u32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX - 1)
}

/// Ownership is best effort when not root (tests as a user, rootless):
/// EPERM and EINVAL (an id outside this user namespace) are not fatal.
fn chown_tolerant(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EPERM) | Some(nix::libc::EINVAL)
            ) =>
        {
            tracing::debug!(error = %e, "owner not kept");
            Ok(())
        }
        other => other,
    }
}

fn set_mtime_nofollow(path: &Path, mtime: u64) -> io::Result<()> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let t = TimeVal::new(secs, 0);
    lutimes(path, &t, &t).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use proptest::prelude::*;

    use super::*;
    use crate::testutil::{
        E, Sandbox, dir, file, gzip, hardlink, layer_digest, symlink, tar, walk,
    };

    fn apply(root: &Path, entries: &[E]) -> Result<(), ImageError> {
        let bytes = tar(entries);
        apply_layer(
            root,
            &layer_digest(&bytes),
            &MediaType::ImageLayer,
            bytes.as_slice(),
        )
    }

    fn read(root: &Path, p: &str) -> String {
        fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn files_dirs_links_modes_and_special_files() {
        let s = Sandbox::new();
        let root = s.root();
        apply(
            &root,
            &[
                dir("usr/"),
                E::File("usr/bin/su".into(), b"x".to_vec(), 0o4755),
                file("/etc/hosts", "hosts"),
                symlink("bin", "usr/bin"),
                symlink("etc/escape", "/etc/shadow"),
                hardlink("etc/hosts2", "etc/hosts"),
                E::Fifo("run/fifo".into()),
            ],
        )
        .expect("applies");
        let su = fs::metadata(root.join("usr/bin/su")).expect("su");
        assert_eq!(su.mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(
            fs::read_link(root.join("bin")).expect("link"),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(root.join("etc/escape")).expect("link"),
            Path::new("/etc/shadow")
        );
        assert_eq!(
            fs::metadata(root.join("etc/hosts")).expect("hosts").nlink(),
            2
        );
        assert_eq!(read(&root, "etc/hosts2"), "hosts");
        assert_eq!(
            fs::metadata(root.join("etc/hosts")).expect("hosts").mtime(),
            1_000_000
        );
        assert!(
            fs::symlink_metadata(root.join("run/fifo"))
                .expect("fifo")
                .file_type()
                .is_fifo()
        );
        s.assert_contained();
    }

    #[test]
    fn whiteouts_and_opaque_directories_across_layers() {
        let s = Sandbox::new();
        let root = s.root();
        apply(
            &root,
            &[
                file("a/keep", "1"),
                file("a/gone", "1"),
                dir("a/gonedir/"),
                file("a/gonedir/x", "1"),
                file("o/old1", "1"),
                dir("o/old2/"),
                file("o/old2/y", "1"),
            ],
        )
        .expect("layer 1");
        apply(
            &root,
            &[
                file("a/.wh.gone", ""),
                file("a/.wh.gonedir", ""),
                file("a/.wh.never-was", ""),
                dir("o/"),
                file("o/.wh..wh..opq", ""),
                file("o/new", "2"),
            ],
        )
        .expect("layer 2");
        assert_eq!(read(&root, "a/keep"), "1");
        assert!(!root.join("a/gone").exists());
        assert!(!root.join("a/gonedir").exists());
        assert!(
            !root.join("a/.wh.gone").exists(),
            "whiteout files are not kept"
        );
        let mut o: Vec<_> = fs::read_dir(root.join("o"))
            .expect("o")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        o.sort();
        assert_eq!(
            o,
            ["new"],
            "opaque directory keeps only this layer's entries"
        );

        // The marker may come after this layer's own entries: they stay.
        apply(&root, &[file("o/newer", "3"), file("o/.wh..wh..opq", "")]).expect("layer 3");
        let o: Vec<_> = fs::read_dir(root.join("o"))
            .expect("o")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(o, ["newer"]);
        s.assert_contained();
    }

    #[test]
    fn later_layers_replace_files_dirs_and_links() {
        let s = Sandbox::new();
        let root = s.root();
        apply(
            &root,
            &[
                file("x", "file"),
                dir("d/"),
                file("d/f", "1"),
                symlink("l", "x"),
            ],
        )
        .expect("1");
        apply(
            &root,
            &[dir("x/"), file("d", "now a file"), file("l", "now a file")],
        )
        .expect("2");
        assert!(root.join("x").is_dir());
        assert_eq!(read(&root, "d"), "now a file");
        assert_eq!(read(&root, "x/../l"), "now a file");
        assert!(
            !fs::symlink_metadata(root.join("l"))
                .expect("l")
                .file_type()
                .is_symlink()
        );
    }

    fn refused(entries: &[E]) -> (Sandbox, ImageError) {
        let s = Sandbox::new();
        let err = apply(&s.root(), entries).expect_err("must be refused");
        s.assert_contained();
        (s, err)
    }

    #[test]
    fn dot_dot_entries_are_refused() {
        for name in ["../evil", "a/../../evil", "./../evil", "a/.."] {
            let (_, err) = refused(&[file(name, "x")]);
            assert!(
                matches!(&err, ImageError::UnsafeEntry { entry, .. } if entry == name),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn absolute_paths_stay_inside() {
        let s = Sandbox::new();
        let outside = s.outside().join("evil");
        apply(&s.root(), &[file(&outside.to_string_lossy(), "x")]).expect("rooted");
        assert!(
            s.root()
                .join(outside.strip_prefix("/").expect("abs"))
                .is_file()
        );
        s.assert_contained();
    }

    #[test]
    fn escaping_hardlinks_are_refused() {
        let (_, err) = refused(&[hardlink("h", "/etc/passwd")]);
        assert!(
            matches!(&err, ImageError::UnsafeEntry { reason, .. } if reason.contains("absolute")),
            "{err}"
        );
        let (_, err) = refused(&[hardlink("h", "../etc/passwd")]);
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
        let (_, err) = refused(&[hardlink("h", "missing")]);
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
        // Through a symlinked directory to a file outside.
        let s = Sandbox::new();
        fs::write(s.outside().join("secret"), "s").expect("write");
        let target = s.outside().to_string_lossy().into_owned();
        let err = apply(
            &s.root(),
            &[symlink("l", &target), hardlink("h", "l/secret")],
        )
        .expect_err("refused");
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
        fs::remove_file(s.outside().join("secret")).expect("rm");
        s.assert_contained();
    }

    #[test]
    fn symlinked_parents_are_refused_across_layers() {
        let s = Sandbox::new();
        let root = s.root();
        let outside = s.outside().to_string_lossy().into_owned();
        apply(
            &root,
            &[symlink("a", &outside), symlink("rel", "../outside")],
        )
        .expect("layer 1 only stores links");
        for name in [
            "a/evil",
            "rel/evil",
            "a/.wh.x",
            "a/.wh..wh..opq",
            "a/sub/evil",
        ] {
            let err = apply(&root, &[file(name, "x")]).expect_err(name);
            assert!(
                matches!(&err, ImageError::UnsafeEntry { reason, .. } if reason.contains("symlink")),
                "{name}: {err}"
            );
        }
        let err = apply(&root, &[dir("a/d/")]).expect_err("dir through link");
        assert!(matches!(err, ImageError::UnsafeEntry { .. }));
        s.assert_contained();
    }

    #[test]
    fn truncated_and_corrupt_layers_are_errors() {
        let s = Sandbox::new();
        let whole = tar(&[file("big", &"x".repeat(4000)), file("after", "y")]);
        for cut in [100, 512 + 1000, 512 + 4096 + 200] {
            let d = layer_digest(&whole[..cut]);
            let err = apply_layer(&s.root(), &d, &MediaType::ImageLayer, &whole[..cut])
                .expect_err("truncated");
            assert!(
                matches!(err, ImageError::BadLayer { .. }),
                "cut {cut}: {err}"
            );
        }
        let gz = gzip(&whole);
        let cut = &gz[..gz.len() / 2];
        let err = apply_layer(
            &s.root(),
            &layer_digest(cut),
            &MediaType::ImageLayerGzip,
            cut,
        )
        .expect_err("gz");
        assert!(matches!(err, ImageError::BadLayer { .. }), "{err}");
        s.assert_contained();
    }

    #[test]
    fn compressions_and_media_types() {
        let bytes = tar(&[file("f", "data")]);
        let zst = zstd::encode_all(bytes.as_slice(), 1).expect("zstd");
        for (media, blob) in [
            (MediaType::ImageLayerGzip, gzip(&bytes)),
            (MediaType::ImageLayerZstd, zst.clone()),
            (MediaType::Other(DOCKER_LAYER_GZIP.into()), gzip(&bytes)),
            // Legacy plain-tar types are sniffed.
            (MediaType::ImageLayer, zst),
        ] {
            let s = Sandbox::new();
            apply_layer(&s.root(), &layer_digest(&blob), &media, blob.as_slice()).expect("applies");
            assert_eq!(read(&s.root(), "f"), "data");
        }
        let s = Sandbox::new();
        let err = apply_layer(
            &s.root(),
            &layer_digest(&bytes),
            &MediaType::Other("application/x-foo".into()),
            bytes.as_slice(),
        )
        .expect_err("unknown");
        assert!(
            matches!(err, ImageError::UnknownMediaType { media_type } if media_type == "application/x-foo")
        );
        assert!(walk(&s.root()).is_empty());
    }

    #[test]
    fn owners_xattrs_and_devices() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.user.shoal", &b"kept"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ])
        .expect("pax");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o2755);
        h.set_uid(1234);
        h.set_gid(5678);
        b.append_data(&mut h, "owned", &b"hi"[..]).expect("entry");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(u64::MAX >> 2);
        b.append_data(&mut h, "far-future", io::empty())
            .expect("entry");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_size(0);
        h.set_mode(0o666);
        h.set_device_major(1).expect("major");
        h.set_device_minor(3).expect("minor");
        b.append_data(&mut h, "dev/null", io::empty())
            .expect("entry");
        let bytes = b.into_inner().expect("tar");

        let s = Sandbox::new();
        let root = s.root();
        apply_layer(
            &root,
            &layer_digest(&bytes),
            &MediaType::ImageLayer,
            bytes.as_slice(),
        )
        .expect("applies");
        let m = fs::metadata(root.join("owned")).expect("owned");
        if nix::unistd::geteuid().is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
            // setgid survives the chown because the mode is set after it.
            assert_eq!(m.mode() & 0o7777, 0o2755);
        }
        let future = fs::metadata(root.join("far-future")).expect("far-future");
        // Clamped (by us, then by the filesystem: ext4 stops in 2446), not overflowed.
        assert!(future.mtime() > 4_000_000_000 && future.mtime() <= MAX_MTIME as i64);
        // Filesystems without user xattrs are allowed; overlay's are never set.
        if let Ok(Some(v)) = xattr::get(root.join("owned"), "user.shoal") {
            assert_eq!(v, b"kept");
        }
        assert!(matches!(
            xattr::get(root.join("owned"), "trusted.overlay.opaque"),
            Ok(None) | Err(_)
        ));
        // mknod may be refused (no CAP_MKNOD): then the node is skipped.
        if let Ok(m) = fs::symlink_metadata(root.join("dev/null")) {
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), makedev(1, 3));
        }
        s.assert_contained();
    }

    fn hostile_name() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just(String::new()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("l".to_owned()),
            Just(".wh.a".to_owned()),
            Just(".wh..wh..opq".to_owned()),
            "[a-z.]{1,3}",
        ];
        (any::<bool>(), prop::collection::vec(part, 1..4))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn hostile_entry(outside: String) -> impl Strategy<Value = E> {
        let target = prop_oneof![
            hostile_name(),
            Just(outside),
            Just("/".to_owned()),
            Just("../outside".to_owned()),
            Just("../../outside".to_owned()),
        ];
        let mode = 0..0o10000u32;
        (0..5u8, hostile_name(), target, any::<u8>(), mode).prop_map(
            |(kind, name, target, byte, mode)| match kind {
                0 => E::File(name, vec![byte; 3], mode),
                1 => E::Dir(name),
                2 => E::Symlink(name, target),
                3 => E::Hardlink(name, target),
                _ => E::Fifo(name),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_bytes_never_escape(bytes in prop::collection::vec(any::<u8>(), 0..3000), gz in any::<bool>()) {
            let s = Sandbox::new();
            let d = layer_digest(&bytes);
            let media = if gz { MediaType::ImageLayerGzip } else { MediaType::ImageLayer };
            let _ = apply_layer(&s.root(), &d, &media, bytes.as_slice());
            s.assert_contained();
        }

        #[test]
        fn hostile_tars_never_escape(
            layers in prop::collection::vec(
                prop::collection::vec(hostile_entry("/tmp/shoal-outside-placeholder".into()), 0..12),
                1..4,
            ),
        ) {
            let s = Sandbox::new();
            let outside = s.outside().to_string_lossy().into_owned();
            for layer in layers {
                // Point absolute targets at this sandbox's outside.
                let layer: Vec<E> = layer
                    .into_iter()
                    .map(|e| match e {
                        E::Symlink(n, t) if t.starts_with("/tmp/shoal-outside") => E::Symlink(n, outside.clone()),
                        E::Hardlink(n, t) if t.starts_with("/tmp/shoal-outside") => E::Hardlink(n, outside.clone()),
                        e => e,
                    })
                    .collect();
                let _ = apply(&s.root(), &layer);
                s.assert_contained();
            }
        }
    }
}
