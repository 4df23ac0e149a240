//! The in-memory KV engine.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::LogIndex;

use super::FaultPlan;
use super::core::Core;
use super::snapshot_file;
use super::store::{Op, VersionedStore};
use crate::codec::ApplyState;
use crate::durable::DurableApplyTracker;
use crate::error::{EngineError, Result};
use crate::keys::{self, KeySpan};
use crate::kv::{Cf, KvBatch, KvCursor, KvEngine, KvRead, SpanStats};
use crate::snapshot::{SnapshotFile, SnapshotManifest};

type Shared = Mutex<Core<DurableApplyTracker>>;

/// The store's slot of a column family.
fn slot(cf: Cf) -> usize {
    match cf {
        Cf::Default => 0,
        Cf::Lock => 1,
        Cf::Write => 2,
        Cf::Meta => 3,
    }
}

/// Locks `shared` and fails if the instance is poisoned or dead.
fn lock_live(shared: &Shared) -> Result<MutexGuard<'_, Core<DurableApplyTracker>>> {
    let core = shared.lock();
    core.check()?;
    Ok(core)
}

/// Fails if the instance is poisoned or dead.
fn check_live(shared: &Shared) -> Result<()> {
    shared.lock().check()
}

/// An in-memory [`KvEngine`]. Clones share one instance.
#[derive(Clone)]
pub struct MemKvEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemKvEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_core(f, "MemKvEngine", &self.shared)
    }
}

impl Default for MemKvEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemKvEngine {
    /// An empty engine.
    #[must_use]
    pub fn new() -> Self {
        Self::from_store(VersionedStore::new(Cf::ALL.len()))
    }

    // A fresh instance over `store`, all durable, with the durable apply indexes rebuilt
    // from the apply states in it (as a real engine recovers them at open).
    fn from_store(store: VersionedStore) -> Self {
        let span = keys::all_range_local_span();
        let recovered: Vec<(RangeId, LogIndex)> = store
            .visible(slot(Cf::Meta), &span, Bound::Unbounded, Bound::Unbounded, store.seq())
            .filter_map(|(key, value)| match keys::decode_range_local_key(key) {
                Some((range, keys::APPLY_STATE_SUFFIX)) => {
                    // Only `put_apply_state` writes these keys; a value that does not decode
                    // was put there by hand and carries no apply index.
                    ApplyState::decode("apply state", value).ok().map(|s| (range, s.applied_index))
                }
                _ => None,
            })
            .collect();
        let tracker = DurableApplyTracker::new(recovered);
        Self { shared: Arc::new(Mutex::new(Core::new(store, tracker))) }
    }

    /// Simulates a crash: returns a new instance holding everything durable plus the first
    /// `keep_unsynced` unsynced batches in write order (clamped to how many exist), with the
    /// durable apply indexes rebuilt from the apply states that survived. This instance and
    /// all its clones, snapshots and cursors answer [`EngineError::Poisoned`] from now on.
    /// Works on a poisoned engine too. The new instance has no fault plan and zeroed
    /// counters.
    #[must_use]
    pub fn crash(&self, keep_unsynced: usize) -> Self {
        let image = self.shared.lock().crash(keep_unsynced);
        Self::from_store(image)
    }

    /// Batches written since the last successful sync: non-empty `write`s, `delete_span`s
    /// and snapshot ingests.
    #[must_use]
    pub fn unsynced_batches(&self) -> usize {
        self.shared.lock().unsynced_batches()
    }

    /// Arms `plan`, replacing any earlier one; its counts start now.
    pub fn inject(&self, plan: FaultPlan) {
        self.shared.lock().inject(plan);
    }

    /// Calls to [`KvEngine::write`] so far (on this instance).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.shared.lock().writes()
    }

    /// Syncs so far: `sync_wal` and `flush` calls and writes with `sync = true`.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.shared.lock().syncs()
    }

    /// Whether a failed sync or a crash has poisoned this instance.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.shared.lock().is_poisoned()
    }

    fn sync_and_track(&self) -> Result<()> {
        let mut core = self.shared.lock();
        let seq = core.sync()?;
        core.extra.synced_through(seq);
        Ok(())
    }
}

