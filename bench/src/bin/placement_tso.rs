//! `placement-tso`: the throughput of the placement driver's timestamp oracle. A placement
//! group of three members runs in this process on the real stack (RocksDB engines in
//! temporary directories with fsync on, the QUIC transport with development TLS on
//! loopback, each member on its own thread, 100 ms ticks); a client transport with its own
//! node id calls it through one shared [`PlacementRpc`] (bench/README.md):
//!
//! - `GetTimestamp { count }` with 1, 16 and 64 concurrent callers and counts 1 and 100;
//! - `AllocId { count: 1 }` with 16 callers, for comparison (ids are handed out from a
//!   committed batch, like timestamps below a committed bound).
//!
//! Every case runs `--runs` times, interleaved (all cases once, then all again, …), and the
//! table gives the median and the min–max of requests/s, timestamps/s, latency and process
//! CPU. Every caller checks that each answer lies strictly above the last one it saw (and
//! above everything handed out in earlier cases); the violations are counted and printed.
//!
//! Progress goes to stderr; the table to stdout, or with `--json` one JSON object to stdout
//! (the table then goes to stderr).
//!
//! `cargo run --release -p tessera-bench --bin placement-tso [-- --seconds 3 --runs 3 --json]`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use tempfile::TempDir;
use tessera_bench::cpu;
use tessera_client::placement::PlacementRpc;
use tessera_engine_rocks::EngineOptions;
use tessera_placement::{
    NodeConfig, PlacementNode, PlacementRpcHandler, PlacementSystem, TransportNodeNetwork,
    bootstrap_group,
};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig};
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::placement::{PlacementMember, PlacementRequest, PlacementResponse};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;
use tokio::runtime::Runtime;

const CLUSTER_ID: u64 = 7;
/// Node ids of the three members.
const MEMBERS: [u64; 3] = [1, 2, 3];
/// Node id of the client transport.
const CLIENT: u64 = 900;
/// Mailbox of each member, as `tessera placement` sets it.
const MAILBOX: usize = 65_536;
/// The group must serve within this long of starting.
const LEADER_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two `ClusterStatus` polls while no leader serves.
const POLL: Duration = Duration::from_millis(50);
/// Overall timeout of one measured call (`PlacementRpc` retries within it).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A stretch this long without any answer (all callers together) counts as a stall.
const STALL: Duration = Duration::from_millis(50);
/// Pause after a failed call before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Thread names of the two tokio runtimes (the members' transports, the client's).
const MEMBERS_RT: &str = "members-rt";
const CLIENT_RT: &str = "client-rt";

/// Timestamps (and ids) per second from a three-member placement group on loopback, with 1,
/// 16 and 64 concurrent callers asking for 1 or 100 timestamps at a time.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds measured per case and run (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of calls before each case is measured.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Runs of every case; cases are interleaved (all once, then all again, …).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent callers of the `GetTimestamp` cases (tokio tasks, one call in flight each).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    callers: Vec<usize>,
    /// Timestamps per `GetTimestamp` request.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    counts: Vec<u32>,
    /// Concurrent callers of the `AllocId { count: 1 }` case (0: no such case).
    #[arg(long, default_value_t = 16)]
    alloc_callers: usize,
    /// Milliseconds per Raft tick of the members (`tessera placement`'s default).
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    /// Tokio worker threads of the runtime the three members' transports share.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tokio worker threads of the client's runtime (its transport and the callers).
    #[arg(long, default_value_t = 2)]
    client_workers: usize,
    /// Where the members' temporary directories go (default: the system's temporary
    /// directory). Never a tmpfs, where fsync is free.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object to stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------
// CPU: the whole process, and its threads by group.
// ---------------------------------------------------------------------------------------

/// CPU time of this process's threads, grouped by thread name.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCpu {
    /// The leader's member thread (`placement-<leader>`).
    leader: Duration,
    /// The two followers' member threads.
    followers: Duration,
    /// The runtime of the three members' transports.
    members_rt: Duration,
    /// The client's runtime: its transport and the callers.
    client_rt: Duration,
    /// Everything else: RocksDB's threads, the main thread.
    other: Duration,
}

