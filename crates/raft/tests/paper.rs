//! Tests of the Raft core against the Raft paper (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", 2014: "§5.2" etc.) and Ongaro's thesis ("Consensus:
//! Bridging Theory and Practice", 2014: "thesis §4.3" etc.). Each test names the section it
//! checks. The network harness (tests/common) checks the Ready contract and the safety
//! properties on every step.
//!
//! Debugging: `RAFT_TRACE=1` traces every network and prints the end of the trace when a
//! test fails (`RAFT_TRACE_FILE=<path>` writes all of it); `RAFT_RANDOM_SEEDS=<n>` runs the
//! randomized schedules with `n` seeds (deeper runs), `RAFT_VERBOSE=1` prints each seed, and
//! `RAFT_TRACE_SEED=<seed>` traces that one.

// Tests may unwrap; `allow-unwrap-in-tests` (clippy.toml) does not reach test helpers.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use tessera_raft::*;

// ---------------------------------------------------------------------- helpers

/// No pre-vote, no check-quorum, no leases: the protocol of the paper.
fn plain(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = false;
    c.lease_read = false;
}

/// Defaults without lease reads: every read goes through a heartbeat round.
fn no_lease(c: &mut Config) {
    c.lease_read = false;
}

fn entry(term: u64, index: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), kind: EntryKind::Normal, data: Bytes::new() }
}

/// A log whose entry `i + 1` has term `terms[i]`.
fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(t, i as u64 + 1)).collect()
}

/// A store of `voters` holding `log` at hard-state `term`.
fn store(voters: &[u64], log: &[Entry], term: u64) -> MemStorage {
    let mut store = MemStorage::new_with_conf_state(conf(voters));
    store.append(log);
    store.set_hard_state(HardState {
        term: Term(term),
        vote: ReplicaId::NONE,
        commit: LogIndex(0),
    });
    store
}

/// A lone node over `store` (not part of a network).
fn standalone(id: u64, store: MemStorage, tweak: impl Fn(&mut Config)) -> RawNode<MemStorage> {
    let mut config = config(id);
    tweak(&mut config);
    RawNode::new(config, store).unwrap()
}

fn msg(kind: MessageKind, from: u64, to: u64, term: u64) -> Message {
    Message::new(kind, rid(from), rid(to), Term(term))
}

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), ents: &[Entry], commit: u64) -> Message {
    let mut m = msg(MessageKind::Append, from, to, term);
    m.log_term = Term(prev.0);
    m.index = LogIndex(prev.1);
    m.entries = ents.to_vec();
    m.commit = LogIndex(commit);
    m
}

fn vote_request(kind: MessageKind, from: u64, to: u64, term: u64, last: (u64, u64)) -> Message {
    let mut m = msg(kind, from, to, term);
    m.log_term = Term(last.0);
    m.index = LogIndex(last.1);
    m
}

/// Takes a Ready from a lone node and persists it synchronously.
fn sync_ready(raw: &mut RawNode<MemStorage>) -> Ready {
    let ready = raw.ready();
    if let Some(snapshot) = &ready.snapshot {
        raw.store_mut().apply_snapshot(snapshot.clone());
    }
    raw.store_mut().append(&ready.entries);
    if let Some(hs) = ready.hard_state {
        raw.store_mut().set_hard_state(hs);
    }
    raw.advance(&ready);
    ready
}

fn terms(raw: &RawNode<MemStorage>) -> Vec<u64> {
    (1..=raw.last_index().0).map(|i| raw.term_at(LogIndex(i)).map_or(0, |t| t.0)).collect()
}

fn kinds(messages: &[Message]) -> Vec<(MessageKind, u64, u64)> {
    messages.iter().map(|m| (m.kind, m.from.0, m.to.0)).collect()
}

fn ctx(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn read_states(net: &Network, id: u64) -> Vec<(u64, String)> {
    net.node(id)
        .read_states
        .iter()
        .map(|rs| (rs.index.0, String::from_utf8_lossy(&rs.context).into_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

use MessageKind::{
    Append, AppendResponse, Heartbeat, HeartbeatResponse, RequestPreVote, RequestVote,
    RequestVoteResponse, TimeoutNow,
};

// ---------------------------------------------------------------------- §5.2 elections

/// §5.2 (and thesis §9.6): a follower that hears nothing for its randomized election
/// timeout starts an election — with pre-vote as a pre-candidate that keeps its term and asks
/// for votes in the next one, without it as a candidate of a new term that votes for itself.
#[test]
fn s5_2_follower_campaigns_after_its_randomized_election_timeout() {
    for pre_vote in [true, false] {
        let mut net = Network::new(&[1, 2, 3], |c| c.pre_vote = pre_vote);
        let timeout = first_timeout(&net.node(1).config);
        // Warming up used `election_ticks` of it.
        let left = timeout - net.node(1).config.election_ticks;
        net.tick(1, left - 1);
        assert_eq!(net.node(1).role(), Role::Follower);
        assert!(!net.raw(1).has_ready(), "nothing happens before the timeout");
        net.tick(1, 1);
        net.process_ready(1);
        let sent = net.take_msgs();
        let hs = net.node(1).raw.store().hard_state();
        if pre_vote {
            assert_eq!(net.node(1).role(), Role::PreCandidate);
            assert_eq!(
                (hs.term, hs.vote),
                (Term(0), ReplicaId::NONE),
                "pre-vote keeps term and vote"
            );
            assert_eq!(kinds(&sent), [(RequestPreVote, 1, 2), (RequestPreVote, 1, 3)]);
        } else {
            assert_eq!(net.node(1).role(), Role::Candidate);
            assert_eq!((hs.term, hs.vote), (Term(1), rid(1)), "a candidate votes for itself");
            assert_eq!(kinds(&sent), [(RequestVote, 1, 2), (RequestVote, 1, 3)]);
        }
        assert!(sent.iter().all(|m| m.term == Term(1)), "asks for votes in the next term");
    }
}

/// §5.2: election timeouts are chosen randomly from a fixed interval
/// `[election_ticks, 2 * election_ticks)`, differ between nodes (seeds) and are drawn again
/// for every election.
#[test]
fn s5_2_election_timeouts_are_randomized() {
    let mut firsts = std::collections::BTreeSet::new();
    let mut seconds = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let mut raw = standalone(1, store(&[1, 2, 3], &[], 0), |c| {
            plain(c);
            c.seed = seed;
        });
        let ticks_until = |raw: &mut RawNode<MemStorage>, term: u64| {
            let mut n = 0;
            while raw.raft().term() < Term(term) {
                raw.tick();
                n += 1;
                assert!(n < 100);
            }
            n
        };
        let first = ticks_until(&mut raw, 1);
        let second = ticks_until(&mut raw, 2);
        for t in [first, second] {
            assert!((10..20).contains(&t), "timeout {t} outside [10, 20)");
        }
        firsts.insert(first);
        seconds.insert((first, second));
    }
    assert!(firsts.len() >= 6, "timeouts barely differ across seeds: {firsts:?}");
    assert!(seconds.len() >= 15, "timeouts are not drawn again: {seconds:?}");
}

/// §5.2: each server votes for at most one candidate in a given term, first come first
/// served, and the vote survives a restart (it is persisted before the answer leaves).
#[test]
fn s5_2_one_vote_per_term_survives_restart() {
    let mut net = Network::new(&[1, 2, 3], plain);
    let granted = |net: &mut Network, from: u64| {
        net.deliver_msg(vote_request(RequestVote, from, 1, 1, (0, 0)));
        net.process_ready(1);
        let sent = net.take_msgs();
        assert_eq!(kinds(&sent), [(RequestVoteResponse, 1, from)]);
        !sent[0].reject
    };
    assert!(granted(&mut net, 2));
    assert!(!granted(&mut net, 3), "a second candidate of the same term is refused");
    assert!(granted(&mut net, 2), "the same candidate may ask again");
    net.crash(1);
    net.restart(1);
    assert_eq!(net.node(1).raw.store().hard_state().vote, rid(2));
    assert!(!granted(&mut net, 3), "the vote is remembered across a restart");
    assert!(granted(&mut net, 2));
}

/// §5.2: a candidate wins once a majority of the servers voted for it; a vote counts once;
/// a candidate refused by a majority gives up.
#[test]
fn s5_2_candidate_wins_with_a_majority_of_votes() {
    use Role::{Candidate, Follower, Leader};
    let cases: &[(&[(u64, bool)], Role)] = &[
        (&[], Candidate),
        (&[(2, true)], Candidate),
        (&[(2, true), (2, true)], Candidate),
        (&[(2, true), (3, true)], Leader),
        (&[(2, false), (3, false)], Candidate),
        (&[(2, false), (3, false), (4, false)], Follower),
        (&[(2, false), (3, true), (4, false), (5, true)], Leader),
    ];
    for (votes, want) in cases {
        let mut net = Network::new(&[1, 2, 3, 4, 5], plain);
        net.raw(1).campaign();
        net.process_ready(1);
        net.take_msgs();
        for &(from, granted) in *votes {
            let mut m = msg(RequestVoteResponse, from, 1, 1);
            m.reject = !granted;
            net.deliver_msg(m);
        }
        assert_eq!(net.node(1).role(), *want, "votes {votes:?}");
        assert_eq!(net.node(1).term(), Term(1));
    }
}

/// §5.2: a candidate (or pre-candidate) that hears an Append from a leader of its own term
/// accepts it and returns to follower; any message of a higher term makes it a follower of
/// that term.
#[test]
fn s5_2_candidate_steps_down_for_a_legitimate_leader_or_a_higher_term() {
    let mut net = Network::new(&[1, 2, 3], plain);
    net.raw(1).campaign();
    net.process_ready(1);
    net.take_msgs();
    assert_eq!(net.node(1).role(), Role::Candidate);
    net.deliver_msg(append(2, 1, 1, (0, 0), &[], 0));
    assert_eq!(
        (net.node(1).role(), net.node(1).leader(), net.node(1).term()),
        (Role::Follower, 2, Term(1))
    );

    net.raw(1).campaign();
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Candidate, Term(2)));
    let mut refusal = msg(RequestVoteResponse, 3, 1, 5);
    refusal.reject = true;
    net.deliver_msg(refusal);
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Follower, Term(5)));

    // A pre-candidate keeps its term; a heartbeat of that term from a leader ends its bid.
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(2);
    net.raw(1).campaign();
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::PreCandidate, Term(1)));
    net.tick(2, 2);
    net.stabilize();
    assert_eq!(
        (net.node(1).role(), net.node(1).leader(), net.node(1).term()),
        (Role::Follower, 2, Term(1))
    );
}

/// §5.2: a candidate that wins no majority (a split vote, or no answers) times out and
/// starts a new election in a new term.
#[test]
fn s5_2_candidate_without_a_majority_retries_in_a_new_term() {
    let mut net = Network::new(&[1, 2, 3], plain);
    net.isolate(1);
    let mut seen = Vec::new();
    for _ in 0..60 {
        net.tick(1, 1);
        net.stabilize();
        let node = net.node(1);
        assert_ne!(node.role(), Role::Leader);
        if seen.last() != Some(&node.term().0) {
            seen.push(node.term().0);
            assert_eq!(
                node.raw.store().hard_state().vote,
                if node.term() == Term(0) { ReplicaId::NONE } else { rid(1) }
            );
        }
    }
    assert!(seen.len() >= 4 && seen.windows(2).all(|w| w[1] == w[0] + 1), "terms {seen:?}");
    // Back in touch, a majority answers and it wins.
    net.heal();
    net.elect(1);
}

// ---------------------------------------------------------------------- §5.3 replication

