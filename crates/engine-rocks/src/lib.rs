//! # tessera-engine-rocks
//!
//! The RocksDB implementation of `tessera-engine`'s traits: a raft-log engine (`raft/`, WAL
//! synced once per group commit) and a KV engine (`kv/`, column families `default`, `lock`,
//! `write`, `meta`), SST snapshots, recovery and the durable apply index.
//!
//! Belongs here: everything that names a RocksDB type. Does not belong here: key layout or
//! storage semantics (those are defined in `tessera-engine` and only implemented here),
//! networking, Raft logic.
