//! Every check fed a fabricated violation (a checker that cannot fail is worthless) and the
//! matching good history.

use super::*;

fn entry(index: u64, term: u64, data: &str) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn property<T: fmt::Debug>(result: Result<T, Violation>) -> Property {
    result.expect_err("the fabricated history must be reported").property
}

const A: ReplicaId = ReplicaId(1);
const B: ReplicaId = ReplicaId(2);
const C: ReplicaId = ReplicaId(3);

/// A checker where A applied 1/1 "k=a" and 2/1 "k=b".
fn with_two_applied() -> Checker {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    checker.on_apply(A, LogIndex(0), &entry(1, 1, "k=a")).unwrap();
    checker.on_apply(A, LogIndex(1), &entry(2, 1, "k=b")).unwrap();
    checker
}

#[test]
fn election_safety_two_leaders_in_one_term() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    let none = |_: LogIndex| None;
    checker.on_leader(A, Term(3), (LogIndex(0), Term(0)), &none).unwrap();
    // The same node again (after a restart) is allowed, another one is not.
    checker.on_leader(A, Term(3), (LogIndex(0), Term(0)), &none).unwrap();
    assert_eq!(
        property(checker.on_leader(B, Term(3), (LogIndex(0), Term(0)), &none)),
        Property::ElectionSafety
    );
    checker.on_leader(B, Term(4), (LogIndex(0), Term(0)), &none).unwrap();
    assert_eq!(checker.elections(), 2);
}

#[test]
fn log_matching_same_index_and_term_different_data() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    checker
        .on_append(A, (LogIndex(0), Term(0)), &[entry(1, 1, "k=a"), entry(2, 1, "k=b")])
        .unwrap();
    checker.on_append(B, (LogIndex(1), Term(1)), &[entry(2, 1, "k=b")]).unwrap();
    assert_eq!(
        property(checker.on_append(C, (LogIndex(1), Term(1)), &[entry(2, 1, "k=X")])),
        Property::LogMatching
    );
}

#[test]
fn log_matching_same_entry_after_a_different_prefix() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    checker.on_append(A, (LogIndex(4), Term(2)), &[entry(5, 3, "k=a")]).unwrap();
    assert_eq!(
        property(checker.on_append(B, (LogIndex(4), Term(1)), &[entry(5, 3, "k=a")])),
        Property::LogMatching
    );
}

#[test]
fn log_matching_gap_inside_an_append() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    assert_eq!(
        property(checker.on_append(
            A,
            (LogIndex(0), Term(0)),
            &[entry(1, 1, "k=a"), entry(3, 1, "k=b")]
        )),
        Property::LogMatching
    );
}

#[test]
fn leader_completeness_missing_committed_entry() {
    let mut checker = with_two_applied();
    checker.on_leader_commit(Term(1), LogIndex(2));
    // B's log has entry 1 but a different term at 2.
    let log = |index: LogIndex| match index.0 {
        1 => Some(Term(1)),
        2 => Some(Term(2)),
        _ => None,
    };
    assert_eq!(
        property(checker.on_leader(B, Term(3), (LogIndex(0), Term(0)), &log)),
        Property::LeaderCompleteness
    );
    // A log that was compacted past both entries is complete.
    let empty = |_: LogIndex| None;
    checker.on_leader(C, Term(4), (LogIndex(2), Term(1)), &empty).unwrap();
    // A snapshot of the wrong term at a committed index is not.
    assert_eq!(
        property(checker.on_leader(A, Term(5), (LogIndex(2), Term(2)), &empty)),
        Property::LeaderCompleteness
    );
}

#[test]
fn state_machine_safety_two_entries_at_one_index() {
    let mut checker = with_two_applied();
    checker.on_apply(B, LogIndex(1), &entry(2, 1, "k=b")).unwrap();
    assert_eq!(
        property(checker.on_apply(C, LogIndex(1), &entry(2, 2, "k=c"))),
        Property::StateMachineSafety
    );
    assert_eq!(checker.max_applied(), LogIndex(2));
}

#[test]
fn apply_out_of_order_is_reported() {
    let mut checker = with_two_applied();
    assert_eq!(
        property(checker.on_apply(B, LogIndex(0), &entry(2, 1, "k=b"))),
        Property::ReadyContract
    );
}

#[test]
fn snapshot_with_wrong_state_is_reported() {
    let checker = with_two_applied();
    let mut good = Kv::default();
    good.apply(LogIndex(2), b"k=b").unwrap();
    checker.on_snapshot_applied(B, LogIndex(2), Term(1), &good).unwrap();
    let mut stale = Kv::default();
    stale.apply(LogIndex(1), b"k=a").unwrap();
    assert_eq!(
        property(checker.on_snapshot_applied(B, LogIndex(2), Term(1), &stale)),
        Property::StateMachineSafety
    );
    assert_eq!(
        property(checker.on_snapshot_applied(B, LogIndex(2), Term(2), &good)),
        Property::StateMachineSafety
    );
}

#[test]
fn leader_append_only_overwrite_and_snapshot() {
    let checker = Checker::new((LogIndex(0), Term(0)));
    checker.on_leader_write(A, Term(2), LogIndex(5), Some(LogIndex(6)), false).unwrap();
    assert_eq!(
        property(checker.on_leader_write(A, Term(2), LogIndex(5), Some(LogIndex(5)), false)),
        Property::LeaderAppendOnly
    );
    assert_eq!(
        property(checker.on_leader_write(A, Term(2), LogIndex(5), None, true)),
        Property::LeaderAppendOnly
    );
    checker.on_leader_log(A, Term(2), LogIndex(5), LogIndex(7), Some(Term(2))).unwrap();
    assert_eq!(
        property(checker.on_leader_log(A, Term(2), LogIndex(5), LogIndex(4), Some(Term(2)))),
        Property::LeaderAppendOnly
    );
    assert_eq!(
        property(checker.on_leader_log(A, Term(2), LogIndex(5), LogIndex(6), Some(Term(1)))),
        Property::LeaderAppendOnly
    );
}

