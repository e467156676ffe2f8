//! WireGuard for `--opt encrypted=wireguard` overlays (Cilium's model: a
//! key pair per node, public keys published through the control plane, no
//! shared secret).
//!
//! Each node runs one boringtun device, [`DEVICE`], on a TUN. Its peers are
//! the other nodes: a peer's allowed IP is its data-path address (its VTEP)
//! and its endpoint that address on [`PORT`]. The VXLAN devices of
//! WireGuard networks are bound to the tunnel, so their packets (outer
//! source and destination the nodes' own VTEPs, as on a plain overlay) go
//! through boringtun and leave as WireGuard UDP; FDB entries, node bridge
//! MACs and the mesh's remote paths are the same as on a plain overlay.
//!
//! The device is configured through WireGuard's text protocol (UAPI) over a
//! socket pair handed to boringtun, not a path under /var/run/wireguard, so
//! the namespace lab's nodes can all name their device [`DEVICE`].
//!
//! The private key never leaves the process: it is made at start, kept in
//! memory only (nothing on disk to seal), and replaced on rotation; a
//! restarted node publishes a new public key.

mod device;
mod error;
mod keys;
mod link;
pub mod uapi;

pub use device::{Tunnel, TunnelOptions};
pub use error::WgError;
pub use keys::{KeyPair, PublicKey};
pub use link::bring_up;

/// The tunnel device's name (at most 15 bytes; one per network namespace).
pub const DEVICE: &str = "shoal-wg";
/// WireGuard's UDP port, the same on every node.
pub const PORT: u16 = 51820;
/// What WireGuard adds to an IPv4 packet: outer IPv4 (20) and UDP (8), the
/// data message header (16) and the Poly1305 tag (16).
pub const OVERHEAD: u32 = 60;
/// The tunnel's MTU on a 1500-byte underlay; VXLAN's 50 more leave tasks
/// 1390.
pub const TUNNEL_MTU: u32 = 1500 - OVERHEAD;
