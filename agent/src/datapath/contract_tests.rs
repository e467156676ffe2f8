//! The embedded eBPF objects declare exactly the maps and programs the
//! contract crate names (the ebpf crate spells them as literals, which the
//! `#[map]` macro needs): a rename on one side only fails here, without
//! root, rather than at load time on a node.

use std::collections::BTreeSet;

use shoal_common::{egress, mesh, policy, stats};

/// (maps, programs) the object declares; sections such as `.rodata` are
/// maps to aya but not named by the contract.
fn declared(object: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let obj = aya_obj::Object::parse(object).expect("the embedded object parses");
    let maps = obj
        .maps
        .keys()
        .filter(|m| !m.starts_with('.'))
        .cloned()
        .collect();
    let programs = obj.programs.keys().cloned().collect();
    (maps, programs)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn counting_object_declares_the_contract_names() {
    let (maps, programs) = declared(super::TC_OBJECT);
    assert_eq!(maps, set(&[stats::STATS_MAP, stats::REASONS_MAP]));
    assert_eq!(
        programs,
        set(&[stats::PROG_TC_INGRESS, stats::PROG_TC_EGRESS])
    );
}

#[test]
fn mesh_object_declares_the_contract_names() {
    let (maps, programs) = declared(super::mesh::MESH_OBJECT);
    assert_eq!(
        maps,
        set(&[
            mesh::SERVICES_MAP,
            mesh::BACKENDS_MAP,
            mesh::MAGLEV_MAP,
            mesh::CONNTRACK_MAP,
            mesh::REVNAT_MAP,
            mesh::SERVICE_STATS_MAP,
            mesh::MESH_REASONS_MAP,
            mesh::MESH_CONFIG_MAP,
            mesh::RETURN_MAP,
            mesh::PEERS_MAP,
            mesh::UPLINKS_MAP,
            mesh::VXLANS_MAP,
            mesh::VTEPS_MAP,
            policy::NETWORKS_MAP,
            policy::ENDPOINTS_MAP,
            policy::PERMIT_MAP,
            egress::SNAT_MAP,
            egress::SNAT_REV_MAP,
            policy::ENCRYPTED_VNIS_MAP,
        ])
    );
    assert_eq!(
        programs,
        set(&[
            mesh::PROG_MESH_INGRESS,
            mesh::PROG_MESH_EGRESS,
            mesh::PROG_TASK_INGRESS,
            mesh::PROG_TASK_EGRESS,
            mesh::PROG_VXLAN_INGRESS,
        ])
    );
}
