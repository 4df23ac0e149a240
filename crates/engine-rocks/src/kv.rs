//! The KV engine on RocksDB (`kv/`): column families `default`, `lock`, `write`, `meta`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use parking_lot::Mutex;
use rocksdb::{
    Cache, ColumnFamily, DB, DBRawIteratorWithThreadMode, FlushOptions, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBatch, WriteOptions,
};
use tessera_engine::codec::ApplyState;
use tessera_engine::{
    Cf, DurableApplyTracker, EngineError, KeySpan, KvBatch, KvCursor, KvEngine, KvRead, Result,
    SnapshotManifest, SpanStats, keys,
};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::LogIndex;

use crate::error::{Poison, map_err};
use crate::metrics;
use crate::options::{EngineOptions, kv_cf_descriptors, kv_cf_options, kv_db_options};

const ENGINE: &str = "kv";

/// A key above every key of the layout (all start with a byte below `0xFF`): the end used
/// for range deletions of a span without an upper bound. Keys at or above it (none in
/// practice) are deleted one by one.
pub(crate) const KEY_SPACE_END: &[u8] = &[0xFF; 16];

pub(crate) struct KvInner {
    pub(crate) db: DB,
    pub(crate) poison: Poison,
    /// The durable apply index. The lock is also held across every write to the instance, so
    /// `latest_sequence_number()` read under it right after a write is that write's own
    /// sequence number (writes are serialized; the KV engine does not sync per write, so
    /// this costs little).
    pub(crate) tracker: Mutex<DurableApplyTracker>,
    /// Options of the data column families, for writing snapshot SST files.
    pub(crate) sst_options: Options,
    /// Scratch space for checking snapshot files before ingestion.
    pub(crate) scratch_root: PathBuf,
    pub(crate) scratch_seq: AtomicU64,
}

impl KvInner {
    pub(crate) fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family was checked at open and none is ever dropped")
    }

    /// Writes `batch` (already copied) under the tracker lock and records `applied`.
    pub(crate) fn write_locked(
        &self,
        batch: WriteBatch,
        applied: &[(RangeId, LogIndex)],
        sync: bool,
    ) -> Result<()> {
        let mut write_options = WriteOptions::new();
        write_options.set_sync(sync);
        let mut tracker = self.tracker.lock();
        let start = Instant::now();
        match self.db.write_opt(batch, &write_options) {
            Ok(()) => {
                // Writes are serialized by the lock: this is this write's last sequence number.
                let seq = self.db.latest_sequence_number();
                tracker.written(seq, applied);
                if sync {
                    // The WAL is sequential and every earlier write is before this one in it.
                    tracker.synced_through(seq);
                    drop(tracker);
                    metrics::record_sync(ENGINE, start.elapsed());
                }
                Ok(())
            }
            Err(error) if sync => Err(self.poison.poison("synced write", &error)),
            Err(error) => Err(map_err("writing to the KV engine", &error)),
        }
    }

    /// Adds to `batch` the deletion of `span` in `cf` (nothing for an empty span).
    pub(crate) fn stage_delete_span(
        &self,
        batch: &mut WriteBatch,
        cf: Cf,
        span: &KeySpan,
    ) -> Result<()> {
        if span.is_empty() {
            return Ok(());
        }
        let handle = self.cf(cf);
        match span.end_bound() {
            Some(end) => batch.delete_range_cf(handle, span.start.as_slice(), end),
            None => {
                if span.start.as_slice() < KEY_SPACE_END {
                    batch.delete_range_cf(handle, span.start.as_slice(), KEY_SPACE_END);
                }
                // Keys beyond the range-deletion end: none in the layout, but be exact.
                let lower = span.start.as_slice().max(KEY_SPACE_END).to_vec();
                let mut read = ReadOptions::default();
                read.set_iterate_lower_bound(lower);
                let mut iter = self.db.raw_iterator_cf_opt(handle, read);
                iter.seek_to_first();
                while let Some(key) = iter.key() {
                    batch.delete_cf(handle, key);
                    iter.next();
                }
                iter.status()
                    .map_err(|error| map_err("scanning the end of the key space", &error))?;
            }
        }
        Ok(())
    }
}

