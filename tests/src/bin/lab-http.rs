//! A small HTTP/1.1 and UDP server for routing-mesh tests and benchmarks,
//! run as a service task's command, and its UDP client:
//!
//! - `lab-http serve PORT`: answers every HTTP request on TCP PORT with 200
//!   and the body `<hostname> <peer address>` (keep-alive, so wrk can reuse
//!   connections), and every UDP datagram on PORT with the same text. The
//!   peer is the source address the task saw: it shows whether the client's
//!   address survived the mesh. On SIGTERM it drains, as a well-behaved
//!   server does: the connections it has are served until they close (at
//!   most 9 s, within the 10 s stop grace), then it exits.
//! - `lab-http udp ADDR:PORT [TIMEOUT_SECS]`: sends one datagram, prints the
//!   reply and its source, exits 1 without a reply.
//! - `lab-http hold ADDR:PORT SECS`: one HTTP connection kept open for SECS,
//!   a request every 100 ms on it; prints `first <body>` after the first
//!   answer, then `held N requests`, or fails on the first error (a
//!   connection that broke).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// Connections being served, for the drain on SIGTERM.
static OPEN: AtomicUsize = AtomicUsize::new(0);

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", port] => serve(port.parse().context("PORT")?),
        ["udp", addr] => udp(addr, 3),
        ["udp", addr, secs] => udp(addr, secs.parse().context("TIMEOUT_SECS")?),
        ["hold", addr, secs] => hold(addr, secs.parse().context("SECS")?),
        _ => bail!("usage: lab-http serve PORT | udp ADDR:PORT [SECS] | hold ADDR:PORT SECS"),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// SIGTERM starts the drain: wait for open connections (at most 9 s), exit.
fn drain_on_sigterm() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    // Blocked here, before any other thread exists, so every thread
    // inherits the mask and only the waiter below receives it.
    term.thread_block()?;
    std::thread::spawn(move || {
        if term.wait().is_ok() {
            eprintln!(
                "SIGTERM: draining {} connections",
                OPEN.load(Ordering::Relaxed)
            );
            let deadline = Instant::now() + Duration::from_secs(9);
            while OPEN.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::process::exit(0);
        }
    });
    Ok(())
}

fn serve(port: u16) -> anyhow::Result<()> {
    drain_on_sigterm()?;
    let name = hostname();
    let tcp = TcpListener::bind(("0.0.0.0", port)).context("binding TCP")?;
    let udp = UdpSocket::bind(("0.0.0.0", port)).context("binding UDP")?;
    let udp_name = name.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let reply = format!("{udp_name} {}\n", peer.ip());
            if let Err(e) = udp.send_to(reply.as_bytes(), peer) {
                eprintln!("udp reply to {peer}: {e}");
            }
        }
    });
    for conn in tcp.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.clone();
        OPEN.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || {
            if let Err(e) = http(conn, &name) {
                eprintln!("connection: {e}");
            }
            OPEN.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// Answers requests on one connection until the client closes it.
fn http(conn: TcpStream, name: &str) -> anyhow::Result<()> {
    let peer = conn.peer_addr()?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let first = line.trim_end().to_owned();
        let mut close = first.ends_with("HTTP/1.0");
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if header == "connection: close" {
                close = true;
            }
        }
        // One line per request on stderr, so `service logs` shows who came.
        eprintln!("{} {first}", peer.ip());
        let body = format!("{name} {}\n", peer.ip());
        // One write per response: with TCP_NODELAY, pieces would leave as
        // separate segments and a benchmark would count the server's
        // writes, not the path.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        out.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn udp(addr: &str, secs: u64) -> anyhow::Result<()> {
    let to: SocketAddr = addr.parse().context("ADDR:PORT")?;
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.set_read_timeout(Some(Duration::from_secs(secs)))?;
    sock.send_to(b"ping", to)?;
    let mut buf = [0u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP reply from {to} within {secs}s"))?;
    println!(
        "{} from {from}",
        String::from_utf8_lossy(&buf[..n]).trim_end()
    );
    Ok(())
}

fn hold(addr: &str, secs: u64) -> anyhow::Result<()> {
    let to: SocketAddr = addr.parse().context("ADDR:PORT")?;
    let conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        write!(out, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").context("request")?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).context("response")? == 0 {
                bail!("connection closed after {n} requests");
            }
            let l = line.trim_end().to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length: ") {
                length = v.parse().context("Content-Length")?;
            }
            if l.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut reader, &mut body).context("body")?;
        if n == 0 {
            println!("first {}", String::from_utf8_lossy(&body).trim_end());
            std::io::stdout().flush()?;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("held {n} requests");
    Ok(())
}
