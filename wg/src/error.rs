use std::io;

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("a WireGuard public key is 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("WireGuard public key {0:?} is not base64 of 32 bytes")]
    KeyText(String),
    #[error("creating the WireGuard device {name}: {detail} (is /dev/net/tun there?)")]
    Create { name: String, detail: String },
    #[error("the WireGuard device's control socket: {0}")]
    Uapi(#[source] io::Error),
    #[error("the WireGuard device refused {what}: errno {errno}")]
    Refused { what: &'static str, errno: i32 },
    #[error("bringing up {device}: {detail}")]
    Link { device: String, detail: String },
    #[error("the WireGuard device's reply line {line:?}: {why}")]
    Reply { line: String, why: &'static str },
}
