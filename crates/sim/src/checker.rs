//! The safety properties, checked against everything the simulator observes.
//!
//! The checker keeps a global history (who led which term, every `(index, term)` ever
//! written anywhere, every entry ever applied, every vote ever granted, every read request)
//! and each `on_*` method checks one observation against it. A method returns the
//! [`Violation`] it finds instead of panicking, so that the unit tests can feed it fabricated
//! bad histories; the world turns a violation into a panic naming the seed.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use tessera_raft::{Entry, EntryKind, HardState, LogIndex, ReplicaId, Term};

use crate::kv::{Kv, parse_write};

/// The property a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// At most one leader per term.
    ElectionSafety,
    /// Two entries with the same index and term are the same entry, with the same log before
    /// them.
    LogMatching,
    /// A new leader's log holds every entry committed in an earlier term.
    LeaderCompleteness,
    /// No two nodes (nor one node across restarts) apply different entries at one index, and
    /// a snapshot holds exactly the committed state at its index.
    StateMachineSafety,
    /// A leader only appends to its log during its term.
    LeaderAppendOnly,
    /// A read index covers every write acknowledged before the read began.
    ReadLinearizability,
    /// A node's term never decreases, in memory or on disk; its durable commit neither.
    TermMonotonic,
    /// A node never votes for two candidates in one term.
    VoteSafety,
    /// Entries a node applied are still in its durable log (or snapshot) after a restart.
    CommittedDurable,
    /// The core kept the Ready contract: what it hands out or vouches for is durable, applies
    /// come in order, reads answer requests that were made.
    ReadyContract,
    /// With the network healed and every node up, the group makes progress.
    Liveness,
}

/// A broken property and what broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// What was observed.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} violated: {}", self.property, self.detail)
    }
}

impl std::error::Error for Violation {}