/// The KV engine: applied data and system keys in one RocksDB instance (`kv/`) with column
/// families `default`, `lock`, `write` and `meta`. Cloning is cheap (an `Arc`); clones share
/// the instance, the durable apply index and the poison state.
#[derive(Clone)]
pub struct RocksKvEngine {
    inner: Arc<KvInner>,
}

impl std::fmt::Debug for RocksKvEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKvEngine")
            .field("path", &self.inner.db.path())
            .field("poisoned", &self.inner.poison.is_poisoned())
            .finish()
    }
}

impl RocksKvEngine {
    /// Opens (creating if missing) the KV instance at `path`, and seeds the durable apply
    /// index from the apply states on disk. `scratch_root` is a directory this engine owns
    /// for checking snapshot files.
    pub(crate) fn open(
        path: &Path,
        scratch_root: PathBuf,
        options: &EngineOptions,
        cache: &Cache,
    ) -> Result<Self> {
        let db = DB::open_cf_descriptors(
            &kv_db_options(options),
            path,
            kv_cf_descriptors(options, cache),
        )
        .map_err(|error| map_err(&format!("opening KV engine at {}", path.display()), &error))?;
        for cf in Cf::ALL {
            if db.cf_handle(cf.name()).is_none() {
                return Err(EngineError::Backend(format!(
                    "KV engine at {} opened without column family {}",
                    path.display(),
                    cf.name()
                )));
            }
        }
        match std::fs::remove_dir_all(&scratch_root) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(EngineError::io(format!("removing {}", scratch_root.display()), error));
            }
        }
        let inner = KvInner {
            db,
            poison: Poison::new(ENGINE),
            tracker: Mutex::new(DurableApplyTracker::default()),
            sst_options: kv_cf_options(options, cache),
            scratch_root,
            scratch_seq: AtomicU64::new(0),
        };
        let recovered = recover_apply_states(&inner)?;
        tracing::info!(path = %path.display(), ranges = recovered.len(), "KV engine open");
        *inner.tracker.lock() = DurableApplyTracker::new(recovered);
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Reads RocksDB's properties (write stalls, compactions, sizes) into the
    /// `tessera_engine_*` gauges and counters with label `engine="kv"`; see the crate doc.
    pub fn report_metrics(&self) {
        let cfs: Vec<&ColumnFamily> = Cf::ALL.into_iter().map(|cf| self.inner.cf(cf)).collect();
        let refs: Vec<&dyn metrics::CfRef> =
            cfs.iter().map(|cf| cf as &dyn metrics::CfRef).collect();
        metrics::report(ENGINE, &self.inner.db, &refs);
    }

    /// Whether a failed sync has poisoned the engine.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.is_poisoned()
    }

    fn sync_wal_inner(&self) -> Result<u64> {
        // Read before syncing: every write with a sequence number up to here is in the WAL.
        let seq = self.inner.db.latest_sequence_number();
        let start = Instant::now();
        self.inner
            .db
            .flush_wal(true)
            .map_err(|error| self.inner.poison.poison("WAL sync", &error))?;
        metrics::record_sync(ENGINE, start.elapsed());
        Ok(seq)
    }
}

/// The apply states on disk: all durable by definition.
fn recover_apply_states(inner: &KvInner) -> Result<Vec<(RangeId, LogIndex)>> {
    let span = keys::all_range_local_span();
    let mut iter = inner.db.raw_iterator_cf_opt(inner.cf(Cf::Meta), read_options(&span));
    iter.seek_to_first();
    let mut recovered = Vec::new();
    while let Some((key, value)) = iter.item() {
        if let Some((range, keys::APPLY_STATE_SUFFIX)) = keys::decode_range_local_key(key) {
            let state = ApplyState::decode(&format!("apply state of range {range}"), value)?;
            recovered.push((range, state.applied_index));
        }
        iter.next();
    }
    iter.status().map_err(|error| map_err("scanning apply states", &error))?;
    Ok(recovered)
}

