//! Real `tessera` processes for end-to-end tests: where the binary is, free loopback ports,
//! spawning with a readiness deadline, signals (SIGKILL, SIGTERM, SIGSTOP, SIGCONT), and
//! the command lines of placement members and stores.
//!
//! Every process writes its stderr to a log file in the test's own directory (named in the
//! panic message when it does not become ready), and is killed when dropped, so a failing
//! test leaves nothing running.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a process may take to print its readiness line.
pub const READY: Duration = Duration::from_secs(60);

/// The `tessera` binary of this build: next to the test binary's `deps/` directory, where
/// `cargo test --workspace` and `cargo nextest run --workspace` put it. Built on demand
/// (`cargo build -p tessera --bin tessera`) when a test runs with only this package built.
///
/// # Panics
/// The binary is missing and cannot be built.
#[must_use]
pub fn tessera_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| if deps.ends_with("deps") { deps.parent() } else { Some(deps) })
        .expect("the test binary lives in a target directory")
        .to_path_buf();
    let bin = profile_dir.join("tessera");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--offline", "-p", "tessera", "--bin", "tessera"])
            .status()
            .unwrap_or_else(|error| panic!("cannot run `{cargo} build -p tessera`: {error}"));
        assert!(status.success(), "`cargo build -p tessera` failed");
    }
    assert!(bin.exists(), "{} not found after building it", bin.display());
    bin
}

/// Example `name` of workspace package `package`, in this build's `examples/` directory;
/// built on demand (`cargo build -p PACKAGE --example NAME`) when missing.
///
/// # Panics
/// The example is missing and cannot be built.
#[must_use]
pub fn example_bin(package: &str, name: &str) -> PathBuf {
    let bin = tessera_bin().with_file_name("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--offline", "-p", package, "--example", name])
            .status()
            .unwrap_or_else(|error| panic!("cannot run `{cargo} build --example {name}`: {error}"));
        assert!(status.success(), "`cargo build -p {package} --example {name}` failed");
    }
    assert!(bin.exists(), "{} not found after building it", bin.display());
    bin
}

/// A loopback UDP address that was free a moment ago.
///
/// # Panics
/// No port can be bound.
#[must_use]
pub fn free_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a free loopback UDP port");
    socket.local_addr().expect("a bound socket's address")
}

/// A running `tessera` process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// The process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The name it was spawned with.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (`"KILL"`, `"TERM"`, `"STOP"`, `"CONT"`).
    ///
    /// # Panics
    /// `kill` cannot be run.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {} failed", self.child.id());
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits at most `deadline` for it to exit;
    /// returns whether it exited successfully in time (it is killed otherwise).
    pub fn terminate(mut self, deadline: Duration) -> bool {
        self.signal("TERM");
        let until = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (a `tessera …` command line, built by the caller so that it may run
/// under `ip netns exec` or `faketime`), its stderr into `log`, and waits at most [`READY`]
/// for a stdout line containing `ready on`.
///
/// # Panics
/// The process cannot start, or is not ready in time (the panic names the log).
#[must_use]
pub fn spawn_ready(name: &str, mut command: Command, log: &Path) -> Process {
    let stderr = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|error| panic!("starting {name}: {error}"));
    let stdout = child.stdout.take().expect("a piped stdout");
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("ready on") {
                let _ = ready.send(line);
            }
        }
    });
    let process = Process { child, name: name.to_owned() };
    if wait.recv_timeout(READY).is_err() {
        panic!("{name} was not ready within {READY:?}; see {}", log.display());
    }
    process
}

/// The command line of placement member `id` of `members` in cluster `cluster_id`, with its
/// data under `data` and dev certificates in `certs`, ticking every 20 ms.
#[must_use]
pub fn placement_args(
    cluster_id: u64,
    id: u64,
    members: &[(u64, SocketAddr)],
    data: &Path,
    certs: &Path,
) -> Vec<String> {
    let listen = members
        .iter()
        .find(|(member, _)| *member == id)
        .expect("the member is one of the members")
        .1;
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
    args
}

/// The command line of store `id` of cluster `cluster_id` listening on `listen`, joining
/// through the placement members `placement`, with its data under `data` and dev
/// certificates in `certs`, ticking every 20 ms, labelled `host=h{id}`.
#[must_use]
pub fn store_args(
    cluster_id: u64,
    id: u64,
    listen: SocketAddr,
    placement: &[(u64, SocketAddr)],
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
        "--label".to_owned(),
        format!("host=h{id}"),
    ];
    for (member, addr) in placement {
        args.push("--placement".to_owned());
        args.push(format!("{member}={addr}"));
    }
    args
}

/// A `tessera` command with `args`.
#[must_use]
pub fn tessera(args: &[String]) -> Command {
    let mut command = Command::new(tessera_bin());
    command.args(args);
    command
}

/// Where process `name` of a test writes its stderr: `{dir}/{name}.log`, in the test's own
/// temporary directory.
#[must_use]
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

impl Process {
    /// Whether the process has exited (reaping it if so), without waiting.
    ///
    /// # Panics
    /// Its status cannot be read.
    #[must_use]
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("reading a child's exit status").is_some()
    }
}
