//! IPv4 addresses on the wire: `fixed32` numbers and [`Ipv4Prefix`], never
//! text to parse again.

use std::{fmt, net::Ipv4Addr};

use shoal_common::net::Ipv4Net;

use crate::{cluster::v1::Ipv4Prefix, words::WireError};

impl Ipv4Prefix {
    /// An interface address and its subnet's prefix length (`10.0.1.7/24`).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Ipv4Prefix {
            addr: u32::from(addr),
            prefix_len: u32::from(prefix_len),
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length, refused past 32 naming `field`.
    pub fn prefix(&self, field: impl FnOnce() -> String) -> Result<u8, WireError> {
        u8::try_from(self.prefix_len)
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| WireError::Invalid {
                field: field(),
                reason: format!("prefix length {} is larger than 32", self.prefix_len),
            })
    }

    /// The network this prefix is: host bits must be clear.
    pub fn net(&self, field: impl Fn() -> String) -> Result<Ipv4Net, WireError> {
        Ipv4Net::new(self.ip(), self.prefix(&field)?).map_err(|e| WireError::Invalid {
            field: field(),
            reason: e.to_string(),
        })
    }
}

impl From<Ipv4Net> for Ipv4Prefix {
    fn from(n: Ipv4Net) -> Self {
        Ipv4Prefix::new(n.network(), n.prefix_len())
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_print_as_cidrs_and_check_their_length() {
        let p = Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, 7), 24);
        assert_eq!(p.to_string(), "10.0.1.7/24");
        assert_eq!(p.addr, 0x0a00_0107);
        assert!(p.net(|| "subnet".into()).is_err(), "host bits");
        let bad = Ipv4Prefix {
            addr: 0,
            prefix_len: 33,
        };
        assert_eq!(
            bad.prefix(|| "vips[0].addr".into())
                .map_err(|e| e.to_string()),
            Err("vips[0].addr: prefix length 33 is larger than 32".into())
        );
        let n = Ipv4Net::new(Ipv4Addr::new(10, 0, 9, 0), 24).map_err(|e| e.to_string());
        assert_eq!(
            n.map(Ipv4Prefix::from).map(|p| p.to_string()),
            Ok("10.0.9.0/24".into())
        );
    }
}