/// Read options bounded to `span`. An empty span gets an empty window.
pub(crate) fn read_options(span: &KeySpan) -> ReadOptions {
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(span.start.clone());
    match span.end_bound() {
        Some(_) if span.is_empty() => read.set_iterate_upper_bound(span.start.clone()),
        Some(end) => read.set_iterate_upper_bound(end.to_vec()),
        None => {}
    }
    read
}

/// A write batch of the KV engine: a RocksDB [`WriteBatch`] plus the apply states it
/// carries, for the durable apply index.
pub struct RocksKvBatch {
    batch: WriteBatch,
    applied: Vec<(RangeId, LogIndex)>,
    inner: Arc<KvInner>,
}

impl std::fmt::Debug for RocksKvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKvBatch")
            .field("ops", &self.batch.len())
            .field("bytes", &self.batch.size_in_bytes())
            .field("applied", &self.applied)
            .finish()
    }
}

impl KvBatch for RocksKvBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.inner.cf(cf), key, value);
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.batch.delete_cf(self.inner.cf(cf), key);
    }

    fn delete_span(&mut self, cf: Cf, span: &KeySpan) {
        if let Err(error) = self.inner.stage_delete_span(&mut self.batch, cf, span) {
            // Only the scan for keys past the range-deletion end can fail; such keys do not
            // exist in the layout, so the range deletion already staged is the whole effect.
            tracing::warn!(%error, ?span, "scanning past the key space end failed");
        }
    }

    fn put_apply_state(&mut self, range: RangeId, state: &ApplyState) {
        self.batch.put_cf(self.inner.cf(Cf::Meta), keys::apply_state_key(range), state.encode());
        self.applied.push((range, state.applied_index));
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    fn op_count(&self) -> usize {
        self.batch.len()
    }

    fn size_bytes(&self) -> usize {
        self.batch.size_in_bytes()
    }

    fn clear(&mut self) {
        self.batch.clear();
        self.applied.clear();
    }
}

/// A cursor over one column family of the KV engine or of a snapshot, bounded to a span by
/// RocksDB's iterate bounds.
pub struct RocksCursor<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    poison: &'a Poison,
    span: KeySpan,
    cf: Cf,
}

impl std::fmt::Debug for RocksCursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksCursor").field("cf", &self.cf).field("span", &self.span).finish()
    }
}

impl RocksCursor<'_> {
    fn settle(&self) -> Result<bool> {
        self.poison.check()?;
        if self.iter.valid() {
            return Ok(true);
        }
        self.iter.status().map_err(|error| {
            map_err(&format!("iterating {} over {:?}", self.cf.name(), self.span), &error)
        })?;
        Ok(false)
    }
}

impl KvCursor for RocksCursor<'_> {
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.poison.check()?;
        let target = key.max(self.span.start.as_slice());
        self.iter.seek(target);
        self.settle()
    }

    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        self.poison.check()?;
        match self.span.end_bound() {
            Some(end) if key >= end => self.iter.seek_to_last(),
            _ => self.iter.seek_for_prev(key),
        }
        self.settle()
    }

    fn seek_to_first(&mut self) -> Result<bool> {
        self.poison.check()?;
        self.iter.seek_to_first();
        self.settle()
    }

    fn seek_to_last(&mut self) -> Result<bool> {
        self.poison.check()?;
        self.iter.seek_to_last();
        self.settle()
    }

    fn next(&mut self) -> Result<bool> {
        self.poison.check()?;
        if !self.iter.valid() {
            return Ok(false);
        }
        self.iter.next();
        self.settle()
    }

    fn prev(&mut self) -> Result<bool> {
        self.poison.check()?;
        if !self.iter.valid() {
            return Ok(false);
        }
        self.iter.prev();
        self.settle()
    }

    fn valid(&self) -> bool {
        self.iter.valid()
    }

    fn key(&self) -> &[u8] {
        self.iter.key().expect("KvCursor::key called on a cursor that is not valid (caller bug)")
    }

    fn value(&self) -> &[u8] {
        self.iter
            .value()
            .expect("KvCursor::value called on a cursor that is not valid (caller bug)")
    }
}

