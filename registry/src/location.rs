//! `Location` headers (redirects, upload sessions) resolved against the URL
//! of the request they answered (RFC 3986 §5.2, the cases registries use).

use http::Uri;

/// `location` as an absolute `http(s)` URL, relative to `base`. `None` if
/// either is unusable.
pub(crate) fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() || location.chars().any(char::is_control) {
        return None;
    }
    let base: Uri = base.parse().ok()?;
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let joined = if has_scheme(location) {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = joined.parse().ok()?;
    matches!(uri.scheme_str(), Some("http" | "https"))
        .then_some(())
        .and(uri.host())
        .filter(|h| !h.is_empty())?;
    Some(joined)
}

/// The target of a `Link` header's `rel="next"` (RFC 8288), as the tags
/// list paginates: `</v2/x/tags/list?last=a&n=1>; rel="next"`.
pub(crate) fn next_link(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        // Its parameters run to the next link (a `<` after a comma).
        let after = &rest[close + 1..];
        let end = after
            .match_indices(',')
            .map(|(i, _)| i)
            .find(|&i| after[i + 1..].trim_start().starts_with('<'))
            .unwrap_or(after.len());
        let is_next = after[..end].split(';').any(|param| {
            let Some((k, v)) = param.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_owned());
        }
        rest = &after[end..];
    }
}

/// `scheme:` (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !scheme.contains('/')
}

/// `url` with `key=value` added to its query (`value` already escaped).
pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    // A fragment is never sent; drop it rather than put the query after it.
    let url = url.split('#').next().unwrap_or(url);
    let sep = match url.find('?') {
        None => "?",
        Some(i) if i + 1 == url.len() || url.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{url}{sep}{key}={value}")
}

/// The `host[:port]` of an absolute URL, to compare redirect targets.
pub(crate) fn authority(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    uri.authority().map(|a| a.as_str().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/";
        let cases: &[(&str, Option<&str>)] = &[
            (
                "/v2/lab/busybox/blobs/uploads/abc?_state=x",
                Some("http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/abc?_state=x"),
            ),
            (
                "http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/abc",
                Some("http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/abc"),
            ),
            (
                "https://s3.example/bucket/x?sig=1",
                Some("https://s3.example/bucket/x?sig=1"),
            ),
            ("//cdn.example/b", Some("http://cdn.example/b")),
            (
                "abc",
                Some("http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/abc"),
            ),
            (
                "?x=1",
                Some("http://127.0.0.1:5000/v2/lab/busybox/blobs/uploads/?x=1"),
            ),
            ("ftp://x/y", None),
            ("", None),
            ("/a\nb", None),
            ("http://", None),
        ];
        for (loc, expected) in cases {
            assert_eq!(resolve(base, loc).as_deref(), *expected, "{loc}");
        }
        assert_eq!(resolve("not a url", "/x"), None);
    }

    #[test]
    fn queries() {
        assert_eq!(
            with_query("http://h/u", "digest", "d"),
            "http://h/u?digest=d"
        );
        assert_eq!(
            with_query("http://h/u?s=1", "digest", "d"),
            "http://h/u?s=1&digest=d"
        );
        assert_eq!(
            with_query("http://h/u?", "digest", "d"),
            "http://h/u?digest=d"
        );
        assert_eq!(
            authority("http://Reg:5000/v2/").as_deref(),
            Some("reg:5000")
        );
    }

    #[test]
    fn links() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"</v2/lab/busybox/tags/list?last=v1&n=1>; rel="next""#,
                Some("/v2/lab/busybox/tags/list?last=v1&n=1"),
            ),
            (
                r#"<https://a/prev>; rel="prev", <https://a/n?x=1,2>;rel=next"#,
                Some("https://a/n?x=1,2"),
            ),
            (r#"<https://a/x>; rel="previous next""#, Some("https://a/x")),
            (r#"<https://a/x>; title="next"; rel="prev""#, None),
            ("<unterminated; rel=next", None),
            ("", None),
            ("rel=next", None),
        ];
        for (header, expected) in cases {
            assert_eq!(next_link(header).as_deref(), *expected, "{header}");
        }
    }

    proptest! {
        #[test]
        fn garbage_links_never_panic(s in "\\PC{0,80}", t in "[<>;,= a-z\"]{0,60}") {
            let _ = next_link(&s);
            let _ = next_link(&t);
        }

        #[test]
        fn garbage_never_panics(base in "\\PC{0,60}", loc in "\\PC{0,60}") {
            let _ = resolve(&base, &loc);
            let _ = resolve("http://h:1/a/b", &loc);
            let _ = with_query(&base, "k", "v");
            let _ = authority(&base);
        }

        #[test]
        fn resolved_urls_parse(loc in "[a-z0-9/?=&.:_-]{0,40}") {
            if let Some(u) = resolve("https://reg.example/v2/x/", &loc) {
                prop_assert!(u.parse::<Uri>().is_ok());
            }
        }
    }
}
