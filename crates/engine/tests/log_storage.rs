//! `RangeLogStorage` against the Raft core's own `MemStorage` as the reference model: after
//! every step of a random history (appends with conflicting tails, hard states, compactions
//! bounded by the durable apply index, snapshots, reopens from the engine) both answer every
//! `Storage` question alike. Then a real `RawNode` runs on it across a restart.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use tessera_engine::mem::MemRaftLogEngine;
use tessera_engine::{RaftLogEngine, RangeLogStorage};
use tessera_raft::{Config, MemStorage, RawNode, Storage, StorageError};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{
    ConfState, Entry, EntryKind, HardState, LogIndex, ReplicaId, Snapshot, SnapshotMetadata, Term,
};

const RANGE: RangeId = RangeId(42);

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (a conflicting tail).
    Append { back: u64, count: u64, term_bump: u64 },
    /// Compact up to `requested`'s offset from the first index, bounded by a durable apply
    /// index that lags by `lag`.
    Compact { requested: u64, lag: u64 },
    /// Install a snapshot `ahead` entries past the last index.
    Snapshot { ahead: u64 },
    /// Close and reopen from the engine (cold cache).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 1u64..6, 0u64..2)
            .prop_map(|(back, count, term_bump)| Op::Append { back, count, term_bump }),
        2 => (0u64..12, 0u64..4).prop_map(|(requested, lag)| Op::Compact { requested, lag }),
        1 => (0u64..5).prop_map(|ahead| Op::Snapshot { ahead }),
        1 => Just(Op::Reopen),
    ]
}

fn conf_state() -> ConfState {
    ConfState { voters: vec![ReplicaId(1)], ..ConfState::default() }
}

fn entry(index: LogIndex, term: Term) -> Entry {
    let data = Bytes::from(format!("entry {index} of term {term}").repeat((index.0 % 5) as usize));
    Entry { term, index, kind: EntryKind::Normal, data }
}

fn storage_error_kind(error: &StorageError) -> String {
    match error {
        StorageError::Other(_) => "other".to_owned(),
        other => other.to_string(),
    }
}

fn assert_same(model: &MemStorage, real: &RangeLogStorage<MemRaftLogEngine>) {
    assert_eq!(real.first_index(), model.first_index());
    assert_eq!(real.last_index(), model.last_index());
    assert_eq!(real.initial_state().unwrap().0, model.initial_state().unwrap().0);
    let first = real.first_index().0;
    let last = real.last_index().0;
    for index in first.saturating_sub(2)..=last + 1 {
        let index = LogIndex(index);
        match (real.term(index), model.term(index)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "term({index})"),
            (a, b) => assert_eq!(
                a.map_err(|e| storage_error_kind(&e)),
                b.map_err(|e| storage_error_kind(&e)),
                "term({index})"
            ),
        }
    }
    for low in first.saturating_sub(1)..=last + 1 {
        for high in [low + 1, low + 3, last + 1, last + 2] {
            if high <= low {
                continue;
            }
            for max_bytes in [0, 100, u64::MAX] {
                let (low, high) = (LogIndex(low), LogIndex(high));
                let real_answer = real.entries(low, high, max_bytes);
                let model_answer = model.entries(low, high, max_bytes);
                match (real_answer, model_answer) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "entries({low}, {high}, {max_bytes})"),
                    (a, b) => assert_eq!(
                        a.map_err(|e| storage_error_kind(&e)),
                        b.map_err(|e| storage_error_kind(&e)),
                        "entries({low}, {high}, {max_bytes})"
                    ),
                }
            }
        }
    }
}

