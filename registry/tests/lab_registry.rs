//! Against Debian's `docker-registry` (distribution 2.8) in a network
//! namespace of its own: push, pull, a moved tag, pull by digest, a missing
//! image, and htpasswd (Basic) auth. Needs root (netns) and
//! `/usr/bin/docker-registry`; skipped with a message without them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_image::{Digest, ImageStore, Reference, fixtures};
use shoal_registry::{Client, Credentials, Options, RegistryError};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const OPEN_PORT: u16 = 5000;
const AUTH_PORT: u16 = 5001;
const USER: &str = "shoal";
const PASSWORD: &str = "lab-password";

/// A uniquely named network namespace with `lo` up, the registries run in
/// it, and their directories. Drop kills the registries and deletes the
/// namespace and directories, whatever happened.
struct Lab {
    name: String,
    dir: tempfile::TempDir,
    registries: Vec<(Child, PathBuf)>,
}

impl Lab {
    fn new() -> Result<Lab> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "shoal-reg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop cleans up.
        let lab = Lab {
            name,
            dir: tempfile::tempdir().context("tempdir")?,
            registries: Vec::new(),
        };
        run(Command::new("ip").args(["-n", &lab.name, "link", "set", "lo", "up"]))?;
        Ok(lab)
    }

    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Starts a registry on 127.0.0.1:`port` in the namespace, with
    /// htpasswd auth if `htpasswd` is given.
    fn start_registry(&mut self, port: u16, htpasswd: Option<&str>) -> Result<()> {
        let dir = self.dir.path().join(format!("registry-{port}"));
        fs::create_dir_all(dir.join("data"))?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(line) = htpasswd {
            let path = dir.join("htpasswd");
            fs::write(&path, format!("{line}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: shoal-lab\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config)?;
        let log_path = dir.join("registry.log");
        let log = fs::File::create(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, REGISTRY_BIN, "serve"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        self.registries.push((child, log_path));
        Ok(())
    }

    fn logs(&self) -> String {
        self.registries
            .iter()
            .map(|(_, p)| {
                let text = fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {}\n{}",
                    p.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, _) in &mut self.registries {
            if let Err(e) = child.kill() {
                eprintln!("killing registry {}: {e}", child.id());
            }
            let _status = child.wait();
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("removing netns {}: {e:#}", self.name);
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Waits until something listens on 127.0.0.1:`port` (in this thread's
/// namespace).
async fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("registry on port {port} did not start listening");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn store(dir: &Path, name: &str) -> Result<Arc<ImageStore>> {
    Ok(Arc::new(ImageStore::open(&dir.join(name))?))
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Builds an image under `r` and loads it into `store`.
fn load(store: &ImageStore, image: shoal_image::ImageBuilder) -> Result<Digest> {
    let mut archive = Vec::new();
    let digest = image.write_oci_layout(&mut archive)?;
    store.load_archive(archive.as_slice())?;
    Ok(digest)
}

fn has_busybox(store: &ImageStore, m: &Digest) -> Result<bool> {
    Ok(store.rootfs(m)?.join("bin/busybox").is_file())
}

async fn scenario(dir: &Path) -> Result<()> {
    wait_listening(OPEN_PORT).await?;
    wait_listening(AUTH_PORT).await?;
    let client = Client::new(Options::default());
    let v1 = reference(&format!("127.0.0.1:{OPEN_PORT}/lab/busybox:v1"));

    // Push from A, pull into B.
    let a = store(dir, "a")?;
    let m1 = load(&a, fixtures::busybox().with_reference(v1.clone()))?;
    client.push(&a, &m1, &v1, None).await.context("push v1")?;
    // Again: every blob is there already, only the manifest is put.
    client
        .push(&a, &m1, &v1, None)
        .await
        .context("push v1 again")?;
    ensure!(client.resolve(&v1, None).await? == m1, "resolve v1");
    let b = store(dir, "b")?;
    let pulled = client.pull(&v1, None, &b).await.context("pull v1")?;
    ensure!(pulled == m1, "pulled {pulled}, pushed {m1}");
    ensure!(has_busybox(&b, &m1)?, "bin/busybox in B's rootfs");
    ensure!(b.resolve(&v1) == Some(m1.clone()), "B names v1");
    // Pulling what the store has fetches the manifest only.
    ensure!(client.pull(&v1, None, &b).await? == m1);

    // Move the tag: a different image under v1.
    let m2 = load(
        &a,
        fixtures::busybox().with_reference(v1.clone()).add_bytes(
            "v2\n",
            "/etc/shoal-version",
            0o644,
        ),
    )?;
    ensure!(m2 != m1);
    client
        .push(&a, &m2, &v1, None)
        .await
        .context("push moved v1")?;
    ensure!(client.resolve(&v1, None).await? == m2, "v1 now names m2");
    ensure!(client.pull(&v1, None, &b).await? == m2);
    ensure!(b.resolve(&v1) == Some(m2.clone()), "B's v1 moved");
    ensure!(b.rootfs(&m2)?.join("etc/shoal-version").is_file());
    // The old image is still there by digest.
    let by_digest = reference(&format!("127.0.0.1:{OPEN_PORT}/lab/busybox@{m1}"));
    ensure!(client.resolve(&by_digest, None).await? == m1);
    let c = store(dir, "c")?;
    ensure!(client.pull(&by_digest, None, &c).await? == m1);
    ensure!(has_busybox(&c, &m1)?);
    ensure!(c.resolve(&by_digest) == Some(m1.clone()));

    // Tags, one per page: the Link header is followed.
    client.push(&a, &m1, &v1.with_tag("v0"), None).await?;
    // (In no promised order: distribution 2.8 pages them unsorted.)
    let mut tags = client.tags(&v1, None, Some(1)).await?;
    tags.sort();
    ensure!(tags == ["v0", "v1"], "{tags:?}");
    let mut tags = client.tags(&v1, None, None).await?;
    tags.sort();
    ensure!(tags == ["v0", "v1"], "{tags:?}");
    let err = client
        .tags(
            &reference(&format!("127.0.0.1:{OPEN_PORT}/lab/nosuch")),
            None,
            None,
        )
        .await
        .expect_err("no such repository");
    ensure!(matches!(&err, RegistryError::NotFound { .. }), "{err:?}");

    // Missing repository, missing tag: docker's words.
    for missing in ["lab/nosuch:v1", "lab/busybox:nosuch"] {
        let r = reference(&format!("127.0.0.1:{OPEN_PORT}/{missing}"));
        let err = client.pull(&r, None, &c).await.expect_err("missing image");
        ensure!(
            matches!(&err, RegistryError::NotFound { .. }),
            "{missing}: {err:?}"
        );
        ensure!(
            err.to_string() == format!("No such image: 127.0.0.1:{OPEN_PORT}/{missing}"),
            "{err}"
        );
        let err = client.resolve(&r, None).await.expect_err("missing image");
        ensure!(matches!(&err, RegistryError::NotFound { .. }), "{err:?}");
    }

    // Nothing listening: a connect error naming the registry.
    let nowhere = reference("127.0.0.1:1/lab/busybox:v1");
    let err = client
        .resolve(&nowhere, None)
        .await
        .expect_err("no registry");
    ensure!(
        matches!(&err, RegistryError::Connect { registry, .. } if registry == "127.0.0.1:1"),
        "{err:?}"
    );

    // htpasswd (Basic) auth.
    let secured = reference(&format!("127.0.0.1:{AUTH_PORT}/lab/busybox:v1"));
    let creds = Credentials::new(USER, PASSWORD);
    let wrong = Credentials::new(USER, "not-the-password");
    let err = client
        .push(&a, &m1, &secured, None)
        .await
        .expect_err("no credentials");
    ensure!(
        matches!(&err, RegistryError::Unauthorized { registry } if registry == &secured.registry),
        "{err:?}"
    );
    ensure!(err.to_string().contains("--with-registry-auth"), "{err}");
    let err = client
        .push(&a, &m1, &secured, Some(&wrong))
        .await
        .expect_err("wrong password");
    ensure!(
        matches!(&err, RegistryError::Unauthorized { .. }),
        "{err:?}"
    );
    client
        .push(&a, &m1, &secured, Some(&creds))
        .await
        .context("push with credentials")?;
    // What worked with credentials is not reused without them.
    let err = client
        .pull(&secured, None, &c)
        .await
        .expect_err("pull without credentials");
    ensure!(
        matches!(&err, RegistryError::Unauthorized { .. }),
        "{err:?}"
    );
    // A fresh client: no authorization remembered.
    let fresh = Client::new(Options::default());
    let err = fresh
        .pull(&secured, None, &c)
        .await
        .expect_err("pull without credentials");
    ensure!(
        matches!(&err, RegistryError::Unauthorized { .. }),
        "{err:?}"
    );
    let d = store(dir, "d")?;
    ensure!(fresh.pull(&secured, Some(&creds), &d).await? == m1);
    ensure!(has_busybox(&d, &m1)?);
    ensure!(fresh.resolve(&secured, Some(&creds)).await? == m1);
    Ok(())
}

#[test]
fn lab_registry() -> Result<()> {
    // Never skipped: set-up installs the registry and CI runs as root.
    ensure!(
        nix::unistd::Uid::effective().is_root() && Path::new(REGISTRY_BIN).exists(),
        "needs root and {REGISTRY_BIN} (`cargo xtask setup` installs docker-registry)"
    );
    let mut lab = Lab::new()?;
    lab.start_registry(OPEN_PORT, None)?;
    let line = format!("{USER}:{}", bcrypt::hash(PASSWORD, 4)?);
    lab.start_registry(AUTH_PORT, Some(&line))?;
    let dir = tempfile::tempdir()?;
    let dir_path = dir.path().to_path_buf();
    // The client runs on a thread that entered the namespace, with a
    // current-thread runtime of its own: no tokio worker changes namespace.
    let result = shoal_netns::run_in_path(&lab.netns_path(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime")?
            .block_on(scenario(&dir_path))
    })?;
    if let Err(e) = &result {
        eprintln!("registry logs:\n{}", lab.logs());
        eprintln!("error: {e:#}");
    }
    result
}
