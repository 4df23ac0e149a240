//! etcd: the reference peer of `tessera-bench compare`.
//!
//! BENCHMARKING.md's reference peer is Debian's etcd 3.4 (`etcd-server`), 3 members on loopback
//! with etcd's default settings (fsync on) and linearizable gets. This module provides the
//! three pieces a comparison needs:
//!
//! - [`ensure_installed`] finds `etcd` and `etcdctl`, installing Debian's packages if they are
//!   missing;
//! - [`EtcdCluster`] runs a cluster of etcd processes on free loopback ports, waits until every
//!   member reports itself healthy, and stops them all again (also on drop, on a panic, and —
//!   through `PR_SET_PDEATHSIG` — when the benchmark itself is killed);
//! - [`EtcdDriver`] sends gets, puts and scans through the `etcd-client` crate over several
//!   gRPC connections, picked round robin, like etcd's own benchmark tool.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, DeleteOptions, GetOptions, KvClient};
use rustix::process::{Pid, Signal};

/// How long [`EtcdCluster::start`] waits for every member to report itself healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`EtcdCluster::start`] asks the members for their health.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long one `/health` request may take (etcd answers it after a linearizable read).
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`EtcdCluster::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a member's log an error quotes.
const LOG_TAIL_BYTES: u64 = 4096;
/// Time to establish one gRPC connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one request, so that a lost reply fails a run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The Debian packages that provide `etcd` and `etcdctl`.
const ETCD_PACKAGE: &str = "etcd-server";
const ETCDCTL_PACKAGE: &str = "etcd-client";

/// Where `etcd` and `etcdctl` are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdBinaries {
    /// The server.
    pub etcd: PathBuf,
    /// The command-line client (handy to look into a cluster; not used by the driver).
    pub etcdctl: PathBuf,
}

impl EtcdBinaries {
    /// The first line of `etcd --version`, e.g. `etcd Version: 3.4.23`, for reports.
    ///
    /// # Errors
    /// If `etcd` cannot be run or prints nothing.
    pub fn version(&self) -> Result<String> {
        let output = Command::new(&self.etcd)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --version", self.etcd.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .next()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .ok_or_else(|| anyhow!("{} --version printed nothing", self.etcd.display()))
    }
}

/// Finds `etcd` and `etcdctl` on `PATH` (or in `/usr/bin`); if either is missing, installs
/// Debian's `etcd-server` / `etcd-client` with `apt-get install -y`, running `apt-get update`
/// first only if the install fails for want of package lists. Says what it does on stderr.
///
/// # Errors
/// If the binaries are missing and cannot be installed (not root, no apt, no such package).
pub fn ensure_installed() -> Result<EtcdBinaries> {
    // Tests of one process may call this at once: one apt-get at a time (other processes are
    // waited for through dpkg's lock, see `apt_get`).
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);

    let (etcd, etcdctl) = (find_binary("etcd"), find_binary("etcdctl"));
    if let (Some(etcd), Some(etcdctl)) = (&etcd, &etcdctl) {
        return Ok(EtcdBinaries { etcd: etcd.clone(), etcdctl: etcdctl.clone() });
    }
    let packages: Vec<&str> =
        [(etcd.is_none(), ETCD_PACKAGE), (etcdctl.is_none(), ETCDCTL_PACKAGE)]
            .into_iter()
            .filter_map(|(missing, package)| missing.then_some(package))
            .collect();
    let listed = packages.join(" ");
    if !rustix::process::geteuid().is_root() {
        bail!("etcd is not installed and installing it needs root: apt-get install {listed}");
    }

    eprintln!("tessera-bench: etcd not found; installing Debian packages: {listed}");
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    let output = apt_get(&install)?;
    if !output.status.success() {
        let text = combined(&output);
        if !wants_package_lists(&text) {
            bail!("apt-get install {listed} failed ({}):\n{}", output.status, tail(&text));
        }
        eprintln!("tessera-bench: apt-get has no (current) package lists; running apt-get update");
        let update = apt_get(&["update", "-q"])?;
        if !update.status.success() {
            bail!("apt-get update failed ({}):\n{}", update.status, tail(&combined(&update)));
        }
        let retry = apt_get(&install)?;
        if !retry.status.success() {
            let text = combined(&retry);
            bail!("apt-get install {listed} failed ({}):\n{}", retry.status, tail(&text));
        }
    }
    eprintln!("tessera-bench: installed {listed}");

    match (find_binary("etcd"), find_binary("etcdctl")) {
        (Some(etcd), Some(etcdctl)) => Ok(EtcdBinaries { etcd, etcdctl }),
        _ => bail!(
            "installed {listed}, but etcd or etcdctl is still neither on PATH nor in /usr/bin"
        ),
    }
}

/// `name` on `PATH`, else in `/usr/bin` (where Debian puts it, should `PATH` be minimal).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(std::iter::once(Path::new("/usr/bin").join(name)))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `apt-get ARGS` non-interactively, echoing its output to stderr (stdout stays free
/// for a benchmark's results). Waits up to two minutes for dpkg's lock held by another apt.
fn apt_get(args: &[&str]) -> Result<Output> {
    eprintln!("tessera-bench: apt-get {}", args.join(" "));
    let output = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=120"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get (is this Debian?)")?;
    eprint!("{}", combined(&output));
    Ok(output)
}

fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// Whether apt-get failed because its package lists are missing or stale.
fn wants_package_lists(apt_output: &str) -> bool {
    ["Unable to locate package", "has no installation candidate", "Failed to fetch", "404"]
        .iter()
        .any(|sign| apt_output.contains(sign))
}

/// The last lines of `text` (at most [`LOG_TAIL_BYTES`]).
fn tail(text: &str) -> &str {
    let limit = usize::try_from(LOG_TAIL_BYTES).unwrap_or(usize::MAX);
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    cut.split_once('\n').map_or(cut, |(_, rest)| rest)
}

/// The last lines of the log file at `path`, or why it cannot be read.
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let text = if len > LOG_TAIL_BYTES {
            text.split_once('\n').map_or(&*text, |(_, rest)| rest)
        } else {
            &text
        };
        Ok(text.to_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(the log is empty)".to_owned(),
        Ok(text) => text,
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// A cluster of etcd processes on 127.0.0.1, each with its own data directory and log file
/// under one directory, bootstrapped statically, with etcd's default durability (every
/// write fsynced). Stopped by [`EtcdCluster::stop`] or on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    /// The thread that spawned the members and lives as long as they may run.
    parent: Option<ParentThread>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_addr: SocketAddr,
    log: PathBuf,
    pid: u32,
    /// `None` once the process has been reaped.
    child: Option<Child>,
}

/// The thread that spawns a cluster's processes. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked a process ends, not the process, so the members are forked from a thread of
/// their own that ends only after they have been stopped (or with the whole benchmark) —
/// not from the caller's, which may be a short-lived one (a tokio blocking thread, a test).
#[derive(Debug)]
struct ParentThread {
    /// Dropping it lets the thread end.
    release: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl ParentThread {
    /// Spawns `commands` in order from a new thread, stopping at the first that fails.
    /// Returns the thread, the processes started and the error that stopped it, if any.
    fn spawn(commands: Vec<Command>) -> Result<(Self, Vec<Child>, Option<io::Error>)> {
        let (release, released) = mpsc::channel::<()>();
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("etcd-parent".to_owned())
            .spawn(move || {
                let mut children = Vec::new();
                let mut error = None;
                for mut command in commands {
                    match command.spawn() {
                        Ok(child) => children.push(child),
                        Err(spawn_error) => {
                            error = Some(spawn_error);
                            break;
                        }
                    }
                }
                // Should the receiver be gone, returning ends this thread and so the children.
                if spawned_tx.send((children, error)).is_ok() {
                    // Until the cluster drops `release` (an error: no message is ever sent).
                    released.recv().ok();
                }
            })
            .context("starting the thread that spawns etcd")?;
        let (children, error) =
            spawned_rx.recv().context("the thread that spawns etcd ended unexpectedly")?;
        Ok((Self { release, handle }, children, error))
    }
}

/// Makes the process that `command` starts receive SIGKILL when the thread that spawns it
/// ends (see [`ParentThread`]), so a benchmark killed with SIGKILL leaves no etcd behind.
#[allow(
    unsafe_code,
    reason = "Command::pre_exec is unsafe; the closure makes only async-signal-safe system calls"
)]
fn die_with_parent(command: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // operations are sound (the parent's other threads may have held locks, e.g. the
    // allocator's, at the fork). It makes two plain system calls through rustix, prctl
    // (PR_SET_PDEATHSIG) and getppid, which neither allocate nor take locks; it captures only
    // a `Pid` (Copy) and touches no other state; and its errors are
    // `io::Error::from_raw_os_error` values, which do not allocate.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // If the benchmark died between fork and prctl, no signal will come: give up.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// `count` distinct free TCP ports on 127.0.0.1 (each was bound, then released).
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect::<io::Result<Vec<_>>>()
        .context("reading a listener's port")
}

/// A cluster token no other cluster on this machine has, so that members of different
/// clusters (say, a leftover one) can never join each other.
fn unique_token() -> String {
    static CLUSTERS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
    let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    format!("tessera-bench-{}-{nanos}-{serial}", std::process::id())
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"` (etcd 3.4 says so only
/// with a leader, no alarm, and a linearizable read that succeeded); otherwise why not.
fn health(addr: SocketAddr) -> std::result::Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, HEALTH_REQUEST_TIMEOUT)
        .map_err(|error| format!("connecting: {error}"))?;
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = Vec::new();
    stream
        .set_read_timeout(Some(HEALTH_REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HEALTH_REQUEST_TIMEOUT)))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .and_then(|()| stream.take(64 * 1024).read_to_end(&mut response))
        .map_err(|error| format!("GET /health: {error}"))?;
    let response = String::from_utf8_lossy(&response);
    let body = response.split_once("\r\n\r\n").map_or(&*response, |(_, body)| body);
    if body.replace(' ', "").contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(format!("GET /health answered {:?}", body.trim()))
    }
}

