//! # tessera-sim
//!
//! Deterministic simulator (filled in by the Raft core work).
