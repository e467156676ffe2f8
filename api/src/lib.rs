//! The wire contract between `shoal`, `shoald` and (later) the managers:
//! generated from `proto/*.proto`.

pub mod node {
    pub mod v1 {
        tonic::include_proto!("shoal.node.v1");
    }
}

/// Where `shoald` listens and `shoal` connects when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/shoal/shoald.sock";
/// Environment variable naming the daemon to talk to (`unix:///path`).
pub const HOST_ENV: &str = "SHOAL_HOST";

pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("shoal.cluster.v1");
    }
}

/// The cluster API port, as swarm mode's.
pub const CLUSTER_PORT: u16 = 2377;
