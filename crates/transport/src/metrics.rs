//! Metrics: `metrics`-crate series for operators and in-process counters for tests and
//! benchmarks ([`TransportStats`]).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tessera_transport_messages_sent_total` | counter | kind, destination | messages written (a Raft envelope, a heartbeat tuple, an RPC, a snapshot chunk) |
//! | `tessera_transport_bytes_sent_total` | counter | kind, destination | frame bytes written, headers included |
//! | `tessera_transport_messages_received_total` | counter | kind, source | messages read and validated |
//! | `tessera_transport_bytes_received_total` | counter | kind, source | frame bytes read |
//! | `tessera_transport_batch_messages` | histogram | destination | Raft envelopes per `RaftBatch` frame |
//! | `tessera_transport_heartbeats_per_message` | histogram | destination | heartbeat tuples per coalesced frame |
//! | `tessera_transport_queue_messages` | gauge | destination | Raft messages queued for the node after a flush |
//! | `tessera_transport_dropped_total` | counter | destination, reason | messages dropped: Raft messages (`queue_full`, `unreachable`, `write_failed`, `fault_loss`, `fault_blocked`, `no_address`), RPC requests and snapshot chunks lost to the fault hook (`fault_loss`), RPC requests whose call gave up before they were written (`abandoned`, never sent) |
//! | `tessera_transport_reconnects_total` | counter | destination | connections established to a node after the first |
//! | `tessera_transport_bad_frames_total` | counter | source | streams closed because of a bad frame |
//! | `tessera_transport_rpc_busy_total` | counter | side | RPCs answered `ServerBusy` (`client`: local bound, `server`: server bound) |
//!
//! `kind` is one of `raft`, `heartbeat`, `heartbeat_response`, `rpc`, `snapshot`.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram};
use tessera_wire::ids::NodeId;

/// What a message is, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// A Raft envelope in a `RaftBatch`.
    Raft,
    /// A heartbeat tuple in a coalesced `HeartbeatBatch`.
    Heartbeat,
    /// A heartbeat answer tuple in a `HeartbeatResponseBatch`.
    HeartbeatResponse,
    /// An RPC request or response.
    Rpc,
    /// A snapshot chunk.
    Snapshot,
}

impl MessageClass {
    /// Every class, in index order.
    pub const ALL: [Self; 5] =
        [Self::Raft, Self::Heartbeat, Self::HeartbeatResponse, Self::Rpc, Self::Snapshot];

    /// The `kind` label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Raft => "raft",
            Self::Heartbeat => "heartbeat",
            Self::HeartbeatResponse => "heartbeat_response",
            Self::Rpc => "rpc",
            Self::Snapshot => "snapshot",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why messages were dropped: Raft messages for any reason; RPC requests for `FaultLoss` and
/// `Abandoned`; snapshot chunks for `FaultLoss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    Unreachable,
    WriteFailed,
    FaultLoss,
    FaultBlocked,
    NoAddress,
    /// An RPC request whose call gave up (timed out, dropped) before it was written.
    Abandoned,
}

impl DropReason {
    const ALL: [Self; 7] = [
        Self::QueueFull,
        Self::Unreachable,
        Self::WriteFailed,
        Self::FaultLoss,
        Self::FaultBlocked,
        Self::NoAddress,
        Self::Abandoned,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Unreachable => "unreachable",
            Self::WriteFailed => "write_failed",
            Self::FaultLoss => "fault_loss",
            Self::FaultBlocked => "fault_blocked",
            Self::NoAddress => "no_address",
            Self::Abandoned => "abandoned",
        }
    }
}

/// Traffic counters of one direction and class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Frames.
    pub frames: u64,
    /// Messages (envelopes, tuples, requests, chunks).
    pub messages: u64,
    /// Frame bytes, headers included.
    pub bytes: u64,
}

/// A snapshot of a transport's counters since it started, all destinations together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Sent, indexed like [`MessageClass::ALL`].
    pub sent: [TrafficStats; 5],
    /// Received, indexed like [`MessageClass::ALL`].
    pub received: [TrafficStats; 5],
    /// Messages dropped for any reason (`tessera_transport_dropped_total`).
    pub dropped_msgs: u64,
    /// Connections established to a node that had one before.
    pub reconnects: u64,
    /// Streams closed because of a bad frame.
    pub bad_frames: u64,
    /// RPCs answered `ServerBusy`, by either bound.
    pub rpc_busy: u64,
    /// RPC lanes (long-lived RPC streams) this node opened.
    pub rpc_lanes_opened: u64,
}

impl TransportStats {
    /// Sent traffic of `class`.
    #[must_use]
    pub const fn sent(&self, class: MessageClass) -> TrafficStats {
        self.sent[class.index()]
    }

    /// Received traffic of `class`.
    #[must_use]
    pub const fn received(&self, class: MessageClass) -> TrafficStats {
        self.received[class.index()]
    }
}

