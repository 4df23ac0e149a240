//! The pure batching and coalescing state machine of the transport (ARCHITECTURE.md §6,
//! STYLE.md 1, 6, 7 and 10).
//!
//! Events in, batches out, in the shape of quinn-proto: the store hands every outgoing Raft
//! message to [`Batcher::push_raft`], the adapter calls [`Batcher::tick`] once per Raft tick
//! and, for each of [`Batcher::ready_destinations`], drains [`Batcher::poll_transmit`] onto
//! that node's connection. No I/O, no async, no clocks, no threads and no randomness live
//! here: every output is a deterministic function of the calls made.
//!
//! What happens to a message:
//! - A heartbeat or heartbeat response that carries nothing but the fields of a tuple
//!   ([`Heartbeat::from_message`], [`HeartbeatResponse::from_message`]) is diverted into a
//!   coalescing buffer per destination node and store pair. At the end of the tick each
//!   buffer becomes one [`HeartbeatBatch`] (or [`HeartbeatResponseBatch`]), split only to
//!   respect the batch bounds. Requests and responses never share a batch.
//! - Everything else (including a heartbeat with a read-index context) queues in push order
//!   for the destination and leaves in [`RaftBatch`]es.
//!
//! The transport promises little (STYLE.md 6): coalesced heartbeats overtake ordinary
//! messages, a full queue refuses new messages ([`Dropped::QueueFull`]) and a failed
//! connection drops its queue; Raft retries. Ordinary messages keep their push order per
//! destination node; heartbeat tuples keep theirs per destination node and store pair.
//!
//! Bounds (STYLE.md 10): everything held for one destination (queued messages, tuples being
//! gathered and batches waiting to be polled) counts against
//! [`BatcherConfig::queue_msgs_max`] and [`BatcherConfig::queue_bytes_max`], so the
//! coalescing buffers are bounded by the same budget. A message larger than
//! `queue_bytes_max` is accepted only into an empty queue, or it could never be sent. Every
//! batch stays within [`BatcherConfig::batch_msgs_max`] and
//! [`BatcherConfig::batch_bytes_max`], except that one message larger than `batch_bytes_max`
//! goes alone. Sizes are cheap estimates ([`message_size_bytes`]), never serialization.

use std::collections::{BTreeMap, VecDeque};

use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::raft::Message;
use tessera_wire::transport::{
    Heartbeat, HeartbeatBatch, HeartbeatResponse, HeartbeatResponseBatch, RaftBatch, RaftEnvelope,
};

#[cfg(test)]
mod tests;

/// Estimated bytes of one queued Raft message apart from its entries, context and snapshot:
/// the envelope (range, stores) and the message's fixed fields.
pub const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// Estimated bytes of one coalesced [`Heartbeat`] tuple.
pub const HEARTBEAT_TUPLE_BYTES: usize = 48;

/// Estimated bytes of one coalesced [`HeartbeatResponse`] tuple.
pub const HEARTBEAT_RESPONSE_TUPLE_BYTES: usize = 32;

/// Estimated bytes per replica listed in a snapshot's membership.
const SNAPSHOT_REPLICA_BYTES: usize = 8;

/// Estimated bytes of a snapshot's fixed metadata.
const SNAPSHOT_OVERHEAD_BYTES: usize = 32;

/// The size a Raft message counts for in the batcher's bounds: a fixed overhead plus its
/// entries' [`size_bytes`](tessera_wire::raft::Entry::size_bytes), its context and any inline
/// snapshot. An estimate, computed without serializing.
#[must_use]
pub fn message_size_bytes(message: &Message) -> usize {
    let entries = message.entries.iter().fold(0usize, |sum, entry| {
        sum.saturating_add(usize::try_from(entry.size_bytes()).unwrap_or(usize::MAX))
    });
    let snapshot = message.snapshot.as_ref().map_or(0, |snapshot| {
        let conf_state = &snapshot.metadata.conf_state;
        let replicas = conf_state.voters.len()
            + conf_state.voters_outgoing.len()
            + conf_state.learners.len()
            + conf_state.learners_next.len();
        SNAPSHOT_OVERHEAD_BYTES
            .saturating_add(replicas.saturating_mul(SNAPSHOT_REPLICA_BYTES))
            .saturating_add(snapshot.data.len())
    });
    MESSAGE_OVERHEAD_BYTES
        .saturating_add(entries)
        .saturating_add(message.context.len())
        .saturating_add(snapshot)
}

