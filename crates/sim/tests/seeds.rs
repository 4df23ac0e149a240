//! CI: a bounded number of seeds must pass every safety and liveness check, and a seed must
//! replay identically. A failure names the seed; replay it with
//! `cargo run -p tessera-sim -- --seed N --trace`.

use tessera_sim::{DEFAULT_EVENTS, TraceMode, run_seed, run_seed_caught};

/// Seeds checked in CI, in two halves so that they use both cores: with the long seeds, about
/// 85 s of CPU in the dev profile, under a minute on two idle cores. The soak
/// (`cargo run --release -p tessera-sim -- --seeds 100000`) explores further.
const CI_SEEDS: u64 = 24_000;

/// Longer histories (more compactions, membership changes and elections per seed).
const LONG_SEEDS: u64 = 300;
const LONG_EVENTS: u64 = 30_000;

fn run_range(first: u64, count: u64, events: u64) {
    let mut failures = Vec::new();
    for seed in first..first + count {
        if let Err(failure) = run_seed_caught(seed, events, TraceMode::Off) {
            failures.push(format!(
                "seed={seed}: {}\n  replay: {}",
                failure.message,
                failure.replay()
            ));
        }
    }
    assert!(failures.is_empty(), "{} failing seeds:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn seeds_pass_first_half() {
    run_range(1, CI_SEEDS / 2, DEFAULT_EVENTS);
}

#[test]
fn seeds_pass_second_half() {
    run_range(1 + CI_SEEDS / 2, CI_SEEDS / 2, DEFAULT_EVENTS);
}

#[test]
fn long_seeds_pass() {
    run_range(1_000_001, LONG_SEEDS, LONG_EVENTS);
}

#[test]
fn a_seed_replays_identically() {
    for seed in [7, 4242] {
        let first = run_seed(seed, DEFAULT_EVENTS, TraceMode::Capture);
        let second = run_seed(seed, DEFAULT_EVENTS, TraceMode::Capture);
        assert!(first.trace.lines().count() > 1_000, "the trace records every event");
        assert_eq!(first.stats, second.stats, "seed {seed}: same summary");
        assert!(first.trace == second.trace, "seed {seed}: same trace");
        // Tracing must not change the run.
        let quiet = run_seed(seed, DEFAULT_EVENTS, TraceMode::Off);
        assert_eq!(first.stats, quiet.stats, "seed {seed}: tracing changes nothing");
    }
}
