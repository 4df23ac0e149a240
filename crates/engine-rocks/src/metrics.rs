//! Metric names (listed in the crate doc) and the code that records them.

use std::time::Duration;

use rocksdb::{AsColumnFamilyRef, DB};

/// Histogram: bytes of each write batch.
pub const WRITE_BATCH_BYTES: &str = "tessera_engine_write_batch_bytes";
/// Histogram: operations in each write batch.
pub const WRITE_BATCH_OPS: &str = "tessera_engine_write_batch_ops";
/// Histogram: seconds spent in each sync (synced write, WAL sync, flush).
pub const SYNC_SECONDS: &str = "tessera_engine_sync_seconds";
/// Counter: bytes of write batches written.
pub const WRITTEN_BYTES: &str = "tessera_engine_written_bytes_total";
/// Gauge: 1 once the engine is poisoned by a failed sync.
pub const POISONED: &str = "tessera_engine_poisoned";
/// Gauge: 1 while RocksDB stops writes (`rocksdb.is-write-stopped`).
pub const WRITE_STOPPED: &str = "tessera_engine_write_stopped";
/// Gauge: the delayed write rate while writes are slowed down
/// (`rocksdb.actual-delayed-write-rate`, bytes per second; 0 when not delayed).
pub const DELAYED_WRITE_RATE: &str = "tessera_engine_delayed_write_rate_bytes";
/// Gauge: running compactions (`rocksdb.num-running-compactions`).
pub const RUNNING_COMPACTIONS: &str = "tessera_engine_running_compactions";
/// Gauge: bytes compaction still has to rewrite (`rocksdb.estimate-pending-compaction-bytes`,
/// summed over column families).
pub const PENDING_COMPACTION_BYTES: &str = "tessera_engine_pending_compaction_bytes";
/// Gauge: estimated live data (`rocksdb.estimate-live-data-size`, summed over column
/// families).
pub const LIVE_DATA_BYTES: &str = "tessera_engine_live_data_bytes";
/// Gauge: memtable bytes (`rocksdb.cur-size-all-mem-tables`, summed over column families).
pub const MEMTABLE_BYTES: &str = "tessera_engine_memtable_bytes";
/// Counter: write stalls since open, label `kind` = `delay` or `stop` (the `total-delays`
/// and `total-stops` of `rocksdb.cf-write-stall-stats`, summed over column families).
pub const WRITE_STALLS: &str = "tessera_engine_write_stalls_total";

/// Records one written batch.
pub(crate) fn record_write(engine: &'static str, bytes: usize, ops: usize) {
    metrics::histogram!(WRITE_BATCH_BYTES, "engine" => engine).record(bytes as f64);
    metrics::histogram!(WRITE_BATCH_OPS, "engine" => engine).record(ops as f64);
    metrics::counter!(WRITTEN_BYTES, "engine" => engine).increment(bytes as u64);
}

/// Records one sync.
pub(crate) fn record_sync(engine: &'static str, elapsed: Duration) {
    metrics::histogram!(SYNC_SECONDS, "engine" => engine).record(elapsed.as_secs_f64());
}

/// Reads RocksDB's properties of `db` (column families `cfs`) into gauges and counters.
pub(crate) fn report(engine: &'static str, db: &DB, cfs: &[&dyn CfRef]) {
    let int = |name: &str| db.property_int_value(name).ok().flatten();
    let sum_cf =
        |name: &str| -> u64 { cfs.iter().filter_map(|cf| cf.int_property(db, name)).sum() };
    if let Some(stopped) = int("rocksdb.is-write-stopped") {
        metrics::gauge!(WRITE_STOPPED, "engine" => engine).set(stopped as f64);
    }
    if let Some(rate) = int("rocksdb.actual-delayed-write-rate") {
        metrics::gauge!(DELAYED_WRITE_RATE, "engine" => engine).set(rate as f64);
    }
    if let Some(running) = int("rocksdb.num-running-compactions") {
        metrics::gauge!(RUNNING_COMPACTIONS, "engine" => engine).set(running as f64);
    }
    let pending = sum_cf("rocksdb.estimate-pending-compaction-bytes");
    metrics::gauge!(PENDING_COMPACTION_BYTES, "engine" => engine).set(pending as f64);
    let live = sum_cf("rocksdb.estimate-live-data-size");
    metrics::gauge!(LIVE_DATA_BYTES, "engine" => engine).set(live as f64);
    let memtables = sum_cf("rocksdb.cur-size-all-mem-tables");
    metrics::gauge!(MEMTABLE_BYTES, "engine" => engine).set(memtables as f64);
    let (mut delays, mut stops) = (0u64, 0u64);
    for cf in cfs {
        if let Some(text) = cf.string_property(db, "rocksdb.cf-write-stall-stats") {
            delays += stall_count(&text, "total-delays");
            stops += stall_count(&text, "total-stops");
        }
    }
    metrics::counter!(WRITE_STALLS, "engine" => engine, "kind" => "delay").absolute(delays);
    metrics::counter!(WRITE_STALLS, "engine" => engine, "kind" => "stop").absolute(stops);
}

/// Reads `name: <number>` out of RocksDB's write-stall text
/// (`Write Stall (count): a: 1, b: 2, total-delays: 3, total-stops: 0`).
fn stall_count(text: &str, name: &str) -> u64 {
    text.split([',', '\n'])
        .filter_map(|item| item.trim().rsplit_once(": "))
        .find(|(key, _)| key.trim().ends_with(name))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A column family whose properties can be read (object-safe wrapper).
pub(crate) trait CfRef {
    fn int_property(&self, db: &DB, name: &str) -> Option<u64>;
    fn string_property(&self, db: &DB, name: &str) -> Option<String>;
}

impl<T: AsColumnFamilyRef> CfRef for T {
    fn int_property(&self, db: &DB, name: &str) -> Option<u64> {
        db.property_int_value_cf(self, name).ok().flatten()
    }

    fn string_property(&self, db: &DB, name: &str) -> Option<String> {
        db.property_value_cf(self, name).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::stall_count;

    #[test]
    fn parses_write_stall_text() {
        let text = "Write Stall (count): cf-l0-file-count-limit-delays-with-ongoing-compaction: 0, \
                    memtable-limit-stops: 2, total-delays: 5, total-stops: 3\n";
        assert_eq!(stall_count(text, "total-delays"), 5);
        assert_eq!(stall_count(text, "total-stops"), 3);
        assert_eq!(stall_count("", "total-stops"), 0);
    }
}
