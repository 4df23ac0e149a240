//! The in-memory raft-log engine.

use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, LogIndex};

use super::FaultPlan;
use super::core::Core;
use super::store::{Op, VersionedStore};
use crate::codec::{self, RaftLogState};
use crate::error::{EngineError, Result};
use crate::keys;
use crate::raft_log::{RaftLogBatch, RaftLogEngine};

/// The raft-log engine has one column family.
const CF: usize = 0;

type Shared = Mutex<Core<()>>;

/// An in-memory [`RaftLogEngine`]. Clones share one instance.
#[derive(Clone)]
pub struct MemRaftLogEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemRaftLogEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_core(f, "MemRaftLogEngine", &self.shared)
    }
}

impl Default for MemRaftLogEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemRaftLogEngine {
    /// An empty engine.
    #[must_use]
    pub fn new() -> Self {
        Self::from_store(VersionedStore::new(1))
    }

    fn from_store(store: VersionedStore) -> Self {
        Self { shared: Arc::new(Mutex::new(Core::new(store, ()))) }
    }

    /// Simulates a crash: returns a new instance holding everything durable plus the first
    /// `keep_unsynced` unsynced batches in write order (clamped to how many exist). This
    /// instance and all its clones answer [`EngineError::Poisoned`] from now on. Works on a
    /// poisoned engine too. The new instance has no fault plan and zeroed counters.
    #[must_use]
    pub fn crash(&self, keep_unsynced: usize) -> Self {
        let image = self.shared.lock().crash(keep_unsynced);
        Self::from_store(image)
    }

    /// Batches written since the last successful sync (empty batches are not counted).
    #[must_use]
    pub fn unsynced_batches(&self) -> usize {
        self.shared.lock().unsynced_batches()
    }

    /// Arms `plan`, replacing any earlier one; its counts start now.
    pub fn inject(&self, plan: FaultPlan) {
        self.shared.lock().inject(plan);
    }

    /// Calls to [`RaftLogEngine::write`] so far (on this instance).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.shared.lock().writes()
    }

    /// Syncs so far: [`RaftLogEngine::sync`] calls and writes with `sync = true`.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.shared.lock().syncs()
    }

    /// Whether a failed sync or a crash has poisoned this instance.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.shared.lock().is_poisoned()
    }
}

/// A write batch of [`MemRaftLogEngine`].
#[derive(Clone, Debug, Default)]
pub struct MemRaftLogBatch {
    ops: Vec<Op>,
    size: usize,
}

impl MemRaftLogBatch {
    fn push(&mut self, op: Op) {
        self.size += op.size_bytes();
        self.ops.push(op);
    }
}

impl RaftLogBatch for MemRaftLogBatch {
    fn append(&mut self, range: RangeId, entries: &[Entry]) {
        for entry in entries {
            let mut value = Vec::new();
            codec::encode_entry(entry, &mut value);
            let key = keys::raft_log_key(range, entry.index).to_vec();
            self.push(Op::Put { cf: CF, key, value });
        }
    }

    fn delete_entries(&mut self, range: RangeId, from: LogIndex, to: LogIndex) {
        if from < to {
            self.push(Op::DeleteSpan {
                cf: CF,
                span: keys::raft_log_entries_span(range, from, to),
            });
        }
    }

    fn put_raft_state(&mut self, range: RangeId, state: &RaftLogState) {
        let key = keys::raft_state_key(range).to_vec();
        self.push(Op::Put { cf: CF, key, value: state.encode().to_vec() });
    }

    fn clear_range(&mut self, range: RangeId) {
        self.push(Op::DeleteSpan { cf: CF, span: keys::raft_log_span(range) });
        self.push(Op::Delete { cf: CF, key: keys::raft_state_key(range).to_vec() });
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
        self.size = 0;
    }
}

impl RaftLogEngine for MemRaftLogEngine {
    type Batch = MemRaftLogBatch;

    fn batch(&self) -> Self::Batch {
        MemRaftLogBatch::default()
    }

    fn write(&self, batch: &mut Self::Batch, sync: bool) -> Result<()> {
        let mut core = self.shared.lock();
        core.begin_write()?;
        core.apply(&batch.ops);
        if sync {
            core.sync()?;
        }
        batch.clear();
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.shared.lock().sync().map(|_| ())
    }

