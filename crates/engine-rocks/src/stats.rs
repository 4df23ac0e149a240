//! `span_stats`: exact for small spans, estimated from file sizes and table properties for
//! large ones.

use rocksdb::Range;
use tessera_engine::{Cf, KeySpan, Result, SpanStats};

use crate::error::map_err;
use crate::kv::{KEY_SPACE_END, KvInner, read_options};

/// Bytes of keys and values a `span_stats` call reads before it switches to estimating.
pub const SPAN_STATS_SCAN_BUDGET_BYTES: u64 = 4 << 20;

pub(crate) fn span_stats(inner: &KvInner, span: &KeySpan) -> Result<SpanStats> {
    if span.is_empty() {
        return Ok(SpanStats::default());
    }
    // First, scan up to the budget: a span that fits is counted exactly, memtables included.
    let mut scanned = SpanStats::default();
    let mut complete = true;
    'cfs: for cf in Cf::DATA {
        let mut read = read_options(span);
        read.fill_cache(false);
        let mut iter = inner.db.raw_iterator_cf_opt(inner.cf(cf), read);
        iter.seek_to_first();
        while let Some((key, value)) = iter.item() {
            scanned.size_bytes += (key.len() + value.len()) as u64;
            scanned.keys += 1;
            if scanned.size_bytes > SPAN_STATS_SCAN_BUDGET_BYTES {
                complete = false;
                break 'cfs;
            }
            iter.next();
        }
        iter.status()
            .map_err(|error| map_err(&format!("scanning {} for span stats", cf.name()), &error))?;
    }
    if complete {
        return Ok(scanned);
    }

    // Too big to count: estimate. RocksDB's approximate sizes are on-disk (compressed) bytes
    // of SST files only; scale them by each column family's ratio of raw key and value
    // bytes to stored data bytes, and divide by its average raw entry size for a key count.
    let end = span.end_bound().unwrap_or(KEY_SPACE_END);
    let average_scanned = scanned.size_bytes as f64 / scanned.keys.max(1) as f64;
    let mut estimate = SpanStats::default();
    for cf in Cf::DATA {
        let handle = inner.cf(cf);
        let on_disk = inner
            .db
            .get_approximate_sizes_cf(handle, &[Range::new(&span.start, end)])
            .first()
            .copied()
            .unwrap_or(0);
        if on_disk == 0 {
            continue;
        }
        let table = inner
            .db
            .property_value_cf(handle, "rocksdb.aggregated-table-properties")
            .ok()
            .flatten()
            .map(|text| TableTotals::parse(&text))
            .unwrap_or_default();
        let raw = table.raw_key_bytes + table.raw_value_bytes;
        let ratio = if table.data_bytes > 0 && raw > 0 {
            raw as f64 / table.data_bytes as f64
        } else {
            1.0
        };
        let average = if table.entries > 0 && raw > 0 {
            raw as f64 / table.entries as f64
        } else {
            average_scanned
        };
        let logical = on_disk as f64 * ratio;
        estimate.size_bytes += logical as u64;
        estimate.keys += (logical / average.max(1.0)) as u64;
    }
    // The scanned prefix is a lower bound (it may sit in memtables, which files miss).
    Ok(SpanStats {
        size_bytes: estimate.size_bytes.max(scanned.size_bytes),
        keys: estimate.keys.max(scanned.keys),
    })
}

/// The totals of `rocksdb.aggregated-table-properties` this module needs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TableTotals {
    entries: u64,
    raw_key_bytes: u64,
    raw_value_bytes: u64,
    data_bytes: u64,
}

impl TableTotals {
    /// Parses RocksDB's `name=value; name=value; ...` text; missing fields stay 0.
    fn parse(text: &str) -> Self {
        let mut totals = Self::default();
        for item in text.split(';') {
            let Some((name, value)) = item.split_once('=') else { continue };
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            match name.trim() {
                "# entries" => totals.entries = value,
                "raw key size" => totals.raw_key_bytes = value,
                "raw value size" => totals.raw_value_bytes = value,
                "data block size" => totals.data_bytes = value,
                _ => {}
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::TableTotals;

    #[test]
    fn parses_table_properties() {
        let text = "# data blocks=3; # entries=100; # deletions=0; raw key size=2000; \
                    raw average key size=20.000000; raw value size=8000; data block size=5000; ";
        assert_eq!(
            TableTotals::parse(text),
            TableTotals {
                entries: 100,
                raw_key_bytes: 2000,
                raw_value_bytes: 8000,
                data_bytes: 5000
            }
        );
    }
}
