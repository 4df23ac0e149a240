//! Shared test support: a deterministic multi-store cluster and an in-process placement
//! driver fake. (The history checker is `tessera_tests::history`.)
#![allow(dead_code)]

pub mod cluster;
pub mod placement;
