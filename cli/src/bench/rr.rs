//! TCP_RR from the caller's side: one connection, one byte sent and echoed
//! back at a time, as lab-echo's `rr` does inside a task. Async so Ctrl-C
//! stops it at once.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use shoal_bench::{Rr, percentile};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Unmeasured first second: ARP and the mesh's first entries.
const WARM: Duration = Duration::from_secs(1);
/// A round trip slower than this is a broken path, not a latency.
const STALL: Duration = Duration::from_secs(5);

pub async fn run(target: SocketAddrV4, measure: Duration) -> anyhow::Result<Rr> {
    let mut conn = connect(target).await?;
    conn.set_nodelay(true)?;
    let warm = Instant::now();
    while warm.elapsed() < WARM {
        round_trip(&mut conn, target).await?;
    }
    let mut samples = Vec::with_capacity(1 << 18);
    let start = Instant::now();
    while start.elapsed() < measure {
        samples.push(round_trip(&mut conn, target).await?.as_secs_f64() * 1e6);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (Some(p50_us), Some(p99_us)) = (percentile(&samples, 50.0), percentile(&samples, 99.0))
    else {
        bail!("{target}: no round trip completed in {measure:?}");
    };
    Ok(Rr {
        per_second: samples.len() as f64 / elapsed,
        p50_us,
        p99_us,
    })
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
