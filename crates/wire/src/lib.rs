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

/// Declares a `u64` identifier newtype with rkyv support, ordering and plain formatting.
macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            ::rkyv::Archive,
            ::rkyv::Serialize,
            ::rkyv::Deserialize,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
        )]
        #[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash))]
        pub struct $name(pub u64);

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }

        impl $name {
            /// The raw number.
            #[must_use]
            pub const fn get(self) -> u64 {
                self.0
            }
        }
    };
}

pub mod errors;
pub mod frame;
pub mod ids;
pub mod kv;
pub mod placement;
pub mod raft;
pub mod range;
pub mod rpc;
pub mod timestamp;
pub mod transport;
pub mod versioned;
