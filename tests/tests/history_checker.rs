//! Tests of the linearizability checker (`tessera_tests::history`) on hand-written histories
//! with known violations (stale reads, lost writes, wrong compare-and-swap results, reads
//! from the future) and known-good ones, and on generated linearizable histories with one
//! read corrupted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use tessera_tests::history::{Counts, History, Op, OpId, Outcome, Recorder};

const K: u64 = 7;

/// Records one completed operation.
fn op(
    h: &mut History,
    client: u64,
    op: Op,
    invoked: u64,
    outcome: Outcome,
    completed: u64,
) -> OpId {
    let id = h.invoke(client, op, invoked);
    h.complete(id, outcome, completed);
    id
}

fn put(h: &mut History, client: u64, value: u64, invoked: u64, completed: u64) {
    op(h, client, Op::Put { key: K, value }, invoked, Outcome::Put, completed);
}

fn get(h: &mut History, client: u64, read: Option<u64>, invoked: u64, completed: u64) {
    op(h, client, Op::Get { key: K }, invoked, Outcome::Get(read), completed);
}

fn assert_violation(h: &History, key: u64) {
    let violation = h.check().expect_err("history should not be linearizable");
    assert_eq!(violation.key, key, "{violation}");
    assert!(violation.to_string().starts_with(&format!("key {key}:")), "{violation}");
}

#[test]
fn empty_history_is_linearizable() {
    let h = History::new();
    assert!(h.is_empty());
    h.check().unwrap();
}

#[test]
fn rejects_stale_read_after_completed_put() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    get(&mut h, 2, None, 2, 3);
    assert_violation(&h, K);
}

#[test]
fn rejects_read_of_first_of_two_sequential_puts() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    put(&mut h, 1, 2, 2, 3);
    get(&mut h, 2, Some(1), 4, 5);
    assert_violation(&h, K);
}

#[test]
fn rejects_cas_succeeding_against_value_never_current() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    let cas = Op::Cas { key: K, expected: Some(9), new: 2 };
    op(&mut h, 2, cas, 2, Outcome::Cas { succeeded: true, previous: Some(9) }, 3);
    assert_violation(&h, K);
}

#[test]
fn rejects_cas_failing_although_expected_value_was_current() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    let cas = Op::Cas { key: K, expected: Some(1), new: 2 };
    op(&mut h, 2, cas, 2, Outcome::Cas { succeeded: false, previous: Some(1) }, 3);
    assert_violation(&h, K);
}

#[test]
fn rejects_lost_acknowledged_write() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    let cas = Op::Cas { key: K, expected: Some(1), new: 2 };
    op(&mut h, 1, cas, 2, Outcome::Cas { succeeded: true, previous: Some(1) }, 3);
    get(&mut h, 2, Some(1), 4, 5);
    assert_violation(&h, K);
}

#[test]
fn rejects_read_of_value_never_written() {
    let mut h = History::new();
    op(&mut h, 1, Op::Put { key: K, value: 1 }, 0, Outcome::Put, 10);
    get(&mut h, 2, Some(99), 2, 3);
    assert_violation(&h, K);
}

#[test]
fn rejects_read_from_the_future() {
    let mut h = History::new();
    get(&mut h, 2, Some(1), 0, 1);
    put(&mut h, 1, 1, 2, 3);
    assert_violation(&h, K);
}

#[test]
fn rejects_read_after_completed_delete() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    op(&mut h, 1, Op::Delete { key: K }, 2, Outcome::Delete, 3);
    get(&mut h, 2, Some(1), 4, 5);
    assert_violation(&h, K);
}

#[test]
fn reports_only_the_offending_key() {
    let mut h = History::new();
    op(&mut h, 1, Op::Put { key: 1, value: 5 }, 0, Outcome::Put, 1);
    op(&mut h, 2, Op::Get { key: 1 }, 2, Outcome::Get(Some(5)), 3);
    op(&mut h, 1, Op::Put { key: 2, value: 6 }, 4, Outcome::Put, 5);
    op(&mut h, 2, Op::Get { key: 2 }, 6, Outcome::Get(None), 7);
    assert_violation(&h, 2);
    let text = h.check().unwrap_err().to_string();
    assert!(text.contains("put(6) -> ok") && text.contains("get -> absent"), "{text}");
    assert!(!text.contains("put(5)"), "{text}");
}

#[test]
fn keys_are_independent_registers() {
    let mut h = History::new();
    op(&mut h, 1, Op::Put { key: 1, value: 5 }, 0, Outcome::Put, 1);
    op(&mut h, 2, Op::Get { key: 2 }, 2, Outcome::Get(None), 3);
    op(&mut h, 2, Op::Get { key: 1 }, 4, Outcome::Get(Some(5)), 5);
    h.check().unwrap();
}

#[test]
fn accepts_overlapping_put_and_get_in_either_order() {
    for read in [None, Some(1)] {
        let mut h = History::new();
        put(&mut h, 1, 1, 0, 10);
        get(&mut h, 2, read, 2, 4);
        get(&mut h, 2, Some(1), 5, 6);
        h.check().unwrap();
    }
}

