//! The store on disk:
//!
//! ```text
//! <root>/blobs/sha256/<hex>   content-addressed blobs (manifests, configs, layers)
//! <root>/images.json          manifest digest → references, replaced atomically
//! <root>/rootfs/<hex>         each image's layers unpacked, keyed by manifest
//! <root>/tmp/                 every write starts here and is renamed into place
//! ```
//!
//! A blob is renamed into `blobs/` only once its sha256 matched the digest
//! asked for, and a root filesystem into `rootfs/` only once every layer
//! applied, so a crash leaves garbage in `tmp/` (cleared at open) and never
//! a half-written blob or image.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    Digest, ImageError, Reference,
    archive::{
        self, CONTAINERD_NAME, OCI_REF_NAME, Spool, json, manifest_media_type, parse_manifest,
    },
    error::io_err,
    unpack,
};

const INDEX_FILE: &str = "images.json";

/// What `docker image ls` and `inspect` show of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The config digest: docker's IMAGE ID.
    pub id: Digest,
    pub manifest: Digest,
    pub references: Vec<Reference>,
    /// Sum of the (compressed) layer sizes.
    pub size: u64,
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
}

/// One image an archive held, now in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub manifest: Digest,
    pub id: Digest,
    /// Empty for an untagged image (docker prints "Loaded image ID: …").
    pub references: Vec<Reference>,
}

/// Docker's `Healthcheck` of an image config, which the OCI config type
/// does not carry. Durations are nanoseconds; 0 means "the default".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default)]
    pub interval_ns: u64,
    #[serde(rename = "Timeout", default)]
    pub timeout_ns: u64,
    #[serde(default)]
    pub retries: u32,
    #[serde(rename = "StartPeriod", default)]
    pub start_period_ns: u64,
    #[serde(rename = "StartInterval", default)]
    pub start_interval_ns: u64,
}

/// `images.json`.
#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<Digest, IndexEntry>,
}

#[derive(Default, Serialize, Deserialize)]
struct IndexEntry {
    references: BTreeSet<Reference>,
}

impl Index {
    fn resolve(&self, r: &Reference) -> Option<Digest> {
        if let Some(d) = &r.digest {
            return self.images.contains_key(d).then(|| d.clone());
        }
        self.images
            .iter()
            .find(|(_, e)| e.references.contains(r))
            .map(|(d, _)| d.clone())
    }

    /// Gives `r` to `manifest`, taking it from whichever image had it.
    fn assign(&mut self, r: &Reference, manifest: &Digest) {
        for e in self.images.values_mut() {
            e.references.remove(r);
        }
        self.images
            .entry(manifest.clone())
            .or_default()
            .references
            .insert(r.clone());
    }
}

/// How a name given by the user matched.
enum Lookup {
    /// By a tag reference: removing it only untags.
    Reference(Reference, Digest),
    /// By digest, ID or ID prefix: the image itself.
    Image(Digest),
}