/// A registered read sequence; unregistered when dropped.
struct ReadSeq {
    shared: Arc<Shared>,
    seq: u64,
}

impl ReadSeq {
    // Registers at the current sequence, poisoned or not (reads check for poison).
    fn current(shared: &Arc<Shared>) -> Self {
        let seq = shared.lock().register_reader();
        Self { shared: Arc::clone(shared), seq }
    }

    fn another(&self) -> Result<Self> {
        lock_live(&self.shared)?.register_reader_at(self.seq);
        Ok(Self { shared: Arc::clone(&self.shared), seq: self.seq })
    }
}

impl Drop for ReadSeq {
    fn drop(&mut self) {
        self.shared.lock().unregister_reader(self.seq);
    }
}

/// A consistent point-in-time view of a [`MemKvEngine`]: a registered sequence number.
pub struct MemKvSnapshot {
    read: ReadSeq,
}

impl std::fmt::Debug for MemKvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemKvSnapshot").field("seq", &self.read.seq).finish()
    }
}

/// A cursor over one column family of a [`MemKvEngine`] or [`MemKvSnapshot`], reading at
/// the sequence of its snapshot (or the one current when it was created on the engine).
/// Each step looks the next key up from the current position.
pub struct MemKvCursor {
    read: ReadSeq,
    cf: usize,
    span: KeySpan,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for MemKvCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemKvCursor")
            .field("seq", &self.read.seq)
            .field("cf", &Cf::ALL.get(self.cf))
            .field("span", &self.span)
            .field("key", &self.current.as_ref().map(|(key, _)| keys::escape(key)))
            .finish()
    }
}

impl MemKvCursor {
    fn new(read: ReadSeq, cf: Cf, span: &KeySpan) -> Self {
        Self { read, cf: slot(cf), span: span.clone(), current: None }
    }

    fn position(&mut self, forward: bool, from: Bound<&[u8]>) -> Result<bool> {
        let found = match lock_live(&self.read.shared) {
            Ok(core) => {
                let (lower, upper) =
                    if forward { (from, Bound::Unbounded) } else { (Bound::Unbounded, from) };
                let mut visible =
                    core.store.visible(self.cf, &self.span, lower, upper, self.read.seq);
                let found = if forward { visible.next() } else { visible.next_back() };
                found.map(|(key, value)| (key.to_vec(), value.to_vec()))
            }
            Err(error) => {
                self.current = None;
                return Err(error);
            }
        };
        self.current = found;
        Ok(self.current.is_some())
    }

    fn step(&mut self, forward: bool) -> Result<bool> {
        match self.current.take() {
            Some((key, _)) => self.position(forward, Bound::Excluded(&key)),
            None => Ok(false),
        }
    }
}

impl KvCursor for MemKvCursor {
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.position(true, Bound::Included(key))
    }

    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        self.position(false, Bound::Included(key))
    }

    fn seek_to_first(&mut self) -> Result<bool> {
        self.position(true, Bound::Unbounded)
    }

    fn seek_to_last(&mut self) -> Result<bool> {
        self.position(false, Bound::Unbounded)
    }

    /// Moves to the next key; on an invalid cursor stays invalid and returns `false`.
    fn next(&mut self) -> Result<bool> {
        self.step(true)
    }

    /// Moves to the previous key; on an invalid cursor stays invalid and returns `false`.
    fn prev(&mut self) -> Result<bool> {
        self.step(false)
    }

    fn valid(&self) -> bool {
        self.current.is_some()
    }

    fn key(&self) -> &[u8] {
        &self.current.as_ref().expect("KvCursor::key called on an invalid cursor").0
    }

    fn value(&self) -> &[u8] {
        &self.current.as_ref().expect("KvCursor::value called on an invalid cursor").1
    }
}

