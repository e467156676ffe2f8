//! `Client`: the distribution API calls (manifests, blobs, uploads), the
//! auth dance, redirects, and the hand-over to the image store.

use std::{
    collections::HashMap,
    io::{self, Read},
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use shoal_image::{Digest, ImageError, ImageStore, Reference};

use crate::{
    Credentials, Options, RegistryError,
    auth::{self, Challenge},
    location,
    manifest::{self, Kind, Unusable},
    transport::{self, Body, Transport},
};

/// Redirects followed before giving up (a loop, or a misconfigured CDN).
const MAX_REDIRECTS: usize = 5;
/// How much of an error body is quoted.
const EXCERPT: usize = 512;
/// Token endpoint answers are small; more is not one.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Blob chunks in flight between the network and the store's writer.
const CHUNKS_IN_FLIGHT: usize = 16;
/// Bounds on a tags listing: a registry that pages forever is broken.
const MAX_TAG_PAGES: usize = 1000;
const MAX_TAGS_PAGE_BYTES: usize = 16 * 1024 * 1024;
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A registry client. Cheap to share (`&Client` from many tasks); keeps
/// the last token per repository so a pull asks for one once.
pub struct Client {
    options: Options,
    transport: Transport,
    /// (`registry/repository`, credentials) → the `Authorization` value
    /// that last worked. Keyed by credentials too, so a call without them
    /// never rides on a token another call's credentials got.
    authorizations: Mutex<HashMap<AuthKey, HeaderValue>>,
}

type AuthKey = (String, Option<Credentials>);

/// What a request sends; rebuilt for a retry after a challenge.
enum Payload {
    Empty,
    Bytes(Bytes),
    Blob {
        store: Arc<ImageStore>,
        digest: Digest,
    },
}

/// The repository a call is about and how to reach its registry.
struct Repo<'a> {
    reference: &'a Reference,
    /// `http://host:port` or `https://host`.
    base: String,
}

impl Repo<'_> {
    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.reference.repository)
    }

    fn key(&self, auth: Option<&Credentials>) -> AuthKey {
        (self.reference.name(), auth.cloned())
    }
}

impl Client {
    pub fn new(options: Options) -> Client {
        let transport = Transport::new(&options.ca_bundle, options.timeout);
        Client {
            options,
            transport,
            authorizations: Mutex::new(HashMap::new()),
        }
    }

    /// The digest of the manifest `reference` names, linux/amd64's for a
    /// multi-platform image: the one `pull` would register.
    pub async fn resolve(
        &self,
        reference: &Reference,
        auth: Option<&Credentials>,
    ) -> Result<Digest, RegistryError> {
        let repo = self.repo(reference);
        // A HEAD answers without a body for a single-platform tag; an index
        // needs its body to choose from.
        let url = repo.url(&format!("manifests/{}", target(reference)));
        let (url, resp) = self
            .call(
                &repo,
                auth,
                Method::HEAD,
                url,
                accept_manifests(),
                Payload::Empty,
                true,
            )
            .await?;
        if resp.status().is_success() {
            let single = matches!(
                content_type(resp.headers()).as_deref(),
                Some(manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST)
            );
            let digest = header_digest(resp.headers());
            match (&reference.digest, digest) {
                // By digest, the answer is only whether it exists.
                (Some(d), _) if single => return Ok(d.clone()),
                (None, Some(d)) if single => return Ok(d),
                _ => {}
            }
        } else {
            let status = resp.status();
            return Err(self.status_error(&repo, &url, status, resp).await);
        }
        let (digest, _) = self.platform_manifest(&repo, auth).await?;
        Ok(digest)
    }

