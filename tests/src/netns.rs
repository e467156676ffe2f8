//! Named network namespaces, made the way `ip netns add` makes them, and ways
//! to act inside one without moving any thread but a dedicated one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::LabError;

/// Where named namespaces live (the same place as for `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// The bind-mount path of the namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn netns_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> LabError + 'a {
    move |source| LabError::Netns {
        name: name.to_owned(),
        op,
        source,
    }
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so that
/// namespace mounts made here are seen by (and unmounted from) every mount
/// namespace, not only this one.
fn prepare_run_dir() -> Result<(), LabError> {
    // Serialises the check-then-bind below between the threads of this process.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());

    let err = |op| {
        move |source: io::Error| LabError::Io {
            path: NETNS_DIR.into(),
            op,
            source,
        }
    };
    std::fs::create_dir_all(NETNS_DIR).map_err(err("create"))?;
    let mut bound = false;
    loop {
        let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
        match mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>) {
            Ok(()) => return Ok(()),
            // Not a mount point yet: make it one by binding it onto itself.
            Err(Errno::EINVAL) if !bound => {
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some(NETNS_DIR), NETNS_DIR, None::<&str>, bind, None::<&str>)
                    .map_err(|e| err("bind mount")(e.into()))?;
                bound = true;
            }
            Err(e) => return Err(err("make shared")(e.into())),
        }
    }
}

/// Creates the named namespace `name` (fails if it exists).
pub fn create(name: &str) -> Result<(), LabError> {
    prepare_run_dir()?;
    let path = netns_path(name);
    // The mount point; O_EXCL makes two creators of one name fail cleanly.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(netns_err(name, "create mount point"))?;

    // unshare() moves only the calling thread, so do it on a throwaway one;
    // the bind mount keeps the namespace alive after that thread exits.
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        // thread-self, not self: /proc/self/ns/net is the main thread's.
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    if let Err(source) = made {
        let _ignored_cleanup = std::fs::remove_file(&path);
        return Err(LabError::Netns {
            name: name.to_owned(),
            op: "unshare and bind mount",
            source,
        });
    }
    Ok(())
}

/// Deletes the named namespace `name`; a missing one is not an error. The
/// namespace itself lives on until its last process or open handle is gone.
pub fn delete(name: &str) -> Result<(), LabError> {
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not (or no longer) a mount point; ENOENT: already removed.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(netns_err(name, "unmount")(e.into())),
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(netns_err(name, "remove")(e)),
        _ => Ok(()),
    }
}

/// Whether the named namespace `name` exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Names of all named namespaces (what `ip netns list` shows).
pub fn list() -> Result<Vec<String>, LabError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::Io {
                path: NETNS_DIR.into(),
                op: "list",
                source,
            });
        }
    };
    Ok(entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect())
}

/// Opens the namespace `name` (for `setns` or a netlink `IFLA_NET_NS_FD`).
pub fn open(name: &str) -> Result<File, LabError> {
    File::open(netns_path(name)).map_err(netns_err(name, "open"))
}

/// Runs `f` on a fresh thread that has entered the namespace `name`, and
/// returns its result. Sockets opened by `f` stay bound to that namespace
/// wherever they are used afterwards, so this is how a test opens a listener
/// or connects "from" a node. A panic in `f` is resumed on the caller.
pub fn run_in_netns<F, R>(name: &str, f: F) -> Result<R, LabError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns = open(name)?;
    shoal_netns::run_in(ns.as_fd(), f).map_err(|e| netns_err(name, "setns")(e.into()))
}

/// A UDP socket and a TCP listener both bound to `addr` inside the
/// namespace `name`, as a gossip member takes them.
pub fn bind_udp_tcp(
    name: &str,
    addr: std::net::SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), LabError> {
    run_in_netns(name, || {
        Ok((
            std::net::UdpSocket::bind(addr)?,
            std::net::TcpListener::bind(addr)?,
        ))
    })?
    .map_err(netns_err(name, "bind UDP and TCP"))
}

/// A netlink handle whose socket lives in the namespace `name`. Its
/// connection task is spawned on the current tokio runtime and ends when the
/// last clone of the handle is dropped.
pub fn netlink(name: &str) -> Result<rtnetlink::Handle, LabError> {
    let ns = open(name)?;
    shoal_netns::netlink(ns.as_fd()).map_err(|e| match e {
        shoal_netns::NetnsError::NoRuntime => LabError::NoRuntime,
        shoal_netns::NetnsError::Socket { source } => {
            netns_err(name, "open netlink socket")(source)
        }
        other => netns_err(name, "setns")(other.into()),
    })
}
