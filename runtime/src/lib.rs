//! The task runtime: each task a container run by runc (an OCI runtime) in
//! a network namespace Shoal prepared, watched by its own shim so that it
//! outlives shoald. Needs root.
//!
//! ```text
//!  node's netns                      task's netns (<state>/netns/<id>)
//!  shl-br-4097 ── shlv<hash>00 ═════ eth0 10.0.9.2/24, default via 10.0.9.1
//!  shl-br-4098 ── shlv<hash>01 ═════ eth1 …
//!
//!  shoald ── Runtime::start ── shoal-shim (setsid, subreaper) ── runc create/start
//!                                  │ holds the container's stdout/stderr → <log_dir>/<id>.log
//!                                  └ waits, writes <bundle>/exit.json, runc delete
//! ```
//!
//! - **Network.** The runtime makes the task's network namespace itself and
//!   bind-mounts it at `<state>/netns/<id>`, plugs and configures the veths
//!   (`lo` up, addresses, default route) and calls the caller's
//!   `before_exec` in it, all before runc joins it by path: the command
//!   never sees an unconfigured network.
//! - **Containment.** `config.json` is built by [`oci`] with docker's
//!   defaults: new mount, PID, UTS and IPC namespaces, docker's capability
//!   set, `noNewPrivileges`, docker's seccomp profile, masked and read-only
//!   `/proc` paths, the cgroup `/shoal/<id>` with the spec's limits.
//! - **Files.** [`Root::Host`]: the node's root filesystem, read-only and
//!   bound without its submounts, with a private `/tmp`, a fresh `/run` and
//!   empty tmpfs over shoal's state and the node's secrets;
//!   [`Root::Image`]: an overlay over the unpacked image. `/etc/resolv.conf`,
//!   `/etc/hosts` and `/etc/hostname` are files of the bundle.
//! - **Secrets and configs** ([`TaskSpec::files`]): on a tmpfs of the
//!   task's own, which exists on the node only while the task starts and
//!   then only in the task's mount namespace (see [`files`]).
//! - **Live restore.** Each task's shim (`shoal-shim`, a binary of this
//!   crate) runs in its own session; the runtime waits on a pidfd of it and
//!   reads `exit.json`. A new [`Runtime`] on the same state directory takes
//!   running tasks back with [`Runtime::adopt`].
//! - **Logs.** CRI format, one record a line (see [`logs`]); [`read_logs`]
//!   reads it back for `service logs`.
//!
//! Choices, and why:
//! - **runc** (Debian's 1.1.5) rather than crun: packaged here, the
//!   reference implementation, and it drives cgroup v1 and v2 alike from
//!   `cgroupsPath` `/shoal/<id>`.
//! - **The node's `/`** is a plain (non-recursive) bind of `/`, made
//!   read-only on the node's side too, rather than an overlay: overlayfs
//!   refuses an upper directory inside its lower one, and a recursive bind
//!   would carry every other mount (bpffs, other tasks' roots) into each
//!   task. Only the root filesystem shows; `/run`, `/tmp`, shoal's state,
//!   `/root` and `/etc/shoal` get an empty tmpfs.
//! - **Waiting through a pidfd on the shim**: it needs no socket protocol,
//!   works for a shim this process did not start (adoption), and cannot be
//!   fooled by pid reuse; the shim writes `exit.json` before it exits.
//! - **The init** (`init: true`) is the shim binary itself
//!   (`shoal-shim init -- …`), bound read-only at `/dev/shoal-init` (a
//!   mount point on the task's own `/dev` tmpfs, never on its root). It is
//!   linked against glibc: it runs on the node's filesystem and on glibc
//!   images, not on musl-only or empty images.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_runtime::RuntimeError> {
//! use std::net::Ipv4Addr;
//! use shoal_runtime::{Attachment, Runtime, TaskSpec};
//! let runtime = Runtime::new("/var/lib/shoal/runtime")?;
//! let mut task = runtime
//!     .start(&TaskSpec {
//!         id: "x7k2m9q4".into(),
//!         name: "web.1".into(),
//!         args: vec!["sleep".into(), "1000".into()],
//!         attachments: vec![Attachment {
//!             bridge: "shl-br-4097".into(),
//!             addr: Ipv4Addr::new(10, 0, 9, 2),
//!             prefix: 24,
//!             gateway: Some(Ipv4Addr::new(10, 0, 9, 1)),
//!             mac: None,
//!             mtu: None,
//!         }],
//!         log_dir: "/var/lib/shoal/tasks".into(),
//!         ..TaskSpec::default()
//!     })
//!     .await?;
//! let exit = task.stop(std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

mod error;
mod exec;
pub mod files;
pub mod logs;
mod net;
pub mod oci;
pub mod shim;
mod spec;
mod task;

pub use error::RuntimeError;
pub use exec::{Exec, ExecEnd, ExecOutput, MAX_OUTPUT};
pub use files::{SECRETS_DIR, TaskFile};

/// Any error, from a caller's hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use logs::{LogLine, Stream, read_logs, remove_logs};
pub use nix::sys::signal::Signal;
pub use spec::{
    Attachment, DEFAULT_PATH, HOST_IMAGE, ImageDefaults, MAX_ATTACHMENTS, MAX_HOSTNAME_LEN,
    MAX_ID_LEN, Mount, RLIM_INFINITY, Resources, Rlimit, Root, TaskSpec, namespaced_sysctl,
    parse_env,
};
pub use task::{
    Adopted, DEFAULT_RUNC, Exit, RunningTask, Runtime, RuntimeOptions, SHIM_ENV, TaskInterface,
};
