//! Scripted interaction tests, in the style of etcd-raft's datadriven tests.
//!
//! Each file in `tests/testdata/` is a sequence of cases: a command line, a line `----`, then
//! the expected output up to the next blank line. Lines starting with `#` between cases are
//! comments. The output is the trace of what the command caused (every Ready handled, with
//! its soft and hard state, entries, messages, applied entries and read states; every
//! message delivered or dropped) plus the command's own result; `ok` when there is nothing
//! to show. Messages are shown with the `Debug` impl of `Message` (`tessera_wire::raft`),
//! except that membership-change entries are decoded: `1/2 conf(add 4, remove 3)`.
//!
//! The expected outputs are a specification: review any change by eye. `REWRITE=1 cargo
//! test -p tessera-raft --test interaction` regenerates them in place (then read the diff);
//! without it a mismatch fails the test and shows a diff.
//!
//! Commands (`<id>` is a replica id; lists are written `(1 2 3)`):
//!
//! - `add-nodes <n> [voters=(..)] [learners=(..)] [pre-vote=<bool>] [check-quorum=<bool>]
//!   [lease-read=<bool>] [election=<ticks>] [heartbeat=<ticks>] [inflight=<n>]
//!   [max-uncommitted=<bytes>] [append-bytes=<bytes>]`: adds `n` nodes with the next ids and
//!   an empty log; the membership defaults to the new nodes as voters. New nodes are warmed
//!   up: ticked `election` times without campaigning (their seeds draw a first timeout of at
//!   least 1.5 × `election`), so they do not refuse votes as nodes that just started.
//! - `campaign <id>`, `propose <id> <data>`, `propose-conf-change <id> [add=<id>]
//!   [add-learner=<id>] [remove=<id>] [explicit-leave]` (no steps: leave the joint
//!   configuration), `transfer-leader <from> <to>`, `read-index <id> <context>`,
//!   `quiesce <id> [unreachable=(..)]`, `wake <id>`, `report-snapshot <id> <to> ok|fail`,
//!   `report-unreachable <id> <to>`: call the node; nothing is processed until `stabilize`.
//! - `stabilize`: handle Readys and deliver messages until nothing is left to do.
//! - `process-ready <id>..`: handle the Readys of these nodes; `deliver`: deliver every
//!   message in flight once (grouped by recipient), without handling Readys.
//! - `tick <id|all> [n]`: tick without handling Readys.
//! - `partition (1) (2 3)`: cut every link between groups (replacing earlier cuts);
//!   `isolate <id>`; `cut <a> <b>`;
//!   `drop-if [kind=<MessageKind>] [from=<id>] [to=<id>]`: drop matching messages;
//!   `heal`: restore every link and remove the filter.
//! - `crash <id>` (unpersisted state is lost), `restart <id>` (from what it persisted).
//! - `hold <id>`: keep this node's Readys unpersisted (messages still leave at once);
//!   `persist <id>`: persist what it holds; `release <id>`: persist and stop holding.
//! - `compact <id> <index>`: snapshot the state machine at `index` and drop the log before.
//! - `status [<id>..]`, `log <id>..`, `applied <id>..`: show state.

// Tests may unwrap; `allow-unwrap-in-tests` (clippy.toml) does not reach test helpers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{Network, conf, config, rid, rids, seed_for};
use tessera_raft::{ConfChange, ConfChangeStep, ConfState, LogIndex, MessageKind, Storage};

struct Case {
    /// Comments and blank lines before the case, kept on rewrite.
    prefix: String,
    command: String,
    expected: String,
}

fn parse(content: &str) -> (Vec<Case>, String) {
    let lines: Vec<&str> = content.lines().collect();
    let mut cases = Vec::new();
    let mut prefix = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            prefix.push_str(line);
            prefix.push('\n');
            i += 1;
            continue;
        }
        let command = line.to_string();
        i += 1;
        assert_eq!(
            lines.get(i).copied(),
            Some("----"),
            "line {}: expected ---- after {command:?}",
            i + 1
        );
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].is_empty() {
            expected.push(lines[i]);
            i += 1;
        }
        cases.push(Case {
            prefix: std::mem::take(&mut prefix),
            command,
            expected: expected.join("\n"),
        });
    }
    (cases, prefix)
}

