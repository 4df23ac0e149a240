//! Raft's messages, entries, hard state, configuration and snapshots.
//!
//! These are plain data, shared by the Raft core (which works on them directly) and by the
//! transport and log engine (which archive them with rkyv). Nothing here knows Raft's rules.
//!
//! Evolution rule: a field is never reinterpreted. New message kinds and new fields arrive
//! with a new frame version (see the frame format); an old reader rejects a version it does
//! not know rather than guessing.

use std::fmt;

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

id_newtype!(
    /// A Raft term. Terms only grow.
    Term
);
id_newtype!(
    /// A position in a Raft log. Index 0 is before the first entry.
    LogIndex
);
id_newtype!(
    /// A replica of one Raft group, unique within the group and never reused. 0 means none.
    ReplicaId
);

impl Term {
    /// The next term.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl LogIndex {
    /// The next index.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The previous index, saturating at 0.
    #[must_use]
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl ReplicaId {
    /// No replica (an unset vote or an unknown leader).
    pub const NONE: Self = Self(0);

    /// Whether this names a replica.
    #[must_use]
    pub const fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// What an entry's payload is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EntryKind {
    /// Application data (empty data: the no-op a new leader appends).
    Normal,
    /// An encoded [`ConfChange`].
    ConfChange,
}

/// One log entry.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What `data` is.
    pub kind: EntryKind,
    /// The payload. Cheap to clone: the same bytes go to every follower.
    pub data: Bytes,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term, self.index)?;
        if self.kind == EntryKind::ConfChange {
            write!(f, " conf")?;
        }
        if !self.data.is_empty() {
            write!(f, " {:?}", String::from_utf8_lossy(&self.data))?;
        }
        Ok(())
    }
}

impl Entry {
    /// The bytes this entry counts for in size limits (payload plus a fixed header).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// What must be on stable storage before a node answers a vote or an append.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate it voted for in `term`, or [`ReplicaId::NONE`].
    pub vote: ReplicaId,
    /// The highest index known committed (may lag: it is written without an fsync of its
    /// own, so after a machine crash it may be older than what was applied).
    pub commit: LogIndex,
}

/// A group's membership. Outside a joint configuration `voters_outgoing` is empty.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfState {
    /// The voters of the incoming (or only) configuration.
    pub voters: Vec<ReplicaId>,
    /// The voters of the outgoing configuration while joint; empty otherwise.
    pub voters_outgoing: Vec<ReplicaId>,
    /// Learners: receive the log, do not vote.
    pub learners: Vec<ReplicaId>,
    /// Voters of the outgoing configuration that become learners when the joint
    /// configuration is left.
    pub learners_next: Vec<ReplicaId>,
    /// Whether the leader leaves the joint configuration on its own once it is committed.
    pub auto_leave: bool,
}

/// One step of a membership change.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ConfChangeStep {
    /// Add a voter, or promote a learner.
    AddVoter(ReplicaId),
    /// Add a learner, or demote a voter.
    AddLearner(ReplicaId),
    /// Remove a replica.
    Remove(ReplicaId),
}

/// A membership change. Any change to the voters goes through a joint configuration
/// (Raft thesis §4.3); `steps` empty means "leave the joint configuration".
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfChange {
    /// The steps, applied together.
    pub steps: Vec<ConfChangeStep>,
    /// Leave the joint configuration only when asked (an empty change), not on its own.
    pub explicit_leave: bool,
    /// Opaque to Raft: what the application needs to apply the change (the store puts the
    /// new replicas' stores and the epoch it checked here).
    pub context: Bytes,
}

impl ConfChange {
    /// Whether this change asks to leave a joint configuration.
    #[must_use]
    pub fn is_leave_joint(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Where a snapshot sits in the log, and the membership at that point.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotMetadata {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership as of `index`.
    pub conf_state: ConfState,
}

/// A snapshot of the state machine up to `metadata.index`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Snapshot {
    /// Position and membership.
    pub metadata: SnapshotMetadata,
    /// The state machine's bytes (the store streams large ones separately).
    pub data: Bytes,
}

/// The kinds of Raft message.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum MessageKind {
    /// Leader → follower: entries after (`log_term`, `index`), and `commit`.
    Append,
    /// Follower → leader: `index` is the follower's match (or, with `reject`, the index
    /// rejected; `reject_hint` and `log_term` point at where to retry).
    AppendResponse,
    /// Candidate → all: vote for me in `term`; my last entry is (`log_term`, `index`).
    RequestVote,
    /// Answer to [`MessageKind::RequestVote`].
    RequestVoteResponse,
    /// Pre-candidate → all: would you vote for me in `term` (not yet taken)?
    RequestPreVote,
    /// Answer to [`MessageKind::RequestPreVote`].
    RequestPreVoteResponse,
    /// Leader → follower: I am alive; `commit`. Content is minimal and independent of the
    /// log so the store can coalesce heartbeats of many groups per node pair.
    Heartbeat,
    /// Answer to [`MessageKind::Heartbeat`]; carries the read-index `context` back.
    HeartbeatResponse,
    /// Leader → follower: install `snapshot`.
    Snapshot,
    /// Leader → transferee: campaign now, ignoring leases and pre-vote.
    TimeoutNow,
    /// Follower → leader: a read-index request (`context`) forwarded for a follower read.
    ReadIndex,
    /// Leader → follower: the read index (`index`) for `context`.
    ReadIndexResponse,
    /// Store → replica: the group removed this replica; `index` is the membership version
    /// (`conf_ver`) that did. With `index` 0, a replica that heard from no leader for long
    /// asks whether it was removed (`commit`: its own membership version). Handled by the
    /// store (replica GC), never by the Raft core.
    Tombstone,
}

