//! WireGuard for `--opt encrypted=wireguard` networks on this node: the
//! node's key pair (made at start, in memory only, published through its
//! heartbeats), the boringtun device made when the first such network is
//! assigned, and its peers kept in line with each assignment set's nodes.
//!
//! Rotation: a new pair is first only published (the heartbeat carries the
//! pending public key); the device switches to it once the managers' set
//! shows it in this node's record, i.e. when the other nodes are being
//! told too, so the gap in which the two sides disagree is the spread of
//! one set's delivery, and a handshake retry covers it.
//!
//! Fail closed: a WireGuard network's VXLAN device is bound to the tunnel,
//! so without the device the network cannot be made, and the data
//! interface drops VXLAN of its VNI arriving in clear.

use std::{collections::BTreeMap, net::Ipv4Addr};

use shoal_api::cluster::v1::{AssignmentSet, Encryption};
use shoal_wg::{KeyPair, PublicKey, Tunnel, TunnelOptions, WgError};

/// What `node stats` and `node doctor` show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireguardStatus {
    pub device: bool,
    pub peers: u64,
    pub rotations: u64,
    /// Device, key or peer writes that failed.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// A peer whose last handshake is older than this has no session
/// (WireGuard's REJECT_AFTER_TIME is 180 s).
const SESSION_AGE: std::time::Duration = std::time::Duration::from_secs(180);

/// The node's WireGuard state.
#[derive(Debug)]
pub struct Wireguard {
    keys: KeyPair,
    /// A rotated pair, published but not yet used.
    pending: Option<KeyPair>,
    tunnel: Option<Tunnel>,
    status: WireguardStatus,
}

impl Default for Wireguard {
    fn default() -> Self {
        Wireguard::new()
    }
}

/// Whether the set has a WireGuard network for this node.
pub fn needed(set: &AssignmentSet) -> bool {
    set.networks
        .iter()
        .any(|n| n.encryption() == Encryption::Wireguard)
}

/// The peers a node wants: every other node that reported a key, by VTEP.
pub fn peers(set: &AssignmentSet, me: &str) -> BTreeMap<Ipv4Addr, PublicKey> {
    set.nodes
        .iter()
        .filter(|n| n.id != me && n.addr != 0)
        .filter_map(|n| {
            Some((
                Ipv4Addr::from(n.addr),
                PublicKey::from_slice(&n.wireguard_key).ok()?,
            ))
        })
        .collect()
}

impl Wireguard {
    pub fn new() -> Wireguard {
        Wireguard {
            keys: KeyPair::generate(),
            pending: None,
            tunnel: None,
            status: WireguardStatus::default(),
        }
    }

    /// The key the heartbeat publishes: the pending one during a rotation.
    pub fn published(&self) -> PublicKey {
        self.pending.as_ref().unwrap_or(&self.keys).public()
    }

    pub fn status(&self) -> WireguardStatus {
        self.status.clone()
    }

