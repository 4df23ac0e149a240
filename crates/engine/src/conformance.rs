//! The conformance suite: one set of checks every engine implementation must pass (the
//! in-memory engine in this crate's tests, the RocksDB engine in `tessera-engine-rocks`'s).
//!
//! An implementation provides a [`Harness`]; each check builds a fresh one. The checks
//! panic with a message naming the broken rule, like any test assertion.
//!
//! This module is a test harness that lives in the library so that other crates can run it:
//! it panics by design (through `assert!` and `expect`), writes snapshot files into the
//! harness's scratch directories, and one check ([`kv_snapshot_isolation`]) reads a snapshot
//! from a second, scoped thread to prove it can move there. Its data are deterministic.
//!
//! Run everything with [`run_all`], or single checks by calling them (each is a `pub fn`
//! taking `&mut H`), or iterate [`checks`] for their names.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;

use bytes::Bytes;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, HardState, LogIndex, ReplicaId, Term};

use crate::codec::{ApplyState, RaftLogState};
use crate::error::EngineError;
use crate::keys::{self, KeySpan};
use crate::kv::{Cf, Direction, KvBatch, KvCursor, KvEngine, KvRead};
use crate::raft_log::{RaftLogBatch, RaftLogEngine};
use crate::snapshot::SnapshotManifest;

/// A pair of engines under test, able to close and reopen them.
pub trait Harness {
    /// The raft-log engine under test.
    type Raft: RaftLogEngine;
    /// The KV engine under test.
    type Kv: KvEngine;

    /// The open raft-log engine.
    fn raft(&self) -> Self::Raft;

    /// The open KV engine.
    fn kv(&self) -> Self::Kv;

    /// Closes both engines (every handle the harness gave out must be dropped first) and
    /// opens them again from what is stored. Writes that were synced must survive; an
    /// implementation may lose unsynced writes, but only a suffix of them.
    fn reopen(&mut self);

    /// A fresh, empty directory for snapshot files, removed with the harness.
    fn scratch_dir(&mut self) -> PathBuf;

    /// A second, independent and empty KV engine of the same kind (the receiver in snapshot
    /// round trips).
    fn other_kv(&mut self) -> Self::Kv;
}

/// One check of the suite.
pub type Check<H> = fn(&mut H);

/// Every check of the suite with its name, in the order [`run_all`] runs them.
#[must_use]
pub fn checks<H: Harness>() -> Vec<(&'static str, Check<H>)> {
    vec![
        ("raft_append_read_back_many_ranges", raft_append_read_back_many_ranges::<H>),
        ("raft_overwrite_conflicting_tail", raft_overwrite_conflicting_tail::<H>),
        ("raft_fetch_entries_max_bytes", raft_fetch_entries_max_bytes::<H>),
        ("raft_fetch_entries_detects_gaps", raft_fetch_entries_detects_gaps::<H>),
        ("raft_delete_prefix", raft_delete_prefix::<H>),
        ("raft_clear_range", raft_clear_range::<H>),
        ("raft_state_round_trip_and_order", raft_state_round_trip_and_order::<H>),
        ("raft_stored_index_bounds", raft_stored_index_bounds::<H>),
        ("raft_missing_range_reads_none", raft_missing_range_reads_none::<H>),
        ("raft_reopen_keeps_synced_writes", raft_reopen_keeps_synced_writes::<H>),
        ("raft_batch_atomic_and_reusable", raft_batch_atomic_and_reusable::<H>),
        ("raft_empty_batch_write", raft_empty_batch_write::<H>),
        ("kv_get_put_delete_cf_isolation", kv_get_put_delete_cf_isolation::<H>),
        ("kv_batch_atomic_and_reusable", kv_batch_atomic_and_reusable::<H>),
        ("kv_scan_limits_and_bounds", kv_scan_limits_and_bounds::<H>),
        ("kv_cursor_semantics", kv_cursor_semantics::<H>),
        ("kv_snapshot_isolation", kv_snapshot_isolation::<H>),
        ("kv_delete_span_immediate", kv_delete_span_immediate::<H>),
        ("kv_delete_span_in_batch", kv_delete_span_in_batch::<H>),
        ("kv_apply_state_round_trip", kv_apply_state_round_trip::<H>),
        ("kv_durable_apply_index", kv_durable_apply_index::<H>),
        ("kv_durable_apply_index_after_reopen", kv_durable_apply_index_after_reopen::<H>),
        ("kv_span_stats", kv_span_stats::<H>),
        ("kv_split_key", kv_split_key::<H>),
        ("kv_snapshot_round_trip", kv_snapshot_round_trip::<H>),
        ("kv_snapshot_empty_span", kv_snapshot_empty_span::<H>),
        ("kv_snapshot_tampered_file_refused", kv_snapshot_tampered_file_refused::<H>),
        ("kv_reopen_keeps_synced_writes", kv_reopen_keeps_synced_writes::<H>),
    ]
}

/// Runs every check, each on a fresh harness from `make`.
///
/// # Panics
/// On the first check that fails, after printing its name to stderr.
pub fn run_all<H: Harness>(mut make: impl FnMut() -> H) {
    for (name, check) in checks::<H>() {
        let mut harness = make();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&mut harness))) {
            eprintln!("conformance check `{name}` failed");
            resume_unwind(panic);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::copy_from_slice(data),
    }
}

/// Entries `from..=to` of one term, payload `"{tag}-{index}"`; every third one a conf change
/// so both kinds round-trip.
fn entries(term: u64, from: u64, to: u64, tag: &str) -> Vec<Entry> {
    (from..=to)
        .map(|index| {
            let mut entry = entry(term, index, format!("{tag}-{index}").as_bytes());
            if index % 3 == 0 {
                entry.kind = EntryKind::ConfChange;
            }
            entry
        })
        .collect()
}

fn raft_state(seed: u64) -> RaftLogState {
    RaftLogState {
        hard_state: HardState {
            term: Term(10 + seed % 1000),
            vote: ReplicaId(seed % 7),
            commit: LogIndex(100 + seed % 5000),
        },
        truncated_index: LogIndex(50 + seed % 50),
        truncated_term: Term(5),
    }
}

fn raft_write<R: RaftLogEngine>(raft: &R, sync: bool, fill: impl FnOnce(&mut R::Batch)) {
    let mut batch = raft.batch();
    fill(&mut batch);
    raft.write(&mut batch, sync).expect("raft-log write failed");
    assert!(batch.is_empty(), "RaftLogEngine::write must clear the batch");
}

fn fetch<R: RaftLogEngine>(raft: &R, range: u64, low: u64, high: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let added = raft
        .fetch_entries(RangeId(range), LogIndex(low), LogIndex(high), u64::MAX, &mut out)
        .unwrap_or_else(|error| panic!("fetch_entries({range}, [{low}, {high})) failed: {error}"));
    assert_eq!(added, out.len(), "fetch_entries must return how many entries it added");
    out
}

fn bounds<R: RaftLogEngine>(raft: &R, range: u64) -> Option<(u64, u64)> {
    raft.stored_index_bounds(RangeId(range))
        .expect("stored_index_bounds failed")
        .map(|(low, high)| (low.0, high.0))
}

fn all_states<R: RaftLogEngine>(raft: &R) -> Vec<(RangeId, RaftLogState)> {
    let mut out = Vec::new();
    raft.for_each_raft_state(&mut |range, state| {
        out.push((range, state));
        Ok(())
    })
    .expect("for_each_raft_state failed");
    out
}

fn kv_write<K: KvEngine>(kv: &K, sync: bool, fill: impl FnOnce(&mut K::Batch)) {
    let mut batch = kv.batch();
    fill(&mut batch);
    kv.write(&mut batch, sync).expect("KV write failed");
    assert!(batch.is_empty(), "KvEngine::write must clear the batch");
}

fn put<K: KvEngine>(kv: &K, cf: Cf, key: &[u8], value: &[u8]) {
    kv_write(kv, false, |batch| batch.put(cf, key, value));
}

/// The data key of a user key.
fn dk(user_key: &str) -> Vec<u8> {
    keys::data_key(user_key.as_bytes())
}

fn span(start: &str, end: &str) -> KeySpan {
    keys::data_span(start.as_bytes(), end.as_bytes())
}

fn get<R: KvRead>(reader: &R, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
    reader.get(cf, key).expect("KV get failed")
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn scan<R: KvRead>(
    reader: &R,
    cf: Cf,
    span: &KeySpan,
    direction: Direction,
    limit: usize,
) -> Pairs {
    reader.scan(cf, span, direction, limit).expect("KV scan failed")
}

fn scan_all<R: KvRead>(reader: &R, cf: Cf, span: &KeySpan) -> Pairs {
    scan(reader, cf, span, Direction::Forward, usize::MAX)
}

fn scan_keys<R: KvRead>(reader: &R, cf: Cf, span: &KeySpan, direction: Direction) -> Vec<String> {
    scan(reader, cf, span, direction, usize::MAX)
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(keys::user_key(&key).unwrap_or(&key)).into_owned())
        .collect()
}

