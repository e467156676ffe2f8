//! HTTP requests per second through a published port: `conns` keep-alive
//! connections, each sending its next request once the last answer is in
//! (as wrk does), on a runtime of `threads` threads. A non-2xx answer, a
//! broken connection or a stall is an error, counted; the connection is
//! then made again.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use shoal_bench::{Histogram, http};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An answer slower than this is counted as an error.
const STALL: Duration = Duration::from_secs(5);
const KEEP_ERRORS: usize = 3;

pub struct Http {
    pub per_second: f64,
    pub hist: Histogram,
    /// Broken connections, stalls and unreadable answers.
    pub errors: u64,
    pub non_2xx: u64,
    pub first_errors: Vec<String>,
}

#[derive(Default)]
struct Part {
    hist: Histogram,
    errors: u64,
    non_2xx: u64,
    first_errors: Vec<String>,
}

impl Part {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(e);
        }
    }
}

pub async fn run(
    target: SocketAddrV4,
    measure: Duration,
    threads: usize,
    conns: usize,
) -> anyhow::Result<Http> {
    let (elapsed, parts) = super::crr::on_threads(threads, move || async move {
        let start = Instant::now();
        let end = start + measure;
        let tasks: Vec<_> = (0..conns.max(1))
            .map(|_| tokio::spawn(connection(target, end)))
            .collect();
        let mut parts = Vec::with_capacity(tasks.len());
        for t in tasks {
            parts.push(t.await?);
        }
        Ok((start.elapsed(), parts))
    })
    .await?;
    let mut out = Http {
        per_second: 0.0,
        hist: Histogram::default(),
        errors: 0,
        non_2xx: 0,
        first_errors: Vec::new(),
    };
    for p in parts {
        out.hist.merge(&p.hist);
        out.errors += p.errors;
        out.non_2xx += p.non_2xx;
        out.first_errors.extend(p.first_errors);
    }
    out.first_errors.truncate(KEEP_ERRORS);
    // Answers of every status count towards the rate, as wrk counts them;
    // non-2xx flag the metric.
    out.per_second = out.hist.count as f64 / elapsed.as_secs_f64();
    Ok(out)
}

async fn connection(target: SocketAddrV4, end: Instant) -> Part {
    let mut part = Part::default();
    let request =
        format!("GET / HTTP/1.1\r\nHost: {target}\r\nUser-Agent: shoal-bench\r\n\r\n").into_bytes();
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < end {
        let c = match conn.take() {
            Some(c) => c,
            None => match tokio::time::timeout(STALL, TcpStream::connect(target)).await {
                Ok(Ok(c)) => {
                    // A refused nodelay only slows this connection.
                    let _ = c.set_nodelay(true);
                    c
                }
                Ok(Err(e)) => {
                    part.fail(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    part.fail(format!("connect: no answer within {STALL:?}"));
                    continue;
                }
            },
        };
        let t = Instant::now();
        match tokio::time::timeout(STALL, exchange(c, &request, &mut buf)).await {
            Ok(Ok((head, c))) => {
                part.hist
                    .record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                if !(200..300).contains(&head.status) {
                    part.non_2xx += 1;
                }
                conn = (!head.close).then_some(c);
            }
            Ok(Err(e)) => part.fail(e),
            Err(_) => part.fail(format!("no answer within {STALL:?}")),
        }
    }
    part
}

/// One request and its whole answer; the connection back for the next.
async fn exchange(
    mut c: TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(http::Head, TcpStream), String> {
    c.write_all(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    buf.clear();
    let head = loop {
        if let Some(h) = http::parse_head(buf).map_err(|e| e.to_string())? {
            break h;
        }
        if c.read_buf(buf).await.map_err(|e| format!("read: {e}"))? == 0 {
            return Err("the server closed the connection mid-answer".into());
        }
    };
    let whole = head.head_len + head.content_length;
    while buf.len() < whole {
        if c.read_buf(buf).await.map_err(|e| format!("read: {e}"))? == 0 {
            return Err("the server closed the connection mid-body".into());
        }
    }
    Ok((head, c))
}
