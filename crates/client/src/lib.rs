//! # tessera-client
//!
//! The Rust client: a routing cache keyed by range start key, refreshed on `NotLeader`,
//! `EpochNotMatch`, `RangeNotFound` and unreachable stores; bounded retries with backoff and
//! deadlines; batched timestamp requests; the `RawClient` and `TxnClient` APIs.
//!
//! Does not belong here: server-side logic. Depends on `tessera-wire` and
//! `tessera-transport` only.

pub mod placement;