fn violation(property: Property, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

/// What the checker remembers of an entry seen in some log.
#[derive(Debug, Clone)]
struct Written {
    kind: EntryKind,
    data: Bytes,
    /// The term of the entry before it in the log that held it.
    prev_term: Term,
    node: ReplicaId,
}

/// An entry applied somewhere, hence committed.
#[derive(Debug, Clone)]
struct Applied {
    term: Term,
    kind: EntryKind,
    data: Bytes,
    node: ReplicaId,
}

/// A read-index request and what it must observe.
#[derive(Debug, Clone)]
struct ReadRequest {
    node: ReplicaId,
    /// The highest index applied anywhere when the request was made.
    min_index: LogIndex,
    /// For each key, the index of the last write applied anywhere by then.
    expected: Vec<(String, LogIndex)>,
}

/// The global history and the property checks over it.
#[derive(Debug, Default)]
pub struct Checker {
    /// The snapshot the group started from (index 0 when it started from an empty log).
    base: (LogIndex, Term),
    leaders: BTreeMap<Term, ReplicaId>,
    written: BTreeMap<(LogIndex, Term), Written>,
    applied: BTreeMap<LogIndex, Applied>,
    max_applied: LogIndex,
    /// Applied writes per key: index -> value.
    writes: BTreeMap<String, BTreeMap<LogIndex, String>>,
    votes: BTreeMap<(ReplicaId, Term), ReplicaId>,
    /// The term in which each index was first seen committed by a leader.
    commit_terms: BTreeMap<LogIndex, Term>,
    commit_known: LogIndex,
    reads: BTreeMap<Bytes, ReadRequest>,
    /// Reads whose served state was checked.
    pub reads_checked: u64,
}

impl Checker {
    /// A checker for a group that starts from a snapshot at `base` (`(0, 0)`: an empty log).
    #[must_use]
    pub fn new(base: (LogIndex, Term)) -> Self {
        Self { base, max_applied: base.0, commit_known: base.0, ..Self::default() }
    }

    /// The highest index applied anywhere so far.
    #[must_use]
    pub fn max_applied(&self) -> LogIndex {
        self.max_applied
    }

    /// How many distinct leaders (terms with a leader) were seen.
    #[must_use]
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// The entry applied at `index`, if any node applied one: (term, kind, data).
    #[must_use]
    pub fn applied_at(&self, index: LogIndex) -> Option<(Term, EntryKind, &Bytes)> {
        self.applied.get(&index).map(|a| (a.term, a.kind, &a.data))
    }

    /// `node` is leader of `term`. Checks election safety, then leader completeness against
    /// its log: `snapshot` is its snapshot's (index, term), `term_at` the term of its entry at
    /// an index past the snapshot (`None` if it has none).
    pub fn on_leader(
        &mut self,
        node: ReplicaId,
        term: Term,
        snapshot: (LogIndex, Term),
        term_at: &dyn Fn(LogIndex) -> Option<Term>,
    ) -> Result<(), Violation> {
        if let Some(&other) = self.leaders.get(&term)
            && other != node
        {
            return violation(
                Property::ElectionSafety,
                format!("{node} became leader of term {term}, which {other} already leads"),
            );
        }
        self.leaders.insert(term, node);
        if snapshot.0 == self.base.0 && snapshot.1 != self.base.1 {
            return violation(
                Property::LeaderCompleteness,
                format!(
                    "leader {node} of term {term} has a snapshot of term {} at the base index {}",
                    snapshot.1, snapshot.0
                ),
            );
        }
        for (&index, applied) in self.applied.range(snapshot.0..) {
            // Only entries committed in an earlier term: a stale leader of an older term
            // (elected by late votes) need not hold what a newer leader committed since.
            let committed_in = self.commit_terms.get(&index).copied().unwrap_or(term);
            if committed_in >= term {
                continue;
            }
            let found = if index == snapshot.0 { Some(snapshot.1) } else { term_at(index) };
            if found != Some(applied.term) {
                return violation(
                    Property::LeaderCompleteness,
                    format!(
                        "{node} became leader of term {term} without the entry {}/{index}, \
                         committed in term {committed_in} (applied by {}); its log has {found:?} \
                         there",
                        applied.term, applied.node
                    ),
                );
            }
        }
        Ok(())
    }

    /// A leader of `term` has committed up to `committed`: the entries not seen committed
    /// before were committed in `term`.
    pub fn on_leader_commit(&mut self, term: Term, committed: LogIndex) {
        if committed <= self.commit_known {
            return;
        }
        for index in self.commit_known.0 + 1..=committed.0 {
            self.commit_terms.insert(LogIndex(index), term);
        }
        self.commit_known = committed;
    }

    /// `node` appended `entries` after its entry `prev` (index, term). Checks log matching:
    /// an (index, term) seen before must carry the same payload and follow the same term.
    pub fn on_append(
        &mut self,
        node: ReplicaId,
        prev: (LogIndex, Term),
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let mut prev_term = prev.1;
        let mut expected_index = prev.0.next();
        for entry in entries {
            if entry.index != expected_index {
                return violation(
                    Property::LogMatching,
                    format!("{node} appended {entry:?} where index {expected_index} was due"),
                );
            }
            let key = (entry.index, entry.term);
            match self.written.get(&key) {
                Some(seen) => {
                    if seen.kind != entry.kind || seen.data != entry.data {
                        return violation(
                            Property::LogMatching,
                            format!(
                                "{node} wrote {entry:?} but {} wrote {:?} with the same index and term",
                                seen.node,
                                String::from_utf8_lossy(&seen.data)
                            ),
                        );
                    }
                    if seen.prev_term != prev_term {
                        return violation(
                            Property::LogMatching,
                            format!(
                                "{node} wrote {entry:?} after an entry of term {prev_term}, but {} \
                                 holds it after an entry of term {}",
                                seen.node, seen.prev_term
                            ),
                        );
                    }
                }
                None => {
                    let written =
                        Written { kind: entry.kind, data: entry.data.clone(), prev_term, node };
                    self.written.insert(key, written);
                }
            }
            prev_term = entry.term;
            expected_index = entry.index.next();
        }
        Ok(())
    }

    /// `node`, leader of `term`, wrote a Ready whose entries start at `first` (if any) onto a
    /// log ending at `last`, with a snapshot if `snapshot`. A leader only appends.
    pub fn on_leader_write(
        &self,
        node: ReplicaId,
        term: Term,
        last: LogIndex,
        first: Option<LogIndex>,
        snapshot: bool,
    ) -> Result<(), Violation> {
        if snapshot {
            return violation(
                Property::LeaderAppendOnly,
                format!("{node}, leader of term {term}, installed a snapshot"),
            );
        }
        if let Some(first) = first
            && first <= last
        {
            return violation(
                Property::LeaderAppendOnly,
                format!(
                    "{node}, leader of term {term}, rewrote its log from {first} (last was {last})"
                ),
            );
        }
        Ok(())
    }

    /// `node` has been leader of `term` since its log ended at `since`; now its log ends at
    /// (`last`, `last_term`). Its log never shrinks, and ends with an entry of its term.
    pub fn on_leader_log(
        &self,
        node: ReplicaId,
        term: Term,
        since: LogIndex,
        last: LogIndex,
        last_term: Option<Term>,
    ) -> Result<(), Violation> {
        if last < since || last_term != Some(term) {
            return violation(
                Property::LeaderAppendOnly,
                format!(
                    "{node}, leader of term {term} with a log to {since}, now has a log ending at \
                     {last} with term {last_term:?}"
                ),
            );
        }
        Ok(())
    }

    /// `entry` was handed out for apply on `node`; `durable_term` is the term of that index in
    /// the node's durable log, `durable_snapshot` its durable snapshot's index.
    pub fn on_handed_out(
        &self,
        node: ReplicaId,
        entry: &Entry,
        durable_term: Option<Term>,
        durable_snapshot: LogIndex,
    ) -> Result<(), Violation> {
        if entry.index > durable_snapshot && durable_term != Some(entry.term) {
            return violation(
                Property::ReadyContract,
                format!(
                    "{node} was handed {entry:?} to apply, but its durable log has {durable_term:?} there"
                ),
            );
        }
        Ok(())
    }

    /// `node`, whose state machine is at `applied_before`, applies `entry`. Checks the apply
    /// order and state machine safety, and records the entry as committed.
    pub fn on_apply(
        &mut self,
        node: ReplicaId,
        applied_before: LogIndex,
        entry: &Entry,
    ) -> Result<(), Violation> {
        if entry.index != applied_before.next() {
            return violation(
                Property::ReadyContract,
                format!("{node} applied {entry:?} right after applying up to {applied_before}"),
            );
        }
        if entry.index <= self.base.0 {
            return violation(
                Property::StateMachineSafety,
                format!("{node} applied {entry:?}, inside the initial snapshot at {}", self.base.0),
            );
        }
        if let Some(seen) = self.applied.get(&entry.index) {
            if seen.term != entry.term || seen.kind != entry.kind || seen.data != entry.data {
                return violation(
                    Property::StateMachineSafety,
                    format!(
                        "{node} applied {entry:?} but {} applied {}/{} {:?} at that index",
                        seen.node,
                        seen.term,
                        entry.index,
                        String::from_utf8_lossy(&seen.data)
                    ),
                );
            }
            return Ok(());
        }
        if entry.kind == EntryKind::Normal
            && let Some((key, value)) = parse_write(&entry.data)
        {
            self.writes.entry(key.to_owned()).or_default().insert(entry.index, value.to_owned());
        }
        let applied =
            Applied { term: entry.term, kind: entry.kind, data: entry.data.clone(), node };
        self.applied.insert(entry.index, applied);
        self.max_applied = self.max_applied.max(entry.index);
        Ok(())
    }

    /// `node` installed a snapshot at (`index`, `term`) holding `kv`: it must be the committed
    /// state at that index.
    pub fn on_snapshot_applied(
        &self,
        node: ReplicaId,
        index: LogIndex,
        term: Term,
        kv: &Kv,
    ) -> Result<(), Violation> {
        let known_term = if index == self.base.0 {
            Some(self.base.1)
        } else {
            self.applied.get(&index).map(|a| a.term)
        };
        if known_term != Some(term) {
            return violation(
                Property::StateMachineSafety,
                format!(
                    "{node} installed a snapshot at {term}/{index}, but the entry applied there \
                     has term {known_term:?}"
                ),
            );
        }
        let mut expected = Kv::default();
        for (key, writes) in &self.writes {
            if let Some((&at, value)) = writes.range(..=index).next_back() {
                let data = format!("{key}={value}");
                expected.apply(at, data.as_bytes()).expect("recorded writes parse");
            }
        }
        if &expected != kv {
            return violation(
                Property::StateMachineSafety,
                format!(
                    "{node} installed a snapshot at {index} holding {:?}, but the committed state \
                     there is {:?}",
                    kv.encode(),
                    expected.encode()
                ),
            );
        }
        Ok(())
    }

    /// A node's term changed from `before` to `after` (in memory, or on disk when `durable`).
    pub fn on_term(
        &self,
        node: ReplicaId,
        before: Term,
        after: Term,
        durable: bool,
    ) -> Result<(), Violation> {
        if after < before {
            let place = if durable { "on disk" } else { "in memory" };
            return violation(
                Property::TermMonotonic,
                format!("{node}'s term went from {before} to {after} {place}"),
            );
        }
        Ok(())
    }

    /// A node's durable hard state changed from `before` to `after`.
    pub fn on_durable_hard_state(
        &self,
        node: ReplicaId,
        before: HardState,
        after: HardState,
    ) -> Result<(), Violation> {
        self.on_term(node, before.term, after.term, true)?;
        if after.commit < before.commit {
            return violation(
                Property::TermMonotonic,
                format!("{node}'s durable commit went from {} to {}", before.commit, after.commit),
            );
        }
        if after.term == before.term && before.vote.is_some() && after.vote != before.vote {
            return violation(
                Property::VoteSafety,
                format!(
                    "{node} changed its durable vote in term {} from {} to {}",
                    after.term, before.vote, after.vote
                ),
            );
        }
        Ok(())
    }

    /// `voter` sent a granted vote for `candidate` in `term`, its durable hard state being
    /// `durable`.
    pub fn on_vote_granted(
        &mut self,
        voter: ReplicaId,
        term: Term,
        candidate: ReplicaId,
        durable: HardState,
    ) -> Result<(), Violation> {
        if let Some(&other) = self.votes.get(&(voter, term))
            && other != candidate
        {
            return violation(
                Property::VoteSafety,
                format!("{voter} voted for {other} and for {candidate} in term {term}"),
            );
        }
        self.votes.insert((voter, term), candidate);
        if durable.term < term || (durable.term == term && durable.vote != candidate) {
            return violation(
                Property::ReadyContract,
                format!(
                    "{voter} granted its vote to {candidate} in term {term} while its durable \
                     hard state is {durable:?}"
                ),
            );
        }
        Ok(())
    }

    /// `node` acknowledged entries up to `index` while its durable log ends at `durable_last`.
    pub fn on_append_ack(
        &self,
        node: ReplicaId,
        index: LogIndex,
        durable_last: LogIndex,
    ) -> Result<(), Violation> {
        if index > durable_last {
            return violation(
                Property::ReadyContract,
                format!(
                    "{node} acknowledged entries up to {index} with a durable log ending at {durable_last}"
                ),
            );
        }
        Ok(())
    }

    /// `node` restarts from a durable log whose snapshot is at `snapshot` (index, term) and
    /// whose entries have the terms `durable_term`; before the crash it had applied, from
    /// durable state, up to `applied_before`. Nothing it applied may be missing.
    pub fn on_restart(
        &self,
        node: ReplicaId,
        applied_before: LogIndex,
        snapshot: (LogIndex, Term),
        durable_term: &dyn Fn(LogIndex) -> Option<Term>,
    ) -> Result<(), Violation> {
        let lower = snapshot.0.max(self.base.0);
        if snapshot.0 > self.base.0 {
            let known = self.applied.get(&snapshot.0).map(|a| a.term);
            if known != Some(snapshot.1) {
                return violation(
                    Property::CommittedDurable,
                    format!(
                        "{node} restarts from a snapshot at {}/{}, but the entry applied there has \
                         term {known:?}",
                        snapshot.1, snapshot.0
                    ),
                );
            }
        }
        if applied_before <= lower {
            return Ok(());
        }
        for (&index, applied) in self.applied.range(lower.next()..=applied_before) {
            let found = durable_term(index);
            if found != Some(applied.term) {
                return violation(
                    Property::CommittedDurable,
                    format!(
                        "{node} applied {}/{index} before crashing, but its durable log has \
                         {found:?} there",
                        applied.term
                    ),
                );
            }
        }
        Ok(())
    }

    /// `node` asked for a read index with `context`: it must cover everything applied so far.
    pub fn on_read_request(&mut self, node: ReplicaId, context: Bytes) {
        let min_index = self.max_applied;
        let expected = self
            .writes
            .iter()
            .filter_map(|(key, writes)| {
                writes.range(..=min_index).next_back().map(|(&at, _)| (key.clone(), at))
            })
            .collect();
        self.reads.insert(context, ReadRequest { node, min_index, expected });
    }

    /// `node` got the read index `index` for `context`.
    pub fn on_read_state(
        &self,
        node: ReplicaId,
        context: &Bytes,
        index: LogIndex,
    ) -> Result<(), Violation> {
        let Some(request) = self.reads.get(context) else {
            return violation(
                Property::ReadyContract,
                format!("{node} got a read state for {context:?}, which nobody asked for"),
            );
        };
        if index < request.min_index {
            return violation(
                Property::ReadLinearizability,
                format!(
                    "{node} got read index {index} for {context:?} (asked on {}), but {} was \
                     already applied when the read began",
                    request.node, request.min_index
                ),
            );
        }
        Ok(())
    }

    /// `node` serves the read `context` from `kv`, applied up to `applied`.
    pub fn on_read_served(
        &mut self,
        node: ReplicaId,
        context: &Bytes,
        applied: LogIndex,
        kv: &Kv,
    ) -> Result<(), Violation> {
        let Some(request) = self.reads.get(context) else {
            return violation(
                Property::ReadyContract,
                format!("{node} served a read for {context:?}, which nobody asked for"),
            );
        };
        for (key, at) in &request.expected {
            let seen = kv.get(key).map(|(_, index)| *index);
            if seen.is_none_or(|seen| seen < *at) {
                return violation(
                    Property::ReadLinearizability,
                    format!(
                        "{node} served read {context:?} at applied index {applied} with {key} \
                         written at {seen:?}, but the write at {at} was applied before the read began"
                    ),
                );
            }
        }
        self.reads_checked += 1;
        Ok(())
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