impl EtcdCluster {
    /// Starts `members` etcd processes on 127.0.0.1 (free ports), with data directories
    /// `DIR/mN.etcd` and logs `DIR/mN.log`, and waits (up to 30 s) until every member's
    /// `/health` says it is healthy. Blocks the calling thread while it waits.
    ///
    /// # Errors
    /// If `members` is 0, `dir` holds a data directory already, a process cannot be started,
    /// exits, or is not healthy in time; the error quotes the end of that member's log. The
    /// processes started so far are stopped.
    pub fn start(binaries: &EtcdBinaries, dir: &Path, members: usize) -> Result<Self> {
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ports = free_ports(2 * members)?;
        let names: Vec<String> = (0..members).map(|index| format!("m{index}")).collect();
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let (client_ports, peer_ports): (Vec<u16>, Vec<u16>) =
            ports.chunks_exact(2).map(|pair| (pair[0], pair[1])).unzip();
        let initial_cluster = names
            .iter()
            .zip(&peer_ports)
            .map(|(name, &port)| format!("{name}={}", url(port)))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_token();

        let mut commands = Vec::with_capacity(members);
        let mut logs = Vec::with_capacity(members);
        for ((name, &client_port), &peer_port) in names.iter().zip(&client_ports).zip(&peer_ports) {
            let data_dir = dir.join(format!("{name}.etcd"));
            if data_dir.exists() {
                bail!(
                    "{} exists: an etcd cluster needs fresh data directories",
                    data_dir.display()
                );
            }
            let log_path = dir.join(format!("{name}.log"));
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let log_err = log.try_clone().context("duplicating a log file handle")?;
            let (client_url, peer_url) = (url(client_port), url(peer_port));
            let mut command = Command::new(&binaries.etcd);
            command
                .arg("--name")
                .arg(name)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            // Only the flags above configure the members: etcd also reads ETCD_* variables.
            for (key, _) in std::env::vars_os() {
                if key.to_str().is_some_and(|key| key.starts_with("ETCD_")) {
                    command.env_remove(&key);
                }
            }
            die_with_parent(&mut command);
            commands.push(command);
            logs.push(log_path);
        }

        let (parent, children, spawn_error) = ParentThread::spawn(commands)?;
        // From here on, dropping `cluster` (on any error below) stops what was started.
        let mut cluster = Self { dir: dir.to_owned(), members: Vec::new(), parent: Some(parent) };
        for (((name, &client_port), log), child) in
            names.into_iter().zip(&client_ports).zip(logs).zip(children)
        {
            cluster.members.push(Member {
                name,
                client_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, client_port)),
                log,
                pid: child.id(),
                child: Some(child),
            });
        }
        if let Some(error) = spawn_error {
            let name = format!("m{}", cluster.members.len());
            return Err(error).with_context(|| {
                format!("starting etcd member {name} ({})", binaries.etcd.display())
            });
        }
        cluster.wait_ready(READY_TIMEOUT)?;
        Ok(cluster)
    }

    /// Polls every member until all are healthy, one exits, or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut unhealthy: Vec<(usize, String)> =
            (0..self.members.len()).map(|index| (index, "not asked yet".to_owned())).collect();
        loop {
            let mut still = Vec::with_capacity(unhealthy.len());
            for (index, _) in unhealthy {
                let member = &mut self.members[index];
                let exited = match member.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => Some(status.to_string()),
                    Some(Err(error)) => Some(format!("cannot be waited for: {error}")),
                    Some(Ok(None)) => None,
                    None => Some("was stopped".to_owned()),
                };
                if let Some(exited) = exited {
                    bail!(
                        "etcd member {} (pid {}) exited during startup ({exited}); the end of \
                         its log {}:\n{}",
                        member.name,
                        member.pid,
                        member.log.display(),
                        log_tail(&member.log)
                    );
                }
                if let Err(reason) = health(member.client_addr) {
                    still.push((index, reason));
                }
            }
            unhealthy = still;
            let Some((first, reason)) = unhealthy.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let member = &self.members[*first];
                let names: Vec<&str> =
                    unhealthy.iter().map(|(index, _)| self.members[*index].name.as_str()).collect();
                bail!(
                    "etcd members {names:?} not healthy after {timeout:?}; {} (pid {}, {}): \
                     {reason}; the end of its log {}:\n{}",
                    member.name,
                    member.pid,
                    member.client_addr,
                    member.log.display(),
                    log_tail(&member.log)
                );
            }
            thread::sleep(READY_POLL);
        }
    }

    /// The members' client URLs, `http://127.0.0.1:PORT`, in member order.
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|member| format!("http://{}", member.client_addr)).collect()
    }

    /// The members' process ids (for CPU accounting), in member order; they stay listed
    /// after [`stop`](Self::stop).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|member| member.pid).collect()
    }

    /// The directory holding the members' data directories and logs.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every member: SIGTERM, then SIGKILL for those still running after 10 s; reaps
    /// them all. Idempotent; also run on drop.
    pub fn stop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut()
                && matches!(child.try_wait(), Ok(None))
            {
                // ESRCH at worst: it exited in between and `try_wait` below reaps it.
                rustix::process::kill_process(Pid::from_child(child), Signal::TERM).ok();
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let mut running = false;
            for member in &mut self.members {
                let Some(child) = member.child.as_mut() else { continue };
                match child.try_wait() {
                    Ok(Some(_)) => member.child = None,
                    Ok(None) => running = true,
                    Err(_) => {
                        child.kill().ok();
                        child.wait().ok();
                        member.child = None;
                    }
                }
            }
            if !running {
                break;
            }
            if Instant::now() >= deadline {
                for member in &mut self.members {
                    if let Some(mut child) = member.child.take() {
                        eprintln!(
                            "tessera-bench: etcd member {} (pid {}) ignored SIGTERM for {:?}; \
                             sending SIGKILL",
                            member.name, member.pid, STOP_TIMEOUT
                        );
                        child.kill().ok();
                        child.wait().ok();
                    }
                }
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(parent) = self.parent.take() {
            drop(parent.release);
            // The thread only waits for `release`; a panic there has nothing left to report.
            parent.handle.join().ok();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of an etcd cluster for many concurrent tasks: `connections` gRPC connections
/// (separate `etcd_client::Client`s, each its own HTTP/2 connection), the i-th to endpoint
/// `i % endpoints`, used round robin — as etcd's benchmark tool hands out its connections —
/// so that hundreds of concurrent requests are not multiplexed on one connection.
/// Gets are linearizable (etcd's default). Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct EtcdDriver {
    inner: Arc<DriverInner>,
}

struct DriverInner {
    endpoints: Vec<String>,
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl fmt::Debug for EtcdDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDriver")
            .field("endpoints", &self.inner.endpoints)
            .field("connections", &self.inner.clients.len())
            .finish_non_exhaustive()
    }
}

/// A key no workload writes, read to check each connection at connect time.
const PROBE_KEY: &[u8] = b"\0tessera-bench-connect-probe";

impl EtcdDriver {
    /// Opens `connections` (at least 1) connections spread round robin over `endpoints`, and
    /// checks each with a linearizable read.
    ///
    /// # Errors
    /// If `endpoints` is empty or a connection or its first read fails.
    pub async fn connect(endpoints: &[String], connections: usize) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("no etcd endpoints to connect to");
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let mut clients = Vec::with_capacity(connections.max(1));
        for (_, endpoint) in (0..connections.max(1)).zip(endpoints.iter().cycle()) {
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .with_context(|| format!("connecting to etcd at {endpoint}"))?;
            client
                .kv_client()
                .get(PROBE_KEY, Some(GetOptions::new().with_count_only()))
                .await
                .with_context(|| format!("a first read from etcd at {endpoint}"))?;
            clients.push(client);
        }
        Ok(Self {
            inner: Arc::new(DriverInner {
                endpoints: endpoints.to_vec(),
                clients,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The next connection, round robin (a cheap clone of its channel handle).
    fn kv(&self) -> KvClient {
        let clients = &self.inner.clients;
        let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        clients[index].kv_client()
    }

    /// Reads `key` (linearizable).
    ///
    /// # Errors
    /// etcd's or the connection's error.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let mut response = self.kv().get(key, None).await.context("etcd get")?;
        Ok(response.take_kvs().into_iter().next().map(|kv| Bytes::from(kv.into_key_value().1)))
    }

    /// Writes `key` = `value` (committed, and fsynced by a majority, when it returns).
    ///
    /// # Errors
    /// etcd's or the connection's error.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv().put(key, value, None).await.context("etcd put")?;
        Ok(())
    }

    /// Reads up to `limit` pairs with keys from `start` on, to the end of the key space
    /// (linearizable), and returns how many came back. `limit` 0 means no limit (etcd's
    /// convention).
    ///
    /// # Errors
    /// etcd's or the connection's error.
    pub async fn scan(&self, start: &[u8], limit: u32) -> Result<usize> {
        let options = GetOptions::new().with_from_key().with_limit(i64::from(limit));
        let response = self.kv().get(start, Some(options)).await.context("etcd scan")?;
        Ok(response.kvs().len())
    }

    /// Deletes every key (for a clean run).
    ///
    /// # Errors
    /// etcd's or the connection's error.
    pub async fn delete_all(&self) -> Result<()> {
        let options = DeleteOptions::new().with_all_keys();
        self.kv().delete(Vec::<u8>::new(), Some(options)).await.context("etcd delete all")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }

    /// Whether a process of the cluster in `dir` still runs as `pid` (its command line names
    /// `dir`, so a recycled pid does not count).
    fn runs(pid: u32, dir: &Path) -> bool {
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
        })
    }

    #[test]
    fn three_members_put_get_scan_then_stop() -> Result<()> {
        let binaries = ensure_installed()?;
        eprintln!("{}", binaries.version()?);
        let dir = tempfile::tempdir()?;
        let mut cluster = EtcdCluster::start(&binaries, dir.path(), 3)?;
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        assert!(endpoints.iter().all(|endpoint| endpoint.starts_with("http://127.0.0.1:")));
        let pids = cluster.pids();
        assert!(pids.iter().all(|&pid| runs(pid, dir.path())), "members run: {pids:?}");

        runtime().block_on(async {
            let driver = EtcdDriver::connect(&endpoints, 4).await?;
            driver.delete_all().await?;
            for index in 0..5 {
                driver
                    .put(format!("key/{index:02}").as_bytes(), format!("value {index}").as_bytes())
                    .await?;
            }
            assert_eq!(driver.get(b"key/02").await?, Some(Bytes::from("value 2")));
            assert_eq!(driver.get(b"key/99").await?, None);
            // From many tasks at once, over all connections.
            let tasks: Vec<_> = (0..16)
                .map(|task| {
                    let driver = driver.clone();
                    tokio::spawn(async move {
                        let key = format!("task/{task:02}");
                        driver.put(key.as_bytes(), b"x").await?;
                        driver.get(key.as_bytes()).await
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await??, Some(Bytes::from_static(b"x")));
            }
            // From `start` to the end of the key space: key/01..key/04 and all 16 task/ keys.
            assert_eq!(driver.scan(b"key/01", 100).await?, 4 + 16);
            assert_eq!(driver.scan(b"task/10", 100).await?, 6);
            assert_eq!(driver.scan(b"key/", 2).await?, 2);
            assert_eq!(driver.scan(b"", 0).await?, 5 + 16);
            driver.delete_all().await?;
            assert_eq!(driver.scan(b"", 0).await?, 0);
            anyhow::Ok(())
        })?;

        cluster.stop();
        assert!(!pids.iter().any(|&pid| runs(pid, dir.path())), "members gone: {pids:?}");
        assert!(dir.path().join("m0.log").exists());
        cluster.stop();
        Ok(())
    }

    #[test]
    fn a_panicking_caller_leaves_no_etcd_behind() -> Result<()> {
        let binaries = ensure_installed()?;
        let dir = tempfile::tempdir()?;
        let pids = Mutex::new(Vec::new());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let cluster = EtcdCluster::start(&binaries, dir.path(), 1).expect("a 1-member cluster");
            pids.lock().unwrap_or_else(PoisonError::into_inner).extend(cluster.pids());
            panic!("the caller panics while the cluster runs");
        }));
        assert!(outcome.is_err());
        let pids = pids.into_inner().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(pids.len(), 1);
        assert!(!pids.iter().any(|&pid| runs(pid, dir.path())), "member gone: {pids:?}");
        Ok(())
    }

    /// Set in the child process of `a_killed_benchmark_leaves_no_etcd_behind`: the directory
    /// for its cluster.
    const CHILD_DIR: &str = "TESSERA_BENCH_ETCD_CHILD_DIR";

    #[test]
    fn a_killed_benchmark_leaves_no_etcd_behind() -> Result<()> {
        if let Some(dir) = std::env::var_os(CHILD_DIR) {
            // The child: start a cluster, say its pids, and wait to be killed (bounded).
            let dir = PathBuf::from(dir);
            let cluster = EtcdCluster::start(&ensure_installed()?, &dir.join("cluster"), 1)?;
            let pids: Vec<String> = cluster.pids().iter().map(u32::to_string).collect();
            fs::write(dir.join("pids.tmp"), pids.join(" "))?;
            fs::rename(dir.join("pids.tmp"), dir.join("pids"))?;
            thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        ensure_installed()?;
        let dir = tempfile::tempdir()?;
        let child_log = dir.path().join("child.log");
        let log = File::create(&child_log)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", "etcd::tests::a_killed_benchmark_leaves_no_etcd_behind"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let pids = loop {
            if let Ok(text) = fs::read_to_string(dir.path().join("pids")) {
                break text
                    .split_whitespace()
                    .map(str::parse::<u32>)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the child test exited ({status}):\n{}", log_tail(&child_log));
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                bail!("the child test's cluster did not start:\n{}", log_tail(&child_log));
            }
            thread::sleep(Duration::from_millis(50));
        };
        let cluster_dir = dir.path().join("cluster");
        assert!(pids.iter().all(|&pid| runs(pid, &cluster_dir)), "member runs: {pids:?}");

        // SIGKILL: no destructor runs; only PR_SET_PDEATHSIG can take etcd down with it.
        child.kill()?;
        child.wait()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&pid| runs(pid, &cluster_dir)) {
            assert!(Instant::now() < deadline, "etcd {pids:?} outlived the killed benchmark");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    #[test]
    fn a_member_that_exits_fails_start_with_its_log() -> Result<()> {
        // Not etcd: `sh` rejects etcd's flags and exits at once, which start must report.
        let binaries =
            EtcdBinaries { etcd: PathBuf::from("/bin/sh"), etcdctl: PathBuf::from("/bin/true") };
        let dir = tempfile::tempdir()?;
        let error = EtcdCluster::start(&binaries, dir.path(), 2)
            .err()
            .context("start of a cluster of /bin/sh succeeded")?;
        let message = format!("{error:#}");
        assert!(message.contains("exited during startup"), "{message}");
        assert!(message.contains("m0.log") || message.contains("m1.log"), "{message}");
        Ok(())
    }

    #[test]
    fn no_members_is_an_error() -> Result<()> {
        let binaries =
            EtcdBinaries { etcd: PathBuf::from("/bin/false"), etcdctl: PathBuf::from("/bin/true") };
        let dir = tempfile::tempdir()?;
        assert!(EtcdCluster::start(&binaries, dir.path(), 0).is_err());
        Ok(())
    }

    #[test]
    fn tail_keeps_whole_last_lines() {
        let text = "x".repeat(5000) + "\nlast line\n";
        assert_eq!(tail(&text), "last line\n");
        assert_eq!(tail("short\n"), "short\n");
    }
}
