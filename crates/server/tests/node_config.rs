//! Running nodes from config files, the mistakes that stop a start (each named in the
//! message), the admin HTTP endpoints of a store and a placement member, and a store that
//! hands its leaders to the other stores when asked to stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, spawn};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// A TCP loopback address that was free a moment ago.
fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_BACKTRACE", "0").stdin(Stdio::null()).output().unwrap()
}

/// Runs `args`, expects a failed start, returns stderr.
fn refused(args: &[&str]) -> String {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "`tessera {}`: {stderr}", args.join(" "));
    stderr
}

/// `GET path` on `addr`: (status code, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls `GET path` until `done` holds for the parsed JSON body.
fn json_eventually(addr: SocketAddr, path: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(addr, path);
        if status == 200 {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            if done(&value) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{path} on {addr} never became as expected: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn config_mistakes_stop_the_start_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let data = dir.path().join("store-1");
    let listen = free_port();
    let base = format!(
        "store_id = 1\ncluster_id = 5\ndata_dir = {data:?}\nlisten = \"{listen}\"\n\
         insecure_dev_certs = {certs:?}\ninitial_stores = [1]\n"
    );

    // Unknown key, bad address, bad label, wrong type: named with the file.
    let unknown = write(dir.path(), "unknown.toml", &format!("{base}colour = \"blue\"\n"));
    let stderr = refused(&["store", "--config", &unknown]);
    assert!(stderr.contains("unknown.toml") && stderr.contains("colour"), "{stderr}");
    let address = write(dir.path(), "address.toml", &base.replace(&listen.to_string(), "nowhere"));
    let stderr = refused(&["store", "--config", &address]);
    assert!(stderr.contains("address.toml") && stderr.contains("listen"), "{stderr}");
    let label = write(dir.path(), "label.toml", &format!("{base}labels = [\"zone\"]\n"));
    assert!(refused(&["store", "--config", &label]).contains("KEY=VALUE"));
    let workers = write(dir.path(), "workers.toml", &format!("{base}raft_workers = 0\n"));
    let stderr = refused(&["store", "--config", &workers]);
    assert!(stderr.contains("--raft-workers must be between 1 and 64, not 0"), "{stderr}");
    let stderr =
        refused(&["store", "--config", &write(dir.path(), "t.toml", "store_id = \"one\"")]);
    assert!(stderr.contains("store_id"), "{stderr}");
    assert!(refused(&["store", "--config", "/nonexistent/store.toml"]).contains("/nonexistent"));

    // A missing value names the flag and the key; a flag with a bad address is a usage error.
    let partial = write(dir.path(), "partial.toml", "store_id = 1\ncluster_id = 5\n");
    let stderr = refused(&["store", "--config", &partial]);
    assert!(stderr.contains("--data-dir") && stderr.contains("data_dir"), "{stderr}");
    assert_eq!(run(&["store", "--config", &partial, "--listen", "x"]).status.code(), Some(2));

    // TLS: a missing certificate file is named; half the files is refused.
    let no_tls = base.replace(&format!("insecure_dev_certs = {certs:?}\n"), "");
    let files = format!(
        "{no_tls}tls_ca = \"{0}/ca.pem\"\ntls_cert = \"{0}/node.pem\"\ntls_key = \"{0}/key.pem\"\n",
        dir.path().display()
    );
    let stderr = refused(&["store", "--config", &write(dir.path(), "tls.toml", &files)]);
    assert!(stderr.contains("ca.pem") && stderr.contains("does not exist"), "{stderr}");
    let stderr = refused(&["store", "--config", &write(dir.path(), "none.toml", &no_tls)]);
    assert!(stderr.contains("no TLS material"), "{stderr}");

    // A data directory of another cluster: the store starts once, then not as cluster 6.
    let good = write(dir.path(), "good.toml", &format!("{base}raft_workers = 2\n"));
    let store = spawn(&["store".to_owned(), "--config".to_owned(), good.clone()]);
    assert!(store.terminate());
    let stderr = refused(&["store", "--config", &good, "--cluster-id", "6"]);
    assert!(stderr.contains("cluster 5") && stderr.contains("not cluster 6"), "{stderr}");

    // Placement members too: an unknown key, and a data directory of another cluster.
    let member_listen = free_port();
    let member = format!(
        "id = 101\ncluster_id = 5\ndata_dir = {:?}\nlisten = \"{member_listen}\"\n\
         members = [\"101={member_listen}\"]\ninsecure_dev_certs = {certs:?}\n",
        dir.path().join("placement-101")
    );
    let typo = write(dir.path(), "member-typo.toml", &format!("{member}max_replica = 3\n"));
    let stderr = refused(&["placement", "--config", &typo]);
    assert!(stderr.contains("max_replica"), "{stderr}");
    let member = write(dir.path(), "member.toml", &member);
    let process = spawn(&["placement".to_owned(), "--config".to_owned(), member.clone()]);
    assert!(process.terminate());
    let stderr = refused(&["placement", "--config", &member, "--cluster-id", "6"]);
    assert!(stderr.contains("belongs to cluster 5, not 6"), "{stderr}");
}

#[test]
fn admin_http_shows_a_store_and_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let member_listen = free_port();
    let member_admin = free_tcp();
    let member = write(
        dir.path(),
        "member.toml",
        &format!(
            "id = 101\ncluster_id = 8\ndata_dir = {:?}\nlisten = \"{member_listen}\"\n\
             members = [\"101={member_listen}\"]\ninsecure_dev_certs = {certs:?}\n\
             admin_addr = \"{member_admin}\"\ntick_ms = 20\nmax_replicas = 1\n",
            dir.path().join("placement-101")
        ),
    );
    let _member = spawn(&["placement".to_owned(), "--config".to_owned(), member]);
    let store_admin = free_tcp();
    let store = write(
        dir.path(),
        "store.toml",
        &format!(
            "store_id = 1\ncluster_id = 8\ndata_dir = {:?}\nlisten = \"{}\"\n\
             placement = [\"101={member_listen}\"]\ninsecure_dev_certs = {certs:?}\n\
             admin_addr = \"{store_admin}\"\ntick_ms = 20\nlabels = [\"zone=a\", \"host=h1\"]\n\
             load_split_qps = 0\n",
            dir.path().join("store-1"),
            free_port()
        ),
    );
    let _store = spawn(&["store".to_owned(), "--config".to_owned(), store]);

    for admin in [store_admin, member_admin] {
        assert_eq!(get(admin, "/health"), (200, "ok\n".to_owned()));
        let (status, metrics) = get(admin, "/metrics");
        assert_eq!(status, 200);
        assert!(metrics.contains("tessera_"), "{metrics}");
        assert_eq!(get(admin, "/nothing").0, 404);
    }
    json_eventually(store_admin, "/status", |status| {
        status["kind"] == "store" && status["store_id"] == 1 && status["leaders"] == 1
    });
    json_eventually(store_admin, "/ranges", |ranges| {
        let ranges = ranges["ranges"].as_array().unwrap();
        ranges.len() == 1 && ranges[0]["range_id"] == 1 && ranges[0]["is_leader"] == true
    });
    json_eventually(member_admin, "/status", |status| {
        status["kind"] == "placement"
            && status["serving_leader"] == true
            && status["bootstrapped"] == true
            && status["stores"].as_array().unwrap().len() == 1
    });
    json_eventually(member_admin, "/ranges", |ranges| {
        ranges["ranges"].as_array().unwrap().iter().any(|range| range["range_id"] == 1)
    });
    // The store's request counters reach /metrics.
    let (_, metrics) = get(store_admin, "/metrics");
    assert!(metrics.contains("tessera_admin_requests_total"), "{metrics}");
}

