//! One simulated node: a Raft core over a live store, the durable copy of that store that
//! survives crashes, the disk queue between them, and the volatile state machine.

use std::collections::VecDeque;

use tessera_raft::{
    Entry, HardState, LogIndex, MemStorage, Message, RawNode, ReadState, ReplicaId, Snapshot,
    Storage, Term,
};

use crate::kv::Kv;

/// What one Ready asked to persist, waiting for an fsync.
#[derive(Debug)]
pub struct PendingWrite {
    /// The Ready's number.
    pub number: u64,
    /// Its snapshot.
    pub snapshot: Option<Snapshot>,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// Its hard state.
    pub hard_state: Option<HardState>,
    /// Its `persisted_messages`, sent once the write is durable.
    pub messages: Vec<Message>,
}

/// Work for a node's apply worker, in order.
#[derive(Debug)]
pub enum Applying {
    /// Restore the state machine from a snapshot.
    Snapshot(Snapshot),
    /// Apply committed entries.
    Entries(Vec<Entry>),
}

/// A node of the simulated group.
#[derive(Debug)]
pub struct SimNode {
    /// Its replica id.
    pub id: ReplicaId,
    /// The running core over the live store; `None` while crashed or retired.
    pub raw: Option<RawNode<MemStorage>>,
    /// What survives a crash: written only when an fsync completes.
    pub durable: MemStorage,
    /// Bumped at every crash, so that fsyncs and reports of a previous life are ignored.
    pub incarnation: u64,
    /// Readys handed out and not yet durable, oldest first.
    pub disk: VecDeque<PendingWrite>,
    /// Whether an fsync is scheduled.
    pub fsync_scheduled: bool,
    /// Work handed out for apply and not yet applied (asynchronous apply only).
    pub apply_queue: VecDeque<Applying>,
    /// Whether the apply worker is scheduled.
    pub apply_scheduled: bool,
    /// The state machine (volatile: rebuilt from the durable snapshot and log on restart).
    pub kv: Kv,
    /// The index the state machine is at.
    pub kv_applied: LogIndex,
    /// The highest index applied from durable state, over all lives (entries are applied only
    /// once durable; a snapshot counts once its write is durable).
    pub applied_durable: LogIndex,
    /// Read states waiting for the state machine to reach their index.
    pub reads: Vec<ReadState>,
    /// The term last seen in memory, this life.
    pub term: Term,
    /// The durable hard state last seen.
    pub durable_hard_state: HardState,
    /// While leader: (term, last index when last checked).
    pub leading: Option<(Term, LogIndex)>,
    /// Removed from the group for good and shut down.
    pub retired: bool,
}

impl SimNode {
    /// A node that has not started yet, over `durable`.
    #[must_use]
    pub fn new(id: ReplicaId, durable: MemStorage) -> Self {
        let durable_hard_state = durable.hard_state();
        Self {
            id,
            raw: None,
            durable,
            incarnation: 0,
            disk: VecDeque::new(),
            fsync_scheduled: false,
            apply_queue: VecDeque::new(),
            apply_scheduled: false,
            kv: Kv::default(),
            kv_applied: LogIndex(0),
            applied_durable: LogIndex(0),
            reads: Vec::new(),
            term: Term(0),
            durable_hard_state,
            leading: None,
            retired: false,
        }
    }

    /// Whether the node is up.
    #[must_use]
    pub fn running(&self) -> bool {
        self.raw.is_some()
    }

    /// The running core.
    ///
    /// # Panics
    /// If the node is down: callers check [`SimNode::running`] first.
    #[must_use]
    pub fn raw(&self) -> &RawNode<MemStorage> {
        self.raw.as_ref().expect("callers check that the node is running")
    }

    /// The running core, mutably (see [`SimNode::raw`]).
    pub fn raw_mut(&mut self) -> &mut RawNode<MemStorage> {
        self.raw.as_mut().expect("callers check that the node is running")
    }

    /// The durable snapshot's (index, term).
    #[must_use]
    pub fn durable_snapshot(&self) -> (LogIndex, Term) {
        let index = self.durable.first_index().prev();
        let term = self.durable.term(index).expect("the snapshot's own index has a term");
        (index, term)
    }

    /// Writes `write` to the durable store (the fsync covering it completed, or a crash
    /// happened to keep it). Returns the hard state before and after.
    pub fn make_durable(&mut self, write: &PendingWrite) -> (HardState, HardState) {
        let before = self.durable_hard_state;
        if let Some(snapshot) = &write.snapshot {
            self.durable.apply_snapshot(snapshot.clone());
            self.applied_durable = self.applied_durable.max(snapshot.metadata.index);
        }
        self.durable.append(&write.entries);
        if let Some(hard_state) = write.hard_state {
            self.durable.set_hard_state(hard_state);
        }
        self.durable_hard_state = self.durable.hard_state();
        (before, self.durable_hard_state)
    }

    /// One line on the node's state, for traces and failure reports.
    #[must_use]
    pub fn describe(&self) -> String {
        let Some(raw) = &self.raw else {
            let state = if self.retired { "retired" } else { "down" };
            let hs = self.durable_hard_state;
            return format!(
                "{} {state} durable term={} vote={} commit={} last={}",
                self.id,
                hs.term,
                hs.vote,
                hs.commit,
                self.durable.last_index()
            );
        };
        let raft = raw.raft();
        format!(
            "{} {:?} term={} leader={} committed={} applied={} kv_applied={} last={} \
             snapshot={} quiesced={} conf={:?} disk_queue={}",
            self.id,
            raft.role(),
            raft.term(),
            raft.leader(),
            raw.committed(),
            raw.applied(),
            self.kv_applied,
            raw.last_index(),
            raw.store().first_index().prev(),
            raw.is_quiesced(),
            raw.conf_state(),
            self.disk.len(),
        )
    }
}
