//! Linearizability checking of client histories of raw key-value operations.
//!
//! A test records every client operation with [`History::invoke`] and [`History::complete`]
//! (or [`History::fail`]), and then calls [`History::check`]. The deterministic simulator
//! (`tessera-store`'s tests) passes its logical clock as the times; tests against real
//! processes share a [`Recorder`], which stamps the events with the microseconds elapsed on
//! a monotonic clock since it was made.
//!
//! Each key is an independent register whose initial value is absent; linearizability is
//! compositional, so every key's sub-history is checked on its own with the Wing–Gong–Lowe
//! (WGL) checker of the `todc-utils` crate. Keys and values are `u64`s: the caller maps its
//! byte strings onto them (every value written must be unique for a read to say which write
//! it saw).
//!
//! Timing: operation `a` precedes `b` in real time iff `a` completed at a time strictly
//! smaller than the time `b` was invoked. Events at equal times are treated as concurrent,
//! which can only make the checker more permissive, never report a false violation. The
//! invocation must be recorded before the request leaves and the completion after the
//! answer arrived, so that each recorded interval contains the real one.
//!
//! Indeterminate outcomes (timeouts, connections lost, crashes): an operation completed with
//! [`Outcome::Unknown`], or never completed at all, may or may not have taken effect. Its
//! response is placed after every other event of the history and any response is accepted
//! for it; linearizing it last is the same as it never having happened, so both
//! possibilities are covered. Reads with an unknown outcome constrain nothing and are
//! dropped, as are operations reported through [`History::fail`] (certainly not applied).
//! Every operation is its own process for the checker, so a client that gave up on an
//! operation may go on at once (as a new process, as far as the history is concerned).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History as TodcHistory};
use todc_utils::specifications::Specification;

/// A raw key-value operation issued by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sets the key to `value`.
    Put {
        /// The key.
        key: u64,
        /// The value written (unique in the history).
        value: u64,
    },
    /// Removes the key.
    Delete {
        /// The key.
        key: u64,
    },
    /// Reads the key.
    Get {
        /// The key.
        key: u64,
    },
    /// Sets `new` iff the current value equals `expected` (`None`: the key is absent).
    Cas {
        /// The key.
        key: u64,
        /// The value the key must hold (`None`: absent).
        expected: Option<u64>,
        /// The value written if it does (unique in the history).
        new: u64,
    },
}

impl Op {
    /// The key this operation reads or writes.
    #[must_use]
    pub fn key(&self) -> u64 {
        match *self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }
}

/// What a client observed when an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The put was acknowledged.
    Put,
    /// The delete was acknowledged.
    Delete,
    /// The read returned this value (`None`: absent).
    Get(Option<u64>),
    /// `previous` is the value the key held when the CAS was evaluated.
    Cas {
        /// Whether the value was swapped.
        succeeded: bool,
        /// The value before.
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
    /// When an operation with an unknown outcome was given up (for the description only).
    given_up: Option<u64>,
    failed: bool,
}

/// How many operations of a history ended which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Completed with an outcome.
    pub completed: usize,
    /// Given up with an unknown outcome, or never ended.
    pub unknown: usize,
    /// Failed without effect (dropped from the check).
    pub failed: usize,
}

impl Counts {
    /// Counts `record` by how it ended.
    fn add(&mut self, record: &Record) {
        if record.failed {
            self.failed += 1;
        } else if record.completed.is_some() {
            self.completed += 1;
        } else {
            self.unknown += 1;
        }
    }
}

/// A recorded history of client operations (single-threaded use; see [`Recorder`] for
/// concurrent clients).
#[derive(Debug, Default)]
pub struct History {
    records: Vec<Record>,
}

impl History {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the call of `op` by `client` at time `time`.
    pub fn invoke(&mut self, client: u64, op: Op, time: u64) -> OpId {
        self.records.push(Record {
            client,
            op,
            invoked: time,
            completed: None,
            given_up: None,
            failed: false,
        });
        OpId(self.records.len() - 1)
    }

