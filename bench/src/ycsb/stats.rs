//! Measuring a run: per-client [`Recorder`]s (HDR histograms of latency per operation kind,
//! error counts and a per-second timeline), merged at the end into a [`Report`]; and
//! [`LiveStats`], shared by all clients, for a progress line once a second.
//!
//! Latencies are recorded in microseconds, from 1 µs to 60 s (longer ones count as 60 s),
//! with 3 significant figures (0.1% relative precision); the timeline's per-second p99 uses
//! 2 (1%). Failed operations are counted per kind; their latency is not recorded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::workload::OpKind;

/// The smallest latency told apart, in microseconds.
const LATENCY_MIN_US: u64 = 1;
/// Latencies above this many microseconds (60 s) are recorded as this.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Precision of the run's histograms.
const SIGNIFICANT_FIGURES: u8 = 3;
/// Precision of the per-second and live histograms (a p99 to 1% is plenty there).
const SECOND_SIGNIFICANT_FIGURES: u8 = 2;
/// A timeline second keeps up to this many latencies as they are (4 bytes each) before it
/// moves to a histogram: most client-seconds of a many-client run hold a few dozen
/// operations, and a histogram for each would cost kilobytes.
const SECOND_SAMPLES_MAX: usize = 256;

/// `latency` in whole microseconds, clamped to what the histograms hold.
fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(LATENCY_MIN_US, LATENCY_MAX_US)
}

/// An empty latency histogram with `sigfig` significant figures. It starts small and grows
/// to the largest latency recorded (at most [`LATENCY_MAX_US`]), so a client that only ever
/// sees milliseconds does not pay for the range up to 60 s.
fn histogram(sigfig: u8) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(LATENCY_MIN_US, 2 * LATENCY_MIN_US, sigfig)
        .expect("1..2 with 2 or 3 significant figures is a valid histogram");
    histogram.auto(true);
    histogram
}

/// Records `us` (already clamped by [`micros`]) into an auto-resizing [`histogram`].
fn record_micros(histogram: &mut Histogram<u64>, us: u64) {
    histogram.record(us).expect("an auto-resizing histogram takes any latency up to 60 s");
}

/// Adds `other` into `into` (both from [`histogram`]).
fn add_histogram(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    into.add(other).expect("an auto-resizing histogram takes any other");
}

/// One operation kind's measurements.
#[derive(Debug, Clone, Default)]
struct KindStats {
    /// Latencies of the operations that succeeded (created on the first).
    latencies: Option<Histogram<u64>>,
    /// Operations that failed.
    errors: u64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Default)]
struct Second {
    /// Operations that succeeded in this second.
    ops: u64,
    /// Their latencies in µs, the first [`SECOND_SAMPLES_MAX`] as they are…
    samples: Vec<u32>,
    /// …and the rest in a histogram.
    overflow: Option<Histogram<u64>>,
}

impl Second {
    fn record(&mut self, us: u64) {
        self.ops += 1;
        self.push(us);
    }

    fn push(&mut self, us: u64) {
        match u32::try_from(us) {
            Ok(us) if self.samples.len() < SECOND_SAMPLES_MAX => self.samples.push(us),
            _ => record_micros(
                self.overflow.get_or_insert_with(|| histogram(SECOND_SIGNIFICANT_FIGURES)),
                us,
            ),
        }
    }

    fn merge(&mut self, other: &Second) {
        self.ops += other.ops;
        for us in &other.samples {
            self.push(u64::from(*us));
        }
        if let Some(overflow) = &other.overflow {
            add_histogram(
                self.overflow.get_or_insert_with(|| histogram(SECOND_SIGNIFICANT_FIGURES)),
                overflow,
            );
        }
    }

    /// The p99 latency in µs (0 without operations), with `scratch` as working space.
    fn p99_us(&self, scratch: &mut Histogram<u64>) -> u64 {
        scratch.reset();
        for us in &self.samples {
            record_micros(scratch, u64::from(*us));
        }
        if let Some(overflow) = &self.overflow {
            add_histogram(scratch, overflow);
        }
        if scratch.is_empty() { 0 } else { scratch.value_at_quantile(0.99) }
    }
}

/// The measurements of one client (not shared: each client task owns one, and they are
/// merged at the end).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The start of the measured part; the timeline counts whole seconds from here.
    start: Instant,
    /// Indexed by [`OpKind::index`].
    kinds: [KindStats; 5],
    /// `timeline[s]` holds the operations that completed in `[start + s, start + s + 1)`.
    timeline: Vec<Second>,
}