/// §5.3: the leader appends a proposal to its log and sends it to every follower after the
/// entry that precedes it; it commits once a majority has it, and everyone applies it.
#[test]
fn s5_3_leader_appends_and_replicates_proposals() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    assert_eq!(net.propose(1, "x"), LogIndex(2));
    net.process_ready(1);
    let sent = net.take_msgs();
    assert_eq!(kinds(&sent), [(Append, 1, 2), (Append, 1, 3)]);
    for m in &sent {
        assert_eq!((m.log_term, m.index, m.commit), (Term(1), LogIndex(1), LogIndex(1)));
        assert_eq!(format!("{:?}", m.entries), r#"[1/2 "x"]"#);
    }
    assert_eq!(net.node(1).raw.committed(), LogIndex(1), "not committed before a majority has it");
    net.deliver_msg(sent[0].clone());
    net.stabilize();
    assert_eq!(net.node(1).raw.committed(), LogIndex(2), "the leader and node 2 are a majority");
    // The Append to node 3 was lost; the leader repairs it (here: when it broadcasts the new
    // commit index, node 3 refuses it and is probed).
    for id in 1..=3 {
        assert_eq!(net.node(id).sm.strings(), ["x"], "node {id}");
    }
}

/// §5.3: a follower appends entries only after the entry that precedes them matches (index
/// and term), refuses a mismatch, truncates a conflicting suffix, keeps matching entries
/// (a stale Append does not truncate), and commits up to min(leader commit, last new entry).
#[test]
fn s5_3_follower_append_consistency_check() {
    struct Case {
        log: Vec<u64>,
        prev: (u64, u64),
        entries: Vec<Entry>,
        commit: u64,
        want_log: Vec<u64>,
        want_reply: &'static str,
        want_commit: u64,
    }
    let cases = vec![
        // Matching prev: appended.
        Case {
            log: vec![1, 1, 2],
            prev: (2, 3),
            entries: vec![entry(2, 4)],
            commit: 0,
            want_log: vec![1, 1, 2, 2],
            want_reply: "1->2 AppendResponse Term:2 Match:4",
            want_commit: 0,
        },
        // Already present: nothing truncated.
        Case {
            log: vec![1, 1, 2, 2],
            prev: (1, 2),
            entries: vec![entry(2, 3)],
            commit: 0,
            want_log: vec![1, 1, 2, 2],
            want_reply: "1->2 AppendResponse Term:2 Match:3",
            want_commit: 0,
        },
        // Wrong term at prev: refused, pointing at the last entry of a term <= 2.
        Case {
            log: vec![1, 1, 2],
            prev: (2, 2),
            entries: vec![entry(2, 3)],
            commit: 0,
            want_log: vec![1, 1, 2],
            want_reply: "1->2 AppendResponse Term:2 Rejected:2 Hint:1/2",
            want_commit: 0,
        },
        // Prev past the end: refused, pointing at the end.
        Case {
            log: vec![1, 1, 2],
            prev: (2, 6),
            entries: vec![],
            commit: 0,
            want_log: vec![1, 1, 2],
            want_reply: "1->2 AppendResponse Term:2 Rejected:6 Hint:2/3",
            want_commit: 0,
        },
        // A conflicting suffix is replaced.
        Case {
            log: vec![1, 1, 1, 1],
            prev: (1, 1),
            entries: vec![entry(2, 2), entry(2, 3)],
            commit: 0,
            want_log: vec![1, 2, 2],
            want_reply: "1->2 AppendResponse Term:2 Match:3",
            want_commit: 0,
        },
        // Commit: min(leader commit, last new entry).
        Case {
            log: vec![1, 1],
            prev: (1, 2),
            entries: vec![entry(2, 3)],
            commit: 5,
            want_log: vec![1, 1, 2],
            want_reply: "1->2 AppendResponse Term:2 Match:3",
            want_commit: 3,
        },
        Case {
            log: vec![1, 1, 1, 1],
            prev: (1, 1),
            entries: vec![entry(1, 2)],
            commit: 3,
            want_log: vec![1, 1, 1, 1],
            want_reply: "1->2 AppendResponse Term:2 Match:2",
            want_commit: 2,
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let mut raw = standalone(1, store(&[1, 2, 3], &log_of(&case.log), 2), plain);
        raw.step(append(2, 1, 2, case.prev, &case.entries, case.commit)).unwrap();
        let ready = sync_ready(&mut raw);
        assert!(ready.messages.is_empty(), "case {i}: an append answer waits for persistence");
        assert_eq!(
            format!("{:?}", ready.persisted_messages),
            format!("[{}]", case.want_reply),
            "case {i}"
        );
        assert_eq!(terms(&raw), case.want_log, "case {i}");
        assert_eq!(raw.committed(), LogIndex(case.want_commit), "case {i}");
        assert_eq!(raw.raft().leader(), rid(2), "case {i}");
    }
}

/// §5.3 Log Matching, and §5.4.3 State Machine Safety: after leader changes with partitions
/// and lost suffixes, every log and every state machine agrees (the harness checks both after
/// every stabilization).
#[test]
fn s5_3_log_matching_after_leader_changes() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], plain);
    net.elect(1);
    net.propose_and_stabilize(1, "a");
    // 1 and 2 cut off: 1 accepts proposals it cannot commit.
    net.partition(&[&[1, 2], &[3, 4, 5]]);
    net.propose_and_stabilize(1, "lost1");
    net.propose_and_stabilize(1, "lost2");
    net.elect(3);
    net.propose_and_stabilize(3, "b");
    net.heal();
    net.partition(&[&[1, 3], &[2, 4, 5]]);
    net.tick_all(1);
    net.elect(4);
    net.propose_and_stabilize(4, "c");
    net.heal();
    net.tick_all(4);
    net.propose_and_stabilize(4, "d");
    let want = strings(&["a", "b", "c", "d"]);
    for id in 1..=5 {
        assert_eq!(net.node(id).sm.strings(), want, "node {id}");
        assert_eq!(terms(&net.node(id).raw), terms(&net.node(4).raw), "node {id}");
    }
}

// ---------------------------------------------------------------------- §5.4 safety

/// §5.4.1: a voter grants its vote (and its pre-vote) only to a candidate whose log is at
/// least as up-to-date as its own: a later last term, or the same last term and a log at
/// least as long.
#[test]
fn s5_4_1_votes_only_for_an_up_to_date_log() {
    // The voter's log ends at 2/3.
    let cases = [((1, 5), false), ((2, 2), false), ((2, 3), true), ((2, 4), true), ((3, 1), true)];
    for kind in [RequestVote, RequestPreVote] {
        for (last, want) in cases {
            let mut raw = standalone(1, store(&[1, 2, 3], &log_of(&[1, 1, 2]), 2), plain);
            raw.step(vote_request(kind, 2, 1, 3, last)).unwrap();
            let ready = sync_ready(&mut raw);
            let replies: Vec<&Message> =
                ready.messages.iter().chain(&ready.persisted_messages).collect();
            assert_eq!(replies.len(), 1);
            assert_eq!(!replies[0].reject, want, "{kind:?} from a log ending at {last:?}");
            let vote = raw.store().hard_state().vote;
            let want_vote = if want && kind == RequestVote { rid(2) } else { ReplicaId::NONE };
            assert_eq!(vote, want_vote, "{kind:?} {last:?}: only a granted real vote is recorded");
        }
    }
}

/// Builds Figure 8 up to (c), in this implementation's terms (the first leader's term is 1,
/// and a new leader's first entry is its no-op):
/// (a) S1 leads term 1 and replicates entry 1/2 to S2 only;
/// (b) S1 crashes; S5 is elected for term 2 by S3, S4, S5 and appends 2/2 but replicates
///     nothing;
/// (c) S5 crashes; S1 restarts and is elected for term 3 (by S2, S3, S4), appends its no-op
///     3/3 and replicates 1/2 to S3, so 1/2 is on a majority (S1, S2, S3) while 3/3 is on
///     S1 and S2 only.
fn figure_8_up_to_c() -> Network {
    let mut net = Network::new(&[1, 2, 3, 4, 5], |c| {
        plain(c);
        c.append_bytes_max = 1; // one entry per Append, to place entries one by one
    });
    net.elect(1);
    // (a)
    for other in [3, 4, 5] {
        net.cut(1, other);
    }
    assert_eq!(net.propose(1, "a"), LogIndex(2));
    net.stabilize();
    assert_eq!(net.node(2).raw.term_at(LogIndex(2)), Some(Term(1)));
    // (b)
    net.crash(1);
    net.heal();
    net.drop_if = Some(Box::new(|m| m.from == rid(5) && m.kind == Append));
    net.elect(5);
    assert_eq!(net.node(5).term(), Term(2));
    assert_eq!(terms(&net.node(5).raw), [1, 2]);
    // (c)
    net.crash(5);
    net.heal();
    net.restart(1);
    let mut s3_appends_with_3 = 0;
    net.drop_if = Some(Box::new(move |m| {
        let has_3 = m.entries.iter().any(|e| e.index == LogIndex(3));
        if m.kind == Append && m.to == rid(3) && has_3 {
            s3_appends_with_3 += 1;
            // The first is a probe that S3 refuses (it lacks 2); drop those after it.
            return s3_appends_with_3 > 1;
        }
        m.kind == Append && m.to == rid(4)
    }));
    net.campaign(1); // term 2: S3 and S4 already voted for S5, S5 is down
    assert_eq!(net.node(1).role(), Role::Candidate);
    net.elect(1); // term 3
    assert_eq!(net.node(1).term(), Term(3));
    assert_eq!(terms(&net.node(1).raw), [1, 1, 3]);
    assert_eq!(terms(&net.node(2).raw), [1, 1, 3]);
    assert_eq!(terms(&net.node(3).raw), [1, 1]);
    assert_eq!(terms(&net.node(4).raw), [1]);
    net
}

/// §5.4.2, Figure 8 (c)-(d): a leader never commits an entry of an earlier term by counting
/// replicas. 1/2 sits on a majority, yet S1 (term 3) does not commit it, and rightly so: S5
/// can still be elected and overwrite it.
#[test]
fn s5_4_2_figure_8_old_term_entry_on_a_majority_is_not_committed() {
    let mut net = figure_8_up_to_c();
    assert_eq!(
        net.node(1).raw.committed(),
        LogIndex(1),
        "1/2 must not be committed by counting replicas"
    );
    // (d): S1 crashes; S5 restarts and is elected by S3, S4 and itself (its last term 2 beats
    // their 1), and replaces index 2 everywhere.
    net.crash(1);
    net.heal();
    net.restart(5);
    net.campaign(5); // term 3: everyone voted for S1
    net.elect(5); // term 4
    assert_eq!(net.node(5).term(), Term(4));
    for id in 2..=5 {
        assert_eq!(terms(&net.node(id).raw), [1, 2, 4], "node {id}");
        assert!(net.node(id).sm.strings().is_empty(), "\"a\" is never applied");
    }
}

/// §5.4.2, Figure 8 (e): once S1 replicates an entry of its own term (its no-op) to a
/// majority, that commits it and, by the Log Matching property, everything before it; S5 can
/// no longer be elected.
#[test]
fn s5_4_2_figure_8_commit_through_an_entry_of_the_current_term() {
    let mut net = figure_8_up_to_c();
    net.heal();
    net.tick(1, 2);
    net.stabilize();
    assert_eq!(net.node(1).raw.committed(), LogIndex(3));
    for id in 1..=4 {
        assert_eq!(net.node(id).sm.strings(), ["a"], "node {id}");
    }
    net.crash(1);
    net.restart(5);
    for _ in 0..3 {
        net.campaign(5);
        assert_ne!(net.node(5).role(), Role::Leader, "S5's log is not up to date");
    }
}

// ---------------------------------------------------------------------- §8 no-op

