//! # tessera-raft
//!
//! Raft consensus as a pure, deterministic state machine (filled in by the Raft core work).
