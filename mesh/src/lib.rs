//! The routing mesh's policy, pure and testable without root: what a node's
//! eBPF maps must hold, worked out from the latest assignment set alone
//! ([`desired`]); the writes that take the maps there in the order the
//! programs rely on ([`Tables::apply`]) through the [`MeshMaps`] trait (the
//! agent implements it over its aya maps); and the Maglev tables the rings
//! hold ([`table`]). The map layouts themselves are the contract in
//! `shoal_common::mesh`.
#![forbid(unsafe_code)]

mod desired;
mod ids;
mod maglev;
mod tables;

pub use desired::{
    BackendSpec, Desired, Frontend, FrontendSpec, GroupKey, Published, Scope, desired,
};
pub use ids::Full;
pub use maglev::{BACKEND_NONE, MAGLEV_SIZE, MaglevBackend, MaglevError, table, table_of_size};
pub use tables::{Changes, GroupStats, LbError, MeshMaps, MeshState, Tables};