/// §8 (thesis §6.4): a new leader appends a blank no-op entry of its term at once, which
/// commits whatever earlier-term entries it holds.
#[test]
fn s8_leader_appends_a_no_op_on_election() {
    let mut net = Network::new(&[1, 2, 3], plain);
    net.elect(1);
    net.propose_and_stabilize(1, "x");
    net.cut(1, 3);
    net.drop_if = Some(Box::new(|m| m.kind == AppendResponse));
    net.propose_and_stabilize(1, "y"); // on 1 and 2, not committed
    net.heal();
    net.isolate(1);
    assert_eq!(net.node(2).raw.committed(), LogIndex(2));
    net.elect(2);
    let last = net.node(2).raw.store().stored_entries().last().unwrap().clone();
    assert_eq!((last.term, last.index, last.kind), (Term(2), LogIndex(4), EntryKind::Normal));
    assert!(last.data.is_empty());
    assert_eq!(net.node(2).raw.committed(), LogIndex(4), "the no-op commits at once with node 3");
    assert_eq!(net.node(2).sm.strings(), ["x", "y"], "and with it the earlier term's tail");
    assert_eq!(net.node(3).sm.strings(), ["x", "y"]);
}

// ---------------------------------------------------------------------- §7 snapshots

/// §7: a follower that needs entries the leader has already compacted is sent the snapshot
/// (InstallSnapshot), installs it (log replaced, state machine restored), and replication
/// continues from the snapshot's index.
#[test]
fn s7_follower_behind_the_first_index_gets_and_installs_a_snapshot() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..5 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    assert_eq!(net.node(1).raw.applied(), LogIndex(6));
    net.compact(1, LogIndex(5));
    net.heal();
    net.tick(1, 2); // heartbeat; node 3's answer makes the leader look at its progress
    net.stabilize();
    let snapshots: Vec<Message> = net.sent_where(|m| m.kind == MessageKind::Snapshot);
    assert_eq!(format!("{snapshots:?}"), "[1->3 Snapshot Term:1 Snapshot:1/5 Voters:[1, 2, 3]]");
    let node3 = net.node(3);
    assert_eq!(node3.raw.store().first_index(), LogIndex(6), "the log restarts after the snapshot");
    assert_eq!(node3.raw.committed(), LogIndex(6), "and entry 6 followed it");
    assert_eq!(node3.sm.strings(), ["v0", "v1", "v2", "v3", "v4"]);
    net.propose_and_stabilize(1, "after");
    assert_eq!(net.node(3).sm.strings().last().map(String::as_str), Some("after"));
    assert_eq!(
        net.sent_where(|m| m.kind == MessageKind::Snapshot).len(),
        1,
        "one snapshot is enough"
    );
}

/// §7: while a snapshot is on its way nothing else is sent to that follower; a failed
/// snapshot reported with `report_snapshot` makes the leader probe again and send a new
/// one.
#[test]
fn s7_report_snapshot_failure_retries() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..3 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    net.compact(1, LogIndex(4));
    net.heal();
    net.drop_if = Some(Box::new(|m| m.kind == MessageKind::Snapshot));
    net.tick_all(10);
    let count = |net: &Network| net.sent_where(|m| m.kind == MessageKind::Snapshot).len();
    assert_eq!(count(&net), 1, "paused while the snapshot is in flight");
    assert!(net.node(3).sm.strings().is_empty());
    net.heal();
    net.raw(1).report_snapshot(rid(3), false);
    net.tick_all(2);
    assert_eq!(count(&net), 2);
    assert_eq!(net.node(3).sm.strings(), ["v0", "v1", "v2"]);
}

/// §7: a snapshot arriving after its answer was lost: `report_snapshot(success)` resumes
/// replication from the snapshot's index.
#[test]
fn s7_report_snapshot_success_resumes_from_the_snapshot() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..3 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    net.compact(1, LogIndex(4));
    net.heal();
    // Lose node 3's acknowledgement of the snapshot.
    net.drop_if = Some(Box::new(|m| {
        m.kind == AppendResponse && m.from == rid(3) && m.index == LogIndex(4) && !m.reject
    }));
    net.tick(1, 2);
    net.stabilize();
    assert_eq!(net.node(3).raw.committed(), LogIndex(4), "snapshot installed, answer lost");
    net.heal();
    net.raw(1).report_snapshot(rid(3), true);
    net.propose_and_stabilize(1, "v3");
    net.tick_all(2);
    assert_eq!(net.node(3).sm.strings(), ["v0", "v1", "v2", "v3"]);
    assert_eq!(net.sent_where(|m| m.kind == MessageKind::Snapshot).len(), 1);
}

/// §7: a follower ignores a snapshot that its committed log already covers, and answers
/// with its commit index.
#[test]
fn s7_follower_ignores_an_older_snapshot() {
    let mut raw = standalone(1, store(&[1, 2, 3], &log_of(&[1, 1, 1, 1, 1]), 1), plain);
    raw.step(append(2, 1, 1, (1, 5), &[], 5)).unwrap();
    sync_ready(&mut raw);
    let mut m = msg(MessageKind::Snapshot, 2, 1, 1);
    let metadata =
        SnapshotMetadata { index: LogIndex(3), term: Term(1), conf_state: conf(&[1, 2, 3]) };
    m.snapshot = Some(Box::new(Snapshot { metadata, data: Bytes::new() }));
    raw.step(m).unwrap();
    let ready = sync_ready(&mut raw);
    assert!(ready.snapshot.is_none());
    assert_eq!(format!("{:?}", ready.persisted_messages), "[1->2 AppendResponse Term:1 Match:5]");
    assert_eq!(raw.last_index(), LogIndex(5));
}

// ---------------------------------------------------------------------- thesis §4.3 joint consensus

fn steps(steps: &[ConfChangeStep], explicit_leave: bool) -> ConfChange {
    ConfChange { steps: steps.to_vec(), explicit_leave, context: bytes::Bytes::new() }
}

/// Adds node `id`, with the group's initial membership and an empty log.
fn add_fresh_node(net: &mut Network, id: u64, initial: &[u64], tweak: impl Fn(&mut Config)) {
    let mut config = config(id);
    tweak(&mut config);
    net.add_node(config, conf(initial));
    net.warm_up_node(id);
}

fn conf_of(net: &Network, id: u64) -> String {
    let status = net.node(id).status();
    status[status.find("voters=").unwrap()..].to_string()
}

/// Thesis §4.3: in the joint configuration C_old,new, entries commit only with a majority of
/// the old and a majority of the new configuration, and elections need both too.
#[test]
fn thesis_4_3_joint_configuration_needs_both_majorities() {
    let mut net = Network::new(&[1, 2, 3], plain);
    for id in [4, 5] {
        add_fresh_node(&mut net, id, &[1, 2, 3], plain);
    }
    net.elect(1);
    use ConfChangeStep::{AddVoter, Remove};
    let cc = steps(&[AddVoter(rid(4)), AddVoter(rid(5)), Remove(rid(2)), Remove(rid(3))], true);
    net.raw(1).propose_conf_change(&cc).unwrap();
    net.stabilize();
    net.tick_all(2); // heartbeats bring the new nodes up to date
    for id in 1..=5 {
        assert_eq!(conf_of(&net, id), "voters=(1 4 5) outgoing=(1 2 3)", "node {id}");
    }
    let committed = |net: &Network| net.node(1).raw.committed();
    // The old majority alone cannot commit.
    let before = committed(&net);
    net.partition(&[&[1, 2, 3], &[4, 5]]);
    net.propose_and_stabilize(1, "x");
    assert_eq!(committed(&net), before, "old majority only");
    net.heal();
    net.tick_all(2);
    assert_eq!(committed(&net), before.next());
    // Nor can the new majority alone.
    net.partition(&[&[1, 4, 5], &[2, 3]]);
    net.propose_and_stabilize(1, "y");
    assert_eq!(committed(&net), before.next(), "new majority only");
    net.heal();
    net.tick_all(2);
    assert_eq!(committed(&net), before.next().next());
    // Elections: node 4 with the new majority (4, 5) but only itself... not a voter of the
    // old configuration, so it needs two of 1, 2, 3 as well.
    net.crash(1);
    net.partition(&[&[4, 5], &[2, 3]]);
    net.campaign(4);
    assert_ne!(net.node(4).role(), Role::Leader, "no old majority");
    net.campaign(2);
    assert_ne!(net.node(2).role(), Role::Leader, "no new majority");
    net.heal();
    net.elect(4);
}

/// Thesis §4.3: with auto-leave the leader proposes leaving the joint configuration as soon
/// as it has applied it; every node ends in C_new.
#[test]
fn thesis_4_3_auto_leave_after_applying_the_joint_configuration() {
    let mut net = Network::voters(&[1, 2, 3]);
    add_fresh_node(&mut net, 4, &[1, 2, 3], |_| {});
    net.elect(1);
    let cc = steps(&[ConfChangeStep::AddVoter(rid(4))], false);
    let index = net.raw(1).propose_conf_change(&cc).unwrap();
    net.stabilize();
    net.tick_all(2);
    let leader = net.node(1);
    let changes: Vec<(u64, String)> = leader
        .conf_changes
        .iter()
        .skip(1) // the initial membership
        .map(|(i, cs)| {
            (i.0, format!("{:?} {:?} auto_leave={}", cs.voters, cs.voters_outgoing, cs.auto_leave))
        })
        .collect();
    assert_eq!(
        changes,
        [
            (index.0, "[1, 2, 3, 4] [1, 2, 3] auto_leave=true".to_string()),
            (index.0 + 1, "[1, 2, 3, 4] [] auto_leave=false".to_string())
        ]
    );
    let leave = &leader.sm.applied.iter().find(|e| e.index == index.next()).unwrap();
    assert_eq!(leave.kind, EntryKind::ConfChange);
    assert!(decode_conf_change(&leave.data).unwrap().is_leave_joint());
    for id in 1..=4 {
        assert_eq!(conf_of(&net, id), "voters=(1 2 3 4)", "node {id}");
    }
}

/// Thesis §4.3: with `explicit_leave` the group stays joint until asked to leave with an
/// empty change; no other change is accepted while joint.
#[test]
fn thesis_4_3_explicit_leave() {
    let mut net = Network::voters(&[1, 2, 3]);
    add_fresh_node(&mut net, 4, &[1, 2, 3], |_| {});
    net.elect(1);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::AddVoter(rid(4))], true)).unwrap();
    net.stabilize();
    net.tick_all(4);
    assert_eq!(conf_of(&net, 1), "voters=(1 2 3 4) outgoing=(1 2 3)");
    let other = steps(&[ConfChangeStep::AddLearner(rid(5))], false);
    assert_eq!(
        net.raw(1).propose_conf_change(&other),
        Err(RaftError::ConfChange(ConfChangeError::AlreadyJoint))
    );
    net.raw(1).propose_conf_change(&ConfChange::default()).unwrap();
    net.stabilize();
    net.tick_all(2);
    for id in 1..=4 {
        assert_eq!(conf_of(&net, id), "voters=(1 2 3 4)", "node {id}");
    }
    assert_eq!(
        net.raw(1).propose_conf_change(&ConfChange::default()),
        Err(RaftError::ConfChange(ConfChangeError::NotJoint))
    );
}

/// Thesis §4.3 (and §4.2.1): one membership change at a time: a second is refused with
/// ConfChangePending until the first is applied.
#[test]
fn thesis_4_3_one_pending_change_at_a_time() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    let first = net
        .raw(1)
        .propose_conf_change(&steps(&[ConfChangeStep::AddLearner(rid(4))], false))
        .unwrap();
    let second = steps(&[ConfChangeStep::AddLearner(rid(5))], false);
    assert_eq!(
        net.raw(1).propose_conf_change(&second),
        Err(RaftError::ConfChangePending { index: first })
    );
    net.propose(1, "data is fine meanwhile");
    net.stabilize();
    assert_eq!(conf_of(&net, 1), "voters=(1 2 3) learners=(4)", "learner-only: no joint phase");
    net.raw(1).propose_conf_change(&second).unwrap();
    net.stabilize();
    assert_eq!(conf_of(&net, 2), "voters=(1 2 3) learners=(4 5)");
}

