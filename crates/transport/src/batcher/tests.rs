//! Unit tests of the batcher: coalescing, ordering, isolation, bounds, disconnects, and a
//! property test against a reference model of what must arrive.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, LogIndex, MessageKind, ReplicaId, Term};

use super::*;

const LEADER_NODE: NodeId = NodeId(1);
const FOLLOWER_NODE: NodeId = NodeId(2);
const OTHER_NODE: NodeId = NodeId(3);

fn batcher(config: BatcherConfig) -> Batcher {
    Batcher::new(LEADER_NODE, StoreId(1), config)
}

fn envelope(range: u64, to_store: u64, message: Message) -> RaftEnvelope {
    RaftEnvelope {
        range: RangeId(range),
        from_store: StoreId(1),
        to_store: StoreId(to_store),
        message,
    }
}

fn heartbeat(range: u64, commit: u64) -> RaftEnvelope {
    let mut message = Message::new(
        MessageKind::Heartbeat,
        ReplicaId(range * 10 + 1),
        ReplicaId(range * 10 + 2),
        Term(7),
    );
    message.commit = LogIndex(commit);
    message.quiesce = commit.is_multiple_of(3);
    envelope(range, 2, message)
}

fn heartbeat_response(range: u64) -> RaftEnvelope {
    let message = Message::new(
        MessageKind::HeartbeatResponse,
        ReplicaId(range * 10 + 2),
        ReplicaId(range * 10 + 1),
        Term(7),
    );
    envelope(range, 2, message)
}

fn with_context(mut envelope: RaftEnvelope) -> RaftEnvelope {
    envelope.message.context = b"read-1".to_vec().into();
    envelope
}

fn append(range: u64, index: u64, payload_bytes: usize) -> RaftEnvelope {
    let mut message = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(7));
    message.index = LogIndex(index);
    message.entries.push(Entry {
        term: Term(7),
        index: LogIndex(index + 1),
        kind: EntryKind::Normal,
        data: vec![b'x'; payload_bytes].into(),
    });
    envelope(range, 2, message)
}

fn vote(range: u64) -> RaftEnvelope {
    envelope(range, 2, Message::new(MessageKind::RequestVote, ReplicaId(1), ReplicaId(2), Term(8)))
}

/// Polls `to` until nothing is ready, checking invariants after each batch.
fn drain(batcher: &mut Batcher, to: NodeId) -> Vec<Outgoing> {
    let mut batches = Vec::new();
    while let Some(outgoing) = batcher.poll_transmit(to) {
        batcher.check_invariants();
        batches.push(outgoing);
    }
    batches
}

/// The envelopes a batch stands for, fanned out as a receiver would.
fn fan_out(outgoing: &Outgoing) -> Vec<RaftEnvelope> {
    match outgoing {
        Outgoing::Raft(batch) => batch.envelopes.clone(),
        Outgoing::Heartbeats(batch) => fan_out_heartbeats(batch),
        Outgoing::HeartbeatResponses(batch) => fan_out_heartbeat_responses(batch),
    }
}

#[test]
fn heartbeats_of_many_ranges_to_one_node_become_one_batch_per_tick() {
    let mut batcher = batcher(BatcherConfig::default());
    let sent: Vec<_> = (1..=1000).map(|range| heartbeat(range, range * 2)).collect();
    for envelope in &sent {
        batcher.push_raft(FOLLOWER_NODE, envelope.clone()).unwrap();
    }
    assert_eq!(batcher.queue_depth(FOLLOWER_NODE), (1000, 1000 * HEARTBEAT_TUPLE_BYTES));
    assert!(batcher.ready_destinations().is_empty(), "heartbeats wait for the tick");
    assert_eq!(batcher.poll_transmit(FOLLOWER_NODE), None);

    batcher.tick();
    assert_eq!(batcher.ready_destinations(), vec![FOLLOWER_NODE]);
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    assert_eq!(batches.len(), 1);
    let Outgoing::Heartbeats(batch) = &batches[0] else { panic!("{:?}", batches[0]) };
    assert_eq!(batch.beats.len(), 1000);
    assert_eq!((batch.from_store, batch.to_store, batch.tick), (StoreId(1), StoreId(2), 1));
    assert_eq!(fan_out_heartbeats(batch), sent, "fan-out restores the identical messages");

    assert_eq!(batcher.queue_depth(FOLLOWER_NODE), (0, 0));
    assert!(batcher.ready_destinations().is_empty());
    let stats = batcher.stats();
    assert_eq!(stats.heartbeats.msgs_queued, 1000);
    assert_eq!(stats.heartbeats.msgs_sent, 1000);
    assert_eq!(stats.heartbeats.batches_sent, 1);
    assert_eq!(stats.coalesced_heartbeats, CoalescingStats { batches: 1, tuples_sum: 1000 });
    assert_eq!(stats.raft, KindStats::default());
}

