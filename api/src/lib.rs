//! The wire contract between `shoal`, `shoald` and the managers: generated
//! from `proto/*.proto`, with the enums' words ([`words`]) and the typed
//! IPv4 addresses ([`Ipv4Prefix`](cluster::v1::Ipv4Prefix)).

pub mod addr;
pub mod container;
pub mod reference;
pub mod words;

pub mod node {
    pub mod v1 {
        tonic::include_proto!("shoal.node.v1");
    }
}

/// Where `shoald` listens and `shoal` connects when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/shoal/shoald.sock";
/// Environment variable naming the daemon to talk to (`unix:///path`).
pub const HOST_ENV: &str = "SHOAL_HOST";

/// Largest gRPC message a Shoal server or client decodes (tonic's default
/// is 4 MiB). A Raft AppendEntries of batched entries, a snapshot chunk in
/// JSON, or `task ls` at 10,000 tasks outgrows 4 MiB; the Raft and
/// Control services answer only authenticated peers and operators.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("shoal.cluster.v1");

        impl std::fmt::Debug for TaskFile {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("TaskFile")
                    .field("kind", &self.kind())
                    .field("id", &self.id)
                    .field("name", &self.name)
                    .field("target", &self.target)
                    .field("uid", &self.uid)
                    .field("gid", &self.gid)
                    .field("mode", &format_args!("{:#o}", self.mode))
                    .field("data", &format_args!("<{} bytes>", self.data.len()))
                    .finish()
            }
        }

        impl std::fmt::Debug for NetworkKey {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("NetworkKey")
                    .field("subsystem", &self.subsystem)
                    .field("lamport_time", &self.lamport_time)
                    .field("key", &format_args!("<{} bytes>", self.key.len()))
                    .finish()
            }
        }

        #[cfg(test)]
        mod tests {
            #[test]
            fn a_network_key_never_prints_its_bytes() {
                let k = super::NetworkKey {
                    subsystem: "networking:gossip".into(),
                    lamport_time: 7,
                    key: vec![0xab; 16],
                };
                let shown = format!("{k:?} {k:#?}");
                assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
                assert!(shown.contains("<16 bytes>"), "{shown}");
            }

            #[test]
            fn a_task_file_never_prints_its_data() {
                let file = super::TaskFile {
                    name: "db_pass".into(),
                    data: b"hunter2".to_vec(),
                    ..Default::default()
                };
                let shown = format!("{file:?} {file:#?}");
                assert!(
                    !shown.contains("hunter2") && !shown.contains("104, 117"),
                    "{shown}"
                );
                assert!(shown.contains("<7 bytes>"), "{shown}");
            }
        }
    }
}

pub mod blobs {
    pub mod v1 {
        tonic::include_proto!("shoal.blobs.v1");
    }
}

/// The cluster API port, as swarm mode's.
pub use shoal_common::ports::{self, CLUSTER_PORT};

/// A channel to a `shoald` over its Unix socket, as the CLI, the tests and
/// the benchmarks dial it.
pub async fn unix_channel(
    path: impl Into<std::path::PathBuf>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.into();
    // The URI is required by the API but unused: the connector dials the socket.
    tonic::transport::Endpoint::from_static("http://shoald.local")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
}
