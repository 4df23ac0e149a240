//! `storage-group-commit`: raft-log appends per second and per fsync with 1, 16 and 256
//! concurrent groups on the RocksDB engine, beside the disk's raw fdatasync rate, measured in
//! the same run (bench/README.md). Human-readable lines go to stderr, JSON to stdout.
//!
//! `make bench-storage`, or
//! `cargo run --release -p tessera-bench --bin storage-group-commit [-- --groups 1,16,256]`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tessera_bench::storage_group_commit::{self, Mode, RawWrite};

/// Group commit of the RocksDB raft-log engine vs the disk's raw fsync rate.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Numbers of concurrent groups (one closed-loop client each).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    groups: Vec<usize>,
    /// Seconds measured per case.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of warm-up per case, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Appends in flight per group in store mode, each list entry a separate case (a Raft
    /// leader keeps appending while its previous append is being synced).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    inflight: Vec<usize>,
    /// Payload bytes per append.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Rounds; each runs the raw fsync loop and every case once, so the figures of a round
    /// are side by side (report medians over rounds).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory on the disk under test (default: a temporary directory under /var/tmp).
    /// Must not be a tmpfs, where fsync costs nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let seconds = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    eprintln!(
        "storage-group-commit {}: groups {:?}, in flight per group {:?}, {} s per case after {} s warm-up, {} B payload, \
         {} rounds, dir {} — fsync on (RocksDB WAL synced per write batch)",
        env!("CARGO_PKG_VERSION"),
        args.groups,
        args.inflight,
        args.seconds,
        args.warmup,
        args.payload,
        args.rounds,
        base.display(),
    );
    for round in 1..=args.rounds {
        let scratch = tempfile::Builder::new()
            .prefix("tessera-bench-storage-")
            .tempdir_in(&base)
            .context("creating a scratch directory")?;
        for mode in [RawWrite::Append, RawWrite::Overwrite] {
            let raw = storage_group_commit::raw_fsync(scratch.path(), mode, seconds)?;
            eprintln!(
                "round {round}  raw fdatasync 4 KiB {:<9}  {:>9.0} syncs/s   p50 {:>6} µs  p99 {:>6} µs",
                mode.name(),
                raw.syncs_per_sec(),
                raw.latency_p50.as_micros(),
                raw.latency_p99.as_micros(),
            );
            println!("{}", raw.to_json());
        }
        for &groups in &args.groups {
            let cases = args
                .inflight
                .iter()
                .map(|&inflight| (Mode::Store, inflight))
                .chain(std::iter::once((Mode::Direct, 1)));
            for (mode, inflight) in cases {
                let dir = scratch.path().join(format!("{}-{groups}-{inflight}", mode.name()));
                let (raft, _kv) = tessera_engine_rocks::open(
                    &dir,
                    &tessera_engine_rocks::EngineOptions::default(),
                )
                .with_context(|| format!("opening engines in {}", dir.display()))?;
                let result = storage_group_commit::run_case(
                    &raft,
                    mode,
                    groups,
                    inflight,
                    args.payload,
                    warmup,
                    seconds,
                );
                eprintln!(
                    "round {round}  {:<6} groups={groups:<4} inflight={inflight}  {:>9.0} appends/s  {:>7} \
                     appends/fsync  p50 {:>6} µs  p99 {:>6} µs  CPU {:>4.0}%",
                    mode.name(),
                    result.appends_per_sec(),
                    result
                        .appends_per_fsync()
                        .map_or_else(|| "-".to_owned(), |value| format!("{value:.1}")),
                    result.latency_p50.as_micros(),
                    result.latency_p99.as_micros(),
                    100.0 * result.cpu.as_secs_f64() / result.wall.as_secs_f64(),
                );
                println!("{}", result.to_json());
            }
        }
    }
    Ok(())
}
