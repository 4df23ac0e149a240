//! # tessera-store
//!
//! The multi-raft store: one process hosts thousands of range replicas, each a Raft group,
//! on a few threads, with one fsync per round for all of them.
//!
//! Layout (kept apart on purpose): `fsm/` schedules (mailboxes, poll loop, batching),
//! `peer/` holds state (the Raft group and range metadata), `operation/` holds behaviour
//! (write, read, split, conf change, snapshot, leader transfer, quiescence, heartbeats to
//! placement). Storage and network reach the store through traits so the simulator can
//! drive whole stores.
//!
//! Does not belong here: consensus rules (`tessera-raft`), engine internals
//! (`tessera-engine*`), sockets (`tessera-transport`), transactions (`tessera-txn`).
