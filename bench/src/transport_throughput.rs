//! `transport-throughput`: two QUIC transports in one process on loopback.
//!
//! - **Raft messages**: small appends (one 64-byte entry) from node 1 to node 2 for a fixed
//!   time, pushed by one producer thread (as a store would) with at most `window` messages
//!   not yet delivered; messages/s and MB/s of frame bytes, with batching on (the default
//!   `BatcherConfig`) and off (`batch_msgs_max = 1`).
//! - **Heartbeats**: every 100 ms, a heartbeat for each of `ranges` ranges from node 1 to
//!   node 2 and a tick; bytes/s on the wire and process CPU (both nodes, the producer and
//!   the receiving handler included), coalesced vs `coalesce_heartbeats = false`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{BatcherConfig, Handler, MessageClass, Transport, TransportConfig};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::raft::{Entry, EntryKind, LogIndex, Message, MessageKind, ReplicaId, Term};
use tessera_wire::transport::{Heartbeat, HeartbeatBatch, RaftEnvelope};

use crate::cpu;

/// Counts what arrives.
#[derive(Debug, Default)]
struct Counter {
    messages: AtomicU64,
}

impl Handler for Counter {
    fn on_raft(&self, _from: NodeId, envelopes: Vec<RaftEnvelope>) {
        self.messages.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
    }

    // A store steps each range straight from its tuple; the per-range Raft message it builds
    // then is the cost of stepping, which the per-range baseline does not pay here either.
    fn on_heartbeats(&self, _from: NodeId, batch: HeartbeatBatch) {
        self.messages.fetch_add(batch.beats.len() as u64, Ordering::Relaxed);
    }
}

/// One result line.
#[derive(Debug, Clone)]
pub struct RaftResult {
    /// `batching` or `no-batching`.
    pub case: &'static str,
    /// Messages delivered.
    pub messages: u64,
    /// Frame bytes sent.
    pub bytes: u64,
    /// Frames sent.
    pub frames: u64,
    /// Wall time measured.
    pub wall: Duration,
    /// Process CPU time over the run.
    pub cpu: Duration,
}

impl RaftResult {
    /// Messages per second.
    #[must_use]
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64()
    }

    /// Frame MB (10^6 bytes) per second.
    #[must_use]
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    /// A JSON line.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"transport-raft\",\"case\":\"{}\",\"messages\":{},\"messages_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"frames\":{},\"messages_per_frame\":{:.1},\"cpu_percent\":{:.0}}}",
            self.case,
            self.messages,
            self.messages_per_sec(),
            self.mb_per_sec(),
            self.frames,
            self.messages as f64 / self.frames.max(1) as f64,
            100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64(),
        )
    }
}

/// One heartbeat result line.
#[derive(Debug, Clone)]
pub struct HeartbeatResult {
    /// `coalesced` or `per-range`.
    pub case: &'static str,
    /// Ranges with a heartbeat per tick.
    pub ranges: usize,
    /// Ticks run.
    pub ticks: u64,
    /// Heartbeats delivered.
    pub delivered: u64,
    /// Frame bytes sent.
    pub bytes: u64,
    /// Frames sent.
    pub frames: u64,
    /// Wall time.
    pub wall: Duration,
    /// Process CPU time.
    pub cpu: Duration,
    /// CPU time of the receiving node alone (its own single-threaded runtime and thread);
    /// the rest of `cpu` is the sending node, the driver and the idle main runtime.
    pub receiver_cpu: Duration,
}

impl HeartbeatResult {
    /// The receiving node's CPU as a share of one core.
    #[must_use]
    pub fn receiver_cpu_percent(&self) -> f64 {
        100.0 * self.receiver_cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Everything else (sending node, driver, idle runtime) as a share of one core.
    #[must_use]
    pub fn sender_cpu_percent(&self) -> f64 {
        100.0 * self.cpu.saturating_sub(self.receiver_cpu).as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Bytes per second on the wire (frames, not QUIC/UDP overhead).
    #[must_use]
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.wall.as_secs_f64()
    }

    /// Process CPU as a percentage of one core.
    #[must_use]
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// A JSON line.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"transport-heartbeats\",\"case\":\"{}\",\"ranges\":{},\"ticks\":{},\"delivered\":{},\"bytes_per_sec\":{:.0},\"frames_per_sec\":{:.1},\"cpu_percent_of_one_core\":{:.2},\"receiver_cpu_percent\":{:.3},\"sender_cpu_percent\":{:.3}}}",
            self.case,
            self.ranges,
            self.ticks,
            self.delivered,
            self.bytes_per_sec(),
            self.frames as f64 / self.wall.as_secs_f64(),
            self.cpu_percent(),
            self.receiver_cpu_percent(),
            self.sender_cpu_percent(),
        )
    }
}