    fn raft_state(&self, range: RangeId) -> Result<Option<RaftLogState>> {
        let core = self.shared.lock();
        core.check()?;
        let seq = core.store.seq();
        core.store
            .get(CF, &keys::raft_state_key(range), seq)
            .map(|value| RaftLogState::decode(&format!("raft state of range {range}"), value))
            .transpose()
    }

    fn for_each_raft_state(
        &self,
        visit: &mut dyn FnMut(RangeId, RaftLogState) -> Result<()>,
    ) -> Result<()> {
        // Decode under the lock, visit outside it: `visit` may call the engine.
        let states = {
            let core = self.shared.lock();
            core.check()?;
            let span = keys::all_raft_states_span();
            core.store
                .visible(CF, &span, Bound::Unbounded, Bound::Unbounded, core.store.seq())
                .map(|(key, value)| {
                    let range = keys::decode_raft_state_key(key).ok_or_else(|| {
                        EngineError::corruption(
                            format!("raft state key {}", keys::escape(key)),
                            "not a raft state key",
                        )
                    })?;
                    let state =
                        RaftLogState::decode(&format!("raft state of range {range}"), value)?;
                    Ok((range, state))
                })
                .collect::<Result<Vec<_>>>()?
        };
        states.into_iter().try_for_each(|(range, state)| visit(range, state))
    }

    fn fetch_entries(
        &self,
        range: RangeId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        if low >= high {
            return Ok(0);
        }
        let core = self.shared.lock();
        core.check()?;
        let span = keys::raft_log_entries_span(range, low, high);
        let mut expected = low;
        let mut total = 0u64;
        let mut added = 0usize;
        let start = out.len();
        for (key, value) in
            core.store.visible(CF, &span, Bound::Unbounded, Bound::Unbounded, core.store.seq())
        {
            let index = match keys::decode_raft_log_key(key) {
                Some((key_range, index)) if key_range == range => index,
                _ => {
                    out.truncate(start);
                    return Err(EngineError::corruption(
                        format!("raft log key {}", keys::escape(key)),
                        format!("not a log key of range {range}"),
                    ));
                }
            };
            if index != expected {
                out.truncate(start);
                return Err(EngineError::InvalidArgument(format!(
                    "range {range}: log entry {expected} is missing (next stored is {index})"
                )));
            }
            let entry = match codec::decode_entry(index, value) {
                Ok(entry) => entry,
                Err(error) => {
                    out.truncate(start);
                    return Err(error);
                }
            };
            total = total.saturating_add(entry.size_bytes());
            if total > max_bytes && added > 0 {
                return Ok(added);
            }
            out.push(entry);
            added += 1;
            expected = expected.next();
        }
        if expected < high {
            out.truncate(start);
            return Err(EngineError::InvalidArgument(format!(
                "range {range}: log entries [{expected}, {high}) are missing"
            )));
        }
        Ok(added)
    }

    fn entry(&self, range: RangeId, index: LogIndex) -> Result<Option<Entry>> {
        let core = self.shared.lock();
        core.check()?;
        core.store
            .get(CF, &keys::raft_log_key(range, index), core.store.seq())
            .map(|value| codec::decode_entry(index, value))
            .transpose()
    }

    fn stored_index_bounds(&self, range: RangeId) -> Result<Option<(LogIndex, LogIndex)>> {
        let core = self.shared.lock();
        core.check()?;
        let span = keys::raft_log_span(range);
        let mut stored =
            core.store.visible(CF, &span, Bound::Unbounded, Bound::Unbounded, core.store.seq());
        let Some((first, _)) = stored.next() else { return Ok(None) };
        let last = stored.next_back().map_or(first, |(key, _)| key);
        let index_of = |key: &[u8]| match keys::decode_raft_log_key(key) {
            Some((key_range, index)) if key_range == range => Ok(index),
            _ => Err(EngineError::corruption(
                format!("raft log key {}", keys::escape(key)),
                format!("not a log key of range {range}"),
            )),
        };
        Ok(Some((index_of(first)?, index_of(last)?)))
    }
}