/// The batcher's bounds and switches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most messages (or tuples) in one batch.
    pub batch_msgs_max: usize,
    /// Most estimated bytes in one batch; a single larger message goes alone.
    pub batch_bytes_max: usize,
    /// Most messages (and tuples) held for one destination node.
    pub queue_msgs_max: usize,
    /// Most estimated bytes held for one destination node; a single larger message is
    /// accepted into an empty queue only.
    pub queue_bytes_max: usize,
    /// Coalesce heartbeats and their responses per node pair and tick. `false` sends them as
    /// ordinary Raft messages, one per range (the benchmark's baseline).
    pub coalesce_heartbeats: bool,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            batch_msgs_max: 4096,
            batch_bytes_max: 4 << 20,
            queue_msgs_max: 65_536,
            queue_bytes_max: 64 << 20,
            coalesce_heartbeats: true,
        }
    }
}

/// A [`BatcherConfig`] the batcher cannot work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("batcher config: {field} must be at least 1")]
pub struct BatcherConfigError {
    /// The offending field.
    pub field: &'static str,
}

impl BatcherConfig {
    /// Checks that every bound is at least 1.
    pub fn validate(&self) -> Result<(), BatcherConfigError> {
        let bounds = [
            ("batch_msgs_max", self.batch_msgs_max),
            ("batch_bytes_max", self.batch_bytes_max),
            ("queue_msgs_max", self.queue_msgs_max),
            ("queue_bytes_max", self.queue_bytes_max),
        ];
        match bounds.iter().find(|(_, value)| *value == 0) {
            Some(&(field, _)) => Err(BatcherConfigError { field }),
            None => Ok(()),
        }
    }

    /// How many tuples of `tuple_bytes` each fit in one batch (at least one).
    fn tuples_per_batch(&self, tuple_bytes: usize) -> usize {
        self.batch_msgs_max.min((self.batch_bytes_max / tuple_bytes).max(1))
    }
}

/// One batch for one destination node, as [`Batcher::poll_transmit`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Ordinary Raft messages, in push order.
    Raft(RaftBatch),
    /// Coalesced heartbeats of one store pair.
    Heartbeats(HeartbeatBatch),
    /// Coalesced heartbeat responses of one store pair.
    HeartbeatResponses(HeartbeatResponseBatch),
}

impl Outgoing {
    /// How many Raft messages the batch stands for.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Raft(batch) => batch.envelopes.len(),
            Self::Heartbeats(batch) => batch.beats.len(),
            Self::HeartbeatResponses(batch) => batch.responses.len(),
        }
    }

    /// Whether the batch is empty (never true of one the batcher hands out).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The estimated bytes the batch counted for in the bounds (recomputed, so linear in the
    /// batch for [`Outgoing::Raft`]).
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        match self {
            Self::Raft(batch) => batch.envelopes.iter().fold(0usize, |sum, envelope| {
                sum.saturating_add(message_size_bytes(&envelope.message))
            }),
            Self::Heartbeats(batch) => batch.beats.len() * HEARTBEAT_TUPLE_BYTES,
            Self::HeartbeatResponses(batch) => {
                batch.responses.len() * HEARTBEAT_RESPONSE_TUPLE_BYTES
            }
        }
    }
}

/// Where [`Batcher::push_raft`] put an accepted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the next raft batch: the destination has something to send now.
    Queued,
    /// Gathered into this tick's coalesced heartbeats (or responses): nothing to send until
    /// the next [`Batcher::tick`], so the sender need not be woken.
    Coalesced,
}

/// What a bulk push did with its items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkPush {
    /// Accepted and queued for the next raft batch (the sender should be woken).
    pub queued: usize,
    /// Accepted into this tick's coalesced heartbeats.
    pub coalesced: usize,
    /// Refused because the destination's queue was full.
    pub dropped: usize,
}