fn run_history(ops: &[Op], cache_bytes_max: u64) {
    let engine = MemRaftLogEngine::new();
    let mut real = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
    real.set_cache_bytes_max(cache_bytes_max);
    let mut model = MemStorage::new_with_conf_state(conf_state());
    let mut term = Term(1);
    let mut batch = engine.batch();
    for op in ops {
        match *op {
            Op::Append { back, count, term_bump } => {
                term = Term(term.0 + term_bump);
                let start = real.last_index().0.saturating_sub(back).max(real.first_index().0);
                let entries: Vec<Entry> =
                    (start..start + count).map(|i| entry(LogIndex(i), term)).collect();
                real.stage_entries(&mut batch, &entries);
                model.append(&entries);
                let hard_state =
                    HardState { term, vote: ReplicaId(1), commit: model.hard_state().commit };
                real.stage_hard_state(&mut batch, hard_state);
                model.set_hard_state(hard_state);
            }
            Op::Compact { requested, lag } => {
                let requested = LogIndex(real.first_index().0 + requested);
                let durable = LogIndex(real.last_index().0.saturating_sub(lag));
                let effective = requested.min(durable).min(real.last_index());
                let done = real.stage_compaction(&mut batch, requested, durable).unwrap();
                if effective > model.first_index().prev() {
                    assert_eq!(done, Some(effective));
                    model.compact_to_snapshot(effective, conf_state(), Bytes::new()).unwrap();
                } else {
                    assert_eq!(done, None);
                }
            }
            Op::Snapshot { ahead } => {
                let metadata = SnapshotMetadata {
                    index: LogIndex(real.last_index().0 + ahead),
                    term,
                    conf_state: conf_state(),
                };
                real.stage_snapshot(&mut batch, &metadata);
                model.apply_snapshot(Snapshot { metadata, data: Bytes::new() });
            }
            Op::Reopen => {}
        }
        engine.write(&mut batch, true).unwrap();
        if matches!(op, Op::Reopen) {
            real = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
            real.set_cache_bytes_max(cache_bytes_max);
        }
        assert_same(&model, &real);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn answers_like_the_reference_model(
        ops in proptest::collection::vec(op(), 1..40),
        cache in prop_oneof![Just(0u64), Just(300u64), Just(u64::MAX)],
    ) {
        run_history(&ops, cache);
    }
}

#[test]
fn compaction_never_passes_the_durable_apply_index() {
    let engine = MemRaftLogEngine::new();
    let mut storage = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
    let mut batch = engine.batch();
    let entries: Vec<Entry> = (1..=10).map(|i| entry(LogIndex(i), Term(1))).collect();
    storage.stage_entries(&mut batch, &entries);
    storage.stage_hard_state(&mut batch, HardState { term: Term(1), ..HardState::default() });
    assert_eq!(
        storage.stage_compaction(&mut batch, LogIndex(8), LogIndex(3)).unwrap(),
        Some(LogIndex(3))
    );
    assert_eq!(storage.stage_compaction(&mut batch, LogIndex(8), LogIndex(3)).unwrap(), None);
    engine.write(&mut batch, true).unwrap();
    assert_eq!(storage.first_index(), LogIndex(4));
    assert_eq!(engine.stored_index_bounds(RANGE).unwrap(), Some((LogIndex(4), LogIndex(10))));
    let reopened = RangeLogStorage::open(engine, RANGE, conf_state()).unwrap();
    assert_eq!(reopened.first_index(), LogIndex(4));
    assert_eq!(reopened.term(LogIndex(3)).unwrap(), Term(1));
}

#[test]
fn snapshot_requests_wait_for_the_store() {
    let engine = MemRaftLogEngine::new();
    let mut storage = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
    let mut batch = engine.batch();
    let entries: Vec<Entry> = (1..=6).map(|i| entry(LogIndex(i), Term(2))).collect();
    storage.stage_entries(&mut batch, &entries);
    storage.stage_hard_state(&mut batch, HardState { term: Term(2), ..HardState::default() });
    storage.stage_compaction(&mut batch, LogIndex(5), LogIndex(5)).unwrap();
    engine.write(&mut batch, true).unwrap();
    assert_eq!(storage.snapshot(LogIndex(2)), Err(StorageError::SnapshotTemporarilyUnavailable));
    assert_eq!(storage.snapshot_wanted(), Some(LogIndex(5)));
    let metadata = SnapshotMetadata { index: LogIndex(6), term: Term(2), conf_state: conf_state() };
    storage.set_snapshot(Snapshot { metadata, data: Bytes::from_static(b"state") });
    assert_eq!(storage.snapshot_wanted(), None);
    assert_eq!(storage.snapshot(LogIndex(2)).unwrap().metadata.index, LogIndex(6));
}

#[test]
fn open_refuses_a_log_that_contradicts_its_state() {
    use tessera_engine::{RaftLogBatch, RaftLogState};
    let engine = MemRaftLogEngine::new();
    let mut batch = engine.batch();
    batch.append(RANGE, &[entry(LogIndex(7), Term(1))]);
    let state = RaftLogState {
        hard_state: HardState { term: Term(1), commit: LogIndex(7), ..HardState::default() },
        ..RaftLogState::default()
    };
    batch.put_raft_state(RANGE, &state);
    engine.write(&mut batch, true).unwrap();
    // Entries 1..=6 are missing although nothing was truncated.
    let error = RangeLogStorage::open(engine, RANGE, conf_state()).unwrap_err();
    assert!(error.to_string().contains("first stored entry 7"), "{error}");
}

/// A single-replica `RawNode` on the engine: campaign, propose, persist each Ready with one
/// synced write, restart from the engine, and find every committed entry again.
#[test]
fn raw_node_runs_on_it_across_a_restart() {
    let engine = MemRaftLogEngine::new();
    let drive = |node: &mut RawNode<RangeLogStorage<MemRaftLogEngine>>,
                 applied: &mut Vec<Bytes>| {
        while node.has_ready() {
            let ready = node.ready();
            let mut batch = engine.batch();
            let storage = node.store_mut();
            if let Some(snapshot) = &ready.snapshot {
                storage.stage_snapshot(&mut batch, &snapshot.metadata);
            }
            storage.stage_entries(&mut batch, &ready.entries);
            if let Some(hard_state) = ready.hard_state {
                storage.stage_hard_state(&mut batch, hard_state);
            }
            engine.write(&mut batch, ready.must_sync()).unwrap();
            applied.extend(
                ready
                    .committed_entries
                    .iter()
                    .filter(|e| !e.data.is_empty())
                    .map(|e| e.data.clone()),
            );
            node.advance(&ready);
        }
    };
    let mut applied = Vec::new();
    {
        let storage = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
        let mut node = RawNode::new(Config::new(ReplicaId(1)), storage).unwrap();
        node.campaign();
        drive(&mut node, &mut applied);
        for i in 0..20 {
            node.propose(Bytes::from(format!("command {i}"))).unwrap();
            drive(&mut node, &mut applied);
        }
        assert_eq!(applied.len(), 20);
    }
    let storage = RangeLogStorage::open(engine.clone(), RANGE, conf_state()).unwrap();
    let last = storage.last_index();
    let mut node = RawNode::new(Config::new(ReplicaId(1)), storage).unwrap();
    assert_eq!(node.committed(), last);
    let entries = node.store().entries(LogIndex(1), last.next(), u64::MAX).unwrap();
    let replayed: Vec<Bytes> =
        entries.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.clone()).collect();
    assert_eq!(replayed, applied);
    node.campaign();
    let mut more = Vec::new();
    drive(&mut node, &mut more);
    node.propose(Bytes::from_static(b"after restart")).unwrap();
    drive(&mut node, &mut more);
    assert_eq!(more.last().unwrap().as_ref(), b"after restart");
}
