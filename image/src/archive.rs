//! Reading `docker save` and OCI image-layout archives: the tar is spooled
//! to a scratch directory, then its layout is read into candidate images
//! whose blobs the store verifies and ingests.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, Read},
    path::{Path, PathBuf},
};

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, MediaType, Os, Platform};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{
    Digest, ImageError, Reference,
    error::io_err,
    unpack::{Compression, layer_compression},
};

pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Symlinks inside an archive (old `docker save` dedups layers with them)
/// are followed at most this deep.
const MAX_LINK_DEPTH: usize = 8;

/// The archive's regular files, spooled under numbered names so no archive
/// path ever becomes a host path.
pub(crate) struct Spool {
    files: HashMap<String, PathBuf>,
    links: HashMap<String, String>,
}

impl Spool {
    pub(crate) fn read_from(r: impl Read, dir: &Path) -> Result<Spool, ImageError> {
        let bad = |e: io::Error| ImageError::BadArchive {
            reason: format!(
                "unreadable tar (is it a `docker save` or OCI layout archive?): {}",
                crate::error::printable(&e.to_string())
            ),
        };
        let mut spool = Spool {
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut archive = tar::Archive::new(r);
        let mut count = 0u64;
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes().into_owned();
            let Some(name) = clean(&String::from_utf8_lossy(&raw)) else {
                return Err(ImageError::BadArchive {
                    reason: format!(
                        "entry {:?} leaves the archive",
                        String::from_utf8_lossy(&raw)
                    ),
                });
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    // A counter, not files.len(): a repeated name must not
                    // reuse (and overwrite) another entry's spool file.
                    let path = dir.join(count.to_string());
                    count += 1;
                    let mut file = File::create(&path).map_err(io_err("spooling to", &path))?;
                    let size = entry.size();
                    if io::copy(&mut entry, &mut file).map_err(bad)? != size {
                        return Err(ImageError::BadArchive {
                            reason: format!("{name:?} is truncated"),
                        });
                    }
                    spool.files.insert(name, path);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned());
                    let Some(target) = target else { continue };
                    let base = match (entry.header().entry_type(), name.rsplit_once('/')) {
                        (tar::EntryType::Symlink, Some((dir, _))) => format!("{dir}/"),
                        _ => String::new(),
                    };
                    if let Some(resolved) = clean(&format!("{base}{target}")) {
                        spool.links.insert(name, resolved);
                    }
                }
                _ => {}
            }
        }
        Ok(spool)
    }

    /// The spooled file for an archive path, following archive symlinks.
    pub(crate) fn path(&self, name: &str) -> Result<&Path, ImageError> {
        let mut name = clean(name).unwrap_or_default();
        for _ in 0..MAX_LINK_DEPTH {
            if let Some(p) = self.files.get(&name) {
                return Ok(p);
            }
            match self.links.get(&name) {
                Some(next) => name = next.clone(),
                None => break,
            }
        }
        Err(ImageError::BadArchive {
            reason: format!("{name:?} is missing from the archive"),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.path(name).is_ok()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.path(name)?;
        fs::read(path).map_err(io_err("reading", path))
    }
}

/// `a/./b//c` → `a/b/c`; `None` if `..` climbs out of the archive.
fn clean(name: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// One image the archive holds, its blobs still in the spool.
pub(crate) struct Candidate {
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    /// Config and layers: (descriptor digest, its size, spooled file).
    pub blobs: Vec<(Digest, u64, PathBuf)>,
    pub references: Vec<Reference>,
}

/// An entry of `manifest.json` (`docker save`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(crate) fn candidates(spool: &Spool) -> Result<Vec<Candidate>, ImageError> {
    let legacy: Option<Vec<LegacyEntry>> = if spool.has("manifest.json") {
        Some(json("manifest.json", &spool.read("manifest.json")?)?)
    } else {
        None
    };
    let mut out: Vec<Candidate> = Vec::new();
    if spool.has("index.json") {
        let index: ImageIndex = json("index.json", &spool.read("index.json")?)?;
        // Some tools list each platform's manifest here directly; only this
        // node's is loaded (its siblings' blobs are often absent).
        for desc in index
            .manifests()
            .iter()
            .filter(|d| d.platform().as_ref().is_none_or(is_linux_amd64))
        {
            let names = names_of(desc);
            let mut candidate = from_descriptor(spool, desc)?;
            candidate.references = names;
            if candidate.references.is_empty() {
                // Docker 25 puts only the tag in ref.name; the full names
                // are in manifest.json, matched by config.
                if let (Some(legacy), Some((config, _, _))) = (&legacy, candidate.blobs.first()) {
                    let config_path = format!("blobs/sha256/{}", config.hex());
                    for entry in legacy
                        .iter()
                        .filter(|e| clean(&e.config).as_deref() == Some(&config_path))
                    {
                        candidate.references.extend(repo_tags(entry)?);
                    }
                }
            }
            merge(&mut out, candidate);
        }
    } else if let Some(legacy) = legacy {
        for entry in &legacy {
            merge(&mut out, from_legacy(spool, entry)?);
        }
    } else {
        return Err(ImageError::BadArchive {
            reason: "neither index.json nor manifest.json: not a docker save or OCI layout archive"
                .into(),
        });
    }
    Ok(out)
}

fn merge(out: &mut Vec<Candidate>, c: Candidate) {
    match out
        .iter_mut()
        .find(|o| o.manifest_digest == c.manifest_digest)
    {
        Some(o) => {
            for r in c.references {
                if !o.references.contains(&r) {
                    o.references.push(r);
                }
            }
        }
        None => out.push(c),
    }
}

fn repo_tags(entry: &LegacyEntry) -> Result<Vec<Reference>, ImageError> {
    entry
        .repo_tags
        .iter()
        .flatten()
        .map(|t| Reference::parse(t))
        .collect()
}

/// The names an index entry's annotations give: containerd's full name, or
/// an OCI ref.name that is a full reference (a bare tag names nothing).
fn names_of(desc: &Descriptor) -> Vec<Reference> {
    let Some(a) = desc.annotations() else {
        return Vec::new();
    };
    let name = a
        .get(CONTAINERD_NAME)
        .or_else(|| a.get(OCI_REF_NAME).filter(|n| n.contains(['/', ':', '@'])));
    name.and_then(|n| Reference::parse(n).ok())
        .into_iter()
        .collect()
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn descriptor_digest(desc: &Descriptor) -> Result<Digest, ImageError> {
    Digest::from_oci(desc.digest()).map_err(|_| ImageError::BadArchive {
        reason: format!("descriptor digest {} is not sha256", desc.digest()),
    })
}

/// Reads a small blob (manifest, index) from the spool, checking it.
fn verified(spool: &Spool, desc: &Descriptor) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest = descriptor_digest(desc)?;
    let bytes = spool.read(&blob_name(&digest))?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest,
            actual,
        });
    }
    Ok((digest, bytes))
}

