//! How the store reaches the network: a trait, so the simulator can drive whole stores with
//! its own seeded network and the product can use the QUIC transport.

use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::raft::ReplicaId;
use tessera_wire::transport::RaftEnvelope;

/// How sending a snapshot to a replica ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The range.
    pub range: RangeId,
    /// The replica it was for.
    pub to: ReplicaId,
    /// Whether the receiver took it.
    pub ok: bool,
}

/// Delivers Raft messages between stores. Delivery may fail silently: Raft retries.
pub trait Network {
    /// Queues `envelope` for its `to_store`.
    fn send(&mut self, envelope: RaftEnvelope);

    /// Called at the end of every round, after the round's messages were queued: a
    /// batching network sends them now.
    fn flush(&mut self) {}

    /// Called once per store tick: a network that coalesces heartbeats sends them now.
    fn tick(&mut self) {}

    /// Node liveness: whether `store` is believed up. Quiescence relies on this instead of
    /// per-range heartbeats: a quiesced follower whose leader's store is down wakes and
    /// campaigns; a leader quiesces past followers whose stores are down.
    fn store_alive(&self, store: StoreId) -> bool {
        let _ = store;
        true
    }

    /// Snapshots whose sending ended since the last call (a network that streams snapshots
    /// separately reports here; one that delivers them like any message reports nothing,
    /// and its owner calls [`Store::report_snapshot`](crate::Store::report_snapshot)).
    fn take_snapshot_reports(&mut self) -> Vec<SnapshotReport> {
        Vec::new()
    }
}
