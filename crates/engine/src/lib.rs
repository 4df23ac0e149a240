//! # tessera-engine
//!
//! Storage traits with no RocksDB types in them, the on-disk key layout, and an in-memory
//! engine that can inject faults (fail the Nth write or sync; on a simulated crash keep only
//! what was synced) for the simulator.
//!
//! Belongs here: the raft-log engine and KV engine traits, key encoding, the in-memory
//! implementation, and the conformance suite both engines must pass.
//!
//! Does not belong here: RocksDB (that is `tessera-engine-rocks`), tokio, quinn, threads or
//! clocks. Depends only on `tessera-wire`.
