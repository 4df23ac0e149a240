//! The engine conformance suite (`tessera_engine::conformance`) against the RocksDB engines.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tempfile::TempDir;
use tessera_engine::conformance::{self, Harness};
use tessera_engine_rocks::{EngineOptions, RocksKvEngine, RocksRaftLogEngine};

/// Small caches and memtables: many harnesses run one after another.
fn options() -> EngineOptions {
    EngineOptions {
        block_cache_bytes: 8 << 20,
        raft_memtable_bytes: 4 << 20,
        kv_memtable_bytes: 4 << 20,
        ..EngineOptions::default()
    }
}

struct RocksHarness {
    dir: TempDir,
    engines: Option<(RocksRaftLogEngine, RocksKvEngine)>,
    /// Other engine pairs handed out by `other_kv`, kept open as long as the harness.
    others: Vec<(RocksRaftLogEngine, RocksKvEngine, TempDir)>,
    scratch: TempDir,
    scratch_dirs: usize,
}

impl RocksHarness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engines = tessera_engine_rocks::open(dir.path(), &options()).unwrap();
        Self {
            dir,
            engines: Some(engines),
            others: Vec::new(),
            scratch: tempfile::tempdir().unwrap(),
            scratch_dirs: 0,
        }
    }

    fn engines(&self) -> &(RocksRaftLogEngine, RocksKvEngine) {
        self.engines.as_ref().expect("engines are open outside reopen")
    }
}

impl Harness for RocksHarness {
    type Raft = RocksRaftLogEngine;
    type Kv = RocksKvEngine;

    fn raft(&self) -> Self::Raft {
        self.engines().0.clone()
    }

    fn kv(&self) -> Self::Kv {
        self.engines().1.clone()
    }

    fn reopen(&mut self) {
        // Dropping the last handles closes both instances (and releases their lock files).
        self.engines = None;
        self.engines = Some(tessera_engine_rocks::open(self.dir.path(), &options()).unwrap());
    }

    fn scratch_dir(&mut self) -> PathBuf {
        self.scratch_dirs += 1;
        let dir = self.scratch.path().join(format!("scratch-{}", self.scratch_dirs));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn other_kv(&mut self) -> Self::Kv {
        let dir = tempfile::tempdir().unwrap();
        let (raft, kv) = tessera_engine_rocks::open(dir.path(), &options()).unwrap();
        self.others.push((raft, kv.clone(), dir));
        kv
    }
}

#[test]
fn rocksdb_engines_pass_the_conformance_suite() {
    conformance::run_all(RocksHarness::new);
}
