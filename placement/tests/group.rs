//! The placement group in a deterministic harness: three (or more) members with in-memory
//! engines that lose unsynced writes on a crash, a seeded network that delays and loses
//! messages, and a manual clock. Timestamps must only grow and ids never repeat, whatever
//! member leads, crashes or restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tessera_engine::mem::{MemKvEngine, MemRaftLogEngine};
use tessera_placement::{NodeConfig, NodeNetwork, PlacementNode, bootstrap_group};
use tessera_raft::SplitMix64;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{
    PlacementMember, PlacementRequest, PlacementResponse, Store, StoreState,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;

const CLUSTER: u64 = 7;

#[derive(Default)]
struct SimNet {
    outbox: Vec<(NodeId, RaftEnvelope)>,
}

impl NodeNetwork for SimNet {
    fn send(&mut self, to: NodeId, envelope: RaftEnvelope) {
        self.outbox.push((to, envelope));
    }
}

type Node = PlacementNode<MemRaftLogEngine, MemKvEngine, SimNet>;
type Answer = Arc<Mutex<Option<Result<PlacementResponse, RpcError>>>>;

struct Member {
    id: NodeId,
    raft: MemRaftLogEngine,
    kv: MemKvEngine,
    node: Option<Node>,
}

struct Group {
    members: Vec<Member>,
    clock: Arc<AtomicU64>,
    rng: SplitMix64,
    in_flight: Vec<(u64, NodeId, RaftEnvelope)>,
    now_step: u64,
    loss_percent: u64,
    config: fn(NodeId) -> NodeConfig,
    /// Each member's clock is off by up to this much (ms), either way.
    skew_ms: u64,
    /// A member cut off from the others: nothing it sends or is sent arrives.
    cut: Option<NodeId>,
}

fn config(id: NodeId) -> NodeConfig {
    let mut config = NodeConfig::new(id, CLUSTER);
    config.log_compact_entries = 50;
    config
}

impl Group {
    fn new(count: u64, seed: u64) -> Self {
        let mut group = Self {
            members: Vec::new(),
            clock: Arc::new(AtomicU64::new(1_700_000_000_000)),
            rng: SplitMix64::new(seed),
            in_flight: Vec::new(),
            now_step: 0,
            loss_percent: 0,
            config,
            skew_ms: 2_500,
            cut: None,
        };
        let list: Vec<PlacementMember> = (1..=count)
            .map(|id| PlacementMember {
                node_id: NodeId(id),
                address: format!("n{id}"),
                voter: true,
            })
            .collect();
        for id in 1..=count {
            let raft = MemRaftLogEngine::new();
            let kv = MemKvEngine::new();
            bootstrap_group(&raft, &kv, CLUSTER, &list).unwrap();
            group.members.push(Member { id: NodeId(id), raft, kv, node: None });
        }
        for index in 0..group.members.len() {
            group.start(index);
        }
        group
    }

    /// A member with empty engines, waiting to be added.
    fn add_empty(&mut self, id: u64) -> usize {
        self.members.push(Member {
            id: NodeId(id),
            raft: MemRaftLogEngine::new(),
            kv: MemKvEngine::new(),
            node: None,
        });
        let index = self.members.len() - 1;
        self.start(index);
        index
    }

    fn start(&mut self, index: usize) {
        let clock = self.clock.clone();
        // Clocks disagree: a new leader's may be behind its predecessor's.
        let skew = self.rng.range(0, 2 * self.skew_ms + 1);
        let member = &mut self.members[index];
        let node = PlacementNode::open(
            (self.config)(member.id),
            member.raft.clone(),
            member.kv.clone(),
            SimNet::default(),
            Box::new(move || clock.load(Ordering::SeqCst) + skew),
        )
        .unwrap();
        member.node = Some(node);
    }

    fn crash(&mut self, index: usize) {
        let keep_raft = self.rng.range(0, 3) as usize;
        let keep_kv = self.rng.range(0, 4) as usize;
        let member = &mut self.members[index];
        member.node = None;
        member.raft = member.raft.crash(keep_raft);
        member.kv = member.kv.crash(keep_kv);
    }

    fn node(&mut self, id: NodeId) -> Option<&mut Node> {
        self.members.iter_mut().find(|member| member.id == id)?.node.as_mut()
    }

    /// One step: deliver due messages; every 5th step, tick all (the clock moves 100 ms);
    /// poll all.
    fn step(&mut self) {
        self.now_step += 1;
        let now = self.now_step;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|(at, _, _)| *at <= now);
        self.in_flight = later;
        for (_, to, envelope) in due {
            if let Some(node) = self.node(to) {
                node.on_raft(envelope);
            }
        }
        let tick = now.is_multiple_of(5);
        if tick {
            self.clock.fetch_add(100, Ordering::SeqCst);
        }
        for index in 0..self.members.len() {
            let Some(node) = self.members[index].node.as_mut() else { continue };
            if tick {
                node.tick();
            }
            while node.poll().unwrap() {}
            let outbox = std::mem::take(&mut node.network_mut().outbox);
            let from = self.members[index].id;
            for (to, envelope) in outbox {
                if self.cut.is_some_and(|cut| cut == from || cut == to) {
                    continue;
                }
                if self.rng.range(0, 100) >= self.loss_percent {
                    let delay = self.rng.range(1, 3);
                    self.in_flight.push((now + delay, to, envelope));
                }
            }
        }
    }

    fn leader(&mut self) -> Option<NodeId> {
        self.members
            .iter()
            .filter_map(|member| member.node.as_ref())
            .find(|node| node.is_serving_leader())
            .map(PlacementNode::node_id)
    }

    fn run_until(&mut self, steps: u64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Sends `request` to `to` and steps until it is answered (or `steps` pass).
    fn request(
        &mut self,
        to: NodeId,
        request: PlacementRequest,
        steps: u64,
    ) -> Option<Result<PlacementResponse, RpcError>> {
        let answer: Answer = Arc::default();
        let slot = answer.clone();
        self.node(to)?
            .on_request(request, Box::new(move |result| *slot.lock().unwrap() = Some(result)));
        self.run_until(steps, |_| answer.lock().unwrap().is_some());
        answer.lock().unwrap().take()
    }

    /// Sends `request` to the leader, following redirects, until answered.
    fn call(&mut self, request: &PlacementRequest) -> Result<PlacementResponse, RpcError> {
        for _ in 0..50 {
            if !self.run_until(500, |group| group.leader().is_some()) {
                continue;
            }
            let leader = self.leader().unwrap();
            let answer = self.request(leader, request.clone(), 500);
            match answer {
                Some(Err(
                    RpcError::NotPlacementLeader { .. }
                    | RpcError::StaleCommand
                    | RpcError::Timeout
                    | RpcError::ServerBusy { .. },
                ))
                | None => {
                    // Give the group time before asking again.
                    self.run_until(20, |_| false);
                }
                Some(answer) => return answer,
            }
        }
        panic!("no answer to {request:?}");
    }
}

fn first_range(store: u64) -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: vec![Replica {
            id: ReplicaId(store),
            store_id: StoreId(store),
            role: ReplicaRole::Voter,
        }],
    }
}