impl Recorder {
    /// An empty recorder for a measured part that starts at `start`.
    #[must_use]
    pub fn new(start: Instant) -> Self {
        Self { start, kinds: Default::default(), timeline: Vec::new() }
    }

    /// Records one operation of `kind` that took `latency` and completed at `at` (a failed
    /// one, `!ok`, is only counted). Completions before `start` count in the first second.
    pub fn record(&mut self, kind: OpKind, latency: Duration, ok: bool, at: Instant) {
        let stats = &mut self.kinds[kind.index()];
        if !ok {
            stats.errors += 1;
            return;
        }
        let us = micros(latency);
        record_micros(stats.latencies.get_or_insert_with(|| histogram(SIGNIFICANT_FIGURES)), us);
        let second = usize::try_from(at.saturating_duration_since(self.start).as_secs())
            .unwrap_or(usize::MAX);
        self.second_mut(second).record(us);
    }

    fn second_mut(&mut self, second: usize) -> &mut Second {
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, Second::default);
        }
        &mut self.timeline[second]
    }

    /// Adds `other`'s measurements to these. The timelines are aligned on each recorder's
    /// start (the recorders of one run share it).
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            mine.errors += theirs.errors;
            if let Some(latencies) = &theirs.latencies {
                add_histogram(
                    mine.latencies.get_or_insert_with(|| histogram(SIGNIFICANT_FIGURES)),
                    latencies,
                );
            }
        }
        let later = other.start.saturating_duration_since(self.start).as_secs();
        let earlier = self.start.saturating_duration_since(other.start).as_secs();
        for (second, theirs) in (0u64..).zip(&other.timeline) {
            let aligned = (second + later).saturating_sub(earlier);
            let aligned = usize::try_from(aligned).unwrap_or(usize::MAX);
            self.second_mut(aligned).merge(theirs);
        }
    }

    /// The report of a measured part that lasted `elapsed`, for `system` running `workload`
    /// with `clients` clients. Only kinds with operations are listed; the timeline covers
    /// the whole seconds of `elapsed` (a trailing partial second would read as a dip).
    #[must_use]
    pub fn report(
        &self,
        system: &str,
        workload: &str,
        clients: usize,
        elapsed: Duration,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        let mut all = histogram(SIGNIFICANT_FIGURES);
        let mut errors = 0;
        let mut ops = Vec::new();
        for kind in OpKind::ALL {
            let stats = &self.kinds[kind.index()];
            let count = stats.latencies.as_ref().map_or(0, Histogram::len);
            if count + stats.errors == 0 {
                continue;
            }
            if let Some(latencies) = &stats.latencies {
                add_histogram(&mut all, latencies);
            }
            errors += stats.errors;
            ops.push(OpStats::new(kind.name(), stats.latencies.as_ref(), stats.errors, secs));
        }
        let total = OpStats::new("total", Some(&all), errors, secs);
        let mut scratch = histogram(SECOND_SIGNIFICANT_FIGURES);
        let empty = Second::default();
        let timeline = (0..elapsed.as_secs())
            .map(|second| {
                let bucket = usize::try_from(second)
                    .ok()
                    .and_then(|s| self.timeline.get(s))
                    .unwrap_or(&empty);
                SecondStats { second, ops: bucket.ops, p99_us: bucket.p99_us(&mut scratch) }
            })
            .collect();
        Report {
            system: system.to_owned(),
            workload: workload.to_owned(),
            clients,
            duration_secs: secs,
            total_ops: total.count,
            ops_per_sec: total.ops_per_sec,
            errors,
            ops,
            total,
            timeline,
        }
    }
}

/// One interval of [`LiveStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Their p99 latency in µs (0 without operations).
    pub p99_us: u64,
}

/// Running counts shared by all clients (through an `Arc`), read and reset once a second
/// for a progress line. Cheap enough for every operation: one uncontended-ish lock and an
/// array increment.
#[derive(Debug)]
pub struct LiveStats {
    interval: Mutex<Histogram<u64>>,
    errors: AtomicU64,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveStats {
    /// Empty counts.
    #[must_use]
    pub fn new() -> Self {
        let histogram =
            Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, SECOND_SIGNIFICANT_FIGURES)
                .expect("1 µs ..= 60 s with 2 significant figures is a valid histogram");
        Self { interval: Mutex::new(histogram), errors: AtomicU64::new(0) }
    }

    /// Counts an operation that succeeded after `latency`.
    pub fn record(&self, latency: Duration) {
        let us = micros(latency);
        self.interval.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(us);
    }

