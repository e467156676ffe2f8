//! Lab images, made here from files on this machine (never downloaded):
//! busybox from Debian's `busybox-static`, and the lab tools (`lab-http`,
//! `lab-echo`, `iperf3` with their libraries) for benchmarks in containers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use shoal_image::fixtures;

use crate::{Formation, Lab, LabError, shoald_path};

/// `busybox` as services name it.
pub const BUSYBOX: &str = "busybox:latest";
/// The lab tools image.
pub const LAB_TOOLS: &str = "shoal.local/lab-tools:latest";

fn build_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> LabError {
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

/// A busybox image whose httpd serves `body` instead: another image under
/// the same name, as a moved tag gives.
pub fn busybox_serving(body: &str) -> Result<Vec<u8>, LabError> {
    let mut out = Vec::new();
    fixtures::busybox()
        .add_bytes(body.as_bytes().to_vec(), "/www/index.html", 0o644)
        .write_docker_archive(&mut out)
        .map_err(|e| build_error(BUSYBOX, e))?;
    Ok(out)
}

/// A busybox web server image named `reference` (`shoal.local/web:v1`):
/// `httpd` serves `body` at `/` on port 80 from its start, and the image
/// carries `healthcheck` as its HEALTHCHECK, as a Dockerfile's would.
pub fn web_image(
    reference: &str,
    body: &str,
    healthcheck: Option<shoal_image::Healthcheck>,
) -> Result<Vec<u8>, LabError> {
    let name = shoal_image::Reference::parse(reference).map_err(|e| build_error(BUSYBOX, e))?;
    let mut out = Vec::new();
    fixtures::busybox()
        .with_reference(name)
        .add_bytes(body.as_bytes().to_vec(), "/www/index.html", 0o644)
        .config(|c| {
            // `exec`: httpd gets the stop signal itself and exits at once.
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                "exec httpd -f -p 80 -h /www".into(),
            ]);
            c.healthcheck = healthcheck;
        })
        .write_docker_archive(&mut out)
        .map_err(|e| build_error(BUSYBOX, e))?;
    Ok(out)
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

/// A swarm of `formation`, every node ready and busybox loaded on n1 only
/// (the other nodes fetch it when a task needs it); with the lab client.
pub async fn busybox_lab(tag: &str, formation: Formation<'_>) -> Result<Lab, LabError> {
    let nodes = formation.nodes;
    let lab = Lab::builder(tag).nodes(nodes).client(true).start().await?;
    lab.form_swarm_of(formation)?;
    lab.nodes_ready(nodes, Duration::from_secs(15)).await?;
    lab.load_image(1, busybox_archive()?)?;
    Ok(lab)
}

impl Lab {
    /// `shoal image load` of an archive on node `k`; its output.
    pub fn load_image(&self, k: usize, archive: &[u8]) -> Result<String, LabError> {
        self.shoal_stdin(k, &["image", "load"], archive)
    }
}

/// The port of the lab's registry on the client.
pub const REGISTRY_PORT: u16 = 5000;
/// Debian's `docker-registry` (the distribution project's registry).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// host:port of the lab's registry: on the client, which is not a node.
pub fn lab_registry() -> String {
    format!("{}:{REGISTRY_PORT}", crate::underlay::CLIENT_ADDR)
}

/// The port of the lab's registry that asks for a password.
pub const AUTH_REGISTRY_PORT: u16 = 5001;
/// The user and password it takes.
pub const REGISTRY_USER: (&str, &str) = ("lab", "lab-s3cret");

/// host:port of the lab's registry that asks for a password.
pub fn lab_auth_registry() -> String {
    format!("{}:{AUTH_REGISTRY_PORT}", crate::underlay::CLIENT_ADDR)
}

/// A registry running on the lab's client; killed when dropped.
#[derive(Debug)]
pub struct Registry {
    child: std::process::Child,
    netns: String,
    log: PathBuf,
}