impl ThreadCpu {
    /// Reads `/proc/self/task/*/stat` (user + system time, 10 ms clock ticks).
    fn take(leader_thread: &str) -> Result<Self> {
        let mut cpu = Self::default();
        for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
            let path = entry.context("listing /proc/self/task")?.path().join("stat");
            // A thread may have exited since the listing.
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let (name, time) =
                parse_thread_stat(&text).with_context(|| format!("parsing {}", path.display()))?;
            let slot = if name == leader_thread {
                &mut cpu.leader
            } else if name.starts_with("placement-") {
                &mut cpu.followers
            } else if name.starts_with(MEMBERS_RT) {
                &mut cpu.members_rt
            } else if name.starts_with(CLIENT_RT) {
                &mut cpu.client_rt
            } else {
                &mut cpu.other
            };
            *slot += time;
        }
        Ok(cpu)
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            leader: self.leader.saturating_sub(before.leader),
            followers: self.followers.saturating_sub(before.followers),
            members_rt: self.members_rt.saturating_sub(before.members_rt),
            client_rt: self.client_rt.saturating_sub(before.client_rt),
            other: self.other.saturating_sub(before.other),
        }
    }

    /// Seconds per second of each group, in [`ThreadCpu::NAMES`] order.
    fn per_sec(&self, seconds: f64) -> [f64; 5] {
        [self.leader, self.followers, self.members_rt, self.client_rt, self.other]
            .map(|time| time.as_secs_f64() / seconds)
    }

    const NAMES: [&'static str; 5] = ["leader", "followers", "members_rt", "client_rt", "other"];
}

/// A thread's name and user + system time from its `stat` line. The name (field 2) is in
/// parentheses and may contain spaces; utime and stime are the 12th and 13th fields after it.
fn parse_thread_stat(text: &str) -> Option<(String, Duration)> {
    let open = text.find('(')?;
    let (name, rest) = text.get(open + 1..)?.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 in Linux's ABI.
    Some((name.to_owned(), Duration::from_millis((utime + stime) * 10)))
}

/// Process CPU and thread CPU at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    process: Duration,
    threads: ThreadCpu,
}

impl Sample {
    fn take(leader_thread: &str) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            process: cpu::process_cpu_time().context("reading the process CPU time")?,
            threads: ThreadCpu::take(leader_thread)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The placement group and its client.
// ---------------------------------------------------------------------------------------

/// The client's transport handler: it calls, and serves nothing.
#[derive(Debug)]
struct ClientNode;

impl Handler for ClientNode {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}
}

#[derive(Debug)]
struct Member {
    system: PlacementSystem,
    handler: Arc<PlacementRpcHandler>,
    transport: Arc<Transport>,
    _dir: TempDir,
}

struct Group {
    members: Vec<Member>,
    rpc: Arc<PlacementRpc>,
    client_transport: Arc<Transport>,
    members_rt: Runtime,
    client_rt: Runtime,
    _certs: TempDir,
}

/// A fresh temporary directory in `base`, or in the system's temporary directory.
fn temp_dir(base: Option<&Path>) -> Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("placement-tso-");
    let dir = match base {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    };
    dir.context("creating a temporary directory")
}

fn runtime(workers: usize, name: &str) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

/// Milliseconds since the Unix epoch, the members' clock (as in `tessera placement`).
fn clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

fn dev_tls(certs: &Path, name: &str) -> Result<NodeTls> {
    NodeTls::load(&TlsSource::DevGenerated { dir: certs.to_owned() }, name)
        .with_context(|| format!("dev TLS for {name}"))
}

