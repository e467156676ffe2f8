//! Serving inside a network namespace: the resolver's sockets are made in a
//! task's namespace and answer there on 127.0.0.11:53, over UDP and TCP,
//! until the handle is dropped. Needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use shoal_dns::wire::{Message, Name, Record, rtype};
use shoal_dns::{DnsError, EMBEDDED_DNS_ADDR, Resolver, bind_in_netns, service_names};
use shoal_lab::taskns::TaskNs;
use shoal_lab::{eventually, run_in_netns};

const TIMEOUT: Duration = Duration::from_secs(10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 2);

/// Asks `name` at 127.0.0.11:53 from a thread inside the namespace `ns`.
fn ask_in(ns: &str, name: &str, tcp: bool) -> anyhow::Result<Message> {
    let query = Message::query(7, Name::from_dotted(name)?, rtype::A).encode();
    let reply = run_in_netns(ns, move || -> anyhow::Result<Vec<u8>> {
        if tcp {
            let mut stream = TcpStream::connect(EMBEDDED_DNS_ADDR)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.write_all(&u16::try_from(query.len())?.to_be_bytes())?;
            stream.write_all(&query)?;
            let mut len = [0; 2];
            stream.read_exact(&mut len)?;
            let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply)?;
            Ok(reply)
        } else {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.send_to(&query, EMBEDDED_DNS_ADDR)?;
            let mut buf = vec![0; 65535];
            let n = socket.recv(&mut buf).context("no reply")?;
            buf.truncate(n);
            Ok(buf)
        }
    })??;
    Ok(Message::parse(&reply)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_namespace_gets_its_resolver_at_127_0_0_11() -> anyhow::Result<()> {
    let ns = TaskNs::create().await?;
    let resolver = Resolver::new(vec![]);
    resolver.set_names(
        "net-a",
        BTreeMap::from(service_names("web", Some(VIP), &[])),
    );
    let served = resolver.serve_task(&ns.path(), vec!["net-a".into()])?;

    let name = ns.name().to_owned();
    for tcp in [false, true] {
        let name = name.clone();
        let reply = tokio::task::spawn_blocking(move || ask_in(&name, "web", tcp)).await??;
        let addrs: Vec<_> = reply.answers.iter().filter_map(Record::ipv4).collect();
        assert_eq!(addrs, [VIP], "tcp: {tcp}");
    }

    // The port is the task's: a second bind there is refused…
    assert!(matches!(
        bind_in_netns(&ns.path(), EMBEDDED_DNS_ADDR),
        Err(DnsError::Bind { .. })
    ));
    // …until the resolver lets go of it.
    drop(served);
    let path = ns.path();
    eventually(TIMEOUT, "the resolver's socket to close", || {
        Ok(bind_in_netns(&path, EMBEDDED_DNS_ADDR).ok())
    })
    .await?;
    Ok(())
}

#[test]
fn a_missing_namespace_is_a_netns_error() {
    let missing = std::path::Path::new("/run/netns/shoal-dnstest-does-not-exist");
    assert!(matches!(
        bind_in_netns(missing, EMBEDDED_DNS_ADDR),
        Err(DnsError::Netns { op: "open", .. })
    ));
}
