//! The in-memory engines, for the deterministic simulator and tests.
//!
//! [`MemRaftLogEngine`] and [`MemKvEngine`] implement the storage traits over one shared
//! design: per column family a `BTreeMap` from key to versions, where every write batch gets
//! a sequence number; a snapshot or cursor is a registered sequence number, and versions no
//! registered reader (and no possible crash) can see any more are pruned.
//!
//! Durability follows RocksDB's write-ahead log: a write with `sync = true` (or a later
//! successful `sync`, `sync_wal` or `flush`) makes everything written so far durable.
//! [`MemKvEngine::crash`] / [`MemRaftLogEngine::crash`] end an instance and return a new one
//! holding what was durable plus a prefix, in write order, of the unsynced batches; every
//! handle of the old instance (clones, snapshots, cursors) answers
//! [`EngineError::Poisoned`](crate::EngineError::Poisoned) from then on.
//!
//! Faults are injected with a [`FaultPlan`]: fail the Nth `write` call (nothing changes, the
//! engine stays usable) or the Nth sync (the engine is poisoned, as a real failed `fsync`
//! must poison it). A poisoned engine can still be crashed, which is how the simulator
//! restarts a node.

mod core;
mod kv;
mod raft;
mod snapshot_file;
mod store;

pub use kv::{MemKvBatch, MemKvCursor, MemKvEngine, MemKvSnapshot};
pub use raft::{MemRaftLogBatch, MemRaftLogEngine};

/// Faults to inject into an in-memory engine, counted from the moment the plan is set with
/// `inject`. The default injects nothing. Each fault fires once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The Nth call to `write` from now (1-based; 0 counts as 1) fails with
    /// [`EngineError::Injected`](crate::EngineError::Injected) and changes nothing; the
    /// engine stays usable.
    pub fail_write_at: Option<u64>,
    /// The Nth sync from now (1-based; 0 counts as 1) fails. Syncs are `sync`, `sync_wal`,
    /// `flush` and every `write` with `sync = true`; such a write's batch is applied in memory
    /// but not durable. The failing call returns
    /// [`EngineError::Injected`](crate::EngineError::Injected) and poisons the engine: every
    /// later call, reads included, returns
    /// [`EngineError::Poisoned`](crate::EngineError::Poisoned).
    pub fail_sync_at: Option<u64>,
}

/// Renders the state of a shared core for `Debug` without blocking on its lock.
fn debug_core<X>(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    shared: &parking_lot::Mutex<core::Core<X>>,
) -> std::fmt::Result {
    let mut out = f.debug_struct(name);
    match shared.try_lock() {
        Some(core) => out
            .field("seq", &core.store.seq())
            .field("unsynced_batches", &core.unsynced_batches())
            .field("writes", &core.writes())
            .field("syncs", &core.syncs())
            .field("poisoned", &core.is_poisoned())
            .finish(),
        None => out.field("state", &"<locked>").finish(),
    }
}
