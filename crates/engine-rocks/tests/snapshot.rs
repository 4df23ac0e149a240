//! Range snapshots between two RocksDB engines: SST export, verification and ingestion.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tempfile::TempDir;
use tessera_engine::{
    Cf, Direction, EngineError, KeySpan, KvBatch, KvEngine, KvRead, SnapshotManifest,
    file_checksum, keys,
};
use tessera_engine_rocks::{EngineOptions, RocksKvEngine, RocksRaftLogEngine};

fn options() -> EngineOptions {
    EngineOptions { block_cache_bytes: 8 << 20, ..EngineOptions::default() }
}

struct Store {
    _raft: RocksRaftLogEngine,
    kv: RocksKvEngine,
    _dir: TempDir,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let (raft, kv) = tessera_engine_rocks::open(dir.path(), &options()).unwrap();
    Store { _raft: raft, kv, _dir: dir }
}

fn key(i: u32) -> Vec<u8> {
    keys::data_key(format!("key-{i:05}").as_bytes())
}

fn value(cf: Cf, i: u32, tag: &str) -> Vec<u8> {
    format!("{tag}-{}-{i}-{}", cf.name(), "x".repeat((i % 50) as usize)).into_bytes()
}

/// Writes keys `from..to` into every data column family (the `lock` one only every third).
fn fill(kv: &RocksKvEngine, from: u32, to: u32, tag: &str) {
    let mut batch = kv.batch();
    for i in from..to {
        for cf in Cf::DATA {
            if cf == Cf::Lock && i % 3 != 0 {
                continue;
            }
            batch.put(cf, &key(i), &value(cf, i, tag));
        }
    }
    kv.write(&mut batch, false).unwrap();
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn dump(reader: &impl KvRead, span: &KeySpan) -> Vec<(Cf, Pairs)> {
    Cf::ALL
        .into_iter()
        .map(|cf| (cf, reader.scan(cf, span, Direction::Forward, usize::MAX).unwrap()))
        .collect()
}

fn range_span() -> KeySpan {
    KeySpan::new(key(100), key(400))
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn snapshot_round_trip_between_two_engines() {
    let sender = store();
    // Part of the data in SST files, part in memtables.
    fill(&sender.kv, 0, 300, "old");
    sender.kv.flush().unwrap();
    fill(&sender.kv, 200, 500, "new");
    let span = range_span();
    let snapshot = sender.kv.snapshot();
    let expected = dump(&snapshot, &span);
    // Written after the snapshot: must not travel.
    fill(&sender.kv, 100, 400, "late");

    let files = tempfile::tempdir().unwrap();
    let manifest = sender.kv.export_snapshot(&snapshot, &span, files.path()).unwrap();
    assert_eq!(manifest.files.len(), 3, "one file per non-empty data column family");
    assert_eq!(manifest.keys(), 300 + 300 + 100);
    for file in &manifest.files {
        assert_eq!(file.path, files.path().join(format!("{}.sst", file.cf.name())));
        assert_eq!(file_checksum(&file.path).unwrap(), (file.size_bytes, file.checksum));
    }
    manifest.verify().unwrap();

    let receiver = store();
    // Stale data inside the span is replaced; data outside it stays.
    fill(&receiver.kv, 50, 450, "stale");
    let outside_before = [KeySpan::new(key(0), key(100)), KeySpan::new(key(400), key(1000))]
        .map(|s| dump(&receiver.kv, &s));
    receiver.kv.ingest_snapshot(&span, &manifest).unwrap();
    assert_eq!(dump(&receiver.kv, &span), expected, "received data differs from the snapshot");
    let outside_after = [KeySpan::new(key(0), key(100)), KeySpan::new(key(400), key(1000))]
        .map(|s| dump(&receiver.kv, &s));
    assert_eq!(outside_before, outside_after, "ingestion touched keys outside the span");
    // The sender's files stay, unchanged.
    manifest.verify().unwrap();
    // And survive a reopen of the receiver? Checked by the conformance suite; here: the data
    // re-exports to files with the same keys and valid checksums.
    let again = tempfile::tempdir().unwrap();
    let reexport =
        receiver.kv.export_snapshot(&receiver.kv.snapshot(), &span, again.path()).unwrap();
    reexport.verify().unwrap();
    assert_eq!(
        reexport.files.iter().map(|file| (file.cf, file.keys)).collect::<Vec<_>>(),
        manifest.files.iter().map(|file| (file.cf, file.keys)).collect::<Vec<_>>()
    );
}

#[test]
fn tampered_or_foreign_files_are_refused_and_change_nothing() {
    let sender = store();
    fill(&sender.kv, 0, 500, "data");
    let wide = KeySpan::new(key(0), key(500));
    let files = tempfile::tempdir().unwrap();
    let manifest = sender.kv.export_snapshot(&sender.kv.snapshot(), &wide, files.path()).unwrap();

    let receiver = store();
    fill(&receiver.kv, 0, 500, "receiver");
    let before = dump(&receiver.kv, &KeySpan::all());

    // Keys outside the span the receiver is asked to fill.
    let error = receiver.kv.ingest_snapshot(&range_span(), &manifest).unwrap_err();
    assert!(matches!(error, EngineError::InvalidArgument(_)), "{error:?}");
    assert_eq!(dump(&receiver.kv, &KeySpan::all()), before);

    // A manifest that lies about the key count (checksums still right).
    let mut lying = manifest.clone();
    lying.files[0].keys += 1;
    let error = receiver.kv.ingest_snapshot(&wide, &lying).unwrap_err();
    assert!(matches!(error, EngineError::Corruption { .. }), "{error:?}");
    assert_eq!(dump(&receiver.kv, &KeySpan::all()), before);

    // A flipped byte in a file.
    flip_byte(&manifest.files[1].path);
    let error = receiver.kv.ingest_snapshot(&wide, &manifest).unwrap_err();
    assert!(matches!(error, EngineError::Corruption { .. }), "{error:?}");
    assert_eq!(dump(&receiver.kv, &KeySpan::all()), before);

    // A file that is not an SST at all, with a matching checksum.
    let garbage = files.path().join("garbage.sst");
    std::fs::write(&garbage, b"not an sst file").unwrap();
    let (size_bytes, checksum) = file_checksum(&garbage).unwrap();
    let mut foreign = SnapshotManifest::default();
    foreign.files.push(tessera_engine::SnapshotFile {
        cf: Cf::Default,
        path: garbage,
        size_bytes,
        keys: 1,
        checksum,
    });
    let error = receiver.kv.ingest_snapshot(&wide, &foreign).unwrap_err();
    assert!(matches!(error, EngineError::Corruption { .. }), "{error:?}");
    assert_eq!(dump(&receiver.kv, &KeySpan::all()), before);

    // Export needs an empty directory.
    let error = sender.kv.export_snapshot(&sender.kv.snapshot(), &wide, files.path()).unwrap_err();
    assert!(matches!(error, EngineError::InvalidArgument(_)), "{error:?}");
}

#[test]
fn span_stats_counts_small_spans_exactly_and_estimates_big_ones() {
    let store = store();
    fill(&store.kv, 0, 100, "small");
    let small = KeySpan::new(key(0), key(100));
    let stats = store.kv.span_stats(&small).unwrap();
    let exact: u64 = dump(&store.kv, &small)
        .iter()
        .flat_map(|(_, pairs)| pairs)
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(stats.size_bytes, exact);
    assert_eq!(stats.keys, 100 + 100 + 34);

    // Beyond the scan budget: about 12 MiB in 3 column families, flushed.
    let big_value = vec![0x5a; 4 << 10];
    for chunk in 0..10u32 {
        let mut batch = store.kv.batch();
        for i in chunk * 100..(chunk + 1) * 100 {
            for cf in Cf::DATA {
                batch.put(cf, &keys::data_key(format!("big-{i:05}").as_bytes()), &big_value);
            }
        }
        store.kv.write(&mut batch, false).unwrap();
    }
    store.kv.flush().unwrap();
    let big = keys::data_span(b"big-", b"big.");
    let stats = store.kv.span_stats(&big).unwrap();
    let true_bytes = 3_000 * (4096 + 10);
    assert!(
        stats.size_bytes > true_bytes / 2 && stats.size_bytes < true_bytes * 2,
        "estimated {} bytes, true {true_bytes}",
        stats.size_bytes
    );
    assert!(stats.keys > 1_500 && stats.keys < 6_000, "estimated {} keys, true 3000", stats.keys);
}

#[test]
fn report_metrics_reads_properties_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, kv) = tessera_engine_rocks::open(dir.path(), &options()).unwrap();
    fill(&kv, 0, 10, "m");
    raft.report_metrics();
    kv.report_metrics();
}
