//! The conformance suite against the in-memory engines, plus the in-memory engines' own
//! fault-injection and crash behaviour.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tessera_engine::conformance::{self, Harness};
use tessera_engine::mem::{MemKvEngine, MemRaftLogEngine};

/// The in-memory engines; a reopen is a crash that keeps `keep_unsynced` unsynced batches.
struct MemHarness {
    raft: MemRaftLogEngine,
    kv: MemKvEngine,
    keep_unsynced: usize,
    dirs: Vec<tempfile::TempDir>,
}

impl MemHarness {
    fn new(keep_unsynced: usize) -> Self {
        Self {
            raft: MemRaftLogEngine::new(),
            kv: MemKvEngine::new(),
            keep_unsynced,
            dirs: Vec::new(),
        }
    }
}

impl Harness for MemHarness {
    type Raft = MemRaftLogEngine;
    type Kv = MemKvEngine;

    fn raft(&self) -> MemRaftLogEngine {
        self.raft.clone()
    }

    fn kv(&self) -> MemKvEngine {
        self.kv.clone()
    }

    fn reopen(&mut self) {
        self.raft = self.raft.crash(self.keep_unsynced);
        self.kv = self.kv.crash(self.keep_unsynced);
    }

    fn scratch_dir(&mut self) -> PathBuf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }

    fn other_kv(&mut self) -> MemKvEngine {
        MemKvEngine::new()
    }
}

/// Reopen loses every unsynced write (what a power failure may do).
#[test]
fn conformance_reopen_loses_unsynced() {
    conformance::run_all(|| MemHarness::new(0));
}

/// Reopen keeps every write (what a clean shutdown or a process crash does).
#[test]
fn conformance_reopen_keeps_unsynced() {
    conformance::run_all(|| MemHarness::new(usize::MAX));
}

/// Reopen keeps some unsynced writes.
#[test]
fn conformance_reopen_keeps_a_prefix() {
    for keep in [1, 2, 3] {
        conformance::run_all(|| MemHarness::new(keep));
    }
}

/// Every check is reachable by name, and a broken engine fails a check (the suite can fail).
#[test]
fn checks_are_listed_once_and_can_fail() {
    let checks = conformance::checks::<MemHarness>();
    let mut names: Vec<&str> = checks.iter().map(|(name, _)| *name).collect();
    assert!(names.len() >= 25);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), checks.len(), "duplicate check names");

    // A harness whose reopen loses synced data must fail the reopen checks.
    struct Amnesiac(MemHarness);
    impl Harness for Amnesiac {
        type Raft = MemRaftLogEngine;
        type Kv = MemKvEngine;
        fn raft(&self) -> MemRaftLogEngine {
            self.0.raft()
        }
        fn kv(&self) -> MemKvEngine {
            self.0.kv()
        }
        fn reopen(&mut self) {
            self.0.raft = MemRaftLogEngine::new();
            self.0.kv = MemKvEngine::new();
        }
        fn scratch_dir(&mut self) -> PathBuf {
            self.0.scratch_dir()
        }
        fn other_kv(&mut self) -> MemKvEngine {
            self.0.other_kv()
        }
    }
    for check in [
        conformance::raft_reopen_keeps_synced_writes::<Amnesiac>,
        conformance::kv_reopen_keeps_synced_writes::<Amnesiac>,
        conformance::kv_durable_apply_index_after_reopen::<Amnesiac>,
    ] {
        let failed = std::panic::catch_unwind(|| check(&mut Amnesiac(MemHarness::new(0))));
        assert!(failed.is_err(), "a reopen check passed on an engine that forgets");
    }
}

/// The in-memory engines' own behaviour: crashes, fault injection, poisoning.
mod mem_only {
    use bytes::Bytes;
    use tessera_engine::keys::{self, KeySpan};
    use tessera_engine::mem::{FaultPlan, MemKvEngine, MemRaftLogEngine};
    use tessera_engine::{
        ApplyState, Cf, Direction, EngineError, KvBatch, KvCursor, KvEngine, KvRead, RaftLogBatch,
        RaftLogEngine, SnapshotFile, SnapshotManifest,
    };
    use tessera_wire::ids::RangeId;
    use tessera_wire::raft::{Entry, EntryKind, LogIndex, Term};