impl KvRead for MemKvEngine {
    type Cursor<'a> = MemKvCursor;

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let core = lock_live(&self.shared)?;
        Ok(core.store.get(slot(cf), key, core.store.seq()).map(<[u8]>::to_vec))
    }

    fn cursor(&self, cf: Cf, span: &KeySpan) -> Result<Self::Cursor<'_>> {
        check_live(&self.shared)?;
        Ok(MemKvCursor::new(ReadSeq::current(&self.shared), cf, span))
    }
}

impl KvRead for MemKvSnapshot {
    type Cursor<'a> = MemKvCursor;

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let core = lock_live(&self.read.shared)?;
        Ok(core.store.get(slot(cf), key, self.read.seq).map(<[u8]>::to_vec))
    }

    fn cursor(&self, cf: Cf, span: &KeySpan) -> Result<Self::Cursor<'_>> {
        Ok(MemKvCursor::new(self.read.another()?, cf, span))
    }
}

/// A write batch of [`MemKvEngine`].
#[derive(Clone, Debug, Default)]
pub struct MemKvBatch {
    ops: Vec<Op>,
    size: usize,
    applied: Vec<(RangeId, LogIndex)>,
}

impl MemKvBatch {
    fn push(&mut self, op: Op) {
        self.size += op.size_bytes();
        self.ops.push(op);
    }
}

impl KvBatch for MemKvBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.push(Op::Put { cf: slot(cf), key: key.to_vec(), value: value.to_vec() });
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.push(Op::Delete { cf: slot(cf), key: key.to_vec() });
    }

    fn delete_span(&mut self, cf: Cf, span: &KeySpan) {
        self.push(Op::DeleteSpan { cf: slot(cf), span: span.clone() });
    }

    fn put_apply_state(&mut self, range: RangeId, state: &ApplyState) {
        self.put(Cf::Meta, &keys::apply_state_key(range), &state.encode());
        self.applied.push((range, state.applied_index));
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn op_count(&self) -> usize {
        self.ops.len()
    }

    fn size_bytes(&self) -> usize {
        self.size
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.applied.clear();
        self.size = 0;
    }
}

impl KvEngine for MemKvEngine {
    type Snapshot = MemKvSnapshot;
    type Batch = MemKvBatch;

    /// A snapshot of everything written so far. On a poisoned engine every read of it fails
    /// with [`EngineError::Poisoned`].
    fn snapshot(&self) -> Self::Snapshot {
        MemKvSnapshot { read: ReadSeq::current(&self.shared) }
    }

    fn batch(&self) -> Self::Batch {
        MemKvBatch::default()
    }

    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()> {
        let mut core = self.shared.lock();
        core.begin_write()?;
        if let Some(seq) = core.apply(&batch.ops) {
            core.extra.written(seq, &batch.applied);
        }
        if sync {
            let seq = core.sync()?;
            core.extra.synced_through(seq);
        }
        batch.clear();
        Ok(())
    }

    fn sync_wal(&self) -> Result<()> {
        self.sync_and_track()
    }

    fn flush(&self) -> Result<()> {
        self.sync_and_track()
    }

    fn durable_apply_index(&self, range: RangeId) -> Option<LogIndex> {
        self.shared.lock().extra.durable(range)
    }

    fn durable_apply_indexes(&self) -> Vec<(RangeId, LogIndex)> {
        self.shared.lock().extra.all_durable()
    }

    fn forget_durable_apply_index(&self, range: RangeId) {
        self.shared.lock().extra.forget(range);
    }

    fn delete_span(&self, cfs: &[Cf], span: &KeySpan) -> Result<()> {
        let ops: Vec<Op> =
            cfs.iter().map(|cf| Op::DeleteSpan { cf: slot(*cf), span: span.clone() }).collect();
        lock_live(&self.shared)?.apply(&ops);
        Ok(())
    }

