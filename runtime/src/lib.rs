//! The exec task runtime: each task is a process in its own network, mount,
//! PID, UTS and IPC namespaces, plugged into its networks' bridges. Needs
//! root.
//!
//! ```text
//!  node's netns                      task's netns (unnamed)
//!  shl-br-4097 ── shlv<hash>00 ═════ eth0 10.0.9.2/24, default via 10.0.9.1
//!  shl-br-4098 ── shlv<hash>01 ═════ eth1 …
//!
//!  runtime ── spawner thread ── init (PID 1, "shoal-init") ── command (PID 2)
//!                                └ reaps orphans, forwards signals
//! ```
//!
//! - **Network.** A fresh network namespace per task, not bound under
//!   `/run/netns`: the kernel frees it with the task's last process, so it
//!   (and the veths in it) cannot outlive the task even if the runtime is
//!   killed. `nsenter -t <pid> -n` reaches it. The veth's host end is made in
//!   the runtime's namespace (the node's), its peer directly inside the
//!   task's; address, `lo`, and the default route are set before the command
//!   starts, so it never sees an unconfigured network.
//! - **Processes.** A thread per [`Runtime`] forks each task's init into a
//!   new PID namespace; the init forwards signals to the command and reaps
//!   (see `sandbox`). Inits die with that thread, so dropping the runtime
//!   (or the agent dying) kills every task.
//! - **Files.** The command comes from the node's filesystem, with a fresh
//!   `/proc`; with a rootfs, the task pivots into it (used in place, with
//!   `/proc`, a minimal `/dev` and `/dev/shm` mounted). All mounts are in
//!   the task's mount namespace and vanish with it, as does the optional
//!   bind mount of a resolv.conf over `/etc/resolv.conf`.
//! - **Logs.** stdout and stderr go through pipes into `<log_dir>/<id>.log`,
//!   one timestamped record a line (see [`logs`]); [`read_logs`] reads it
//!   back for `service logs`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_runtime::RuntimeError> {
//! use std::net::Ipv4Addr;
//! use shoal_runtime::{Attachment, Runtime, TaskSpec};
//! let runtime = Runtime::new()?;
//! let mut task = runtime
//!     .start(&TaskSpec {
//!         id: "x7k2m9q4".into(),
//!         name: "web.1".into(),
//!         command: vec!["sleep".into(), "1000".into()],
//!         env: vec![],
//!         attachments: vec![Attachment {
//!             bridge: "shl-br-4097".into(),
//!             addr: Ipv4Addr::new(10, 0, 9, 2),
//!             prefix: 24,
//!             gateway: Some(Ipv4Addr::new(10, 0, 9, 1)),
//!             mac: None,
//!             mtu: None,
//!         }],
//!         rootfs: None,
//!         resolv_conf: None,
//!         log_dir: "/var/lib/shoal/logs".into(),
//!     })
//!     .await?;
//! let exit = task.stop(std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

mod error;
pub mod logs;
mod net;
#[allow(unsafe_code)] // fork/exec plumbing: every block says why it is sound
mod sandbox;
mod spawner;
mod spec;
mod task;

pub use error::RuntimeError;

/// Any error, from a caller's hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use logs::{LogLine, Stream, read_logs, remove_logs};
pub use nix::sys::signal::Signal;
pub use sandbox::Stage;
pub use spec::{
    Attachment, DEFAULT_PATH, MAX_ATTACHMENTS, MAX_HOSTNAME_LEN, MAX_ID_LEN, TaskSpec, parse_env,
};
pub use task::{Exit, RunningTask, Runtime, TaskInterface};