#[test]
fn a_stopping_store_hands_its_leaders_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs").display().to_string();
    let stores: Vec<(u64, SocketAddr, SocketAddr)> =
        (1..=3).map(|id| (id, free_port(), free_tcp())).collect();
    let args = |id: u64| -> Vec<String> {
        let (_, listen, admin) = stores[usize::try_from(id - 1).unwrap()];
        let mut args: Vec<String> = [
            "store",
            "--store-id",
            &id.to_string(),
            "--cluster-id",
            "9",
            "--listen",
            &listen.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--initial-stores",
            "1,2,3",
            "--insecure-dev-certs",
            &certs,
            "--tick-ms",
            "20",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.extend([
            "--data-dir".to_owned(),
            dir.path().join(format!("s{id}")).display().to_string(),
        ]);
        for (peer, addr, _) in &stores {
            if *peer != id {
                args.extend(["--peer".to_owned(), format!("{peer}={addr}")]);
            }
        }
        args
    };
    let mut processes: Vec<Option<Process>> = (1..=3).map(|id| Some(spawn(&args(id)))).collect();
    // Wait for range 1's leader, as its store's /status shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let leading = stores.iter().find(|(_, _, admin)| {
            let (status, body) = get(*admin, "/status");
            status == 200
                && serde_json::from_str::<serde_json::Value>(&body).unwrap()["leaders"] == 1
        });
        if let Some((id, _, _)) = leading {
            break *id;
        }
        assert!(Instant::now() < deadline, "no store leads range 1");
        std::thread::sleep(Duration::from_millis(50));
    };
    let index = usize::try_from(leader - 1).unwrap();
    let process = processes[index].take().unwrap();
    let output = process.terminate_with_output(Duration::from_secs(20));
    assert!(
        output.contains(&format!("tessera store {leader} stopping: 0 ranges still led here")),
        "{output}"
    );
    // Another store leads now.
    let (_, _, other) = stores.iter().find(|(id, _, _)| *id != leader).copied().unwrap();
    json_eventually(other, "/ranges", |ranges| {
        ranges["ranges"][0]["leader_replica"].as_u64().is_some_and(|replica| replica != leader)
    });
}
