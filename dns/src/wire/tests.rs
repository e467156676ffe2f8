use super::*;
use proptest::prelude::*;

/// `dig web.example A` (dig 9.18): RD and AD set, an OPT record offering
/// 1232 bytes with a client cookie.
const DIG_QUERY: [u8; 52] = [
    0x5c, 0x1e, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // header
    0x03, b'w', b'e', b'b', 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e',
    0x00, // web.example
    0x00, 0x01, 0x00, 0x01, // A IN
    0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // OPT 1232
    0x00, 0x0a, 0x00, 0x08, 0x9a, 0x5c, 0x55, 0x0e, 0x3f, 0x2b, 0x11, 0x7d, // COOKIE
];

/// `dig +noedns +noadflag WEB A` with id 0xbeef: RD only.
const PLAIN_QUERY: [u8; 21] = [
    0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x03, b'W', b'E', b'B', 0x00, 0x00, 0x01, 0x00, 0x01,
];

/// The answer to PLAIN_QUERY with 10.0.9.2: QR AA RD RA, the question as
/// asked, one A record whose name points to the question's.
const PLAIN_ANSWER: [u8; 37] = [
    0xbe, 0xef, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, //
    0x03, b'W', b'E', b'B', 0x00, 0x00, 0x01, 0x00, 0x01, //
    0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x04, 10, 0, 9, 2,
];

fn name(dotted: &str) -> Name {
    Name::from_dotted(dotted).expect("test")
}

#[test]
fn a_dig_query_parses() {
    let m = Message::parse(&DIG_QUERY).expect("parse");
    assert_eq!(m.header.id, 0x5c1e);
    assert!(!m.header.is_response());
    assert_eq!(m.header.opcode(), 0);
    assert_ne!(m.header.flags & flags::RD, 0);
    let q = m.question.as_ref().expect("question");
    assert_eq!(q.name, name("web.example."));
    assert_eq!(q.name.lookup_key().as_deref(), Some("web.example"));
    assert_eq!((q.qtype, q.qclass), (rtype::A, CLASS_IN));
    assert_eq!(m.edns_udp_size(), Some(1232));
    assert_eq!(m.additional[0].data.len(), 12);
    assert_eq!(m.encode(), DIG_QUERY, "re-encodes byte for byte");
}

#[test]
fn queries_and_answers_encode_to_golden_bytes() {
    let query = Message::query(0xbeef, name("WEB"), rtype::A);
    assert_eq!(query.encode(), PLAIN_QUERY);
    let parsed = Message::parse(&PLAIN_QUERY).expect("parse");
    assert_eq!(parsed, query);
    assert_eq!(parsed.edns_udp_size(), None);
    assert_eq!(
        parsed
            .question
            .as_ref()
            .and_then(|q| q.name.lookup_key())
            .as_deref(),
        Some("web"),
        "keys are lower case; the question keeps its case"
    );

    let answer = crate::answer::local_answer(&parsed, &[Ipv4Addr::new(10, 0, 9, 2)], 0);
    assert_eq!(answer.encode(), PLAIN_ANSWER);
    let back = Message::parse(&PLAIN_ANSWER).expect("parse");
    assert_eq!(back.answers[0].name, name("WEB"), "the pointer is followed");
    assert_eq!(back.answers[0].ipv4(), Some(Ipv4Addr::new(10, 0, 9, 2)));
}

#[test]
fn chained_backward_pointers_are_followed() {
    // Question "b.a"; the answer's name is "c" + pointer to "a" (offset 14),
    // itself reached from the question.
    let mut bytes = vec![0, 1, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    bytes.extend_from_slice(&[1, b'b', 1, b'a', 0, 0, 1, 0, 1]);
    bytes.extend_from_slice(&[1, b'c', 0xc0, 14, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(m.answers[0].name, name("c.a"));
}

fn with_question_name(name_bytes: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(name_bytes);
    bytes.extend_from_slice(&[0, 1, 0, 1]);
    bytes
}

#[test]
fn hostile_names_are_errors() {
    // A pointer to itself, and one forward: either would loop or read
    // what was not yet validated.
    assert!(matches!(
        Message::parse(&with_question_name(&[0xc0, 12])),
        Err(WireError::ForwardPointer {
            offset: 12,
            target: 12
        })
    ));
    assert!(matches!(
        Message::parse(&with_question_name(&[0xc0, 40, 0])),
        Err(WireError::ForwardPointer { .. })
    ));
    // Two labels pointing at each other: a -> b -> a.
    let mut cycle = vec![0, 1, 0x80, 0, 0, 0, 0, 2, 0, 0, 0, 0];
    cycle.extend_from_slice(&[0xc0, 14, 0xc0, 12]);
    assert!(Message::parse(&cycle).is_err());
    let long: Vec<u8> = (0..5)
        .flat_map(|_| [63].into_iter().chain([b'x'; 63]))
        .collect();
    assert!(matches!(
        Message::parse(&with_question_name(&long)),
        Err(WireError::NameTooLong { .. })
    ));
    assert!(matches!(
        Message::parse(&with_question_name(&[0x41, b'x', 0])),
        Err(WireError::BadLabelType { byte: 0x41, .. })
    ));
    assert!(matches!(
        Message::parse(&with_question_name(&[5, b'x'])),
        Err(WireError::Truncated { .. })
    ));
    let mut two = PLAIN_QUERY.to_vec();
    two[5] = 2;
    assert_eq!(
        Message::parse(&two),
        Err(WireError::QuestionCount { count: 2 })
    );
}

#[test]
fn dotted_names_are_checked() {
    assert_eq!(name("a.b."), name("a.b"));
    assert_eq!(name("."), Name::root());
    assert_eq!(name("a.b").to_string(), "a.b.");
    assert!(Name::from_dotted("a..b").is_err());
    assert!(Name::from_dotted(&"x".repeat(64)).is_err());
    let too_long = vec!["x".repeat(63); 4].join(".");
    assert!(Name::from_dotted(&too_long).is_err());
}

#[test]
fn labels_with_dots_have_no_table_key() {
    // One label "tasks.web" must not alias the two-label name.
    let bytes = with_question_name(b"\x09tasks.web\x00");
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(m.question.and_then(|q| q.name.lookup_key()), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _outcome = Message::parse(&bytes);
        let _header = Message::parse_header(&bytes);
    }

    #[test]
    fn parsed_messages_survive_a_round_trip(bytes in proptest::collection::vec(any::<u8>(), 12..200)) {
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(Message::parse(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn every_cut_of_a_query_is_an_error(cut in 0usize..DIG_QUERY.len()) {
        prop_assert!(Message::parse(&DIG_QUERY[..cut]).is_err());
    }

    #[test]
    fn garbage_in_a_query_is_an_error_or_a_message(
        at in 12usize..DIG_QUERY.len(), byte in any::<u8>(),
    ) {
        let mut bytes = DIG_QUERY;
        bytes[at] = byte;
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(Message::parse(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn dotted_names_round_trip(labels in proptest::collection::vec("[a-zA-Z0-9-]{1,20}", 1..8)) {
        let dotted = labels.join(".");
        let n = name(&dotted);
        let m = Message::query(1, n.clone(), rtype::A);
        let back = Message::parse(&m.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.question.map(|q| q.name), Some(n.clone()));
        prop_assert_eq!(n.lookup_key(), Some(dotted.to_ascii_lowercase()));
    }
}