async fn pair(
    dir: &Path,
    batcher: &BatcherConfig,
) -> anyhow::Result<(Transport, Transport, Arc<Counter>)> {
    let mut nodes = Vec::new();
    let counter = Arc::new(Counter::default());
    for id in 1..=2u64 {
        let tls =
            NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, &format!("node-{id}"))
                .context("dev certificates")?;
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let mut config = TransportConfig::new(NodeId(id), StoreId(id), 1, listen, tls);
        config.batcher = batcher.clone();
        let handler: Arc<dyn Handler> = counter.clone();
        nodes.push(Transport::start(config, handler).await?);
    }
    let b = nodes.pop().context("node 2")?;
    let a = nodes.pop().context("node 1")?;
    a.set_peer(NodeId(2), b.local_addr()?);
    b.set_peer(NodeId(1), a.local_addr()?);
    Ok((a, b, counter))
}

fn append(index: u64) -> RaftEnvelope {
    let mut message = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(1));
    message.index = LogIndex(index - 1);
    message.log_term = Term(1);
    message.commit = LogIndex(index - 1);
    message.entries = vec![Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from_static(&[0x5a; 64]),
    }];
    RaftEnvelope {
        range: RangeId(index % 64),
        from_store: StoreId(1),
        to_store: StoreId(2),
        message,
    }
}

fn beat(range: u64) -> Heartbeat {
    Heartbeat {
        range: RangeId(range),
        from: ReplicaId(1),
        to: ReplicaId(2),
        term: Term(5),
        commit: LogIndex(1000 + range),
        quiesce: false,
    }
}

fn heartbeat(range: u64) -> RaftEnvelope {
    let mut message = Message::new(MessageKind::Heartbeat, ReplicaId(1), ReplicaId(2), Term(5));
    message.commit = LogIndex(1000 + range);
    RaftEnvelope { range: RangeId(range), from_store: StoreId(1), to_store: StoreId(2), message }
}

