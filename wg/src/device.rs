use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::{fd::IntoRawFd, unix::net::UnixStream},
    sync::Mutex,
    time::Duration,
};

use boringtun::device::{DeviceConfig, DeviceHandle};

use crate::{
    KeyPair, PublicKey, WgError,
    uapi::{self, DeviceStatus, PeerChange},
};

/// How long a UAPI request may take: boringtun answers from its event
/// loop, so this only bounds a wedged device.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TunnelOptions {
    pub name: String,
    pub port: u16,
    /// boringtun's worker threads (and TUN queues).
    pub threads: usize,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        TunnelOptions {
            name: crate::DEVICE.to_owned(),
            port: crate::PORT,
            threads: 2,
        }
    }
}

/// A running boringtun device in the calling thread's network namespace
/// (its TUN and UDP socket are made there). Dropping it stops the device
/// and removes the TUN.
pub struct Tunnel {
    name: String,
    uapi: Mutex<BufReader<UnixStream>>,
    /// The peers as last written: VTEP → key.
    peers: Mutex<BTreeMap<Ipv4Addr, PublicKey>>,
    _device: DeviceHandle,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Makes the TUN (down: the caller sets MTU and up through netlink)
    /// and gives it `keys` and the port.
    pub fn create(opts: &TunnelOptions, keys: &KeyPair) -> Result<Tunnel, WgError> {
        let (ours, theirs) = UnixStream::pair().map_err(WgError::Uapi)?;
        ours.set_read_timeout(Some(UAPI_TIMEOUT))
            .map_err(WgError::Uapi)?;
        let config = DeviceConfig {
            n_threads: opts.threads.max(1),
            use_connected_socket: true,
            use_multi_queue: true,
            uapi_fd: theirs.into_raw_fd(),
        };
        let device = DeviceHandle::new(&opts.name, config).map_err(|e| WgError::Create {
            name: opts.name.clone(),
            detail: format!("{e:?}"),
        })?;
        let t = Tunnel {
            name: opts.name.clone(),
            uapi: Mutex::new(BufReader::new(ours)),
            peers: Mutex::new(BTreeMap::new()),
            _device: device,
        };
        t.request("the key and port", &uapi::set_device(keys, opts.port))?;
        Ok(t)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the private key: every session restarts with a handshake.
    pub fn set_key(&self, keys: &KeyPair) -> Result<(), WgError> {
        self.request("the new key", &uapi::set_private_key(keys))
            .map(drop)
    }

    /// Brings the peers to `want` (VTEP → key): a changed key replaces its
    /// peer (the old key's sessions end), a gone node's peer is removed.
    /// Returns how many peers changed.
    pub fn sync_peers(&self, want: &BTreeMap<Ipv4Addr, PublicKey>) -> Result<usize, WgError> {
        let mut have = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let changes = peer_changes(&have, want);
        for c in &changes {
            if let Err(e) = self.request("a peer", &uapi::set_peer(c)) {
                // Unknown where the device stands: the next sync rewrites all.
                have.clear();
                return Err(e);
            }
        }
        *have = want.clone();
        Ok(changes.len())
    }

    /// One peer change, outside [`sync_peers`](Self::sync_peers)'s
    /// bookkeeping (benchmarks joining two namespaces by hand).
    pub fn set_peer(&self, change: &PeerChange) -> Result<(), WgError> {
        self.request("a peer", &uapi::set_peer(change)).map(drop)
    }

    /// A hand-made WireGuard host in the calling thread's namespace: a
    /// tunnel with one peer, up with `addr/prefix` ([`bring_up`](crate::bring_up),
    /// on a runtime of its own, so any thread may call this). What
    /// benchmarks' baselines and tests' rogue hosts use; the agent keeps
    /// its peers with [`sync_peers`](Self::sync_peers).
    pub fn standalone(
        keys: &KeyPair,
        peer: &PeerChange,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<Tunnel, WgError> {
        let opts = TunnelOptions::default();
        let t = Tunnel::create(&opts, keys)?;
        t.set_peer(peer)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WgError::Link {
                device: opts.name.clone(),
                detail: format!("a runtime for netlink: {e}"),
            })?
            .block_on(crate::bring_up(&opts.name, addr, prefix))?;
        Ok(t)
    }

    pub fn status(&self) -> Result<DeviceStatus, WgError> {
        let lines = self.request("get", "get=1\n\n")?;
        uapi::parse_status(&lines)
    }

    fn request(&self, what: &'static str, text: &str) -> Result<Vec<String>, WgError> {
        let mut uapi = self.uapi.lock().unwrap_or_else(|p| p.into_inner());
        uapi.get_mut()
            .write_all(text.as_bytes())
            .map_err(WgError::Uapi)?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if uapi.read_line(&mut line).map_err(WgError::Uapi)? == 0 {
                return Err(WgError::Uapi(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end_matches('\n').to_owned();
            let end = line.is_empty()
                && lines
                    .last()
                    .is_some_and(|l: &String| l.starts_with("errno="));
            if end {
                break;
            }
            if !line.is_empty() {
                lines.push(line);
            }
        }
        match uapi::errno(&lines)? {
            0 => Ok(lines),
            errno => Err(WgError::Refused { what, errno }),
        }
    }
}

// The agent shares one Tunnel between its loops.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Tunnel>();
};

/// Removals first (a key that moved to another VTEP must let go of its
/// allowed IP before the new peer takes it), then sets.
pub fn peer_changes(
    have: &BTreeMap<Ipv4Addr, PublicKey>,
    want: &BTreeMap<Ipv4Addr, PublicKey>,
) -> Vec<PeerChange> {
    let mut out: Vec<PeerChange> = have
        .iter()
        .filter(|(addr, key)| want.get(addr) != Some(key))
        .map(|(_, key)| PeerChange::Remove { key: *key })
        .collect();
    out.extend(
        want.iter()
            .filter(|(addr, key)| have.get(addr) != Some(key))
            .map(|(addr, key)| PeerChange::Set {
                key: *key,
                endpoint: *addr,
                allowed: *addr,
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_peers_are_written_removals_first() {
        let k = |_: u8| KeyPair::generate().public();
        let (a, b, c, b2) = (k(1), k(2), k(3), k(4));
        let ip = |n| Ipv4Addr::new(10, 0, 0, n);
        let have = BTreeMap::from([(ip(1), a), (ip(2), b)]);
        assert!(peer_changes(&have, &have).is_empty());
        let want = BTreeMap::from([(ip(2), b2), (ip(3), c)]);
        assert_eq!(
            peer_changes(&have, &want),
            vec![
                PeerChange::Remove { key: a },
                PeerChange::Remove { key: b },
                PeerChange::Set {
                    key: b2,
                    endpoint: ip(2),
                    allowed: ip(2),
                },
                PeerChange::Set {
                    key: c,
                    endpoint: ip(3),
                    allowed: ip(3),
                },
            ]
        );
    }
}