impl BulkPush {
    fn record(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.queued += 1,
            Pushed::Coalesced => self.coalesced += 1,
        }
    }
}

/// Why [`Batcher::push_raft`] refused a message. The message is dropped; Raft retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The destination's queue is at `queue_msgs_max` or would pass `queue_bytes_max`.
    #[error("send queue to the destination node is full")]
    QueueFull,
}

/// Counters for one kind of [`Outgoing`] batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Messages accepted by [`Batcher::push_raft`].
    pub msgs_queued: u64,
    /// Estimated bytes accepted by [`Batcher::push_raft`].
    pub bytes_queued: u64,
    /// Messages handed out by [`Batcher::poll_transmit`].
    pub msgs_sent: u64,
    /// Estimated bytes handed out by [`Batcher::poll_transmit`].
    pub bytes_sent: u64,
    /// Batches handed out by [`Batcher::poll_transmit`].
    pub batches_sent: u64,
}

/// How many tuples each coalesced batch carried when it was built at a tick: the mean is
/// `tuples_sum / batches`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalescingStats {
    /// Coalesced batches built.
    pub batches: u64,
    /// Tuples in those batches.
    pub tuples_sum: u64,
}

/// What is held for one destination node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages and tuples held.
    pub msgs: usize,
    /// Their estimated bytes.
    pub bytes: usize,
}

/// The batcher's counters. Every message accepted is, at any moment, exactly one of: still
/// held (`queue_depths`), sent, or dropped on disconnect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Ordinary Raft messages (including heartbeats when they are not coalesced).
    pub raft: KindStats,
    /// Coalesced heartbeats (messages are tuples).
    pub heartbeats: KindStats,
    /// Coalesced heartbeat responses (messages are tuples).
    pub heartbeat_responses: KindStats,
    /// Heartbeats per coalesced heartbeat batch.
    pub coalesced_heartbeats: CoalescingStats,
    /// Responses per coalesced response batch.
    pub coalesced_heartbeat_responses: CoalescingStats,
    /// Messages refused because the destination's queue was full.
    pub dropped_queue_full_msgs: u64,
    /// Their estimated bytes.
    pub dropped_queue_full_bytes: u64,
    /// Messages dropped with their queue by [`Batcher::on_disconnected`].
    pub dropped_disconnected_msgs: u64,
    /// Their estimated bytes.
    pub dropped_disconnected_bytes: u64,
    /// What is held for each destination node the batcher knows.
    pub queue_depths: BTreeMap<NodeId, QueueDepth>,
}

/// The stores at both ends of a coalesced batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StorePair {
    from: StoreId,
    to: StoreId,
}

/// An ordinary Raft message waiting for a batch.
#[derive(Debug)]
struct Queued {
    envelope: RaftEnvelope,
    // Invariant: `size_bytes == message_size_bytes(&envelope.message)`.
    size_bytes: usize,
}

/// Where [`Batcher::push_raft`] puts a message.
enum Item {
    Raft(Queued),
    Heartbeat(StorePair, Heartbeat),
    Response(StorePair, HeartbeatResponse),
}

impl Item {
    fn size_bytes(&self) -> usize {
        match self {
            Self::Raft(queued) => queued.size_bytes,
            Self::Heartbeat(..) => HEARTBEAT_TUPLE_BYTES,
            Self::Response(..) => HEARTBEAT_RESPONSE_TUPLE_BYTES,
        }
    }
}

/// Everything held for one destination node.
#[derive(Debug, Default)]
struct Destination {
    /// Ordinary Raft messages, in push order.
    raft: VecDeque<Queued>,
    /// Heartbeat tuples gathered during the current tick, per store pair, in push order.
    gathering_heartbeats: BTreeMap<StorePair, Vec<Heartbeat>>,
    /// Response tuples gathered during the current tick, per store pair, in push order.
    gathering_responses: BTreeMap<StorePair, Vec<HeartbeatResponse>>,
    // Invariant: every batch is non-empty and within the batch bounds.
    /// Heartbeat batches built at past ticks, oldest first.
    sealed_heartbeats: VecDeque<HeartbeatBatch>,
    // Invariant: every batch is non-empty and within the batch bounds.
    /// Response batches built at past ticks, oldest first.
    sealed_responses: VecDeque<HeartbeatResponseBatch>,
    /// Per store pair (this side first), the `tick` of the last heartbeat batch received the
    /// other way, echoed by response batches.
    response_ticks: BTreeMap<StorePair, u64>,
    // Invariant: counts exactly what the five buffers above hold; `msgs <= queue_msgs_max`
    // and `bytes <= queue_bytes_max || msgs == 1`.
    depth: QueueDepth,
}