#[test]
fn each_tick_builds_its_own_batch() {
    let mut batcher = batcher(BatcherConfig::default());
    batcher.push_raft(FOLLOWER_NODE, heartbeat(1, 1)).unwrap();
    batcher.tick();
    batcher.push_raft(FOLLOWER_NODE, heartbeat(1, 2)).unwrap();
    batcher.tick();
    batcher.tick(); // nothing gathered: no empty batch
    let ticks: Vec<_> = drain(&mut batcher, FOLLOWER_NODE)
        .iter()
        .map(|outgoing| match outgoing {
            Outgoing::Heartbeats(batch) => (batch.tick, batch.beats[0].commit),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ticks, vec![(1, LogIndex(1)), (2, LogIndex(2))]);
    assert_eq!(batcher.ticks(), 3);
}

#[test]
fn heartbeats_with_context_are_not_coalesced() {
    let mut batcher = batcher(BatcherConfig::default());
    let with_read_index = with_context(heartbeat(1, 4));
    let response_with_read_index = with_context(heartbeat_response(2));
    batcher.push_raft(FOLLOWER_NODE, with_read_index.clone()).unwrap();
    batcher.push_raft(FOLLOWER_NODE, heartbeat(3, 4)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, response_with_read_index.clone()).unwrap();

    // The full messages are ready at once, without waiting for the tick.
    assert_eq!(batcher.ready_destinations(), vec![FOLLOWER_NODE]);
    assert_eq!(
        batcher.poll_transmit(FOLLOWER_NODE),
        Some(Outgoing::Raft(RaftBatch {
            envelopes: vec![with_read_index, response_with_read_index]
        }))
    );
    assert_eq!(batcher.poll_transmit(FOLLOWER_NODE), None);
    batcher.tick();
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    assert_eq!(batches.len(), 1);
    assert_eq!(fan_out(&batches[0]), vec![heartbeat(3, 4)]);
}

#[test]
fn requests_and_responses_never_share_a_batch() {
    let mut batcher = batcher(BatcherConfig::default());
    let heartbeats: Vec<_> = (1..=5).map(|range| heartbeat(range, range)).collect();
    let responses: Vec<_> = (6..=10).map(heartbeat_response).collect();
    for (beat, response) in heartbeats.iter().zip(&responses) {
        batcher.push_raft(FOLLOWER_NODE, response.clone()).unwrap();
        batcher.push_raft(FOLLOWER_NODE, beat.clone()).unwrap();
    }
    batcher.tick();
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    assert_eq!(batches.len(), 2);
    let Outgoing::Heartbeats(beat_batch) = &batches[0] else { panic!("{:?}", batches[0]) };
    let Outgoing::HeartbeatResponses(response_batch) = &batches[1] else {
        panic!("{:?}", batches[1])
    };
    assert_eq!(fan_out_heartbeats(beat_batch), heartbeats);
    assert_eq!(fan_out_heartbeat_responses(response_batch), responses);
    assert_eq!(
        batcher.stats().coalesced_heartbeat_responses,
        CoalescingStats { batches: 1, tuples_sum: 5 }
    );
}

#[test]
fn response_batches_echo_the_received_tick() {
    let mut batcher = batcher(BatcherConfig::default());
    // Node 2's store 2 sent us (store 1) its tick-41 heartbeats.
    let received = HeartbeatBatch {
        from_store: StoreId(2),
        to_store: StoreId(1),
        tick: 41,
        beats: Vec::new(),
    };
    batcher.on_heartbeats_received(FOLLOWER_NODE, &received);
    batcher.push_raft(FOLLOWER_NODE, heartbeat_response(1)).unwrap();
    batcher.tick();
    let Some(Outgoing::HeartbeatResponses(batch)) = batcher.poll_transmit(FOLLOWER_NODE) else {
        panic!("expected a response batch")
    };
    assert_eq!((batch.from_store, batch.to_store, batch.tick), (StoreId(1), StoreId(2), 41));
}

#[test]
fn store_pairs_on_one_node_get_separate_batches() {
    let mut batcher = batcher(BatcherConfig::default());
    let to_store_2 = heartbeat(1, 1);
    let mut to_store_3 = heartbeat(2, 1);
    to_store_3.to_store = StoreId(3);
    batcher.push_raft(FOLLOWER_NODE, to_store_3.clone()).unwrap();
    batcher.push_raft(FOLLOWER_NODE, to_store_2.clone()).unwrap();
    batcher.tick();
    let fanned: Vec<_> = drain(&mut batcher, FOLLOWER_NODE).iter().map(fan_out).collect();
    assert_eq!(fanned, vec![vec![to_store_2], vec![to_store_3]]);
}

#[test]
fn destinations_are_isolated() {
    let config = BatcherConfig { queue_msgs_max: 2, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    batcher.push_raft(FOLLOWER_NODE, vote(1)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, heartbeat(2, 1)).unwrap();
    assert_eq!(batcher.push_raft(FOLLOWER_NODE, vote(3)), Err(Dropped::QueueFull));
    // A full queue to one node does not refuse another.
    batcher.push_raft(OTHER_NODE, vote(4)).unwrap();
    batcher.push_raft(OTHER_NODE, heartbeat(5, 1)).unwrap();
    batcher.tick();
    assert_eq!(batcher.ready_destinations(), vec![FOLLOWER_NODE, OTHER_NODE]);

    let to_other: Vec<_> = drain(&mut batcher, OTHER_NODE).iter().flat_map(fan_out).collect();
    assert_eq!(to_other, vec![heartbeat(5, 1), vote(4)]);
    assert_eq!(batcher.queue_depth(FOLLOWER_NODE).0, 2, "polling one node leaves the other");

    assert_eq!(batcher.on_disconnected(FOLLOWER_NODE), 2);
    assert_eq!(batcher.queue_depth(OTHER_NODE), (0, 0));
    assert!(batcher.ready_destinations().is_empty());
    batcher.check_invariants();
}

#[test]
fn raft_messages_keep_push_order() {
    let config = BatcherConfig { batch_msgs_max: 3, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    let sent: Vec<_> = (0..10)
        .map(|i| if i % 3 == 0 { vote(i) } else { append(i, i, usize::try_from(i).unwrap()) })
        .collect();
    for envelope in &sent {
        batcher.push_raft(FOLLOWER_NODE, envelope.clone()).unwrap();
    }
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    assert_eq!(batches.iter().map(Outgoing::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    let received: Vec<_> = batches.iter().flat_map(fan_out).collect();
    assert_eq!(received, sent);
    assert_eq!(batcher.stats().raft.batches_sent, 4);
}

#[test]
fn raft_batches_are_bounded_by_count() {
    let config = BatcherConfig { batch_msgs_max: 4, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    for i in 0..9 {
        batcher.push_raft(FOLLOWER_NODE, vote(i)).unwrap();
    }
    let lengths: Vec<_> = drain(&mut batcher, FOLLOWER_NODE).iter().map(Outgoing::len).collect();
    assert_eq!(lengths, vec![4, 4, 1]);
}

#[test]
fn raft_batches_are_bounded_by_bytes_and_an_oversized_message_goes_alone() {
    // Each 100-byte append counts 128 + 124 = 252 bytes.
    let per_message = message_size_bytes(&append(1, 1, 100).message);
    assert_eq!(per_message, MESSAGE_OVERHEAD_BYTES + 124);
    let config = BatcherConfig { batch_bytes_max: 3 * per_message, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    for i in 0..4 {
        batcher.push_raft(FOLLOWER_NODE, append(1, i, 100)).unwrap();
    }
    batcher.push_raft(FOLLOWER_NODE, append(1, 4, 10_000)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, append(1, 5, 100)).unwrap();
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    let shape: Vec<_> = batches.iter().map(|batch| (batch.len(), batch.size_bytes())).collect();
    assert_eq!(
        shape,
        vec![
            (3, 3 * per_message),
            (1, per_message),
            (1, MESSAGE_OVERHEAD_BYTES + 10_024),
            (1, per_message),
        ]
    );
}

#[test]
fn coalesced_batches_are_split_only_at_the_bounds() {
    // By count.
    let config = BatcherConfig { batch_msgs_max: 4, ..BatcherConfig::default() };
    let mut by_count = batcher(config);
    let sent: Vec<_> = (1..=10).map(|range| heartbeat(range, 1)).collect();
    for envelope in &sent {
        by_count.push_raft(FOLLOWER_NODE, envelope.clone()).unwrap();
    }
    by_count.tick();
    let batches = drain(&mut by_count, FOLLOWER_NODE);
    assert_eq!(batches.iter().map(Outgoing::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(batches.iter().flat_map(fan_out).collect::<Vec<_>>(), sent);
    assert_eq!(
        by_count.stats().coalesced_heartbeats,
        CoalescingStats { batches: 3, tuples_sum: 10 }
    );

    // By bytes: three tuples fit.
    let config = BatcherConfig {
        batch_bytes_max: 3 * HEARTBEAT_TUPLE_BYTES + 1,
        ..BatcherConfig::default()
    };
    let mut by_bytes = batcher(config);
    for envelope in &sent {
        by_bytes.push_raft(FOLLOWER_NODE, envelope.clone()).unwrap();
    }
    by_bytes.tick();
    let batches = drain(&mut by_bytes, FOLLOWER_NODE);
    assert_eq!(batches.iter().map(Outgoing::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    assert!(batches.iter().all(|batch| batch.size_bytes() <= 3 * HEARTBEAT_TUPLE_BYTES + 1));

    // A bound below one tuple still sends them, one per batch.
    let config = BatcherConfig { batch_bytes_max: 1, ..BatcherConfig::default() };
    let mut tiny = batcher(config);
    tiny.push_raft(FOLLOWER_NODE, heartbeat(1, 1)).unwrap();
    tiny.push_raft(FOLLOWER_NODE, heartbeat(2, 1)).unwrap();
    tiny.tick();
    assert_eq!(drain(&mut tiny, FOLLOWER_NODE).len(), 2);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let config = BatcherConfig { queue_msgs_max: 3, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    batcher.push_raft(FOLLOWER_NODE, vote(1)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, vote(2)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, vote(3)).unwrap();
    for range in 4..100 {
        assert_eq!(batcher.push_raft(FOLLOWER_NODE, vote(range)), Err(Dropped::QueueFull));
        // Heartbeats share the budget: the coalescing buffer cannot grow either.
        assert_eq!(batcher.push_raft(FOLLOWER_NODE, heartbeat(range, 1)), Err(Dropped::QueueFull));
    }
    assert_eq!(batcher.queue_depth(FOLLOWER_NODE), (3, 3 * MESSAGE_OVERHEAD_BYTES));
    assert_eq!(batcher.stats().dropped_queue_full_msgs, 2 * 96);
    assert_eq!(
        batcher.stats().queue_depths.get(&FOLLOWER_NODE),
        Some(&QueueDepth { msgs: 3, bytes: 3 * MESSAGE_OVERHEAD_BYTES })
    );

    // Room again once polled; the refused messages are gone.
    let received: Vec<_> = drain(&mut batcher, FOLLOWER_NODE).iter().flat_map(fan_out).collect();
    assert_eq!(received, vec![vote(1), vote(2), vote(3)]);
    batcher.push_raft(FOLLOWER_NODE, vote(100)).unwrap();
    batcher.check_invariants();
}

#[test]
fn the_byte_bound_refuses_what_would_pass_it() {
    let per_message = message_size_bytes(&append(1, 1, 100).message);
    let config =
        BatcherConfig { queue_bytes_max: 2 * per_message + 10, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    batcher.push_raft(FOLLOWER_NODE, append(1, 1, 100)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, append(1, 2, 100)).unwrap();
    assert_eq!(batcher.push_raft(FOLLOWER_NODE, append(1, 3, 100)), Err(Dropped::QueueFull));
    assert_eq!(batcher.stats().dropped_queue_full_bytes, per_message as u64);
    assert_eq!(batcher.queue_depth(FOLLOWER_NODE), (2, 2 * per_message));
    drain(&mut batcher, FOLLOWER_NODE);

    // Larger than the whole budget: accepted into an empty queue only.
    batcher.push_raft(FOLLOWER_NODE, append(1, 4, 10_000)).unwrap();
    assert_eq!(batcher.push_raft(FOLLOWER_NODE, vote(1)), Err(Dropped::QueueFull));
    assert_eq!(drain(&mut batcher, FOLLOWER_NODE).len(), 1);
    batcher.check_invariants();
}

#[test]
fn on_disconnected_drops_everything_held_for_the_node() {
    let mut batcher = batcher(BatcherConfig::default());
    batcher.push_raft(FOLLOWER_NODE, heartbeat(1, 1)).unwrap();
    batcher.tick();
    batcher.push_raft(FOLLOWER_NODE, heartbeat(2, 1)).unwrap(); // still gathering
    batcher.push_raft(FOLLOWER_NODE, heartbeat_response(3)).unwrap();
    batcher.push_raft(FOLLOWER_NODE, append(4, 1, 10)).unwrap();
    let (msgs, bytes) = batcher.queue_depth(FOLLOWER_NODE);
    assert_eq!(msgs, 4);

    assert_eq!(batcher.on_disconnected(FOLLOWER_NODE), 4);
    assert_eq!(batcher.queue_depth(FOLLOWER_NODE), (0, 0));
    assert!(batcher.ready_destinations().is_empty());
    assert_eq!(batcher.poll_transmit(FOLLOWER_NODE), None);
    batcher.tick();
    assert_eq!(batcher.poll_transmit(FOLLOWER_NODE), None, "gathered heartbeats dropped too");
    let stats = batcher.stats();
    assert_eq!(stats.dropped_disconnected_msgs, 4);
    assert_eq!(stats.dropped_disconnected_bytes, bytes as u64);
    assert!(!stats.queue_depths.contains_key(&FOLLOWER_NODE));
    assert_eq!(batcher.on_disconnected(FOLLOWER_NODE), 0);

    // The node can be queued for again.
    batcher.push_raft(FOLLOWER_NODE, vote(5)).unwrap();
    assert_eq!(
        drain(&mut batcher, FOLLOWER_NODE).iter().flat_map(fan_out).collect::<Vec<_>>(),
        vec![vote(5)]
    );
    batcher.check_invariants();
}

#[test]
fn without_coalescing_heartbeats_go_one_message_per_range() {
    let config = BatcherConfig { coalesce_heartbeats: false, ..BatcherConfig::default() };
    let mut batcher = batcher(config);
    let sent: Vec<_> =
        (1..=100).flat_map(|range| [heartbeat(range, range), heartbeat_response(range)]).collect();
    for envelope in &sent {
        batcher.push_raft(FOLLOWER_NODE, envelope.clone()).unwrap();
    }
    assert_eq!(batcher.ready_destinations(), vec![FOLLOWER_NODE], "no waiting for the tick");
    let batches = drain(&mut batcher, FOLLOWER_NODE);
    assert!(batches.iter().all(|batch| matches!(batch, Outgoing::Raft(_))));
    assert_eq!(batches.iter().flat_map(fan_out).collect::<Vec<_>>(), sent);
    batcher.tick();
    assert_eq!(batcher.poll_transmit(FOLLOWER_NODE), None);
    let stats = batcher.stats();
    assert_eq!(stats.raft.msgs_sent, 200);
    assert_eq!(stats.heartbeats, KindStats::default());
    assert_eq!(stats.coalesced_heartbeats, CoalescingStats::default());
}

#[test]
fn config_validation_rejects_zero_bounds() {
    assert_eq!(BatcherConfig::default().validate(), Ok(()));
    let zero = BatcherConfig { queue_bytes_max: 0, ..BatcherConfig::default() };
    assert_eq!(zero.validate(), Err(BatcherConfigError { field: "queue_bytes_max" }));
    let zero = BatcherConfig { batch_msgs_max: 0, ..BatcherConfig::default() };
    assert_eq!(
        zero.validate().map_err(|error| error.to_string()),
        Err("batcher config: batch_msgs_max must be at least 1".to_owned())
    );
}

#[test]
#[should_panic(expected = "queue_msgs_max must be at least 1")]
fn new_refuses_an_invalid_config() {
    let _ = batcher(BatcherConfig { queue_msgs_max: 0, ..BatcherConfig::default() });
}

// --- Property test against a reference model -------------------------------------------

/// What the property test pushes.
#[derive(Clone, Copy, Debug)]
enum PushKind {
    Append { payload_bytes: usize },
    Vote,
    Heartbeat { commit: u64 },
    HeartbeatWithContext,
    Response,
    ResponseWithContext,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Push { node: u64, to_store: u64, kind: PushKind },
    Tick,
    Poll { node: u64 },
    Disconnect { node: u64 },
}

fn push_kind() -> impl Strategy<Value = PushKind> {
    prop_oneof![
        (0usize..600).prop_map(|payload_bytes| PushKind::Append { payload_bytes }),
        Just(PushKind::Vote),
        (0u64..4).prop_map(|commit| PushKind::Heartbeat { commit }),
        Just(PushKind::HeartbeatWithContext),
        Just(PushKind::Response),
        Just(PushKind::ResponseWithContext),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..=3, 2u64..=3, push_kind())
            .prop_map(|(node, to_store, kind)| Op::Push { node, to_store, kind }),
        1 => Just(Op::Tick),
        3 => (1u64..=3).prop_map(|node| Op::Poll { node }),
        1 => (1u64..=3).prop_map(|node| Op::Disconnect { node }),
    ]
}

fn config() -> impl Strategy<Value = BatcherConfig> {
    (1usize..6, 1usize..1500, 1usize..20, 1usize..4000, any::<bool>()).prop_map(
        |(
            batch_msgs_max,
            batch_bytes_max,
            queue_msgs_max,
            queue_bytes_max,
            coalesce_heartbeats,
        )| {
            BatcherConfig {
                batch_msgs_max,
                batch_bytes_max,
                queue_msgs_max,
                queue_bytes_max,
                coalesce_heartbeats,
            }
        },
    )
}

/// A message built for the property test; its term is its unique id.
fn build(id: u64, to_store: u64, kind: PushKind) -> RaftEnvelope {
    let range = id % 7 + 1;
    let mut envelope = match kind {
        PushKind::Append { payload_bytes } => append(range, id, payload_bytes),
        PushKind::Vote => vote(range),
        PushKind::Heartbeat { commit } => heartbeat(range, commit),
        PushKind::HeartbeatWithContext => with_context(heartbeat(range, 1)),
        PushKind::Response => heartbeat_response(range),
        PushKind::ResponseWithContext => with_context(heartbeat_response(range)),
    };
    envelope.to_store = StoreId(to_store);
    envelope.message.term = Term(id);
    envelope
}

/// Which ordered stream a message belongs to: ordinary messages are ordered per node;
/// coalesced tuples per node, kind and store pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Raft,
    Heartbeats(StoreId),
    Responses(StoreId),
}

fn stream_of(envelope: &RaftEnvelope, coalesce: bool) -> Stream {
    if coalesce && Heartbeat::from_message(envelope.range, &envelope.message).is_some() {
        Stream::Heartbeats(envelope.to_store)
    } else if coalesce
        && HeartbeatResponse::from_message(envelope.range, &envelope.message).is_some()
    {
        Stream::Responses(envelope.to_store)
    } else {
        Stream::Raft
    }
}

fn size_of(envelope: &RaftEnvelope, coalesce: bool) -> usize {
    match stream_of(envelope, coalesce) {
        Stream::Raft => message_size_bytes(&envelope.message),
        Stream::Heartbeats(_) => HEARTBEAT_TUPLE_BYTES,
        Stream::Responses(_) => HEARTBEAT_RESPONSE_TUPLE_BYTES,
    }
}

/// The reference model: per node, the accepted messages not yet polled, by stream, oldest
/// first.
#[derive(Default)]
struct Model {
    outstanding: BTreeMap<NodeId, BTreeMap<Stream, VecDeque<RaftEnvelope>>>,
}

impl Model {
    fn held(&self, node: NodeId) -> usize {
        self.outstanding.get(&node).map_or(0, |streams| streams.values().map(VecDeque::len).sum())
    }
}

fn check_bounds(batcher: &Batcher, config: &BatcherConfig) -> Result<(), TestCaseError> {
    for node in (1..=3).map(NodeId) {
        let (msgs, bytes) = batcher.queue_depth(node);
        prop_assert!(msgs <= config.queue_msgs_max, "{node}: {msgs} msgs");
        prop_assert!(bytes <= config.queue_bytes_max || msgs == 1, "{node}: {bytes} bytes");
    }
    Ok(())
}

fn run(config: &BatcherConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let coalesce = config.coalesce_heartbeats;
    let mut batcher = batcher(config.clone());
    let mut model = Model::default();
    let mut next_id = 1;
    let poll = |batcher: &mut Batcher, model: &mut Model, node: NodeId| {
        let Some(outgoing) = batcher.poll_transmit(node) else {
            prop_assert!(!batcher.ready_destinations().contains(&node));
            return Ok(false);
        };
        prop_assert!(!outgoing.is_empty());
        prop_assert!(outgoing.len() <= config.batch_msgs_max);
        prop_assert!(outgoing.size_bytes() <= config.batch_bytes_max || outgoing.len() == 1);
        for received in fan_out(&outgoing) {
            // Exactly the oldest outstanding message of its stream: nothing lost, nothing
            // duplicated, nothing reordered within a stream.
            let stream = stream_of(&received, coalesce);
            let expected = model
                .outstanding
                .get_mut(&node)
                .and_then(|streams| streams.get_mut(&stream))
                .and_then(VecDeque::pop_front);
            prop_assert_eq!(Some(received), expected);
        }
        Ok::<_, TestCaseError>(true)
    };

    for &op in ops {
        match op {
            Op::Push { node, to_store, kind } => {
                let node = NodeId(node);
                let envelope = build(next_id, to_store, kind);
                next_id += 1;
                let (msgs, bytes) = batcher.queue_depth(node);
                let size = size_of(&envelope, coalesce);
                let room = msgs == 0
                    || (msgs < config.queue_msgs_max && bytes + size <= config.queue_bytes_max);
                let coalescible = Heartbeat::from_message(envelope.range, &envelope.message)
                    .is_some()
                    || HeartbeatResponse::from_message(envelope.range, &envelope.message).is_some();
                match batcher.push_raft(node, envelope.clone()) {
                    Ok(pushed) => {
                        prop_assert!(room);
                        let expected = if coalesce && coalescible {
                            Pushed::Coalesced
                        } else {
                            Pushed::Queued
                        };
                        prop_assert_eq!(pushed, expected);
                        let stream = stream_of(&envelope, coalesce);
                        model
                            .outstanding
                            .entry(node)
                            .or_default()
                            .entry(stream)
                            .or_default()
                            .push_back(envelope);
                    }
                    Err(Dropped::QueueFull) => prop_assert!(!room),
                }
            }
            Op::Tick => batcher.tick(),
            Op::Poll { node } => {
                poll(&mut batcher, &mut model, NodeId(node))?;
            }
            Op::Disconnect { node } => {
                let node = NodeId(node);
                let expected = model.held(node);
                model.outstanding.remove(&node);
                prop_assert_eq!(batcher.on_disconnected(node), expected);
            }
        }
        batcher.check_invariants();
        check_bounds(&batcher, config)?;
        for node in (1..=3).map(NodeId) {
            prop_assert_eq!(batcher.queue_depth(node).0, model.held(node));
        }
    }

    // Liveness: after a final tick everything accepted arrives.
    batcher.tick();
    for node in batcher.ready_destinations() {
        while poll(&mut batcher, &mut model, node)? {}
    }
    for node in (1..=3).map(NodeId) {
        prop_assert_eq!(model.held(node), 0, "{} still expected at {}", model.held(node), node);
        prop_assert_eq!(batcher.queue_depth(node), (0, 0));
    }
    prop_assert!(batcher.ready_destinations().is_empty());
    batcher.check_invariants();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random pushes, ticks, polls and disconnects: everything accepted is polled exactly
    /// once and in order per stream (until a disconnect drops it), refusals happen only at
    /// the bounds, and neither queues nor batches ever pass their bounds.
    #[test]
    fn accepted_messages_arrive_exactly_once_in_order_within_bounds(
        config in config(),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        run(&config, &ops)?;
    }
}

#[test]
fn heartbeat_tuples_coalesce_like_heartbeat_messages() {
    for coalesce in [true, false] {
        let config = BatcherConfig { coalesce_heartbeats: coalesce, ..BatcherConfig::default() };
        let (mut by_message, mut by_tuple) = (batcher(config.clone()), batcher(config));
        for range in 1..=50 {
            let envelope = heartbeat(range, range + 7);
            let beat = Heartbeat::from_message(envelope.range, &envelope.message).unwrap();
            let expected = if coalesce { Pushed::Coalesced } else { Pushed::Queued };
            assert_eq!(by_message.push_raft(FOLLOWER_NODE, envelope.clone()), Ok(expected));
            let pushed = by_tuple.push_heartbeat(
                FOLLOWER_NODE,
                envelope.from_store,
                envelope.to_store,
                beat,
            );
            assert_eq!(pushed, Ok(expected));
        }
        by_message.tick();
        by_tuple.tick();
        assert_eq!(drain(&mut by_tuple, FOLLOWER_NODE), drain(&mut by_message, FOLLOWER_NODE));
        assert_eq!(by_tuple.stats(), by_message.stats());
    }
}

#[test]
fn bulk_heartbeats_match_single_pushes_up_to_a_full_queue() {
    for coalesce in [true, false] {
        let config = BatcherConfig {
            coalesce_heartbeats: coalesce,
            queue_msgs_max: 40,
            ..BatcherConfig::default()
        };
        let (mut single, mut bulk) = (batcher(config.clone()), batcher(config));
        let beats: Vec<Heartbeat> = (1..=50)
            .map(|range| {
                let envelope = heartbeat(range, range + 3);
                Heartbeat::from_message(envelope.range, &envelope.message).unwrap()
            })
            .collect();
        let mut expected = BulkPush::default();
        for beat in &beats {
            match single.push_heartbeat(FOLLOWER_NODE, StoreId(1), StoreId(2), *beat) {
                Ok(Pushed::Queued) => expected.queued += 1,
                Ok(Pushed::Coalesced) => expected.coalesced += 1,
                Err(Dropped::QueueFull) => expected.dropped += 1,
            }
        }
        let pushed = bulk.push_heartbeats(FOLLOWER_NODE, StoreId(1), StoreId(2), beats);
        assert_eq!(pushed, expected);
        assert_eq!(pushed.dropped, 10, "the queue holds 40");
        assert_eq!(bulk.queue_depth(FOLLOWER_NODE), single.queue_depth(FOLLOWER_NODE));
        assert_eq!(bulk.stats(), single.stats());
        single.tick();
        bulk.tick();
        assert_eq!(drain(&mut bulk, FOLLOWER_NODE), drain(&mut single, FOLLOWER_NODE));
    }
}