fn store(id: u64) -> Store {
    Store {
        id: StoreId(id),
        node_id: NodeId(100 + id),
        address: format!("s{id}"),
        labels: vec![],
        state: StoreState::Up,
    }
}

fn timestamps(group: &mut Group, count: u32) -> (Timestamp, u32) {
    match group.call(&PlacementRequest::GetTimestamp { count }).unwrap() {
        PlacementResponse::GetTimestamp { first, count } => (first, count),
        other => panic!("unexpected {other:?}"),
    }
}

fn ids(group: &mut Group, count: u32) -> (u64, u32) {
    match group.call(&PlacementRequest::AllocId { count }).unwrap() {
        PlacementResponse::AllocId { first, count } => (first, count),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_new_leader_takes_over_and_timestamps_and_ids_keep_growing() {
    let mut group = Group::new(3, 1);
    assert!(group.run_until(2_000, |g| g.leader().is_some()), "no leader elected");
    let answer =
        group.call(&PlacementRequest::Bootstrap { store: store(1), range: first_range(1) });
    assert_eq!(answer, Ok(PlacementResponse::Bootstrap));
    assert_eq!(
        group.call(&PlacementRequest::Bootstrap { store: store(2), range: first_range(2) }),
        Err(RpcError::AlreadyBootstrapped)
    );
    let mut last = Timestamp::ZERO;
    let mut seen_ids = BTreeSet::new();
    for round in 0..3 {
        for _ in 0..20 {
            let (first, count) = timestamps(&mut group, 10);
            assert!(first > last, "timestamp {first:?} after {last:?}");
            last = Timestamp(first.0 + u64::from(count) - 1);
            let (first, count) = ids(&mut group, 7);
            for id in first..first + u64::from(count) {
                assert!(seen_ids.insert(id), "id {id} handed out twice");
            }
        }
        let leader = group.leader().unwrap();
        let index = group.members.iter().position(|member| member.id == leader).unwrap();
        group.crash(index);
        // Another member serves within a few election timeouts (an election timeout is
        // 10–20 ticks, a tick 5 steps here).
        let steps_before = group.now_step;
        let elected = group.run_until(1_000, |g| g.leader().is_some_and(|l| l != leader));
        if !elected {
            for member in &group.members {
                eprintln!(
                    "{:?} {:?}",
                    member.id,
                    member.node.as_ref().map(|n| (format!("{n:?}"), n.stats(), n.leader()))
                );
            }
        }
        assert!(elected, "round {round}: no new leader");
        let took = group.now_step - steps_before;
        assert!(took <= 5 * 20 * 4, "the new leader took {took} steps");
        group.start(index);
    }
    // The restarted members converge on the same state.
    assert!(group.run_until(2_000, |g| {
        let states: Vec<_> =
            g.members.iter().filter_map(|m| m.node.as_ref()).map(|n| n.state().clone()).collect();
        states.windows(2).all(|pair| pair[0] == pair[1])
    }));
}

#[test]
fn timestamps_grow_and_ids_stay_unique_under_random_crashes_and_loss() {
    let seeds: u64 =
        std::env::var("PLACEMENT_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    for seed in 0..seeds {
        let mut group = Group::new(3, seed);
        group.loss_percent = 5;
        let mut rng = SplitMix64::new(seed ^ 0xabc);
        let mut last = Timestamp::ZERO;
        let mut seen_ids = BTreeSet::new();
        for _ in 0..60 {
            match rng.range(0, 10) {
                0 => {
                    let index = rng.range(0, 3) as usize;
                    let up = group.members.iter().filter(|m| m.node.is_some()).count();
                    if group.members[index].node.is_some() && up == 3 {
                        group.crash(index);
                    } else if group.members[index].node.is_none() {
                        group.start(index);
                    }
                }
                1..=5 => {
                    let count = u32::try_from(rng.range(1, 50)).unwrap();
                    let (first, count) = timestamps(&mut group, count);
                    assert!(first > last, "seed {seed}: timestamp {first:?} after {last:?}");
                    last = Timestamp(first.0 + u64::from(count) - 1);
                }
                _ => {
                    let count = u32::try_from(rng.range(1, 20)).unwrap();
                    let (first, count) = ids(&mut group, count);
                    for id in first..first + u64::from(count) {
                        assert!(seen_ids.insert(id), "seed {seed}: id {id} handed out twice");
                    }
                }
            }
        }
    }
}

#[test]
fn a_new_member_joins_by_snapshot_and_a_member_is_replaced() {
    let mut group = Group::new(3, 5);
    assert!(group.run_until(2_000, |g| g.leader().is_some()));
    group.call(&PlacementRequest::Bootstrap { store: store(1), range: first_range(1) }).unwrap();
    // Enough entries that the log is truncated (every 50) and the newcomer needs a snapshot.
    for id in 2..40 {
        group.call(&PlacementRequest::PutStore { store: store(id) }).unwrap();
    }
    let index = group.add_empty(4);
    group
        .call(&PlacementRequest::AddMember { node_id: NodeId(4), address: "n4".to_owned() })
        .unwrap();
    // Caught up and promoted to voter.
    assert!(group.run_until(5_000, |g| {
        g.members[index].node.as_ref().is_some_and(|node| node.state().stores.len() == 39)
            && g.leader()
                .and_then(|l| g.node(l))
                .is_some_and(|n| n.state().conf_state.voters.contains(&ReplicaId(4)))
    }));
    assert!(group.members[index].node.as_ref().unwrap().stats().snapshots_installed >= 1);
    // Member 1 fails for good and is removed; the group of 2, 3, 4 serves.
    let first = group.members.iter().position(|member| member.id == NodeId(1)).unwrap();
    group.crash(first);
    group.call(&PlacementRequest::RemoveMember { node_id: NodeId(1) }).unwrap();
    let (a, _) = timestamps(&mut group, 1);
    let (b, _) = timestamps(&mut group, 1);
    assert!(b > a);
    let leader = group.leader().unwrap();
    let voters = group.node(leader).unwrap().state().conf_state.voters.clone();
    assert!(!voters.contains(&ReplicaId(1)), "{voters:?}");
}

#[test]
fn followers_redirect_to_the_leader() {
    let mut group = Group::new(3, 9);
    assert!(group.run_until(2_000, |g| g.leader().is_some()));
    let leader = group.leader().unwrap();
    // Let followers learn who leads.
    group.run_until(200, |_| false);
    let follower = group.members.iter().map(|m| m.id).find(|id| *id != leader).unwrap();
    let answer = group.request(follower, PlacementRequest::GetTimestamp { count: 1 }, 10);
    // With the leader's address, for callers configured before it joined.
    let address = Some(format!("n{}", leader.0));
    assert_eq!(answer, Some(Err(RpcError::NotPlacementLeader { leader: Some(leader), address })));
}

#[test]
fn timestamps_are_served_promptly_after_a_quiet_spell() {
    let mut group = Group::new(3, 21);
    assert!(group.run_until(2_000, |g| g.leader().is_some()));
    timestamps(&mut group, 1);
    // Long enough for the lease to lapse without commits (no bound is due yet).
    group.run_until(60, |_| false);
    let leader = group.leader().unwrap();
    let answer = group.request(leader, PlacementRequest::GetTimestamp { count: 1 }, 20);
    assert!(matches!(answer, Some(Ok(PlacementResponse::GetTimestamp { .. }))), "{answer:?}");
}

#[test]
fn a_cut_off_leader_answers_no_reads_a_newer_leader_could_contradict() {
    for seed in 0..20 {
        let mut group = Group::new(3, 100 + seed);
        assert!(group.run_until(2_000, |g| g.leader().is_some()));
        let old = group.leader().unwrap();
        group.cut = Some(old);
        let mut new_leader = None;
        let mut checked_after = 0;
        for _ in 0..2_000 {
            group.step();
            if new_leader.is_none() {
                new_leader = group
                    .members
                    .iter()
                    .filter(|member| member.id != old)
                    .filter_map(|member| member.node.as_ref())
                    .find(|node| node.is_serving_leader())
                    .map(PlacementNode::node_id);
            }
            // Ask the old leader every step, answered within that step or not at all.
            let answer = group.request(old, PlacementRequest::ClusterStatus, 0);
            if let Some(new_leader) = new_leader {
                assert!(
                    !matches!(answer, Some(Ok(_))),
                    "seed {seed}: {old} answers {answer:?} although {new_leader} leads"
                );
                checked_after += 1;
                if checked_after == 100 {
                    break;
                }
            }
        }
        assert!(new_leader.is_some(), "seed {seed}: nobody took over from {old}");
    }
}
