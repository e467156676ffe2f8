//! DNS messages (RFC 1035 §4) as far as a resolver for tasks needs them: the
//! header, at most one question, resource records kept as opaque data, and
//! EDNS's OPT record (RFC 6891) for the client's UDP size.
//!
//! Parsing takes untrusted bytes: every read is bounds-checked, names are
//! limited to 255 bytes, and a compression pointer must point before the
//! label sequence it interrupts, so every jump moves strictly backwards and
//! no pointer chain can loop.

use std::net::Ipv4Addr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, length octets included (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Largest UDP message to a client that sent no OPT record (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LEN: usize = 512;

/// Record types this crate names.
pub mod rtype {
    pub const A: u16 = 1;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

/// The Internet class.
pub const CLASS_IN: u16 = 1;
/// QCLASS `*`.
pub const CLASS_ANY: u16 = 255;

/// Header flag bits.
pub mod flags {
    /// A response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated: retry over TCP.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled (RFC 4035), echoed back.
    pub const CD: u16 = 0x0010;
}

/// Response codes a resolver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// Why bytes are not a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message ends at byte {offset}, inside the {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("the name at byte {offset} is longer than 255 bytes")]
    NameTooLong { offset: usize },
    #[error(
        "label type {byte:#04x} at byte {offset} is reserved (only lengths and pointers exist)"
    )]
    BadLabelType { offset: usize, byte: u8 },
    #[error("the compression pointer at byte {offset} points forward to {target}")]
    ForwardPointer { offset: usize, target: usize },
    #[error("{count} questions: a query has exactly one")]
    QuestionCount { count: u16 },
    #[error("{name:?} is not a domain name: {reason}")]
    BadName { name: String, reason: &'static str },
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z, AD, CD and RCODE, as on the wire.
    pub flags: u16,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & flags::QR != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    pub fn truncated(&self) -> bool {
        self.flags & flags::TC != 0
    }

    pub fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }
}

/// A domain name as labels, in the case they came in (clients using 0x20
/// randomisation check that the question comes back unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root name (empty).
    pub fn root() -> Name {
        Name::default()
    }

    /// From `a.b.c` or `a.b.c.`.
    pub fn from_dotted(name: &str) -> Result<Name, WireError> {
        let bad = |reason| WireError::BadName {
            name: name.to_owned(),
            reason,
        };
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Ok(Name::root());
        }
        let labels: Vec<Vec<u8>> = trimmed.split('.').map(|l| l.as_bytes().to_vec()).collect();
        if labels.iter().any(Vec::is_empty) {
            return Err(bad("empty label"));
        }
        if labels.iter().any(|l| l.len() > MAX_LABEL_LEN) {
            return Err(bad("a label is longer than 63 bytes"));
        }
        let name = Name { labels };
        if name.wire_len() > MAX_NAME_LEN {
            return Err(bad("longer than 255 bytes"));
        }
        Ok(name)
    }

    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        self.labels.iter().map(Vec::as_slice)
    }

    /// The name as the table keys it: lower case, dotted, no trailing dot.
    /// `None` when it cannot be a table name: a label holding a `.` (which
    /// would alias a different name once joined) or non-UTF-8 bytes.
    pub fn lookup_key(&self) -> Option<String> {
        if self.labels.iter().any(|l| l.contains(&b'.')) {
            return None;
        }
        let joined = self.labels.join(&b'.');
        let mut key = String::from_utf8(joined).ok()?;
        key.make_ascii_lowercase();
        Some(key)
    }

    fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for label in &self.labels {
            // Lengths are at most 63: checked by both constructors.
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for label in &self.labels {
            write!(f, "{}.", String::from_utf8_lossy(label))?;
        }
        if self.labels.is_empty() {
            f.write_str(".")?;
        }
        Ok(())
    }
}

/// The question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// A resource record; its data is kept as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub data: Vec<u8>,
}

impl Record {
    /// An A record.
    pub fn a(name: Name, ttl: u32, addr: Ipv4Addr) -> Record {
        Record {
            name,
            rtype: rtype::A,
            class: CLASS_IN,
            ttl,
            data: addr.octets().to_vec(),
        }
    }

    /// An OPT pseudo-record offering `udp_size` bytes, no options.
    pub fn opt(udp_size: u16) -> Record {
        Record {
            name: Name::root(),
            rtype: rtype::OPT,
            class: udp_size,
            ttl: 0,
            data: Vec::new(),
        }
    }