impl MessageKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 13] = [
        Self::Append,
        Self::AppendResponse,
        Self::RequestVote,
        Self::RequestVoteResponse,
        Self::RequestPreVote,
        Self::RequestPreVoteResponse,
        Self::Heartbeat,
        Self::HeartbeatResponse,
        Self::Snapshot,
        Self::TimeoutNow,
        Self::ReadIndex,
        Self::ReadIndexResponse,
        Self::Tombstone,
    ];

    /// Whether this message is a response, which never changes who is leader.
    #[must_use]
    pub const fn is_response(self) -> bool {
        matches!(
            self,
            Self::AppendResponse
                | Self::RequestVoteResponse
                | Self::RequestPreVoteResponse
                | Self::HeartbeatResponse
                | Self::ReadIndexResponse
        )
    }
}

/// A Raft message. One flat shape for every kind (fields a kind does not use are zero or
/// empty), which keeps the archived form simple and the batch encoder branch-free.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Message {
    /// What this is.
    pub kind: MessageKind,
    /// Sender.
    pub from: ReplicaId,
    /// Receiver.
    pub to: ReplicaId,
    /// The sender's term.
    pub term: Term,
    /// Append: term of the entry before `entries`. Votes: the candidate's last log term.
    /// Rejected append response: the term of the follower's entry at `reject_hint`.
    pub log_term: Term,
    /// Append: index before `entries`. Votes: the candidate's last index. Responses: see
    /// each kind.
    pub index: LogIndex,
    /// Append: the entries.
    pub entries: Vec<Entry>,
    /// Append and heartbeat: the leader's commit index.
    pub commit: LogIndex,
    /// Responses: the request was refused.
    pub reject: bool,
    /// Rejected append response: the follower's hint of where its log may match.
    pub reject_hint: LogIndex,
    /// Snapshot message: the snapshot.
    pub snapshot: Option<Box<Snapshot>>,
    /// Read-index context (heartbeats, read-index requests and responses), or the campaign
    /// reason for a vote forced by a leader transfer.
    pub context: Bytes,
    /// Heartbeat: the leader is putting the idle group to sleep; a caught-up follower stops
    /// counting towards an election until any other message arrives.
    pub quiesce: bool,
}

impl Message {
    /// A message of `kind` from `from` to `to` at `term`, every other field empty.
    #[must_use]
    pub fn new(kind: MessageKind, from: ReplicaId, to: ReplicaId, term: Term) -> Self {
        Self {
            kind,
            from,
            to,
            term,
            log_term: Term(0),
            index: LogIndex(0),
            entries: Vec::new(),
            commit: LogIndex(0),
            reject: false,
            reject_hint: LogIndex(0),
            snapshot: None,
            context: Bytes::new(),
            quiesce: false,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {:?} Term:{}", self.from, self.to, self.kind, self.term)?;
        match self.kind {
            MessageKind::Append => {
                write!(f, " Log:{}/{} Commit:{}", self.log_term, self.index, self.commit)?;
                if !self.entries.is_empty() {
                    write!(f, " Entries:{:?}", self.entries)?;
                }
            }
            MessageKind::AppendResponse => {
                if self.reject {
                    write!(
                        f,
                        " Rejected:{} Hint:{}/{}",
                        self.index, self.log_term, self.reject_hint
                    )?;
                } else {
                    write!(f, " Match:{}", self.index)?;
                }
            }
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                write!(f, " Last:{}/{}", self.log_term, self.index)?;
            }
            MessageKind::RequestVoteResponse | MessageKind::RequestPreVoteResponse => {
                write!(f, " {}", if self.reject { "Rejected" } else { "Granted" })?;
            }
            MessageKind::Heartbeat => {
                write!(f, " Commit:{}", self.commit)?;
                if self.quiesce {
                    write!(f, " Quiesce")?;
                }
            }
            MessageKind::Snapshot => {
                if let Some(snapshot) = &self.snapshot {
                    let meta = &snapshot.metadata;
                    write!(
                        f,
                        " Snapshot:{}/{} Voters:{:?}",
                        meta.term, meta.index, meta.conf_state.voters
                    )?;
                }
            }
            MessageKind::ReadIndexResponse => write!(f, " Index:{}", self.index)?,
            MessageKind::Tombstone => write!(f, " ConfVer:{}", self.index)?,
            MessageKind::HeartbeatResponse | MessageKind::TimeoutNow | MessageKind::ReadIndex => {}
        }
        if !self.context.is_empty() {
            write!(f, " Context:{:?}", String::from_utf8_lossy(&self.context))?;
        }
        Ok(())
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// Encodes a membership change as an entry payload.
#[must_use]
pub fn encode_conf_change(change: &ConfChange) -> Bytes {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(change)
        .expect("serializing a ConfChange into memory cannot fail");
    Bytes::copy_from_slice(&bytes)
}

/// Decodes a membership change from an entry payload, validating it first.
pub fn decode_conf_change(bytes: &[u8]) -> Result<ConfChange, DecodeError> {
    // rkyv needs aligned input; entry payloads carry no alignment guarantee.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<ConfChange, rkyv::rancor::Error>(&aligned)
        .map_err(|error| DecodeError { what: "conf change", reason: error.to_string() })
}
