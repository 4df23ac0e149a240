//! `tessera-sim`: replay one seed, or run many and print a summary.
//!
//! ```text
//! tessera-sim --seed N [--trace] [--events E]
//! tessera-sim [--seeds K] [--first-seed S] [--events E] [--fail-fast]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tessera_sim::{DEFAULT_EVENTS, Options, Stats, TraceMode, run_seed_caught};

const USAGE: &str = "usage: tessera-sim --seed N [--trace] [--events E]\n       \
                     tessera-sim [--seeds K] [--first-seed S] [--events E] [--fail-fast]";

#[derive(Debug)]
struct Args {
    seed: Option<u64>,
    seeds: u64,
    first_seed: u64,
    events: u64,
    trace: bool,
    fail_fast: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        seeds: 100,
        first_seed: 1,
        events: DEFAULT_EVENTS,
        trace: false,
        fail_fast: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = iter.next().ok_or_else(|| format!("{name} needs a value"))?;
            value.parse().map_err(|e| format!("{name} {value}: {e}"))
        };
        match flag.as_str() {
            "--seed" => args.seed = Some(number("--seed")?),
            "--seeds" => args.seeds = number("--seeds")?,
            "--first-seed" => args.first_seed = number("--first-seed")?,
            "--events" => args.events = number("--events")?,
            "--trace" => args.trace = true,
            "--fail-fast" => args.fail_fast = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Wall-clock time of the whole run, for the summary only: nothing simulated reads it.
#[expect(clippy::disallowed_methods, reason = "the summary reports real elapsed time")]
fn wall_clock() -> Instant {
    Instant::now()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("{error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        return replay(seed, &args);
    }
    // Many seeds: the FAIL line carries the message; print only where it panicked.
    std::panic::set_hook(Box::new(|info| {
        if let Some(location) = info.location() {
            eprintln!("panicked at {location}");
        }
    }));
    let started = wall_clock();
    let mut total = Stats::default();
    let mut failures = Vec::new();
    let last = args.first_seed + args.seeds;
    let mut run = 0;
    for seed in args.first_seed..last {
        run += 1;
        match run_seed_caught(seed, args.events, TraceMode::Off) {
            Ok(report) => total.add(&report.stats),
            Err(failure) => {
                println!("FAIL seed={seed}: {}", failure.message);
                println!("  options: {}", Options::draw(seed, args.events));
                println!("  replay: {}", failure.replay());
                failures.push(failure);
                if args.fail_fast {
                    break;
                }
            }
        }
        let done = seed - args.first_seed + 1;
        if done % 1000 == 0 && done < args.seeds {
            eprintln!("... {done} seeds, {} failed, {:.1?}", failures.len(), started.elapsed());
        }
    }
    print_summary(&total, run, failures.len(), started.elapsed());
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        let seeds: Vec<String> = failures.iter().map(|f| f.seed.to_string()).collect();
        println!("failed seeds: {}", seeds.join(" "));
        ExitCode::FAILURE
    }
}

fn replay(seed: u64, args: &Args) -> ExitCode {
    println!("{}", Options::draw(seed, args.events));
    let mode = if args.trace { TraceMode::Print } else { TraceMode::Off };
    let started = wall_clock();
    match run_seed_caught(seed, args.events, mode) {
        Ok(report) => {
            print_summary(&report.stats, 1, 0, started.elapsed());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAIL seed={seed}: {}", failure.message);
            println!("replay: {}", failure.replay());
            ExitCode::FAILURE
        }
    }
}

fn print_summary(stats: &Stats, run: u64, failed: usize, elapsed: Duration) {
    println!(
        "summary: seeds_run={run} failed={failed} wall_time={elapsed:.2?}\n  (passed seeds) {stats}"
    );
}