#[test]
fn accepts_concurrent_writes_read_in_reverse_invocation_order() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 10);
    put(&mut h, 2, 2, 1, 10);
    get(&mut h, 3, Some(2), 2, 3);
    get(&mut h, 3, Some(1), 4, 5);
    h.check().unwrap();
}

#[test]
fn rejects_concurrent_reads_disagreeing_with_real_time() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 10);
    get(&mut h, 2, Some(1), 2, 3);
    get(&mut h, 3, None, 4, 5);
    assert_violation(&h, K);
}

#[test]
fn events_at_equal_times_are_concurrent() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 5);
    get(&mut h, 2, None, 5, 6);
    h.check().unwrap();
}

#[test]
fn accepts_unknown_put_seen_later() {
    let mut h = History::new();
    let id = h.invoke(1, Op::Put { key: K, value: 1 }, 0);
    h.complete(id, Outcome::Unknown, 2);
    // The client moves on after the timeout; its lost write may still land afterwards.
    put(&mut h, 1, 2, 3, 4);
    get(&mut h, 2, Some(2), 5, 6);
    get(&mut h, 2, Some(1), 7, 8);
    h.check().unwrap();
    // But the write cannot be undone once seen.
    get(&mut h, 2, Some(2), 9, 10);
    assert_violation(&h, K);
}

#[test]
fn accepts_unknown_put_never_seen() {
    let mut h = History::new();
    let id = h.invoke(1, Op::Put { key: K, value: 1 }, 0);
    h.complete(id, Outcome::Unknown, 2);
    get(&mut h, 2, None, 3, 4);
    put(&mut h, 1, 2, 5, 6);
    get(&mut h, 2, Some(2), 7, 8);
    h.check().unwrap();
}

#[test]
fn never_completed_operations_count_as_unknown() {
    let mut h = History::new();
    h.invoke(1, Op::Put { key: K, value: 1 }, 0);
    h.invoke(3, Op::Get { key: K }, 0);
    get(&mut h, 2, None, 3, 4);
    get(&mut h, 2, Some(1), 5, 6);
    assert_eq!(h.len(), 4);
    h.check().unwrap();
}

#[test]
fn unknown_cas_may_or_may_not_take_effect() {
    for read in [None, Some(5)] {
        let mut h = History::new();
        let id = h.invoke(1, Op::Cas { key: K, expected: None, new: 5 }, 0);
        h.complete(id, Outcome::Unknown, 1);
        get(&mut h, 2, read, 2, 3);
        h.check().unwrap();
    }
    // An unknown CAS whose expectation never held cannot explain the value.
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    let id = h.invoke(1, Op::Cas { key: K, expected: None, new: 5 }, 2);
    h.complete(id, Outcome::Unknown, 3);
    get(&mut h, 2, Some(5), 4, 5);
    assert_violation(&h, K);
}

#[test]
fn failed_operations_are_dropped() {
    let mut h = History::new();
    let id = h.invoke(1, Op::Put { key: K, value: 1 }, 0);
    h.fail(id);
    get(&mut h, 2, None, 2, 3);
    assert_eq!(h.len(), 1);
    h.check().unwrap();
    get(&mut h, 2, Some(1), 4, 5);
    assert_violation(&h, K);
}

/// One generated operation: the effect happened atomically at a point inside
/// `[invoked, completed]` (or not at all when `outcome` is `None` and the op is dropped).
struct Generated {
    client: u64,
    op: Op,
    invoked: u64,
    completed: u64,
    /// `None`: the operation failed without effect.
    outcome: Option<Outcome>,
}

