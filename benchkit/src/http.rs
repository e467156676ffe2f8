//! The head of an HTTP/1.1 response as the bench's keep-alive loader reads
//! it off the wire: status code, body length, and where the body starts.
//! Only what lab-http and any sane server send on a keep-alive connection:
//! a `Content-Length` body (no chunked encoding: a server that sends one is
//! refused with an error saying so, not misread).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP status line {line:?} is not `HTTP/1.x NNN …`; is the target an HTTP server?")]
    StatusLine { line: String },
    #[error("HTTP header {line:?} is not `Name: value`")]
    Header { line: String },
    #[error("HTTP Content-Length {value:?} is not a number")]
    Length { value: String },
    #[error(
        "HTTP response without Content-Length (chunked or close-delimited); the loader needs lengths on keep-alive connections"
    )]
    NoLength,
    #[error("HTTP response head longer than {max} bytes")]
    TooLong { max: usize },
}

/// A response head read completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: usize,
    /// Bytes of the head, up to and with its blank line.
    pub head_len: usize,
    /// `Connection: close` was sent: the server closes after the body.
    pub close: bool,
}

/// Longer heads are refused rather than buffered without bound.
pub const MAX_HEAD: usize = 16 * 1024;

/// The head at the start of `buf`; `Ok(None)` while its blank line has not
/// arrived yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return match buf.len() > MAX_HEAD {
            true => Err(HttpError::TooLong { max: MAX_HEAD }),
            false => Ok(None),
        };
    };
    if end > MAX_HEAD {
        return Err(HttpError::TooLong { max: MAX_HEAD });
    }
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code.parse().ok(),
        _ => None,
    }
    .filter(|c| (100..600).contains(c))
    .ok_or_else(|| HttpError::StatusLine {
        line: status_line.chars().take(80).collect(),
    })?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| HttpError::Header {
            line: line.chars().take(80).collect(),
        })?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| HttpError::Length {
                value: value.chars().take(40).collect(),
            })?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    // 1xx, 204 and 304 have no body.
    let bodiless = status < 200 || status == 204 || status == 304;
    let content_length = match (length, bodiless) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => return Err(HttpError::NoLength),
    };
    Ok(Some(Head {
        status,
        content_length,
        head_len: end + 4,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nn2 10.0.0.1\n";

    #[test]
    fn lab_http_answer() {
        let h = parse_head(OK).expect("valid").expect("complete");
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: 12,
                head_len: OK.len() - 12,
                close: false
            }
        );
        let closing = b"HTTP/1.1 503 Busy\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n";
        let h = parse_head(closing).expect("valid").expect("complete");
        assert_eq!((h.status, h.content_length, h.close), (503, 0, true));
    }

    #[test]
    fn partial_and_bad_heads() {
        assert_eq!(parse_head(&OK[..20]), Ok(None));
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HttpError::StatusLine { .. })
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(HttpError::Length { .. })
        ));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::NoLength)
        );
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n"),
            Err(HttpError::Header { .. })
        ));
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").map(|h| h.map(|h| h.content_length)),
            Ok(Some(0))
        );
        assert_eq!(
            parse_head(&vec![b'a'; MAX_HEAD + 1]),
            Err(HttpError::TooLong { max: MAX_HEAD })
        );
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&b);
        }

        #[test]
        fn every_cut_is_incomplete_or_whole(cut in 0usize..OK.len()) {
            match parse_head(&OK[..cut]) {
                Ok(None) => prop_assert!(cut < OK.len() - 12),
                Ok(Some(h)) => prop_assert_eq!(h.head_len, OK.len() - 12),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn any_status_and_length(status in 100u16..600, len in 0usize..1_000_000) {
            let text = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\n\r\n");
            let h = parse_head(text.as_bytes()).expect("valid").expect("complete");
            prop_assert_eq!((h.status, h.content_length, h.head_len), (status, len, text.len()));
        }
    }
}
