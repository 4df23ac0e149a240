//! The log storage the Raft core reads from, and an in-memory implementation.
//!
//! The core only *reads* storage; the application writes what each `Ready` hands it (entries,
//! hard state, snapshot) and then tells the core it is durable. The RocksDB implementation
//! lives with the engine; [`MemStorage`] serves tests, benchmarks and the simulator.

use tessera_wire::raft::{ConfState, Entry, HardState, LogIndex, Snapshot, SnapshotMetadata, Term};

/// Why storage could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is at or before the first index kept (compacted into a snapshot).
    #[error("log compacted: index {0} is no longer available")]
    Compacted(LogIndex),
    /// The requested index is past the last index.
    #[error("log index {0} unavailable")]
    Unavailable(LogIndex),
    /// A snapshot is being built; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The storage failed (an I/O error, corruption). The caller cannot continue.
    #[error("storage failed: {0}")]
    Other(String),
}

/// Read access to a group's durable log, hard state and latest snapshot.
pub trait Storage {
    /// The hard state and membership to start from.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;
    /// Entries in `[low, high)`, at most `max_bytes` of them but always at least one.
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`, which may be the snapshot's index.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// The first index with an entry (the snapshot's index + 1).
    fn first_index(&self) -> LogIndex;
    /// The last index with an entry (or the snapshot's index when the log is empty).
    fn last_index(&self) -> LogIndex;
    /// The most recent snapshot, covering at least `request_index` if it can.
    fn snapshot(&self, request_index: LogIndex) -> Result<Snapshot, StorageError>;
}

/// An in-memory log: a snapshot followed by entries.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    // Invariant: entries[i].index == snapshot.metadata.index + 1 + i.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log with this membership (a new group's first configuration).
    #[must_use]
    pub fn new_with_conf_state(conf_state: ConfState) -> Self {
        let mut storage = Self::default();
        storage.snapshot.metadata.conf_state = conf_state;
        storage
    }

    /// The stored hard state.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Stores the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Sets the membership without a snapshot (bootstrap only).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.snapshot.metadata.conf_state = conf_state;
    }

    fn offset(&self) -> LogIndex {
        self.snapshot.metadata.index
    }

    /// Appends entries, replacing any stored entries at or after the first one's index.
    ///
    /// # Panics
    /// If the entries would leave a gap after the last stored entry, or overwrite the
    /// snapshot: the caller broke the Ready contract.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.offset(),
            "append at {} overwrites the snapshot at {}",
            first.index,
            self.offset()
        );
        assert!(
            first.index <= self.last_index().next(),
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        let keep = usize::try_from(first.index.0 - self.offset().0 - 1)
            .expect("log positions fit in memory");
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the whole log with a snapshot.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        self.hard_state.term = self.hard_state.term.max(snapshot.metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(snapshot.metadata.index);
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Makes a snapshot at `index` (which must be applied) with the state machine's `data`,
    /// and drops the entries it covers.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if `index` is older than the current snapshot,
    /// [`StorageError::Unavailable`] if it is past the last entry.
    pub fn compact_to_snapshot(
        &mut self,
        index: LogIndex,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        if index <= self.offset() {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        let term = self.term(index)?;
        let drop = usize::try_from(index.0 - self.offset().0).expect("log positions fit in memory");
        self.entries.drain(..drop);
        self.snapshot = Snapshot { metadata: SnapshotMetadata { index, term, conf_state }, data };
        Ok(())
    }

    /// The stored entries (after the snapshot).
    #[must_use]
    pub fn stored_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state, self.snapshot.metadata.conf_state.clone()))
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low <= self.offset() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high));
        }
        let start = usize::try_from(low.0 - self.offset().0 - 1).expect("fits in memory");
        let end = usize::try_from(high.0 - self.offset().0 - 1).expect("fits in memory");
        Ok(limit_size(&self.entries[start..end], max_bytes).to_vec())
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.offset() {
            return Ok(self.snapshot.metadata.term);
        }
        if index < self.offset() {
            return Err(StorageError::Compacted(index));
        }
        let position = usize::try_from(index.0 - self.offset().0 - 1).expect("fits in memory");
        self.entries.get(position).map(|entry| entry.term).ok_or(StorageError::Unavailable(index))
    }

    fn first_index(&self) -> LogIndex {
        self.offset().next()
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.offset().0 + self.entries.len() as u64)
    }

    fn snapshot(&self, _request_index: LogIndex) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// The longest prefix of `entries` within `max_bytes`, but at least one entry.
#[must_use]
pub fn limit_size(entries: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut total = 0u64;
    for (count, entry) in entries.iter().enumerate() {
        total += entry.size_bytes();
        if total > max_bytes && count > 0 {
            return &entries[..count];
        }
    }
    entries
}