/// Splits on whitespace, keeping `(...)` groups (and `key=(...)`) in one token.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    for c in line.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth -= 1;
                current.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn parse_list(s: &str) -> Vec<u64> {
    s.trim_start_matches('(')
        .trim_end_matches(')')
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

fn parse_id(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a replica id: {s:?}"))
}

fn parse_kind(s: &str) -> MessageKind {
    MessageKind::ALL
        .into_iter()
        .find(|k| format!("{k:?}") == s)
        .unwrap_or_else(|| panic!("unknown message kind {s:?}"))
}

/// The state of one script: the network and the next id to give a node.
struct Script {
    net: Network,
    next_id: u64,
}

impl Script {
    fn new() -> Self {
        let mut net = Network::empty();
        net.trace = Some(String::new());
        Self { net, next_id: 1 }
    }

    fn run(&mut self, command: &str) -> String {
        let tokens = tokenize(command);
        let (name, args) = tokens.split_first().expect("empty command");
        let positional: Vec<&str> =
            args.iter().filter(|a| !a.contains('=')).map(String::as_str).collect();
        let named: BTreeMap<&str, &str> = args.iter().filter_map(|a| a.split_once('=')).collect();
        let id = || parse_id(positional[0]);
        let mut out = String::new();
        let net = &mut self.net;
        match name.as_str() {
            "add-nodes" => {
                let n: u64 = positional[0].parse().unwrap();
                let ids: Vec<u64> = (self.next_id..self.next_id + n).collect();
                self.next_id += n;
                let voters = named.get("voters").map_or_else(|| ids.clone(), |v| parse_list(v));
                let learners = named.get("learners").map_or_else(Vec::new, |v| parse_list(v));
                let cs =
                    ConfState { voters: rids(&voters), learners: rids(&learners), ..conf(&[]) };
                let flag = |key: &str, default: bool| {
                    named.get(key).map_or(default, |v| v.parse().unwrap())
                };
                for &id in &ids {
                    let mut config = config(id);
                    config.pre_vote = flag("pre-vote", true);
                    config.check_quorum = flag("check-quorum", true);
                    config.lease_read = flag("lease-read", config.check_quorum);
                    if let Some(v) = named.get("election") {
                        config.election_ticks = v.parse().unwrap();
                        config.lease_ticks = config.election_ticks * 4 / 5;
                        config.seed = seed_for(id, config.election_ticks);
                    }
                    if let Some(v) = named.get("heartbeat") {
                        config.heartbeat_ticks = v.parse().unwrap();
                    }
                    if let Some(v) = named.get("inflight") {
                        config.inflight_msgs_max = v.parse().unwrap();
                    }
                    if let Some(v) = named.get("max-uncommitted") {
                        config.uncommitted_bytes_max = v.parse().unwrap();
                    }
                    if let Some(v) = named.get("append-bytes") {
                        config.append_bytes_max = v.parse().unwrap();
                    }
                    net.add_node(config, cs.clone());
                    net.warm_up_node(id);
                }
            }
            "campaign" => net.raw(id()).campaign(),
            "propose" => {
                let data = Bytes::copy_from_slice(positional[1].as_bytes());
                match net.raw(id()).propose(data) {
                    Ok(index) => writeln!(out, "index {index}").unwrap(),
                    Err(error) => writeln!(out, "error: {error}").unwrap(),
                }
            }
            "propose-conf-change" => {
                let mut change = ConfChange::default();
                for arg in &args[1..] {
                    let step = match arg.split_once('=') {
                        Some(("add", v)) => ConfChangeStep::AddVoter(rid(parse_id(v))),
                        Some(("add-learner", v)) => ConfChangeStep::AddLearner(rid(parse_id(v))),
                        Some(("remove", v)) => ConfChangeStep::Remove(rid(parse_id(v))),
                        None if arg == "explicit-leave" => {
                            change.explicit_leave = true;
                            continue;
                        }
                        _ => panic!("unknown conf change argument {arg:?}"),
                    };
                    change.steps.push(step);
                }
                match net.raw(id()).propose_conf_change(&change) {
                    Ok(index) => writeln!(out, "index {index}").unwrap(),
                    Err(error) => writeln!(out, "error: {error}").unwrap(),
                }
            }
            "transfer-leader" => {
                if let Err(error) = net.raw(id()).transfer_leader(rid(parse_id(positional[1]))) {
                    writeln!(out, "error: {error}").unwrap();
                }
            }
            "read-index" => {
                let context = Bytes::copy_from_slice(positional[1].as_bytes());
                if let Err(error) = net.raw(id()).read_index(context) {
                    writeln!(out, "error: {error}").unwrap();
                }
            }
            "quiesce" => {
                let unreachable =
                    named.get("unreachable").map_or_else(Vec::new, |v| rids(&parse_list(v)));
                let quiesced = net.raw(id()).quiesce(&unreachable);
                writeln!(out, "{quiesced}").unwrap();
            }
            "wake" => net.raw(id()).wake(),
            "report-snapshot" => {
                let success = match positional[2] {
                    "ok" => true,
                    "fail" => false,
                    other => panic!("report-snapshot: ok or fail, not {other:?}"),
                };
                net.raw(id()).report_snapshot(rid(parse_id(positional[1])), success);
            }
            "report-unreachable" => net.raw(id()).report_unreachable(rid(parse_id(positional[1]))),
            "stabilize" => net.stabilize(),
            "process-ready" => {
                for p in &positional {
                    net.process_ready(parse_id(p));
                }
            }
            "deliver" => {
                net.deliver_round();
            }
            "tick" => {
                let n = positional.get(1).map_or(1, |n| n.parse().unwrap());
                let ids: Vec<u64> = if positional[0] == "all" {
                    net.nodes.keys().copied().collect()
                } else {
                    vec![id()]
                };
                for id in ids {
                    net.tick(id, n);
                }
            }
            "partition" => {
                let groups: Vec<Vec<u64>> = positional.iter().map(|g| parse_list(g)).collect();
                let refs: Vec<&[u64]> = groups.iter().map(Vec::as_slice).collect();
                net.partition(&refs);
            }
            "isolate" => net.isolate(id()),
            "cut" => net.cut(id(), parse_id(positional[1])),
            "drop-if" => {
                let kind = named.get("kind").map(|k| parse_kind(k));
                let from = named.get("from").map(|v| rid(parse_id(v)));
                let to = named.get("to").map(|v| rid(parse_id(v)));
                net.drop_if = Some(Box::new(move |m| {
                    kind.is_none_or(|k| k == m.kind)
                        && from.is_none_or(|f| f == m.from)
                        && to.is_none_or(|t| t == m.to)
                }));
            }
            "heal" => net.heal(),
            "crash" => net.crash(id()),
            "restart" => net.restart(id()),
            "hold" => net.set_hold(id(), true),
            "persist" => net.persist(id()),
            "release" => net.set_hold(id(), false),
            "compact" => net.compact(id(), LogIndex(positional[1].parse().unwrap())),
            "status" => {
                let ids: Vec<u64> = if positional.is_empty() {
                    let mut all: Vec<u64> = (1..self.next_id).collect();
                    all.retain(|id| net.nodes.contains_key(id) || net.is_down(*id));
                    all
                } else {
                    positional.iter().map(|p| parse_id(p)).collect()
                };
                for id in ids {
                    if net.is_down(id) {
                        writeln!(out, "{id}: crashed").unwrap();
                    } else {
                        writeln!(out, "{}", net.node(id).status()).unwrap();
                    }
                }
            }
            "log" => {
                for p in &positional {
                    let node = net.node(parse_id(p));
                    let store = node.raw.store();
                    let mut line = format!("{}:", node.id);
                    if store.first_index() > LogIndex(1) {
                        let snapshot = store.snapshot(LogIndex(0)).unwrap();
                        write!(
                            line,
                            " snapshot {}/{}",
                            snapshot.metadata.term, snapshot.metadata.index
                        )
                        .unwrap();
                    }
                    for entry in store.stored_entries() {
                        write!(line, " {}", common::fmt_entry(entry)).unwrap();
                    }
                    let stored_last = store.last_index();
                    let unpersisted: Vec<String> = (stored_last.0 + 1..=node.raw.last_index().0)
                        .map(|i| format!("{}/{i}", node.raw.term_at(LogIndex(i)).unwrap()))
                        .collect();
                    if !unpersisted.is_empty() {
                        write!(line, " | unpersisted: {}", unpersisted.join(" ")).unwrap();
                    }
                    writeln!(out, "{line}").unwrap();
                }
            }
            "applied" => {
                for p in &positional {
                    let node = net.node(parse_id(p));
                    writeln!(out, "{}: {:?}", node.id, node.sm.strings()).unwrap();
                }
            }
            other => panic!("unknown command {other:?}"),
        }
        let mut result = net.take_trace();
        result.push_str(&out);
        let result = result.trim_end().to_string();
        if result.is_empty() { "ok".to_string() } else { result }
    }
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] =
                if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            writeln!(out, "  {}", a[i]).unwrap();
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            writeln!(out, "+ {}", b[j]).unwrap();
            j += 1;
        } else {
            writeln!(out, "- {}", a[i]).unwrap();
            i += 1;
        }
    }
    out
}

