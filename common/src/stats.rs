//! Per-protocol packet counters and drop/exception reasons of the TC programs
//! on a node's data interface.

/// Per-CPU array of [`Counter`], indexed by [`counter_index`].
pub const STATS_MAP: &str = "SHOAL_STATS_V1";
/// Per-CPU array of `u64`, indexed by [`Reason`].
pub const REASONS_MAP: &str = "SHOAL_REASON_V1";
/// TC classifier attached to clsact ingress of the data interface.
pub const PROG_TC_INGRESS: &str = "shoal_tc_in";
/// TC classifier attached to clsact egress of the data interface.
pub const PROG_TC_EGRESS: &str = "shoal_tc_out";

/// Packets and bytes (whole frame, as `skb->len` sees it at TC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// Which way a packet crossed the data interface.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Protocol classes counted. Values are the wire contract: append only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
    /// IPv4 with any other protocol number (ESP, GRE, …).
    Ipv4Other = 3,
    Ipv6 = 4,
    Arp = 5,
    /// Any other ethertype.
    Other = 6,
}

impl Proto {
    pub const COUNT: u32 = 7;
    pub const ALL: [Proto; Proto::COUNT as usize] = [
        Proto::Tcp,
        Proto::Udp,
        Proto::Icmp,
        Proto::Ipv4Other,
        Proto::Ipv6,
        Proto::Arp,
        Proto::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Ipv4Other => "ipv4-other",
            Proto::Ipv6 => "ipv6",
            Proto::Arp => "arp",
            Proto::Other => "other",
        }
    }
}

/// Number of entries of [`STATS_MAP`].
pub const STATS_ENTRIES: u32 = 2 * Proto::COUNT;

/// Index of a (direction, protocol) pair in [`STATS_MAP`].
#[inline(always)]
pub const fn counter_index(dir: Direction, proto: Proto) -> u32 {
    dir as u32 * Proto::COUNT + proto as u32
}

/// Why a program could not handle a packet as it meant to. The counting
/// programs let such packets pass (a counter must never drop traffic); later
/// programs that do drop count their drops here too. Values are stable: a
/// reason is never renumbered, only appended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Shorter than an Ethernet header.
    TruncatedEth = 0,
    /// Ethertype says IPv4 but the IPv4 header is cut short.
    TruncatedIpv4 = 1,
    /// IPv4 header with a version or IHL that is not valid.
    BadIpv4Header = 2,
}

impl Reason {
    pub const COUNT: u32 = 3;
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::TruncatedEth,
        Reason::TruncatedIpv4,
        Reason::BadIpv4Header,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::TruncatedEth => "truncated-ethernet",
            Reason::TruncatedIpv4 => "truncated-ipv4",
            Reason::BadIpv4Header => "bad-ipv4-header",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_unique() {
        let mut seen = [false; STATS_ENTRIES as usize];
        for d in Direction::ALL {
            for p in Proto::ALL {
                let i = counter_index(d, p) as usize;
                assert!(!seen[i], "index {i} used twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        for n in [STATS_MAP, REASONS_MAP, PROG_TC_INGRESS, PROG_TC_EGRESS] {
            assert!(n.len() <= 15, "{n} is longer than BPF_OBJ_NAME_LEN - 1");
        }
    }

    #[test]
    fn enum_tables_match_their_values() {
        for (i, p) in Proto::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
