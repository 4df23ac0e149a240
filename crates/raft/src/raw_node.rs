//! The application's handle on a Raft node: inputs in (`tick`, `step`, `propose`, …),
//! effects out as numbered [`Ready`]s.

use std::collections::VecDeque;

use bytes::Bytes;
use tessera_wire::raft::{
    ConfChange, ConfState, Entry, EntryKind, HardState, LogIndex, Message, ReplicaId, Snapshot,
    Term,
};

use crate::config::Config;
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use crate::{RaftError, ReadState};

/// Who leads and what this node is: volatile, never persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader, or [`ReplicaId::NONE`].
    pub leader: ReplicaId,
    /// This node's role.
    pub role: Role,
}

/// Everything a node needs done, in the order the crate documentation gives.
#[derive(Debug, Default)]
pub struct Ready {
    /// Numbers increase by one per Ready; persisting Ready `n` is acknowledged with
    /// [`RawNode::on_persist_ready`].
    pub number: u64,
    /// Changed leader or role, if any.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Whether `hard_state` must be durable before this Ready's committed entries are
    /// applied or its persisted messages sent: its term or vote changed, or the committed
    /// entries hold a membership change (membership takes effect when applied, so a restart
    /// must not find an older commit index). A change of `commit` alone needs no fsync: the
    /// commit index is volatile in Raft (§5), learnt again from the leader after a crash.
    pub hard_state_must_sync: bool,
    /// A snapshot to persist and apply (before `entries` and `committed_entries`).
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log, replacing any stored entries from the first one's index.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready's snapshot, entries and hard state are
    /// durable.
    pub persisted_messages: Vec<Message>,
    /// Committed, durable entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Answered read-index requests.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether persisting this Ready needs an fsync: entries, a snapshot, a new term or
    /// vote, or a membership change handed out for apply (see `hard_state_must_sync`). A
    /// Ready whose only durable change is the commit index is written without one.
    #[must_use]
    pub fn must_sync(&self) -> bool {
        self.hard_state_must_sync || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

#[derive(Debug)]
struct ReadyRecord {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot_index: Option<LogIndex>,
    hard_state: Option<HardState>,
}

/// A Raft node driven by the application.
#[derive(Debug)]
pub struct RawNode<S> {
    raft: Raft<S>,
    previous_soft: SoftState,
    previous_hard: HardState,
    next_ready_number: u64,
    // Readys handed out and not yet acknowledged persisted, oldest first.
    unpersisted: VecDeque<ReadyRecord>,
}

impl<S: Storage> RawNode<S> {
    /// A node over `store` (new or restarting from what it holds).
    pub fn new(config: Config, store: S) -> Result<Self, RaftError> {
        let raft = Raft::new(config, store)?;
        let previous_hard = raft.hard_state();
        let previous_soft = SoftState { leader: raft.leader(), role: raft.role() };
        Ok(Self {
            raft,
            previous_soft,
            previous_hard,
            next_ready_number: 1,
            unpersisted: VecDeque::new(),
        })
    }

    /// The protocol state, for inspection.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The storage.
    pub fn store(&self) -> &S {
        &self.raft.log.store
    }

    /// The storage, to write what a Ready hands out.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.raft.log.store
    }

    /// One tick of logical time.
    pub fn tick(&mut self) {
        self.raft.tick();
        self.check_invariants();
    }

    /// A message from another node.
    pub fn step(&mut self, message: Message) -> Result<(), RaftError> {
        if message.to != self.raft.id {
            return Err(RaftError::WrongRecipient { to: message.to, me: self.raft.id });
        }
        let result = self.raft.step(message);
        self.check_invariants();
        result
    }

    /// Campaigns now.
    pub fn campaign(&mut self) {
        self.raft.campaign_now();
        self.check_invariants();
    }

    /// Proposes `data` (leader only). Returns the index it will have if committed.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, RaftError> {
        self.raft.propose(data)
    }

