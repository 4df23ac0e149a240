//! Damaged files on disk: every case either refuses to open with a clear error or answers the
//! damaged reads with an error — never a panic, never a silently shortened or altered answer.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tessera_engine::{
    Cf, Direction, EngineError, KvBatch, KvEngine, KvRead, RaftLogBatch, RaftLogEngine,
    RaftLogState, keys,
};
use tessera_engine_rocks::EngineOptions;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, HardState, LogIndex, Term};

const ENTRIES: u64 = 200;
const KEYS: u64 = 2_000;

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:08}-{}", "v".repeat((i % 97) as usize)).into_bytes()
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(value(index)),
    }
}

/// Writes a raft log (left in the WAL, never flushed) and KV data (flushed to SST files when
/// `flush_kv`), then closes both engines.
fn populate(dir: &Path, flush_kv: bool) {
    let (raft, kv) = tessera_engine_rocks::open(dir, &EngineOptions::default()).unwrap();
    for chunk in (1..=ENTRIES).collect::<Vec<_>>().chunks(10) {
        let mut batch = raft.batch();
        let entries: Vec<Entry> = chunk.iter().map(|&index| entry(index)).collect();
        batch.append(RangeId(1), &entries);
        let state = RaftLogState {
            hard_state: HardState {
                term: Term(1),
                commit: LogIndex(chunk[chunk.len() - 1]),
                ..HardState::default()
            },
            ..RaftLogState::default()
        };
        batch.put_raft_state(RangeId(1), &state);
        raft.write(&mut batch, true).unwrap();
    }
    let mut batch = kv.batch();
    for i in 0..KEYS {
        batch.put(Cf::Default, &keys::data_key(format!("key-{i:08}").as_bytes()), &value(i));
    }
    kv.write(&mut batch, true).unwrap();
    if flush_kv {
        kv.flush().unwrap();
    }
}

fn files(dir: &Path, matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(&matches))
        .collect();
    found.sort();
    found
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    let at = usize::try_from(offset).unwrap().min(bytes.len() - 1);
    bytes[at] ^= 0x5a;
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&bytes).unwrap();
    file.sync_all().unwrap();
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Opens the damaged directory and reads everything back. Returns the first error; panics
/// if every read succeeds but returns something other than what was written.
fn open_and_read_all(dir: &Path) -> Result<(), EngineError> {
    let (raft, kv) = tessera_engine_rocks::open(dir, &EngineOptions::default())?;
    let mut entries = Vec::new();
    raft.fetch_entries(RangeId(1), LogIndex(1), LogIndex(ENTRIES + 1), u64::MAX, &mut entries)?;
    assert_eq!(entries.len() as u64, ENTRIES, "raft log silently shortened");
    for entry in &entries {
        assert_eq!(entry.data.as_ref(), value(entry.index.0).as_slice(), "entry altered");
    }
    let rows = kv.scan(Cf::Default, &keys::data_span(b"", b""), Direction::Forward, usize::MAX)?;
    assert_eq!(rows.len() as u64, KEYS, "KV data silently shortened");
    for (i, (key, row_value)) in rows.iter().enumerate() {
        assert_eq!(key, &keys::data_key(format!("key-{i:08}").as_bytes()));
        assert_eq!(row_value, &value(i as u64), "value altered");
    }
    Ok(())
}

fn assert_refused(dir: &Path, what: &str) -> EngineError {
    match open_and_read_all(dir) {
        Ok(()) => panic!("{what}: damaged files were read back as if whole"),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "{what}: empty error message");
            eprintln!("{what}: {message}");
            error
        }
    }
}

#[test]
fn undamaged_directory_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), true);
    open_and_read_all(dir.path()).unwrap();
}

#[test]
fn flipped_byte_in_an_sst_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), true);
    let ssts = files(&dir.path().join("kv"), |name| name.ends_with(".sst"));
    assert!(!ssts.is_empty(), "flush wrote no SST file");
    let sst = &ssts[0];
    flip_byte(sst, fs::metadata(sst).unwrap().len() / 4);
    let error = assert_refused(dir.path(), "flipped SST byte");
    assert!(matches!(error, EngineError::Corruption { .. }), "{error:?}");
}

#[test]
fn truncated_sst_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), true);
    let ssts = files(&dir.path().join("kv"), |name| name.ends_with(".sst"));
    let sst = &ssts[0];
    truncate(sst, fs::metadata(sst).unwrap().len() / 2);
    assert_refused(dir.path(), "truncated SST");
}

#[test]
fn damaged_manifest_or_current_is_refused() {
    for (case, damage) in [
        ("truncated MANIFEST", 0),
        ("flipped MANIFEST byte", 1),
        ("garbled CURRENT", 2),
        ("missing CURRENT", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), true);
        let kv = dir.path().join("kv");
        let manifest = files(&kv, |name| name.starts_with("MANIFEST-")).pop().unwrap();
        match damage {
            0 => truncate(&manifest, fs::metadata(&manifest).unwrap().len() / 2),
            1 => flip_byte(&manifest, fs::metadata(&manifest).unwrap().len() / 2),
            2 => fs::write(kv.join("CURRENT"), b"MANIFEST-999999\n").unwrap(),
            _ => fs::remove_file(kv.join("CURRENT")).unwrap(),
        }
        assert_refused(dir.path(), case);
    }
}

#[test]
fn damage_inside_the_raft_wal_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), false);
    let wals = files(&dir.path().join("raft"), |name| name.ends_with(".log"));
    let wal = wals.iter().max_by_key(|path| fs::metadata(path).unwrap().len()).unwrap();
    // A third of the way in: synced records follow the damage, so dropping everything after
    // it (point-in-time recovery) would lose acknowledged writes.
    flip_byte(wal, fs::metadata(wal).unwrap().len() / 3);
    let error = assert_refused(dir.path(), "flipped raft WAL byte");
    assert!(matches!(error, EngineError::Corruption { .. }), "{error:?}");
}

#[test]
fn torn_tail_of_the_raft_wal_keeps_every_whole_record() {
    // A crash can leave the last record half-written; it was never acknowledged, so recovery
    // drops exactly that record and keeps everything before it.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), false);
    let wals = files(&dir.path().join("raft"), |name| name.ends_with(".log"));
    let wal = wals.iter().max_by_key(|path| fs::metadata(path).unwrap().len()).unwrap();
    let len = fs::metadata(wal).unwrap().len();
    truncate(wal, len - 5);
    let (raft, _kv) = tessera_engine_rocks::open(dir.path(), &EngineOptions::default()).unwrap();
    let (first, last) = raft.stored_index_bounds(RangeId(1)).unwrap().unwrap();
    assert_eq!(first, LogIndex(1));
    // The last batch held 10 entries; it is gone whole or kept whole.
    assert!(last == LogIndex(ENTRIES) || last == LogIndex(ENTRIES - 10), "last {last}");
    let state = raft.raft_state(RangeId(1)).unwrap().unwrap();
    assert_eq!(state.hard_state.commit, last, "state and entries of one batch disagree");
}
