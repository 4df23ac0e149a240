//! The Raft log as one node sees it: durable entries in [`Storage`], followed by entries not
//! yet known durable ("unstable"), plus the commit, persist and apply positions.

use tessera_wire::raft::{Entry, LogIndex, Snapshot, Term};

use crate::storage::{Storage, StorageError, limit_size};

/// The log of one group on one node.
#[derive(Debug)]
pub struct RaftLog<S> {
    /// Durable entries (and, while a Ready is being persisted, some in-progress ones).
    pub(crate) store: S,
    /// A snapshot received from the leader and not yet known durable.
    unstable_snapshot: Option<Snapshot>,
    /// Whether `unstable_snapshot` was handed out in a Ready.
    snapshot_in_progress: bool,
    /// Entries not yet known durable. Invariant: `unstable[i].index == unstable_offset + i`.
    unstable: Vec<Entry>,
    unstable_offset: LogIndex,
    /// How many of `unstable` were handed out in a Ready and are being persisted.
    // Invariant: in_progress <= unstable.len().
    in_progress: usize,
    /// The highest index known committed. Invariant: committed <= last_index(); never
    /// decreases.
    pub(crate) committed: LogIndex,
    /// The highest index known durable on this node and part of the current log.
    // Invariant: persisted <= last_index().
    pub(crate) persisted: LogIndex,
    /// The highest index handed out for apply. Invariant: applied <= applying <= committed.
    pub(crate) applying: LogIndex,
    /// The highest index the application reported applied.
    pub(crate) applied: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `store`, everything in it taken as durable.
    pub fn new(store: S, committed: LogIndex) -> Self {
        let first = store.first_index();
        let last = store.last_index();
        let applied = first.prev();
        Self {
            store,
            unstable_snapshot: None,
            snapshot_in_progress: false,
            unstable: Vec::new(),
            unstable_offset: last.next(),
            in_progress: 0,
            committed: committed.max(applied),
            persisted: last,
            applying: applied,
            applied,
        }
    }

