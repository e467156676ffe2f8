//! Lab images, made here from files on this machine (never downloaded):
//! busybox from Debian's `busybox-static`, and the lab tools (`lab-http`,
//! `lab-echo`, `iperf3` with their libraries) for benchmarks in containers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use shoal_image::fixtures;

use crate::{Lab, LabError, shoald_path};

/// `busybox` as services name it.
pub const BUSYBOX: &str = "busybox:latest";
/// The lab tools image.
pub const LAB_TOOLS: &str = "shoal.local/lab-tools:latest";

fn build_error(what: &str, e: shoal_image::ImageError) -> LabError {
    LabError::Io {
        path: PathBuf::from(what),
        op: "building the lab image",
        source: std::io::Error::other(e),
    }
}

/// A `docker save` archive (Docker 25+ layout) of the busybox image; made
/// once per process.
pub fn busybox_archive() -> Result<&'static [u8], LabError> {
    static ARCHIVE: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(a) = ARCHIVE.get() {
        return Ok(a);
    }
    let mut out = Vec::new();
    fixtures::busybox()
        .write_docker_archive(&mut out)
        .map_err(|e| build_error(BUSYBOX, e))?;
    Ok(ARCHIVE.get_or_init(|| out))
}

/// The lab tools' binaries: this build's `lab-http` and `lab-echo`, and the
/// node's `iperf3`.
pub fn lab_tool_paths() -> Result<Vec<PathBuf>, LabError> {
    let dir = shoald_path()?;
    let mut paths = vec![
        dir.with_file_name("lab-http"),
        dir.with_file_name("lab-echo"),
    ];
    if Path::new("/usr/bin/iperf3").is_file() {
        paths.push("/usr/bin/iperf3".into());
    }
    Ok(paths)
}

/// A `docker save` archive of the lab tools image; made once per process.
pub fn lab_tools_archive() -> Result<&'static [u8], LabError> {
    static ARCHIVE: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(a) = ARCHIVE.get() {
        return Ok(a);
    }
    let paths = lab_tool_paths()?;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut out = Vec::new();
    fixtures::lab_tools(&refs)
        .write_docker_archive(&mut out)
        .map_err(|e| build_error(LAB_TOOLS, e))?;
    Ok(ARCHIVE.get_or_init(|| out))
}

impl Lab {
    /// `shoal image load` of an archive on node `k`; its output.
    pub fn load_image(&self, k: usize, archive: &[u8]) -> Result<String, LabError> {
        self.shoal_stdin(k, &["image", "load"], archive)
    }
}
