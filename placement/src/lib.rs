//! # tessera-placement
//!
//! The placement driver: a Raft group of 1, 3 or 5 nodes holding cluster metadata (stores,
//! range descriptors and leaders, placement rules, id allocator, the timestamp oracle's
//! persisted bound, the GC safe point), serving timestamps, and scheduling (replica
//! checker, placement rules, balancers) as pure logic on the leader.
//!
//! Does not belong here: the store's data path. Built on `tessera-raft`, `tessera-engine`
//! and `tessera-transport`.
