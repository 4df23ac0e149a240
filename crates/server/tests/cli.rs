//! `tessera playground` and the operator CLI, run as a user runs them: the playground in a
//! temporary directory (its client profile lands there), every admin command from that
//! directory with no connection flags, tables and `--json`, exit codes, and a clean stop
//! of every node on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The playground process; killed if the test fails before stopping it.
struct Playground {
    child: Child,
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A base port whose playground ports (UDP and TCP, base..base+39) are all free now.
fn free_base() -> u16 {
    // Tests of this file run at once in one process: each draws from its own sequence.
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut seed = u64::from(std::process::id()) ^ (draw << 40) ^ 0x5eed;
    loop {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let base = 30_000 + u16::try_from((seed >> 33) % 30_000).unwrap();
        if (0..40).all(|offset| {
            UdpSocket::bind(("127.0.0.1", base + offset)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok()
        }) {
            return base;
        }
    }
}

fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `args` until `done` holds for its output (the cluster acts asynchronously).
fn eventually(dir: &Path, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = tessera(dir, args);
        let text = stdout(&output);
        if output.status.success() && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`tessera {}` never gave what was expected:\n{text}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_playground_serves_the_cli_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base_port = free_base();
    let base = base_port.to_string();
    let playground = playground(dir.path(), base_port, &[]);
    assert!(dir.path().join(".tessera-profile.toml").exists());
    let here = dir.path();

    // cluster status: table and JSON.
    let status = stdout(&tessera(here, &["cluster", "status"]));
    assert!(status.contains("bootstrapped") && status.contains("stores 3 (3 up)"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&tessera(here, &["cluster", "status", "--json"]))).unwrap();
    assert_eq!(json["stores"].as_array().unwrap().len(), 3);
    assert_eq!(json["bootstrapped"], true);

    // store list / label / offline / up.
    let stores: serde_json::Value =
        serde_json::from_str(&stdout(&tessera(here, &["store", "list", "--json"]))).unwrap();
    assert_eq!(stores.as_array().unwrap().len(), 3);
    assert!(tessera(here, &["store", "label", "3", "zone=z3", "rack=r9"]).status.success());
    eventually(here, &["store", "list"], |text| text.contains("rack=r9"));
    assert!(tessera(here, &["store", "offline", "3"]).status.success());
    eventually(here, &["store", "list"], |text| text.contains("Offline"));
    assert!(tessera(here, &["store", "up", "3"]).status.success());
    eventually(here, &["store", "list"], |text| !text.contains("Offline"));

    // range split / list / transfer-leader.
    assert!(tessera(here, &["range", "split", "m"]).status.success());
    let ranges =
        eventually(here, &["range", "list", "--json"], |text| text.contains("\"start_key\":\"m\""));
    let ranges: serde_json::Value = serde_json::from_str(&ranges).unwrap();
    let right = ranges.as_array().unwrap().iter().find(|r| r["start_key"] == "m").unwrap().clone();
    let leader = right["leader_store"].as_u64().unwrap_or(1);
    let target = if leader == 1 { 2 } else { 1 };
    let range_id = right["id"].as_u64().unwrap().to_string();
    assert!(
        tessera(here, &["range", "transfer-leader", &range_id, &target.to_string()])
            .status
            .success()
    );
    eventually(here, &["range", "list", "--json"], |text| {
        let ranges: serde_json::Value = serde_json::from_str(text).unwrap();
        ranges
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["start_key"] == "m" && r["leader_store"] == target)
    });

    // placement rules.
    assert!(
        tessera(
            here,
            &[
                "placement",
                "rule",
                "set",
                "eu",
                "--start",
                "eu/",
                "--end",
                "eu0",
                "--voter",
                "zone=z1|z2|z3"
            ]
        )
        .status
        .success()
    );
    let rules = stdout(&tessera(here, &["placement", "rule", "list"]));
    assert!(rules.contains("eu") && rules.contains("zone=z1|z2|z3"), "{rules}");
    eventually(here, &["range", "list"], |text| {
        text.contains("\"eu/\"") && text.contains("\"eu0\"")
    });
    assert!(tessera(here, &["placement", "rule", "delete", "eu"]).status.success());
    assert!(!stdout(&tessera(here, &["placement", "rule", "list"])).contains("eu/"));

    // operators: the ones above are listed; one added by hand, then cancelled.
    let operators = stdout(&tessera(here, &["operator", "list"]));
    assert!(operators.contains("admin") && operators.contains("split"), "{operators}");
    // The scheduler may be running an operator on range 1 (one per range): retry.
    eventually(here, &["operator", "add", "1", "split:c"], |_| true);
    assert!(tessera(here, &["operator", "cancel", "1"]).status.success());

    // Data: put, get, scan, compare-and-swap (set and delete), delete, delete-range.
    assert_eq!(stdout(&tessera(here, &["kv", "put", "a", "1"])).trim(), "OK");
    assert_eq!(stdout(&tessera(here, &["kv", "get", "a"])).trim(), "1");
    let absent = tessera(here, &["kv", "get", "nothing"]);
    assert_eq!(absent.status.code(), Some(3), "{absent:?}");
    assert!(String::from_utf8_lossy(&absent.stderr).contains("not found"));
    for (key, value) in [("user/1", "ann"), ("user/2", "bob"), ("users", "x"), ("z", "zed")] {
        assert!(tessera(here, &["kv", "put", key, value]).status.success());
    }
    let scan = stdout(&tessera(here, &["kv", "scan", "--prefix", "user/"]));
    assert_eq!(scan, "user/1\tann\nuser/2\tbob\n");
    let scan: serde_json::Value = serde_json::from_str(&stdout(&tessera(
        here,
        &["kv", "scan", "a", "z", "--limit", "2", "--json"],
    )))
    .unwrap();
    assert_eq!(
        scan["pairs"],
        serde_json::json!([{"key": "a", "value": "1"}, {"key": "user/1", "value": "ann"}])
    );
    let refused = tessera(here, &["kv", "cas", "a", "--expect", "7", "--new", "2"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(stdout(&refused).contains("NOT swapped (value before: 1)"), "{refused:?}");
    let swapped = tessera(here, &["kv", "cas", "a", "--expect", "1", "--new", "2", "--json"]);
    let swapped: serde_json::Value = serde_json::from_str(&stdout(&swapped)).unwrap();
    assert_eq!(swapped, serde_json::json!({"key": "a", "swapped": true, "previous": "1"}));
    assert!(tessera(here, &["kv", "cas", "new", "--expect-absent", "--new", "n"]).status.success());
    assert!(tessera(here, &["kv", "cas", "a", "--expect", "2", "--delete"]).status.success());
    assert_eq!(tessera(here, &["kv", "get", "a"]).status.code(), Some(3));
    assert!(tessera(here, &["kv", "delete", "new"]).status.success());
    assert_eq!(tessera(here, &["kv", "get", "new"]).status.code(), Some(3));
    assert!(tessera(here, &["kv", "delete-range", "user/", "user0"]).status.success());
    let scan = stdout(&tessera(here, &["kv", "scan"]));
    assert!(
        !scan.contains("user/") && scan.contains("users\tx") && scan.contains("z\tzed"),
        "{scan}"
    );
    assert_eq!(tessera(here, &["kv", "cas", "a", "--new", "1"]).status.code(), Some(2));
    assert_eq!(tessera(here, &["kv", "delete-range", "b", "a"]).status.code(), Some(1));

    // Mistakes: a bad flag is a usage error (2), a refusal from the cluster is 1 with a message.
    assert_eq!(tessera(here, &["operator", "add", "1", "jump:3"]).status.code(), Some(2));
    let refused = tessera(here, &["store", "offline", "99"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("store 99"), "{refused:?}");
    let elsewhere = tempfile::tempdir().unwrap();
    let lost = tessera(elsewhere.path(), &["cluster", "status"]);
    assert_eq!(lost.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&lost.stderr).contains("no placement members"), "{lost:?}");
    // From elsewhere, flags stand in for the profile: --placement, --cluster-id and --ca
    // (the CA certificate's path, or its directory).
    let profile: toml::Table =
        std::fs::read_to_string(here.join(".tessera-profile.toml")).unwrap().parse().unwrap();
    let certs = std::path::PathBuf::from(profile["certs_dir"].as_str().unwrap());
    let cluster_id = profile["cluster_id"].as_integer().unwrap().to_string();
    let ca = certs.join("ca.pem");
    let mut args = vec!["kv", "get", "z", "--cluster-id", &cluster_id, "--ca"];
    args.push(ca.to_str().unwrap());
    for member in profile["placement"].as_array().unwrap() {
        args.extend(["--placement", member.as_str().unwrap()]);
    }
    assert_eq!(stdout(&tessera(elsewhere.path(), &args)).trim(), "zed");

    // SIGTERM stops every node; nothing keeps the ports.
    let mut playground = playground;
    let _ = Command::new("kill").args(["-TERM", &playground.child.id().to_string()]).status();
    let status = playground.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let base: u16 = base.parse().unwrap();
    assert!(
        (0..3).all(|offset| UdpSocket::bind(("127.0.0.1", base + offset)).is_ok()),
        "a store still runs"
    );
}

/// Starts a playground in `dir` with `args`; returns it once ready.
fn playground(dir: &Path, base: u16, args: &[&str]) -> Playground {
    let base = base.to_string();
    let mut child = Command::new(BIN)
        .args(["playground", "--base-port", &base, "--tick-ms", "20"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap());
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { return };
            if line.contains("ready in") {
                let _ = ready.send(line);
            }
        }
    });
    let playground = Playground { child };
    wait.recv_timeout(Duration::from_secs(120)).expect("the playground never became ready");
    playground
}

#[test]
fn a_placement_member_joins_and_an_old_one_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let _playground = playground(dir.path(), base, &["--placement", "3", "--stores", "1"]);
    let here = dir.path();
    let members = stdout(&tessera(here, &["placement", "member", "list"]));
    assert_eq!(members.lines().filter(|line| line.contains("true")).count(), 3, "{members}");
    // A fourth member joins: started empty with --join, then added by the CLI.
    let profile = std::fs::read_to_string(here.join(".tessera-profile.toml")).unwrap();
    let cluster_id =
        profile.lines().find_map(|l| l.strip_prefix("cluster_id = ")).unwrap().to_owned();
    let certs = here.join("data/playground/certs");
    let addr = format!("127.0.0.1:{}", base + 13);
    let mut join = Command::new(BIN);
    join.args([
        "placement",
        "--id",
        "104",
        "--cluster-id",
        &cluster_id,
        "--join",
        "--tick-ms",
        "20",
    ])
    .arg("--data-dir")
    .arg(here.join("member-104"))
    .args(["--listen", &addr])
    .arg("--insecure-dev-certs")
    .arg(&certs);
    for (id, offset) in [(101, 10), (102, 11), (103, 12)] {
        join.args(["--member", &format!("{id}=127.0.0.1:{}", base + offset)]);
    }
    let newcomer = Playground { child: join.stdout(Stdio::null()).spawn().unwrap() };
    assert!(tessera(here, &["placement", "member", "add", "104", &addr]).status.success());
    eventually(here, &["placement", "member", "list", "--json"], |text| {
        let members: serde_json::Value = serde_json::from_str(text).unwrap();
        members.as_array().unwrap().iter().any(|m| m["id"] == 104 && m["voter"] == true)
    });
    // An old member leaves; the group of three (one new) still serves.
    assert!(tessera(here, &["placement", "member", "remove", "101"]).status.success());
    let members = eventually(here, &["placement", "member", "list", "--json"], |text| {
        let members: serde_json::Value = serde_json::from_str(text).unwrap();
        members.as_array().unwrap().len() == 3
    });
    assert!(!members.contains("\"id\":101"), "{members}");
    eventually(here, &["cluster", "status"], |text| text.contains("stores 1 (1 up)"));
    drop(newcomer);
}
