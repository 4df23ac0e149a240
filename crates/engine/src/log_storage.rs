//! The Raft core's [`Storage`] over any [`RaftLogEngine`]: one range's log, hard state and
//! latest snapshot, with the log's tail cached in memory.
//!
//! The store drives it in the order of the Ready contract (`tessera-raft`'s crate doc): for
//! each Ready it *stages* the snapshot, the entries and the hard state into the engine's
//! write batch shared by all ranges, writes that batch with one sync, and only then tells the
//! core the Ready is persisted. Staging updates this view at once; that is safe because the
//! core reads back only entries it already knows to be persisted, and a failed write poisons
//! the engine (the store then restarts from disk).

use std::cell::Cell;
use std::collections::VecDeque;

use tessera_raft::{Storage, StorageError};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{ConfState, Entry, HardState, LogIndex, Snapshot, SnapshotMetadata, Term};

use crate::codec::RaftLogState;
use crate::error::{EngineError, Result};
use crate::raft_log::{RaftLogBatch, RaftLogEngine};

/// Default bound of the in-memory tail cache per range.
pub const ENTRY_CACHE_BYTES_MAX: u64 = 1 << 20;

/// One range's log as the Raft core reads it, backed by a store-wide [`RaftLogEngine`].
#[derive(Debug)]
pub struct RangeLogStorage<E: RaftLogEngine> {
    engine: E,
    range: RangeId,
    // The hard state and truncation point as last staged.
    state: RaftLogState,
    conf_state: ConfState,
    // Invariant: last_index >= state.truncated_index, and every index in
    // (truncated_index, last_index] is stored (or staged).
    last_index: LogIndex,
    last_term: Term,
    // Invariant: a contiguous run of entries ending at last_index (or empty).
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    cache_bytes_max: u64,
    snapshot: Option<Snapshot>,
    snapshot_wanted: Cell<Option<LogIndex>>,
}

impl<E: RaftLogEngine> RangeLogStorage<E> {
    /// Opens `range`'s log. `conf_state` is the membership as of the range's applied state
    /// (the store keeps it with the range's descriptor); a range without a stored raft state
    /// starts empty.
    ///
    /// # Errors
    /// Engine failures, and [`EngineError::Corruption`] if the stored log contradicts its
    /// state (entries missing after the truncation point, or a commit index past the log).
    pub fn open(engine: E, range: RangeId, conf_state: ConfState) -> Result<Self> {
        let state = engine.raft_state(range)?.unwrap_or_default();
        let location = || format!("raft log of range {range}");
        let (last_index, last_term) = match engine.stored_index_bounds(range)? {
            Some((first, last)) if last > state.truncated_index => {
                if first > state.first_index() {
                    return Err(EngineError::corruption(
                        location(),
                        format!("first stored entry {first}, expected {}", state.first_index()),
                    ));
                }
                let entry = engine
                    .entry(range, last)?
                    .ok_or_else(|| EngineError::corruption(location(), "last entry vanished"))?;
                (last, entry.term)
            }
            _ => (state.truncated_index, state.truncated_term),
        };
        if state.hard_state.commit > last_index {
            return Err(EngineError::corruption(
                location(),
                format!("commit index {} past last index {last_index}", state.hard_state.commit),
            ));
        }
        Ok(Self {
            engine,
            range,
            state,
            conf_state,
            last_index,
            last_term,
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_bytes_max: ENTRY_CACHE_BYTES_MAX,
            snapshot: None,
            snapshot_wanted: Cell::new(None),
        })
    }

    /// Sets the bound of the in-memory tail cache (0 disables it).
    pub fn set_cache_bytes_max(&mut self, bytes: u64) {
        self.cache_bytes_max = bytes;
        self.trim_cache();
    }

    /// The range this log belongs to.
    #[must_use]
    pub fn range(&self) -> RangeId {
        self.range
    }