impl Registry {
    /// The registry's last log lines, for a failing test.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log, 30)
    }

    /// Pushes the image in `archive` (a `docker save` archive) to this
    /// registry as `reference` (`<lab_registry()>/repo:tag`); its digest.
    pub fn push(&self, archive: &[u8], reference: &str) -> Result<String, LabError> {
        self.push_as(archive, reference, None)
    }

    /// [`Registry::push`] with credentials.
    pub fn push_as(
        &self,
        archive: &[u8],
        reference: &str,
        user: Option<(&str, &str)>,
    ) -> Result<String, LabError> {
        let auth = user.map(|(u, p)| shoal_registry::Credentials::new(u, p));
        let err = |what: &str, e: String| LabError::Io {
            path: PathBuf::from(reference),
            op: "pushing to the lab registry",
            source: std::io::Error::other(format!("{what}: {e}")),
        };
        let dir = tempfile::tempdir().map_err(|e| err("tempdir", e.to_string()))?;
        let store = std::sync::Arc::new(
            shoal_image::ImageStore::open(dir.path()).map_err(|e| err("store", e.to_string()))?,
        );
        let loaded = store
            .load_archive(archive)
            .map_err(|e| err("load", e.to_string()))?;
        let manifest = loaded
            .first()
            .ok_or_else(|| err("load", "empty archive".into()))?
            .manifest
            .clone();
        let target = shoal_image::Reference::parse(reference)
            .map_err(|e| err("reference", e.to_string()))?;
        // The client reaches the registry from inside its namespace, on a
        // thread of its own with its own runtime.
        crate::run_in_netns(&self.netns, move || {
            let client = shoal_registry::Client::new(shoal_registry::Options {
                insecure_registries: vec![lab_registry(), lab_auth_registry()],
                ..Default::default()
            });
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(client.push(&store, &manifest, &target, auth.as_ref()))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(manifest.to_string())
        })?
        .map_err(|e| err("push", e))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _gone = self.child.kill();
        let _status = self.child.wait();
    }
}

impl Lab {
    /// Starts a registry on the client at [`lab_registry`], storage under
    /// the lab's directory; returns once it answers.
    pub async fn start_registry(&self) -> Result<Registry, LabError> {
        self.registry_on(REGISTRY_PORT, None).await
    }

    /// A registry at [`lab_auth_registry`] that takes only [`REGISTRY_USER`].
    pub async fn start_auth_registry(&self) -> Result<Registry, LabError> {
        let (user, password) = REGISTRY_USER;
        let hash = bcrypt::hash(password, 4).map_err(|e| LabError::Io {
            path: self.dir().to_owned(),
            op: "hashing the registry's password",
            source: std::io::Error::other(e),
        })?;
        self.registry_on(AUTH_REGISTRY_PORT, Some(format!("{user}:{hash}\n")))
            .await
    }

    async fn registry_on(&self, port: u16, htpasswd: Option<String>) -> Result<Registry, LabError> {
        let netns = self.client_netns().ok_or_else(|| LabError::Io {
            path: self.dir().to_owned(),
            op: "starting a registry (build the lab with .client(true))",
            source: std::io::Error::other("no client namespace"),
        })?;
        let dir = self.dir().join(format!("registry-{port}"));
        let io = |op| {
            let dir = dir.clone();
            move |source| LabError::Io {
                path: dir,
                op,
                source,
            }
        };
        std::fs::create_dir_all(dir.join("data")).map_err(io("create"))?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 0.0.0.0:{port}\n",
            dir.join("data").display()
        );
        if let Some(line) = htpasswd {
            let path = dir.join("htpasswd");
            std::fs::write(&path, line).map_err(io("write htpasswd"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: shoal-lab\n    path: {}\n",
                path.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).map_err(io("write config"))?;
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).map_err(io("create log"))?;
        let err = out.try_clone().map_err(io("dup log"))?;
        let child = self
            .client_command(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("spawn docker-registry"))?;
        let registry = Registry { child, netns, log };
        let url = format!("http://{}:{port}/v2/", crate::underlay::CLIENT_ADDR);
        crate::eventually(
            std::time::Duration::from_secs(15),
            "registry answers",
            || {
                let out = self
                    .client_command("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                    .output()?;
                // 401: up, and asking for the password.
                Ok((out.stdout == b"200" || out.stdout == b"401").then_some(()))
            },
        )
        .await
        .map_err(|e| LabError::Io {
            path: registry.log.clone(),
            op: "waiting for the registry",
            source: std::io::Error::other(format!("{e}: {}", registry.log_tail())),
        })?;
        Ok(registry)
    }
}