/// Everything in every column family.
fn dump<R: KvRead>(reader: &R) -> Vec<(Cf, Pairs)> {
    Cf::ALL.into_iter().map(|cf| (cf, scan_all(reader, cf, &KeySpan::all()))).collect()
}

/// Deterministic, incompressible-looking bytes (splitmix64).
fn pseudo_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn apply_state(index: u64, term: u64) -> ApplyState {
    ApplyState { applied_index: LogIndex(index), applied_term: Term(term) }
}

fn assert_invalid_argument<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(EngineError::InvalidArgument(_)) => {}
        other => panic!("{what}: expected EngineError::InvalidArgument, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Raft-log engine checks.

/// One batch appends to several ranges and stores their states; everything reads back
/// exactly, and nothing leaks between ranges.
pub fn raft_append_read_back_many_ranges<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let (log1, log2, log3) =
        (entries(1, 1, 10, "a"), entries(2, 1, 5, "b"), entries(3, 100, 102, "c"));
    let mut batch = raft.batch();
    assert!(batch.is_empty() && batch.op_count() == 0, "a new batch must be empty");
    batch.append(RangeId(1), &log1);
    batch.append(RangeId(2), &log2);
    batch.append(RangeId(256), &log3);
    batch.put_raft_state(RangeId(1), &raft_state(1));
    batch.put_raft_state(RangeId(2), &raft_state(2));
    assert!(!batch.is_empty(), "a batch with appends is not empty");
    assert_eq!(batch.op_count(), 20, "op_count counts one put per entry and per state");
    assert!(batch.size_bytes() > 0, "size_bytes of a non-empty batch");
    raft.write(&mut batch, true).expect("write");
    assert!(batch.is_empty(), "write clears the batch");

    assert_eq!(fetch(&raft, 1, 1, 11), log1, "range 1 reads back");
    assert_eq!(fetch(&raft, 2, 1, 6), log2, "range 2 reads back");
    assert_eq!(fetch(&raft, 256, 100, 103), log3, "range 256 reads back");
    assert_eq!(fetch(&raft, 1, 4, 7), log1[3..6].to_vec(), "a middle slice reads back");
    for entry in &log1 {
        assert_eq!(raft.entry(RangeId(1), entry.index).expect("entry").as_ref(), Some(entry));
    }
    assert_eq!(raft.entry(RangeId(1), LogIndex(11)).expect("entry"), None, "past the end");
    assert_eq!(raft.entry(RangeId(2), LogIndex(6)).expect("entry"), None, "past the end");
    assert_eq!(raft.entry(RangeId(3), LogIndex(1)).expect("entry"), None, "other range");
    assert_eq!(raft.entry(RangeId(256), LogIndex(1)).expect("entry"), None, "before the start");
    assert_eq!(raft.raft_state(RangeId(1)).expect("state"), Some(raft_state(1)));
    assert_eq!(raft.raft_state(RangeId(2)).expect("state"), Some(raft_state(2)));
    assert_eq!(raft.raft_state(RangeId(256)).expect("state"), None, "no state was written");
    assert_eq!(bounds(&raft, 1), Some((1, 10)));
    assert_eq!(bounds(&raft, 256), Some((100, 102)));
}

/// Appending over a conflicting tail and deleting what follows it leaves exactly the new
/// log.
pub fn raft_overwrite_conflicting_tail<H: Harness>(h: &mut H) {
    let raft = h.raft();
    raft_write(&raft, true, |b| b.append(RangeId(7), &entries(1, 1, 10, "old")));
    let new_tail = entries(2, 6, 7, "new");
    raft_write(&raft, true, |b| {
        b.append(RangeId(7), &new_tail);
        b.delete_entries(RangeId(7), LogIndex(8), LogIndex(11));
    });
    let mut expected = entries(1, 1, 5, "old");
    expected.extend(new_tail);
    assert_eq!(fetch(&raft, 7, 1, 8), expected, "old prefix, new tail");
    for index in 8..=10 {
        assert_eq!(raft.entry(RangeId(7), LogIndex(index)).expect("entry"), None, "cut {index}");
    }
    assert_eq!(bounds(&raft, 7), Some((1, 7)));
    let mut out = Vec::new();
    assert_invalid_argument(
        raft.fetch_entries(RangeId(7), LogIndex(1), LogIndex(9), u64::MAX, &mut out),
        "fetching past the cut tail",
    );

    // A longer conflicting tail in a later term, with an over-wide delete.
    let newer = entries(3, 4, 12, "newer");
    raft_write(&raft, false, |b| {
        b.append(RangeId(7), &newer);
        b.delete_entries(RangeId(7), LogIndex(13), LogIndex(100));
    });
    let mut expected = entries(1, 1, 3, "old");
    expected.extend(newer);
    assert_eq!(fetch(&raft, 7, 1, 13), expected, "second overwrite");
    assert_eq!(bounds(&raft, 7), Some((1, 12)));
}

/// `fetch_entries` honours `max_bytes` as the longest prefix within the limit, but always
/// returns at least one entry, and appends to `out`.
pub fn raft_fetch_entries_max_bytes<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let log: Vec<Entry> = (1..=10).map(|i| entry(4, i, &pseudo_bytes(i, 100))).collect();
    raft_write(&raft, false, |b| b.append(RangeId(3), &log));
    let size = log[0].size_bytes();
    let sentinel = entry(9, 999, b"sentinel");
    for (max_bytes, want) in [
        (0, 1),
        (1, 1),
        (size - 1, 1),
        (size, 1),
        (size * 2 - 1, 1),
        (size * 2, 2),
        (size * 3, 3),
        (size * 4 - 1, 3),
        (size * 10, 10),
        (u64::MAX, 10),
    ] {
        let mut out = vec![sentinel.clone()];
        let added = raft
            .fetch_entries(RangeId(3), LogIndex(1), LogIndex(11), max_bytes, &mut out)
            .expect("fetch_entries");
        assert_eq!(added, want, "entries returned for max_bytes {max_bytes} (entry size {size})");
        assert_eq!(out.len(), want + 1, "fetch_entries appends to out");
        assert_eq!(out[0], sentinel, "fetch_entries keeps what out held");
        assert_eq!(out[1..], log[..want], "the returned prefix");
    }
    let mut out = Vec::new();
    let added = raft
        .fetch_entries(RangeId(3), LogIndex(4), LogIndex(8), size * 2, &mut out)
        .expect("fetch_entries");
    assert_eq!((added, out.as_slice()), (2, &log[3..5]), "a limited middle slice");
}

/// A missing index inside the requested range is an `InvalidArgument`, not a short answer.
pub fn raft_fetch_entries_detects_gaps<H: Harness>(h: &mut H) {
    let raft = h.raft();
    raft_write(&raft, false, |b| {
        b.append(RangeId(5), &entries(1, 1, 5, "x"));
        b.append(RangeId(5), &entries(1, 7, 10, "x"));
        b.append(RangeId(6), &entries(1, 6, 6, "neighbour"));
    });
    assert_eq!(fetch(&raft, 5, 1, 6).len(), 5, "before the gap");
    assert_eq!(fetch(&raft, 5, 7, 11).len(), 4, "after the gap");
    for (low, high) in [(1, 11), (5, 8), (6, 7), (6, 8), (7, 12), (11, 12)] {
        let mut out = Vec::new();
        assert_invalid_argument(
            raft.fetch_entries(RangeId(5), LogIndex(low), LogIndex(high), u64::MAX, &mut out),
            &format!("fetch_entries [{low}, {high}) over a gap"),
        );
    }
    let mut out = Vec::new();
    assert_invalid_argument(
        raft.fetch_entries(RangeId(4), LogIndex(1), LogIndex(2), u64::MAX, &mut out),
        "fetch_entries of a range with no log",
    );
}

/// Deleting a prefix (compaction) removes exactly it, in exactly that range.
pub fn raft_delete_prefix<H: Harness>(h: &mut H) {
    let raft = h.raft();
    raft_write(&raft, false, |b| {
        for range in [5, 6, 7] {
            b.append(RangeId(range), &entries(1, 1, 10, &format!("r{range}")));
        }
    });
    raft_write(&raft, true, |b| b.delete_entries(RangeId(6), LogIndex(0), LogIndex(6)));
    assert_eq!(bounds(&raft, 6), Some((6, 10)), "prefix gone");
    assert_eq!(raft.entry(RangeId(6), LogIndex(5)).expect("entry"), None);
    assert_eq!(fetch(&raft, 6, 6, 11), entries(1, 6, 10, "r6"));
    for range in [5, 7] {
        assert_eq!(bounds(&raft, range), Some((1, 10)), "range {range} untouched");
        assert_eq!(fetch(&raft, range, 1, 11), entries(1, 1, 10, &format!("r{range}")));
    }
    raft_write(&raft, false, |b| b.delete_entries(RangeId(6), LogIndex(6), LogIndex(11)));
    assert_eq!(bounds(&raft, 6), None, "whole log deleted");
    assert_eq!(bounds(&raft, 7), Some((1, 10)), "range 7 untouched");
}

