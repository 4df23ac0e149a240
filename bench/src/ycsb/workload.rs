//! YCSB core workloads: the operation mixes A–F (plus put-only and get-only), the key
//! choosers (uniform, scrambled zipfian, latest) and the operation stream one client draws.
//!
//! Everything random comes from a seeded [`SplitMix64`]: the same seed, spec and keyspace
//! give the same operations. The zipfian generator is the one of Gray et al., "Quickly
//! generating billion-record synthetic databases" (SIGMOD 1994), as YCSB implements it
//! (`ZipfianGenerator`, `ScrambledZipfianGenerator`, `SkewedLatestGenerator`), with YCSB's
//! constant 0.99.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tessera_raft::SplitMix64;

/// The zipfian constant of YCSB's core workloads.
const ZIPFIAN_THETA: f64 = 0.99;

/// YCSB's scrambled zipfian draws ranks over this many items whatever the record count
/// (and then hashes them into the keyspace), so its zeta is a constant.
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// zeta(10^10, 0.99), YCSB's `ScrambledZipfianGenerator.ZETAN` (checked by a test against
/// [`zeta`]).
const SCRAMBLED_ZETA: f64 = 26.469_028_201_783_02;

/// [`zeta`] sums this many terms exactly and the rest by Euler–Maclaurin; growth of the item
/// count by at most this much is added term by term.
const ZETA_EXACT_TERMS: u64 = 1_000;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadName {
    /// Update heavy: 50% reads, 50% updates, zipfian.
    A,
    /// Read mostly: 95% reads, 5% updates, zipfian.
    B,
    /// Read only: 100% reads, zipfian.
    C,
    /// Read latest: 95% reads, 5% inserts, the newest records most likely.
    D,
    /// Short ranges: 95% scans of 1..=100 records, 5% inserts, zipfian.
    E,
    /// Read-modify-write: 50% reads, 50% read-modify-writes, zipfian.
    F,
    /// 100% updates of existing records, uniform.
    PutOnly,
    /// 100% reads, uniform.
    GetOnly,
}

impl WorkloadName {
    /// The name on the command line and in reports.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::C => "c",
            Self::D => "d",
            Self::E => "e",
            Self::F => "f",
            Self::PutOnly => "put-only",
            Self::GetOnly => "get-only",
        }
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the key of a read, update, scan or read-modify-write is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every existing record equally likely.
    Uniform,
    /// YCSB's scrambled zipfian: a few records (scattered over the key space) are hot.
    Zipfian,
    /// Zipfian over recency: the newest record is the most likely.
    Latest,
}

impl Distribution {
    /// The name on the command line and in reports.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Zipfian => "zipfian",
            Self::Latest => "latest",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a workload does: its records, its operation mix (proportions that add up to 1) and
/// its key distribution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadSpec {
    /// The workload's name.
    pub name: WorkloadName,
    /// Records loaded before the run (keys [`key`]`(0..record_count)`).
    pub record_count: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// How keys are chosen.
    pub distribution: Distribution,
    /// Proportion of reads.
    pub read: f64,
    /// Proportion of updates (blind writes of existing records).
    pub update: f64,
    /// Proportion of inserts (new records past the current end of the keyspace).
    pub insert: f64,
    /// Proportion of scans.
    pub scan: f64,
    /// Proportion of read-modify-writes.
    pub read_modify_write: f64,
    /// Scans read a uniform 1..=`max_scan_len` records.
    pub max_scan_len: u32,
}