impl Destination {
    /// Whether a message of `size_bytes` fits within the queue bounds.
    fn has_room(&self, size_bytes: usize, config: &BatcherConfig) -> bool {
        // An empty queue takes anything (queue_msgs_max >= 1), or an oversized message could
        // never be sent.
        self.depth.msgs == 0
            || (self.depth.msgs < config.queue_msgs_max
                && self.depth.bytes.saturating_add(size_bytes) <= config.queue_bytes_max)
    }

    /// Whether a batch can be polled.
    fn is_ready(&self) -> bool {
        !self.sealed_heartbeats.is_empty()
            || !self.sealed_responses.is_empty()
            || !self.raft.is_empty()
    }

    fn add(&mut self, msgs: usize, bytes: usize) {
        self.depth.msgs += msgs;
        self.depth.bytes = self.depth.bytes.saturating_add(bytes);
    }

    fn remove(&mut self, msgs: usize, bytes: usize) {
        assert!(
            msgs <= self.depth.msgs && bytes <= self.depth.bytes,
            "removing {msgs} msgs / {bytes} bytes from a queue holding {:?}",
            self.depth
        );
        self.depth.msgs -= msgs;
        self.depth.bytes -= bytes;
    }

    /// Counts what the buffers hold, from scratch.
    fn recount(&self) -> QueueDepth {
        let mut depth = QueueDepth::default();
        let mut add = |msgs: usize, bytes: usize| {
            depth.msgs += msgs;
            depth.bytes = depth.bytes.saturating_add(bytes);
        };
        for queued in &self.raft {
            add(1, queued.size_bytes);
        }
        for beats in self.gathering_heartbeats.values() {
            add(beats.len(), beats.len() * HEARTBEAT_TUPLE_BYTES);
        }
        for responses in self.gathering_responses.values() {
            add(responses.len(), responses.len() * HEARTBEAT_RESPONSE_TUPLE_BYTES);
        }
        for batch in &self.sealed_heartbeats {
            add(batch.beats.len(), batch.beats.len() * HEARTBEAT_TUPLE_BYTES);
        }
        for batch in &self.sealed_responses {
            add(batch.responses.len(), batch.responses.len() * HEARTBEAT_RESPONSE_TUPLE_BYTES);
        }
        depth
    }

    /// Takes the next ordinary Raft batch: messages in push order up to the batch bounds,
    /// at least one. Returns the batch and its estimated bytes.
    fn take_raft_batch(&mut self, config: &BatcherConfig) -> (RaftBatch, usize) {
        let mut envelopes = Vec::new();
        let mut bytes = 0usize;
        while envelopes.len() < config.batch_msgs_max {
            let Some(next) = self.raft.front() else { break };
            if !envelopes.is_empty()
                && bytes.saturating_add(next.size_bytes) > config.batch_bytes_max
            {
                break;
            }
            let Some(queued) = self.raft.pop_front() else { break };
            bytes = bytes.saturating_add(queued.size_bytes);
            envelopes.push(queued.envelope);
        }
        (RaftBatch { envelopes }, bytes)
    }
}

/// Splits `items` into batches of at most `per_batch` (at least 1), moving rather than
/// copying when one batch holds them all.
fn split_batches<T: Copy>(items: Vec<T>, per_batch: usize) -> Vec<Vec<T>> {
    if items.len() <= per_batch {
        vec![items]
    } else {
        items.chunks(per_batch).map(<[T]>::to_vec).collect()
    }
}

