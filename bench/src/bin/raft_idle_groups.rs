//! `raft-idle-groups`: CPU and messages per virtual second of many idle three-replica groups
//! in one process, all awake versus all quiesced (bench/README.md). Human-readable results go
//! to stderr, one JSON object per mode to stdout.
//!
//! `cargo run --release -p tessera-bench --bin raft-idle-groups [-- --groups N --seconds S]`

use clap::Parser;
use tessera_bench::cpu;
use tessera_bench::raft_idle_groups::{Groups, Mode, TICKS_PER_SECOND, Window};

/// Idle Raft groups: CPU and messages per second of virtual time, awake vs quiesced.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Three-replica groups in the process.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    groups: u64,
    /// Virtual seconds measured in each mode (10 ticks each).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Virtual seconds of unmeasured warm-up before each mode.
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
}

fn main() {
    let args = Args::parse();
    let started = std::time::Instant::now();
    let mut groups = Groups::new(args.groups);
    let election_ticks = groups.elect();
    eprintln!(
        "{} groups ({} replicas) elected in {election_ticks} ticks ({} led by replica 1), \
         set up in {:.1} s, RSS {} MiB",
        args.groups,
        args.groups * 3,
        groups.led_by_replica_one(),
        started.elapsed().as_secs_f64(),
        rss_mib(),
    );

    groups.run_ticks(Mode::Active, args.warmup_seconds * TICKS_PER_SECOND);
    let active = groups.measure(Mode::Active, args.seconds * TICKS_PER_SECOND);
    report(&active);

    let quiesce = groups.quiesce();
    eprintln!(
        "quiesce: {} messages, {} readys for {} groups",
        quiesce.messages, quiesce.readys, args.groups
    );
    groups.run_ticks(Mode::Quiesced, args.warmup_seconds * TICKS_PER_SECOND);
    let quiesced = groups.measure(Mode::Quiesced, args.seconds * TICKS_PER_SECOND);
    report(&quiesced);

    eprintln!(
        "quiesced / active CPU: {:.4}  (peak RSS {} MiB)",
        quiesced.cpu.as_secs_f64() / active.cpu.as_secs_f64(),
        cpu::peak_rss_bytes().unwrap_or(0) >> 20,
    );
}

fn report(window: &Window) {
    eprintln!(
        "{:<8} {:>6.0} virtual s: {:>9.3} CPU ms per virtual s ({:>8.4} µs per group), \
         {:>9.0} messages/s, {:>9.0} readys/s, {:>9.0} replica ticks/s  ({:.2} s CPU, {:.2} s \
         wall)",
        window.mode.name(),
        window.virtual_seconds(),
        window.cpu_ms_per_virtual_sec(),
        window.cpu_ms_per_virtual_sec() * 1e3 / window.groups as f64,
        window.messages_per_virtual_sec(),
        window.readys_per_virtual_sec(),
        window.replica_ticks as f64 / window.virtual_seconds(),
        window.cpu.as_secs_f64(),
        window.wall.as_secs_f64(),
    );
    println!("{}", window.to_json(cpu::rss_bytes().unwrap_or(0)));
}

fn rss_mib() -> u64 {
    cpu::rss_bytes().unwrap_or(0) >> 20
}
