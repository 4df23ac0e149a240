//! `tessera playground`: a local cluster on loopback — placement members and stores as
//! child processes of this same binary, development TLS, data under `--data-dir` (kept
//! across runs). It waits until the cluster serves, prints where everything is, writes a
//! client profile in the current directory (so `tessera cluster status` there needs no
//! flags), and stops every node cleanly on Ctrl-C or SIGTERM.
//!
//! Ports are fixed from `--base-port` (placement members at `base + 10 + i`, stores at
//! `base + i`; default base 20160, clear of etcd's 2379/2380) because the placement group
//! keeps its members' addresses: a restarted playground must find them where they were.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
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
    #[arg(long)]
    pub exit_when_ready: bool,
}

/// A node of the playground, stopped (SIGTERM, then SIGKILL) when dropped.
struct Node {
    name: String,
    child: Child,
}

impl Node {
    fn stop(&mut self) {
        let pid = self.child.id();
        // SIGTERM lets the node stop cleanly; `kill` from the standard library only knows
        // SIGKILL.
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
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
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Starts `tessera <args>`, its output into `log`, and waits for its readiness line.
fn start(name: &str, args: &[String], log: &Path) -> Result<Node> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log.with_extension("err.log")).context("creating a log")?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
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
    let mut node = Node { name: name.to_owned(), child };
    let errors = log.with_extension("err.log");
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
    for (_, addr) in members.iter().chain(&stores) {
        if !port_free(*addr) {
            bail!("{addr} is in use (another playground?); stop it or pick --base-port");
        }
    }
    let tick = args.tick_ms.to_string();
    let common = |kind: &str, id: u64, listen: SocketAddr| -> Vec<String> {
        let id_flag = if kind == "store" { "--store-id" } else { "--id" };
        vec![
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
        ]
    };
    let mut nodes = Vec::new();
    for (id, addr) in &members {
        let mut node_args = common("placement", *id, *addr);
        for (member, member_addr) in &members {
            node_args.push("--member".to_owned());
            node_args.push(format!("{member}={member_addr}"));
        }
        let name = format!("placement-{id}");
        nodes.push(start(&name, &node_args, &logs.join(format!("{name}.log")))?);
        println!("placement member {id:<3} on {addr}");
    }
    for (id, addr) in &stores {
        let mut node_args = common("store", *id, *addr);
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
        nodes.push(start(&name, &node_args, &logs.join(format!("{name}.log")))?);
        println!("store            {id:<3} on {addr}");
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
    let exe = std::env::current_exe()
        .map_or_else(|_| "tessera".to_owned(), |path| path.display().to_string());
    println!("\ntry, from this directory:\n  {exe} cluster status\n  {exe} range list\n");
    if args.exit_when_ready {
        return Ok(());
    }
    println!("Ctrl-C stops the cluster.");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    crate::wait_for_shutdown(&runtime)?;
    println!("\nstopping the cluster…");
    // Stores first (they may still report to placement), then placement members.
    for node in nodes.iter_mut().rev() {
        node.stop();
    }
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
