//! Helpers shared by the tests that run real `tessera` processes: free loopback ports,
//! spawning the binary and waiting for its readiness line, killing it when dropped, and the
//! command lines of placement members and stores.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a process may take to print its readiness line.
pub const READY: Duration = Duration::from_secs(60);

/// A child process, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    /// Every line it printed on stdout so far.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM); whether it exited successfully within 30 s.
    pub fn terminate(self) -> bool {
        let (success, _) = self.stop(Duration::from_secs(30));
        success
    }

    /// Asks the process to stop (SIGTERM), waits at most `deadline` and returns its whole
    /// stdout; panics if it does not exit successfully in time.
    pub fn terminate_with_output(self, deadline: Duration) -> String {
        let (success, output) = self.stop(deadline);
        assert!(success, "the process did not stop cleanly in {deadline:?}:\n{output}");
        output
    }

    fn stop(mut self, deadline: Duration) -> (bool, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = std::time::Instant::now() + deadline;
        let mut success = false;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                success = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The reader thread sees the end of the pipe soon after the exit.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.lines) > 1 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = self.lines.lock().unwrap().join("\n");
        (success, output)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback UDP address that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Runs `tessera` with `args` and waits (at most [`READY`]) for its readiness line.
pub fn spawn(args: &[String]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready, wait) = mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("ready on") {
                let _ = ready.send(line.clone());
            }
            seen.lock().unwrap().push(line);
        }
    });
    let process = Process { child, lines };
    wait.recv_timeout(READY).unwrap_or_else(|_| panic!("`tessera {}` never became ready", args[0]));
    process
}

/// The command line of placement member `id` of `members` in cluster `cluster_id`, with its
/// data under `data` and dev certificates in `certs`, ticking every 20 ms, plus `extra`.
pub fn placement_args(
    cluster_id: u64,
    id: u64,
    members: &[(u64, SocketAddr)],
    data: &Path,
    certs: &Path,
    extra: &[&str],
) -> Vec<String> {
    let listen = members.iter().find(|(member, _)| *member == id).unwrap().1;
    let mut args = vec![
        "placement".to_owned(),
        "--id".to_owned(),
        id.to_string(),
        "--cluster-id".to_owned(),
        cluster_id.to_string(),
        "--data-dir".to_owned(),
        data.join(format!("placement-{id}")).display().to_string(),
        "--listen".to_owned(),
        listen.to_string(),
        "--insecure-dev-certs".to_owned(),
        certs.display().to_string(),
        "--tick-ms".to_owned(),
        "20".to_owned(),
    ];
    for (member, addr) in members {
        args.push("--member".to_owned());
        args.push(format!("{member}={addr}"));
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

/// The command line of store `id` of cluster `cluster_id` listening on `listen`, joining
/// through the placement members `placement`, with `labels` (`KEY=VALUE`), its data under
/// `data` and dev certificates in `certs`, ticking every 20 ms.
pub fn store_args(
    cluster_id: u64,
    id: u64,
    listen: SocketAddr,
    placement: &[(u64, SocketAddr)],
    labels: &[&str],
    data: &Path,
    certs: &Path,
) -> Vec<String> {
    let mut args = vec![
        "store".to_owned(),
        "--store-id".to_owned(),
        id.to_string(),
        "--cluster-id".to_owned(),
        cluster_id.to_string(),
        "--data-dir".to_owned(),
        data.join(format!("store-{id}")).display().to_string(),
        "--listen".to_owned(),
        listen.to_string(),
        "--insecure-dev-certs".to_owned(),
        certs.display().to_string(),
        "--tick-ms".to_owned(),
        "20".to_owned(),
    ];
    for (member, addr) in placement {
        args.push("--placement".to_owned());
        args.push(format!("{member}={addr}"));
    }
    for label in labels {
        args.push("--label".to_owned());
        args.push((*label).to_owned());
    }
    args
}