#[derive(Debug, Default)]
struct AtomicTraffic {
    frames: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl AtomicTraffic {
    fn add(&self, messages: u64, bytes: u64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn load(&self) -> TrafficStats {
        TrafficStats {
            frames: self.frames.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The process-local counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    sent: [AtomicTraffic; 5],
    received: [AtomicTraffic; 5],
    dropped_msgs: AtomicU64,
    reconnects: AtomicU64,
    bad_frames: AtomicU64,
    rpc_busy: AtomicU64,
    rpc_lanes_opened: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            sent: std::array::from_fn(|i| self.sent[i].load()),
            received: std::array::from_fn(|i| self.received[i].load()),
            dropped_msgs: self.dropped_msgs.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            bad_frames: self.bad_frames.load(Ordering::Relaxed),
            rpc_busy: self.rpc_busy.load(Ordering::Relaxed),
            rpc_lanes_opened: self.rpc_lanes_opened.load(Ordering::Relaxed),
        }
    }

    /// A bad frame from a peer not identified yet (before or during the handshake).
    pub(crate) fn bad_frame_unattributed(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_transport_bad_frames_total", "source" => "unknown").increment(1);
    }

    pub(crate) fn rpc_lane_opened(&self) {
        self.rpc_lanes_opened.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_transport_rpc_lanes_opened_total").increment(1);
    }

    pub(crate) fn rpc_busy(&self, side: &'static str) {
        self.rpc_busy.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_transport_rpc_busy_total", "side" => side).increment(1);
    }
}

/// Cached metric handles for one peer (labels are built once, not per message).
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    sent_messages: [Counter; 5],
    sent_bytes: [Counter; 5],
    received_messages: [Counter; 5],
    received_bytes: [Counter; 5],
    batch_messages: Histogram,
    heartbeats_per_message: Histogram,
    queue_messages: Gauge,
    dropped: [Counter; 7],
    reconnects: Counter,
    bad_frames: Counter,
}

impl PeerMetrics {
    pub(crate) fn new(node: NodeId) -> Self {
        let node = node.to_string();
        let per_class = |name: &'static str, direction: &'static str| {
            MessageClass::ALL.map(
                |class| metrics::counter!(name, "kind" => class.label(), direction => node.clone()),
            )
        };
        Self {
            sent_messages: per_class("tessera_transport_messages_sent_total", "destination"),
            sent_bytes: per_class("tessera_transport_bytes_sent_total", "destination"),
            received_messages: per_class("tessera_transport_messages_received_total", "source"),
            received_bytes: per_class("tessera_transport_bytes_received_total", "source"),
            batch_messages: metrics::histogram!("tessera_transport_batch_messages", "destination" => node.clone()),
            heartbeats_per_message: metrics::histogram!(
                "tessera_transport_heartbeats_per_message",
                "destination" => node.clone()
            ),
            queue_messages: metrics::gauge!("tessera_transport_queue_messages", "destination" => node.clone()),
            dropped: DropReason::ALL.map(|reason| {
                metrics::counter!(
                    "tessera_transport_dropped_total",
                    "destination" => node.clone(),
                    "reason" => reason.label()
                )
            }),
            reconnects: metrics::counter!("tessera_transport_reconnects_total", "destination" => node.clone()),
            bad_frames: metrics::counter!("tessera_transport_bad_frames_total", "source" => node),
        }
    }

    pub(crate) fn sent(&self, stats: &Stats, class: MessageClass, messages: usize, bytes: usize) {
        let (messages, bytes) = (messages as u64, bytes as u64);
        let i = class.index();
        self.sent_messages[i].increment(messages);
        self.sent_bytes[i].increment(bytes);
        stats.sent[i].add(messages, bytes);
        #[allow(clippy::cast_precision_loss)]
        match class {
            MessageClass::Raft => self.batch_messages.record(messages as f64),
            MessageClass::Heartbeat => self.heartbeats_per_message.record(messages as f64),
            _ => {}
        }
    }

    pub(crate) fn received(
        &self,
        stats: &Stats,
        class: MessageClass,
        messages: usize,
        bytes: usize,
    ) {
        let (messages, bytes) = (messages as u64, bytes as u64);
        let i = class.index();
        self.received_messages[i].increment(messages);
        self.received_bytes[i].increment(bytes);
        stats.received[i].add(messages, bytes);
    }

    pub(crate) fn dropped(&self, stats: &Stats, reason: DropReason, messages: usize) {
        if messages == 0 {
            return;
        }
        let index = DropReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[index].increment(messages as u64);
        stats.dropped_msgs.fetch_add(messages as u64, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self, stats: &Stats) {
        self.reconnects.increment(1);
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_frame(&self, stats: &Stats) {
        self.bad_frames.increment(1);
        stats.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn queue_depth(&self, messages: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.queue_messages.set(messages as f64);
    }
}
