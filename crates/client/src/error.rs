//! [`ClientError`]: why a client call failed, typed so callers can match on it.
//!
//! What a failure says about a write:
//!
//! - [`ClientError::Timeout`] and [`ClientError::OutcomeUnknown`]: the write may or may not
//!   have been applied, and may even be applied later (its attempt may still be on its way).
//!   Read the key to learn what happened; repeating the write makes it happen at least once,
//!   but not at one point in time (see [`ClientConfig::retry_ambiguous_writes`]).
//! - Every other variant: the write was not applied by the failing attempt. (For a batch
//!   spanning several ranges, other ranges' parts may have been applied: batches are atomic
//!   per range only.)
//!
//! [`ClientConfig::retry_ambiguous_writes`]: crate::ClientConfig::retry_ambiguous_writes

use std::time::Duration;

use tessera_wire::errors::RpcError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The call did not finish within [`ClientConfig::request_timeout`], or a write's
    /// attempt timed out (writes are not resent after that). A write's outcome is unknown.
    ///
    /// [`ClientConfig::request_timeout`]: crate::ClientConfig::request_timeout
    #[error("{operation}: timed out after {elapsed:?} ({attempts} attempts; last: {last})")]
    Timeout {
        /// The operation (`get`, `put`, …).
        operation: &'static str,
        /// How long the call ran.
        elapsed: Duration,
        /// Attempts made (requests sent or tried).
        attempts: u32,
        /// The last failure seen, for logs.
        last: String,
    },
    /// A write's attempt failed in a way that leaves its outcome unknown (the connection
    /// broke after sending, or the server could not say). It is not resent: read the key to
    /// learn what happened.
    #[error("{operation}: outcome unknown: {reason}")]
    OutcomeUnknown {
        /// The operation.
        operation: &'static str,
        /// What happened.
        reason: String,
    },
    /// Every attempt allowed by [`ClientConfig::max_retries`] failed with a retryable error
    /// (no leader, stores unreachable, busy servers, stale routes).
    ///
    /// [`ClientConfig::max_retries`]: crate::ClientConfig::max_retries
    #[error("{operation}: unavailable after {attempts} attempts (last: {last})")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last failure seen, for logs.
        last: String,
    },
    /// A store refused the request with an error retrying cannot fix (`InvalidRequest`,
    /// `RaftEntryTooLarge`, …).
    #[error("store refused the request: {0}")]
    Server(RpcError),
    /// The placement driver refused a request with an error retrying cannot fix
    /// (`ClusterNotBootstrapped`, …).
    #[error("placement driver refused the request: {0}")]
    Placement(RpcError),
    /// The arguments are unusable (nothing was sent).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client's own transport failed (TLS material, bind, shut down).
    #[error("transport: {0}")]
    Transport(String),
    /// A server answered with a body that does not fit the request.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
}

impl ClientError {
    /// Whether a write that failed with this error may nevertheless have been applied.
    #[must_use]
    pub const fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::OutcomeUnknown { .. })
    }

    /// Whether trying the same call again later may succeed (the cluster was unavailable,
    /// slow, or the outcome is unknown), as opposed to a refusal of the request itself.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::OutcomeUnknown { .. } | Self::Unavailable { .. }
        )
    }
}
