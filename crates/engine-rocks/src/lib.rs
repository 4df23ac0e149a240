//! # tessera-engine-rocks
//!
//! The RocksDB implementation of `tessera-engine`'s traits: a raft-log engine (`raft/`, WAL
//! synced once per group commit) and a KV engine (`kv/`, column families `default`, `lock`,
//! `write`, `meta`), SST snapshots, recovery and the durable apply index.
//!
//! Belongs here: everything that names a RocksDB type. Does not belong here: key layout or
//! storage semantics (those are defined in `tessera-engine` and only implemented here),
//! networking, Raft logic.
//!
//! [`open`] opens both instances of a store's data directory and returns
//! [`RocksRaftLogEngine`] and [`RocksKvEngine`].
//!
//! ## Tuning ([`EngineOptions`])
//!
//! - **Shared:** one LRU block cache for both instances (index and filter blocks live in it
//!   too, L0's pinned); 2 background jobs per instance (2-core machines); `paranoid_checks`
//!   on, so damaged files are refused at open; dynamic level sizes.
//! - **`raft/`:** one column family. Every `write(sync = true)` is one RocksDB write with
//!   `WriteOptions::sync`, i.e. one WAL fsync for the whole batch, however many ranges' Readys
//!   it carries (group commit). WAL recovery tolerates only a torn last record (every
//!   record before it was acknowledged as synced; damage elsewhere refuses to open). No
//!   compression on L0–L1, LZ4 below: entries are
//!   short-lived, most die (truncated) before they reach the lower levels. No bloom filter
//!   (logs are read by bounded scans). Truncations and range removals are range deletions.
//! - **`kv/`:** column families `default`, `lock`, `write`, `meta`, created if missing. No
//!   sync per write: durability comes from `sync_wal` / `flush`. Bloom filters (10 bits per
//!   key), compression per level (none on L0–L1, LZ4 in the middle, ZSTD bottommost),
//!   `bytes_per_sync` 1 MiB so write-back of big files is spread out, 32 MiB target files.
//!   WAL recovery stops at the first damaged record (point in time): unsynced writes may be
//!   damaged anywhere after a power loss, and a prefix of them is what the trait promises.
//!   Writes are serialized under the durable-apply-index lock so that each write learns its
//!   own sequence number.
//!
//! ## Durability and poisoning
//!
//! The KV engine's durable apply index ([`tessera_engine::DurableApplyTracker`]) records each
//! write's apply states under the write's sequence number; `sync_wal` reads the latest
//! sequence number before syncing the WAL and marks everything up to it durable; `flush`
//! syncs the WAL and then flushes all column families; a `write(sync = true)` is durable
//! through itself. At open the index is seeded from the apply states on disk.
//!
//! A failed sync (a synced write, `sync`, `sync_wal`, `flush`, or an I/O error while
//! ingesting a snapshot) is never retried: it poisons the engine, and from then on every
//! fallible call of it — reads, cursors and snapshots included — answers
//! [`EngineError::Poisoned`]. The store must restart and recover from disk. RocksDB's own
//! corruption reports become [`EngineError::Corruption`], I/O errors [`EngineError::Io`],
//! the rest [`EngineError::Backend`].
//!
//! A full disk: RocksDB answers a failed WAL append with an error (a synced write then
//! poisons the engine), but when its memtables fill up and cannot be flushed it stalls
//! writes until space is freed, so a write may block instead of failing.
//!
//! ## Damaged directories
//!
//! `paranoid_checks` makes RocksDB check file sizes and checksums at open and on reads, and
//! WALs are tracked in the MANIFEST (`track_and_verify_wals_in_manifest`). Two checks RocksDB
//! does not make are done by [`open`] before opening an instance: a directory that holds
//! RocksDB files but no `CURRENT` is refused (RocksDB would create an empty instance over
//! it), and so is a MANIFEST that ends inside a record (RocksDB would open an older version
//! of the instance, missing files whose WALs are gone; see
//! [`EngineOptions::open_truncated_manifest`]).
//!
//! ## Range snapshots
//!
//! `export_snapshot` writes one SST file per non-empty data column family (`<cf>.sst`) with
//! RocksDB's `SstFileWriter` from an engine snapshot and records size, key count and CRC-32C.
//! `ingest_snapshot` verifies the checksums, then loads each file into a throw-away RocksDB
//! instance (through a hard link, so nothing is copied) to read its real smallest and
//! largest keys and key count, refuses keys outside the span, deletes the span in every data
//! column family (one synced write of range deletions) and ingests the files (copied: the
//! sender's files stay). The files of different column families are ingested one column
//! family at a time, so a crash in the middle can leave the span partly loaded; the store
//! must treat a snapshot as applied only once its apply state is durable.
//!
//! ## Span statistics
//!
//! `span_stats` scans the span of the data column families up to
//! [`SPAN_STATS_SCAN_BUDGET_BYTES`] of keys and values: a span that fits is counted exactly
//! (memtables included). A bigger one is estimated from RocksDB's approximate on-disk size of
//! the span (SST files only) scaled by the column family's ratio of raw to stored bytes,
//! with keys = bytes / average raw entry size (both from `rocksdb.aggregated-table-properties`);
//! the scanned prefix is a lower bound for both. Data still in memtables is missed by the
//! estimate until it is flushed.
//!
//! ## Metrics
//!
//! All carry the label `engine` = `"raft"` or `"kv"`.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `tessera_engine_write_batch_bytes` | histogram | bytes per written batch |
//! | `tessera_engine_write_batch_ops` | histogram | operations per written batch |
//! | `tessera_engine_sync_seconds` | histogram | duration of each sync (synced write, WAL sync, flush) |
//! | `tessera_engine_written_bytes_total` | counter | bytes of batches written |
//! | `tessera_engine_poisoned` | gauge | 1 once a failed sync poisoned the engine |
//!
//! `report_metrics()` on each engine reads RocksDB properties into:
//!
//! | name | kind | property |
//! |---|---|---|
//! | `tessera_engine_write_stopped` | gauge | `rocksdb.is-write-stopped` |
//! | `tessera_engine_delayed_write_rate_bytes` | gauge | `rocksdb.actual-delayed-write-rate` |
//! | `tessera_engine_running_compactions` | gauge | `rocksdb.num-running-compactions` |
//! | `tessera_engine_pending_compaction_bytes` | gauge | `rocksdb.estimate-pending-compaction-bytes` (sum over CFs) |
//! | `tessera_engine_live_data_bytes` | gauge | `rocksdb.estimate-live-data-size` (sum over CFs) |
//! | `tessera_engine_memtable_bytes` | gauge | `rocksdb.cur-size-all-mem-tables` (sum over CFs) |
//! | `tessera_engine_write_stalls_total` | counter, label `kind` = `delay`/`stop` | `total-delays` / `total-stops` of `rocksdb.cf-write-stall-stats` (sum over CFs) |