impl Group {
    /// Starts the three members (transports first, to learn their addresses; then each data
    /// directory is bootstrapped with all three as voters) and the client.
    fn start(args: &Args) -> Result<Self> {
        let base = args.dir.as_deref();
        let members_rt = runtime(args.workers, MEMBERS_RT)?;
        let client_rt = runtime(args.client_workers, CLIENT_RT)?;
        let certs = temp_dir(base)?;
        let loopback: SocketAddr = "127.0.0.1:0".parse().context("loopback address")?;

        let mut started = Vec::with_capacity(MEMBERS.len());
        for id in MEMBERS {
            let tls = dev_tls(certs.path(), &format!("node-{id}"))?;
            // A member has no store: its "store id" on the wire is its node id.
            let config =
                tessera_placement::member_transport_config(NodeId(id), CLUSTER_ID, loopback, tls);
            let handler = Arc::new(PlacementRpcHandler::new());
            let transport = Arc::new(
                members_rt
                    .block_on(Transport::start(config, handler.clone()))
                    .with_context(|| format!("starting member {id}'s transport"))?,
            );
            started.push((id, handler, transport));
        }
        let mut addrs = Vec::with_capacity(MEMBERS.len());
        for (id, _, transport) in &started {
            addrs.push((*id, transport.local_addr()?));
        }
        let placement_members: Vec<PlacementMember> = addrs
            .iter()
            .map(|(id, addr)| PlacementMember {
                node_id: NodeId(*id),
                address: addr.to_string(),
                voter: true,
            })
            .collect();

        let mut members = Vec::with_capacity(MEMBERS.len());
        for (id, handler, transport) in started {
            for (other, addr) in &addrs {
                if *other != id {
                    transport.set_peer(NodeId(*other), *addr);
                }
            }
            let dir = temp_dir(base)?;
            let options = EngineOptions { block_cache_bytes: 64 << 20, ..EngineOptions::default() };
            let (raft, kv) = tessera_engine_rocks::open(dir.path(), &options)
                .with_context(|| format!("opening member {id}'s engines"))?;
            bootstrap_group(&raft, &kv, CLUSTER_ID, &placement_members)
                .with_context(|| format!("bootstrapping member {id}"))?;
            let mut config = NodeConfig::new(NodeId(id), CLUSTER_ID);
            config.tick_ms = args.tick_ms;
            let net = TransportNodeNetwork::new(transport.clone());
            let node = PlacementNode::open(config, raft, kv, net, Box::new(clock_ms))
                .with_context(|| format!("opening member {id}"))?;
            let system = PlacementSystem::start(node, Duration::from_millis(args.tick_ms), MAILBOX)
                .with_context(|| format!("starting member {id}'s thread"))?;
            handler.set_node(system.handle());
            members.push(Member { system, handler, transport, _dir: dir });
        }

        let tls = dev_tls(certs.path(), &format!("client-{CLIENT}"))?;
        let config =
            TransportConfig::new(NodeId(CLIENT), StoreId(CLIENT), CLUSTER_ID, loopback, tls);
        let client_transport = Arc::new(
            client_rt
                .block_on(Transport::start(config, Arc::new(ClientNode)))
                .context("starting the client's transport")?,
        );
        for (id, addr) in &addrs {
            client_transport.set_peer(NodeId(*id), *addr);
        }
        let rpc = Arc::new(PlacementRpc::new(
            client_transport.clone(),
            MEMBERS.iter().map(|&id| NodeId(id)).collect(),
        ));
        Ok(Self { members, rpc, client_transport, members_rt, client_rt, _certs: certs })
    }

    /// Polls `ClusterStatus` until a leader answers, then takes one timestamp (a new
    /// leader commits a bound first); returns the leader.
    fn wait_for_leader(&self) -> Result<NodeId> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        let leader = loop {
            if started.elapsed() > LEADER_DEADLINE {
                bail!("no placement leader served within {LEADER_DEADLINE:?}: {last}");
            }
            let call = self.rpc.call(PlacementRequest::ClusterStatus, Duration::from_secs(1));
            match self.client_rt.block_on(call) {
                Ok(PlacementResponse::ClusterStatus { status }) => break status.leader,
                Ok(other) => bail!("unexpected answer to ClusterStatus: {other:?}"),
                Err(error) => {
                    last = error.to_string();
                    std::thread::sleep(POLL);
                }
            }
        };
        let call = self.rpc.call(PlacementRequest::GetTimestamp { count: 1 }, LEADER_DEADLINE);
        match self.client_rt.block_on(call) {
            Ok(PlacementResponse::GetTimestamp { .. }) => {}
            other => bail!("the first timestamp: {other:?}"),
        }
        eprintln!(
            "placement leader: node {leader}, serving {:.2} s after the start",
            started.elapsed().as_secs_f64()
        );
        Ok(leader)
    }

    /// Stops the members (their threads drop the engines and networks), then the
    /// transports and the runtimes; the temporary directories go last.
    fn stop(self) {
        let Self { members, rpc, client_transport, members_rt, client_rt, _certs } = self;
        drop(rpc);
        if let Ok(transport) = Arc::try_unwrap(client_transport) {
            client_rt.block_on(transport.shutdown(Duration::from_secs(1)));
        }
        let mut rest = Vec::with_capacity(members.len());
        for member in members {
            let Member { system, handler, transport, _dir } = member;
            handler.clear_node();
            system.stop();
            rest.push((transport, _dir));
        }
        for (transport, dir) in rest {
            if let Ok(transport) = Arc::try_unwrap(transport) {
                members_rt.block_on(transport.shutdown(Duration::from_secs(1)));
            }
            drop(dir);
        }
        client_rt.shutdown_timeout(Duration::from_secs(2));
        members_rt.shutdown_timeout(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------
// The callers.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GetTimestamp,
    AllocId,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::GetTimestamp => "GetTimestamp",
            Self::AllocId => "AllocId",
        }
    }
}

