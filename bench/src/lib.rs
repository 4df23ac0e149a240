//! # tessera-bench
//!
//! Workload generator (YCSB A–F, put-only, get-only; raw and transactional), drivers for
//! Tessera and etcd, HDR histograms, JSON output and plots. Speed is measured here, as
//! ratios side by side in one run, never in timed tests (see `BENCHMARKING` in the docs).
//!
//! Does not belong here: correctness tests (those are in `tests/` and in each crate).
