//! # tessera-txn
//!
//! MVCC and Percolator-style transactions, server side: prewrite, commit, rollback,
//! check_txn_status, resolve_lock, snapshot reads, one-phase and async commit, and GC below
//! the safe point — written as pure functions over a snapshot reader and a write buffer.
//!
//! Does not belong here: networking, threads, clocks (timestamps arrive as data from the
//! placement driver's oracle), RocksDB types. Depends only on `tessera-engine` and
//! `tessera-wire`.