/// One configuration: the request, its count, and how many callers send it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Case {
    op: Op,
    callers: usize,
    count: u32,
}

impl Case {
    fn request(self) -> PlacementRequest {
        match self.op {
            Op::GetTimestamp => PlacementRequest::GetTimestamp { count: self.count },
            Op::AllocId => PlacementRequest::AllocId { count: self.count },
        }
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug, Default)]
struct CallerResult {
    /// Latencies of the calls measured (sent and answered in the measured window).
    latencies_us: Vec<u32>,
    /// When each measured call was answered.
    answered: Vec<Instant>,
    /// Timestamps (or ids) in the measured answers.
    items: u64,
    /// Answers not strictly above the previous one this caller saw.
    violations: u64,
    /// Failed calls, unexpected answers and answers with another count, warm-up included.
    errors: u64,
    last_error: Option<String>,
    /// Every answer, warm-up included: `(first, count)`.
    answers: Vec<(u64, u32)>,
}

/// Calls `case`'s request in a loop until the phase is `STOP`. `floor` is the highest
/// value handed out before the case started: every answer must lie above it.
async fn caller(
    rpc: Arc<PlacementRpc>,
    case: Case,
    phase: Arc<AtomicU8>,
    floor: Option<u64>,
) -> CallerResult {
    let mut result = CallerResult::default();
    let mut last = floor;
    loop {
        let started_in = phase.load(Ordering::Acquire);
        if started_in == STOP {
            return result;
        }
        let started = Instant::now();
        let answer = rpc.call(case.request(), CALL_TIMEOUT).await;
        let latency = started.elapsed();
        let measured = started_in == MEASURE && phase.load(Ordering::Acquire) == MEASURE;
        let (first, count) = match (case.op, answer) {
            (Op::GetTimestamp, Ok(PlacementResponse::GetTimestamp { first, count })) => {
                (first.0, count)
            }
            (Op::AllocId, Ok(PlacementResponse::AllocId { first, count })) => (first, count),
            (_, Ok(other)) => {
                result.errors += 1;
                result.last_error = Some(format!("unexpected answer: {other:?}"));
                continue;
            }
            (_, Err(error)) => {
                result.errors += 1;
                result.last_error = Some(error.to_string());
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if count != case.count || count == 0 {
            result.errors += 1;
            result.last_error = Some(format!("asked for {}, got {count}", case.count));
            continue;
        }
        if last.is_some_and(|last| first <= last) {
            result.violations += 1;
        }
        let end = first.saturating_add(u64::from(count) - 1);
        last = Some(last.map_or(end, |last| last.max(end)));
        result.answers.push((first, count));
        if measured {
            result.latencies_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            result.answered.push(started + latency);
            result.items += u64::from(count);
        }
    }
}

/// One run of one case.
#[derive(Debug, Clone)]
struct Run {
    seconds: f64,
    requests: u64,
    items: u64,
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
    violations: u64,
    /// Answers overlapping another answer of the same case (any callers).
    overlaps: u64,
    /// Stretches of at least [`STALL`] in the measured window without any answer, and
    /// their total length.
    stalls: u64,
    stalled: Duration,
    errors: u64,
    last_error: Option<String>,
    cpu: Duration,
    threads: ThreadCpu,
    /// The highest value handed out in the run.
    highest: Option<u64>,
}

impl Run {
    fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn items_per_sec(&self) -> f64 {
        self.items as f64 / self.seconds
    }

    fn cpu_per_sec(&self) -> f64 {
        self.cpu.as_secs_f64() / self.seconds
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// The share of the measured window spent in stalls.
    fn stalled_share(&self) -> f64 {
        self.stalled.as_secs_f64() / self.seconds
    }
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Answers that overlap an earlier one, once all are sorted by their first value.
fn overlaps(answers: &mut [(u64, u32)]) -> u64 {
    answers.sort_unstable();
    let mut overlaps = 0;
    let mut end: Option<u64> = None;
    for &(first, count) in answers.iter() {
        if end.is_some_and(|end| first <= end) {
            overlaps += 1;
        }
        let this = first.saturating_add(u64::from(count) - 1);
        end = Some(end.map_or(this, |end| end.max(this)));
    }
    overlaps
}

fn run_case(
    group: &Group,
    args: &Args,
    case: Case,
    leader_thread: &str,
    floor: Option<u64>,
) -> Result<Run> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let handles: Vec<_> = (0..case.callers)
        .map(|_| group.client_rt.spawn(caller(group.rpc.clone(), case, phase.clone(), floor)))
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let before = Sample::take(leader_thread);
    phase.store(MEASURE, Ordering::Release);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let after = Sample::take(leader_thread);
    phase.store(STOP, Ordering::Release);
    let results = group.client_rt.block_on(async {
        let mut results = Vec::with_capacity(handles.len());
        for handle in handles {
            results.push(handle.await);
        }
        results
    });
    let (before, after) = (before?, after?);
    let mut latencies = Vec::new();
    let mut answers = Vec::new();
    let mut answered = Vec::new();
    let (mut items, mut violations, mut errors, mut last_error) = (0, 0, 0, None);
    for result in results {
        let result = result.map_err(|error| anyhow!("a caller task failed: {error}"))?;
        latencies.extend(result.latencies_us);
        answered.extend(result.answered);
        answers.extend(result.answers);
        items += result.items;
        violations += result.violations;
        errors += result.errors;
        last_error = result.last_error.or(last_error);
    }
    latencies.sort_unstable();
    let overlaps = overlaps(&mut answers);
    answered.sort_unstable();
    let (mut stalls, mut stalled) = (0, Duration::ZERO);
    let mut previous = before.at;
    for &at in answered.iter().chain([after.at].iter()) {
        let gap = at.saturating_duration_since(previous);
        if gap >= STALL {
            stalls += 1;
            stalled += gap;
        }
        previous = previous.max(at);
    }
    let highest =
        answers.iter().map(|&(first, count)| first.saturating_add(u64::from(count) - 1)).max();
    Ok(Run {
        seconds: after.at.duration_since(before.at).as_secs_f64(),
        requests: latencies.len() as u64,
        items,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        violations,
        overlaps,
        stalls,
        stalled,
        errors,
        last_error,
        cpu: after.process.saturating_sub(before.process),
        threads: after.threads.since(&before.threads),
        highest: highest.or(floor),
    })
}

// ---------------------------------------------------------------------------------------
// Summary and report.
// ---------------------------------------------------------------------------------------

/// Median, min and max of one figure over the runs.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            return Self { median: 0.0, min: 0.0, max: 0.0 };
        }
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            f64::midpoint(values[n / 2 - 1], values[n / 2])
        };
        Self { median, min: values[0], max: values[n - 1] }
    }

    fn json(self, digits: usize) -> String {
        format!(
            "{{\"median\":{:.digits$},\"min\":{:.digits$},\"max\":{:.digits$}}}",
            self.median, self.min, self.max
        )
    }
}