/// The only platform Shoal nodes run.
fn is_linux_amd64(p: &Platform) -> bool {
    *p.architecture() == Arch::Amd64 && *p.os() == Os::Linux
}

fn is_index(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex) || m.as_ref() == DOCKER_MANIFEST_LIST
}

fn from_descriptor(spool: &Spool, desc: &Descriptor) -> Result<Candidate, ImageError> {
    let (digest, bytes) = verified(spool, desc)?;
    if is_index(desc.media_type()) {
        let index: ImageIndex = json("image index", &bytes)?;
        let chosen = index
            .manifests()
            .iter()
            .find(|m| m.platform().as_ref().is_some_and(is_linux_amd64))
            .ok_or(ImageError::NoMatchingPlatform { index: digest })?;
        return from_descriptor(spool, chosen);
    }
    let manifest = parse_manifest(desc.media_type(), &bytes)?;
    let mut blobs = Vec::new();
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let digest = descriptor_digest(d)?;
        let path = spool.path(&blob_name(&digest))?.to_path_buf();
        blobs.push((digest, d.size(), path));
    }
    Ok(Candidate {
        manifest_digest: digest,
        manifest_bytes: bytes,
        blobs,
        references: Vec::new(),
    })
}

/// Parses a manifest and checks every media type in it is one we handle.
pub(crate) fn parse_manifest(
    media_type: &MediaType,
    bytes: &[u8],
) -> Result<ImageManifest, ImageError> {
    if !(matches!(media_type, MediaType::ImageManifest) || media_type.as_ref() == DOCKER_MANIFEST) {
        return Err(ImageError::UnknownMediaType {
            media_type: media_type.to_string(),
        });
    }
    let manifest: ImageManifest = json("image manifest", bytes)?;
    let config = manifest.config().media_type();
    if !(matches!(config, MediaType::ImageConfig) || config.as_ref() == DOCKER_CONFIG) {
        return Err(ImageError::UnknownMediaType {
            media_type: config.to_string(),
        });
    }
    for layer in manifest.layers() {
        layer_compression(layer.media_type())?;
    }
    Ok(manifest)
}

/// A manifest's own media type: from its `mediaType` field, OCI if absent.
pub(crate) fn manifest_media_type(manifest: &ImageManifest) -> MediaType {
    manifest
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest)
}

fn from_legacy(spool: &Spool, entry: &LegacyEntry) -> Result<Candidate, ImageError> {
    let config_bytes = spool.read(&entry.config)?;
    let config_digest = Digest::of(&config_bytes);
    // The config's file name is its digest in every docker save layout.
    let stem = entry
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    if crate::reference::is_hex64(stem) && stem != config_digest.hex() {
        return Err(ImageError::DigestMismatch {
            expected: Digest::parse(&format!("sha256:{stem}"))?,
            actual: config_digest,
        });
    }
    let config: serde_json::Value = json("image config", &config_bytes)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let config_path = spool.path(&entry.config)?.to_path_buf();
    let mut blobs = vec![(
        config_digest.clone(),
        config_bytes.len() as u64,
        config_path,
    )];
    let mut layers = Vec::new();
    for (i, name) in entry.layers.iter().enumerate() {
        let path = spool.path(name)?.to_path_buf();
        let (digest, size, head) = hash_file(&path)?;
        let compression = Compression::sniff(&head);
        // An uncompressed layer's digest is its diff ID: check it.
        if compression == Compression::None
            && let Some(expected) = diff_ids.get(i).and_then(|v| v.as_str())
        {
            let expected = Digest::parse(expected)?;
            if expected != digest {
                return Err(ImageError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        layers.push(serde_json::json!({
            "mediaType": compression.oci_media_type().to_string(),
            "digest": digest.to_string(),
            "size": size,
        }));
        blobs.push((digest, size, path));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest.to_string(),
        "config": {
            "mediaType": MediaType::ImageConfig.to_string(),
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
        what: "synthesised manifest".into(),
        source,
    })?;
    Ok(Candidate {
        manifest_digest: Digest::of(&manifest_bytes),
        manifest_bytes,
        blobs,
        references: repo_tags(entry)?,
    })
}

/// sha256 and size of a file, and its first bytes (for compression).
pub(crate) fn hash_file(path: &Path) -> Result<(Digest, u64, Vec<u8>), ImageError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        if head.len() < 8 {
            head.extend_from_slice(&buf[..n.min(8 - head.len())]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_sha256(hasher.finalize().into()), size, head))
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        what: what.to_owned(),
        source,
    })
}
