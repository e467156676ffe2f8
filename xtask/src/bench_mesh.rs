//! `cargo xtask bench mesh`: HTTP through a published port of the routing
//! mesh, against HAProxy in TCP mode forwarding to the same task and against
//! the task itself, all measured in the same run from the lab's client
//! (198.18.0.250, not a node) with wrk.
//!
//! One task (`lab-http serve 80`) runs on n1. "Local" rows enter through
//! n1, whose mesh DNATs to its own task; "remote" rows enter through n3,
//! whose mesh sends the packet over the ingress overlay to n1, with the
//! replies coming back through n3 for reverse NAT. HAProxy runs in the
//! entry node's namespace and dials the task's ingress address, so both
//! balancers take the same path to the task. "Direct" is the client
//! talking to the task's address, routed by n1 (no balancer at all).
//!
//! Then, from inside a task on n3: wrk to the service's VIP against wrk to
//! the task's own address (east-west, DNAT on the task's veth).
//!
//! With `--image lab-tools` the server is `/bin/lab-http` of the lab tools
//! image (loaded on n1) instead of this build's `lab-http` from `host`. The
//! east-west client stays on `host` either way: wrk is not in the image. And new
//! connections through n3's published port with 10, 1,000 and 10,000
//! frontends in n3's pinned frontend map, which must not change the
//! latency (a hash lookup).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
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

