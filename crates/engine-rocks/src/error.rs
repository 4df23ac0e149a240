//! Mapping RocksDB errors to [`EngineError`], and the poison flag.

use std::sync::OnceLock;

use rocksdb::ErrorKind;
use tessera_engine::{EngineError, Result};

/// Maps a RocksDB error: corruption to [`EngineError::Corruption`], I/O errors to
/// [`EngineError::Io`], everything else to [`EngineError::Backend`]. `context` says what was
/// being done and where.
pub(crate) fn map_err(context: &str, error: &rocksdb::Error) -> EngineError {
    let message = error.to_string();
    match error.kind() {
        ErrorKind::Corruption => EngineError::corruption(context, message),
        ErrorKind::IOError => {
            let kind = if message.contains("No space left on device") {
                std::io::ErrorKind::StorageFull
            } else {
                std::io::ErrorKind::Other
            };
            EngineError::io(context, std::io::Error::new(kind, message))
        }
        _ => EngineError::Backend(format!("{context}: {message}")),
    }
}

/// Set once by the first failed sync; from then on every call of the engine answers
/// [`EngineError::Poisoned`]. A failed fsync is never retried: the kernel may have dropped
/// the dirty pages and cleared the error, so a retry could "succeed" with the data lost.
#[derive(Debug)]
pub(crate) struct Poison {
    cause: OnceLock<String>,
    engine: &'static str,
}

impl Poison {
    pub(crate) fn new(engine: &'static str) -> Self {
        metrics::gauge!(crate::metrics::POISONED, "engine" => engine).set(0.0);
        Self { cause: OnceLock::new(), engine }
    }

    /// `Ok` unless poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        match self.cause.get() {
            None => Ok(()),
            Some(cause) => Err(EngineError::Poisoned { cause: cause.clone() }),
        }
    }

    /// Whether a sync has failed.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.cause.get().is_some()
    }

    /// Records a failed sync (the first cause wins) and returns the error to answer.
    pub(crate) fn poison(&self, what: &str, error: &rocksdb::Error) -> EngineError {
        let cause = format!("{what} on the {} engine ({error})", self.engine);
        if self.cause.set(cause.clone()).is_ok() {
            tracing::error!(engine = self.engine, %cause, "sync failed; engine poisoned");
            metrics::gauge!(crate::metrics::POISONED, "engine" => self.engine).set(1.0);
        }
        EngineError::Poisoned { cause: self.cause.get().cloned().unwrap_or(cause) }
    }
}
