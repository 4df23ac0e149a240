//! # tessera-wire
//!
//! Every type that crosses a socket or lands on disk, as rkyv 0.8 archives, plus the frame
//! format, versioning and validation of untrusted bytes.
//!
//! Belongs here: message and record types (Raft messages and entries, coalesced heartbeats,
//! snapshot chunks, placement and client requests with their typed errors), frame headers,
//! the version rule, and `validate`-then-`access` of received bytes.
//!
//! Does not belong here: behaviour. No I/O, no async, no knowledge of Raft rules or of
//! storage engines. This crate depends on no other Tessera crate; everything else may
//! depend on it.

// rkyv derives public resolver types, which cannot implement Debug.
#![allow(missing_debug_implementations)]

pub mod raft;