/// `clear_range` removes one range's log and state, and the range can start again.
pub fn raft_clear_range<H: Harness>(h: &mut H) {
    let raft = h.raft();
    raft_write(&raft, true, |b| {
        for range in [1, 2, 3] {
            b.append(RangeId(range), &entries(1, 1, 5, &format!("r{range}")));
            b.put_raft_state(RangeId(range), &raft_state(range));
        }
    });
    raft_write(&raft, true, |b| b.clear_range(RangeId(2)));
    assert_eq!(raft.raft_state(RangeId(2)).expect("state"), None, "state cleared");
    assert_eq!(bounds(&raft, 2), None, "log cleared");
    assert_eq!(raft.entry(RangeId(2), LogIndex(3)).expect("entry"), None);
    for range in [1, 3] {
        assert_eq!(raft.raft_state(RangeId(range)).expect("state"), Some(raft_state(range)));
        assert_eq!(fetch(&raft, range, 1, 6), entries(1, 1, 5, &format!("r{range}")));
    }
    let ranges: Vec<RangeId> = all_states(&raft).into_iter().map(|(range, _)| range).collect();
    assert_eq!(ranges, vec![RangeId(1), RangeId(3)], "for_each_raft_state after clear");
    raft_write(&raft, false, |b| {
        b.append(RangeId(2), &entries(3, 10, 12, "again"));
        b.put_raft_state(RangeId(2), &raft_state(22));
    });
    assert_eq!(bounds(&raft, 2), Some((10, 12)), "a cleared range starts again");
    assert_eq!(raft.raft_state(RangeId(2)).expect("state"), Some(raft_state(22)));
}

/// Raft states round-trip, and `for_each_raft_state` visits them in numeric range order
/// (not byte or insertion order) and stops at the visitor's first error.
pub fn raft_state_round_trip_and_order<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let ids = [7u64, 1, u64::MAX, 256, 255, 1 << 32, 2, 65_536, (1 << 56) + 1, 257];
    raft_write(&raft, false, |b| {
        for id in &ids[..5] {
            b.put_raft_state(RangeId(*id), &raft_state(*id));
        }
    });
    raft_write(&raft, true, |b| {
        for id in &ids[5..] {
            b.put_raft_state(RangeId(*id), &raft_state(*id));
            // Log entries must not show up as states.
            b.append(RangeId(*id), &entries(1, 1, 2, "e"));
        }
    });
    for id in ids {
        assert_eq!(
            raft.raft_state(RangeId(id)).expect("state"),
            Some(raft_state(id)),
            "range {id}"
        );
    }
    let mut sorted: Vec<u64> = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let expected: Vec<(RangeId, RaftLogState)> =
        sorted.iter().map(|id| (RangeId(*id), raft_state(*id))).collect();
    assert_eq!(all_states(&raft), expected, "for_each_raft_state in range id order");

    raft_write(&raft, false, |b| b.put_raft_state(RangeId(256), &raft_state(9_999)));
    assert_eq!(raft.raft_state(RangeId(256)).expect("state"), Some(raft_state(9_999)));
    assert!(all_states(&raft).contains(&(RangeId(256), raft_state(9_999))), "overwrite visible");

    let mut visits = 0;
    let result = raft.for_each_raft_state(&mut |_, _| {
        visits += 1;
        if visits == 2 { Err(EngineError::InvalidArgument("stop".to_owned())) } else { Ok(()) }
    });
    assert_invalid_argument(result, "for_each_raft_state passes the visitor's error on");
    assert_eq!(visits, 2, "for_each_raft_state stops at the visitor's first error");
}

/// `stored_index_bounds` reports the lowest and highest stored index of exactly that range.
pub fn raft_stored_index_bounds<H: Harness>(h: &mut H) {
    let raft = h.raft();
    assert_eq!(bounds(&raft, 10), None, "empty engine");
    raft_write(&raft, false, |b| {
        b.append(RangeId(9), &entries(1, 1, 3, "left"));
        b.append(RangeId(11), &entries(1, 1, 3, "right"));
        b.put_raft_state(RangeId(10), &raft_state(10));
    });
    assert_eq!(bounds(&raft, 10), None, "neighbours' entries and own state are not entries");
    raft_write(&raft, false, |b| b.append(RangeId(10), &entries(2, 5, 9, "mid")));
    assert_eq!(bounds(&raft, 10), Some((5, 9)));
    assert_eq!(bounds(&raft, 9), Some((1, 3)));
    assert_eq!(bounds(&raft, 11), Some((1, 3)));
    raft_write(&raft, false, |b| b.delete_entries(RangeId(10), LogIndex(5), LogIndex(7)));
    assert_eq!(bounds(&raft, 10), Some((7, 9)), "after deleting a prefix");
    raft_write(&raft, false, |b| b.delete_entries(RangeId(10), LogIndex(9), LogIndex(10)));
    assert_eq!(bounds(&raft, 10), Some((7, 8)), "after deleting the tail");
    let big = (1u64 << 40) + 3;
    raft_write(&raft, false, |b| {
        b.append(RangeId(u64::MAX), &entries(1, big, big + 1, "max"));
    });
    assert_eq!(bounds(&raft, u64::MAX), Some((big, big + 1)), "the largest range id");
    assert_eq!(bounds(&raft, u64::MAX - 1), None);
}

/// Reads of a range that has nothing stored answer `Ok(None)` (or nothing), not an error.
pub fn raft_missing_range_reads_none<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let check = |raft: &H::Raft| {
        assert_eq!(raft.raft_state(RangeId(42)).expect("raft_state of a missing range"), None);
        assert_eq!(raft.entry(RangeId(42), LogIndex(1)).expect("entry of a missing range"), None);
        assert_eq!(bounds(raft, 42), None);
    };
    check(&raft);
    assert!(all_states(&raft).is_empty(), "no states in an empty engine");
    raft_write(&raft, true, |b| {
        for range in [41, 43] {
            b.append(RangeId(range), &entries(1, 1, 3, "n"));
            b.put_raft_state(RangeId(range), &raft_state(range));
        }
    });
    check(&raft);
}

/// Synced raft writes survive a reopen; unsynced ones survive only as a prefix.
pub fn raft_reopen_keeps_synced_writes<H: Harness>(h: &mut H) {
    let all = entries(1, 1, 9, "log");
    {
        let raft = h.raft();
        raft_write(&raft, true, |b| {
            b.append(RangeId(1), &all[..5]);
            b.put_raft_state(RangeId(1), &raft_state(1));
        });
        for entry in &all[5..] {
            raft_write(&raft, false, |b| b.append(RangeId(1), std::slice::from_ref(entry)));
        }
    }
    h.reopen();
    {
        let raft = h.raft();
        assert_eq!(
            raft.raft_state(RangeId(1)).expect("state"),
            Some(raft_state(1)),
            "synced state"
        );
        let (first, last) = bounds(&raft, 1).expect("synced entries survive a reopen");
        assert_eq!(first, 1);
        assert!((5..=9).contains(&last), "last index {last} after reopen: synced 5, wrote 9");
        let last_usize = usize::try_from(last).expect("small index");
        assert_eq!(fetch(&raft, 1, 1, last + 1), all[..last_usize], "a prefix survives");

        // The reopened engine takes writes, and `sync` makes earlier unsynced writes durable.
        raft_write(&raft, false, |b| {
            b.append(RangeId(2), &entries(1, 1, 3, "two"));
            b.put_raft_state(RangeId(2), &raft_state(2));
        });
        raft.sync().expect("sync");
    }
    h.reopen();
    let raft = h.raft();
    assert_eq!(fetch(&raft, 2, 1, 4), entries(1, 1, 3, "two"), "synced by sync()");
    assert_eq!(raft.raft_state(RangeId(2)).expect("state"), Some(raft_state(2)));
    assert_eq!(raft.raft_state(RangeId(1)).expect("state"), Some(raft_state(1)));
}

