//! The durable apply index under concurrent writers and syncs.
#![allow(clippy::unwrap_used)]

use tessera_engine::{ApplyState, Cf, KvBatch, KvEngine, KvRead, keys};
use tessera_engine_rocks::EngineOptions;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{LogIndex, Term};

#[test]
fn concurrent_writers_and_syncs_keep_the_index_exact() {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions { block_cache_bytes: 8 << 20, ..EngineOptions::default() };
    let (_raft, kv) = tessera_engine_rocks::open(dir.path(), &options).unwrap();
    const WRITERS: u64 = 4;
    const APPLIES: u64 = 300;
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let kv = kv.clone();
            scope.spawn(move || {
                let range = RangeId(writer + 1);
                let mut batch = kv.batch();
                for index in 1..=APPLIES {
                    let key = keys::data_key(format!("{writer}-{index}").as_bytes());
                    batch.put(Cf::Default, &key, b"v");
                    let state =
                        ApplyState { applied_index: LogIndex(index), applied_term: Term(1) };
                    batch.put_apply_state(range, &state);
                    // Every tenth write is synced: durable through itself at once.
                    let sync = index % 10 == 0;
                    kv.write(&mut batch, sync).unwrap();
                    let durable = kv.durable_apply_index(range).unwrap_or_default();
                    assert!(
                        durable <= LogIndex(index),
                        "durable {durable} ahead of applied {index}"
                    );
                    if sync {
                        assert_eq!(durable, LogIndex(index), "a synced write is durable at once");
                    }
                }
            });
        }
        let kv = kv.clone();
        scope.spawn(move || {
            for round in 0..50 {
                if round % 10 == 9 { kv.flush().unwrap() } else { kv.sync_wal().unwrap() }
            }
        });
    });
    kv.sync_wal().unwrap();
    let expected: Vec<_> = (1..=WRITERS).map(|r| (RangeId(r), LogIndex(APPLIES))).collect();
    assert_eq!(kv.durable_apply_indexes(), expected);
    for (range, index) in expected {
        assert_eq!(kv.apply_state(range).unwrap().unwrap().applied_index, index);
    }
}