    /// Counts an operation that failed.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the previous call (or since creation), and starts a new interval.
    pub fn take_interval(&self) -> Interval {
        let mut histogram = self.interval.lock().unwrap_or_else(PoisonError::into_inner);
        let ops = histogram.len();
        let p99_us = if ops == 0 { 0 } else { histogram.value_at_quantile(0.99) };
        histogram.reset();
        drop(histogram);
        Interval { ops, errors: self.errors.swap(0, Ordering::Relaxed), p99_us }
    }
}

/// One operation kind (or all of them) in a [`Report`]; latencies in µs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpStats {
    /// [`OpKind::name`], or `total`.
    pub kind: String,
    /// Operations that succeeded.
    pub count: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Successful operations per second of the measured part.
    pub ops_per_sec: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile latency.
    pub p90_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
    /// Largest latency.
    pub max_us: u64,
}

impl OpStats {
    fn new(kind: &str, latencies: Option<&Histogram<u64>>, errors: u64, secs: f64) -> Self {
        let count = latencies.map_or(0, Histogram::len);
        let quantile =
            |q: f64| latencies.filter(|h| !h.is_empty()).map_or(0, |h| h.value_at_quantile(q));
        Self {
            kind: kind.to_owned(),
            count,
            errors,
            ops_per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            mean_us: latencies.filter(|h| !h.is_empty()).map_or(0.0, Histogram::mean),
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: latencies.filter(|h| !h.is_empty()).map_or(0, Histogram::max),
        }
    }
}

/// One second of a run's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecondStats {
    /// Whole seconds since the start of the measured part.
    pub second: u64,
    /// Operations that succeeded in this second.
    pub ops: u64,
    /// Their p99 latency in µs (0 without operations).
    pub p99_us: u64,
}

/// The result of one measured run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The system under test (`tessera`, `etcd`).
    pub system: String,
    /// The workload's name.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Length of the measured part.
    pub duration_secs: f64,
    /// Operations that succeeded.
    pub total_ops: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Operations that failed.
    pub errors: u64,
    /// Per operation kind that occurred, in [`OpKind::ALL`] order.
    pub ops: Vec<OpStats>,
    /// All kinds together (kind `total`): the latencies of the whole mix.
    pub total: OpStats,
    /// Per whole second of the measured part.
    pub timeline: Vec<SecondStats>,
}

/// `us` microseconds as milliseconds with 3 decimals.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// `a / b` with 2 decimals, or `-` when there is nothing to divide by.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}", a / b) } else { "-".to_owned() }
}

impl Report {
    /// The kinds then the total row.
    fn rows(&self) -> impl Iterator<Item = &OpStats> {
        self.ops.iter().chain(std::iter::once(&self.total))
    }

    /// A human-readable table: a header line, then one row per operation kind and a total
    /// row with ops/s, latencies in ms and errors.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} - workload {} - {} clients - {:.1} s - {} ops - {:.1} ops/s - {} errors\n",
            self.system,
            self.workload,
            self.clients,
            self.duration_secs,
            self.total_ops,
            self.ops_per_sec,
            self.errors
        );
        let _ = writeln!(
            out,
            "  {:<8}{:>12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>9}",
            "op", "ops/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        for row in self.rows() {
            let _ = writeln!(
                out,
                "  {:<8}{:>12.1}{:>10.3}{:>10}{:>10}{:>10}{:>10}{:>10}{:>9}",
                row.kind,
                row.ops_per_sec,
                row.mean_us / 1000.0,
                ms(row.p50_us),
                ms(row.p90_us),
                ms(row.p99_us),
                ms(row.p999_us),
                ms(row.max_us),
                row.errors
            );
        }
        out
    }
}

