//! TCP_RR from the caller's side: one connection, one byte sent and echoed
//! back at a time, as lab-echo's `rr` does inside a task. Async so Ctrl-C
//! stops it at once.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use shoal_bench::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Unmeasured first second: ARP and the mesh's first entries.
const WARM: Duration = Duration::from_secs(1);
/// A round trip slower than this is a broken path, not a latency.
const STALL: Duration = Duration::from_secs(5);

/// Round trips per second and every round trip's latency.
pub async fn run(target: SocketAddrV4, measure: Duration) -> anyhow::Result<(f64, Histogram)> {
    let mut conn = connect(target).await?;
    conn.set_nodelay(true)?;
    let warm = Instant::now();
    while warm.elapsed() < WARM {
        round_trip(&mut conn, target).await?;
    }
    let mut hist = Histogram::default();
    let start = Instant::now();
    while start.elapsed() < measure {
        let t = round_trip(&mut conn, target).await?;
        hist.record(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
    }
    let elapsed = start.elapsed().as_secs_f64();
    if hist.count == 0 {
        bail!("{target}: no round trip completed in {measure:?}");
    }
    Ok((hist.count as f64 / elapsed, hist))
}

async fn connect(target: SocketAddrV4) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(STALL, TcpStream::connect(target)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => return Err(e).with_context(|| format!("connecting to {target}")),
            Err(_) => bail!("connecting to {target}: no answer in {STALL:?}"),
        }
    }
}

async fn round_trip(conn: &mut TcpStream, target: SocketAddrV4) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut byte = [b'x'];
    let exchange = async {
        conn.write_all(&byte).await?;
        conn.read_exact(&mut byte).await.map(drop)
    };
    match tokio::time::timeout(STALL, exchange).await {
        Ok(Ok(())) => Ok(t.elapsed()),
        Ok(Err(e)) => Err(e).with_context(|| format!("{target}: echo")),
        Err(_) => bail!("{target}: no echo within {STALL:?}"),
    }
}
