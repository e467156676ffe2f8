//! IPsec ESP for `--opt encrypted` overlays, swarm compatible: the key
//! schedule and SPIs ([`schedule`], pure), the xfrm netlink messages that
//! install them ([`message`]), and a socket that sends them ([`Xfrm`]).
//!
//! Per pair of nodes that share an encrypted network: inbound ESP states
//! (transport mode) for every `networking:ipsec` ring key, one outbound
//! state for the primary key, and one outbound policy selecting UDP to the
//! VXLAN port between the two nodes for packets carrying [`schedule::MARK`],
//! which Shoal's eBPF sets on encrypted networks' packets. A marked packet
//! with no state is dropped by the kernel: the pair fails closed.

#![forbid(unsafe_code)]

mod error;
pub mod message;
pub mod schedule;
mod socket;

pub use error::XfrmError;
pub use message::Owned;
pub use schedule::{ESP_OVERHEAD, MARK, Op, PairState, Policy, REQID, Ring, Sa, SaId, pair, plan};
pub use socket::Xfrm;
