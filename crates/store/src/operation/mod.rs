//! Behaviour: what the store does with its ranges. Each file is one concern, written as an
//! `impl Store` block over the state in `peer/` and the scheduling in `fsm/`.

pub(crate) mod apply;
pub(crate) mod conf_change;
pub(crate) mod gc;
pub(crate) mod heartbeat;
pub mod inspect;
pub(crate) mod lifecycle;
pub(crate) mod read;
pub(crate) mod snapshot;
pub(crate) mod split;
pub(crate) mod tick;
pub(crate) mod write;
