//! Client requests to stores: raw key-value operations and Percolator transactions
//! (ARCHITECTURE.md §9–10).
//!
//! Every request is a [`KvRequest`]: a [`RequestContext`] naming the range, epoch and replica
//! it was routed with, and one [`KvCommand`]. The store refuses a request whose routing is out
//! of date with a typed [`RpcError`](crate::errors::RpcError) that tells the client how to
//! re-route. Keys are user keys (the store adds its own prefixes); every key of a request must
//! fall in the named range.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{RangeId, StoreId};
use crate::raft::ReplicaId;
use crate::range::RangeEpoch;
use crate::timestamp::Timestamp;

/// How a read may be served.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReadMode {
    /// By the leader, under its lease or after a read-index round.
    #[default]
    Leader,
    /// By any replica, after a read index from the leader (linearizable).
    ReplicaRead,
    /// By any replica at its applied state, if that is known to cover the read timestamp
    /// (transactional reads only; may wait or fail with `DataNotReady`).
    StaleRead,
}

/// Where a request was routed: the store checks all of it before serving.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestContext {
    /// The range the client believes holds the keys.
    pub range: RangeId,
    /// The epoch of the client's cached descriptor.
    pub epoch: RangeEpoch,
    /// The store the client meant to reach (checked against the store that answers).
    pub store_id: StoreId,
    /// The replica the client meant to reach, if it knows it.
    pub replica: Option<ReplicaId>,
    /// How reads may be served; ignored by writes.
    pub read_mode: ReadMode,
}

/// A key and its value.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvPair {
    /// The key.
    pub key: Bytes,
    /// The value (empty for key-only scans).
    pub value: Bytes,
}

/// Raw get: the latest value of `key`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawGetRequest {
    /// The key.
    pub key: Bytes,
}

/// Raw batch get: the values of `keys` (missing keys are left out of the answer).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawBatchGetRequest {
    /// The keys.
    pub keys: Vec<Bytes>,
}

/// Raw put: set `key` to `value`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawPutRequest {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
}

/// Raw batch put: set every pair, atomically (all keys are in one range).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawBatchPutRequest {
    /// The pairs.
    pub pairs: Vec<KvPair>,
}

/// Raw delete of one key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawDeleteRequest {
    /// The key.
    pub key: Bytes,
}

/// Raw delete of every key in `[start_key, end_key)`, clipped to the range.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawDeleteRangeRequest {
    /// The first key (inclusive).
    pub start_key: Bytes,
    /// The end (exclusive); empty: the end of the range.
    pub end_key: Bytes,
}

/// Raw scan of `[start_key, end_key)`, clipped to the range.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawScanRequest {
    /// The first key (inclusive).
    pub start_key: Bytes,
    /// The end (exclusive); empty: the end of the range.
    pub end_key: Bytes,
    /// At most this many pairs; the store also applies its own bound.
    pub limit: u32,
    /// Return pairs from the end of the span backwards.
    pub reverse: bool,
    /// Return keys only (empty values).
    pub key_only: bool,
}

/// Raw compare-and-swap: set `key` to `value` if its current value is `expected`
/// (`None`: the key is absent).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RawCompareAndSwapRequest {
    /// The key.
    pub key: Bytes,
    /// The value the key must have, or `None` for "absent".
    pub expected: Option<Bytes>,
    /// The new value, or `None` to delete the key.
    pub value: Option<Bytes>,
}

/// Transactional get of `key` as of `start_ts`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxnGetRequest {
    /// The key.
    pub key: Bytes,
    /// The reading transaction's start timestamp.
    pub start_ts: Timestamp,
}

/// Transactional get of several keys as of `start_ts`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxnBatchGetRequest {
    /// The keys.
    pub keys: Vec<Bytes>,
    /// The reading transaction's start timestamp.
    pub start_ts: Timestamp,
}

/// Transactional scan of `[start_key, end_key)` as of `start_ts`, clipped to the range.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxnScanRequest {
    /// The first key (inclusive).
    pub start_key: Bytes,
    /// The end (exclusive); empty: the end of the range.
    pub end_key: Bytes,
    /// At most this many pairs; the store also applies its own bound.
    pub limit: u32,
    /// Return pairs from the end of the span backwards.
    pub reverse: bool,
    /// Return keys only (empty values).
    pub key_only: bool,
    /// The reading transaction's start timestamp.
    pub start_ts: Timestamp,
}

