//! Small single-layer images made from files on this machine, for tests,
//! benches and the lab. Deterministic: fixed mtimes, owners and order, so
//! the same inputs give the same digests.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
};

use flate2::{Compression as GzLevel, write::GzEncoder};
use oci_spec::image::MediaType;

use crate::{
    Digest, ImageError, Reference,
    archive::{CONTAINERD_NAME, OCI_REF_NAME},
    store::Healthcheck,
};

pub(crate) const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// Every entry's mtime and the image's `created`: 2000-01-01T00:00:00Z.
const BUILD_MTIME: u64 = 946_684_800;
const BUILD_CREATED: &str = "2000-01-01T00:00:00Z";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The runtime settings of a built image (docker's config section).
#[derive(Clone, Debug, Default)]
pub struct BuildConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=value`; a default PATH is added unless one is given.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    /// `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Entry {
    File { source: Source, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// Builds a one-layer image: `ImageBuilder::new(r).add_file(..).config(..)`
/// then `write_docker_archive` or `write_oci_layout`. Errors in the adds
/// (bad paths) are reported by the write.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    reference: Reference,
    entries: BTreeMap<String, Entry>,
    binaries: Vec<(PathBuf, String)>,
    config: BuildConfig,
    errors: Vec<String>,
}

/// The blobs of a built image.
pub struct Built {
    pub manifest: Digest,
    pub config: Digest,
    pub layer: Digest,
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) config_bytes: Vec<u8>,
    pub(crate) layer_bytes: Vec<u8>,
}

impl ImageBuilder {
    pub fn new(reference: Reference) -> ImageBuilder {
        ImageBuilder {
            reference,
            entries: BTreeMap::new(),
            binaries: Vec::new(),
            config: BuildConfig::default(),
            errors: Vec::new(),
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The same image under another name (a fixture under a test's name).
    pub fn with_reference(mut self, reference: Reference) -> Self {
        self.reference = reference;
        self
    }

    fn put(mut self, image_path: &str, entry: Entry) -> Self {
        match image_key(image_path) {
            Some(key) => {
                self.entries.insert(key, entry);
            }
            None => self.errors.push(format!(
                "image path {image_path:?} must be absolute, without '..'"
            )),
        }
        self
    }

    /// Copies a host file (its content, read at write time) to `image_path`.
    pub fn add_file(self, host_path: impl AsRef<Path>, image_path: &str, mode: u32) -> Self {
        let source = Source::Host(host_path.as_ref().to_path_buf());
        self.put(image_path, Entry::File { source, mode })
    }

    pub fn add_bytes(self, data: impl Into<Vec<u8>>, image_path: &str, mode: u32) -> Self {
        self.put(
            image_path,
            Entry::File {
                source: Source::Bytes(data.into()),
                mode,
            },
        )
    }

    pub fn add_dir(self, image_path: &str, mode: u32) -> Self {
        self.put(image_path, Entry::Dir { mode })
    }

    pub fn add_symlink(self, image_path: &str, target: &str) -> Self {
        self.put(
            image_path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Copies an ELF binary to `image_path`, and every shared library `ldd`
    /// lists, with the dynamic loader, at their host paths.
    pub fn add_binary_with_libs(mut self, host_path: impl AsRef<Path>, image_path: &str) -> Self {
        self.binaries
            .push((host_path.as_ref().to_path_buf(), image_path.to_owned()));
        self.add_file(host_path, image_path, 0o755)
    }

    pub fn config(mut self, f: impl FnOnce(&mut BuildConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Makes the blobs (gzip layer, config, OCI manifest).
    pub fn build(&self) -> Result<Built, ImageError> {
        if !self.errors.is_empty() {
            return Err(ImageError::Build {
                reason: self.errors.join("; "),
            });
        }
        let mut entries = self.entries.clone();
        for (host, _) in &self.binaries {
            for lib in shared_libraries(host)? {
                if let Some(key) = image_key(&lib.to_string_lossy()) {
                    entries.entry(key).or_insert(Entry::File {
                        source: Source::Host(lib),
                        mode: 0o755,
                    });
                }
            }
        }
        // Every parent is a directory entry of its own, before its children
        // (BTreeMap order puts "a" before "a/b").
        let parents: Vec<String> = entries
            .keys()
            .flat_map(|k| {
                k.match_indices('/')
                    .map(|(i, _)| k[..i].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        for p in parents {
            entries.entry(p).or_insert(Entry::Dir { mode: 0o755 });
        }

        let mut tar = TarWriter::new(Vec::new());
        for (path, entry) in &entries {
            match entry {
                Entry::Dir { mode } => tar.dir(path, *mode)?,
                Entry::Symlink { target } => tar.symlink(path, target)?,
                Entry::File {
                    source: Source::Bytes(b),
                    mode,
                } => tar.file(path, *mode, b.len() as u64, b.as_slice())?,
                Entry::File {
                    source: Source::Host(host),
                    mode,
                } => {
                    let file = File::open(host).map_err(|e| ImageError::Build {
                        reason: format!("cannot read {}: {e}", host.display()),
                    })?;
                    let size = file
                        .metadata()
                        .map_err(|e| ImageError::Build {
                            reason: format!("{}: {e}", host.display()),
                        })?
                        .len();
                    tar.file(path, *mode, size, file)?;
                }
            }
        }
        let layer_tar = tar.into_inner()?;
        let diff_id = Digest::of(&layer_tar);
        let mut gz = GzEncoder::new(Vec::new(), GzLevel::default());
        gz.write_all(&layer_tar).map_err(|e| ImageError::Build {
            reason: format!("gzip: {e}"),
        })?;
        let layer_bytes = gz.finish().map_err(|e| ImageError::Build {
            reason: format!("gzip: {e}"),
        })?;
        let layer = Digest::of(&layer_bytes);

        let config_bytes = json_bytes(&self.config_json(&diff_id)?)?;
        let config = Digest::of(&config_bytes);
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageManifest.to_string(),
            "config": {
                "mediaType": MediaType::ImageConfig.to_string(),
                "digest": config.to_string(),
                "size": config_bytes.len(),
            },
            "layers": [{
                "mediaType": MediaType::ImageLayerGzip.to_string(),
                "digest": layer.to_string(),
                "size": layer_bytes.len(),
            }],
        });
        let manifest_bytes = json_bytes(&manifest_json)?;
        Ok(Built {
            manifest: Digest::of(&manifest_bytes),
            config,
            layer,
            manifest_bytes,
            config_bytes,
            layer_bytes,
        })
    }

    fn config_json(&self, diff_id: &Digest) -> Result<serde_json::Value, ImageError> {
        let c = &self.config;
        let mut env = c.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_owned());
        }
        let mut run = serde_json::Map::new();
        run.insert("Env".into(), env.into());
        let set = |m: &mut serde_json::Map<String, serde_json::Value>,
                   k: &str,
                   v: Option<serde_json::Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        set(&mut run, "Entrypoint", c.entrypoint.clone().map(Into::into));
        set(&mut run, "Cmd", c.cmd.clone().map(Into::into));
        set(
            &mut run,
            "WorkingDir",
            c.working_dir.clone().map(Into::into),
        );
        set(&mut run, "User", c.user.clone().map(Into::into));
        set(
            &mut run,
            "StopSignal",
            c.stop_signal.clone().map(Into::into),
        );
        let set_of = |items: &[String]| -> Option<serde_json::Value> {
            (!items.is_empty()).then(|| {
                items
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            })
        };
        set(&mut run, "ExposedPorts", set_of(&c.exposed_ports));
        set(&mut run, "Volumes", set_of(&c.volumes));
        if let Some(h) = &c.healthcheck {
            let v = serde_json::to_value(h).map_err(|source| ImageError::Json {
                what: "healthcheck".into(),
                source,
            })?;
            run.insert("Healthcheck".into(), v);
        }
        if !c.labels.is_empty() {
            run.insert(
                "Labels".into(),
                serde_json::to_value(&c.labels).unwrap_or_default(),
            );
        }
        Ok(serde_json::json!({
            "created": BUILD_CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": run,
            "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
            "history": [{ "created": BUILD_CREATED, "created_by": "shoal-image ImageBuilder" }],
        }))
    }

    /// A Docker 25+ `docker save` archive: OCI layout (index.json,
    /// oci-layout, blobs) and docker's manifest.json. Returns the manifest digest.
    pub fn write_docker_archive(&self, w: impl Write) -> Result<Digest, ImageError> {
        let built = self.build()?;
        let mut tar = TarWriter::new(w);
        built.write_blobs(&mut tar)?;
        let tag = self
            .reference
            .tag
            .clone()
            .unwrap_or_else(|| "latest".into());
        tar.bytes(
            "index.json",
            &json_bytes(&built.index_json(&self.reference, &tag))?,
        )?;
        let manifest_json = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", built.config.hex()),
            "RepoTags": [self.reference.familiar()],
            "Layers": [format!("blobs/sha256/{}", built.layer.hex())],
        }]);
        tar.bytes("manifest.json", &json_bytes(&manifest_json)?)?;
        tar.bytes("oci-layout", OCI_LAYOUT.as_bytes())?;
        tar.finish()?;
        Ok(built.manifest)
    }

    /// A plain OCI image-layout tar, ref.name being the full reference.
    pub fn write_oci_layout(&self, w: impl Write) -> Result<Digest, ImageError> {
        let built = self.build()?;
        let mut tar = TarWriter::new(w);
        tar.bytes("oci-layout", OCI_LAYOUT.as_bytes())?;
        let mut index = built.index_json(&self.reference, &self.reference.to_string());
        if let Some(a) = index["manifests"][0]["annotations"].as_object_mut() {
            a.remove(CONTAINERD_NAME);
        }
        tar.bytes("index.json", &json_bytes(&index)?)?;
        built.write_blobs(&mut tar)?;
        tar.finish()?;
        Ok(built.manifest)
    }
}

impl Built {
    fn write_blobs<W: Write>(&self, tar: &mut TarWriter<W>) -> Result<(), ImageError> {
        for (d, bytes) in [
            (&self.layer, &self.layer_bytes),
            (&self.config, &self.config_bytes),
            (&self.manifest, &self.manifest_bytes),
        ] {
            tar.bytes(&format!("blobs/sha256/{}", d.hex()), bytes)?;
        }
        Ok(())
    }

    fn index_json(&self, reference: &Reference, ref_name: &str) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": [{
                "mediaType": MediaType::ImageManifest.to_string(),
                "digest": self.manifest.to_string(),
                "size": self.manifest_bytes.len(),
                "annotations": {
                    CONTAINERD_NAME: reference.to_string(),
                    OCI_REF_NAME: ref_name,
                },
            }],
        })
    }
}

