//! The KV engine: applied data in four column families, consistent snapshots, span deletes,
//! size estimates, range snapshots as files, and the durable apply index.

use std::path::Path;

use tessera_wire::ids::RangeId;
use tessera_wire::raft::LogIndex;

use crate::codec::ApplyState;
use crate::error::Result;
use crate::keys::KeySpan;
use crate::snapshot::SnapshotManifest;

/// A column family of the KV engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Values of committed transactional writes, and raw KV values.
    Default,
    /// Percolator locks.
    Lock,
    /// Percolator commit records.
    Write,
    /// Range-local and store-wide system keys (apply states, range states, store identity).
    Meta,
}

impl Cf {
    /// All column families, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Default, Self::Lock, Self::Write, Self::Meta];
    /// The column families that hold a range's data (`'z'` keys).
    pub const DATA: [Self; 3] = [Self::Default, Self::Lock, Self::Write];

    /// The column family's name on disk.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Lock => "lock",
            Self::Write => "write",
            Self::Meta => "meta",
        }
    }

    /// The column family with this on-disk name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|cf| cf.name() == name)
    }
}

/// Which way a scan walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// A positioned iterator over one column family, restricted to a span. Positioning calls
/// return whether the cursor now points at a key; `key` and `value` may only be called while
/// it does.
pub trait KvCursor {
    /// Moves to the first key `>= key` in the span.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn seek(&mut self, key: &[u8]) -> Result<bool>;
    /// Moves to the last key `<= key` in the span.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool>;
    /// Moves to the first key of the span.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn seek_to_first(&mut self) -> Result<bool>;
    /// Moves to the last key of the span.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn seek_to_last(&mut self) -> Result<bool>;
    /// Moves to the next key.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn next(&mut self) -> Result<bool>;
    /// Moves to the previous key.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn prev(&mut self) -> Result<bool>;
    /// Whether the cursor points at a key.
    fn valid(&self) -> bool;
    /// The current key.
    ///
    /// # Panics
    /// If the cursor is not [`valid`](Self::valid) (a caller bug).
    fn key(&self) -> &[u8];
    /// The current value.
    ///
    /// # Panics
    /// If the cursor is not [`valid`](Self::valid) (a caller bug).
    fn value(&self) -> &[u8];
}

/// Reads, from the live engine or from a snapshot.
pub trait KvRead {
    /// The cursor type.
    type Cursor<'a>: KvCursor
    where
        Self: 'a;

    /// The value of `key` in `cf`.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// A cursor over `span` of `cf`, not yet positioned.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn cursor(&self, cf: Cf, span: &KeySpan) -> Result<Self::Cursor<'_>>;

    /// Up to `limit` key-value pairs of `span` in `cf`, walking in `direction`.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn scan(
        &self,
        cf: Cf,
        span: &KeySpan,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut cursor = self.cursor(cf, span)?;
        let mut out = Vec::new();
        let mut valid = match direction {
            Direction::Forward => cursor.seek_to_first()?,
            Direction::Backward => cursor.seek_to_last()?,
        };
        while valid && out.len() < limit {
            out.push((cursor.key().to_vec(), cursor.value().to_vec()));
            valid = match direction {
                Direction::Forward => cursor.next()?,
                Direction::Backward => cursor.prev()?,
            };
        }
        Ok(out)
    }

    /// `range`'s apply state, if it has one.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn apply_state(&self, range: RangeId) -> Result<Option<ApplyState>> {
        let key = crate::keys::apply_state_key(range);
        self.get(Cf::Meta, &key)?
            .map(|value| ApplyState::decode(&format!("apply state of range {range}"), &value))
            .transpose()
    }
}

/// Changes to the KV engine, written atomically by [`KvEngine::write`].
pub trait KvBatch: Send {
    /// Sets `key` in `cf`.
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    /// Removes `key` from `cf`.
    fn delete(&mut self, cf: Cf, key: &[u8]);
    /// Removes every key of `span` in `cf`.
    fn delete_span(&mut self, cf: Cf, span: &KeySpan);
    /// Stores `range`'s apply state in this batch, so it lands with the data it covers, and
    /// remembers it for the durable apply index.
    fn put_apply_state(&mut self, range: RangeId, state: &ApplyState);
    /// Whether the batch holds no change.
    fn is_empty(&self) -> bool;
    /// Number of operations in the batch.
    fn op_count(&self) -> usize;
    /// Approximate encoded size of the batch.
    fn size_bytes(&self) -> usize;
    /// Empties the batch for reuse.
    fn clear(&mut self);
}

