//! # tessera-sim
//!
//! A deterministic simulator that hunts for bugs in the Raft core (`tessera-raft`). One seed
//! determines everything: the cluster (1–7 initial voters from replica ids 1–7), the Raft
//! configuration (election and heartbeat ticks, in-flight window, message and apply sizes,
//! backpressure, pre-vote, check-quorum, lease reads), the fault rates, and every event. One
//! thread, virtual time, an event queue ordered by (time, sequence), `BTreeMap`s only: the
//! same seed always produces the same run.
//!
//! Each seed runs a safety phase (thousands of events: writes, reads on leaders and
//! followers, membership changes through joint consensus, leader transfers, quiescence,
//! crashes that keep only what an fsync made durable, fsyncs batched over several Readys,
//! apply on the Ready or by a delayed apply worker, message loss, duplication and delay,
//! symmetric, one-way and swizzle-clog partitions, log compaction and snapshots), checking
//! after every event election safety, log matching, leader completeness, state machine
//! safety, leader append-only, read-index linearizability, monotonic terms, vote safety,
//! durability of applied entries and the Ready contract ([`checker`]). Then a liveness phase
//! heals everything and requires a leader, a committed write applied by every member,
//! convergence, and an answer to every read a still-standing leader accepted, within a
//! bound.
//!
//! Belongs here: the simulated world (network, disk, clock, crashes), the client workload,
//! the checkers and the `tessera-sim` binary. Does not belong here: Raft itself (fix bugs
//! found here in `tessera-raft`), real I/O, threads or wall-clock time, and the scripted
//! unit and interaction tests of the core (they live in `crates/raft/tests`).
//!
//! ## Replay and soak
//!
//! ```text
//! cargo run -p tessera-sim -- --seed 42 --trace              # replay one seed, every event
//! cargo run --release -p tessera-sim -- --seeds 100000       # soak: many seeds, a summary
//! cargo run --release -p tessera-sim -- --seeds 500 --first-seed 9000 --events 6000
//! cargo run --release -p tessera-sim -- --seeds 100000 --fail-fast  # stop at the first failure
//! ```
//!
//! A failing seed prints `seed=N` with the violated property, the state of every node, and
//! the command that replays it. `cargo test -p tessera-sim` runs a bounded number of seeds
//! (`tests/seeds.rs`) and checks that a replay is identical.

pub mod checker;
mod client;
pub mod kv;
mod liveness;
pub mod network;
pub mod node;
pub mod options;
mod ready;
pub mod rng;
pub mod stats;
pub mod trace;
pub mod world;

use std::panic::{self, AssertUnwindSafe};

pub use checker::{Checker, Property, Violation};
pub use options::Options;
pub use stats::Stats;
pub use trace::TraceMode;

/// The default number of events in a seed's safety phase.
pub const DEFAULT_EVENTS: u64 = 3_000;

/// What one seed did.
#[derive(Debug)]
pub struct SeedReport {
    /// Its options.
    pub options: Options,
    /// Its counters.
    pub stats: Stats,
    /// The captured trace ([`TraceMode::Capture`] only).
    pub trace: String,
}

/// Runs `seed` with `events` events in the safety phase. Panics on a violation, with a
/// message naming the seed.
#[must_use]
pub fn run_seed(seed: u64, events: u64, trace: TraceMode) -> SeedReport {
    let options = Options::draw(seed, events);
    let world = world::World::new(options.clone(), trace);
    let (stats, trace) = world.run();
    SeedReport { options, stats, trace }
}

/// A seed that failed, and why.
#[derive(Debug, Clone)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// Events in its safety phase.
    pub events: u64,
    /// The panic message.
    pub message: String,
}

impl SeedFailure {
    /// The command that replays the failure.
    #[must_use]
    pub fn replay(&self) -> String {
        let events = if self.events == DEFAULT_EVENTS {
            String::new()
        } else {
            format!(" --events {}", self.events)
        };
        format!("cargo run -p tessera-sim -- --seed {}{events} --trace", self.seed)
    }
}

/// Runs `seed` like [`run_seed`], catching a panic as a [`SeedFailure`].
pub fn run_seed_caught(
    seed: u64,
    events: u64,
    trace: TraceMode,
) -> Result<SeedReport, SeedFailure> {
    panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, events, trace))).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic with a non-string payload".to_owned());
        SeedFailure { seed, events, message }
    })
}
