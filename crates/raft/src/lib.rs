//! # tessera-raft
//!
//! Raft consensus as a pure, deterministic state machine, for thousands of groups per
//! process. No I/O, threads, clocks, async or global randomness: time enters as
//! [`RawNode::tick`], input as [`RawNode::step`] and the proposal methods, and every effect
//! leaves as a numbered [`Ready`] that the caller persists, sends and applies. Election
//! jitter comes from a generator seeded in the [`Config`].
//!
//! Belongs here: the protocol (elections with pre-vote and check-quorum, replication with
//! probe/replicate/snapshot progress and a bounded in-flight window, commitment, log
//! compaction and snapshots, leader transfer, joint consensus with learners, read index and
//! leases, quiescence), the log-storage trait and an in-memory log. Does not belong here:
//! storage engines, sockets, timers, or what entries mean. Depends only on `tessera-wire`,
//! whose message types it works on directly.
//!
//! ## The Ready contract
//!
//! For each [`Ready`], in this order:
//!
//! 1. If `snapshot` is set, persist it and apply it to the state machine.
//! 2. Append `entries` to the log (replacing stored entries from the first one's index on)
//!    and persist `hard_state` if set. `Ready::must_sync` says whether an fsync is needed
//!    (not for a new commit index alone: it may be lost in a crash and learnt again).
//! 3. Send `messages` — at once, even before step 2 is durable: a leader may replicate
//!    while its own write is in flight (thesis §10.2.1).
//! 4. Once step 2 is durable, send `persisted_messages`: votes, vote responses and append
//!    responses, which vouch for state that must survive a crash.
//! 5. Apply `committed_entries` (a membership change through
//!    [`RawNode::apply_conf_change`]); serve `read_states` once applied up to their index.
//! 6. Acknowledge: [`RawNode::advance`] (all of the above done), or, when persistence is
//!    batched across groups, [`RawNode::on_persist_ready`] with the Ready's number after
//!    the shared fsync and [`RawNode::advance_apply_to`] after applying.
//!
//! Readys are persisted in number order. The leader counts itself toward a commit only for
//! entries acknowledged through `on_persist_ready`, and committed entries are handed out for
//! apply only once durable on this node. These rules are asserted in code
//! (`check_invariants` runs after every step, tick and advance in debug builds) and checked
//! by the simulator in `tessera-sim`.
//!
//! ## Performance
//!
//! Measured by `cargo run --release -p tessera-bench --bin raft-throughput` (3 in-memory
//! replicas on one thread, 16-byte entries; method and full tables in `bench/README.md`),
//! side by side with raft-rs 0.7 driven the same way, on the 2-core CI machine
//! (2026-11-23, medians of 3 alternating pairs):
//!
//! | proposals in flight | entries/s (raft-rs) | CPU ns per entry (raft-rs) |
//! |---|---|---|
//! | 1 | 446 k (270 k) | 1,795 (3,441) |
//! | 64 | 2.10 M (429 k) | 475 (2,332) |
//! | 1024 | 2.51 M (669 k) | 396 (1,492) |
//!
//! The main lever: a leader's appends go out once per Ready (one append per follower for
//! every proposal made since), not once per proposal.
//! 10,000 idle three-replica groups cost about 126 ms of CPU per second awake and 1 ms
//! quiesced (`--bin raft-idle-groups`).

mod config;
mod log;
mod raft;
mod raw_node;
mod storage;
mod ticker;
mod tracker;

pub use config::{Config, SplitMix64};
pub use raft::{CAMPAIGN_TRANSFER, Role};
pub use raw_node::{RawNode, Ready, SoftState};
pub use storage::{MemStorage, Storage, StorageError};
pub use tessera_wire::raft::{
    ConfChange, ConfChangeStep, ConfState, Entry, EntryKind, HardState, LogIndex, Message,
    MessageKind, ReplicaId, Snapshot, SnapshotMetadata, Term, decode_conf_change,
    encode_conf_change,
};
pub use ticker::Ticker;
pub use tracker::{ConfChangeError, Membership, ProgressState};

/// A read-index request answered: reads are linearizable once the state machine has applied
/// up to `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// Apply at least this far before reading.
    pub index: LogIndex,
    /// The request's context, as given to [`RawNode::read_index`].
    pub context: bytes::Bytes,
}

/// Why the Raft core refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Only the leader takes proposals; `leader` is the known leader or
    /// [`ReplicaId::NONE`].
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader.
        leader: ReplicaId,
    },
    /// Leadership is being handed to `to`; proposals are refused until that ends.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The transferee.
        to: ReplicaId,
    },
    /// Another membership change (at `index`) is not yet applied.
    #[error("membership change at {index} still pending")]
    ConfChangePending {
        /// Its index.
        index: LogIndex,
    },
    /// The membership change cannot apply to the current configuration.
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
    /// Only voters can lead.
    #[error("replica {replica} is not a voter")]
    NotAVoter {
        /// The replica.
        replica: ReplicaId,
    },
    /// Too many uncommitted bytes: retry later (backpressure).
    #[error("uncommitted log is full")]
    UncommittedLogFull,
    /// A message was delivered to the wrong node.
    #[error("message for {to} delivered to {me}")]
    WrongRecipient {
        /// Its recipient.
        to: ReplicaId,
        /// This node.
        me: ReplicaId,
    },
    /// The configuration is invalid.
    #[error("invalid raft config: {0}")]
    InvalidConfig(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
