//! # tessera-bench
//!
//! Workload generator (YCSB A–F, put-only, get-only; raw and transactional), drivers for
//! Tessera and etcd, HDR histograms, JSON output and plots. Speed is measured here, as
//! ratios side by side in one run, never in timed tests (see `BENCHMARKING` in the docs).
//!
//! Does not belong here: correctness tests (those are in `tests/` and in each crate).
//!
//! So far: the Raft core benchmarks (bench/README.md), `raft-throughput` ([`raft_throughput`],
//! compared with the raft-rs reference in `bench/raft-rs-baseline`) and `raft-idle-groups`
//! ([`raft_idle_groups`]), on the in-process driver in [`raft_group`].

pub mod compare;
pub mod cpu;
pub mod driver;
pub mod etcd;
pub mod raft_group;
pub mod raft_idle_groups;
pub mod raft_throughput;
pub mod runner;
pub mod storage_group_commit;
pub mod tessera_cluster;
pub mod transport_throughput;
pub mod ycsb;
