//! `tessera playground --demo --exit-when-ready`, run as `make run` runs it (with a fast
//! tick): every narrated step appears, the demo reads everything back, the playground exits
//! 0, and no node outlives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The whole run may take this long before the test gives up.
const DEADLINE: Duration = Duration::from_secs(180);

/// A base port whose playground ports (base..base+40, UDP and TCP) are all free now.
fn free_base() -> u16 {
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64;
    loop {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let base = 30_000 + u16::try_from((seed >> 33) % 30_000).unwrap();
        if (0..40).all(|offset| {
            UdpSocket::bind(("127.0.0.1", base + offset)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + offset)).is_ok()
        }) {
            return base;
        }
    }
}

/// The pids of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

#[test]
fn the_demo_tells_its_story_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = free_base().to_string();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["playground", "--demo", "--exit-when-ready", "--tick-ms", "20"])
        .args(["--base-port", &base])
        .arg("--data-dir")
        .arg(&data)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
            panic!("the demo did not end within {DEADLINE:?}:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap();
    println!("{output}\n(the demo took {:.1} s)", started.elapsed().as_secs_f64());
    assert!(status.success(), "{status:?}\n{output}");
    for step in [
        "loaded 20,000 keys",
        "split done",
        "killed store",
        "writes continue:",
        "restarted store",
        "keys read back",
    ] {
        assert!(output.contains(step), "`{step}` is missing from:\n{output}");
    }
    assert!(!output.contains("demo failed"), "{output}");
    assert!(dir.path().join(".tessera-profile.toml").exists());
    // Every node was stopped: none runs on this data directory any more.
    let data = data.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&data);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "nodes still run:\n{}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}
