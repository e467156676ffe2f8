//! This node's images: the store (`shoal-image`), the local verbs `shoal
//! image load|ls|inspect|rm|tag`, the blobs served to other nodes on 2377,
//! and getting an image a task needs from a node that holds it.
//!
//! Any cluster node's certificate may fetch a blob: an image is no secret
//! from the cluster that runs it, and this way a loaded image reaches every
//! node without a registry (swarm needs one).

use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_api::{
    blobs::v1::{
        BlobChunk, FetchBlobRequest,
        blobs_client::BlobsClient,
        blobs_server::{Blobs, BlobsServer},
    },
    cluster::v1::{ImageRecord, RegisterImagesRequest},
    node::v1::{ImageDetail, ImageLoadChunk, ImageRemoveReply},
};
use shoal_ca::rustls::{ClientConfig, pki_types::ServerName};
use shoal_controlplane::transport;
use shoal_image::{Digest, ImageError, ImageInfo, ImageStore, Reference};
use shoal_registry::{Client as RegistryClient, Credentials, Options as RegistryOptions};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::local::lock;

/// Bytes per chunk of a blob on the wire.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(
        "conflict: unable to remove image {image}: {tasks} task(s) on this node run it; remove or update their services first"
    )]
    InUse { image: String, tasks: usize },
    #[error("receiving the archive")]
    Upload(#[source] std::io::Error),
    #[error("the image store stopped: {0}")]
    Join(String),
    /// Docker's words first, so scripts and people recognise it.
    #[error("No such image: {reference} ({reason})")]
    NoSuchImage { reference: String, reason: String },
    #[error("--with-registry-auth: the credentials are {reason}; run `docker login` again")]
    RegistryAuth { reason: String },
    #[error("fetching {digest} from {node}: {reason}")]
    Fetch {
        digest: String,
        node: String,
        reason: String,
    },
}

impl From<ImagesError> for Status {
    fn from(e: ImagesError) -> Self {
        // Archive errors can quote raw bytes of what was sent.
        let msg = shoal_image::printable(&crate::swarm::chain(&e));
        match &e {
            ImagesError::InUse { .. } => Status::failed_precondition(msg),
            ImagesError::NoSuchImage { .. } => Status::not_found(msg),
            ImagesError::Image(ImageError::NotFound { .. }) => Status::not_found(msg),
            ImagesError::Image(ImageError::InUse { .. }) => Status::failed_precondition(msg),
            ImagesError::Image(_) | ImagesError::Upload(_) | ImagesError::RegistryAuth { .. } => {
                Status::invalid_argument(msg)
            }
            ImagesError::Join(_) | ImagesError::Fetch { .. } => Status::internal(msg),
        }
    }
}

/// A node that holds an image's blobs: its id (its certificate's name),
/// its cluster address, and the manifest it holds (what the catalogue
/// resolves the reference to, for an unpinned task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node_id: String,
    pub addr: String,
    pub digest: Option<Digest>,
}

/// The node's image store and who uses what in it.
pub struct Images {
    store: Arc<ImageStore>,
    /// Manifest digest → tasks on this node running it.
    users: Mutex<HashMap<Digest, usize>>,
    /// One fetch at a time: two tasks of one image fetch it once.
    fetching: tokio::sync::Mutex<()>,
    registry: RegistryClient,
    catalogue: CatalogueSync,
}

/// What the cluster's catalogue has heard of this node's store. A change
/// (`image load`, `tag`, `rm`) answers only once the catalogue holds it,
/// so that a `service create` right after pins the image and other nodes
/// find it here.
#[derive(Debug)]
struct CatalogueSync {
    /// Changes made so far. Its receivers are the registration loops:
    /// none outside a swarm, where there is no catalogue to wait for.
    changes: watch::Sender<u64>,
    /// The last change the catalogue acknowledged.
    registered: watch::Sender<u64>,
}