    /// Pulls `reference` into `store`: its (linux/amd64) manifest, config
    /// and every layer the store lacks, each verified as it is written,
    /// then registers it. Returns the manifest digest. If any blob fails,
    /// nothing is registered (blobs already written stay, unreferenced).
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: Option<&Credentials>,
        store: &Arc<ImageStore>,
    ) -> Result<Digest, RegistryError> {
        let repo = self.repo(reference);
        let (digest, body) = self.platform_manifest(&repo, auth).await?;
        let url = repo.url(&format!("manifests/{digest}"));
        let blobs = manifest::blobs(&body).map_err(|u| unusable(reference, &url, u))?;
        {
            let (store, digest) = (store.clone(), digest.clone());
            blocking(move || store.write_blob(&digest, body.as_slice()).map(drop)).await?;
        }
        for (blob, size) in blobs {
            let present = {
                let (store, blob) = (store.clone(), blob.clone());
                blocking(move || Ok(store.has_blob(&blob))).await?
            };
            if !present {
                self.fetch_blob(&repo, auth, &blob, size, store).await?;
            }
        }
        // A digest reference may name an index: the store keeps the
        // manifest it got, under its own digest.
        let register = match &reference.digest {
            Some(_) => Reference {
                tag: None,
                digest: Some(digest.clone()),
                ..reference.clone()
            },
            None => reference.clone(),
        };
        {
            let (store, digest) = (store.clone(), digest.clone());
            blocking(move || store.register(&register, &digest).map(drop)).await?;
        }
        tracing::info!(reference = %reference, manifest = %digest, "pulled");
        Ok(digest)
    }

    /// Pushes the image `manifest` from `store` as `reference` (by tag, or
    /// by digest if it has none): each blob the registry lacks in one
    /// monolithic upload, then the manifest.
    pub async fn push(
        &self,
        store: &Arc<ImageStore>,
        manifest: &Digest,
        reference: &Reference,
        auth: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        let repo = self.repo(reference);
        let descriptors = {
            let (store, manifest) = (store.clone(), manifest.clone());
            blocking(move || store.blobs_of(&manifest)).await?
        };
        let mut blobs = Vec::new();
        for d in &descriptors {
            blobs.push((
                Digest::from_oci(d.digest())?,
                d.size(),
                d.media_type().to_string(),
            ));
        }
        let Some(((_, _, manifest_type), layers)) = blobs.split_first() else {
            return Err(ImageError::BlobMissing {
                digest: manifest.clone(),
            }
            .into());
        };
        for (digest, size, _) in layers {
            self.upload_blob(&repo, auth, store, digest, *size).await?;
        }
        let body = {
            let (store, manifest) = (store.clone(), manifest.clone());
            blocking(move || {
                let mut bytes = Vec::new();
                store
                    .open_blob(&manifest)?
                    .read_to_end(&mut bytes)
                    .map_err(|source| ImageError::Io {
                        what: "reading manifest",
                        path: store.root().to_path_buf(),
                        source,
                    })?;
                Ok(bytes)
            })
            .await?
        };
        let target = match (&reference.tag, &reference.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) if d == manifest => d.to_string(),
            (None, Some(d)) => {
                return Err(ImageError::DigestMismatch {
                    expected: d.clone(),
                    actual: manifest.clone(),
                }
                .into());
            }
            (None, None) => "latest".to_owned(),
        };
        let url = repo.url(&format!("manifests/{target}"));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header_value(manifest_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let (url, resp) = self
            .call(
                &repo,
                auth,
                Method::PUT,
                url,
                headers,
                Payload::Bytes(body.into()),
                false,
            )
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(self.status_error(&repo, &url, status, resp).await);
        }
        if let Some(d) = header_digest(resp.headers())
            && d != *manifest
        {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: manifest.clone(),
                actual: d,
            });
        }
        tracing::info!(reference = %reference, manifest = %manifest, "pushed");
        Ok(())
    }

    /// The repository's tags (`GET /v2/<name>/tags/list`), following the
    /// `Link` pages; `page_size` asks for pages of that many (`n=`).
    pub async fn tags(
        &self,
        repository: &Reference,
        auth: Option<&Credentials>,
        page_size: Option<u32>,
    ) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let repo = self.repo(repository);
        let mut url = repo.url("tags/list");
        if let Some(n) = page_size {
            url = location::with_query(&url, "n", &n.to_string());
        }
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let (answered, mut resp) = self
                .call(
                    &repo,
                    auth,
                    Method::GET,
                    url,
                    HeaderMap::new(),
                    Payload::Empty,
                    true,
                )
                .await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    reference: repository.familiar(),
                });
            }
            if !status.is_success() {
                return Err(self.status_error(&repo, &answered, status, resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(location::next_link)
                .and_then(|l| location::resolve(&answered, &l));
            let body = self
                .transport
                .read_body(resp.body_mut(), MAX_TAGS_PAGE_BYTES)
                .await
                .map_err(|source| self.connect_error(&answered, source))?;
            let page: Page =
                serde_json::from_slice(&body).map_err(|e| RegistryError::InvalidResponse {
                    url: answered.clone(),
                    reason: format!("tags list: {e}"),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => url = next,
                None => return Ok(tags),
            }
        }
        Err(RegistryError::InvalidResponse {
            url: repo.url("tags/list"),
            reason: format!("more than {MAX_TAG_PAGES} pages of tags"),
        })
    }

    // ---- manifests ----

    /// The manifest to pull, with its verified body: the reference's own,
    /// or the linux/amd64 entry of the index it names.
    async fn platform_manifest(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
    ) -> Result<(Digest, Vec<u8>), RegistryError> {
        let reference = repo.reference;
        let (digest, kind, body) = self
            .fetch_manifest(repo, auth, &target(reference), reference.digest.as_ref())
            .await?;
        if kind == Kind::Manifest {
            return Ok((digest, body));
        }
        let url = repo.url(&format!("manifests/{digest}"));
        let chosen = manifest::choose_platform(&body)
            .map_err(|u| unusable(reference, &url, u))?
            .ok_or_else(|| RegistryError::NoMatchingPlatform {
                reference: reference.familiar(),
                index: digest.clone(),
            })?;
        let (digest, kind, body) = self
            .fetch_manifest(repo, auth, &chosen.to_string(), Some(&chosen))
            .await?;
        match kind {
            Kind::Manifest => Ok((digest, body)),
            Kind::Index => Err(RegistryError::UnsupportedMediaType {
                reference: reference.familiar(),
                media_type: "an image index inside an image index".into(),
            }),
        }
    }

    /// GETs one manifest and checks its sha256 against the digest asked
    /// for or, by tag, the registry's `Docker-Content-Digest`.
    async fn fetch_manifest(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
        target: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, Kind, Vec<u8>), RegistryError> {
        let url = repo.url(&format!("manifests/{target}"));
        let (url, mut resp) = self
            .call(
                repo,
                auth,
                Method::GET,
                url,
                accept_manifests(),
                Payload::Empty,
                true,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(repo, &url, status, resp).await);
        }
        let declared = header_digest(resp.headers());
        let content_type = content_type(resp.headers());
        let body = self
            .transport
            .read_body(resp.body_mut(), manifest::MAX_MANIFEST_BYTES)
            .await
            .map_err(|source| self.connect_error(&url, source))?;
        let actual = Digest::of(&body);
        if let Some(expected) = expected.or(declared.as_ref())
            && *expected != actual
        {
            return Err(RegistryError::DigestMismatch {
                url,
                expected: expected.clone(),
                actual,
            });
        }
        let kind = manifest::kind(content_type.as_deref(), &body)
            .map_err(|u| unusable(repo.reference, &url, u))?;
        Ok((actual, kind, body))
    }

    // ---- blobs ----

    /// Streams one blob into the store, which keeps it only if its sha256
    /// is `digest`. More bytes than the manifest's `size` stop it early: a
    /// registry cannot fill the disk before the digest check.
    async fn fetch_blob(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
        digest: &Digest,
        size: Option<u64>,
        store: &Arc<ImageStore>,
    ) -> Result<(), RegistryError> {
        let url = repo.url(&format!("blobs/{digest}"));
        let (url, mut resp) = self
            .call(
                repo,
                auth,
                Method::GET,
                url,
                HeaderMap::new(),
                Payload::Empty,
                true,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(repo, &url, status, resp).await);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let writer = {
            let (store, digest) = (store.clone(), digest.clone());
            tokio::task::spawn_blocking(move || {
                store.write_blob(
                    &digest,
                    ChannelReader {
                        rx,
                        chunk: Bytes::new(),
                    },
                )
            })
        };
        let mut network_error = None;
        let mut received = 0u64;
        loop {
            match self.transport.next_chunk(resp.body_mut()).await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if let Some(size) = size
                        && received > size
                    {
                        let _ignored = tx.send(Err(io::Error::other("blob too long"))).await;
                        network_error = Some(RegistryError::InvalidResponse {
                            url: url.clone(),
                            reason: format!(
                                "blob {digest} is longer than the {size} bytes its manifest says"
                            ),
                        });
                        break;
                    }
                    // Gone: the writer failed, and says why below.
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Fails the writer, so it keeps nothing.
                    let _ignored = tx.send(Err(io::Error::other("download failed"))).await;
                    network_error = Some(self.connect_error(&url, e));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| ImageError::Io {
            what: "writing blob (the writer thread failed)",
            path: store.root().to_path_buf(),
            source: io::Error::other(e),
        })?;
        if let Some(e) = network_error {
            return Err(e);
        }
        match written {
            Ok(size) => {
                tracing::debug!(blob = %digest, size, "blob fetched");
                Ok(())
            }
            Err(ImageError::DigestMismatch { expected, actual }) => {
                Err(RegistryError::DigestMismatch {
                    url,
                    expected,
                    actual,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads one blob unless the registry has it.
    async fn upload_blob(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
        store: &Arc<ImageStore>,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let url = repo.url(&format!("blobs/{digest}"));
        let (url, resp) = self
            .call(
                repo,
                auth,
                Method::HEAD,
                url,
                HeaderMap::new(),
                Payload::Empty,
                true,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            status => return Err(self.status_error(repo, &url, status, resp).await),
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        let (url, resp) = self
            .call(
                repo,
                auth,
                Method::POST,
                repo.url("blobs/uploads/"),
                headers,
                Payload::Empty,
                false,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let status = resp.status();
            return Err(self.status_error(repo, &url, status, resp).await);
        }
        let upload = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| location::resolve(&url, l))
            .ok_or_else(|| RegistryError::InvalidResponse {
                url: url.clone(),
                reason: "202 Accepted without a usable Location for the upload".into(),
            })?;
        let put = location::with_query(&upload, "digest", &auth::query_escape(&digest.to_string()));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        let payload = Payload::Blob {
            store: store.clone(),
            digest: digest.clone(),
        };
        let (url, resp) = self
            .call(repo, auth, Method::PUT, put, headers, payload, false)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(self.status_error(repo, &url, status, resp).await);
        }
        tracing::debug!(blob = %digest, size, "blob pushed");
        Ok(())
    }

    // ---- requests, auth, redirects ----

    fn repo<'a>(&self, reference: &'a Reference) -> Repo<'a> {
        let host = match reference.registry.as_str() {
            // docker.io is a name; the API is served here.
            shoal_image::reference::DEFAULT_REGISTRY => "registry-1.docker.io",
            other => other,
        };
        let scheme = if self.plain_http(&reference.registry) {
            "http"
        } else {
            "https"
        };
        Repo {
            reference,
            base: format!("{scheme}://{host}"),
        }
    }

    fn plain_http(&self, registry: &str) -> bool {
        if self
            .options
            .insecure_registries
            .iter()
            .any(|r| r == registry)
        {
            return true;
        }
        let host = match registry.rsplit_once(':') {
            Some((h, port)) if !port.contains(']') => h,
            _ => registry,
        };
        host == "localhost"
            || host == "[::1]"
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Sends a request, answering one auth challenge and following
    /// redirects (GET/HEAD) when `follow`. Returns the URL that answered
    /// and its response; a 401 that survives the challenge is `Unauthorized`.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
        method: Method,
        url: String,
        headers: HeaderMap,
        payload: Payload,
        follow: bool,
    ) -> Result<(String, Response<Incoming>), RegistryError> {
        let registry_authority = location::authority(&repo.base);
        let mut url = url;
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            // Credentials go only to the registry itself, never to where
            // it redirects (a CDN, an object store).
            let same_host = location::authority(&url) == registry_authority;
            let authorization = same_host.then(|| self.authorization(repo, auth)).flatten();
            let req = self
                .request(&method, &url, &headers, &payload, authorization)
                .await?;
            let resp = self
                .transport
                .send(req)
                .await
                .map_err(|source| self.connect_error(&url, source))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(auth::parse_www_authenticate);
                if let Some(challenge) = challenge {
                    self.answer(repo, auth, challenge).await?;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(RegistryError::Unauthorized {
                    registry: repo.reference.registry.clone(),
                });
            }
            if follow && status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| location::resolve(&url, l));
                if let Some(next) = next
                    && redirects < MAX_REDIRECTS
                {
                    redirects += 1;
                    tracing::debug!(from = %url, to = %next, "following a redirect");
                    url = next;
                    continue;
                }
                return Err(RegistryError::InvalidResponse {
                    url,
                    reason: format!(
                        "{status} without a usable Location, or more than {MAX_REDIRECTS} redirects"
                    ),
                });
            }
            return Ok((url, resp));
        }
    }

    async fn request(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        payload: &Payload,
        authorization: Option<HeaderValue>,
    ) -> Result<Request<Body>, RegistryError> {
        let body = match payload {
            Payload::Empty => transport::empty(),
            Payload::Bytes(b) => transport::full(b.clone()),
            Payload::Blob { store, digest } => {
                let file = {
                    let (store, digest) = (store.clone(), digest.clone());
                    blocking(move || store.open_blob(&digest)).await?
                };
                transport::from_file(tokio::fs::File::from_std(file))
            }
        };
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(h) = builder.headers_mut() {
            h.extend(headers.clone());
            h.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("shoal/", env!("CARGO_PKG_VERSION"))),
            );
            if let Some(a) = authorization {
                h.insert(header::AUTHORIZATION, a);
            }
        }
        builder
            .body(body)
            .map_err(|e| RegistryError::InvalidResponse {
                url: url.to_owned(),
                reason: format!("cannot make a request of this URL: {e}"),
            })
    }

    fn authorization(&self, repo: &Repo<'_>, auth: Option<&Credentials>) -> Option<HeaderValue> {
        self.authorizations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&repo.key(auth))
            .cloned()
    }

    /// Answers a challenge: basic credentials, or a token from the realm.
    async fn answer(
        &self,
        repo: &Repo<'_>,
        auth: Option<&Credentials>,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        let unauthorized = || RegistryError::Unauthorized {
            registry: repo.reference.registry.clone(),
        };
        let value = match challenge {
            Challenge::Basic => auth.map(auth::basic).ok_or_else(unauthorized)?,
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:pull", repo.reference.repository));
                let url = auth::token_url(&realm, service.as_deref(), Some(&scope));
                let mut req = Request::builder().method(Method::GET).uri(&url);
                if let (Some(h), Some(c)) = (req.headers_mut(), auth) {
                    h.insert(header::AUTHORIZATION, header_value(&auth::basic(c)));
                }
                let req =
                    req.body(transport::empty())
                        .map_err(|e| RegistryError::InvalidResponse {
                            url: url.clone(),
                            reason: format!("unusable token realm: {e}"),
                        })?;
                let mut resp = self
                    .transport
                    .send(req)
                    .await
                    .map_err(|source| self.connect_error(&url, source))?;
                match resp.status() {
                    s if s.is_success() => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(unauthorized()),
                    status => return Err(self.status_error(repo, &url, status, resp).await),
                }
                let body = self
                    .transport
                    .read_body(resp.body_mut(), MAX_TOKEN_BYTES)
                    .await
                    .map_err(|source| self.connect_error(&url, source))?;
                let token = auth::parse_token_response(&body).ok_or_else(|| {
                    RegistryError::InvalidResponse {
                        url: url.clone(),
                        reason: "no token or access_token in the token response".into(),
                    }
                })?;
                format!("Bearer {token}")
            }
        };
        let value = HeaderValue::from_str(&value).map_err(|_| RegistryError::InvalidResponse {
            url: repo.base.clone(),
            reason: "a token or credentials that cannot go in a header".into(),
        })?;
        self.authorizations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(repo.key(auth), value);
        Ok(())
    }

    // ---- errors ----

    async fn status_error(
        &self,
        repo: &Repo<'_>,
        url: &str,
        status: StatusCode,
        mut resp: Response<Incoming>,
    ) -> RegistryError {
        let is_manifest = url.contains("/manifests/");
        let body_excerpt = self.transport.excerpt(resp.body_mut(), EXCERPT).await;
        // MANIFEST_UNKNOWN, NAME_UNKNOWN, or a HEAD's bare 404.
        if status == StatusCode::NOT_FOUND && is_manifest {
            return RegistryError::NotFound {
                reference: repo.reference.familiar(),
            };
        }
        if status == StatusCode::FORBIDDEN {
            return RegistryError::Unauthorized {
                registry: repo.reference.registry.clone(),
            };
        }
        RegistryError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            body_excerpt,
        }
    }

    fn connect_error(&self, url: &str, source: crate::error::BoxError) -> RegistryError {
        RegistryError::Connect {
            registry: location::authority(url).unwrap_or_else(|| url.to_owned()),
            source,
        }
    }
}

/// The tag or digest a manifest URL ends with.
fn target(reference: &Reference) -> String {
    match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_owned(),
    }
}

fn accept_manifests() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
    h
}

fn header_value(s: &str) -> HeaderValue {
    // Our own media types and base64: always valid header text.
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

fn content_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

fn header_digest(h: &HeaderMap) -> Option<Digest> {
    h.get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok())
}

fn unusable(reference: &Reference, url: &str, u: Unusable) -> RegistryError {
    match u {
        Unusable::MediaType(media_type) => RegistryError::UnsupportedMediaType {
            reference: reference.familiar(),
            media_type,
        },
        Unusable::Malformed(reason) => RegistryError::InvalidResponse {
            url: url.to_owned(),
            reason,
        },
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Io {
            what: "running a store operation (its thread failed)",
            path: std::path::PathBuf::new(),
            source: io::Error::other(e),
        })?
        .map_err(RegistryError::from)
}

/// The blocking side of a download: chunks from the network task, an
/// error if the download failed, EOF when it is complete.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
