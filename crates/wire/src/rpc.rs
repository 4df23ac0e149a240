//! The RPC envelope: a request id, a timeout and a body for a store or the placement driver;
//! the answer echoes the id with a result.
//!
//! rkyv could archive `std::result::Result`, but our own [`RpcResult`] keeps the archived
//! layout under this crate's control (see the version rule in [`crate::frame`]).

use rkyv::{Archive, Deserialize, Serialize};

use crate::errors::RpcError;
use crate::kv::{KvRequest, KvResponse};
use crate::placement::{PlacementRequest, PlacementResponse};

/// What a request asks.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RpcRequestBody {
    /// A request to a store.
    Kv(KvRequest),
    /// A request to the placement driver.
    Placement(PlacementRequest),
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
