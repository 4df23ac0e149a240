//! `tessera playground`: a local cluster on loopback — placement members and stores as
//! child processes of this same binary, development TLS, data under `--data-dir` (kept
//! across runs). It waits until the cluster serves, prints where everything is, writes a
//! client profile in the current directory (so `tessera cluster status` there needs no
//! flags), and stops every node cleanly on Ctrl-C or SIGTERM.
//!
//! Ports are fixed from `--base-port` (placement members at `base + 10 + i`, stores at
//! `base + i`; default base 20160, clear of etcd's 2379/2380) because the placement group
//! keeps its members' addresses: a restarted playground must find them where they were.
//!
//! With `--demo` it then runs the narrated demo of [`crate::demo`] (load, split, kill a
//! store, restart it, read everything back) before serving; a failed demo is reported and
//! the cluster keeps serving. On Linux the nodes get SIGTERM if the playground dies without
//! stopping them (even by SIGKILL).

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tessera_wire::placement::{PlacementRequest, PlacementResponse, StoreState};
use tessera_wire::range::ReplicaRole;

use crate::cli::Connection;
use crate::profile::{DEFAULT_PROFILE, Profile};

/// Arguments of `tessera playground`.
#[derive(Debug, clap::Args)]
pub struct PlaygroundArgs {
    /// Stores to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub stores: u64,
    /// Placement members to run (1 or 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub placement: u64,
    /// Where the nodes keep their data, certificates and logs.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
    /// The first port: stores listen from here, placement members from here + 10.
    #[arg(long, default_value_t = 20_160)]
    pub base_port: u16,
    /// Milliseconds per Raft tick on every node.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Stop once the cluster is up (for scripts and tests) instead of serving until Ctrl-C.
    /// With `--demo`: once the demo is over (exiting with an error if it failed).
    #[arg(long)]
    pub exit_when_ready: bool,
    /// Once the cluster is up, run a narrated demo: load keys, split the key space, kill the
    /// store leading the most ranges while writing, restart it, read everything back.
    #[arg(long)]
    pub demo: bool,
}

/// A node of the playground, stopped (SIGTERM, then SIGKILL) when dropped.
struct Node {
    name: String,
    /// The store's id, for a store.
    store: Option<u64>,
    /// Its command line after `tessera`, kept to restart it.
    args: Vec<String>,
    /// Its stdout log (stderr goes next to it, `.err.log`).
    log: PathBuf,
    child: Child,
}

impl Node {
    /// Sends SIGTERM, which lets the node stop cleanly (`kill` from the standard library
    /// only knows SIGKILL).
    fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    fn stop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop in 10 s: killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.running() {
            self.stop();
        }
    }
}

/// Asks the kernel to send the child SIGTERM when the playground dies, so that nodes do not
/// outlive a playground killed with SIGKILL. The signal follows the thread that spawned the
/// child: every node is spawned from the playground's main thread, which lives as long as
/// the process.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are sound. It makes two system calls through rustix's raw
    // syscall backend (`prctl(PR_SET_PDEATHSIG)` and `getppid`), allocates nothing, takes no
    // lock and touches no state shared with other threads of the parent; it only reads
    // `parent`, a plain `Copy` value captured before the fork.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The parent may have died before the request took effect: then the child has
            // been re-parented already and must not run on alone.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("the playground is gone"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_parent(_command: &mut Command) {}

/// Starts `tessera <args>`, its output into `log` (appended to with `append`, for a
/// restart), and waits for its readiness line.
fn start(
    name: &str,
    store: Option<u64>,
    args: Vec<String>,
    log: PathBuf,
    append: bool,
) -> Result<Node> {
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))
    };
    let errors = log.with_extension("err.log");
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut command = Command::new(exe);
    command.args(&args).stdout(Stdio::piped()).stderr(open(&errors)?);
    stop_with_parent(&mut command);
    let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut log_file = open(&log)?;
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = writeln!(log_file, "{line}");
            if line.contains("ready on") {
                let _ = ready.send(());
            }
        }
    });
    let mut node = Node { name: name.to_owned(), store, args, log, child };
    match wait.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => Ok(node),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = node.child.wait().map(|status| status.to_string()).unwrap_or_default();
            bail!("{name} exited at start ({status}); see {}", errors.display())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            node.stop();
            bail!("{name} did not start within 60 s; see {}", errors.display())
        }
    }
}

/// The running playground, as the demo sees it.
struct Playground {
    nodes: Vec<Node>,
    profile: Profile,
}

