//! `raft-throughput`: commit throughput of our Raft core, 3 replicas in memory on one thread,
//! driven exactly like the raft-rs reference (`bench/raft-rs-baseline`). Human-readable
//! results go to stderr, one JSON object per in-flight target to stdout.
//!
//! `cargo run --release -p tessera-bench --bin raft-throughput [-- W ...]`

use clap::Parser;
use tessera_bench::raft_throughput::{self, DEFAULT_INFLIGHT};

/// Commit throughput of tessera-raft: 3 in-memory replicas on one thread (bench/README.md).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// In-flight targets W (proposals outstanding); each runs on a fresh cluster.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    inflight: Vec<u64>,
    /// Measured entries for every W, instead of 100,000 for W = 1 and 1,000,000 otherwise.
    #[arg(long)]
    entries: Option<u64>,
}

fn main() {
    let args = Args::parse();
    let targets = if args.inflight.is_empty() { DEFAULT_INFLIGHT.to_vec() } else { args.inflight };
    for inflight in targets {
        let entries = args.entries.unwrap_or_else(|| raft_throughput::entries_for(inflight));
        let result = raft_throughput::run(inflight, entries);
        eprintln!(
            "tessera-raft {}  W={inflight:<5} entries={:<8} {:>12.0} entries/s  {:>8.1} CPU \
             ns/entry  ({:.2} s wall, {:.2} s CPU, peak RSS {} MiB)",
            env!("CARGO_PKG_VERSION"),
            result.entries,
            result.entries_per_sec(),
            result.cpu_ns_per_entry(),
            result.wall.as_secs_f64(),
            result.cpu.as_secs_f64(),
            result.peak_rss >> 20,
        );
        println!("{}", result.to_json());
    }
}