/// HAProxy in TCP mode on `listen` → `backend`, dialling from `source`.
fn haproxy(
    lab: &Lab,
    k: usize,
    dir: &Path,
    listen: &str,
    backend: &str,
    source: Ipv4Addr,
) -> anyhow::Result<Child> {
    let cfg = dir.join(format!("haproxy-n{k}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 60s\n  timeout server 60s\nlisten mesh_baseline\n  bind {listen}\n  \
             source {source}\n  server task {backend}\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("haproxy-n{k}.log")))?;
    lab.command(k, "haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting haproxy (apt-get install haproxy)")
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

pub async fn run(bin: &Path, secs: u64, conns: usize, image: Endpoints) -> anyhow::Result<()> {
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
    let (task_ip, task_ip_east): (Ipv4Addr, Ipv4Addr) =
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
    // The client reaches the task's address through n1, for the direct row.
    let handle = shoal_lab::netns::netlink(&lab.client_netns().context("client")?)?;
    handle
        .route()
        .add(
            rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(task_ip, 32)
                .gateway(lab.node(1).addr())
                .build(),
        )
        .execute()
        .await
        .context("route to the task via n1")?;

    // Connection: close runs leave the client's ports in TIME_WAIT; without
    // reuse, back-to-back runs to one address run out of ports and measure
    // the client, not the path.
    let tuned = lab
        .client_command("sh")
        .args([
            "-c",
            "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && \
             echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range",
        ])
        .status()?;
    ensure!(tuned.success(), "tuning the client's TIME_WAIT reuse");
    let dir = lab.dir().to_path_buf();
    // One HAProxy per published node, in front of the same task.
    let mut proxies = [1, 3]
        .into_iter()
        .map(|k| {
            let addr = lab.node(k).addr();
            haproxy(
                &lab,
                k,
                &dir,
                &format!("{addr}:8081"),
                &format!("{task_ip}:80"),
                addr,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls = [
        ("direct", format!("http://{task_ip}:80/")),
        ("local mesh", format!("http://{}:8080/", lab.node(1).addr())),
        (
            "local haproxy",
            format!("http://{}:8081/", lab.node(1).addr()),
        ),
        (
            "remote mesh",
            format!("http://{}:8080/", lab.node(3).addr()),
        ),
        (
            "remote haproxy",
            format!("http://{}:8081/", lab.node(3).addr()),
        ),
    ];
    let result = measure(&lab, &urls, secs, conns);
    for p in &mut proxies {
        let _ = p.kill();
        let _ = p.wait();
    }
    let rows = result?;
    report(&rows, conns);
    east_west(&lab, bin, task_ip_east, secs, conns).await?;
    flat(&lab, secs, conns)?;
    lab.down()?;
    Ok(())
}

/// wrk from a task on n3: to the VIP, then to the task's address.
async fn east_west(
    lab: &Lab,
    bin: &Path,
    task_ip: Ipv4Addr,
    secs: u64,
    conns: usize,
) -> anyhow::Result<()> {
    let inspect = shoal(
        lab,
        bin,
        1,
        &["service", "inspect", "web", "--format", "json"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    let vips = v
        .pointer("/0/vips")
        .or_else(|| v.pointer("/vips"))
        .and_then(|x| x.as_array())
        .cloned()
        .unwrap_or_default();
    let vip = vips
        .iter()
        .filter(|x| x.get("network").and_then(|n| n.as_str()) == Some("benchnet"))
        .find_map(|x| {
            x.get("addr")?
                .as_str()?
                .split('/')
                .next()
                .map(str::to_owned)
        })
        .context("web has no VIP on benchnet")?;
    let wrk_cmd =
        |url: &str| format!("/usr/bin/wrk {WRK_THREADS} -c{conns} -d{secs}s --latency {url}");
    // wrk is not in the lab tools image: the east-west client runs it from
    // `host` whatever image the server under test runs from.
    let script = format!(
        "{}; echo ==== ; {}",
        wrk_cmd(&format!("http://{vip}:80/")),
        wrk_cmd(&format!("http://{task_ip}:80/"))
    );
    shoal(
        lab,
        bin,
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "ewclient",
            "--constraint",
            "node.hostname==n3",
            "--restart-condition",
            "none",
            "--network",
            "benchnet",
            "host",
            "/bin/sh",
            "-c",
            &script,
        ],
    )?;
    let logs = eventually(
        Duration::from_secs(secs * 2 + 60),
        "the east-west client",
        || {
            let out = lab
                .command(1, bin.join("shoal"))
                .args(["service", "logs", "--raw", "ewclient"])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok((text.matches("Requests/sec").count() == 2).then_some(text))
        },
    )
    .await?;
    let (to_vip, to_task) = logs.split_once("====").context("two wrk runs")?;
    let (vip_w, task_w) = (
        parse_wrk(to_vip).context("wrk to the VIP")?,
        parse_wrk(to_task).context("wrk to the task")?,
    );
    println!(
        "\nEast-west from a task on n3 (wrk from `host`) to the task on n1 (wrk {WRK_THREADS} -c{conns}):"
    );
    println!(
        "{:>16} {:>12} {:>10} {:>10}",
        "path", "requests/s", "p50", "p99"
    );
    for (name, w) in [("VIP", vip_w), ("task address", task_w)] {
        println!(
            "{:>16} {:>12.0} {:>10} {:>10}",
            name,
            w.rps,
            ms(w.p50),
            ms(w.p99)
        );
    }
    println!(
        "  VIP/task address: {:.2}× requests/s, p50 {:.2}×",
        vip_w.rps / task_w.rps,
        vip_w.p50.as_secs_f64() / task_w.p50.as_secs_f64()
    );
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

type Row = (&'static str, Wrk, Wrk);

fn measure(
    lab: &Lab,
    urls: &[(&'static str, String)],
    secs: u64,
    conns: usize,
) -> anyhow::Result<Vec<Row>> {
    // Every path answers before anything is timed.
    for (name, url) in urls {
        let ok = (0..50).any(|_| {
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
                    url,
                ])
                .output();
            std::thread::sleep(Duration::from_millis(100));
            out.is_ok_and(|o| o.stdout == b"200")
        });
        if !ok {
            bail!("{name} ({url}) never answered 200");
        }
        wrk(lab, url, conns, 1, false)?;
    }
    let mut rows = Vec::new();
    for (name, url) in urls {
        let keep = wrk(lab, url, conns, secs, false)?;
        let fresh = wrk(lab, url, conns, secs, true)?;
        rows.push((*name, keep, fresh));
    }
    Ok(rows)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn report(rows: &[Row], conns: usize) {
    let get = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| (r.1, r.2));
    println!(
        "\nHTTP through a published port, wrk {WRK_THREADS} -c{conns} from the client (keep-alive):"
    );
    println!(
        "{:>16} {:>12} {:>10} {:>10} {:>8} {:>14}",
        "path", "requests/s", "p50", "p99", "errors", "new conns/s"
    );
    for (name, keep, fresh) in rows {
        println!(
            "{:>16} {:>12.0} {:>10} {:>10} {:>8} {:>14.0}",
            name,
            keep.rps,
            ms(keep.p50),
            ms(keep.p99),
            keep.errors + fresh.errors,
            fresh.rps
        );
    }
    let (Some(direct), Some(lm), Some(lh), Some(rm), Some(rh)) = (
        get("direct"),
        get("local mesh"),
        get("local haproxy"),
        get("remote mesh"),
        get("remote haproxy"),
    ) else {
        return;
    };
    println!("\nratios (same run):");
    println!(
        "  local backend:  mesh/haproxy {:.2}× requests/s, {:.2}× new conns/s; mesh/direct {:.2}× requests/s, p50 {:.2}×",
        lm.0.rps / lh.0.rps,
        lm.1.rps / lh.1.rps,
        lm.0.rps / direct.0.rps,
        lm.0.p50.as_secs_f64() / direct.0.p50.as_secs_f64()
    );
    println!(
        "  remote backend: mesh/haproxy {:.2}× requests/s, {:.2}× new conns/s; mesh/direct {:.2}× requests/s",
        rm.0.rps / rh.0.rps,
        rm.1.rps / rh.1.rps,
        rm.0.rps / direct.0.rps
    );
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