/// Small Raft messages from node 1 to node 2 for `seconds`, at most `window` undelivered.
///
/// # Errors
/// If the transports cannot start.
pub async fn raft_messages(
    dir: &Path,
    case: &'static str,
    batcher: BatcherConfig,
    window: u64,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<RaftResult> {
    let (a, b, counter) = pair(dir, &batcher).await?;
    let a = Arc::new(a);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let (a, stop, sent, counter) = (a.clone(), stop.clone(), sent.clone(), counter.clone());
        std::thread::spawn(move || {
            let mut index = 1u64;
            while !stop.load(Ordering::Relaxed) {
                if index - counter.messages.load(Ordering::Relaxed) > window {
                    std::thread::yield_now();
                    continue;
                }
                if a.send_raft(NodeId(2), append(index)).is_ok() {
                    index += 1;
                }
            }
            sent.store(index - 1, Ordering::Relaxed);
        })
    };
    tokio::time::sleep(warmup).await;
    let (messages0, stats0, cpu0, start) = (
        counter.messages.load(Ordering::Relaxed),
        a.stats().sent(MessageClass::Raft),
        cpu::process_cpu_time()?,
        Instant::now(),
    );
    tokio::time::sleep(seconds).await;
    let (messages1, stats1, cpu1, wall) = (
        counter.messages.load(Ordering::Relaxed),
        a.stats().sent(MessageClass::Raft),
        cpu::process_cpu_time()?,
        start.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    producer.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
    drop(b);
    Ok(RaftResult {
        case,
        messages: messages1 - messages0,
        bytes: stats1.bytes - stats0.bytes,
        frames: stats1.frames - stats0.frames,
        wall,
        cpu: cpu1.saturating_sub(cpu0),
    })
}

/// Heartbeats of `ranges` ranges from node 1 to node 2 every `interval`, for `ticks` ticks.
///
/// # Errors
/// If the transports cannot start.
pub async fn heartbeats(
    dir: &Path,
    case: &'static str,
    coalesce: bool,
    ranges: usize,
    interval: Duration,
    ticks: u64,
) -> anyhow::Result<HeartbeatResult> {
    let batcher = BatcherConfig { coalesce_heartbeats: coalesce, ..BatcherConfig::default() };
    let counter = Arc::new(Counter::default());
    let a = Transport::start(node_config(dir, 1, &batcher)?, counter.clone()).await?;
    let receiver = Receiver::start(node_config(dir, 2, &batcher)?, counter.clone())?;
    a.set_peer(NodeId(2), receiver.addr);
    // Connect first so the handshake is not measured.
    let _ = a.send_raft(NodeId(2), heartbeat(0));
    a.tick();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.messages.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "node 2 unreachable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let class = if coalesce { MessageClass::Heartbeat } else { MessageClass::Raft };
    let (delivered0, stats0, cpu0, receiver0, start) = (
        counter.messages.load(Ordering::Relaxed),
        a.stats().sent(class),
        cpu::process_cpu_time()?,
        receiver.cpu()?,
        Instant::now(),
    );
    let mut next = tokio::time::Instant::now();
    for _ in 0..ticks {
        next += interval;
        // A store hands a tick's heartbeats over together: one tuple per range when
        // coalescing, one Raft message per range otherwise.
        if coalesce {
            a.send_heartbeats(NodeId(2), StoreId(1), StoreId(2), (1..=ranges as u64).map(beat));
        } else {
            a.send_raft_many(NodeId(2), (1..=ranges as u64).map(heartbeat));
        }
        a.tick();
        tokio::time::sleep_until(next).await;
    }
    let (delivered1, stats1, cpu1, receiver1, wall) = (
        counter.messages.load(Ordering::Relaxed),
        a.stats().sent(class),
        cpu::process_cpu_time()?,
        receiver.cpu()?,
        start.elapsed(),
    );
    receiver.stop();
    Ok(HeartbeatResult {
        case,
        ranges,
        ticks,
        delivered: delivered1 - delivered0,
        bytes: stats1.bytes - stats0.bytes,
        frames: stats1.frames - stats0.frames,
        wall,
        cpu: cpu1.saturating_sub(cpu0),
        receiver_cpu: receiver1.saturating_sub(receiver0),
    })
}

fn node_config(dir: &Path, id: u64, batcher: &BatcherConfig) -> anyhow::Result<TransportConfig> {
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, &format!("node-{id}"))
            .context("dev certificates")?;
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut config = TransportConfig::new(NodeId(id), StoreId(id), 1, listen, tls);
    config.batcher = batcher.clone();
    Ok(config)
}

/// A node on its own single-threaded runtime in its own OS thread, so that its CPU time can
/// be read apart from the rest of the process (`/proc/self/task/<tid>/schedstat`, in ns).
struct Receiver {
    addr: SocketAddr,
    schedstat: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(config: TransportConfig, handler: Arc<Counter>) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = (|| -> anyhow::Result<_> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let transport = runtime.block_on(Transport::start(config, handler))?;
                let addr = transport.local_addr()?;
                let task = std::fs::read_link("/proc/thread-self")?;
                Ok((runtime, transport, addr, task))
            })();
            match started {
                Ok((runtime, transport, addr, task)) => {
                    let _ = ready_tx.send(Ok((addr, task)));
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                    drop(transport);
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
        });
        let (addr, task) = ready_rx.recv().context("receiver thread died")??;
        Ok(Self {
            addr,
            schedstat: std::path::Path::new("/proc").join(task).join("schedstat"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// CPU time of the receiver's thread so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let text = std::fs::read_to_string(&self.schedstat)
            .with_context(|| format!("reading {}", self.schedstat.display()))?;
        let nanos: u64 = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse().ok())
            .context("malformed schedstat")?;
        Ok(Duration::from_nanos(nanos))
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