impl WorkloadSpec {
    /// The standard YCSB core workload `name` (and put-only, get-only) over `record_count`
    /// records of `value_size` bytes.
    #[must_use]
    pub fn new(name: WorkloadName, record_count: u64, value_size: usize) -> Self {
        let base = Self {
            name,
            record_count,
            value_size,
            distribution: Distribution::Zipfian,
            read: 0.0,
            update: 0.0,
            insert: 0.0,
            scan: 0.0,
            read_modify_write: 0.0,
            max_scan_len: 100,
        };
        match name {
            WorkloadName::A => Self { read: 0.5, update: 0.5, ..base },
            WorkloadName::B => Self { read: 0.95, update: 0.05, ..base },
            WorkloadName::C => Self { read: 1.0, ..base },
            WorkloadName::D => {
                Self { read: 0.95, insert: 0.05, distribution: Distribution::Latest, ..base }
            }
            WorkloadName::E => Self { scan: 0.95, insert: 0.05, ..base },
            WorkloadName::F => Self { read: 0.5, read_modify_write: 0.5, ..base },
            WorkloadName::PutOnly => {
                Self { update: 1.0, distribution: Distribution::Uniform, ..base }
            }
            WorkloadName::GetOnly => {
                Self { read: 1.0, distribution: Distribution::Uniform, ..base }
            }
        }
    }

    /// The same workload with keys chosen by `distribution`.
    #[must_use]
    pub fn with_distribution(self, distribution: Distribution) -> Self {
        Self { distribution, ..self }
    }

    /// The proportions in [`OpKind::ALL`] order.
    fn weights(&self) -> [f64; 5] {
        [self.read, self.update, self.insert, self.scan, self.read_modify_write]
    }
}

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A point read.
    Read,
    /// A blind write of an existing record.
    Update,
    /// A write of a new record.
    Insert,
    /// A range read.
    Scan,
    /// A read then a write of the same record.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in [`OpKind::index`] order.
    pub const ALL: [OpKind; 5] =
        [Self::Read, Self::Update, Self::Insert, Self::Scan, Self::ReadModifyWrite];

    /// The name in reports.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Update => "update",
            Self::Insert => "insert",
            Self::Scan => "scan",
            Self::ReadModifyWrite => "rmw",
        }
    }

    /// The position in [`OpKind::ALL`] (for per-kind arrays).
    #[must_use]
    pub fn index(&self) -> usize {
        match self {
            Self::Read => 0,
            Self::Update => 1,
            Self::Insert => 2,
            Self::Scan => 3,
            Self::ReadModifyWrite => 4,
        }
    }
}

/// One operation for a driver to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `key`.
    Read {
        /// The key.
        key: Bytes,
    },
    /// Overwrite the existing record `key`.
    Update {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Write the new record `key`.
    Insert {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read up to `len` records from `start` on (in key order).
    Scan {
        /// The first key.
        start: Bytes,
        /// How many records at most.
        len: u32,
    },
    /// Read `key`, then write `value` to it.
    ReadModifyWrite {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
}

impl Op {
    /// The operation's kind.
    #[must_use]
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Read { .. } => OpKind::Read,
            Self::Update { .. } => OpKind::Update,
            Self::Insert { .. } => OpKind::Insert,
            Self::Scan { .. } => OpKind::Scan,
            Self::ReadModifyWrite { .. } => OpKind::ReadModifyWrite,
        }
    }
}

/// The SplitMix64 finalizer of `n + γ` (γ the golden-ratio increment): the output of
/// `SplitMix64::new(n).next_u64()`.
///
/// A bijection of `u64`: adding a constant, `x ^= x >> s` and multiplying by an odd
/// constant are each invertible modulo 2^64 (the tests invert it), so distinct inputs give
/// distinct outputs. It also scatters consecutive inputs over the whole range.
fn mix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of record `n`: `user` and 20 zero-padded decimal digits of a bijective 64-bit
/// mix of `n` ([`mix64`], the SplitMix64 finalizer).
///
/// Like YCSB's `hashed` insert order, consecutive records (and so the records a workload
/// inserts) scatter over the whole key space rather than piling up at its end; unlike
/// YCSB's FNV-1a hash, the mix is a bijection, so distinct records always have distinct
/// keys. All keys are 24 bytes, and their order is the order of the mixed numbers.
#[must_use]
pub fn key(n: u64) -> Bytes {
    Bytes::from(format!("user{:020}", mix64(n)))
}

/// The record `n` of the load phase: its [`key`] and a value of `value_size` printable
/// bytes that depends only on `n` and `seed`.
#[must_use]
pub fn load_record(n: u64, value_size: usize, seed: u64) -> (Bytes, Bytes) {
    let mut rng = SplitMix64::new(seed ^ mix64(n));
    (key(n), random_value(&mut rng, value_size))
}

