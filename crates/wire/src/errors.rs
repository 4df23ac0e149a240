//! Typed errors answered over RPC (STYLE.md item 8): each carries what the caller needs to
//! retry or re-route. Broken invariants are not errors; they crash the process that found them.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{NodeId, RangeId, StoreId};
use crate::kv::LockInfo;
use crate::range::{RangeDescriptor, Replica};
use crate::timestamp::Timestamp;

/// Why a request failed. The archived form travels in [`RpcResult::Err`](crate::rpc::RpcResult);
/// the owned form is a `std::error::Error`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[rkyv(derive(Debug))]
pub enum RpcError {
    /// The replica is not the leader: retry at `leader` if known, else elsewhere.
    #[error("range {range}: not leader (leader: {leader:?})")]
    NotLeader {
        /// The range.
        range: RangeId,
        /// The leader, if this replica knows it.
        leader: Option<Replica>,
    },
    /// The request's epoch is stale: refresh the route cache with these descriptors (the
    /// range and, after a split or merge, its neighbours covering the old span).
    #[error("epoch not match ({} current ranges)", ranges.len())]
    EpochNotMatch {
        /// The current descriptors.
        ranges: Vec<RangeDescriptor>,
    },
    /// This store has no replica of the range (removed, or not yet created): refresh the route.
    #[error("range {range} not found")]
    RangeNotFound {
        /// The range.
        range: RangeId,
    },
    /// A key of the request lies outside the range: refresh the route.
    #[error("key {key:?} not in range {range} [{start_key:?}, {end_key:?})")]
    KeyNotInRange {
        /// The key.
        key: Bytes,
        /// The range.
        range: RangeId,
        /// The range's start key.
        start_key: Bytes,
        /// The range's end key (empty: +∞).
        end_key: Bytes,
    },
    /// The server sheds load: retry after the pause, perhaps elsewhere.
    #[error("server busy ({reason}), retry after {retry_after_ms} ms")]
    ServerBusy {
        /// Why, for logs (which bound was hit).
        reason: String,
        /// How long to wait before retrying.
        retry_after_ms: u32,
    },
    /// The proposal was superseded (term change, or its entry was overwritten): retry.
    #[error("stale command")]
    StaleCommand,
    /// The request did not finish within its timeout; its effect is unknown.
    #[error("timeout")]
    Timeout,
    /// The request reached a store other than the one it was routed to: refresh the route.
    #[error("store not match: request for store {requested}, this is store {actual}")]
    StoreNotMatch {
        /// The store the request named.
        requested: StoreId,
        /// The store that received it.
        actual: StoreId,
    },
    /// A proposal exceeds the Raft entry size bound: split the request.
    #[error("range {range}: entry of {entry_bytes} bytes exceeds {entry_bytes_max}")]
    RaftEntryTooLarge {
        /// The range.
        range: RangeId,
        /// The entry's size.
        entry_bytes: u64,
        /// The bound.
        entry_bytes_max: u64,
    },
    /// A stale read cannot be served yet: the replica's safe timestamp is below the read's.
    #[error("range {range}: data not ready (safe ts {safe_ts})")]
    DataNotReady {
        /// The range.
        range: RangeId,
        /// The replica's safe timestamp.
        safe_ts: Timestamp,
    },
    /// A read or write met another transaction's lock: resolve it (check the primary's
    /// status), then retry.
    #[error("key {:?} locked by txn {} (primary {:?}, ttl {} ms)", lock.key, lock.start_ts, lock.primary, lock.lock_ttl_ms)]
    KeyLocked {
        /// The lock.
        lock: LockInfo,
    },
    /// Prewrite found a write committed after the transaction started: restart it.
    #[error(
        "write conflict on {key:?}: txn {start_ts} vs commit {conflict_commit_ts} of txn {conflict_start_ts}"
    )]
    WriteConflict {
        /// The key.
        key: Bytes,
        /// The transaction's primary key.
        primary: Bytes,
        /// The failing transaction's start timestamp.
        start_ts: Timestamp,
        /// The conflicting transaction's start timestamp.
        conflict_start_ts: Timestamp,
        /// The conflicting transaction's commit timestamp.
        conflict_commit_ts: Timestamp,
    },
    /// A `CheckNotExists` mutation found a visible value.
    #[error("key {key:?} exists")]
    KeyExists {
        /// The key.
        key: Bytes,
    },
    /// Commit or status check found neither the transaction's lock nor its commit record
    /// (it was rolled back, or never prewritten here).
    #[error("txn {start_ts} not found at {key:?}")]
    TxnNotFound {
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// The key looked at (usually the primary).
        key: Bytes,
    },
    /// A rollback or cleanup found the transaction committed.
    #[error("txn {start_ts} already committed at {commit_ts} ({key:?})")]
    AlreadyCommitted {
        /// The key.
        key: Bytes,
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// Its commit timestamp.
        commit_ts: Timestamp,
    },
    /// Async commit: the commit timestamp is below the lock's `min_commit_ts`: commit with a
    /// newer timestamp.
    #[error("txn {start_ts}: commit ts {commit_ts} below min commit ts {min_commit_ts} ({key:?})")]
    CommitTsExpired {
        /// The key.
        key: Bytes,
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// The commit timestamp asked for.
        commit_ts: Timestamp,
        /// The lock's lower bound.
        min_commit_ts: Timestamp,
    },
    /// This placement node is not the placement leader: retry at `leader` if known.
    #[error("not the placement leader (leader: {leader:?})")]
    NotPlacementLeader {
        /// The leader's node, if known.
        leader: Option<NodeId>,
        /// The leader's peer address (`host:port`), when this node knows it: a caller whose
        /// list of members predates the leader (a member added since) reaches it there.
        address: Option<String>,
    },
    /// The cluster has not been bootstrapped.
    #[error("cluster not bootstrapped")]
    ClusterNotBootstrapped,
    /// Bootstrap was asked of a cluster that exists.
    #[error("cluster already bootstrapped")]
    AlreadyBootstrapped,
    /// The placement driver knows no such store (or it is a tombstone).
    #[error("store {store} not found")]
    StoreNotFound {
        /// The store.
        store: StoreId,
    },
    /// The request is malformed (a key outside the span it names, a zero count, …); do not
    /// retry it.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// An error the server cannot classify (an I/O error, say); the effect is unknown.
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
    },
}

impl RpcError {
    /// Whether the client should refresh its route for the range before retrying.
    #[must_use]
    pub const fn invalidates_route(&self) -> bool {
        matches!(
            self,
            Self::NotLeader { .. }
                | Self::EpochNotMatch { .. }
                | Self::RangeNotFound { .. }
                | Self::KeyNotInRange { .. }
                | Self::StoreNotMatch { .. }
        )
    }
}
