//! A failed sync poisons the engine, for real: both engines live on a 4 MiB tmpfs that the
//! test fills until a synced write fails; from then on every call answers
//! `EngineError::Poisoned`, reads included.
//!
//! Mounting needs root (CI runs as root); without it the test fails and says so.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tessera_engine::{
    ApplyState, Cf, Direction, EngineError, KvBatch, KvCursor, KvEngine, KvRead, RaftLogBatch,
    RaftLogEngine, RaftLogState, SnapshotManifest, keys,
};
use tessera_engine_rocks::EngineOptions;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, LogIndex, Term};

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped (also when the
/// test panics: declare it before anything that uses it, so it is dropped last).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|error| panic!("cannot run `mount` to create a small tmpfs: {error}"));
        assert!(
            output.status.success(),
            "mounting a {size} tmpfs on {} failed ({}): this test fills a small file system \
             and needs root to mount it (CI runs as root). mount said: {}",
            dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy unmount: succeeds even if a file is still open; the TempDir then removes the
        // empty mount point.
        match Command::new("umount").arg("-l").arg(self.dir.path()).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("unmounting {} failed: {other:?}", self.dir.path().display()),
        }
    }
}

fn small_options() -> EngineOptions {
    EngineOptions {
        block_cache_bytes: 1 << 20,
        raft_memtable_bytes: 512 << 10,
        kv_memtable_bytes: 256 << 10,
        raft_max_total_wal_bytes: 1 << 20,
        keep_info_log_files: 1,
        ..EngineOptions::default()
    }
}

fn assert_poisoned<T: std::fmt::Debug>(what: &str, result: Result<T, EngineError>) {
    match result {
        Err(EngineError::Poisoned { cause }) => {
            assert!(!cause.is_empty(), "{what}: Poisoned without a cause");
        }
        other => panic!("{what}: expected EngineError::Poisoned, got {other:?}"),
    }
}

fn big_entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8; 64 << 10]),
    }
}

#[test]
fn failed_sync_poisons_every_later_call() {
    let tmpfs = Tmpfs::mount("4m");
    // The checks run on their own thread so that a RocksDB write stalled forever on the full
    // disk fails the test (and still unmounts) instead of hanging it.
    let dir = tmpfs.path().to_path_buf();
    let (done_tx, done) = std::sync::mpsc::channel();
    let checks = std::thread::spawn(move || {
        fill_and_check(&dir);
        let _ = done_tx.send(());
    });
    match done.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => checks.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => {
            // The thread panicked: report its panic.
            if let Err(panic) = checks.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("the checks hung for 2 minutes on a full disk"),
    }
}