#[derive(Debug)]
struct CaseResult {
    case: Case,
    runs: Vec<Run>,
}

impl CaseResult {
    fn spread(&self, figure: impl Fn(&Run) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(figure))
    }

    fn violations(&self) -> u64 {
        self.runs.iter().map(|run| run.violations).sum()
    }

    fn overlaps(&self) -> u64 {
        self.runs.iter().map(|run| run.overlaps).sum()
    }

    fn errors(&self) -> u64 {
        self.runs.iter().map(|run| run.errors).sum()
    }

    fn last_error(&self) -> Option<&str> {
        self.runs.iter().rev().find_map(|run| run.last_error.as_deref())
    }

    fn to_json(&self) -> String {
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|run| {
                let threads = ThreadCpu::NAMES
                    .iter()
                    .zip(run.threads.per_sec(run.seconds))
                    .map(|(name, value)| format!("\"{name}\":{value:.4}"))
                    .collect::<Vec<_>>()
                    .join(",");
                format!(
                    "{{\"seconds\":{:.3},\"requests\":{},\"items\":{},\"requests_per_sec\":{:.1},\
                     \"items_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\
                     \"cpu_sec_per_sec\":{:.4},\"cpu_us_per_request\":{:.1},\
                     \"thread_cpu_sec_per_sec\":{{{threads}}},\"violations\":{},\"overlaps\":{},\
                     \"stalls\":{},\"stalled_seconds\":{:.3},\"errors\":{}}}",
                    run.seconds,
                    run.requests,
                    run.items,
                    run.requests_per_sec(),
                    run.items_per_sec(),
                    run.p50_us,
                    run.p99_us,
                    run.max_us,
                    run.cpu_per_sec(),
                    run.cpu_us_per_request(),
                    run.violations,
                    run.overlaps,
                    run.stalls,
                    run.stalled.as_secs_f64(),
                    run.errors,
                )
            })
            .collect();
        let threads = ThreadCpu::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let spread = self.spread(|run| run.threads.per_sec(run.seconds)[i]);
                format!("\"{name}\":{}", spread.json(4))
            })
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"op\":\"{}\",\"callers\":{},\"count\":{},\"requests_per_sec\":{},\
             \"items_per_sec\":{},\"p50_us\":{},\"p99_us\":{},\"cpu_sec_per_sec\":{},\
             \"cpu_us_per_request\":{},\"thread_cpu_sec_per_sec\":{{{threads}}},\
             \"stalled_share\":{},\"violations\":{},\"overlaps\":{},\"errors\":{},\
             \"last_error\":{},\"runs\":[{}]}}",
            self.case.op.name(),
            self.case.callers,
            self.case.count,
            self.spread(Run::requests_per_sec).json(1),
            self.spread(Run::items_per_sec).json(1),
            self.spread(|run| f64::from(run.p50_us)).json(0),
            self.spread(|run| f64::from(run.p99_us)).json(0),
            self.spread(Run::cpu_per_sec).json(4),
            self.spread(Run::cpu_us_per_request).json(1),
            self.spread(Run::stalled_share).json(3),
            self.violations(),
            self.overlaps(),
            self.errors(),
            self.last_error().map_or_else(|| "null".to_owned(), json_string),
            runs.join(","),
        )
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Thousands separators for a rounded figure.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `median (min–max)`.
fn with_spread(spread: Spread, format: impl Fn(f64) -> String) -> String {
    format!("{} ({}–{})", format(spread.median), format(spread.min), format(spread.max))
}

