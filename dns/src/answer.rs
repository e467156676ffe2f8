//! Replies built here, without I/O: local answers, error replies, and the
//! size limit of the transport.

use std::net::Ipv4Addr;

use crate::wire::{
    CLASS_ANY, CLASS_IN, CLASSIC_UDP_LEN, Header, Message, Rcode, Record, flags, rtype,
};

/// TTL of local answers. Swarm says 600 s, so a client that caches (nscd,
/// a JVM, a connection pool's resolver) keeps using removed tasks for ten
/// minutes after a scale-down or an update; the answer is local and cheap,
/// so a couple of seconds costs nothing and bounds that staleness.
pub const LOCAL_TTL: u32 = 2;

/// The UDP payload size offered in our OPT records: the DNS flag day 2020
/// value, which avoids IP fragmentation on any path.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// How a query came in, which bounds the reply's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Flags of a reply to `query`: RD and CD echoed, recursion available.
fn reply_flags(query: Header, rcode: Rcode) -> u16 {
    flags::QR | flags::RA | (query.flags & (flags::RD | flags::CD)) | rcode as u16
}

/// A reply with no records, for a query whose header is all that is known.
pub fn error_reply(query: Header, rcode: Rcode) -> Vec<u8> {
    Message {
        header: Header {
            id: query.id,
            flags: reply_flags(query, rcode),
        },
        ..Message::default()
    }
    .encode()
}

/// A reply with no records but the question and, if the query had one, an
/// OPT record.
pub fn empty_reply(query: &Message, rcode: Rcode) -> Message {
    Message {
        header: Header {
            id: query.header.id,
            flags: reply_flags(query.header, rcode),
        },
        question: query.question.clone(),
        additional: query
            .edns_udp_size()
            .map(|_| vec![Record::opt(EDNS_UDP_SIZE)])
            .unwrap_or_default(),
        ..Message::default()
    }
}

/// Whether a question could be about a table name at all: class IN (or *).
pub fn is_internet(query: &Message) -> bool {
    query
        .question
        .as_ref()
        .is_some_and(|q| q.qclass == CLASS_IN || q.qclass == CLASS_ANY)
}

/// The authoritative answer for a name in the table with `addrs`, the
/// first at `rotation % len` (round robin over queries, as swarm spreads
/// clients over a dnsrr service's tasks). Only A (and *) get records:
/// AAAA and the rest get NOERROR with none, so clients fall back to A
/// instead of concluding the name does not exist.
pub fn local_answer(query: &Message, addrs: &[Ipv4Addr], rotation: usize) -> Message {
    let mut reply = empty_reply(query, Rcode::NoError);
    reply.header.flags |= flags::AA;
    if let Some(q) = &query.question
        && (q.qtype == rtype::A || q.qtype == rtype::ANY)
        && !addrs.is_empty()
    {
        let start = rotation % addrs.len();
        reply.answers = addrs[start..]
            .iter()
            .chain(&addrs[..start])
            .map(|addr| Record::a(q.name.clone(), LOCAL_TTL, *addr))
            .collect();
    }
    reply
}

/// The largest reply the client takes over `transport`.
pub fn size_limit(query: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => query
            .edns_udp_size()
            .map_or(CLASSIC_UDP_LEN, |size| usize::from(size.min(EDNS_UDP_SIZE))),
    }
}

/// `reply` on the wire, truncated to `limit`: over it, the records are
/// dropped and TC set, so the client retries over TCP (RFC 1035 §4.2.1).
pub fn encode_within(mut reply: Message, limit: usize) -> Vec<u8> {
    let bytes = reply.encode();
    if bytes.len() <= limit {
        return bytes;
    }
    reply.header.flags |= flags::TC;
    reply.answers.clear();
    reply.authority.clear();
    // RFC 6891 §7: the OPT record stays even in a truncated reply.
    reply.additional.retain(|r| r.rtype == rtype::OPT);
    reply.encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Name;

    fn query(name: &str, qtype: u16) -> Message {
        Message::query(7, Name::from_dotted(name).expect("test"), qtype)
    }

    fn addrs(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(10, 0, 9, i)).collect()
    }

    fn answered(reply: &Message) -> Vec<Ipv4Addr> {
        reply.answers.iter().filter_map(Record::ipv4).collect()
    }

    #[test]
    fn answers_rotate_over_queries() {
        let q = query("tasks.web", rtype::A);
        let all = addrs(3);
        assert_eq!(answered(&local_answer(&q, &all, 0)), all);
        assert_eq!(
            answered(&local_answer(&q, &all, 4)),
            [all[1], all[2], all[0]]
        );
        let reply = local_answer(&q, &all, 0);
        assert_eq!(reply.header.rcode(), Rcode::NoError as u8);
        assert_ne!(reply.header.flags & flags::AA, 0);
        assert_ne!(reply.header.flags & flags::RD, 0);
        assert!(reply.answers.iter().all(|r| r.ttl == LOCAL_TTL));
    }

    #[test]
    fn aaaa_for_a_known_name_is_nodata() {
        let reply = local_answer(&query("web", rtype::AAAA), &addrs(1), 0);
        assert_eq!(reply.header.rcode(), Rcode::NoError as u8);
        assert!(reply.answers.is_empty());
        assert!(
            local_answer(&query("web", rtype::A), &[], 0)
                .answers
                .is_empty()
        );
    }

    #[test]
    fn big_udp_answers_are_truncated_unless_edns_allows_them() {
        // 12 + 16 (question) + 16 per record: 31 records pass 512 bytes.
        let q = query("tasks.web", rtype::A);
        let bytes = encode_within(
            local_answer(&q, &addrs(40), 0),
            size_limit(&q, Transport::Udp),
        );
        let reply = Message::parse(&bytes).expect("test");
        assert!(reply.header.truncated());
        assert!(reply.answers.is_empty());
        assert_eq!(reply.question, q.question);

        let tcp = encode_within(
            local_answer(&q, &addrs(40), 0),
            size_limit(&q, Transport::Tcp),
        );
        assert_eq!(Message::parse(&tcp).expect("test").answers.len(), 40);

        let mut edns = q.clone();
        edns.additional.push(Record::opt(4096));
        assert_eq!(
            size_limit(&edns, Transport::Udp),
            usize::from(EDNS_UDP_SIZE)
        );
        let bytes = encode_within(
            local_answer(&edns, &addrs(40), 0),
            size_limit(&edns, Transport::Udp),
        );
        let reply = Message::parse(&bytes).expect("test");
        assert!(!reply.header.truncated());
        assert_eq!(reply.answers.len(), 40);
        assert_eq!(reply.edns_udp_size(), Some(EDNS_UDP_SIZE));
    }
}