/// Thesis §4.2.1 / §4.3: learners (non-voting members) receive the log and apply it, but are
/// never asked for votes, never campaign, and do not count toward commitment.
#[test]
fn thesis_4_3_learners_replicate_but_neither_vote_nor_count() {
    let cs = ConfState { voters: rids(&[1, 2, 3]), learners: rids(&[4]), ..ConfState::default() };
    let mut net = Network::empty();
    for id in 1..=4 {
        net.add_node(config(id), cs.clone());
    }
    net.warm_up();
    net.elect(1);
    assert!(
        net.sent_where(|m| m.kind == RequestVote || m.kind == RequestPreVote)
            .iter()
            .all(|m| m.to != rid(4))
    );
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(4).sm.strings(), ["x"]);
    // A learner that hears nothing never campaigns, not even when asked.
    net.isolate(4);
    net.tick(4, 200);
    net.raw(4).campaign();
    assert_eq!(net.node(4).role(), Role::Follower);
    assert!(!net.raw(4).has_ready());
    // With 2 and 3 gone, the learner's acknowledgement does not make a majority.
    net.heal();
    net.partition(&[&[1, 4], &[2, 3]]);
    let committed = net.node(1).raw.committed();
    net.propose_and_stabilize(1, "y");
    assert_eq!(net.node(4).raw.last_index(), committed.next(), "the learner has it");
    assert_eq!(net.node(1).raw.committed(), committed, "but it does not count");
}

/// Thesis §4.3: demoting a voter to learner goes through the joint configuration, where it
/// still votes in the outgoing half (`learners_next`); after leaving, it is a learner.
#[test]
fn thesis_4_3_demotion_through_learners_next() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    let index = net
        .raw(1)
        .propose_conf_change(&steps(&[ConfChangeStep::AddLearner(rid(3))], false))
        .unwrap();
    net.stabilize();
    let (at, joint) = &net.node(2).conf_changes[1];
    assert_eq!(*at, index);
    assert_eq!(
        (
            joint.voters.clone(),
            joint.voters_outgoing.clone(),
            joint.learners.clone(),
            joint.learners_next.clone()
        ),
        (rids(&[1, 2]), rids(&[1, 2, 3]), vec![], rids(&[3]))
    );
    for id in 1..=3 {
        assert_eq!(conf_of(&net, id), "voters=(1 2) learners=(3)", "node {id}");
    }
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(3).sm.strings(), ["x"], "a learner still gets the log");
    net.isolate(3);
    net.tick(3, 100);
    assert_eq!(net.node(3).role(), Role::Follower, "and no longer campaigns");
}

/// Thesis §4.2.2: a leader removed from the configuration steps down once it has applied the
/// change that leaves it out; the remaining voters elect a successor.
#[test]
fn thesis_4_2_2_removed_leader_steps_down() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::Remove(rid(1))], false)).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(conf_of(&net, 2), "voters=(2 3)");
    assert!(matches!(net.raw(1).propose(Bytes::new()), Err(RaftError::NotLeader { .. })));
    net.tick_all(40);
    let leader = net.leader().unwrap();
    assert!(leader == 2 || leader == 3);
    net.propose_and_stabilize(leader, "x");
    assert_eq!(net.node(2).sm.strings(), ["x"]);
}

/// Thesis §4.3: a leader elected while the group is joint (its predecessor died before the
/// leave entry was replicated) leaves the joint configuration itself once it has applied it.
#[test]
fn thesis_4_3_new_leader_completes_auto_leave() {
    let mut net = Network::voters(&[1, 2, 3]);
    add_fresh_node(&mut net, 4, &[1, 2, 3], |_| {});
    net.elect(1);
    // Lose every Append from 1 carrying the leave entry.
    net.drop_if = Some(Box::new(|m| {
        m.kind == Append
            && m.entries.iter().any(|e| {
                e.kind == EntryKind::ConfChange
                    && decode_conf_change(&e.data).unwrap().is_leave_joint()
            })
    }));
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::AddVoter(rid(4))], false)).unwrap();
    net.stabilize();
    net.tick_all(2);
    assert_eq!(conf_of(&net, 2), "voters=(1 2 3 4) outgoing=(1 2 3) auto_leave");
    net.crash(1);
    net.heal();
    net.tick_all(60);
    let leader = net.leader().unwrap();
    assert_ne!(leader, 1);
    for id in 2..=4 {
        assert_eq!(conf_of(&net, id), "voters=(1 2 3 4)", "node {id}");
    }
}

/// §7 / thesis §4.3: a snapshot carries the membership at its index, joint or not; a
/// follower restored from it takes part in the joint decisions and leaves with the others.
#[test]
fn s7_snapshot_carries_a_joint_configuration() {
    let mut net = Network::voters(&[1, 2, 3]);
    add_fresh_node(&mut net, 4, &[1, 2, 3], |_| {});
    net.elect(1);
    net.isolate(3);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::AddVoter(rid(4))], true)).unwrap();
    net.stabilize();
    net.tick_all(2);
    net.propose_and_stabilize(1, "x");
    let applied = net.node(1).sm.index();
    net.compact(1, applied);
    net.heal();
    net.tick_all(2);
    assert_eq!(net.sent_where(|m| m.kind == MessageKind::Snapshot && m.to == rid(3)).len(), 1);
    assert_eq!(conf_of(&net, 3), "voters=(1 2 3 4) outgoing=(1 2 3)");
    assert_eq!(net.node(3).sm.strings(), ["x"]);
    net.raw(1).propose_conf_change(&ConfChange::default()).unwrap();
    net.stabilize();
    assert_eq!(conf_of(&net, 3), "voters=(1 2 3 4)");
    // Node 3 counts in both halves: with 2 and 4 cut off, 1 and 3 are a majority of nothing.
    net.partition(&[&[1, 3], &[2, 4]]);
    let committed = net.node(1).raw.committed();
    net.propose_and_stabilize(1, "y");
    assert_eq!(net.node(1).raw.committed(), committed, "2 of 4 is no majority");
}

/// Thesis §4.2.3: a server removed from the configuration that does not learn of it (it was
/// cut off) times out and campaigns, but with check-quorum the remaining servers ignore it
/// while they hear from their leader.
#[test]
fn thesis_4_2_3_removed_server_does_not_disrupt() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::Remove(rid(3))], false)).unwrap();
    net.stabilize();
    assert_eq!(conf_of(&net, 1), "voters=(1 2)");
    assert_eq!(conf_of(&net, 3), "voters=(1 2 3)", "3 never heard");
    net.heal();
    net.tick_all(100);
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Leader, Term(1)));
    assert!(
        net.sent_where(|m| m.from == rid(3) && m.kind == RequestPreVote).len() > 2,
        "3 keeps trying"
    );
    assert_eq!(net.leaders.len(), 1);
}

/// Thesis §4.2.2 / §4.3: removing the leader must not deadlock the group. Here the leader
/// (1) of voters (1 2) removes itself; the leave entry commits with node 2's
/// acknowledgement, but node 2 never hears that it committed, and the leader had appended
/// one more entry. If the leader stepped down as soon as it applied the leave, node 2 would
/// stay in the joint configuration, needing node 1's vote, which node 1 (a longer log, and
/// no longer a voter, so never a candidate) refuses forever.
#[test]
fn thesis_4_2_2_removed_leader_does_not_deadlock_the_joint_configuration() {
    let mut net = Network::voters(&[1, 2]);
    net.elect(1);
    // Node 2 acknowledges nothing from the leave entry (index 3) on.
    net.drop_if =
        Some(Box::new(|m| m.kind == AppendResponse && m.from == rid(2) && m.index >= LogIndex(3)));
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::Remove(rid(1))], false)).unwrap();
    net.stabilize();
    assert_eq!(conf_of(&net, 2), "voters=(2) outgoing=(1 2) auto_leave");
    assert_eq!(net.node(2).raw.last_index(), LogIndex(3), "node 2 has the leave entry");
    // The leader appends x, which node 2 does not get, then learns node 2 has the leave.
    net.drop_if = Some(Box::new(|m| m.from == rid(1) && m.to == rid(2)));
    net.propose_and_stabilize(1, "x");
    let mut ack = msg(AppendResponse, 2, 1, 1);
    ack.index = LogIndex(3);
    net.deliver_msg(ack);
    net.stabilize();
    assert_eq!(conf_of(&net, 1), "voters=(2)", "the leader applied the leave");
    net.heal();
    net.tick_all(200);
    let leader = net.leader().expect("node 2 is eventually elected");
    assert_eq!(leader, 2);
    net.propose_and_stabilize(2, "y");
    assert_eq!(net.node(2).sm.strings().last().map(String::as_str), Some("y"));
}

/// Thesis §4.3 (§4.2.1): promoting a learner to voter goes through a joint configuration
/// and the promoted node then votes.
#[test]
fn thesis_4_3_promote_learner() {
    let cs = ConfState { voters: rids(&[1, 2, 3]), learners: rids(&[4]), ..ConfState::default() };
    let mut net = Network::empty();
    for id in 1..=4 {
        net.add_node(config(id), cs.clone());
    }
    net.warm_up();
    net.elect(1);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::AddVoter(rid(4))], false)).unwrap();
    net.stabilize();
    for id in 1..=4 {
        assert_eq!(conf_of(&net, id), "voters=(1 2 3 4)", "node {id}");
    }
    // 4 now counts: with 2 and 3 gone, 1 and 4 are not a majority of 4, with 3 back they are.
    net.isolate(2);
    net.isolate(3);
    let committed = net.node(1).raw.committed();
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(1).raw.committed(), committed);
    net.heal();
    net.isolate(2);
    net.tick_all(2);
    assert_eq!(net.node(1).raw.committed(), committed.next());
}

// ---------------------------------------------------------------------- thesis §3.10 leader transfer

/// Thesis §3.10: a transfer to a caught-up voter sends TimeoutNow at once; the transferee
/// campaigns at once, in a real election (no pre-vote), and wins although every follower is
/// within its leader's lease.
#[test]
fn thesis_3_10_transfer_to_caught_up_voter() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.propose_and_stabilize(1, "x");
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.process_ready(1);
    assert_eq!(kinds(&net.in_flight), [(TimeoutNow, 1, 3)]);
    let sent_before = net.sent.len();
    net.stabilize();
    assert_eq!(net.node(3).role(), Role::Leader);
    assert_eq!(net.node(3).term(), Term(2));
    assert_eq!(net.node(1).role(), Role::Follower);
    let campaign = &net.sent[sent_before..];
    assert!(campaign.iter().all(|m| m.kind != RequestPreVote), "no pre-vote");
    assert!(
        campaign
            .iter()
            .filter(|m| m.kind == RequestVote)
            .all(|m| m.context.as_ref() == CAMPAIGN_TRANSFER)
    );
}

/// Thesis §3.10: a transferee that lags is first brought up to date; TimeoutNow follows its
/// acknowledgement of the leader's last entry.
#[test]
fn thesis_3_10_transfer_to_lagging_voter_catches_it_up_first() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.propose_and_stabilize(1, "x");
    net.propose_and_stabilize(1, "y");
    net.heal();
    let before = net.sent.len();
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.stabilize();
    let to_3: Vec<MessageKind> = net.sent[before..]
        .iter()
        .filter(|m| m.from == rid(1) && m.to == rid(3))
        .map(|m| m.kind)
        .collect();
    assert_eq!(to_3.first(), Some(&Append));
    assert_eq!(to_3.iter().filter(|k| **k == TimeoutNow).count(), 1);
    assert_eq!(net.node(3).role(), Role::Leader);
    assert_eq!(net.node(3).sm.strings(), ["x", "y"]);
}

