//! The engines' one error type.
//!
//! Operating errors a caller can act on are separate variants; a failed sync is not retried
//! but poisons the engine (STYLE.md 8): after [`EngineError::Poisoned`] the process must
//! restart and recover from what is on disk.

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes are not what was written: a checksum mismatch, a truncated or garbled
    /// record, or a backend that reports corruption. Nothing was changed.
    #[error("corruption in {location}: {detail}")]
    Corruption {
        /// The file, key or record at fault.
        location: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An earlier sync (or a write that had to be synced) failed, so what is durable is
    /// unknown. Every later call answers this; restart and recover from disk.
    #[error("engine poisoned by an earlier failed {cause}; restart to recover from disk")]
    Poisoned {
        /// The failure that poisoned the engine.
        cause: String,
    },
    /// A fault injected by a test (the in-memory engine's fault plan).
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// The caller asked for something the engine cannot do with these arguments (an empty
    /// or inverted key span, a log gap inside a requested range, a missing file).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Any other failure reported by the storage backend, with its message.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl EngineError {
    /// Builds an [`EngineError::Corruption`].
    pub fn corruption(location: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corruption { location: location.into(), detail: detail.into() }
    }

    /// Builds an [`EngineError::Io`] for an operation on a path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// The result of an engine call.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
