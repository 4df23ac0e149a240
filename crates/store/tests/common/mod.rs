//! Shared test support: the history checker and a deterministic multi-store cluster.
#![allow(dead_code)]

pub mod cluster;
pub mod history;