/// Thesis §3.10: during a transfer the leader refuses proposals (TransferInProgress); a
/// transfer that does not complete within an election timeout is abandoned and proposals
/// are accepted again.
#[test]
fn thesis_3_10_proposals_refused_during_transfer_until_it_times_out() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).raw.raft().lead_transferee(), rid(3));
    let busy = Err(RaftError::TransferInProgress { to: rid(3) });
    assert_eq!(net.raw(1).propose(ctx("x")), busy);
    let cc = steps(&[ConfChangeStep::AddLearner(rid(4))], false);
    assert_eq!(net.raw(1).propose_conf_change(&cc), busy);
    let election = net.node(1).config.election_ticks;
    net.tick(1, election - 1);
    net.stabilize();
    assert_eq!(net.raw(1).propose(ctx("x")), busy);
    net.tick(1, 1);
    net.stabilize();
    assert_eq!(net.node(1).raw.raft().lead_transferee(), ReplicaId::NONE, "abandoned");
    assert_eq!(net.node(1).role(), Role::Leader);
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(2).sm.strings(), ["x"]);
}

/// Thesis §3.10: only a voter can take over, and only a leader can hand over.
#[test]
fn thesis_3_10_transfer_errors() {
    let cs = ConfState { voters: rids(&[1, 2, 3]), learners: rids(&[4]), ..ConfState::default() };
    let mut net = Network::empty();
    for id in 1..=4 {
        net.add_node(config(id), cs.clone());
    }
    net.warm_up();
    net.elect(1);
    assert_eq!(net.raw(1).transfer_leader(rid(4)), Err(RaftError::NotAVoter { replica: rid(4) }));
    assert_eq!(net.raw(1).transfer_leader(rid(9)), Err(RaftError::NotAVoter { replica: rid(9) }));
    assert_eq!(net.raw(2).transfer_leader(rid(3)), Err(RaftError::NotLeader { leader: rid(1) }));
    assert_eq!(net.raw(1).transfer_leader(rid(1)), Ok(()), "to itself: nothing to do");
    assert_eq!(net.node(1).raw.raft().lead_transferee(), ReplicaId::NONE);
}

// ---------------------------------------------------------------------- thesis §9.6, §6.2, §4.2.3

/// Thesis §9.6: with pre-vote, a node partitioned away keeps its term however long it times
/// out, and on rejoining neither bumps the term nor disturbs the leader.
#[test]
fn thesis_9_6_prevote_partitioned_node_rejoins_without_disruption() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for _ in 0..100 {
        net.tick(3, 1);
        net.stabilize();
    }
    assert_eq!(net.node(3).term(), Term(1), "pre-vote rounds do not bump the term");
    assert_eq!(net.node(3).role(), Role::PreCandidate);
    net.heal();
    net.tick_all(30);
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Leader, Term(1)));
    assert_eq!((net.node(3).role(), net.node(3).leader()), (Role::Follower, 1));
    assert_eq!(net.leaders.len(), 1, "no other election happened");
}

/// Thesis §9.6, the problem pre-vote solves: without pre-vote (and check-quorum), the same
/// rejoining node forces an election in a higher term.
#[test]
fn thesis_9_6_without_prevote_rejoining_node_disrupts() {
    let mut net = Network::new(&[1, 2, 3], plain);
    net.elect(1);
    net.isolate(3);
    for _ in 0..100 {
        net.tick(3, 1);
        net.stabilize();
    }
    let term = net.node(3).term();
    assert!(term > Term(3), "term {term} grew while isolated");
    net.heal();
    net.tick_all(40);
    assert!(net.node(1).term() >= term, "the healthy leader was deposed");
}

/// Thesis §6.2: with check-quorum, a leader that hears from no quorum for an election timeout
/// steps down (within two timeouts: activity is checked once per timeout).
#[test]
fn thesis_6_2_check_quorum_leader_without_quorum_steps_down() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(50);
    assert_eq!(net.node(1).role(), Role::Leader, "a leader in touch stays");
    net.isolate(1);
    let election = net.node(1).config.election_ticks;
    net.tick(1, election);
    assert_eq!(net.node(1).role(), Role::Leader, "the first check still sees earlier contact");
    net.tick(1, election);
    assert_eq!((net.node(1).role(), net.node(1).term()), (Role::Follower, Term(1)));
    assert!(!net.node(1).raw.raft().lease_valid());
}

/// Thesis §4.2.3 (§6.2, §9.6): a follower that heard from its leader within the election
/// timeout ignores vote and pre-vote requests of higher terms without answering or adopting
/// the term; once the timeout passes in silence, it votes.
#[test]
fn thesis_4_2_3_followers_ignore_vote_requests_while_they_hear_from_the_leader() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    let ask = |net: &mut Network, kind: MessageKind| {
        net.raw(2).step(vote_request(kind, 3, 2, 5, (1, 1))).unwrap();
        net.process_ready(2);
        format!("{:?}", net.take_msgs())
    };
    for kind in [RequestPreVote, RequestVote] {
        assert_eq!(ask(&mut net, kind), "[]", "{kind:?} ignored");
        assert_eq!(net.node(2).term(), Term(1));
    }
    net.isolate(2);
    let election = net.node(2).config.election_ticks;
    net.tick(2, election - 1);
    net.process_ready(2);
    net.take_msgs();
    assert_eq!(ask(&mut net, RequestVote), "[]", "still within the election timeout");
    net.tick(2, 1);
    net.process_ready(2);
    net.take_msgs();
    assert_eq!(ask(&mut net, RequestVote), "[2->3 RequestVoteResponse Term:5 Granted]");
}

// ---------------------------------------------------------------------- thesis §6.4 read index

/// Thesis §6.4: a new leader answers a read only once it has committed an entry of its own
/// term (its no-op), and then only after a heartbeat round confirms it still leads.
#[test]
fn thesis_6_4_read_index_waits_for_an_entry_of_the_leaders_term() {
    let mut net = Network::voters(&[1, 2, 3]);
    let mut net_no_lease = Network::new(&[1, 2, 3], no_lease);
    for net in [&mut net, &mut net_no_lease] {
        net.drop_if = Some(Box::new(|m| m.kind == Append));
        net.elect(1);
        assert_eq!(net.node(1).raw.committed(), LogIndex(0));
        net.raw(1).read_index(ctx("r")).unwrap();
        net.stabilize();
        assert!(read_states(net, 1).is_empty(), "no entry of term 1 committed yet");
        assert!(net.sent_where(|m| !m.context.is_empty()).is_empty(), "not even asked yet");
        net.heal();
        net.tick(1, 2);
        net.stabilize();
        assert_eq!(read_states(net, 1), [(1, "r".to_string())]);
    }
    // Without a lease the read took a heartbeat round of its own.
    assert_eq!(
        kinds(&net_no_lease.sent_where(|m| m.context.as_ref() == b"r")),
        [
            (Heartbeat, 1, 2),
            (Heartbeat, 1, 3),
            (HeartbeatResponse, 2, 1),
            (HeartbeatResponse, 3, 1)
        ]
    );
}

/// Thesis §6.4: a read is answered only after a quorum acknowledges a heartbeat sent after it
/// arrived; a later read confirmed by a quorum also confirms the earlier ones.
#[test]
fn thesis_6_4_read_index_needs_a_quorum_heartbeat_round() {
    let mut net = Network::new(&[1, 2, 3], no_lease);
    net.elect(1);
    net.isolate(1);
    net.raw(1).read_index(ctx("a")).unwrap();
    net.stabilize();
    assert_eq!(kinds(&net.dropped), [(Heartbeat, 1, 2), (Heartbeat, 1, 3)]);
    assert!(read_states(&net, 1).is_empty());
    net.heal();
    net.cut(1, 3);
    net.raw(1).read_index(ctx("b")).unwrap();
    net.stabilize();
    assert_eq!(read_states(&net, 1), [(1, "a".to_string()), (1, "b".to_string())]);
}

/// Thesis §6.4: a read whose heartbeat round was lost is still answered once the followers
/// are reachable again, with no further read to carry it (etcd: the periodic heartbeat
/// carries the latest pending read's context).
#[test]
fn thesis_6_4_read_index_survives_a_lost_heartbeat_round() {
    let mut net = Network::new(&[1, 2, 3], no_lease);
    net.elect(1);
    net.isolate(1);
    net.raw(1).read_index(ctx("a")).unwrap();
    net.stabilize();
    net.heal();
    for _ in 0..5 {
        net.tick(1, 2);
        net.stabilize();
    }
    assert_eq!(read_states(&net, 1), [(1, "a".to_string())]);
}

/// Thesis §6.4: the read index is the leader's commit index when the read arrives, not its
/// last index: entries still in flight are not waited for.
#[test]
fn thesis_6_4_read_index_is_the_commit_index() {
    let mut net = Network::new(&[1, 2, 3], no_lease);
    net.elect(1);
    net.propose_and_stabilize(1, "x");
    net.drop_if = Some(Box::new(|m| m.kind == AppendResponse));
    net.propose_and_stabilize(1, "y");
    assert_eq!(
        (net.node(1).raw.committed(), net.node(1).raw.last_index()),
        (LogIndex(2), LogIndex(3))
    );
    net.raw(1).read_index(ctx("r")).unwrap();
    net.stabilize();
    assert_eq!(read_states(&net, 1), [(2, "r".to_string())]);
}

/// Thesis §6.4: a follower's read goes to the leader (ReadIndex), which confirms leadership
/// and answers with ReadIndexResponse; the follower serves it once applied that far.
#[test]
fn thesis_6_4_follower_read_is_forwarded_to_the_leader() {
    for lease in [false, true] {
        let mut net = Network::new(&[1, 2, 3], |c| c.lease_read = lease);
        net.elect(1);
        net.propose_and_stabilize(1, "x");
        let before = net.sent.len();
        net.raw(2).read_index(ctx("f")).unwrap();
        net.stabilize();
        let trace: Vec<String> = net.sent[before..].iter().map(|m| format!("{m:?}")).collect();
        let want: &[&str] = if lease {
            // The leader's lease answers at once.
            &[
                r#"2->1 ReadIndex Term:1 Context:"f""#,
                r#"1->2 ReadIndexResponse Term:1 Index:2 Context:"f""#,
            ]
        } else {
            &[
                r#"2->1 ReadIndex Term:1 Context:"f""#,
                r#"1->2 Heartbeat Term:1 Commit:2 Context:"f""#,
                r#"1->3 Heartbeat Term:1 Commit:2 Context:"f""#,
                r#"2->1 HeartbeatResponse Term:1 Context:"f""#,
                r#"3->1 HeartbeatResponse Term:1 Context:"f""#,
                r#"1->2 ReadIndexResponse Term:1 Index:2 Context:"f""#,
            ]
        };
        assert_eq!(trace, want, "lease {lease}");
        assert_eq!(read_states(&net, 2), [(2, "f".to_string())]);
        assert!(read_states(&net, 1).is_empty());
    }
    // No leader known: refused.
    let mut net = Network::voters(&[1, 2, 3]);
    assert_eq!(
        net.raw(2).read_index(ctx("f")),
        Err(RaftError::NotLeader { leader: ReplicaId::NONE })
    );
}

// ---------------------------------------------------------------------- thesis §6.4.1 leases

/// Thesis §6.4.1: while its lease holds (renewed by the commit of its no-op here), the leader
/// answers a read in the next Ready without any message; the lease lapses `lease_ticks`
/// after the quorum contact that granted it, after which reads take a heartbeat round, whose
/// quorum renews the lease.
#[test]
fn thesis_6_4_1_lease_read_answered_at_once_until_the_lease_lapses() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    assert!(net.node(1).raw.raft().lease_valid());
    net.raw(1).read_index(ctx("a")).unwrap();
    let ready = net.raw(1).ready();
    assert_eq!(ready.read_states, [ReadState { index: LogIndex(1), context: ctx("a") }]);
    assert!(ready.messages.is_empty());
    net.raw(1).advance(&ready);

    net.isolate(1);
    let lease = net.node(1).config.lease_ticks;
    net.tick(1, lease - 1);
    net.stabilize();
    assert!(net.node(1).raw.raft().lease_valid());
    net.tick(1, 1);
    net.stabilize();
    assert!(!net.node(1).raw.raft().lease_valid(), "lapsed after lease_ticks");
    net.raw(1).read_index(ctx("b")).unwrap();
    net.stabilize();
    assert!(read_states(&net, 1).is_empty(), "no lease, no quorum: no answer");

    net.heal();
    net.raw(1).read_index(ctx("c")).unwrap();
    net.stabilize();
    assert_eq!(read_states(&net, 1), [(1, "b".to_string()), (1, "c".to_string())]);
    assert!(net.node(1).raw.raft().lease_valid(), "the read's quorum renewed the lease");
}

