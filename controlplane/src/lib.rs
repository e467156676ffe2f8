//! Shoal's control plane: the object model and its deterministic
//! [`model::apply`], the openraft log store and state machine over an
//! encrypted redb file ([`store`]), the reconcilers ([`orchestrator`]), the
//! dispatcher's pure halves ([`dispatch`]), the manager's gRPC handlers over
//! its domain modules ([`manager`]) and the one proto⇄model boundary
//! ([`wire`]).
//!
//! Why redb: it is pure Rust (no C++ build and libclang as rocksdb needs,
//! which matters on 2-core CI), a single file per node that is easy to back
//! up and inspect, with ACID transactions and fsync'd commits, which is all
//! a Raft log of modest size needs.
//!
//! Keys are layered as in swarm: every record (log entry, vote, committed
//! pointer, snapshot) is sealed with XChaCha20-Poly1305 under a random
//! 256-bit data key (DEK), with the record's table and key as associated
//! data; the DEK is stored only wrapped by a key-encryption key
//! ([`store::StoreKey`]) that the caller supplies: from a file in the state
//! directory, or the operator's unlock key with autolock. Rotating the KEK
//! rewraps the DEK and re-encrypts nothing.

#![forbid(unsafe_code)]

pub mod constraint;
pub mod dispatch;
pub mod ipam;
pub mod keys;
pub mod manager;
pub mod model;
pub mod orchestrator;
pub mod ports;
pub mod raft;
pub mod store;
pub mod template;
pub mod transport;
pub mod validate;
pub mod wire;

pub use raft::{RaftId, RaftMember, Response, TypeConfig, raft_config};
pub use store::{LogStore, StateMachineStore, StateReader, Store, StoreError, StoreKey};
