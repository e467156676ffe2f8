//! `cargo xtask bench frontends`: new connections through a published
//! port with 10, 1,000 and 10,000 frontends in the entry node's pinned
//! frontend map, which must not change the latency (a hash lookup), with
//! wrk from the lab's client (198.18.0.250). The mesh against HAProxy and
//! the task itself is `shoal bench` (`cargo xtask bench mesh`).
//!
//! One task (`lab-http serve 80`, or `/bin/lab-http` of the lab tools image
//! with `--image lab-tools`) runs on n1, published on 8080; the client
//! enters through n3.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, eventually};

use crate::bench::Endpoints;

/// What wrk reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrk {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    let mut rps = None;
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("50%") {
            w.p50 = duration(v)?;
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99 = duration(v)?;
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            w.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    w.rps = rps?;
    Some(w)
}

/// wrk threads: two, so the client's share of the in-kernel path (on one
/// host, a forwarded packet is processed on the sender's CPU) does not
/// starve wrk itself and cap every path at one CPU.
const WRK_THREADS: &str = "-t2";

pub fn wrk(lab: &Lab, url: &str, conns: usize, secs: u64, close: bool) -> anyhow::Result<Wrk> {
    let mut cmd = lab.client_command("wrk");
    cmd.args([
        WRK_THREADS,
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk {url}: {out:?}");
    parse_wrk(&text).with_context(|| format!("wrk {url}: unreadable output:\n{text}"))
}

fn shoal(lab: &Lab, bin: &Path, k: usize, args: &[&str]) -> anyhow::Result<String> {
    crate::bench::run_shoal(lab, bin, k, args)
}

/// Installs the load tools the benches drive (wrk, and HAProxy as a
/// baseline) when they are missing.
pub(crate) fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["wrk", "haproxy"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| !o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: installing {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    ensure!(status.success(), "apt-get install {missing:?} failed");
    Ok(())
}

pub async fn frontends(
    bin: &Path,
    secs: u64,
    conns: usize,
    image: Endpoints,
) -> anyhow::Result<()> {
    ensure_tools()?;
    let lab = crate::bench::three_nodes("bench-mesh", bin).await?;
    let http = bin.join("lab-http");
    let http = http.to_str().context("binary path")?;
    let server: [&str; 4] = match image {
        Endpoints::Host => ["host", http, "serve", "80"],
        Endpoints::LabTools => [
            crate::bench::load_lab_tools(&lab, bin, 1)?,
            "/bin/lab-http",
            "serve",
            "80",
        ],
    };
    println!("the task under test: {}", server.join(" "));
    shoal(&lab, bin, 1, &["network", "create", "benchnet"])?;
    let mut web = vec![
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--constraint",
        "node.hostname==n1",
        "--network",
        "benchnet",
        "-p",
        "8080:80",
    ];
    web.extend(server);
    shoal(&lab, bin, 1, &web)?;
    // Ingress first, then benchnet.
    let _addresses: (Ipv4Addr, Ipv4Addr) =
        eventually(Duration::from_secs(60), "web running", || {
            // This build's CLI, not the lab's default (`shoal` beside a
            // debug `shoald`, which a release-only build does not have).
            let out = shoal(&lab, bin, 1, &["service", "ps", "web", "--format", "json"])?;
            let rows: serde_json::Value = serde_json::from_str(&out)?;
            let addr = |i: usize| -> Option<Ipv4Addr> {
                let r = rows
                    .as_array()?
                    .iter()
                    .find(|r| r["current_state"] == "running" && r["desired_state"] == "running")?;
                r["addresses"][i].as_str()?.split('/').next()?.parse().ok()
            };
            Ok(addr(0).zip(addr(1)))
        })
        .await?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    eventually(Duration::from_secs(30), "n3:8080 answering", || {
        let out = lab
            .client_command("curl")
            .args([
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ])
            .output()?;
        Ok((out.stdout == b"200").then_some(()))
    })
    .await?;
    flat(&lab, secs, conns)?;
    lab.down()?;
    Ok(())
}

/// New connections through n3's published port with N extra frontends in
/// n3's pinned frontend map (they are never hit; only the table grows).
fn flat(lab: &Lab, secs: u64, conns: usize) -> anyhow::Result<()> {
    use aya::maps::{HashMap, Map, MapData};
    use shoal_common::mesh::{SERVICES_MAP, Service, ServiceKey};
    let pin = Path::new("/sys/fs/bpf/shoal-lab")
        .join(lab.name())
        .join("n3")
        .join(SERVICES_MAP);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let mut map: HashMap<MapData, ServiceKey, Service> =
        HashMap::try_from(Map::HashMap(data)).context("the frontend map")?;
    let url = format!("http://{}:8080/", lab.node(3).addr());
    println!(
        "\nNew connections through n3:8080 with N frontends installed (wrk -c{conns}, Connection: close):"
    );
    println!(
        "{:>8} {:>14} {:>10} {:>10}",
        "N", "new conns/s", "p50", "p99"
    );
    let mut installed = 0u32;
    let mut first_p50 = None;
    // 10 again last: the spread between the two N=10 rows is the noise.
    for n in [10u32, 1_000, 10_000, 10] {
        if n < installed {
            for i in n..installed {
                let _gone = map.remove(&dummy(i));
            }
            installed = n;
        }
        while installed < n {
            map.insert(dummy(installed), Service::default(), 0)
                .context("inserting a frontend")?;
            installed += 1;
        }
        let w = wrk(lab, &url, conns, secs, true)?;
        let base = *first_p50.get_or_insert(w.p50);
        println!(
            "{:>8} {:>14.0} {:>10} {:>10}   p50 {:.2}× of N=10",
            n,
            w.rps,
            ms(w.p50),
            ms(w.p99),
            w.p50.as_secs_f64() / base.as_secs_f64()
        );
    }
    for i in 0..installed {
        let _gone = map.remove(&dummy(i));
    }
    Ok(())
}

/// The i-th dummy frontend: 203.0.113.0/24 (TEST-NET-3) on distinct ports,
/// never the destination of any packet here.
fn dummy(i: u32) -> shoal_common::mesh::ServiceKey {
    shoal_common::mesh::ServiceKey::new(
        u32::from(Ipv4Addr::new(203, 0, 113, (i % 250) as u8)),
        10_000 + (i / 250) as u16,
        shoal_common::mesh::IPPROTO_TCP,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 5s test @ http://198.18.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.20us  201.33us   8.13ms   91.22%
    Req/Sec    51.80k     2.01k   54.90k    78.00%
  Latency Distribution
     50%  587.00us
     75%  651.00us
     90%  733.00us
     99%    1.27ms
  257823 requests in 5.00s, 31.22MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  51560.91
Transfer/sec:      6.24MB
";
        let w = parse_wrk(out).expect("parsed");
        assert!((w.rps - 51560.91).abs() < 0.01);
        assert_eq!(w.p50, Duration::from_micros(587));
        assert_eq!(w.p99, Duration::from_micros(1270));
        assert_eq!(w.errors, 7);
        assert!(parse_wrk("garbage").is_none());
    }
}
