//! `WWW-Authenticate` challenges (RFC 7235) and the token exchange of the
//! distribution spec's token authentication.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::Credentials;

/// What a registry's 401 asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    /// Get a token from `realm` (with `service` and `scope` as query).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// One challenge as written: its scheme (lowercased) and parameters (names
/// lowercased).
#[derive(Debug, PartialEq, Eq)]
struct RawChallenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// The first challenge of a `WWW-Authenticate` value we can answer:
/// Bearer (with a realm) before Basic.
pub(crate) fn parse_www_authenticate(value: &str) -> Option<Challenge> {
    let raw = parse_challenges(value);
    let bearer = raw.iter().find_map(|c| {
        if c.scheme != "bearer" {
            return None;
        }
        let realm = c.params.get("realm").filter(|r| !r.is_empty())?;
        Some(Challenge::Bearer {
            realm: realm.clone(),
            service: c.params.get("service").cloned(),
            scope: c.params.get("scope").cloned(),
        })
    });
    bearer.or_else(|| {
        raw.iter()
            .any(|c| c.scheme == "basic")
            .then_some(Challenge::Basic)
    })
}

fn is_token_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, ',' | '=' | '"')
}

/// `scheme param=value, param="quoted \" value", scheme2 …`: a
/// challenge's scheme is a token not followed by `=`.
fn parse_challenges(value: &str) -> Vec<RawChallenge> {
    let mut out: Vec<RawChallenge> = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return out;
        }
        let end = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start();
        if token.is_empty() {
            // A stray '=' or '"': skip one character and go on.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        match (after.strip_prefix('='), out.last_mut()) {
            (Some(v), Some(current)) => {
                let (value, remaining) = param_value(v.trim_start());
                current.params.insert(token.to_ascii_lowercase(), value);
                rest = remaining;
            }
            (Some(v), None) => {
                // A parameter before any scheme: drop it.
                rest = param_value(v.trim_start()).1;
            }
            (None, _) => {
                out.push(RawChallenge {
                    scheme: token.to_ascii_lowercase(),
                    params: BTreeMap::new(),
                });
                rest = after;
            }
        }
    }
}

/// A token or a quoted string (backslash escapes), and what follows it.
fn param_value(s: &str) -> (String, &str) {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(s.len());
        return (s[..end].to_owned(), &s[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &quoted[i + 1..]),
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c => value.push(c),
        }
    }
    // Unterminated: take the rest.
    (value, "")
}

/// `Authorization: Basic …`.
pub(crate) fn basic(credentials: &Credentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The token endpoint's answer: `token`, or OAuth2's `access_token`.
pub(crate) fn parse_token_response(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    r.token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
}

/// The token request's URL: the realm with `service` and `scope` added.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scope: Option<&str>) -> String {
    let mut url = realm.to_owned();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    for (k, v) in [("service", service), ("scope", scope)] {
        if let Some(v) = v {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&query_escape(v));
            sep = '&';
        }
    }
    url
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn challenges() {
        let cases: &[(&str, Option<Challenge>)] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/busybox:pull".into()),
                }),
            ),
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            // Multiple challenges; Bearer preferred; escapes, spaces, case.
            (
                r#"Basic realm="a, b", BEARER Realm = "http://h/t?x=1" , scope="r:a\"b:pull,push""#,
                Some(Challenge::Bearer {
                    realm: "http://h/t?x=1".into(),
                    service: None,
                    scope: Some("r:a\"b:pull,push".into()),
                }),
            ),
            (r#"Bearer service="x""#, None),
            (r#"Bearer realm="""#, None),
            ("Negotiate", None),
            ("", None),
            (
                r#"Bearer realm=unquoted,service=s"#,
                Some(Challenge::Bearer {
                    realm: "unquoted".into(),
                    service: Some("s".into()),
                    scope: None,
                }),
            ),
            (
                r#"Bearer realm="unterminated"#,
                Some(Challenge::Bearer {
                    realm: "unterminated".into(),
                    service: None,
                    scope: None,
                }),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(&parse_www_authenticate(header), expected, "{header}");
        }
    }

    #[test]
    fn tokens_and_urls() {
        assert_eq!(
            parse_token_response(br#"{"token":"t1","expires_in":60}"#).as_deref(),
            Some("t1")
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"t2"}"#).as_deref(),
            Some("t2")
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"t3"}"#).as_deref(),
            Some("t3")
        );
        assert_eq!(parse_token_response(br#"{"token":""}"#), None);
        assert_eq!(parse_token_response(b"<html>"), None);
        assert_eq!(parse_token_response(br#"{"token":5}"#), None);
        assert_eq!(
            token_url(
                "https://a/token",
                Some("reg"),
                Some("repository:x/y:pull,push")
            ),
            "https://a/token?service=reg&scope=repository%3Ax%2Fy%3Apull%2Cpush"
        );
        assert_eq!(
            token_url("http://a/t?k=v", None, Some("s")),
            "http://a/t?k=v&scope=s"
        );
        assert_eq!(
            basic(&Credentials::new("Aladdin", "open sesame")),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    proptest! {
        #[test]
        fn garbage_challenges_never_panic(s in "\\PC{0,120}") {
            let _ = parse_www_authenticate(&s);
        }

        #[test]
        fn challenge_like_garbage_never_panics(s in "[A-Za-z =,\"\\\\:/.]{0,80}") {
            let _ = parse_www_authenticate(&s);
        }

        #[test]
        fn garbage_token_bodies_never_panic(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_token_response(&b);
        }
    }
}