    /// The address of an A record.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let octets: [u8; 4] = self.data.as_slice().try_into().ok()?;
        (self.rtype == rtype::A).then_some(Ipv4Addr::from(octets))
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub header: Header,
    pub question: Option<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.saturating_add(n);
        let slice = self.bytes.get(self.pos..end).ok_or(WireError::Truncated {
            offset: self.bytes.len(),
            what,
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<Name, WireError> {
        let (bytes, start) = (self.bytes, self.pos);
        let truncated = || WireError::Truncated {
            offset: bytes.len(),
            what: "name",
        };
        let byte_at = |at: usize| bytes.get(at).copied().ok_or_else(truncated);
        let mut labels = Vec::new();
        let mut wire_len = 1;
        let mut pos = start;
        // A pointer must point below this: the start of the label sequence
        // being read. It only ever decreases, so the jumps end.
        let mut limit = start;
        let mut resume = None;
        loop {
            let len = byte_at(pos)?;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    self.pos = resume.unwrap_or(pos + 1);
                    return Ok(Name { labels });
                }
                0x00 => {
                    let len = usize::from(len);
                    wire_len += len + 1;
                    if wire_len > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong { offset: start });
                    }
                    let label = bytes.get(pos + 1..pos + 1 + len).ok_or_else(truncated)?;
                    labels.push(label.to_vec());
                    pos += 1 + len;
                }
                0xC0 => {
                    let low = byte_at(pos + 1)?;
                    let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                    if target >= limit {
                        return Err(WireError::ForwardPointer {
                            offset: pos,
                            target,
                        });
                    }
                    resume.get_or_insert(pos + 2);
                    limit = target;
                    pos = target;
                }
                _ => {
                    return Err(WireError::BadLabelType {
                        offset: pos,
                        byte: len,
                    });
                }
            }
        }
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let name = self.name()?;
        let rtype = self.u16("record type")?;
        let class = self.u16("record class")?;
        let ttl = self.u32("record TTL")?;
        let len = self.u16("record data length")?;
        let data = self.take(usize::from(len), "record data")?.to_vec();
        Ok(Record {
            name,
            rtype,
            class,
            ttl,
            data,
        })
    }

    fn records(&mut self, count: u16) -> Result<Vec<Record>, WireError> {
        // No preallocation from the count: it is untrusted.
        (0..count).map(|_| self.record()).collect()
    }
}

impl Message {
    /// Parses a message with zero or one question. Bytes after the last
    /// record are ignored, as most servers do.
    pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { bytes, pos: 0 };
        let id = r.u16("header")?;
        let flags = r.u16("header")?;
        let qdcount = r.u16("header")?;
        let ancount = r.u16("header")?;
        let nscount = r.u16("header")?;
        let arcount = r.u16("header")?;
        if qdcount > 1 {
            return Err(WireError::QuestionCount { count: qdcount });
        }
        let question = if qdcount == 1 {
            Some(Question {
                name: r.name()?,
                qtype: r.u16("question type")?,
                qclass: r.u16("question class")?,
            })
        } else {
            None
        };
        Ok(Message {
            header: Header { id, flags },
            question,
            answers: r.records(ancount)?,
            authority: r.records(nscount)?,
            additional: r.records(arcount)?,
        })
    }

    /// Just the header of `bytes`, if it has one: enough to answer FORMERR
    /// to a message that does not parse.
    pub fn parse_header(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..4)?;
        Some(Header {
            id: u16::from_be_bytes([b[0], b[1]]),
            flags: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// A recursive query for `name`.
    pub fn query(id: u16, name: Name, qtype: u16) -> Message {
        Message {
            header: Header {
                id,
                flags: flags::RD,
            },
            question: Some(Question {
                name,
                qtype,
                qclass: CLASS_IN,
            }),
            ..Message::default()
        }
    }

    /// The UDP payload size the sender offers in its OPT record, if it sent
    /// one (never below 512, RFC 6891 §6.2.5).
    pub fn edns_udp_size(&self) -> Option<u16> {
        self.additional
            .iter()
            .find(|r| r.rtype == rtype::OPT)
            .map(|opt| opt.class.max(CLASSIC_UDP_LEN as u16))
    }

    /// The message on the wire. Records named like the question point to it
    /// (the only compression needed for answers to one question).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CLASSIC_UDP_LEN);
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
        out.extend_from_slice(&self.header.id.to_be_bytes());
        out.extend_from_slice(&self.header.flags.to_be_bytes());
        out.extend_from_slice(&count(usize::from(self.question.is_some())));
        out.extend_from_slice(&count(self.answers.len()));
        out.extend_from_slice(&count(self.authority.len()));
        out.extend_from_slice(&count(self.additional.len()));
        if let Some(q) = &self.question {
            q.name.encode(&mut out);
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        let records = self
            .answers
            .iter()
            .chain(&self.authority)
            .chain(&self.additional);
        for record in records {
            match &self.question {
                Some(q) if q.name == record.name && !q.name.labels.is_empty() => {
                    out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
                }
                _ => record.name.encode(&mut out),
            }
            out.extend_from_slice(&record.rtype.to_be_bytes());
            out.extend_from_slice(&record.class.to_be_bytes());
            out.extend_from_slice(&record.ttl.to_be_bytes());
            out.extend_from_slice(&count(record.data.len()));
            out.extend_from_slice(&record.data);
        }
        out
    }
}

#[cfg(test)]
mod tests;
