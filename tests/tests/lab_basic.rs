//! A 3-node lab: the underlay carries packets between nodes, a cut port
//! stops them, the daemons answer on their sockets and restart, and nothing
//! is left once the lab is dropped. Needs root and a built `shoald`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use shoal_lab::{Lab, netns, run_in_netns};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One request/response over TCP from inside `netns` to `to`; returns the
/// local address the connection used.
fn exchange(netns: &str, to: SocketAddr, timeout: Duration) -> anyhow::Result<SocketAddr> {
    run_in_netns(netns, || -> anyhow::Result<SocketAddr> {
        let mut stream = TcpStream::connect_timeout(&to, timeout)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(b"ping")?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply)?;
        ensure!(&reply == b"pong", "unexpected reply {reply:?}");
        Ok(stream.local_addr()?)
    })?
}

/// Answers "ping" with "pong" until `successes` exchanges succeeded (an
/// attempt abandoned by a timing-out client is skipped); returns the peers.
fn serve(
    listener: TcpListener,
    successes: usize,
) -> std::thread::JoinHandle<anyhow::Result<Vec<SocketAddr>>> {
    fn answer(mut stream: TcpStream) -> anyhow::Result<()> {
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut request = [0u8; 4];
        stream.read_exact(&mut request)?;
        ensure!(&request == b"ping", "unexpected request {request:?}");
        Ok(stream.write_all(b"pong")?)
    }
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        while peers.len() < successes {
            let (stream, peer) = listener.accept()?;
            if answer(stream).is_ok() {
                peers.push(peer);
            }
        }
        Ok(peers)
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[tokio::test]
async fn three_nodes_talk_over_the_underlay_and_vanish_on_drop() -> anyhow::Result<()> {
    let lab = Lab::builder("basic").nodes(3).start().await?;
    let (n2, n3) = (lab.node(2), lab.node(3));
    assert_eq!(n3.name(), "n3");
    assert_eq!(n3.addr(), Ipv4Addr::new(198, 18, 0, 3));

    // A real exchange n2 → n3, accepted by a listener inside n3's namespace.
    let listener = run_in_netns(n3.netns(), || TcpListener::bind((n3.addr(), 0)))??;
    let to = listener.local_addr()?;
    let server = serve(listener, 2);
    let from = exchange(n2.netns(), to, TIMEOUT).context("n2 → n3 before the cut")?;
    assert_eq!(from.ip(), n2.addr());

    if which("ping") {
        let ping = lab
            .command(2, "ping")
            .args(["-c1", "-W2", "198.18.0.3"])
            .output()?;
        ensure!(
            ping.status.success(),
            "ping n2 → n3: {}\n{}",
            ping.status,
            String::from_utf8_lossy(&ping.stdout)
        );
    }

    // A cut port drops the traffic; healed, it flows again (the carrier
    // comes back asynchronously, so retry until a deadline).
    lab.cut(3).await?;
    ensure!(
        exchange(n2.netns(), to, Duration::from_millis(500)).is_err(),
        "n3 still reachable while cut"
    );
    lab.heal(3).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match exchange(n2.netns(), to, Duration::from_millis(500)) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context("n2 → n3 after heal")),
            Err(_) => {}
        }
    }
    let peers = server.join().expect("server thread")?;
    assert!(peers.iter().all(|p| p.ip() == n2.addr()), "peers {peers:?}");

    // Each daemon answers on its socket, and stop/start replaces it.
    for node in lab.nodes() {
        UnixStream::connect(node.socket()).with_context(|| format!("{} socket", node.name()))?;
    }
    let old = lab.node(1).pid().context("n1 daemon running")?;
    lab.stop(1).await?;
    assert_eq!(lab.node(1).pid(), None);
    ensure!(
        UnixStream::connect(lab.node(1).socket()).is_err(),
        "stopped daemon still accepts"
    );
    lab.start(1).await?;
    let new = lab.node(1).pid().context("n1 daemon restarted")?;
    assert_ne!(old, new);

    let name = lab.name().to_owned();
    let dir = lab.dir().to_owned();
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&format!("shoal-{name}-")))
        .collect();
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");
    let pids: Vec<u32> = lab.nodes().iter().filter_map(|n| n.pid()).collect();
    drop(lab);

    for ns in &namespaces {
        ensure!(!netns::exists(ns), "{ns} left behind");
    }
    ensure!(!dir.exists(), "{} left behind", dir.display());
    for pid in pids {
        ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "shoald {pid} left behind"
        );
    }
    Ok(())
}
