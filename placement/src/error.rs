//! The placement driver's errors.

use tessera_engine::EngineError;
use tessera_raft::RaftError;

/// What can go wrong in a placement node.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The engines failed; the node must stop and restart from disk.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The Raft core refused its configuration or state.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// Stored state does not decode.
    #[error("corrupt placement state: {0}")]
    Corruption(String),
    /// A configuration mistake.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Results of the placement driver.
pub type Result<T, E = PlacementError> = std::result::Result<T, E>;