/// The configuration, as printed with the results.
#[derive(Debug)]
struct Setup {
    version: &'static str,
    commit: String,
    cores: usize,
    leader: NodeId,
    dir: String,
}

fn table(setup: &Setup, args: &Args, cases: &[CaseResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nplacement-tso {} (commit {}), {} cores: 3 placement members + client in one process \
         (RocksDB fsync on, in {}; QUIC + dev TLS on loopback; tick {} ms), leader node {}; \
         {} run(s) × {} s measured after {} s warm-up, cases interleaved; median (min–max)",
        setup.version,
        setup.commit,
        setup.cores,
        setup.dir,
        args.tick_ms,
        setup.leader,
        args.runs,
        args.seconds,
        args.warmup,
    );
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>5} {:>26} {:>32} {:>8} {:>8} {:>20} {:>9} {:>10} {:>8} {:>6}",
        "request",
        "callers",
        "count",
        "requests/s",
        "timestamps|ids/s",
        "p50 µs",
        "p99 µs",
        "CPU s/s",
        "CPU µs/rq",
        "violations",
        "overlaps",
        "errors"
    );
    for result in cases {
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>5} {:>26} {:>32} {:>8.0} {:>8.0} {:>20} {:>9.1} {:>10} {:>8} {:>6}",
            result.case.op.name(),
            result.case.callers,
            result.case.count,
            with_spread(result.spread(Run::requests_per_sec), grouped),
            with_spread(result.spread(Run::items_per_sec), grouped),
            result.spread(|run| f64::from(run.p50_us)).median,
            result.spread(|run| f64::from(run.p99_us)).median,
            with_spread(result.spread(Run::cpu_per_sec), |v| format!("{v:.2}")),
            result.spread(Run::cpu_us_per_request).median,
            result.violations(),
            result.overlaps(),
            result.errors(),
        );
    }
    let _ = writeln!(
        out,
        "\nlatency, µs: median (min–max) over the runs, and the longest call; stalls (≥ {} ms \
         without any answer): count over all runs, share of the measured time (median); CPU \
         s/s by thread (medians)",
        STALL.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>5} {:>18} {:>20} {:>8} {:>6} {:>8} {:>7} {:>9} {:>10} {:>9} {:>6}",
        "request",
        "callers",
        "count",
        "p50",
        "p99",
        "max",
        "stalls",
        "stalled",
        "leader",
        "followers",
        "members-rt",
        "client-rt",
        "other"
    );
    for result in cases {
        let thread = |i: usize| result.spread(|run| run.threads.per_sec(run.seconds)[i]).median;
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>5} {:>18} {:>20} {:>8} {:>6} {:>7.1}% {:>7.2} {:>9.2} {:>10.2} \
             {:>9.2} {:>6.2}",
            result.case.op.name(),
            result.case.callers,
            result.case.count,
            with_spread(result.spread(|run| f64::from(run.p50_us)), |v| format!("{v:.0}")),
            with_spread(result.spread(|run| f64::from(run.p99_us)), |v| format!("{v:.0}")),
            result.runs.iter().map(|run| run.max_us).max().unwrap_or(0),
            result.runs.iter().map(|run| run.stalls).sum::<u64>(),
            result.spread(Run::stalled_share).median * 100.0,
            thread(0),
            thread(1),
            thread(2),
            thread(3),
            thread(4),
        );
    }
    for result in cases.iter().filter(|result| result.errors() > 0) {
        let _ = writeln!(
            out,
            "{} × {} callers, count {}: {} errors, the last: {}",
            result.case.op.name(),
            result.case.callers,
            result.case.count,
            result.errors(),
            result.last_error().unwrap_or("-"),
        );
    }
    let find = |op, callers, count| {
        cases
            .iter()
            .find(|r| r.case == Case { op, callers, count })
            .map(|r| (r.spread(Run::requests_per_sec).median, r.spread(Run::items_per_sec).median))
    };
    if let Some((base_rps, base_ips)) = find(Op::GetTimestamp, 1, 1) {
        let ratios: Vec<String> = cases
            .iter()
            .filter(|r| r.case.op == Op::GetTimestamp)
            .map(|r| {
                format!(
                    "{}×{}: {:.1}× req, {:.1}× ts",
                    r.case.callers,
                    r.case.count,
                    r.spread(Run::requests_per_sec).median / base_rps.max(f64::MIN_POSITIVE),
                    r.spread(Run::items_per_sec).median / base_ips.max(f64::MIN_POSITIVE),
                )
            })
            .collect();
        let _ = writeln!(out, "relative to 1 caller × count 1 (medians): {}", ratios.join("; "));
    }
    if args.alloc_callers > 0
        && let (Some((ts, _)), Some((ids, _))) = (
            find(Op::GetTimestamp, args.alloc_callers, 1),
            find(Op::AllocId, args.alloc_callers, 1),
        )
    {
        let _ = writeln!(
            out,
            "GetTimestamp ÷ AllocId requests/s at {} callers, count 1: {:.2}×",
            args.alloc_callers,
            ts / ids.max(f64::MIN_POSITIVE)
        );
    }
    out
}