/// Approximate statistics of a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    /// Approximate bytes of keys and values.
    pub size_bytes: u64,
    /// Approximate number of keys.
    pub keys: u64,
}

/// The KV engine of a store.
///
/// Contract, checked by the conformance suite:
/// - [`write`](Self::write) is atomic and visible to reads on return; with `sync` it is also
///   durable. Without `sync` it becomes durable at the next [`sync_wal`](Self::sync_wal) or
///   [`flush`](Self::flush); a crash keeps a prefix (in write order) of the unsynced writes.
/// - The durable apply index of a range only covers apply states that are durable, so a log
///   truncated up to it never loses an entry whose effects could still vanish in a crash.
/// - A snapshot sees exactly the writes that returned before it was taken.
/// - A failed sync poisons the engine, as for the raft-log engine.
pub trait KvEngine: KvRead + Clone + Send + Sync + 'static {
    /// A consistent, point-in-time view, cheap to take and safe to move to another thread.
    type Snapshot: KvRead + Send + Sync + 'static;
    /// The engine's write batch.
    type Batch: KvBatch;

    /// A snapshot of everything written so far.
    fn snapshot(&self) -> Self::Snapshot;

    /// An empty batch.
    fn batch(&self) -> Self::Batch;

    /// Writes `batch` atomically (durably if `sync`) and clears it. On error the batch is left
    /// as it was.
    ///
    /// # Errors
    /// I/O failures; [`EngineError::Poisoned`](crate::EngineError::Poisoned) after a failed sync.
    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()>;

    /// Makes every write so far durable (syncs the write-ahead log) and advances the durable
    /// apply indexes accordingly.
    ///
    /// # Errors
    /// I/O failures; a failure poisons the engine.
    fn sync_wal(&self) -> Result<()>;

    /// Writes in-memory data to files and makes it durable; advances the durable apply
    /// indexes like [`sync_wal`](Self::sync_wal).
    ///
    /// # Errors
    /// I/O failures; a failure poisons the engine.
    fn flush(&self) -> Result<()>;

    /// `range`'s durable apply index: the highest applied index whose apply state is durable.
    /// The store may truncate `range`'s log up to (and including) this index, never beyond.
    fn durable_apply_index(&self, range: RangeId) -> Option<LogIndex>;

    /// Every range's durable apply index, in range id order.
    fn durable_apply_indexes(&self) -> Vec<(RangeId, LogIndex)>;

    /// Forgets `range`'s durable apply index: its replica was destroyed (its apply state is
    /// deleted with it), so no log truncation may be based on the old figure.
    fn forget_durable_apply_index(&self, range: RangeId);

    /// Removes every key of `span` from each of `cfs`, at once (not through a batch).
    ///
    /// # Errors
    /// I/O failures.
    fn delete_span(&self, cfs: &[Cf], span: &KeySpan) -> Result<()>;

    /// Approximate size and key count of `span` over the data column families.
    ///
    /// # Errors
    /// I/O failures.
    fn span_stats(&self, span: &KeySpan) -> Result<SpanStats>;

    /// A key that splits `span`'s data (over the data column families) into two halves of
    /// about equal size, or `None` if the span holds fewer than two distinct keys.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn split_key(&self, span: &KeySpan) -> Result<Option<Vec<u8>>>;

    /// Writes `span` of every data column family as seen by `snapshot` into files under `dir`
    /// (which must exist and be empty) and returns their manifest with checksums.
    ///
    /// # Errors
    /// I/O failures, corruption.
    fn export_snapshot(
        &self,
        snapshot: &Self::Snapshot,
        span: &KeySpan,
        dir: &Path,
    ) -> Result<SnapshotManifest>;

    /// Verifies the files of `manifest`, clears `span` in every data column family and
    /// loads the files' contents in its place. Keys outside `span` in a file are refused.
    ///
    /// # Errors
    /// [`EngineError::Corruption`](crate::EngineError::Corruption) on a checksum mismatch
    /// (nothing changed); I/O failures.
    fn ingest_snapshot(&self, span: &KeySpan, manifest: &SnapshotManifest) -> Result<()>;
}