/// Generates a linearizable history by applying operations to a real map at increasing
/// linearization points and widening each into an interval that overlaps its neighbours.
fn generate(seed: u64, ops: usize) -> Vec<Generated> {
    const CLIENTS: u64 = 5;
    const KEYS: u64 = 3;
    let mut rng = tessera_raft::SplitMix64::new(seed);
    let mut map: BTreeMap<u64, u64> = BTreeMap::new();
    let mut free_at = [0u64; CLIENTS as usize];
    let mut next_value = 1;
    let mut out = Vec::new();
    for j in 0..ops {
        let point = 4 * (j as u64 + 1);
        // A client with no operation outstanding at `point`; skip the slot if none is idle.
        let idle: Vec<u64> = (0..CLIENTS).filter(|&c| free_at[c as usize] < point).collect();
        if idle.is_empty() {
            continue;
        }
        let client = idle[rng.range(0, idle.len() as u64) as usize];
        let invoked = point.saturating_sub(rng.range(0, 7)).max(free_at[client as usize] + 1);
        let completed = point + rng.range(0, 7);
        free_at[client as usize] = completed;
        let key = rng.range(0, KEYS);
        let current = map.get(&key).copied();
        let value = next_value;
        next_value += 1;
        let (op, outcome) = match rng.range(0, 20) {
            0..=6 => (Op::Get { key }, Outcome::Get(current)),
            7..=12 => (Op::Put { key, value }, Outcome::Put),
            13..=14 => (Op::Delete { key }, Outcome::Delete),
            _ => {
                let expected =
                    if rng.range(0, 2) == 0 { current } else { Some(rng.range(0, next_value)) };
                let succeeded = expected == current;
                let cas = Op::Cas { key, expected, new: value };
                (cas, Outcome::Cas { succeeded, previous: current })
            }
        };
        // Writes occasionally end indeterminately or fail; reads always apply (no effect).
        let fate = if matches!(op, Op::Get { .. }) { 0 } else { rng.range(0, 12) };
        let applies = fate != 11 && (fate != 10 || rng.range(0, 2) == 0);
        if applies {
            match op {
                Op::Put { .. } => {
                    map.insert(key, value);
                }
                Op::Delete { .. } => {
                    map.remove(&key);
                }
                Op::Cas { expected, new, .. } if expected == current => {
                    map.insert(key, new);
                }
                _ => {}
            }
        }
        let outcome = match fate {
            10 => Some(Outcome::Unknown),
            11 => None,
            _ => Some(outcome),
        };
        out.push(Generated { client, op, invoked, completed, outcome });
    }
    out
}

/// Replays generated operations into a `History` in logical-time order.
fn record(ops: &[Generated]) -> History {
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, g) in ops.iter().enumerate() {
        events.push((g.invoked, 0, i));
        events.push((g.completed, 1, i));
    }
    events.sort_unstable();
    let mut h = History::new();
    let mut ids = vec![None; ops.len()];
    for (time, kind, i) in events {
        let g = &ops[i];
        if kind == 0 {
            ids[i] = Some(h.invoke(g.client, g.op, time));
        } else {
            match g.outcome {
                Some(outcome) => h.complete(ids[i].unwrap(), outcome, time),
                None => h.fail(ids[i].unwrap()),
            }
        }
    }
    h
}

#[test]
fn randomized_histories_pass_and_corrupted_reads_fail() {
    for seed in 0..40 {
        let mut ops = generate(seed, 150);
        let h = record(&ops);
        if let Err(violation) = h.check() {
            panic!("seed {seed}: generated history rejected:\n{violation}");
        }

        // Corrupt one read: prefer a value of the same key whose write began only after the
        // read completed (a read from the future), else a value that was never written.
        let reads: Vec<usize> =
            (0..ops.len()).filter(|&i| matches!(ops[i].outcome, Some(Outcome::Get(_)))).collect();
        let victim = reads[(seed as usize * 7) % reads.len()];
        let (key, done) = (ops[victim].op.key(), ops[victim].completed);
        let future = ops.iter().find_map(|g| match g.op {
            Op::Put { key: k, value } | Op::Cas { key: k, new: value, .. }
                if k == key && g.invoked > done =>
            {
                Some(value)
            }
            _ => None,
        });
        let bad = future.unwrap_or(u64::MAX);
        ops[victim].outcome = Some(Outcome::Get(Some(bad)));
        let violation = record(&ops).check().expect_err("corrupted history accepted");
        assert_eq!(violation.key, key, "seed {seed}: {violation}");
    }
}

#[test]
fn counts_tell_completed_unknown_and_failed_apart() {
    let mut h = History::new();
    put(&mut h, 1, 1, 0, 1);
    let unknown = h.invoke(1, Op::Put { key: K, value: 2 }, 2);
    h.complete(unknown, Outcome::Unknown, 3);
    h.invoke(2, Op::Get { key: K }, 4);
    let failed = h.invoke(3, Op::Delete { key: K }, 5);
    h.fail(failed);
    assert_eq!(h.counts(), Counts { completed: 1, unknown: 2, failed: 1 });
    assert_eq!(h.counts_by_key()[&K], h.counts());
}

#[test]
fn a_shared_recorder_orders_events_by_its_clock() {
    let recorder = Recorder::new();
    std::thread::scope(|scope| {
        for client in 0..4 {
            let recorder = &recorder;
            scope.spawn(move || {
                for n in 0..50 {
                    let value = client * 1_000 + n;
                    let id = recorder.invoke(client, Op::Put { key: client, value });
                    recorder.complete(id, Outcome::Put);
                    let id = recorder.invoke(client, Op::Get { key: client });
                    recorder.complete(id, Outcome::Get(Some(value)));
                }
            });
        }
    });
    assert_eq!(recorder.len(), 400);
    recorder.check().unwrap();
    // A read of an overwritten value, after the overwrite completed, is caught.
    let id = recorder.invoke(9, Op::Get { key: 2 });
    recorder.complete(id, Outcome::Get(Some(2_000)));
    let violation = recorder.check().unwrap_err();
    assert_eq!(violation.key, 2, "{violation}");
    assert!(recorder.into_history().len() == 401);
}