/// A batch is invisible until written, then visible at once; `clear` empties it and a
/// batch can be reused.
pub fn raft_batch_atomic_and_reusable<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let mut batch = raft.batch();
    batch.append(RangeId(1), &entries(1, 1, 3, "a"));
    batch.put_raft_state(RangeId(2), &raft_state(2));
    assert_eq!(batch.op_count(), 4);
    assert_eq!(bounds(&raft, 1), None, "an unwritten batch is invisible");
    assert_eq!(
        raft.raft_state(RangeId(2)).expect("state"),
        None,
        "an unwritten batch is invisible"
    );
    batch.clear();
    assert!(batch.is_empty() && batch.op_count() == 0, "clear empties the batch");
    raft.write(&mut batch, false).expect("writing a cleared batch");
    assert_eq!(bounds(&raft, 1), None, "a cleared batch writes nothing");

    batch.append(RangeId(1), &entries(1, 1, 3, "a"));
    batch.put_raft_state(RangeId(1), &raft_state(1));
    batch.clear_range(RangeId(9));
    raft.write(&mut batch, false).expect("write");
    assert!(batch.is_empty(), "write clears the batch");
    assert_eq!(fetch(&raft, 1, 1, 4), entries(1, 1, 3, "a"));
    assert_eq!(raft.raft_state(RangeId(1)).expect("state"), Some(raft_state(1)));

    // Reuse: overwrite entries and state together.
    batch.append(RangeId(1), &entries(2, 2, 3, "b"));
    batch.put_raft_state(RangeId(1), &raft_state(3));
    raft.write(&mut batch, true).expect("write");
    let mut expected = entries(1, 1, 1, "a");
    expected.extend(entries(2, 2, 3, "b"));
    assert_eq!(fetch(&raft, 1, 1, 4), expected);
    assert_eq!(raft.raft_state(RangeId(1)).expect("state"), Some(raft_state(3)));
}

/// Writing an empty batch, synced or not, succeeds and changes nothing.
pub fn raft_empty_batch_write<H: Harness>(h: &mut H) {
    let raft = h.raft();
    let mut batch = raft.batch();
    raft.write(&mut batch, false).expect("empty unsynced write");
    raft.write(&mut batch, true).expect("empty synced write");
    raft.sync().expect("sync with nothing written");
    assert!(all_states(&raft).is_empty());
    raft_write(&raft, true, |b| b.append(RangeId(1), &entries(1, 1, 1, "after")));
    assert_eq!(bounds(&raft, 1), Some((1, 1)));
    let mut batch = raft.batch();
    raft.write(&mut batch, true).expect("empty synced write after data");
    assert_eq!(bounds(&raft, 1), Some((1, 1)));
}

// ---------------------------------------------------------------------------------------
// KV engine checks.

/// Puts, gets and deletes are per column family.
pub fn kv_get_put_delete_cf_isolation<H: Harness>(h: &mut H) {
    let kv = h.kv();
    let key = dk("k");
    assert_eq!(get(&kv, Cf::Default, &key), None, "empty engine");
    kv_write(&kv, false, |b| {
        for cf in Cf::ALL {
            b.put(cf, &key, cf.name().as_bytes());
        }
    });
    for cf in Cf::ALL {
        assert_eq!(get(&kv, cf, &key), Some(cf.name().as_bytes().to_vec()), "{cf:?}");
    }
    kv_write(&kv, false, |b| b.delete(Cf::Lock, &key));
    assert_eq!(get(&kv, Cf::Lock, &key), None, "deleted in lock");
    for cf in [Cf::Default, Cf::Write, Cf::Meta] {
        assert_eq!(get(&kv, cf, &key), Some(cf.name().as_bytes().to_vec()), "{cf:?} kept");
    }
    put(&kv, Cf::Default, &key, b"v2");
    assert_eq!(get(&kv, Cf::Default, &key), Some(b"v2".to_vec()), "overwrite");
    assert_eq!(get(&kv, Cf::Write, &key), Some(b"write".to_vec()), "other cf kept");
    kv_write(&kv, false, |b| b.delete(Cf::Default, &dk("never-written")));
    put(&kv, Cf::Write, &dk("empty"), b"");
    assert_eq!(get(&kv, Cf::Write, &dk("empty")), Some(Vec::new()), "an empty value is a value");
    assert_eq!(get(&kv, Cf::Default, &dk("empty")), None);
    put(&kv, Cf::Meta, keys::STORE_IDENT_KEY, b"ident");
    assert_eq!(get(&kv, Cf::Meta, keys::STORE_IDENT_KEY), Some(b"ident".to_vec()));
    assert_eq!(get(&kv, Cf::Default, keys::STORE_IDENT_KEY), None);
    // A put then a delete of the same key in one batch: the later one wins.
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("pd"), b"x");
        b.delete(Cf::Default, &dk("pd"));
        b.delete(Cf::Default, &dk("dp"));
        b.put(Cf::Default, &dk("dp"), b"y");
    });
    assert_eq!(get(&kv, Cf::Default, &dk("pd")), None, "put then delete");
    assert_eq!(get(&kv, Cf::Default, &dk("dp")), Some(b"y".to_vec()), "delete then put");
}

/// A KV batch is invisible until written, then visible at once; `clear` empties it; an
/// empty batch writes fine.
pub fn kv_batch_atomic_and_reusable<H: Harness>(h: &mut H) {
    let kv = h.kv();
    let mut batch = kv.batch();
    assert!(batch.is_empty() && batch.op_count() == 0, "a new batch is empty");
    kv.write(&mut batch, false).expect("empty write");
    kv.write(&mut batch, true).expect("empty synced write");
    batch.put(Cf::Default, &dk("a"), b"1");
    batch.put(Cf::Lock, &dk("a"), b"2");
    batch.delete(Cf::Write, &dk("a"));
    batch.delete_span(Cf::Write, &span("x", "y"));
    batch.put_apply_state(RangeId(1), &apply_state(3, 1));
    assert_eq!(batch.op_count(), 5, "op_count");
    assert!(batch.size_bytes() > 0, "size_bytes");
    assert_eq!(get(&kv, Cf::Default, &dk("a")), None, "an unwritten batch is invisible");
    let snapshot = kv.snapshot();
    kv.write(&mut batch, false).expect("write");
    assert!(batch.is_empty(), "write clears the batch");
    assert_eq!(get(&kv, Cf::Default, &dk("a")), Some(b"1".to_vec()));
    assert_eq!(get(&kv, Cf::Lock, &dk("a")), Some(b"2".to_vec()));
    assert_eq!(kv.apply_state(RangeId(1)).expect("apply_state"), Some(apply_state(3, 1)));
    assert_eq!(get(&snapshot, Cf::Default, &dk("a")), None, "snapshot before the batch");
    assert_eq!(snapshot.apply_state(RangeId(1)).expect("apply_state"), None);

    batch.put(Cf::Default, &dk("b"), b"1");
    batch.clear();
    assert!(batch.is_empty() && batch.op_count() == 0, "clear empties the batch");
    kv.write(&mut batch, false).expect("write of a cleared batch");
    assert_eq!(get(&kv, Cf::Default, &dk("b")), None, "a cleared batch writes nothing");
}

/// Scans walk either way, stop at `limit`, stay inside the span (bounded, unbounded,
/// empty) and inside their column family.
pub fn kv_scan_limits_and_bounds<H: Harness>(h: &mut H) {
    let kv = h.kv();
    let letters = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    kv_write(&kv, false, |b| {
        for letter in letters {
            b.put(Cf::Default, &dk(&format!("s/{letter}")), letter.to_uppercase().as_bytes());
        }
        b.put(Cf::Lock, &dk("s/b"), b"lock");
        b.put(Cf::Lock, &dk("s/x"), b"lock");
        b.put(Cf::Meta, keys::STORE_IDENT_KEY, b"meta");
    });
    let names = |list: &[&str]| list.iter().map(|l| format!("s/{l}")).collect::<Vec<_>>();
    let all = span("s/", "s0");
    assert_eq!(scan_keys(&kv, Cf::Default, &all, Direction::Forward), names(&letters));
    let mut reversed = letters;
    reversed.reverse();
    assert_eq!(scan_keys(&kv, Cf::Default, &all, Direction::Backward), names(&reversed));
    let limited = scan(&kv, Cf::Default, &all, Direction::Forward, 3);
    assert_eq!(
        limited,
        vec![(dk("s/a"), b"A".to_vec()), (dk("s/b"), b"B".to_vec()), (dk("s/c"), b"C".to_vec())],
        "forward scan with limit 3, values included"
    );
    let limited: Vec<Vec<u8>> =
        scan(&kv, Cf::Default, &all, Direction::Backward, 3).into_iter().map(|(k, _)| k).collect();
    assert_eq!(limited, vec![dk("s/j"), dk("s/i"), dk("s/h")], "backward scan with limit 3");
    assert!(scan(&kv, Cf::Default, &all, Direction::Forward, 0).is_empty(), "limit 0");

    let middle = span("s/c", "s/f");
    assert_eq!(scan_keys(&kv, Cf::Default, &middle, Direction::Forward), names(&["c", "d", "e"]));
    assert_eq!(scan_keys(&kv, Cf::Default, &middle, Direction::Backward), names(&["e", "d", "c"]));
    let between = span("s/c1", "s/e1");
    assert_eq!(scan_keys(&kv, Cf::Default, &between, Direction::Forward), names(&["d", "e"]));
    assert_eq!(scan_keys(&kv, Cf::Default, &between, Direction::Backward), names(&["e", "d"]));

    let open_end = KeySpan::new(dk("s/h"), Vec::new());
    assert_eq!(scan_keys(&kv, Cf::Default, &open_end, Direction::Forward), names(&["h", "i", "j"]));
    assert_eq!(
        scan_keys(&kv, Cf::Default, &open_end, Direction::Backward),
        names(&["j", "i", "h"])
    );
    let open_data = span("s/i", "");
    assert_eq!(scan_keys(&kv, Cf::Default, &open_data, Direction::Forward), names(&["i", "j"]));

    for empty in [span("s/f", "s/c"), span("s/c", "s/c"), span("t", "u")] {
        for direction in [Direction::Forward, Direction::Backward] {
            assert!(
                scan(&kv, Cf::Default, &empty, direction, usize::MAX).is_empty(),
                "span {empty:?} {direction:?} is empty"
            );
        }
    }
    assert_eq!(scan_keys(&kv, Cf::Lock, &all, Direction::Forward), names(&["b", "x"]), "lock cf");
    assert_eq!(scan_all(&kv, Cf::Default, &KeySpan::all()).len(), 10, "whole default cf");
    assert_eq!(
        scan_all(&kv, Cf::Meta, &KeySpan::all()),
        vec![(keys::STORE_IDENT_KEY.to_vec(), b"meta".to_vec())],
        "whole meta cf"
    );
}

