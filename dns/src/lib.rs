//! The embedded DNS resolver swarm tasks reach at 127.0.0.11.
//!
//! ```text
//!  task netns                         node netns (the agent)
//!  resolv.conf: 127.0.0.11  ──UDP/TCP 53──▶  Resolver ── table: network → name → IPv4s
//!  (socket made in the task's netns,            └─ other names ──▶ node's nameservers
//!   served by the agent's tokio runtime)
//! ```
//!
//! - `<service>` resolves to the service's VIP on the task's network (or,
//!   in endpoint mode dnsrr, to its task addresses), `tasks.<service>` to
//!   its task addresses, rotated per query. The agent fills the table per
//!   **network id** ([`Resolver::set_names`], [`service_names`]); each
//!   served socket is told the network ids of its task, in attachment
//!   order, and sees only those networks' names.
//! - Names not in the table are forwarded, unchanged, over UDP to the
//!   node's nameservers ([`parse_resolv_conf`]) from the agent's namespace;
//!   SERVFAIL when none answers within [`FORWARD_TIMEOUT`] each.
//! - A socket belongs to the namespace it was created in, so
//!   [`Resolver::serve_task`] creates the task's two sockets on a throwaway
//!   thread inside its namespace and serves them on the agent's runtime.
//!   Call it (as [`Resolver::serve_task_fd`]) from the runtime's
//!   `Runtime::start_with` hook, so the resolver is up before the task's
//!   command makes its first query.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_dns::DnsError> {
//! use std::collections::BTreeMap;
//! use std::net::Ipv4Addr;
//! use shoal_dns::{Resolver, parse_resolv_conf, service_names};
//! let node_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
//! let resolver = Resolver::new(parse_resolv_conf(&node_conf));
//! let vip = Ipv4Addr::new(10, 0, 9, 2);
//! let tasks = [Ipv4Addr::new(10, 0, 9, 5), Ipv4Addr::new(10, 0, 9, 6)];
//! resolver.set_names("net-id-1", BTreeMap::from(service_names("web", Some(vip), &tasks)));
//! let served = resolver.serve_task("/proc/4242/ns/net".as_ref(), vec!["net-id-1".into()])?;
//! // … the task runs; dropping `served` stops serving it.
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod answer;
mod error;
mod forward;
mod netns;
mod resolv;
mod resolver;
mod serve;
mod table;
pub mod wire;

use std::net::{Ipv4Addr, SocketAddrV4};

pub use answer::{LOCAL_TTL, Transport};
pub use error::DnsError;
pub use forward::FORWARD_TIMEOUT;
pub use netns::{bind_in_netns, bind_in_netns_fd, listen_in_netns, listen_in_netns_fd};
pub use resolv::{parse_resolv_conf, task_resolv_conf};
pub use resolver::Resolver;
pub use serve::{MAX_IN_FLIGHT, MAX_TCP_CONNECTIONS, TCP_IDLE, TaskDns};
pub use table::{TASKS_PREFIX, Table, service_names};

/// Where tasks find the resolver, as in swarm.
pub const EMBEDDED_DNS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);
