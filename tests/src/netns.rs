//! A virtual network for one test: Linux network namespaces joined by a bridge, and network
//! partitions made of `iptables` DROP rules.
//!
//! [`Network::new`] builds, in the root namespace, a bridge holding the address of the test
//! process ([`Network::client_addr`], `10.A.B.1/24`), and one namespace per node, each with
//! a veth pair into the bridge and its own address (`10.A.B.10`, `10.A.B.11`, …). The test
//! process (the client side) reaches every node through the bridge; nodes reach each other
//! through it too. A node's process runs inside its namespace through `ip netns exec`
//! ([`Network::command`]) and listens on [`Network::addr`].
//!
//! Partitions are DROP rules inside the node namespaces, on INPUT (by source address) and
//! OUTPUT (by destination address), for every pair of nodes cut from each other
//! ([`Network::cut`], [`Network::partition`], [`Network::isolate`]); [`Network::heal`] removes
//! them all. The client's address is never cut: a test can still talk to an isolated node
//! (to check that it does not acknowledge anything on its own).
//!
//! # Names and subnets
//!
//! Every name derives from the subnet `10.A.B.0/24` the network claims: the bridge
//! `tnAxBb`, the namespaces `tnAxBnI`, the veths `tnAxBhI` (bridge side) and `tnAxBpI`
//! (namespace side), all within the 15 bytes of an interface name. The first subnet tried is
//! `A = 200 + pid % 50`, `B` a per-process counter; a subnet is claimed by creating its
//! bridge, which fails if another test process holds it, and is skipped if any address or
//! route of the root namespace already lies in it. So concurrent test processes never share
//! a name or a subnet.
//!
//! # Clean-up
//!
//! Dropping the [`Network`] (also while a failing test unwinds) kills whatever still runs in
//! its namespaces, deletes the namespaces (with their rules and veths) and the bridge. A
//! test process killed outright cannot do that: each network is recorded in a file under
//! [`STATE_DIR`] naming its owner's process id and its pieces, and the next [`Network::new`] of any test
//! process removes the networks whose owner is gone.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where each live network is recorded (owner process id, namespaces, bridge).
pub const STATE_DIR: &str = "/tmp/tessera-tests-netns";

/// The environment variable that turns a skip (not root, no `ip netns`) into a failure.
pub const REQUIRE_ENV: &str = "TESSERA_REQUIRE_NETNS";

/// The first host number of a node in its subnet (`.1` is the client's).
const FIRST_NODE_HOST: u8 = 10;

/// Networks made by this process so far: the second component of the next subnet tried.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the network tests cannot run here: not root, or no working `ip netns` or
/// `iptables`. Prints why and returns `true` (the caller returns at once); panics instead
/// when [`REQUIRE_ENV`] is set, so a CI job that means to run them cannot skip them by
/// accident.
///
/// # Panics
/// The tests cannot run and [`REQUIRE_ENV`] is set.
#[must_use]
pub fn skip_unless_root() -> bool {
    let Some(reason) = unavailable() else { return false };
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{REQUIRE_ENV} is set but network namespaces are unavailable: {reason}"
    );
    eprintln!("skipped: network namespace tests need root, `ip netns` and iptables: {reason}");
    true
}

/// Why network namespaces cannot be used here, if they cannot.
fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse::<u32>().ok());
    if euid != Some(0) {
        return Some(format!("the effective user id is {euid:?}, not 0"));
    }
    if let Err(error) = run("ip", &["netns", "list"]) {
        return Some(format!("`ip netns list` failed: {error}"));
    }
    if let Err(error) = run("iptables", &["--version"]) {
        return Some(format!("`iptables --version` failed: {error}"));
    }
    None
}

/// Runs `program` with `args`; its stdout, or why it failed (with its stderr).
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `{program}`: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs `program` with `args` and panics if it fails.
fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|error| panic!("building the test network: {error}"))
}

/// One node of a [`Network`].
#[derive(Debug, Clone)]
struct Node {
    /// The test's name for it (`p101`, `s1`, …).
    name: String,
    /// Its namespace.
    namespace: String,
    /// The bridge side of its veth pair.
    host_veth: String,
    /// Its address.
    addr: Ipv4Addr,
}

/// A bridge and one network namespace per node, removed when dropped. See the module
/// documentation.
#[derive(Debug)]
pub struct Network {
    /// The prefix of every name (`tnAxB`).
    prefix: String,
    bridge: String,
    client: Ipv4Addr,
    /// The first three octets of the subnet.
    subnet: [u8; 3],
    nodes: Vec<Node>,
    /// Pairs of node indices cut from each other, smaller index first.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    record: PathBuf,
}

impl Network {
    /// Builds the bridge and one namespace for each of `nodes` (the test's names for them,
    /// distinct), in a subnet and with names no other network uses.
    ///
    /// # Panics
    /// A name is repeated, there are more than 200 nodes, no subnet is free, or a command
    /// fails (the part already built is removed).
    #[must_use]
    pub fn new(nodes: &[&str]) -> Self {
        let distinct: BTreeSet<&str> = nodes.iter().copied().collect();
        assert_eq!(distinct.len(), nodes.len(), "node names must be distinct: {nodes:?}");
        assert!(nodes.len() <= 200, "at most 200 nodes per network");
        sweep_stale();
        let mut network = Self::claim();
        for name in nodes {
            network.add_node(name);
        }
        network
    }

