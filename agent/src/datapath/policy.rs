//! Typed access to the isolation maps of the mesh object
//! (common/src/policy.rs): the overlay subnets and node addresses this node
//! knows, and each task veth's endpoint.
use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key};
use shoal_common::{
    mesh::FlowKey,
    policy::{ENCRYPTED_VNIS_MAP, ENDPOINTS_MAP, Endpoint, NETWORKS_MAP, NetEntry, PERMIT_MAP},
};

use super::DatapathError;

/// An entry of the networks map: `addr/prefix` (host order) and what it is.
pub type NetPrefix = (Ipv4Addr, u8);

pub struct PolicyMaps {
    networks: LpmTrie<MapData, u32, NetEntry>,
    endpoints: HashMap<MapData, u32, Endpoint>,
    #[cfg_attr(not(test), allow(dead_code))]
    permits: HashMap<MapData, FlowKey, u32>,
    encrypted: HashMap<MapData, u32, u32>,
}

fn err(name: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::MapUpdate { name, source }
}

fn key((addr, prefix): NetPrefix) -> Key<u32> {
    // The trie compares the key's first `prefix` bits: host bits must be
    // zero or two writes of one subnet would make two entries.
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Key::new(u32::from(prefix), (u32::from(addr) & mask).to_be())
}

impl PolicyMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            networks: super::mesh::take(ebpf, NETWORKS_MAP)?,
            endpoints: super::mesh::take(ebpf, ENDPOINTS_MAP)?,
            permits: super::mesh::take(ebpf, PERMIT_MAP)?,
            encrypted: super::mesh::take(ebpf, ENCRYPTED_VNIS_MAP)?,
        })
    }

    /// Makes the networks map hold exactly `want`: new and changed entries
    /// first, then the ones no longer wanted, so a subnet is never briefly
    /// unknown (an unknown address counts as outside the cluster).
    pub fn set_networks(
        &mut self,
        want: &BTreeMap<NetPrefix, NetEntry>,
    ) -> Result<(), DatapathError> {
        let have: Vec<(Key<u32>, NetEntry)> = self
            .networks
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map {
                name: NETWORKS_MAP,
                source,
            })?;
        let same_key =
            |a: &Key<u32>, b: &Key<u32>| a.prefix_len() == b.prefix_len() && a.data() == b.data();
        for (p, entry) in want {
            let k = key(*p);
            let known = have.iter().any(|(h, v)| same_key(h, &k) && v == entry);
            if !known {
                self.networks
                    .insert(&k, entry, 0)
                    .map_err(err(NETWORKS_MAP))?;
            }
        }
        for (h, _) in &have {
            let wanted = want.keys().any(|p| same_key(&key(*p), h));
            if !wanted {
                match self.networks.remove(h) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(err(NETWORKS_MAP)(e)),
                }
            }
        }
        Ok(())
    }

    /// Makes the encrypted VNIs map hold exactly `want` (VNI → its VXLAN
    /// port): new ones first, so a network turning encrypted is guarded
    /// before anything else changes.
    pub fn set_encrypted_vnis(&mut self, want: &BTreeMap<u32, u32>) -> Result<(), DatapathError> {
        let have: Vec<(u32, u32)> =
            self.encrypted
                .iter()
                .collect::<Result<_, _>>()
                .map_err(|source| DatapathError::Map {
                    name: ENCRYPTED_VNIS_MAP,
                    source,
                })?;
        for (vni, port) in want {
            if !have.contains(&(*vni, *port)) {
                self.encrypted
                    .insert(vni, port, 0)
                    .map_err(err(ENCRYPTED_VNIS_MAP))?;
            }
        }
        for (vni, _) in &have {
            if !want.contains_key(vni) {
                match self.encrypted.remove(vni) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(err(ENCRYPTED_VNIS_MAP)(e)),
                }
            }
        }
        Ok(())
    }

    /// What the networks map holds, as `(addr, prefix) → entry`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn networks(&self) -> Result<BTreeMap<NetPrefix, NetEntry>, DatapathError> {
        self.networks
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let addr = Ipv4Addr::from(u32::from_be(k.data()));
                    ((addr, k.prefix_len() as u8), v)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map {
                name: NETWORKS_MAP,
                source,
            })
    }

    /// One write: the veth's whole description (see common/src/policy.rs).
    pub fn set_endpoint(&mut self, ifindex: u32, ep: &Endpoint) -> Result<(), DatapathError> {
        self.endpoints
            .insert(ifindex, ep, 0)
            .map_err(err(ENDPOINTS_MAP))
    }

    /// An endpoint already gone is not an error.
    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.endpoints.remove(&ifindex) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(ENDPOINTS_MAP)(e)),
        }
    }

    /// Whether the replies `reply` stands for were permitted.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn permitted(&self, reply: &FlowKey) -> Result<bool, DatapathError> {
        match self.permits.get(reply, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(DatapathError::Map {
                name: PERMIT_MAP,
                source,
            }),
        }
    }
}

/// A task's endpoint: `(network VNI, address)` of each attachment, and the
/// VNI of the one this veth is on. Refused with more attachments than the
/// map's value holds.
pub fn endpoint(own_net: u32, attachments: &[(u32, Ipv4Addr)]) -> Result<Endpoint, DatapathError> {
    use shoal_common::policy::MAX_TASK_NETWORKS;
    if attachments.len() > MAX_TASK_NETWORKS {
        return Err(DatapathError::TooManyNetworks {
            count: attachments.len(),
            max: MAX_TASK_NETWORKS,
        });
    }
    let mut ep = Endpoint {
        count: attachments.len() as u32,
        net: own_net,
        ..Endpoint::default()
    };
    for (i, (net, addr)) in attachments.iter().enumerate() {
        ep.nets[i] = *net;
        ep.addrs[i] = u32::from(*addr).to_be();
    }
    Ok(ep)
}