fn fill_and_check(dir: &Path) {
    let (raft, kv) = tessera_engine_rocks::open(dir, &small_options()).unwrap();
    let range = RangeId(1);

    // Healthy first: some synced state, a snapshot and a cursor taken before the failure.
    let mut raft_batch = raft.batch();
    raft_batch.append(range, &[big_entry(1)]);
    raft_batch.put_raft_state(range, &RaftLogState::default());
    raft.write(&mut raft_batch, true).unwrap();
    let mut kv_batch = kv.batch();
    kv_batch.put(Cf::Default, &keys::data_key(b"a"), b"1");
    kv_batch
        .put_apply_state(range, &ApplyState { applied_index: LogIndex(1), applied_term: Term(1) });
    kv.write(&mut kv_batch, true).unwrap();
    assert_eq!(kv.durable_apply_index(range), Some(LogIndex(1)));
    let early_snapshot = kv.snapshot();
    let span = keys::data_span(b"", b"");
    let mut early_cursor = kv.cursor(Cf::Default, &span).unwrap();
    assert!(early_cursor.seek_to_first().unwrap());

    // Fill the disk with synced raft writes until one fails.
    let mut failure = None;
    for index in 2..=2_000 {
        raft_batch.append(range, &[big_entry(index)]);
        if let Err(error) = raft.write(&mut raft_batch, true) {
            failure = Some((index, error));
            break;
        }
    }
    let (failed_at, error) = failure.expect("a 4 MiB tmpfs took 128 MiB of synced writes");
    eprintln!("raft write of entry {failed_at} failed: {error}");
    assert_poisoned("the failed synced raft write", Err::<(), _>(error));
    assert!(!raft_batch.is_empty(), "a failed write must leave the batch as it was");
    assert!(raft.is_poisoned());

    // Every later raft-log call.
    assert_poisoned("raft write (sync)", raft.write(&mut raft_batch, true));
    assert_poisoned("raft write (no sync)", raft.write(&mut raft_batch, false));
    let mut empty = raft.batch();
    assert_poisoned("raft write of an empty batch", raft.write(&mut empty, false));
    assert_poisoned("raft sync", raft.sync());
    assert_poisoned("raft_state", raft.raft_state(range));
    assert_poisoned("for_each_raft_state", raft.for_each_raft_state(&mut |_, _| Ok(())));
    let mut out = Vec::new();
    assert_poisoned(
        "fetch_entries",
        raft.fetch_entries(range, LogIndex(1), LogIndex(2), u64::MAX, &mut out),
    );
    assert!(out.is_empty());
    assert_poisoned("entry", raft.entry(range, LogIndex(1)));
    assert_poisoned("stored_index_bounds", raft.stored_index_bounds(range));
    // Clones share the poison.
    assert_poisoned("a clone's raft_state", raft.clone().raft_state(range));

    // The disk is full: synced KV writes fail too, and poison the KV engine. The values are
    // bigger than the free space, so the WAL append itself fails (with small ones RocksDB
    // first fills its memtables, cannot flush them and stalls writes until space returns).
    let value = vec![7u8; 1 << 20];
    let mut failure = None;
    for i in 0..4_000u32 {
        kv_batch.put(Cf::Default, &keys::data_key(&i.to_be_bytes()), &value);
        if let Err(error) = kv.write(&mut kv_batch, true) {
            failure = Some(error);
            break;
        }
    }
    let error = failure.expect("a full tmpfs took 128 MiB of synced KV writes");
    eprintln!("KV write failed: {error}");
    assert_poisoned("the failed synced KV write", Err::<(), _>(error));
    assert!(kv.is_poisoned());

    // Every later KV call, reads, cursors and snapshots included.
    assert_poisoned("kv write (sync)", kv.write(&mut kv_batch, true));
    assert_poisoned("kv write (no sync)", kv.write(&mut kv_batch, false));
    let mut empty = kv.batch();
    assert_poisoned("kv write of an empty batch", kv.write(&mut empty, false));
    assert_poisoned("sync_wal", kv.sync_wal());
    assert_poisoned("flush", kv.flush());
    assert_poisoned("get", kv.get(Cf::Default, &keys::data_key(b"a")));
    assert_poisoned("apply_state", kv.apply_state(range));
    assert_poisoned("cursor", kv.cursor(Cf::Default, &span).map(|_| ()));
    assert_poisoned("scan", kv.scan(Cf::Default, &span, Direction::Forward, 10));
    assert_poisoned("cursor taken before: next", early_cursor.next());
    assert_poisoned("cursor taken before: seek", early_cursor.seek(b"z"));
    assert_poisoned("snapshot taken before: get", early_snapshot.get(Cf::Default, b"za"));
    assert_poisoned(
        "snapshot taken before: scan",
        early_snapshot.scan(Cf::Default, &span, Direction::Forward, 1),
    );
    let late_snapshot = kv.snapshot();
    assert_poisoned("snapshot taken after: get", late_snapshot.get(Cf::Default, b"za"));
    assert_poisoned("delete_span", kv.delete_span(&[Cf::Default], &span));
    assert_poisoned("span_stats", kv.span_stats(&span));
    assert_poisoned("split_key", kv.split_key(&span));
    let export_dir = tempfile::tempdir().unwrap();
    assert_poisoned(
        "export_snapshot",
        kv.export_snapshot(&early_snapshot, &span, export_dir.path()),
    );
    assert_poisoned("ingest_snapshot", kv.ingest_snapshot(&span, &SnapshotManifest::default()));
    assert_poisoned("a clone's get", kv.clone().get(Cf::Default, b"za"));
    // The durable apply index (infallible) still answers what was durable before.
    assert_eq!(kv.durable_apply_index(range), Some(LogIndex(1)));

    drop(early_cursor);
    drop((early_snapshot, late_snapshot, raft, kv));
}
