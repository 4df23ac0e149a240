//! `tessera playground --demo`: a narrated tour of the cluster the playground just started.
//!
//! 1. **Load**: [`KEYS`] keys `demo/000000…` with [`VALUE_BYTES`]-byte values, in batches of
//!    [`BATCH`] from [`LOADERS`] concurrent tasks, with a progress bar (plain lines when
//!    stdout is not a terminal).
//! 2. **Split and spread**: the placement driver is asked to split the key space into
//!    ranges (one split operator per range at a time, halving the pending keys), then the
//!    demo watches its leader balancer until every store leads a range or [`SPREAD_WAIT`]
//!    passes.
//! 3. **Failover**: a background writer keeps writing while the store leading the most
//!    ranges is killed (SIGKILL); writes per second are printed while leadership moves.
//! 4. **Recovery**: the store is restarted with the same arguments and data directory; the
//!    demo waits until it leads a range again (its replicas caught up and the balancer gave
//!    it leadership back) or [`RECOVERY_WAIT`] passes.
//! 5. **Verify**: every loaded key and every write the background writer saw acknowledged is
//!    read back and compared.
//!
//! The demo never stops the cluster: a failure is returned to the playground, which says so
//! and keeps serving. The playground side is [`DemoCluster`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use parking_lot::Mutex;
use tessera_client::{ClientConfig, RawClient};
use tessera_wire::placement::{OperatorStep, PlacementRequest, PlacementResponse, RangeRoute};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::profile::Profile;

/// Keys loaded in step 1.
pub const KEYS: usize = 20_000;
/// Bytes per loaded value.
pub const VALUE_BYTES: usize = 256;
/// Keys per `batch_put`.
pub const BATCH: usize = 200;
/// Concurrent loading tasks (and background writer tasks).
pub const LOADERS: usize = 4;
/// How long step 2 waits for the splits, and then for every store to lead a range.
pub const SPREAD_WAIT: Duration = Duration::from_secs(30);
/// How long step 3 waits for the killed store's ranges to elect new leaders.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(20);
/// How long step 4 waits for the restarted store to lead a range again.
pub const RECOVERY_WAIT: Duration = Duration::from_secs(30);
/// Seconds of writes-per-second lines printed after the kill.
const FAILOVER_SECONDS: u32 = 5;
/// How long one placement call of the demo may take, retries included.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per `batch_get` when reading back.
const READ_BATCH: usize = 500;

/// What the demo needs from the cluster it runs on (the playground implements it).
pub trait DemoCluster {
    /// Where the cluster is.
    fn profile(&self) -> &Profile;
    /// The ids of the stores.
    fn stores(&self) -> Vec<u64>;
    /// Kills store `id` with SIGKILL and reaps it.
    ///
    /// # Errors
    /// No such store, or it could not be killed.
    fn kill_store(&mut self, id: u64) -> Result<()>;
    /// Starts store `id` again with the same arguments and data directory and waits for its
    /// readiness line.
    ///
    /// # Errors
    /// No such store, or it did not start.
    fn restart_store(&mut self, id: u64) -> Result<()>;
}

