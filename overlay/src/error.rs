//! The overlay driver's one error type.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::spec::VXLAN_OVERHEAD;

/// Everything the overlay driver can fail at. Each message names what failed
/// and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A field of an [`OverlaySpec`](crate::OverlaySpec) is out of range or
    /// inconsistent with another.
    #[error("overlay spec: {field} = {value}: {reason}")]
    InvalidSpec {
        field: &'static str,
        value: String,
        reason: String,
    },

    /// The spec asks for an MTU that VXLAN cannot carry over the underlay.
    #[error(
        "overlay spec: mtu = {mtu} is larger than the limit {limit} (underlay {underlay} has MTU \
         {underlay_mtu}, VXLAN over IPv4 takes {VXLAN_OVERHEAD}); leave mtu unset or give at most \
         {limit}"
    )]
    MtuTooLarge {
        mtu: u32,
        limit: u32,
        underlay: String,
        underlay_mtu: u32,
    },

    /// A field of a [`RemoteEndpoint`](crate::RemoteEndpoint) cannot be
    /// programmed.
    #[error("remote endpoint: {field} = {value}: {reason}")]
    InvalidRemote {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// The underlay interface of the spec does not exist here.
    #[error(
        "underlay interface {underlay} not found in this network namespace; give the interface \
         that carries the node's data-path address"
    )]
    UnderlayNotFound { underlay: String },

    /// The local VTEP address is on no interface, so the kernel would drop
    /// every encapsulated packet for want of a source.
    #[error(
        "local_vtep {vtep} is not an address of any interface in this network namespace; use the \
         node's data-path address"
    )]
    VtepNotLocal { vtep: Ipv4Addr },

    /// A device with one of our names exists but is of another kind.
    #[error(
        "{device} exists but is a {found} device, not a {expected}; it is not Shoal's overlay \
         device: delete or rename it"
    )]
    WrongKind {
        device: String,
        expected: &'static str,
        found: String,
    },

    /// An existing VXLAN device differs from the spec in a setting the
    /// kernel cannot change in place.
    #[error(
        "{device} exists with {field} {have}, but the spec wants {want}; this cannot be changed \
         in place: remove_network({vni}) and ensure the network again (then re-add its remotes)"
    )]
    Mismatch {
        vni: u32,
        device: String,
        field: &'static str,
        have: String,
        want: String,
    },

    /// The network's devices are not there.
    #[error(
        "overlay network VNI {vni} is not set up here ({device} is missing); ensure_network first"
    )]
    NetworkMissing { vni: u32, device: String },

    /// A netlink request failed; `op` names the request and the device.
    #[error("netlink: {op}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// Entering or opening the network namespace failed.
    #[error("network namespace {path}: {op} failed")]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The netlink socket's connection task needs a tokio runtime.
    #[error("the overlay driver must be created inside a tokio runtime with IO enabled")]
    NoRuntime,
}

impl OverlayError {
    /// Wraps a netlink failure, naming the request.
    pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> OverlayError {
        let op = op.into();
        move |source| OverlayError::Netlink { op, source }
    }
}