    /// Records the end of an operation.
    ///
    /// # Panics
    /// On a misuse of the recorder: an unknown id, an outcome of the wrong kind, a
    /// completion before the invocation, or an operation ended twice.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, time: u64) {
        let record = &mut self.records[id.0];
        assert!(
            record.completed.is_none() && record.given_up.is_none() && !record.failed,
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
        if outcome == Outcome::Unknown {
            record.given_up = Some(time);
        } else {
            record.completed = Some((outcome, time));
        }
    }

    /// A failed operation that certainly did not take effect: it is dropped from the history.
    ///
    /// # Panics
    /// The id is unknown or the operation already ended.
    pub fn fail(&mut self, id: OpId) {
        let record = &mut self.records[id.0];
        assert!(
            record.completed.is_none() && record.given_up.is_none() && !record.failed,
            "operation {id:?} ({:?}) ended twice",
            record.op
        );
        record.failed = true;
    }

    /// The number of recorded operations, not counting failed ones.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.iter().filter(|r| !r.failed).count()
    }

    /// Whether no operation (but failed ones) was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many operations ended which way, over all keys.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for record in &self.records {
            counts.add(record);
        }
        counts
    }

    /// The operations on each key (failed ones included), by key.
    #[must_use]
    pub fn counts_by_key(&self) -> BTreeMap<u64, Counts> {
        let mut by_key: BTreeMap<u64, Counts> = BTreeMap::new();
        for record in &self.records {
            by_key.entry(record.op.key()).or_default().add(record);
        }
        by_key
    }

    /// Checks that every key's sub-history is linearizable; operations never completed count
    /// as [`Outcome::Unknown`].
    ///
    /// # Errors
    /// The violation with the smallest key, describing every operation on that key.
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
    /// The key.
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

/// A [`History`] shared by concurrent clients (threads or tasks), its events stamped with
/// the microseconds elapsed since the recorder was made (a monotonic clock).
///
/// The time of an event is taken under the same lock that records it, so the times follow
/// the order in which the events were recorded.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    #[must_use]
    pub fn new() -> Self {
        Self { started: Instant::now(), history: Mutex::new(History::new()) }
    }

    /// Microseconds since the recorder was made.
    #[must_use]
    pub fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records the call of `op` by `client` now: call it just before sending the request.
    pub fn invoke(&self, client: u64, op: Op) -> OpId {
        let mut history = self.lock();
        let now = self.now();
        history.invoke(client, op, now)
    }

    /// Records the end of an operation now: call it just after the answer arrived.
    ///
    /// # Panics
    /// See [`History::complete`].
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut history = self.lock();
        let now = self.now();
        history.complete(id, outcome, now);
    }

    /// A failed operation that certainly did not take effect (see [`History::fail`]).
    ///
    /// # Panics
    /// See [`History::fail`].
    pub fn fail(&self, id: OpId) {
        self.lock().fail(id);
    }

    /// The number of recorded operations, not counting failed ones.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no operation (but failed ones) was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`History::counts`].
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.lock().counts()
    }

    /// See [`History::counts_by_key`].
    #[must_use]
    pub fn counts_by_key(&self) -> BTreeMap<u64, Counts> {
        self.lock().counts_by_key()
    }

    /// See [`History::check`].
    ///
    /// # Errors
    /// See [`History::check`].
    pub fn check(&self) -> Result<(), Violation> {
        self.lock().check()
    }

    /// The history recorded so far.
    #[must_use]
    pub fn into_history(self) -> History {
        self.history.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    /// The history, even if a client panicked while holding it (the records stay whole:
    /// every update is a single push or field assignment).
    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
         (completed `?`: outcome unknown, given up at the time after it if any):",
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
            None => {
                let given_up = r.given_up.map_or_else(String::new, |t| format!(" {t}"));
                (format!("unknown{given_up}"), "?".to_owned())
            }
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
        let _ = write!(
            out,
            "\n  client {:>3} [{:>6}, {done:>6}] {op} -> {result}",
            r.client, r.invoked
        );
    }
    out
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}
