//! The well-known ports of a swarm, as swarm mode's: written once, used by
//! every crate that listens on or dials them.

/// Raft, the cluster API, the dispatcher and task logs (TCP, mutual TLS).
pub const CLUSTER_PORT: u16 = 2377;
/// SWIM gossip, TCP and UDP.
pub const GOSSIP_PORT: u16 = 7946;
/// The IANA VXLAN port, swarm's default data-path port.
pub const VXLAN_PORT: u16 = 4789;
