//! HTTP/1.1 on the node's Unix socket: versioned paths, the query string,
//! and turning each answer (or error) into dockerd's response.

use std::{collections::HashMap, convert::Infallible, future::Future, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::{Backend, error::ApiError, routes};

/// The newest API version Shoal answers as; the docker 28 CLI (API 1.50)
/// negotiates down to its own.
pub const API_VERSION: &str = "1.51";
/// dockerd's oldest.
pub const MIN_API_VERSION: &str = "1.24";

/// Bodies are specs and secrets (swarm caps a secret at 500 KiB).
const MAX_BODY: usize = 4 << 20;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// A parsed request, what every handler reads.
pub struct Call {
    pub method: Method,
    /// The path's segments, without the version prefix.
    pub segments: Vec<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|source| ApiError::InvalidJson { source })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The query string, percent-decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut out = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(decode(k)?, decode(v)?);
        }
        Ok(Self(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Go's `httputils.BoolValue`: anything but "", "0", "no", "false",
    /// "none" is true.
    pub fn flag(&self, key: &str) -> bool {
        !matches!(
            self.get(key).map(str::to_ascii_lowercase).as_deref(),
            None | Some("" | "0" | "no" | "false" | "none")
        )
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad("query", format!("{s:?}: bad %-escape")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("query", format!("{s:?}: not UTF-8")))
}

/// `1.44` as (1, 44).
fn version_of(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The path's segments without a `/v1.NN` prefix, refusing versions Shoal
/// does not speak as dockerd refuses them.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let mut segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(given) = segs.first().and_then(|s| s.strip_prefix('v'))
        && let Some(v) = version_of(given)
    {
        let max = version_of(API_VERSION).unwrap_or_default();
        let min = version_of(MIN_API_VERSION).unwrap_or_default();
        if v > max {
            return Err(ApiError::VersionTooNew {
                given: given.to_owned(),
                max: API_VERSION,
            });
        }
        if v < min {
            return Err(ApiError::VersionTooOld {
                given: given.to_owned(),
                min: MIN_API_VERSION,
            });
        }
        segs.remove(0);
    }
    Ok(segs)
}

pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", format!("{v}\n"))
}

pub fn empty(status: StatusCode) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", Bytes::new())
}

fn error_response(e: &ApiError) -> Response<Body> {
    full(e.status(), "application/json", format!("{}\n", e.body()))
}

async fn handle(backend: Arc<Backend>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let call = async {
        let segments = segments(parts.uri.path())?;
        let query = Query::parse(parts.uri.query())?;
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::bad("body", format!("cannot read it: {e}")))?
            .to_bytes();
        Ok::<_, ApiError>(Call {
            method: parts.method.clone(),
            segments,
            query,
            headers: parts.headers.clone(),
            body,
        })
    };
    let result = match call.await {
        Ok(call) => routes::route(&backend, call).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(method = %parts.method, path = %parts.uri.path(), error = %e, "docker API error");
            error_response(&e)
        }
    };
    let h = response.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("Shoal/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// Serves the Docker Engine API on `listener` until `shutdown` completes.
pub async fn serve(listener: UnixListener, backend: Backend, shutdown: impl Future<Output = ()>) {
    let backend = Arc::new(backend);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "docker API: accept failed");
                    continue;
                }
            },
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(handle(backend, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "docker API connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn versioned_and_plain_paths_route_alike() -> Result<(), ApiError> {
        assert_eq!(segments("/v1.51/services/web")?, ["services", "web"]);
        assert_eq!(segments("/v1.24/_ping")?, ["_ping"]);
        assert_eq!(segments("/services/web/")?, ["services", "web"]);
        let too_new = segments("/v1.99/info").err().map(|e| e.to_string());
        assert_eq!(
            too_new.as_deref(),
            Some("client version 1.99 is too new. Maximum supported API version is 1.51")
        );
        let too_old = segments("/v1.12/info")
            .err()
            .map(|e| (e.status().as_u16(), e.to_string()));
        assert!(
            matches!(too_old, Some((400, m)) if m.contains("Minimum supported API version is 1.24"))
        );
        Ok(())
    }

    #[test]
    fn queries_decode_as_go_decodes_them() -> Result<(), ApiError> {
        let q = Query::parse(Some(
            "filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D&status=1&x=a+b&follow=0",
        ))?;
        assert_eq!(q.get("filters"), Some(r#"{"label":{"a=b":true}}"#));
        assert_eq!(q.get("x"), Some("a b"));
        assert!(q.flag("status") && !q.flag("follow") && !q.flag("missing"));
        assert!(Query::parse(Some("a=%zz")).is_err());
        Ok(())
    }

    proptest! {
        // Every string survives being escaped the way Go's url package
        // escapes a query value.
        #[test]
        fn escaped_values_decode_back(v in "\\PC{0,40}") {
            let escaped: String = v.bytes().map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            }).collect();
            let q = Query::parse(Some(&format!("k={escaped}")));
            prop_assert!(q.is_ok());
            prop_assert_eq!(q.ok().and_then(|q| q.get("k").map(str::to_owned)), Some(v));
        }

        #[test]
        fn any_path_routes_or_is_refused(path in "[ -~]{0,40}") {
            if let Err(e) = segments(&path) {
                prop_assert_eq!(e.status().as_u16(), 400);
            }
        }
    }
}