/// Thesis §3.10 / §6.4.1: a leader handing over leadership gives up its lease at once (the
/// transferee may be elected before it would expire); reads need a quorum round meanwhile.
#[test]
fn thesis_6_4_1_no_lease_reads_during_a_transfer() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.stabilize();
    assert!(!net.node(1).raw.raft().lease_valid());
    net.raw(1).read_index(ctx("r")).unwrap();
    let ready = net.raw(1).ready();
    assert!(ready.read_states.is_empty());
    assert_eq!(kinds(&ready.messages), [(Heartbeat, 1, 2), (Heartbeat, 1, 3)]);
    net.raw(1).advance(&ready);
    for m in ready.messages {
        net.send(m);
    }
    net.stabilize();
    assert_eq!(read_states(&net, 1), [(1, "r".to_string())], "confirmed by node 2");
    assert!(!net.node(1).raw.raft().lease_valid());
}

/// Thesis §6.4.1: a node that restarts refuses votes for an election timeout, since it may
/// have acknowledged a leader's lease just before crashing.
#[test]
fn thesis_6_4_1_restarted_node_refuses_votes_for_an_election_timeout() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.crash(2);
    net.restart(2);
    let ask = |net: &mut Network| {
        net.raw(2).step(vote_request(RequestVote, 3, 2, 5, (1, 1))).unwrap();
        net.process_ready(2);
        format!("{:?}", net.take_msgs())
    };
    assert_eq!(ask(&mut net), "[]");
    let election = net.node(2).config.election_ticks;
    net.isolate(2);
    net.tick(2, election - 1);
    net.process_ready(2);
    net.take_msgs();
    assert_eq!(ask(&mut net), "[]");
    net.tick(2, 1);
    net.process_ready(2);
    net.take_msgs();
    assert_eq!(ask(&mut net), "[2->3 RequestVoteResponse Term:5 Granted]");
}

/// Thesis §6.4.1: the same for a node whose promise was never backed by a durable term. Node
/// 4 has persisted nothing (its Readys are held) when it would crash, restart with term 0
/// and — not considered restarted — vote at once for a candidate of the other side. A
/// heartbeat answer counts toward the lease, so it leaves only once its term is durable:
/// node 4 never helps grant the lease, and the old leader never serves a stale read.
#[test]
fn thesis_6_4_1_fresh_node_restart_keeps_its_lease_promise() {
    let mut net = Network::voters(&[1, 2, 3, 4, 5]);
    net.set_hold(4, true);
    net.elect(1);
    // Tick T: the no-op commit granted a lease until T + 8. 3 and 5 hear nothing from now on.
    net.partition(&[&[1, 2, 4], &[3, 5]]);
    let lease = net.node(1).config.lease_ticks;
    net.tick_all(lease);
    assert!(!net.node(1).raw.raft().lease_valid());
    // T + 8: a read round confirmed by 1, 2 and 4 renews the lease until T + 16.
    net.raw(1).read_index(ctx("r1")).unwrap();
    net.stabilize();
    assert_eq!(read_states(&net, 1).len(), 0, "4's answer waits for its term to be durable");
    assert!(!net.node(1).raw.raft().lease_valid());
    // T + 10: 3 and 5 are past their election timeout; 4 crashes and restarts with term 0.
    net.tick_all(2);
    net.crash(4);
    net.restart(4);
    net.partition(&[&[1, 2], &[3, 4, 5]]);
    net.campaign(3);
    assert_eq!(net.node(3).role(), Role::Leader, "elected by 4 and 5");
    net.propose_and_stabilize(3, "w");
    let w = net.node(3).raw.committed().0;
    assert!(!net.node(1).raw.raft().lease_valid(), "node 1 was never granted a lease");
    net.raw(1).read_index(ctx("r2")).unwrap();
    net.stabilize();
    for (index, context) in read_states(&net, 1) {
        assert!(context != "r2" || index >= w, "stale lease read at {index}; w committed at {w}");
    }
}

/// Thesis §6.4.1: a TimeoutNow that arrives late, after the transfer was abandoned, elects
/// the transferee (its votes override leases). The old leader must not be serving lease
/// reads then: a leader that attempted a transfer in its term never uses its lease again in
/// that term, so its reads go through ReadIndex and cannot be stale.
#[test]
fn thesis_6_4_1_late_timeout_now_cannot_break_a_renewed_lease() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.process_ready(1);
    let timeout_now = net.take_msgs();
    assert_eq!(kinds(&timeout_now), [(TimeoutNow, 1, 3)]);
    let election = net.node(1).config.election_ticks;
    for _ in 0..election {
        net.tick(1, 1);
        net.stabilize();
    }
    assert_eq!(net.node(1).raw.raft().lead_transferee(), ReplicaId::NONE, "abandoned");
    net.propose_and_stabilize(1, "w0");
    assert!(!net.node(1).raw.raft().lease_valid(), "no lease after a transfer attempt");
    // The old TimeoutNow finally arrives, while 1 is cut off.
    net.isolate(1);
    for m in timeout_now {
        net.raw(3).step(m).unwrap();
    }
    net.stabilize();
    assert_eq!(
        (net.node(3).role(), net.node(3).term()),
        (Role::Leader, Term(2)),
        "elected with 2's vote"
    );
    net.propose_and_stabilize(3, "w1");
    let w1_index = net.node(3).raw.committed().0;
    // Any read 1 answers now must include w1.
    assert!(!net.node(1).raw.raft().lease_valid());
    net.raw(1).read_index(ctx("r")).unwrap();
    net.stabilize();
    for (index, _) in read_states(&net, 1) {
        assert!(index >= w1_index, "stale lease read at {index}, w1 committed at {w1_index}");
    }
}

// ---------------------------------------------------------------------- the Ready contract

/// Ready contract (lib.rs; thesis §10.2.1): vote and append answers vouch for durable state,
/// so they come only in `persisted_messages`, with the hard state or entries they vouch for;
/// a candidate's own vote requests wait for its new term and self-vote too. Pre-vote answers
/// vouch for nothing and may leave at once.
#[test]
fn ready_vote_and_append_answers_wait_for_persistence() {
    let mut raw = standalone(1, store(&[1, 2, 3], &log_of(&[1]), 1), plain);
    raw.step(vote_request(RequestVote, 2, 1, 2, (1, 1))).unwrap();
    let ready = sync_ready(&mut raw);
    assert!(ready.messages.is_empty());
    assert_eq!(
        format!("{:?}", ready.persisted_messages),
        "[1->2 RequestVoteResponse Term:2 Granted]"
    );
    assert_eq!(
        ready.hard_state,
        Some(HardState { term: Term(2), vote: rid(2), commit: LogIndex(0) })
    );
    assert!(ready.must_sync());

    raw.step(append(2, 1, 2, (1, 1), &[entry(2, 2)], 0)).unwrap();
    let ready = sync_ready(&mut raw);
    assert!(ready.messages.is_empty());
    assert_eq!(format!("{:?}", ready.entries), "[2/2]");
    assert_eq!(format!("{:?}", ready.persisted_messages), "[1->2 AppendResponse Term:2 Match:2]");

    raw.step(append(2, 1, 2, (5, 5), &[], 0)).unwrap();
    let ready = sync_ready(&mut raw);
    assert!(ready.messages.is_empty(), "a refusal is an append answer too");
    assert_eq!(ready.persisted_messages.len(), 1);

    raw.step(vote_request(RequestPreVote, 3, 1, 3, (2, 2))).unwrap();
    let ready = sync_ready(&mut raw);
    assert_eq!(format!("{:?}", ready.messages), "[1->3 RequestPreVoteResponse Term:3 Granted]");
    assert!(ready.persisted_messages.is_empty() && ready.hard_state.is_none());

    raw.campaign();
    let ready = sync_ready(&mut raw);
    assert!(ready.messages.is_empty());
    assert_eq!(kinds(&ready.persisted_messages), [(RequestVote, 1, 2), (RequestVote, 1, 3)]);
    assert_eq!(
        ready.hard_state,
        Some(HardState { term: Term(3), vote: rid(1), commit: LogIndex(0) })
    );
}

/// Ready contract: the commit index is volatile (§5), so a Ready that only moves it needs no
/// fsync; one handing out a membership change for apply carries the hard state and must
/// sync it (membership takes effect on apply, and a restart must not find an older commit).
#[test]
fn ready_syncs_a_commit_only_when_it_applies_a_membership_change() {
    let mut raw = standalone(1, store(&[1, 2], &log_of(&[1]), 1), plain);
    raw.step(append(2, 1, 1, (1, 1), &[entry(1, 2)], 0)).unwrap();
    let ready = sync_ready(&mut raw);
    assert!(ready.must_sync(), "new entries are synced");

    raw.step(append(2, 1, 1, (1, 2), &[], 2)).unwrap();
    let ready = sync_ready(&mut raw);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    assert_eq!(ready.committed_entries.len(), 2);
    assert!(!ready.must_sync(), "a new commit index alone rides unsynced");

    let change = steps(&[ConfChangeStep::AddLearner(rid(3))], false);
    let conf_entry = Entry {
        term: Term(1),
        index: LogIndex(3),
        kind: EntryKind::ConfChange,
        data: tessera_wire::raft::encode_conf_change(&change),
    };
    raw.step(append(2, 1, 1, (1, 2), &[conf_entry], 2)).unwrap();
    assert!(sync_ready(&mut raw).must_sync());
    raw.step(append(2, 1, 1, (1, 3), &[], 3)).unwrap();
    let ready = raw.ready();
    assert_eq!(ready.committed_entries.last().map(|e| e.kind), Some(EntryKind::ConfChange));
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(3)));
    assert!(ready.must_sync(), "the commit covering an applied membership change is synced");
}

/// Ready contract: the leader counts itself toward a commit only for entries acknowledged
/// through `on_persist_ready`, Ready by Ready.
#[test]
fn ready_leader_counts_its_own_entries_only_once_persisted() {
    let mut raw = standalone(1, store(&[1], &[], 0), |_| {});
    let write = |raw: &mut RawNode<MemStorage>, ready: &Ready| {
        raw.store_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            raw.store_mut().set_hard_state(hs);
        }
    };
    raw.campaign();
    // A group of one leads once its term and self-vote are durable.
    while raw.raft().role() != Role::Leader {
        let ready = raw.ready();
        write(&mut raw, &ready);
        raw.on_persist_ready(ready.number);
    }
    let first = raw.ready();
    assert_eq!(format!("{:?}", first.entries), "[1/1]");
    write(&mut raw, &first);
    assert!(!raw.has_ready());
    assert_eq!(raw.committed(), LogIndex(0));
    raw.propose(ctx("x")).unwrap();
    let second = raw.ready();
    write(&mut raw, &second);
    raw.on_persist_ready(first.number);
    assert_eq!(raw.committed(), LogIndex(1), "only the first Ready is durable");
    let third = raw.ready();
    assert_eq!(format!("{:?}", third.committed_entries), "[1/1]");
    raw.advance_apply();
    raw.on_persist_ready(second.number);
    assert_eq!(raw.committed(), LogIndex(2));
    let fourth = raw.ready();
    assert_eq!(format!("{:?}", fourth.committed_entries), r#"[1/2 "x"]"#);
}