    /// Proposes a membership change (leader only; one at a time).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<LogIndex, RaftError> {
        self.raft.propose_conf_change(change)
    }

    /// Applies a committed membership change (every node, when it applies the entry).
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, RaftError> {
        let result = self.raft.apply_conf_change(change);
        self.check_invariants();
        result
    }

    /// Asks for a read index; answered by a [`ReadState`] with `context` in a later Ready.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), RaftError> {
        self.raft.read_index(context)
    }

    /// Hands leadership to `to` (leader only).
    pub fn transfer_leader(&mut self, to: ReplicaId) -> Result<(), RaftError> {
        self.raft.transfer_leader(to)
    }

    /// Puts an idle group to sleep (see [`Raft::quiesce`]).
    pub fn quiesce(&mut self, unreachable: &[ReplicaId]) -> bool {
        self.raft.quiesce(unreachable)
    }

    /// Whether the group is quiesced on this node.
    pub fn is_quiesced(&self) -> bool {
        self.raft.quiesced
    }

    /// Wakes a quiesced group.
    pub fn wake(&mut self) {
        self.raft.wake();
    }

    /// The transport could not deliver to `to`.
    pub fn report_unreachable(&mut self, to: ReplicaId) {
        self.raft.report_unreachable(to);
    }

    /// A snapshot to `to` finished or failed.
    pub fn report_snapshot(&mut self, to: ReplicaId, success: bool) {
        self.raft.report_snapshot(to, success);
    }

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.raft.leader(), role: self.raft.role() }
    }

    /// Whether a Ready has something to do.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        self.soft_state() != self.previous_soft
            || raft.hard_state() != self.previous_hard
            || raft.append_pending
            || !raft.msgs.is_empty()
            || !raft.msgs_after_persist.is_empty()
            || !raft.log.entries_to_persist().is_empty()
            || raft.log.snapshot_to_persist().is_some()
            || raft.log.has_entries_to_apply()
            || !raft.read_states.is_empty()
    }

    /// Takes the next Ready. Everything in it is handed out exactly once.
    pub fn ready(&mut self) -> Ready {
        let number = self.next_ready_number;
        self.next_ready_number += 1;
        let raft = &mut self.raft;
        raft.flush_appends();
        let soft = SoftState { leader: raft.leader(), role: raft.role() };
        let hard = raft.hard_state();
        let entries = raft.log.entries_to_persist().to_vec();
        let snapshot = raft.log.snapshot_to_persist().cloned();
        raft.log.mark_in_progress();
        let committed_entries = raft.log.next_entries_to_apply(raft.config.apply_bytes_max);
        if let Some(last) = committed_entries.last() {
            raft.log.applying_to(last.index);
        }
        raft.reduce_uncommitted(&committed_entries);
        let applies_conf_change =
            committed_entries.iter().any(|entry| entry.kind == EntryKind::ConfChange);
        let ready = Ready {
            number,
            soft_state: (soft != self.previous_soft).then_some(soft),
            // Membership takes effect when applied, so the commit index covering an applied
            // membership change must survive a crash: a restart with an older commit would
            // come back under the old membership (where this node might elect itself).
            hard_state: (hard != self.previous_hard || applies_conf_change).then_some(hard),
            hard_state_must_sync: hard.term != self.previous_hard.term
                || hard.vote != self.previous_hard.vote
                || applies_conf_change,
            snapshot,
            entries,
            messages: take_keeping_capacity(&mut raft.msgs),
            persisted_messages: take_keeping_capacity(&mut raft.msgs_after_persist),
            committed_entries,
            read_states: std::mem::take(&mut raft.read_states),
        };
        self.previous_soft = soft;
        self.previous_hard = hard;
        self.unpersisted.push_back(ReadyRecord {
            number,
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: ready.snapshot.as_ref().map(|s| s.metadata.index),
            hard_state: ready.hard_state,
        });
        ready
    }

    /// Readys up to `number` (every one of them, in order) are durable and their
    /// `persisted_messages` sent or being sent.
    pub fn on_persist_ready(&mut self, number: u64) {
        while let Some(record) = self.unpersisted.front() {
            if record.number > number {
                break;
            }
            let record = self.unpersisted.pop_front().expect("front exists");
            if let Some(index) = record.snapshot_index {
                self.raft.on_snapshot_persisted(index);
            }
            if let Some((index, term)) = record.last_entry {
                self.raft.on_persisted(index, term);
            }
            if let Some(hard_state) = record.hard_state {
                self.raft.on_hard_state_persisted(hard_state.term, hard_state.vote);
            }
        }
        self.check_invariants();
    }

    /// The committed entries handed out so far are applied.
    pub fn advance_apply(&mut self) {
        let applying = self.raft.log.applying;
        self.advance_apply_to(applying);
    }

    /// Entries up to `index` are applied.
    pub fn advance_apply_to(&mut self, index: LogIndex) {
        self.raft.applied_to(index);
        self.check_invariants();
    }

    /// The synchronous path: `ready` was persisted, its messages sent and its committed
    /// entries applied.
    pub fn advance(&mut self, ready: &Ready) {
        self.on_persist_ready(ready.number);
        if let Some(last) = ready.committed_entries.last() {
            self.advance_apply_to(last.index);
        }
    }

    /// The applied index.
    pub fn applied(&self) -> LogIndex {
        self.raft.log.applied
    }

    /// The commit index.
    pub fn committed(&self) -> LogIndex {
        self.raft.log.committed
    }

    /// The last index in this node's log.
    pub fn last_index(&self) -> LogIndex {
        self.raft.log.last_index()
    }

    /// The term of the entry at `index`, if this node has it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.raft.log.term(index).ok()
    }

    /// On the leader, how far each replica's log (this one's included) is known to match
    /// the leader's; empty on other nodes. The store truncates logs no further than the
    /// slowest of these.
    pub fn matched(&self) -> Vec<(ReplicaId, LogIndex)> {
        if self.raft.role() != Role::Leader {
            return Vec::new();
        }
        self.raft.progress.iter().map(|(id, progress)| (*id, progress.matched)).collect()
    }

    /// The current membership.
    pub fn conf_state(&self) -> ConfState {
        self.raft.membership.to_conf_state()
    }

    fn check_invariants(&self) {
        if cfg!(any(debug_assertions, feature = "invariants")) {
            self.raft.check_invariants();
        }
    }
}

impl<S: Storage> Raft<S> {
    /// The state to persist before vouching for it.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }
}

/// Takes the messages, leaving a vector with room for as many: the next Ready likely needs
/// as much again, and regrowing from empty copies them over and over.
fn take_keeping_capacity(messages: &mut Vec<Message>) -> Vec<Message> {
    let capacity = messages.len();
    std::mem::replace(messages, Vec::with_capacity(capacity))
}