    fn span_stats(&self, span: &KeySpan) -> Result<SpanStats> {
        let core = lock_live(&self.shared)?;
        let mut stats = SpanStats::default();
        for cf in Cf::DATA {
            for (key, value) in core.store.visible(
                slot(cf),
                span,
                Bound::Unbounded,
                Bound::Unbounded,
                core.store.seq(),
            ) {
                stats.size_bytes += (key.len() + value.len()) as u64;
                stats.keys += 1;
            }
        }
        Ok(stats)
    }

    fn split_key(&self, span: &KeySpan) -> Result<Option<Vec<u8>>> {
        check_live(&self.shared)?;
        crate::split::split_key_by_scan(&self.snapshot(), span)
    }

    fn export_snapshot(
        &self,
        snapshot: &Self::Snapshot,
        span: &KeySpan,
        dir: &Path,
    ) -> Result<SnapshotManifest> {
        check_live(&self.shared)?;
        let mut entries = std::fs::read_dir(dir)
            .map_err(|error| EngineError::io(format!("listing {}", dir.display()), error))?;
        if entries.next().is_some() {
            return Err(EngineError::InvalidArgument(format!(
                "snapshot directory {} is not empty",
                dir.display()
            )));
        }
        let mut manifest = SnapshotManifest::default();
        for cf in Cf::DATA {
            let mut writer = snapshot_file::Writer::new(cf);
            let mut cursor = snapshot.cursor(cf, span)?;
            let mut valid = cursor.seek_to_first()?;
            while valid {
                writer.add(cursor.key(), cursor.value())?;
                valid = cursor.next()?;
            }
            if writer.records() == 0 {
                continue;
            }
            let keys = writer.records();
            let bytes = writer.finish();
            let path = dir.join(format!("{}.tsnap", cf.name()));
            write_new_file(&path, &bytes)?;
            manifest.files.push(SnapshotFile {
                cf,
                path,
                size_bytes: bytes.len() as u64,
                keys,
                checksum: crc32c::crc32c(&bytes),
            });
        }
        Ok(manifest)
    }

    fn ingest_snapshot(&self, span: &KeySpan, manifest: &SnapshotManifest) -> Result<()> {
        check_live(&self.shared)?;
        manifest.verify()?;
        // Read and check every file completely before changing anything.
        let mut ops: Vec<Op> = Cf::DATA
            .iter()
            .map(|cf| Op::DeleteSpan { cf: slot(*cf), span: span.clone() })
            .collect();
        let mut seen = Vec::new();
        for file in &manifest.files {
            let location = file.path.display().to_string();
            if !Cf::DATA.contains(&file.cf) || seen.contains(&file.cf) {
                return Err(EngineError::InvalidArgument(format!(
                    "snapshot file {location}: column family {} is not a data column family or \
                     appears twice",
                    file.cf.name()
                )));
            }
            seen.push(file.cf);
            let bytes = std::fs::read(&file.path)
                .map_err(|error| EngineError::io(format!("reading {location}"), error))?;
            // The file may have changed since `verify`; check the bytes actually parsed.
            if bytes.len() as u64 != file.size_bytes || crc32c::crc32c(&bytes) != file.checksum {
                return Err(EngineError::corruption(location, "changed after verification"));
            }
            let records = snapshot_file::parse(&bytes, file.cf, &location)?;
            if records.len() as u64 != file.keys {
                return Err(EngineError::corruption(
                    location,
                    format!("holds {} keys, manifest says {}", records.len(), file.keys),
                ));
            }
            for (key, value) in records {
                if !span.contains(&key) {
                    return Err(EngineError::InvalidArgument(format!(
                        "snapshot file {location}: key {} is outside {span:?}",
                        keys::escape(&key)
                    )));
                }
                ops.push(Op::Put { cf: slot(file.cf), key, value });
            }
        }
        lock_live(&self.shared)?.apply(&ops);
        Ok(())
    }
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let context = || format!("writing {}", path.display());
    let mut file =
        std::fs::File::create_new(path).map_err(|error| EngineError::io(context(), error))?;
    file.write_all(bytes).map_err(|error| EngineError::io(context(), error))?;
    file.sync_all().map_err(|error| EngineError::io(context(), error))
}