/// `size` printable ASCII bytes (values only need to be incompressible enough not to
/// flatter either system).
fn random_value(rng: &mut SplitMix64, size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let bits = rng.next_u64().to_le_bytes();
        let take = (size - out.len()).min(bits.len());
        out.extend(bits[..take].iter().map(|byte| b' ' + byte % 95));
    }
    Bytes::from(out)
}

/// A uniform draw from `[0, 1)` with 53 random bits.
fn unit(rng: &mut SplitMix64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

/// How many records exist: the loaded ones plus those inserted so far. Shared by all the
/// clients of a run (clones share the count), so inserts of one client are read by others.
///
/// The count moves when an insert is handed out, not when it is acknowledged: a read may,
/// rarely, pick a record whose insert is still in flight and find nothing.
#[derive(Debug, Clone)]
pub struct Keyspace {
    count: Arc<AtomicU64>,
}

impl Keyspace {
    /// A keyspace of `record_count` loaded records, `0..record_count`.
    #[must_use]
    pub fn new(record_count: u64) -> Self {
        Self { count: Arc::new(AtomicU64::new(record_count)) }
    }

    /// How many records exist.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The number of a new record to insert (each number is handed out once).
    #[must_use]
    pub fn next_insert(&self) -> u64 {
        self.count.fetch_add(1, Ordering::Relaxed)
    }
}

/// Σ_{i=from}^{to} i^-θ, term by term.
fn zeta_sum(from: u64, to: u64, theta: f64) -> f64 {
    (from.max(1)..=to).map(|i| (i as f64).powf(-theta)).sum()
}

/// zeta(n, θ) = Σ_{i=1}^{n} i^-θ, the normaliser of a zipfian over `n` items.
///
/// YCSB sums all `n` terms, which takes seconds for 10^8 records and would be paid by every
/// client. Here the first [`ZETA_EXACT_TERMS`] terms are summed and the tail comes from the
/// Euler–Maclaurin formula up to the third derivative, whose error for θ = 0.99 and a tail
/// starting at 1,000 is below 10^-15 (the tests compare it with the plain sum).
fn zeta(n: u64, theta: f64) -> f64 {
    let m = ZETA_EXACT_TERMS;
    if n <= 2 * m {
        return zeta_sum(1, n, theta);
    }
    let (a, b) = (m as f64, n as f64);
    let f = |x: f64| x.powf(-theta);
    let f1 = |x: f64| -theta * x.powf(-theta - 1.0);
    let f3 = |x: f64| -theta * (theta + 1.0) * (theta + 2.0) * x.powf(-theta - 3.0);
    let integral = if (1.0 - theta).abs() < 1e-12 {
        (b / a).ln()
    } else {
        (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta)
    };
    // Σ_{i=m}^{n} f(i) ≈ ∫_m^n f + (f(m) + f(n))/2 + (f'(n) - f'(m))/12 - (f'''(n) - f'''(m))/720.
    let tail = integral + (f(a) + f(b)) / 2.0 + (f1(b) - f1(a)) / 12.0 - (f3(b) - f3(a)) / 720.0;
    zeta_sum(1, m - 1, theta) + tail
}

/// Gray et al.'s zipfian generator over ranks `0..items` (rank 0 the most likely), as YCSB's
/// `ZipfianGenerator`; the item count may grow, and zeta follows incrementally.
#[derive(Debug, Clone)]
struct Zipfian {
    theta: f64,
    /// 1 / (1 - θ).
    alpha: f64,
    /// zeta(2, θ).
    zeta_2: f64,
    /// Invariant: `items >= 1` and `zeta_n == zeta(items, theta)`.
    items: u64,
    zeta_n: f64,
    /// Derived from `items`, `zeta_2` and `zeta_n`.
    eta: f64,
}

impl Zipfian {
    /// Over `items` items, computing zeta.
    fn new(items: u64, theta: f64) -> Self {
        let items = items.max(1);
        Self::with_zeta(items, theta, zeta(items, theta))
    }

    /// Over `items` items whose zeta is known.
    fn with_zeta(items: u64, theta: f64, zeta_n: f64) -> Self {
        let mut zipfian = Self {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_2: zeta_sum(1, 2, theta),
            items: items.max(1),
            zeta_n,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta();
        zipfian
    }

    fn eta(&self) -> f64 {
        // For 1 or 2 items eta is degenerate (0/0), but `next` never reaches it then.
        (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta_2 / self.zeta_n)
    }

    /// Follows the item count to `items` (adding the new terms when it grew a little).
    fn set_items(&mut self, items: u64) {
        let items = items.max(1);
        if items == self.items {
            return;
        }
        if items > self.items && items - self.items <= ZETA_EXACT_TERMS {
            self.zeta_n += zeta_sum(self.items + 1, items, self.theta);
        } else {
            self.zeta_n = zeta(items, self.theta);
        }
        self.items = items;
        self.eta = self.eta();
    }

    /// The rank for the uniform draw `u` in `[0, 1)`.
    fn next(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5_f64.powf(self.theta) {
            1
        } else {
            (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        rank.min(self.items - 1)
    }
}

/// The operation stream of one client: kinds by the spec's proportions, keys by its
/// distribution over the current [`Keyspace`], values from the same seeded generator.
#[derive(Debug, Clone)]
pub struct OpGenerator {
    keyspace: Keyspace,
    rng: SplitMix64,
    /// Cumulative proportions in [`OpKind::ALL`] order, normalised to end at 1.
    cumulative: [f64; 5],
    weights: [f64; 5],
    distribution: Distribution,
    value_size: usize,
    max_scan_len: u32,
    /// YCSB's scrambled zipfian: ranks over 10^10 items, hashed into the keyspace.
    scrambled: Zipfian,
    /// The zipfian over recency, built on first use (its zeta depends on the count).
    latest: Option<Zipfian>,
}

impl OpGenerator {
    /// A generator of `spec`'s operations over `keyspace`, seeded with `seed`.
    ///
    /// # Panics
    /// The spec's proportions are negative, not finite, or all zero.
    #[must_use]
    pub fn new(spec: &WorkloadSpec, keyspace: Keyspace, seed: u64) -> Self {
        let weights = spec.weights();
        assert!(
            weights.iter().all(|w| w.is_finite() && *w >= 0.0),
            "operation proportions must be finite and non-negative: {weights:?}"
        );
        let total: f64 = weights.iter().sum();
        assert!(total > 0.0, "a workload needs at least one operation kind");
        let mut cumulative = [0.0; 5];
        let mut sum = 0.0;
        for (slot, weight) in cumulative.iter_mut().zip(weights) {
            sum += weight / total;
            *slot = sum;
        }
        Self {
            keyspace,
            rng: SplitMix64::new(seed),
            cumulative,
            weights,
            distribution: spec.distribution,
            value_size: spec.value_size,
            max_scan_len: spec.max_scan_len.max(1),
            scrambled: Zipfian::with_zeta(SCRAMBLED_ITEMS, ZIPFIAN_THETA, SCRAMBLED_ZETA),
            latest: None,
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        match self.next_kind() {
            OpKind::Read => Op::Read { key: key(self.next_record()) },
            OpKind::Update => {
                let key = key(self.next_record());
                Op::Update { key, value: self.next_value() }
            }
            OpKind::Insert => {
                let key = key(self.keyspace.next_insert());
                Op::Insert { key, value: self.next_value() }
            }
            OpKind::Scan => {
                let start = key(self.next_record());
                let len = self.rng.range(1, u64::from(self.max_scan_len) + 1);
                Op::Scan { start, len: u32::try_from(len).unwrap_or(self.max_scan_len) }
            }
            OpKind::ReadModifyWrite => {
                let key = key(self.next_record());
                Op::ReadModifyWrite { key, value: self.next_value() }
            }
        }
    }

    fn next_kind(&mut self) -> OpKind {
        let u = unit(&mut self.rng);
        let mut last = OpKind::Read;
        for ((kind, cumulative), weight) in
            OpKind::ALL.into_iter().zip(self.cumulative).zip(self.weights)
        {
            if weight > 0.0 {
                if u < cumulative {
                    return kind;
                }
                last = kind;
            }
        }
        // Rounding left the last cumulative proportion a hair below 1.
        last
    }

    /// The number of an existing record, by the distribution (0 if there are none).
    fn next_record(&mut self) -> u64 {
        let count = self.keyspace.count();
        if count == 0 {
            return 0;
        }
        match self.distribution {
            Distribution::Uniform => self.rng.range(0, count),
            Distribution::Zipfian => {
                let rank = self.scrambled.next(unit(&mut self.rng));
                mix64(rank) % count
            }
            Distribution::Latest => {
                let u = unit(&mut self.rng);
                let zipfian = self.latest.get_or_insert_with(|| Zipfian::new(count, ZIPFIAN_THETA));
                zipfian.set_items(count);
                count - 1 - zipfian.next(u)
            }
        }
    }

    fn next_value(&mut self) -> Bytes {
        random_value(&mut self.rng, self.value_size)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    const OPS: usize = 100_000;

    fn kinds(spec: &WorkloadSpec, seed: u64) -> [usize; 5] {
        let mut generator = OpGenerator::new(spec, Keyspace::new(spec.record_count), seed);
        let mut counts = [0; 5];
        for _ in 0..OPS {
            counts[generator.next_op().kind().index()] += 1;
        }
        counts
    }

    #[test]
    fn mixes_match_their_proportions() {
        let names = [
            WorkloadName::A,
            WorkloadName::B,
            WorkloadName::C,
            WorkloadName::D,
            WorkloadName::E,
            WorkloadName::F,
            WorkloadName::PutOnly,
            WorkloadName::GetOnly,
        ];
        for name in names {
            let spec = WorkloadSpec::new(name, 10_000, 16);
            let total: f64 = spec.weights().iter().sum();
            assert!((total - 1.0).abs() < 1e-12, "{name}: proportions add up to {total}");
            let counts = kinds(&spec, 7);
            for (kind, (count, weight)) in OpKind::ALL.iter().zip(counts.iter().zip(spec.weights()))
            {
                let share = *count as f64 / OPS as f64;
                assert!(
                    (share - weight).abs() < 0.01,
                    "{name} {}: {share} of ops, expected {weight}",
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn standard_mixes() {
        let a = WorkloadSpec::new(WorkloadName::A, 10, 1);
        assert_eq!((a.read, a.update, a.distribution), (0.5, 0.5, Distribution::Zipfian));
        let d = WorkloadSpec::new(WorkloadName::D, 10, 1);
        assert_eq!((d.read, d.insert, d.distribution), (0.95, 0.05, Distribution::Latest));
        let e = WorkloadSpec::new(WorkloadName::E, 10, 1);
        assert_eq!((e.scan, e.insert, e.max_scan_len), (0.95, 0.05, 100));
        let f = WorkloadSpec::new(WorkloadName::F, 10, 1);
        assert_eq!((f.read, f.read_modify_write), (0.5, 0.5));
        let put = WorkloadSpec::new(WorkloadName::PutOnly, 10, 1);
        assert_eq!((put.update, put.distribution), (1.0, Distribution::Uniform));
        let get = WorkloadSpec::new(WorkloadName::GetOnly, 10, 1)
            .with_distribution(Distribution::Zipfian);
        assert_eq!((get.read, get.distribution), (1.0, Distribution::Zipfian));
    }

    #[test]
    fn names_round_trip_through_clap() {
        use clap::ValueEnum;
        for name in WorkloadName::value_variants() {
            assert_eq!(WorkloadName::from_str(name.as_str(), false), Ok(*name));
            assert_eq!(name.to_string(), name.as_str());
        }
        for distribution in Distribution::value_variants() {
            assert_eq!(Distribution::from_str(distribution.as_str(), false), Ok(*distribution));
        }
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    /// Draws `n` record numbers of `spec`'s distribution with no inserts.
    fn records(spec: &WorkloadSpec, n: usize, seed: u64) -> Vec<u64> {
        let mut generator = OpGenerator::new(spec, Keyspace::new(spec.record_count), seed);
        (0..n).map(|_| generator.next_record()).collect()
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let spec = WorkloadSpec::new(WorkloadName::C, 1_000, 1);
        let drawn = records(&spec, OPS, 3);
        assert!(drawn.iter().all(|n| *n < 1_000));
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for n in drawn {
            *counts.entry(n).or_default() += 1;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        let uniform_share = OPS / 1_000;
        assert!(top > 20 * uniform_share, "hottest record drawn {top} times");
        // Scrambled: the hottest records are not simply the first ones.
        let mut hottest: Vec<(u64, usize)> = counts.into_iter().collect();
        hottest.sort_by_key(|(n, count)| (std::cmp::Reverse(*count), *n));
        assert!(hottest.iter().take(10).any(|(n, _)| *n >= 10), "{:?}", &hottest[..10]);
    }

    #[test]
    fn uniform_covers_the_keyspace_evenly() {
        let spec = WorkloadSpec::new(WorkloadName::GetOnly, 100, 1);
        let drawn = records(&spec, OPS, 5);
        let mut counts = [0usize; 100];
        for n in drawn {
            counts[usize::try_from(n).expect("below 100")] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min > Some(&800) && max < Some(&1_200), "{min:?}..{max:?}");
    }

    #[test]
    fn latest_favours_recent_records() {
        let spec = WorkloadSpec::new(WorkloadName::D, 1_000, 1);
        let drawn = records(&spec, OPS, 11);
        assert!(drawn.iter().all(|n| *n < 1_000));
        let newest_tenth = drawn.iter().filter(|n| **n >= 900).count();
        // zeta(100) / zeta(1000) ≈ 0.69 of draws fall on the newest 100 records.
        assert!(newest_tenth > OPS / 2, "{newest_tenth} draws among the newest tenth");
        let newest = drawn.iter().filter(|n| **n == 999).count();
        assert!(newest > OPS / 10, "newest record drawn {newest} times");
    }

    #[test]
    fn inserts_extend_the_keyspace_and_are_read() {
        let spec = WorkloadSpec::new(WorkloadName::D, 1_000, 8);
        let keyspace = Keyspace::new(1_000);
        let mut first = OpGenerator::new(&spec, keyspace.clone(), 1);
        let mut second = OpGenerator::new(&spec, keyspace.clone(), 2);
        let inserted: HashSet<Bytes> = (1_000..1_000 + 10_000).map(key).collect();
        let (mut inserts, mut reads_of_inserted) = (HashSet::new(), 0);
        for i in 0..20_000 {
            let generator = if i % 2 == 0 { &mut first } else { &mut second };
            match generator.next_op() {
                Op::Insert { key, value } => {
                    assert_eq!(value.len(), 8);
                    assert!(inserted.contains(&key));
                    assert!(inserts.insert(key), "an insert key was handed out twice");
                }
                Op::Read { key } => reads_of_inserted += usize::from(inserted.contains(&key)),
                other => panic!("workload d does not {other:?}"),
            }
        }
        assert_eq!(keyspace.count(), 1_000 + inserts.len() as u64);
        assert!(inserts.len() > 800 && inserts.len() < 1_200, "{} inserts", inserts.len());
        // The newest records are the most read, and those are the inserted ones.
        assert!(reads_of_inserted > 19_000 / 4, "{reads_of_inserted} reads of inserted records");
    }

    #[test]
    fn same_seed_same_ops() {
        let spec = WorkloadSpec::new(WorkloadName::E, 1_000, 32);
        let run = |seed| {
            let mut generator = OpGenerator::new(&spec, Keyspace::new(1_000), seed);
            (0..1_000).map(|_| generator.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn scans_and_values_have_their_sizes() {
        let spec = WorkloadSpec::new(WorkloadName::E, 1_000, 100);
        let mut generator = OpGenerator::new(&spec, Keyspace::new(1_000), 9);
        let mut lengths = HashSet::new();
        for _ in 0..10_000 {
            match generator.next_op() {
                Op::Scan { len, .. } => {
                    assert!((1..=100).contains(&len));
                    lengths.insert(len);
                }
                Op::Insert { value, .. } => {
                    assert_eq!(value.len(), 100);
                    assert!(value.iter().all(|b| (b' '..=b'~').contains(b)));
                }
                other => panic!("workload e does not {other:?}"),
            }
        }
        assert_eq!(lengths.len(), 100, "every scan length 1..=100 occurs");
    }

    #[test]
    fn load_records_are_deterministic() {
        let (k, v) = load_record(5, 256, 1);
        assert_eq!(k, key(5));
        assert_eq!(v.len(), 256);
        assert_eq!(load_record(5, 256, 1), (k.clone(), v.clone()));
        assert_ne!(load_record(5, 256, 2).1, v);
        assert_ne!(load_record(6, 256, 1).1, v);
    }

    /// The inverse of `x * c` for odd `c`, by Newton's iteration (each step doubles the
    /// correct low bits).
    fn inverse_odd(c: u64) -> u64 {
        let mut inverse = c;
        for _ in 0..6 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(inverse)));
        }
        inverse
    }

    /// The inverse of `x ^= x >> shift`.
    fn unxorshift(y: u64, shift: u32) -> u64 {
        let mut x = y;
        for _ in 0..=64 / shift {
            x = y ^ (x >> shift);
        }
        x
    }

    fn unmix64(z: u64) -> u64 {
        let mut x = unxorshift(z, 31);
        x = unxorshift(x.wrapping_mul(inverse_odd(0x94D0_49BB_1331_11EB)), 27);
        x = unxorshift(x.wrapping_mul(inverse_odd(0xBF58_476D_1CE4_E5B9)), 30);
        x.wrapping_sub(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn key_mix_is_a_bijection() {
        let mut rng = SplitMix64::new(0);
        for n in (0..10_000).chain((0..10_000).map(|_| rng.next_u64())).chain([u64::MAX]) {
            assert_eq!(unmix64(mix64(n)), n);
        }
        assert_eq!(mix64(7), SplitMix64::new(7).next_u64());
    }

    #[test]
    fn keys_are_distinct() {
        let mixed: HashSet<u64> = (0..1_000_000).map(mix64).collect();
        assert_eq!(mixed.len(), 1_000_000);
        let keys: HashSet<Bytes> = (0..10_000).map(key).collect();
        assert_eq!(keys.len(), 10_000);
        assert!(keys.iter().all(|k| k.len() == 24 && k.starts_with(b"user")));
    }

    #[test]
    fn zeta_matches_the_plain_sum() {
        for n in [1, 2, 10, 2_000, 2_001, 5_000, 123_456, 1_000_000] {
            let (fast, plain) = (zeta(n, ZIPFIAN_THETA), zeta_sum(1, n, ZIPFIAN_THETA));
            assert!((fast - plain).abs() < 1e-9 * plain, "zeta({n}): {fast} vs {plain}");
        }
        let ycsb = zeta(SCRAMBLED_ITEMS, ZIPFIAN_THETA);
        assert!((ycsb - SCRAMBLED_ZETA).abs() < 1e-9, "zeta(10^10) = {ycsb}");
        // Growing term by term and in one jump agree.
        let mut zipfian = Zipfian::new(10_000, ZIPFIAN_THETA);
        for items in (10_000..=20_000).step_by(500) {
            zipfian.set_items(items);
        }
        let jumped = Zipfian::new(20_000, ZIPFIAN_THETA);
        assert!((zipfian.zeta_n - jumped.zeta_n).abs() < 1e-9);
        assert!((zipfian.eta - jumped.eta).abs() < 1e-9);
    }

    #[test]
    fn tiny_keyspaces() {
        for count in [0, 1, 2, 3] {
            for name in [WorkloadName::A, WorkloadName::D, WorkloadName::GetOnly] {
                let spec = WorkloadSpec::new(name, count, 4).with_distribution(match name {
                    WorkloadName::A => Distribution::Zipfian,
                    WorkloadName::D => Distribution::Latest,
                    _ => Distribution::Uniform,
                });
                let drawn = records(&spec, 1_000, 1);
                assert!(drawn.iter().all(|n| *n < count.max(1)), "{name} over {count}");
            }
        }
    }
}
