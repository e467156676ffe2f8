//! The resolver on loopback sockets: local names answered, others forwarded
//! to a fake upstream on loopback, SERVFAIL when the upstream is silent,
//! TCP for what UDP truncates. No root needed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use shoal_dns::wire::{Message, Name, Rcode, Record, flags, rtype};
use shoal_dns::{Resolver, service_names};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Far above any loopback round trip, far below a hung test.
const TIMEOUT: Duration = Duration::from_secs(10);
const NET: &str = "net-a";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 2);
/// What the fake upstream answers (TEST-NET-1).
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn tasks(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(10, 0, 9, 100 + i)).collect()
}

/// An upstream that answers every A query with UPSTREAM_ANSWER and counts
/// them.
async fn fake_upstream() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = socket.local_addr()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 65535];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::parse(&buf[..n]) else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reply = query.clone();
            reply.header.flags |= flags::QR | flags::RA;
            if let Some(q) = &query.question {
                reply
                    .answers
                    .push(Record::a(q.name.clone(), 300, UPSTREAM_ANSWER));
            }
            if socket.send_to(&reply.encode(), peer).await.is_err() {
                break;
            }
        }
    });
    Ok((addr, seen))
}

/// A resolver serving UDP and TCP on loopback for a task on [`NET`].
async fn serve(
    upstreams: Vec<SocketAddr>,
    forward_timeout: Duration,
) -> anyhow::Result<(Resolver, SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let resolver = Resolver::with_forward_timeout(upstreams, forward_timeout);
    let mut names = BTreeMap::from(service_names("web", Some(VIP), &tasks(2)));
    names.extend(service_names("big", None, &tasks(40)));
    resolver.set_names(NET, names);
    resolver.set_names("net-b", BTreeMap::from([("hidden".into(), vec![VIP])]));
    let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = udp.local_addr()?;
    let tcp = std::net::TcpListener::bind(addr)?;
    let handles = vec![
        resolver.serve_udp(udp, vec![NET.into()])?,
        resolver.serve_tcp(tcp, vec![NET.into()])?,
    ];
    Ok((resolver, addr, handles))
}

async fn ask_bytes(server: SocketAddr, query: &[u8]) -> anyhow::Result<Message> {
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    client.send_to(query, server).await?;
    let mut buf = vec![0; 65535];
    let n = tokio::time::timeout(TIMEOUT, client.recv(&mut buf))
        .await
        .context("no reply")??;
    Ok(Message::parse(&buf[..n])?)
}

async fn ask(server: SocketAddr, name: &str, qtype: u16) -> anyhow::Result<Message> {
    let query = Message::query(0x4242, Name::from_dotted(name)?, qtype);
    let reply = ask_bytes(server, &query.encode()).await?;
    ensure!(reply.header.id == 0x4242, "the reply keeps the query's id");
    ensure!(reply.question == query.question, "the question comes back");
    Ok(reply)
}

fn addrs(reply: &Message) -> Vec<Ipv4Addr> {
    reply.answers.iter().filter_map(Record::ipv4).collect()
}

#[tokio::test]
async fn table_names_are_answered_locally_and_rotated() -> anyhow::Result<()> {
    let (upstream, seen) = fake_upstream().await?;
    let (_resolver, server, _handles) = serve(vec![upstream], TIMEOUT).await?;

    let web = ask(server, "WEB.", rtype::A).await?;
    assert_eq!(web.header.rcode(), Rcode::NoError as u8);
    assert_ne!(web.header.flags & flags::AA, 0);
    assert_eq!(addrs(&web), [VIP]);

    let first = addrs(&ask(server, "tasks.web", rtype::A).await?);
    let second = addrs(&ask(server, "tasks.web", rtype::A).await?);
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, tasks(2));
    assert_eq!(second, [first[1], first[0]], "round robin");

    let aaaa = ask(server, "web", rtype::AAAA).await?;
    assert_eq!(aaaa.header.rcode(), Rcode::NoError as u8);
    assert!(aaaa.answers.is_empty(), "NODATA, so clients fall back to A");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing was forwarded");
    Ok(())
}

#[tokio::test]
async fn other_names_are_forwarded_and_other_networks_are_not_seen() -> anyhow::Result<()> {
    let (upstream, seen) = fake_upstream().await?;
    let (_resolver, server, _handles) = serve(vec![upstream], TIMEOUT).await?;

    let reply = ask(server, "example.org", rtype::A).await?;
    assert_eq!(addrs(&reply), [UPSTREAM_ANSWER]);
    assert_eq!(reply.answers[0].ttl, 300, "passed through unchanged");
    let hidden = ask(server, "hidden", rtype::A).await?;
    assert_eq!(addrs(&hidden), [UPSTREAM_ANSWER], "net-b is not the task's");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn a_silent_upstream_means_servfail() -> anyhow::Result<()> {
    // Bound but never read: queries to it just queue.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let (_resolver, server, _handles) =
        serve(vec![silent.local_addr()?], Duration::from_millis(200)).await?;
    let reply = ask(server, "example.org", rtype::A).await?;
    assert_eq!(reply.header.rcode(), Rcode::ServFail as u8);
    assert!(reply.answers.is_empty());
    // Still answering locally meanwhile.
    assert_eq!(addrs(&ask(server, "web", rtype::A).await?), [VIP]);
    Ok(())
}

#[tokio::test]
async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() -> anyhow::Result<()> {
    let (upstream, _seen) = fake_upstream().await?;
    let (_resolver, server, _handles) = serve(vec![upstream], TIMEOUT).await?;

    let udp = ask(server, "tasks.big", rtype::A).await?;
    assert!(udp.header.truncated());
    assert!(udp.answers.is_empty());

    let mut stream = TcpStream::connect(server).await?;
    // Two queries on one connection, as resolvers pipeline them.
    for id in [1u16, 2] {
        let query = Message::query(id, Name::from_dotted("big")?, rtype::A).encode();
        let len = u16::try_from(query.len())?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&query).await?;
        let len = tokio::time::timeout(TIMEOUT, stream.read_u16()).await??;
        let mut reply = vec![0; usize::from(len)];
        stream.read_exact(&mut reply).await?;
        let reply = Message::parse(&reply)?;
        assert_eq!(reply.header.id, id);
        assert!(!reply.header.truncated());
        assert_eq!(reply.answers.len(), 40, "dnsrr: every task");
    }
    Ok(())
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_other_opcodes_notimp() -> anyhow::Result<()> {
    let (upstream, seen) = fake_upstream().await?;
    let (_resolver, server, _handles) = serve(vec![upstream], TIMEOUT).await?;
    // A question whose name points to itself.
    let looped = [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
    let reply = ask_bytes(server, &looped).await?;
    assert_eq!(
        (reply.header.id, reply.header.rcode()),
        (9, Rcode::FormErr as u8)
    );

    let mut update = Message::query(10, Name::from_dotted("web")?, rtype::A);
    update.header.flags |= 5 << 11;
    let reply = ask_bytes(server, &update.encode()).await?;
    assert_eq!(reply.header.rcode(), Rcode::NotImp as u8);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    Ok(())
}
