//! # tessera-placement
//!
//! The placement driver: a Raft group of 1, 3 or 5 nodes holding cluster metadata (stores,
//! range descriptors and leaders, placement rules, id allocator, the timestamp oracle's
//! persisted bound, the GC safe point), serving timestamps, and scheduling (replica
//! checker, placement rules, balancers) as pure logic on the leader.
//!
//! - [`state`]: the replicated state and the commands that change it;
//! - [`node`]: one member — Raft, apply, the leader's services;
//! - [`tso`]: the timestamp oracle;
//! - [`schedule`]: scheduling as pure logic (checkers, balancers, operators);
//! - [`system`]: a member on its own thread, and its transport glue.
//!
//! The caller's side (following the leader) is `tessera_client::placement`.
//!
//! Does not belong here: the store's data path. Built on `tessera-raft`, `tessera-engine`
//! and `tessera-transport`.

mod codec;
pub mod error;
pub mod node;
pub mod schedule;
pub mod state;
pub mod system;
pub mod tso;

pub use error::{PlacementError, Result};
pub use node::{
    NodeConfig, NodeInspection, NodeNetwork, PLACEMENT_GROUP, PlacementNode, Responder,
    bootstrap_group,
};
pub use system::{
    PlacementHandle, PlacementRpcHandler, PlacementSystem, TransportNodeNetwork,
    member_transport_config,
};
