//! Ethernet addresses, as the FDB and neighbour tables hold them.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address; displays and parses as `02:42:0a:00:09:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-zeros address. On a VXLAN device an FDB entry for it is the
    /// default destination that unknown and broadcast frames flood to, which
    /// is why the driver refuses to program it.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The group bit: broadcast and multicast addresses.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The address of exactly one interface: neither zero nor a group.
    pub fn is_unicast(self) -> bool {
        self != Self::ZERO && !self.is_multicast()
    }

    /// Reads a link-layer address attribute; `None` unless it is 6 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        bytes.try_into().ok().map(MacAddr)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address: write six two-digit hex octets separated by ':'")]
pub struct ParseMacError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            // from_str_radix alone would accept "+f" and "f".
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        match parts.next() {
            Some(_) => Err(err()),
            None => Ok(MacAddr(octets)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn formats_lowercase_with_colons() {
        let mac = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x09, 0xff]);
        assert_eq!(mac.to_string(), "02:42:0a:00:09:ff");
        assert_eq!("02:42:0A:00:09:FF".parse(), Ok(mac));
    }

    #[test]
    fn rejects_what_is_not_six_octets() {
        for bad in [
            "",
            "02:42:0a:00:09",
            "02:42:0a:00:09:ff:00",
            "2:42:0a:00:09:ff",
            "+2:42:0a:00:09:ff",
            "02-42-0a-00-09-ff",
            "02:42:0a:00:09:fg",
            "02:42:0a:00:09:ff:",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unicast_excludes_zero_and_groups() {
        assert!(!MacAddr::ZERO.is_unicast());
        assert!(!MacAddr([0xff; 6]).is_unicast());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_unicast());
        assert!(MacAddr([0x02, 0x42, 10, 0, 9, 2]).is_unicast());
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(octets in any::<[u8; 6]>()) {
            let mac = MacAddr(octets);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
            prop_assert_eq!(mac.to_string().len(), 17);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical_shapes(s in "\\PC{0,24}") {
            if let Ok(mac) = s.parse::<MacAddr>() {
                prop_assert_eq!(mac.to_string(), s.to_ascii_lowercase());
            }
        }

        #[test]
        fn hex_octet_strings_parse(octets in any::<[u8; 6]>(), upper in any::<bool>()) {
            let text = octets
                .iter()
                .map(|o| if upper { format!("{o:02X}") } else { format!("{o:02x}") })
                .collect::<Vec<_>>()
                .join(":");
            prop_assert_eq!(text.parse::<MacAddr>(), Ok(MacAddr(octets)));
        }
    }
}
