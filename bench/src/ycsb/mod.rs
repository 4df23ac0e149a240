//! YCSB workloads, their measurement and plots.

pub mod plot;
pub mod stats;
pub mod workload;