/// Ready contract and §5.3 Log Matching: a group of one wins its election on its own vote,
/// but leads only once that vote and term are durable. Otherwise it could send a learner
/// entries of a term it then loses in a crash, lead the same term again after restarting,
/// and write different entries at the same index and term: the learner would apply the old
/// ones.
#[test]
fn ready_group_of_one_leads_only_on_a_durable_term() {
    let cs = ConfState { voters: rids(&[1]), learners: rids(&[2]), ..ConfState::default() };
    let mut net = Network::empty();
    net.add_node(config(1), cs.clone());
    net.add_node(config(2), cs);
    net.warm_up();
    net.set_hold(1, true);
    net.raw(1).campaign();
    net.stabilize();
    let _ = net.raw(1).propose(ctx("a"));
    net.stabilize();
    net.crash(1); // with nothing persisted
    net.restart(1);
    net.elect(1);
    assert_eq!(net.node(1).term(), Term(1));
    net.propose_and_stabilize(1, "b");
    net.tick_all(2);
    assert_eq!(net.node(1).sm.strings(), ["b"]);
    assert_eq!(net.node(2).sm.strings(), ["b"], "the learner applied what the leader applied");
}

/// Ready contract (thesis §10.2.1): the leader may replicate before its own write is durable;
/// a majority of followers commits without it, but the leader applies only what it has
/// persisted, and without that majority its own write is needed.
#[test]
fn ready_leader_with_asynchronous_persistence() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.set_hold(1, true);
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(1).raw.committed(), LogIndex(2), "2 and 3 are a majority");
    assert!(net.node(1).sm.strings().is_empty(), "not durable on the leader yet");
    assert_eq!(net.node(2).sm.strings(), ["x"]);
    net.persist(1);
    net.stabilize();
    assert_eq!(net.node(1).sm.strings(), ["x"]);

    net.isolate(3);
    net.propose_and_stabilize(1, "y");
    assert_eq!(net.node(1).raw.committed(), LogIndex(2), "needs the leader's own write");
    net.persist(1);
    net.stabilize();
    assert_eq!(net.node(1).raw.committed(), LogIndex(3));
    assert_eq!(net.node(1).sm.strings(), ["x", "y"]);
}

/// Ready contract: a follower may learn that entries are committed before it has persisted
/// them; it hands them out for apply only once they are durable locally, and acknowledges
/// them only then.
#[test]
fn ready_follower_applies_and_acknowledges_only_durable_entries() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.set_hold(2, true);
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(2).raw.committed(), LogIndex(2));
    assert!(net.node(2).sm.strings().is_empty());
    assert!(
        net.sent_where(|m| m.kind == AppendResponse && m.from == rid(2) && m.index == LogIndex(2))
            .is_empty()
    );
    net.persist(2);
    net.stabilize();
    assert_eq!(net.node(2).sm.strings(), ["x"]);
    assert!(
        !net.sent_where(|m| m.kind == AppendResponse && m.from == rid(2) && m.index == LogIndex(2))
            .is_empty()
    );
}

/// Ready contract: a node that crashes with Readys not yet persisted loses them; it had not
/// acknowledged them, so nothing committed is lost.
#[test]
fn ready_crash_loses_only_unacknowledged_state() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.set_hold(2, true);
    net.set_hold(3, true);
    net.propose_and_stabilize(1, "x");
    assert_eq!(net.node(1).raw.committed(), LogIndex(1), "nobody acknowledged");
    net.crash(2);
    net.restart(2);
    assert_eq!(net.node(2).raw.last_index(), LogIndex(1), "the unpersisted entry is gone");
    net.persist(3);
    net.stabilize();
    net.set_hold(3, false);
    net.tick_all(2);
    for id in 1..=3 {
        assert_eq!(net.node(id).sm.strings(), ["x"], "node {id}");
    }
}

// ---------------------------------------------------------------------- quiescence

/// Quiescence: the leader puts an idle group to sleep only when every follower has the whole
/// log; asleep, nobody heartbeats or campaigns however long they are ticked.
#[test]
fn quiesce_only_when_every_follower_is_caught_up() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.propose_and_stabilize(1, "x");
    assert!(!net.raw(1).quiesce(&[]), "3 lacks x");
    net.heal();
    net.tick_all(2);
    assert!(net.raw(1).quiesce(&[]));
    let before = net.sent.len();
    net.stabilize();
    let sent: Vec<String> = net.sent[before..].iter().map(|m| format!("{m:?}")).collect();
    assert_eq!(
        sent,
        ["1->2 Heartbeat Term:1 Commit:2 Quiesce", "1->3 Heartbeat Term:1 Commit:2 Quiesce"]
    );
    for id in 1..=3 {
        assert!(net.node(id).raw.is_quiesced(), "node {id}");
    }
    assert!(!net.node(1).raw.raft().lease_valid(), "a sleeping leader gives up its lease");
    let before = net.sent.len();
    net.tick_all(200);
    assert_eq!(net.sent.len(), before, "silence");
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.leaders.len(), 1);
}

/// Quiescence: followers the caller lists as unreachable are not waited for (nor sent the
/// quiesce heartbeat).
#[test]
fn quiesce_skips_unreachable_followers() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.propose_and_stabilize(1, "x");
    assert!(net.raw(1).quiesce(&[rid(3)]));
    net.process_ready(1);
    assert_eq!(kinds(&net.in_flight), [(Heartbeat, 1, 2)]);
    net.stabilize();
    assert!(net.node(2).raw.is_quiesced());
    assert!(!net.node(3).raw.is_quiesced());
}

/// Quiescence: any message, proposal, read or transfer wakes a node.
#[test]
fn quiesce_any_message_or_proposal_wakes() {
    let asleep = || {
        let mut net = Network::voters(&[1, 2, 3]);
        net.elect(1);
        assert!(net.raw(1).quiesce(&[]));
        net.stabilize();
        net
    };
    // A proposal wakes the leader; its Append wakes the followers.
    let mut net = asleep();
    net.propose_and_stabilize(1, "x");
    for id in 1..=3 {
        assert!(!net.node(id).raw.is_quiesced(), "node {id}");
        assert_eq!(net.node(id).sm.strings(), ["x"]);
    }
    // A follower read wakes the follower and, through ReadIndex, the leader.
    let mut net = asleep();
    net.raw(2).read_index(ctx("r")).unwrap();
    assert!(!net.node(2).raw.is_quiesced());
    net.stabilize();
    assert!(!net.node(1).raw.is_quiesced());
    assert_eq!(read_states(&net, 2).len(), 1);
    // A leader read and a transfer wake the leader.
    let mut net = asleep();
    net.raw(1).read_index(ctx("r")).unwrap();
    assert!(!net.node(1).raw.is_quiesced());
    let mut net = asleep();
    net.raw(1).transfer_leader(rid(2)).unwrap();
    assert!(!net.node(1).raw.is_quiesced());
    net.stabilize();
    assert_eq!(net.node(2).role(), Role::Leader);
    // Any message wakes a follower, and `wake` too.
    let mut net = asleep();
    net.deliver_msg(vote_request(RequestPreVote, 3, 2, 2, (1, 1)));
    assert!(!net.node(2).raw.is_quiesced());
    net.raw(3).wake();
    assert!(!net.node(3).raw.is_quiesced());
}

/// Quiescence: a woken follower ticks again and, if the leader stays silent, campaigns.
#[test]
fn quiesce_woken_follower_campaigns_if_the_leader_is_gone() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    assert!(net.raw(1).quiesce(&[]));
    net.stabilize();
    net.crash(1);
    net.tick_all(100);
    assert!(net.leader().is_none(), "asleep: nobody notices");
    net.raw(2).wake();
    net.raw(3).wake();
    net.tick_all(50);
    assert!(net.leader().is_some_and(|l| l != 1));
}

/// Quiescence: a follower that gets the quiesce heartbeat while it is not caught up does not
/// sleep; it answers, and the answer wakes the leader, which repairs it.
#[test]
fn quiesce_follower_not_caught_up_answers_and_wakes_the_leader() {
    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.propose_and_stabilize(1, "x");
    net.heal();
    assert!(net.raw(1).quiesce(&[rid(3)]));
    net.process_ready(1);
    let mut to_3 = net.in_flight[0].clone();
    assert!(to_3.quiesce);
    to_3.to = rid(3);
    net.stabilize();
    assert!(net.node(1).raw.is_quiesced());
    net.deliver_msg(to_3);
    assert!(!net.node(3).raw.is_quiesced());
    net.process_ready(3);
    assert_eq!(kinds(&net.in_flight), [(HeartbeatResponse, 3, 1)]);
    net.stabilize();
    assert!(!net.node(1).raw.is_quiesced(), "the answer woke the leader");
    assert_eq!(net.node(3).sm.strings(), ["x"]);
}

