//! The store's encoding of Raft commands and persisted state: the versioned rkyv format of
//! [`tessera_wire::versioned`].

pub(crate) use tessera_wire::versioned::{decode, encode};