    fn put(kv: &MemKvEngine, key: &str, sync: bool) -> Result<(), EngineError> {
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(key.as_bytes()), key.as_bytes());
        kv.write(&mut batch, sync)
    }

    fn has(kv: &MemKvEngine, key: &str) -> bool {
        kv.get(Cf::Default, &keys::data_key(key.as_bytes())).unwrap().is_some()
    }

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        }
    }

    fn append(raft: &MemRaftLogEngine, index: u64, sync: bool) -> Result<(), EngineError> {
        let mut batch = raft.batch();
        batch.append(RangeId(1), &[entry(index)]);
        raft.write(&mut batch, sync)
    }

    #[allow(clippy::needless_pass_by_value)] // called on results straight from the engine
    fn is_poisoned<T: std::fmt::Debug>(result: Result<T, EngineError>) -> bool {
        matches!(result, Err(EngineError::Poisoned { .. }))
    }

    #[test]
    fn kv_crash_keeps_durable_data_and_a_prefix_of_unsynced_batches() {
        for keep in 0..=5 {
            let kv = MemKvEngine::new();
            put(&kv, "synced", true).unwrap();
            for i in 0..4 {
                put(&kv, &format!("u{i}"), false).unwrap();
            }
            assert_eq!(kv.unsynced_batches(), 4);
            let restarted = kv.crash(keep);
            assert!(has(&restarted, "synced"));
            for i in 0..4 {
                assert_eq!(has(&restarted, &format!("u{i}")), i < keep, "keep {keep}, u{i}");
            }
            assert_eq!(restarted.unsynced_batches(), 0, "everything recovered is durable");
            assert!(kv.is_poisoned());
        }
    }

    #[test]
    fn kv_crash_counts_delete_span_and_ingest_as_batches() {
        let kv = MemKvEngine::new();
        put(&kv, "a", true).unwrap();
        kv.delete_span(&[Cf::Default], &keys::data_span(b"", b"")).unwrap();
        put(&kv, "b", false).unwrap();
        assert_eq!(kv.unsynced_batches(), 2);
        let one = kv.crash(1);
        assert!(!has(&one, "a") && !has(&one, "b"));
        let kv = MemKvEngine::new();
        put(&kv, "a", true).unwrap();
        kv.delete_span(&[Cf::Default], &keys::data_span(b"", b"")).unwrap();
        assert!(has(&kv.crash(0), "a"), "an unsynced delete_span is lost in a crash");
    }

    #[test]
    fn old_handles_die_after_a_crash() {
        let kv = MemKvEngine::new();
        put(&kv, "a", true).unwrap();
        let clone = kv.clone();
        let snapshot = kv.snapshot();
        let mut cursor = kv.cursor(Cf::Default, &KeySpan::all()).unwrap();
        let restarted = kv.crash(0);
        assert!(is_poisoned(clone.get(Cf::Default, b"za")));
        assert!(is_poisoned(put(&clone, "b", false)));
        assert!(is_poisoned(clone.sync_wal()));
        assert!(is_poisoned(clone.flush()));
        assert!(is_poisoned(snapshot.get(Cf::Default, b"za")));
        assert!(is_poisoned(cursor.seek_to_first()));
        assert!(!cursor.valid());
        assert!(is_poisoned(clone.cursor(Cf::Default, &KeySpan::all()).map(|_| ())));
        assert!(is_poisoned(clone.span_stats(&KeySpan::all())));
        assert!(is_poisoned(clone.split_key(&KeySpan::all())));
        assert!(is_poisoned(clone.delete_span(&[Cf::Default], &KeySpan::all())));
        assert!(has(&restarted, "a"));
        put(&restarted, "b", false).unwrap();
        assert!(has(&restarted, "b"));
        drop(cursor);
        drop(snapshot);

        let raft = MemRaftLogEngine::new();
        append(&raft, 1, true).unwrap();
        let old = raft.clone();
        let restarted = raft.crash(0);
        assert!(is_poisoned(old.entry(RangeId(1), LogIndex(1))));
        assert!(is_poisoned(old.raft_state(RangeId(1))));
        assert!(is_poisoned(old.stored_index_bounds(RangeId(1))));
        assert!(is_poisoned(old.sync()));
        assert!(is_poisoned(append(&old, 2, false)));
        assert!(is_poisoned(old.for_each_raft_state(&mut |_, _| Ok(()))));
        let mut out = Vec::new();
        assert!(is_poisoned(old.fetch_entries(RangeId(1), LogIndex(1), LogIndex(2), 1, &mut out)));
        assert_eq!(
            restarted.stored_index_bounds(RangeId(1)).unwrap(),
            Some((LogIndex(1), LogIndex(1)))
        );
    }

    #[test]
    fn raft_crash_keeps_a_prefix() {
        for keep in 0..=4 {
            let raft = MemRaftLogEngine::new();
            append(&raft, 1, true).unwrap();
            for index in 2..=4 {
                append(&raft, index, false).unwrap();
            }
            // Empty batches change nothing and are not counted.
            raft.write(&mut raft.batch(), false).unwrap();
            assert_eq!(raft.unsynced_batches(), 3);
            let restarted = raft.crash(keep);
            let last = 1 + keep.min(3) as u64;
            assert_eq!(
                restarted.stored_index_bounds(RangeId(1)).unwrap(),
                Some((LogIndex(1), LogIndex(last)))
            );
        }
    }

    #[test]
    fn failed_write_changes_nothing_and_engine_stays_usable() {
        let kv = MemKvEngine::new();
        put(&kv, "before", false).unwrap();
        kv.inject(FaultPlan { fail_write_at: Some(2), ..FaultPlan::default() });
        put(&kv, "first", false).unwrap();
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"second"), b"v");
        batch.put_apply_state(
            RangeId(1),
            &ApplyState { applied_index: LogIndex(3), applied_term: Term(1) },
        );
        assert!(matches!(kv.write(&mut batch, true), Err(EngineError::Injected(_))));
        assert_eq!(batch.op_count(), 2, "a failed write leaves the batch as it was");
        assert!(!has(&kv, "second"));
        assert_eq!(kv.apply_state(RangeId(1)).unwrap(), None);
        assert_eq!(kv.writes(), 3);
        assert_eq!(kv.syncs(), 0, "the failed synced write never reached its sync");
        kv.write(&mut batch, true).unwrap();
        assert!(has(&kv, "second"));
        assert_eq!(kv.durable_apply_index(RangeId(1)), Some(LogIndex(3)));
        assert!(!kv.is_poisoned());

        let raft = MemRaftLogEngine::new();
        raft.inject(FaultPlan { fail_write_at: Some(1), ..FaultPlan::default() });
        assert!(matches!(append(&raft, 1, false), Err(EngineError::Injected(_))));
        assert_eq!(raft.stored_index_bounds(RangeId(1)).unwrap(), None);
        append(&raft, 1, false).unwrap();
        assert_eq!(raft.writes(), 2);
    }

    #[test]
    fn failed_sync_poisons_and_a_crash_recovers() {
        let kv = MemKvEngine::new();
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"durable"), b"v");
        batch.put_apply_state(
            RangeId(1),
            &ApplyState { applied_index: LogIndex(5), applied_term: Term(1) },
        );
        kv.write(&mut batch, true).unwrap();
        kv.inject(FaultPlan { fail_sync_at: Some(2), ..FaultPlan::default() });
        put(&kv, "a", false).unwrap();
        kv.sync_wal().unwrap(); // sync 1 of the plan
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"b"), b"v");
        batch.put_apply_state(
            RangeId(1),
            &ApplyState { applied_index: LogIndex(6), applied_term: Term(1) },
        );
        assert!(matches!(kv.write(&mut batch, true), Err(EngineError::Injected(_))));
        assert!(kv.is_poisoned());
        assert_eq!(
            kv.durable_apply_index(RangeId(1)),
            Some(LogIndex(5)),
            "the failed sync made nothing durable"
        );
        assert!(is_poisoned(kv.get(Cf::Default, b"za")), "reads fail too");
        assert!(is_poisoned(kv.snapshot().get(Cf::Default, b"za")));
        assert!(is_poisoned(put(&kv, "c", false)));
        assert!(is_poisoned(kv.flush()));
        assert_eq!(kv.unsynced_batches(), 1, "the failed synced write is applied but not durable");

        let lost = kv.crash(0);
        assert!(has(&lost, "a") && has(&lost, "durable") && !has(&lost, "b"));
        assert_eq!(lost.durable_apply_index(RangeId(1)), Some(LogIndex(5)));
        // Crashing the dead instance again recovers from the same state.
        let kept = kv.crash(1);
        assert!(!kept.is_poisoned());
        assert!(has(&kept, "a") && has(&kept, "b"));

        let kv = MemKvEngine::new();
        put(&kv, "x", true).unwrap();
        kv.inject(FaultPlan { fail_sync_at: Some(1), ..FaultPlan::default() });
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"y"), b"v");
        batch.put_apply_state(
            RangeId(2),
            &ApplyState { applied_index: LogIndex(9), applied_term: Term(2) },
        );
        assert!(kv.write(&mut batch, true).is_err());
        let kept = kv.crash(usize::MAX);
        assert!(has(&kept, "x") && has(&kept, "y"));
        assert_eq!(
            kept.durable_apply_index(RangeId(2)),
            Some(LogIndex(9)),
            "rebuilt from the recovered apply state"
        );
        assert_eq!(kept.syncs(), 0, "counters restart");
    }

    #[test]
    fn raft_failed_sync_poisons() {
        let raft = MemRaftLogEngine::new();
        raft.inject(FaultPlan { fail_sync_at: Some(1), fail_write_at: None });
        append(&raft, 1, false).unwrap();
        assert!(matches!(raft.sync(), Err(EngineError::Injected(_))));
        assert!(is_poisoned(raft.sync()));
        assert!(is_poisoned(raft.entry(RangeId(1), LogIndex(1))));
        assert_eq!(raft.syncs(), 1);
        let restarted = raft.crash(0);
        assert_eq!(restarted.stored_index_bounds(RangeId(1)).unwrap(), None);
    }

    #[test]
    fn cursors_read_at_their_sequence_across_many_writes() {
        let kv = MemKvEngine::new();
        for i in 0..100u32 {
            put(&kv, &format!("k{i:03}"), false).unwrap();
        }
        let mut cursor = kv.cursor(Cf::Default, &keys::data_span(b"k", b"l")).unwrap();
        assert!(cursor.seek_to_first().unwrap());
        // Delete everything and rewrite many times; the sweep must not drop what the cursor
        // still reads.
        for round in 0..50 {
            kv.delete_span(&[Cf::Default], &keys::data_span(b"", b"")).unwrap();
            put(&kv, &format!("k{round:03}x"), round % 2 == 0).unwrap();
        }
        let mut seen = 1;
        while cursor.next().unwrap() {
            seen += 1;
        }
        assert_eq!(seen, 100);
        let live = kv.scan(Cf::Default, &KeySpan::all(), Direction::Forward, usize::MAX).unwrap();
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn ingest_refuses_keys_outside_the_span_and_bad_manifests() {
        let source = MemKvEngine::new();
        for key in ["a", "m", "z"] {
            put(&source, key, false).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let wide = keys::data_span(b"", b"");
        let manifest = source.export_snapshot(&source.snapshot(), &wide, dir.path()).unwrap();
        let receiver = MemKvEngine::new();
        put(&receiver, "keep", false).unwrap();
        let narrow = keys::data_span(b"a", b"n");
        assert!(matches!(
            receiver.ingest_snapshot(&narrow, &manifest),
            Err(EngineError::InvalidArgument(_))
        ));
        assert!(has(&receiver, "keep"), "nothing changed");

        // A file that is intact by checksum but not in the format.
        let other = tempfile::tempdir().unwrap();
        let path = other.path().join("garbage");
        std::fs::write(&path, b"not a snapshot").unwrap();
        let (size_bytes, checksum) = tessera_engine::file_checksum(&path).unwrap();
        let garbage = SnapshotManifest {
            files: vec![SnapshotFile { cf: Cf::Default, path, size_bytes, keys: 0, checksum }],
        };
        assert!(matches!(
            receiver.ingest_snapshot(&wide, &garbage),
            Err(EngineError::Corruption { .. })
        ));
        // A file for the wrong column family.
        let mut swapped = manifest.clone();
        swapped.files[0].cf = Cf::Lock;
        assert!(receiver.ingest_snapshot(&wide, &swapped).is_err());
        // A manifest with a wrong key count.
        let mut miscounted = manifest.clone();
        miscounted.files[0].keys += 1;
        assert!(matches!(
            receiver.ingest_snapshot(&wide, &miscounted),
            Err(EngineError::Corruption { .. })
        ));
        // Meta is not a data column family.
        let mut meta = manifest.clone();
        meta.files[0].cf = Cf::Meta;
        assert!(receiver.ingest_snapshot(&wide, &meta).is_err());
        assert!(has(&receiver, "keep"), "nothing changed");
        receiver.ingest_snapshot(&wide, &manifest).unwrap();
        assert!(!has(&receiver, "keep") && has(&receiver, "m"));
        assert_eq!(receiver.unsynced_batches(), 2, "an ingest is one unsynced batch");

        // Export refuses a non-empty directory.
        assert!(matches!(
            source.export_snapshot(&source.snapshot(), &wide, dir.path()),
            Err(EngineError::InvalidArgument(_))
        ));
    }

    #[test]
    fn debug_output_names_the_state() {
        let kv = MemKvEngine::new();
        put(&kv, "a", false).unwrap();
        let text = format!("{kv:?} {:?} {:?}", kv.snapshot(), MemRaftLogEngine::new());
        assert!(text.contains("MemKvEngine") && text.contains("unsynced_batches: 1"), "{text}");
        assert!(text.contains("MemKvSnapshot") && text.contains("MemRaftLogEngine"), "{text}");
    }
}