    /// Claims a free subnet by creating its bridge; the network is recorded at once, so a
    /// panic from here on removes what was built.
    fn claim() -> Self {
        let pid = std::process::id();
        let first_a = 200 + pid % 50;
        let first_b = COUNTER.fetch_add(1, Ordering::Relaxed);
        let used = used_prefixes();
        for step in 0..50 * 256 {
            let a = 200 + (first_a - 200 + (first_b + step) / 256) % 50;
            let b = (first_b + step) % 256;
            let (a, b) = (
                u8::try_from(a).expect("the second octet is below 250"),
                u8::try_from(b).expect("the third octet is below 256"),
            );
            if used.contains(&(a, b)) {
                continue;
            }
            let prefix = format!("tn{a}x{b}");
            let bridge = format!("{prefix}b");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
                // Another test process holds this subnet (or its bridge lingers).
                continue;
            }
            let record = Path::new(STATE_DIR).join(&prefix);
            let network = Self {
                prefix,
                bridge,
                client: Ipv4Addr::new(10, a, b, 1),
                subnet: [10, a, b],
                nodes: Vec::new(),
                cuts: Mutex::new(BTreeSet::new()),
                record,
            };
            network.write_record();
            let cidr = format!("{}/24", network.client);
            must("ip", &["addr", "add", &cidr, "dev", &network.bridge]);
            must("ip", &["link", "set", &network.bridge, "up"]);
            return network;
        }
        panic!("no free subnet in 10.200.0.0/16 – 10.249.255.0/24 for a test network");
    }

    /// Adds node `name`: its namespace, veth pair and address.
    fn add_node(&mut self, name: &str) {
        let index = self.nodes.len();
        let host = FIRST_NODE_HOST + u8::try_from(index).expect("at most 200 nodes");
        let [a, b, c] = self.subnet;
        let node = Node {
            name: name.to_owned(),
            namespace: format!("{}n{index}", self.prefix),
            host_veth: format!("{}h{index}", self.prefix),
            addr: Ipv4Addr::new(a, b, c, host),
        };
        let inner = format!("{}p{index}", self.prefix);
        // Recorded first: whatever exists of it is removed if a step below fails.
        self.nodes.push(node.clone());
        self.write_record();
        must("ip", &["netns", "add", &node.namespace]);
        must("ip", &["link", "add", &node.host_veth, "type", "veth", "peer", "name", &inner]);
        must("ip", &["link", "set", &inner, "netns", &node.namespace]);
        must("ip", &["link", "set", &node.host_veth, "master", &self.bridge, "up"]);
        let cidr = format!("{}/24", node.addr);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &cidr, "dev", &inner],
            &["link", "set", &inner, "up"],
        ] {
            let mut full = vec!["netns", "exec", &node.namespace, "ip"];
            full.extend_from_slice(args);
            must("ip", &full);
        }
    }

    /// Writes the record of this network (see [`STATE_DIR`]).
    fn write_record(&self) {
        let mut text = format!("{}\nbridge {}\n", std::process::id(), self.bridge);
        for node in &self.nodes {
            let _ = writeln!(text, "namespace {}", node.namespace);
            let _ = writeln!(text, "veth {}", node.host_veth);
        }
        std::fs::create_dir_all(STATE_DIR)
            .and_then(|()| std::fs::write(&self.record, text))
            .unwrap_or_else(|error| panic!("recording {}: {error}", self.record.display()));
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the test network"))
    }

    fn node(&self, name: &str) -> &Node {
        &self.nodes[self.index(name)]
    }

    /// The address of the test process on the bridge (the client side).
    #[must_use]
    pub const fn client_addr(&self) -> Ipv4Addr {
        self.client
    }

    /// Node `name`'s address.
    ///
    /// # Panics
    /// There is no such node.
    #[must_use]
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.node(name).addr
    }

    /// Node `name`'s namespace.
    ///
    /// # Panics
    /// There is no such node.
    #[must_use]
    pub fn namespace(&self, name: &str) -> &str {
        &self.node(name).namespace
    }

    /// The nodes' names, in the order given to [`Network::new`].
    #[must_use]
    pub fn nodes(&self) -> Vec<&str> {
        self.nodes.iter().map(|node| node.name.as_str()).collect()
    }

    /// A command running `program` inside node `name`'s namespace
    /// (`ip netns exec NAMESPACE PROGRAM`); the caller adds the arguments.
    ///
    /// # Panics
    /// There is no such node.
    #[must_use]
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.namespace(name)]).arg(program);
        command
    }

    /// Runs `ip netns exec NAMESPACE iptables -w ARGS` for `node`.
    fn iptables(&self, node: usize, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.nodes[node].namespace, "iptables", "-w"];
        full.extend_from_slice(args);
        must("ip", &full);
    }

    /// Cuts nodes `a` and `b` from each other, both ways (idempotent).
    ///
    /// # Panics
    /// A node is unknown, `a == b`, or `iptables` fails.
    pub fn cut(&self, a: &str, b: &str) {
        let (x, y) = (self.index(a), self.index(b));
        assert_ne!(x, y, "a node cannot be cut from itself");
        let pair = (x.min(y), x.max(y));
        let mut cuts = self.cuts.lock().expect("the cut set is never poisoned");
        if !cuts.insert(pair) {
            return;
        }
        for (here, there) in [(x, y), (y, x)] {
            let peer = self.nodes[there].addr.to_string();
            self.iptables(here, &["-A", "INPUT", "-s", &peer, "-j", "DROP"]);
            self.iptables(here, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"]);
        }
    }

    /// Cuts every node of `side_a` from every node of `side_b`.
    ///
    /// # Panics
    /// As [`Network::cut`].
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        for a in side_a {
            for b in side_b {
                self.cut(a, b);
            }
        }
    }

    /// Cuts `node` from every other node (the client still reaches it).
    ///
    /// # Panics
    /// As [`Network::cut`].
    pub fn isolate(&self, node: &str) {
        let others: Vec<&str> =
            self.nodes.iter().map(|other| other.name.as_str()).filter(|n| *n != node).collect();
        self.partition(&[node], &others);
    }

    /// The pairs of nodes cut from each other now.
    #[must_use]
    pub fn cuts(&self) -> Vec<(String, String)> {
        let cuts = self.cuts.lock().expect("the cut set is never poisoned");
        cuts.iter()
            .map(|(x, y)| (self.nodes[*x].name.clone(), self.nodes[*y].name.clone()))
            .collect()
    }

    /// Removes every cut: each node namespace's INPUT and OUTPUT chains are flushed (only
    /// this module puts rules there).
    ///
    /// # Panics
    /// `iptables` fails.
    pub fn heal(&self) {
        let mut cuts = self.cuts.lock().expect("the cut set is never poisoned");
        let touched: BTreeSet<usize> = cuts.iter().flat_map(|(x, y)| [*x, *y]).collect();
        for node in touched {
            self.iptables(node, &["-F", "INPUT"]);
            self.iptables(node, &["-F", "OUTPUT"]);
        }
        cuts.clear();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let namespaces: Vec<String> = self.nodes.iter().map(|n| n.namespace.clone()).collect();
        let veths: Vec<String> = self.nodes.iter().map(|n| n.host_veth.clone()).collect();
        remove(&self.bridge, &namespaces, &veths);
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Removes a network's pieces, whichever exist: kills what runs in the namespaces, deletes
/// the namespaces (their rules and veths go with them), the bridge-side veths and the
/// bridge. Never panics.
fn remove(bridge: &str, namespaces: &[String], veths: &[String]) {
    for namespace in namespaces {
        kill_inside(namespace);
        if let Err(error) = run("ip", &["netns", "delete", namespace])
            && Path::new("/run/netns").join(namespace).exists()
        {
            eprintln!("removing the test network: {error}");
        }
    }
    for veth in veths {
        // Usually gone with its namespace peer already.
        let _ = run("ip", &["link", "delete", veth]);
    }
    if let Err(error) = run("ip", &["link", "delete", bridge])
        && Path::new("/sys/class/net").join(bridge).exists()
    {
        eprintln!("removing the test network: {error}");
    }
}

/// Kills (SIGKILL) every process in `namespace` (the test's own node processes, normally
/// already gone) and waits up to 5 s for them to disappear.
fn kill_inside(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = run("ip", &["netns", "pids", namespace]).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("processes {pids:?} still run in namespace {namespace}");
            return;
        }
        for pid in &pids {
            let _ = run("kill", &["-KILL", pid]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The subnets `10.A.B.0/24` (as `(A, B)`) that an address or route of the root namespace
/// touches.
fn used_prefixes() -> BTreeSet<(u8, u8)> {
    let addresses = run("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
    let routes = run("ip", &["-4", "route", "show"]).unwrap_or_default();
    addresses
        .split_whitespace()
        .chain(routes.split_whitespace())
        .filter_map(|word| {
            let ip = word.split('/').next()?;
            let octets: Vec<u8> = ip.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            (octets.len() == 4 && octets[0] == 10).then(|| (octets[1], octets[2]))
        })
        .collect()
}

/// Removes the networks recorded under [`STATE_DIR`] whose owner process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(STATE_DIR) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut lines = text.lines();
        let Some(owner) = lines.next().and_then(|pid| pid.trim().parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        let mut bridge = String::new();
        let mut namespaces = Vec::new();
        let mut veths = Vec::new();
        for line in lines {
            if let Some(name) = line.strip_prefix("bridge ") {
                name.clone_into(&mut bridge);
            } else if let Some(name) = line.strip_prefix("namespace ") {
                namespaces.push(name.to_owned());
            } else if let Some(name) = line.strip_prefix("veth ") {
                veths.push(name.to_owned());
            }
        }
        eprintln!("removing the test network {} left by process {owner}", path.display());
        remove(&bridge, &namespaces, &veths);
        let _ = std::fs::remove_file(&path);
    }
}