/// Runs the demo on `cluster`, narrating on stdout.
///
/// # Errors
/// A step that failed (the message says which and why); the cluster is left running.
pub fn run(cluster: &mut dyn DemoCluster) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo")
        .enable_all()
        .build()
        .context("starting the demo's async runtime")?;
    let profile = cluster.profile().clone();
    let mut stores = cluster.stores();
    stores.sort_unstable();
    let started = Instant::now();
    let client = runtime.block_on(connect(&profile))?;
    let demo = Demo { client, stores };

    println!("\n== demo: what this cluster does, step by step ==");
    runtime.block_on(demo.load())?;
    runtime.block_on(demo.split_and_spread())?;
    let acked = if demo.stores.len() >= 3 {
        let writer = Writer::start(&runtime, &demo.client);
        let result = demo.failover(&runtime, cluster, &writer);
        let (acked, failed, last_error) = runtime.block_on(writer.stop());
        result?;
        let mut line = format!(
            "the background writer stopped: {} writes acknowledged",
            thousands(acked.len())
        );
        if failed > 0 {
            let _ =
                write!(line, ", {failed} gave up (last error: {})", last_error.unwrap_or_default());
        }
        println!("{line}");
        acked
    } else {
        println!(
            "\nSteps 3 and 4 (killing and restarting a store) need at least 3 stores: with {} \
             a range would lose its quorum. Skipped.",
            demo.stores.len()
        );
        Vec::new()
    };
    runtime.block_on(demo.verify(&acked))?;
    println!(
        "\ndemo finished in {:.1} s. Try, from this directory:",
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()
        .map_or_else(|_| "tessera".to_owned(), |path| path.display().to_string());
    if has_kv_command() {
        println!("  {exe} kv put a 1\n  {exe} kv get a");
    }
    println!("  {exe} cluster status\n  {exe} range list");
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Whether this binary has `tessera kv …` (the closing lines name only commands that exist).
fn has_kv_command() -> bool {
    use clap::CommandFactory as _;
    crate::Cli::command().find_subcommand("kv").is_some()
}

async fn connect(profile: &Profile) -> Result<RawClient> {
    let members = profile.members()?;
    RawClient::connect(&members, ClientConfig::new(profile.cluster_id, profile.certs_dir.clone()))
        .await
        .context("connecting the demo's client")
}

/// The `i`th loaded key.
fn key_of(i: usize) -> Bytes {
    Bytes::from(format!("demo/{i:06}"))
}

/// The value loaded at the `i`th key: its index, then a letter repeated.
fn value_of(i: usize) -> Bytes {
    let mut value = format!("value {i:06} ").into_bytes();
    let fill = b'a' + u8::try_from(i % 26).unwrap_or(0);
    value.resize(VALUE_BYTES, fill);
    Bytes::from(value)
}

/// The key of the background writer's `seq`th write: next to a loaded key, so the writes
/// go to every range.
fn written_key(seq: u64) -> Bytes {
    let index = seq.wrapping_mul(7_919) % KEYS as u64;
    Bytes::from(format!("demo/{index:06}/w{seq:08}"))
}

fn written_value(seq: u64) -> Bytes {
    Bytes::from(format!("written during the failover, #{seq}"))
}

/// `12345` as `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Per store: replicas held and ranges led.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Spread {
    ranges: usize,
    /// store -> (replicas, leaders)
    stores: BTreeMap<u64, (usize, usize)>,
    leaderless: usize,
}

impl Spread {
    fn of(routes: &[RangeRoute], stores: &[u64]) -> Self {
        let mut spread = Self {
            ranges: routes.len(),
            stores: stores.iter().map(|id| (*id, (0, 0))).collect(),
            leaderless: 0,
        };
        for route in routes {
            for replica in &route.descriptor.replicas {
                spread.stores.entry(replica.store_id.0).or_default().0 += 1;
            }
            match route.leader {
                Some(leader) => spread.stores.entry(leader.store_id.0).or_default().1 += 1,
                None => spread.leaderless += 1,
            }
        }
        spread
    }

    fn leaders(&self, store: u64) -> usize {
        self.stores.get(&store).map_or(0, |(_, leaders)| *leaders)
    }