mod error;
mod kv;
mod manifest;
pub mod metrics;
mod options;
mod raft;
mod sst;
mod stats;

use std::path::Path;

use rocksdb::Cache;
use tessera_engine::{EngineError, Result};

pub use kv::{RocksCursor, RocksKvBatch, RocksKvEngine, RocksKvSnapshot};
pub use options::EngineOptions;
pub use raft::{RocksRaftLogBatch, RocksRaftLogEngine};
pub use stats::SPAN_STATS_SCAN_BUDGET_BYTES;

/// Opens (creating if missing) a store's two RocksDB instances, `dir/raft` and `dir/kv`,
/// with one block cache shared by both. `dir/tmp` is scratch space of the KV engine
/// (emptied at open).
///
/// # Errors
/// [`EngineError::Corruption`] if the files on disk are damaged;
/// [`EngineError::Io`] or [`EngineError::Backend`] for other failures (unwritable
/// directory, another process holding the instance's lock, …).
pub fn open(dir: &Path, options: &EngineOptions) -> Result<(RocksRaftLogEngine, RocksKvEngine)> {
    std::fs::create_dir_all(dir).map_err(|error| {
        EngineError::io(format!("creating data directory {}", dir.display()), error)
    })?;
    for instance in ["raft", "kv"] {
        let path = dir.join(instance);
        check_not_orphaned(&path)?;
        if !options.open_truncated_manifest {
            manifest::check_tail(&path)?;
        }
    }
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let raft = RocksRaftLogEngine::open(&dir.join("raft"), options, &cache)?;
    let kv = RocksKvEngine::open(&dir.join("kv"), dir.join("tmp"), options, &cache)?;
    Ok((raft, kv))
}

/// Refuses an instance directory that holds RocksDB files but no `CURRENT` file: RocksDB
/// would create a new, empty instance over them and the store would serve nothing.
fn check_not_orphaned(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(EngineError::io(format!("listing {}", path.display()), error)),
    };
    if path.join("CURRENT").exists() {
        return Ok(());
    }
    for entry in entries {
        let entry =
            entry.map_err(|error| EngineError::io(format!("listing {}", path.display()), error))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("MANIFEST-") || name.ends_with(".sst") || name.ends_with(".log") {
            return Err(EngineError::corruption(
                path.display().to_string(),
                format!("no CURRENT file, but the directory holds RocksDB files ({name})"),
            ));
        }
    }
    Ok(())
}
