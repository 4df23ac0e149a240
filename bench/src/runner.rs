//! Running a workload: the load phase (records written in batches by several tasks) and the
//! run phase (closed-loop clients, each one operation at a time, optionally paced to a rate),
//! with a warm-up that is not measured, a live progress bar (ops/s and p99 of the last
//! second) and a [`Report`] from the clients' HDR histograms at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::driver::Driver;
use crate::ycsb::stats::{LiveStats, Recorder, Report};
use crate::ycsb::workload::{Keyspace, OpGenerator, WorkloadSpec, key};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent clients (tasks), each with one operation in flight.
    pub clients: usize,
    /// How long the measured part lasts (after the warm-up); with `ops`, whichever ends
    /// first.
    pub duration: Option<Duration>,
    /// How many measured operations in all.
    pub ops: Option<u64>,
    /// How long clients run before measuring starts.
    pub warmup: Duration,
    /// A cap on operations per second over all clients (each client paced to its share).
    pub rate: Option<f64>,
    /// Seeds the clients' generators (client `i` uses `seed + i`).
    pub seed: u64,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What the load phase did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LoadSummary {
    /// Records written.
    pub records: u64,
    /// Seconds it took.
    pub secs: f64,
    /// Records per second.
    pub records_per_sec: f64,
}

fn progress_bar(len: u64, show: bool, what: &str) -> ProgressBar {
    let target =
        if show { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template = format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes records `0..spec.record_count` (keys [`key`]`(n)`, `spec.value_size` bytes each)
/// from `tasks` tasks in batches of `batch`.
///
/// # Errors
/// A batch failed (the system's error).
pub async fn load(
    driver: &Driver,
    spec: &WorkloadSpec,
    tasks: usize,
    batch: usize,
    progress: bool,
) -> Result<LoadSummary> {
    let records = spec.record_count;
    let batch = batch.max(1) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(records, progress, "load");
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks.max(1) {
        let (driver, next, bar) = (driver.clone(), next.clone(), bar.clone());
        let value_size = spec.value_size;
        handles.push(tokio::spawn(async move {
            let mut fill = u64::try_from(task).unwrap_or(0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= records {
                    return Ok::<(), anyhow::Error>(());
                }
                let last = (first + batch).min(records);
                let pairs: Vec<(Bytes, Bytes)> =
                    (first..last).map(|n| (key(n), value(&mut fill, value_size))).collect();
                driver.load(pairs).await?;
                bar.inc(last - first);
            }
        }));
    }
    for handle in handles {
        handle.await??;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "record counts are far below 2^52")]
    let records_per_sec = records as f64 / secs.max(1e-9);
    Ok(LoadSummary { records, secs, records_per_sec })
}

/// A value of `size` printable bytes from a cheap generator (values only need to be
/// incompressible enough not to flatter either system).
fn value(state: &mut u64, size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for byte in z.to_le_bytes() {
            if out.len() < size {
                out.push(b' ' + byte % 95);
            }
        }
    }
    Bytes::from(out)
}

/// Runs `spec` against `driver` with `options`; the report covers the measured part only.
///
/// # Errors
/// Neither a duration nor an op count was given, or a client task panicked.
pub async fn run(
    driver: &Driver,
    spec: &WorkloadSpec,
    keyspace: &Keyspace,
    options: &RunOptions,
) -> Result<Report> {
    if options.duration.is_none() && options.ops.is_none() {
        bail!("give a duration or an op count");
    }
    let clients = options.clients.max(1);
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let end = options.duration.map(|duration| measure_from + duration);
    let budget = Arc::new(AtomicU64::new(options.ops.unwrap_or(u64::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveStats::default());
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let pace = options.rate.filter(|rate| *rate > 0.0).map(|rate| {
        #[allow(clippy::cast_precision_loss, reason = "client counts are small")]
        let per_client = rate / clients as f64;
        Duration::from_secs_f64(1.0 / per_client)
    });

    let mut handles = Vec::new();
    for client in 0..clients {
        let driver = driver.clone();
        let mut generator = OpGenerator::new(spec, keyspace.clone(), options.seed + client as u64);
        let (budget, stop, live, first_error) =
            (budget.clone(), stop.clone(), live.clone(), first_error.clone());
        handles.push(tokio::spawn(async move {
            let mut recorder = Recorder::new(measure_from);
            let mut next_at = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if end.is_some_and(|end| now >= end) {
                    break;
                }
                let measured = now >= measure_from;
                if measured
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                            left.checked_sub(1)
                        })
                        .is_err()
                {
                    break;
                }
                let op = generator.next_op();
                let kind = op.kind();
                let sent = Instant::now();
                let result = driver.execute(op).await;
                let done = Instant::now();
                let latency = done - sent;
                match &result {
                    Ok(()) => live.record(latency),
                    Err(error) => {
                        live.record_error();
                        let mut first =
                            first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if first.is_none() {
                            *first = Some(format!("{error:#}"));
                        }
                    }
                }
                if measured {
                    recorder.record(kind, latency, result.is_ok(), done);
                }
                if let Some(pace) = pace {
                    next_at += pace;
                    tokio::time::sleep_until(next_at).await;
                }
            }
            recorder
        }));
    }

    let total = options.duration.map_or(options.ops.unwrap_or(0), |d| d.as_secs());
    let bar = progress_bar(total, options.progress, driver.name());
    let progress = {
        let (live, bar, stop, budget) = (live.clone(), bar.clone(), stop.clone(), budget.clone());
        let by_time = options.duration.is_some();
        let ops_total = options.ops.unwrap_or(0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let interval = live.take_interval();
                let now = Instant::now();
                let phase = if now < measure_from { "warm-up " } else { "" };
                #[allow(clippy::cast_precision_loss, reason = "display only")]
                let p99_ms = interval.p99_us as f64 / 1000.0;
                bar.set_message(format!(
                    "{phase}{} ops/s  p99 {p99_ms:.2} ms  errors {}",
                    interval.ops, interval.errors
                ));
                if by_time {
                    bar.set_position(now.saturating_duration_since(measure_from).as_secs());
                } else {
                    bar.set_position(ops_total - budget.load(Ordering::Relaxed).min(ops_total));
                }
            }
        })
    };

    let mut recorder = Recorder::new(measure_from);
    let mut last_done = measure_from;
    for handle in handles {
        let client = handle.await?;
        recorder.merge(&client);
        last_done = last_done.max(Instant::now());
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    bar.finish_and_clear();
    let measured = match end {
        Some(end) => end.min(last_done).saturating_duration_since(measure_from),
        None => last_done.saturating_duration_since(measure_from),
    };
    if let Some(error) =
        first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    {
        eprintln!("{}: first error: {error}", driver.name());
    }
    Ok(recorder.report(driver.name(), spec.name.as_str(), clients, measured))
}
