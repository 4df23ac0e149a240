//! The raft-log engine on RocksDB (`raft/`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{
    Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DEFAULT_COLUMN_FAMILY_NAME, ReadOptions,
    WriteBatch, WriteOptions,
};
use tessera_engine::codec::{self, RaftLogState};
use tessera_engine::{EngineError, KeySpan, RaftLogBatch, RaftLogEngine, Result, keys};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, LogIndex};

use crate::error::{Poison, map_err};
use crate::metrics;
use crate::options::{EngineOptions, raft_options};

const ENGINE: &str = "raft";

struct RaftInner {
    db: DB,
    poison: Poison,
}

/// The raft-log engine: every range's log entries and raft state in one RocksDB instance
/// (`raft/`, one column family). Cloning is cheap (an `Arc`); all clones share the
/// instance and its poison state.
#[derive(Clone)]
pub struct RocksRaftLogEngine {
    inner: Arc<RaftInner>,
}

impl std::fmt::Debug for RocksRaftLogEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksRaftLogEngine")
            .field("path", &self.inner.db.path())
            .field("poisoned", &self.inner.poison.is_poisoned())
            .finish()
    }
}

/// A batch of raft-log changes: a RocksDB [`WriteBatch`] on the one column family.
/// Deleting entries and clearing a range are range deletions (one record each).
pub struct RocksRaftLogBatch {
    batch: WriteBatch,
    buf: Vec<u8>,
}

impl std::fmt::Debug for RocksRaftLogBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksRaftLogBatch")
            .field("ops", &self.batch.len())
            .field("bytes", &self.batch.size_in_bytes())
            .finish()
    }
}

impl RaftLogBatch for RocksRaftLogBatch {
    fn append(&mut self, range: RangeId, entries: &[Entry]) {
        for entry in entries {
            self.buf.clear();
            codec::encode_entry(entry, &mut self.buf);
            self.batch.put(keys::raft_log_key(range, entry.index), &self.buf);
        }
    }

    fn delete_entries(&mut self, range: RangeId, from: LogIndex, to: LogIndex) {
        if from < to {
            self.batch.delete_range(keys::raft_log_key(range, from), keys::raft_log_key(range, to));
        }
    }

    fn put_raft_state(&mut self, range: RangeId, state: &RaftLogState) {
        self.batch.put(keys::raft_state_key(range), state.encode());
    }

    fn clear_range(&mut self, range: RangeId) {
        let span = keys::raft_log_span(range);
        self.batch.delete_range(span.start, span.end);
        self.batch.delete(keys::raft_state_key(range));
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
    }
}

impl RocksRaftLogEngine {
    /// Opens (creating if missing) the raft-log instance at `path`.
    pub(crate) fn open(path: &Path, options: &EngineOptions, cache: &Cache) -> Result<Self> {
        let db_options = raft_options(options, cache);
        let default_cf =
            ColumnFamilyDescriptor::new(DEFAULT_COLUMN_FAMILY_NAME, raft_options(options, cache));
        let db = DB::open_cf_descriptors(&db_options, path, [default_cf]).map_err(|error| {
            map_err(&format!("opening raft-log engine at {}", path.display()), &error)
        })?;
        if db.cf_handle(DEFAULT_COLUMN_FAMILY_NAME).is_none() {
            return Err(EngineError::Backend(
                "raft-log engine opened without its column family".into(),
            ));
        }
        tracing::info!(path = %path.display(), "raft-log engine open");
        Ok(Self { inner: Arc::new(RaftInner { db, poison: Poison::new(ENGINE) }) })
    }

    fn cf(&self) -> &ColumnFamily {
        self.inner
            .db
            .cf_handle(DEFAULT_COLUMN_FAMILY_NAME)
            .expect("the default column family was checked at open and is never dropped")
    }

    /// Reads RocksDB's properties (write stalls, compactions, sizes) into the
    /// `tessera_engine_*` gauges and counters with label `engine="raft"`; see the crate doc.
    pub fn report_metrics(&self) {
        let cf = self.cf();
        metrics::report(ENGINE, &self.inner.db, &[&cf]);
    }

    /// Whether a failed sync has poisoned the engine.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.is_poisoned()
    }

    fn read_options(span: &KeySpan) -> ReadOptions {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(span.start.clone());
        if let Some(end) = span.end_bound() {
            read.set_iterate_upper_bound(end.to_vec());
        }
        read
    }

    fn do_sync(&self) -> Result<()> {
        let start = Instant::now();
        self.inner
            .db
            .flush_wal(true)
            .map_err(|error| self.inner.poison.poison("WAL sync", &error))?;
        metrics::record_sync(ENGINE, start.elapsed());
        Ok(())
    }
}

impl RaftLogEngine for RocksRaftLogEngine {
    type Batch = RocksRaftLogBatch;