/// What a mutation does to its key.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum MutationOp {
    /// Write `value`.
    #[default]
    Put,
    /// Delete the key.
    Delete,
    /// Lock the key without changing it (read-write conflict detection).
    Lock,
    /// Fail with `KeyExists` if the key has a visible value; writes nothing.
    CheckNotExists,
}

/// One key's change in a prewrite.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Mutation {
    /// What to do.
    pub op: MutationOp,
    /// The key.
    pub key: Bytes,
    /// The value for `Put`; empty otherwise.
    pub value: Bytes,
}

/// Percolator prewrite: lock every mutated key of this range for the transaction.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PrewriteRequest {
    /// The mutations in this range.
    pub mutations: Vec<Mutation>,
    /// The transaction's primary key (possibly in another range).
    pub primary: Bytes,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// How long the locks live before others may resolve them.
    pub lock_ttl_ms: u64,
    /// The transaction's lower bound for its commit timestamp (async commit; zero if unused).
    pub min_commit_ts: Timestamp,
    /// Async commit: every secondary key, stored in the primary's lock (empty: not async).
    pub secondaries: Vec<Bytes>,
    /// Commit in this single round if every key of the transaction is in this request.
    pub try_one_phase: bool,
}

/// Percolator commit of the transaction's locks on `keys` at `commit_ts`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommitRequest {
    /// The keys.
    pub keys: Vec<Bytes>,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// The transaction's commit timestamp.
    pub commit_ts: Timestamp,
}

/// Roll the transaction back on `keys` (removing its locks and leaving rollback records).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BatchRollbackRequest {
    /// The keys.
    pub keys: Vec<Bytes>,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
}

/// Find out whether a transaction is alive, committed or rolled back, from its primary
/// lock, rolling it back if its TTL has expired.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CheckTxnStatusRequest {
    /// The transaction's primary key.
    pub primary_key: Bytes,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// The start timestamp of the transaction asking (pushes the lock's `min_commit_ts`
    /// above it so the asker's read need not wait).
    pub caller_start_ts: Timestamp,
    /// The current timestamp, against which the lock's TTL is judged.
    pub current_ts: Timestamp,
    /// If no lock and no commit record exist, write a rollback record (so a late prewrite
    /// fails) rather than answering `TxnNotFound`.
    pub rollback_if_not_exist: bool,
}

/// Commit (or roll back, when `commit_ts` is `None`) the transaction's locks in this range.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResolveLockRequest {
    /// The transaction whose locks are resolved.
    pub start_ts: Timestamp,
    /// Its commit timestamp, or `None` to roll it back.
    pub commit_ts: Option<Timestamp>,
    /// The locked keys; empty: every lock of the transaction in the range.
    pub keys: Vec<Bytes>,
}

/// Roll back the transaction's lock on `key` if it has expired (as of `current_ts`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CleanupRequest {
    /// The key (usually the primary).
    pub key: Bytes,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// The current timestamp; zero: roll back regardless of TTL.
    pub current_ts: Timestamp,
}

/// One store operation.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum KvCommand {
    /// See [`RawGetRequest`].
    RawGet(RawGetRequest),
    /// See [`RawBatchGetRequest`].
    RawBatchGet(RawBatchGetRequest),
    /// See [`RawPutRequest`].
    RawPut(RawPutRequest),
    /// See [`RawBatchPutRequest`].
    RawBatchPut(RawBatchPutRequest),
    /// See [`RawDeleteRequest`].
    RawDelete(RawDeleteRequest),
    /// See [`RawDeleteRangeRequest`].
    RawDeleteRange(RawDeleteRangeRequest),
    /// See [`RawScanRequest`].
    RawScan(RawScanRequest),
    /// See [`RawCompareAndSwapRequest`].
    RawCompareAndSwap(RawCompareAndSwapRequest),
    /// See [`TxnGetRequest`].
    TxnGet(TxnGetRequest),
    /// See [`TxnBatchGetRequest`].
    TxnBatchGet(TxnBatchGetRequest),
    /// See [`TxnScanRequest`].
    TxnScan(TxnScanRequest),
    /// See [`PrewriteRequest`].
    Prewrite(PrewriteRequest),
    /// See [`CommitRequest`].
    Commit(CommitRequest),
    /// See [`BatchRollbackRequest`].
    BatchRollback(BatchRollbackRequest),
    /// See [`CheckTxnStatusRequest`].
    CheckTxnStatus(CheckTxnStatusRequest),
    /// See [`ResolveLockRequest`].
    ResolveLock(ResolveLockRequest),
    /// See [`CleanupRequest`].
    Cleanup(CleanupRequest),
}

