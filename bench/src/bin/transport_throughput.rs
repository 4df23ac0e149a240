//! `transport-throughput`: small Raft messages per second and MB/s between two QUIC
//! transports on loopback, batching on and off; and the cost of heartbeats for 10,000
//! ranges, coalesced vs one message per range (bench/README.md). Human-readable lines go to
//! stderr, JSON to stdout.
//!
//! `make bench-transport`, or
//! `cargo run --release -p tessera-bench --bin transport-throughput [-- --seconds 5]`

use std::time::Duration;

use clap::Parser;
use tessera_bench::transport_throughput;
use tessera_transport::BatcherConfig;

/// Loopback QUIC transport throughput and heartbeat cost.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds measured per Raft case.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Undelivered messages the producer allows itself.
    #[arg(long, default_value_t = 50_000)]
    window: u64,
    /// Ranges, each sending one heartbeat per heartbeat round.
    #[arg(long, default_value_t = 10_000)]
    ranges: usize,
    /// Milliseconds between heartbeat rounds: the default Raft tick (100 ms) times the default
    /// heartbeat interval (2 ticks).
    #[arg(long, default_value_t = 200)]
    heartbeat_interval_ms: u64,
    /// Heartbeat rounds per heartbeat case.
    #[arg(long, default_value_t = 50)]
    ticks: u64,
    /// Run only the heartbeat cases.
    #[arg(long)]
    skip_raft: bool,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let seconds = Duration::from_secs_f64(args.seconds);
    eprintln!(
        "transport-throughput {}: loopback, 2 nodes in one process, {} tokio workers; raft: 1-entry \
         appends of 64 B, window {}, {} s per case after 1 s warm-up; heartbeats: {} ranges every \
         {} ms for {} rounds",
        env!("CARGO_PKG_VERSION"),
        args.workers,
        args.window,
        args.seconds,
        args.ranges,
        args.heartbeat_interval_ms,
        args.ticks
    );
    runtime.block_on(async {
        let cases = if args.skip_raft { Vec::new() } else { vec![
            ("batching", BatcherConfig::default()),
            ("no-batching", BatcherConfig { batch_msgs_max: 1, ..BatcherConfig::default() }),
        ]};
        for (case, batcher) in cases {
            let result = transport_throughput::raft_messages(
                dir.path(),
                case,
                batcher,
                args.window,
                Duration::from_secs(1),
                seconds,
            )
            .await?;
            eprintln!(
                "raft {case:<12} {:>10.0} msgs/s  {:>7.2} MB/s  {:>7.1} msgs/frame  CPU {:>4.0}%",
                result.messages_per_sec(),
                result.mb_per_sec(),
                result.messages as f64 / result.frames.max(1) as f64,
                100.0 * result.cpu.as_secs_f64() / result.wall.as_secs_f64(),
            );
            println!("{}", result.to_json());
        }
        for (case, coalesce) in [("coalesced", true), ("per-range", false)] {
            let result = transport_throughput::heartbeats(
                dir.path(),
                case,
                coalesce,
                args.ranges,
                Duration::from_millis(args.heartbeat_interval_ms),
                args.ticks,
            )
            .await?;
            eprintln!(
                "heartbeats {case:<10} {} ranges: {:>10.0} B/s  {:>6.1} frames/s  CPU {:>5.2}% of one core: receiving node {:.2}%, sending node + driver {:.2}%  ({} delivered)",
                result.ranges,
                result.bytes_per_sec(),
                result.frames as f64 / result.wall.as_secs_f64(),
                result.cpu_percent(),
                result.receiver_cpu_percent(),
                result.sender_cpu_percent(),
                result.delivered,
            );
            println!("{}", result.to_json());
        }
        anyhow::Ok(())
    })
}
