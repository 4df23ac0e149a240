//! The durable apply index: which apply states are known to be on stable storage.
//!
//! The KV engine's WAL is not synced per write, so an apply state that a write returned is
//! not yet durable. Each write records the apply states it carried under the engine's
//! sequence number of that write; a sync (or flush) that covers a sequence number makes them
//! durable. Log truncation is bounded by the result (ARCHITECTURE.md §5).

use std::collections::{BTreeMap, VecDeque};

use tessera_wire::ids::RangeId;
use tessera_wire::raft::LogIndex;

/// Tracks written and durable apply indexes. Both engines use it, under their own lock.
#[derive(Debug, Default)]
pub struct DurableApplyTracker {
    // Invariant: sequence numbers strictly increase from front to back.
    pending: VecDeque<(u64, Vec<(RangeId, LogIndex)>)>,
    // Invariant: only ever grows per range, except when a range is forgotten.
    durable: BTreeMap<RangeId, LogIndex>,
}

impl DurableApplyTracker {
    /// Starts from the apply states found on disk at open (all durable by definition).
    #[must_use]
    pub fn new(recovered: impl IntoIterator<Item = (RangeId, LogIndex)>) -> Self {
        Self { pending: VecDeque::new(), durable: recovered.into_iter().collect() }
    }

    /// Records that the write with sequence number `seq` carried these apply states. A
    /// later sequence number than the true one is safe (it only delays durability); an
    /// earlier one is not.
    ///
    /// # Panics
    /// If `seq` is below an already recorded sequence number.
    pub fn written(&mut self, seq: u64, applied: &[(RangeId, LogIndex)]) {
        if applied.is_empty() {
            return;
        }
        if let Some((last, states)) = self.pending.back_mut() {
            assert!(*last <= seq, "apply states recorded out of order: {seq} after {last}");
            if *last == seq {
                states.extend_from_slice(applied);
                return;
            }
        }
        self.pending.push_back((seq, applied.to_vec()));
    }

    /// Every write with a sequence number `<= seq` is now durable.
    pub fn synced_through(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|(pending_seq, _)| *pending_seq <= seq) {
            let (_, states) = self.pending.pop_front().expect("front checked above");
            for (range, index) in states {
                let durable = self.durable.entry(range).or_default();
                *durable = (*durable).max(index);
            }
        }
    }

    /// `range`'s durable apply index.
    #[must_use]
    pub fn durable(&self, range: RangeId) -> Option<LogIndex> {
        self.durable.get(&range).copied()
    }

    /// Every range's durable apply index.
    #[must_use]
    pub fn all_durable(&self) -> Vec<(RangeId, LogIndex)> {
        self.durable.iter().map(|(range, index)| (*range, *index)).collect()
    }

    /// Forgets `range` (destroyed, or about to be replaced by a snapshot whose apply state
    /// is written with it).
    pub fn forget(&mut self, range: RangeId) {
        self.durable.remove(&range);
        for (_, states) in &mut self.pending {
            states.retain(|(pending_range, _)| *pending_range != range);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_writes_count() {
        let mut tracker = DurableApplyTracker::new([(RangeId(1), LogIndex(5))]);
        tracker.written(10, &[(RangeId(1), LogIndex(7)), (RangeId(2), LogIndex(3))]);
        tracker.written(12, &[(RangeId(1), LogIndex(9))]);
        assert_eq!(tracker.durable(RangeId(1)), Some(LogIndex(5)));
        assert_eq!(tracker.durable(RangeId(2)), None);
        tracker.synced_through(11);
        assert_eq!(
            tracker.all_durable(),
            vec![(RangeId(1), LogIndex(7)), (RangeId(2), LogIndex(3))]
        );
        tracker.synced_through(12);
        assert_eq!(tracker.durable(RangeId(1)), Some(LogIndex(9)));
        // A lower index written later (a replayed apply) never moves the index back.
        tracker.written(13, &[(RangeId(2), LogIndex(1))]);
        tracker.synced_through(20);
        assert_eq!(tracker.durable(RangeId(2)), Some(LogIndex(3)));
        tracker.forget(RangeId(2));
        assert_eq!(tracker.durable(RangeId(2)), None);
    }
}
