//! Against a small in-process registry on 127.0.0.1 that does what Debian's
//! `docker-registry` will not: Bearer token auth, redirects of blobs to
//! another host, Docker v2 manifests and manifest lists, and lies (a wrong
//! `Docker-Content-Digest`, a corrupt layer, an overlong one). Its token
//! realm is served over TLS, with a certificate of a CA made here.

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Result, ensure};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use shoal_image::{Digest, ImageStore, Reference, fixtures};
use shoal_registry::{Client, Credentials, Options, RegistryError};

const TOKEN: &str = "good-token";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Default)]
struct Fake {
    addr: Option<SocketAddr>,
    /// Where the challenge sends clients for a token.
    realm: String,
    /// tag or digest → (content type, body, Docker-Content-Digest sent).
    manifests: HashMap<String, (String, Vec<u8>, String)>,
    blobs: HashMap<String, Vec<u8>>,
    /// The Authorization header of each request the "CDN" got.
    cdn_auth: Mutex<Vec<Option<String>>>,
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn handle(fake: &Fake, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let addr = fake
        .addr
        .unwrap_or_else(|| unreachable!("set before serving"));
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(digest) = path.strip_prefix("/cdn/") {
        fake.cdn_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(auth);
        return match fake.blobs.get(digest) {
            Some(b) => reply(StatusCode::OK, b.clone()),
            None => reply(StatusCode::NOT_FOUND, ""),
        };
    }
    if path == "/token" {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        return if auth.as_deref() == Some(expected.as_str()) {
            reply(StatusCode::OK, format!(r#"{{"access_token":"{TOKEN}"}}"#))
        } else {
            reply(StatusCode::UNAUTHORIZED, r#"{"details":"bad credentials"}"#)
        };
    }
    let Some(rest) = path.strip_prefix("/v2/x/") else {
        return reply(StatusCode::NOT_FOUND, "");
    };
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        );
        let challenge = format!(
            r#"Bearer realm="{}",service="fake",scope="repository:x:pull""#,
            fake.realm
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            challenge.parse().unwrap_or_else(|_| unreachable!()),
        );
        return r;
    }
    if rest == "tags/list" {
        // Two pages, the second linked from the first.
        let query = req.uri().query().unwrap_or_default();
        if query.contains("last=a") {
            return reply(StatusCode::OK, r#"{"name":"x","tags":["b"]}"#);
        }
        let mut r = reply(StatusCode::OK, r#"{"name":"x","tags":["a"]}"#);
        r.headers_mut().insert(
            header::LINK,
            r#"</v2/x/tags/list?last=a&n=1>; rel="next""#
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        return r;
    }
    if let Some(target) = rest.strip_prefix("manifests/") {
        return match fake.manifests.get(target) {
            Some((ct, body, digest)) => {
                let mut r = reply(StatusCode::OK, body.clone());
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    ct.parse().unwrap_or_else(|_| unreachable!()),
                );
                h.insert(
                    "docker-content-digest",
                    digest.parse().unwrap_or_else(|_| unreachable!()),
                );
                r
            }
            None => reply(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            ),
        };
    }
    if let Some(digest) = rest.strip_prefix("blobs/") {
        // To another host name of the same server: the client must not
        // send the registry's token there.
        let mut r = reply(StatusCode::TEMPORARY_REDIRECT, "");
        let to = format!("http://localhost:{}/cdn/{digest}", addr.port());
        r.headers_mut().insert(
            header::LOCATION,
            to.parse().unwrap_or_else(|_| unreachable!()),
        );
        return r;
    }
    reply(StatusCode::NOT_FOUND, "")
}

/// Serves `handle` on one connection, plain or TLS.
async fn serve<S>(fake: Arc<Fake>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let r = handle(&fake, &req);
        async move { Ok::<_, Infallible>(r) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        eprintln!("fake registry connection: {e}");
    }
}

/// A CA (its PEM, for the client's bundle) and a server config for
/// `localhost` with a certificate it signed.
fn tls_server() -> Result<(String, rustls::ServerConfig)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shoal fake registry CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_ca_cert_der(ca.der(), &ca_key)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )?;
    Ok((ca.pem(), config))
}

fn read_blob(store: &ImageStore, d: &Digest) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    store.open_blob(d)?.read_to_end(&mut b)?;
    Ok(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_registry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = ImageStore::open(&dir.path().join("source"))?;
    let mut archive = Vec::new();
    let oci = fixtures::busybox().write_oci_layout(&mut archive)?;
    source.load_archive(archive.as_slice())?;
    let blobs = source.blobs_of(&oci)?;
    let config = Digest::from_oci(blobs[1].digest())?;
    let layer = Digest::from_oci(blobs[2].digest())?;

    let mut fake = Fake::default();
    for d in [&config, &layer] {
        fake.blobs.insert(d.to_string(), read_blob(&source, d)?);
    }
    // The same image as docker pushes it.
    let docker = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config.to_string(), "size": blobs[1].size() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                     "digest": layer.to_string(), "size": blobs[2].size() }],
    }))?;
    let docker_digest = Digest::of(&docker);
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            { "mediaType": DOCKER_MANIFEST, "digest": Digest::of(b"arm").to_string(), "size": 3,
              "platform": { "architecture": "arm64", "os": "linux" } },
            { "mediaType": DOCKER_MANIFEST, "digest": docker_digest.to_string(), "size": docker.len(),
              "platform": { "architecture": "amd64", "os": "linux" } },
        ],
    }))?;
    // A layer whose bytes are not its digest.
    let corrupt_layer = Digest::of(b"the real layer");
    fake.blobs
        .insert(corrupt_layer.to_string(), b"something else".to_vec());
    let corrupt = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config.to_string(), "size": blobs[1].size() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                     "digest": corrupt_layer.to_string(), "size": 14 }],
    }))?;
    // A layer that goes on past the size its manifest gives.
    let long_layer = Digest::of(b"long");
    fake.blobs
        .insert(long_layer.to_string(), vec![b'x'; 100_000]);
    let long = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config.to_string(), "size": blobs[1].size() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                     "digest": long_layer.to_string(), "size": 4 }],
    }))?;
    let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"old","fsLayers":[]}"#.to_vec();
    let m =
        |ct: &str, body: &[u8], digest: &Digest| (ct.to_owned(), body.to_vec(), digest.to_string());
    fake.manifests
        .insert("docker".into(), m(DOCKER_MANIFEST, &docker, &docker_digest));
    fake.manifests.insert(
        docker_digest.to_string(),
        m(DOCKER_MANIFEST, &docker, &docker_digest),
    );
    fake.manifests
        .insert("multi".into(), m(DOCKER_LIST, &list, &Digest::of(&list)));
    fake.manifests.insert(
        "lying".into(),
        m(DOCKER_MANIFEST, &docker, &Digest::of(b"other")),
    );
    fake.manifests.insert(
        "corrupt".into(),
        m(DOCKER_MANIFEST, &corrupt, &Digest::of(&corrupt)),
    );
    fake.manifests
        .insert("long".into(), m(DOCKER_MANIFEST, &long, &Digest::of(&long)));
    fake.manifests.insert(
        "old".into(),
        m(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &schema1,
            &Digest::of(&schema1),
        ),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    fake.addr = Some(listener.local_addr()?);
    fake.realm = format!(
        "https://localhost:{}/token",
        tls_listener.local_addr()?.port()
    );
    let addr = listener.local_addr()?;
    let fake = Arc::new(fake);
    let server = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(fake.clone(), stream));
            }
        })
    };
    let (ca_pem, tls_config) = tls_server()?;
    let tls_server = {
        let fake = fake.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
        tokio::spawn(async move {
            while let Ok((stream, _)) = tls_listener.accept().await {
                let (fake, acceptor) = (fake.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => serve(fake, tls).await,
                        Err(e) => eprintln!("fake token server TLS: {e}"),
                    }
                });
            }
        })
    };
    let ca_bundle = dir.path().join("ca.pem");
    std::fs::write(&ca_bundle, ca_pem)?;

    // The system's CAs do not know the token server's.
    let untrusting = Client::new(Options::default());
    let err = untrusting
        .resolve(
            &Reference::parse(&format!("{addr}/x:docker"))?,
            Some(&Credentials::new("u", "p")),
        )
        .await
        .expect_err("unknown CA");
    ensure!(
        matches!(&err, RegistryError::Connect { registry, .. } if registry.starts_with("localhost:")),
        "{err:?}"
    );
    ensure!(err.to_string().contains("certificate"), "{err}");

    let client = Client::new(Options {
        ca_bundle,
        ..Options::default()
    });
    let creds = Credentials::new("u", "p");
    let r =
        |tag: &str| Reference::parse(&format!("{addr}/x:{tag}")).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(ImageStore::open(&dir.path().join("dest"))?);

    // Token auth: refused without or with wrong credentials.
    let err = client
        .resolve(&r("docker"), None)
        .await
        .expect_err("no credentials");
    ensure!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let err = client
        .resolve(&r("docker"), Some(&Credentials::new("u", "wrong")))
        .await
        .expect_err("wrong credentials");
    ensure!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    // A Docker v2 manifest, blobs through a redirect to another host.
    ensure!(client.resolve(&r("docker"), Some(&creds)).await? == docker_digest);
    ensure!(client.pull(&r("docker"), Some(&creds), &store).await? == docker_digest);
    ensure!(store.rootfs(&docker_digest)?.join("bin/busybox").is_file());
    let cdn = fake
        .cdn_auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    ensure!(cdn.len() == 2, "config and layer through the CDN: {cdn:?}");
    ensure!(
        cdn.iter().all(Option::is_none),
        "no Authorization off the registry: {cdn:?}"
    );

    // A manifest list: linux/amd64's manifest.
    ensure!(client.resolve(&r("multi"), Some(&creds)).await? == docker_digest);
    let fresh = Arc::new(ImageStore::open(&dir.path().join("fresh"))?);
    ensure!(client.pull(&r("multi"), Some(&creds), &fresh).await? == docker_digest);
    ensure!(fresh.resolve(&r("multi")) == Some(docker_digest.clone()));

    ensure!(client.tags(&r("docker"), Some(&creds), Some(1)).await? == ["a", "b"]);

    // Lies and old formats.
    let err = client
        .pull(&r("lying"), Some(&creds), &fresh)
        .await
        .expect_err("lying digest");
    ensure!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    let err = client
        .pull(&r("corrupt"), Some(&creds), &fresh)
        .await
        .expect_err("corrupt layer");
    ensure!(
        matches!(&err, RegistryError::DigestMismatch { expected, .. } if *expected == corrupt_layer),
        "{err:?}"
    );
    ensure!(fresh.resolve(&r("corrupt")).is_none(), "nothing registered");
    ensure!(!fresh.has_blob(&corrupt_layer));
    let err = client
        .pull(&r("old"), Some(&creds), &fresh)
        .await
        .expect_err("schema 1");
    ensure!(
        matches!(err, RegistryError::UnsupportedMediaType { .. }),
        "{err:?}"
    );
    let err = client
        .pull(&r("nosuch"), Some(&creds), &fresh)
        .await
        .expect_err("missing");
    ensure!(
        err.to_string() == format!("No such image: {addr}/x:nosuch"),
        "{err}"
    );

    server.abort();
    tls_server.abort();
    Ok(())
}