/// `a` and `b` side by side per operation kind (and in total): ops/s, p50 and p99 of each,
/// with the ratios a/b (above 1 favours `a` for ops/s, below 1 for latencies).
#[must_use]
pub fn ratio_table(a: &Report, b: &Report) -> String {
    let mut out = format!(
        "A = {} ({} clients), B = {} ({} clients), workload {}; ratio = A/B\n",
        a.system, a.clients, b.system, b.clients, a.workload
    );
    let _ = writeln!(
        out,
        "  {:<8}{:>11}{:>11}{:>7}{:>11}{:>11}{:>7}{:>11}{:>11}{:>7}",
        "op",
        "A ops/s",
        "B ops/s",
        "ratio",
        "A p50 ms",
        "B p50 ms",
        "ratio",
        "A p99 ms",
        "B p99 ms",
        "ratio"
    );
    let mut kinds: Vec<&str> = Vec::new();
    for kind in OpKind::ALL {
        if a.ops.iter().chain(&b.ops).any(|row| row.kind == kind.name()) {
            kinds.push(kind.name());
        }
    }
    kinds.push("total");
    let find = |report: &'_ Report, kind: &str| -> Option<OpStats> {
        report.rows().find(|row| row.kind == kind).cloned()
    };
    for kind in kinds {
        let (x, y) = (find(a, kind), find(b, kind));
        let rate = |row: &Option<OpStats>| row.as_ref().map_or(0.0, |r| r.ops_per_sec);
        let latency = |row: &Option<OpStats>, pick: fn(&OpStats) -> u64| {
            row.as_ref().filter(|r| r.count > 0).map(pick)
        };
        let show = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), ms);
        let lat_ratio = |p: Option<u64>, q: Option<u64>| match (p, q) {
            (Some(p), Some(q)) => ratio(p as f64, q as f64),
            _ => "-".to_owned(),
        };
        let (a50, b50) = (latency(&x, |r| r.p50_us), latency(&y, |r| r.p50_us));
        let (a99, b99) = (latency(&x, |r| r.p99_us), latency(&y, |r| r.p99_us));
        let _ = writeln!(
            out,
            "  {:<8}{:>11.1}{:>11.1}{:>7}{:>11}{:>11}{:>7}{:>11}{:>11}{:>7}",
            kind,
            rate(&x),
            rate(&y),
            ratio(rate(&x), rate(&y)),
            show(a50),
            show(b50),
            lat_ratio(a50, b50),
            show(a99),
            show(b99),
            lat_ratio(a99, b99)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Within HDR's 0.1% (3 significant figures) of `expected`.
    fn close(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) * 1000 <= expected
    }

    #[test]
    fn known_latencies_give_their_percentiles() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        // 1..=1000 ms, one each.
        for i in 1..=1000 {
            recorder.record(OpKind::Read, ms(i), true, start);
        }
        let report = recorder.report("sys", "a", 4, Duration::from_secs(10));
        assert_eq!(report.ops.len(), 1);
        let read = &report.ops[0];
        assert_eq!((read.kind.as_str(), read.count, read.errors), ("read", 1000, 0));
        assert!((read.ops_per_sec - 100.0).abs() < 1e-9);
        assert!((read.mean_us - 500_500.0).abs() < 500.0, "mean {}", read.mean_us);
        for (actual, expected) in [
            (read.p50_us, 500_000),
            (read.p90_us, 900_000),
            (read.p99_us, 990_000),
            (read.p999_us, 999_000),
            (read.max_us, 1_000_000),
        ] {
            assert!(close(actual, expected), "{actual} vs {expected}");
        }
        assert_eq!(report.total.p99_us, read.p99_us);
        assert_eq!((report.total_ops, report.errors, report.clients), (1000, 0, 4));
    }

    #[test]
    fn tiny_and_huge_latencies_are_clamped() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        recorder.record(OpKind::Update, Duration::ZERO, true, start);
        recorder.record(OpKind::Update, Duration::from_secs(3600), true, start);
        let report = recorder.report("sys", "a", 1, Duration::from_secs(1));
        let update = &report.ops[0];
        assert_eq!(update.count, 2);
        assert!(close(update.max_us, LATENCY_MAX_US));
        assert!(update.p50_us <= 1);
    }

    #[test]
    fn errors_are_counted_not_timed() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        recorder.record(OpKind::Update, ms(1), true, start);
        recorder.record(OpKind::Update, ms(500), false, start);
        recorder.record(OpKind::Scan, ms(500), false, start);
        let report = recorder.report("sys", "a", 1, Duration::from_secs(1));
        assert_eq!(report.errors, 2);
        assert_eq!(report.total_ops, 1);
        let kinds: Vec<&str> = report.ops.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["update", "scan"]);
        assert_eq!((report.ops[0].count, report.ops[0].errors), (1, 1));
        assert!(close(report.ops[0].max_us, 1000));
        assert_eq!((report.ops[1].count, report.ops[1].errors, report.ops[1].p99_us), (0, 1, 0));
        assert_eq!(report.timeline[0].ops, 1);
    }

    #[test]
    fn merge_adds() {
        let start = Instant::now();
        let mut a = Recorder::new(start);
        let mut b = Recorder::new(start);
        for _ in 0..90 {
            a.record(OpKind::Read, ms(1), true, start);
        }
        for _ in 0..10 {
            b.record(OpKind::Read, ms(100), true, start + Duration::from_millis(2500));
        }
        b.record(OpKind::Insert, ms(3), true, start);
        b.record(OpKind::Insert, ms(3), false, start);
        a.merge(&b);
        let report = a.report("sys", "d", 2, Duration::from_secs(4));
        assert_eq!((report.total_ops, report.errors), (101, 1));
        let read = &report.ops[0];
        assert_eq!(read.count, 100);
        assert!(close(read.p50_us, 1000) && close(read.p99_us, 100_000));
        assert_eq!((report.ops[1].kind.as_str(), report.ops[1].count), ("insert", 1));
        let per_second: Vec<u64> = report.timeline.iter().map(|s| s.ops).collect();
        assert_eq!(per_second, [91, 0, 10, 0]);
        // The timeline keeps 2 significant figures: 1%.
        assert!(report.timeline[2].p99_us.abs_diff(100_000) <= 1_000, "{:?}", report.timeline);
    }

    #[test]
    fn timeline_buckets_by_whole_second() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        // Second 0: 100 ops of 1 ms; second 1: none; second 2: 1000 ops, 1% of them 50 ms
        // (past the sample limit, so through the overflow histogram); second 3 is partial.
        for _ in 0..100 {
            recorder.record(OpKind::Read, ms(1), true, start + Duration::from_millis(999));
        }
        for i in 0..1000 {
            let latency = if i % 100 == 99 { ms(50) } else { ms(2) };
            recorder.record(OpKind::Read, latency, true, start + Duration::from_millis(2000 + i));
        }
        recorder.record(OpKind::Read, ms(1), true, start + Duration::from_millis(3100));
        let report = recorder.report("sys", "c", 1, Duration::from_millis(3500));
        let seconds: Vec<(u64, u64)> = report.timeline.iter().map(|s| (s.second, s.ops)).collect();
        assert_eq!(seconds, [(0, 100), (1, 0), (2, 1000)]);
        assert!(report.timeline[0].p99_us.abs_diff(1000) <= 10);
        assert_eq!(report.timeline[1].p99_us, 0);
        assert!(report.timeline[2].p99_us.abs_diff(2000) <= 20, "{:?}", report.timeline[2]);
        // The whole run still counts the partial second.
        assert_eq!(report.total_ops, 1101);
    }

    #[test]
    fn live_stats_interval_resets() {
        let live = LiveStats::default();
        for i in 1..=100 {
            live.record(ms(i));
        }
        live.record_error();
        let first = live.take_interval();
        assert_eq!((first.ops, first.errors), (100, 1));
        assert!(first.p99_us.abs_diff(99_000) <= 1000, "{first:?}");
        assert_eq!(live.take_interval(), Interval::default());
        live.record(ms(5));
        let third = live.take_interval();
        assert_eq!((third.ops, third.errors), (1, 0));
        assert!(third.p99_us.abs_diff(5000) <= 50);
    }

    fn sample(system: &str, ops_per_sec: f64) -> Report {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        for i in 0..100 {
            recorder.record(OpKind::Read, ms(1 + i % 3), true, start);
            recorder.record(OpKind::Update, ms(2 + i % 5), true, start);
        }
        let secs = 200.0 / ops_per_sec;
        recorder.report(system, "a", 8, Duration::from_secs_f64(secs))
    }

    #[test]
    fn tables_name_every_kind() {
        let (a, b) = (sample("tessera", 200.0), sample("etcd", 100.0));
        let table = a.table();
        assert!(table.starts_with("tessera - workload a - 8 clients"), "{table}");
        for word in ["ops/s", "p99.9 ms", "read", "update", "total", "200.0"] {
            assert!(table.contains(word), "{word} missing from\n{table}");
        }
        let ratios = ratio_table(&a, &b);
        assert!(ratios.contains("A = tessera") && ratios.contains("B = etcd"), "{ratios}");
        let total = ratios.lines().find(|l| l.trim_start().starts_with("total")).unwrap_or("");
        assert!(total.contains("2.00") && total.contains("1.00"), "{ratios}");
        assert_eq!(ratios.lines().count(), 5, "{ratios}");
        let json = serde_json::to_string(&a).expect("a report serializes");
        let back: Report = serde_json::from_str(&json).expect("and reads back");
        // serde_json parses floats to within an ulp, not always to the same bits.
        assert_eq!(
            (&back.ops[0].kind, back.total.p99_us, &back.timeline),
            (&a.ops[0].kind, a.total.p99_us, &a.timeline)
        );
        assert!((back.ops[1].mean_us - a.ops[1].mean_us).abs() < 1e-9);
    }
}
