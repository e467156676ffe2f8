//! A TCP echo pair for lab tests, run as a service task's command:
//!
//! - `lab-echo serve PORT`: echoes every connection's bytes back, forever.
//! - `lab-echo send ADDR:PORT BYTES [TIMEOUT_SECS]`: sends BYTES patterned
//!   bytes in one write, expects them back unchanged, prints `echoed N
//!   bytes from ADDR` and exits 0; any failure exits 1 with the reason.

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
        _ => bail!("usage: lab-echo serve PORT | lab-echo send ADDR:PORT BYTES [TIMEOUT_SECS]"),
    }
}

fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    println!("listening on {port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
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

fn send(addr: &str, bytes: usize, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    // The server task may still be starting: retry the connect until the
    // deadline, not the exchange.
    let mut conn = loop {
        match TcpStream::connect(addr) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("connect {addr}")),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(secs)))?;
    let payload: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    conn.write_all(&payload).context("send")?;
    let mut back = vec![0u8; bytes];
    conn.read_exact(&mut back).context("read the echo")?;
    ensure!(back == payload, "the echo differs from what was sent");
    println!("echoed {bytes} bytes from {addr}");
    Ok(())
}
