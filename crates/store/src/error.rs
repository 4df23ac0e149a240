//! Why the store itself failed (as opposed to a request it refused, which is an
//! [`RpcError`](tessera_wire::errors::RpcError) answered to the caller).

use tessera_wire::ids::RangeId;

/// A store-level failure: the store cannot go on serving the ranges concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An engine failed (I/O, corruption, poisoned after a failed sync).
    #[error(transparent)]
    Engine(#[from] tessera_engine::EngineError),
    /// The Raft core refused to start a replica (invalid configuration, storage failure).
    #[error("range {range}: raft: {source}")]
    Raft {
        /// The range.
        range: RangeId,
        /// What the core said.
        source: tessera_raft::RaftError,
    },
    /// Persisted store metadata contradicts itself.
    #[error("corrupt store metadata ({location}): {reason}")]
    Corruption {
        /// What was being read.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid store config: {0}")]
    InvalidConfig(String),
    /// The data directory belongs to another cluster or store.
    #[error(
        "data directory belongs to cluster {found_cluster} store {found_store}, not cluster {cluster} store {store}"
    )]
    IdentityMismatch {
        /// The cluster asked for.
        cluster: u64,
        /// The store asked for.
        store: u64,
        /// The cluster found on disk.
        found_cluster: u64,
        /// The store found on disk.
        found_store: u64,
    },
    /// The apply worker failed to write a round (its engine error), or stopped.
    #[error("apply worker: {0}")]
    ApplyWorker(String),
    /// A helper of the raft worker failed while stepping ranges; the replicas it held are
    /// gone from memory (not from the engines): the store must stop and restart.
    #[error(transparent)]
    RaftPool(#[from] crate::fsm::pool::HelperFailed),
    /// Something this version of the store cannot do yet reached it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The store was bootstrapped twice, or asked to serve a range it was never given.
    #[error("{0}")]
    Bootstrap(String),
}

impl StoreError {
    pub(crate) fn corruption(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corruption { location: location.into(), reason: reason.into() }
    }
}

/// Result of a store-level operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
