//! # tessera-tests
//!
//! End-to-end tests: real `tessera` processes on loopback and in network namespaces; fault,
//! geo and linearizability suites; and repository-wide rules (such as the dependency
//! direction of the pure crates, in `tests/dependency_rules.rs`).
//!
//! Helpers here wait on readiness with deadlines, never on fixed sleeps, and every test
//! uses free ports and its own temporary directory.

pub mod cargo_tree;
pub mod cluster;
pub mod history;
pub mod netns;
pub mod process;
