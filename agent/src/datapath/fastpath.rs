//! Typed access to the fast path's maps (common/src/mesh.rs, `PEERS_MAP`,
//! `UPLINKS_MAP`, `VXLANS_MAP` and `VTEPS_MAP`): which local task a VXLAN
//! device's frame is for, which VXLAN device a task veth's frames for
//! other nodes leave by, which overlays' VXLAN the data interface may
//! decapsulate, and where each VXLAN device's FDB sends a MAC.
use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use shoal_common::mesh::{PEERS_MAP, PeerKey, UPLINKS_MAP, VTEPS_MAP, VXLANS_MAP, Vtep, VxlanDev};

use super::DatapathError;

pub struct FastPathMaps {
    peers: HashMap<MapData, PeerKey, u32>,
    uplinks: HashMap<MapData, u32, u32>,
    vxlans: HashMap<MapData, u32, VxlanDev>,
    vteps: HashMap<MapData, PeerKey, Vtep>,
}

/// One task veth's place in the fast path, kept to undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub veth: u32,
    pub vxlan: u32,
    pub mac: [u8; 6],
}

fn err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::MapUpdate { name, source }
}

/// A removal of what is not there is no failure: an earlier run may have
/// removed it, or never written it.
fn gone(r: Result<(), MapError>, name: &'static str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(err(name)(e)),
    }
}

impl FastPathMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            peers: super::mesh::take(ebpf, PEERS_MAP)?,
            uplinks: super::mesh::take(ebpf, UPLINKS_MAP)?,
            vxlans: super::mesh::take(ebpf, VXLANS_MAP)?,
            vteps: super::mesh::take(ebpf, VTEPS_MAP)?,
        })
    }

    /// The overlay `vni`'s VXLAN device and port, for decapsulation.
    pub fn set_vxlan(&mut self, vni: u32, dev: VxlanDev) -> Result<(), DatapathError> {
        self.vxlans.insert(vni, dev, 0).map_err(err(VXLANS_MAP))
    }

    /// Forgets overlay `vni`'s device `ifindex` (not a newer one's).
    pub fn forget_vxlan(&mut self, vni: u32, ifindex: u32) -> Result<(), DatapathError> {
        if self.vxlans.get(&vni, 0).ok().map(|d| d.ifindex) == Some(ifindex) {
            gone(self.vxlans.remove(&vni), VXLANS_MAP)?;
        }
        Ok(())
    }

    /// The send side first, then the receive side: each works alone.
    pub fn add(&mut self, p: Port) -> Result<(), DatapathError> {
        self.uplinks
            .insert(p.veth, p.vxlan, 0)
            .map_err(err(UPLINKS_MAP))?;
        self.peers
            .insert(PeerKey::new(p.vxlan, p.mac), p.veth, 0)
            .map_err(err(PEERS_MAP))
    }

    /// Undoes [`add`](Self::add), receive side first. The MAC's entry is
    /// left alone if another veth took it over (a task started again with
    /// the same address before this one was detached).
    pub fn remove(&mut self, p: Port) -> Result<(), DatapathError> {
        let key = PeerKey::new(p.vxlan, p.mac);
        if self.peers.get(&key, 0).ok() == Some(p.veth) {
            gone(self.peers.remove(&key), PEERS_MAP)?;
        }
        gone(self.uplinks.remove(&p.veth), UPLINKS_MAP)
    }

    /// Brings the FDB mirror to `want`, the whole of it or (`only`) one
    /// VXLAN device's entries: entries not in `want` go first (a MAC that
    /// left must not be sent to its old node), then new and changed ones
    /// are written.
    pub fn set_vteps(
        &mut self,
        only: Option<u32>,
        want: &BTreeMap<PeerKey, Vtep>,
    ) -> Result<(), DatapathError> {
        let have: Vec<(PeerKey, Vtep)> = self
            .vteps
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| only.is_none_or(|dev| k.dev == dev))
            .collect();
        for (key, _) in have.iter().filter(|(k, _)| !want.contains_key(k)) {
            gone(self.vteps.remove(key), VTEPS_MAP)?;
        }
        for (key, vtep) in want {
            if !have.contains(&(*key, *vtep)) {
                self.vteps.insert(key, vtep, 0).map_err(err(VTEPS_MAP))?;
            }
        }
        Ok(())
    }

    /// The FDB mirror, for tests and inspection.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn vteps(&self) -> BTreeMap<PeerKey, Vtep> {
        self.vteps.iter().filter_map(Result::ok).collect()
    }

    /// Turns decapsulation off for every overlay.
    pub fn clear_vxlans(&mut self) -> Result<(), DatapathError> {
        let vnis: Vec<u32> = self.vxlans.keys().filter_map(Result::ok).collect();
        for vni in vnis {
            gone(self.vxlans.remove(&vni), VXLANS_MAP)?;
        }
        Ok(())
    }

    /// Turns both sides off for every task, the send side first (it reads
    /// the receive side's entries to tell local tasks from remote ones).
    pub fn clear_peers(&mut self) -> Result<(), DatapathError> {
        let veths: Vec<u32> = self.uplinks.keys().filter_map(Result::ok).collect();
        for veth in veths {
            gone(self.uplinks.remove(&veth), UPLINKS_MAP)?;
        }
        let keys: Vec<PeerKey> = self.peers.keys().filter_map(Result::ok).collect();
        for key in keys {
            gone(self.peers.remove(&key), PEERS_MAP)?;
        }
        Ok(())
    }

    /// Takes veth `veth` out of the send side.
    pub fn forget_uplink(&mut self, veth: u32) -> Result<(), DatapathError> {
        gone(self.uplinks.remove(&veth), UPLINKS_MAP)
    }

    /// Every receive-side entry, for tests and inspection.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn peers(&self) -> Result<Vec<(PeerKey, u32)>, DatapathError> {
        self.peers
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map {
                name: PEERS_MAP,
                source,
            })
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn uplink(&self, veth: u32) -> Option<u32> {
        self.uplinks.get(&veth, 0).ok()
    }
}
