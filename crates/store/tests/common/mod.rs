//! Shared test support: the history checker, a deterministic multi-store cluster and an
//! in-process placement driver fake.
#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod placement;
