//! The executor's narrow ports to what it drives: the overlay networks, the
//! task runtime and the routing mesh. The real drivers implement them here;
//! `fake.rs` holds in-memory ones, so the executor's logic is tested
//! without root (as Cilium tests against its fake datapath).

use std::{
    collections::BTreeMap,
    future::Future,
    os::fd::BorrowedFd,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_overlay::{
    Driver, FdbEntry, NeighbourEntry, NetworkDevices, OverlayError, OverlaySpec, Release,
    RemoteEndpoint, Remotes, VxlanPath,
};
use shoal_runtime::{BoxError, Exit, RunningTask, Runtime, RuntimeError, TaskInterface, TaskSpec};

use shoal_mesh::{Changes, Desired, LbError};

use crate::{
    datapath::{
        DatapathError,
        mesh::{MeshState, TaskLinks, TaskVeth},
        policy::NetPrefix,
    },
    local::lock,
};
use shoal_common::{
    mesh::{PeerKey, Vtep},
    policy::{Endpoint, NetEntry},
};

/// Overlay networks on this node and their remote entries.
pub trait Overlay: Send + Sync + 'static {
    /// Makes the network's devices present (idempotent).
    fn ensure_network(
        &self,
        spec: &OverlaySpec,
    ) -> impl Future<Output = Result<NetworkDevices, OverlayError>> + Send;
    /// Removes the network's devices unless a task's port still uses them.
    fn release_network(
        &self,
        vni: u32,
    ) -> impl Future<Output = Result<Release, OverlayError>> + Send;
    /// The VNIs of every overlay network present.
    fn networks(&self) -> impl Future<Output = Result<Vec<u32>, OverlayError>> + Send;
    /// The entries programmed on the network's VXLAN device.
    fn remotes(&self, vni: u32) -> impl Future<Output = Result<Remotes, OverlayError>> + Send;
    fn add_remote(
        &self,
        vni: u32,
        remote: RemoteEndpoint,
    ) -> impl Future<Output = Result<(), OverlayError>> + Send;
    fn remove_remote(
        &self,
        vni: u32,
        remote: RemoteEndpoint,
    ) -> impl Future<Output = Result<(), OverlayError>> + Send;
    /// Adds one half of an endpoint: a node's bridge, a VIP answered here.
    fn add_entry(
        &self,
        vni: u32,
        entry: Entry,
    ) -> impl Future<Output = Result<(), OverlayError>> + Send;
    fn remove_entry(
        &self,
        vni: u32,
        entry: Entry,
    ) -> impl Future<Output = Result<(), OverlayError>> + Send;
    /// How the network's VXLAN device sends; `None` when only the device
    /// can (a fake has no device).
    fn vxlan_path(
        &self,
        _vni: u32,
    ) -> impl Future<Output = Result<Option<VxlanPath>, OverlayError>> + Send {
        async { Ok(None) }
    }
}

/// The fast path's mirror of the VXLAN devices' FDBs, which its send side
/// encapsulates with.
pub trait VtepMirror: Send + Sync + 'static {
    /// Writes the mirror until it holds `want`: every network's at once,
    /// or (`only`) one VXLAN device's entries, leaving the others.
    fn set_vteps(
        &self,
        only: Option<u32>,
        want: &BTreeMap<PeerKey, Vtep>,
    ) -> Result<(), DatapathError>;
}

/// An FDB or neighbour entry without its partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Fdb(FdbEntry),
    Neighbour(NeighbourEntry),
}

/// Starts tasks.
pub trait Tasks: Send + Sync + 'static {
    type Task: Task;
    /// Starts `spec`, calling `before_exec` with the task's network
    /// namespace before its command runs.
    fn start<F>(
        &self,
        spec: &TaskSpec,
        before_exec: F,
    ) -> impl Future<Output = Result<Self::Task, RuntimeError>> + Send
    where
        F: FnOnce(BorrowedFd<'_>) -> Result<(), BoxError> + Send;
    /// The tasks a previous run of the agent left: running ones to take
    /// back, ended ones with their recorded exit (their remains removed).
    fn adopt(&self) -> impl Future<Output = Result<Found<Self::Task>, RuntimeError>> + Send;
    /// Kills every task of this node (the node leaves the swarm).
    fn kill_all(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// What [`Tasks::adopt`] found.
pub struct Found<T> {
    pub running: Vec<T>,
    pub ended: Vec<(String, Option<Exit>)>,
}

/// A started task.
pub trait Task: Send + 'static {
    /// Runs its healthcheck's command inside it.
    type Prober: crate::health::Prober;
    fn id(&self) -> &str;
    /// A prober of the task, usable while the task is waited for.
    fn prober(&self) -> Self::Prober;
    /// Its network namespace, to serve DNS in again after an adoption.
    fn netns(&self) -> Option<PathBuf>;
    fn pid(&self) -> u32;
    fn interfaces(&self) -> &[TaskInterface];
    /// Until the task ends by itself.
    fn wait(&mut self) -> impl Future<Output = Result<Exit, RuntimeError>> + Send;
    /// Signals it to stop, kills it after `grace`.
    fn stop(&mut self, grace: Duration) -> impl Future<Output = Result<Exit, RuntimeError>> + Send;
}

/// The routing mesh's maps.
pub trait MeshSync: Send + Sync + 'static {
    type Links: Send + 'static;
    /// Writes the maps until they hold `want`.
    fn sync(&self, want: &Desired) -> Result<Changes, LbError<DatapathError>>;
    /// Hangs the task programs on a task's host veth, after writing its
    /// isolation entry `ep`.
    fn attach_task(&self, veth: &TaskVeth, ep: &Endpoint) -> Result<Self::Links, DatapathError>;
    fn detach_task(&self, links: Self::Links);
    /// Writes the overlay subnets and node addresses isolation knows.
    fn set_networks(&self, want: &BTreeMap<NetPrefix, NetEntry>) -> Result<(), DatapathError>;
    /// Writes the encrypted networks' VNIs (→ their VXLAN port).
    fn set_encrypted_vnis(&self, want: &BTreeMap<u32, u32>) -> Result<(), DatapathError>;
}