/// A request to a store: where it was routed, and what to do.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KvRequest {
    /// The routing the store checks.
    pub context: RequestContext,
    /// The operation.
    pub command: KvCommand,
}

/// The kind of a Percolator lock.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum LockKind {
    /// The transaction writes the key.
    #[default]
    Put,
    /// The transaction deletes the key.
    Delete,
    /// The transaction only locks the key.
    Lock,
}

/// A Percolator lock, as reported to a client that ran into it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LockInfo {
    /// The locked key.
    pub key: Bytes,
    /// The owning transaction's primary key.
    pub primary: Bytes,
    /// The owning transaction's start timestamp.
    pub start_ts: Timestamp,
    /// The lock's time to live, from its transaction's `start_ts`.
    pub lock_ttl_ms: u64,
    /// What the lock is for.
    pub kind: LockKind,
    /// The owner's lower bound for its commit timestamp (zero if unused).
    pub min_commit_ts: Timestamp,
    /// The owner uses async commit (its status is decided by all its locks).
    pub use_async_commit: bool,
    /// Async commit, primary lock only: the secondary keys.
    pub secondaries: Vec<Bytes>,
}

/// A transaction's state, as found by [`CheckTxnStatusRequest`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TxnStatus {
    /// The primary lock is alive (TTL not expired): wait, or push its `min_commit_ts`.
    Locked {
        /// The primary lock, with its TTL and `min_commit_ts` after this check.
        lock: LockInfo,
    },
    /// The transaction committed.
    Committed {
        /// Its commit timestamp.
        commit_ts: Timestamp,
    },
    /// The transaction was already rolled back.
    RolledBack,
    /// The primary lock had expired and was rolled back by this check.
    TtlExpired,
    /// No lock and no record existed; a rollback record was written by this check.
    LockNotExist,
}

/// A store's answer to a successful [`KvCommand`], one variant per command.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum KvResponse {
    /// The value, or `None` if the key is absent.
    RawGet {
        /// The value.
        value: Option<Bytes>,
    },
    /// The keys found, in request order.
    RawBatchGet {
        /// The pairs.
        pairs: Vec<KvPair>,
    },
    /// Written.
    RawPut,
    /// Written.
    RawBatchPut,
    /// Deleted.
    RawDelete,
    /// Deleted.
    RawDeleteRange,
    /// The pairs in scan order; fewer than `limit` means the range's part is exhausted.
    RawScan {
        /// The pairs.
        pairs: Vec<KvPair>,
    },
    /// The outcome of a compare-and-swap.
    RawCompareAndSwap {
        /// Whether the value was swapped.
        succeeded: bool,
        /// The value before the operation (`None`: absent).
        previous: Option<Bytes>,
    },
    /// The value visible at `start_ts`, or `None`.
    TxnGet {
        /// The value.
        value: Option<Bytes>,
    },
    /// The keys with a value visible at `start_ts`, in request order.
    TxnBatchGet {
        /// The pairs.
        pairs: Vec<KvPair>,
    },
    /// The pairs visible at `start_ts`, in scan order.
    TxnScan {
        /// The pairs.
        pairs: Vec<KvPair>,
    },
    /// Every key of the request is locked.
    Prewrite {
        /// Async commit: the `min_commit_ts` the locks were written with (zero otherwise).
        min_commit_ts: Timestamp,
        /// One-phase commit: the transaction is committed at this timestamp.
        one_phase_commit_ts: Option<Timestamp>,
    },
    /// Committed.
    Commit,
    /// Rolled back.
    BatchRollback,
    /// The transaction's state.
    CheckTxnStatus {
        /// The state.
        status: TxnStatus,
    },
    /// Resolved.
    ResolveLock,
    /// Rolled back (or already rolled back).
    Cleanup,
}