/// Quiescence: a group is not put to sleep with work outstanding: uncommitted entries,
/// pending reads, a transfer, a joint configuration.
#[test]
fn quiesce_refused_while_busy() {
    let mut net = Network::new(&[1, 2, 3], no_lease);
    net.elect(1);
    net.isolate(1);
    net.propose(1, "x");
    net.stabilize();
    assert!(!net.raw(1).quiesce(&[rid(2), rid(3)]), "uncommitted entry");

    let mut net = Network::new(&[1, 2, 3], no_lease);
    net.elect(1);
    net.isolate(1);
    net.raw(1).read_index(ctx("r")).unwrap();
    net.stabilize();
    assert!(!net.raw(1).quiesce(&[rid(2), rid(3)]), "pending read");

    let mut net = Network::voters(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.raw(1).transfer_leader(rid(3)).unwrap();
    net.stabilize();
    assert!(!net.raw(1).quiesce(&[rid(3)]), "transfer");

    let mut net = Network::voters(&[1, 2, 3]);
    add_fresh_node(&mut net, 4, &[1, 2, 3], |_| {});
    net.elect(1);
    net.raw(1).propose_conf_change(&steps(&[ConfChangeStep::AddVoter(rid(4))], true)).unwrap();
    net.stabilize();
    net.tick_all(2);
    assert!(!net.raw(1).quiesce(&[]), "joint configuration");
}

// ---------------------------------------------------------------------- §5.3 fast backtracking

/// §5.3 (the optimization at the end of the section; thesis §3.5): a follower refusing an
/// Append points the leader at its last entry of a term no greater than the leader's
/// (reject_hint, log_term), and the leader skips every entry of a conflicting term at once.
/// Long divergent or missing suffixes are repaired in one or two round trips, not one per
/// entry.
#[test]
fn s5_3_fast_backtracking_repairs_long_divergent_logs() {
    let repeat = |parts: &[(u64, usize)]| -> Vec<u64> {
        parts.iter().flat_map(|&(t, n)| std::iter::repeat_n(t, n)).collect()
    };
    let cases = [
        // A long suffix of a term the leader never saw.
        (repeat(&[(1, 5), (3, 50)]), repeat(&[(1, 5), (2, 100)]), 1),
        // A follower far behind.
        (repeat(&[(1, 5), (3, 50)]), repeat(&[(1, 5)]), 1),
        // Both sides with several terms.
        (repeat(&[(1, 3), (2, 10), (5, 40)]), repeat(&[(1, 3), (2, 5), (4, 60)]), 2),
    ];
    for (leader_log, follower_log, max_rejects) in cases {
        let mut net = Network::empty();
        let top = *leader_log.last().unwrap();
        net.add_node_with_store(config(1), store(&[1, 2, 3], &log_of(&leader_log), top));
        net.add_node_with_store(config(2), store(&[1, 2, 3], &log_of(&leader_log), top));
        let follower_top = *follower_log.last().unwrap();
        net.add_node_with_store(config(3), store(&[1, 2, 3], &log_of(&follower_log), follower_top));
        net.warm_up();
        net.elect(1);
        let rejects =
            net.sent_where(|m| m.kind == AppendResponse && m.reject && m.from == rid(3)).len();
        assert!(
            rejects <= max_rejects,
            "{rejects} refusals, {} appends",
            net.sent_where(|m| m.kind == Append && m.to == rid(3)).len()
        );
        assert_eq!(terms(&net.node(3).raw), terms(&net.node(1).raw));
    }
}

// ---------------------------------------------------------------------- flow control

/// Flow control (thesis §10.2.1 pipelining): a leader pipelines at most `inflight_msgs_max`
/// Appends to a follower that does not answer, while others keep receiving everything.
#[test]
fn inflight_window_bounds_appends_to_a_silent_follower() {
    let mut net = Network::new(&[1, 2, 3], |c| c.inflight_msgs_max = 3);
    net.elect(1);
    net.drop_if = Some(Box::new(|m| m.kind == AppendResponse && m.from == rid(2)));
    let before = net.sent.len();
    for i in 0..10 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    let appends_to = |to: u64| {
        net.sent[before..]
            .iter()
            .filter(|m| m.kind == Append && m.to == rid(to) && !m.entries.is_empty())
            .count()
    };
    assert_eq!(appends_to(2), 3);
    assert_eq!(appends_to(3), 10);
    assert_eq!(net.node(3).sm.strings().len(), 10);
}

/// Flow control: the window is also bounded in bytes (`inflight_bytes_max`).
#[test]
fn inflight_window_bounds_bytes() {
    let mut net = Network::new(&[1, 2, 3], |c| c.inflight_bytes_max = 100);
    net.elect(1);
    net.drop_if = Some(Box::new(|m| m.kind == AppendResponse && m.from == rid(2)));
    let before = net.sent.len();
    for _ in 0..5 {
        net.propose_and_stabilize(1, &"x".repeat(50)); // 74 bytes each
    }
    let appends = net.sent[before..]
        .iter()
        .filter(|m| m.kind == Append && m.to == rid(2) && !m.entries.is_empty())
        .count();
    assert_eq!(appends, 2, "the second one reaches the byte bound");
}

/// Flow control: when Appends in a full window are lost, the heartbeat round lets
/// replication resume (a heartbeat answer frees one slot, as in etcd) and the follower
/// catches up. (Regression: freeing up to `matched` freed nothing and stalled it forever.)
#[test]
fn inflight_window_recovers_after_lost_appends() {
    let mut net = Network::new(&[1, 2, 3], |c| c.inflight_msgs_max = 3);
    net.elect(1);
    net.drop_if = Some(Box::new(|m| m.kind == Append && m.to == rid(2)));
    for i in 0..5 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    net.heal();
    net.tick_all(20);
    assert_eq!(net.node(2).sm.strings().len(), 5);
}

/// Flow control: `report_unreachable` drops a follower back to probing, which empties the
/// window; the next heartbeat answer resumes replication.
#[test]
fn report_unreachable_resets_the_window() {
    let mut net = Network::new(&[1, 2, 3], |c| c.inflight_msgs_max = 3);
    net.elect(1);
    net.drop_if = Some(Box::new(|m| m.kind == Append && m.to == rid(2)));
    for i in 0..5 {
        net.propose_and_stabilize(1, &format!("v{i}"));
    }
    net.heal();
    net.raw(1).report_unreachable(rid(2));
    net.tick_all(4);
    assert_eq!(net.node(2).sm.strings().len(), 5);
}

/// Backpressure: the leader refuses proposals with UncommittedLogFull once the uncommitted
/// tail would exceed `uncommitted_bytes_max` (one entry is always accepted), and accepts them
/// again once the tail commits.
#[test]
fn backpressure_uncommitted_log_full() {
    let mut net = Network::new(&[1, 2, 3], |c| c.uncommitted_bytes_max = 100);
    net.elect(1);
    net.isolate(1);
    let ten = "0123456789"; // 34 bytes with the header
    net.propose(1, ten);
    net.propose(1, ten);
    assert_eq!(net.raw(1).propose(ctx(ten)), Err(RaftError::UncommittedLogFull));
    net.heal();
    net.tick_all(2);
    assert_eq!(net.node(2).sm.strings(), [ten, ten]);
    net.propose(1, &"x".repeat(500));
    assert_eq!(
        net.raw(1).propose(ctx("x")),
        Err(RaftError::UncommittedLogFull),
        "one big entry fills it"
    );
    net.stabilize();
    net.propose(1, ten);
}

// ---------------------------------------------------------------------- randomized schedules

/// §5.1 (terms only grow), §5.2 (Election Safety), §5.3 (Log Matching), §5.4.3 (State
/// Machine Safety), thesis §6.4 (linearizable reads), and liveness once the network heals:
/// random schedules of ticks, partial delivery, reordering, loss, partitions, crashes,
/// asynchronous persistence, proposals, reads, transfers and compaction. The harness checks
/// the Ready contract and a leader's commit durability on every Ready.
#[test]
fn randomized_schedules_keep_raft_safe() {
    for seed in 0..random_seeds(40) {
        random_schedule(seed, 1500, false);
    }
}

/// How many seeds to run: `RAFT_RANDOM_SEEDS` overrides the default, for deeper runs.
fn random_seeds(default: u64) -> u64 {
    std::env::var("RAFT_RANDOM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The same with membership changes (thesis §4.3): voters added, removed, demoted and
/// promoted through joint configurations, learners, auto and explicit leave.
#[test]
fn randomized_membership_changes_keep_raft_safe() {
    for seed in 0..random_seeds(30) {
        random_schedule(1_000_000 + seed, 2000, true);
    }
}

fn random_schedule(seed: u64, step_count: usize, membership: bool) {
    if std::env::var("RAFT_VERBOSE").is_ok() {
        eprintln!("random schedule seed {seed}");
    }
    let mut rng = SplitMix64::new(seed);
    let n = if membership || seed % 2 == 1 { 5 } else { 3 };
    let ids: Vec<u64> = (1..=n).collect();
    let flags = rng.next_u64();
    let tweak = |c: &mut Config| {
        c.pre_vote = flags & 1 == 0;
        c.check_quorum = flags & 2 == 0;
        c.lease_read = c.check_quorum && flags & 4 == 0;
        c.election_ticks = 5;
        c.heartbeat_ticks = 1 + u32::try_from(flags >> 8 & 1).unwrap();
        c.lease_ticks = 3;
        c.inflight_msgs_max = 1 + usize::try_from(flags >> 16 & 7).unwrap();
        c.seed = seed_for(c.id.0, 5);
    };
    let mut net = if membership {
        // 1, 2, 3 vote; 4 and 5 start outside the group, with its initial membership.
        let mut net = Network::empty();
        for &id in &ids {
            let mut config = config(id);
            tweak(&mut config);
            net.add_node(config, conf(&[1, 2, 3]));
        }
        net.warm_up();
        net
    } else {
        Network::new(&ids, tweak)
    };
    net.report_snapshots = true;
    if std::env::var("RAFT_TRACE_SEED").is_ok_and(|s| s == seed.to_string()) {
        net.trace = Some(String::new());
    }
    let mut removed: Vec<u64> = Vec::new();
    let mut terms: std::collections::BTreeMap<u64, Term> =
        ids.iter().map(|&id| (id, Term(0))).collect();
    let mut known_commit = LogIndex(0);
    let mut reads: std::collections::BTreeMap<Bytes, LogIndex> = std::collections::BTreeMap::new();
    let mut seen_reads: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    let mut proposals = 0;
    let pick = |rng: &mut SplitMix64, n: u64| rng.range(1, n + 1);
    for step in 0..step_count {
        let live: Vec<u64> = net.nodes.keys().copied().collect();
        let id = live[usize::try_from(rng.range(0, live.len() as u64)).unwrap()];
        let roll = if membership && rng.range(0, 20) == 0 { 99 } else { rng.range(0, 99) };
        match roll {
            0..=14 => net.tick(id, 1),
            15..=39 => {
                net.process_ready(id);
            }
            40..=74 if !net.in_flight.is_empty() => {
                let i = usize::try_from(rng.range(0, net.in_flight.len() as u64)).unwrap();
                let m = net.in_flight.remove(i);
                net.deliver_msg(m);
            }
            75..=76 if !net.in_flight.is_empty() => {
                let i = usize::try_from(rng.range(0, net.in_flight.len() as u64)).unwrap();
                let m = net.in_flight.remove(i);
                net.drop_msg(m);
            }
            77..=83 => {
                if let Some(leader) = net.leader() {
                    proposals += 1;
                    let _ = net.raw(leader).propose(Bytes::from(format!("s{seed}p{proposals}")));
                }
            }
            84..=85 => {
                let other = pick(&mut rng, n);
                if other != id {
                    net.cut(id, other);
                }
            }
            86..=87 => net.heal(),
            88 => {
                if net.nodes.len() > 1 {
                    net.crash(id);
                }
            }
            89..=90 => {
                let down: Vec<u64> = ids.iter().copied().filter(|&i| net.is_down(i)).collect();
                if let Some(&d) = down.first() {
                    net.restart(d);
                    terms.insert(d, net.node(d).term());
                }
            }
            91..=93 => {
                let context = Bytes::from(format!("r{step}"));
                if net.raw(id).read_index(context.clone()).is_ok() {
                    reads.insert(context, known_commit);
                }
            }
            94 => {
                let _ = net.raw(id).transfer_leader(rid(pick(&mut rng, n)));
            }
            99 if membership => {
                let Some(id) = net.leader() else { continue };
                let target = pick(&mut rng, n);
                let step = match rng.range(0, 4) {
                    0 | 1 => ConfChangeStep::AddVoter(rid(target)),
                    2 => ConfChangeStep::AddLearner(rid(target)),
                    _ => ConfChangeStep::Remove(rid(target)),
                };
                let cc = if rng.range(0, 5) == 0 {
                    ConfChange::default()
                } else {
                    steps(&[step], rng.range(0, 3) == 0)
                };
                // Replica ids are never reused: a removed replica is never added back.
                if !removed.contains(&target)
                    && net.raw(id).propose_conf_change(&cc).is_ok()
                    && let ConfChangeStep::Remove(r) = step
                {
                    removed.push(r.0);
                }
            }
            95..=96 => {
                let hold = !net.node(id).hold;
                net.set_hold(id, hold);
            }
            97 => net.persist(id),
            _ => {
                let applied = net.node(id).sm.index();
                if applied >= net.node(id).raw.store().first_index() {
                    net.compact(id, applied);
                }
            }
        }
        for (&id, node) in &net.nodes {
            let term = terms.entry(id).or_default();
            assert!(node.term() >= *term, "seed {seed}: node {id}'s term went back");
            *term = node.term();
            known_commit = known_commit.max(node.raw.committed());
            let seen = seen_reads.entry(id).or_default();
            for rs in &node.read_states[(*seen).min(node.read_states.len())..] {
                let floor = reads.get(&rs.context).copied().unwrap_or_default();
                assert!(
                    rs.index >= floor,
                    "seed {seed}: stale read {rs:?}, {floor} was committed before it"
                );
            }
            *seen = node.read_states.len();
        }
        net.check_safety();
    }
    // Heal everything: a leader emerges and a new proposal reaches every node.
    net.heal();
    for id in ids.clone() {
        if net.is_down(id) {
            net.restart(id);
        } else {
            net.set_hold(id, false);
        }
    }
    // A proposal may be lost to a leader change; retry until one is applied everywhere.
    for attempt in 0..20 {
        let final_value = format!("final{attempt}");
        let Some(leader) = (0..100).find_map(|_| {
            net.tick_all(1);
            net.leader().filter(|&l| net.raw(l).propose(Bytes::from(final_value.clone())).is_ok())
        }) else {
            continue;
        };
        net.tick_all(30);
        let cs = net.node(leader).raw.conf_state();
        let mut members = cs
            .voters
            .iter()
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners)
            .chain(&cs.learners_next);
        if members.all(|id| net.node(id.0).sm.strings().last() == Some(&final_value)) {
            return;
        }
    }
    let statuses: Vec<String> = net.nodes.values().map(Node::status).collect();
    panic!("seed {seed}: no progress after healing:\n{}", statuses.join("\n"));
}