fn run_file(path: &Path) {
    let content =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (cases, trailing) = parse(&content);
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut script = Script::new();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = script.run(&case.command);
        if actual != case.expected {
            failures.push(format!("{}\n----\n{}", case.command, diff(&case.expected, &actual)));
        }
        write!(rewritten, "{}{}\n----\n{}\n", case.prefix, case.command, actual).unwrap();
    }
    rewritten.push_str(&trailing);
    if rewrite {
        if rewritten != content {
            std::fs::write(path, rewritten).unwrap();
        }
    } else if !failures.is_empty() {
        panic!(
            "{}: {} case(s) differ from the expected output (REWRITE=1 to regenerate, then review the diff):\n\n{}",
            path.display(),
            failures.len(),
            failures.join("\n")
        );
    }
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata").join(name)
}

macro_rules! scripts {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_file(&testdata($file));
            }
        )*

        /// Every script in testdata/ has a test.
        #[test]
        fn every_script_is_run() {
            let mut files: Vec<String> = std::fs::read_dir(testdata(""))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".txt"))
                .collect();
            files.sort();
            let mut listed = vec![$($file.to_string()),*];
            listed.sort();
            assert_eq!(files, listed);
        }
    };
}

scripts! {
    async_persistence => "async_persistence.txt",
    figure_8 => "figure_8.txt",
    joint_consensus => "joint_consensus.txt",
    leader_transfer => "leader_transfer.txt",
    lease_read => "lease_read.txt",
    partitioned_leader => "partitioned_leader.txt",
    prevote_election => "prevote_election.txt",
    quiescence => "quiescence.txt",
    read_index => "read_index.txt",
    snapshot => "snapshot.txt",
}