#[test]
fn read_index_below_an_applied_write() {
    let mut checker = with_two_applied();
    let context = Bytes::from_static(b"r1");
    checker.on_read_request(B, context.clone());
    assert_eq!(
        property(checker.on_read_state(B, &context, LogIndex(1))),
        Property::ReadLinearizability
    );
    checker.on_read_state(B, &context, LogIndex(2)).unwrap();
    // Served from a state machine that misses the write at 2.
    let mut stale = Kv::default();
    stale.apply(LogIndex(1), b"k=a").unwrap();
    assert_eq!(
        property(checker.on_read_served(B, &context, LogIndex(2), &stale)),
        Property::ReadLinearizability
    );
    let mut fresh = Kv::default();
    fresh.apply(LogIndex(2), b"k=b").unwrap();
    checker.on_read_served(B, &context, LogIndex(2), &fresh).unwrap();
    assert_eq!(checker.reads_checked, 1);
    // A read state nobody asked for.
    assert_eq!(
        property(checker.on_read_state(B, &Bytes::from_static(b"r9"), LogIndex(2))),
        Property::ReadyContract
    );
}

#[test]
fn term_going_back_in_memory_or_on_disk() {
    let checker = Checker::new((LogIndex(0), Term(0)));
    checker.on_term(A, Term(3), Term(3), false).unwrap();
    assert_eq!(property(checker.on_term(A, Term(3), Term(2), false)), Property::TermMonotonic);
    let before = HardState { term: Term(3), vote: B, commit: LogIndex(5) };
    let lower = HardState { term: Term(2), vote: B, commit: LogIndex(5) };
    assert_eq!(property(checker.on_durable_hard_state(A, before, lower)), Property::TermMonotonic);
    let commit_back = HardState { term: Term(3), vote: B, commit: LogIndex(4) };
    assert_eq!(
        property(checker.on_durable_hard_state(A, before, commit_back)),
        Property::TermMonotonic
    );
    let revote = HardState { term: Term(3), vote: C, commit: LogIndex(5) };
    assert_eq!(property(checker.on_durable_hard_state(A, before, revote)), Property::VoteSafety);
}

#[test]
fn two_votes_in_one_term_and_undurable_votes() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    let durable = |vote| HardState { term: Term(4), vote, commit: LogIndex(0) };
    checker.on_vote_granted(A, Term(4), B, durable(B)).unwrap();
    assert_eq!(property(checker.on_vote_granted(A, Term(4), C, durable(C))), Property::VoteSafety);
    // A vote sent before the hard state recording it was durable.
    assert_eq!(
        property(checker.on_vote_granted(B, Term(4), B, durable(ReplicaId::NONE))),
        Property::ReadyContract
    );
    assert_eq!(
        property(checker.on_append_ack(A, LogIndex(7), LogIndex(6))),
        Property::ReadyContract
    );
    checker.on_append_ack(A, LogIndex(6), LogIndex(6)).unwrap();
}

#[test]
fn handed_out_before_durable() {
    let checker = Checker::new((LogIndex(0), Term(0)));
    let e = entry(3, 2, "k=a");
    checker.on_handed_out(A, &e, Some(Term(2)), LogIndex(0)).unwrap();
    checker.on_handed_out(A, &e, None, LogIndex(3)).unwrap();
    assert_eq!(property(checker.on_handed_out(A, &e, None, LogIndex(2))), Property::ReadyContract);
}

#[test]
fn applied_entry_lost_after_restart() {
    let checker = with_two_applied();
    let has_both = |index: LogIndex| (index.0 <= 2).then_some(Term(1));
    checker.on_restart(A, LogIndex(2), (LogIndex(0), Term(0)), &has_both).unwrap();
    let lost_second = |index: LogIndex| (index.0 == 1).then_some(Term(1));
    assert_eq!(
        property(checker.on_restart(A, LogIndex(2), (LogIndex(0), Term(0)), &lost_second)),
        Property::CommittedDurable
    );
    let wrong_snapshot = |_: LogIndex| None;
    assert_eq!(
        property(checker.on_restart(A, LogIndex(2), (LogIndex(2), Term(7)), &wrong_snapshot)),
        Property::CommittedDurable
    );
}

#[test]
fn a_stale_leader_of_an_older_term_need_not_hold_newer_commits() {
    let mut checker = Checker::new((LogIndex(0), Term(0)));
    checker.on_apply(A, LogIndex(0), &entry(1, 1, "k=a")).unwrap();
    checker.on_leader_commit(Term(1), LogIndex(1));
    checker.on_apply(A, LogIndex(1), &entry(2, 4, "k=b")).unwrap();
    checker.on_leader_commit(Term(4), LogIndex(2));
    // B wins term 3 with late votes: it has entry 1 (committed in term 1), not entry 2.
    let log = |index: LogIndex| (index.0 == 1).then_some(Term(1));
    checker.on_leader(B, Term(3), (LogIndex(0), Term(0)), &log).unwrap();
    // A leader of term 5 must hold both.
    assert_eq!(
        property(checker.on_leader(C, Term(5), (LogIndex(0), Term(0)), &log)),
        Property::LeaderCompleteness
    );
}