    /// The store leading the most ranges (the lowest id among equals).
    fn busiest(&self) -> Option<u64> {
        self.stores
            .iter()
            .max_by_key(|(id, (_, leaders))| (*leaders, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// A small table, `down` marked as killed.
    fn table(&self, down: Option<u64>) -> String {
        let mut out = format!("  {} ranges", self.ranges);
        if self.leaderless > 0 {
            let _ = write!(out, " ({} electing a leader)", self.leaderless);
        }
        out.push('\n');
        let _ = writeln!(out, "  {:<8} {:>8} {:>8}", "STORE", "REPLICAS", "LEADERS");
        for (id, (replicas, leaders)) in &self.stores {
            let note = if down == Some(*id) { "  (killed)" } else { "" };
            let _ = writeln!(
                out,
                "  {id:<8} {replicas:>8} {leaders:>8}  {}{note}",
                "#".repeat(*leaders)
            );
        }
        out
    }
}

struct Demo {
    client: RawClient,
    stores: Vec<u64>,
}

impl Demo {
    async fn placement(&self, request: PlacementRequest) -> Result<PlacementResponse> {
        let what = format!("{request:?}");
        let what = what.split([' ', '{']).next().unwrap_or("").to_owned();
        self.client
            .placement()
            .call(request, PLACEMENT_TIMEOUT)
            .await
            .map_err(|error| anyhow!("placement driver ({what}): {error}"))
    }

    async fn routes(&self) -> Result<Vec<RangeRoute>> {
        match self
            .placement(PlacementRequest::ScanRanges {
                start_key: Bytes::new(),
                end_key: Bytes::new(),
                limit: 10_000,
            })
            .await?
        {
            PlacementResponse::ScanRanges { routes } => Ok(routes),
            other => bail!("unexpected answer to ScanRanges: {other:?}"),
        }
    }

    async fn spread(&self) -> Result<Spread> {
        Ok(Spread::of(&self.routes().await?, &self.stores))
    }

    /// Step 1.
    async fn load(&self) -> Result<()> {
        println!(
            "\nStep 1/5: loading {} keys (demo/000000 … demo/{:06}, {VALUE_BYTES}-byte values) \
             in batches of {BATCH} from {LOADERS} concurrent tasks. Each batch is cut by range \
             and committed through Raft on a quorum of each range's replicas.",
            thousands(KEYS),
            KEYS - 1
        );
        let batches = KEYS.div_ceil(BATCH);
        let progress = Progress::new(KEYS as u64);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..LOADERS {
            let (client, next, progress) = (self.client.clone(), next.clone(), progress.clone());
            tasks.spawn(async move {
                loop {
                    let batch = next.fetch_add(1, Ordering::Relaxed);
                    if batch >= batches {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let keys = batch * BATCH..((batch + 1) * BATCH).min(KEYS);
                    let len = keys.len() as u64;
                    let pairs = keys.map(|i| (key_of(i), value_of(i))).collect();
                    client
                        .batch_put(pairs)
                        .await
                        .with_context(|| format!("loading keys demo/{:06}…", batch * BATCH))?;
                    progress.add(len);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(error) = done.context("a loading task panicked").and_then(|done| done) {
                tasks.abort_all();
                progress.abandon();
                return Err(error);
            }
        }
        progress.finish();
        let seconds = started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let (rate, mib) = (KEYS as f64 / seconds, (KEYS * VALUE_BYTES) as f64 / f64::from(1 << 20));
        println!(
            "loaded {} keys ({mib:.1} MiB of values) in {seconds:.1} s: {} keys/s",
            thousands(KEYS),
            // Rounded for display; never negative.
            thousands(rate.round() as usize)
        );
        Ok(())
    }

    /// Step 2.
    async fn split_and_spread(&self) -> Result<()> {
        let ranges = (self.stores.len() * 3).max(8);
        let split_keys: Vec<Bytes> = (1..ranges).map(|i| key_of(i * KEYS / ranges)).collect();
        println!(
            "\nStep 2/5: splitting the key space into {ranges} ranges at demo/{:06}, demo/{:06}, \
             … The placement driver turns each split into an operator that the range's leader \
             carries out; then its leader balancer moves leadership so that every store leads \
             some ranges.",
            KEYS / ranges,
            2 * KEYS / ranges
        );
        let started = Instant::now();
        let deadline = started + SPREAD_WAIT;
        let mut last_refusal = String::new();
        loop {
            let routes = self.routes().await?;
            let mut pending = 0;
            for route in &routes {
                let inside: Vec<&Bytes> = split_keys
                    .iter()
                    .filter(|key| {
                        route.descriptor.contains_key(key)
                            && key.as_ref() != route.descriptor.start_key.as_ref()
                    })
                    .collect();
                pending += inside.len();
                // The middle key first: ranges halve, and their halves split in parallel.
                let Some(key) = inside.get(inside.len() / 2) else { continue };
                let steps = vec![OperatorStep::Split { keys: vec![(*key).clone()] }];
                let request = PlacementRequest::AddOperator { range: route.descriptor.id, steps };
                // Refused while the previous split of this range still runs: asked again on
                // the next round.
                if let Err(error) = self.placement(request).await {
                    last_refusal = format!("{error:#}");
                }
            }
            if pending == 0 {
                println!(
                    "split done in {:.1} s: {} ranges in all",
                    started.elapsed().as_secs_f64(),
                    routes.len()
                );
                break;
            }
            if Instant::now() >= deadline {
                println!(
                    "after {} s, {pending} split(s) are not done (last refusal: {last_refusal}); \
                     going on with the ranges there are",
                    SPREAD_WAIT.as_secs()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let started = Instant::now();
        let deadline = started + SPREAD_WAIT;
        let mut shown: Option<Spread> = None;
        let mut shown_at = Instant::now();
        loop {
            let spread = self.spread().await?;
            let spread_out = self.stores.iter().all(|id| spread.leaders(*id) > 0);
            if spread_out
                || shown.is_none()
                || (shown.as_ref() != Some(&spread) && shown_at.elapsed() >= Duration::from_secs(1))
            {
                print!("{}", spread.table(None));
                shown = Some(spread);
                shown_at = Instant::now();
            }
            if spread_out {
                println!(
                    "leaders spread: every store leads at least one range ({:.1} s after the \
                     splits)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                println!(
                    "after {} s not every store leads a range yet (the balancer moves a few \
                     leaders per pass and only while no range is changing); going on",
                    SPREAD_WAIT.as_secs()
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Steps 3 and 4: the background writer runs throughout.
    fn failover(
        &self,
        runtime: &Runtime,
        cluster: &mut dyn DemoCluster,
        writer: &Writer,
    ) -> Result<()> {
        let spread = runtime.block_on(self.spread())?;
        let victim = spread.busiest().context("no store to kill")?;
        println!(
            "\nStep 3/5: killing store {victim}, which leads {} of {} ranges, with SIGKILL as a \
             crash would. Its ranges lose their leader; their other replicas elect new leaders \
             after an election timeout, while a background writer keeps writing \
             ({LOADERS} tasks, one key per write, spread over every range).",
            spread.leaders(victim),
            spread.ranges
        );
        runtime.block_on(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("before the kill: {} writes in the last second", writer.take_window());
        });
        let killed_at = Instant::now();
        cluster.kill_store(victim).with_context(|| format!("killing store {victim}"))?;
        println!("killed store {victim}");
        runtime.block_on(async {
            let mut next = Instant::now();
            for _ in 0..FAILOVER_SECONDS {
                next += Duration::from_secs(1);
                tokio::time::sleep_until(next.into()).await;
                println!("writes continue: {} writes in the last second", writer.take_window());
            }
        });
        let moved = runtime.block_on(async {
            loop {
                let spread = self.spread().await?;
                if spread.leaders(victim) == 0 && spread.leaderless == 0 {
                    return Ok::<_, anyhow::Error>(Some(spread));
                }
                if killed_at.elapsed() >= FAILOVER_WAIT {
                    print!("{}", spread.table(Some(victim)));
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })?;
        match moved {
            Some(spread) => {
                println!(
                    "every range store {victim} led has a new leader (seen {:.1} s after the \
                     kill):",
                    killed_at.elapsed().as_secs_f64()
                );
                print!("{}", spread.table(Some(victim)));
            }
            None => println!(
                "after {} s the placement driver still reports ranges led by store {victim} or \
                 without a leader (it learns leaders from the ranges' heartbeats)",
                FAILOVER_WAIT.as_secs()
            ),
        }

        println!(
            "\nStep 4/5: restarting store {victim} with the same arguments and data directory. It \
             replays its Raft logs, the leaders bring its replicas up to date, and once they \
             have caught up the placement driver's leader balancer moves some leadership back \
             to it."
        );
        let restarting = Instant::now();
        writer.take_window();
        cluster.restart_store(victim).with_context(|| format!("restarting store {victim}"))?;
        println!(
            "restarted store {victim}: serving again after {:.1} s, during which {} writes were \
             acknowledged",
            restarting.elapsed().as_secs_f64(),
            thousands(usize::try_from(writer.take_window()).unwrap_or(usize::MAX))
        );
        let started = Instant::now();
        runtime.block_on(async {
            loop {
                let spread = self.spread().await?;
                if spread.leaders(victim) > 0 {
                    print!("{}", spread.table(None));
                    println!(
                        "store {victim} leads {} range(s) again, {:.1} s after its restart: its \
                         replicas caught up and the balancer gave it leadership back",
                        spread.leaders(victim),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                if started.elapsed() >= RECOVERY_WAIT {
                    print!("{}", spread.table(None));
                    println!(
                        "after {} s store {victim} leads no range yet: the balancer waits until \
                         every replica of a range has caught up",
                        RECOVERY_WAIT.as_secs()
                    );
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }

    /// Step 5.
    async fn verify(&self, acked: &[u64]) -> Result<()> {
        println!(
            "\nStep 5/5: reading back every loaded key and every write the background writer \
             saw acknowledged, and comparing the values."
        );
        let started = Instant::now();
        let mut expected: Vec<(Bytes, Bytes)> =
            (0..KEYS).map(|i| (key_of(i), value_of(i))).collect();
        expected.extend(acked.iter().map(|seq| (written_key(*seq), written_value(*seq))));
        let total = expected.len();
        let mut tasks = JoinSet::new();
        let chunks: Vec<Vec<(Bytes, Bytes)>> =
            expected.chunks(READ_BATCH).map(<[(Bytes, Bytes)]>::to_vec).collect();
        let chunks = Arc::new(Mutex::new(chunks));
        for _ in 0..LOADERS {
            let (client, chunks) = (self.client.clone(), chunks.clone());
            tasks.spawn(async move {
                let mut missing = 0_usize;
                let mut wrong = 0_usize;
                loop {
                    let Some(chunk) = chunks.lock().pop() else {
                        return Ok::<_, anyhow::Error>((missing, wrong));
                    };
                    let keys = chunk.iter().map(|(key, _)| key.clone()).collect();
                    let found: HashMap<Bytes, Bytes> =
                        client.batch_get(keys).await.context("reading back")?.into_iter().collect();
                    for (key, value) in &chunk {
                        match found.get(key) {
                            None => missing += 1,
                            Some(got) if got != value => wrong += 1,
                            Some(_) => {}
                        }
                    }
                }
            });
        }
        let (mut missing, mut wrong) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            match done.context("a reading task panicked").and_then(|done| done) {
                Ok((m, w)) => {
                    missing += m;
                    wrong += w;
                }
                Err(error) => {
                    tasks.abort_all();
                    return Err(error);
                }
            }
        }
        if missing > 0 || wrong > 0 {
            bail!("of {total} keys written, {missing} are missing and {wrong} have another value");
        }
        println!(
            "all {} keys read back in {:.1} s ({} loaded, {} written during the failover), every \
             value as written",
            thousands(total),
            started.elapsed().as_secs_f64(),
            thousands(KEYS),
            thousands(acked.len())
        );
        Ok(())
    }
}

/// Progress of the load: a bar on a terminal, a line per quarter otherwise.
#[derive(Clone)]
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { total: u64, done: Arc<AtomicU64> },
}

impl Progress {
    fn new(total: u64) -> Self {
        if !std::io::stdout().is_terminal() {
            return Self::Lines { total, done: Arc::new(AtomicU64::new(0)) };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stdout(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "  [{bar:40}] {human_pos}/{human_len} keys  {per_sec:>12}  eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self::Bar(bar)
    }

    fn add(&self, n: u64) {
        match self {
            Self::Bar(bar) => bar.inc(n),
            Self::Lines { total, done } => {
                let before = done.fetch_add(n, Ordering::Relaxed);
                let after = before + n;
                let quarter = |count: u64| count * 4 / (*total).max(1);
                if quarter(after) > quarter(before) && after < *total {
                    println!(
                        "  loaded {}/{} keys",
                        thousands(after as usize),
                        thousands(*total as usize)
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish();
        }
    }

    fn abandon(&self) {
        if let Self::Bar(bar) = self {
            bar.abandon();
        }
    }
}

/// The background writer of steps 3 and 4: [`LOADERS`] tasks putting one key at a time.
struct Writer {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged since the last [`Writer::take_window`].
    window: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<u64>>>,
    failed: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn start(runtime: &Runtime, client: &RawClient) -> Self {
        let mut writer = Self {
            stop: Arc::new(AtomicBool::new(false)),
            window: Arc::new(AtomicU64::new(0)),
            acked: Arc::new(Mutex::new(Vec::new())),
            failed: Arc::new(AtomicU64::new(0)),
            last_error: Arc::new(Mutex::new(None)),
            tasks: Vec::new(),
        };
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..LOADERS {
            let client = client.clone();
            let next = next.clone();
            let (stop, window, acked) =
                (writer.stop.clone(), writer.window.clone(), writer.acked.clone());
            let (failed, last_error) = (writer.failed.clone(), writer.last_error.clone());
            writer.tasks.push(runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    match client.put(written_key(seq), written_value(seq)).await {
                        Ok(()) => {
                            acked.lock().push(seq);
                            window.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            *last_error.lock() = Some(error.to_string());
                        }
                    }
                }
            }));
        }
        writer
    }

    /// Writes acknowledged since the previous call.
    fn take_window(&self) -> u64 {
        self.window.swap(0, Ordering::Relaxed)
    }

    /// Stops the tasks once their writes in flight end; returns the acknowledged writes,
    /// the number that failed and the last error.
    async fn stop(self) -> (Vec<u64>, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let acked = std::mem::take(&mut *self.acked.lock());
        (acked, self.failed.load(Ordering::Relaxed), self.last_error.lock().take())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_numbers_look_right() {
        assert_eq!(key_of(42), Bytes::from_static(b"demo/000042"));
        assert_eq!(value_of(7).len(), VALUE_BYTES);
        assert!(value_of(7).starts_with(b"value 000007 h"));
        assert!(written_key(3).starts_with(b"demo/"));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