impl Playground {
    fn store_index(&self, id: u64) -> Result<usize> {
        self.nodes
            .iter()
            .position(|node| node.store == Some(id))
            .with_context(|| format!("the playground runs no store {id}"))
    }

    /// Restarts every node that is not running (after a demo that failed half-way).
    fn revive(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].running() {
                continue;
            }
            let node = &self.nodes[i];
            println!("{} is not running: starting it again", node.name);
            match start(&node.name, node.store, node.args.clone(), node.log.clone(), true) {
                Ok(node) => self.nodes[i] = node,
                Err(error) => println!("{error:#}"),
            }
        }
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        // Stores first (they may still report to placement), then placement members; the
        // nodes of each kind are asked at once, as a store's stop may wait for its leaders
        // to move.
        for stores in [true, false] {
            let mut stopping: Vec<&mut Node> = self
                .nodes
                .iter_mut()
                .filter(|node| node.store.is_some() == stores)
                .filter_map(|node| node.running().then_some(node))
                .collect();
            for node in &stopping {
                node.terminate();
            }
            for node in &mut stopping {
                node.stop();
            }
        }
    }
}

impl crate::demo::DemoCluster for Playground {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn stores(&self) -> Vec<u64> {
        self.nodes.iter().filter_map(|node| node.store).collect()
    }

    fn kill_store(&mut self, id: u64) -> Result<()> {
        let index = self.store_index(id)?;
        let child = &mut self.nodes[index].child;
        child.kill().with_context(|| format!("killing store {id}"))?;
        child.wait().with_context(|| format!("reaping store {id}"))?;
        Ok(())
    }

    fn restart_store(&mut self, id: u64) -> Result<()> {
        let index = self.store_index(id)?;
        let node = &mut self.nodes[index];
        if node.running() {
            bail!("store {id} is running");
        }
        let restarted = start(&node.name, node.store, node.args.clone(), node.log.clone(), true)?;
        self.nodes[index] = restarted;
        Ok(())
    }
}

