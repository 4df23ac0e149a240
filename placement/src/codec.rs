//! The placement state's encoding: the versioned rkyv format of
//! [`tessera_wire::versioned`].

pub(crate) use tessera_wire::versioned::{decode, encode};