    fn batch(&self) -> Self::Batch {
        RocksRaftLogBatch { batch: WriteBatch::default(), buf: Vec::new() }
    }

    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()> {
        self.inner.poison.check()?;
        if batch.is_empty() {
            return if sync { self.do_sync() } else { Ok(()) };
        }
        let (bytes, ops) = (batch.size_bytes(), batch.op_count());
        let mut write_options = WriteOptions::new();
        write_options.set_sync(sync);
        // RocksDB consumes the batch it writes; write a copy so that on error the caller's
        // batch is left as it was.
        let copy = WriteBatch::from_data(batch.batch.data());
        let start = Instant::now();
        match self.inner.db.write_opt(copy, &write_options) {
            Ok(()) => {
                if sync {
                    metrics::record_sync(ENGINE, start.elapsed());
                }
                metrics::record_write(ENGINE, bytes, ops);
                batch.clear();
                Ok(())
            }
            Err(error) if sync => Err(self.inner.poison.poison("synced write", &error)),
            Err(error) => Err(map_err("writing to the raft-log engine", &error)),
        }
    }

    fn sync(&self) -> Result<()> {
        self.inner.poison.check()?;
        self.do_sync()
    }

    fn raft_state(&self, range: RangeId) -> Result<Option<RaftLogState>> {
        self.inner.poison.check()?;
        let location = || format!("raft state of range {range}");
        let value = self
            .inner
            .db
            .get_pinned_cf(self.cf(), keys::raft_state_key(range))
            .map_err(|error| map_err(&location(), &error))?;
        value.map(|value| RaftLogState::decode(&location(), &value)).transpose()
    }

    fn for_each_raft_state(
        &self,
        visit: &mut dyn FnMut(RangeId, RaftLogState) -> Result<()>,
    ) -> Result<()> {
        self.inner.poison.check()?;
        let span = keys::all_raft_states_span();
        let mut iter = self.inner.db.raw_iterator_cf_opt(self.cf(), Self::read_options(&span));
        iter.seek_to_first();
        while let Some((key, value)) = iter.item() {
            let range = keys::decode_raft_state_key(key).ok_or_else(|| {
                EngineError::corruption(
                    format!("raft-log engine key {}", keys::escape(key)),
                    "malformed raft state key",
                )
            })?;
            let state = RaftLogState::decode(&format!("raft state of range {range}"), value)?;
            visit(range, state)?;
            iter.next();
        }
        iter.status().map_err(|error| map_err("scanning raft states", &error))
    }

    fn fetch_entries(
        &self,
        range: RangeId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        self.inner.poison.check()?;
        if low > high {
            return Err(EngineError::InvalidArgument(format!(
                "range {range}: entries [{low}, {high}) is an inverted range"
            )));
        }
        if low == high {
            return Ok(0);
        }
        let span = keys::raft_log_entries_span(range, low, high);
        let mut iter = self.inner.db.raw_iterator_cf_opt(self.cf(), Self::read_options(&span));
        iter.seek_to_first();
        let mut expected = low;
        let mut total = 0u64;
        let mut added = 0usize;
        while let Some((key, value)) = iter.item() {
            let index = match keys::decode_raft_log_key(key) {
                Some((key_range, index)) if key_range == range => index,
                _ => {
                    return Err(EngineError::corruption(
                        format!("raft-log engine key {}", keys::escape(key)),
                        format!("not a log key of range {range}"),
                    ));
                }
            };
            if index != expected {
                return Err(EngineError::InvalidArgument(format!(
                    "range {range}: log entry {expected} is missing (next stored is {index})"
                )));
            }
            let entry = codec::decode_entry(index, value)?;
            total += entry.size_bytes();
            if added > 0 && total > max_bytes {
                return Ok(added);
            }
            out.push(entry);
            added += 1;
            expected = expected.next();
            iter.next();
        }
        iter.status()
            .map_err(|error| map_err(&format!("reading the log of range {range}"), &error))?;
        if expected < high {
            return Err(EngineError::InvalidArgument(format!(
                "range {range}: log entries [{expected}, {high}) are missing"
            )));
        }
        Ok(added)
    }

    fn entry(&self, range: RangeId, index: LogIndex) -> Result<Option<Entry>> {
        self.inner.poison.check()?;
        let value = self
            .inner
            .db
            .get_pinned_cf(self.cf(), keys::raft_log_key(range, index))
            .map_err(|error| map_err(&format!("log entry {index} of range {range}"), &error))?;
        value.map(|value| codec::decode_entry(index, &value)).transpose()
    }

    fn stored_index_bounds(&self, range: RangeId) -> Result<Option<(LogIndex, LogIndex)>> {
        self.inner.poison.check()?;
        let span = keys::raft_log_span(range);
        let mut iter = self.inner.db.raw_iterator_cf_opt(self.cf(), Self::read_options(&span));
        let decode = |key: &[u8]| match keys::decode_raft_log_key(key) {
            Some((key_range, index)) if key_range == range => Ok(index),
            _ => Err(EngineError::corruption(
                format!("raft-log engine key {}", keys::escape(key)),
                format!("not a log key of range {range}"),
            )),
        };
        iter.seek_to_first();
        let first = match iter.key() {
            Some(key) => decode(key)?,
            None => {
                iter.status().map_err(|error| {
                    map_err(&format!("reading the log of range {range}"), &error)
                })?;
                return Ok(None);
            }
        };
        iter.seek_to_last();
        let last = match iter.key() {
            Some(key) => decode(key)?,
            None => {
                iter.status().map_err(|error| {
                    map_err(&format!("reading the log of range {range}"), &error)
                })?;
                return Err(EngineError::Backend(format!(
                    "range {range}: log has a first entry {first} but no last one"
                )));
            }
        };
        Ok(Some((first, last)))
    }
}
