//! The Shoal VM lab: Shoal nodes as qemu VMs running Debian's own kernel
//! (6.1: ESP, WireGuard, clsact without TCX), on a bridge in a lab network
//! namespace, each provisioned by the very `vagrant/provision.sh` users run
//! under Vagrant. For what one shared kernel cannot show: real NICs between
//! nodes, one conntrack and one set of pinned maps per node, reboots.
//! Needs root; `cargo xtask vm` drives it by hand.

pub mod accel;
mod error;
pub mod image;
mod lab;
pub mod tool;

pub use error::VmError;
pub use lab::{
    BINARIES, CLIENT_ADDR, DEFAULT_INIT_ARGS, MAX_NODES, PREFIX_LEN, RUN_DIR, Timings, VmLab,
    VmLabBuilder, lab_dir, list_labs, node_addr, provision_script, remove_lab, sweep_stale,
};
