//! Hand-made tars for tests, hostile ones included: names are written into
//! the header raw, bypassing the checks `tar::Builder` makes.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use crate::Digest;

#[derive(Clone, Debug)]
pub enum E {
    File(String, Vec<u8>, u32),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
}

pub fn file(name: &str, data: &str) -> E {
    E::File(name.into(), data.as_bytes().to_vec(), 0o644)
}

pub fn dir(name: &str) -> E {
    E::Dir(name.into())
}

pub fn symlink(name: &str, target: &str) -> E {
    E::Symlink(name.into(), target.into())
}

pub fn hardlink(name: &str, target: &str) -> E {
    E::Hardlink(name.into(), target.into())
}

fn header(kind: tar::EntryType, name: &[u8], link: &[u8], size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(old.linkname.len());
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            E::File(n, d, mode) => (
                header(
                    tar::EntryType::Regular,
                    n.as_bytes(),
                    b"",
                    d.len() as u64,
                    *mode,
                ),
                d,
            ),
            E::Dir(n) => (
                header(tar::EntryType::Directory, n.as_bytes(), b"", 0, 0o755),
                &[],
            ),
            E::Symlink(n, t) => (
                header(
                    tar::EntryType::Symlink,
                    n.as_bytes(),
                    t.as_bytes(),
                    0,
                    0o777,
                ),
                &[],
            ),
            E::Hardlink(n, t) => (
                header(tar::EntryType::Link, n.as_bytes(), t.as_bytes(), 0, 0o644),
                &[],
            ),
            E::Fifo(n) => (
                header(tar::EntryType::Fifo, n.as_bytes(), b"", 0, 0o600),
                &[],
            ),
        };
        b.append(&h, data).expect("in-memory tar");
    }
    b.into_inner().expect("in-memory tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("in-memory gzip");
    gz.finish().expect("in-memory gzip")
}

/// A layer digest for error messages.
pub fn layer_digest(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// Every path under `dir`, symlinks not followed.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A sandbox: `<s>/root` to unpack into, `<s>/outside` that must stay
/// empty, and nothing else may appear in `<s>`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("root")).expect("mkdir");
        fs::create_dir(dir.path().join("outside")).expect("mkdir");
        Sandbox { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Nothing was written beside `root` or into `outside`.
    pub fn assert_contained(&self) {
        let mut top: Vec<_> = fs::read_dir(self.dir.path())
            .expect("read sandbox")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["outside", "root"],
            "something was written beside the root"
        );
        assert!(
            walk(&self.outside()).is_empty(),
            "something was written outside the root"
        );
    }
}