    /// The raft state as last staged.
    #[must_use]
    pub fn raft_state(&self) -> RaftLogState {
        self.state
    }

    /// Replaces the membership reported by `initial_state` (after the store applied a
    /// membership change).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Stages a received snapshot: the whole log is replaced by the snapshot's position.
    pub fn stage_snapshot(&mut self, batch: &mut E::Batch, metadata: &SnapshotMetadata) {
        batch.delete_entries(self.range, LogIndex(0), self.last_index.next());
        self.state.truncated_index = metadata.index;
        self.state.truncated_term = metadata.term;
        self.state.hard_state.term = self.state.hard_state.term.max(metadata.term);
        self.state.hard_state.commit = self.state.hard_state.commit.max(metadata.index);
        self.last_index = metadata.index;
        self.last_term = metadata.term;
        self.conf_state = metadata.conf_state.clone();
        self.cache.clear();
        self.cache_bytes = 0;
        batch.put_raft_state(self.range, &self.state);
    }

    /// Stages entries from a Ready: they replace any stored entries from the first one's
    /// index on.
    ///
    /// # Panics
    /// If the entries would leave a gap after the last entry or overwrite the truncated
    /// prefix: the caller broke the Ready contract.
    pub fn stage_entries(&mut self, batch: &mut E::Batch, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return };
        assert!(
            first.index > self.state.truncated_index,
            "range {}: append at {} overwrites the truncated prefix ending at {}",
            self.range,
            first.index,
            self.state.truncated_index
        );
        assert!(
            first.index <= self.last_index.next(),
            "range {}: append at {} leaves a gap after {}",
            self.range,
            first.index,
            self.last_index
        );
        batch.append(self.range, entries);
        if self.last_index > last.index {
            batch.delete_entries(self.range, last.index.next(), self.last_index.next());
        }
        self.last_index = last.index;
        self.last_term = last.term;
        // Keep the cache a contiguous run ending at last_index.
        let cache_first = self.cache.front().map(|entry| entry.index);
        match cache_first {
            Some(cache_first) if cache_first < first.index => {
                while self.cache.back().is_some_and(|entry| entry.index >= first.index) {
                    let removed = self.cache.pop_back().expect("checked non-empty");
                    self.cache_bytes -= removed.size_bytes();
                }
            }
            _ => {
                self.cache.clear();
                self.cache_bytes = 0;
            }
        }
        for entry in entries {
            self.cache_bytes += entry.size_bytes();
            self.cache.push_back(entry.clone());
        }
        self.trim_cache();
    }

    /// Stages a new hard state.
    pub fn stage_hard_state(&mut self, batch: &mut E::Batch, hard_state: HardState) {
        self.state.hard_state = hard_state;
        batch.put_raft_state(self.range, &self.state);
    }

    /// Stages the removal of the log up to `requested` (inclusive), but never past
    /// `durable_apply_index` (the KV engine's durable apply index of this range: entries
    /// whose effects are not yet durable must stay to be re-applied after a crash) and never
    /// past the last entry. Returns the new truncation point, or `None` if nothing changes.
    ///
    /// # Errors
    /// Engine failures reading the term of the new truncation point.
    pub fn stage_compaction(
        &mut self,
        batch: &mut E::Batch,
        requested: LogIndex,
        durable_apply_index: LogIndex,
    ) -> Result<Option<LogIndex>> {
        let index = requested.min(durable_apply_index).min(self.last_index);
        if index <= self.state.truncated_index {
            return Ok(None);
        }
        let term = self.term(index).map_err(|error| storage_to_engine(self.range, &error))?;
        batch.delete_entries(self.range, self.state.first_index(), index.next());
        self.state.truncated_index = index;
        self.state.truncated_term = term;
        batch.put_raft_state(self.range, &self.state);
        while self.cache.front().is_some_and(|entry| entry.index <= index) {
            let removed = self.cache.pop_front().expect("checked non-empty");
            self.cache_bytes -= removed.size_bytes();
        }
        Ok(Some(index))
    }

    /// Offers the latest snapshot of the range's state machine for the core to send.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        if self.snapshot_wanted.get().is_some_and(|wanted| snapshot.metadata.index >= wanted) {
            self.snapshot_wanted.set(None);
        }
        self.snapshot = Some(snapshot);
    }

    /// Forgets the offered snapshot (the membership changed since it was built: a replica
    /// added since would be refused by it).
    pub fn clear_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Whether the core asked for a snapshot that is not ready: the index it must cover at
    /// least. The store builds one and hands it over with [`set_snapshot`](Self::set_snapshot).
    #[must_use]
    pub fn snapshot_wanted(&self) -> Option<LogIndex> {
        self.snapshot_wanted.get()
    }

    fn trim_cache(&mut self) {
        while self.cache_bytes > self.cache_bytes_max {
            let Some(removed) = self.cache.pop_front() else { break };
            self.cache_bytes -= removed.size_bytes();
        }
    }

    fn cache_first(&self) -> Option<LogIndex> {
        self.cache.front().map(|entry| entry.index)
    }
}