/// `/a/b` → `a/b`; `None` for `..` or a relative path.
fn image_key(image_path: &str) -> Option<String> {
    let rest = image_path.strip_prefix('/')?;
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (!parts.is_empty() && !parts.contains(&"..")).then(|| parts.join("/"))
}

/// The libraries and loader `ldd` lists for `binary` (none if static).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Build {
            reason: format!("running ldd {}: {e}", binary.display()),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": a static binary needs nothing else.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic") || err.contains("not a dynamic") {
            return Ok(Vec::new());
        }
        return Err(ImageError::Build {
            reason: format!("ldd {}: {}", binary.display(), err.trim()),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ if line.contains("not found") => {
                return Err(ImageError::Build {
                    reason: format!("ldd {}: {}", binary.display(), line.trim()),
                });
            }
            _ => {}
        }
    }
    Ok(libs)
}

pub(crate) fn json_bytes(v: &serde_json::Value) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v).map_err(|source| ImageError::Json {
        what: "generated JSON".into(),
        source,
    })
}

/// A tar with fixed mtimes and root ownership.
pub(crate) struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Deterministic);
        TarWriter { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(BUILD_MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn err(e: std::io::Error) -> ImageError {
        ImageError::Build {
            reason: format!("writing tar: {e}"),
        }
    }

    pub(crate) fn file(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        data: impl Read,
    ) -> Result<(), ImageError> {
        let mut h = Self::header(tar::EntryType::Regular, mode, size);
        self.builder
            .append_data(&mut h, path, data)
            .map_err(Self::err)
    }

    pub(crate) fn bytes(&mut self, path: &str, data: &[u8]) -> Result<(), ImageError> {
        self.file(path, 0o644, data.len() as u64, data)
    }

    pub(crate) fn reader(
        &mut self,
        path: &str,
        size: u64,
        data: impl Read,
    ) -> Result<(), ImageError> {
        self.file(path, 0o644, size, data)
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .map_err(Self::err)
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .map_err(Self::err)
    }

    pub(crate) fn into_inner(self) -> Result<W, ImageError> {
        self.builder.into_inner().map_err(Self::err)
    }

    pub(crate) fn finish(self) -> Result<(), ImageError> {
        self.into_inner().map(drop)
    }
}

/// Ready-made images for tests and the lab.
pub mod fixtures {
    use std::path::Path;

    use super::ImageBuilder;
    use crate::Reference;

    /// Debian's static busybox (package busybox-static).
    pub const BUSYBOX_HOST_PATH: &str = "/bin/busybox";
    pub const BUSYBOX_REFERENCE: &str = "docker.io/library/busybox:latest";
    pub const LAB_TOOLS_REFERENCE: &str = "shoal.local/lab-tools:latest";
    /// What `/www/index.html` holds, for `busybox httpd -f -p 80 -h /www`.
    pub const BUSYBOX_INDEX_HTML: &str = "shoal busybox\n";
    pub const BUSYBOX_APPLETS: &[&str] = &[
        "sh",
        "httpd",
        "cat",
        "ls",
        "sleep",
        "sha256sum",
        "id",
        "mount",
        "unshare",
        "wc",
        "grep",
        "head",
        "ps",
        "dd",
        "env",
        "tail",
        "wget",
        "nslookup",
        "echo",
        "true",
        "hostname",
    ];
    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| unreachable!("a constant reference: {e}"))
    }

    /// `docker.io/library/busybox:latest`: busybox with applet links in
    /// /bin, `/www/index.html`, /etc/passwd and group, `Cmd ["sh"]`.
    pub fn busybox() -> ImageBuilder {
        let mut b = ImageBuilder::new(reference(BUSYBOX_REFERENCE))
            .add_file(BUSYBOX_HOST_PATH, "/bin/busybox", 0o755)
            .add_bytes(BUSYBOX_INDEX_HTML, "/www/index.html", 0o644)
            .add_bytes(PASSWD, "/etc/passwd", 0o644)
            .add_bytes(GROUP, "/etc/group", 0o644)
            .add_dir("/tmp", 0o1777)
            .add_dir("/root", 0o700);
        for dir in ["/proc", "/sys", "/dev"] {
            b = b.add_dir(dir, 0o755);
        }
        for applet in BUSYBOX_APPLETS {
            b = b.add_symlink(&format!("/bin/{applet}"), "busybox");
        }
        b.config(|c| c.cmd = Some(vec!["sh".into()]))
    }

    /// `shoal.local/lab-tools:latest`: each given binary (lab-http,
    /// lab-echo, iperf3, …) in /bin under its file name, with its libraries.
    pub fn lab_tools(paths: &[&Path]) -> ImageBuilder {
        let mut b = ImageBuilder::new(reference(LAB_TOOLS_REFERENCE)).add_dir("/tmp", 0o1777);
        for dir in ["/proc", "/sys", "/dev"] {
            b = b.add_dir(dir, 0o755);
        }
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            b = b.add_binary_with_libs(path, &format!("/bin/{name}"));
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{Ipv4Addr, TcpListener, TcpStream},
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use super::*;
    use crate::ImageStore;

    #[test]
    fn image_paths_and_parents() {
        assert_eq!(image_key("/a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(image_key("relative"), None);
        assert_eq!(image_key("/a/../b"), None);
        assert_eq!(image_key("/"), None);
        let built = ImageBuilder::new(Reference::parse("x").expect("ref"))
            .add_bytes("hi", "/deep/er/file", 0o600)
            .build()
            .expect("build");
        let mut gz = flate2::read::GzDecoder::new(built.layer_bytes.as_slice());
        let mut tar_bytes = Vec::new();
        gz.read_to_end(&mut tar_bytes).expect("gunzip");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["deep/", "deep/er/", "deep/er/file"]);
    }

    /// The busybox fixture's binary runs from the unpacked root filesystem:
    /// applets through their links, and httpd serving /www/index.html.
    #[test]
    fn busybox_fixture_runs() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(t.path()).expect("open");
        let mut archive = Vec::new();
        let manifest = fixtures::busybox()
            .write_docker_archive(&mut archive)
            .expect("archive");
        store.load_archive(archive.as_slice()).expect("load");
        let rootfs = store.rootfs(&manifest).expect("rootfs");

        for applet in fixtures::BUSYBOX_APPLETS {
            assert!(
                fs_is_symlink(&rootfs.join("bin").join(applet)),
                "bin/{applet} is an applet link"
            );
        }
        let out = Command::new(rootfs.join("bin/sha256sum"))
            .arg(rootfs.join("www/index.html"))
            .output()
            .expect("sha256sum runs");
        let sum = Digest::of(fixtures::BUSYBOX_INDEX_HTML.as_bytes());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(sum.hex()));

        // A free port: bind 0, read it, free it for httpd.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let httpd = Command::new(rootfs.join("bin/httpd"))
            .args(["-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(rootfs.join("www"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Reaped)
            .expect("httpd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            if let Ok(mut conn) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                    .expect("request");
                let mut body = String::new();
                conn.read_to_string(&mut body).expect("response");
                break body;
            }
            assert!(Instant::now() < deadline, "httpd never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(httpd);
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "{response}"
        );
        assert!(
            response.ends_with(fixtures::BUSYBOX_INDEX_HTML),
            "{response}"
        );
    }

    /// Kills and reaps the child however the test ends.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            // Nothing to do if it already exited.
            if self.0.kill().is_ok() {
                self.0.wait().ok();
            }
        }
    }

    fn fs_is_symlink(p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
    }
}
