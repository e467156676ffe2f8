//! WireGuard's configuration protocol (the cross-platform UAPI), the part
//! boringtun speaks: `set=1` and `get=1` requests, `key=value` lines, an
//! empty line to end, and `errno=N` in reply. Pure text, so tested here.

use std::{net::Ipv4Addr, time::Duration};

use crate::{KeyPair, PORT, PublicKey, WgError};

/// One change to the device's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// A peer reached at `endpoint` on [`PORT`], whose packets may come
    /// from `allowed` only (a node: both are its VTEP).
    Set {
        key: PublicKey,
        endpoint: Ipv4Addr,
        allowed: Ipv4Addr,
    },
    Remove {
        key: PublicKey,
    },
}

/// The device's own key and port.
pub fn set_device(keys: &KeyPair, port: u16) -> String {
    format!(
        "set=1\nprivate_key={}\nlisten_port={port}\n\n",
        keys.secret_hex()
    )
}

/// A new private key; boringtun restarts every peer's handshake with it.
pub fn set_private_key(keys: &KeyPair) -> String {
    format!("set=1\nprivate_key={}\n\n", keys.secret_hex())
}

/// One peer change per request: boringtun (0.7) carries a section's
/// `remove=true` over into the next `public_key=` section of the same
/// request, which would remove the peer just added.
pub fn set_peer(change: &PeerChange) -> String {
    match change {
        PeerChange::Remove { key } => format!("set=1\npublic_key={}\nremove=true\n\n", key.hex()),
        PeerChange::Set {
            key,
            endpoint,
            allowed,
        } => format!(
            "set=1\npublic_key={}\nendpoint={endpoint}:{PORT}\nreplace_allowed_ips=true\n\
             allowed_ip={allowed}/32\n\n",
            key.hex()
        ),
    }
}

/// The `errno=N` of a reply: 0 is success.
pub fn errno(lines: &[String]) -> Result<i32, WgError> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("errno="))
        .ok_or_else(|| WgError::Reply {
            line: lines.join("\\n"),
            why: "no errno line",
        })?;
    line["errno=".len()..].parse().map_err(|_| WgError::Reply {
        line: line.clone(),
        why: "errno is not a number",
    })
}

/// One peer in a `get=1` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub key: Option<PublicKey>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// boringtun reports the time since the last handshake (not a date).
    pub since_handshake: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The device in a `get=1` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    pub public_key: Option<PublicKey>,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerStatus>,
}

/// Reads a `get=1` reply. Unknown keys are skipped (newer boringtuns say
/// more); a value that does not parse is an error naming its line.
pub fn parse_status(lines: &[String]) -> Result<DeviceStatus, WgError> {
    let mut out = DeviceStatus::default();
    let bad = |line: &str, why| WgError::Reply {
        line: line.to_owned(),
        why,
    };
    let key = |line: &str, v: &str| {
        hex::decode(v)
            .ok()
            .and_then(|b| PublicKey::from_slice(&b).ok())
            .ok_or_else(|| bad(line, "not a 32-byte hex key"))
    };
    let num = |line: &str, v: &str| v.parse::<u64>().map_err(|_| bad(line, "not a number"));
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(line, "no '='"));
        };
        let peer = out.peers.last_mut();
        match (k, peer) {
            ("own_public_key", _) => out.public_key = Some(key(line, v)?),
            ("listen_port", _) => {
                out.listen_port = Some(v.parse().map_err(|_| bad(line, "not a port"))?)
            }
            ("public_key", _) => out.peers.push(PeerStatus {
                key: Some(key(line, v)?),
                ..PeerStatus::default()
            }),
            ("errno", _) => {}
            (_, None) => {}
            ("endpoint", Some(p)) => p.endpoint = Some(v.to_owned()),
            ("allowed_ip", Some(p)) => p.allowed_ips.push(v.to_owned()),
            ("last_handshake_time_sec", Some(p)) => {
                let nanos = p.since_handshake.map_or(0, |d| d.subsec_nanos());
                p.since_handshake = Some(Duration::new(num(line, v)?, nanos));
            }
            ("last_handshake_time_nsec", Some(p)) => {
                let secs = p.since_handshake.map_or(0, |d| d.as_secs());
                let n = u32::try_from(num(line, v)?).map_err(|_| bad(line, "too many ns"))?;
                p.since_handshake = Some(Duration::new(secs, n.min(999_999_999)));
            }
            ("rx_bytes", Some(p)) => p.rx_bytes = num(line, v)?,
            ("tx_bytes", Some(p)) => p.tx_bytes = num(line, v)?,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    #[test]
    fn peer_changes_are_written_as_the_protocol_wants() {
        let (a, b) = (KeyPair::generate().public(), KeyPair::generate().public());
        assert_eq!(
            set_peer(&PeerChange::Remove { key: a }),
            format!("set=1\npublic_key={}\nremove=true\n\n", a.hex())
        );
        let set = set_peer(&PeerChange::Set {
            key: b,
            endpoint: Ipv4Addr::new(10, 0, 0, 2),
            allowed: Ipv4Addr::new(10, 0, 0, 2),
        });
        assert_eq!(
            set,
            format!(
                "set=1\npublic_key={}\nendpoint=10.0.0.2:51820\nreplace_allowed_ips=true\n\
                 allowed_ip=10.0.0.2/32\n\n",
                b.hex()
            )
        );
        // Never a second section whose `remove` could leak into the next.
        assert_eq!(set.matches("public_key=").count(), 1);
        assert!(set_device(&KeyPair::generate(), 51820).ends_with("listen_port=51820\n\n"));
    }

    #[test]
    fn a_status_reply_reads_back() {
        let (own, peer) = (KeyPair::generate().public(), KeyPair::generate().public());
        let reply = format!(
            "own_public_key={}\nlisten_port=51820\npublic_key={}\nendpoint=10.0.0.2:51820\n\
             allowed_ip=10.0.0.2/32\nlast_handshake_time_sec=3\nlast_handshake_time_nsec=5\n\
             rx_bytes=10\ntx_bytes=20\nerrno=0\n",
            own.hex(),
            peer.hex()
        );
        let s = parse_status(&lines(&reply)).expect("parses");
        assert_eq!(s.public_key, Some(own));
        assert_eq!(s.listen_port, Some(51820));
        assert_eq!(
            s.peers,
            vec![PeerStatus {
                key: Some(peer),
                endpoint: Some("10.0.0.2:51820".into()),
                allowed_ips: vec!["10.0.0.2/32".into()],
                since_handshake: Some(Duration::new(3, 5)),
                rx_bytes: 10,
                tx_bytes: 20,
            }]
        );
        assert_eq!(errno(&lines(&reply)).ok(), Some(0));
    }

    #[test]
    fn bad_replies_name_their_line() {
        let e = parse_status(&lines("listen_port=99999"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("listen_port=99999")));
        assert!(errno(&lines("rx_bytes=1")).is_err());
        assert!(errno(&lines("errno=x")).is_err());
        assert_eq!(errno(&lines("errno=22\n")).ok(), Some(22));
    }

    proptest! {
        #[test]
        fn any_reply_parses_or_errs_without_panic(text in "(([a-z_]{0,12}=?[0-9a-f:./]{0,70})\n){0,12}") {
            let l = lines(&text);
            let _ = parse_status(&l);
            let _ = errno(&l);
        }
    }
}
