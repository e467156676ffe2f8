//! The task's network: a fresh network namespace, and per attachment a veth
//! whose host end is a port of the network's bridge in the node's namespace
//! and whose other end is `ethN` inside the task's, addressed and routed.
//! All by rtnetlink.
//!
//! `setns` moves only the calling thread, and a netlink socket belongs to the
//! namespace of the thread that creates it, so each socket is made on a
//! short-lived thread that entered the namespace; its connection then runs
//! as a task on the caller's tokio runtime. No tokio worker ever changes
//! namespace.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use shoal_netns::link::{kind as link_kind, mac as link_mac, mtu as link_mtu};

use crate::error::{io_err, netlink_err, netlink_errno, ns_err, resource_err};
use crate::spec::{Attachment, host_veth_name, task_ifname};
use crate::{RuntimeError, TaskSpec};

/// The calling thread's network namespace (not `/proc/self`, which is the
/// main thread's).
pub(crate) const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A netlink handle whose socket lives in the namespace `netns`.
pub(crate) fn netlink_in(
    netns: &File,
    runtime: &tokio::runtime::Handle,
) -> Result<Handle, RuntimeError> {
    shoal_netns::netlink_in(netns.as_fd(), runtime).map_err(|e| match e {
        shoal_netns::NetnsError::Socket { source } => resource_err("open a netlink socket")(source),
        other => ns_err("enter the node's netns")(other),
    })
}

fn join_thread<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Creates a network namespace for a task, bind-mounted at `path` (so it
/// outlives every process: runc joins it by path, and a restarted runtime
/// finds it there), and a netlink handle inside it.
pub(crate) fn new_netns(
    runtime: &tokio::runtime::Handle,
    path: &Path,
) -> Result<(File, Handle), RuntimeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
    }
    File::create(path).map_err(io_err(path, "create"))?;
    let made = std::thread::scope(|scope| {
        join_thread(scope.spawn(|| {
            // This throwaway thread ends in the new namespace; nothing else does.
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(ns_err("create the task's network namespace"))?;
            mount(
                Some(THREAD_NETNS),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(ns_err("bind-mount the task's network namespace"))?;
            let netns =
                File::open(THREAD_NETNS).map_err(ns_err("open the task's network namespace"))?;
            let _entered = runtime.enter();
            let (connection, handle, _messages) =
                rtnetlink::new_connection().map_err(resource_err("open a netlink socket"))?;
            Ok::<_, RuntimeError>((netns, connection, handle))
        }))
    });
    let (netns, connection, handle) = match made {
        Ok(made) => made,
        Err(e) => {
            remove_netns(path);
            return Err(e);
        }
    };
    runtime.spawn(connection);
    Ok((netns, handle))
}

/// Unmounts and removes a task's namespace file; the kernel frees the
/// namespace (and the veths in it) with its last user. Missing is fine.
pub(crate) fn remove_netns(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "unmounting a task's netns"),
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), %error, "removing a task's netns file");
        }
        _ => {}
    }
}

/// The host end of a task's veth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HostVeth {
    pub name: String,
    pub index: u32,
}

struct Bridge {
    index: u32,
    mtu: Option<u32>,
}

/// A link the kernel should have but does not report.
fn gone(what: String) -> RuntimeError {
    RuntimeError::Netlink {
        what,
        source: rtnetlink::Error::RequestFailed,
    }
}

/// The link called `name`, or None.
async fn link_by_name(
    handle: &Handle,
    name: &str,
    what: impl FnOnce() -> String,
) -> Result<Option<LinkMessage>, RuntimeError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if netlink_errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink_err(what())(e)),
    }
}

async fn find_bridge(node: &Handle, name: &str) -> Result<Bridge, RuntimeError> {
    let link = link_by_name(node, name, || format!("look up bridge {name}"))
        .await?
        .ok_or_else(|| RuntimeError::BridgeNotFound {
            bridge: name.to_owned(),
        })?;
    match link_kind(&link) {
        Some(InfoKind::Bridge) => Ok(Bridge {
            index: link.header.index,
            mtu: link_mtu(&link),
        }),
        other => Err(RuntimeError::NotABridge {
            bridge: name.to_owned(),
            kind: other.map_or_else(|| "plain".to_owned(), ToString::to_string),
        }),
    }
}