fn engine_to_storage(error: &EngineError) -> StorageError {
    StorageError::Other(error.to_string())
}

fn storage_to_engine(range: RangeId, error: &StorageError) -> EngineError {
    EngineError::InvalidArgument(format!("range {range}: {error}"))
}

impl<E: RaftLogEngine> Storage for RangeLogStorage<E> {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.state.hard_state, self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low <= self.state.truncated_index {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index.next() {
            return Err(StorageError::Unavailable(high));
        }
        let mut out = Vec::new();
        if low >= high {
            return Ok(out);
        }
        let cache_first = self.cache_first().unwrap_or(self.last_index.next());
        if low < cache_first {
            let engine_high = high.min(cache_first);
            self.engine
                .fetch_entries(self.range, low, engine_high, max_bytes, &mut out)
                .map_err(|error| engine_to_storage(&error))?;
            let complete = out.last().is_some_and(|entry| entry.index.next() == engine_high);
            if !complete || engine_high == high {
                return Ok(out);
            }
        }
        let mut total: u64 = out.iter().map(Entry::size_bytes).sum();
        let skip = usize::try_from(low.max(cache_first).0 - cache_first.0)
            .expect("cache positions fit in memory");
        for entry in self.cache.iter().skip(skip) {
            if entry.index >= high {
                break;
            }
            total += entry.size_bytes();
            if total > max_bytes && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.state.truncated_index {
            return Ok(self.state.truncated_term);
        }
        if index < self.state.truncated_index {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index {
            return Err(StorageError::Unavailable(index));
        }
        if index == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(cache_first) = self.cache_first()
            && index >= cache_first
        {
            let position = usize::try_from(index.0 - cache_first.0).expect("fits in memory");
            return Ok(self.cache[position].term);
        }
        match self.engine.entry(self.range, index) {
            Ok(Some(entry)) => Ok(entry.term),
            Ok(None) => Err(StorageError::Other(format!(
                "range {}: entry {index} missing inside the log",
                self.range
            ))),
            Err(error) => Err(engine_to_storage(&error)),
        }
    }

    fn first_index(&self) -> LogIndex {
        self.state.first_index()
    }

    fn last_index(&self) -> LogIndex {
        self.last_index
    }

    fn snapshot(&self, request_index: LogIndex) -> Result<Snapshot, StorageError> {
        match &self.snapshot {
            Some(snapshot) if snapshot.metadata.index >= self.state.truncated_index => {
                Ok(snapshot.clone())
            }
            _ => {
                let wanted = request_index.max(self.state.truncated_index);
                self.snapshot_wanted.set(Some(wanted));
                Err(StorageError::SnapshotTemporarilyUnavailable)
            }
        }
    }
}
