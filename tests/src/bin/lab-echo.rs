//! A TCP echo pair for lab tests, run as a service task's command:
//!
//! - `lab-echo serve PORT`: echoes every connection's bytes back, forever.
//! - `lab-echo send ADDR:PORT BYTES [TIMEOUT_SECS]`: sends BYTES patterned
//!   bytes in one write, expects them back unchanged, prints `echoed N
//!   bytes from ADDR` and exits 0; any failure exits 1 with the reason.
//! - `lab-echo rr ADDR:PORT SECS`: netperf TCP_RR with 1-byte messages: one
//!   connection, send 1 byte and wait for it back, for SECS seconds after
//!   one unmeasured second; prints `rr N/s p50 Xus p99 Yus` (round trips
//!   per second, their latency).
//! - `lab-echo boot-id`: prints the kernel's boot id, so `shoal bench` can
//!   tell nodes that share one kernel (the namespace lab) from machines.
//! - `lab-echo cpu SECS`: the node's /proc/stat `cpu` line before and after
//!   SECS seconds, the CPU count and the wall time, so `shoal bench` can
//!   weigh a throughput by each node's CPU on separate machines
//!   (`shoal_bench::cpustat::Sample` reads it).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", port] => serve(port.parse().context("PORT")?),
        ["send", addr, bytes] => send(addr, bytes.parse().context("BYTES")?, 10),
        ["send", addr, bytes, secs] => send(
            addr,
            bytes.parse().context("BYTES")?,
            secs.parse().context("TIMEOUT_SECS")?,
        ),
        ["rr", addr, secs] => rr(addr, secs.parse().context("SECS")?),
        ["boot-id"] => {
            let path = "/proc/sys/kernel/random/boot_id";
            let id = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            println!("boot-id {}", id.trim());
            Ok(())
        }
        ["cpu", secs] => cpu(secs.parse().context("SECS")?),
        _ => bail!(
            "usage: lab-echo serve PORT | lab-echo send ADDR:PORT BYTES [TIMEOUT_SECS] | \
             lab-echo rr ADDR:PORT SECS | lab-echo boot-id | lab-echo cpu SECS"
        ),
    }
}

fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    println!("listening on {port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        // Small replies go out at once, as netperf's server sends them; a
        // socket that refuses is dropped, not the server.
        if conn.set_nodelay(true).is_err() {
            continue;
        }
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// The server task may still be starting: retry the connect until the
/// deadline, not the exchange.
fn connect(addr: &str, deadline: Instant) -> anyhow::Result<TcpStream> {
    loop {
        match TcpStream::connect(addr) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("connect {addr}")),
        }
    }
}

fn send(addr: &str, bytes: usize, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut conn = connect(addr, deadline)?;
    conn.set_read_timeout(Some(Duration::from_secs(secs)))?;
    let payload: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    conn.write_all(&payload).context("send")?;
    let mut back = vec![0u8; bytes];
    conn.read_exact(&mut back).context("read the echo")?;
    ensure!(back == payload, "the echo differs from what was sent");
    println!("echoed {bytes} bytes from {addr}");
    Ok(())
}

fn rr(addr: &str, secs: u64) -> anyhow::Result<()> {
    let mut conn = connect(addr, Instant::now() + Duration::from_secs(10))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut byte = [0u8; 1];
    let mut round_trip = |conn: &mut TcpStream| -> anyhow::Result<Duration> {
        let t = Instant::now();
        conn.write_all(&byte).context("send")?;
        conn.read_exact(&mut byte).context("read the echo")?;
        Ok(t.elapsed())
    };
    // Unmeasured, as iperf3's -O: the first exchanges of a new task can wait
    // on ARP and on its node's overlay entries reaching the peer.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        round_trip(&mut conn)?;
    }
    let run_for = Duration::from_secs(secs);
    let mut samples = Vec::with_capacity(1 << 20);
    // The machine's CPU over exactly the measured window (the nodes of the
    // namespace lab share it): what the path costs per round trip.
    let cpu_before = proc_stat()?;
    let start = Instant::now();
    while start.elapsed() < run_for {
        samples.push(round_trip(&mut conn)?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = proc_stat()?;
    ensure!(!samples.is_empty(), "no round trip in {secs} s");
    samples.sort_unstable();
    // Nearest rank: the smallest sample with at least p% at or below it.
    let pct = |p: f64| {
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1e6
    };
    println!(
        "rr {:.1}/s p50 {:.1}us p99 {:.1}us",
        samples.len() as f64 / elapsed,
        pct(50.0),
        pct(99.0)
    );
    println!("cpu-sample wall {elapsed:.3} cpus {}", cpu_after.1);
    println!("before {}", cpu_before.0);
    println!("after {}", cpu_after.0);
    Ok(())
}

/// The `cpu` total line of /proc/stat and the number of `cpuN` lines.
fn proc_stat() -> anyhow::Result<(String, usize)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let total = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .context("/proc/stat has no `cpu` line")?
        .to_owned();
    let cpus = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Ok((total, cpus))
}

fn cpu(secs: f64) -> anyhow::Result<()> {
    ensure!(
        secs > 0.0 && secs < 3600.0,
        "SECS {secs}: give 0 < SECS < 3600"
    );
    let (before, t) = (proc_stat()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (after, wall) = (proc_stat()?, t.elapsed().as_secs_f64());
    println!("cpu-sample wall {wall:.3} cpus {}", after.1);
    println!("before {}", before.0);
    println!("after {}", after.0);
    Ok(())
}
