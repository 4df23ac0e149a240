//! What a leader knows of each replica (progress, in-flight window), the group's membership
//! (possibly joint), and the quorum arithmetic over it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tessera_wire::raft::{ConfChange, ConfChangeStep, ConfState, LogIndex, ReplicaId};

/// How a leader currently replicates to one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// One append at a time until the leader finds where the logs match.
    Probe,
    /// Optimistic pipelining: appends are sent without waiting, up to the in-flight window.
    Replicate,
    /// A snapshot is on its way; nothing else is sent.
    Snapshot,
}

/// A bounded window of appends in flight to one follower, by count and by bytes.
#[derive(Debug, Clone)]
pub struct Inflights {
    // (last index of the append, its bytes), oldest first.
    window: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    count_max: usize,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window.
    #[must_use]
    pub fn new(count_max: usize, bytes_max: u64) -> Self {
        Self { window: VecDeque::with_capacity(count_max.min(64)), bytes: 0, count_max, bytes_max }
    }

    /// Whether another append may be sent.
    #[must_use]
    pub fn full(&self) -> bool {
        self.window.len() >= self.count_max || (self.bytes_max > 0 && self.bytes >= self.bytes_max)
    }

    /// Records an append ending at `index`.
    pub fn add(&mut self, index: LogIndex, bytes: u64) {
        if let Some((last, _)) = self.window.back() {
            assert!(index > *last, "in-flight appends out of order: {index} after {last}");
        }
        self.window.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append ending at or before `index`.
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Empties the window.
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// Frees the oldest append in flight, if any.
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }
}

/// A leader's view of one replica.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known replicated there. Invariant: matched < next.
    pub matched: LogIndex,
    /// The next index to send.
    pub next: LogIndex,
    /// How appends are sent.
    pub state: ProgressState,
    /// In Probe: an append was sent and no answer came yet (one at a time).
    pub probe_sent: bool,
    /// In Snapshot: the index of the snapshot being sent.
    pub pending_snapshot: LogIndex,
    /// Whether the replica was heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Appends in flight (Replicate).
    pub inflights: Inflights,
    /// Whether it is a learner.
    pub is_learner: bool,
}

impl Progress {
    /// A replica the leader knows nothing of, to be probed from `next`.
    #[must_use]
    pub fn new(next: LogIndex, inflights: Inflights, is_learner: bool) -> Self {
        Self {
            matched: LogIndex(0),
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: LogIndex(0),
            recent_active: false,
            inflights,
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = LogIndex(0);
        self.state = state;
        self.inflights.reset();
    }

    /// Back to probing from just after the match.
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = self.matched.next().max(pending.next());
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched.next();
        }
    }

    /// Pipelining from just after the match.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    /// Sending the snapshot at `index`.
    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
    }

    /// The replica has everything up to `index`. Returns whether that was news.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        updated
    }

    /// An append ending at `last` was sent with `bytes` of entries.
    pub fn sent_entries(&mut self, last: LogIndex, count: usize, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next = last.next();
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => panic!("sending entries while a snapshot is in flight"),
        }
    }

    /// The replica rejected an append at `rejected`; `match_hint` is where it may match.
    /// Returns whether the rejection was news (not stale).
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, match_hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false; // stale
            }
            self.next = self.matched.next();
            return true;
        }
        if self.next.prev() != rejected {
            return false; // stale: not the probe we sent last
        }
        self.next = match_hint.next().min(rejected).max(self.matched.next());
        self.probe_sent = false;
        true
    }

    /// Whether sending is paused (a probe is outstanding, the window is full, or a snapshot
    /// is in flight).
    #[must_use]
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// A majority configuration: a set of voters.
pub type MajorityConfig = BTreeSet<ReplicaId>;

/// The result of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet.
    Pending,
    /// Lost.
    Lost,
    /// Won.
    Won,
}