fn cursor_at<C: KvCursor>(cursor: &C) -> Option<Vec<u8>> {
    cursor.valid().then(|| cursor.key().to_vec())
}

/// Cursor positioning and stepping at the edges of its span.
pub fn kv_cursor_semantics<H: Harness>(h: &mut H) {
    let kv = h.kv();
    kv_write(&kv, false, |b| {
        for key in ["c/b", "c/d", "c/f", "c/h"] {
            b.put(Cf::Write, &dk(key), key.as_bytes());
        }
        b.put(Cf::Default, &dk("c/e"), b"other cf");
    });
    let window = span("c/c", "c/g");
    let mut cursor = kv.cursor(Cf::Write, &window).expect("cursor");
    assert!(!cursor.valid(), "a new cursor is not positioned");
    let d = Some(dk("c/d"));
    let f = Some(dk("c/f"));

    assert!(cursor.seek(&dk("c/a")).expect("seek"), "seek before the span");
    assert_eq!(cursor_at(&cursor), d);
    assert_eq!(cursor.value(), b"c/d", "value at the cursor");
    assert!(cursor.seek(&dk("c/d")).expect("seek"));
    assert_eq!(cursor_at(&cursor), d, "seek to an existing key");
    assert!(cursor.seek(&dk("c/e")).expect("seek"));
    assert_eq!(cursor_at(&cursor), f, "seek between keys (the other cf's key is invisible)");
    assert!(!cursor.seek(&dk("c/g")).expect("seek"), "seek at the span end");
    assert!(!cursor.valid());
    assert!(!cursor.seek(&dk("c/z")).expect("seek"), "seek past the span");

    assert!(!cursor.seek_for_prev(&dk("c/c")).expect("seek_for_prev"), "before the first key");
    assert!(!cursor.seek_for_prev(&dk("c/a")).expect("seek_for_prev"), "before the span");
    assert!(cursor.seek_for_prev(&dk("c/d")).expect("seek_for_prev"));
    assert_eq!(cursor_at(&cursor), d, "seek_for_prev to an existing key");
    assert!(cursor.seek_for_prev(&dk("c/e")).expect("seek_for_prev"));
    assert_eq!(cursor_at(&cursor), d, "seek_for_prev between keys");
    assert!(cursor.seek_for_prev(&dk("c/f")).expect("seek_for_prev"));
    assert_eq!(cursor_at(&cursor), f);
    assert!(cursor.seek_for_prev(&dk("c/z")).expect("seek_for_prev"));
    assert_eq!(cursor_at(&cursor), f, "seek_for_prev past the span stops at its last key");

    assert!(cursor.seek_to_first().expect("seek_to_first"));
    assert_eq!(cursor_at(&cursor), d);
    assert!(!cursor.prev().expect("prev"), "prev from the first key");
    assert!(cursor.seek_to_last().expect("seek_to_last"));
    assert_eq!(cursor_at(&cursor), f);
    assert!(!cursor.next().expect("next"), "next from the last key");
    assert!(cursor.seek_to_first().expect("seek_to_first"));
    assert!(cursor.next().expect("next"));
    assert_eq!(cursor_at(&cursor), f);
    assert!(!cursor.next().expect("next"));
    assert!(cursor.seek_to_last().expect("seek_to_last"));
    assert!(cursor.prev().expect("prev"));
    assert_eq!(cursor_at(&cursor), d);
    assert!(cursor.next().expect("next"));
    assert_eq!(cursor_at(&cursor), f, "next after prev");
    drop(cursor);

    let mut empty = kv.cursor(Cf::Write, &span("c/g", "c/c")).expect("cursor");
    assert!(!empty.seek_to_first().expect("seek_to_first"), "inverted span");
    assert!(!empty.seek_to_last().expect("seek_to_last"), "inverted span");
    assert!(!empty.seek(&dk("c/d")).expect("seek"), "inverted span");
    assert!(!empty.seek_for_prev(&dk("c/d")).expect("seek_for_prev"), "inverted span");
    drop(empty);
    let mut hole = kv.cursor(Cf::Write, &span("c/i", "c/z")).expect("cursor");
    assert!(!hole.seek_to_first().expect("seek_to_first"), "span with no key");
    assert!(!hole.seek_to_last().expect("seek_to_last"), "span with no key");
    drop(hole);

    let mut open = kv.cursor(Cf::Write, &KeySpan::new(dk("c/e"), Vec::new())).expect("cursor");
    assert!(open.seek_to_last().expect("seek_to_last"));
    assert_eq!(cursor_at(&open), Some(dk("c/h")), "unbounded end");
    assert!(open.seek_to_first().expect("seek_to_first"));
    assert_eq!(cursor_at(&open), f, "unbounded end, first key");
    assert!(!open.seek_for_prev(&dk("c/d")).expect("seek_for_prev"), "below the span start");
    drop(open);

    // A cursor on the live engine reads as of its creation.
    let mut early = kv.cursor(Cf::Write, &window).expect("cursor");
    assert!(early.seek_to_first().expect("seek_to_first"));
    put(&kv, Cf::Write, &dk("c/e"), b"late");
    kv.delete_span(&[Cf::Write], &span("c/f", "c/g")).expect("delete_span");
    assert!(early.next().expect("next"));
    assert_eq!(cursor_at(&early), f, "a cursor does not see later writes");
    drop(early);
    let mut late = kv.cursor(Cf::Write, &window).expect("cursor");
    assert!(late.seek_to_last().expect("seek_to_last"));
    assert_eq!(cursor_at(&late), Some(dk("c/e")), "a new cursor sees them");
}

/// A snapshot sees exactly the writes before it, keeps doing so while the engine moves on,
/// and can be read from another thread.
pub fn kv_snapshot_isolation<H: Harness>(h: &mut H) {
    let kv = h.kv();
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("a"), b"1");
        b.put(Cf::Default, &dk("c"), b"1");
        b.put(Cf::Lock, &dk("l"), b"1");
        b.put_apply_state(RangeId(1), &apply_state(5, 1));
    });
    let snapshot = kv.snapshot();
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("a"), b"2");
        b.put(Cf::Default, &dk("b"), b"2");
        b.delete(Cf::Default, &dk("c"));
        b.put_apply_state(RangeId(1), &apply_state(6, 1));
    });
    kv.delete_span(&[Cf::Lock], &span("", "")).expect("delete_span");
    // Many overwrites, some synced, so an engine that prunes old versions gets the chance to.
    for i in 0..300u32 {
        kv_write(&kv, i % 10 == 9, |b| b.put(Cf::Default, &dk("a"), &i.to_be_bytes()));
    }
    kv.flush().expect("flush");

    let whole = span("", "");
    let expected_default = vec![(dk("a"), b"1".to_vec()), (dk("c"), b"1".to_vec())];
    assert_eq!(get(&snapshot, Cf::Default, &dk("a")), Some(b"1".to_vec()), "old value");
    assert_eq!(get(&snapshot, Cf::Default, &dk("b")), None, "later put invisible");
    assert_eq!(
        get(&snapshot, Cf::Default, &dk("c")),
        Some(b"1".to_vec()),
        "later delete invisible"
    );
    assert_eq!(
        get(&snapshot, Cf::Lock, &dk("l")),
        Some(b"1".to_vec()),
        "later delete_span invisible"
    );
    assert_eq!(scan_all(&snapshot, Cf::Default, &whole), expected_default);
    assert_eq!(snapshot.apply_state(RangeId(1)).expect("apply_state"), Some(apply_state(5, 1)));
    let mut cursor = snapshot.cursor(Cf::Default, &whole).expect("snapshot cursor");
    assert!(cursor.seek_to_last().expect("seek_to_last"));
    assert_eq!(cursor_at(&cursor), Some(dk("c")));
    drop(cursor);

    assert_eq!(get(&kv, Cf::Default, &dk("a")), Some(299u32.to_be_bytes().to_vec()));
    assert_eq!(get(&kv, Cf::Default, &dk("c")), None);
    assert!(scan_all(&kv, Cf::Lock, &whole).is_empty());
    let later = kv.snapshot();
    assert_eq!(get(&later, Cf::Default, &dk("b")), Some(b"2".to_vec()), "a new snapshot sees it");

    // Move the snapshot to another thread and read it there.
    let (a, scanned, snapshot) = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let a = get(&snapshot, Cf::Default, &dk("a"));
                let scanned = scan_all(&snapshot, Cf::Default, &span("", ""));
                (a, scanned, snapshot)
            })
            .join()
            .expect("snapshot reader thread panicked")
    });
    assert_eq!(a, Some(b"1".to_vec()), "snapshot read on another thread");
    assert_eq!(scanned, expected_default, "snapshot scanned on another thread");
    put(&kv, Cf::Default, &dk("d"), b"4");
    assert_eq!(get(&snapshot, Cf::Default, &dk("d")), None, "still isolated");
    drop(snapshot);
    drop(later);
    put(&kv, Cf::Default, &dk("e"), b"5");
    assert_eq!(scan_all(&kv, Cf::Default, &whole).len(), 4, "the engine works on");
}

