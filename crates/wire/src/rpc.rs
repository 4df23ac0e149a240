//! The RPC envelope: a request id, a timeout and a body for a store or the placement driver;
//! the answer echoes the id with a result.
//!
//! rkyv could archive `std::result::Result`, but our own [`RpcResult`] keeps the archived
//! layout under this crate's control (see the version rule in [`crate::frame`]).

use rkyv::{Archive, Deserialize, Serialize};

use bytes::Bytes;

use crate::errors::RpcError;
use crate::ids::{RangeId, StoreId};
use crate::kv::{KvRequest, KvResponse};
use crate::placement::{PlacementRequest, PlacementResponse};
use crate::raft::ReplicaId;
use crate::range::{RangeDescriptor, RangeEpoch};

/// What a request asks.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RpcRequestBody {
    /// A request to a store.
    Kv(KvRequest),
    /// A request to the placement driver.
    Placement(PlacementRequest),
    /// An administrative request to a store (from the placement driver or an operator).
    StoreAdmin(StoreAdminRequest),
}

/// What the placement driver (or an operator) asks a store to do with its ranges.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum StoreAdminRequest {
    /// Split `range` at `split_key`, with ids the placement driver allocated.
    Split {
        /// The range.
        range: RangeId,
        /// Its epoch as the caller knows it.
        epoch: RangeEpoch,
        /// The first key of the right-hand range.
        split_key: Bytes,
        /// The right-hand range's id.
        new_range: RangeId,
        /// Its replica ids, one per current replica in descriptor order.
        new_replicas: Vec<ReplicaId>,
    },
    /// Hand leadership of `range` to its replica `to`.
    TransferLeader {
        /// The range.
        range: RangeId,
        /// The replica to lead.
        to: ReplicaId,
    },
    /// Change `range`'s membership: the changes are applied together, through a joint
    /// configuration when voters change (left on its own once committed).
    ChangeReplicas {
        /// The range.
        range: RangeId,
        /// Its epoch as the caller knows it.
        epoch: RangeEpoch,
        /// What to change.
        changes: Vec<ReplicaChange>,
    },
}

/// One membership change of a range. A voter leaves in two steps: demoted to a learner
/// (through a joint configuration), then removed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReplicaChange {
    /// Add a new learner `id` on `store_id` (a store holding no replica of the range); it
    /// catches up by snapshot.
    AddLearner {
        /// The new replica's id (allocated by the placement driver, never reused).
        id: ReplicaId,
        /// Where it lives.
        store_id: StoreId,
    },
    /// Promote learner `id` to a voter.
    Promote {
        /// The learner.
        id: ReplicaId,
    },
    /// Demote voter `id` to a learner.
    Demote {
        /// The voter.
        id: ReplicaId,
    },
    /// Remove learner `id`; its store deletes the replica and keeps a tombstone.
    Remove {
        /// The learner.
        id: ReplicaId,
    },
}

/// A store's answer to a [`StoreAdminRequest`].
// One answer per admin request, moved once and never stored in bulk: boxing the split's
// descriptors would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum StoreAdminResponse {
    /// The split is applied: both halves.
    Split {
        /// The left half (the old id, a new version).
        left: RangeDescriptor,
        /// The right half.
        right: RangeDescriptor,
    },
    /// The transfer has started.
    TransferLeader,
    /// The membership change is applied (entering the joint configuration, when there is
    /// one): the range as it now is.
    ChangeReplicas {
        /// The range after the change.
        descriptor: RangeDescriptor,
    },
}

/// A request on an RPC stream.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RpcRequest {
    /// Chosen by the caller, unique among its requests in flight on the connection; the
    /// response echoes it.
    pub id: u64,
    /// How long the caller waits, from when the server receives the request (relative, so
    /// clock skew between nodes does not matter). The server gives up with `Timeout` after
    /// it. Zero: the server's default.
    pub timeout_ms: u32,
    /// What to do.
    pub body: RpcRequestBody,
}

/// What a successful request returns.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RpcResponseBody {
    /// A store's answer.
    Kv(KvResponse),
    /// The placement driver's answer.
    Placement(PlacementResponse),
    /// A store's answer to an administrative request.
    StoreAdmin(StoreAdminResponse),
}

/// The outcome of a request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RpcResult {
    /// It succeeded.
    Ok(RpcResponseBody),
    /// It failed.
    Err(RpcError),
}

impl RpcResult {
    /// As a standard `Result`.
    pub fn into_result(self) -> Result<RpcResponseBody, RpcError> {
        match self {
            Self::Ok(body) => Ok(body),
            Self::Err(error) => Err(error),
        }
    }
}

impl From<Result<RpcResponseBody, RpcError>> for RpcResult {
    fn from(result: Result<RpcResponseBody, RpcError>) -> Self {
        match result {
            Ok(body) => Self::Ok(body),
            Err(error) => Self::Err(error),
        }
    }
}

/// The answer on an RPC stream.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RpcResponse {
    /// The request's id.
    pub id: u64,
    /// The outcome.
    pub result: RpcResult,
}
