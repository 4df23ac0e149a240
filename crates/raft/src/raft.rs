//! The protocol: roles, elections, replication, commitment, membership, leader transfer,
//! read index and leases, quiescence. Pure: every effect is a message queued in `msgs` or
//! `msgs_after_persist`, or state the caller reads through a `Ready`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tessera_wire::raft::{
    ConfChange, ConfState, Entry, EntryKind, LogIndex, Message, MessageKind, ReplicaId, Snapshot,
    Term, encode_conf_change,
};

use crate::config::{Config, SplitMix64};
use crate::log::RaftLog;
use crate::storage::{Storage, StorageError};
use crate::tracker::{Inflights, Membership, Progress, ProgressState, VoteResult};
use crate::{RaftError, ReadState};

/// The context of a vote forced by a leader transfer: it bypasses leases and pre-vote.
pub const CAMPAIGN_TRANSFER: &[u8] = b"transfer";

/// A node's role in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win before disturbing anyone (pre-vote).
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads the group.
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// A read-index request waiting for a quorum to confirm the leader is still the leader.
#[derive(Debug)]
struct PendingRead {
    context: Bytes,
    index: LogIndex,
    from: ReplicaId,
    acks: BTreeSet<ReplicaId>,
    started_tick: u64,
}

/// One node of one Raft group.
#[derive(Debug)]
pub struct Raft<S> {
    pub(crate) id: ReplicaId,
    /// Invariant: never decreases.
    pub(crate) term: Term,
    pub(crate) vote: ReplicaId,
    pub(crate) role: Role,
    pub(crate) leader: ReplicaId,
    pub(crate) log: RaftLog<S>,
    pub(crate) membership: Membership,
    /// Leader only: what each replica has. Keys: `membership.all_ids()`.
    pub(crate) progress: BTreeMap<ReplicaId, Progress>,
    votes: BTreeMap<ReplicaId, bool>,
    /// Messages that may leave now.
    pub(crate) msgs: Vec<Message>,
    /// Messages that vouch for state not yet durable: they leave only after the Ready that
    /// carries that state has been persisted (votes, vote and append responses).
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Ticks since this node started.
    ticks_since_start: u64,
    /// Whether this node restarted with state (a term): it then refuses votes for one
    /// election timeout, since it cannot know whether it granted a leader a lease just
    /// before it crashed.
    restarted: bool,
    /// The highest term known durable on this node. A heartbeat answer (which grants the
    /// leader a lease and confirms read-index rounds) leaves only once its term is durable:
    /// a node that forgot the term on restart could otherwise vote against the lease it
    /// just granted.
    durable_term: Term,
    /// Leader: a leader transfer was started in this term. A `TimeoutNow` can arrive late,
    /// after the transfer was abandoned, and its forced election ignores leases, so such a
    /// leader serves reads through ReadIndex, never its lease, until the term ends.
    transfer_attempted: bool,
    lead_transferee: ReplicaId,
    /// Leader: the index of the last membership change proposed; no new one until it is
    /// applied.
    pending_conf_index: LogIndex,
    uncommitted_bytes: u64,
    pending_reads: VecDeque<PendingRead>,
    /// Read requests that arrived before the leader committed an entry of its term.
    reads_before_first_commit: Vec<(Bytes, ReplicaId)>,
    /// Leader: lease reads are safe while `ticks_since_start < lease_until_tick`.
    lease_until_tick: u64,
    /// Leader: (last index appended during a tick, that tick), to renew the lease when a
    /// quorum acknowledges it.
    proposal_ticks: VecDeque<(LogIndex, u64)>,
    pub(crate) quiesced: bool,
    /// Leader: proposals were appended since appends last went out. They go out once per
    /// Ready (`flush_appends`), so one append per follower carries every proposal made
    /// since, instead of one append per follower per proposal.
    pub(crate) append_pending: bool,
    rng: SplitMix64,
    pub(crate) config: Config,
}

impl<S: Storage> Raft<S> {
    /// A node over `store`, restarting from whatever it holds.
    pub fn new(config: Config, store: S) -> Result<Self, RaftError> {
        config.validate()?;
        let (hard_state, conf_state) = store.initial_state()?;
        let mut log = RaftLog::new(store, hard_state.commit);
        if config.applied > LogIndex(0) {
            let applied = config.applied.min(log.committed);
            log.applied_to(applied);
        }
        let mut raft = Self {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: ReplicaId::NONE,
            log,
            membership: Membership::from_conf_state(&conf_state),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_ticks,
            ticks_since_start: 0,
            restarted: hard_state.term > Term(0) && !config.new_group,
            durable_term: hard_state.term,
            transfer_attempted: false,
            lead_transferee: ReplicaId::NONE,
            pending_conf_index: LogIndex(0),
            uncommitted_bytes: 0,
            pending_reads: VecDeque::new(),
            reads_before_first_commit: Vec::new(),
            lease_until_tick: 0,
            proposal_ticks: VecDeque::new(),
            quiesced: false,
            append_pending: false,
            rng: SplitMix64::new(config.seed),
            config,
        };
        raft.rebuild_progress();
        raft.become_follower(hard_state.term, ReplicaId::NONE);
        Ok(raft)
    }

