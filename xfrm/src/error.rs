use std::io;

/// What can go wrong with a key ring or the kernel's xfrm tables.
#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error(
        "networking:ipsec key {tag}: {len} bytes, expected 16 (AES-128); the control plane's \
         ring is damaged: rotate it (`shoal swarm update --network-key-rotation`)"
    )]
    KeyLength { tag: u64, len: usize },
    #[error("networking:ipsec ring: tag {tag} given twice; each key needs its own Lamport time")]
    DuplicateTag { tag: u64 },
    #[error("networking:ipsec ring is empty: the node has not received its keys yet")]
    EmptyRing,
    #[error("xfrm netlink socket: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    /// The kernel refused a write; `errno` says why (EPROTONOSUPPORT or
    /// ENOSYS: no ESP or no AEAD in this kernel).
    #[error("xfrm {what}: the kernel refused it: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("xfrm {what}: unreadable answer from the kernel: {reason}")]
    Decode { what: String, reason: String },
}

impl XfrmError {
    /// The kernel's errno, when it refused a write.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XfrmError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel lacks ESP or its AEAD (a kernel without esp4,
    /// xfrm_user's algorithms or the crypto module): nothing this node can
    /// fix by retrying.
    pub fn unsupported(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EPROTONOSUPPORT | libc::ENOSYS | libc::ENOENT | libc::EAFNOSUPPORT)
        )
    }
}