fn to_json(setup: &Setup, args: &Args, cases: &[CaseResult]) -> String {
    let cases: Vec<String> = cases.iter().map(CaseResult::to_json).collect();
    format!(
        "{{\"bench\":\"placement-tso\",\"version\":{},\"commit\":{},\"cores\":{},\
         \"config\":{{\"members\":3,\"tick_ms\":{},\"seconds\":{},\"warmup\":{},\"runs\":{},\
         \"member_runtime_workers\":{},\"client_runtime_workers\":{},\"fsync\":true,\
         \"dir\":{},\"leader\":{}}},\"cases\":[{}]}}",
        json_string(setup.version),
        json_string(&setup.commit),
        setup.cores,
        args.tick_ms,
        args.seconds,
        args.warmup,
        args.runs,
        args.workers,
        args.client_workers,
        json_string(&setup.dir),
        setup.leader,
        cases.join(","),
    )
}

/// `git rev-parse --short HEAD` of the source tree, with `-dirty` if the tree has changes.
fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|status| !status.is_empty());
            if dirty { format!("{hash}-dirty") } else { hash }
        }
        _ => "unknown".to_owned(),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 || args.seconds <= 0.0 || args.warmup < 0.0 {
        bail!("--runs and --seconds must be positive, --warmup not negative");
    }
    if args.callers.is_empty() || args.callers.contains(&0) {
        bail!("--callers needs positive counts");
    }
    if args.counts.is_empty()
        || args.counts.iter().any(|&n| n == 0 || n > Timestamp::LOGICAL_MAX + 1)
    {
        bail!("--counts must be between 1 and {}", Timestamp::LOGICAL_MAX + 1);
    }
    if args.tick_ms == 0 {
        bail!("--tick-ms must be positive");
    }
    let mut cases: Vec<CaseResult> = Vec::new();
    for &callers in &args.callers {
        for &count in &args.counts {
            let case = Case { op: Op::GetTimestamp, callers, count };
            cases.push(CaseResult { case, runs: Vec::new() });
        }
    }
    if args.alloc_callers > 0 {
        let case = Case { op: Op::AllocId, callers: args.alloc_callers, count: 1 };
        cases.push(CaseResult { case, runs: Vec::new() });
    }

    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    eprintln!(
        "placement-tso {}: 3 placement members in one process (RocksDB in {}, fsync on; QUIC \
         on loopback), tick {} ms, {} cores",
        env!("CARGO_PKG_VERSION"),
        dir.display(),
        args.tick_ms,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let group = Group::start(&args)?;
    let result = (|| -> Result<NodeId> {
        let leader = group.wait_for_leader()?;
        let leader_thread = format!("placement-{leader}");
        // The highest timestamp and id handed out so far: later answers must lie above.
        let mut floor_ts = None;
        let mut floor_id = None;
        for run in 0..args.runs {
            for result in &mut cases {
                let case = result.case;
                let floor = match case.op {
                    Op::GetTimestamp => &mut floor_ts,
                    Op::AllocId => &mut floor_id,
                };
                let outcome = run_case(&group, &args, case, &leader_thread, *floor)?;
                *floor = outcome.highest;
                eprintln!(
                    "run {}/{}: {} × {} callers, count {}: {:.0} req/s, {:.0} items/s, p50 {} \
                     µs, p99 {} µs, max {} µs, {} stalls ({:.2} s), {:.2} CPU s/s, {} violations, {} \
                     overlaps, {} errors",
                    run + 1,
                    args.runs,
                    case.op.name(),
                    case.callers,
                    case.count,
                    outcome.requests_per_sec(),
                    outcome.items_per_sec(),
                    outcome.p50_us,
                    outcome.p99_us,
                    outcome.max_us,
                    outcome.stalls,
                    outcome.stalled.as_secs_f64(),
                    outcome.cpu_per_sec(),
                    outcome.violations,
                    outcome.overlaps,
                    outcome.errors,
                );
                result.runs.push(outcome);
            }
        }
        Ok(leader)
    })();
    group.stop();
    let setup = Setup {
        version: env!("CARGO_PKG_VERSION"),
        commit: commit(),
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        leader: result?,
        dir: dir.display().to_string(),
    };
    let table = table(&setup, &args, &cases);
    if args.json {
        eprint!("{table}");
        println!("{}", to_json(&setup, &args, &cases));
    } else {
        print!("{table}");
    }
    Ok(())
}