/// The batching and coalescing state of one node's outgoing Raft traffic, per destination
/// node. See the module documentation for the rules.
#[derive(Debug)]
pub struct Batcher {
    /// This node, for logs and `Debug`.
    local: NodeId,
    /// This node's store, for logs and `Debug`. Batches take their stores from the
    /// envelopes, so one batcher can serve a node with several stores.
    local_store: StoreId,
    // Invariant: `config.validate()` passed.
    config: BatcherConfig,
    /// How many ticks have ended; the batches built at the Nth tick carry `tick == N`.
    ticks: u64,
    /// Every destination node with something held or a tick to echo.
    destinations: BTreeMap<NodeId, Destination>,
    // Invariant: `stats.queue_depths` has exactly the keys of `destinations`, with their
    // depths.
    stats: BatcherStats,
}

impl Batcher {
    /// A batcher for node `local` (store `local_store`) with nothing queued.
    ///
    /// # Panics
    ///
    /// If `config` fails [`BatcherConfig::validate`]; validate configuration read from
    /// outside first.
    #[must_use]
    pub fn new(local: NodeId, local_store: StoreId, config: BatcherConfig) -> Self {
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        Self {
            local,
            local_store,
            config,
            ticks: 0,
            destinations: BTreeMap::new(),
            stats: BatcherStats::default(),
        }
    }