impl CatalogueSync {
    /// The catalogue holds every change up to `number`.
    fn acknowledge(&self, number: u64) {
        self.registered.send_if_modified(|r| {
            let newer = number > *r;
            if newer {
                *r = number;
            }
            newer
        });
    }
}

/// How long a change waits for the catalogue before answering anyway
/// (the managers unreachable): the change itself is made.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images").finish_non_exhaustive()
    }
}

/// Held while a task runs its image: `image rm` is refused meanwhile.
#[derive(Debug)]
pub struct InUse {
    images: Arc<Images>,
    digest: Digest,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut users = lock(&self.images.users);
        if let Some(n) = users.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.digest);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImagesError> + Send + 'static,
) -> Result<T, ImagesError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImagesError::Join(e.to_string()))?
}

impl Images {
    pub fn open(root: &Path, registry: RegistryOptions) -> Result<Images, ImagesError> {
        Ok(Images {
            store: Arc::new(ImageStore::open(root)?),
            registry: RegistryClient::new(registry),
            users: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
            catalogue: CatalogueSync {
                changes: watch::Sender::new(0),
                registered: watch::Sender::new(0),
            },
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Marks `digest` used by one more task until the guard drops.
    pub fn hold(self: &Arc<Self>, digest: &Digest) -> InUse {
        *lock(&self.users).entry(digest.clone()).or_default() += 1;
        InUse {
            images: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Loads an archive streamed in chunks. It is spooled to the store's
    /// disk first: archives can be larger than memory should hold.
    pub async fn load(
        &self,
        mut chunks: impl tokio_stream::Stream<Item = Result<ImageLoadChunk, Status>> + Unpin,
    ) -> Result<Vec<ImageDetail>, Status> {
        let mut spool = tempfile::NamedTempFile::new_in(self.store.root().join("tmp"))
            .map_err(|e| Status::from(ImagesError::Upload(e)))?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            spool
                .write_all(&chunk.data)
                .map_err(|e| Status::from(ImagesError::Upload(e)))?;
        }
        let store = self.store.clone();
        let details = blocking(move || {
            let file = spool.reopen().map_err(ImagesError::Upload)?;
            let loaded = store.load_archive(std::io::BufReader::new(file))?;
            loaded
                .iter()
                .map(|l| detail(&store, &store.inspect(&l.manifest.to_string())?))
                .collect()
        })
        .await?;
        self.changed_and_registered().await;
        Ok(details)
    }

    pub async fn list(&self) -> Result<Vec<ImageDetail>, ImagesError> {
        let store = self.store.clone();
        blocking(move || store.list()?.iter().map(|i| detail(&store, i)).collect()).await
    }

    pub async fn inspect(&self, name: String) -> Result<ImageDetail, ImagesError> {
        let store = self.store.clone();
        blocking(move || detail(&store, &store.inspect(&name)?)).await
    }

    pub async fn tag(&self, source: String, target: String) -> Result<ImageDetail, ImagesError> {
        let store = self.store.clone();
        let tagged = blocking(move || {
            let target = Reference::parse(&target)?;
            store.tag(&source, &target)?;
            detail(&store, &store.inspect(&target.to_string())?)
        })
        .await?;
        self.changed_and_registered().await;
        Ok(tagged)
    }

    /// Untags `name`, and removes the image once no reference is left,
    /// unless a task here runs it.
    pub async fn remove(self: &Arc<Self>, name: String) -> Result<ImageRemoveReply, ImagesError> {
        let me = self.clone();
        let reply = blocking(move || {
            let before = me.store.inspect(&name)?;
            let users = |d: &Digest| lock(&me.users).contains_key(d);
            let deleted = me.store.remove_if(&name, users).map_err(|e| match e {
                ImageError::InUse { .. } => ImagesError::InUse {
                    image: name.clone(),
                    tasks: lock(&me.users).get(&before.manifest).copied().unwrap_or(1),
                },
                e => e.into(),
            })?;
            let after = me.store.inspect(&before.manifest.to_string()).ok();
            let kept = after.map(|a| a.references).unwrap_or_default();
            Ok(ImageRemoveReply {
                untagged: before
                    .references
                    .iter()
                    .filter(|r| !kept.contains(r))
                    .map(|r| r.to_string())
                    .collect(),
                deleted: deleted.iter().map(|d| d.to_string()).collect(),
            })
        })
        .await?;
        self.changed_and_registered().await;
        Ok(reply)
    }

    /// The unpacked root of the image `reference` pinned at `digest`
    /// (resolved here when unpinned). A node lacking it fetches it from a
    /// cluster node in `holders`, else pulls it from its registry; with
    /// neither, docker's "No such image".
    pub async fn ensure(
        &self,
        reference: &str,
        digest: Option<&Digest>,
        holders: &[Holder],
        tls: Option<Arc<ClientConfig>>,
        auth: Option<&Credentials>,
    ) -> Result<(Digest, PathBuf), ImagesError> {
        let parsed = Reference::parse(reference)?;
        let local = |me: &Self| match digest {
            Some(d) => me.has_manifest(d).then(|| d.clone()),
            None => me.store.resolve(&parsed),
        };
        let digest = match local(self) {
            Some(d) => d,
            None => {
                let _one = self.fetching.lock().await;
                match local(self) {
                    Some(d) => d,
                    None => {
                        self.get(reference, &parsed, digest, holders, tls, auth)
                            .await?
                    }
                }
            }
        };
        let store = self.store.clone();
        let d = digest.clone();
        let root = blocking(move || Ok(store.rootfs(&d)?)).await?;
        Ok((digest, root))
    }

    /// Gets an image this node lacks: from the cluster first, then the
    /// registry.
    async fn get(
        &self,
        reference: &str,
        parsed: &Reference,
        digest: Option<&Digest>,
        holders: &[Holder],
        tls: Option<Arc<ClientConfig>>,
        auth: Option<&Credentials>,
    ) -> Result<Digest, ImagesError> {
        // Unpinned: the holders' manifest, as the catalogue resolved the
        // reference when the task was assigned.
        let want = digest.or_else(|| holders.iter().find_map(|h| h.digest.as_ref()));
        if let (Some(want), Some(tls)) = (want, tls) {
            let holders: Vec<Holder> = holders
                .iter()
                .filter(|h| h.digest.as_ref().is_none_or(|d| d == want))
                .cloned()
                .collect();
            match self.fetch_from(&holders, &tls, parsed, want).await {
                Ok(Some(())) => return Ok(want.clone()),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    image = reference,
                    error = %crate::swarm::chain(&e),
                    "no cluster node gave the image; trying its registry"
                ),
            }
        }
        let mut pinned = parsed.clone();
        if let Some(d) = digest {
            pinned.digest = Some(d.clone());
        }
        match self.registry.pull(&pinned, auth, &self.store).await {
            Ok(d) => {
                if pinned.digest.is_some() {
                    // Pulled by digest: the tag is recorded as well.
                    let store = self.store.clone();
                    let (r, m) = (parsed.clone(), d.clone());
                    blocking(move || Ok(store.register(&r, &m)?)).await?;
                }
                self.changed();
                Ok(d)
            }
            Err(e) => {
                let reason = crate::swarm::chain(&e);
                tracing::warn!(image = reference, error = %reason, "pulling the image");
                Err(ImagesError::NoSuchImage {
                    reference: reference.to_owned(),
                    reason,
                })
            }
        }
    }

    /// Whether the image is complete here: registered only once every blob
    /// arrived.
    fn has_manifest(&self, d: &Digest) -> bool {
        self.store.inspect(&d.to_string()).is_ok()
    }

    /// Tries each holder in turn; `None` when none had it.
    async fn fetch_from(
        &self,
        holders: &[Holder],
        tls: &Arc<ClientConfig>,
        reference: &Reference,
        manifest: &Digest,
    ) -> Result<Option<()>, ImagesError> {
        let mut last = None;
        for h in holders {
            match self.fetch_one(h, tls, reference, manifest).await {
                Ok(()) => return Ok(Some(())),
                Err(e) => {
                    tracing::warn!(node = %h.node_id, error = %crate::swarm::chain(&e), "image fetch failed; trying the next holder");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if !holders.is_empty() => Err(e),
            _ => Ok(None),
        }
    }

    async fn fetch_one(
        &self,
        h: &Holder,
        tls: &Arc<ClientConfig>,
        reference: &Reference,
        manifest: &Digest,
    ) -> Result<(), ImagesError> {
        let fail = |digest: &Digest, reason: String| ImagesError::Fetch {
            digest: digest.to_string(),
            node: h.node_id.clone(),
            reason,
        };
        let name = ServerName::try_from(h.node_id.clone())
            .map_err(|e| fail(manifest, format!("node id: {e}")))?;
        let channel = transport::channel(&h.addr, tls.clone(), name)
            .map_err(|e| fail(manifest, e.to_string()))?;
        let mut client = BlobsClient::new(channel);
        // The manifest first: it names the rest.
        self.fetch_blob(&mut client, manifest)
            .await
            .map_err(|r| fail(manifest, r))?;
        let store = self.store.clone();
        let m = manifest.clone();
        let wanted = blocking(move || Ok(store.blobs_of(&m)?)).await?;
        for desc in wanted {
            let d = Digest::from_oci(desc.digest()).map_err(|e| fail(manifest, e.to_string()))?;
            if !self.store.has_blob(&d) {
                self.fetch_blob(&mut client, &d)
                    .await
                    .map_err(|r| fail(&d, r))?;
            }
        }
        let store = self.store.clone();
        let (r, m) = (reference.clone(), manifest.clone());
        blocking(move || Ok(store.register(&r, &m)?)).await?;
        self.changed();
        Ok(())
    }

    /// Streams one blob into the store, verified as it is written.
    async fn fetch_blob(
        &self,
        client: &mut BlobsClient<tonic::transport::Channel>,
        digest: &Digest,
    ) -> Result<(), String> {
        if self.store.has_blob(digest) {
            return Ok(());
        }
        let mut stream = client
            .fetch(FetchBlobRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        // The store reads synchronously: a pipe from this task to its thread.
        // A bounded async channel: the sender awaits a slow disk rather
        // than blocking a runtime thread.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let store = self.store.clone();
        let d = digest.clone();
        let writer =
            tokio::task::spawn_blocking(move || store.write_blob(&d, ChannelReader::new(rx)));
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if tx.send(c.data).await.is_err() {
                        break;
                    }
                }
                Err(s) => {
                    failed = Some(s.message().to_owned());
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| e.to_string())?;
        if let Some(f) = failed {
            return Err(f);
        }
        written.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A blocking reader over chunks sent from an async task.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn detail(store: &ImageStore, i: &ImageInfo) -> Result<ImageDetail, ImagesError> {
    let mut config = String::new();
    if let Ok(mut f) = store.open_blob(&i.id) {
        use std::io::Read;
        // Shown as is; a config that is not text shows as nothing.
        let _ = f.read_to_string(&mut config);
    }
    Ok(ImageDetail {
        id: i.id.to_string(),
        manifest_digest: i.manifest.to_string(),
        references: i.references.iter().map(|r| r.to_string()).collect(),
        size: i.size,
        created: i.created.clone().unwrap_or_default(),
        os: i.os.clone(),
        architecture: i.architecture.clone(),
        config_json: config,
    })
}

/// The blob server other nodes fetch from.
#[derive(Clone)]
pub struct BlobServer {
    store: Arc<ImageStore>,
}

impl BlobServer {
    pub fn routes(images: &Images) -> tonic::service::Routes {
        tonic::service::Routes::new(BlobsServer::new(BlobServer {
            store: images.store.clone(),
        }))
    }
}

type BlobStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Blobs for BlobServer {
    type FetchStream = BlobStream;

    async fn fetch(&self, req: Request<FetchBlobRequest>) -> Result<Response<BlobStream>, Status> {
        // The TLS layer checked the chain; a node certificate is enough.
        let node = match req.extensions().get::<transport::PeerInfo>() {
            Some(transport::PeerInfo {
                identity: Some(id), ..
            }) => id.node_id().to_owned(),
            _ => {
                return Err(Status::permission_denied(
                    "image blobs are served to cluster nodes only: a node certificate is required",
                ));
            }
        };
        let digest = Digest::parse(&req.into_inner().digest)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let file = match self.store.open_blob(&digest) {
            Ok(f) => f,
            Err(ImageError::NotFound { .. }) => {
                return Err(Status::not_found(format!("no blob {digest} on this node")));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        tracing::debug!(%node, %digest, "serving an image blob");
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || send_file(file, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn send_file(mut file: std::fs::File, tx: mpsc::Sender<Result<BlobChunk, Status>>) {
    use std::io::Read;
    loop {
        let mut data = vec![0; CHUNK];
        match file.read(&mut data) {
            Ok(0) => return,
            Ok(n) => {
                data.truncate(n);
                if tx.blocking_send(Ok(BlobChunk { data })).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _gone = tx.blocking_send(Err(Status::internal(format!("reading blob: {e}"))));
                return;
            }
        }
    }
}

/// How often the catalogue hears this node's images even with no change:
/// a manager that lost them (a new leader's snapshot) learns them again.
const REGISTER_EVERY: Duration = Duration::from_secs(60);
/// Wait before trying the managers again after none answered.
const REGISTER_RETRY: Duration = Duration::from_secs(2);

impl Images {
    /// Tells the registration loop the store changed; the change's number.
    pub fn changed(&self) -> u64 {
        let mut number = 0;
        self.catalogue.changes.send_modify(|n| {
            *n += 1;
            number = *n;
        });
        number
    }

    /// As [`Images::changed`], then waits until the catalogue holds the
    /// change, if this node is in a swarm, for [`REGISTER_WAIT`] at most.
    async fn changed_and_registered(&self) {
        let number = self.changed();
        if self.catalogue.changes.receiver_count() == 0 {
            return;
        }
        let mut registered = self.catalogue.registered.subscribe();
        let heard = registered.wait_for(|r| *r >= number);
        if tokio::time::timeout(REGISTER_WAIT, heard).await.is_err() {
            tracing::warn!(
                "the managers have not acknowledged this node's images within {REGISTER_WAIT:?}; \
                 services created now may not find them here until they do"
            );
        }
    }

    /// What the catalogue should hold for this node: one record per reference.
    async fn records(&self) -> Result<Vec<ImageRecord>, ImagesError> {
        let store = self.store.clone();
        let infos = blocking(move || Ok(store.list()?)).await?;
        Ok(infos
            .iter()
            .flat_map(|i| {
                i.references.iter().map(|r| ImageRecord {
                    reference: r.to_string(),
                    digest: i.manifest.to_string(),
                    size: i.size,
                })
            })
            .collect())
    }
}

/// Keeps the cluster's image catalogue current with this node's store: at
/// start, after every change, and every [`REGISTER_EVERY`].
pub async fn register_loop(images: Arc<Images>, link: crate::link::ManagerLink) {
    let catalogue = &images.catalogue;
    let mut changes = catalogue.changes.subscribe();
    let mut sent: BTreeSet<String> = BTreeSet::new();
    loop {
        // Read before listing: a change after this is sent next round.
        let number = *changes.borrow_and_update();
        let records = match images.records().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %crate::swarm::chain(&e), "listing images for the catalogue");
                Vec::new()
            }
        };
        let now: BTreeSet<String> = records.iter().map(|r| r.reference.clone()).collect();
        let removed: Vec<String> = sent.difference(&now).cloned().collect();
        let req = RegisterImagesRequest {
            images: records,
            removed,
        };
        let mut done = false;
        for (addr, mut client) in link.dispatchers() {
            match client.register_images(req.clone()).await {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(s) => tracing::debug!(%addr, error = %s.message(), "registering images"),
            }
        }
        let wait = if done {
            sent = now;
            catalogue.acknowledge(number);
            REGISTER_EVERY
        } else {
            REGISTER_RETRY
        };
        // A change during the call marked `changes` seen-not: the next
        // round starts at once.
        if let Ok(Err(_)) = tokio::time::timeout(wait, changes.changed()).await {
            return; // The store is gone.
        }
    }
}

/// How long `service create` waits for a registry to name a digest.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The manager's way to pin an image the catalogue does not know: ask its
/// registry, as the docker CLI does before swarm stores a service.
pub fn resolver(images: Arc<Images>) -> shoal_controlplane::manager::ResolveImage {
    Arc::new(move |reference: String, auth: String| {
        let images = images.clone();
        Box::pin(async move {
            let parsed = Reference::parse(&reference).ok()?;
            let auth = match registry_auth(&auth) {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(%reference, error = %e, "unreadable registry credentials");
                    None
                }
            };
            let asked = images.registry.resolve(&parsed, auth.as_ref());
            match tokio::time::timeout(RESOLVE_TIMEOUT, asked).await {
                Ok(Ok(d)) => Some(d.to_string()),
                Ok(Err(e)) => {
                    tracing::info!(%reference, error = %crate::swarm::chain(&e), "the registry did not resolve the image");
                    None
                }
                Err(_) => None,
            }
        })
    })
}

/// docker's X-Registry-Auth (what `--with-registry-auth` sends): base64url
/// (or standard base64) of `{"username", "password", "serveraddress"}`.
/// Empty: no credentials.
pub fn registry_auth(encoded: &str) -> Result<Option<Credentials>, ImagesError> {
    use base64::Engine;
    let encoded = encoded.trim();
    if encoded.is_empty() {
        return Ok(None);
    }
    let bad = |reason: &str| ImagesError::RegistryAuth {
        reason: reason.to_owned(),
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let json = engines
        .iter()
        .find_map(|e| e.decode(encoded).ok())
        .ok_or_else(|| bad("not base64"))?;
    #[derive(serde::Deserialize)]
    struct Auth {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
    }
    let auth: Auth = serde_json::from_slice(&json).map_err(|_| bad("not docker's auth JSON"))?;
    if auth.username.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(auth.username, auth.password)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn registry_auth_reads_dockers_header() {
        let json = r#"{"username":"lab","password":"p@ss","serveraddress":"reg:5000"}"#;
        let enc = base64::engine::general_purpose::URL_SAFE.encode(json);
        let c = registry_auth(&enc).expect("decodes").expect("credentials");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("lab", "p@ss"));
        assert!(registry_auth("").expect("empty").is_none());
        assert!(registry_auth("%%%").is_err());
        let not_json = base64::engine::general_purpose::STANDARD.encode("user:pass");
        assert!(registry_auth(&not_json).is_err());
    }

    #[tokio::test]
    async fn a_change_answers_once_the_catalogue_holds_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let images = Images::open(dir.path(), RegistryOptions::default()).expect("store");
        let short = Duration::from_millis(100);
        // Outside a swarm there is no catalogue to wait for.
        tokio::time::timeout(short, images.changed_and_registered())
            .await
            .expect("answers at once outside a swarm");
        // In one: not before the registration loop's acknowledgement of
        // this change; an earlier round's does not count.
        let _registration_loop = images.catalogue.changes.subscribe();
        let waiting = images.changed_and_registered();
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(short, &mut waiting).await.is_err());
        let number = *images.catalogue.changes.borrow();
        images.catalogue.acknowledge(number - 1);
        assert!(tokio::time::timeout(short, &mut waiting).await.is_err());
        images.catalogue.acknowledge(number);
        tokio::time::timeout(short, waiting)
            .await
            .expect("answers once acknowledged");
    }

    proptest! {
        #[test]
        fn registry_auth_never_panics(s in ".{0,200}") {
            let _ = registry_auth(&s);
        }
    }
}
