//! The raft-log engine: every range's log entries and raft state in one store-wide engine, so
//! a store persists the Readys of many ranges with one write batch and one sync.

use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, LogIndex};

use crate::codec::RaftLogState;
use crate::error::Result;

/// Changes to many ranges' logs and states, written atomically by
/// [`RaftLogEngine::write`].
pub trait RaftLogBatch: Send {
    /// Puts `entries` (consecutive indexes) into `range`'s log, overwriting entries at the
    /// same indexes. Entries after the last one are untouched: to cut a conflicting tail, also
    /// call [`RaftLogBatch::delete_entries`] (as `RangeLogStorage` does).
    fn append(&mut self, range: RangeId, entries: &[Entry]);

    /// Deletes `range`'s entries with indexes in `[from, to)`: a conflicting tail, or a prefix
    /// made obsolete by a snapshot or compaction.
    fn delete_entries(&mut self, range: RangeId, from: LogIndex, to: LogIndex);

    /// Stores `range`'s raft state.
    fn put_raft_state(&mut self, range: RangeId, state: &RaftLogState);

    /// Removes `range`'s whole log and raft state (the replica is destroyed).
    fn clear_range(&mut self, range: RangeId);

    /// Whether the batch holds no change.
    fn is_empty(&self) -> bool;

    /// Number of puts and deletes in the batch.
    fn op_count(&self) -> usize;

    /// Approximate encoded size of the batch.
    fn size_bytes(&self) -> usize;

    /// Empties the batch for reuse.
    fn clear(&mut self);
}

/// Logs and raft states of all ranges of a store.
///
/// Contract, checked by the conformance suite:
/// - [`write`](Self::write) is atomic: after a crash either all of a batch is there or none.
/// - A batch written with `sync` is durable when the call returns; one sync covers the whole
///   batch (group commit). Writes without `sync` become durable at the next successful sync;
///   a crash keeps a prefix (in write order) of the unsynced batches.
/// - A failed sync poisons the engine: that call and every later one return
///   [`EngineError::Poisoned`](crate::EngineError::Poisoned) (or the original error first).
/// - Reads see every successful write, synced or not.
/// - Stored bytes are validated on read; damage is [`EngineError::Corruption`](crate::EngineError::Corruption).
pub trait RaftLogEngine: Clone + Send + Sync + 'static {
    /// The engine's write batch.
    type Batch: RaftLogBatch;

    /// An empty batch.
    fn batch(&self) -> Self::Batch;

    /// Writes `batch` atomically, durably if `sync`, and clears it. On error the batch is
    /// left as it was.
    ///
    /// # Errors
    /// I/O failures; [`EngineError::Poisoned`](crate::EngineError::Poisoned) after a failed sync.
    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()>;

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// As [`write`](Self::write); a failure poisons the engine.
    fn sync(&self) -> Result<()>;

    /// `range`'s raft state, if it has one.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn raft_state(&self, range: RangeId) -> Result<Option<RaftLogState>>;

    /// Calls `visit` with every range's raft state in range id order (recovery).
    ///
    /// # Errors
    /// I/O failures, corruption, or the first error `visit` returns.
    fn for_each_raft_state(
        &self,
        visit: &mut dyn FnMut(RangeId, RaftLogState) -> Result<()>,
    ) -> Result<()>;

    /// Appends to `out` `range`'s entries with indexes in `[low, high)`, stopping early once
    /// they add up to more than `max_bytes` (by [`Entry::size_bytes`]) but always returning at
    /// least one; returns how many were added.
    ///
    /// # Errors
    /// [`EngineError::InvalidArgument`](crate::EngineError::InvalidArgument) if an index in
    /// the range is missing (a gap: the caller's view of the log is wrong); I/O failures;
    /// corruption (including an entry whose stored index disagrees with its key).
    fn fetch_entries(
        &self,
        range: RangeId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<usize>;

    /// One entry, if stored.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn entry(&self, range: RangeId, index: LogIndex) -> Result<Option<Entry>>;

    /// The lowest and highest indexes stored for `range`, or `None` if its log is empty.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn stored_index_bounds(&self, range: RangeId) -> Result<Option<(LogIndex, LogIndex)>>;
}