fn fill_five<K: KvEngine>(kv: &K) {
    kv_write(kv, false, |b| {
        for cf in Cf::DATA {
            for key in ["ds/a", "ds/b", "ds/c", "ds/d", "ds/e"] {
                b.put(cf, &dk(key), cf.name().as_bytes());
            }
        }
        b.put(Cf::Meta, keys::STORE_IDENT_KEY, b"meta");
        b.put_apply_state(RangeId(1), &apply_state(1, 1));
    });
}

/// `KvEngine::delete_span` removes exactly its span from exactly the named column families.
pub fn kv_delete_span_immediate<H: Harness>(h: &mut H) {
    let kv = h.kv();
    fill_five(&kv);
    let meta_before = scan_all(&kv, Cf::Meta, &KeySpan::all());
    kv.delete_span(&[Cf::Default, Cf::Lock], &span("ds/b", "ds/d")).expect("delete_span");
    let all = span("ds/", "ds0");
    for cf in [Cf::Default, Cf::Lock] {
        assert_eq!(
            scan_keys(&kv, cf, &all, Direction::Forward),
            vec!["ds/a", "ds/d", "ds/e"],
            "{cf:?}: start inclusive, end exclusive"
        );
    }
    assert_eq!(scan_all(&kv, Cf::Write, &all).len(), 5, "write cf not named, untouched");
    assert_eq!(scan_all(&kv, Cf::Meta, &KeySpan::all()), meta_before, "meta untouched");
    kv.delete_span(&[Cf::Default], &span("ds/x", "ds/y")).expect("delete_span of nothing");
    kv.delete_span(&[Cf::Write], &span("", "")).expect("delete_span of all data");
    assert!(scan_all(&kv, Cf::Write, &KeySpan::all()).is_empty(), "whole data span");
    assert_eq!(scan_all(&kv, Cf::Default, &all).len(), 3);
    assert_eq!(scan_all(&kv, Cf::Meta, &KeySpan::all()), meta_before, "meta untouched");
    kv.delete_span(&[], &span("", "")).expect("delete_span with no column family");
    assert_eq!(scan_all(&kv, Cf::Lock, &all).len(), 3);
}

/// `KvBatch::delete_span` applies in batch order: it removes earlier puts of the batch but
/// not later ones, and only in its column family.
pub fn kv_delete_span_in_batch<H: Harness>(h: &mut H) {
    let kv = h.kv();
    fill_five(&kv);
    let meta_before = scan_all(&kv, Cf::Meta, &KeySpan::all());
    let doomed = span("ds/b", "ds/d");
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("ds/c2"), b"doomed");
        b.delete_span(Cf::Default, &doomed);
        b.put(Cf::Default, &dk("ds/b"), b"after");
        b.delete_span(Cf::Write, &doomed);
    });
    let all = span("ds/", "ds0");
    assert_eq!(
        scan_all(&kv, Cf::Default, &all),
        vec![
            (dk("ds/a"), b"default".to_vec()),
            (dk("ds/b"), b"after".to_vec()),
            (dk("ds/d"), b"default".to_vec()),
            (dk("ds/e"), b"default".to_vec()),
        ],
        "default: delete_span covers the earlier put, not the later one"
    );
    assert_eq!(scan_keys(&kv, Cf::Write, &all, Direction::Forward), vec!["ds/a", "ds/d", "ds/e"]);
    assert_eq!(scan_all(&kv, Cf::Lock, &all).len(), 5, "lock untouched");
    assert_eq!(scan_all(&kv, Cf::Meta, &KeySpan::all()), meta_before, "meta untouched");
}

/// Apply states written through the batch read back through `KvRead::apply_state`, per
/// range, from the engine and from snapshots.
pub fn kv_apply_state_round_trip<H: Harness>(h: &mut H) {
    let kv = h.kv();
    assert_eq!(kv.apply_state(RangeId(1)).expect("apply_state"), None, "empty engine");
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("x"), b"data");
        b.put_apply_state(RangeId(1), &apply_state(10, 2));
        b.put_apply_state(RangeId(u64::MAX), &apply_state(3, 1));
    });
    assert_eq!(kv.apply_state(RangeId(1)).expect("apply_state"), Some(apply_state(10, 2)));
    assert_eq!(kv.apply_state(RangeId(u64::MAX)).expect("apply_state"), Some(apply_state(3, 1)));
    assert_eq!(kv.apply_state(RangeId(2)).expect("apply_state"), None, "other range");
    assert_eq!(
        get(&kv, Cf::Meta, &keys::apply_state_key(RangeId(1))),
        Some(apply_state(10, 2).encode().to_vec()),
        "stored at keys::apply_state_key in meta, encoded by ApplyState::encode"
    );
    let snapshot = kv.snapshot();
    kv_write(&kv, false, |b| b.put_apply_state(RangeId(1), &apply_state(11, 3)));
    assert_eq!(kv.apply_state(RangeId(1)).expect("apply_state"), Some(apply_state(11, 3)));
    assert_eq!(snapshot.apply_state(RangeId(1)).expect("apply_state"), Some(apply_state(10, 2)));
}

fn durable<K: KvEngine>(kv: &K, range: u64) -> Option<u64> {
    kv.durable_apply_index(RangeId(range)).map(|index| index.0)
}

/// The durable apply index moves only when an apply state becomes durable: not on an
/// unsynced write, but on `sync_wal`, `flush` and a synced write.
pub fn kv_durable_apply_index<H: Harness>(h: &mut H) {
    let kv = h.kv();
    assert_eq!(durable(&kv, 3), None, "empty engine");
    let write_state = |kv: &H::Kv, range: u64, index: u64, sync: bool| {
        kv_write(kv, sync, |b| {
            b.put(Cf::Default, &dk(&format!("r{range}/{index}")), b"v");
            b.put_apply_state(RangeId(range), &apply_state(index, 1));
        });
    };
    write_state(&kv, 3, 5, false);
    assert_eq!(kv.apply_state(RangeId(3)).expect("apply_state"), Some(apply_state(5, 1)));
    assert_eq!(durable(&kv, 3), None, "an unsynced write is not durable");
    kv.sync_wal().expect("sync_wal");
    assert_eq!(durable(&kv, 3), Some(5), "sync_wal makes it durable");
    write_state(&kv, 3, 7, false);
    assert_eq!(durable(&kv, 3), Some(5), "unsynced again");
    kv.flush().expect("flush");
    assert_eq!(durable(&kv, 3), Some(7), "flush makes it durable");
    write_state(&kv, 3, 9, true);
    assert_eq!(durable(&kv, 3), Some(9), "a synced write is durable");

    write_state(&kv, 4, 2, false);
    assert_eq!(durable(&kv, 4), None);
    assert_eq!(kv.durable_apply_indexes(), vec![(RangeId(3), LogIndex(9))]);
    write_state(&kv, 1, 8, false);
    put(&kv, Cf::Lock, &dk("unrelated"), b"x");
    kv.sync_wal().expect("sync_wal");
    assert_eq!(
        kv.durable_apply_indexes(),
        vec![(RangeId(1), LogIndex(8)), (RangeId(3), LogIndex(9)), (RangeId(4), LogIndex(2))],
        "all durable, in range id order"
    );
    // A synced write of another range makes earlier unsynced writes durable too (WAL order).
    write_state(&kv, 3, 10, false);
    write_state(&kv, 4, 3, true);
    assert_eq!(durable(&kv, 3), Some(10), "an earlier write is covered by a later sync");
    assert_eq!(durable(&kv, 4), Some(3));
    // A destroyed replica's figure is forgotten, including writes not yet synced.
    write_state(&kv, 3, 11, false);
    kv.forget_durable_apply_index(RangeId(3));
    assert_eq!(durable(&kv, 3), None, "forgotten");
    kv.sync_wal().expect("sync_wal");
    assert_eq!(durable(&kv, 3), None, "a pending write of a forgotten range stays forgotten");
    assert_eq!(durable(&kv, 4), Some(3), "other ranges untouched");
}

