//! Linearizability checking of client histories of raw key-value operations.
//!
//! The deterministic simulation records every client operation with [`History::invoke`] and
//! [`History::complete`] (or [`History::fail`]), using its logical clock for the times, and
//! then calls [`History::check`]. Each key is an independent register whose initial value is
//! absent; linearizability is compositional, so every key's sub-history is checked on its own
//! with the Wing–Gong–Lowe checker of the `todc-utils` crate.
//!
//! Timing: operation `a` precedes `b` in real time iff `a` completed at a time strictly
//! smaller than the time `b` was invoked. Events at equal times are treated as concurrent,
//! which can only make the checker more permissive, never report a false violation.
//!
//! Indeterminate outcomes (timeouts, crashes): an operation completed with
//! [`Outcome::Unknown`], or never completed at all, may or may not have taken effect. As in
//! Jepsen/Knossos, its response is placed after every other event of the history and any
//! response is accepted for it; linearizing it last is the same as it never having happened,
//! so both possibilities are covered. Reads with an unknown outcome constrain nothing and are
//! dropped, as are operations reported through [`History::fail`].

// Shared by several test binaries, each of which uses only part of this API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History as TodcHistory};
use todc_utils::specifications::Specification;

/// A raw key-value operation issued by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put {
        key: u64,
        value: u64,
    },
    Delete {
        key: u64,
    },
    Get {
        key: u64,
    },
    /// Sets `new` iff the current value equals `expected` (`None`: the key is absent).
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

impl Op {
    /// The key this operation reads or writes.
    pub fn key(&self) -> u64 {
        match *self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }
}

/// What a client observed when an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Put,
    Delete,
    Get(Option<u64>),
    /// `previous` is the value the key held when the CAS was evaluated.
    Cas {
        succeeded: bool,
        previous: Option<u64>,
    },
    /// Indeterminate (timeout, crash): the operation may or may not have taken effect.
    Unknown,
}

/// A handle to a recorded operation, returned by [`History::invoke`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(usize);

#[derive(Debug, Clone)]
struct Record {
    client: u64,
    op: Op,
    invoked: u64,
    /// `None` while the operation is outstanding or its outcome is unknown.
    completed: Option<(Outcome, u64)>,
    failed: bool,
}

/// A recorded history of client operations (single-threaded use).
#[derive(Debug, Default)]
pub struct History {
    records: Vec<Record>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the call of `op` by `client` at logical time `time`.
    pub fn invoke(&mut self, client: u64, op: Op, time: u64) -> OpId {
        self.records.push(Record { client, op, invoked: time, completed: None, failed: false });
        OpId(self.records.len() - 1)
    }

    /// Records the end of an operation. Panics on a misuse of the recorder: an outcome of the
    /// wrong kind, a completion before the invocation, or an operation ended twice.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, time: u64) {
        let record = &mut self.records[id.0];
        assert!(
            record.completed.is_none() && !record.failed,
            "operation {id:?} ({:?}) ended twice",
            record.op
        );
        assert!(
            time >= record.invoked,
            "operation {id:?} completed at {time}, before its invocation at {}",
            record.invoked
        );
        let kind_matches = matches!(
            (record.op, outcome),
            (_, Outcome::Unknown)
                | (Op::Put { .. }, Outcome::Put)
                | (Op::Delete { .. }, Outcome::Delete)
                | (Op::Get { .. }, Outcome::Get(_))
                | (Op::Cas { .. }, Outcome::Cas { .. })
        );
        assert!(kind_matches, "outcome {outcome:?} does not match operation {:?}", record.op);
        if outcome != Outcome::Unknown {
            record.completed = Some((outcome, time));
        }
    }

    /// A failed operation that certainly did not take effect: it is dropped from the history.
    pub fn fail(&mut self, id: OpId) {
        let record = &mut self.records[id.0];
        assert!(record.completed.is_none(), "operation {id:?} ({:?}) ended twice", record.op);
        record.failed = true;
    }

    /// The number of recorded operations, not counting failed ones.
    pub fn len(&self) -> usize {
        self.records.iter().filter(|r| !r.failed).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that every key's sub-history is linearizable; operations never completed count
    /// as [`Outcome::Unknown`]. Reports the violation with the smallest key.
    pub fn check(&self) -> Result<(), Violation> {
        let mut by_key: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
        for record in &self.records {
            let unknown_read = matches!(record.op, Op::Get { .. }) && record.completed.is_none();
            if !record.failed && !unknown_read {
                by_key.entry(record.op.key()).or_default().push(record);
            }
        }
        for (key, records) in by_key {
            if !WGLChecker::<KeySpec>::is_linearizable(todc_history(&records)) {
                return Err(Violation { key, description: describe(key, &records) });
            }
        }
        Ok(())
    }
}