impl KvRead for RocksKvEngine {
    type Cursor<'a> = RocksCursor<'a>;

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.poison.check()?;
        self.inner.db.get_cf(self.inner.cf(cf), key).map_err(|error| {
            map_err(&format!("reading {} key {}", cf.name(), keys::escape(key)), &error)
        })
    }

    fn cursor(&self, cf: Cf, span: &KeySpan) -> Result<Self::Cursor<'_>> {
        self.inner.poison.check()?;
        let iter = self.inner.db.raw_iterator_cf_opt(self.inner.cf(cf), read_options(span));
        Ok(RocksCursor { iter, poison: &self.inner.poison, span: span.clone(), cf })
    }
}

/// A consistent point-in-time view of the KV engine that owns its RocksDB snapshot: it keeps
/// the instance alive, can move to another thread and lives as long as needed. Reads answer
/// [`EngineError::Poisoned`] once the engine is poisoned, like the engine's own.
pub struct RocksKvSnapshot {
    // Field order matters: `snapshot` borrows `inner.db` and must be dropped first (fields
    // drop in declaration order).
    snapshot: SnapshotWithThreadMode<'static, DB>,
    inner: Arc<KvInner>,
}

impl std::fmt::Debug for RocksKvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKvSnapshot")
            .field("path", &self.inner.db.path())
            .field("sequence", &self.snapshot.sequence_number())
            .finish()
    }
}

impl RocksKvSnapshot {
    #[allow(unsafe_code)]
    fn new(inner: Arc<KvInner>) -> Self {
        // SAFETY: the reference is to the `DB` inside the `Arc<KvInner>` allocation, which
        // never moves and is not freed while any `Arc` clone lives; `Self` holds one such
        // clone in `inner`, declared after `snapshot`, so the snapshot (the only holder of
        // the extended reference) is dropped before that clone. The `'static` reference
        // never escapes `Self`: the snapshot is private, and only `get_cf_opt` and
        // `raw_iterator_cf_opt` are called on it, whose results borrow `&self.snapshot`,
        // i.e. at most as long as `self`.
        let db: &'static DB = unsafe { &*std::ptr::from_ref::<DB>(&inner.db) };
        Self { snapshot: db.snapshot(), inner }
    }

    /// RocksDB's sequence number of the snapshot.
    #[must_use]
    pub fn sequence_number(&self) -> u64 {
        self.snapshot.sequence_number()
    }
}

impl KvRead for RocksKvSnapshot {
    type Cursor<'a> = RocksCursor<'a>;

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.poison.check()?;
        self.snapshot.get_cf_opt(self.inner.cf(cf), key, ReadOptions::default()).map_err(|error| {
            map_err(&format!("reading {} key {}", cf.name(), keys::escape(key)), &error)
        })
    }

    fn cursor(&self, cf: Cf, span: &KeySpan) -> Result<Self::Cursor<'_>> {
        self.inner.poison.check()?;
        let iter = self.snapshot.raw_iterator_cf_opt(self.inner.cf(cf), read_options(span));
        Ok(RocksCursor { iter, poison: &self.inner.poison, span: span.clone(), cf })
    }
}

impl KvEngine for RocksKvEngine {
    type Snapshot = RocksKvSnapshot;
    type Batch = RocksKvBatch;