    /// The first index still available (after the latest snapshot).
    pub fn first_index(&self) -> LogIndex {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index.next(),
            None => self.store.first_index(),
        }
    }

    /// The last index in the log.
    pub fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.last() {
            return last.index;
        }
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.metadata.index,
            None => self.store.last_index(),
        }
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).expect("the last entry's term is always known")
    }

    /// The term of the entry at `index`.
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if let Some(snapshot) = &self.unstable_snapshot {
            if index == snapshot.metadata.index {
                return Ok(snapshot.metadata.term);
            }
            if index < snapshot.metadata.index {
                return Err(StorageError::Compacted(index));
            }
        }
        if index >= self.unstable_offset {
            let position = usize::try_from(index.0 - self.unstable_offset.0).expect("fits");
            return self
                .unstable
                .get(position)
                .map(|entry| entry.term)
                .ok_or(StorageError::Unavailable(index));
        }
        if self.unstable_snapshot.is_some() {
            // Below the unstable entries but above the snapshot: nothing there.
            return Err(StorageError::Unavailable(index));
        }
        self.store.term(index)
    }

    /// The term at `index`, or 0 if it is compacted or past the end.
    pub fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term(0))
    }

    /// Whether the entry at `index` has `term`.
    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as this
    /// one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Appends entries from the leader after (`prev_index`, `prev_term`) if the log matches
    /// there (§5.3), truncating any conflicting suffix, and advances the commit index to
    /// `min(leader_commit, last new index)`. Returns the last index of the appended range,
    /// or `None` if the log does not match at `prev_index`.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let conflict = self.find_conflict(entries);
        if let Some(conflict) = conflict {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with the committed entry at {}",
                self.committed
            );
            let skip = usize::try_from(conflict.0 - prev_index.0 - 1).expect("fits");
            self.append(&entries[skip..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// The index of the first entry that is not already in the log with the same term.
    fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries.iter().find(|entry| !self.match_term(entry.index, entry.term)).map(|e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`, and that term: where a leader
    /// should probe next after a follower rejected at `index` (fast backtracking).
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t > term => index = index.prev(),
                Ok(t) => return (index, t),
                Err(_) => return (index, Term(0)),
            }
        }
    }

    /// Appends entries as the new tail (truncating anything after `entries[0].index - 1`).
    /// Returns the last index.
    pub fn append(&mut self, entries: &[Entry]) -> LogIndex {
        let Some(first) = entries.first() else { return self.last_index() };
        assert!(
            first.index > self.committed,
            "append at {} would overwrite committed {}",
            first.index,
            self.committed
        );
        let end = LogIndex(self.unstable_offset.0 + self.unstable.len() as u64);
        if first.index == end {
            // The common case: extend the tail.
        } else if first.index <= self.unstable_offset {
            // Replaces all unstable entries (and durable ones from first.index on).
            self.unstable.clear();
            self.unstable_offset = first.index;
            self.in_progress = 0;
        } else {
            let keep = usize::try_from(first.index.0 - self.unstable_offset.0).expect("fits");
            self.unstable.truncate(keep);
            self.in_progress = self.in_progress.min(keep);
        }
        self.persisted = self.persisted.min(first.index.prev());
        self.unstable.extend_from_slice(entries);
        self.last_index()
    }

    /// Entries from `low` to the end, at most `max_bytes` (at least one).
    pub fn entries(&self, low: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let high = self.last_index().next();
        if low >= high {
            return Ok(Vec::new());
        }
        self.slice(low, high, max_bytes)
    }

    /// Entries in `[low, high)`, at most `max_bytes` (at least one).
    pub fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let mut result = Vec::new();
        if low < self.unstable_offset {
            let stored_high = high.min(self.unstable_offset);
            result = self.store.entries(low, stored_high, max_bytes)?;
            let complete = result.last().is_some_and(|e| e.index.next() == stored_high);
            if !complete || stored_high == high {
                return Ok(result);
            }
        }
        let from = low.max(self.unstable_offset);
        let start = usize::try_from(from.0 - self.unstable_offset.0).expect("fits");
        let end = usize::try_from(high.0 - self.unstable_offset.0).expect("fits");
        let already: u64 = result.iter().map(Entry::size_bytes).sum();
        if result.is_empty() {
            result.extend_from_slice(limit_size(&self.unstable[start..end], max_bytes));
        } else {
            let mut total = already;
            for entry in &self.unstable[start..end] {
                total += entry.size_bytes();
                if total > max_bytes {
                    break;
                }
                result.push(entry.clone());
            }
        }
        Ok(result)
    }

    /// Advances the commit index (never backwards).
    ///
    /// # Panics
    /// If `index` is past the last entry: the leader claimed a commit this log cannot have.
    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} is out of range [last index {}]",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Commits `index` if it is newer and its entry has `term` (§5.4.2: a leader commits
    /// only entries of its own term by counting replicas).
    pub fn maybe_commit(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            true
        } else {
            false
        }
    }

    /// Unstable entries not yet handed out for persistence.
    pub fn entries_to_persist(&self) -> &[Entry] {
        &self.unstable[self.in_progress..]
    }

    /// The unstable snapshot if it was not yet handed out.
    pub fn snapshot_to_persist(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress { None } else { self.unstable_snapshot.as_ref() }
    }

    /// Marks everything unstable as handed out for persistence.
    pub fn mark_in_progress(&mut self) {
        self.in_progress = self.unstable.len();
        if self.unstable_snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// The highest index that may be handed out for apply: committed and durable here.
    pub fn max_appliable(&self) -> LogIndex {
        self.committed.min(self.persisted)
    }

    /// Whether committed entries wait to be handed out for apply.
    pub fn has_entries_to_apply(&self) -> bool {
        self.max_appliable() > self.applying
    }

    /// The next committed entries to apply, at most `max_bytes` (at least one).
    pub fn next_entries_to_apply(&self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_entries_to_apply() {
            return Vec::new();
        }
        let low = self.applying.next().max(self.first_index());
        self.slice(low, self.max_appliable().next(), max_bytes)
            .expect("committed, durable entries past the snapshot are readable")
    }

    /// Notes that entries up to `index` were handed out for apply.
    pub fn applying_to(&mut self, index: LogIndex) {
        assert!(index <= self.committed, "applying {index} past commit {}", self.committed);
        self.applying = self.applying.max(index);
    }

    /// Notes that entries up to `index` were applied.
    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.applying.max(self.committed),
            "applied {index} past what was handed out ({})",
            self.applying
        );
        self.applied = self.applied.max(index);
        self.applying = self.applying.max(index);
    }

    /// Entries up to (`index`, `term`) are durable (a Ready was persisted). Ignored if the
    /// entry at `index` has since been replaced by one of another term.
    pub fn stable_to(&mut self, index: LogIndex, term: Term) {
        if index < self.unstable_offset {
            // Already stable; still the current log if the term matches.
            if self.match_term(index, term) {
                self.persisted = self.persisted.max(index);
            }
            return;
        }
        if !self.match_term(index, term) {
            return;
        }
        let count = usize::try_from(index.0 - self.unstable_offset.0 + 1).expect("fits");
        self.unstable.drain(..count);
        self.unstable_offset = index.next();
        self.in_progress = self.in_progress.saturating_sub(count);
        self.persisted = self.persisted.max(index);
    }

    /// The snapshot at `index` is durable (and applied by the application).
    pub fn stable_snapshot_to(&mut self, index: LogIndex) {
        if self.unstable_snapshot.as_ref().is_some_and(|s| s.metadata.index == index) {
            self.unstable_snapshot = None;
            self.snapshot_in_progress = false;
            self.persisted = self.persisted.max(index);
            self.applied = self.applied.max(index);
            self.applying = self.applying.max(index);
        }
    }

    /// Replaces the log with a snapshot from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        self.committed = index;
        self.applying = self.applying.max(index);
        self.persisted = self.persisted.min(index);
        self.unstable.clear();
        self.unstable_offset = index.next();
        self.in_progress = 0;
        self.unstable_snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// The snapshot to send a follower that needs entries this log no longer has.
    pub fn snapshot(&self, request_index: LogIndex) -> Result<Snapshot, StorageError> {
        if let Some(snapshot) = &self.unstable_snapshot {
            return Ok(snapshot.clone());
        }
        self.store.snapshot(request_index)
    }

    /// Checks the log's invariants.
    pub fn check_invariants(&self) {
        assert!(self.in_progress <= self.unstable.len());
        assert!(
            self.applied <= self.applying,
            "applied {} > applying {}",
            self.applied,
            self.applying
        );
        assert!(
            self.applying <= self.committed,
            "applying {} > committed {}",
            self.applying,
            self.committed
        );
        assert!(
            self.committed <= self.last_index(),
            "committed {} > last {}",
            self.committed,
            self.last_index()
        );
        assert!(
            self.persisted <= self.last_index(),
            "persisted {} > last {}",
            self.persisted,
            self.last_index()
        );
        for (position, entry) in self.unstable.iter().enumerate() {
            assert_eq!(entry.index.0, self.unstable_offset.0 + position as u64, "unstable gap");
        }
    }
}