/// A key whose sub-history has no linearization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: u64,
    /// Human-readable account listing every operation on the key.
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for Violation {}

/// An operation together with its observed result, as applied by the sequential spec.
#[derive(Debug, Clone, Copy)]
enum KeyOp {
    Put(u64),
    Delete,
    Get(Option<u64>),
    /// `result` is `None` when the outcome is unknown: any result is accepted.
    Cas {
        expected: Option<u64>,
        new: u64,
        result: Option<(bool, Option<u64>)>,
    },
}

/// Sequential specification of one key: a register holding `Option<u64>`, initially `None`.
struct KeySpec;

impl Specification for KeySpec {
    type State = Option<u64>;
    type Operation = KeyOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &KeyOp, state: &Option<u64>) -> (bool, Option<u64>) {
        match *op {
            KeyOp::Put(value) => (true, Some(value)),
            KeyOp::Delete => (true, None),
            KeyOp::Get(read) => (read == *state, *state),
            KeyOp::Cas { expected, new, result } => {
                let succeeds = *state == expected;
                let next = if succeeds { Some(new) } else { *state };
                let valid = result.is_none_or(|r| r == (succeeds, *state));
                (valid, next)
            }
        }
    }
}

fn key_op(record: &Record) -> KeyOp {
    let outcome = record.completed.map(|(outcome, _)| outcome);
    match (record.op, outcome) {
        (Op::Put { value, .. }, _) => KeyOp::Put(value),
        (Op::Delete { .. }, _) => KeyOp::Delete,
        (Op::Get { .. }, Some(Outcome::Get(read))) => KeyOp::Get(read),
        (Op::Cas { expected, new, .. }, Some(Outcome::Cas { succeeded, previous })) => {
            KeyOp::Cas { expected, new, result: Some((succeeded, previous)) }
        }
        (Op::Cas { expected, new, .. }, _) => KeyOp::Cas { expected, new, result: None },
        // `check` drops reads without an outcome and `complete` rejects mismatched kinds.
        (Op::Get { .. }, _) => unreachable!("read without an outcome: {record:?}"),
    }
}

/// Builds the `todc-utils` history of one key. todc-utils pairs calls with responses per
/// process in FIFO order, so every operation gets its own process id: a client that timed out
/// moves on while its previous operation's response is still pending at the end.
fn todc_history(records: &[&Record]) -> TodcHistory<KeyOp> {
    // (time, 0 = call / 1 = response, op index); calls sort before responses at equal times.
    let mut events = Vec::with_capacity(2 * records.len());
    let mut pending = Vec::new();
    for (i, record) in records.iter().enumerate() {
        events.push((record.invoked, 0, i));
        match record.completed {
            Some((_, time)) => events.push((time, 1, i)),
            None => pending.push(i),
        }
    }
    events.sort_unstable();
    let actions = events
        .into_iter()
        .map(|(_, kind, i)| {
            let op = key_op(records[i]);
            (i, if kind == 0 { Action::Call(op) } else { Action::Response(op) })
        })
        .chain(pending.into_iter().map(|i| (i, Action::Response(key_op(records[i])))))
        .collect();
    TodcHistory::from_actions(actions)
}

fn describe(key: u64, records: &[&Record]) -> String {
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| (r.invoked, r.completed.map_or(u64::MAX, |(_, t)| t)));
    let mut out = format!(
        "key {key}: no linearization of its {} operations [invoked, completed] \
         (completed `?`: outcome unknown):",
        sorted.len()
    );
    for r in sorted {
        let op = match r.op {
            Op::Put { value, .. } => format!("put({value})"),
            Op::Delete { .. } => "delete".to_owned(),
            Op::Get { .. } => "get".to_owned(),
            Op::Cas { expected, new, .. } => format!("cas({} -> {new})", show(expected)),
        };
        let (result, done) = match r.completed {
            None => ("unknown".to_owned(), "?".to_owned()),
            Some((outcome, time)) => (
                match outcome {
                    Outcome::Put | Outcome::Delete => "ok".to_owned(),
                    Outcome::Get(read) => show(read),
                    Outcome::Cas { succeeded, previous } => {
                        let verdict = if succeeded { "succeeded" } else { "failed" };
                        format!("{verdict}, previous {}", show(previous))
                    }
                    Outcome::Unknown => "unknown".to_owned(),
                },
                time.to_string(),
            ),
        };
        out.push_str(&format!(
            "\n  client {:>3} [{:>6}, {done:>6}] {op} -> {result}",
            r.client, r.invoked
        ));
    }
    out
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}