    /// This node.
    #[must_use]
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// This node's store, as given to [`Batcher::new`].
    #[must_use]
    pub fn local_store(&self) -> StoreId {
        self.local_store
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// How many ticks have ended.
    #[must_use]
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Queues a Raft message for node `to`. A heartbeat or heartbeat response without a
    /// read-index context (one [`Heartbeat::from_message`] or
    /// [`HeartbeatResponse::from_message`] accepts) goes to the coalescing buffer of the
    /// current tick when [`BatcherConfig::coalesce_heartbeats`] is on; everything else queues
    /// in order for the next Raft batch.
    ///
    /// # Errors
    ///
    /// [`Dropped::QueueFull`] when `to`'s queue is at `queue_msgs_max` or the message would
    /// take it past `queue_bytes_max`; the message is dropped and counted.
    pub fn push_raft(&mut self, to: NodeId, envelope: RaftEnvelope) -> Result<Pushed, Dropped> {
        let item = self.classify(envelope);
        self.push_item(to, item)
    }

    /// Queues one range's heartbeat tuple from store `from_store` to store `to_store` on node
    /// `to` — what a store hands over per range and tick, without building a Raft message.
    /// Coalesced like a heartbeat given to [`push_raft`](Self::push_raft); sent as an
    /// ordinary Raft message when coalescing is off.
    ///
    /// # Errors
    ///
    /// As [`push_raft`](Self::push_raft).
    pub fn push_heartbeat(
        &mut self,
        to: NodeId,
        from_store: StoreId,
        to_store: StoreId,
        beat: Heartbeat,
    ) -> Result<Pushed, Dropped> {
        if !self.config.coalesce_heartbeats {
            let envelope = RaftEnvelope {
                range: beat.range,
                from_store,
                to_store,
                message: beat.to_message(),
            };
            return self.push_raft(to, envelope);
        }
        self.push_item(to, Item::Heartbeat(StorePair { from: from_store, to: to_store }, beat))
    }

    /// Queues a tick's heartbeat tuples from store `from_store` to store `to_store` on node
    /// `to`, all at once: [`push_heartbeat`](Self::push_heartbeat) for each, with the
    /// destination and its gathering buffer looked up once. Returns how many were accepted
    /// and how many dropped because the queue was full.
    pub fn push_heartbeats(
        &mut self,
        to: NodeId,
        from_store: StoreId,
        to_store: StoreId,
        beats: impl IntoIterator<Item = Heartbeat>,
    ) -> BulkPush {
        let mut result = BulkPush::default();
        if !self.config.coalesce_heartbeats {
            for beat in beats {
                match self.push_heartbeat(to, from_store, to_store, beat) {
                    Ok(pushed) => result.record(pushed),
                    Err(Dropped::QueueFull) => result.dropped += 1,
                }
            }
            return result;
        }
        let (msgs_max, bytes_max) = (self.config.queue_msgs_max, self.config.queue_bytes_max);
        let destination = self.destinations.entry(to).or_default();
        let depth = &mut destination.depth;
        let gathering = destination
            .gathering_heartbeats
            .entry(StorePair { from: from_store, to: to_store })
            .or_default();
        for beat in beats {
            // As `Destination::has_room`, inlined to borrow the depth and the buffer apart.
            let room = depth.msgs == 0
                || (depth.msgs < msgs_max
                    && depth.bytes.saturating_add(HEARTBEAT_TUPLE_BYTES) <= bytes_max);
            if room {
                depth.msgs += 1;
                depth.bytes = depth.bytes.saturating_add(HEARTBEAT_TUPLE_BYTES);
                gathering.push(beat);
                result.record(Pushed::Coalesced);
            } else {
                result.dropped += 1;
            }
        }
        let depth = *depth;
        self.stats.heartbeats.msgs_queued += result.coalesced as u64;
        self.stats.heartbeats.bytes_queued += (result.coalesced * HEARTBEAT_TUPLE_BYTES) as u64;
        self.stats.dropped_queue_full_msgs += result.dropped as u64;
        self.stats.dropped_queue_full_bytes += (result.dropped * HEARTBEAT_TUPLE_BYTES) as u64;
        self.stats.queue_depths.insert(to, depth);
        self.debug_check_destination(to);
        result
    }

    fn push_item(&mut self, to: NodeId, item: Item) -> Result<Pushed, Dropped> {
        let size_bytes = item.size_bytes();
        let destination = self.destinations.entry(to).or_default();
        if !destination.has_room(size_bytes, &self.config) {
            self.stats.dropped_queue_full_msgs += 1;
            self.stats.dropped_queue_full_bytes += size_bytes as u64;
            self.stats.queue_depths.insert(to, destination.depth);
            return Err(Dropped::QueueFull);
        }
        destination.add(1, size_bytes);
        let (kind, pushed) = match item {
            Item::Raft(queued) => {
                destination.raft.push_back(queued);
                (&mut self.stats.raft, Pushed::Queued)
            }
            Item::Heartbeat(pair, beat) => {
                destination.gathering_heartbeats.entry(pair).or_default().push(beat);
                (&mut self.stats.heartbeats, Pushed::Coalesced)
            }
            Item::Response(pair, response) => {
                destination.gathering_responses.entry(pair).or_default().push(response);
                (&mut self.stats.heartbeat_responses, Pushed::Coalesced)
            }
        };
        kind.msgs_queued += 1;
        kind.bytes_queued += size_bytes as u64;
        self.stats.queue_depths.insert(to, destination.depth);
        self.debug_check_destination(to);
        Ok(pushed)
    }

    /// Where a message goes.
    fn classify(&self, envelope: RaftEnvelope) -> Item {
        if self.config.coalesce_heartbeats {
            let pair = StorePair { from: envelope.from_store, to: envelope.to_store };
            if let Some(beat) = Heartbeat::from_message(envelope.range, &envelope.message) {
                return Item::Heartbeat(pair, beat);
            }
            if let Some(response) =
                HeartbeatResponse::from_message(envelope.range, &envelope.message)
            {
                return Item::Response(pair, response);
            }
        }
        let size_bytes = message_size_bytes(&envelope.message);
        Item::Raft(Queued { envelope, size_bytes })
    }

    /// Ends a tick: for each destination node and store pair, the heartbeats gathered since
    /// the last tick become one [`HeartbeatBatch`] and the responses one
    /// [`HeartbeatResponseBatch`] (more only if they pass the batch bounds). Heartbeat
    /// batches carry this tick's number; response batches echo the tick recorded by
    /// [`Batcher::on_heartbeats_received`] for their store pair, or 0.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let tick = self.ticks;
        let beats_per_batch = self.config.tuples_per_batch(HEARTBEAT_TUPLE_BYTES);
        let responses_per_batch = self.config.tuples_per_batch(HEARTBEAT_RESPONSE_TUPLE_BYTES);
        for destination in self.destinations.values_mut() {
            for (pair, beats) in std::mem::take(&mut destination.gathering_heartbeats) {
                for beats in split_batches(beats, beats_per_batch) {
                    self.stats.coalesced_heartbeats.batches += 1;
                    self.stats.coalesced_heartbeats.tuples_sum += beats.len() as u64;
                    destination.sealed_heartbeats.push_back(HeartbeatBatch {
                        from_store: pair.from,
                        to_store: pair.to,
                        tick,
                        beats,
                    });
                }
            }
            for (pair, responses) in std::mem::take(&mut destination.gathering_responses) {
                let echoed = destination.response_ticks.get(&pair).copied().unwrap_or(0);
                for responses in split_batches(responses, responses_per_batch) {
                    self.stats.coalesced_heartbeat_responses.batches += 1;
                    self.stats.coalesced_heartbeat_responses.tuples_sum += responses.len() as u64;
                    destination.sealed_responses.push_back(HeartbeatResponseBatch {
                        from_store: pair.from,
                        to_store: pair.to,
                        tick: echoed,
                        responses,
                    });
                }
            }
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Notes a [`HeartbeatBatch`] received from node `from`, so that the next response batch
    /// going back to its sender store echoes its `tick`. Optional: without it response
    /// batches carry `tick == 0`.
    pub fn on_heartbeats_received(&mut self, from: NodeId, batch: &HeartbeatBatch) {
        let destination = self.destinations.entry(from).or_default();
        let pair = StorePair { from: batch.to_store, to: batch.from_store };
        let echoed = destination.response_ticks.entry(pair).or_insert(batch.tick);
        *echoed = (*echoed).max(batch.tick);
        self.stats.queue_depths.insert(from, destination.depth);
    }

    /// Destination nodes with a batch to poll, in [`NodeId`] order. Heartbeats gathered
    /// during the current tick wait for [`Batcher::tick`].
    #[must_use]
    pub fn ready_destinations(&self) -> Vec<NodeId> {
        self.destinations
            .iter()
            .filter(|(_, destination)| destination.is_ready())
            .map(|(&node, _)| node)
            .collect()
    }

    /// The next batch for node `to`, or `None` if nothing is ready. Coalesced heartbeat
    /// batches go first, then response batches, then ordinary Raft messages: as many as the
    /// batch bounds allow, in push order.
    pub fn poll_transmit(&mut self, to: NodeId) -> Option<Outgoing> {
        let destination = self.destinations.get_mut(&to)?;
        let (outgoing, kind, bytes) = if let Some(batch) = destination.sealed_heartbeats.pop_front()
        {
            let bytes = batch.beats.len() * HEARTBEAT_TUPLE_BYTES;
            (Outgoing::Heartbeats(batch), &mut self.stats.heartbeats, bytes)
        } else if let Some(batch) = destination.sealed_responses.pop_front() {
            let bytes = batch.responses.len() * HEARTBEAT_RESPONSE_TUPLE_BYTES;
            (Outgoing::HeartbeatResponses(batch), &mut self.stats.heartbeat_responses, bytes)
        } else if destination.raft.is_empty() {
            return None;
        } else {
            let (batch, bytes) = destination.take_raft_batch(&self.config);
            (Outgoing::Raft(batch), &mut self.stats.raft, bytes)
        };
        let msgs = outgoing.len();
        destination.remove(msgs, bytes);
        kind.msgs_sent += msgs as u64;
        kind.bytes_sent += bytes as u64;
        kind.batches_sent += 1;
        self.stats.queue_depths.insert(to, destination.depth);
        self.debug_check_destination(to);
        Some(outgoing)
    }

    /// The connection to node `to` failed: drops everything held for it, including
    /// heartbeats gathered this tick (Raft retries). Returns how many messages (tuples
    /// included) were dropped.
    pub fn on_disconnected(&mut self, to: NodeId) -> usize {
        self.stats.queue_depths.remove(&to);
        let Some(destination) = self.destinations.remove(&to) else { return 0 };
        self.stats.dropped_disconnected_msgs += destination.depth.msgs as u64;
        self.stats.dropped_disconnected_bytes += destination.depth.bytes as u64;
        destination.depth.msgs
    }

    /// Messages (tuples included) and estimated bytes held for node `to`.
    #[must_use]
    pub fn queue_depth(&self, to: NodeId) -> (usize, usize) {
        self.destinations
            .get(&to)
            .map_or((0, 0), |destination| (destination.depth.msgs, destination.depth.bytes))
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &BatcherStats {
        &self.stats
    }

    /// Checks every invariant from scratch (linear in what is held): the queue depths match
    /// the buffers and the bounds, every waiting batch is within the batch bounds, and the
    /// counters add up. Runs at the end of [`Batcher::tick`] in debug builds; tests and
    /// simulations may call it after any step.
    ///
    /// # Panics
    ///
    /// If an invariant is broken.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.stats.queue_depths.len(),
            self.destinations.len(),
            "queue_depths and destinations name different nodes"
        );
        let mut held = 0u64;
        for (&node, destination) in &self.destinations {
            self.check_destination(node);
            assert_eq!(destination.recount(), destination.depth, "queue depth of {node} drifted");
            for batch in &destination.sealed_heartbeats {
                self.check_batch_bounds(
                    batch.beats.len(),
                    batch.beats.len() * HEARTBEAT_TUPLE_BYTES,
                );
            }
            for batch in &destination.sealed_responses {
                self.check_batch_bounds(
                    batch.responses.len(),
                    batch.responses.len() * HEARTBEAT_RESPONSE_TUPLE_BYTES,
                );
            }
            held += destination.depth.msgs as u64;
        }
        let stats = &self.stats;
        let queued = stats.raft.msgs_queued
            + stats.heartbeats.msgs_queued
            + stats.heartbeat_responses.msgs_queued;
        let sent =
            stats.raft.msgs_sent + stats.heartbeats.msgs_sent + stats.heartbeat_responses.msgs_sent;
        assert_eq!(
            queued,
            sent + stats.dropped_disconnected_msgs + held,
            "accepted messages must be sent, dropped on disconnect or still held"
        );
    }

    /// A waiting coalesced batch is non-empty and within the batch bounds.
    fn check_batch_bounds(&self, msgs: usize, bytes: usize) {
        assert!(msgs >= 1, "empty coalesced batch");
        assert!(msgs <= self.config.batch_msgs_max, "batch of {msgs} msgs");
        assert!(
            bytes <= self.config.batch_bytes_max || msgs == 1,
            "batch of {bytes} bytes and {msgs} msgs"
        );
    }

    /// The cheap invariants of one destination: its depth is within the queue bounds and
    /// mirrored in the stats.
    fn check_destination(&self, node: NodeId) {
        let Some(destination) = self.destinations.get(&node) else { return };
        let depth = destination.depth;
        assert!(depth.msgs <= self.config.queue_msgs_max, "{node}: {depth:?} past msgs bound");
        assert!(
            depth.bytes <= self.config.queue_bytes_max || depth.msgs == 1,
            "{node}: {depth:?} past bytes bound"
        );
        assert_eq!(self.stats.queue_depths.get(&node), Some(&depth), "{node}: stats drifted");
    }

    /// [`Batcher::check_destination`] in debug builds only.
    fn debug_check_destination(&self, node: NodeId) {
        if cfg!(debug_assertions) {
            self.check_destination(node);
        }
    }
}

/// Receiving side: the per-range Raft envelopes a coalesced [`HeartbeatBatch`] stands for
/// ([`Heartbeat::to_message`]), addressed from and to the batch's stores, in batch order.
#[must_use]
pub fn fan_out_heartbeats(batch: &HeartbeatBatch) -> Vec<RaftEnvelope> {
    batch
        .beats
        .iter()
        .map(|beat| RaftEnvelope {
            range: beat.range,
            from_store: batch.from_store,
            to_store: batch.to_store,
            message: beat.to_message(),
        })
        .collect()
}

/// Receiving side: the per-range Raft envelopes a coalesced [`HeartbeatResponseBatch`] stands
/// for ([`HeartbeatResponse::to_message`]), addressed from and to the batch's stores, in batch
/// order.
#[must_use]
pub fn fan_out_heartbeat_responses(batch: &HeartbeatResponseBatch) -> Vec<RaftEnvelope> {
    batch
        .responses
        .iter()
        .map(|response| RaftEnvelope {
            range: response.range,
            from_store: batch.from_store,
            to_store: batch.to_store,
            message: response.to_message(),
        })
        .collect()
}
