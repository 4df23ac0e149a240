//! What both in-memory engines share behind their lock: the versioned store, the WAL-like
//! durability model, fault injection, poisoning and the registry of live read sequences.

use std::collections::{BTreeMap, VecDeque};

use super::FaultPlan;
use super::store::{Op, VersionedStore};
use crate::error::{EngineError, Result};

/// The cause a crashed (dead) handle reports.
pub(crate) const CRASHED: &str = "simulated crash";

/// Versions are swept store-wide when their count passes this, then at twice what is left.
const MIN_SWEEP_AT: usize = 4096;

/// One engine instance's state. `X` is engine-specific state kept under the same lock.
#[derive(Debug)]
pub(crate) struct Core<X> {
    pub(crate) store: VersionedStore,
    // Every batch with a sequence number `<= synced_seq` is durable.
    synced_seq: u64,
    // Sequence numbers of the batches written since the last sync, in write order.
    unsynced: VecDeque<u64>,
    // Live read sequences (snapshots, cursors) and how many readers hold each.
    readers: BTreeMap<u64, usize>,
    // Absolute counter values at which the armed faults fire.
    fail_write_at: Option<u64>,
    fail_sync_at: Option<u64>,
    writes: u64,
    syncs: u64,
    poisoned: Option<String>,
    sweep_at: usize,
    pub(crate) extra: X,
}

impl<X> Core<X> {
    /// A core over `store`, all of which counts as durable.
    pub(crate) fn new(store: VersionedStore, extra: X) -> Self {
        Self {
            synced_seq: store.seq(),
            store,
            unsynced: VecDeque::new(),
            readers: BTreeMap::new(),
            fail_write_at: None,
            fail_sync_at: None,
            writes: 0,
            syncs: 0,
            poisoned: None,
            sweep_at: MIN_SWEEP_AT,
            extra,
        }
    }

    /// Fails with [`EngineError::Poisoned`] once the engine is poisoned or dead.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(EngineError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Whether a failed sync or a crash has poisoned this instance.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Arms `plan`, counting from the current counters.
    pub(crate) fn inject(&mut self, plan: FaultPlan) {
        self.fail_write_at = plan.fail_write_at.map(|n| self.writes.saturating_add(n.max(1)));
        self.fail_sync_at = plan.fail_sync_at.map(|n| self.syncs.saturating_add(n.max(1)));
    }

    /// `write` calls so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Syncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Batches written since the last sync.
    pub(crate) fn unsynced_batches(&self) -> usize {
        self.unsynced.len()
    }

    /// Counts a `write` call; fails it if it is the one the fault plan names.
    pub(crate) fn begin_write(&mut self) -> Result<()> {
        self.check()?;
        self.writes += 1;
        if self.fail_write_at == Some(self.writes) {
            self.fail_write_at = None;
            return Err(EngineError::Injected("write failed"));
        }
        Ok(())
    }

    /// Applies `ops` as one unsynced batch and returns its sequence number, or `None` for an
    /// empty batch (which changes nothing and is not counted as a batch).
    pub(crate) fn apply(&mut self, ops: &[Op]) -> Option<u64> {
        if ops.is_empty() {
            return None;
        }
        let horizon = self.horizon();
        let seq = self.store.apply(ops, horizon);
        self.unsynced.push_back(seq);
        self.maybe_sweep();
        Some(seq)
    }

    /// Makes every batch so far durable and returns the last sequence number covered. An
    /// injected failure poisons the engine.
    pub(crate) fn sync(&mut self) -> Result<u64> {
        self.check()?;
        self.syncs += 1;
        if self.fail_sync_at == Some(self.syncs) {
            self.fail_sync_at = None;
            self.poisoned = Some("sync (injected fault)".to_owned());
            return Err(EngineError::Injected("sync failed"));
        }
        self.synced_seq = self.store.seq();
        self.unsynced.clear();
        self.maybe_sweep();
        Ok(self.synced_seq)
    }

    /// Registers a reader at the current sequence and returns it.
    pub(crate) fn register_reader(&mut self) -> u64 {
        let seq = self.store.seq();
        self.register_reader_at(seq);
        seq
    }

    /// Registers one more reader at `seq` (which must be registered or current).
    pub(crate) fn register_reader_at(&mut self, seq: u64) {
        *self.readers.entry(seq).or_default() += 1;
    }

    /// Drops a reader registered at `seq`.
    pub(crate) fn unregister_reader(&mut self, seq: u64) {
        if let Some(count) = self.readers.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                self.readers.remove(&seq);
            }
        }
    }

    /// Ends this instance: returns what a restart finds (everything durable plus the first
    /// `keep_unsynced` unsynced batches) and poisons the instance for good.
    pub(crate) fn crash(&mut self, keep_unsynced: usize) -> VersionedStore {
        let kept = keep_unsynced.min(self.unsynced.len());
        let through = match kept.checked_sub(1) {
            Some(last) => self.unsynced[last],
            None => self.synced_seq,
        };
        let image = self.store.image_at(through);
        // The dead instance keeps its data (freed with its last handle), so crashing it again
        // recovers the same way; its handles only answer `Poisoned` from now on.
        self.poisoned = Some(CRASHED.to_owned());
        image
    }

    // The oldest sequence a read (or a crash) may still need.
    fn horizon(&self) -> u64 {
        self.readers.keys().next().map_or(self.synced_seq, |oldest| (*oldest).min(self.synced_seq))
    }

    fn maybe_sweep(&mut self) {
        if self.store.versions() > self.sweep_at {
            let horizon = self.horizon();
            self.store.prune_all(horizon);
            self.sweep_at = (self.store.versions() * 2).max(MIN_SWEEP_AT);
        }
    }
}