impl Overlay for Driver {
    async fn ensure_network(&self, spec: &OverlaySpec) -> Result<NetworkDevices, OverlayError> {
        Driver::ensure_network(self, spec).await
    }
    async fn release_network(&self, vni: u32) -> Result<Release, OverlayError> {
        Driver::release_network(self, vni).await
    }
    async fn networks(&self) -> Result<Vec<u32>, OverlayError> {
        Driver::networks(self).await
    }
    async fn remotes(&self, vni: u32) -> Result<Remotes, OverlayError> {
        Driver::remotes(self, vni).await
    }
    async fn add_remote(&self, vni: u32, remote: RemoteEndpoint) -> Result<(), OverlayError> {
        Driver::add_remote(self, vni, remote).await
    }
    async fn remove_remote(&self, vni: u32, remote: RemoteEndpoint) -> Result<(), OverlayError> {
        Driver::remove_remote(self, vni, remote).await
    }
    async fn add_entry(&self, vni: u32, entry: Entry) -> Result<(), OverlayError> {
        match entry {
            Entry::Fdb(FdbEntry { mac, vtep }) => self.add_fdb(vni, mac, vtep).await,
            Entry::Neighbour(NeighbourEntry { ip, mac }) => self.add_neighbour(vni, ip, mac).await,
        }
    }
    async fn remove_entry(&self, vni: u32, entry: Entry) -> Result<(), OverlayError> {
        match entry {
            Entry::Fdb(FdbEntry { mac, vtep }) => self.remove_fdb(vni, mac, vtep).await,
            Entry::Neighbour(NeighbourEntry { ip, mac }) => {
                self.remove_neighbour(vni, ip, mac).await
            }
        }
    }
    async fn vxlan_path(&self, vni: u32) -> Result<Option<VxlanPath>, OverlayError> {
        Driver::vxlan_path(self, vni).await
    }
}

impl Tasks for Runtime {
    type Task = RunningTask;
    async fn start<F>(&self, spec: &TaskSpec, before_exec: F) -> Result<RunningTask, RuntimeError>
    where
        F: FnOnce(BorrowedFd<'_>) -> Result<(), BoxError> + Send,
    {
        self.start_with(spec, before_exec).await
    }
    async fn adopt(&self) -> Result<Found<RunningTask>, RuntimeError> {
        let adopted = Runtime::adopt(self).await?;
        Ok(Found {
            running: adopted.running,
            ended: adopted.ended,
        })
    }
    async fn kill_all(&self) -> Result<(), RuntimeError> {
        Runtime::kill_all(self).await.map(drop)
    }
}

impl Task for RunningTask {
    type Prober = shoal_runtime::Exec;
    fn id(&self) -> &str {
        RunningTask::id(self)
    }
    fn prober(&self) -> shoal_runtime::Exec {
        self.exec()
    }
    fn netns(&self) -> Option<PathBuf> {
        // None for a task on the host network: it has no namespace file.
        Some(self.netns_path()).filter(|p| p.exists())
    }
    fn pid(&self) -> u32 {
        RunningTask::pid(self)
    }
    fn interfaces(&self) -> &[TaskInterface] {
        RunningTask::interfaces(self)
    }
    async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        RunningTask::wait(self).await
    }
    async fn stop(&mut self, grace: Duration) -> Result<Exit, RuntimeError> {
        RunningTask::stop(self, grace).await
    }
}

/// The mesh's maps and tables, shared with `node doctor`.
impl MeshSync for Arc<Mutex<MeshState>> {
    type Links = TaskLinks;
    fn sync(&self, want: &Desired) -> Result<Changes, LbError<DatapathError>> {
        let mut guard = lock(self);
        let MeshState { maps, tables } = &mut *guard;
        tables.apply(want, maps)
    }
    fn attach_task(&self, veth: &TaskVeth, ep: &Endpoint) -> Result<TaskLinks, DatapathError> {
        lock(self).maps.attach_task(veth, ep)
    }
    fn detach_task(&self, links: TaskLinks) {
        lock(self).maps.detach_task(links);
    }
    fn set_networks(&self, want: &BTreeMap<NetPrefix, NetEntry>) -> Result<(), DatapathError> {
        lock(self).maps.policy().set_networks(want)
    }
    fn set_encrypted_vnis(&self, want: &BTreeMap<u32, u32>) -> Result<(), DatapathError> {
        lock(self).maps.policy().set_encrypted_vnis(want)
    }
}

impl VtepMirror for Arc<Mutex<MeshState>> {
    fn set_vteps(
        &self,
        only: Option<u32>,
        want: &BTreeMap<PeerKey, Vtep>,
    ) -> Result<(), DatapathError> {
        lock(self).maps.set_vteps(only, want)
    }
}