/// After a reopen the durable apply index is the recovered apply state.
pub fn kv_durable_apply_index_after_reopen<H: Harness>(h: &mut H) {
    {
        let kv = h.kv();
        kv_write(&kv, true, |b| b.put_apply_state(RangeId(5), &apply_state(10, 1)));
        kv_write(&kv, false, |b| b.put_apply_state(RangeId(5), &apply_state(11, 1)));
        kv_write(&kv, false, |b| b.put_apply_state(RangeId(6), &apply_state(4, 1)));
        assert_eq!(durable(&kv, 5), Some(10));
        assert_eq!(durable(&kv, 6), None);
    }
    h.reopen();
    let kv = h.kv();
    let recovered = kv.apply_state(RangeId(5)).expect("apply_state").expect("synced apply state");
    assert!(
        [10, 11].contains(&recovered.applied_index.0),
        "recovered apply index {} (synced 10, wrote 11)",
        recovered.applied_index
    );
    assert_eq!(durable(&kv, 5), Some(recovered.applied_index.0), "durable = recovered");
    let six = kv.apply_state(RangeId(6)).expect("apply_state").map(|state| state.applied_index.0);
    assert_eq!(durable(&kv, 6), six, "durable = recovered (or absent)");
    if six.is_some() {
        assert_eq!(recovered.applied_index.0, 11, "a later write survived, so did the earlier");
    }
}

/// `span_stats` grows with the data and is about zero for a span without data.
pub fn kv_span_stats<H: Harness>(h: &mut H) {
    const KEYS: u64 = 1024;
    const VALUE: usize = 1024;
    let kv = h.kv();
    let data = span("stats/", "stats0");
    let elsewhere = span("zzz/", "zzz0");
    let before = kv.span_stats(&data).expect("span_stats");
    assert!(before.size_bytes < 64 * 1024, "an empty engine's span: {before:?}");
    for chunk in 0..KEYS / 64 {
        kv_write(&kv, false, |b| {
            for i in chunk * 64..(chunk + 1) * 64 {
                b.put(Cf::Default, &dk(&format!("stats/{i:05}")), &pseudo_bytes(i, VALUE));
            }
        });
    }
    kv.flush().expect("flush");
    let total = KEYS * VALUE as u64;
    let after = kv.span_stats(&data).expect("span_stats");
    assert!(
        after.size_bytes >= total / 4 && after.size_bytes <= total * 4,
        "{after:?} for {total} bytes of data"
    );
    assert!(after.size_bytes > before.size_bytes, "span_stats grows with data");
    assert!(after.keys > 0 && after.keys <= KEYS * 4, "{after:?} for {KEYS} keys");
    let empty = kv.span_stats(&elsewhere).expect("span_stats");
    assert!(empty.size_bytes < 64 * 1024 && empty.keys < 64, "a span without data: {empty:?}");
    let half = kv.span_stats(&span("stats/", "stats/00512")).expect("span_stats");
    assert!(
        half.size_bytes >= total / 8 && half.size_bytes <= total * 2,
        "{half:?} for half of {total} bytes"
    );
}

/// `split_key` returns a key strictly inside the span that halves uniform data, and `None`
/// for fewer than two distinct keys.
pub fn kv_split_key<H: Harness>(h: &mut H) {
    let kv = h.kv();
    let data = span("split/", "split0");
    let split = |kv: &H::Kv| kv.split_key(&data).expect("split_key");
    assert_eq!(split(&kv), None, "an empty span");
    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("split/only"), b"v");
        b.put(Cf::Write, &dk("split/only"), b"w");
        b.put(Cf::Default, &dk("splitter"), b"outside");
        b.put(Cf::Default, &dk("spli"), b"outside");
    });
    kv.flush().expect("flush");
    assert_eq!(split(&kv), None, "one distinct key in several column families");
    kv.delete_span(&Cf::DATA, &data).expect("delete_span");

    kv_write(&kv, false, |b| {
        b.put(Cf::Default, &dk("split/a"), &pseudo_bytes(1, 100));
        b.put(Cf::Lock, &dk("split/b"), &pseudo_bytes(2, 100));
    });
    kv.flush().expect("flush");
    let key = split(&kv).expect("two keys split");
    assert!(
        key.as_slice() > dk("split/a").as_slice() && key.as_slice() <= dk("split/b").as_slice(),
        "the split key {} of two keys must separate them",
        keys::escape(&key)
    );
    kv.delete_span(&Cf::DATA, &data).expect("delete_span");

    const KEYS: u64 = 1000;
    for chunk in 0..KEYS / 100 {
        kv_write(&kv, false, |b| {
            for i in chunk * 100..(chunk + 1) * 100 {
                let key = dk(&format!("split/{i:04}"));
                b.put(Cf::Default, &key, &pseudo_bytes(i, 200));
                b.put(Cf::Write, &key, &pseudo_bytes(i + KEYS, 20));
            }
        });
    }
    kv.flush().expect("flush");
    let key = split(&kv).expect("uniform data splits");
    assert!(
        data.contains(&key) && key != data.start,
        "split key {} strictly inside {data:?}",
        keys::escape(&key)
    );
    let left = (0..KEYS).filter(|i| dk(&format!("split/{i:04}")) < key).count() as u64;
    assert!(
        (KEYS * 3 / 10..=KEYS * 7 / 10).contains(&left),
        "split key {} leaves {left} of {KEYS} keys on the left",
        keys::escape(&key)
    );
}

/// Writes a data set for the snapshot checks: keys in and around `snap/` in every data cf.
fn fill_snapshot_source<K: KvEngine>(kv: &K) {
    kv_write(kv, false, |b| {
        for i in 0..200u64 {
            b.put(
                Cf::Default,
                &dk(&format!("snap/{i:03}")),
                &pseudo_bytes(i, 50 + (i % 7) as usize),
            );
        }
        for i in 0..50u64 {
            b.put(Cf::Lock, &dk(&format!("snap/{:03}", i * 4)), &pseudo_bytes(i + 500, 30));
        }
        for i in 0..100u64 {
            b.put(Cf::Write, &dk(&format!("snap/{:03}", i * 2)), &pseudo_bytes(i + 900, 10));
        }
        b.put(Cf::Write, &dk("snap/empty-value"), b"");
        for outside in ["sna", "snap", "snap0", "zebra"] {
            b.put(Cf::Default, &dk(outside), b"outside");
            b.put(Cf::Lock, &dk(outside), b"outside");
        }
        b.put(Cf::Meta, keys::STORE_IDENT_KEY, b"source meta");
    });
}

/// Puts keys into a receiver: some inside `snap/` (the ingest must remove them) and some
/// outside (it must keep them).
fn fill_snapshot_receiver<K: KvEngine>(kv: &K) {
    kv_write(kv, false, |b| {
        for cf in Cf::DATA {
            b.put(cf, &dk("snap/000"), b"stale");
            b.put(cf, &dk("snap/zzz-stale"), b"stale");
            b.put(cf, &dk("snap"), b"receiver outside");
            b.put(cf, &dk("snap0"), b"receiver outside");
        }
        b.put(Cf::Meta, keys::STORE_IDENT_KEY, b"receiver meta");
    });
}

fn snapshot_span() -> KeySpan {
    span("snap/", "snap0")
}

fn data_scans<R: KvRead>(reader: &R, span: &KeySpan) -> Vec<Pairs> {
    Cf::DATA.into_iter().map(|cf| scan_all(reader, cf, span)).collect()
}

fn assert_corruption(result: crate::Result<()>, what: &str) {
    match result {
        Err(EngineError::Corruption { .. }) => {}
        other => panic!("{what}: expected EngineError::Corruption, got {other:?}"),
    }
}