fn port_free(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

/// The cluster id of this playground: made up on the first run, kept in the data dir.
fn cluster_id(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join("cluster-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text.trim().parse().with_context(|| format!("{} is damaged", path.display()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos());
    let id = u64::try_from(nanos % 1_000_000_000).unwrap_or(1) + 1;
    std::fs::write(&path, id.to_string()).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Runs the playground until Ctrl-C (or until ready, with `--exit-when-ready`).
///
/// # Errors
/// A port in use, a node that does not start, a cluster that does not come up in time.
pub fn run(args: &PlaygroundArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).context("resolving --data-dir")?;
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).context("creating the log directory")?;
    let certs = data_dir.join("certs");
    let cluster = cluster_id(&data_dir)?;
    let port = |offset: u64| -> Result<SocketAddr> {
        let port = u64::from(args.base_port) + offset;
        let port = u16::try_from(port).context("--base-port too high")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let members: Vec<(u64, SocketAddr)> =
        (1..=args.placement).map(|i| Ok((100 + i, port(10 + i - 1)?))).collect::<Result<_>>()?;
    let stores: Vec<(u64, SocketAddr)> =
        (1..=args.stores).map(|i| Ok((i, port(i - 1)?))).collect::<Result<_>>()?;
    // Admin HTTP endpoints: stores at base + 20 + i, placement members at base + 30 + i.
    let admin = |id: u64| -> Result<SocketAddr> {
        if id > 100 { port(30 + id - 101) } else { port(20 + id - 1) }
    };
    for (id, addr) in members.iter().chain(&stores) {
        if !port_free(*addr) {
            bail!("{addr} is in use (another playground?); stop it or pick --base-port");
        }
        let admin = admin(*id)?;
        if TcpListener::bind(admin).is_err() {
            bail!("{admin} (TCP) is in use (another playground?); stop it or pick --base-port");
        }
    }
    let tick = args.tick_ms.to_string();
    let common = |kind: &str, id: u64, listen: SocketAddr| -> Result<Vec<String>> {
        let id_flag = if kind == "store" { "--store-id" } else { "--id" };
        Ok(vec![
            kind.to_owned(),
            id_flag.to_owned(),
            id.to_string(),
            "--cluster-id".to_owned(),
            cluster.to_string(),
            "--data-dir".to_owned(),
            data_dir.join(format!("{kind}-{id}")).display().to_string(),
            "--listen".to_owned(),
            listen.to_string(),
            "--insecure-dev-certs".to_owned(),
            certs.display().to_string(),
            "--tick-ms".to_owned(),
            tick.clone(),
            "--admin-addr".to_owned(),
            admin(id)?.to_string(),
        ])
    };
    let mut nodes = Vec::new();
    for (id, addr) in &members {
        let mut node_args = common("placement", *id, *addr)?;
        for (member, member_addr) in &members {
            node_args.push("--member".to_owned());
            node_args.push(format!("{member}={member_addr}"));
        }
        let name = format!("placement-{id}");
        nodes.push(start(&name, None, node_args, logs.join(format!("{name}.log")), false)?);
        println!("placement member {id:<3} on {addr}, admin http://{}/", admin(*id)?);
    }
    for (id, addr) in &stores {
        let mut node_args = common("store", *id, *addr)?;
        for (member, member_addr) in &members {
            node_args.push("--placement".to_owned());
            node_args.push(format!("{member}={member_addr}"));
        }
        node_args.extend([
            "--label".to_owned(),
            format!("zone=z{id}"),
            "--label".to_owned(),
            format!("host=h{id}"),
        ]);
        let name = format!("store-{id}");
        nodes.push(start(&name, Some(*id), node_args, logs.join(format!("{name}.log")), false)?);
        println!("store            {id:<3} on {addr}, admin http://{}/", admin(*id)?);
    }
    let profile = Profile {
        cluster_id: cluster,
        certs_dir: certs.clone(),
        placement: members.iter().map(|(id, addr)| format!("{id}={addr}")).collect(),
    };
    let started = Instant::now();
    wait_until_ready(&profile, args.stores)?;
    profile.save(Path::new(DEFAULT_PROFILE))?;
    println!(
        "\ncluster {cluster} ready in {:.1} s: {} placement member(s), {} store(s); data and logs in {}",
        started.elapsed().as_secs_f64(),
        args.placement,
        args.stores,
        data_dir.display()
    );
    println!(
        "client profile written to ./{DEFAULT_PROFILE} (CA and certificates in {})",
        certs.display()
    );
    println!("\nadmin HTTP endpoints (also /ranges and /health):");
    for (id, _) in members.iter().chain(&stores) {
        let name = if *id > 100 { format!("placement {id}") } else { format!("store {id}") };
        let admin = admin(*id)?;
        println!("  {name:<14} http://{admin}/metrics  http://{admin}/status");
    }
    let exe = std::env::current_exe()
        .map_or_else(|_| "tessera".to_owned(), |path| path.display().to_string());
    println!("\ntry, from this directory:\n  {exe} cluster status\n  {exe} range list\n");
    let mut playground = Playground { nodes, profile };
    if args.demo
        && let Err(error) = crate::demo::run(&mut playground)
    {
        println!("\ndemo failed: {error:#}\n(node logs in {})", logs.display());
        playground.revive();
        if args.exit_when_ready {
            return Err(error.context("the demo failed"));
        }
        println!("the cluster keeps serving.");
    }
    if args.exit_when_ready {
        return Ok(());
    }
    println!("\nCtrl-C stops the cluster.");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    crate::wait_for_shutdown(&runtime)?;
    println!("\nstopping the cluster…");
    drop(playground);
    Ok(())
}

/// Waits until the cluster is bootstrapped, every store is up and the first range has its
/// replicas.
fn wait_until_ready(profile: &Profile, stores: u64) -> Result<()> {
    let conn = Connection::open(profile)?;
    let want = usize::try_from(stores.min(3)).unwrap_or(3);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let status = conn.call(PlacementRequest::ClusterStatus);
        let ranges = conn.call(PlacementRequest::ScanRanges {
            start_key: bytes::Bytes::new(),
            end_key: bytes::Bytes::new(),
            limit: 16,
        });
        match (status, ranges) {
            (
                Ok(PlacementResponse::ClusterStatus { status }),
                Ok(PlacementResponse::ScanRanges { routes }),
            ) => {
                let up = status.stores.iter().filter(|store| store.state == StoreState::Up).count();
                let replicated = !routes.is_empty()
                    && routes.iter().all(|route| {
                        route.leader.is_some()
                            && route
                                .descriptor
                                .replicas
                                .iter()
                                .filter(|r| r.role == ReplicaRole::Voter)
                                .count()
                                >= want
                    });
                if status.bootstrapped && up as u64 >= stores && replicated {
                    return Ok(());
                }
                last = format!("{up} of {stores} stores up, ranges replicated: {replicated}");
            }
            (Err(error), _) | (_, Err(error)) => last = format!("{error:#}"),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the cluster did not come up within 120 s ({last})")
}