/// Creates the veth of attachment `index`: the host end, up, a port of the
/// bridge; the task end (`ethN`, down, no address yet) created directly in
/// the task's namespace, so its name never meets the node's interfaces.
pub(crate) async fn plug(
    node: &Handle,
    task_netns: &File,
    spec: &TaskSpec,
    index: usize,
    attachment: &Attachment,
) -> Result<HostVeth, RuntimeError> {
    let bridge = find_bridge(node, &attachment.bridge).await?;
    let host = host_veth_name(&spec.id, index);
    let ifname = task_ifname(index);
    // Unset, the bridge's MTU: what the network (VXLAN overhead included)
    // can carry. A veth's default 1500 would black-hole full-size packets.
    let mtu = attachment.mtu.or(bridge.mtu);
    let mut peer = LinkUnspec::new_with_name(&ifname).setns_by_fd(task_netns.as_raw_fd());
    let mut veth = LinkVeth::new(&host, &ifname).controller(bridge.index).up();
    if let Some(mtu) = mtu {
        peer = peer.mtu(mtu);
        veth = veth.mtu(mtu);
    }
    if let Some(mac) = attachment.mac {
        peer = peer.address(mac.to_vec());
    }
    let veth = veth
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    match node.link().add(veth).execute().await {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(Errno::EEXIST) => {
            return Err(RuntimeError::VethExists {
                veth: host,
                id: spec.id.clone(),
            });
        }
        Err(e) => {
            return Err(netlink_err(format!(
                "add veth {host} on {} (peer {ifname} in task {})",
                attachment.bridge, spec.id
            ))(e));
        }
    }
    let link = link_by_name(node, &host, || format!("look up veth {host}"))
        .await?
        .ok_or_else(|| gone(format!("veth {host} vanished right after it was created")))?;
    Ok(HostVeth {
        name: host,
        index: link.header.index,
    })
}

async fn set_up(
    handle: &Handle,
    index: u32,
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_err(what()))
}

/// Inside the task's namespace: `lo` up, each `ethN` addressed and up, the
/// default route via the first gateway. Returns each interface's MAC.
pub(crate) async fn configure_task(
    task: &Handle,
    id: &str,
    attachments: &[Attachment],
) -> Result<Vec<[u8; 6]>, RuntimeError> {
    let lo = link_by_name(task, "lo", || format!("look up lo of task {id}"))
        .await?
        .ok_or_else(|| gone(format!("task {id} has no lo")))?;
    set_up(task, lo.header.index, || format!("set lo up in task {id}")).await?;
    let mut macs = Vec::with_capacity(attachments.len());
    let mut routed = false;
    for (i, attachment) in attachments.iter().enumerate() {
        let ifname = task_ifname(i);
        let link = link_by_name(task, &ifname, || format!("look up {ifname} of task {id}"))
            .await?
            .ok_or_else(|| {
                gone(format!(
                    "{ifname} missing in task {id} after the veth was made"
                ))
            })?;
        let index = link.header.index;
        let mac = link_mac(&link)
            .ok_or_else(|| gone(format!("{ifname} of task {id} has no MAC address")))?;
        macs.push(mac);
        task.address()
            .add(index, IpAddr::V4(attachment.addr), attachment.prefix)
            .execute()
            .await
            .map_err(netlink_err(format!(
                "add {}/{} to {ifname} of task {id}",
                attachment.addr, attachment.prefix
            )))?;
        set_up(task, index, || format!("set {ifname} up in task {id}")).await?;
        if let (Some(gateway), false) = (attachment.gateway, routed) {
            let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build();
            task.route()
                .add(route)
                .execute()
                .await
                .map_err(netlink_err(format!(
                    "add default route via {gateway} dev {ifname} in task {id}"
                )))?;
            routed = true;
        }
    }
    Ok(macs)
}

/// Deletes the host ends of a task's veths (which deletes their peers); one
/// already gone (its namespace died with the task) is not an error. By
/// index, not name: a name could meanwhile belong to another task.
pub(crate) async fn unplug(node: &Handle, veths: &[HostVeth]) -> Result<(), RuntimeError> {
    for veth in veths {
        match node.link().del(veth.index).execute().await {
            Ok(()) => {}
            Err(e) if netlink_errno(&e) == Some(Errno::ENODEV) => {}
            Err(e) => return Err(netlink_err(format!("delete veth {}", veth.name))(e)),
        }
    }
    Ok(())
}