fn majority_vote(voters: &MajorityConfig, votes: &BTreeMap<ReplicaId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won; // an empty config agrees to anything (joint with nothing)
    }
    let (mut granted, mut missing) = (0, 0);
    for voter in voters {
        match votes.get(voter) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The highest index that a majority of `voters` have acknowledged.
fn majority_committed(voters: &MajorityConfig, acked: impl Fn(ReplicaId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX); // an empty config does not constrain a joint commit
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&v| acked(v)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

/// Membership: incoming and outgoing voters (joint while outgoing is non-empty), learners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The incoming (or only) voters.
    pub incoming: MajorityConfig,
    /// The outgoing voters while joint.
    pub outgoing: MajorityConfig,
    /// Learners.
    pub learners: BTreeSet<ReplicaId>,
    /// Outgoing voters that become learners on leaving the joint configuration.
    pub learners_next: BTreeSet<ReplicaId>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl Membership {
    /// From a stored [`ConfState`].
    #[must_use]
    pub fn from_conf_state(conf: &ConfState) -> Self {
        Self {
            incoming: conf.voters.iter().copied().collect(),
            outgoing: conf.voters_outgoing.iter().copied().collect(),
            learners: conf.learners.iter().copied().collect(),
            learners_next: conf.learners_next.iter().copied().collect(),
            auto_leave: conf.auto_leave,
        }
    }

    /// As a [`ConfState`].
    #[must_use]
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.incoming.iter().copied().collect(),
            voters_outgoing: self.outgoing.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// Whether this is a joint configuration.
    #[must_use]
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes (in either half).
    #[must_use]
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every replica: voters of both halves, learners and learners-to-be.
    #[must_use]
    pub fn all_ids(&self) -> BTreeSet<ReplicaId> {
        let mut ids = self.incoming.clone();
        ids.extend(&self.outgoing);
        ids.extend(&self.learners);
        ids.extend(&self.learners_next);
        ids
    }

    /// Whether the voters of both halves elect (joint consensus needs both).
    #[must_use]
    pub fn vote_result(&self, votes: &BTreeMap<ReplicaId, bool>) -> VoteResult {
        let incoming = majority_vote(&self.incoming, votes);
        let outgoing = if self.outgoing.is_empty() {
            VoteResult::Won
        } else {
            majority_vote(&self.outgoing, votes)
        };
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// The highest index acknowledged by a majority of both halves.
    #[must_use]
    pub fn committed(&self, acked: impl Fn(ReplicaId) -> LogIndex) -> LogIndex {
        if self.incoming.is_empty() && self.outgoing.is_empty() {
            return LogIndex(0);
        }
        majority_committed(&self.incoming, &acked).min(majority_committed(&self.outgoing, &acked))
    }

    /// The membership after `change`, or why it cannot be applied.
    pub fn apply(&self, change: &ConfChange) -> Result<Self, ConfChangeError> {
        if change.is_leave_joint() {
            if !self.is_joint() {
                return Err(ConfChangeError::NotJoint);
            }
            let mut next = self.clone();
            next.outgoing.clear();
            let demoted = std::mem::take(&mut next.learners_next);
            next.learners.extend(demoted);
            next.auto_leave = false;
            return Ok(next);
        }
        if self.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        let mut next = self.clone();
        let voters_before = self.incoming.clone();
        for step in &change.steps {
            match *step {
                ConfChangeStep::AddVoter(id) => {
                    next.learners.remove(&id);
                    next.learners_next.remove(&id);
                    next.incoming.insert(id);
                }
                ConfChangeStep::AddLearner(id) => {
                    next.incoming.remove(&id);
                    if voters_before.contains(&id) {
                        // Demoted: stays a voter in the outgoing half until the joint
                        // configuration is left.
                        next.learners_next.insert(id);
                    } else {
                        next.learners.insert(id);
                    }
                }
                ConfChangeStep::Remove(id) => {
                    next.incoming.remove(&id);
                    next.learners.remove(&id);
                    next.learners_next.remove(&id);
                }
            }
        }
        if next.incoming.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        if next.incoming != voters_before {
            next.outgoing = voters_before;
            next.auto_leave = !change.explicit_leave;
        } else {
            // Only learners changed: no joint phase needed.
            next.learners.extend(std::mem::take(&mut next.learners_next));
        }
        Ok(next)
    }
}

/// Why a membership change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Asked to leave a joint configuration that is not joint.
    #[error("not in a joint configuration")]
    NotJoint,
    /// Asked for a change while still joint: leave first.
    #[error("already in a joint configuration")]
    AlreadyJoint,
    /// The change would leave no voter.
    #[error("the change leaves no voter")]
    NoVoters,
}
