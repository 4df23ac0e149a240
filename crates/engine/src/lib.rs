//! # tessera-engine
//!
//! Storage traits with no RocksDB types in them, the on-disk key layout, and an in-memory
//! engine that can inject faults (fail the Nth write or sync; on a simulated crash keep only
//! what was synced) for the simulator.
//!
//! Belongs here: the raft-log engine and KV engine traits ([`RaftLogEngine`],
//! [`KvEngine`]), key and value encodings ([`keys`], [`codec`]), the durable apply index
//! bookkeeping, the Raft core's [`Storage`](tessera_raft::Storage) over any raft-log engine
//! ([`RangeLogStorage`]), the in-memory implementation ([`mem`]), and the conformance suite
//! both engines must pass ([`conformance`]).
//!
//! Does not belong here: RocksDB (that is `tessera-engine-rocks`), tokio, quinn, threads or
//! clocks. Depends only on `tessera-wire` and the pure `tessera-raft`.
//!
//! The byte-level layout is in `docs/storage.md`.

pub mod codec;
pub mod conformance;
mod durable;
mod error;
pub mod keys;
mod kv;
mod log_storage;
pub mod mem;
mod raft_log;
mod snapshot;
mod split;

pub use codec::{ApplyState, RaftLogState, StoreIdent};
pub use durable::DurableApplyTracker;
pub use error::{EngineError, Result};
pub use keys::KeySpan;
pub use kv::{Cf, Direction, KvBatch, KvCursor, KvEngine, KvRead, SpanStats};
pub use log_storage::RangeLogStorage;
pub use raft_log::{RaftLogBatch, RaftLogEngine};
pub use snapshot::{SnapshotFile, SnapshotManifest, file_checksum};
pub use split::split_key_by_scan;