    fn snapshot(&self) -> Self::Snapshot {
        RocksKvSnapshot::new(Arc::clone(&self.inner))
    }

    fn batch(&self) -> Self::Batch {
        RocksKvBatch {
            batch: WriteBatch::default(),
            applied: Vec::new(),
            inner: Arc::clone(&self.inner),
        }
    }

    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()> {
        self.inner.poison.check()?;
        if batch.batch.is_empty() {
            if sync {
                self.sync_wal()?;
            }
            batch.clear();
            return Ok(());
        }
        let (bytes, ops) = (batch.size_bytes(), batch.op_count());
        // RocksDB consumes the batch it writes; write a copy so that on error the caller's
        // batch is left as it was.
        let copy = WriteBatch::from_data(batch.batch.data());
        self.inner.write_locked(copy, &batch.applied, sync)?;
        metrics::record_write(ENGINE, bytes, ops);
        batch.clear();
        Ok(())
    }

    fn sync_wal(&self) -> Result<()> {
        self.inner.poison.check()?;
        let seq = self.sync_wal_inner()?;
        self.inner.tracker.lock().synced_through(seq);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.inner.poison.check()?;
        // Sync the WAL first: then everything up to `seq` is durable whatever order the
        // column families are flushed in, and the flush only moves it into SST files.
        let seq = self.sync_wal_inner()?;
        let cfs: Vec<&ColumnFamily> = Cf::ALL.into_iter().map(|cf| self.inner.cf(cf)).collect();
        let mut flush_options = FlushOptions::default();
        flush_options.set_wait(true);
        let start = Instant::now();
        self.inner
            .db
            .flush_cfs_opt(&cfs, &flush_options)
            .map_err(|error| self.inner.poison.poison("memtable flush", &error))?;
        metrics::record_sync(ENGINE, start.elapsed());
        self.inner.tracker.lock().synced_through(seq);
        Ok(())
    }

    fn durable_apply_index(&self, range: RangeId) -> Option<LogIndex> {
        self.inner.tracker.lock().durable(range)
    }

    fn durable_apply_indexes(&self) -> Vec<(RangeId, LogIndex)> {
        self.inner.tracker.lock().all_durable()
    }

    fn forget_durable_apply_index(&self, range: RangeId) {
        self.inner.tracker.lock().forget(range);
    }

    fn delete_span(&self, cfs: &[Cf], span: &KeySpan) -> Result<()> {
        self.inner.poison.check()?;
        if !span.end.is_empty() && span.start > span.end {
            return Err(EngineError::InvalidArgument(format!(
                "delete_span of inverted span {span:?}"
            )));
        }
        let mut batch = WriteBatch::default();
        for &cf in cfs {
            self.inner.stage_delete_span(&mut batch, cf, span)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (bytes, ops) = (batch.size_in_bytes(), batch.len());
        self.inner.write_locked(batch, &[], false)?;
        metrics::record_write(ENGINE, bytes, ops);
        Ok(())
    }

    fn span_stats(&self, span: &KeySpan) -> Result<SpanStats> {
        self.inner.poison.check()?;
        crate::stats::span_stats(&self.inner, span)
    }

    fn split_key(&self, span: &KeySpan) -> Result<Option<Vec<u8>>> {
        self.inner.poison.check()?;
        tessera_engine::split_key_by_scan(&self.snapshot(), span)
    }

    fn export_snapshot(
        &self,
        snapshot: &Self::Snapshot,
        span: &KeySpan,
        dir: &Path,
    ) -> Result<SnapshotManifest> {
        self.inner.poison.check()?;
        crate::sst::export(&self.inner, snapshot, span, dir)
    }

    fn ingest_snapshot(&self, span: &KeySpan, manifest: &SnapshotManifest) -> Result<()> {
        self.inner.poison.check()?;
        crate::sst::ingest(&self.inner, span, manifest)
    }
}