/// The node's image store. One per root per process: `open` clears the
/// scratch directory.
pub struct ImageStore {
    root: PathBuf,
    /// Serialises changes to `images.json` and to which blobs are in use
    /// (loads, registrations, removals); readers need not take it, the
    /// index file is replaced atomically.
    lock: Mutex<()>,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            lock: Mutex::new(()),
        };
        for dir in [store.blob_dir(), store.rootfs_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let tmp = store.tmp_dir();
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("clearing", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(io_err("changing the mode of", &tmp))?;
        // A crash between unregistering an image and removing its root
        // filesystem leaves the latter behind: collect it now, when no
        // load or removal can be in flight.
        let index = store.read_index()?;
        let rootfs = store.rootfs_dir();
        for entry in fs::read_dir(&rootfs).map_err(io_err("reading", &rootfs))? {
            let entry = entry.map_err(io_err("reading", &rootfs))?;
            let name = entry.file_name();
            if !index.images.keys().any(|m| name == m.hex()) {
                store.discard_dir(&entry.path());
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blob_dir().join(d.hex())
    }

    fn scratch(&self, prefix: &str) -> Result<tempfile::TempDir, ImageError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.tmp_dir())
            .map_err(io_err("creating a scratch directory in", self.tmp_dir()))
    }

    // ---- blobs ----

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ImageError> {
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::BlobMissing { digest: d.clone() },
            _ => io_err("opening blob", self.blob_path(d))(e),
        })
    }

    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading blob", self.blob_path(d)))?;
        Ok(bytes)
    }

    /// Streams `r` into the store as blob `expected`: kept only if its
    /// sha256 is `expected`. Returns its size.
    pub fn write_blob(&self, expected: &Digest, r: impl Read) -> Result<u64, ImageError> {
        self.write_blob_new(expected, r).map(|(size, _)| size)
    }

    /// As `write_blob`, also telling whether the blob is new to the store.
    fn write_blob_new(
        &self,
        expected: &Digest,
        mut r: impl Read,
    ) -> Result<(u64, bool), ImageError> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err("creating a file in", &tmp_dir))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading blob data for", self.blob_path(expected))(e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(io_err("writing", tmp.path().to_path_buf()))?;
            size += n as u64;
        }
        let actual = Digest::from_sha256(hasher.finalize().into());
        if actual != *expected {
            // Dropping `tmp` removes it.
            return Err(ImageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.persist(tmp.into_temp_path(), expected)
            .map(|new| (size, new))
    }

    /// Moves a verified temp file to its blob path.
    fn persist(&self, tmp: tempfile::TempPath, d: &Digest) -> Result<bool, ImageError> {
        let dest = self.blob_path(d);
        if dest.is_file() {
            return Ok(false);
        }
        let path = tmp.to_path_buf();
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", &path))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))
            .map_err(io_err("changing the mode of", &path))?;
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming into", &dest)(e.error))?;
        Ok(true)
    }

    /// Moves a spooled archive file into the store if its digest is right.
    fn ingest(&self, expected: &Digest, size: u64, path: &Path) -> Result<bool, ImageError> {
        if self.has_blob(expected) {
            return Ok(false);
        }
        let (actual, actual_size, _) = archive::hash_file(path)?;
        if actual != *expected {
            return Err(ImageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if actual_size != size {
            return Err(ImageError::BadArchive {
                reason: format!(
                    "blob {expected} is {actual_size} bytes, its descriptor says {size}"
                ),
            });
        }
        let tmp = tempfile::TempPath::try_from_path(path).map_err(io_err("taking over", path))?;
        self.persist(tmp, expected)
    }

    fn manifest(&self, d: &Digest) -> Result<ImageManifest, ImageError> {
        let bytes = self.read_blob(d)?;
        // The media type is in the manifest itself (absent: OCI).
        let raw: ImageManifest = json("image manifest", &bytes)?;
        parse_manifest(&manifest_media_type(&raw), &bytes)
    }

    /// The manifest, config and layer descriptors of an image: what another
    /// node needs to have it.
    pub fn blobs_of(&self, manifest: &Digest) -> Result<Vec<Descriptor>, ImageError> {
        let bytes = self.read_blob(manifest)?;
        let m = self.manifest(manifest)?;
        let mut out = vec![Descriptor::new(
            manifest_media_type(&m),
            bytes.len() as u64,
            manifest.to_oci(),
        )];
        out.push(m.config().clone());
        out.extend(m.layers().iter().cloned());
        Ok(out)
    }

    fn blob_digests(&self, manifest: &Digest) -> Result<Vec<Digest>, ImageError> {
        self.blobs_of(manifest)?
            .iter()
            .map(|d| Digest::from_oci(d.digest()))
            .collect()
    }

    // ---- images.json ----

    fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.root.join(INDEX_FILE);
        match fs::read(&path) {
            Ok(bytes) => json(INDEX_FILE, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err("reading", path)(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| ImageError::Json {
            what: INDEX_FILE.into(),
            source,
        })?;
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err("creating a file in", &tmp_dir))?;
        tmp.write_all(&bytes)
            .map_err(io_err("writing", tmp.path().to_path_buf()))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("syncing", tmp.path().to_path_buf()))?;
        let dest = self.root.join(INDEX_FILE);
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming into", &dest)(e.error))?;
        Ok(())
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is on disk and written atomically: a panic
        // elsewhere leaves nothing half-done to protect.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- loading ----

    /// Loads a `docker save` archive (legacy or Docker 25+) or an OCI
    /// image-layout tar. All or nothing: on error no image is registered
    /// and the blobs this load added are removed again.
    pub fn load_archive(&self, r: impl Read) -> Result<Vec<Loaded>, ImageError> {
        let spool_dir = self.scratch("load-")?;
        let spool = Spool::read_from(r, spool_dir.path())?;
        let candidates = archive::candidates(&spool)?;
        // Held from the first blob to the registration, so a concurrent
        // removal cannot collect a blob this load counts on.
        let _guard = self.locked();
        let mut added = Vec::new();
        let result = self.ingest_all(&candidates, &mut added);
        if let Err(e) = result {
            self.discard(&added, &candidates);
            return Err(e);
        }
        let mut index = self.read_index()?;
        let mut loaded = Vec::new();
        for c in &candidates {
            index.images.entry(c.manifest_digest.clone()).or_default();
            // A name with a digest names the image by itself.
            for r in c.references.iter().filter(|r| r.digest.is_none()) {
                index.assign(r, &c.manifest_digest);
            }
            loaded.push(Loaded {
                manifest: c.manifest_digest.clone(),
                id: c
                    .blobs
                    .first()
                    .map(|b| b.0.clone())
                    .unwrap_or_else(|| c.manifest_digest.clone()),
                references: c.references.clone(),
            });
        }
        self.write_index(&index)?;
        Ok(loaded)
    }

    fn ingest_all(
        &self,
        candidates: &[archive::Candidate],
        added: &mut Vec<Digest>,
    ) -> Result<(), ImageError> {
        for c in candidates {
            let (_, new) = self.write_blob_new(&c.manifest_digest, c.manifest_bytes.as_slice())?;
            if new {
                added.push(c.manifest_digest.clone());
            }
            for (digest, size, path) in &c.blobs {
                if self.ingest(digest, *size, path)? {
                    added.push(digest.clone());
                }
            }
            // Unpacking is the check that every layer is sound.
            self.rootfs(&c.manifest_digest)?;
        }
        Ok(())
    }

    /// Undoes a failed load: its root filesystems, and its new blobs no
    /// registered image uses.
    /// The caller holds the lock.
    fn discard(&self, added: &[Digest], candidates: &[archive::Candidate]) {
        let Ok(index) = self.read_index() else { return };
        let in_use = self.blobs_in_use(&index);
        for c in candidates
            .iter()
            .filter(|c| !index.images.contains_key(&c.manifest_digest))
        {
            self.remove_rootfs(&c.manifest_digest);
        }
        for d in added.iter().filter(|d| !in_use.contains(d)) {
            if let Err(e) = fs::remove_file(self.blob_path(d)) {
                tracing::warn!(blob = %d, error = %e, "could not remove a blob of a failed load");
            }
        }
    }

    fn blobs_in_use(&self, index: &Index) -> BTreeSet<Digest> {
        index
            .images
            .keys()
            .filter_map(|m| self.blob_digests(m).ok())
            .flatten()
            .collect()
    }

    /// Makes `reference` name `manifest`, once all its blobs are here (after
    /// a transfer from another node) and its layers unpacked.
    pub fn register(
        &self,
        reference: &Reference,
        manifest: &Digest,
    ) -> Result<ImageInfo, ImageError> {
        // Held throughout: a concurrent removal must not collect a blob
        // between this check and the registration.
        let _guard = self.locked();
        for d in self.blobs_of(manifest)? {
            let d = Digest::from_oci(d.digest())?;
            if !self.has_blob(&d) {
                return Err(ImageError::BlobMissing { digest: d });
            }
        }
        self.rootfs(manifest)?;
        let mut index = self.read_index()?;
        match &reference.digest {
            Some(d) if d != manifest => {
                return Err(ImageError::DigestMismatch {
                    expected: d.clone(),
                    actual: manifest.clone(),
                });
            }
            // A digest reference names the image by itself.
            Some(_) => {
                index.images.entry(manifest.clone()).or_default();
            }
            None => index.assign(reference, manifest),
        }
        self.write_index(&index)?;
        self.info(manifest, &index)
    }

    // ---- queries ----

    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let index = self.read_index()?;
        index.images.keys().map(|m| self.info(m, &index)).collect()
    }

    fn info(&self, manifest: &Digest, index: &Index) -> Result<ImageInfo, ImageError> {
        let m = self.manifest(manifest)?;
        let id = Digest::from_oci(m.config().digest())?;
        let config: serde_json::Value = json("image config", &self.read_blob(&id)?)?;
        let text = |k: &str| config[k].as_str().map(str::to_owned);
        Ok(ImageInfo {
            id,
            manifest: manifest.clone(),
            references: index
                .images
                .get(manifest)
                .map(|e| e.references.iter().cloned().collect())
                .unwrap_or_default(),
            size: m.layers().iter().map(Descriptor::size).sum(),
            created: text("created"),
            architecture: text("architecture").unwrap_or_default(),
            os: text("os").unwrap_or_default(),
        })
    }

    fn lookup(&self, name_or_id: &str, index: &Index) -> Result<Lookup, ImageError> {
        if let Ok(d) = Digest::parse(name_or_id)
            && index.images.contains_key(&d)
        {
            return Ok(Lookup::Image(d));
        }
        if let Ok(r) = Reference::parse(name_or_id)
            && let Some(m) = index.resolve(&r)
        {
            return Ok(match r.digest {
                Some(_) => Lookup::Image(m),
                None => Lookup::Reference(r, m),
            });
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let hexish = (4..=64).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hexish {
            let matches: Vec<&Digest> = index
                .images
                .keys()
                .filter(|m| {
                    m.hex().starts_with(prefix)
                        || self
                            .manifest(m)
                            .ok()
                            .is_some_and(|man| man.config().digest().digest().starts_with(prefix))
                })
                .collect();
            match matches.as_slice() {
                [one] => return Ok(Lookup::Image((*one).clone())),
                [] => {}
                _ => {
                    return Err(ImageError::Ambiguous {
                        prefix: name_or_id.to_owned(),
                    });
                }
            }
        }
        Err(ImageError::NotFound {
            reference: name_or_id.to_owned(),
        })
    }

    /// An image by reference (`busybox`, full or short), ID (full or a
    /// prefix of 4+ hex digits) or manifest digest.
    pub fn inspect(&self, name_or_id: &str) -> Result<ImageInfo, ImageError> {
        let index = self.read_index()?;
        let manifest = match self.lookup(name_or_id, &index)? {
            Lookup::Reference(_, m) | Lookup::Image(m) => m,
        };
        self.info(&manifest, &index)
    }

    /// The manifest digest a reference names here, if any.
    pub fn resolve(&self, reference: &Reference) -> Option<Digest> {
        self.read_index().ok()?.resolve(reference)
    }

    /// `docker tag source target`.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), ImageError> {
        if target.digest.is_some() {
            return Err(ImageError::TagWithDigest {
                reference: target.to_string(),
            });
        }
        let _guard = self.locked();
        let mut index = self.read_index()?;
        let manifest = match self.lookup(source, &index)? {
            Lookup::Reference(_, m) | Lookup::Image(m) => m,
        };
        index.assign(target, &manifest);
        self.write_index(&index)
    }

    // ---- removal ----

    /// `docker rmi`: a tag reference is untagged; the image goes when it
    /// has no reference left, or when named by ID or digest. Returns the
    /// blobs deleted (none if only untagged).
    pub fn remove(&self, name_or_id: &str) -> Result<Vec<Digest>, ImageError> {
        self.remove_if(name_or_id, |_| false)
    }

    /// As `remove`, refusing with `InUse` when the image itself would go
    /// and `in_use(manifest)` says a task still uses it.
    pub fn remove_if(
        &self,
        name_or_id: &str,
        in_use: impl Fn(&Digest) -> bool,
    ) -> Result<Vec<Digest>, ImageError> {
        let _guard = self.locked();
        let mut index = self.read_index()?;
        let manifest = match self.lookup(name_or_id, &index)? {
            Lookup::Reference(r, m) => {
                let entry = index.images.entry(m.clone()).or_default();
                if entry.references.len() > 1 {
                    entry.references.remove(&r);
                    self.write_index(&index)?;
                    return Ok(Vec::new());
                }
                m
            }
            Lookup::Image(m) => m,
        };
        if in_use(&manifest) {
            return Err(ImageError::InUse {
                reference: name_or_id.to_owned(),
                manifest,
            });
        }
        let blobs = self
            .blob_digests(&manifest)
            .unwrap_or_else(|_| vec![manifest.clone()]);
        index.images.remove(&manifest);
        // Unregister first: a crash then leaves unused blobs, never an
        // image whose blobs are gone.
        self.write_index(&index)?;
        self.remove_rootfs(&manifest);
        let kept = self.blobs_in_use(&index);
        let mut deleted = Vec::new();
        for d in blobs.into_iter().filter(|d| !kept.contains(d)) {
            match fs::remove_file(self.blob_path(&d)) {
                Ok(()) => deleted.push(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing blob", self.blob_path(&d))(e)),
            }
        }
        Ok(deleted)
    }

    fn remove_rootfs(&self, manifest: &Digest) {
        self.discard_dir(&self.rootfs_dir().join(manifest.hex()));
    }

    /// Moves a root filesystem out of sight first, so it is never seen
    /// half-deleted, then deletes it.
    fn discard_dir(&self, path: &Path) {
        if fs::symlink_metadata(path).is_err() {
            return;
        }
        let Ok(scratch) = self.scratch("rm-") else {
            return;
        };
        if let Err(e) = fs::rename(path, scratch.path().join("rootfs")) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a root filesystem");
        }
    }

    // ---- config and root filesystem ----

    /// The image's config (Entrypoint, Cmd, Env, WorkingDir, User, …).
    pub fn config(&self, manifest: &Digest) -> Result<ImageConfiguration, ImageError> {
        let m = self.manifest(manifest)?;
        let bytes = self.read_blob(&Digest::from_oci(m.config().digest())?)?;
        json("image config", &bytes)
    }

    /// Docker's `Healthcheck` from the config, which oci-spec drops.
    pub fn healthcheck(&self, manifest: &Digest) -> Result<Option<Healthcheck>, ImageError> {
        let m = self.manifest(manifest)?;
        let bytes = self.read_blob(&Digest::from_oci(m.config().digest())?)?;
        let raw: serde_json::Value = json("image config", &bytes)?;
        match raw.get("config").and_then(|c| c.get("Healthcheck")) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(h) => serde_json::from_value(h.clone())
                .map(Some)
                .map_err(|source| ImageError::Json {
                    what: "image healthcheck".into(),
                    source,
                }),
        }
    }

    /// The config's diff IDs, if it lists one per layer (checked while
    /// unpacking); `None` if it lists none, an error if the count is wrong.
    fn diff_ids(&self, m: &ImageManifest) -> Result<Option<Vec<Digest>>, ImageError> {
        let config: serde_json::Value = json(
            "image config",
            &self.read_blob(&Digest::from_oci(m.config().digest())?)?,
        )?;
        let ids = config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(None);
        }
        if ids.len() != m.layers().len() {
            return Err(ImageError::BadImage {
                config: Digest::from_oci(m.config().digest())?,
                reason: format!(
                    "the config lists {} diff IDs for {} layers",
                    ids.len(),
                    m.layers().len()
                ),
            });
        }
        ids.iter()
            .map(|v| Digest::parse(v.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The image's layers unpacked, in order, into one directory (an
    /// overlay lowerdir). Made once; later calls return the same path.
    pub fn rootfs(&self, manifest: &Digest) -> Result<PathBuf, ImageError> {
        let dest = self.rootfs_dir().join(manifest.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        let m = self.manifest(manifest)?;
        let scratch = self.scratch("rootfs-")?;
        let dir = scratch.path().join("rootfs");
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err("changing the mode of", &dir))?;
        let diff_ids = self.diff_ids(&m)?;
        for (i, layer) in m.layers().iter().enumerate() {
            let digest = Digest::from_oci(layer.digest())?;
            let blob = self.open_blob(&digest)?;
            let diff_id = diff_ids.as_ref().and_then(|ids| ids.get(i));
            unpack::apply_layer_checked(&dir, &digest, layer.media_type(), diff_id, blob)?;
        }
        match fs::rename(&dir, &dest) {
            Ok(()) => Ok(dest),
            // Another caller finished first: theirs is as good.
            Err(_) if dest.is_dir() => Ok(dest),
            Err(e) => Err(io_err("renaming into", &dest)(e)),
        }
    }

    // ---- export ----

    /// Writes the image as an OCI image-layout tar (index.json named with
    /// the image's first reference).
    pub fn export_oci(&self, manifest: &Digest, w: impl Write) -> Result<(), ImageError> {
        let index = self.read_index()?;
        let info = self.info(manifest, &index)?;
        let blobs = self.blobs_of(manifest)?;
        let mut annotations = serde_json::Map::new();
        if let Some(r) = info.references.first() {
            annotations.insert(CONTAINERD_NAME.into(), r.to_string().into());
            annotations.insert(OCI_REF_NAME.into(), r.to_string().into());
        }
        let mut desc = serde_json::json!({
            "mediaType": blobs[0].media_type().to_string(),
            "digest": manifest.to_string(),
            "size": blobs[0].size(),
        });
        if !annotations.is_empty() {
            desc["annotations"] = annotations.into();
        }
        let index_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": [desc],
        });
        let mut tar = crate::build::TarWriter::new(w);
        tar.bytes("oci-layout", crate::build::OCI_LAYOUT.as_bytes())?;
        tar.bytes("index.json", &crate::build::json_bytes(&index_json)?)?;
        let mut seen = BTreeSet::new();
        for d in &blobs {
            let digest = Digest::from_oci(d.digest())?;
            if seen.insert(digest.clone()) {
                let file = self.open_blob(&digest)?;
                let size = file
                    .metadata()
                    .map_err(io_err("reading", self.blob_path(&digest)))?
                    .len();
                tar.reader(&format!("blobs/sha256/{}", digest.hex()), size, file)?;
            }
        }
        tar.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{
        BuildConfig, ImageBuilder,
        build::TarWriter,
        fixtures,
        testutil::{E, file, hardlink, symlink, tar, walk},
    };

    /// A store in `<t>/store` beside an `<t>/outside` that must stay empty.
    struct Env {
        t: tempfile::TempDir,
        store: ImageStore,
    }

    impl Env {
        fn new() -> Env {
            let t = tempfile::tempdir().expect("tempdir");
            fs::create_dir(t.path().join("outside")).expect("mkdir");
            let store = ImageStore::open(&t.path().join("store")).expect("open");
            Env { t, store }
        }

        fn outside(&self) -> PathBuf {
            self.t.path().join("outside")
        }

        fn count(&self, dir: &str) -> usize {
            fs::read_dir(self.store.root().join(dir))
                .expect("dir")
                .count()
        }

        /// Nothing beside the store or in `outside`; no scratch left over.
        fn assert_clean(&self) {
            let mut top: Vec<_> = fs::read_dir(self.t.path())
                .expect("read")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            top.sort();
            assert_eq!(top, ["outside", "store"]);
            assert!(
                walk(&self.outside()).is_empty(),
                "written outside the store"
            );
            assert_eq!(self.count("tmp"), 0, "scratch left in tmp");
        }
    }

    fn docker_archive(b: &ImageBuilder) -> (Vec<u8>, Digest) {
        let mut buf = Vec::new();
        let m = b.write_docker_archive(&mut buf).expect("archive");
        (buf, m)
    }

    #[test]
    fn busybox_round_trip() {
        let env = Env::new();
        let s = &env.store;
        let (archive, manifest) = docker_archive(&fixtures::busybox());
        let (again, _) = docker_archive(&fixtures::busybox());
        assert_eq!(
            Digest::of(&archive),
            Digest::of(&again),
            "builds are deterministic"
        );

        let loaded = s.load_archive(archive.as_slice()).expect("load");
        let busybox = Reference::parse("busybox").expect("ref");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].manifest, manifest);
        assert_eq!(loaded[0].references, std::slice::from_ref(&busybox));

        let list = s.list().expect("list");
        assert_eq!(list.len(), 1);
        let info = &list[0];
        assert_eq!(
            (info.architecture.as_str(), info.os.as_str()),
            ("amd64", "linux")
        );
        assert_eq!(info.id, loaded[0].id);
        assert!(
            info.size > 500_000,
            "busybox layer is most of a 2 MB binary"
        );
        assert_eq!(info.created.as_deref(), Some("2000-01-01T00:00:00Z"));
        for name in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            info.id.short(),
            &info.id.hex()[..4],
            &info.id.to_string(),
            &manifest.to_string(),
            &format!("busybox@{manifest}"),
        ] {
            assert_eq!(
                &s.inspect(name).unwrap_or_else(|e| panic!("{name}: {e}")),
                info,
                "{name}"
            );
        }
        assert_eq!(s.resolve(&busybox), Some(manifest.clone()));
        assert_eq!(
            s.resolve(&Reference::parse("busybox:other").expect("ref")),
            None
        );

        let cfg = s.config(&manifest).expect("config");
        assert_eq!(
            cfg.config().as_ref().and_then(|c| c.cmd().clone()),
            Some(vec!["sh".to_owned()])
        );
        assert_eq!(s.healthcheck(&manifest).expect("healthcheck"), None);

        let rootfs = s.rootfs(&manifest).expect("rootfs");
        assert_eq!(rootfs, s.root().join("rootfs").join(manifest.hex()));
        let bin = fs::metadata(rootfs.join("bin/busybox")).expect("bin/busybox");
        assert!(bin.is_file() && bin.permissions().mode() & 0o111 == 0o111);
        assert_eq!(
            fs::read_link(rootfs.join("bin/sh")).expect("sh"),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("www/index.html")).expect("www"),
            "shoal busybox\n"
        );
        assert_eq!(
            fs::metadata(&rootfs).expect("root").permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::metadata(rootfs.join("tmp"))
                .expect("tmp")
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        assert_eq!(s.rootfs(&manifest).expect("again"), rootfs);

        // Leftovers of a crash: scratch in tmp, an unregistered rootfs.
        fs::write(s.root().join("tmp/partial"), "x").expect("write");
        fs::create_dir(s.root().join("rootfs").join(Digest::of(b"gone").hex())).expect("mkdir");
        let reopened = ImageStore::open(s.root()).expect("reopen");
        assert_eq!(reopened.list().expect("list"), list, "the index is on disk");
        assert_eq!(env.count("tmp"), 0);
        assert_eq!(
            env.count("rootfs"),
            1,
            "only the registered image's rootfs stays"
        );
        drop(reopened);

        let mine = Reference::parse("myreg:5000/bb:1").expect("ref");
        s.tag("busybox", &mine).expect("tag");
        assert_eq!(
            s.inspect("myreg:5000/bb:1").expect("tagged").references,
            [busybox.clone(), mine.clone()]
        );
        let digest_ref = Reference::parse(&format!("busybox@{manifest}")).expect("ref");
        assert!(matches!(
            s.tag("busybox", &digest_ref),
            Err(ImageError::TagWithDigest { .. })
        ));

        // Untagging one of two names deletes nothing.
        assert_eq!(
            s.remove("myreg:5000/bb:1").expect("untag"),
            Vec::<Digest>::new()
        );
        assert_eq!(
            s.list().expect("list")[0].references,
            std::slice::from_ref(&busybox)
        );
        let err = s
            .remove_if("busybox", |m| *m == manifest)
            .expect_err("in use");
        assert!(matches!(err, ImageError::InUse { .. }), "{err}");
        let deleted = s.remove("busybox").expect("rmi");
        assert_eq!(deleted.len(), 3, "manifest, config and layer: {deleted:?}");
        assert!(s.list().expect("list").is_empty());
        assert_eq!(env.count("blobs/sha256"), 0);
        assert_eq!(env.count("rootfs"), 0);
        let err = s.inspect("busybox").expect_err("gone");
        assert_eq!(err.to_string(), "No such image: busybox");
        env.assert_clean();
    }

    #[test]
    fn shared_blobs_survive_removal_of_one_image() {
        let env = Env::new();
        let s = &env.store;
        let (a, m1) = docker_archive(&fixtures::busybox());
        s.load_archive(a.as_slice()).expect("load");
        // Same layer, different config: the layer blob is shared.
        let other = fixtures::busybox().config(|c| c.cmd = Some(vec!["httpd".into()]));
        let other = other.with_reference(Reference::parse("other").expect("ref"));
        let (b, m2) = docker_archive(&other);
        s.load_archive(b.as_slice()).expect("load other");
        assert_ne!(m1, m2);
        assert_eq!(env.count("blobs/sha256"), 5);
        let deleted = s.remove("busybox").expect("rmi");
        assert_eq!(deleted.len(), 2, "the shared layer stays: {deleted:?}");
        assert!(
            s.rootfs(&m2)
                .expect("other still unpacks")
                .join("bin/busybox")
                .is_file()
        );
        // Loading the same name again moves the tag.
        s.load_archive(a.as_slice()).expect("reload");
        let third = fixtures::busybox().with_reference(Reference::parse("other").expect("ref"));
        let (c, m3) = docker_archive(&third);
        s.load_archive(c.as_slice()).expect("load third");
        assert_eq!(m3, m1, "same content as busybox");
        assert_eq!(s.inspect("other").expect("moved").manifest, m1);
        assert_eq!(
            s.inspect(&m2.to_string()).expect("dangling").references,
            Vec::<Reference>::new()
        );
        env.assert_clean();
    }

    #[test]
    fn config_and_healthcheck() {
        let env = Env::new();
        let hc = Healthcheck {
            test: vec!["CMD-SHELL".into(), "wget -q -O- localhost || exit 1".into()],
            interval_ns: 5_000_000_000,
            timeout_ns: 2_000_000_000,
            retries: 3,
            start_period_ns: 1_000_000_000,
            start_interval_ns: 500_000_000,
        };
        let b = fixtures::busybox().config(|c: &mut BuildConfig| {
            c.entrypoint = Some(vec!["/bin/busybox".into()]);
            c.cmd = Some(vec!["httpd".into(), "-f".into()]);
            c.env = vec!["A=1".into()];
            c.working_dir = Some("/www".into());
            c.user = Some("nobody".into());
            c.stop_signal = Some("SIGQUIT".into());
            c.exposed_ports = vec!["80/tcp".into()];
            c.volumes = vec!["/data".into()];
            c.healthcheck = Some(hc.clone());
        });
        let mut buf = Vec::new();
        let m = b.write_oci_layout(&mut buf).expect("oci layout");
        let loaded = env.store.load_archive(buf.as_slice()).expect("load");
        assert_eq!(
            loaded[0].references,
            [Reference::parse("busybox").expect("ref")]
        );
        let cfg = env.store.config(&m).expect("config");
        let c = cfg.config().clone().expect("config section");
        assert_eq!(
            c.entrypoint().clone(),
            Some(vec!["/bin/busybox".to_owned()])
        );
        assert_eq!(
            c.cmd().clone(),
            Some(vec!["httpd".to_owned(), "-f".to_owned()])
        );
        let env_vars = c.env().clone().unwrap_or_default();
        assert!(
            env_vars.iter().any(|e| e.starts_with("PATH=")) && env_vars.contains(&"A=1".to_owned())
        );
        assert_eq!(c.working_dir().as_deref(), Some("/www"));
        assert_eq!(c.user().as_deref(), Some("nobody"));
        assert_eq!(c.stop_signal().as_deref(), Some("SIGQUIT"));
        assert_eq!(c.exposed_ports().clone(), Some(vec!["80/tcp".to_owned()]));
        assert_eq!(c.volumes().clone(), Some(vec!["/data".to_owned()]));
        assert_eq!(env.store.healthcheck(&m).expect("healthcheck"), Some(hc));
    }

    /// Hand-made `docker save` in the legacy layout, a layer shared through
    /// an archive symlink as old docker writes it.
    #[test]
    fn legacy_layout_loads() {
        let env = Env::new();
        let l1 = tar(&[file("hello", "world"), file("gone", "x")]);
        let l2 = tar(&[file(".wh.gone", ""), file("second", "2")]);
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["/hello"] },
            "rootfs": { "type": "layers", "diff_ids": [
                Digest::of(&l1).to_string(), Digest::of(&l2).to_string(), Digest::of(&l1).to_string()
            ]},
        });
        let config = serde_json::to_vec(&config).expect("json");
        let cfg_name = format!("{}.json", Digest::of(&config).hex());
        let manifest = serde_json::json!([{
            "Config": cfg_name,
            "RepoTags": ["legacy:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
        }]);
        let mut t = TarWriter::new(Vec::new());
        t.bytes(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("tar");
        t.bytes(&cfg_name, &config).expect("tar");
        t.bytes("aaa/layer.tar", &l1).expect("tar");
        t.bytes("bbb/layer.tar", &l2).expect("tar");
        t.symlink("ccc/layer.tar", "../aaa/layer.tar").expect("tar");
        let archive = t.into_inner().expect("tar");

        let loaded = env
            .store
            .load_archive(archive.as_slice())
            .expect("legacy load");
        assert_eq!(
            loaded[0].references,
            [Reference::parse("legacy:1").expect("ref")]
        );
        assert_eq!(
            loaded[0].id,
            Digest::of(&config),
            "IMAGE ID is the config digest"
        );
        let m = &loaded[0].manifest;
        let blobs = env.store.blobs_of(m).expect("blobs");
        assert_eq!(
            blobs.len(),
            5,
            "a synthesised OCI manifest, config and three layers"
        );
        assert_eq!(blobs[2].digest().to_string(), Digest::of(&l1).to_string());
        let rootfs = env.store.rootfs(m).expect("rootfs");
        assert_eq!(
            fs::read_to_string(rootfs.join("hello")).expect("hello"),
            "world"
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("gone")).expect("back in layer 3"),
            "x"
        );
        assert!(rootfs.join("second").is_file());

        // A legacy layer whose content is not its diff ID is refused.
        let bad_config = String::from_utf8(config.clone()).expect("utf8").replace(
            &Digest::of(&l2).to_string(),
            &Digest::of(b"other").to_string(),
        );
        let bad_name = format!("{}.json", Digest::of(bad_config.as_bytes()).hex());
        let manifest = serde_json::json!([{ "Config": bad_name, "RepoTags": ["legacy:2"], "Layers": ["aaa/layer.tar", "bbb/layer.tar"] }]);
        let mut t = TarWriter::new(Vec::new());
        t.bytes(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("tar");
        t.bytes(&bad_name, bad_config.as_bytes()).expect("tar");
        t.bytes("aaa/layer.tar", &l1).expect("tar");
        t.bytes("bbb/layer.tar", &l2).expect("tar");
        let err = env
            .store
            .load_archive(t.into_inner().expect("tar").as_slice())
            .expect_err("diff id");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert_eq!(env.store.list().expect("list").len(), 1);
        env.assert_clean();
    }

    #[test]
    fn export_then_load_elsewhere_and_distribution() {
        let a = Env::new();
        let (archive, m) = docker_archive(&fixtures::busybox());
        a.store.load_archive(archive.as_slice()).expect("load");
        let mut exported = Vec::new();
        a.store.export_oci(&m, &mut exported).expect("export");
        let b = Env::new();
        let loaded = b
            .store
            .load_archive(exported.as_slice())
            .expect("load export");
        assert_eq!(loaded[0].manifest, m);
        assert_eq!(
            loaded[0].references,
            [Reference::parse("busybox").expect("ref")]
        );

        // Blob by blob, as a node fetches from another.
        let c = Env::new();
        let r = Reference::parse("busybox").expect("ref");
        let blobs = a.store.blobs_of(&m).expect("blobs");
        let first = Digest::from_oci(blobs[1].digest()).expect("digest");
        assert!(matches!(
            c.store.register(&r, &m),
            Err(ImageError::BlobMissing { .. })
        ));
        let err = c
            .store
            .write_blob(&first, &b"not it"[..])
            .expect_err("mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }));
        assert!(!c.store.has_blob(&first));
        for d in &blobs {
            let d = Digest::from_oci(d.digest()).expect("digest");
            let size = c
                .store
                .write_blob(&d, a.store.open_blob(&d).expect("open"))
                .expect("write");
            assert!(size > 0 && c.store.has_blob(&d));
        }
        let info = c.store.register(&r, &m).expect("register");
        assert_eq!(info, a.store.inspect("busybox").expect("inspect"));
        assert!(
            c.store
                .rootfs(&m)
                .expect("rootfs")
                .join("bin/busybox")
                .is_file()
        );
        c.assert_clean();
    }

    #[test]
    fn image_index_picks_linux_amd64() {
        let env = Env::new();
        let built = fixtures::busybox().build().expect("build");
        let arm = Digest::of(b"an arm64 manifest that is not in the archive");
        let nested = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": [
                { "mediaType": MediaType::ImageManifest.to_string(), "digest": arm.to_string(), "size": 10,
                  "platform": { "architecture": "arm64", "os": "linux" } },
                { "mediaType": MediaType::ImageManifest.to_string(), "digest": built.manifest.to_string(),
                  "size": built.manifest_bytes.len(), "platform": { "architecture": "amd64", "os": "linux" } },
            ],
        });
        let nested = serde_json::to_vec(&nested).expect("json");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                // A platform manifest listed directly, its blobs absent: skipped.
                { "mediaType": MediaType::ImageManifest.to_string(), "digest": arm.to_string(), "size": 10,
                  "platform": { "architecture": "arm64", "os": "linux" } },
                { "mediaType": MediaType::ImageIndex.to_string(), "digest": Digest::of(&nested).to_string(),
                  "size": nested.len(), "annotations": { OCI_REF_NAME: "docker.io/library/multi:1" } },
            ],
        });
        let mut t = TarWriter::new(Vec::new());
        t.bytes("oci-layout", crate::build::OCI_LAYOUT.as_bytes())
            .expect("tar");
        t.bytes("index.json", &serde_json::to_vec(&index).expect("json"))
            .expect("tar");
        for bytes in [
            &nested,
            &built.manifest_bytes,
            &built.config_bytes,
            &built.layer_bytes,
        ] {
            t.bytes(&format!("blobs/sha256/{}", Digest::of(bytes).hex()), bytes)
                .expect("tar");
        }
        let loaded = env
            .store
            .load_archive(t.into_inner().expect("tar").as_slice())
            .expect("load");
        assert_eq!(loaded[0].manifest, built.manifest);
        assert_eq!(
            loaded[0].references,
            [Reference::parse("multi:1").expect("ref")]
        );
    }

    /// An OCI layout archive of the given layers; `tamper` replaces one
    /// layer's bytes after its descriptor was made.
    fn oci_archive(layers: &[(Vec<u8>, MediaType)], tamper: Option<usize>) -> Vec<u8> {
        oci_archive_with(layers, tamper, &[])
    }

    fn oci_archive_with(
        layers: &[(Vec<u8>, MediaType)],
        tamper: Option<usize>,
        diff_ids: &[Digest],
    ) -> Vec<u8> {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("json");
        let descs: Vec<_> = layers
            .iter()
            .map(|(b, m)| serde_json::json!({ "mediaType": m.to_string(), "digest": Digest::of(b).to_string(), "size": b.len() }))
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageManifest.to_string(),
            "config": { "mediaType": MediaType::ImageConfig.to_string(), "digest": Digest::of(&config).to_string(), "size": config.len() },
            "layers": descs,
        }))
        .expect("json");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": MediaType::ImageManifest.to_string(), "digest": Digest::of(&manifest).to_string(),
                "size": manifest.len(), "annotations": { CONTAINERD_NAME: "docker.io/library/bad:1" } }],
        });
        let mut t = TarWriter::new(Vec::new());
        t.bytes("oci-layout", crate::build::OCI_LAYOUT.as_bytes())
            .expect("tar");
        t.bytes("index.json", &serde_json::to_vec(&index).expect("json"))
            .expect("tar");
        t.bytes(
            &format!("blobs/sha256/{}", Digest::of(&config).hex()),
            &config,
        )
        .expect("tar");
        t.bytes(
            &format!("blobs/sha256/{}", Digest::of(&manifest).hex()),
            &manifest,
        )
        .expect("tar");
        for (i, (b, _)) in layers.iter().enumerate() {
            let mut content = b.clone();
            if tamper == Some(i) {
                content[0] ^= 1;
            }
            t.bytes(&format!("blobs/sha256/{}", Digest::of(b).hex()), &content)
                .expect("tar");
        }
        t.into_inner().expect("tar")
    }

    #[test]
    fn malformed_archives_are_refused_and_leave_nothing() {
        let env = Env::new();
        let (good, m) = docker_archive(&fixtures::busybox());
        env.store
            .load_archive(good.as_slice())
            .expect("a good image first");
        let blobs_before = env.count("blobs/sha256");
        let outside = env.outside().to_string_lossy().into_owned();
        let plain = |entries: &[E]| (tar(entries), MediaType::ImageLayer);
        let whole = tar(&[file("big", &"x".repeat(3000))]);

        type Check = fn(&ImageError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            (
                "digest mismatch",
                oci_archive(&[plain(&[file("f", "x")])], Some(0)),
                |e| matches!(e, ImageError::DigestMismatch { .. }),
            ),
            (
                "../ entry",
                oci_archive(&[plain(&[file("../../outside/evil", "x")])], None),
                |e| matches!(e, ImageError::UnsafeEntry { entry, .. } if entry.contains("..")),
            ),
            (
                "absolute hardlink target",
                oci_archive(&[plain(&[hardlink("h", "/etc/passwd")])], None),
                |e| matches!(e, ImageError::UnsafeEntry { reason, .. } if reason.contains("absolute")),
            ),
            (
                "symlinked parent escape",
                oci_archive(
                    &[
                        plain(&[symlink("a", &outside)]),
                        plain(&[file("a/evil", "x")]),
                    ],
                    None,
                ),
                |e| matches!(e, ImageError::UnsafeEntry { entry, reason, .. } if entry == "a/evil" && reason.contains("symlink")),
            ),
            (
                "truncated layer",
                oci_archive(&[(whole[..1500].to_vec(), MediaType::ImageLayer)], None),
                |e| matches!(e, ImageError::BadLayer { .. }),
            ),
            (
                "unknown media type",
                oci_archive(
                    &[(
                        tar(&[file("f", "x")]),
                        MediaType::Other("application/x-mystery".into()),
                    )],
                    None,
                ),
                |e| matches!(e, ImageError::UnknownMediaType { media_type } if media_type == "application/x-mystery"),
            ),
            (
                "diff ID mismatch",
                oci_archive_with(
                    &[plain(&[file("f", "x")])],
                    None,
                    &[Digest::of(b"not the layer")],
                ),
                |e| matches!(e, ImageError::DigestMismatch { .. }),
            ),
            (
                "diff ID count",
                oci_archive_with(
                    &[plain(&[file("f", "x")])],
                    None,
                    &[Digest::of(b"a"), Digest::of(b"b")],
                ),
                |e| matches!(e, ImageError::BadImage { .. }),
            ),
            ("not an image archive", tar(&[file("README", "hi")]), |e| {
                matches!(e, ImageError::BadArchive { .. })
            }),
            ("not a tar", vec![7u8; 1000], |e| {
                matches!(e, ImageError::BadArchive { .. })
            }),
        ];
        for (what, archive, expected) in cases {
            let err = env.store.load_archive(archive.as_slice()).expect_err(what);
            assert!(expected(&err), "{what}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
            let list = env.store.list().expect("list");
            assert_eq!(list.len(), 1, "{what}: nothing new registered");
            assert!(
                env.store
                    .resolve(&Reference::parse("bad:1").expect("ref"))
                    .is_none(),
                "{what}"
            );
            assert_eq!(
                env.count("blobs/sha256"),
                blobs_before,
                "{what}: its blobs were removed"
            );
            assert_eq!(env.count("rootfs"), 1, "{what}: no root filesystem kept");
            env.assert_clean();
        }
        assert!(
            env.store
                .rootfs(&m)
                .expect("still there")
                .join("bin/busybox")
                .is_file()
        );
    }

    #[test]
    fn lab_tools_carries_libraries() {
        let b = fixtures::lab_tools(&[Path::new("/usr/bin/env")]);
        assert_eq!(b.reference().to_string(), fixtures::LAB_TOOLS_REFERENCE);
        let env = Env::new();
        let (archive, m) = docker_archive(&b);
        env.store.load_archive(archive.as_slice()).expect("load");
        let rootfs = env.store.rootfs(&m).expect("rootfs");
        assert!(rootfs.join("bin/env").is_file());
        assert!(
            rootfs.join("lib64/ld-linux-x86-64.so.2").is_file(),
            "the loader at its host path"
        );
        assert!(
            walk(&rootfs)
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == "libc.so.6"))
        );
        let bad = ImageBuilder::new(Reference::parse("x").expect("ref")).add_file(
            "/etc/hostname",
            "relative",
            0o644,
        );
        assert!(matches!(bad.build(), Err(ImageError::Build { .. })));
    }
}
