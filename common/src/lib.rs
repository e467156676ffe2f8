//! The kernel/user contract: every type that crosses into an eBPF map, and
//! every map and program name, written once and used by both sides; and the
//! IPv4 network type every crate shares (`net`).
//!
//! Rules (STYLE.md): `#[repr(C)]`, padding spelled out, no `bool`/`Option` in
//! map values, one size assert per type, names ≤ 15 bytes and versioned.
#![no_std]
// aya::Pod is an unsafe trait: the impls below assert the types are plain data.
#![cfg_attr(feature = "user", allow(unsafe_code))]

pub mod egress;
pub mod mesh;
pub mod net;
pub mod policy;
pub mod ports;
pub mod stats;