    /// Starts a rotation: the new key is published from the next heartbeat
    /// on and used once the managers' set carries it.
    pub fn rotate(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(KeyPair::generate());
        }
    }

    /// Makes the device (in this process's network namespace) if it is not
    /// there; the caller then brings the link up ([`bring_up`]).
    pub fn ensure_device(&mut self) -> Result<bool, WgError> {
        if self.tunnel.is_some() {
            return Ok(false);
        }
        let tunnel = Tunnel::create(&TunnelOptions::default(), &self.keys)
            .inspect_err(|e| self.failed(e))?;
        tracing::info!(device = tunnel.name(), key = %self.keys.public(), "WireGuard device made");
        self.tunnel = Some(tunnel);
        self.status.device = true;
        Ok(true)
    }

    /// Drops a device that could not be brought up, so the next use makes
    /// it again.
    pub fn drop_device(&mut self) {
        self.tunnel = None;
        self.status.device = false;
    }

    /// Brings the peers to the set's nodes and finishes a rotation the set
    /// confirms. Without a device only the rotation is followed.
    pub fn sync(&mut self, set: &AssignmentSet, me: &str) {
        let confirmed = self.pending.as_ref().is_some_and(|p| {
            set.nodes
                .iter()
                .any(|n| n.id == me && n.wireguard_key == p.public().0)
        });
        if confirmed && let Some(next) = self.pending.take() {
            if let Some(t) = &self.tunnel
                && let Err(e) = t.set_key(&next)
            {
                tracing::error!(error = %e, "WireGuard: switching to the rotated key");
                self.failed(&e);
                self.pending = Some(next);
                return;
            }
            tracing::info!(key = %next.public(), "WireGuard key rotated");
            self.keys = next;
            self.status.rotations += 1;
        }
        let Some(t) = &self.tunnel else {
            return;
        };
        let want = peers(set, me);
        match t.sync_peers(&want) {
            Ok(0) => {}
            Ok(changed) => {
                tracing::info!(peers = want.len(), changed, "WireGuard peers updated");
            }
            Err(e) => {
                tracing::warn!(error = %e, "WireGuard: writing the peers");
                self.failed(&e);
            }
        }
        self.status.peers = want.len() as u64;
    }

    fn failed(&mut self, e: &WgError) {
        self.status.errors += 1;
        self.status.last_error = Some(e.to_string());
    }

    /// `node stats`' counters, from the device itself (its `get=1`
    /// answer); none without a device.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let Some(t) = &self.tunnel else {
            return Vec::new();
        };
        let (mut sessions, mut rx, mut tx, mut peers) = (0, 0, 0, 0);
        let device = match t.status() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "WireGuard: reading the device's status");
                return vec![("device answering", 0), ("errors", self.status.errors)];
            }
        };
        for p in &device.peers {
            peers += 1;
            rx += p.rx_bytes;
            tx += p.tx_bytes;
            if p.since_handshake.is_some_and(|d| d < SESSION_AGE) {
                sessions += 1;
            }
        }
        vec![
            ("device answering", 1),
            ("peers", peers),
            ("peers with a session", sessions),
            ("bytes received", rx),
            ("bytes sent", tx),
            ("key rotations", self.status.rotations),
            ("errors", self.status.errors),
        ]
    }
}

/// Starts a rotation every `period`; the heartbeats and the next sets do
/// the rest.
pub async fn rotate_every(wg: crate::worker::SharedWireguard, period: std::time::Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        let mut w = wg.lock().unwrap_or_else(|e| e.into_inner());
        w.rotate();
        tracing::info!(key = %w.published(), "WireGuard: new key pair published");
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::{NetworkAssignment, NodeAddress};

    use super::*;

    fn node(id: &str, addr: [u8; 4], key: Option<PublicKey>) -> NodeAddress {
        NodeAddress {
            id: id.into(),
            addr: u32::from(Ipv4Addr::from(addr)),
            wireguard_key: key.map(|k| k.0.to_vec()).unwrap_or_default(),
        }
    }

    #[test]
    fn peers_are_the_other_nodes_with_keys() {
        let (a, b) = (KeyPair::generate().public(), KeyPair::generate().public());
        let set = AssignmentSet {
            nodes: vec![
                node("me", [10, 0, 0, 1], Some(a)),
                node("b", [10, 0, 0, 2], Some(b)),
                node("c", [10, 0, 0, 3], None),
            ],
            ..Default::default()
        };
        assert_eq!(
            peers(&set, "me"),
            BTreeMap::from([(Ipv4Addr::new(10, 0, 0, 2), b)])
        );
        assert!(!needed(&set));
        let wg = AssignmentSet {
            networks: vec![NetworkAssignment {
                encryption: Encryption::Wireguard.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(needed(&wg));
    }

    #[test]
    fn a_rotation_is_published_first_and_used_once_the_set_shows_it() {
        let mut wg = Wireguard::new();
        let old = wg.published();
        wg.rotate();
        let new = wg.published();
        assert_ne!(old, new);
        // The set still shows the old key: nothing switches.
        let mut set = AssignmentSet {
            nodes: vec![node("me", [10, 0, 0, 1], Some(old))],
            ..Default::default()
        };
        wg.sync(&set, "me");
        assert_eq!((wg.keys.public(), wg.status.rotations), (old, 0));
        set.nodes = vec![node("me", [10, 0, 0, 1], Some(new))];
        wg.sync(&set, "me");
        assert_eq!((wg.keys.public(), wg.status.rotations), (new, 1));
        assert_eq!(wg.published(), new);
    }
}