    // ---------------------------------------------------------------- accessors

    /// Whether this node may campaign (it is a voter).
    pub fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The known leader, or [`ReplicaId::NONE`].
    pub fn leader(&self) -> ReplicaId {
        self.leader
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    fn quorum_is_only_me(&self) -> bool {
        self.membership.incoming.len() == 1
            && self.membership.incoming.contains(&self.id)
            && self.membership.outgoing.is_empty()
    }

    // ---------------------------------------------------------------- role changes

    fn reset(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "term went backwards: {} -> {term}", self.term);
            self.term = term;
            self.vote = ReplicaId::NONE;
        }
        self.leader = ReplicaId::NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = u32::try_from(self.rng.range(
            u64::from(self.config.election_ticks),
            2 * u64::from(self.config.election_ticks),
        ))
        .expect("twice a u32 election timeout fits after the modulo");
        self.lead_transferee = ReplicaId::NONE;
        self.votes.clear();
        self.pending_reads.clear();
        self.reads_before_first_commit.clear();
        self.uncommitted_bytes = 0;
        self.lease_until_tick = 0;
        self.transfer_attempted = false;
        self.proposal_ticks.clear();
        self.quiesced = false;
        self.append_pending = false;
        let next = self.log.last_index().next();
        let (count_max, bytes_max) =
            (self.config.inflight_msgs_max, self.config.inflight_bytes_max);
        for (id, progress) in &mut self.progress {
            *progress =
                Progress::new(next, Inflights::new(count_max, bytes_max), progress.is_learner);
            if *id == self.id {
                progress.matched = self.log.persisted;
            }
        }
    }

    fn rebuild_progress(&mut self) {
        let ids = self.membership.all_ids();
        self.progress.retain(|id, _| ids.contains(id));
        let next = self.log.last_index().next();
        for id in ids {
            let is_learner = !self.membership.is_voter(id);
            let (count_max, bytes_max) =
                (self.config.inflight_msgs_max, self.config.inflight_bytes_max);
            let progress = self.progress.entry(id).or_insert_with(|| {
                let mut progress =
                    Progress::new(next, Inflights::new(count_max, bytes_max), is_learner);
                // A replica just added counts as active, so check-quorum gives it time.
                progress.recent_active = true;
                progress
            });
            progress.is_learner = is_learner;
        }
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.matched = me.matched.max(self.log.persisted.min(self.log.last_index()));
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: ReplicaId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a pre-candidate");
        // Pre-vote changes neither term nor vote (thesis §9.6).
        self.votes.clear();
        self.role = Role::PreCandidate;
        self.leader = ReplicaId::NONE;
        self.quiesced = false;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a candidate");
        self.reset(self.term.next());
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_ne!(self.role, Role::Follower, "a follower cannot become leader directly");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        for progress in self.progress.values_mut() {
            progress.recent_active = true;
        }
        // A membership change may be pending in the uncommitted tail: allow none until the
        // whole tail, and this term's no-op, is applied.
        self.pending_conf_index = self.log.last_index();
        // The no-op of §8 (and thesis §6.4): commits the tail and lets reads be served.
        let noop = Entry {
            term: self.term,
            index: self.log.last_index().next(),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.append_entries(vec![noop]);
        self.broadcast_append();
    }

    // ---------------------------------------------------------------- time

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks_since_start += 1;
        if self.quiesced {
            return; // a quiesced group neither heartbeats nor starts elections
        }
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.start_campaign();
        }
    }

    fn start_campaign(&mut self) {
        if self.config.pre_vote {
            self.campaign(CampaignKind::PreElection);
        } else {
            self.campaign(CampaignKind::Election);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                if !self.quorum_recently_active() {
                    // Thesis §6.2: a leader that cannot reach a quorum steps down.
                    self.become_follower(self.term, ReplicaId::NONE);
                    return;
                }
                for (id, progress) in &mut self.progress {
                    progress.recent_active = *id == self.id;
                }
            }
            if self.lead_transferee.is_some() {
                // A transfer that did not finish within an election timeout is abandoned.
                self.lead_transferee = ReplicaId::NONE;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            // Carry the newest pending read, so a read whose own round was lost is still
            // confirmed by a later one (and with it every older read).
            let context = self.pending_reads.back().map(|read| read.context.clone());
            self.broadcast_heartbeat(&context.unwrap_or_default());
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let votes: BTreeMap<ReplicaId, bool> = self
            .progress
            .iter()
            .map(|(&id, progress)| (id, id == self.id || progress.recent_active))
            .collect();
        self.membership.vote_result(&votes) == VoteResult::Won
    }

    // ---------------------------------------------------------------- elections

    /// Starts an election now (as if the election timeout had passed), with pre-vote when
    /// configured.
    pub fn campaign_now(&mut self) {
        if self.promotable() && self.role != Role::Leader {
            self.quiesced = false;
            self.start_campaign();
        }
    }

    fn campaign(&mut self, kind: CampaignKind) {
        if !self.promotable() || self.has_unapplied_conf_changes() {
            // Until committed membership changes are applied, our membership may be one no
            // longer in force (after a restart it is the snapshot's): winning under it could
            // make a second leader (etcd-raft refuses the same way).
            return;
        }
        let (vote_kind, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageKind::RequestPreVote, self.term.next())
        } else {
            self.become_candidate();
            (MessageKind::RequestVote, self.term)
        };
        self.votes.insert(self.id, true);
        match self.membership.vote_result(&self.votes) {
            VoteResult::Won => {
                // A group of one wins at once, but it leads only once its new term and
                // self-vote are durable (`on_hard_state_persisted`): leading on volatile state
                // would let it, after a crash, lead the same term again and write different
                // entries at the same index and term (seen by learners it already sent to).
                if kind == CampaignKind::PreElection {
                    self.campaign(CampaignKind::Election);
                }
                return;
            }
            VoteResult::Lost | VoteResult::Pending => {}
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<ReplicaId> =
            self.membership.incoming.union(&self.membership.outgoing).copied().collect();
        for voter in voters {
            if voter == self.id {
                continue;
            }
            let mut message = Message::new(vote_kind, self.id, voter, term);
            message.index = last_index;
            message.log_term = last_term;
            if kind == CampaignKind::Transfer {
                message.context = Bytes::from_static(CAMPAIGN_TRANSFER);
            }
            if vote_kind == MessageKind::RequestVote {
                // Our term and self-vote must be durable before anyone can count them.
                self.msgs_after_persist.push(message);
            } else {
                self.msgs.push(message);
            }
        }
    }

    /// Whether committed entries not yet applied hold a membership change.
    fn has_unapplied_conf_changes(&self) -> bool {
        let low = self.log.applied.next().max(self.log.first_index());
        if low > self.log.committed {
            return false;
        }
        self.log
            .slice(low, self.log.committed.next(), u64::MAX)
            .expect("committed entries past the snapshot are readable")
            .iter()
            .any(|entry| entry.kind == EntryKind::ConfChange)
    }

    fn record_vote(&mut self, from: ReplicaId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        self.membership.vote_result(&self.votes)
    }

    // ---------------------------------------------------------------- step

    /// Processes a message from another node.
    pub fn step(&mut self, message: Message) -> Result<(), RaftError> {
        if message.kind == MessageKind::Tombstone {
            // The application's message (replica GC), never Raft's.
            return Ok(());
        }
        if !(message.kind == MessageKind::Heartbeat && message.quiesce) {
            self.quiesced = false;
        }
        if message.term > self.term {
            if matches!(message.kind, MessageKind::RequestVote | MessageKind::RequestPreVote) {
                let forced = message.context.as_ref() == CAMPAIGN_TRANSFER;
                if !forced && self.config.check_quorum && self.in_lease() {
                    // Thesis §4.2.3: a node that hears from a leader ignores vote requests,
                    // so a removed or partitioned node cannot disrupt it.
                    return Ok(());
                }
            }
            match message.kind {
                MessageKind::RequestPreVote => {}
                MessageKind::RequestPreVoteResponse if !message.reject => {}
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(message.term, message.from);
                }
                _ => self.become_follower(message.term, ReplicaId::NONE),
            }
        } else if message.term < self.term {
            if (self.config.check_quorum || self.config.pre_vote || !self.promotable())
                && matches!(message.kind, MessageKind::Append | MessageKind::Heartbeat)
            {
                // A stale leader learns the new term from this answer and steps down; without
                // it a leader cut off by check-quorum or pre-vote could never rejoin, nor could
                // a learner (which never campaigns) that somehow got ahead of the leader's term.
                let reply =
                    Message::new(MessageKind::AppendResponse, self.id, message.from, self.term);
                self.msgs.push(reply);
            } else if matches!(message.kind, MessageKind::RequestPreVote | MessageKind::RequestVote)
            {
                // Refused with our term, so that a stale candidate moves up instead of
                // campaigning below it forever.
                self.refuse_vote(&message);
            }
            return Ok(());
        }

        match message.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                self.handle_vote_request(&message);
                return Ok(());
            }
            _ => {}
        }
        if matches!(
            message.kind,
            MessageKind::RequestVoteResponse | MessageKind::RequestPreVoteResponse
        ) && message.reject
            && self.role != Role::Leader
            && message.commit > self.log.committed
            && self.log.match_term(message.commit, message.log_term)
        {
            // A commit index is a fact, whoever reports it, and our log matches there. A voter
            // that refuses us may be one that a committed change removed, whose longer log
            // refuses every candidate of the joint configuration we still apply: learning the
            // commit lets us apply the change and stop needing its vote.
            self.log.commit_to(message.commit);
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::Candidate | Role::PreCandidate => self.step_candidate(message),
            Role::Follower => self.step_follower(message),
        }
    }

    /// Whether this node heard from a leader within the election timeout, or restarted less
    /// than an election timeout ago.
    fn in_lease(&self) -> bool {
        let heard_from_leader =
            self.leader.is_some() && self.election_elapsed < self.config.election_ticks;
        let just_started =
            self.restarted && self.ticks_since_start < u64::from(self.config.election_ticks);
        heard_from_leader || just_started || (self.role == Role::Leader)
    }

    fn handle_vote_request(&mut self, message: &Message) {
        let pre = message.kind == MessageKind::RequestPreVote;
        let can_vote = self.vote == message.from
            || (self.vote == ReplicaId::NONE && self.leader == ReplicaId::NONE)
            || (pre && message.term > self.term);
        let response_kind = if pre {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        if can_vote && self.log.is_up_to_date(message.index, message.log_term) {
            // Granted pre-votes carry the requested term so the pre-candidate counts them.
            let reply = Message::new(response_kind, self.id, message.from, message.term);
            if pre {
                self.msgs.push(reply);
            } else {
                self.election_elapsed = 0;
                self.vote = message.from;
                self.msgs_after_persist.push(reply);
            }
        } else {
            self.refuse_vote(message);
        }
    }

    /// Refuses a (pre-)vote request with our term and what we know committed of the
    /// candidate's log, so a candidate that lags can advance its commit index (see `step`).
    /// A vote refusal, like a grant, leaves only once our term is durable.
    fn refuse_vote(&mut self, request: &Message) {
        let pre = request.kind == MessageKind::RequestPreVote;
        let kind = if pre {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        let mut reply = Message::new(kind, self.id, request.from, self.term);
        reply.reject = true;
        reply.commit = self.log.committed.min(request.index);
        reply.log_term = self.log.term_or_zero(reply.commit);
        if pre {
            self.msgs.push(reply);
        } else {
            self.msgs_after_persist.push(reply);
        }
    }

    fn step_follower(&mut self, message: Message) -> Result<(), RaftError> {
        match message.kind {
            MessageKind::Append => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_append(&message);
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_heartbeat(&message);
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_snapshot(message);
            }
            MessageKind::TimeoutNow => {
                // Thesis §3.10: the leader asks us to take over now.
                self.campaign(CampaignKind::Transfer);
            }
            MessageKind::ReadIndex => {
                // Sent to us as if we led: forwarding would send the answer to us, not to
                // the asker. Dropped; the asker retries against the real leader.
            }
            MessageKind::ReadIndexResponse => {
                self.read_states.push(ReadState { index: message.index, context: message.context });
            }
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, message: Message) -> Result<(), RaftError> {
        let my_response = if self.role == Role::PreCandidate {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        match message.kind {
            MessageKind::Append => {
                self.become_follower(message.term, message.from);
                self.handle_append(&message);
            }
            MessageKind::Heartbeat => {
                self.become_follower(message.term, message.from);
                self.handle_heartbeat(&message);
            }
            MessageKind::Snapshot => {
                self.become_follower(message.term, message.from);
                self.handle_snapshot(message);
            }
            kind if kind == my_response => match self.record_vote(message.from, !message.reject) {
                VoteResult::Won => {
                    if self.role == Role::PreCandidate {
                        self.campaign(CampaignKind::Election);
                    } else {
                        self.become_leader();
                    }
                }
                VoteResult::Lost => self.become_follower(self.term, ReplicaId::NONE),
                VoteResult::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn step_leader(&mut self, message: Message) -> Result<(), RaftError> {
        let from = message.from;
        match message.kind {
            MessageKind::AppendResponse => self.handle_append_response(&message),
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(&message),
            MessageKind::ReadIndex => {
                self.read_index_as_leader(message.context, from);
            }
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                panic!("two leaders in term {}: {} and {from}", self.term, self.id);
            }
            _ => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------- follower side

    fn respond(&mut self, kind: MessageKind, to: ReplicaId) -> Message {
        Message::new(kind, self.id, to, self.term)
    }

    fn handle_append(&mut self, message: &Message) {
        let mut reply = self.respond(MessageKind::AppendResponse, message.from);
        if message.index < self.log.committed {
            reply.index = self.log.committed;
        } else if let Some(last) =
            self.log.maybe_append(message.index, message.log_term, message.commit, &message.entries)
        {
            reply.index = last;
        } else {
            // Fast backtracking: point the leader at the last entry that may match.
            let hint = message.index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, message.log_term);
            reply.index = message.index;
            reply.reject = true;
            reply.reject_hint = hint_index;
            reply.log_term = hint_term;
        }
        // Acknowledges entries: leaves only once they are durable.
        self.msgs_after_persist.push(reply);
    }

    fn handle_heartbeat(&mut self, message: &Message) {
        self.log.commit_to(message.commit.min(self.log.last_index()));
        if message.quiesce
            && message.commit == self.log.last_index()
            && self.log.committed == message.commit
            && message.context.is_empty()
        {
            // Caught up with an idle leader: sleep without answering.
            self.quiesced = true;
            return;
        }
        let mut reply = self.respond(MessageKind::HeartbeatResponse, message.from);
        reply.context = message.context.clone();
        if self.term > self.durable_term {
            self.msgs_after_persist.push(reply);
        } else {
            self.msgs.push(reply);
        }
    }

    fn handle_snapshot(&mut self, message: Message) {
        let Some(snapshot) = message.snapshot else { return };
        let from = message.from;
        let index = snapshot.metadata.index;
        let mut reply = self.respond(MessageKind::AppendResponse, from);
        if self.restore(*snapshot) {
            reply.index = self.log.last_index();
        } else {
            reply.index = self.log.committed;
        }
        debug_assert!(reply.index >= index.min(self.log.committed));
        self.msgs_after_persist.push(reply);
    }

    /// Installs a snapshot from the leader if it is newer than what this log has committed.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.metadata;
        if meta.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            // We have the entry: fast-forward the commit index instead.
            self.log.commit_to(meta.index);
            return false;
        }
        if self.log.applying > self.log.applied {
            // Entries handed out for apply are not applied yet: the application would then
            // apply their membership changes on top of the snapshot's membership. Refuse it
            // for now; the leader sends it again.
            return false;
        }
        let conf = Membership::from_conf_state(&meta.conf_state);
        self.log.restore(snapshot);
        self.membership = conf;
        self.rebuild_progress();
        true
    }

    // ---------------------------------------------------------------- leader side

    fn handle_append_response(&mut self, message: &Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.recent_active = true;
        if message.reject {
            let next_probe = if message.log_term > Term(0) {
                self.log.find_conflict_by_term(message.reject_hint, message.log_term).0
            } else {
                message.reject_hint
            };
            let progress = self.progress.get_mut(&from).expect("looked up above");
            if progress.maybe_decrease_to(message.index, next_probe) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        let was_paused = progress.is_paused();
        if !progress.maybe_update(message.index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot if progress.matched >= progress.pending_snapshot => {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => progress.inflights.free_to(message.index),
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.send_append(from, true);
        }
        while self.send_append(from, false) {}
        if from == self.lead_transferee
            && self.progress.get(&from).is_some_and(|p| p.matched == last_index)
        {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, message: &Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.recent_active = true;
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.full() {
            // The follower is alive but appends or their acknowledgements were lost: free
            // one slot. (Freeing up to `matched` frees nothing: acknowledged appends are
            // already freed, so a full window of lost appends stalled the follower forever.)
            progress.inflights.free_first_one();
        }
        if progress.matched < last_index {
            self.send_append(from, true);
        }
        if message.context.is_empty() {
            return;
        }
        self.acknowledge_read(&message.context, from);
    }

    fn acknowledge_read(&mut self, context: &[u8], from: ReplicaId) {
        let Some(position) = self.pending_reads.iter().position(|r| r.context.as_ref() == context)
        else {
            return;
        };
        self.pending_reads[position].acks.insert(from);
        let votes: BTreeMap<ReplicaId, bool> =
            self.pending_reads[position].acks.iter().map(|&id| (id, true)).collect();
        if self.membership.vote_result(&votes) != VoteResult::Won {
            return;
        }
        // A quorum confirmed leadership after this request, hence after every older one.
        let confirmed: Vec<PendingRead> = self.pending_reads.drain(..=position).collect();
        let started = confirmed.last().map_or(0, |r| r.started_tick);
        self.renew_lease(started);
        for read in confirmed {
            self.answer_read(read.index, read.context, read.from);
        }
    }

    /// After a membership change, the acknowledgements already received may form a quorum
    /// (a group of one needs none but ours): answer the reads they confirm, or they would
    /// wait for acknowledgements that no heartbeat will ever bring.
    fn confirm_reads_after_membership_change(&mut self) {
        let confirmed = self.pending_reads.iter().rposition(|read| {
            let votes: BTreeMap<ReplicaId, bool> = read.acks.iter().map(|&id| (id, true)).collect();
            self.membership.vote_result(&votes) == VoteResult::Won
        });
        if let Some(position) = confirmed {
            let context = self.pending_reads[position].context.clone();
            self.acknowledge_read(&context, self.id);
        }
    }

    fn answer_read(&mut self, index: LogIndex, context: Bytes, from: ReplicaId) {
        if from == self.id || from == ReplicaId::NONE {
            self.read_states.push(ReadState { index, context });
        } else {
            let mut reply = self.respond(MessageKind::ReadIndexResponse, from);
            reply.index = index;
            reply.context = context;
            self.msgs.push(reply);
        }
    }

    fn renew_lease(&mut self, contact_tick: u64) {
        if self.config.lease_read {
            self.lease_until_tick =
                self.lease_until_tick.max(contact_tick + u64::from(self.config.lease_ticks));
        }
    }

    /// Whether the leader's lease holds now.
    pub fn lease_valid(&self) -> bool {
        self.role == Role::Leader
            && self.config.lease_read
            && self.lead_transferee == ReplicaId::NONE
            && !self.transfer_attempted
            && self.ticks_since_start < self.lease_until_tick
    }

    /// Advances the commit index to what a quorum (of both halves, when joint) has, if that
    /// entry is of the current term (§5.4.2, Figure 8).
    fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let index =
            self.membership.committed(|id| progress.get(&id).map_or(LogIndex(0), |p| p.matched));
        if !self.log.maybe_commit(index, self.term) {
            return false;
        }
        let committed = self.log.committed;
        let mut contact = None;
        while let Some(&(index, tick)) = self.proposal_ticks.front() {
            if index > committed {
                break;
            }
            contact = Some(tick);
            self.proposal_ticks.pop_front();
        }
        if let Some(tick) = contact {
            self.renew_lease(tick);
        }
        if !self.reads_before_first_commit.is_empty()
            && self.log.term_or_zero(committed) == self.term
        {
            for (context, from) in std::mem::take(&mut self.reads_before_first_commit) {
                self.read_index_as_leader(context, from);
            }
        }
        true
    }

    fn send_append(&mut self, to: ReplicaId, send_if_empty: bool) -> bool {
        if to == self.id {
            return false;
        }
        let Some(progress) = self.progress.get(&to) else { return false };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next;
        let prev_index = next.prev();
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries(next, self.config.append_bytes_max);
        let (Ok(prev_term), Ok(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let mut message = Message::new(MessageKind::Append, self.id, to, self.term);
        message.index = prev_index;
        message.log_term = prev_term;
        message.commit = self.log.committed;
        let count = entries.len();
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last = entries.last().map_or(prev_index, |e| e.index);
        message.entries = entries;
        self.progress.get_mut(&to).expect("looked up above").sent_entries(last, count, bytes);
        self.msgs.push(message);
        true
    }

    fn send_snapshot(&mut self, to: ReplicaId) -> bool {
        let Some(progress) = self.progress.get(&to) else { return false };
        if !progress.recent_active {
            return false; // do not ship a snapshot to a replica that may be gone
        }
        let snapshot = match self.log.snapshot(progress.next) {
            Ok(snapshot) => snapshot,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(error) => panic!("cannot read a snapshot for {to}: {error}"),
        };
        assert!(snapshot.metadata.index > LogIndex(0), "need a snapshot but have none");
        let index = snapshot.metadata.index;
        self.progress.get_mut(&to).expect("looked up above").become_snapshot(index);
        let mut message = Message::new(MessageKind::Snapshot, self.id, to, self.term);
        message.snapshot = Some(Box::new(snapshot));
        self.msgs.push(message);
        true
    }

    fn broadcast_append(&mut self) {
        let ids: Vec<ReplicaId> = self.progress.keys().copied().collect();
        for id in ids {
            self.send_append(id, true);
        }
    }

    fn broadcast_heartbeat(&mut self, context: &Bytes) {
        let ids: Vec<ReplicaId> =
            self.progress.keys().copied().filter(|&id| id != self.id).collect();
        for id in ids {
            let matched = self.progress[&id].matched;
            let mut message = Message::new(MessageKind::Heartbeat, self.id, id, self.term);
            // Never tell a follower to commit past what it is known to have.
            message.commit = self.log.committed.min(matched);
            message.context = context.clone();
            self.msgs.push(message);
        }
    }

    fn send_timeout_now(&mut self, to: ReplicaId) {
        let message = Message::new(MessageKind::TimeoutNow, self.id, to, self.term);
        self.msgs.push(message);
    }

    fn append_entries(&mut self, mut entries: Vec<Entry>) {
        let mut index = self.log.last_index();
        for entry in &mut entries {
            index = index.next();
            entry.term = self.term;
            entry.index = index;
            self.uncommitted_bytes += entry.size_bytes();
        }
        self.log.append(&entries);
        let tick = self.ticks_since_start;
        match self.proposal_ticks.back_mut() {
            Some((last, last_tick)) if *last_tick == tick => *last = index,
            _ => self.proposal_ticks.push_back((index, tick)),
        }
        // The leader's own progress advances only when these entries are durable.
    }

    /// The hard state (`term`, `vote`) is durable on this node. A candidate whose own vote
    /// decides its election (a group of one) becomes leader now.
    pub fn on_hard_state_persisted(&mut self, term: Term, vote: ReplicaId) {
        self.durable_term = self.durable_term.max(term);
        if self.role == Role::Candidate
            && self.term == term
            && vote == self.id
            && self.membership.vote_result(&self.votes) == VoteResult::Won
        {
            self.become_leader();
        }
    }

    /// The entries up to (`index`, `term`) are durable on this node.
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        self.log.stable_to(index, term);
        self.after_persist();
    }

    /// The snapshot at `index` is durable (and applied) on this node.
    pub fn on_snapshot_persisted(&mut self, index: LogIndex) {
        self.log.stable_snapshot_to(index);
        self.after_persist();
    }

    fn after_persist(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted;
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.maybe_update(persisted);
        }
        if self.maybe_commit() {
            self.broadcast_append();
        }
    }

    /// Committed entries were handed out for apply: they no longer count as uncommitted.
    pub(crate) fn reduce_uncommitted(&mut self, entries: &[Entry]) {
        if self.role == Role::Leader {
            let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
    }

    // ---------------------------------------------------------------- proposals

    fn check_can_propose(&self, bytes: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress { to: self.lead_transferee });
        }
        if !self.promotable() {
            return Err(RaftError::NotLeader { leader: ReplicaId::NONE });
        }
        if self.config.uncommitted_bytes_max > 0
            && self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.config.uncommitted_bytes_max
        {
            return Err(RaftError::UncommittedLogFull);
        }
        Ok(())
    }

    /// Appends application data to the log (leader only).
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, RaftError> {
        self.quiesced = false;
        let entry = Entry { term: self.term, index: LogIndex(0), kind: EntryKind::Normal, data };
        self.check_can_propose(entry.size_bytes())?;
        self.append_entries(vec![entry]);
        self.append_pending = true;
        Ok(self.log.last_index())
    }

    /// Sends the appends that proposals made since the last Ready are waiting for.
    pub(crate) fn flush_appends(&mut self) {
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.broadcast_append();
        }
    }

    /// Proposes a membership change (leader only; one at a time).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<LogIndex, RaftError> {
        self.quiesced = false;
        let data = encode_conf_change(change);
        let entry =
            Entry { term: self.term, index: LogIndex(0), kind: EntryKind::ConfChange, data };
        self.check_can_propose(entry.size_bytes())?;
        if self.pending_conf_index > self.log.applied {
            return Err(RaftError::ConfChangePending { index: self.pending_conf_index });
        }
        self.membership.apply(change)?;
        self.append_entries(vec![entry]);
        let index = self.log.last_index();
        self.pending_conf_index = index;
        self.broadcast_append();
        Ok(index)
    }

    /// Applies a committed membership change. The application calls this when it applies the
    /// entry, on every node.
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, RaftError> {
        let next = self.membership.apply(change)?;
        self.membership = next;
        self.rebuild_progress();
        if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.promotable() {
            // No longer a voter: give up, or the votes still coming in would make a leader
            // of a replica that is not a voter.
            self.become_follower(self.term, ReplicaId::NONE);
        }
        if self.role == Role::Leader {
            if self.lead_transferee.is_some() && !self.membership.is_voter(self.lead_transferee) {
                self.lead_transferee = ReplicaId::NONE;
            }
            if self.maybe_commit() {
                self.broadcast_append();
            } else {
                let ids: Vec<ReplicaId> = self.progress.keys().copied().collect();
                for id in ids {
                    self.send_append(id, false);
                }
            }
            self.confirm_reads_after_membership_change();
            if !self.promotable() {
                // Removed or demoted: stop leading; the others elect a successor. (One still
                // in the joint configuration that needs our vote learns from our refusal that
                // the change committed: see `step`.)
                self.become_follower(self.term, ReplicaId::NONE);
            }
        }
        Ok(self.membership.to_conf_state())
    }

    /// The application applied entries up to `index`.
    pub fn applied_to(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        // Auto-leave (thesis §4.3): once the joint configuration is applied, the leader
        // proposes leaving it.
        if self.role == Role::Leader
            && self.membership.is_joint()
            && self.membership.auto_leave
            && self.log.applied >= self.pending_conf_index
        {
            let leave = ConfChange::default();
            match self.propose_conf_change(&leave) {
                Ok(_)
                | Err(RaftError::TransferInProgress { .. } | RaftError::UncommittedLogFull) => {}
                Err(error) => panic!("cannot leave the joint configuration: {error}"),
            }
        }
    }

    // ---------------------------------------------------------------- leader transfer

    /// Asks the leader to hand leadership to `to` (thesis §3.10).
    pub fn transfer_leader(&mut self, to: ReplicaId) -> Result<(), RaftError> {
        self.quiesced = false;
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader });
        }
        if to == self.id || to == self.lead_transferee {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(RaftError::NotAVoter { replica: to });
        }
        self.lead_transferee = to;
        self.election_elapsed = 0; // the transfer times out after an election timeout
        self.lease_until_tick = 0; // the successor may serve before our lease would expire
        self.transfer_attempted = true;
        if self.progress.get(&to).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// The replica a transfer is under way to, if any.
    pub fn lead_transferee(&self) -> ReplicaId {
        self.lead_transferee
    }

    // ---------------------------------------------------------------- reads

    /// Asks for a read index: once it is answered (a [`ReadState`] with this `context`),
    /// reading the state machine after applying up to that index is linearizable.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), RaftError> {
        self.quiesced = false;
        match self.role {
            Role::Leader => {
                self.read_index_as_leader(context, self.id);
                Ok(())
            }
            _ if self.leader.is_some() => {
                let mut message =
                    Message::new(MessageKind::ReadIndex, self.id, self.leader, self.term);
                message.context = context;
                self.msgs.push(message);
                Ok(())
            }
            _ => Err(RaftError::NotLeader { leader: ReplicaId::NONE }),
        }
    }

    fn read_index_as_leader(&mut self, context: Bytes, from: ReplicaId) {
        if self.log.term_or_zero(self.log.committed) != self.term {
            // Thesis §6.4: the commit index is only known current once an entry of this term
            // is committed.
            self.reads_before_first_commit.push((context, from));
            return;
        }
        let index = self.log.committed;
        if self.quorum_is_only_me() || self.lease_valid() {
            self.answer_read(index, context, from);
            return;
        }
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.pending_reads.push_back(PendingRead {
            context: context.clone(),
            index,
            from,
            acks,
            started_tick: self.ticks_since_start,
        });
        self.broadcast_heartbeat(&context);
    }

    // ---------------------------------------------------------------- quiescence

    /// Puts an idle group to sleep (leader only): succeeds when nothing is in flight and
    /// every follower not listed as `unreachable` has the whole log. A quiesced group is not
    /// ticked; any message, proposal or read wakes it.
    pub fn quiesce(&mut self, unreachable: &[ReplicaId]) -> bool {
        if self.role != Role::Leader || self.quiesced {
            return self.quiesced;
        }
        let last = self.log.last_index();
        let idle = self.lead_transferee == ReplicaId::NONE
            && self.log.committed == last
            && self.log.applied == last
            && self.log.persisted == last
            && self.pending_reads.is_empty()
            && self.reads_before_first_commit.is_empty()
            && !(self.membership.is_joint());
        if !idle {
            return false;
        }
        let caught_up = self
            .progress
            .iter()
            .all(|(id, p)| *id == self.id || unreachable.contains(id) || p.matched == last);
        if !caught_up {
            return false;
        }
        self.quiesced = true;
        // A quiesced leader does not tick, so its lease clock stops: give the lease up.
        self.lease_until_tick = 0;
        let ids: Vec<ReplicaId> = self
            .progress
            .keys()
            .copied()
            .filter(|id| *id != self.id && !unreachable.contains(id))
            .collect();
        for id in ids {
            let mut message = Message::new(MessageKind::Heartbeat, self.id, id, self.term);
            message.commit = last;
            message.quiesce = true;
            self.msgs.push(message);
        }
        true
    }

    /// Wakes a quiesced group (for instance because node liveness says its leader is down).
    pub fn wake(&mut self) {
        self.quiesced = false;
    }

    // ---------------------------------------------------------------- reports

    /// The transport could not deliver to `to`: stop pipelining to it.
    pub fn report_unreachable(&mut self, to: ReplicaId) {
        if let Some(progress) = self.progress.get_mut(&to)
            && progress.state == ProgressState::Replicate
        {
            progress.become_probe();
        }
    }

    /// A snapshot to `to` finished (`success`) or failed.
    pub fn report_snapshot(&mut self, to: ReplicaId, success: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.progress.get_mut(&to)
            && progress.state == ProgressState::Snapshot
        {
            if !success {
                progress.pending_snapshot = LogIndex(0);
            }
            progress.become_probe();
            // Wait for the next heartbeat response before probing again.
            progress.probe_sent = true;
        }
    }

    // ---------------------------------------------------------------- invariants

    /// Checks the node's invariants; panics on a broken one.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, self.id, "a leader knows it leads");
                assert!(self.promotable(), "a leader is a voter");
                for (id, progress) in &self.progress {
                    assert!(progress.matched < progress.next, "progress of {id}: match >= next");
                }
                if let Some(me) = self.progress.get(&self.id) {
                    assert!(
                        me.matched <= self.log.persisted,
                        "the leader counts itself only for durable entries"
                    );
                }
            }
            Role::Candidate => assert_eq!(self.vote, self.id, "a candidate votes for itself"),
            Role::Follower | Role::PreCandidate => {}
        }
    }
}