/// A range snapshot exported from one engine and ingested into another carries exactly the
/// span's data as of the snapshot, replaces the receiver's data in the span and nothing else.
pub fn kv_snapshot_round_trip<H: Harness>(h: &mut H) {
    let source = h.kv();
    fill_snapshot_source(&source);
    let range = snapshot_span();
    let snapshot = source.snapshot();
    let expected = data_scans(&snapshot, &range);
    // Writes after the snapshot must not be exported.
    kv_write(&source, false, |b| {
        b.put(Cf::Default, &dk("snap/late"), b"late");
        b.delete(Cf::Write, &dk("snap/000"));
    });
    let dir = h.scratch_dir();
    let manifest = source.export_snapshot(&snapshot, &range, &dir).expect("export_snapshot");
    let cfs: Vec<Cf> = manifest.files.iter().map(|file| file.cf).collect();
    assert_eq!(cfs, Cf::DATA.to_vec(), "one file per non-empty data cf, in cf order");
    let counts: Vec<u64> = manifest.files.iter().map(|file| file.keys).collect();
    assert_eq!(counts, vec![200, 50, 101], "manifest key counts");
    assert_eq!(manifest.keys(), 351);
    assert!(manifest.files.iter().all(|file| file.size_bytes > 0 && file.path.exists()));
    manifest.verify().expect("a fresh export verifies");
    for file in &manifest.files {
        let (size, checksum) = crate::snapshot::file_checksum(&file.path).expect("file_checksum");
        assert_eq!((size, checksum), (file.size_bytes, file.checksum), "{}", file.path.display());
    }

    let receiver = h.other_kv();
    fill_snapshot_receiver(&receiver);
    let outside_before: Vec<Pairs> = Cf::DATA
        .into_iter()
        .map(|cf| {
            let mut pairs = scan_all(&receiver, cf, &span("", "snap/"));
            pairs.extend(scan_all(&receiver, cf, &span("snap0", "")));
            pairs
        })
        .collect();
    receiver.ingest_snapshot(&range, &manifest).expect("ingest_snapshot");
    assert_eq!(data_scans(&receiver, &range), expected, "the span equals the snapshot's");
    for (cf, before) in Cf::DATA.into_iter().zip(outside_before) {
        let mut after = scan_all(&receiver, cf, &span("", "snap/"));
        after.extend(scan_all(&receiver, cf, &span("snap0", "")));
        assert_eq!(after, before, "{cf:?} outside the span is untouched");
    }
    assert_eq!(get(&receiver, Cf::Default, &dk("snap/zzz-stale")), None, "stale key cleared");
    assert_eq!(get(&receiver, Cf::Meta, keys::STORE_IDENT_KEY), Some(b"receiver meta".to_vec()));
    assert_eq!(get(&source, Cf::Default, &dk("snap/late")), Some(b"late".to_vec()));
    assert_eq!(get(&receiver, Cf::Default, &dk("snap/late")), None, "exported as of the snapshot");

    // The ingested data is ordinary data: it survives a sync and can be overwritten.
    receiver.sync_wal().expect("sync_wal");
    put(&receiver, Cf::Default, &dk("snap/000"), b"new");
    assert_eq!(get(&receiver, Cf::Default, &dk("snap/000")), Some(b"new".to_vec()));
}

/// A span with data in only some column families exports only their files; a span with no
/// data exports none, and ingesting that clears the span.
pub fn kv_snapshot_empty_span<H: Harness>(h: &mut H) {
    let source = h.kv();
    put(&source, Cf::Lock, &dk("only/lock"), b"l");
    put(&source, Cf::Default, &dk("elsewhere"), b"x");
    let snapshot = source.snapshot();
    let dir = h.scratch_dir();
    let manifest =
        source.export_snapshot(&snapshot, &span("only/", "only0"), &dir).expect("export_snapshot");
    assert_eq!(manifest.files.len(), 1, "only the lock cf has data");
    assert_eq!((manifest.files[0].cf, manifest.files[0].keys), (Cf::Lock, 1));

    let dir = h.scratch_dir();
    let empty_span = span("void/", "void0");
    let manifest = source.export_snapshot(&snapshot, &empty_span, &dir).expect("export_snapshot");
    assert_eq!(manifest, SnapshotManifest::default(), "no data, no files");
    let receiver = h.other_kv();
    kv_write(&receiver, false, |b| {
        for cf in Cf::DATA {
            b.put(cf, &dk("void/x"), b"stale");
        }
        b.put(Cf::Default, &dk("voi"), b"outside");
    });
    receiver.ingest_snapshot(&empty_span, &manifest).expect("ingest of an empty snapshot");
    for cf in Cf::DATA {
        assert!(scan_all(&receiver, cf, &empty_span).is_empty(), "{cf:?} cleared");
    }
    assert_eq!(get(&receiver, Cf::Default, &dk("voi")), Some(b"outside".to_vec()));
}

/// A snapshot file with a flipped byte or cut short is refused as corruption and the
/// receiver is left exactly as it was.
pub fn kv_snapshot_tampered_file_refused<H: Harness>(h: &mut H) {
    let source = h.kv();
    fill_snapshot_source(&source);
    let range = snapshot_span();
    let dir = h.scratch_dir();
    let manifest =
        source.export_snapshot(&source.snapshot(), &range, &dir).expect("export_snapshot");
    assert!(!manifest.files.is_empty(), "the source has data");
    let receiver = h.other_kv();
    fill_snapshot_receiver(&receiver);
    let before = dump(&receiver);
    for file in &manifest.files {
        let original = std::fs::read(&file.path).expect("reading a snapshot file");
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        let last = flipped.len() - 1;
        let mut flipped_end = original.clone();
        flipped_end[last] ^= 0x01;
        let tampered: [(&str, &[u8]); 4] = [
            ("a flipped middle byte", &flipped),
            ("a flipped last byte", &flipped_end),
            ("a missing last byte", &original[..last]),
            ("an extra byte", &[original.as_slice(), &[0]].concat()),
        ];
        for (what, bytes) in tampered {
            std::fs::write(&file.path, bytes).expect("tampering");
            assert_corruption(
                receiver.ingest_snapshot(&range, &manifest),
                &format!("{:?} file with {what}", file.cf),
            );
            assert_eq!(dump(&receiver), before, "a refused ingest changes nothing ({what})");
            assert_corruption(manifest.verify(), "SnapshotManifest::verify of a tampered file");
        }
        std::fs::write(&file.path, &original).expect("restoring");
    }
    receiver.ingest_snapshot(&range, &manifest).expect("the restored files ingest");
    assert_eq!(data_scans(&receiver, &range), data_scans(&source, &range));
}

/// Synced KV writes survive a reopen; unsynced ones survive only as a prefix; `sync_wal`
/// and `flush` make earlier writes durable.
pub fn kv_reopen_keeps_synced_writes<H: Harness>(h: &mut H) {
    {
        let kv = h.kv();
        kv_write(&kv, true, |b| {
            for i in 0..10 {
                b.put(Cf::Default, &dk(&format!("synced/{i}")), b"s");
            }
            b.put(Cf::Meta, keys::STORE_IDENT_KEY, b"ident");
            b.put(Cf::Lock, &dk("synced/lock"), b"l");
        });
        for i in 0..5 {
            put(&kv, Cf::Write, &dk(&format!("unsynced/{i}")), b"u");
        }
    }
    h.reopen();
    {
        let kv = h.kv();
        assert_eq!(scan_all(&kv, Cf::Default, &span("synced/", "synced0")).len(), 10, "synced");
        assert_eq!(get(&kv, Cf::Meta, keys::STORE_IDENT_KEY), Some(b"ident".to_vec()));
        assert_eq!(get(&kv, Cf::Lock, &dk("synced/lock")), Some(b"l".to_vec()));
        let present: Vec<bool> =
            (0..5).map(|i| get(&kv, Cf::Write, &dk(&format!("unsynced/{i}"))).is_some()).collect();
        let kept = present.iter().take_while(|present| **present).count();
        assert!(present[kept..].iter().all(|present| !present), "a prefix survives: {present:?}");

        put(&kv, Cf::Default, &dk("by-sync-wal"), b"1");
        kv.sync_wal().expect("sync_wal");
    }
    h.reopen();
    {
        let kv = h.kv();
        assert_eq!(get(&kv, Cf::Default, &dk("by-sync-wal")), Some(b"1".to_vec()), "sync_wal");
        put(&kv, Cf::Default, &dk("by-flush"), b"2");
        kv.delete_span(&[Cf::Default], &span("synced/5", "synced0")).expect("delete_span");
        kv.flush().expect("flush");
    }
    h.reopen();
    let kv = h.kv();
    assert_eq!(get(&kv, Cf::Default, &dk("by-flush")), Some(b"2".to_vec()), "flush");
    assert_eq!(
        scan_keys(&kv, Cf::Default, &span("synced/", "synced0"), Direction::Forward),
        vec!["synced/0", "synced/1", "synced/2", "synced/3", "synced/4"],
        "a flushed delete_span"
    );
    put(&kv, Cf::Default, &dk("after"), b"3");
    assert_eq!(get(&kv, Cf::Default, &dk("after")), Some(b"3".to_vec()), "writable after reopen");
}
